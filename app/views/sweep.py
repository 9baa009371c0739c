"""Sweep: the summary metric (test accuracy at the best noisy-validation epoch, or at the last
epoch) against the swept parameter (q, noise rate or k), mean ± std over seeds, one line per
loss, with the Theory page's excess-risk bound overlaid where it applies."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from app import charts, ui, url_state
from app import compare_logic as cl
from app import runs_logic as rl

P = "sweep_"
URL_KEYS = ("group", "runs", "param", "metric", "bound")
PICK = "(pick runs by hand)"
LIMIT = 500


def default_group(records) -> str:
    """The newest group whose runs sweep q, the noise rate or k; else PICK."""
    by_group: dict[str, dict] = {}
    for r in records:
        if r.group:
            by_group.setdefault(r.group, {})[r.id] = r.spec
    for group, specs in by_group.items():  # newest first, as listed
        if cl.swept_params(specs):
            return group
    return PICK


def seed_from_url(client, records) -> None:
    params = ui.page_params("sweep", URL_KEYS)
    groups = client.groups()
    group = url_state.get_str(params, "group", PICK, groups)
    ids = url_state.get_ids(params)
    if group == PICK and not ids:
        group = default_group(records)
    ui.seed({
        P + "group": group,
        P + "selected": ids,
        P + "param": url_state.get_str(params, "param", "", list(cl.SWEEP_PARAMS)),
        P + "metric": url_state.get_str(params, "metric", "test_acc_at_best_val", list(cl.SWEEP_METRICS)),
        P + "bound": url_state.get_bool(params, "bound", True),
    }, force=True)


def view(ids: list[str], metric: str, show_bound: bool) -> None:
    """The chart and its table (refreshed while runs of the sweep still train)."""
    client = ui.client()
    records = [r for r in client.list_runs(limit=LIMIT, include_archived=True) if r.id in set(ids)]
    specs = cl.ordered({r.id: r.spec for r in records})
    params = cl.swept_params(specs)
    if not params:
        st.info("These runs share one q, one noise rate and one k: nothing is swept. Pick a sweep's group, "
                "or runs that differ in one of them (launch a sweep from the Launch page).")
        return
    if st.session_state.get(P + "param") not in params:
        st.session_state[P + "param"] = params[0]
    param = st.segmented_control("Swept parameter", params, key=P + "param", format_func=lambda p: charts.SWEEP_AXES[p]) or params[0]
    frame = client.metrics_frame(list(specs))
    summaries = cl.run_summaries(frame)
    table = cl.sweep_table(specs, summaries, param, metric)
    if table.empty:
        st.info("No run of this sweep has finished an epoch yet; the points appear as they train.")
        return
    colors = charts.group_colors(dict(zip(table["line"], table["loss"], strict=True)))
    bound, why = cl.sweep_bound(specs, param, list(table["x"].dropna())) if show_bound else (pd.DataFrame(), "")
    subtitle = f"{len(specs)} runs: {cl.describe(list(specs.values()))}"
    fig = charts.sweep_figure(table, param, "test_acc", colors=colors, subtitle=subtitle, bound=bound, bound_title=why,
                              title=f"{cl.SWEEP_METRICS[metric].capitalize()} against {charts.SWEEP_AXES[param]}")
    st.plotly_chart(fig, key=P + "chart", config=charts.png_config(f"gce-sweep-{param}-{metric}"))
    if show_bound and bound.empty:
        st.caption(f"No bound drawn: {why}.")
    elif show_bound:
        st.caption("Dotted, right axis: the paper's bound A on the excess risk under uniform noise (Theory page). "
                   "It falls as q grows: the closer Lq is to MAE, the less the noise can cost.")
    shown = table.assign(**{
        charts.SWEEP_AXES[param]: [("—" if math.isnan(x) else f"{x:g}") for x in table["x"]],
        "mean ± std (%)": [f"{m:.2f}" if math.isnan(s) else f"{m:.2f} ± {s:.2f}" for m, s in zip(table["mean"], table["std"], strict=True)],
        "runs (n)": table["n"],
    })[["line", charts.SWEEP_AXES[param], "mean ± std (%)", "runs (n)"]]
    st.dataframe(shown, hide_index=True, width="stretch")
    active = [r for r in records if not r.status.is_final]
    if active:
        st.caption(f"{len(active)} run(s) still training: their points use the epochs so far.")


def take_group() -> None:
    st.session_state[P + "selected"] = []


client = ui.client()
cfg = ui.settings()
st.title("Sweep")
st.markdown("Accuracy against the swept parameter, the paper's *accuracy against q* picture: each point is the mean "
            "over seeds with a ± std error bar, n runs; one line per loss.")
records = client.list_runs(limit=LIMIT)
if ui.entered() or P + "metric" not in st.session_state:
    seed_from_url(client, records)
if not records:
    ui.empty_state("No runs yet. Launch a sweep over q or the noise rate, or prepare the lesson (`python -m jobs lesson --prepare`).",
                   "views/launch.py", "Go to Launch")
    ui.write_url("sweep", {})
    st.stop()

by_group: dict[str, list] = {}
for r in records:
    if r.group:
        by_group.setdefault(r.group, []).append(r.spec)
titles = {g: cl.group_title(g, by_group[g]) if g in by_group else g for g in client.groups()}
group = st.selectbox("Sweep (a group of runs)", [PICK, *titles], key=P + "group", format_func=lambda g: titles.get(g, g), on_change=take_group)
if group == PICK:
    ids = ui.pick_runs("Runs", P + "selected", records)
else:
    ids = [r.id for r in client.list_runs(group=group, limit=LIMIT)]
c1, c2 = st.columns([3, 2], vertical_alignment="bottom")
metric = c1.selectbox("Summary metric", list(cl.SWEEP_METRICS), key=P + "metric", format_func=lambda m: cl.SWEEP_METRICS[m])
show_bound = c2.toggle("Overlay the Theory page's bound", key=P + "bound", help="The excess-risk bound A of Lq under uniform noise, where it applies.")

if not ids:
    st.info("Pick a sweep's group, or runs, to plot them.")
else:
    chosen = [r for r in records if r.id in set(ids)]
    period = cfg.refresh_seconds if rl.any_active(chosen) else None
    st.fragment(run_every=period)(view)(ids, metric, show_bound)

ui.write_url("sweep", {
    "group": None if group == PICK else group,
    "runs": ",".join(ids) if group == PICK else None,
    "param": st.session_state.get(P + "param") or None,
    "metric": None if metric == "test_acc_at_best_val" else metric,
    "bound": None if show_bound else "0",
})

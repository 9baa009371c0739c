"""Compare: overlay runs for one metric, pooled over seeds (mean ± std), with a results table,
the config diff and CSV / PNG export."""

from __future__ import annotations

import streamlit as st

from app import charts, ui, url_state
from app import compare_logic as cl
from app import runs_logic as rl

P = "compare_"
URL_KEYS = ("runs", "group", "metric", "by", "smooth", "raw")
METRICS = ["test_acc", "val_acc", "train_acc_noisy", "memorised", "train_acc_clean", "flipped_to_true", "train_loss", "loss_sum_mean"]
PICK = "(pick runs by hand)"


def default_ids(client) -> list[str]:
    last = st.session_state.get("launch_last")
    if last:
        return list(last["ids"])
    newest = client.list_runs(limit=1)
    if newest and newest[0].group:
        return [r.id for r in client.list_runs(group=newest[0].group, limit=50)]
    return []


def seed_from_url(client) -> None:
    params = ui.page_params("compare", URL_KEYS)
    groups = client.groups()
    group = url_state.get_str(params, "group", PICK, groups)
    ids = url_state.get_ids(params)
    if group != PICK:
        ids = [r.id for r in client.list_runs(group=group, limit=500)]
    ui.seed({
        P + "group": group,
        P + "selected": ids or default_ids(client),
        P + "metric": url_state.get_str(params, "metric", "test_acc", METRICS),
        P + "by": url_state.get_str(params, "by", "config", cl.GROUP_BY),
        P + "smooth": url_state.get_float(params, "smooth", 0.0, 0.0, 0.95),
        P + "raw": url_state.get_bool(params, "raw", True),
    }, force=True)


def take_group() -> None:
    group = st.session_state[P + "group"]
    if group != PICK:
        st.session_state[P + "selected"] = [r.id for r in ui.client().list_runs(group=group, limit=500)]


def view(ids: list[str], metric: str, by: str, smooth: float, raw: bool) -> None:
    """Chart, results table and config diff; refreshed while some of the runs still train. The
    chart's rows travel in a named dataset, so a refresh swaps them in the same view and a zoom
    (a brush on the strip under the chart) survives it."""
    client = ui.client()
    records = [r for r in client.list_runs(limit=500, include_archived=True) if r.id in set(ids)]
    specs = cl.ordered({r.id: r.spec for r in records})
    layout = cl.grouping(specs, by)
    frame = client.metrics_frame(list(specs))
    if frame.empty:
        st.info("None of these runs has finished an epoch yet; the chart fills in as they train.")
        return
    note = layout.note(by)
    if note:
        st.info(note)
    values = cl.per_run_values(frame, metric, layout.groups, smooth, layout.panels)
    raw_values = cl.per_run_values(frame, metric, layout.groups, 0.0, layout.panels) if raw else None
    colors = charts.group_colors(cl.group_losses(specs, layout.groups), cl.group_order(specs, layout.groups))
    subtitle = f"{len(specs)} runs: {cl.describe(list(specs.values()))}"
    spec = charts.band_chart(cl.aggregate(values), metric, raw=raw_values, subtitle=subtitle, colors=colors)
    st.vega_lite_chart(spec=spec, width="stretch")
    st.caption("Drag on the strip under the chart to zoom, double-click it to reset; the zoom stays while runs train. "
               "PNG: *Download as PNG* in the chart's toolbar (top right, on hover) saves it, title, subtitle and legend included. "
               "Thin lines are single runs (unsmoothed); the band is mean ± std over the n runs of a line.")
    st.subheader("Test accuracy")
    st.caption("At the epoch of best noisy-validation accuracy (the paper's number), at the last epoch, and the best (optimistic: it peeks at the test set).")
    st.dataframe(cl.format_summary(cl.summary_table(frame, layout.groups, layout.panels)), hide_index=True, width="stretch")
    active = [r for r in records if not r.status.is_final]
    if active:
        st.caption(f"{len(active)} run(s) still training: numbers so far.")


def group_names(client, records) -> dict[str, str]:
    """Group name -> how the picker shows it: its configuration, then its name."""
    specs: dict[str, list] = {}
    for r in records:
        if r.group:
            specs.setdefault(r.group, []).append(r.spec)
    return {g: cl.group_title(g, specs.get(g, [])) if g in specs else g for g in client.groups()}


client = ui.client()
cfg = ui.settings()
teach = ui.teaching()
st.title("Compare runs")
all_records = client.list_runs(limit=500)
if ui.entered() or P + "metric" not in st.session_state:
    seed_from_url(client)
    ui.seed_filters(P, {k: v for k, v in st.query_params.to_dict().items() if k.startswith("f.")}, all_records)

if not all_records:
    ui.empty_state("No runs to compare yet. The quick demo gives CCE, MAE and Lq on noisy digits in under a minute.", "views/launch.py", "Go to Launch")
    ui.write_url("compare", {})
    st.stop()

titles = group_names(client, all_records)
st.selectbox("Group", [PICK, *titles], key=P + "group", on_change=take_group, format_func=lambda g: titles.get(g, g))
records, _ = ui.filter_runs(P, all_records, total=client.count_runs())
chosen_now = set(st.session_state.get(P + "selected", []))
kept_ids = {r.id for r in records}
ids = ui.pick_runs("Runs", P + "selected", [r for r in all_records if r.id in chosen_now or r.id in kept_ids],
                   help="The filters above narrow this list; runs already picked stay.")
hidden = [i for i in ids if i not in kept_ids]
if hidden:  # the filters narrow what is compared too; the picks stay for when they are lifted
    st.caption(f"{len(hidden)} of the {len(ids)} picked runs are hidden by the filters; comparing {len(ids) - len(hidden)}.")
    ids = [i for i in ids if i in kept_ids]
c1, c2, c3, c4 = st.columns([3, 2, 2, 1], vertical_alignment="bottom")
metric = c1.selectbox("Metric", METRICS, key=P + "metric", format_func=charts.metric_title)
by = c2.selectbox("Group by", list(cl.GROUP_BY), key=P + "by", format_func=cl.GROUP_BY.get,
                  help="A line pools only runs that differ in nothing but their seed; other settings the runs differ in are named in the legend, and noise settings get a panel each.")
smooth = c3.slider("Smoothing", 0.0, 0.95, step=0.05, key=P + "smooth", help="Exponential moving average weight (0 = raw).")
raw = c4.toggle("Single runs", key=P + "raw")

if not ids:
    st.info("Pick runs, or a group, to compare them.")
else:
    chosen = [r for r in all_records if r.id in set(ids)]
    period = cfg.refresh_seconds if rl.any_active(chosen) else None
    st.fragment(run_every=period)(view)(ids, metric, by, smooth, raw)
    d1, d2 = st.columns([1, 4])
    d1.download_button("Download CSV", data=lambda: cl.wide_csv(chosen, client.metrics_frame(ids)), file_name="gce-lab-runs.csv",
                       mime="text/csv", key=P + "csv", on_click="ignore", icon=":material/download:")
    d2.caption("One row per run and epoch: the run's id, status, group and tags, one column per spec field (its configuration), then every metric.")
    if not teach:
        st.subheader("Configuration differences")
        specs = {r.id: r.spec for r in chosen}
        diff = cl.config_diff(specs)
        if diff.empty or diff.shape[1] == 0:
            st.caption("All selected runs share one configuration.")
        else:
            st.dataframe(diff, width="stretch")
        with st.expander("Settings all selected runs share"):
            st.json(cl.shared_config(specs))

ui.write_url("compare", {
    "runs": ",".join(st.session_state[P + "selected"]) if st.session_state[P + "group"] == PICK else None,
    "group": None if st.session_state[P + "group"] == PICK else st.session_state[P + "group"],
    "metric": None if metric == "test_acc" else metric,
    "by": None if by == "config" else by,
    "smooth": None if not smooth else f"{smooth:g}",
    "raw": None if raw else "0",
    **ui.filter_params(P),
})

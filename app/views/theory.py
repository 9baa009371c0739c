"""Theory: the losses against f_y, their gradient weights, the loss-sum bounds against q, the
registry's other losses (value and gradient weight against f_y, and a table), and a run's measured
loss sum inside its band. Every control reacts at once (no form): the figures are
cheap and seeing them move is the lesson."""

from __future__ import annotations

import math

import pandas as pd
import streamlit as st

from app import charts, ui, url_state
from gce_core.bounds import excess_risk_bound, loss_bounds
from gce_core.losses import LOG_PROB_LOSS_NAMES, LOSSES, get_loss

P = "theory_"
URL_KEYS = ("q", "c", "k", "rate", "run")
Q_CHOICES = [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0]
DEFAULT_QS = [0.3, 0.7, 1.0]


def seed_from_url(records) -> None:
    params = ui.page_params("theory", URL_KEYS)
    ids = [r.id for r in records]
    qs = [q for q in url_state.get_floats(params, "q", DEFAULT_QS, 0.1, 1.0) if q in Q_CHOICES] or DEFAULT_QS
    ui.seed({
        P + "qs": qs,
        P + "c": url_state.get_int(params, "c", 10, 2, 1000),
        P + "k": url_state.get_float(params, "k", 0.5, 0.05, 0.95),
        P + "rate": url_state.get_float(params, "rate", 0.4, 0.0, 0.95),
        P + "run": url_state.get_str(params, "run", ids[0] if ids else "", ids) or None,
    }, force=True)


def bounds_table(c: int, qs: list[float], k: float, rate: float) -> pd.DataFrame:
    rows = []
    for q in sorted(qs):
        for loss in LOG_PROB_LOSS_NAMES:  # the paper's four
            takes_q = "q" in get_loss(loss).defaults
            if not takes_q and q != max(qs):
                continue  # no q: list them once
            try:
                lo, hi = loss_bounds(loss, c, q=q, k=k)
            except ValueError as exc:
                rows.append({"loss": loss, "q": q, "lower": None, "upper": None, "width": None, "note": str(exc)})
                continue
            note = ""
            if get_loss(loss).risk_bound is not None and rate < 1 - 1 / c:
                note = f"excess-risk bound A = {excess_risk_bound(c, q, rate):.3f} at η = {rate:g}"
            rows.append({
                "loss": loss, "q": q if takes_q else None, "lower": round(lo, 3),
                "upper": "∞" if math.isinf(hi) else round(hi, 3),
                "width": "∞" if math.isinf(hi) else round(hi - lo, 3), "note": note,
            })
    return pd.DataFrame(rows).astype({"upper": str, "width": str})


def zoo_table(c: int) -> pd.DataFrame:
    """Every loss of the registry at its paper's defaults: formula, parameters, the loss summed
    over the c labels (one value for a symmetric loss), and where it comes from."""
    rows = []
    for loss in LOSSES.values():
        band = loss.sum_band(c)
        if band is None:
            total = "no bound known"
        elif band[0] == band[1]:
            total = f"{band[0]:.3g} for every output (symmetric)"
        else:
            total = f"{band[0]:.3g} to {'∞' if math.isinf(band[1]) else f'{band[1]:.3g}'}"
        rows.append({"loss": loss.label, "name": loss.name, "formula": loss.formula,
                     "defaults": ", ".join(f"{n} = {v:g}" for n, v in loss.defaults.items()) or "-",
                     f"sum over the {c} labels": total, "from": loss.citation or "-"})
    return pd.DataFrame(rows)


def measured(client, records, run_id: str) -> None:
    record = next((r for r in records if r.id == run_id), None)
    if record is None:
        return
    rows = client.metrics(run_id)
    spec = record.spec
    c = spec.num_classes
    if not rows:
        st.info("This run has no finished epoch yet.")
        return
    try:
        fig = charts.measured_loss_sum([r["epoch"] for r in rows], [r["loss_sum_mean"] for r in rows], spec.loss, c, **spec.loss_params())
    except ValueError as exc:
        st.warning(f"No band for this run: {exc}")
        return
    st.plotly_chart(fig, key=P + "run_chart", config=charts.png_config("loss-sum-run"))
    st.caption(
        f"Each point is the loss summed over all {c} labels, averaged over the test images, after that epoch. "
        "The theory says it must stay inside the band for every output f(x)."
    )


client = ui.client()
st.title("Why Lq resists label noise")
records = [r for r in client.list_runs(limit=200) if r.epochs_done > 0]
if ui.entered() or P + "qs" not in st.session_state:
    seed_from_url(records)

st.markdown(
    "CCE, $-\\log f_y$, punishes a confident mistake without limit, so a wrongly labelled sample "
    "pulls hard on the model. MAE, $2 - 2f_y$, is bounded and symmetric, hence noise tolerant, but "
    "learns slowly. The Lq loss $(1 - f_y^q)/q$ sits between them: $q \\to 0$ gives CCE, $q = 1$ "
    "gives MAE/2."
)
qs = st.pills("q values (Lq)", Q_CHOICES, selection_mode="multi", key=P + "qs", format_func=lambda q: f"{q:g}") or DEFAULT_QS
c1, c2, c3 = st.columns([1, 2, 2], vertical_alignment="bottom")
c = c1.number_input("classes c", min_value=2, max_value=1000, step=1, key=P + "c")
k = c2.slider("truncation k", 0.05, 0.95, step=0.05, key=P + "k")
rate = c3.slider("uniform noise η (for A)", 0.0, 0.95, step=0.05, key=P + "rate")

left, right = st.columns(2)
left.plotly_chart(charts.loss_vs_fy(qs, k), key=P + "loss", config=charts.png_config("loss-vs-fy"))
right.plotly_chart(charts.gradient_weight(qs), key=P + "grad", config=charts.png_config("gradient-weight"))
st.caption(
    "Right: Lq's gradient is f_y^q times CCE's. A sample the model finds unlikely (small f_y), "
    "often a flipped label, gets a small weight; CCE weighs every sample alike."
)
st.plotly_chart(charts.bounds_vs_q(int(c), k, qs), key=P + "bounds", config=charts.png_config("loss-sum-bounds"))
st.caption(
    "Summing a loss over all c labels measures how far it is from symmetric. MAE's sum is the "
    "same for every output (symmetric, noise tolerant); CCE's has no upper bound; Lq's band "
    "narrows as q grows, and truncation narrows it further (needs k ≥ 1/c)."
)
with st.expander("Bounds and excess-risk bound, as numbers"):
    st.dataframe(bounds_table(int(c), qs, k, rate), hide_index=True, width="stretch")
    if rate >= 1 - 1 / c:
        st.caption(f"The excess-risk bound needs η < 1 - 1/c = {1 - 1 / c:.3g}.")

st.subheader("The losses people compare GCE with")
left, right = st.columns(2)
left.plotly_chart(charts.zoo_loss_value(list(LOSSES)), key=P + "zoo_value", config=charts.png_config("loss-zoo-value"))
right.plotly_chart(charts.zoo_gradient_weight(list(LOSSES)), key=P + "zoo", config=charts.png_config("loss-zoo-gradient"))
no_curve = ", ".join(loss.label for loss in LOSSES.values() if loss.of_fy is None)
st.caption(
    "Each loss at its paper's defaults, its value (left) and gradient weight (right). A weight that "
    "falls as f_y falls lets flipped labels pull less; a loss whose weight is far above 1 needs a "
    "smaller learning rate than CCE (AUL at a = 5.5, p = 3: 20-30 times). "
    f"Not drawn, because their value is not a function of f_y alone: {no_curve} (NCE divides by the "
    "log-probabilities of every class, bootstrapping's target holds the model's own output, and "
    "forward correction mixes the output through the run's transition matrix T). They can be trained "
    "from the command line: `python -m gce_core train --loss sce`."
)
st.dataframe(zoo_table(int(c)), hide_index=True, width="stretch")

st.subheader("A run's loss sum inside its band")
if not records:
    ui.empty_state("No run has finished an epoch yet.", "views/launch.py", "Launch the quick demo")
    run_id = None
else:
    run_id = ui.pick_run("Run", P + "run", records)
    if run_id:
        measured(client, records, run_id)

ui.write_url("theory", {
    "q": None if sorted(qs) == DEFAULT_QS else url_state.fmt(sorted(qs)),
    "c": None if int(c) == 10 else str(int(c)),
    "k": None if k == 0.5 else f"{k:g}",
    "rate": None if rate == 0.4 else f"{rate:g}",
    "run": run_id,
})

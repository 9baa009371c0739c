"""Lesson: the paper's story in five steps (gce_core.lesson). Each step asks the class to predict,
then reveals real results at once from the runs the lab already has for that step; when it has
none, it launches them and the chart grows while they train. Every step is a link (?step=N).
`python -m jobs lesson --prepare` trains every step's runs ahead of a class."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from app import charts, ui, url_state
from app import compare_logic as cl
from app import runs_logic as rl
from gce_core.lesson import LessonStep, steps
from jobs import lesson as jl
from jobs.client import SubmitRefused

P = "lesson_"
STEPS = steps()


def chart_curves(step: LessonStep, records: list, frame: pd.DataFrame) -> None:
    specs = cl.ordered({r.id: r.spec for r in records})
    by = "noise_rate" if len({(s.noise, s.noise_rate) for s in specs.values()}) > 1 else "loss"
    layout = cl.grouping(specs, by)
    colors = charts.group_colors(cl.group_losses(specs, layout.groups), cl.group_order(specs, layout.groups))
    cols = st.columns(len(step.metrics))
    for col, metric in zip(cols, step.metrics, strict=True):
        bands = cl.aggregate(cl.per_run_values(frame, metric, layout.groups))
        fig = charts.band_figure(bands, metric, colors=colors, revision=f"lesson-{step.key}-{metric}",
                                 subtitle=cl.describe(list(specs.values())))
        col.plotly_chart(fig, key=f"{P}{step.key}_{metric}", config=charts.png_config(f"lesson-{step.key}-{metric}"))


def chart_sweep(step: LessonStep, records: list, frame: pd.DataFrame) -> None:
    specs = cl.ordered({r.id: r.spec for r in records})
    table = cl.sweep_table(specs, cl.run_summaries(frame), "q", "test_acc_at_best_val")
    if table.empty:
        return
    bound, why = cl.sweep_bound(specs, "q", list(table["x"].dropna()))
    fig = charts.sweep_figure(table, "q", "test_acc", colors=charts.group_colors(dict(zip(table["line"], table["loss"], strict=True))),
                              title="Test accuracy at the best noisy-validation epoch against q",
                              subtitle=cl.describe(list(specs.values())), bound=bound, bound_title=why)
    st.plotly_chart(fig, key=P + step.key + "_sweep", config=charts.png_config(f"lesson-{step.key}"))
    st.caption("Each point: mean over seeds, ± std, n runs. Dashed: CCE and MAE, which have no q. Dotted (right axis): "
               "the paper's bound on what the noise can cost Lq; it shrinks as q grows.")


def chart_bounds(step: LessonStep, records: list, frame: pd.DataFrame) -> None:
    specs = {r.id: r.spec for r in records}
    c = next(iter(specs.values())).num_classes
    qs = sorted({s.q for s in specs.values() if s.loss == "lq"})
    fig = charts.bounds_vs_q(c, 0.5, qs)
    last = frame.sort_values("epoch").groupby("run_id").tail(1).set_index("run_id")["loss_sum_mean"] if not frame.empty else pd.Series(dtype=float)
    for loss, symbol in (("lq", "circle"), ("mae", "diamond")):
        pts = [(1.0 if loss == "mae" else s.q, float(last[i])) for i, s in specs.items() if s.loss == loss and i in last and pd.notna(last[i])]
        if pts:
            fig.add_trace(go.Scatter(x=[p[0] for p in pts], y=[p[1] for p in pts], mode="markers", name=f"{loss.upper() if loss == 'mae' else 'Lq'} runs: measured sum",
                                     marker={"color": charts.loss_color(loss), "size": 10, "symbol": symbol, "line": {"color": "white", "width": 1}}))
    st.plotly_chart(fig, key=P + step.key + "_bounds", config=charts.png_config(f"lesson-{step.key}"))
    cce = [float(last[i]) for i, s in specs.items() if s.loss == "cce" and i in last and pd.notna(last[i])]
    if cce:
        st.caption(f"Measured on the test images after the last epoch. CCE's runs: {max(cce):.3g} and growing as it grows sure of its labels; it has no upper bound.")


def chart_pruning(step: LessonStep, records: list, frame: pd.DataFrame) -> None:
    chart_curves(step, records, frame)
    trunc = frame[frame["run_id"].isin([r.id for r in records if r.spec.loss == "truncated_lq"])].dropna(subset=["prune_precision"])
    if not trunc.empty:
        row = trunc.sort_values("epoch").iloc[-1]
        st.caption(f"Last w-step (epoch {int(row['epoch'])}): {100 * row['prune_precision']:.0f}% of the pruned samples were really flipped, "
                   f"and {100 * row['prune_recall']:.0f}% of the flipped ones were pruned. Noise insight shows it per epoch.")


VIEWS = {"curves": chart_curves, "sweep_q": chart_sweep, "bounds": chart_bounds, "pruning": chart_pruning}


def reveal(step: LessonStep) -> None:
    """The step's results, from the store; refreshed while its runs train."""
    client = ui.client()
    found = jl.step_runs(client, step)
    records = [r for r in found if r is not None]
    missing = len(found) - len(records)
    if missing:
        st.warning(f"{missing} of this step's {len(found)} runs are missing (launching them failed); the results below use the others.")
    if not records:
        return
    waiting = [r for r in records if not r.status.is_final]
    if waiting:
        done = sum(r.epochs_done for r in records)
        total = sum(r.spec.epochs for r in records)
        st.progress(done / total if total else 0.0, text=f"{len(waiting)} of {len(records)} runs still training: the charts grow as they do.")
    frame = client.metrics_frame([r.id for r in records])
    if frame.empty:
        st.info("The runs are queued; the first points appear after their first epoch (seconds).")
        return
    VIEWS[step.view](step, records, frame)


def launch_missing(step: LessonStep) -> None:
    """Queue the step's runs the store lacks (once per session and step)."""
    flag = P + "launched_" + step.key
    if st.session_state.get(flag):
        return
    st.session_state[flag] = True
    try:
        ids = jl.prepare(ui.client(), step)
    except SubmitRefused as exc:
        st.error(f"Could not launch this step's runs: {ui.md_escape(str(exc))}")
        return
    if ids:
        st.info(f"The lab had no results for this step yet: it launched {len(ids)} small runs (seconds each). "
                "Watch them grow below. `python -m jobs lesson --prepare` trains them ahead of a class.")


def go_to(index: int) -> None:
    """Button callback: show step ``index`` (the URL follows, so the step stays a link)."""
    st.session_state[P + "step"] = index
    st.query_params["step"] = str(index)


def step_nav(index: int) -> None:
    cols = st.columns(len(STEPS))
    for i, (col, s) in enumerate(zip(cols, STEPS, strict=True), 1):
        col.button(f"{i}. {s.short or s.title}", key=f"{P}nav_{i}", help=s.title, width="stretch",
                   type="primary" if i == index else "secondary", on_click=go_to, args=(i,))


st.title("Lesson: learning from noisy labels")
# The step comes from the URL whenever it has one: the step links lead to this same page.
params = st.query_params.to_dict() if "step" in st.query_params else ui.page_params("lesson", ("step",))
if "step" in params or P + "step" not in st.session_state:
    st.session_state[P + "step"] = url_state.get_int(params, "step", 1, 1, len(STEPS))
index = st.session_state[P + "step"]
step = STEPS[index - 1]
step_nav(index)
st.header(f"Step {index} of {len(STEPS)}: {step.title}")
st.markdown(ui.md_escape(step.question))
pick_key = P + "pick_" + step.key
choice = st.radio("Your prediction", list(range(len(step.choices))), index=None, key=pick_key,
                  format_func=lambda i: step.choices[i])
shown_key = P + "shown_" + step.key
if st.button("Reveal the results", type="primary", disabled=choice is None, key=P + "reveal_" + step.key,
             help="Predict first: the results come from real runs of this lab."):
    st.session_state[shown_key] = True
if st.session_state.get(shown_key):
    if choice == step.answer:
        st.success(f"Right: {ui.md_escape(step.choices[step.answer])}.")
    else:
        st.warning(f"Not quite: {ui.md_escape(step.choices[step.answer])}.")
    st.markdown(ui.md_escape(step.explanation))
    launch_missing(step)
    records_now = [r for r in jl.step_runs(ui.client(), step) if r is not None]
    period = ui.settings().refresh_seconds if rl.any_active(records_now) else None
    st.fragment(run_every=period)(reveal)(step)
elif choice is None:
    st.caption("Choose an answer to reveal the results.")

c1, c2, c3 = st.columns([1, 1, 3])
if index > 1:
    c1.button("Previous step", icon=":material/arrow_back:", key=P + "prev", on_click=go_to, args=(index - 1,))
if index < len(STEPS):
    c2.button("Next step", icon=":material/arrow_forward:", key=P + "next", on_click=go_to, args=(index + 1,))
c3.caption("Each step is a link: share this page's address to open the class at this step.")
with st.expander("For the teacher: prepare every step's runs now"):
    st.caption("So that no step waits in class. Runs the lab already has (the quick demo's, earlier lessons') are reused. "
               "The same as `python -m jobs lesson --prepare`.")
    if st.button("Prepare the whole lesson", key=P + "prepare"):
        try:
            queued = jl.prepare_all(ui.client())
        except SubmitRefused as exc:
            st.error(ui.md_escape(str(exc)))
        else:
            n = sum(map(len, queued.values()))
            st.success(f"Queued {n} run(s)." if n else "Every step's runs are already in the lab.")
ui.write_url("lesson", {"step": str(index) if index != 1 else None})

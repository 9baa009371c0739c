"""Paper table: a grid of `python -m jobs grid` beside the paper's published numbers, filling in
as its runs finish; cells coloured by their distance from the published value."""

from __future__ import annotations

import streamlit as st

from app import ui, url_state
from app.paper_table_logic import FAR, NEAR, frame
from gce_core import grid as gg
from jobs.grid import grid_names, grid_tag, tagged_outcomes

P = "paper_"
URL_KEYS = ("grid", "metric")


def view(name: str, metric: str) -> None:
    table = gg.build_table(tagged_outcomes(ui.client(), name))
    if not table.cells:
        st.info(f"Grid {name} has no runs.")
        return
    st.markdown(f"**{ui.md_escape(table.progress())}**")
    st.progress(table.done / max(table.runs, 1))
    texts, css = frame(table, metric)
    st.dataframe(texts.style.apply(lambda _: css, axis=None), width="stretch")
    if metric == "test_acc_at_best_val":
        st.caption(f"Cell: our mean ± std over seeds (paper's mean ± std, our difference); [done/runs] while runs are "
                   f"missing. Colour: within {NEAR:g} point of the published mean green, within {FAR:g} yellow, "
                   "further red; no colour where the paper gives no number.")
    for note in gg.notes(table):
        st.caption(note)
    title = f"GCE grid {name}"
    c1, c2, c3 = st.columns(3)
    for col, fmt, mime, label in ((c1, "md", "text/markdown", "Markdown"), (c2, "csv", "text/csv", "CSV"),
                                  (c3, "tex", "text/x-tex", "LaTeX")):
        col.download_button(label, data=gg.render(table, fmt, title), file_name=f"{name}.{fmt}", mime=mime,
                            key=P + "dl_" + fmt, on_click="ignore", icon=":material/download:")
    active = table.runs - table.done - table.failed
    if active:
        st.caption(f"{active} run(s) still queued or training: the table fills in as they finish.")


client = ui.client()
cfg = ui.settings()
st.title("Paper table")
st.caption("The paper's grid, run here, beside the published numbers (Zhang & Sabuncu, NeurIPS 2018, Table 1): test "
           "accuracy at the best noisy-validation epoch, mean ± std over seeds.")
names = grid_names(client)
if not names:
    st.info("No grid yet. Start one from a shell (it reuses finished runs when run again):\n\n"
            "`python -m jobs grid --paper table1` (the paper's Table 1: 480 runs of ResNet-34, days on one GPU), "
            "`python -m jobs grid --paper table1 --epochs 12 --seeds 1 --no-wait` for a first look, or "
            "`python -m jobs grid --paper table3` (open-set noise).")
    ui.write_url("paper", {})
    st.stop()

if ui.entered() or P + "grid" not in st.session_state:
    params = ui.page_params("paper", URL_KEYS)
    ui.seed({P + "grid": url_state.get_str(params, "grid", names[0], names),
             P + "metric": url_state.get_str(params, "metric", "test_acc_at_best_val", gg.METRICS)}, force=True)
if st.session_state[P + "grid"] not in names:
    st.session_state[P + "grid"] = names[0]
c1, c2 = st.columns([1, 2])
name = c1.selectbox("Grid", names, key=P + "grid", help="Grids from `python -m jobs grid`, newest first.")
metric = c2.selectbox("Metric", gg.METRICS, key=P + "metric", format_func=gg.METRIC_TITLES.get)
active = client.count_runs(tag=grid_tag(name), status=["queued", "running", "interrupted"])
st.fragment(run_every=cfg.refresh_seconds if active else None)(view)(name, metric)
ui.write_url("paper", {"grid": name, "metric": None if metric == "test_acc_at_best_val" else metric})

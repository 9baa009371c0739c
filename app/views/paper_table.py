"""Paper table: a grid of `python -m jobs grid` beside the paper's published numbers, filling in
as its runs finish; cells coloured by their distance from the published value."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from app import ui, url_state
from gce_core import grid as gg
from jobs.grid import grid_names, grid_tag, tagged_outcomes

P = "paper_"
URL_KEYS = ("grid", "metric")
# Distance from the published mean, in accuracy points: within NEAR green, within FAR yellow, else red.
NEAR, FAR = 1.0, 3.0
COLORS = {"near": "background-color: #d4edda", "mid": "background-color: #fff3cd", "far": "background-color: #f8d7da"}


def distance_class(cell: gg.Cell | None) -> str:
    """'near', 'mid', 'far', or '' (no published number, or no result yet)."""
    diff = None if cell is None else cell.diff
    if diff is None:
        return ""
    return "near" if abs(diff) <= NEAR else "mid" if abs(diff) <= FAR else "far"


def frame(table: gg.GridTable, metric: str) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(texts, css) frames: rows 'data · loss', columns 'noise rate'; the paper's column only
    for the paper's metric."""
    main = metric == "test_acc_at_best_val"
    index = [gg.row_title(r) for r in table.rows]
    columns = [gg.column_title(c) for c in table.columns]
    texts = [[gg.cell_text(table.cell(r, c), metric, with_paper=main) for c in table.columns] for r in table.rows]
    css = [[COLORS.get(distance_class(table.cell(r, c)), "") if main else "" for c in table.columns]
           for r in table.rows]
    return pd.DataFrame(texts, index=index, columns=columns), pd.DataFrame(css, index=index, columns=columns)


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

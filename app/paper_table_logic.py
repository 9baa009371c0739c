"""The Paper table page's logic: the grid table as display frames, cells coloured by their
distance from the published value. Plain pandas; the page only renders what these return."""

from __future__ import annotations

import pandas as pd

from gce_core import grid as gg

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

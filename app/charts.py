"""Figure builders of the lab. Every figure has a title and titled axes with units; pages only
pass data in. Accuracies are stored as shares in [0, 1] and shown in percent.

Plotly for the figures that are drawn once (its camera button saves a PNG). The charts that
refresh while runs train, the live curves of Runs and the bands of Compare, are Vega-Lite
(built with Altair) instead: Streamlit re-mounts a Plotly chart whenever its data change, which
resets the user's zoom at every refresh, while a Vega chart whose spec is unchanged (the rows in
a named dataset) gets its new rows swapped into the same view. The zoom there is a brush on an
overview strip, kept in epoch units, because Vega resets a wheel (scale-bound) zoom when the
data change but keeps a brush. Streamlit's toolbar of a Vega chart saves it as a PNG.
"""

from __future__ import annotations

import html
import math
from collections.abc import Mapping, Sequence

import altair as alt
import numpy as np
import pandas as pd
import plotly.graph_objects as go
import torch
from plotly.subplots import make_subplots

from gce_core.bounds import loss_bounds, lq_sum_bounds, mae_sum, truncated_lq_sum_bounds
from gce_core.losses import get_loss
from gce_core.metrics import HIST_BINS

# key -> (axis title, shown in percent)
METRICS: dict[str, tuple[str, bool]] = {
    "test_acc": ("test accuracy (%)", True),
    "val_acc": ("noisy-validation accuracy (%)", True),
    "train_acc_noisy": ("training accuracy on the noisy labels (%)", True),
    "train_acc_clean": ("training accuracy on the true labels (%)", True),
    "memorised": ("flipped samples memorised (% predicted as their wrong label)", True),
    "flipped_to_true": ("flipped samples predicted as their true label (%)", True),
    "train_loss": ("training loss (mean per sample)", False),
    "loss_sum_mean": ("loss summed over all c labels (test mean)", False),
    "kept": ("training samples kept by the w-step", False),
    "prune_precision": ("pruning precision (%)", True),
    "prune_recall": ("pruning recall (%)", True),
    "lr": ("learning rate", False),
    "seconds": ("seconds per epoch", False),
}
# One colour per loss of the registry, the same on every page and chart (CCE red, MAE grey, Lq
# blue, truncated Lq green); several lines of one loss take ordered shades of its colour.
LOSS_COLORS = {
    "cce": "#d62728", "mae": "#7f7f7f", "lq": "#1f77b4", "truncated_lq": "#2ca02c", "sce": "#ff7f0e",
    "nce_rce": "#9467bd", "nce_mae": "#8c564b", "agce": "#e377c2", "aul": "#17becf",
    "bootstrap_soft": "#bcbd22", "bootstrap_hard": "#5b3a8c", "forward": "#0b6e4f", "forward_est": "#b5651d",
}
OTHER_LOSS_COLOR = "#9467bd"  # a loss the registry gained after this table was written


def loss_color(loss: str) -> str:
    """The colour of ``loss`` (a registry name) wherever it is drawn."""
    return LOSS_COLORS.get(loss, OTHER_LOSS_COLOR)


def ordered_shades(hex_color: str, n: int) -> list[str]:
    """``n`` shades of ``hex_color`` from light to full, for lines ordered by a value (a sweep
    over q or the noise rate): the order reads at a glance and the loss keeps its hue."""
    if n <= 1:
        return [hex_color] * n
    return [_mix(hex_color, 0.65 * (1 - i / (n - 1))) for i in range(n)]


def group_colors(losses: Mapping[str, str], order: Mapping[str, float] | None = None) -> dict[str, str]:
    """Group -> colour: each group in its loss's colour (``losses``: group -> loss name); groups
    sharing a loss get ordered shades of it, sorted by ``order`` (group -> value; else first seen)."""
    by_loss: dict[str, list[str]] = {}
    for group, loss in losses.items():
        by_loss.setdefault(loss, []).append(group)
    out = {}
    for loss, groups in by_loss.items():
        if order:
            groups = sorted(groups, key=lambda g: (order.get(g) is None, order.get(g) or 0.0))
        for group, color in zip(groups, ordered_shades(loss_color(loss), len(groups)), strict=True):
            out[group] = color
    return out


PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
           "#17becf", "#bcbd22", "#7f7f7f")  # for lines that are not losses (metrics of one run)
PNG_CONFIG = {"toImageButtonOptions": {"format": "png", "scale": 2}, "displaylogo": False}


def metric_title(metric: str) -> str:
    return METRICS.get(metric, (metric, False))[0]


def metric_scale(metric: str) -> float:
    """100 for metrics shown in percent, else 1."""
    return 100.0 if METRICS.get(metric, ("", False))[1] else 1.0


def png_config(filename: str) -> dict:
    """Plotly config whose camera button saves ``filename``.png at twice the screen size."""
    return {**PNG_CONFIG, "toImageButtonOptions": {**PNG_CONFIG["toImageButtonOptions"], "filename": filename}}


def _layout(fig: go.Figure, title: str, x: str, y: str, revision: str, **extra) -> go.Figure:
    fig.update_layout(
        title={"text": title},
        xaxis_title=x,
        yaxis_title=y,
        uirevision=revision,
        legend={"orientation": "h", "yanchor": "top", "y": -0.18, "x": 0},
        margin={"l": 60, "r": 20, "t": 60, "b": 40},
        hovermode="x unified",
        **extra,
    )
    return fig


def color_for(index: int) -> str:
    return PALETTE[index % len(PALETTE)]


def _mix(hex_color: str, white: float) -> str:
    """``hex_color`` mixed with ``white`` (0 to 1) of white, as #rrggbb."""
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return "#" + "".join(f"{round(c + (255 - c) * white):02x}" for c in (r, g, b))


def epoch_axis(fig: go.Figure, last_epoch: float, **where) -> None:
    """Integer epoch ticks (1, 2, 5, 10, ... apart, at most about 10 of them): a run of 3 epochs
    shows 1, 2, 3, never 2.5."""
    last = max(1.0, float(last_epoch or 1))
    step = next(d for d in (1, 2, 5, 10, 20, 25, 50, 100, 200, 250, 500, 1000, 2000, 5000) if last / d <= 10)
    fig.update_xaxes(tickmode="linear", tick0=0 if step > 1 else 1, dtick=step, tickformat="d", **where)


def _rgba(hex_color: str, alpha: float) -> str:
    r, g, b = (int(hex_color[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


# --- noise -----------------------------------------------------------------------------------
def noise_heatmap(matrix, class_names: Sequence[str] | None = None, *, title: str = "") -> go.Figure:
    """Heatmap of a (C, C) transition matrix: row = true label, column = noisy label."""
    z = np.asarray(matrix, dtype=float)
    c = z.shape[0]
    names = list(class_names) if class_names and len(class_names) == c else [str(i) for i in range(c)]
    small = c <= 12
    fig = go.Figure(
        go.Heatmap(
            z=z, x=names, y=names, zmin=0, zmax=1, colorscale="Blues",
            colorbar={"title": {"text": "P(noisy | true)", "side": "right"}, "thickness": 10},
            texttemplate="%{z:.2f}" if small else None, textfont={"size": 10},
            hovertemplate="true %{y} -> noisy %{x}: %{z:.3f}<extra></extra>",
        )
    )
    fig.update_yaxes(autorange="reversed", type="category")
    long_names = max(map(len, names)) > 3
    fig.update_xaxes(type="category", tickangle=-45 if long_names else 0, showticklabels=small)
    if not small:
        fig.update_yaxes(showticklabels=False)
    _layout(fig, title or "Noise transition matrix", "noisy label (what training sees)", "true label", "noise")
    fig.update_layout(hovermode="closest", height=440, margin={"l": 60, "r": 10, "t": 50, "b": 60})
    return fig


# --- run curves ------------------------------------------------------------------------------
LIVE_DATASET = "curves"


def shade(hex_color: str, step: int) -> str:
    """``hex_color`` lightened towards white by 30% per step (step 0: unchanged), as #rrggbb."""
    return _mix(hex_color, min(0.3 * step, 0.75))


def live_curves(
    frame: pd.DataFrame, metric: str, labels: Mapping[str, str], colors: Mapping[str, str] | None = None
) -> dict:
    """Vega-Lite spec (data included) of one line per run against epoch, for
    ``st.vega_lite_chart(spec=...)``: a detail chart over a thin overview strip; dragging on the
    strip zooms the detail, double-clicking it resets.

    The data travel in the named dataset ``curves``, so the spec proper depends only on the
    metric and the run labels: on a refresh Streamlit swaps the rows inside the same view, and
    the zoom (a brush, kept in epoch units) stays where the user put it. ``colors`` maps each
    label to a colour (default: Vega's palette)."""
    factor = metric_scale(metric)
    rows: list[dict] = []
    if not frame.empty and metric in frame:
        part = frame.dropna(subset=[metric])
        rows = [
            {"run": labels.get(r, f"run {r}"), "epoch": int(e), "value": float(v) * factor}
            for r, e, v in zip(part["run_id"], part["epoch"], part[metric], strict=True)
        ]
    y_title = metric_title(metric)
    zoom = alt.selection_interval(encodings=["x"], name="zoom")
    domain = list(labels.values())
    scale = alt.Scale(domain=domain, range=[colors[x] for x in domain]) if colors and all(x in colors for x in domain) else alt.Undefined
    color = alt.Color("run:N", title=None, sort=domain, scale=scale, legend=alt.Legend(orient="bottom", columns=2, labelLimit=500))
    base = alt.Chart(alt.NamedData(LIVE_DATASET)).mark_line(point=alt.OverlayMarkDef(size=16), clip=True)
    detail = base.encode(
        x=alt.X("epoch:Q", title="epoch", scale=alt.Scale(domain={"param": "zoom"}), axis=alt.Axis(tickMinStep=1)),
        y=alt.Y("value:Q", title=y_title, scale=alt.Scale(zero=False)),
        color=color,
        tooltip=[alt.Tooltip("run:N"), alt.Tooltip("epoch:Q"), alt.Tooltip("value:Q", title=y_title, format=".4g")],
    ).properties(height=340, width="container", title=alt.TitleParams(y_title.split(" (")[0], anchor="start"))
    overview = (
        base.mark_line(clip=True)
        .encode(
            x=alt.X("epoch:Q", title="epoch: drag here to zoom, double-click to reset", axis=alt.Axis(tickMinStep=1)),
            y=alt.Y("value:Q", axis=None, scale=alt.Scale(zero=False)),
            color=color,
        )
        .add_params(zoom)
        .properties(height=50, width="container", name="overview")  # a fixed name keeps the spec stable
    )
    spec = alt.vconcat(detail, overview).to_dict(validate=False)
    for key in ("$schema", "config"):
        spec.pop(key, None)
    spec["datasets"] = {LIVE_DATASET: rows}
    return spec


def _n_label(ns: Sequence[int]) -> str:
    lo, hi = min(ns), max(ns)
    return f"n={lo}" if lo == hi else f"n={lo}–{hi}"


def _group_ns(bands: pd.DataFrame) -> dict[str, list[int]]:
    """Group -> its number of runs in each panel (the most over its epochs), in order of appearance."""
    ns: dict[str, list[int]] = {}
    for group, rows in bands.groupby(["group", "panel"] if "panel" in bands else "group", sort=False):
        ns.setdefault(group[0] if isinstance(group, tuple) else group, []).append(int(rows["n"].max()))
    return ns


def _panels(bands: pd.DataFrame) -> list:
    """The panels of ``bands`` in order of appearance, or [None] for one."""
    return list(dict.fromkeys(bands["panel"])) if "panel" in bands and bands["panel"].nunique() > 1 else [None]


def _number(value: float, factor: float = 1.0) -> float | None:
    return None if value is None or math.isnan(value) else float(value) * factor


BANDS_DATASET = "bands"
PANEL_WIDTHS = {2: 430, 3: 280}  # px per panel, so that a row of panels fits the wide layout


def band_chart(
    bands: pd.DataFrame,
    metric: str,
    *,
    raw: pd.DataFrame | None = None,
    subtitle: str = "",
    colors: Mapping[str, str] | None = None,
) -> dict:
    """Vega-Lite spec (data included) of band_figure's chart, for
    ``st.vega_lite_chart(spec=..., width="stretch")``: mean line and mean ± std band per group,
    the legend naming each group with its number of runs (n), thin per-run lines from ``raw``
    (group, run_id, epoch, value, maybe panel) and small multiples (shared axes, up to 3 a row)
    when ``bands`` (group, epoch, mean, std, n, maybe panel; see compare_logic.aggregate) has
    several panels. ``colors`` maps a group to a colour (else the palette). The title names the
    metric and ``subtitle`` what the chart shows, so that a PNG from the chart's toolbar says it.

    As in live_curves, a detail chart sits over a thin overview strip (drag on the strip to
    zoom, double-click to reset), and the rows travel in the named dataset ``bands``: the spec
    proper depends only on the metric, the groups with their n, the panels and the subtitle,
    so while runs train Streamlit swaps the rows in the same view and the zoom stays."""
    factor = metric_scale(metric)
    y_title = metric_title(metric)
    order = list(dict.fromkeys(bands["group"])) if not bands.empty else []
    ns = _group_ns(bands)
    labels = {g: f"{g} ({_n_label(ns[g])})" for g in order}
    panels = _panels(bands)
    empty = {"kind": "", "panel": "", "line": "", "run": None, "epoch": 0, "mean": None, "lo": None, "hi": None, "n": None, "value": None}
    rows = []
    for g, p, e, m, s, n in zip(bands["group"], bands["panel"] if "panel" in bands else [""] * len(bands),
                                bands["epoch"], bands["mean"], bands["std"], bands["n"], strict=True):
        s = 0.0 if s is None or math.isnan(s) else float(s)
        rows.append({**empty, "kind": "band", "panel": str(p), "line": labels[g], "epoch": int(e), "mean": _number(m, factor),
                     "lo": _number(m - s, factor), "hi": _number(m + s, factor), "n": int(n)})
    if raw is not None and not raw.empty:
        part = raw[raw["group"].isin(labels)]
        for g, p, r, e, v in zip(part["group"], part["panel"] if "panel" in part else [""] * len(part),
                                 part["run_id"], part["epoch"], part["value"], strict=True):
            rows.append({**empty, "kind": "run", "panel": str(p), "line": labels[g], "run": str(r), "epoch": int(e),
                         "value": _number(v, factor)})

    domain = [labels[g] for g in order]
    scale = alt.Scale(domain=domain, range=[(colors or {}).get(g) or color_for(i) for i, g in enumerate(order)]) if order else alt.Undefined
    color = alt.Color("line:N", title=None, sort=domain, scale=scale, legend=alt.Legend(
        orient="bottom", columns=3, labelLimit=600, symbolOpacity=1))  # the lines' full colours, not the pale band's
    zoom = alt.selection_interval(encodings=["x"], name="zoom")
    ticks = alt.Axis(tickMinStep=1, format="d")  # integer epochs: a run of 3 epochs shows 1, 2, 3
    x = alt.X("epoch:Q", title="epoch", scale=alt.Scale(domain={"param": "zoom"}, nice=False), axis=ticks)  # ends at the last epoch
    y_scale = alt.Scale(zero=False)

    def y(field: str) -> alt.Y:  # one title for every layer, else Vega-Lite joins the field names
        return alt.Y(f"{field}:Q", title=y_title, scale=y_scale)

    def kind(name: str) -> alt.Chart:
        return alt.Chart().transform_filter(alt.datum.kind == name)

    band = kind("band").mark_area(opacity=0.18, clip=True).encode(x=x, y=y("lo"), y2="hi:Q", color=color)
    runs = kind("run").mark_line(strokeWidth=1, opacity=0.35, clip=True).encode(x=x, y=y("value"), color=color, detail="run:N")
    mean = kind("band").mark_line(strokeWidth=2.5, clip=True).encode(x=x, y=y("mean"), color=color)
    hover = kind("band").mark_point(size=60, opacity=0, clip=True).encode(  # invisible: a tooltip per epoch, no marker
        x=x, y=y("mean"), detail="line:N",
        tooltip=[alt.Tooltip("line:N", title="line"), alt.Tooltip("epoch:Q"),
                 alt.Tooltip("mean:Q", title=y_title, format=".4g"), alt.Tooltip("n:Q", title="runs")],
    )
    layers = alt.layer(band, *([runs] if raw is not None else []), mean, hover, data=alt.NamedData(BANDS_DATASET))
    if panels == [None]:
        detail, width = layers.properties(height=340, width="container"), "container"
    else:
        cols = min(len(panels), 3)
        cell = PANEL_WIDTHS[cols]
        detail = layers.properties(height=300, width=cell).facet(
            facet=alt.Facet("panel:N", title=None, sort=[str(p) for p in panels], header=alt.Header(labelFontSize=13)),
            columns=cols, spacing=16,
        )
        width = cols * cell + 16 * (cols - 1)
    overview = (
        alt.Chart(alt.NamedData(BANDS_DATASET))
        .transform_filter(alt.datum.kind == "band")
        .mark_line(clip=True)
        .encode(
            x=alt.X("epoch:Q", title="epoch: drag here to zoom, double-click to reset", axis=ticks, scale=alt.Scale(nice=False)),
            y=alt.Y("mean:Q", axis=None, scale=y_scale),
            color=color,
            detail="panel:N",
        )
        .add_params(zoom)
        .properties(height=50, width=width, name="overview")  # a fixed name keeps the spec stable
    )
    pooled = bool(order) and (bands["n"] > 1).any()
    head = y_title.split(" (")[0] + (": mean ± std over runs" if pooled else "")
    title = alt.TitleParams(head, subtitle=subtitle or alt.Undefined, anchor="start")
    # Streamlit stretches a plain view of a vconcat to the container; the strip under panels
    # keeps their width instead (a one-view hconcat), so that it spans the same epochs' width.
    strip = overview if panels == [None] else alt.hconcat(overview)
    spec = alt.vconcat(detail, strip, title=title).to_dict(validate=False)
    for key in ("$schema", "config"):
        spec.pop(key, None)
    if panels == [None]:  # stretched to the container, axes included (else the y axis overflows it)
        spec["autosize"] = {"type": "fit-x", "contains": "padding"}
    spec["datasets"] = {BANDS_DATASET: rows}
    return spec


def band_figure(
    bands: pd.DataFrame,
    metric: str,
    *,
    raw: pd.DataFrame | None = None,
    title: str = "",
    subtitle: str = "",
    revision: str = "compare",
    colors: Mapping[str, str] | None = None,
) -> go.Figure:
    """Mean line and mean ± std band per group, the legend naming each group with its number of
    runs (n). ``bands`` has group, epoch, mean, std, n (see compare_logic.aggregate) and maybe
    panel: several panels make small multiples side by side (shared axes), one group keeping one
    colour and one legend entry across them. ``raw`` (optional) has group, run_id, epoch, value
    (and panel) for thin per-run lines under each band. ``colors`` maps a group to a colour
    (else the palette). ``subtitle`` names what the chart shows (data, noise, epochs) so that a
    saved PNG says it too."""
    panels = _panels(bands)
    cols = min(len(panels), 3)
    rows_n = math.ceil(len(panels) / cols)
    if panels == [None]:
        fig = go.Figure()
    else:
        fig = make_subplots(rows=rows_n, cols=cols, shared_yaxes=True, shared_xaxes=True,
                            subplot_titles=[str(p) for p in panels], horizontal_spacing=0.04, vertical_spacing=0.12)
    scale = metric_scale(metric)
    order = list(dict.fromkeys(bands["group"])) if not bands.empty else []
    ns = _group_ns(bands)
    shown: set[str] = set()
    for p_i, panel in enumerate(panels):
        where = {} if panel is None else {"row": p_i // cols + 1, "col": p_i % cols + 1}
        part = bands if panel is None else bands[bands["panel"] == panel]
        raw_part = raw if raw is None or panel is None else raw[raw["panel"] == panel]
        for group, rows in part.groupby("group", sort=False):
            color = (colors or {}).get(group) or color_for(order.index(group))
            rows = rows.sort_values("epoch")
            std = rows["std"].fillna(0.0)
            if (rows["n"] > 1).any():
                fig.add_trace(go.Scatter(
                    x=pd.concat([rows["epoch"], rows["epoch"][::-1]]),
                    y=pd.concat([(rows["mean"] + std) * scale, (rows["mean"] - std)[::-1] * scale]),
                    mode="lines", fill="toself", fillcolor=_rgba(color, 0.18), line={"width": 0},
                    hoverinfo="skip", showlegend=False, legendgroup=str(group),
                ), **where)
            if raw_part is not None:
                for run_id, run in raw_part[raw_part["group"] == group].groupby("run_id"):
                    fig.add_trace(go.Scatter(
                        x=run["epoch"], y=run["value"] * scale, mode="lines",
                        line={"color": _rgba(color, 0.35), "width": 1}, legendgroup=str(group),
                        showlegend=False, name=f"{group} run {run_id}", hoverinfo="skip",
                    ), **where)
            first = group not in shown
            shown.add(group)
            fig.add_trace(go.Scatter(
                x=rows["epoch"], y=rows["mean"] * scale, mode="lines", line={"color": color, "width": 2.5},
                name=f"{group} ({_n_label(ns[group])})", legendgroup=str(group), showlegend=first,
                customdata=rows["n"], hovertemplate="%{y:.4g} (n=%{customdata})",
            ), **where)
    pooled = (bands["n"] > 1).any() if not bands.empty else False
    y = metric_title(metric)
    head = (title or metric_title(metric).split(" (")[0]) + (": mean ± std over runs" if pooled else "")
    if subtitle:
        head += f"<br><sup>{html.escape(subtitle)}</sup>"
    _layout(fig, head, "epoch", y, revision)
    if panels != [None]:  # titles on the outer axes only
        fig.update_xaxes(title_text="")
        fig.update_yaxes(title_text="")
        for c in range(1, cols + 1):
            fig.update_xaxes(title_text="epoch", row=rows_n, col=c)
        fig.update_yaxes(title_text=y, row=1, col=1)
    last = float(bands["epoch"].max()) if not bands.empty else 1.0
    epoch_axis(fig, last)
    legend_rows = math.ceil(len(order) / 3)
    fig.update_layout(height=140 + 340 * rows_n + 24 * legend_rows, margin={"l": 60, "r": 20, "t": 80, "b": 40})
    return fig


SWEEP_AXES = {"q": "q (exponent of Lq)", "noise_rate": "noise rate η", "k": "k (truncation threshold)"}


def sweep_figure(
    table: pd.DataFrame, param: str, metric: str, *, colors: Mapping[str, str], title: str = "",
    subtitle: str = "", bound: pd.DataFrame | None = None, bound_title: str = "",
) -> go.Figure:
    """A summary metric against the swept ``param`` (one of SWEEP_AXES): one line per loss with
    mean ± std error bars, each point's number of runs in its hover and the legend. ``table``:
    line, x, mean, std, n (metric in percent; see compare_logic.sweep_table); a line whose x is
    NaN (a loss that does not take ``param``, like CCE in a q sweep) is drawn flat, dashed, with
    its ± std band. ``bound`` (optional: x, value, line) is drawn on a right-hand axis titled
    ``bound_title``."""
    fig = go.Figure()
    xs = table["x"].dropna()
    x_range = (float(xs.min()), float(xs.max())) if not xs.empty else (0.0, 1.0)
    for line, rows in table.groupby("line", sort=False):
        color = colors.get(line, OTHER_LOSS_COLOR)
        ns = [int(n) for n in rows["n"]]
        if rows["x"].isna().all():
            r = rows.iloc[0]
            std = 0.0 if math.isnan(r["std"]) else float(r["std"])
            if std:
                fig.add_trace(go.Scatter(
                    x=[*x_range, *x_range[::-1]], y=[r["mean"] + std] * 2 + [r["mean"] - std] * 2, mode="lines",
                    fill="toself", fillcolor=_rgba(color, 0.12), line={"width": 0}, hoverinfo="skip",
                    showlegend=False, legendgroup=str(line),
                ))
            fig.add_trace(go.Scatter(
                x=list(x_range), y=[r["mean"]] * 2, mode="lines", line={"color": color, "dash": "dash", "width": 2},
                name=f"{line} (n={ns[0]}, no {param})", legendgroup=str(line),
                hovertemplate=f"{line}: %{{y:.2f}} (n={ns[0]})<extra></extra>",
            ))
            continue
        rows = rows.sort_values("x")
        fig.add_trace(go.Scatter(
            x=rows["x"], y=rows["mean"], mode="lines+markers", marker={"size": 8}, line={"color": color, "width": 2.5},
            error_y={"type": "data", "array": rows["std"].fillna(0.0), "visible": True, "thickness": 1.5, "width": 5},
            name=f"{line} ({_n_label(ns)})", legendgroup=str(line), customdata=np.stack([rows["std"], rows["n"]], axis=-1),
            hovertemplate=f"{line}, {param}=%{{x:g}}: %{{y:.2f}} ± %{{customdata[0]:.2f}} (n=%{{customdata[1]}})<extra></extra>",
        ))
    if bound is not None and not bound.empty:
        for line, rows in bound.groupby("line", sort=False):
            fig.add_trace(go.Scatter(
                x=rows["x"], y=rows["value"], mode="lines", yaxis="y2", name=str(line),
                line={"color": "#444", "dash": "dot", "width": 1.5},
            ))
        fig.update_layout(yaxis2={"title": {"text": bound_title}, "overlaying": "y", "side": "right", "rangemode": "tozero", "showgrid": False})
    head = title or f"{metric_title(metric).split(' (')[0]} against {param}"
    if subtitle:
        head += f"<br><sup>{html.escape(subtitle)}</sup>"
    _layout(fig, head, SWEEP_AXES.get(param, param), metric_title(metric) + " — mean ± std over seeds", f"sweep-{param}-{metric}")
    fig.update_layout(hovermode="closest", height=520, margin={"l": 60, "r": 60, "t": 80, "b": 40})
    return fig


# --- theory ----------------------------------------------------------------------------------
def _fy_grid(points: int = 400) -> np.ndarray:
    return np.linspace(1e-3, 1.0, points)


def lq_curve(f: np.ndarray, q: float) -> np.ndarray:
    return -np.expm1(q * np.log(f)) / q


def loss_vs_fy(qs: Sequence[float], k: float, truncated_q: float | None = None) -> go.Figure:
    """Each loss against f_y: CCE, MAE (paper scale 2 - 2 f_y), Lq for each q and the truncated
    Lq at ``truncated_q`` (default: the q nearest the paper's 0.7) and threshold k."""
    f = _fy_grid()
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=f, y=-np.log(f), name="CCE  -log f_y", line={"color": LOSS_COLORS["cce"], "width": 2.5}))
    fig.add_trace(go.Scatter(x=f, y=2 - 2 * f, name="MAE  2 - 2 f_y", line={"color": LOSS_COLORS["mae"], "width": 2.5}))
    for i, q in enumerate(sorted(qs)):
        fig.add_trace(go.Scatter(x=f, y=lq_curve(f, q), name=f"Lq  q={q:g}", line={"color": _blue(i, len(qs))}))
    if qs:
        tq = truncated_q if truncated_q is not None else min(qs, key=lambda q: abs(q - 0.7))
        trunc = np.where(f > k, lq_curve(f, tq), lq_curve(np.array([k]), tq)[0])
        fig.add_trace(go.Scatter(
            x=f, y=trunc, name=f"truncated Lq  q={tq:g}, k={k:g}",
            line={"color": LOSS_COLORS["truncated_lq"], "dash": "dash", "width": 2.5},
        ))
    fig.update_yaxes(range=[0, 4.5])
    return _layout(fig, "Loss against f_y", "f_y (softmax probability of the label)", "loss of one sample", "theory-loss")


def _blue(i: int, n: int) -> str:
    shade = 0.35 + 0.65 * (i + 1) / max(n, 1)
    return f"rgba(31,119,180,{shade:.2f})"


def gradient_weight(qs: Sequence[float]) -> go.Figure:
    """Weight f_y^q that Lq puts on a sample's CCE gradient; CCE is 1 everywhere, MAE 2 f_y."""
    f = _fy_grid()
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=f, y=np.ones_like(f), name="CCE  weight 1", line={"color": LOSS_COLORS["cce"], "width": 2.5}))
    fig.add_trace(go.Scatter(x=f, y=2 * f, name="MAE  weight 2 f_y", line={"color": LOSS_COLORS["mae"], "width": 2.5}))
    for i, q in enumerate(sorted(qs)):
        fig.add_trace(go.Scatter(x=f, y=f**q, name=f"Lq  f_y^{q:g}", line={"color": _blue(i, len(qs))}))
    return _layout(fig, "Gradient weight: how much a sample pushes the model", "f_y (softmax probability of the label)", "weight on the CCE gradient", "theory-grad")


def zoo_loss_value(names: Sequence[str]) -> go.Figure:
    """The value of each loss of ``names`` (the registry's ``of_fy``, at its paper's defaults)
    against f_y; losses whose value is not a function of f_y alone are left out."""
    f = _fy_grid()
    fig = go.Figure()
    for name in names:
        loss = get_loss(name)
        if loss.of_fy is None:
            continue
        value = loss.of_fy(torch.as_tensor(f), **loss.defaults).numpy()
        params = ", ".join(f"{n}={v:g}" for n, v in loss.defaults.items())
        fig.add_trace(go.Scatter(x=f, y=value, name=f"{loss.label}  {params}".strip(), line={"color": loss_color(name)}))
    fig.update_yaxes(range=[0, 6])
    return _layout(fig, "Loss of each loss against f_y (its paper's defaults)", "f_y (softmax probability of the label)",
                   "loss of one sample", "theory-zoo-value")


def zoo_gradient_weight(names: Sequence[str]) -> go.Figure:
    """The weight each loss of ``names`` (the registry's, at their defaults; those that depend
    on f_y alone) puts on a sample's CCE gradient, against f_y, on a log scale: how hard a sample
    pushes the model, relative to CCE (1 everywhere)."""
    f = _fy_grid()
    fig = go.Figure()
    for name in names:
        loss = get_loss(name)
        if loss.grad_weight is None:
            continue
        weight = loss.grad_weight(torch.as_tensor(f), **loss.defaults).numpy()
        params = ", ".join(f"{n}={v:g}" for n, v in loss.defaults.items())
        fig.add_trace(go.Scatter(x=f, y=np.clip(weight, 1e-6, None), name=f"{loss.label}  {params}".strip(),
                                 line={"color": loss_color(name)}))
    fig.update_yaxes(type="log", range=[-3, 1.7], dtick=1)  # 0.001 to 50, a label a decade
    return _layout(fig, "Gradient weight of each loss (its paper's defaults)", "f_y (softmax probability of the label)",
                   "weight on the CCE gradient (log scale)", "theory-zoo")


def bounds_vs_q(num_classes: int, k: float, marks: Sequence[float] = ()) -> go.Figure:
    """Lower and upper bound of the loss summed over all c labels, against q."""
    c = num_classes
    qs = np.linspace(0.05, 1.0, 96)
    lq = np.array([lq_sum_bounds(c, q) for q in qs])
    fig = go.Figure()
    fig.add_trace(go.Scatter(x=qs, y=lq[:, 1], line={"color": LOSS_COLORS["lq"], "width": 1}, showlegend=False, hoverinfo="skip"))
    fig.add_trace(go.Scatter(
        x=qs, y=lq[:, 0], fill="tonexty", fillcolor=_rgba("#1f77b4", 0.22),
        line={"color": LOSS_COLORS["lq"], "width": 1}, name="Lq band  [(c - c^(1-q))/q, (c-1)/q]",
    ))
    trunc = [(q, *truncated_lq_sum_bounds(c, q, k)) for q in qs] if k >= 1.0 / c else []
    if trunc:
        t = np.array(trunc)
        fig.add_trace(go.Scatter(x=t[:, 0], y=t[:, 2], line={"color": LOSS_COLORS["truncated_lq"], "width": 1}, showlegend=False, hoverinfo="skip"))
        fig.add_trace(go.Scatter(
            x=t[:, 0], y=t[:, 1], fill="tonexty", fillcolor=_rgba("#2ca02c", 0.35),
            line={"color": LOSS_COLORS["truncated_lq"], "width": 1}, name=f"truncated Lq band (k={k:g})",
        ))
    fig.add_trace(go.Scatter(
        x=qs, y=np.full_like(qs, mae_sum(c)), name=f"MAE: always 2(c-1) = {mae_sum(c):g}",
        line={"color": LOSS_COLORS["mae"], "width": 2.5},
    ))
    cce_low = c * math.log(c)
    fig.add_trace(go.Scatter(
        x=qs, y=np.full_like(qs, cce_low), name=f"CCE: from c·log c = {cce_low:.3g} up to ∞",
        line={"color": LOSS_COLORS["cce"], "dash": "dot", "width": 2},
    ))
    for q in marks:
        fig.add_vline(x=q, line={"color": "#444", "dash": "dot", "width": 1})
    top = float(np.nanmax(lq[:, 1]))
    ticks = [v for v in (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000) if v <= 2 * top]
    fig.update_yaxes(type="log", tickvals=ticks, ticktext=[f"{v:g}" for v in ticks])
    return _layout(fig, f"Loss summed over all {c} labels: the narrower, the more noise-robust", "q", "sum over j of L(f(x), e_j)  (log scale)", "theory-bounds")


def measured_loss_sum(
    epochs: Sequence[int], values: Sequence[float], loss: str, num_classes: int, q: float = 0.7,
    k: float = 0.5, **params: float,
) -> go.Figure:
    """A run's per-epoch mean loss sum (over test images) inside its theoretical band. ``params``:
    the run's other loss parameters (``RunSpec.loss_params()``)."""
    lo, hi = loss_bounds(loss, num_classes, q=q, k=k, **params)
    fig = go.Figure()
    x = list(epochs)
    if x:
        if math.isfinite(hi) and hi > lo:
            fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[hi, hi], line={"color": "#888", "width": 1}, name=f"upper bound {hi:.3g}"))
            fig.add_trace(go.Scatter(
                x=[x[0], x[-1]], y=[lo, lo], fill="tonexty", fillcolor=_rgba("#1f77b4", 0.15),
                line={"color": "#888", "width": 1}, name=f"lower bound {lo:.3g}",
            ))
        else:
            label = "constant" if math.isfinite(hi) else "lower bound (no upper bound)"
            fig.add_trace(go.Scatter(x=[x[0], x[-1]], y=[lo, lo], line={"color": "#888", "dash": "dash"}, name=f"{label} {lo:.3g}"))
    fig.add_trace(go.Scatter(
        x=x, y=list(values), mode="lines+markers", marker={"size": 4},
        line={"color": loss_color(loss), "width": 2.5}, name="measured (test mean)",
    ))
    _layout(fig, "This run's loss sum inside its band", "epoch", "sum over j of L(f(x), e_j)", "theory-run")
    epoch_axis(fig, max(x) if x else 1)
    return fig


# --- noise insight ---------------------------------------------------------------------------
def fy_histograms(clean: Sequence[int], noisy: Sequence[int], epoch: int) -> go.Figure:
    """Share of clean vs flipped training samples per f_y bin (20 bins over [0, 1])."""
    edges = np.linspace(0, 1, HIST_BINS + 1)
    centers = (edges[:-1] + edges[1:]) / 2
    fig = go.Figure()
    for name, counts, color in (("clean samples", clean, "#1f77b4"), ("flipped (noisy) samples", noisy, "#d62728")):
        counts = np.asarray(counts, dtype=float)
        total = counts.sum()
        share = counts / total * 100 if total else counts
        fig.add_trace(go.Bar(
            x=centers, y=share, width=1 / HIST_BINS, name=f"{name} (n={int(total)})",
            marker={"color": _rgba(color, 0.55), "line": {"color": color, "width": 1}},
            customdata=counts, hovertemplate="f_y %{x:.2f}: %{y:.1f}% (%{customdata:.0f})<extra></extra>",
        ))
    fig.update_layout(barmode="overlay")
    fig.update_xaxes(range=[0, 1])
    return _layout(fig, f"f_y of clean vs flipped training samples, epoch {epoch}", "f_y (softmax probability of the GIVEN label)", "share of the group (%)", "insight-hist")


def lines_figure(
    rows: pd.DataFrame, metrics: Sequence[str], *, title: str, y_title: str, revision: str
) -> go.Figure:
    """Several metrics of ONE run against epoch (percent metrics scaled to %)."""
    fig = go.Figure()
    for i, metric in enumerate(metrics):
        if metric in rows and rows[metric].notna().any():
            fig.add_trace(go.Scatter(
                x=rows["epoch"], y=rows[metric] * metric_scale(metric), mode="lines+markers",
                marker={"size": 4}, name=metric_title(metric), line={"color": color_for(i)},
            ))
    _layout(fig, title, "epoch", y_title, revision)
    epoch_axis(fig, rows["epoch"].max() if len(rows) else 1)
    return fig

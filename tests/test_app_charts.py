"""app.charts: every figure has a title and titled axes; data land where they should."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from app import charts
from gce_core.bounds import lq_sum_bounds, mae_sum, truncated_lq_sum_bounds
from gce_core.noise import expected_transition


def _titled(fig):
    layout = fig.layout
    assert layout.title.text, "figure without a title"
    assert layout.xaxis.title.text and layout.yaxis.title.text, "axis without a title"
    return fig


def test_noise_heatmap():
    m = expected_transition("uniform", 0.4, 10)
    fig = _titled(charts.noise_heatmap(m, [str(i) for i in range(10)]))
    np.testing.assert_allclose(np.asarray(fig.data[0].z), m.numpy())
    assert fig.layout.yaxis.autorange == "reversed"  # row 0 (true class 0) on top


def test_bands():
    bands = pd.DataFrame({"group": ["g", "g"], "epoch": [1, 2], "mean": [0.6, 0.7], "std": [0.1, 0.1], "n": [2, 2]})
    fig = _titled(charts.band_figure(bands, "test_acc"))
    band, mean = fig.data
    assert band.fill == "toself" and list(band.y) == pytest.approx([70, 80, 60, 50])
    assert mean.name == "g (n=2)"
    assert "mean ± std" in fig.layout.title.text


def test_theory_figures():
    _titled(charts.loss_vs_fy([0.3, 0.7], 0.5))
    grad = _titled(charts.gradient_weight([0.7]))
    assert grad.data[2].y[-1] == pytest.approx(1.0)  # f_y^q at f_y = 1
    fig = _titled(charts.bounds_vs_q(10, 0.5, marks=[0.7]))
    names = [t.name for t in fig.data]
    lq_lower = fig.data[1]
    i = int(np.argmin(np.abs(np.asarray(lq_lower.x) - 1.0)))
    assert lq_lower.y[i] == pytest.approx(lq_sum_bounds(10, 1.0)[0])
    assert any(n and n.startswith("MAE") for n in names)
    mae = next(t for t in fig.data if t.name and t.name.startswith("MAE"))
    assert set(mae.y) == {mae_sum(10)}
    trunc_lower = next(t for t in fig.data if t.name and t.name.startswith("truncated"))
    assert trunc_lower.y[-1] == pytest.approx(truncated_lq_sum_bounds(10, 1.0, 0.5)[0])
    run = _titled(charts.measured_loss_sum([1, 2], [12.0, 11.5], "lq", 10, 0.7, 0.5))
    assert run.data[-1].name.startswith("measured")
    cce = _titled(charts.measured_loss_sum([1, 2], [30.0, 40.0], "cce", 10, 0.7, 0.5))
    assert "no upper bound" in cce.data[0].name


def test_insight_figures():
    clean, noisy = [0] * 19 + [10], [5] * 20
    fig = _titled(charts.fy_histograms(clean, noisy, epoch=3))
    assert sum(fig.data[0].y) == pytest.approx(100) and sum(fig.data[1].y) == pytest.approx(100)
    assert "n=10" in fig.data[0].name
    rows = pd.DataFrame({"epoch": [1, 2], "memorised": [0.1, 0.2], "prune_precision": [None, None]})
    fig = _titled(charts.lines_figure(rows, ["memorised", "prune_precision"], title="t", y_title="share (%)", revision="x"))
    assert len(fig.data) == 1  # an all-missing metric is left out


def test_png_config_names_the_file():
    cfg = charts.png_config("my-chart")
    assert cfg["toImageButtonOptions"] == {"format": "png", "scale": 2, "filename": "my-chart"}


def test_live_curves_spec_stays_the_same_while_the_data_grow():
    labels = {"a": "run a", "b": "run b"}
    small = pd.DataFrame({"run_id": ["a", "b"], "epoch": [1, 1], "val_acc": [0.5, 0.4]})
    big = pd.DataFrame({"run_id": ["a", "b", "a"], "epoch": [1, 1, 2], "val_acc": [0.5, 0.4, 0.6]})
    s1, s2 = charts.live_curves(small, "val_acc", labels), charts.live_curves(big, "val_acc", labels)
    d1, d2 = s1.pop("datasets"), s2.pop("datasets")
    assert s1 == s2  # only the named dataset changes: Streamlit updates the view in place
    assert d2["curves"][-1] == {"run": "run a", "epoch": 2, "value": pytest.approx(60.0)}
    assert len(d1["curves"]) == 2
    detail, overview = s1["vconcat"]
    assert detail["encoding"]["x"]["scale"]["domain"] == {"param": "zoom"}
    assert detail["encoding"]["x"]["title"] == "epoch"
    assert detail["encoding"]["y"]["title"] == "noisy-validation accuracy (%)"
    assert detail["title"]["text"] == "noisy-validation accuracy"
    assert s1["params"] == [{"name": "zoom", "select": {"type": "interval", "encodings": ["x"]}, "views": ["overview"]}]
    assert "drag here to zoom" in overview["encoding"]["x"]["title"]
    colored = charts.live_curves(small, "val_acc", labels, {"run a": "#000000", "run b": "#ffffff"})
    assert colored["vconcat"][0]["encoding"]["color"]["scale"] == {"domain": ["run a", "run b"], "range": ["#000000", "#ffffff"]}


def test_shade():
    assert charts.shade("#d62728", 0) == "#d62728"
    assert charts.shade("#000000", 1) == "#4c4c4c"
    assert charts.shade("#000000", 9) == charts.shade("#000000", 3)  # capped at 75% white


def test_the_loss_zoo_gradient_weights_at_the_papers_defaults():
    fig = charts.zoo_gradient_weight(["cce", "mae", "lq", "nce_mae", "aul"])
    by_name = {t.name.split()[0]: t for t in fig.data}
    assert set(by_name) == {"CCE", "MAE", "Lq", "AUL"}  # NCE+MAE looks at every output: no f_y curve
    f = np.asarray(by_name["Lq"].x)
    assert np.allclose(by_name["Lq"].y, f**0.7, rtol=1e-5)
    assert np.allclose(by_name["MAE"].y, 2 * f, rtol=1e-5)
    assert np.allclose(by_name["AUL"].y, f * (5.5 - f) ** 2, rtol=1e-4)  # f_y (a - f_y)^(p - 1)
    assert fig.layout.yaxis.type == "log"


def test_a_loss_has_one_colour_everywhere_and_a_sweep_ordered_shades():
    from gce_core.losses import LOSS_NAMES

    assert len({charts.loss_color(n) for n in LOSS_NAMES}) == len(LOSS_NAMES)  # every registry loss its own
    colors = charts.group_colors({"Lq q=0.7": "lq", "CCE": "cce", "Lq q=0.3": "lq"}, {"Lq q=0.7": 70, "Lq q=0.3": 30, "CCE": 70})
    assert colors["CCE"] == charts.loss_color("cce")
    assert colors["Lq q=0.7"] == charts.loss_color("lq")  # the largest q in full colour
    light = int(colors["Lq q=0.3"][1:3], 16)
    assert light > int(charts.loss_color("lq")[1:3], 16)  # the smaller q lighter, same hue


def test_short_runs_get_integer_epoch_ticks_and_bands_without_markers():
    bands = pd.DataFrame({"group": ["g"] * 3, "epoch": [1, 2, 3], "mean": [0.5, 0.6, 0.7], "std": [0.1] * 3, "n": [2, 2, 1]})
    fig = charts.band_figure(bands, "test_acc")
    assert fig.layout.xaxis.dtick == 1 and fig.layout.xaxis.tickformat == "d"
    assert all(t.mode == "lines" for t in fig.data)  # plotly's default for < 20 points adds markers
    long = pd.DataFrame({"group": ["g"] * 120, "epoch": range(1, 121), "mean": 0.5, "std": 0.0, "n": 1})
    assert charts.band_figure(long, "test_acc").layout.xaxis.dtick == 20


def test_panels_keep_one_legend_entry_and_colour_per_group_with_n():
    rows = []
    for panel, n in (("uniform 0.2", 2), ("uniform 0.4", 3)):
        for group in ("CCE", "MAE"):
            rows += [{"panel": panel, "group": group, "epoch": e, "mean": 0.5, "std": 0.1, "n": n} for e in (1, 2)]
    fig = charts.band_figure(pd.DataFrame(rows), "test_acc", subtitle="digits · <b>x</b>")
    legend = [t.name for t in fig.data if t.showlegend is not False and t.name]
    assert legend == ["CCE (n=2–3)", "MAE (n=2–3)"]
    assert [a.text for a in fig.layout.annotations] == ["uniform 0.2", "uniform 0.4"]
    assert "&lt;b&gt;x&lt;/b&gt;" in fig.layout.title.text  # the subtitle is text, not markup
    means = [t for t in fig.data if t.name and t.name.startswith("CCE")]
    assert len({t.line.color for t in means}) == 1


def test_sweep_figure_error_bars_and_flat_reference():
    table = pd.DataFrame({"line": ["Lq", "Lq", "CCE"], "loss": ["lq", "lq", "cce"], "x": [0.3, 0.7, np.nan],
                          "mean": [60.0, 70.0, 50.0], "std": [1.0, 2.0, 3.0], "n": [2, 2, 4]})
    fig = _titled(charts.sweep_figure(table, "q", "test_acc", colors={"Lq": "#1f77b4", "CCE": "#d62728"}))
    lq = next(t for t in fig.data if t.name and t.name.startswith("Lq"))
    assert list(lq.error_y.array) == [1.0, 2.0] and lq.name == "Lq (n=2)"
    cce = next(t for t in fig.data if t.name and t.name.startswith("CCE"))
    assert list(cce.x) == [0.3, 0.7] and list(cce.y) == [50.0, 50.0] and cce.line.dash == "dash"


def _bands(epochs: int, panels=("",), ns=(2, 3)) -> pd.DataFrame:
    rows = []
    for panel, n in zip(panels, ns * len(panels), strict=False):
        for group in ("CCE", "Lq q=0.7"):
            rows += [{"panel": panel, "group": group, "epoch": e, "mean": 0.5 + 0.01 * e, "std": 0.02, "n": n}
                     for e in range(1, epochs + 1)]
    return pd.DataFrame(rows)


def _raw(epochs: int, panel: str = "") -> pd.DataFrame:
    return pd.DataFrame([{"panel": panel, "group": "CCE", "run_id": run, "epoch": e, "value": 0.4 + 0.01 * e}
                         for run in ("1", "2") for e in range(1, epochs + 1)])


def _layers(spec: dict) -> dict[str, dict]:
    """The detail chart's layers by what they draw: band, runs, mean, hover."""
    detail = spec["vconcat"][0]
    layers = (detail["spec"] if "facet" in detail else detail)["layer"]
    names = {"area": "band", "point": "hover"}
    return {names.get(ly["mark"]["type"], "runs" if "detail" in ly["encoding"] else "mean"): ly for ly in layers}


def test_band_chart_spec_stays_the_same_while_the_data_grow():
    colors = {"CCE": "#d62728", "Lq q=0.7": "#1f77b4"}
    s1 = charts.band_chart(_bands(2), "test_acc", raw=_raw(2), subtitle="4 runs", colors=colors)
    s2 = charts.band_chart(_bands(5), "test_acc", raw=_raw(5), subtitle="4 runs", colors=colors)
    d1, d2 = s1.pop("datasets"), s2.pop("datasets")
    assert s1 == s2  # only the named dataset changes: Streamlit swaps the rows in the same view
    assert len(d1["bands"]) == 2 * 2 + 2 * 2 and len(d2["bands"]) == 2 * 5 + 2 * 5
    band = next(r for r in d2["bands"] if r["kind"] == "band" and r["epoch"] == 5 and r["line"].startswith("CCE"))
    assert (band["mean"], band["lo"], band["hi"]) == (pytest.approx(55.0), pytest.approx(53.0), pytest.approx(57.0))  # percent
    run = next(r for r in d2["bands"] if r["kind"] == "run" and r["run"] == "2" and r["epoch"] == 5)
    assert run["value"] == pytest.approx(45.0) and run["line"] == "CCE (n=2)"
    detail, overview = s1["vconcat"]
    assert all(layer["encoding"]["x"]["scale"] == {"domain": {"param": "zoom"}, "nice": False} for layer in detail["layer"])
    assert s1["params"] == [{"name": "zoom", "select": {"type": "interval", "encodings": ["x"]}, "views": ["overview"]}]
    assert overview["name"] == "overview" and "drag here to zoom" in overview["encoding"]["x"]["title"]
    assert overview["encoding"]["x"]["scale"] == {"nice": False}  # the strip spans every epoch, up to the last
    assert s1["title"] == {"text": "test accuracy: mean ± std over runs", "subtitle": "4 runs", "anchor": "start"}
    ungrown = charts.band_chart(_bands(2), "test_acc", raw=None, colors=colors)
    assert "runs" not in _layers(ungrown) and {"band", "runs", "mean", "hover"} == set(_layers(s1))


def test_band_chart_legend_names_n_and_colours_follow_the_groups():
    colors = {"CCE": "#d62728", "Lq q=0.7": "#1f77b4"}
    spec = charts.band_chart(_bands(3, panels=("uniform 0.2", "uniform 0.4"), ns=(2, 3)), "val_acc", colors=colors)
    layers = _layers(spec)
    color = layers["mean"]["encoding"]["color"]
    assert color["scale"] == {"domain": ["CCE (n=2–3)", "Lq q=0.7 (n=2–3)"], "range": ["#d62728", "#1f77b4"]}
    assert all(layer["encoding"].get("color", color) == color for layer in layers.values())  # one legend, one colour a group
    assert color["legend"]["symbolOpacity"] == 1  # the lines' full colours in the legend, not the pale band's
    assert layers["band"]["mark"]["opacity"] < 0.5 and layers["band"]["encoding"]["y2"]["field"] == "hi"
    assert layers["hover"]["mark"]["opacity"] == 0  # tooltips without markers at the band's edges
    assert all(layer["mark"]["type"] != "line" or "point" not in layer["mark"] for layer in layers.values())
    one = charts.band_chart(_bands(3, ns=(1,)), "val_acc")
    assert _layers(one)["mean"]["encoding"]["color"]["scale"]["domain"] == ["CCE (n=1)", "Lq q=0.7 (n=1)"]
    assert one["title"]["text"] == "noisy-validation accuracy"  # nothing pooled: no "mean ± std"
    assert "subtitle" not in one["title"]


def test_band_chart_panels_are_small_multiples_with_shared_axes():
    spec = charts.band_chart(_bands(3, panels=("uniform 0.2", "uniform 0.4", "pair 0.2", "pair 0.4")), "test_acc")
    detail = spec["vconcat"][0]
    assert detail["facet"]["field"] == "panel" and detail["columns"] == 3
    assert detail["facet"]["sort"] == ["uniform 0.2", "uniform 0.4", "pair 0.2", "pair 0.4"]  # the panels' order
    assert "resolve" not in detail  # a facet shares its scales: one x and one y for every panel
    assert detail["spec"]["width"] == charts.PANEL_WIDTHS[3]
    rows = spec["datasets"]["bands"]
    assert {r["panel"] for r in rows} == {"uniform 0.2", "uniform 0.4", "pair 0.2", "pair 0.4"}
    (strip,) = spec["vconcat"][1]["hconcat"]  # wrapped: Streamlit leaves its width, the panels' width
    assert strip["encoding"]["detail"]["field"] == "panel" and strip["width"] == 3 * charts.PANEL_WIDTHS[3] + 2 * 16
    single = charts.band_chart(_bands(3), "test_acc")
    assert "facet" not in single["vconcat"][0] and single["vconcat"][0]["width"] == "container"
    assert single["autosize"] == {"type": "fit-x", "contains": "padding"}  # stretched, y axis included


def test_band_chart_scales_values_like_the_metric_and_ticks_whole_epochs():
    bands = pd.DataFrame({"group": ["g"] * 2, "epoch": [1, 2], "mean": [0.7, 0.6], "std": [np.nan, np.nan], "n": [1, 1]})
    spec = charts.band_chart(bands, "train_loss")
    rows = spec["datasets"]["bands"]
    assert [(r["mean"], r["lo"], r["hi"]) for r in rows] == [(0.7, 0.7, 0.7), (0.6, 0.6, 0.6)]  # a loss is not in percent; one run: no band
    mean = _layers(spec)["mean"]
    assert mean["encoding"]["y"]["title"] == "training loss (mean per sample)"
    assert {layer["encoding"]["y"]["title"] for layer in _layers(spec).values()} == {"training loss (mean per sample)"}
    for axis in (mean["encoding"]["x"]["axis"], spec["vconcat"][1]["encoding"]["x"]["axis"]):
        assert axis == {"format": "d", "tickMinStep": 1}  # epoch 1, 2, 3, never 2.5
    pct = charts.band_chart(bands, "memorised")["datasets"]["bands"]
    assert [r["mean"] for r in pct] == [pytest.approx(70.0), pytest.approx(60.0)]

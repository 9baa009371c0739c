"""app.compare_logic: grouping, smoothing, mean ± std over seeds, the results table, config diff."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from app import compare_logic as cl
from gce_core.spec import from_preset


def _specs():
    base = from_preset("quick", "digits", noise="uniform", noise_rate=0.4)
    specs = {}
    for i, (loss, seed) in enumerate([("cce", 0), ("cce", 1), ("lq", 0), ("lq", 1)]):
        specs[f"r{i}"] = base.model_copy(update={"loss": loss, "seed": seed})
    return specs


def _frame(values: dict[str, list[float]]) -> pd.DataFrame:
    rows = []
    for run_id, accs in values.items():
        for epoch, acc in enumerate(accs, start=1):
            rows.append({"run_id": run_id, "epoch": epoch, "test_acc": acc, "val_acc": acc, "train_loss": 1.0 / epoch})
    return pd.DataFrame(rows)


def test_config_groups_pool_seeds_only():
    groups = cl.group_labels(_specs(), "config")
    assert groups == {"r0": "CCE", "r1": "CCE", "r2": "Lq q=0.7", "r3": "Lq q=0.7"}
    by_run = cl.group_labels(_specs(), "run")
    assert len(set(by_run.values())) == 4
    # grouped by noise rate, runs of two losses are not pooled: the loss is named in the label
    assert set(cl.group_labels(_specs(), "noise_rate").values()) == {"CCE | uniform 0.4", "Lq q=0.7 | uniform 0.4"}
    assert cl.group_labels(_specs(), "q")["r2"] == "Lq q=0.7" and cl.group_labels(_specs(), "q")["r0"] == "CCE"
    with pytest.raises(ValueError, match="allowed"):
        cl.group_labels(_specs(), "colour")
    one_config = {k: v for k, v in _specs().items() if v.loss == "cce"}  # only the seed varies
    assert cl.group_labels(one_config, "config") == {"r0": "CCE", "r1": "CCE"}
    assert cl.group_labels({"r0": _specs()["r0"]}, "config") == {"r0": "CCE"}  # one run: named like the rest


def test_config_diff_lists_only_differing_fields():
    diff = cl.config_diff(_specs())
    assert sorted(diff.columns) == ["loss", "seed"]
    assert diff.loc["r2", "loss"] == "lq"
    shared = cl.shared_config(_specs())
    assert shared["noise_rate"] == 0.4 and "loss" not in shared and "name" not in shared


def test_mean_and_std_over_seeds():
    frame = _frame({"r0": [0.5, 0.7], "r1": [0.7, 0.9], "r2": [0.6, 0.8], "r3": [0.6, 0.8]})
    groups = cl.group_labels(_specs(), "config")
    bands = cl.aggregate(cl.per_run_values(frame, "test_acc", groups))
    cce = bands[bands["group"] == "CCE"].set_index("epoch")
    assert cce.loc[1, "mean"] == pytest.approx(0.6) and cce.loc[2, "mean"] == pytest.approx(0.8)
    assert cce.loc[1, "std"] == pytest.approx(np.std([0.5, 0.7], ddof=1))
    assert (cce["n"] == 2).all()
    assert list(dict.fromkeys(bands["group"])) == ["CCE", "Lq q=0.7"]  # order of first appearance


def test_ema_is_debiased_and_skips_nan():
    x = np.array([1.0, 1.0, 1.0])
    np.testing.assert_allclose(cl.ema(x, 0.9), x)  # debiased: a constant stays constant
    out = cl.ema(np.array([0.0, math.nan, 1.0]), 0.5)
    assert out[0] == 0.0 and math.isnan(out[1]) and out[2] == pytest.approx((0.5 * 1.0) / (1 - 0.5**2))
    np.testing.assert_allclose(cl.ema([0.2, 0.9], 0.0), [0.2, 0.9])
    with pytest.raises(ValueError):
        cl.ema(x, 1.0)


def test_summary_uses_best_validation_epoch():
    # r0: val best at epoch 1 (test 0.9), last 0.5; r1: best val at epoch 2
    frame = pd.DataFrame([
        {"run_id": "r0", "epoch": 1, "val_acc": 0.8, "test_acc": 0.9},
        {"run_id": "r0", "epoch": 2, "val_acc": 0.6, "test_acc": 0.5},
        {"run_id": "r1", "epoch": 1, "val_acc": 0.5, "test_acc": 0.6},
        {"run_id": "r1", "epoch": 2, "val_acc": 0.7, "test_acc": 0.7},
    ])
    table = cl.summary_table(frame, {"r0": "CCE", "r1": "CCE"})
    row = table.iloc[0]
    assert row["runs"] == 2 and row["epochs"] == 2
    assert row["test_acc_at_best_val_mean"] == pytest.approx(80.0)
    assert row["last_test_acc_mean"] == pytest.approx(60.0)
    assert row["best_test_acc_mean"] == pytest.approx(80.0)
    assert row["test_acc_at_best_val_std"] == pytest.approx(np.std([90, 70], ddof=1))
    shown = cl.format_summary(table)
    assert shown.iloc[0]["test acc @ best val (%)"] == f"80.00 ± {np.std([90, 70], ddof=1):.2f}"


def test_empty_inputs():
    assert cl.per_run_values(pd.DataFrame(), "test_acc", {"r0": "a"}).empty
    assert cl.aggregate(pd.DataFrame(columns=["group", "run_id", "epoch", "value"])).empty
    assert cl.summary_table(pd.DataFrame(), {}).empty
    assert cl.config_diff({}).empty


def test_ordered_reads_cce_mae_lq():
    specs = _specs()
    shuffled = {k: specs[k] for k in ["r3", "r0", "r2", "r1"]}
    assert list(cl.ordered(shuffled)) == ["r0", "r1", "r2", "r3"]


def test_every_line_has_one_loss():
    specs = _specs()
    assert cl.group_losses(specs, cl.group_labels(specs, "config")) == {"CCE": "cce", "Lq q=0.7": "lq"}
    assert cl.group_losses(specs, cl.group_labels(specs, "noise_rate")) == {"CCE | uniform 0.4": "cce", "Lq q=0.7 | uniform 0.4": "lq"}


def test_the_robust_losses_are_grouped_by_loss_and_parameters():
    base = from_preset("quick", "digits", noise="uniform", noise_rate=0.4)
    specs = {"s0": base.with_loss("sce"), "s1": base.with_loss("sce", seed=1),
             "b0": base.with_loss("bootstrap_soft"), "g0": base.with_loss("agce", q=0.6)}
    groups = cl.group_labels(specs, "config")
    assert groups == {"s0": "SCE alpha=0.1 beta=1 A=-4", "s1": "SCE alpha=0.1 beta=1 A=-4",
                      "b0": "bootstrapping (soft) beta=0.95", "g0": "AGCE a=0.6 q=0.6"}  # no stray alpha=..., beta=...
    by_q = cl.group_labels(specs, "q")
    # the losses differ, so by q each line still names its loss (never pooled across losses)
    assert by_q["g0"] == "AGCE a=0.6 q=0.6" and by_q["s0"] == "SCE alpha=0.1 beta=1 A=-4"


# --- grouping that does not mislead, sweeps, filters -------------------------------------------
def _grid(**axes) -> dict:
    base = from_preset("quick", "digits", noise="uniform", noise_rate=0.4, epochs=5)
    specs, i = {}, 0
    for loss in axes.get("loss", ["lq"]):
        for q in axes.get("q", [0.7]):
            for rate in axes.get("rate", [0.4]):
                for epochs in axes.get("epochs", [5]):
                    for seed in axes.get("seed", [0, 1]):
                        specs[f"r{i}"] = base.with_loss(loss, q=q, noise_rate=rate, epochs=epochs, seed=seed)
                        i += 1
    return specs


def test_grouping_by_q_pools_only_seeds_and_names_what_else_differs():
    specs = _grid(q=[0.3, 0.7], epochs=[5, 10])
    layout = cl.grouping(specs, "q")
    assert set(layout.groups.values()) == {"q=0.3 | epochs=5", "q=0.3 | epochs=10", "q=0.7 | epochs=5", "q=0.7 | epochs=10"}
    assert layout.kept_apart == ("epochs",) and layout.panel_field == ""
    assert "also differ in epochs" in layout.note("q")
    assert cl.grouping(_grid(q=[0.3, 0.7]), "q").note("q") == ""  # only q and seed differ: nothing to say


def test_different_noise_rates_become_panels():
    specs = _grid(loss=["cce", "lq"], rate=[0.2, 0.4])
    layout = cl.grouping(specs, "loss")
    assert set(layout.panels.values()) == {"uniform 0.2", "uniform 0.4"}
    assert set(layout.groups.values()) == {"CCE", "Lq q=0.7"}
    assert "one panel per noise setting" in layout.note("loss")
    by_rate = cl.grouping(specs, "noise_rate")  # grouped by the rate itself: one panel, rate in the label
    assert set(by_rate.panels.values()) == {""}
    assert "CCE | uniform 0.2" in by_rate.groups.values()


def test_sweep_table_means_over_seeds_per_q_and_flat_lines_for_losses_without_q():
    specs = _grid(loss=["cce", "lq"], q=[0.3, 0.7])
    assert cl.swept_params(specs) == ["q"]  # CCE's unused q does not count
    summaries = {i: {"test_acc_at_best_val": 0.5 + s.q / 10 + s.seed / 100, "last_test_acc": 0.5} for i, s in specs.items()}
    table = cl.sweep_table(specs, summaries, "q", "test_acc_at_best_val")
    lq = table[table["loss"] == "lq"].sort_values("x")
    assert list(lq["x"]) == [0.3, 0.7] and list(lq["n"]) == [2, 2]
    assert lq["mean"].round(3).tolist() == [53.5, 57.5]
    assert lq["std"].round(4).tolist() == [0.7071, 0.7071]
    cce = table[table["loss"] == "cce"]
    assert len(cce) == 1 and np.isnan(cce["x"].iloc[0]) and cce["n"].iloc[0] == 4  # two q values x two seeds, pooled: CCE ignores q
    with pytest.raises(ValueError, match="allowed: q, noise_rate, k"):
        cl.sweep_table(specs, summaries, "lr", "last_test_acc")


def test_sweep_bound_applies_to_uniform_noise_only():
    specs = _grid(q=[0.3, 0.7])
    bound, title = cl.sweep_bound(specs, "q", [0.3, 0.7])
    assert "excess-risk" in title and bound["value"].is_monotonic_decreasing
    clean = {i: s.model_copy(update={"noise": "none", "noise_rate": 0.0}) for i, s in specs.items()}
    empty, why = cl.sweep_bound(clean, "q", [0.3, 0.7])
    assert empty.empty and "uniform noise only" in why


def test_describe_names_a_group_by_its_configuration():
    specs = list(_grid(loss=["cce", "lq"], rate=[0.2, 0.4]).values())
    assert cl.describe(specs) == "digits · mlp · 5 epochs · uniform 0.2-0.4 · CCE, Lq q=0.7 · 2 seeds"
    swept = list(_grid(loss=["cce", "lq"], q=[0.2, 0.5, 0.8]).values())
    assert cl.describe(swept) == "digits · mlp · 5 epochs · uniform 0.4 · CCE, Lq q=0.2-0.8 · 2 seeds"
    assert cl.group_title("group-20250101-120000-ab12", specs).endswith("— group-20250101-120000-ab12")


class _Rec:
    def __init__(self, spec, status="completed", tags=()):
        self.spec, self.status, self.tags = spec, status, tags


def test_filters_by_spec_field_status_and_tag():
    specs = _grid(loss=["cce", "lq"], rate=[0.2, 0.4])
    records = [_Rec(s, "failed" if s.seed else "completed", ("paper",) if s.loss == "cce" else ()) for s in specs.values()]
    options = cl.filter_options(records)
    assert options["loss"] == ["cce", "lq"] and options["noise_rate"] == [0.2, 0.4]
    assert options["status"] == ["completed", "failed"] and options["tag"] == ["paper"]
    assert "dataset" not in options  # one value: nothing to filter
    kept = cl.apply_filters(records, {"loss": ["lq"], "noise_rate": [0.4], "status": []})
    assert [(r.spec.loss, r.spec.noise_rate) for r in kept] == [("lq", 0.4), ("lq", 0.4)]
    assert len(cl.apply_filters(records, {"tag": ["paper"], "status": ["failed"]})) == 2
    assert cl.showing(2, 8) == "showing 2 of 8 runs" and cl.showing(8, 8) == "all 8 runs"

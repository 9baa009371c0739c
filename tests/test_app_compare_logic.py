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
    assert set(cl.group_labels(_specs(), "noise_rate").values()) == {"uniform 0.4"}
    assert cl.group_labels(_specs(), "q")["r2"] == "q=0.7" and cl.group_labels(_specs(), "q")["r0"] == "CCE"
    with pytest.raises(ValueError, match="allowed"):
        cl.group_labels(_specs(), "colour")


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


def test_group_losses_only_for_single_loss_groups():
    specs = _specs()
    assert cl.group_losses(specs, cl.group_labels(specs, "config")) == {"CCE": "cce", "Lq q=0.7": "lq"}
    assert cl.group_losses(specs, cl.group_labels(specs, "noise_rate")) == {}  # two losses pooled
    by_run = cl.group_labels(specs, "run")
    assert cl.group_losses(specs, by_run) == {}  # two runs per loss: the palette tells them apart


def test_the_robust_losses_are_grouped_by_loss_and_parameters():
    base = from_preset("quick", "digits", noise="uniform", noise_rate=0.4)
    specs = {"s0": base.with_loss("sce"), "s1": base.with_loss("sce", seed=1),
             "b0": base.with_loss("bootstrap_soft"), "g0": base.with_loss("agce", q=0.6)}
    groups = cl.group_labels(specs, "config")
    assert groups == {"s0": "SCE alpha=0.1 beta=1 A=-4", "s1": "SCE alpha=0.1 beta=1 A=-4",
                      "b0": "bootstrapping (soft) beta=0.95", "g0": "AGCE a=0.6 q=0.6"}  # no stray alpha=..., beta=...
    by_q = cl.group_labels(specs, "q")
    assert by_q["g0"] == "q=0.6" and by_q["s0"] == "SCE alpha=0.1 beta=1 A=-4"  # agce takes q; sce does not

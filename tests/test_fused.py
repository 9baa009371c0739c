"""Fused multi-run training: the same rows as the runs trained one by one, refusals that say why,
and checkpoints that train() and train_fused() both resume."""

import pytest

from gce_core.fused import FUSABLE_DIFFERENCES, can_fuse, train_fused
from gce_core.metrics import EPOCH_KEYS
from gce_core.threads import intra_op_threads
from gce_core.train import train

TINY = dict(dataset="digits", model="mlp", train_subset=200, epochs=3, lr=0.1, batch_size=32,
            noise="uniform", noise_rate=0.4, device="cpu")  # fmt: skip
GROUP = [
    dict(TINY, loss="cce", seed=0),
    dict(TINY, loss="lq", q=0.7, seed=1),
    dict(TINY, loss="lq", q=0.3, seed=0, noise="class_dependent"),
    dict(TINY, loss="truncated_lq", seed=2, prune_start=2, prune_every=1),
    dict(TINY, loss="mae", seed=3, noise_rate=0.2),
]
COMPARED = ("val_acc", "test_acc", "train_loss", "train_acc_noisy", "memorised", "loss_sum_mean")


def alone(spec, **kw):
    rows = []
    summary = train(spec, on_epoch=rows.append, **kw)
    return summary, rows


def fused(specs, **kw):
    rows = {i: [] for i in range(len(specs))}
    summaries = train_fused(specs, on_epoch=lambda i, row: rows[i].append(row), **kw)
    return summaries, rows


def assert_rows_close(got, want):
    assert [r["epoch"] for r in got] == [r["epoch"] for r in want]
    for g, w in zip(got, want, strict=True):
        assert set(g) == set(w) == set(EPOCH_KEYS)
        for key in COMPARED:
            if w[key] is None:
                assert g[key] is None, key
            else:
                assert g[key] == pytest.approx(w[key], abs=1e-4), (key, g["epoch"])
        assert g["kept"] == w["kept"] and g["lr"] == w["lr"]


def test_fused_rows_equal_runs_trained_one_by_one():
    summaries, rows = fused(GROUP)
    for i, spec in enumerate(GROUP):
        want_summary, want_rows = alone(spec)
        assert_rows_close(rows[i], want_rows)
        for key in ("test_acc_at_best_val", "best_val_epoch", "epochs_completed", "realised_noise_rate"):
            assert summaries[i][key] == pytest.approx(want_summary[key], abs=1e-4)
    assert rows[3][-1]["kept"] < rows[3][0]["kept"]  # the truncated run pruned in its w-steps


def test_fused_with_augmentation_and_a_q_sweep_matches():
    specs = [dict(TINY, loss="lq", q=q, augment=True, epochs=2) for q in (0.2, 0.5, 0.8)]
    _, rows = fused(specs)
    for i, spec in enumerate(specs):
        assert_rows_close(rows[i], alone(spec)[1])


def test_can_fuse_refuses_with_the_reason():
    assert can_fuse(GROUP) == (True, "")
    ok, why = can_fuse([GROUP[0], dict(GROUP[1], lr=0.05)])
    assert not ok and "'lr'" in why and "loss" in why  # names the field and what may differ
    ok, why = can_fuse([dict(TINY, model="cnn"), dict(TINY, model="cnn", seed=1)])
    assert not ok and "BatchNorm" in why
    ok, why = can_fuse([dict(TINY, compile=True)])
    assert not ok and "compile" in why
    assert can_fuse([]) == (False, "no runs given")
    with pytest.raises(ValueError, match="cannot be fused: run 1 differs"):
        train_fused([GROUP[0], dict(GROUP[1], epochs=4)])
    assert "seed" in FUSABLE_DIFFERENCES and "lr" not in FUSABLE_DIFFERENCES


def stop_after(batches):
    """A should_stop that says stop once ``batches`` batch boundaries have passed."""
    calls = {"n": 0}

    def stop():
        calls["n"] += 1
        return calls["n"] > batches

    return stop


BATCHES_PER_EPOCH = 6  # 180 training images (200 minus 10% validation) in batches of 32


def test_stopped_group_resumes_fused_exactly(tmp_path):
    specs = [GROUP[0], GROUP[1], GROUP[3]]  # cce, lq, truncated_lq (prunes in epochs 2 and 3)
    dirs = [tmp_path / f"run{i}" for i in range(len(specs))]
    summaries, part = fused(specs, should_stop=stop_after(BATCHES_PER_EPOCH + 2), checkpoint_dirs=dirs)
    assert all(s["stopped"] and s["epochs_completed"] == 1 for s in summaries)
    summaries, rest = fused(specs, checkpoint_dirs=dirs)
    assert all(not s["stopped"] and s["epochs_completed"] == 3 for s in summaries)
    for i, spec in enumerate(specs):
        assert [r["epoch"] for r in rest[i]] == [2, 3]
        assert_rows_close(part[i] + rest[i], alone(spec)[1])


def test_a_fused_checkpoint_resumes_in_train_alone(tmp_path):
    specs = [GROUP[0], GROUP[1]]
    dirs = [tmp_path / "a", tmp_path / "b"]
    _, part = fused(specs, should_stop=stop_after(BATCHES_PER_EPOCH + 2), checkpoint_dirs=dirs)
    summary, rest = alone(specs[1], checkpoint_dir=dirs[1])
    assert [r["epoch"] for r in rest] == [2, 3] and summary["epochs_completed"] == 3
    assert_rows_close(part[1] + rest, alone(specs[1])[1])


def test_runs_behind_catch_up_alone_then_train_fused(tmp_path):
    specs = [GROUP[0], GROUP[1]]
    dirs = [tmp_path / "a", tmp_path / "b"]
    alone(specs[0], checkpoint_dir=dirs[0], should_stop=stop_after(2 * BATCHES_PER_EPOCH + 1))
    alone(specs[1], checkpoint_dir=dirs[1], should_stop=stop_after(BATCHES_PER_EPOCH + 1))
    _, rows = fused(specs, checkpoint_dirs=dirs)  # checkpoints at epochs 2 and 1
    assert [r["epoch"] for r in rows[0]] == [3] and [r["epoch"] for r in rows[1]] == [2, 3]
    for i, spec in enumerate(specs):
        assert_rows_close(rows[i], alone(spec)[1][-len(rows[i]) :])


def test_fused_rows_are_the_runs_alone_bit_for_bit_whatever_the_thread_counts():
    """The whole digits set in batches of 128: the fused group (two threads, its tuner switching
    counts) gives every run's rows exactly as that run alone with one thread, train_loss included
    (both add each batch's loss times its size in one rounding)."""
    base = dict(dataset="digits", model="mlp", epochs=12, lr=0.1, batch_size=128, noise="uniform",
                noise_rate=0.4, device="cpu")  # fmt: skip
    specs = [dict(base, loss="cce", seed=0), dict(base, loss="lq", seed=1)]
    with intra_op_threads(2):
        _, rows = fused(specs)
    with intra_op_threads(1):
        want = [alone(spec)[1] for spec in specs]

    def strip(rs):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rs]

    assert [strip(rows[i]) for i in range(len(specs))] == [strip(w) for w in want]


def test_fused_rows_equal_the_runs_alone_on_the_accelerator_path(monkeypatch):
    """The path CUDA takes (bf16 autocast, the stacked layers through autograd), run on the CPU."""
    import gce_core.fused
    import gce_core.train

    plain = alone(GROUP[0])[1]
    for module in (gce_core.train, gce_core.fused):
        monkeypatch.setattr(module, "mixed_precision", lambda device: True)
    _, rows = fused(GROUP)
    for i, spec in enumerate(GROUP):
        assert_rows_close(rows[i], alone(spec)[1])
    assert [r["train_loss"] for r in rows[0]] != [r["train_loss"] for r in plain]  # bf16 in effect

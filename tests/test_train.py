"""The trainer: learns, reports every metric, repeats itself, resumes exactly, prunes with ACS,
trains from prebuilt data, and is a plain torch loop underneath."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from gce_core.experiment_data import build_experiment_data
from gce_core.losses import AcsState, LossState, acs_weights, is_prune_epoch
from gce_core.metrics import EPOCH_KEYS, pruning_quality, summarize, training_pass_metrics
from gce_core.models import init_seeded
from gce_core.spec import parse_spec
from gce_core.train import (
    make_optimizer,
    new_state,
    predict_logits,
    run_epochs,
    train,
    train_one_epoch,
)

TINY = dict(dataset="digits", model="mlp", train_subset=400, epochs=6, lr=0.1, batch_size=64)
CPU = torch.device("cpu")
# Row keys whose values are compared by assert_rows_close (within 1e-4); kept and lr exactly.
COMPARED = ("val_acc", "test_acc", "train_loss", "train_acc_noisy", "memorised", "loss_sum_mean")


def run(spec, **kw):
    rows = []
    summary = train(spec, on_epoch=rows.append, **kw)
    return summary, rows


def strip_time(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


def assert_rows_close(a_rows, b_rows):
    """Two runs' epoch rows agree: the same epochs and keys, the metrics in COMPARED within 1e-4
    (None where the other is None), ``kept`` and ``lr`` exactly. For runs whose arithmetic may
    differ in the last bits (another device, another process, bf16)."""
    assert [r["epoch"] for r in a_rows] == [r["epoch"] for r in b_rows]
    for a, b in zip(a_rows, b_rows, strict=True):
        assert set(a) == set(b) == set(EPOCH_KEYS)
        for key in COMPARED:
            if b[key] is None:
                assert a[key] is None, key
            else:
                assert a[key] == pytest.approx(b[key], abs=1e-4), (key, a["epoch"])
        assert a["kept"] == b["kept"] and a["lr"] == b["lr"]


def test_clean_digits_learns_and_reports_every_key():
    summary, rows = run(parse_spec(dict(TINY, loss="cce")))
    assert [r["epoch"] for r in rows] == list(range(1, 7))
    assert set(rows[0]) == set(EPOCH_KEYS)
    assert rows[-1]["test_acc"] > 0.8
    assert summary["epochs_completed"] == 6 and summary["stopped"] is False
    assert summary["test_acc_at_best_val"] == rows[summary["best_val_epoch"] - 1]["test_acc"]
    assert summary["best_test_acc"] == max(r["test_acc"] for r in rows)
    assert rows[0]["memorised"] is None  # no noisy samples: undefined, not 0


def test_same_seed_same_metrics_different_seed_differs():
    spec = parse_spec(dict(TINY, epochs=2, noise="uniform", noise_rate=0.4))
    a, b = run(spec)[1], run(spec)[1]
    assert strip_time(a) == strip_time(b)
    c = run(spec.model_copy(update={"seed": 1}))[1]
    assert strip_time(a) != strip_time(c)


@pytest.mark.parametrize("spec", [
    dict(TINY, loss="cce", epochs=3),
    dict(TINY, loss="truncated_lq", epochs=4, augment=True, noise="uniform", noise_rate=0.4,
         prune_start=2, prune_every=1, optimizer="adam", lr=0.01, lr_milestones=(2,)),
])  # fmt: skip
def test_the_same_spec_twice_in_one_process_gives_the_same_rows(spec):
    """Reproducible at a given torch thread count: every number but the wall time is equal."""
    first_summary, first = run(spec)
    second_summary, second = run(spec)
    assert strip_time(first) == strip_time(second)
    assert first_summary == second_summary


def test_one_epoch_is_a_plain_torch_loop_over_the_epochs_permutation():
    """The trainer's epoch is model -> loss -> backward -> torch SGD step over index slices of a
    permutation drawn from the run's generator; a hand-written loop gets the same weights."""
    spec = parse_spec(dict(TINY, loss="lq", q=0.5, weight_decay=1e-3))
    data = build_experiment_data(spec, CPU)
    st = new_state(spec, data, CPU)
    train_one_epoch(spec, st, data, CPU)

    model = init_seeded("mlp", (1, 8, 8), 10, spec.seed)
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-3)
    perm = torch.randperm(data.n_train, generator=torch.Generator().manual_seed(spec.seed + 1))
    for start in range(0, data.n_train, spec.batch_size):
        idx = perm[start : start + spec.batch_size]
        log_fy = -F.cross_entropy(model(data.x_train[idx]), data.y_train[idx], reduction="none")
        loss = ((1 - log_fy.mul(0.5).exp()) / 0.5).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    for (name, got), want in zip(st.model.named_parameters(), model.parameters(), strict=True):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6, msg=name)


def test_the_optimiser_is_torchs_with_the_specs_settings():
    params = [torch.nn.Parameter(torch.zeros(3))]
    sgd = make_optimizer(parse_spec(dict(momentum=0.8, weight_decay=1e-3, lr=0.2)), params)
    assert type(sgd) is torch.optim.SGD
    group = sgd.param_groups[0]
    assert (group["lr"], group["momentum"], group["weight_decay"]) == (0.2, 0.8, 1e-3)
    adam = make_optimizer(parse_spec(dict(optimizer="adam", lr=1e-3, weight_decay=0.0)), params)
    assert type(adam) is torch.optim.Adam and adam.param_groups[0]["lr"] == 1e-3


@pytest.mark.parametrize("loss", ["lq", "truncated_lq"])
def test_resume_from_checkpoint_equals_uninterrupted_run(tmp_path, monkeypatch, loss):
    import gce_core.train

    monkeypatch.setattr(gce_core.train, "CHECKPOINT_EVERY_S", 3600.0)  # not timed: first and last only
    spec = parse_spec(dict(TINY, loss=loss, noise="uniform", noise_rate=0.4, prune_start=2, prune_every=2, augment=True))
    full_summary, full = run(spec, checkpoint_dir=tmp_path / "a")

    calls = {"n": 0}

    def stop_in_epoch_four():
        calls["n"] += 1
        return calls["n"] > 3 * 6 + 2  # 6 batches/epoch of 64 on 360 images: stop inside epoch 4

    part_summary, part = run(spec, should_stop=stop_in_epoch_four, checkpoint_dir=tmp_path / "b")
    assert part_summary["stopped"] is True and part_summary["epochs_completed"] == 3
    # the last checkpoint is epoch 1's (the next one is due an hour later): the resume re-runs
    # epochs 2 and 3 with the rows they had, then goes on
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["epoch"] == 1
    rest_summary, rest = run(spec, checkpoint_dir=tmp_path / "b")
    assert [r["epoch"] for r in rest] == [2, 3, 4, 5, 6]
    assert strip_time(rest[:2]) == strip_time(part[1:])
    assert strip_time(part + rest[2:]) == strip_time(full)
    assert {k: v for k, v in rest_summary.items()} == full_summary


def test_checkpoints_are_written_at_the_first_and_last_epoch_and_then_every_interval(tmp_path, monkeypatch):
    import gce_core.train

    saved = []
    real = gce_core.train.save_checkpoint
    monkeypatch.setattr(gce_core.train, "save_checkpoint", lambda d, state: saved.append(state["epoch"]) or real(d, state))
    monkeypatch.setattr(gce_core.train, "CHECKPOINT_EVERY_S", 3600.0)  # not timed: no epoch is that far apart
    run(parse_spec(TINY), checkpoint_dir=tmp_path / "a")
    assert saved == [1, 6]
    saved.clear()
    monkeypatch.setattr(gce_core.train, "CHECKPOINT_EVERY_S", 0.0)
    run(parse_spec(TINY), checkpoint_dir=tmp_path / "b")
    assert saved == [1, 2, 3, 4, 5, 6]


def test_before_checkpoint_comes_after_the_epochs_report_and_before_its_checkpoint(tmp_path, monkeypatch):
    import gce_core.train

    events = []
    real = gce_core.train.save_checkpoint
    monkeypatch.setattr(gce_core.train, "save_checkpoint",
                        lambda d, state: events.append(("save", state["epoch"])) or real(d, state))
    monkeypatch.setattr(gce_core.train, "CHECKPOINT_EVERY_S", 3600.0)  # first and last only
    train(parse_spec(TINY), on_epoch=lambda row: events.append(("row", row["epoch"])),
          before_checkpoint=lambda: events.append(("flush", None)), checkpoint_dir=tmp_path)
    assert events == [("row", 1), ("flush", None), ("save", 1), ("row", 2), ("row", 3), ("row", 4),
                      ("row", 5), ("row", 6), ("flush", None), ("save", 6)]


def test_a_stop_discards_the_unfinished_epoch(tmp_path):
    calls = {"n": 0}

    def stop_in_epoch_two():
        calls["n"] += 1
        return calls["n"] > 6 + 1  # 6 batches per epoch: the second batch of epoch 2

    summary, rows = run(parse_spec(TINY), should_stop=stop_in_epoch_two, checkpoint_dir=tmp_path)
    assert [r["epoch"] for r in rows] == [1]
    assert summary["stopped"] is True and summary["epochs_completed"] == 1
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["epoch"] == 1
    never = run(parse_spec(TINY), should_stop=lambda: True)
    assert never[1] == [] and never[0]["epochs_completed"] == 0 and never[0]["test_acc_at_best_val"] is None


def test_checkpoint_of_another_spec_is_refused(tmp_path):
    run(parse_spec(dict(TINY, epochs=1)), checkpoint_dir=tmp_path)
    with pytest.raises(ValueError, match="another run spec"):
        train(parse_spec(dict(TINY, epochs=1, seed=5)), checkpoint_dir=tmp_path)


def test_a_checkpoint_written_before_fields_were_added_still_resumes(tmp_path):
    spec = parse_spec(dict(TINY, epochs=2))
    run(spec, should_stop=iter([False] * 7 + [True]).__next__, checkpoint_dir=tmp_path)  # stops in epoch 2
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=False)
    old = json.loads(state["spec"])
    for field in ("alpha", "beta", "A", "a", "p"):  # what an older lab wrote: no such fields
        del old[field]
    state["spec"] = json.dumps(old)
    torch.save(state, path)
    summary, rows = run(spec, checkpoint_dir=tmp_path)
    assert [r["epoch"] for r in rows] == [2] and summary["epochs_completed"] == 2


def test_truncated_lq_prunes_mostly_noisy_samples():
    spec = parse_spec(dict(TINY, train_subset=None, epochs=10, loss="truncated_lq", noise="uniform",
                           noise_rate=0.4, prune_start=10, prune_every=5))
    _, rows = run(spec)
    n_train = rows[0]["kept"]
    assert all(r["kept"] == n_train for r in rows[:9])  # plain Lq first: w = 1 everywhere
    assert rows[9]["kept"] < 0.75 * n_train  # pruned at epoch 10
    assert rows[9]["prune_precision"] > 0.75  # pruned samples are mostly the flipped ones (base rate 0.4)
    assert rows[9]["prune_recall"] > 0.8
    assert is_prune_epoch(spec, 10) and is_prune_epoch(spec, 15) and not is_prune_epoch(spec, 12)


def test_acs_weights_belong_to_training_indices_and_come_from_the_best_validation_model():
    spec = parse_spec(dict(TINY, loss="truncated_lq", noise="uniform", noise_rate=0.4, epochs=4,
                           prune_start=3, prune_every=1, lr=0.5))  # fmt: skip
    data = build_experiment_data(spec, CPU)
    st = new_state(spec, data, CPU)
    assert isinstance(st.loss, AcsState)  # the registry's hook, not a case in the trainer
    assert st.loss.weights.shape == (data.n_train,) and bool((st.loss.weights == 1).all())
    run_epochs(spec, st, data, CPU, 2)
    best = init_seeded("mlp", (1, 8, 8), 10, 0)
    best.load_state_dict(st.loss.best.weights)  # the model of the best validation epoch so far
    run_epochs(spec, st, data, CPU, 3)  # epoch 3 prunes first
    want = acs_weights(predict_logits(best, data.x_train, CPU), data.y_train, spec.k)
    assert torch.equal(st.loss.weights, want)  # one weight per training index, none for val or test
    assert st.history[-1]["kept"] == int(want.sum()) < data.n_train
    plain = new_state(parse_spec(dict(TINY, loss="lq")), data, CPU)
    assert type(plain.loss) is LossState and plain.loss.state_dict() == {}  # no state at all


def test_cce_memorises_noise_more_than_lq():
    base = dict(dataset="digits", model="mlp", epochs=40, lr=0.1, noise="uniform", noise_rate=0.4, weight_decay=0.0)
    _, cce_rows = run(parse_spec(dict(base, loss="cce")))
    _, lq_rows = run(parse_spec(dict(base, loss="lq")))
    assert cce_rows[-1]["memorised"] > lq_rows[-1]["memorised"] + 0.1
    assert lq_rows[-1]["test_acc"] > cce_rows[-1]["test_acc"]


def test_training_pass_metrics_on_a_known_case():
    logits = torch.tensor([[5.0, 0, 0], [0, 5.0, 0], [0, 0, 5.0], [5.0, 0, 0]])
    y_noisy = torch.tensor([0, 1, 0, 1])
    y_clean = torch.tensor([0, 1, 2, -1])  # sample 2 flipped 2->0, sample 3 open-set
    is_noisy = torch.tensor([False, False, True, True])
    m = training_pass_metrics(logits, y_noisy, y_clean, is_noisy)
    assert m["train_acc_noisy"] == 0.5
    assert m["train_acc_clean"] == 1.0  # 3 samples with a clean label, all right
    assert m["memorised"] == 0.0 and m["flipped_to_true"] == 1.0
    assert sum(m["fy_hist_clean"]) == 2 and sum(m["fy_hist_noisy"]) == 2


def test_f_y_histograms_count_like_torch_histc_over_0_1():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(500, 10, generator=g) * 3
    logits[:5] = torch.tensor([100.0] + [0.0] * 9)  # f_y = 1.0 at label 0: the last bin
    y = torch.randint(0, 10, (500,), generator=g)
    y[:5] = 0
    is_noisy = torch.rand(500, generator=g) < 0.4
    m = training_pass_metrics(logits, y, y, is_noisy)
    f_y = torch.softmax(logits, 1).gather(1, y[:, None]).squeeze(1)
    assert m["fy_hist_clean"] == torch.histc(f_y[~is_noisy], 20, 0, 1).long().tolist()
    assert m["fy_hist_noisy"] == torch.histc(f_y[is_noisy], 20, 0, 1).long().tolist()
    assert m["fy_hist_clean"][-1] + m["fy_hist_noisy"][-1] >= 5


def test_f_y_is_the_softmax_at_the_label_even_for_extreme_logits():
    from gce_core.metrics import fy_and_prediction

    g = torch.Generator().manual_seed(2)
    logits = torch.randn(300, 10, generator=g) * 4
    logits[0] = torch.tensor([1000.0] + [0.0] * 9)  # would overflow exp() without the max shift
    logits[1] = torch.tensor([-1000.0] + [0.0] * 9)  # f_y underflows to 0
    y = torch.randint(0, 10, (300,), generator=g)
    y[:2] = 0
    f_y, pred = fy_and_prediction(logits, y)
    want = torch.softmax(logits.double(), 1).gather(1, y[:, None]).squeeze(1)
    assert torch.allclose(f_y.double(), want, rtol=1e-5, atol=1e-7)
    assert f_y[0] == 1.0 and f_y[1] == 0.0
    assert torch.equal(pred, logits.argmax(1))


def test_epoch_metrics_from_logits_in_visiting_order_match_index_order():
    from gce_core.experiment_data import build_experiment_data
    from gce_core.metrics import epoch_train_metrics

    data = build_experiment_data(parse_spec(dict(dataset="digits", noise="uniform", noise_rate=0.4)))
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(data.n_train, data.num_classes, generator=g)
    perm = torch.randperm(data.n_train, generator=g)
    m = epoch_train_metrics(data, perm, logits[perm], torch.tensor(0.25))  # row i of the pass is sample perm[i]
    assert m == {"train_loss": 0.25,
                 **training_pass_metrics(logits, data.y_train, data.y_train_clean, data.is_noisy),
                 "fy_gallery": [round(v, 4) for v in torch.softmax(logits, 1)[data.gallery_idx, data.y_train[data.gallery_idx]].tolist()],
                 "pred_gallery": logits[data.gallery_idx].argmax(1).tolist()}
    assert len(m["fy_gallery"]) > 0


def test_pruning_quality_and_summary():
    p, r = pruning_quality(torch.tensor([0.0, 0.0, 1.0, 1.0]), torch.tensor([True, False, True, False]))
    assert (p, r) == (0.5, 0.5)
    assert math.isnan(pruning_quality(torch.ones(3), torch.zeros(3, dtype=torch.bool))[0])
    rows = [{"epoch": 1, "val_acc": 0.5, "test_acc": 0.6}, {"epoch": 2, "val_acc": 0.7, "test_acc": 0.65},
            {"epoch": 3, "val_acc": 0.7, "test_acc": 0.9}, {"epoch": 4, "val_acc": 0.4, "test_acc": 0.3}]
    assert summarize(rows) == {"test_acc_at_best_val": 0.65, "best_val_epoch": 2, "last_test_acc": 0.3, "best_test_acc": 0.9}


# --- compile: a process compiles a model's graphs once ------------------------------------------
CNN = dict(dataset="digits", model="cnn", train_subset=128, epochs=1, batch_size=64,
           noise="uniform", noise_rate=0.4, device="cpu")  # fmt: skip


def test_a_second_compiled_run_in_one_process_compiles_nothing(monkeypatch):
    from torch._dynamo.utils import counters

    monkeypatch.setenv("GCE_LAB_COMPILE_BACKEND", "eager")  # dynamo traces; no C++ build in tests
    torch._dynamo.reset()
    graphs = lambda: counters["stats"]["unique_graphs"]  # noqa: E731
    before = graphs()
    first = run(dict(CNN, compile=True, loss="cce", seed=0))[1]
    compiled_once = graphs() - before
    second = run(dict(CNN, compile=True, loss="lq", seed=1))[1]
    assert compiled_once >= 1
    assert graphs() - before == compiled_once  # the second run traced and compiled nothing
    # and the compiled runs train exactly like the plain ones
    assert strip_time(first) == strip_time(run(dict(CNN, loss="cce", seed=0))[1])
    assert strip_time(second) == strip_time(run(dict(CNN, loss="lq", seed=1))[1])


# --- the accelerator path (on CUDA: channels_last, bf16 autocast, autograd), run on the CPU -------
@pytest.fixture
def accelerator_path(monkeypatch):
    """Runs on the CPU take the path CUDA runs take (CPU bf16 autocast): the code that only a GPU
    would otherwise reach runs in every test run."""
    import gce_core.train

    monkeypatch.setattr(gce_core.train, "mixed_precision", lambda device: True)


@pytest.mark.parametrize("spec", [
    dict(CNN, loss="lq", augment=True, epochs=2),
    dict(TINY, loss="truncated_lq", epochs=3, prune_start=2, prune_every=1, k=0.1),
])  # fmt: skip
def test_the_accelerator_path_trains_in_bf16_with_channels_last(spec, accelerator_path):
    _, rows = run(spec)
    assert [r["epoch"] for r in rows] == list(range(1, spec["epochs"] + 1))
    assert all(math.isfinite(r["train_loss"]) and 0.0 <= r["test_acc"] <= 1.0 for r in rows)
    data = build_experiment_data(parse_spec(spec), CPU)
    st = new_state(parse_spec(spec), data, CPU)
    if spec["model"] == "cnn":
        conv = [m for m in st.model.modules() if isinstance(m, torch.nn.Conv2d)][-1]  # 32 -> 64
        assert conv.weight.is_contiguous(memory_format=torch.channels_last)
        assert not conv.weight.is_contiguous()


def test_the_accelerator_path_changes_the_numbers_by_bf16_rounding_only(monkeypatch):
    spec = dict(TINY, loss="cce", epochs=3, noise="uniform", noise_rate=0.4)
    plain = run(spec)[1]
    import gce_core.train

    monkeypatch.setattr(gce_core.train, "mixed_precision", lambda device: True)
    bf16 = run(spec)[1]
    monkeypatch.undo()
    assert strip_time(bf16) != strip_time(plain)  # autocast was in effect
    for a, b in zip(bf16, plain, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=5e-3)


def test_a_non_finite_training_loss_ends_the_run_saying_what_to_do():
    from gce_core.train import Diverged

    rows = []
    with pytest.raises(Diverged, match=r"diverged at epoch 1 \(training loss nan\): lower the learning rate"):
        train(parse_spec(dict(TINY, loss="lq", q=1e-300)), on_epoch=rows.append)
    assert rows == []  # the epoch with the NaN loss is not reported


@pytest.mark.parametrize("loss", ["sce", "nce_rce", "nce_mae", "agce", "aul", "bootstrap_soft", "bootstrap_hard",
                                  "forward", "forward_est"])
def test_every_registry_loss_trains_with_finite_losses_and_loss_sums(loss):
    summary, rows = run(parse_spec(dict(TINY, loss=loss, epochs=2, noise="uniform", noise_rate=0.2)))
    assert [r["epoch"] for r in rows] == [1, 2]
    assert all(math.isfinite(r["train_loss"]) and math.isfinite(r["loss_sum_mean"]) for r in rows)
    assert summary["epochs_completed"] == 2


def test_a_validation_share_that_leaves_no_image_is_refused_saying_what_to_use():
    with pytest.raises(ValueError, match=r"val_fraction 1e-09 of 400 training images leaves no validation image; use at least 0\.0025"):
        train(parse_spec(dict(TINY, val_fraction=1e-9)))


# --- losses with per-run state: the registry's hook ------------------------------------------------
def test_forward_est_trains_cce_then_the_estimated_matrix_and_reports_it_once():
    spec = parse_spec(dict(TINY, loss="forward_est", est_share=0.5, noise="uniform", noise_rate=0.4))
    data = build_experiment_data(spec, CPU)
    st = new_state(spec, data, CPU)
    run_epochs(spec, st, data, CPU, 3)  # E = 3 epochs of CCE
    assert st.loss.transition is None and st.loss.best.weights is not None
    x, y = data.x_train[:50], data.y_train[:50]
    torch.testing.assert_close(st.loss(st.model(x), y, None), F.cross_entropy(st.model(x), y, reduction="none"))
    best = init_seeded("mlp", (1, 8, 8), 10, 0)
    best.load_state_dict(st.loss.best.weights)
    run_epochs(spec, st, data, CPU, 6)
    from gce_core.loss_zoo import estimate_transition, forward_values

    want = estimate_transition(torch.softmax(predict_logits(best, data.x_train, CPU), 1)).float()
    torch.testing.assert_close(st.loss.transition, want)  # from the best-validation CCE model
    torch.testing.assert_close(st.loss(st.model(x), y, None), forward_values(st.model(x), y, want))
    estimates = [r["epoch"] for r in st.history if "transition_estimate" in r]
    assert estimates == [4]  # on the first epoch trained with it
    shown = torch.tensor(st.history[3]["transition_estimate"])
    assert shown.shape == (10, 10) and torch.allclose(shown, want, atol=5e-5)
    assert all(math.isfinite(r["loss_sum_mean"]) for r in st.history)


@pytest.mark.parametrize("loss,share", [("forward_est", 0.34), ("truncated_lq", None), ("forward", None)])
def test_a_resume_after_the_loss_states_change_goes_on_exactly(tmp_path, monkeypatch, loss, share):
    """Checkpoints every epoch; stopped in epoch 4, resumed from epoch 3's checkpoint, which
    holds the estimated T (forward_est estimates before epoch 3) or the pruned weights."""
    import gce_core.train

    monkeypatch.setattr(gce_core.train, "CHECKPOINT_EVERY_S", 0.0)
    fields = dict(TINY, loss=loss, noise="uniform", noise_rate=0.4, prune_start=2, prune_every=1)
    spec = parse_spec(fields if share is None else dict(fields, est_share=share))
    full_summary, full = run(spec)
    part_summary, part = run(spec, should_stop=iter([False] * (3 * 6 + 2) + [True]).__next__,
                             checkpoint_dir=tmp_path)
    assert part_summary["epochs_completed"] == 3
    saved = torch.load(tmp_path / "checkpoint.pt", weights_only=False)["loss_state"]
    assert (saved["transition"] is not None) if loss == "forward_est" else True
    rest_summary, rest = run(spec, checkpoint_dir=tmp_path)
    assert strip_time(part + rest) == strip_time(full)
    assert rest_summary == full_summary


def test_a_truncated_lq_checkpoint_of_the_old_layout_still_resumes(tmp_path):
    """Before the loss-state hook a checkpoint held truncated Lq's weights and best model at its
    top level."""
    spec = parse_spec(dict(TINY, loss="truncated_lq", noise="uniform", noise_rate=0.4, prune_start=2, prune_every=1))
    full = run(spec)[1]
    run(spec, should_stop=iter([False] * (2 * 6 + 2) + [True]).__next__, checkpoint_dir=tmp_path)
    path = tmp_path / "checkpoint.pt"
    state = torch.load(path, weights_only=False)
    state.update(state.pop("loss_state"))  # weights, best_model
    torch.save(state, path)
    rest = run(spec, checkpoint_dir=tmp_path)[1]
    assert strip_time(rest) == strip_time(full[state["epoch"]:])

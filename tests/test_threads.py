"""Thread counts: a chain run's numbers do not depend on them, and the tuner keeps the faster one."""

import itertools

import pytest
import torch

import gce_core.threads as threads
import gce_core.train as train_module
from gce_core.chain import Chain, layer_chain
from gce_core.losses import loss_and_grad
from gce_core.models import init_seeded
from gce_core.spec import parse_spec
from gce_core.threads import (
    ThreadTuner,
    candidate_counts,
    intra_op_threads,
    make_thread_invariant,
    tuned_epoch,
)

DIGITS = dict(dataset="digits", model="mlp", batch_size=128, lr=0.1, noise="uniform", noise_rate=0.6,
              device="cpu")  # fmt: skip


def test_candidate_counts():
    assert candidate_counts(1) == (1,)
    assert candidate_counts(2) == (1, 2)
    assert candidate_counts(6) == (1, 2, 4, 6)
    assert candidate_counts(16) == (1, 2, 4, 8, 16)


def test_intra_op_threads_sets_the_count_and_restores_it():
    before = torch.get_num_threads()
    with intra_op_threads(3):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before
    with pytest.raises(RuntimeError), intra_op_threads(5):
        raise RuntimeError("boom")
    assert torch.get_num_threads() == before
    with intra_op_threads(None):
        assert torch.get_num_threads() == before


def drive(tuner: ThreadTuner, seconds: dict[int, float], epochs: int) -> list[int]:
    """Run ``epochs`` epochs whose time per count is ``seconds``; the counts used, in order."""
    used = []
    for _ in range(epochs):
        count = tuner.next_count()
        tuner.record(count, seconds[count])
        used.append(count)
    return used


def test_tuner_warms_up_probes_each_count_then_keeps_the_fastest():
    tuner = ThreadTuner((1, 2), probes=2, reprobe_every=5)
    used = drive(tuner, {1: 10.0, 2: 8.0}, 12)
    # warm-up at the largest (not counted), two probes each, then the faster
    assert used[:5] == [2, 1, 1, 2, 2]
    assert tuner.best() == 2
    # five epochs at the best, then one probe of the other, then back
    assert used[5:12] == [2, 2, 2, 2, 2, 1, 2]
    assert tuner.used == {2: 9, 1: 3}


def test_tuner_waits_longer_after_each_probe_that_loses():
    tuner = ThreadTuner((1, 2), probes=2, reprobe_every=4, max_reprobe_every=16)
    used = drive(tuner, {1: 10.0, 2: 8.0}, 5 + 4 + 1 + 8 + 1 + 16 + 1 + 16 + 1)
    probes = [i for i, count in enumerate(used) if count == 1 and i >= 5]
    assert [b - a for a, b in itertools.pairwise(probes)] == [9, 17, 17]  # waits 8, 16, 16 after the first probe (at 4)


def test_a_probe_that_wins_takes_over_and_resets_the_wait():
    tuner = ThreadTuner((1, 2), probes=2, window=1, reprobe_every=4)
    drive(tuner, {1: 10.0, 2: 8.0}, 3 + 4)  # window 1: one probe each; the next epoch probes 1
    assert drive(tuner, {1: 7.0, 2: 8.0}, 3) == [1, 1, 1]
    assert tuner.best() == 1 and tuner.wait == 4


def test_a_probe_replaces_the_stale_times_of_its_count():
    """A slow spell made 2 look slow; 1 took over. When 2 is probed again its one fresh time
    decides (a window of stale times would keep it out for dozens of epochs)."""
    tuner = ThreadTuner((1, 2), probes=2, window=3, reprobe_every=4)
    drive(tuner, {1: 10.0, 2: 13.0}, 5)  # warm-up and probes in a slow spell: 1 wins
    used = drive(tuner, {1: 10.0, 2: 8.0}, 4 + 3)  # the spell is over
    assert used == [1, 1, 1, 1, 2, 2, 2]


def test_tuner_leaves_a_count_that_got_slower():
    tuner = ThreadTuner((1, 2), probes=2, window=3, reprobe_every=100)
    drive(tuner, {1: 10.0, 2: 8.0}, 8)
    assert tuner.best() == 2
    used = drive(tuner, {1: 10.0, 2: 13.0}, 4)
    assert used[:2] == [2, 2] and used[2:] == [1, 1]  # median of 2's last three passes 10 s


def test_tuner_with_one_count_always_uses_it():
    assert drive(ThreadTuner((1,)), {1: 1.0}, 5) == [1] * 5
    with pytest.raises(ValueError, match="counts"):
        ThreadTuner(())


def test_tuned_epoch_runs_the_block_at_the_next_count_and_books_its_time():
    tuner = ThreadTuner((1, 3))
    before = torch.get_num_threads()
    with tuned_epoch(tuner):
        assert torch.get_num_threads() == 3  # the warm-up epoch: the largest count
    with tuned_epoch(tuner):
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before
    assert tuner.used == {3: 1, 1: 1} and len(tuner.times[1]) == 1 and tuner.times[1][0] >= 0
    with tuned_epoch(None):
        assert torch.get_num_threads() == before


def mlp_chain():
    model = init_seeded("mlp", (1, 8, 8), 10, 0)
    return Chain(layer_chain(model), dict(model.named_parameters()))


def layout_of_cce(logits):
    return loss_and_grad(logits, torch.arange(logits.shape[0]) % 10, "cce")[1]


def test_a_chain_step_gives_the_same_bits_at_one_and_two_threads_once_made_invariant():
    chain = mlp_chain()
    assert make_thread_invariant(chain, (1, 8, 8), [128, 13], [144, 360], (1, 2), layout_of_cce)
    assert all(kind in ("weight", "input") for _, kind in chain.single_thread)
    gen = torch.Generator().manual_seed(5)
    x, y = torch.randn(128, 1, 8, 8, generator=gen), torch.randint(0, 10, (128,), generator=gen)

    def step(threads):
        grads = {n: torch.empty_like(p) for n, p in chain.params.items()}
        with intra_op_threads(threads), torch.inference_mode():
            logits, tape = chain.forward(x)
            chain.backward(tape, loss_and_grad(logits, y, "lq", q=0.7)[1], grads)
        return [logits, *grads.values()]

    assert all(torch.equal(a, b) for a, b in zip(step(1), step(2), strict=True))


def test_a_verdict_is_reused_for_the_same_shapes(monkeypatch):
    checks = []
    real = threads._check
    monkeypatch.setattr(threads, "_VERDICTS", {})
    monkeypatch.setattr(threads, "_check", lambda *a: checks.append(1) or real(*a))
    first, second = mlp_chain(), mlp_chain()
    assert make_thread_invariant(first, (1, 8, 8), [64], [100], (1, 2), layout_of_cce)
    assert make_thread_invariant(second, (1, 8, 8), [64], [100], (1, 2), layout_of_cce)
    assert make_thread_invariant(mlp_chain(), (1, 8, 8), [65], [100], (1, 2), layout_of_cce)
    assert len(checks) == 2 and second.single_thread == first.single_thread


def count_dependent(real):
    """``real`` with results that change with the thread count (as a BLAS split can)."""
    def product(*args, out=None):
        result = real(*args, out=out)
        return result.add_(torch.get_num_threads() - 1)
    return product


def test_a_count_dependent_gradient_product_is_pinned_to_one_thread(monkeypatch):
    monkeypatch.setattr(threads, "_VERDICTS", {})  # checked afresh, not the real products' verdict
    chain = mlp_chain()
    monkeypatch.setattr(torch, "mm", count_dependent(torch.mm))
    assert make_thread_invariant(chain, (1, 8, 8), [32], [], (1, 2), layout_of_cce)
    assert chain.single_thread == {
        ("net.5", "weight"), ("net.5", "input"), ("net.3", "weight"), ("net.3", "input"), ("net.1", "weight"),
    }


def test_a_count_dependent_forward_product_refuses_the_chain(monkeypatch):
    monkeypatch.setattr(threads, "_VERDICTS", {})
    chain = mlp_chain()
    monkeypatch.setattr(torch, "addmm", count_dependent(torch.addmm))
    assert not make_thread_invariant(chain, (1, 8, 8), [32], [], (1, 2), layout_of_cce)


@pytest.mark.parametrize("loss", ["cce", "truncated_lq"])
def test_a_run_gives_the_same_numbers_at_one_and_two_threads(loss):
    """With two threads the tuner switches counts epoch by epoch; the rows and the weights are
    still bit for bit those of a one-thread run (truncated Lq: also across its w-steps)."""
    spec = parse_spec(dict(DIGITS, loss=loss, epochs=14, prune_start=4, prune_every=4))
    device = torch.device("cpu")
    data = train_module.build_experiment_data(spec, device)
    results = {}
    for count in (1, 2):
        with intra_op_threads(count):
            st = train_module.new_state(spec, data, device)
            assert (st.tuner is not None) == (count == 2)
            train_module.run_epochs(spec, st, data, device, spec.epochs)
            if count == 2:
                assert set(st.tuner.last_run) == {1, 2} and min(st.tuner.last_run.values()) >= 0
        rows = [{k: v for k, v in r.items() if k != "seconds"} for r in st.history]
        results[count] = rows, {k: v.clone() for k, v in st.model.state_dict().items()}
    (rows1, weights1), (rows2, weights2) = results[1], results[2]
    assert rows1 == rows2
    assert all(torch.equal(weights1[k], weights2[k]) for k in weights1)

"""The accelerator path on a real CUDA device: channels_last, bf16 autocast, the losses' gradients
from bf16 logits, torch.compile with inductor and Triton, prebuilt data on the GPU.

Every test here skips without a CUDA device. The project's CI machine has none, so on it they
always skip; tests/test_train.py runs the same path on the CPU under CPU bf16 autocast. On a GPU
machine: `pytest tests/test_cuda.py`. Only APIs that torch 2.11 has too.
"""

import math

import pytest
import torch

from gce_core.experiment_data import build_experiment_data
from gce_core.losses import criterion, loss_values
from gce_core.spec import parse_spec
from gce_core.train import new_state, train
from tests.test_train import assert_rows_close, strip_time

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")

MLP = dict(dataset="digits", model="mlp", train_subset=400, epochs=4, lr=0.1, batch_size=64,
           noise="uniform", noise_rate=0.4, device="cuda")  # fmt: skip
CNN = dict(MLP, model="cnn", noise="none", epochs=8)


def run(spec, **kw):
    rows = []
    summary = train(spec, on_epoch=rows.append, **kw)
    return summary, rows


def test_a_cnn_learns_on_the_gpu_in_bf16_with_channels_last():
    summary, rows = run(dict(CNN, loss="cce"))
    assert summary["device"].startswith("cuda") and summary["epochs_completed"] == 8
    assert all(math.isfinite(r["train_loss"]) for r in rows)
    assert rows[-1]["train_loss"] < 0.5 * rows[0]["train_loss"]
    spec = parse_spec(dict(CNN, loss="cce"))
    st = new_state(spec, build_experiment_data(spec, torch.device("cuda")), torch.device("cuda"))
    conv = [m for m in st.model.modules() if isinstance(m, torch.nn.Conv2d)][-1]
    assert conv.weight.is_cuda and conv.weight.is_contiguous(memory_format=torch.channels_last)


@pytest.mark.parametrize("loss", ["lq", "truncated_lq"])
def test_every_loss_trains_on_the_gpu_with_augmentation(loss):
    _, rows = run(dict(CNN, loss=loss, augment=True, epochs=3, prune_start=2, prune_every=1))
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(math.isfinite(r["train_loss"]) and 0.0 <= r["test_acc"] <= 1.0 for r in rows)


def test_the_gpu_run_is_close_to_the_cpu_run():
    """The MLP on CUDA (bf16 autocast) against the same spec on the CPU (float32)."""
    gpu = run(dict(MLP, loss="cce", noise="none"))[1]
    cpu = run(dict(MLP, loss="cce", noise="none", device="cpu"))[1]
    for a, b in zip(gpu, cpu, strict=True):
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=5e-2)
        assert a["test_acc"] == pytest.approx(b["test_acc"], abs=0.05)


def test_a_run_resumed_on_the_gpu_continues_where_it_stopped(tmp_path):
    spec = dict(MLP, loss="lq")
    _, full = run(spec)
    calls = {"n": 0}

    def stop_in_epoch_three():
        calls["n"] += 1
        return calls["n"] > 2 * 6 + 2  # 6 batches of 64 per epoch on 360 images

    part_summary, part = run(spec, should_stop=stop_in_epoch_three, checkpoint_dir=tmp_path)
    assert part_summary["stopped"] and part_summary["epochs_completed"] == 2
    _, rest = run(spec, checkpoint_dir=tmp_path)
    assert [r["epoch"] for r in rest] == [3, 4]
    assert_rows_close(part + rest, full)


def test_the_same_spec_twice_on_the_gpu_gives_close_rows():
    """GPU kernels may add in another order from run to run: close, not necessarily equal."""
    spec = dict(MLP, loss="lq", augment=True)
    first, second = run(spec)[1], run(spec)[1]
    assert len(strip_time(first)) == 4
    assert_rows_close(first, second)


def test_bf16_logits_get_the_float32_losses_gradient():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(128, 100, generator=g).cuda().bfloat16()
    targets = torch.randint(0, 100, (128,), generator=g).cuda()
    weights = torch.ones(128, device="cuda")
    for name in ("cce", "mae", "lq", "truncated_lq"):
        a = logits.clone().requires_grad_()
        value = (criterion(name)(a, targets) * weights).mean()
        value.backward()
        b = logits.clone().requires_grad_()
        ref = loss_values(b.float(), targets, name, weights=weights, reduction="mean")
        ref.backward()
        assert value.dtype == torch.float32
        assert a.grad.dtype == torch.bfloat16 and a.grad.is_cuda
        assert value.item() == pytest.approx(ref.item(), abs=1e-5), name
        torch.testing.assert_close(a.grad.float(), b.grad.float(), atol=1e-3, rtol=1e-2)


def test_a_second_compiled_run_on_the_gpu_compiles_nothing():
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    before = counters["stats"]["unique_graphs"]
    first = run(dict(CNN, loss="cce", epochs=1, compile=True))[1]
    once = counters["stats"]["unique_graphs"] - before
    run(dict(CNN, loss="lq", epochs=1, compile=True, seed=1))
    assert once >= 1 and counters["stats"]["unique_graphs"] - before == once
    assert math.isfinite(first[0]["train_loss"])

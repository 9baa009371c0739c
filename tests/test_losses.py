"""Loss values against float64 references, limits, gradients at extreme logits, bad input."""

import math

import pytest
import torch

from gce_core.losses import (
    acs_weights,
    canonical_loss_name,
    cce,
    class_log_softmax,
    class_softmax,
    loss_and_grad,
    loss_values,
    lq,
    lq_constant,
    mae,
    stacked_loss_and_grad,
    truncated_lq,
)


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(64, 10, generator=g) * 3
    targets = torch.randint(0, 10, (64,), generator=g)
    return logits, targets


def f_y64(logits, targets):
    return torch.softmax(logits.double(), 1).gather(1, targets[:, None]).squeeze(1)


def test_cce_matches_float64_reference(batch):
    logits, targets = batch
    ref = -f_y64(logits, targets).log()
    assert torch.allclose(cce(logits, targets, "none").double(), ref, atol=1e-5)
    assert cce(logits, targets).item() == pytest.approx(ref.mean().item(), abs=1e-5)


def test_mae_is_paper_scale_l1_distance(batch):
    logits, targets = batch
    p = torch.softmax(logits.double(), 1)
    onehot = torch.nn.functional.one_hot(targets, 10).double()
    l1 = (onehot - p).abs().sum(1)
    assert torch.allclose(mae(logits, targets, "none").double(), l1, atol=1e-5)
    assert torch.allclose(l1, 2 - 2 * f_y64(logits, targets))


@pytest.mark.parametrize("q", [0.1, 0.3, 0.7, 1.0])
def test_lq_matches_float64_reference(batch, q):
    logits, targets = batch
    ref = (1 - f_y64(logits, targets) ** q) / q
    assert torch.allclose(lq(logits, targets, q, "none").double(), ref, atol=1e-5)


def test_lq_tends_to_cce_as_q_goes_to_zero():
    g = torch.Generator().manual_seed(1)
    logits, targets = torch.randn(256, 10, generator=g), torch.randint(0, 10, (256,), generator=g)
    diff = (lq(logits, targets, 1e-6, "none") - cce(logits, targets, "none")).abs().max()
    assert diff.item() < 1e-4


def test_lq_is_exact_at_tiny_q_even_for_large_losses(batch):
    # Lq - CCE = q log^2(p) / 2 + ... is real, but the float32 value must match float64 Lq.
    logits, targets = batch
    p = f_y64(logits, targets)
    ref = -torch.expm1(1e-6 * p.log()) / 1e-6
    assert torch.allclose(lq(logits, targets, 1e-6, "none").double(), ref, rtol=1e-5)


def test_lq_small_q_is_exact_where_naive_formula_fails():
    # p = 0.9: the naive (1 - p**q)/q in float32 gives 0.1192 at q = 1e-6; the truth is 0.10536.
    logits = torch.tensor([[math.log(0.9), math.log(0.1)]])
    value = lq(logits, torch.tensor([0]), 1e-6).item()
    assert value == pytest.approx(-math.log(0.9), abs=1e-5)


def test_lq_at_q_one_is_one_minus_fy(batch):
    logits, targets = batch
    ref = 1 - f_y64(logits, targets)
    assert torch.allclose(lq(logits, targets, 1.0, "none").double(), ref, atol=1e-6)


@pytest.mark.parametrize("name", ["cce", "mae", "lq", "truncated_lq"])
def test_finite_values_and_gradients_at_extreme_logits(name):
    logits = torch.tensor([[1e4, -1e4, 0.0], [-1e4, 1e4, 5e3], [0.0, 0.0, -1e4]], requires_grad=True)
    targets = torch.tensor([1, 0, 2])  # f_y underflows to 0 for every sample
    value = loss_values(logits, targets, name, q=0.7, k=0.5)
    value.backward()
    assert torch.isfinite(value)
    assert torch.isfinite(logits.grad).all()


def test_lq_gradient_is_fy_power_q_times_cce_gradient(batch):
    logits, targets = batch
    q = 0.7
    a = logits.clone().requires_grad_(True)
    lq(a, targets, q, "sum").backward()
    b = logits.clone().requires_grad_(True)
    cce(b, targets, "none").mul(f_y64(logits, targets).float() ** q).sum().backward()
    assert torch.allclose(a.grad, b.grad, atol=1e-5)


def test_reductions_agree(batch):
    logits, targets = batch
    none = lq(logits, targets, 0.7, "none")
    assert none.shape == (64,)
    assert lq(logits, targets, 0.7, "sum").item() == pytest.approx(none.sum().item(), rel=1e-5)
    assert lq(logits, targets, 0.7, "mean").item() == pytest.approx(none.mean().item(), rel=1e-5)


def test_truncated_lq_is_constant_below_k():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0]])  # f_0 = 0.88 and 0.12
    values = truncated_lq(logits, torch.tensor([0, 0]), 0.7, 0.5, reduction="none")
    assert values[1].item() == pytest.approx(lq_constant(0.5, 0.7))
    assert values[0].item() == pytest.approx((1 - 0.8808**0.7) / 0.7, abs=1e-4)


def test_acs_weights_and_weighted_objective(batch):
    logits, targets = batch
    k, q = 0.5, 0.7
    w = acs_weights(logits, targets, k)
    assert torch.equal(w.bool(), f_y64(logits, targets) > k)
    objective = truncated_lq(logits, targets, q, k, weights=w, reduction="none")
    truncated = truncated_lq(logits, targets, q, k, reduction="none")
    assert torch.allclose(objective, truncated - lq_constant(k, q), atol=1e-6)
    assert (objective <= 1e-7).all()  # the ACS objective is never positive: expected, not a bug


@pytest.mark.parametrize("q", [0.0, -0.1, 1.5, float("nan")])
def test_bad_q_names_parameter_and_range(batch, q):
    with pytest.raises(ValueError, match=r"q must be in \(0, 1\]"):
        lq(*batch, q)


@pytest.mark.parametrize("k", [0.0, 1.0, 2.0])
def test_bad_k_names_parameter_and_range(batch, k):
    with pytest.raises(ValueError, match=r"k must be in \(0, 1\)"):
        truncated_lq(*batch, 0.7, k)


def test_bad_reduction_and_names(batch):
    with pytest.raises(ValueError, match="reduction must be one of"):
        mae(*batch, reduction="avg")
    with pytest.raises(ValueError, match="reduction must be one of"):
        cce(*batch, reduction="avg")
    assert canonical_loss_name("GCE") == "lq"
    with pytest.raises(ValueError, match="allowed: cce, mae, lq, truncated_lq"):
        canonical_loss_name("focal")


def test_bf16_logits_are_computed_in_float32(batch):
    logits, targets = batch
    a = lq(logits.bfloat16(), targets, 0.7)
    assert a.dtype == torch.float32
    assert a.item() == pytest.approx(lq(logits.bfloat16().float(), targets, 0.7).item(), abs=1e-6)


@pytest.mark.parametrize("name", ["cce", "mae", "lq", "truncated_lq"])
@pytest.mark.parametrize("n", [64, 13])
@pytest.mark.parametrize("classes", [10, 20])  # the transposed CPU log_softmax, and the usual one
def test_loss_and_grad_is_bitwise_autograd(name, n, classes):
    g = torch.Generator().manual_seed(n)
    logits = torch.randn(n, classes, generator=g) * 5
    logits[0] = torch.tensor([1e4] + [-1e4] * (classes - 1))  # f_y underflows where y != 0
    targets = torch.randint(0, classes, (n,), generator=g)
    weights = (torch.rand(n, generator=g) > 0.3).float() if name == "truncated_lq" else None
    leaf = logits.clone().requires_grad_(True)
    value = loss_values(leaf, targets, name, q=0.3, k=0.4, weights=weights)
    value.backward()
    got_value, got_grad = loss_and_grad(logits, targets, name, q=0.3, k=0.4, weights=weights)
    assert torch.equal(got_value, value.detach())
    assert torch.equal(got_grad, leaf.grad)


def test_stacked_loss_and_grad_is_each_runs_own():
    g = torch.Generator().manual_seed(3)
    runs = [("cce", 0.7, 0.5), ("lq", 0.7, 0.5), ("lq", 0.2, 0.5), ("mae", 0.7, 0.5),
            ("truncated_lq", 0.7, 0.5)]  # fmt: skip
    logits = torch.randn(len(runs), 32, 10, generator=g) * 3
    targets = torch.randint(0, 10, (len(runs), 32), generator=g)
    weights = (torch.rand(len(runs), 32, generator=g) > 0.3).float()
    values, grads = stacked_loss_and_grad(logits, targets, runs, weights)
    for i, (name, q, k) in enumerate(runs):
        w = weights[i] if name == "truncated_lq" else None
        value, grad = loss_and_grad(logits[i], targets[i], name, q=q, k=k, weights=w)
        assert torch.equal(values[i], value) and torch.equal(grads[i], grad)


@pytest.mark.parametrize("classes", [2, 10, 15, 16, 100])
@pytest.mark.parametrize("shape", [(37,), (3, 37)])
def test_class_log_softmax_and_softmax_are_torchs_over_the_last_dimension(classes, shape):
    g = torch.Generator().manual_seed(classes)
    z = torch.randn(*shape, classes, generator=g) * 8
    got_log, got = class_log_softmax(z), class_softmax(z)
    torch.testing.assert_close(got_log, torch.log_softmax(z, dim=-1), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(got, torch.softmax(z, dim=-1), rtol=1e-6, atol=1e-7)
    # On the CPU, fewer than 16 classes take the kernel over the transposed view
    assert (got_log.stride(-1) != 1) == (classes < 16)
    assert got_log.shape == z.shape and torch.allclose(got.sum(-1), torch.ones(shape))


def test_constants_first_made_in_inference_mode_serve_autograd_later():
    """The losses keep their constants (q, 1/q, ...) as tensors made once; one first made under
    inference mode (the trainer's evaluation) must still work in an autograd graph."""
    q = 0.6180339  # a q no other test uses, so its constants are made here, first
    logits, targets = torch.randn(8, 10), torch.arange(8)
    with torch.inference_mode():
        first = lq(logits, targets, q)
    leaf = logits.clone().requires_grad_()
    value = lq(leaf, targets, q)
    value.backward()
    assert torch.equal(value.detach(), first)
    assert torch.isfinite(leaf.grad).all() and leaf.grad.abs().sum() > 0

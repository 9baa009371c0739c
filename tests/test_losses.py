"""Loss values and autograd gradients against float64 references, limits, gradients at extreme
logits, the per-run criterion, bad input."""

import math

import pytest
import torch

from gce_core.losses import (
    acs_weights,
    canonical_loss_name,
    cce,
    criterion,
    loss_values,
    lq,
    lq_constant,
    mae,
    truncated_lq,
    values_of_log_prob,
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


def reference64(name, logits, targets, q=0.3, k=0.4):
    """Per-sample values in float64 from the paper's formulas on softmax probabilities; for
    truncated_lq the ACS term Lq(f_y) - Lq(k) that ``criterion`` returns."""
    p = torch.softmax(logits, 1).gather(1, targets[:, None]).squeeze(1)
    if name == "cce":
        return -p.log()
    if name == "mae":
        return 2 - 2 * p
    lq64 = (1 - p**q) / q
    return lq64 - (1 - k**q) / q if name == "truncated_lq" else lq64


@pytest.mark.parametrize("name", ["cce", "mae", "lq", "truncated_lq"])
def test_criterion_values_and_gradients_match_float64(batch, name):
    logits, targets = batch
    fn = criterion(name, q=0.3, k=0.4)
    got_leaf = logits.clone().requires_grad_(True)
    values = fn(got_leaf, targets)
    assert values.shape == (64,) and values.dtype == torch.float32
    values.mean().backward()
    ref_leaf = logits.double().requires_grad_(True)
    ref = reference64(name, ref_leaf, targets)
    ref.mean().backward()
    torch.testing.assert_close(values.double(), ref.detach(), rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(got_leaf.grad.double(), ref_leaf.grad, rtol=1e-4, atol=1e-7)


def test_criterion_weighted_is_the_acs_objective_and_pruned_samples_get_no_gradient(batch):
    logits, targets = batch
    w = acs_weights(logits, targets, 0.4)
    leaf = logits.clone().requires_grad_(True)
    objective = criterion("truncated_lq", q=0.3, k=0.4)(leaf, targets) * w
    want = truncated_lq(logits, targets, 0.3, 0.4, weights=w, reduction="none")
    torch.testing.assert_close(objective.detach(), want)
    objective.mean().backward()
    pruned = w == 0
    assert pruned.any() and (~pruned).any()
    assert torch.equal(leaf.grad[pruned], torch.zeros_like(leaf.grad[pruned]))
    assert (leaf.grad[~pruned].abs().sum(1) > 0).all()


@pytest.mark.parametrize("name", ["cce", "mae", "lq", "truncated_lq"])
def test_criterion_agrees_with_the_named_loss_functions(batch, name):
    logits, targets = batch
    values = criterion(name, q=0.7, k=0.5)(logits, targets)
    want = loss_values(logits, targets, name, q=0.7, k=0.5, weights=torch.ones(64), reduction="none")
    torch.testing.assert_close(values, want)


def test_criterion_checks_its_name_and_parameters_once_when_made(batch):
    with pytest.raises(ValueError, match=r"q must be in \(0, 1\]"):
        criterion("lq", q=1.5)
    with pytest.raises(ValueError, match=r"k must be in \(0, 1\)"):
        criterion("truncated_lq", k=1.0)
    with pytest.raises(ValueError, match="allowed: cce, mae, lq, truncated_lq"):
        criterion("focal")
    criterion("cce", q=-1.0)  # cce has no q: not checked
    assert criterion("GCE", q=0.7)(*batch).shape == (64,)  # aliases as everywhere


def test_criterion_computes_half_precision_logits_in_float32(batch):
    logits, targets = batch
    got = criterion("lq")(logits.bfloat16(), targets)
    assert got.dtype == torch.float32
    torch.testing.assert_close(got, criterion("lq")(logits.bfloat16().float(), targets))


def test_values_of_log_prob_are_the_loss_of_every_label():
    logits = torch.randn(5, 4, generator=torch.Generator().manual_seed(2))
    log_p = torch.log_softmax(logits, 1)
    for name in ("cce", "mae", "lq", "truncated_lq"):
        table = values_of_log_prob(log_p, name, q=0.7, k=0.5)
        for j in range(4):
            want = loss_values(logits, torch.full((5,), j), name, q=0.7, k=0.5, reduction="none")
            torch.testing.assert_close(table[:, j], want)

"""The loss-sum bounds hold on random outputs and are attained where the paper says."""

import math

import pytest
import torch

from gce_core.bounds import (
    excess_risk_bound,
    loss_bounds,
    loss_sum,
    lq_sum_bounds,
    truncated_lq_sum_bounds,
)
from gce_core.losses import get_loss


def dirichlet_logits(n, c, seed, concentration=0.3):
    g = torch.Generator().manual_seed(seed)
    gamma = torch._standard_gamma(torch.full((n, c), concentration, dtype=torch.float64), generator=g)
    p = (gamma / gamma.sum(1, keepdim=True)).clamp_min(1e-30)
    return p.log().float()


@pytest.mark.parametrize("c", [2, 10, 100])
@pytest.mark.parametrize("q", [0.1, 0.5, 0.7, 1.0])
def test_lq_band_holds_on_10000_dirichlet_outputs(c, q):
    sums = loss_sum(dirichlet_logits(10_000, c, seed=c), "lq", q=q)
    lo, hi = lq_sum_bounds(c, q)
    assert sums.min().item() >= lo - 1e-3 * c
    assert sums.max().item() <= hi + 1e-3 * c


@pytest.mark.parametrize("c", [10, 100])
@pytest.mark.parametrize("q", [0.3, 0.7])
def test_lq_band_attained_at_uniform_and_one_hot(c, q):
    lo, hi = lq_sum_bounds(c, q)
    uniform = torch.zeros(1, c)
    one_hot = torch.full((1, c), -1e4)
    one_hot[0, 0] = 0.0
    assert loss_sum(uniform, "lq", q=q).item() == pytest.approx(lo, rel=1e-5)
    assert loss_sum(one_hot, "lq", q=q).item() == pytest.approx(hi, rel=1e-5)


def test_lq_band_closes_at_q_one():
    lo, hi = lq_sum_bounds(10, 1.0)
    assert lo == pytest.approx(9.0) and hi == pytest.approx(9.0)


def test_mae_sum_is_constant_two_c_minus_one():
    sums = loss_sum(dirichlet_logits(10_000, 10, seed=1), "mae")
    assert torch.allclose(sums, torch.full_like(sums, 18.0), atol=1e-3)
    assert loss_bounds("mae", 10) == (18.0, 18.0)


def test_cce_sum_is_unbounded_above():
    lo, hi = loss_bounds("cce", 10)
    assert math.isinf(hi) and lo == pytest.approx(10 * math.log(10))
    extreme = torch.full((1, 10), -80.0)
    extreme[0, 0] = 0.0
    assert loss_sum(extreme, "cce").item() > 700


@pytest.mark.parametrize("c,q,k", [(10, 0.7, 0.5), (10, 0.3, 0.2), (100, 0.7, 0.5), (3, 0.9, 0.4)])
def test_truncated_band_holds_and_is_inside_lq_band(c, q, k):
    sums = loss_sum(dirichlet_logits(10_000, c, seed=7), "truncated_lq", q=q, k=k)
    lo, hi = truncated_lq_sum_bounds(c, q, k)
    assert sums.min().item() >= lo - 1e-3 * c
    assert sums.max().item() <= hi + 1e-3 * c


@pytest.mark.parametrize("c", [10, 100])
def test_truncated_band_is_tighter_than_lq_band_at_paper_settings(c):
    lo, hi = truncated_lq_sum_bounds(c, 0.7, 0.5)
    lq_lo, lq_hi = lq_sum_bounds(c, 0.7)
    assert hi - lo < lq_hi - lq_lo


def test_truncated_band_needs_k_at_least_one_over_c():
    with pytest.raises(ValueError, match="k >= 1/c"):
        truncated_lq_sum_bounds(10, 0.7, 0.05)


def test_excess_risk_bound():
    assert excess_risk_bound(10, 1.0, 0.4) == 0.0
    assert excess_risk_bound(10, 0.7, 0.4) == pytest.approx(0.4 * (10**0.3 - 1) / (0.7 * 9))
    with pytest.raises(ValueError, match="rate must be in"):
        excess_risk_bound(10, 0.7, 0.9)


def test_bad_classes():
    with pytest.raises(ValueError, match="num_classes must be an integer >= 2"):
        lq_sum_bounds(1, 0.7)


@pytest.mark.parametrize("loss", ["sce", "nce_rce", "nce_mae", "agce", "aul", "bootstrap_soft", "bootstrap_hard"])
def test_the_loss_sum_of_every_registry_loss_is_its_values_summed_over_the_labels(loss):
    logits = dirichlet_logits(50, 4, seed=3).float()
    spec = get_loss(loss)
    want = sum(spec.values(logits, torch.full((50,), j), **spec.defaults) for j in range(4))
    assert torch.allclose(loss_sum(logits, loss), want, rtol=1e-5, atol=1e-4)
    if spec.sum_bounds is None:
        with pytest.raises(ValueError, match=f"no loss-sum bound is known for {loss}"):
            loss_bounds(loss, 4)
    else:
        lo, hi = loss_bounds(loss, 4, k=0.5)  # parameters of other losses are ignored
        assert lo - 1e-4 <= float(loss_sum(logits, loss).min()) and float(loss_sum(logits, loss).max()) <= hi + 1e-4

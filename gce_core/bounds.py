"""Loss-sum bounds of the paper: each loss summed over all c possible labels.

For any softmax output f(x):
- CCE: unbounded above.
- MAE: exactly 2 (c - 1).
- Lq: (c - c^(1-q)) / q <= sum_j Lq(f, e_j) <= (c - 1) / q (attained at uniform / one-hot f).
- truncated Lq (k >= 1/c): d Lq(1/d) + (c - d) Lq(k) <= sum <= c Lq(k), d = max(1, (1-q)^(1/q) / k).

A narrower band means a loss closer to symmetric, hence more tolerant to label noise.
"""

from __future__ import annotations

import math

import torch

from gce_core.losses import (
    canonical_loss_name,
    check_k,
    check_q,
    lq_constant,
    values_of_log_prob,
)


def _check_classes(num_classes: int) -> int:
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
    return int(num_classes)


def lq_sum_bounds(num_classes: int, q: float) -> tuple[float, float]:
    """(lower, upper) of sum_j Lq(f(x), e_j) over all c labels, for q in (0, 1]."""
    c, q = _check_classes(num_classes), check_q(q)
    return (c - c ** (1.0 - q)) / q, (c - 1) / q


def truncated_lq_sum_bounds(num_classes: int, q: float, k: float) -> tuple[float, float]:
    """(lower, upper) of the truncated Lq summed over all c labels. Needs k >= 1/c."""
    c, q, k = _check_classes(num_classes), check_q(q), check_k(k)
    if k < 1.0 / c:
        raise ValueError(f"the truncated band needs k >= 1/c = {1.0 / c:.4g}, got k = {k}")
    level = lq_constant(k, q)
    d = max(1.0, (1.0 - q) ** (1.0 / q) / k)
    lower = d * ((1.0 - (1.0 / d) ** q) / q) + (c - d) * level
    return lower, c * level


def mae_sum(num_classes: int) -> float:
    """The MAE loss sum, 2 (c - 1), the same for every output: MAE is symmetric."""
    return 2.0 * (_check_classes(num_classes) - 1)


def excess_risk_bound(num_classes: int, q: float, rate: float) -> float:
    """A = eta (c^(1-q) - 1) / (q (c - 1)): the paper's bound on R_eta(f*) - R_eta(f_hat)
    under uniform noise of rate eta < 1 - 1/c. Zero at q = 1 (noise tolerant)."""
    c, q = _check_classes(num_classes), check_q(q)
    if not 0.0 <= rate < 1.0 - 1.0 / c:
        raise ValueError(f"rate must be in [0, 1 - 1/c) = [0, {1 - 1 / c:.4g}), got {rate}")
    return rate * (c ** (1.0 - q) - 1.0) / (q * (c - 1))


def loss_bounds(loss: str, num_classes: int, q: float = 0.7, k: float = 0.5) -> tuple[float, float]:
    """(lower, upper) of the loss sum for the named loss; CCE's upper bound is math.inf."""
    name = canonical_loss_name(loss)
    c = _check_classes(num_classes)
    if name == "cce":
        return c * math.log(c), math.inf  # minimum at the uniform output
    if name == "mae":
        return mae_sum(c), mae_sum(c)
    if name == "lq":
        return lq_sum_bounds(c, q)
    return truncated_lq_sum_bounds(c, q, k)


def loss_sum(logits: torch.Tensor, loss: str, **params: float) -> torch.Tensor:
    """Per sample, the loss summed over all c labels: logits (N, C) -> (N,).

    ``params`` are the loss's own (q, k). Truncated Lq is summed in its truncated form.
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    # Entry (i, j) of log_softmax is log f_j(x_i): the loss of sample i with label j, for all j
    # at once (the same values as evaluating each label as a target, without N*c rows).
    log_p = torch.log_softmax(logits.detach().float(), dim=1)
    return values_of_log_prob(log_p, canonical_loss_name(loss), **params).sum(dim=1)

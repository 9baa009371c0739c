"""Loss-sum bounds of the paper: each loss summed over all c possible labels.

For any softmax output f(x):
- CCE: unbounded above.
- MAE: exactly 2 (c - 1).
- Lq: (c - c^(1-q)) / q <= sum_j Lq(f, e_j) <= (c - 1) / q (attained at uniform / one-hot f).
- truncated Lq (k >= 1/c): d Lq(1/d) + (c - d) Lq(k) <= sum <= c Lq(k), d = max(1, (1-q)^(1/q) / k).

The formulas are the registry's (``Loss.sum_bounds`` in gce_core.losses); this module checks c
and the parameters, and measures the sum on outputs.

A narrower band means a loss closer to symmetric, hence more tolerant to label noise.
"""

from __future__ import annotations

import torch

from gce_core.losses import LOSSES, canonical_loss_name, check_q, values_of_log_prob


def _check_classes(num_classes: int) -> int:
    if int(num_classes) != num_classes or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes}")
    return int(num_classes)


def lq_sum_bounds(num_classes: int, q: float) -> tuple[float, float]:
    """(lower, upper) of sum_j Lq(f(x), e_j) over all c labels, for q in (0, 1]."""
    return LOSSES["lq"].sum_band(_check_classes(num_classes), q=q)


def truncated_lq_sum_bounds(num_classes: int, q: float, k: float) -> tuple[float, float]:
    """(lower, upper) of the truncated Lq summed over all c labels. Needs k >= 1/c."""
    return LOSSES["truncated_lq"].sum_band(_check_classes(num_classes), q=q, k=k)


def mae_sum(num_classes: int) -> float:
    """The MAE loss sum, 2 (c - 1), the same for every output: MAE is symmetric."""
    return LOSSES["mae"].sum_band(_check_classes(num_classes))[0]


def excess_risk_bound(num_classes: int, q: float, rate: float) -> float:
    """A = eta (c^(1-q) - 1) / (q (c - 1)): the paper's bound on R_eta(f*) - R_eta(f_hat)
    under uniform noise of rate eta < 1 - 1/c. Zero at q = 1 (noise tolerant)."""
    c, q = _check_classes(num_classes), check_q(q)
    if not 0.0 <= rate < 1.0 - 1.0 / c:
        raise ValueError(f"rate must be in [0, 1 - 1/c) = [0, {1 - 1 / c:.4g}), got {rate}")
    return rate * (c ** (1.0 - q) - 1.0) / (q * (c - 1))


def loss_bounds(loss: str, num_classes: int, q: float = 0.7, k: float = 0.5) -> tuple[float, float]:
    """(lower, upper) of the loss sum for the named loss (one of ``LOSS_NAMES``), from the
    registry's entry; CCE's upper bound is math.inf."""
    spec = LOSSES[canonical_loss_name(loss)]
    given = {"q": q, "k": k}
    return spec.sum_band(_check_classes(num_classes), **{p.name: given[p.name] for p in spec.params})


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

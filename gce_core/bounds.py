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

from gce_core.losses import (
    LOG_PROB_LOSS_NAMES,
    LOSSES,
    PerSampleLoss,
    check_q,
    criterion,
    get_loss,
    values_of_log_prob,
)


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
    return get_loss("lq").risk_bound(c, rate, q=q)


def loss_bounds(loss: str, num_classes: int, **params: float) -> tuple[float, float]:
    """(lower, upper) of the loss sum for the named loss (any of ``LOSS_NAMES``), from the
    registry's entry; CCE's upper bound is math.inf. ``params``: the loss's own (missing ones take
    its defaults); those of other losses are ignored, so a caller can pass q and k to every loss.
    Raises ValueError for a loss the registry gives no bound for (bootstrapping)."""
    spec = get_loss(loss)
    own = {p.name for p in spec.params}
    band = spec.sum_band(_check_classes(num_classes), **{n: v for n, v in params.items() if n in own})
    if band is None:
        raise ValueError(f"no loss-sum bound is known for {spec.name}")
    return band


def loss_sum(logits: torch.Tensor, loss: str | PerSampleLoss, **params: float) -> torch.Tensor:
    """Per sample, the loss summed over all c labels: logits (N, C) -> (N,).

    loss : a name of the registry (``params``: the loss's own, missing ones take its defaults;
    truncated Lq is summed in its truncated form), or a per-sample function ``fn(logits,
    targets)`` as a run's loss state gives it (forward correction with its run's T; no params).
    """
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    logits = logits.detach().float()
    if callable(loss):
        fn = loss
    else:
        spec = get_loss(loss)
        if spec.name in LOG_PROB_LOSS_NAMES:
            # Entry (i, j) of log_softmax is log f_j(x_i): the loss of sample i with label j, for all
            # j at once (the same values as evaluating each label as a target, without N*c rows).
            return values_of_log_prob(torch.log_softmax(logits, dim=1), spec.name, **params).sum(dim=1)
        fn = criterion(spec.name, **params)
    # The others (NCE's normaliser, bootstrapping's targets, forward's T) need the whole row: one
    # pass per label.
    with torch.no_grad():
        total = torch.zeros(logits.shape[0], dtype=logits.dtype, device=logits.device)
        for j in range(logits.shape[1]):
            labels = torch.full((logits.shape[0],), j, dtype=torch.long, device=logits.device)
            total += fn(logits, labels)
    return total

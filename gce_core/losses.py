"""The paper's losses, computed from raw logits.

Every loss takes logits (N, C) and integer targets (N,) and returns a tensor reduced by
``reduction`` in {"mean", "sum", "none"}. Notation of the paper: f = softmax(logits), f_y its
entry at the (noisy) label y.

| name          | per-sample value                          |
|---------------|-------------------------------------------|
| cce           | -log f_y                                  |
| mae           | 2 - 2 f_y (the paper's scale: L1 distance between e_y and f) |
| lq            | (1 - f_y^q) / q, q in (0, 1]              |
| truncated_lq  | Lq(f_y) if f_y > k, else Lq(k)            |

Lq is computed as ``-expm1(q * log f_y) / q`` from ``log_softmax``: exact for small q in float32
(the naive ``(1 - p**q) / q`` is 13% off at q = 1e-6) and free of NaN gradients when f_y
underflows to 0.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum", "none")
LOSS_NAMES = ("cce", "mae", "lq", "truncated_lq")
LOSS_ALIASES = {"gce": "lq", "ce": "cce"}
LOSS_FORMULAS = {
    "cce": "-log f_y",
    "mae": "2 - 2 f_y (paper scale)",
    "lq": "(1 - f_y^q) / q",
    "truncated_lq": "Lq(f_y) if f_y > k else Lq(k); optimised by alternative convex search",
}


def canonical_loss_name(name: str) -> str:
    """Map a user-facing loss name (aliases: 'gce' -> 'lq', 'ce' -> 'cce') to its canonical name.

    Raises ValueError listing the allowed names.
    """
    key = name.strip().lower()
    key = LOSS_ALIASES.get(key, key)
    if key not in LOSS_NAMES:
        allowed = ", ".join(LOSS_NAMES + tuple(LOSS_ALIASES))
        raise ValueError(f"unknown loss {name!r}; allowed: {allowed}")
    return key


def check_q(q: float) -> float:
    """Return q as float, or raise ValueError if q is outside (0, 1]."""
    q = float(q)
    if not (0.0 < q <= 1.0) or math.isnan(q):
        raise ValueError(f"q must be in (0, 1], got {q}")
    return q


def check_k(k: float) -> float:
    """Return k as float, or raise ValueError if k is outside (0, 1)."""
    k = float(k)
    if not (0.0 < k < 1.0) or math.isnan(k):
        raise ValueError(f"k must be in (0, 1), got {k}")
    return k


def _reduce(values: torch.Tensor, reduction: str) -> torch.Tensor:
    if reduction == "mean":
        return values.mean()
    if reduction == "sum":
        return values.sum()
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be one of {', '.join(REDUCTIONS)}, got {reduction!r}")


def log_prob_of_target(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log f_y for each sample: logits (N, C), targets (N,) -> (N,), computed in float32 or wider."""
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    # cross_entropy is one fused, numerically stable kernel for -log_softmax gathered at y.
    return -F.cross_entropy(logits, targets, reduction="none")


def lq_of_log_prob(log_p: torch.Tensor, q: float) -> torch.Tensor:
    """Lq from log-probabilities: (1 - p^q) / q = -expm1(q log p) / q, exact for small q."""
    return torch.expm1(log_p * q) * (-1.0 / q)


def lq_constant(k: float, q: float) -> float:
    """Lq(k) = (1 - k^q) / q, the truncation level of the truncated loss."""
    return -math.expm1(q * math.log(k)) / q


def cce(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Categorical cross entropy -log f_y. logits (N, C), targets (N,) int64."""
    if reduction not in REDUCTIONS:
        _reduce(logits, reduction)  # raises the uniform message
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()
    return F.cross_entropy(logits, targets, reduction=reduction)


def mae(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Mean absolute error on the paper's scale: ||e_y - f||_1 = 2 - 2 f_y, in [0, 2]."""
    f_y = log_prob_of_target(logits, targets).exp()
    return _reduce(2.0 - 2.0 * f_y, reduction)


def lq(
    logits: torch.Tensor, targets: torch.Tensor, q: float, reduction: str = "mean"
) -> torch.Tensor:
    """Generalized cross entropy Lq = (1 - f_y^q) / q with q in (0, 1].

    q -> 0 recovers CCE, q = 1 gives 1 - f_y (half the paper's MAE). The gradient is f_y^q
    times CCE's, so confidently-wrong samples (small f_y) weigh little.
    """
    q = check_q(q)
    return _reduce(lq_of_log_prob(log_prob_of_target(logits, targets), q), reduction)


def truncated_lq(
    logits: torch.Tensor,
    targets: torch.Tensor,
    q: float,
    k: float,
    weights: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Truncated Lq.

    Without ``weights``: the truncated loss itself, Lq(f_y) if f_y > k else the constant Lq(k)
    (no gradient from truncated samples).

    With ``weights`` (N,) in [0, 1] (the alternative-convex-search variables of the paper): the
    per-sample objective w_i * (Lq(f_y) - Lq(k)). It can be negative, by design. With
    ``weights = acs_weights(logits, targets, k)`` it equals the truncated loss minus Lq(k), so
    both forms have the same gradient; with all weights 1 it is plain Lq shifted by Lq(k).
    """
    q, k = check_q(q), check_k(k)
    log_p = log_prob_of_target(logits, targets)
    values = lq_of_log_prob(log_p, q)
    level = lq_constant(k, q)
    if weights is None:
        values = torch.where(log_p > math.log(k), values, torch.full_like(values, level))
    else:
        if weights.shape != values.shape:
            raise ValueError(
                f"weights must have shape {tuple(values.shape)} (one per sample), "
                f"got {tuple(weights.shape)}"
            )
        values = weights.to(values.dtype) * (values - level)
    return _reduce(values, reduction)


@torch.no_grad()
def acs_weights(logits: torch.Tensor, targets: torch.Tensor, k: float) -> torch.Tensor:
    """The closed-form w-step of the paper: w_i = 1 iff f_{y_i}(x_i) > k, else 0.

    logits (N, C), targets (N,) -> float32 weights (N,). Apply only to training-set samples.
    """
    k = check_k(k)
    return (log_prob_of_target(logits, targets) > math.log(k)).float()


def loss_values(
    logits: torch.Tensor,
    targets: torch.Tensor,
    loss: str,
    *,
    q: float = 0.7,
    k: float = 0.5,
    weights: torch.Tensor | None = None,
    reduction: str = "mean",
) -> torch.Tensor:
    """Dispatch to the named loss (see LOSS_NAMES). ``weights`` only apply to truncated_lq."""
    name = canonical_loss_name(loss)
    if name == "cce":
        return cce(logits, targets, reduction)
    if name == "mae":
        return mae(logits, targets, reduction)
    if name == "lq":
        return lq(logits, targets, q, reduction)
    return truncated_lq(logits, targets, q, k, weights, reduction)

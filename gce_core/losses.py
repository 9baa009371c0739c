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
underflows to 0. Gradients are autograd's.

A trainer takes its loss once per run with ``criterion(name, q=..., k=...)``: the name and
parameters are checked there, and the returned function maps (logits, targets) to per-sample
values in every batch without looking at them again.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

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


def _float_logits(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits (autocast output) upcast to float32; wider dtypes kept."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def _logit_rows(logits: torch.Tensor) -> torch.Tensor:
    """Logits checked to be (N, C), then upcast like ``_float_logits``."""
    if logits.dim() != 2:
        raise ValueError(f"logits must have shape (N, C), got {tuple(logits.shape)}")
    return _float_logits(logits)


def _truncated(values: torch.Tensor, log_p: torch.Tensor, q: float, k: float) -> torch.Tensor:
    """Lq ``values`` with every entry where f_y <= k replaced by the constant Lq(k)."""
    return torch.where(log_p > math.log(k), values, lq_constant(k, q))


def log_prob_of_target(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log f_y for each sample: logits (N, C), targets (N,) -> (N,), computed in float32 or wider."""
    return -F.cross_entropy(_logit_rows(logits), targets, reduction="none")


def lq_of_log_prob(log_p: torch.Tensor, q: float) -> torch.Tensor:
    """Lq from log-probabilities: (1 - p^q) / q = -expm1(q log p) / q, exact for small q."""
    return torch.expm1(log_p * q) / -q


def lq_constant(k: float, q: float) -> float:
    """Lq(k) = (1 - k^q) / q, the truncation level of the truncated loss."""
    return -math.expm1(q * math.log(k)) / q


def cce(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Categorical cross entropy -log f_y. logits (N, C), targets (N,) int64."""
    if reduction not in REDUCTIONS:
        _reduce(logits, reduction)  # raises the uniform message
    return F.cross_entropy(_float_logits(logits), targets, reduction=reduction)


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
    if weights is None:
        values = _truncated(values, log_p, q, k)
    else:
        if weights.shape != values.shape:
            raise ValueError(
                f"weights must have shape {tuple(values.shape)} (one per sample), "
                f"got {tuple(weights.shape)}"
            )
        values = weights.to(values.dtype) * (values - lq_constant(k, q))
    return _reduce(values, reduction)


@torch.no_grad()
def acs_weights(logits: torch.Tensor, targets: torch.Tensor, k: float) -> torch.Tensor:
    """The closed-form w-step of the paper: w_i = 1 iff f_{y_i}(x_i) > k, else 0.

    logits (N, C), targets (N,) -> float32 weights (N,). Apply only to training-set samples.
    """
    k = check_k(k)
    return (log_prob_of_target(logits, targets) > math.log(k)).float()


def values_of_log_prob(log_p: torch.Tensor, loss: str, *, q: float = 0.7, k: float = 0.5) -> torch.Tensor:
    """Per-entry loss values from log-probabilities of any shape, e.g. log_softmax (N, C): entry
    (i, j) is then the loss of sample i had its label been j. Truncated Lq in its truncated form.

    Elementwise the same ops as the per-sample losses.
    """
    name = canonical_loss_name(loss)
    if name == "cce":
        return -log_p
    if name == "mae":
        return 2.0 - 2.0 * log_p.exp()
    q = check_q(q)
    values = lq_of_log_prob(log_p, q)
    if name == "lq":
        return values
    return _truncated(values, log_p, q, check_k(k))


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


# --- the loss of a run, chosen once ---------------------------------------------------------
PerSampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _cce_values(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(_float_logits(logits), targets, reduction="none")


def _mae_values(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return 2.0 - 2.0 * log_prob_of_target(logits, targets).exp()


def _lq_values(logits: torch.Tensor, targets: torch.Tensor, *, q: float, shift: float) -> torch.Tensor:
    values = lq_of_log_prob(log_prob_of_target(logits, targets), q)
    return values - shift if shift else values


def criterion(loss: str, *, q: float = 0.7, k: float = 0.5) -> PerSampleLoss:
    """The named loss as a per-sample function ``fn(logits, targets) -> values``: logits (N, C)
    (any float dtype; half precision is computed in float32), targets (N,) int64, values (N,)
    float32 with autograd's gradients. The name and parameters are checked here, once, so that
    a trainer calls ``fn`` every batch without checking them again.

    loss : {"cce", "mae", "lq", "truncated_lq"} (aliases "ce", "gce"); q in (0, 1] (lq and
    truncated_lq), k in (0, 1) (truncated_lq); raises ValueError naming what is allowed.

    For truncated_lq the values are the alternative-convex-search objective's per-sample term
    Lq(f_y) - Lq(k), which the trainer multiplies by the w-step's weights (``acs_weights``; all
    1 before pruning starts): ``truncated_lq(..., weights=w, reduction="none")`` in two steps.
    """
    name = canonical_loss_name(loss)
    if name == "cce":
        return _cce_values
    if name == "mae":
        return _mae_values
    q = check_q(q)
    shift = lq_constant(check_k(k), q) if name == "truncated_lq" else 0.0
    return functools.partial(_lq_values, q=q, shift=shift)

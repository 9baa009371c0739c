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

``loss_and_grad`` gives the trainer a batch's mean loss together with its gradient with respect to
the logits, without building an autograd graph for the loss: it runs the float ops of the forward
and, in autograd's order, those of its backward, so value and gradient are bitwise the composite's,
and a step with Lq costs within a few ops of one with CCE.

Every loss takes its log-probabilities from ``class_log_softmax``: ``log_softmax`` over the class
dimension, computed on the CPU, for fewer than 16 classes, over the transposed view, where
ATen's kernel vectorises across samples (its last-dimension kernel runs a scalar exp per entry
there, about 4x slower for 10 classes; the two differ in the last bit at most).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

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


# Below this many classes the CPU log_softmax takes the transposed (samples-vectorised) kernel.
_TRANSPOSED_BELOW = 16


def _transposed(z: torch.Tensor) -> bool:
    return z.device.type == "cpu" and z.shape[-1] < _TRANSPOSED_BELOW


def class_log_softmax(z: torch.Tensor) -> torch.Tensor:
    """log_softmax over the last (class) dimension of z (..., C); see the module note on the
    CPU's transposed kernel. The result may be a transposed view."""
    if _transposed(z):
        return torch.log_softmax(z.transpose(-1, -2), dim=-2).transpose(-1, -2)
    return torch.log_softmax(z, dim=-1)


def class_softmax(z: torch.Tensor) -> torch.Tensor:
    """softmax over the last (class) dimension of z (..., C), like ``class_log_softmax``."""
    if _transposed(z):
        return torch.softmax(z.transpose(-1, -2), dim=-2).transpose(-1, -2)
    return torch.softmax(z, dim=-1)


def _class_log_softmax_backward(grad_log_p: torch.Tensor, log_p: torch.Tensor) -> torch.Tensor:
    """d loss / d z from d loss / d log_p, for log_p = class_log_softmax(z): the kernel autograd
    runs for it, on the same layout."""
    if _transposed(log_p):
        return torch._log_softmax_backward_data(
            grad_log_p.transpose(-1, -2), log_p.transpose(-1, -2), -2, log_p.dtype
        ).transpose(-1, -2)
    return torch._log_softmax_backward_data(grad_log_p, log_p, -1, log_p.dtype)


def _truncated(values: torch.Tensor, log_p: torch.Tensor, q: float, k: float) -> torch.Tensor:
    """Lq ``values`` with every entry where f_y <= k replaced by the constant Lq(k)."""
    return torch.where(log_p > math.log(k), values, torch.full_like(values, lq_constant(k, q)))


def log_prob_of_target(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log f_y for each sample: logits (N, C), targets (N,) -> (N,), computed in float32 or wider."""
    logits = _logit_rows(logits)
    # nll_loss picks -log_p at y; negated back, exactly.
    return -F.nll_loss(class_log_softmax(logits), targets, reduction="none")


def lq_of_log_prob(log_p: torch.Tensor, q: float) -> torch.Tensor:
    """Lq from log-probabilities: (1 - p^q) / q = -expm1(q log p) / q, exact for small q."""
    return torch.expm1(log_p * _const(q, log_p)) * _const(-1.0 / q, log_p)


def lq_constant(k: float, q: float) -> float:
    """Lq(k) = (1 - k^q) / q, the truncation level of the truncated loss."""
    return -math.expm1(q * math.log(k)) / q


def cce(logits: torch.Tensor, targets: torch.Tensor, reduction: str = "mean") -> torch.Tensor:
    """Categorical cross entropy -log f_y. logits (N, C), targets (N,) int64."""
    if reduction not in REDUCTIONS:
        _reduce(logits, reduction)  # raises the uniform message
    # cross_entropy's own composition (nll_loss of log_softmax), with the lab's log_softmax
    return F.nll_loss(class_log_softmax(_float_logits(logits)), targets, reduction=reduction)


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

    Elementwise the same ops as the per-sample losses, so the values are bitwise theirs.
    """
    name = canonical_loss_name(loss)
    if name == "cce":
        return -log_p
    if name == "mae":
        two = _const(2.0, log_p)
        return two - log_p.exp() * two
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


def _f32(x: float) -> float:
    """x rounded to float32, as ATen rounds a Python scalar multiplying a float32 tensor."""
    return struct.unpack("f", struct.pack("f", x))[0]


_CONSTANTS: dict[tuple[float, torch.dtype], torch.Tensor] = {}


def _const(x: float, like: torch.Tensor) -> torch.Tensor | float:
    """For a CPU tensor ``like``: x as a 0-d tensor of like's dtype, made once. An op with it
    computes what the op with the Python number x computes (ATen rounds that to the tensor's
    dtype too), without wrapping the number into a new tensor: about 1.5 us less per op on a
    small batch. On other devices, x itself (their kernels take it as an argument anyway)."""
    if like.device.type != "cpu":
        return x
    key = (x, like.dtype)
    t = _CONSTANTS.get(key)
    if t is None:
        if len(_CONSTANTS) > 4096:  # a sweep over many q: keep the table small
            _CONSTANTS.clear()
        with torch.inference_mode(False):  # made in inference mode, autograd could not save it
            t = _CONSTANTS[key] = torch.tensor(x, dtype=like.dtype)
    return t


@torch.no_grad()
def loss_and_grad(
    logits: torch.Tensor,
    targets: torch.Tensor,
    loss: str,
    *,
    q: float = 0.7,
    k: float = 0.5,
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(value, grad): the batch-mean loss, as ``loss_values(..., reduction="mean")`` gives it, and
    its gradient with respect to ``logits`` (N, C), in the logits' dtype, for
    ``logits.backward(grad)``. ``weights`` (N,) only apply to truncated_lq.

    No autograd graph is built for the loss: the forward runs the ops of the composite loss and
    the backward replays the float ops autograd runs through it (mean, the loss's chain,
    nll_loss, log_softmax), in autograd's order, so value and gradient are bitwise autograd's.
    """
    name = canonical_loss_name(loss)
    z = _logit_rows(logits)
    n = z.shape[0]
    log_p = class_log_softmax(z)
    rows = targets[:, None]
    inv_n = _f32(1.0 / n)  # mean backward: 1/N in float32 (N is exact, so one rounding)
    if name == "cce":
        value = F.nll_loss(log_p, targets)
        g = -inv_n  # the same float32 number in every row
    else:
        log_py = log_p.gather(1, rows)  # (N, 1)
        if name == "mae":
            f_y = log_py.exp()
            two = _const(2.0, f_y)
            value = (two - f_y * two).mean()
            g = f_y * _const(_f32(_f32(-inv_n) * 2.0), f_y)  # mean, rsub, mul, exp
        else:
            q = check_q(q)
            q_t = _const(q, log_py)
            e = torch.mul(log_py, q_t).expm1_()
            values = e * _const(-1.0 / q, e)
            scale = _f32(inv_n * _f32(-1.0 / q))  # mean, then mul by -1/q
            if name == "truncated_lq":
                level = lq_constant(check_k(k), q)
                if weights is None:
                    keep = log_py > math.log(k)
                    values = torch.where(keep, values, torch.full_like(values, level))
                    g = torch.where(keep, scale, 0.0)
                else:
                    if weights.shape != targets.shape:
                        raise ValueError(
                            f"weights must have shape {tuple(targets.shape)} (one per sample), "
                            f"got {tuple(weights.shape)}"
                        )
                    w = weights.to(values.dtype)[:, None]
                    values = w * (values - level)
                    g = (w * inv_n) * _f32(-1.0 / q)
                g = g * (e + 1.0)
                g = g * q
            else:  # expm1 backward, then the mul by q: three roundings, in autograd's order
                g = torch.add(e, _const(1.0, e)).mul_(_const(scale, e)).mul_(q_t)
            value = values.mean()
        # log f_y = -nll: that neg and nll_loss's own negation cancel exactly
    grad_log_p = torch.zeros_like(log_p)
    grad_log_p.scatter_(1, rows, g)  # a float, or (N, 1) like rows
    grad = _class_log_softmax_backward(grad_log_p, log_p)
    return value, grad if grad.dtype == logits.dtype else grad.to(logits.dtype)


def backward_loss(
    logits: torch.Tensor,
    targets: torch.Tensor,
    loss: str,
    *,
    q: float = 0.7,
    k: float = 0.5,
    weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """Backpropagate the batch-mean loss from ``logits`` (N, C), which must require grad, and
    return its value, detached. The gradient is the composite loss's, bit for bit: CCE through
    autograd (log_softmax and nll_loss kernels, already the cheapest), the others through
    loss_and_grad."""
    if canonical_loss_name(loss) == "cce":
        value = cce(logits, targets)
        value.backward()
        return value.detach()
    value, grad = loss_and_grad(logits, targets, loss, q=q, k=k, weights=weights)
    logits.backward(grad)
    return value


@torch.no_grad()
def stacked_loss_and_grad(
    logits: torch.Tensor,
    targets: torch.Tensor,
    losses: Sequence[tuple[str, float, float]],
    weights: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``loss_and_grad`` for K runs at once: logits (K, B, C), targets (K, B), ``losses`` K
    (name, q, k) triples, ``weights`` (K, B) (read for truncated_lq runs only).

    Returns per-run batch-mean values (K,) and the gradient (K, B, C), each run's bitwise what
    ``loss_and_grad`` gives for its slice: the row-wise kernels (log_softmax and its backward)
    run once for all runs, the per-run constants are the same float32 numbers, and runs that
    share a loss share its element-wise ops.
    """
    if logits.dim() != 3 or targets.shape != logits.shape[:2] or len(losses) != logits.shape[0]:
        raise ValueError(
            f"need logits (K, B, C), targets (K, B) and K losses, got {tuple(logits.shape)}, "
            f"{tuple(targets.shape)} and {len(losses)}"
        )
    z = _float_logits(logits)
    n_runs, n = z.shape[:2]
    log_p = class_log_softmax(z)
    rows = targets[..., None]  # (K, B, 1)
    log_py = log_p.gather(2, rows)
    inv_n = _f32(1.0 / n)
    grad_y = torch.empty_like(log_py)  # d loss / d log f_y, per run and sample
    values: list[torch.Tensor | None] = [None] * n_runs
    groups: dict[str, list[int]] = {}
    for i, (name, _, _) in enumerate(losses):
        groups.setdefault(canonical_loss_name(name), []).append(i)

    def column(numbers: list[float]) -> torch.Tensor:
        return torch.tensor(numbers, dtype=z.dtype, device=z.device)[:, None, None]

    for name, idx in groups.items():
        whole = len(idx) == n_runs
        sel = slice(None) if whole else torch.tensor(idx, device=z.device)
        if name == "cce":
            grad_y[sel] = -inv_n
            for i in idx:
                values[i] = F.nll_loss(log_p[i], targets[i])
            continue
        lpy = log_py[sel]
        if name == "mae":
            f_y = lpy.exp()
            vals = 2.0 - 2.0 * f_y
            grad_y[sel] = f_y * _f32(_f32(-inv_n) * 2.0)
        else:
            qs = [check_q(losses[i][1]) for i in idx]
            q_col = column(qs)
            e = torch.expm1(lpy * q_col)
            vals = e * column([-1.0 / q for q in qs])
            if name == "truncated_lq":
                if weights is None:
                    raise ValueError("truncated_lq runs need weights (K, B)")
                levels = column([lq_constant(check_k(losses[i][2]), q) for i, q in zip(idx, qs, strict=True)])
                w = weights[sel][..., None].to(vals.dtype)
                vals = w * (vals - levels)
                g = (w * inv_n) * column([_f32(-1.0 / q) for q in qs])
                grad_y[sel] = g * (e + 1.0) * q_col
            else:
                scale = column([_f32(inv_n * _f32(-1.0 / q)) for q in qs])
                grad_y[sel] = (e + 1.0) * scale * q_col
        for j, i in enumerate(idx):
            values[i] = vals[j].mean()
    grad_log_p = torch.zeros_like(log_p).scatter_(2, rows, grad_y)
    grad = _class_log_softmax_backward(grad_log_p, log_p)
    return torch.stack(values), grad.to(logits.dtype)

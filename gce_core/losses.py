"""The losses, each defined once as a value in a registry, computed from raw logits.

``LOSSES`` maps a name to a ``Loss``: its label, parameters (``Param``: default and allowed
range), formula, per-sample function ``values(logits (N, C), targets (N,), **params) -> (N,)``,
the citation, and where they exist its value and gradient weight as functions of f_y and its
loss-sum bounds over the c labels. ``get_loss(name)`` looks one up (aliases "gce" -> "lq",
"ce" -> "cce"); ``criterion(name, **params)`` checks the parameters once and returns the
per-sample function a trainer calls every batch. Notation: f = softmax(logits), f_y its entry
at the (noisy) label y, c the number of classes.

| name           | per-sample value                                   | from |
|----------------|----------------------------------------------------|------|
| cce            | -log f_y                                           | |
| mae            | 2 - 2 f_y (the GCE paper's scale: L1 between e_y and f) | Ghosh et al. 2017 |
| lq             | (1 - f_y^q) / q, q in (0, 1]                       | Zhang & Sabuncu 2018 |
| truncated_lq   | Lq(f_y) if f_y > k, else Lq(k)                     | Zhang & Sabuncu 2018 |
| sce            | alpha (-log f_y) + beta (-A)(1 - f_y)              | Wang et al. 2019 |
| nce_rce        | alpha NCE + beta (-A)(1 - f_y)                     | Ma et al. 2020 |
| nce_mae        | alpha NCE + beta (1 - f_y)                         | Ma et al. 2020 |
| agce           | ((a + 1)^q - (a + f_y)^q) / q                      | Zhou et al. 2021 |
| aul            | ((a - f_y)^p - (a - 1)^p) / p                      | Zhou et al. 2021 |
| bootstrap_soft | CE against beta e_y + (1 - beta) f                 | Reed et al. 2015 |
| bootstrap_hard | CE against beta e_y + (1 - beta) e_argmax(f)       | Reed et al. 2015 |

NCE = -log f_y / (-sum_j log f_j), in [0, 1]. Every loss here (``LOSS_NAMES``) is selectable in
a run spec and the CLI, with its parameters; the web lab's form offers the paper's four. Forward
correction (Patrini et al. 2017) is not here: it needs a noise transition matrix estimated from
a first network of the run, so it belongs with the trainer, not with a per-sample function.

Numerics: every value comes from ``log_softmax`` and never forms f_y = 0 where a log or a power
of it would follow. Lq is ``-expm1(q * log f_y) / q`` (the naive ``(1 - p**q) / q`` is 13% off
at q = 1e-6 in float32); 1 - f_y is ``-expm1(log f_y)``; AGCE and AUL are written with
``expm1``/``log1p`` instead of subtracting two numbers near (a +- 1)^q, which leaves only the
error of float32 ``log_softmax`` itself (5-10x below the naive form's as f_y -> 1, measured at
the ALFs settings). Half-precision logits are computed in float32. Gradients are autograd's.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

REDUCTIONS = ("mean", "sum", "none")
PerSampleLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


# --- a loss as a value --------------------------------------------------------------------------
@dataclass(frozen=True)
class Param:
    """One parameter of a loss: its default and the range it must lie in (each end open or
    closed; +-inf for none)."""

    name: str
    default: float
    low: float = -math.inf
    high: float = math.inf
    low_open: bool = True
    high_open: bool = True
    help: str = ""

    @property
    def range_text(self) -> str:
        """The range as written in errors and docs, e.g. "(0, 1]"."""
        return f"{'(' if self.low_open else '['}{self.low:g}, {self.high:g}{')' if self.high_open else ']'}"

    def contains(self, value: float) -> bool:
        above = value > self.low if self.low_open else value >= self.low
        below = value < self.high if self.high_open else value <= self.high
        return above and below  # False for NaN

    def check(self, value: float) -> float:
        """``value`` as a float, or ValueError naming the parameter, its range and the value."""
        try:
            number = float(value)
        except (TypeError, ValueError):
            raise ValueError(f"{self.name} must be a number in {self.range_text}, got {value!r}") from None
        if not self.contains(number):
            raise ValueError(f"{self.name} must be in {self.range_text}, got {number}")
        return number


@dataclass(frozen=True)
class Loss:
    """One loss, defined once.

    values : (logits (N, C), targets (N,) int64, **params) -> (N,) float32 (wider logits kept),
        with checked params; ``criterion`` checks them once and binds them.
    of_fy, grad_weight : (f_y tensor or float, **params) -> tensor, for losses that depend on
        f_y alone: the value, and the weight on CCE's gradient with respect to the logits
        (d loss / d logits = grad_weight * d CCE / d logits; f_y^q for Lq). None otherwise.
    sum_bounds : (c, **params) -> (lower, upper) of the loss summed over all c labels, for
        every output f; a symmetric loss's function returns the one value its sum always
        takes. None where no bound is given.
    per_sample_state : the loss needs state per training sample (truncated Lq's ACS weights).
    """

    name: str
    label: str
    formula: str
    values: Callable[..., torch.Tensor]
    citation: str
    params: tuple[Param, ...] = ()
    of_fy: Callable[..., torch.Tensor] | None = None
    grad_weight: Callable[..., torch.Tensor] | None = None
    sum_bounds: Callable[..., tuple[float, float] | float] | None = None
    per_sample_state: bool = False
    aliases: tuple[str, ...] = ()

    @property
    def defaults(self) -> dict[str, float]:
        return {p.name: p.default for p in self.params}

    def check_params(self, **given: float) -> dict[str, float]:
        """Every parameter of the loss, from ``given`` or its default, checked against its range.

        Raises ValueError with one line naming the parameter, its range and the value given, or
        naming a parameter this loss does not take.
        """
        known = {p.name: p for p in self.params}
        for name in given:
            if name not in known:
                takes = f"takes {', '.join(known)}" if known else "takes no parameters"
                raise ValueError(f"{self.name} {takes}; got unknown parameter {name!r}")
        return {name: p.check(given[name]) if name in given else p.default for name, p in known.items()}

    def sum_band(self, num_classes: int, **params: float) -> tuple[float, float] | None:
        """(lower, upper) of the loss summed over all ``num_classes`` labels (an integer >= 2),
        lower == upper for a symmetric loss; None where the registry gives no bound."""
        if self.sum_bounds is None:
            return None
        band = self.sum_bounds(num_classes, **self.check_params(**params))
        return band if isinstance(band, tuple) else (float(band), float(band))


# --- numerics shared by the losses --------------------------------------------------------------
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


def _log_softmax(logits: torch.Tensor) -> torch.Tensor:
    return torch.log_softmax(_logit_rows(logits), dim=1)


def _pick(log_p: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Entry ``index[i]`` of row i: (N, C), (N,) -> (N,)."""
    return log_p.gather(1, index[:, None]).squeeze(1)


def _as_fy(f_y) -> torch.Tensor:
    """f_y for ``of_fy``/``grad_weight``: a tensor kept as it is, anything else as float64."""
    return f_y if isinstance(f_y, torch.Tensor) else torch.as_tensor(f_y, dtype=torch.float64)


def _one_minus(log_p: torch.Tensor) -> torch.Tensor:
    """1 - p from log p, exact as p -> 1."""
    return -torch.expm1(log_p)


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


def _agce_of_log(log_p: torch.Tensor, a: float, q: float) -> torch.Tensor:
    # ((a+1)^q - (a+p)^q) / q = -(a+1)^q expm1(q log1p((p-1)/(a+1))) / q
    return (a + 1.0) ** q * -torch.expm1(q * torch.log1p(torch.expm1(log_p) / (a + 1.0))) / q


def _aul_of_log(log_p: torch.Tensor, a: float, p: float) -> torch.Tensor:
    # ((a-f)^p - (a-1)^p) / p = (a-1)^p expm1(p log1p((1-f)/(a-1))) / p
    return (a - 1.0) ** p * torch.expm1(p * torch.log1p(_one_minus(log_p) / (a - 1.0))) / p


# --- the GCE paper's losses as named functions (a reduction, the ACS weights) ----------------------
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
    loss : one of ``LOG_PROB_LOSS_NAMES`` (they depend on f_y alone).

    Elementwise the same ops as the per-sample losses.
    """
    name = _log_prob_loss(loss)
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
    """Dispatch to the named loss (one of ``LOG_PROB_LOSS_NAMES``; ``criterion`` takes every
    loss). ``weights`` only apply to truncated_lq."""
    name = _log_prob_loss(loss)
    if name == "cce":
        return cce(logits, targets, reduction)
    if name == "mae":
        return mae(logits, targets, reduction)
    if name == "lq":
        return lq(logits, targets, q, reduction)
    return truncated_lq(logits, targets, q, k, weights, reduction)


# --- per-sample values: (logits, targets, **checked params) -> (N,) -------------------------------
def _cce_values(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return F.cross_entropy(_float_logits(logits), targets, reduction="none")


def _mae_values(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    return 2.0 - 2.0 * log_prob_of_target(logits, targets).exp()


def _lq_values(logits: torch.Tensor, targets: torch.Tensor, *, q: float) -> torch.Tensor:
    return lq_of_log_prob(log_prob_of_target(logits, targets), q)


def _truncated_lq_values(logits: torch.Tensor, targets: torch.Tensor, *, q: float, k: float) -> torch.Tensor:
    # The ACS term Lq(f_y) - Lq(k); the trainer multiplies it by the w-step's weights.
    return _lq_values(logits, targets, q=q) - lq_constant(k, q)


def _sce_values(logits: torch.Tensor, targets: torch.Tensor, *, alpha: float, beta: float, A: float) -> torch.Tensor:
    """Symmetric cross entropy (Wang et al., ICCV 2019): alpha CE + beta RCE, where
    RCE = -sum_k f_k log e_y,k with log 0 := A, i.e. RCE = -A (1 - f_y)."""
    log_fy = log_prob_of_target(logits, targets)
    return alpha * -log_fy + beta * -A * _one_minus(log_fy)


def _nce_rce_values(logits: torch.Tensor, targets: torch.Tensor, *, alpha: float, beta: float, A: float) -> torch.Tensor:
    """Active-passive NCE+RCE (Ma et al., ICML 2020): alpha NCE + beta RCE, RCE = -A (1 - f_y)
    as in SCE, NCE = log f_y / sum_j log f_j (the sum is at most log(1/2) < 0 for c >= 2)."""
    log_p = _log_softmax(logits)
    log_fy = _pick(log_p, targets)
    return alpha * log_fy / log_p.sum(dim=1) + beta * -A * _one_minus(log_fy)


def _nce_mae_values(logits: torch.Tensor, targets: torch.Tensor, *, alpha: float, beta: float) -> torch.Tensor:
    """Active-passive NCE+MAE (Ma et al., ICML 2020): alpha NCE + beta (1 - f_y). The passive
    MAE is the APL code's "reduced" 1 - f_y (scale 1), half of the GCE paper's 2 - 2 f_y."""
    log_p = _log_softmax(logits)
    log_fy = _pick(log_p, targets)
    return alpha * log_fy / log_p.sum(dim=1) + beta * _one_minus(log_fy)


def _agce_values(logits: torch.Tensor, targets: torch.Tensor, *, a: float, q: float) -> torch.Tensor:
    """Asymmetric generalized cross entropy (Zhou et al., ICML 2021): ((a+1)^q - (a+f_y)^q) / q."""
    return _agce_of_log(log_prob_of_target(logits, targets), a, q)


def _aul_values(logits: torch.Tensor, targets: torch.Tensor, *, a: float, p: float) -> torch.Tensor:
    """Asymmetric unhinged loss (Zhou et al., ICML 2021): ((a-f_y)^p - (a-1)^p) / p."""
    return _aul_of_log(log_prob_of_target(logits, targets), a, p)


def _bootstrap_soft_values(logits: torch.Tensor, targets: torch.Tensor, *, beta: float) -> torch.Tensor:
    """Soft bootstrapping (Reed et al., ICLR 2015 workshop): CE against beta e_y + (1-beta) f.

    The model's own f enters the target detached, as a pseudo-label, as in the common PyTorch
    reference (vfdev-5/BootstrappingLoss, ``as_pseudo_label=True`` by default). Reed et al.'s
    reading as entropy regularisation, and the SCE repository's Keras ``boot_soft``, keep the
    gradient through f instead: the values agree, the gradients differ.
    """
    log_p = _log_softmax(logits)
    p = log_p.detach().exp()
    return -(beta * _pick(log_p, targets) + (1.0 - beta) * (p * log_p).sum(dim=1))


def _bootstrap_hard_values(logits: torch.Tensor, targets: torch.Tensor, *, beta: float) -> torch.Tensor:
    """Hard bootstrapping (Reed et al., ICLR 2015 workshop): CE against
    beta e_y + (1-beta) e_z, z = argmax f (a constant: argmax has no gradient)."""
    log_p = _log_softmax(logits)
    z = log_p.detach().argmax(dim=1)
    return -(beta * _pick(log_p, targets) + (1.0 - beta) * _pick(log_p, z))


# --- loss sums over the c labels ------------------------------------------------------------------
def _cce_band(c: int) -> tuple[float, float]:
    return c * math.log(c), math.inf  # minimum at the uniform output


def _lq_band(c: int, *, q: float) -> tuple[float, float]:
    return (c - c ** (1.0 - q)) / q, (c - 1) / q  # uniform output, one-hot output


def _truncated_lq_band(c: int, *, q: float, k: float) -> tuple[float, float]:
    if k < 1.0 / c:
        raise ValueError(f"the truncated band needs k >= 1/c = {1.0 / c:.4g}, got k = {k}")
    level = lq_constant(k, q)
    d = max(1.0, (1.0 - q) ** (1.0 / q) / k)
    lower = d * ((1.0 - (1.0 / d) ** q) / q) + (c - d) * level
    return lower, c * level


def _sce_band(c: int, *, alpha: float, beta: float, A: float) -> tuple[float, float]:
    rce = beta * -A * (c - 1)  # RCE is symmetric; the CE part is lowest at the uniform output
    return alpha * c * math.log(c) + rce, math.inf if alpha > 0 else rce


def _ends(uniform: float, one_hot: float) -> tuple[float, float]:
    return min(uniform, one_hot), max(uniform, one_hot)


def _agce_band(c: int, *, a: float, q: float) -> tuple[float, float]:
    # sum_j (a + f_j)^q is concave (q <= 1) or convex (q >= 1) in f: its extremes over the
    # simplex are the uniform output and a one-hot output.
    top = (a + 1.0) ** q
    return _ends(c * (top - (a + 1.0 / c) ** q) / q, (c - 1) * (top - a**q) / q)


def _aul_band(c: int, *, a: float, p: float) -> tuple[float, float]:
    low = (a - 1.0) ** p  # extremes at the uniform and a one-hot output, as for AGCE
    return _ends(c * ((a - 1.0 / c) ** p - low) / p, (c - 1) * (a**p - low) / p)


# --- the registry ---------------------------------------------------------------------------------
_GCE = "Zhang & Sabuncu, Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels, NeurIPS 2018"
_APL = "Ma et al., Normalized Loss Functions for Deep Learning with Noisy Labels, ICML 2020 (HanxunH/Active-Passive-Losses)"
_ALF = "Zhou et al., Asymmetric Loss Functions for Learning with Noisy Labels, ICML 2021 (hitcszx/ALFs)"
_BOOT = "Reed et al., Training Deep Neural Networks on Noisy Labels with Bootstrapping, ICLR 2015 workshop"

_Q = Param("q", 0.7, 0.0, 1.0, high_open=False, help="Lq exponent: q -> 0 is CCE, q = 1 is 1 - f_y (the paper uses 0.7)")
_K = Param("k", 0.5, 0.0, 1.0, help="truncation threshold: samples with f_y <= k are pruned (the paper uses 0.5)")
_A = Param("A", -4.0, high=0.0, help="log 0 in RCE (the SCE paper's -4; the reference code's clamp gives ln 1e-4 = -9.21)")


def _weights(alpha: float, beta: float, active: str, passive: str) -> tuple[Param, Param]:
    return (Param("alpha", alpha, 0.0, low_open=False, help=f"weight of {active}"),
            Param("beta", beta, 0.0, low_open=False, help=f"weight of {passive}"))


def _boot_beta(default: float) -> Param:
    return Param("beta", default, 0.0, 1.0, low_open=False, high_open=False,
                 help="weight of the given label; 1 - beta goes to the model's own prediction")


def _log(f: torch.Tensor) -> torch.Tensor:
    return torch.log(_as_fy(f))


_REGISTRY = (
    Loss(
        "cce", "CCE", "-log f_y", _cce_values, "the usual cross entropy", aliases=("ce",),
        of_fy=lambda f: -_log(f), grad_weight=lambda f: torch.ones_like(_as_fy(f)),
        sum_bounds=_cce_band,
    ),
    Loss(
        "mae", "MAE", "2 - 2 f_y (paper scale)", _mae_values,
        "Ghosh et al., Robust Loss Functions under Label Noise for Deep Neural Networks, AAAI 2017; "
        "scale 2 - 2 f_y as in " + _GCE,
        of_fy=lambda f: 2.0 - 2.0 * _as_fy(f), grad_weight=lambda f: 2.0 * _as_fy(f),
        sum_bounds=lambda c: 2.0 * (c - 1),
    ),
    Loss(
        "lq", "Lq (GCE)", "(1 - f_y^q) / q", _lq_values, _GCE, params=(_Q,), aliases=("gce",),
        of_fy=lambda f, q: lq_of_log_prob(_log(f), q), grad_weight=lambda f, q: _as_fy(f) ** q,
        sum_bounds=_lq_band,
    ),
    Loss(
        "truncated_lq", "truncated Lq",
        "Lq(f_y) if f_y > k else Lq(k); optimised by alternative convex search",
        _truncated_lq_values, _GCE, params=(_Q, _K), per_sample_state=True,
        of_fy=lambda f, q, k: _truncated(lq_of_log_prob(_log(f), q), _log(f), q, k),
        grad_weight=lambda f, q, k: torch.where(_as_fy(f) > k, _as_fy(f) ** q, 0.0),
        sum_bounds=_truncated_lq_band,
    ),
    Loss(
        "sce", "SCE", "alpha (-log f_y) + beta (-A)(1 - f_y)", _sce_values,
        "Wang et al., Symmetric Cross Entropy for Robust Learning with Noisy Labels, ICCV 2019 "
        "(YisenWang/symmetric_cross_entropy_for_noisy_labels)",
        params=(*_weights(0.1, 1.0, "CE", "RCE"), _A),
        of_fy=lambda f, alpha, beta, A: alpha * -_log(f) + beta * -A * (1.0 - _as_fy(f)),
        grad_weight=lambda f, alpha, beta, A: alpha + beta * -A * _as_fy(f),
        sum_bounds=_sce_band,
    ),
    Loss(
        "nce_rce", "NCE+RCE", "alpha log f_y / sum_j log f_j + beta (-A)(1 - f_y)", _nce_rce_values,
        _APL, params=(*_weights(1.0, 1.0, "NCE", "RCE"), _A),
        sum_bounds=lambda c, alpha, beta, A: alpha + beta * -A * (c - 1),
    ),
    Loss(
        "nce_mae", "NCE+MAE", "alpha log f_y / sum_j log f_j + beta (1 - f_y)", _nce_mae_values,
        _APL, params=_weights(1.0, 1.0, "NCE", "MAE (APL's 1 - f_y)"),
        sum_bounds=lambda c, alpha, beta: alpha + beta * (c - 1),
    ),
    Loss(
        "agce", "AGCE", "((a + 1)^q - (a + f_y)^q) / q", _agce_values, _ALF,
        params=(Param("a", 0.6, 0.0, help="offset a > 0 (ALFs CIFAR-10: 0.6)"),
                Param("q", 0.6, 0.0, help="exponent q > 0 (ALFs CIFAR-10: 0.6)")),
        of_fy=lambda f, a, q: _agce_of_log(_log(f), a, q),
        grad_weight=lambda f, a, q: _as_fy(f) * (a + _as_fy(f)) ** (q - 1.0),
        sum_bounds=_agce_band,
    ),
    Loss(
        "aul", "AUL", "((a - f_y)^p - (a - 1)^p) / p", _aul_values, _ALF,
        params=(Param("a", 5.5, 1.0, help="offset a > 1 (ALFs CIFAR-10: 5.5)"),
                Param("p", 3.0, 0.0, help="exponent p > 0 (ALFs CIFAR-10: 3; the code calls it q)")),
        of_fy=lambda f, a, p: _aul_of_log(_log(f), a, p),
        grad_weight=lambda f, a, p: _as_fy(f) * (a - _as_fy(f)) ** (p - 1.0),
        sum_bounds=_aul_band,
    ),
    Loss(
        "bootstrap_soft", "bootstrapping (soft)", "CE against beta e_y + (1 - beta) f (f detached)",
        _bootstrap_soft_values, _BOOT, params=(_boot_beta(0.95),),
    ),
    Loss(
        "bootstrap_hard", "bootstrapping (hard)", "CE against beta e_y + (1 - beta) e_argmax f",
        _bootstrap_hard_values, _BOOT, params=(_boot_beta(0.8),),
    ),
)

LOSSES: dict[str, Loss] = {loss.name: loss for loss in _REGISTRY}
LOSS_NAMES = tuple(LOSSES)
# The losses that depend on f_y alone and have the named functions above (loss_values,
# values_of_log_prob): the GCE paper's four.
LOG_PROB_LOSS_NAMES = ("cce", "mae", "lq", "truncated_lq")
LOSS_ALIASES = {alias: loss.name for loss in _REGISTRY for alias in loss.aliases}
LOSS_FORMULAS = {name: loss.formula for name, loss in LOSSES.items()}
_PARAM_NAMES = frozenset(p.name for loss in _REGISTRY for p in loss.params)


def get_loss(name: str) -> Loss:
    """The registry's loss for ``name`` (any of ``LOSSES``, or an alias: "gce" -> "lq",
    "ce" -> "cce"; case and surrounding spaces ignored). Raises ValueError listing every name."""
    key = str(name).strip().lower()
    key = LOSS_ALIASES.get(key, key)
    if key not in LOSSES:
        raise ValueError(f"unknown loss {name!r}; allowed: {', '.join((*LOSSES, *LOSS_ALIASES))}")
    return LOSSES[key]


def canonical_loss_name(name: str) -> str:
    """Map a user-facing name of a loss (``LOSS_NAMES``; aliases 'gce' -> 'lq', 'ce' -> 'cce')
    to its canonical name. Raises ValueError listing the allowed names.
    """
    return get_loss(name).name


def _log_prob_loss(loss: str) -> str:
    name = canonical_loss_name(loss)
    if name not in LOG_PROB_LOSS_NAMES:
        raise ValueError(f"{name} is not one of {', '.join(LOG_PROB_LOSS_NAMES)}; use criterion({name!r}, ...)")
    return name


def check_q(q: float) -> float:
    """Return q as float, or raise ValueError if q is outside (0, 1] (Lq's ``q``)."""
    return _Q.check(q)


def check_k(k: float) -> float:
    """Return k as float, or raise ValueError if k is outside (0, 1) (truncated Lq's ``k``)."""
    return _K.check(k)


def criterion(loss: str, **params: float) -> PerSampleLoss:
    """The named loss as a per-sample function ``fn(logits, targets) -> values``: logits (N, C)
    (any float dtype; half precision is computed in float32), targets (N,) int64, values (N,)
    float32 with autograd's gradients. The name and parameters are checked here, once, so that
    a trainer calls ``fn`` every batch without checking them again.

    loss : any name of ``LOSSES`` or an alias ("ce", "gce"). params : the loss's own (missing
    ones take their defaults); a parameter of another loss is ignored, so that a caller can pass
    a run's q and k to every loss; a name no loss takes is an error. Raises ValueError naming
    what is allowed.

    For truncated_lq the values are the alternative-convex-search objective's per-sample term
    Lq(f_y) - Lq(k), which the trainer multiplies by the w-step's weights (``acs_weights``; all
    1 before pruning starts): ``truncated_lq(..., weights=w, reduction="none")`` in two steps.
    """
    spec = get_loss(loss)
    own = {p.name for p in spec.params}
    for name in params:
        if name not in _PARAM_NAMES:
            spec.check_params(**{name: params[name]})  # raises: no loss takes it
    checked = spec.check_params(**{n: v for n, v in params.items() if n in own})
    return functools.partial(spec.values, **checked) if checked else spec.values

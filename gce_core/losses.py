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

| forward        | -log (f T)_y, T the noise's transition matrix      | Patrini et al. 2017 |
| forward_est    | CCE, then -log (f T_est)_y with T estimated on the run | Patrini et al. 2017 |

NCE = -log f_y / (-sum_j log f_j), in [0, 1]. The paper's four are defined here; the later
losses in ``gce_core.loss_zoo``, registered into the same registry (``register``) when this
module is imported. Every loss (``LOSS_NAMES``) is selectable in a run spec and the CLI, with its
parameters.

A loss that needs state of its run gets it through one hook, ``Loss.make_state(run, params) ->
LossState``: the trainer builds it once per run from a ``RunContext`` (the training tensors, the
spec and its noise, a function giving the training set's logits under a model), asks it for
every batch's per-sample values, calls it before and after every epoch, puts its ``row()`` into
the epoch's metrics row and its ``state_dict()`` into every checkpoint. Truncated Lq's ACS w-step
(``AcsState``) and forward correction's transition matrix (``gce_core.loss_zoo``) are such
states; the other losses are stateless (``LossState`` around ``criterion``).

Numerics: every value comes from ``log_softmax`` and never forms f_y = 0 where a log or a power
of it would follow. Lq is ``-expm1(q * log f_y) / q`` (the naive ``(1 - p**q) / q`` is 13% off
at q = 1e-6 in float32); 1 - f_y is ``-expm1(log f_y)``. Half-precision logits are computed in float32. Gradients are autograd's.
"""

from __future__ import annotations

import copy
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

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
    make_state : (run: RunContext, params: checked dict) -> LossState, for a loss that needs
        state of its run (truncated Lq's ACS weights, forward correction's T); None for a
        stateless loss (the trainer then wraps ``criterion`` in a plain ``LossState``).
    needs_run : why ``values`` cannot be computed from logits and targets alone (forward
        correction: "needs its run's transition matrix"); "" when it can. ``criterion`` refuses
        such a loss with this reason.
    risk_bound : (c, rate, **params) -> the paper's bound on the excess risk R_eta(f*) - R_eta(f_hat)
        under uniform noise of ``rate`` < 1 - 1/c (Lq's Theorem); None for the other losses.
    check_run : (spec) -> (field, message) when the rest of a valid run spec does not suit the
        loss (truncated Lq must prune within the run, forward_est needs two epochs or more), else
        None; the spec calls it once, at validation, and reports the message on that field.
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
    make_state: Callable[[RunContext, dict[str, float]], LossState] | None = None
    needs_run: str = ""
    check_run: Callable[[Any], tuple[str, str] | None] | None = None
    aliases: tuple[str, ...] = ()
    short: str = ""  # the label in legends and group names, where it differs from ``label``
    risk_bound: Callable[..., float] | None = None  # (c, rate, **params) -> excess-risk bound under uniform noise

    @property
    def short_label(self) -> str:
        return self.short or self.label

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


# --- per-run state of a loss -----------------------------------------------------------------------
@dataclass(frozen=True)
class RunContext:
    """What a loss's per-run state may see of its run; the trainer builds it once per run.

    spec : the run's RunSpec (its noise, schedule fields such as prune_start, epochs).
    x_train, y_train, is_noisy : the training tensors on the run's device (noisy labels; which
        samples were flipped, for metrics only: a loss must not train on it).
    num_classes : c.
    predict : model -> logits (N, C) float32 of the whole training set, in eval mode, without
        augmentation (the trainer's ``predict_logits``).
    """

    spec: Any
    x_train: torch.Tensor
    y_train: torch.Tensor
    is_noisy: torch.Tensor
    num_classes: int
    predict: Callable[[torch.nn.Module], torch.Tensor]

    @property
    def n_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def device(self) -> torch.device:
        return self.y_train.device


class LossState:
    """A run's loss as the trainer uses it: per batch, ``self(logits, targets, index)`` gives the
    per-sample values (index: the batch's training indices); ``start_epoch(epoch, model)`` runs
    before training epoch ``epoch`` (1-based) and ``end_epoch(improved, model)`` after it
    (improved: its validation accuracy is the best so far); ``row()`` adds values to the epoch's
    metrics row; ``sum_values`` is the per-sample function the loss-sum metric uses when the
    registry's function of the loss's name would not do (None: by name); ``state_dict`` /
    ``load_state_dict`` round-trip through a checkpoint, so a resumed run goes on exactly.

    This base is the stateless loss: ``values`` (``criterion``'s function) every batch, nothing
    else.
    """

    sum_values: PerSampleLoss | None = None

    def __init__(self, values: PerSampleLoss):
        self.values = values

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
        return self.values(logits, targets)

    def start_epoch(self, epoch: int, model: torch.nn.Module) -> None:
        return None

    def end_epoch(self, improved: bool, model: torch.nn.Module) -> None:
        return None

    def row(self) -> dict[str, Any]:
        return {}

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, saved: dict[str, Any]) -> None:
        return None


class BestModel:
    """The model's weights at the best validation epoch so far (a copy, on the model's device)."""

    def __init__(self) -> None:
        self.weights: dict | None = None

    def update(self, improved: bool, model: torch.nn.Module) -> None:
        if improved:
            self.weights = {k: v.detach().clone() for k, v in model.state_dict().items()}

    def model(self, current: torch.nn.Module) -> torch.nn.Module:
        """A copy of ``current`` holding the best weights, or ``current`` itself before any."""
        if self.weights is None:
            return current
        best = copy.deepcopy(current)
        best.load_state_dict(self.weights)
        return best


def make_loss_state(loss: str, run: RunContext, **params: float) -> LossState:
    """The run's loss state: the registry's ``make_state`` for a loss with state, else the
    stateless ``LossState`` around ``criterion``. ``params`` as for ``criterion``."""
    spec = get_loss(loss)
    if spec.make_state is None:
        return LossState(criterion(spec.name, **params))
    own = {p.name for p in spec.params}
    return spec.make_state(run, spec.check_params(**{n: v for n, v in params.items() if n in own}))


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


def _lq_risk_bound(c: int, rate: float, *, q: float) -> float:
    """A = eta (c^(1-q) - 1) / (q (c - 1)): the paper's bound on Lq's excess risk under uniform
    noise of rate eta < 1 - 1/c. Zero at q = 1 (noise tolerant)."""
    return rate * (c ** (1.0 - q) - 1.0) / (q * (c - 1))


def lq_constant(k: float, q: float) -> float:
    """Lq(k) = (1 - k^q) / q, the truncation level of the truncated loss."""
    return -math.expm1(q * math.log(k)) / q


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


# --- truncated Lq's per-run state: the ACS w-step -------------------------------------------------
def is_prune_epoch(spec: Any, epoch: int) -> bool:
    """Truncated Lq prunes at spec.prune_start, then every spec.prune_every epochs (1-based)."""
    return epoch >= spec.prune_start and (epoch - spec.prune_start) % spec.prune_every == 0


def pruning_quality(weights: torch.Tensor, is_noisy: torch.Tensor) -> tuple[float, float]:
    """(precision, recall) of pruning as a noise detector: pruned = weight 0.

    precision = share of pruned samples that are really noisy; recall = share of noisy
    samples that were pruned. NaN where undefined.
    """
    pruned = weights <= 0
    hits = float((pruned & is_noisy).sum())
    n_pruned, n_noisy = float(pruned.sum()), float(is_noisy.sum())
    return (hits / n_pruned if n_pruned else math.nan, hits / n_noisy if n_noisy else math.nan)


def _check_prune_start(spec: Any) -> tuple[str, str] | None:
    if spec.prune_start <= spec.epochs:
        return None
    return ("prune_start", f"truncated Lq prunes from epoch {spec.prune_start}, but the run has {spec.epochs} "
            f"epochs: it would train as plain Lq; set prune_start to at most {spec.epochs} (the paper prunes "
            "from a third of the run, 40 of 120 epochs on CIFAR-10), or choose loss lq")


class AcsState(LossState):
    """Truncated Lq's alternative convex search (the paper's Algorithm 1).

    Every batch: the ACS term Lq(f_y) - Lq(k) times the weight w_i of each training index (all 1
    until the first w-step). Before a prune epoch (``is_prune_epoch``): the w-step, w_i = 1 iff
    f_{y_i} > k, with f computed on the whole training set (no augmentation) by the model of the
    best validation epoch so far. The weights belong to training indices only; validation and
    test data never get one. Rows report kept, prune_precision and prune_recall.
    """

    def __init__(self, run: RunContext, q: float, k: float):
        super().__init__(functools.partial(_truncated_lq_values, q=q, k=k))
        self.run, self.k = run, k
        self.weights = torch.ones(run.n_train, device=run.device)
        self.best = BestModel()

    def __call__(self, logits, targets, index):
        return self.values(logits, targets) * self.weights[index]

    def start_epoch(self, epoch, model):
        if is_prune_epoch(self.run.spec, epoch):
            logits = self.run.predict(self.best.model(model))
            self.weights = acs_weights(logits, self.run.y_train, self.k)

    def end_epoch(self, improved, model):
        self.best.update(improved, model)

    def row(self):
        precision, recall = pruning_quality(self.weights, self.run.is_noisy)
        return {"kept": int(self.weights.sum()), "prune_precision": precision, "prune_recall": recall}

    def state_dict(self):
        return {"weights": self.weights.cpu(), "best_model": self.best.weights}

    def load_state_dict(self, saved):
        self.weights = saved["weights"].to(self.run.device)
        self.best.weights = saved["best_model"]


# --- the registry ---------------------------------------------------------------------------------
_GCE = "Zhang & Sabuncu, Generalized Cross Entropy Loss for Training Deep Neural Networks with Noisy Labels, NeurIPS 2018"

_Q = Param("q", 0.7, 0.0, 1.0, high_open=False, help="Lq exponent: q -> 0 is CCE, q = 1 is 1 - f_y (the paper uses 0.7)")
_K = Param("k", 0.5, 0.0, 1.0, help="truncation threshold: samples with f_y <= k are pruned (the paper uses 0.5)")


def _log(f: torch.Tensor) -> torch.Tensor:
    return torch.log(_as_fy(f))


LOSSES: dict[str, Loss] = {}
LOSS_NAMES: tuple[str, ...] = ()
LOSS_ALIASES: dict[str, str] = {}
LOSS_FORMULAS: dict[str, str] = {}
_PARAM_NAMES: frozenset[str] = frozenset()
# The losses that depend on f_y alone and have the named functions above (loss_values,
# values_of_log_prob): the GCE paper's four.
LOG_PROB_LOSS_NAMES = ("cce", "mae", "lq", "truncated_lq")


def register(*losses: Loss) -> None:
    """Add losses to the registry (in this order, after those there); the name lists follow."""
    global LOSS_NAMES, LOSS_ALIASES, LOSS_FORMULAS, _PARAM_NAMES
    for loss in losses:
        taken = {*LOSSES, *LOSS_ALIASES}
        if loss.name in taken or taken & set(loss.aliases):
            raise ValueError(f"a loss named {loss.name!r} (or one of its aliases) is already registered")
        LOSSES[loss.name] = loss
    LOSS_NAMES = tuple(LOSSES)
    LOSS_ALIASES = {alias: loss.name for loss in LOSSES.values() for alias in loss.aliases}
    LOSS_FORMULAS = {name: loss.formula for name, loss in LOSSES.items()}
    _PARAM_NAMES = frozenset(p.name for loss in LOSSES.values() for p in loss.params)


register(
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
        "lq", "Lq (GCE)", "(1 - f_y^q) / q", _lq_values, _GCE, params=(_Q,), aliases=("gce",), short="Lq",
        risk_bound=_lq_risk_bound,
        of_fy=lambda f, q: lq_of_log_prob(_log(f), q), grad_weight=lambda f, q: _as_fy(f) ** q,
        sum_bounds=_lq_band,
    ),
    Loss(
        "truncated_lq", "truncated Lq",
        "Lq(f_y) if f_y > k else Lq(k); optimised by alternative convex search",
        _truncated_lq_values, _GCE, params=(_Q, _K),
        make_state=lambda run, params: AcsState(run, **params), check_run=_check_prune_start,
        of_fy=lambda f, q, k: _truncated(lq_of_log_prob(_log(f), q), _log(f), q, k),
        grad_weight=lambda f, q, k: torch.where(_as_fy(f) > k, _as_fy(f) ** q, 0.0),
        sum_bounds=_truncated_lq_band,
    ),
)


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
    if spec.needs_run:
        raise ValueError(f"{spec.name} {spec.needs_run}: it is computed per run (make_loss_state), "
                         f"not by criterion")
    own = {p.name for p in spec.params}
    for name in params:
        if name not in _PARAM_NAMES:
            spec.check_params(**{name: params[name]})  # raises: no loss takes it
    checked = spec.check_params(**{n: v for n, v in params.items() if n in own})
    return functools.partial(spec.values, **checked) if checked else spec.values


# The later losses (SCE, APL, AGCE/AUL, bootstrapping, forward correction) register themselves.
from gce_core import loss_zoo  # noqa: E402, F401

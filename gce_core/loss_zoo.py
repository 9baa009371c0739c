"""The losses people compare GCE with, registered into ``gce_core.losses``' registry.

The GCE paper's four (CCE, MAE, Lq, truncated Lq) and the registry itself live in
``gce_core.losses``; this module defines the later ones and registers them there, so that
importing either module gives the whole registry (``gce_core.losses`` imports this one last).
See the table in ``gce_core.losses`` for every loss's value; the citations are on each entry.

Forward correction (Patrini et al., CVPR 2017, "Making deep neural networks robust to label
noise: a loss correction approach") is the one loss here with per-run state: its transition
matrix T (``ForwardState``: the noise's own; ``ForwardEstState``: estimated during the run).

Numerics: AGCE and AUL are written with ``expm1``/``log1p`` instead of subtracting two numbers
near (a +- 1)^q, which leaves only the error of float32 ``log_softmax`` itself (5-10x below the
naive form's as f_y -> 1, measured at the ALFs settings). Forward correction's log (f T)_y is a
``logsumexp`` of log f_i + log T_iy, finite wherever column y of T is not all zero.
"""

from __future__ import annotations

import functools
import math

import torch

from gce_core.losses import (
    BestModel,
    Loss,
    LossState,
    Param,
    RunContext,
    _as_fy,
    _cce_values,
    _log,
    _log_softmax,
    _one_minus,
    _pick,
    log_prob_of_target,
    register,
)
from gce_core.noise import expected_transition

_APL = "Ma et al., Normalized Loss Functions for Deep Learning with Noisy Labels, ICML 2020 (HanxunH/Active-Passive-Losses)"
_ALF = "Zhou et al., Asymmetric Loss Functions for Learning with Noisy Labels, ICML 2021 (hitcszx/ALFs)"
_BOOT = "Reed et al., Training Deep Neural Networks on Noisy Labels with Bootstrapping, ICLR 2015 workshop"
_FWD = ("Patrini et al., Making Deep Neural Networks Robust to Label Noise: a Loss Correction Approach, "
        "CVPR 2017 (giorgiop/loss-correction)")

_A = Param("A", -4.0, high=0.0, help="log 0 in RCE (the SCE paper's -4; the reference code's clamp gives ln 1e-4 = -9.21)")


def _weights(alpha: float, beta: float, active: str, passive: str) -> tuple[Param, Param]:
    return (Param("alpha", alpha, 0.0, low_open=False, help=f"weight of {active}"),
            Param("beta", beta, 0.0, low_open=False, help=f"weight of {passive}"))


def _boot_beta(default: float) -> Param:
    return Param("beta", default, 0.0, 1.0, low_open=False, high_open=False,
                 help="weight of the given label; 1 - beta goes to the model's own prediction")


# --- numerics ---------------------------------------------------------------------------------
def _agce_of_log(log_p: torch.Tensor, a: float, q: float) -> torch.Tensor:
    # ((a+1)^q - (a+p)^q) / q = -(a+1)^q expm1(q log1p((p-1)/(a+1))) / q
    return (a + 1.0) ** q * -torch.expm1(q * torch.log1p(torch.expm1(log_p) / (a + 1.0))) / q


def _aul_of_log(log_p: torch.Tensor, a: float, p: float) -> torch.Tensor:
    # ((a-f)^p - (a-1)^p) / p = (a-1)^p expm1(p log1p((1-f)/(a-1))) / p
    return (a - 1.0) ** p * torch.expm1(p * torch.log1p(_one_minus(log_p) / (a - 1.0))) / p


# --- per-sample values: (logits, targets, **checked params) -> (N,) ------------------------------
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


# --- forward correction -------------------------------------------------------------------------
ESTIMATOR_PERCENTILE = 97.0  # Patrini et al.'s filter_outlier, used on every data set but CIFAR-100


def forward_values(logits: torch.Tensor, targets: torch.Tensor, transition: torch.Tensor) -> torch.Tensor:
    """Forward-corrected cross entropy (Patrini et al. 2017): -log (f T)_y, f = softmax(logits).

    logits (N, C), targets (N,) int64 (the noisy labels), transition (C, C) row-stochastic,
    T[i, j] = P(noisy j | true i), so (f T)_j is the model's probability of the NOISY label j.
    Computed as -logsumexp_i(log f_i + log T[i, y]): no f_y = 0 is formed, a zero entry of T is
    a -inf term with no gradient. T = identity gives CCE.
    """
    log_p = _log_softmax(logits)
    log_t = torch.log(transition.to(device=log_p.device, dtype=log_p.dtype))
    return -torch.logsumexp(log_p + log_t[:, targets].T, dim=1)


def estimate_transition(probs: torch.Tensor, percentile: float = ESTIMATOR_PERCENTILE) -> torch.Tensor:
    """Patrini et al.'s estimate of T from a network trained with CCE on the noisy labels.

    probs (N, C): its softmax outputs on the training images -> T (C, C) float64, row-normalised.
    Row i is the output on the sample whose p(i | x) is the highest BELOW the ``percentile``-th
    percentile of p(i | x) over all samples (their ``NoiseEstimator(filter_outlier=True)``,
    np.percentile(..., 97, interpolation='higher'), which skips the top 3% as outliers); at
    ``percentile`` 100 the plain argmax ("perfect example"). Their code zeroes the skipped entries
    in the shared probability array itself, so a later row can lose an entry of an earlier class;
    here every row is the sample's unmodified output.
    """
    if probs.dim() != 2:
        raise ValueError(f"probs must have shape (N, C), got {tuple(probs.shape)}")
    p = probs.detach().double().cpu()
    rows = []
    for i in range(p.shape[1]):
        column = p[:, i]
        if percentile < 100.0:
            top = torch.quantile(column, percentile / 100.0, interpolation="higher")
            column = torch.where(column >= top, 0.0, column)
        rows.append(p[int(column.argmax())])
    t = torch.stack(rows)
    return t / t.sum(dim=1, keepdim=True)


def true_transition(spec) -> torch.Tensor:
    """The transition matrix of a run's noise, as its spec defines it: (C, C) float64."""
    c = spec.num_classes
    return expected_transition(spec.noise, spec.noise_rate, c, spec.class_map, dataset=spec.dataset)


class ForwardState(LossState):
    """Forward correction with the TRUE transition matrix of the run's noise: the matrix the noise
    is drawn from (``noise.expected_transition`` of the spec's kind, rate and class map), not the
    one realised on this sample of labels (``ExperimentData.transition``). That is Patrini et al.'s
    "known T" setting (their experiments pass the matrix they noisify with), and it is what a
    person who knows the noise process knows; the realised one would also carry this sample's
    chance flips. Open-set noise changes images, not labels: T = I, forward = CCE."""

    def __init__(self, run: RunContext):
        self.transition = true_transition(run.spec).float().to(run.device)
        super().__init__(functools.partial(forward_values, transition=self.transition))
        self.sum_values = self.values


def estimation_epochs(epochs: int, est_share: float) -> int:
    """Epochs trained with CCE before forward_est estimates T: est_share of the run, at least 1
    and at most epochs - 1 (so that some epochs train with the estimate)."""
    return min(max(1, round(est_share * epochs)), epochs - 1)


def _check_estimation_run(spec) -> tuple[str, str] | None:
    if spec.epochs >= 2:
        return None
    return ("epochs", f"forward_est needs 2 epochs or more (CCE first, then the estimated T), got {spec.epochs}")


class ForwardEstState(LossState):
    """Forward correction with a T estimated during the run, the way Patrini et al. do.

    Epochs 1..E (E = ``estimation_epochs(epochs, est_share)``) train with CCE. Before epoch E + 1,
    ``estimate_transition`` runs on the softmax outputs, on the whole training set (noisy labels,
    no augmentation), of the model of the best noisy-validation epoch so far (Patrini et al. keep
    the CCE network's best validation checkpoint too); from then on the loss is ``forward_values``
    with that estimate. Epoch E + 1's metrics row carries it as ``transition_estimate`` (a C x C
    list, rounded to 4 decimals), which the app shows beside the true matrix.

    The run CONTINUES from its current model rather than restarting from a fresh one as Patrini
    et al.'s two-network script does: the run stays one model, one optimiser and one lr schedule
    (the trainer stays a plain loop, and the curves show both phases), and the forward loss's
    minimiser, the clean posterior under T, does not depend on where training starts. The cost:
    a CCE phase long enough to memorise flipped labels leaves the forward phase that much to undo;
    a short ``est_share`` avoids it (the estimate comes from the best-validation model anyway).
    Hence the default 0.25: on digits (quick preset, 60 epochs, 2 seeds) the best-validation CCE
    model is at epoch 7-14, so 0.25 and 0.5 give the same estimate (diagonal 0.63-0.67 at uniform
    0.4, true 0.6; 0.33-0.35 at 0.6, true 0.4), and the last-epoch test accuracy at 0.6 is 67-73%
    after 0.25 against 51-57% after 0.5; at 0.1 the estimate comes too early (diagonal 0.21-0.28
    at 0.6).
    """

    def __init__(self, run: RunContext, est_share: float):
        super().__init__(_cce_values)
        self.run = run
        self.est_epochs = estimation_epochs(run.spec.epochs, est_share)
        self.transition: torch.Tensor | None = None
        self.best = BestModel()
        self._new_estimate = False

    def __call__(self, logits, targets, index):
        return self.values(logits, targets)

    @property
    def sum_values(self):
        return self.values

    def start_epoch(self, epoch, model):
        if self.transition is None and epoch > self.est_epochs:
            probs = torch.softmax(self.run.predict(self.best.model(model)), dim=1)
            self._use(estimate_transition(probs).float())
            self.best.weights = None  # only the estimate needed it
            self._new_estimate = True

    def _use(self, transition: torch.Tensor) -> None:
        self.transition = transition.to(self.run.device)
        self.values = functools.partial(forward_values, transition=self.transition)

    def end_epoch(self, improved, model):
        if self.transition is None:
            self.best.update(improved, model)

    def row(self):
        if not self._new_estimate:
            return {}
        self._new_estimate = False
        return {"transition_estimate": [[round(v, 4) for v in r] for r in self.transition.tolist()]}

    def state_dict(self):
        return {"transition": None if self.transition is None else self.transition.cpu(),
                "best_model": self.best.weights}

    def load_state_dict(self, saved):
        self.best.weights = saved["best_model"]
        if saved["transition"] is not None:
            self._use(saved["transition"])


# --- the registry entries -------------------------------------------------------------------------
register(
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
    Loss(
        "forward", "forward (true T)", "-log (f T)_y, T the noise's transition matrix",
        forward_values, _FWD, needs_run="needs its run's transition matrix",
        make_state=lambda run, params: ForwardState(run),
    ),
    Loss(
        "forward_est", "forward (estimated T)",
        "CCE for a share est_share of the epochs, then -log (f T_est)_y with T_est estimated from the model",
        forward_values, _FWD, needs_run="needs its run's transition matrix, estimated during the run",
        params=(Param("est_share", 0.25, 0.0, 1.0, help="share of the epochs trained with CCE before T is "
                      "estimated (at least 1 epoch, at most epochs - 1)"),),
        make_state=lambda run, params: ForwardEstState(run, **params), check_run=_check_estimation_run,
    ),
)

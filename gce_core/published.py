"""The GCE paper's published numbers, as data: test accuracy (%) at the best noisy-validation
epoch, mean and standard deviation over 5 runs, ResNet-34 (Zhang & Sabuncu, NeurIPS 2018).

Every row says where it comes from. Means are the paper's Table 1, as checked against ELR (Liu
et al., NeurIPS 2020, Table 1), which reprints them; a standard deviation is given only where
one is recalled (ELR's Table 1 for CIFAR-10; the stds are not in our reference copy and were not
checked against the paper, the source note says so), else it is None. Rows marked ``verified=False`` are
recalled, not checked against a copy of the paper: shown for orientation, flagged wherever
shown. Fashion-MNIST and the open-set Table 3 have no numbers here yet: a grid over them shows
its own numbers with the paper's column empty. Source: docs/library.md, "The paper's grid".
"""

from __future__ import annotations

from dataclasses import dataclass

PAPER = "Zhang & Sabuncu, NeurIPS 2018"
_T1 = f"{PAPER}, Table 1 (checked against ELR, Liu et al., NeurIPS 2020, Table 1)"
_T1_STD = (f"{PAPER}, Table 1; std recalled from its reprint in ELR (Liu et al., NeurIPS 2020), Table 1, "
           "not checked against a copy")
_RECALLED = f"{PAPER}, Table 1, recalled and not checked against the paper (orientation only)"


@dataclass(frozen=True)
class Published:
    """One published cell: ``mean`` and ``std`` in % (std None where no source gives it)."""

    dataset: str
    loss: str  # canonical loss name; Lq and truncated Lq at the paper's q = 0.7, k = 0.5
    noise: str  # "uniform" (to the other c - 1 classes), "class_dependent", "open_set"
    rate: float
    mean: float
    std: float | None
    source: str
    verified: bool = True


def _row(dataset, loss, noise, rates, means, source, stds=None, verified=True) -> list[Published]:
    stds = stds or [None] * len(rates)
    return [Published(dataset, loss, noise, r, m, s, source, verified)
            for r, m, s in zip(rates, means, stds, strict=True)]


_U = (0.2, 0.4, 0.6, 0.8)
_CD = (0.1, 0.2, 0.3, 0.4)
PUBLISHED: tuple[Published, ...] = tuple(
    [
        *_row("cifar10", "cce", "uniform", _U, (86.98, 81.88, 74.14, 53.82), _T1_STD, (0.12, 0.29, 0.56, 1.04)),
        *_row("cifar10", "cce", "class_dependent", _CD[:3], (90.69, 88.59, 86.14), _T1),
        *_row("cifar10", "cce", "class_dependent", _CD[3:], (80.11,), _T1_STD, (1.44,)),
        *_row("cifar10", "lq", "uniform", _U, (89.83, 87.13, 82.54, 64.07), _T1_STD, (0.20, 0.22, 0.23, 1.38)),
        *_row("cifar10", "lq", "class_dependent", _CD[:3], (90.91, 89.33, 85.45), _T1),
        *_row("cifar10", "lq", "class_dependent", _CD[3:], (76.74,), _T1_STD, (0.61,)),
        *_row("cifar10", "truncated_lq", "uniform", _U, (89.70, 87.62, 82.70, 67.92), _RECALLED, verified=False),
        *_row("cifar100", "cce", "uniform", _U, (58.72, 48.20, 37.41, 18.10), _T1),
        *_row("cifar100", "cce", "class_dependent", _CD, (66.54, 59.20, 51.40, 42.74), _T1),
        *_row("cifar100", "mae", "uniform", _U, (15.8, 9.0, 7.7, 3.8), _RECALLED, verified=False),
        *_row("cifar100", "lq", "uniform", _U, (66.81, 61.77, 53.16, 29.16), _T1),
        *_row("cifar100", "lq", "class_dependent", _CD, (68.36, 66.59, 61.45, 47.22), _T1),
    ]
)
_INDEX = {(p.dataset, p.loss, p.noise, round(p.rate, 6)): p for p in PUBLISHED}
PAPER_Q, PAPER_K = 0.7, 0.5


def published(dataset: str, loss: str, noise: str, rate: float, *, q: float = PAPER_Q,
              k: float = PAPER_K) -> Published | None:
    """The published cell for a run configuration, or None when the paper has none (or the
    run's Lq parameters are not the paper's q = 0.7, k = 0.5)."""
    if loss in ("lq", "truncated_lq") and round(q, 6) != PAPER_Q:
        return None
    if loss == "truncated_lq" and round(k, 6) != PAPER_K:
        return None
    return _INDEX.get((dataset, loss, noise, round(float(rate), 6)))

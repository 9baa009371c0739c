"""Label noise for the GCE experiments: synthetic (reproducible from a seed) and real human labels.

Kinds (``NOISE_KINDS``):

- ``"none"``: labels unchanged.
- ``"uniform"`` (symmetric): with probability ``rate`` a label is replaced by one drawn uniformly
  from the OTHER c-1 classes, so the realised flip rate is ``rate``.
- ``"uniform_any"``: with probability ``rate`` a label is replaced by one drawn from ALL c classes
  (a common variant in public code); the realised flip rate is ``rate * (c - 1) / c``.
- ``"class_dependent"`` (asymmetric): each sample whose CLEAN label is a source class of a class
  map flips to that class's target with probability ``rate``; other classes are never touched.
- ``"instance"`` (instance-dependent, Xia et al., NeurIPS 2020, "Part-dependent label noise",
  the generator of their public code): each sample draws its own flip rate from a normal with mean
  ``rate`` and std 0.1 truncated to [0, 1]; where it flips to depends on its image, through a
  seeded random projection per class (:func:`instance_noise`). The realised rate is ``rate`` up
  to sampling noise; which samples flip and to what depends on the images, not only the class.
- ``"human"``: real labels given by people, read from a file (CIFAR-10N / CIFAR-100N, Wei et al.,
  ICLR 2022, or a user's ``y_train_noisy``); the rate is what the people got wrong. Its "synthetic
  twin" (:func:`noise_from_transition`) draws class-dependent noise from the same realised matrix.
- ``"open_set"``: labels unchanged; a share ``rate`` of the images is replaced by images of another
  data set (see :func:`replace_open_set`), each keeping a label of this data set.

Samples to flip are always selected on the clean labels in one pass, so a pair map such as
cat <-> dog never flips an already flipped sample back (a known bug of public code).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

NOISE_KINDS = ("none", "uniform", "uniform_any", "class_dependent", "instance", "human", "open_set")
# A short label of every kind, for menus (the Launch form's noise list).
NOISE_LABELS: dict[str, str] = {
    "none": "none (clean labels)",
    "uniform": "uniform (to the other c-1 classes)",
    "uniform_any": "uniform over all c classes (real flip rate eta(c-1)/c)",
    "class_dependent": "class-dependent (pair flips)",
    "instance": "instance-dependent (the flip depends on the image; Xia et al. 2020)",
    "human": "human labels (CIFAR-N, or your npz's y_train_noisy)",
    "open_set": "open-set (foreign images, labels kept)",
}
INSTANCE_NORM_STD = 0.1  # std of the per-sample flip rates of "instance" noise (Xia et al.'s code)
INSTANCE_MAX_RATE = 0.5  # the papers' range is 0.2 to 0.5
# Human label sets of the CIFAR-N files (key in the file -> wrong labels on CIFAR-10: aggre 9%,
# random 17-18%, worse 40%; CIFAR-100N: 40%); the first one is the default.
HUMAN_LABEL_SETS: dict[str, tuple[str, ...]] = {
    "cifar10": ("worse_label", "aggre_label", "random_label1", "random_label2", "random_label3"),
    "cifar100": ("noisy_label",),
}
USER_NOISY_LABELS = "y_train_noisy"  # the human label set of a user's npz file
CLASS_MAP_NAMES = ("cifar10", "cifar100_blocks", "cifar100_superclass", "fashion_mnist", "next_class")  # fmt: skip

# Standard CIFAR-100 fine label index -> coarse (super-class) index; fine labels are alphabetical
# (0 apple -> 4 fruit_and_vegetables, 1 aquarium_fish -> 1 fish, 2 baby -> 14 people, ...).
CIFAR100_COARSE: tuple[int, ...] = (
    4, 1, 14, 8, 0, 6, 7, 7, 18, 3,
    3, 14, 9, 18, 7, 11, 3, 9, 7, 11,
    6, 11, 5, 10, 7, 6, 13, 15, 3, 15,
    0, 11, 1, 10, 12, 14, 16, 9, 11, 5,
    5, 19, 8, 8, 15, 13, 14, 17, 18, 10,
    16, 4, 17, 4, 2, 0, 17, 4, 18, 17,
    10, 3, 2, 12, 12, 16, 12, 1, 9, 19,
    2, 10, 0, 1, 16, 12, 9, 13, 15, 13,
    16, 19, 2, 4, 6, 19, 5, 5, 8, 19,
    18, 1, 2, 15, 6, 0, 17, 8, 14, 13,
)  # fmt: skip

# truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog
_CIFAR10_MAP = {9: 1, 2: 0, 4: 7, 3: 5, 5: 3}
# boot -> sneaker, sneaker -> sandal, pullover -> shirt, coat <-> dress (recalled, unverified)
_FASHION_MNIST_MAP = {9: 7, 7: 5, 2: 6, 4: 3, 3: 4}
_DEFAULT_MAPS = {"cifar10": "cifar10", "cifar100": "cifar100_blocks", "fashion_mnist": "fashion_mnist"}  # fmt: skip


@dataclass(frozen=True)
class NoisyLabels:
    """Result of :func:`corrupt_labels` (all tensors on the CPU).

    labels: (N,) int64, the noisy labels.
    is_noisy: (N,) bool, True where ``labels`` differs from the clean label.
    transition: (C, C) float64, realised row-normalised matrix: ``T[i, j]`` is the share of
        clean-class-i samples whose noisy label is j; a class with no samples gets the identity row.
    """

    labels: torch.Tensor
    is_noisy: torch.Tensor
    transition: torch.Tensor

    @property
    def rate(self) -> float:
        """Realised share of noisy samples, in [0, 1] (0.0 for an empty set)."""
        return float(self.is_noisy.double().mean()) if self.is_noisy.numel() else 0.0

    @property
    def class_rates(self) -> torch.Tensor:
        """(C,) float64 realised noise rate per clean class: 1 - T[i, i]."""
        return 1.0 - self.transition.diagonal()


def _check_num_classes(num_classes: int) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
        raise ValueError(f"num_classes must be an integer >= 2, got {num_classes!r}")


def check_noise(kind: str, rate: float, num_classes: int) -> None:
    """Raise ValueError, saying why, unless ``rate`` of noise ``kind`` is learnable on c classes.

    kind: one of ``NOISE_KINDS``. rate: in [0, 1), further limited per kind:
    ``"uniform"`` needs rate < 1 - 1/c; ``"uniform_any"`` needs rate < 1 (its real flip rate
    rate*(c-1)/c then stays below 1 - 1/c); ``"class_dependent"`` needs rate < 0.5;
    ``"instance"`` needs rate <= 0.5; ``"open_set"`` needs rate < 1. For ``"none"`` and
    ``"human"`` (its rate is the label file's) the rate is ignored (any value is accepted).
    """
    if kind not in NOISE_KINDS:
        raise ValueError(f"unknown noise kind {kind!r}; allowed: {', '.join(NOISE_KINDS)}")
    _check_num_classes(num_classes)
    if kind in ("none", "human"):
        return
    if not isinstance(rate, (int, float)) or isinstance(rate, bool) or not math.isfinite(rate):
        raise ValueError(f"noise rate must be a finite number in [0, 1), got {rate!r}")
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"noise rate must be in [0, 1), got {rate}")
    c = num_classes
    if kind == "uniform" and rate >= 1 - 1 / c:
        raise ValueError(
            f"uniform noise needs rate < 1 - 1/c = {1 - 1 / c:.4g} for c={c} classes, got {rate}: "
            "at or above it the noisy label is as likely as the true one"
        )
    if kind == "class_dependent" and rate >= 0.5:
        raise ValueError(
            f"class_dependent noise needs rate < 0.5, got {rate}: the true label must stay the "
            "most likely one (eta_ij < 1 - eta_i); the benchmark stops at 0.4"
        )
    if kind == "instance" and rate > INSTANCE_MAX_RATE:
        raise ValueError(
            f"instance noise needs rate <= {INSTANCE_MAX_RATE}, got {rate}: its flips of a class "
            "go mostly to a few classes, so above 0.5 the true label can lose; papers use 0.2-0.5"
        )


def default_class_map(dataset: str | None) -> str:
    """Class map name used for ``dataset``: cifar10 -> "cifar10", cifar100 -> "cifar100_blocks",
    fashion_mnist -> "fashion_mnist", anything else (or None) -> "next_class"."""
    return _DEFAULT_MAPS.get((dataset or "").lower(), "next_class")


def class_map(name: str, num_classes: int) -> dict[int, int]:
    """Source class -> target class of class-dependent noise; unlisted classes never flip.

    name: one of ``CLASS_MAP_NAMES``:
    ``"cifar10"`` (c=10) {9: 1, 2: 0, 4: 7, 3: 5, 5: 3};
    ``"fashion_mnist"`` (c=10) {9: 7, 7: 5, 2: 6, 4: 3, 3: 4};
    ``"cifar100_blocks"`` (c=100) i -> next index circularly within blocks of 5 consecutive
    indices (the common code; these blocks are not the semantic super-classes);
    ``"cifar100_superclass"`` (c=100) within each real super-class (``CIFAR100_COARSE``) the five
    fine classes, sorted by index, each flip to the next one circularly;
    ``"next_class"`` (any c >= 2) i -> (i + 1) % c, the lab's choice where the paper gives no map.
    """
    _check_num_classes(num_classes)
    needs = {"cifar10": 10, "fashion_mnist": 10, "cifar100_blocks": 100, "cifar100_superclass": 100}
    if name not in CLASS_MAP_NAMES:
        raise ValueError(f"unknown class map {name!r}; allowed: {', '.join(CLASS_MAP_NAMES)}")
    if name in needs and num_classes != needs[name]:
        raise ValueError(
            f"class map {name!r} is for {needs[name]} classes, got num_classes={num_classes}; "
            "use 'next_class' for other data sets"
        )
    if name == "cifar10":
        return dict(_CIFAR10_MAP)
    if name == "fashion_mnist":
        return dict(_FASHION_MNIST_MAP)
    if name == "cifar100_blocks":
        return {i: (i // 5) * 5 + (i + 1) % 5 for i in range(100)}
    if name == "cifar100_superclass":
        mapping: dict[int, int] = {}
        for coarse in range(20):
            group = [i for i, k in enumerate(CIFAR100_COARSE) if k == coarse]
            mapping.update({a: group[(j + 1) % len(group)] for j, a in enumerate(group)})
        return mapping
    return {i: (i + 1) % num_classes for i in range(num_classes)}


def _resolve_map(num_classes: int, dataset: str | None, map_name: str | None) -> dict[int, int]:
    return class_map(map_name or default_class_map(dataset), num_classes)


def expected_transition(
    kind: str,
    rate: float,
    num_classes: int,
    class_map_name: str | None = None,
    *,
    dataset: str | None = None,
) -> torch.Tensor:
    """Theoretical (C, C) float64 transition matrix that the noise produces in expectation.

    ``T[i, j]`` = P(noisy label j | clean label i); rows sum to 1. For ``"class_dependent"`` the map
    is ``class_map_name``, else ``default_class_map(dataset)`` (as in :func:`corrupt_labels`).
    ``"instance"``: averaged over the random projections, flips spread evenly over the other
    classes, so its expectation is the uniform matrix (one draw is far from even: use the
    realised matrix). ``"none"`` and ``"open_set"`` (images change, labels do not) give the
    identity. ``"human"`` has no expectation (ValueError): its matrix is the label file's.
    """
    check_noise(kind, rate, num_classes)
    if kind == "human":
        raise ValueError("human noise has no expected transition matrix: it is the realised one of the label file")
    c = num_classes
    eye = torch.eye(c, dtype=torch.float64)
    if kind in ("uniform", "instance"):
        return eye * (1 - rate) + (1 - eye) * (rate / (c - 1))
    if kind == "uniform_any":
        return eye * (1 - rate) + torch.full((c, c), rate / c, dtype=torch.float64)
    if kind == "class_dependent":
        for src, dst in _resolve_map(c, dataset, class_map_name).items():
            eye[src, src] = 1 - rate
            eye[src, dst] += rate
    return eye


def realised_transition(clean, noisy, num_classes: int) -> torch.Tensor:
    """Row-normalised (C, C) float64 matrix of label changes from clean (N,) to noisy (N,) labels.

    ``T[i, j]`` = share of clean-class-i samples labelled j; a class with no samples gets the
    identity row, so every row sums to 1.
    """
    clean = _as_labels(clean, num_classes, "clean")
    noisy = _as_labels(noisy, num_classes, "noisy")
    if clean.shape != noisy.shape:
        raise ValueError(f"clean {tuple(clean.shape)} and noisy {tuple(noisy.shape)} differ")
    c = num_classes
    counts = torch.bincount(clean * c + noisy, minlength=c * c).reshape(c, c).double()
    totals = counts.sum(dim=1, keepdim=True)
    eye = torch.eye(c, dtype=torch.float64)
    return torch.where(totals > 0, counts / totals.clamp(min=1), eye)


def _as_labels(labels, num_classes: int, what: str = "labels") -> torch.Tensor:
    """(N,) int64 CPU tensor from array-like labels, or ValueError saying what is wrong."""
    t = torch.as_tensor(labels).detach().cpu()
    if t.ndim != 1:
        raise ValueError(f"{what} must be 1-D (N,), got shape {tuple(t.shape)}")
    if t.dtype == torch.bool or t.is_complex():
        raise ValueError(f"{what} must be integers, got dtype {t.dtype}")
    if t.is_floating_point() and not bool(torch.all(t == t.round())):
        raise ValueError(f"{what} must be whole numbers, got non-integer values")
    t = t.long()
    if t.numel() and (int(t.min()) < 0 or int(t.max()) >= num_classes):
        raise ValueError(
            f"{what} must be in [0, {num_classes}), found values from {int(t.min())} "
            f"to {int(t.max())}"
        )
    return t


def corrupt_labels(
    labels,
    num_classes: int,
    kind: str,
    rate: float,
    seed: int,
    dataset: str | None = None,
    *,
    class_map_name: str | None = None,
    features: torch.Tensor | None = None,
    human_labels=None,
) -> NoisyLabels:
    """Corrupt clean ``labels`` (N,) ints in [0, num_classes) with noise ``kind`` at ``rate``.

    kind: one of ``NOISE_KINDS`` (see the module docstring); checked by :func:`check_noise`.
    rate: probability that a sample is selected for corruption, in [0, 1).
    seed: seeds a local ``torch.Generator``; the same inputs and seed give identical labels.
    dataset: picks the default class map for ``"class_dependent"`` (see
    :func:`default_class_map`); ``class_map_name`` (one of ``CLASS_MAP_NAMES``) overrides it.
    features: (N, ...) float images or features of the samples, needed by ``"instance"``.
    human_labels: (N,) the people's labels of the samples, needed by ``"human"`` (they are the
    noisy labels; ``rate`` and ``seed`` are not used).
    Returns a :class:`NoisyLabels` on the CPU. ``"open_set"`` leaves labels unchanged here
    (``is_noisy`` all False); replace the images with :func:`replace_open_set`.
    """
    check_noise(kind, rate, num_classes)
    clean = _as_labels(labels, num_classes)
    c, n = num_classes, clean.numel()
    gen = torch.Generator().manual_seed(int(seed))
    noisy = clean.clone()
    if kind == "uniform":
        selected = torch.rand(n, generator=gen, dtype=torch.float64) < rate
        offset = torch.randint(1, c, (n,), generator=gen)  # never 0: never the own class
        noisy = torch.where(selected, (clean + offset) % c, clean)
    elif kind == "uniform_any":
        selected = torch.rand(n, generator=gen, dtype=torch.float64) < rate
        noisy = torch.where(selected, torch.randint(0, c, (n,), generator=gen), clean)
    elif kind == "class_dependent":
        target = torch.arange(c)
        listed = torch.zeros(c, dtype=torch.bool)
        for src, dst in _resolve_map(c, dataset, class_map_name).items():
            target[src], listed[src] = dst, True
        # One pass on the clean labels: a flipped cat is never re-selected as a "dog".
        selected = listed[clean] & (torch.rand(n, generator=gen, dtype=torch.float64) < rate)
        noisy = torch.where(selected, target[clean], clean)
    elif kind == "instance":
        if features is None:
            raise ValueError("instance noise needs the samples' features (N, ...): pass features=")
        noisy = instance_noise(clean, features, c, rate, int(seed))
    elif kind == "human":
        if human_labels is None:
            raise ValueError("human noise needs the people's labels (N,): pass human_labels=")
        noisy = _as_labels(human_labels, c, "human labels")
        if noisy.shape != clean.shape:
            raise ValueError(f"human labels {tuple(noisy.shape)} and clean labels {tuple(clean.shape)} differ in shape")
    return NoisyLabels(
        labels=noisy,
        is_noisy=noisy != clean,
        transition=realised_transition(clean, noisy, c),
    )


def instance_noise(
    clean: torch.Tensor, features: torch.Tensor, num_classes: int, rate: float, seed: int,
    norm_std: float = INSTANCE_NORM_STD,
) -> torch.Tensor:
    """Instance-dependent noisy labels (N,) int64, the generator of Xia et al. (NeurIPS 2020).

    Per sample i with clean class y: a flip rate r_i ~ N(rate, norm_std) truncated to [0, 1];
    scores s = x_i W_y, with x_i the sample's features flattened and standardised (zero mean, unit
    std over the set, as the reference's normalised images) and W_y a (D, C) standard-normal
    matrix drawn per class from the seed; s_y = -inf; p = r_i softmax(s), p_y = 1 - r_i; the
    noisy label is drawn from p. The expected share of flips is the mean of r, ``rate`` (the
    truncation moves it by less than 1e-4 for rate in [0.05, 0.5]). Seeded by a local generator.
    """
    clean = _as_labels(clean, num_classes, "clean")
    x = torch.as_tensor(features).detach().cpu().reshape(clean.numel(), -1).double()
    n, c = clean.numel(), num_classes
    gen = torch.Generator().manual_seed(int(seed))
    flip = torch.empty(n, dtype=torch.float64)
    torch.nn.init.trunc_normal_(flip, mean=rate, std=norm_std, a=0.0, b=1.0, generator=gen)
    x = (x - x.mean(dim=0)) / x.std().clamp(min=1e-12)
    probs = torch.zeros(n, c, dtype=torch.float64)
    for y in range(c):  # one (D, C) projection per class, drawn even for an absent class
        w = torch.randn(x.shape[1], c, generator=gen, dtype=torch.float64)
        rows = torch.nonzero(clean == y).squeeze(1)
        if rows.numel() == 0:
            continue
        scores = x[rows] @ w
        scores[:, y] = -math.inf
        p = flip[rows, None] * torch.softmax(scores, dim=1)
        p[:, y] = 1.0 - flip[rows]
        probs[rows] = p
    return torch.multinomial(probs, 1, generator=gen).squeeze(1) if n else clean.clone()


def noise_from_transition(clean, transition: torch.Tensor, seed: int) -> NoisyLabels:
    """Class-dependent noise drawn from a (C, C) row-stochastic ``transition``: each sample of
    clean class i gets label j with probability T[i, j], independently of its image. With the
    realised matrix of human labels this is their "synthetic twin" (CIFAR-N's code has one):
    same rates per class and pair, but no dependence on what the image looks like."""
    t = torch.as_tensor(transition, dtype=torch.float64)
    c = t.shape[0]
    if t.ndim != 2 or t.shape != (c, c) or bool((t < 0).any()) or not torch.allclose(t.sum(1), torch.ones(c, dtype=torch.float64)):
        raise ValueError(f"transition must be a (C, C) matrix of non-negative rows summing to 1, got shape {tuple(t.shape)}")
    clean = _as_labels(clean, c, "clean")
    gen = torch.Generator().manual_seed(int(seed))
    noisy = torch.multinomial(t[clean], 1, generator=gen).squeeze(1) if clean.numel() else clean.clone()
    return NoisyLabels(labels=noisy, is_noisy=noisy != clean, transition=realised_transition(clean, noisy, c))


def replace_open_set(
    images: torch.Tensor, rate: float, source_images: torch.Tensor, seed: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Open-set noise: replace a share ``rate`` of ``images`` by images of another data set.

    images: (N, ...) tensor; source_images: (M, ...) with the same per-image shape and dtype.
    Exactly ``round(rate * N)`` slots, chosen at random, receive distinct images drawn at random
    from ``source_images``. Labels are not touched: each replaced slot keeps its label of this data
    set, which has nothing to do with the new content. The input is not modified.
    Returns (new_images (N, ...) on ``images``' device, is_replaced (N,) bool on the CPU).
    """
    if not 0.0 <= rate < 1.0:
        raise ValueError(f"open-set rate must be in [0, 1), got {rate}")
    if images.ndim < 1 or source_images.ndim < 1:
        raise ValueError("images and source_images must have a leading sample dimension (N, ...)")
    if images.shape[1:] != source_images.shape[1:]:
        raise ValueError(
            f"per-image shapes differ: images {tuple(images.shape)} vs source_images "
            f"{tuple(source_images.shape)}; resize the source images first"
        )
    if images.dtype != source_images.dtype:
        raise ValueError(f"dtypes differ: images {images.dtype}, source {source_images.dtype}")
    n, m = images.shape[0], source_images.shape[0]
    k = round(rate * n)
    if k > m:
        raise ValueError(f"open-set rate {rate} needs {k} source images, only {m} given")
    gen = torch.Generator().manual_seed(int(seed))
    slots = torch.randperm(n, generator=gen)[:k]
    picks = torch.randperm(m, generator=gen)[:k]
    new_images = images.clone()
    new_images[slots.to(images.device)] = source_images[picks.to(source_images.device)].to(
        images.device
    )
    is_replaced = torch.zeros(n, dtype=torch.bool)
    is_replaced[slots] = True
    return new_images, is_replaced


# What each class map does, in words (for the lab's pages and the grid's table notes).
CLASS_MAP_DESCRIPTIONS = {
    "cifar10": "truck -> automobile, bird -> airplane, deer -> horse, cat <-> dog (the paper's)",
    "cifar100_blocks": "each class flips to the next index within blocks of 5 consecutive class indices "
                       "(0-4, 5-9, ...), circularly: the common code's map and the lab's default. CIFAR-100's "
                       "fine labels are alphabetical, so these blocks are not the semantic super-classes",
    "cifar100_superclass": "within each of the 20 semantic super-classes (aquatic mammals, fish, flowers, ...), "
                           "each of its five classes flips to the next one, circularly: the paper's words",
    "fashion_mnist": "ankle boot -> sneaker, sneaker -> sandal, pullover -> shirt, coat <-> dress "
                     "(recalled, unverified)",
    "next_class": "class i flips to class i + 1, circularly (the lab's choice where the paper gives no map)",
}


def class_map_description(name: str) -> str:
    """One sentence on what class map ``name`` (one of CLASS_MAP_NAMES) does."""
    if name not in CLASS_MAP_DESCRIPTIONS:
        raise ValueError(f"unknown class map {name!r}; allowed: {', '.join(CLASS_MAP_NAMES)}")
    return CLASS_MAP_DESCRIPTIONS[name]

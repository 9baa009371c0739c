"""The data of one run: raw data set -> label noise -> train/validation split -> normalisation.

Noise is applied to the whole training set before the split, so the validation labels are noisy
too (the paper's protocol); the test set stays clean. Everything lands on the run's device once.
The raw data set is loaded once per process (gce_core.data.load_raw's cache), so in a long-lived
process a run's data costs a few tensor ops (about a millisecond for digits).

:func:`noisy_training_set` is the part before the split and the normalisation: the Launch form
shows its realised transition matrix (instance and human noise have no closed form), and the
Noise insight page its gallery images (:func:`gallery_samples`), the same ones the run trained on.
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import torch

from gce_core.data import (
    RawData,
    load_human_labels,
    load_raw,
    open_set_images,
    pixel_mean,
    split_train_val,
)
from gce_core.noise import (
    NoisyLabels,
    corrupt_labels,
    noise_from_transition,
    realised_transition,
    replace_open_set,
)
from gce_core.spec import RunSpec, parse_spec

NO_LABEL = -1  # clean label of an open-set image: it belongs to no class of this data set
GALLERY_SIZE = 48  # flipped training samples whose f_y every epoch records (Noise insight's gallery)


@dataclass(frozen=True)
class ExperimentData:
    """Tensors of one run, on one device. Training-set arrays share the index i in [0, n_train)."""

    x_train: torch.Tensor  # (N, C, H, W) float32, mean-subtracted
    y_train: torch.Tensor  # (N,) int64 noisy labels, what the loss sees
    y_train_clean: torch.Tensor  # (N,) int64 true labels, NO_LABEL for open-set images
    is_noisy: torch.Tensor  # (N,) bool
    x_eval: torch.Tensor  # the validation images, then the test images: evaluated in one pass
    y_val: torch.Tensor  # noisy
    y_test: torch.Tensor  # clean
    num_classes: int
    transition: torch.Tensor  # (C, C) realised on the whole (pre-split) training set
    realised_rate: float
    gallery_idx: torch.Tensor | None = None  # (K,) int64 training indices, on the device: see gallery_indices

    @property
    def n_train(self) -> int:
        return int(self.y_train.shape[0])

    @property
    def n_val(self) -> int:
        return int(self.y_val.shape[0])

    @property
    def x_val(self) -> torch.Tensor:
        return self.x_eval[: self.n_val]

    @property
    def x_test(self) -> torch.Tensor:
        return self.x_eval[self.n_val :]


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; explicit names are checked for availability."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu")
    return dev


def _subset(n: int, size: int | None, seed: int) -> torch.Tensor | None:
    if size is None or size >= n:
        return None
    g = torch.Generator().manual_seed(seed)
    return torch.randperm(n, generator=g)[:size].sort().values


@dataclass(frozen=True)
class NoisyTrainingSet:
    """A run's training set after noise, before the train/validation split (all on the CPU).

    x: (N, C, H, W) images in [0, 1] (open-set images swapped in); y_clean: (N,) true labels
    (NO_LABEL for open-set images); noisy: the noisy labels with their realised transition matrix;
    train_idx / val_idx: the split; raw: the data set.
    """

    x: torch.Tensor
    y_clean: torch.Tensor
    noisy: NoisyLabels
    train_idx: torch.Tensor
    val_idx: torch.Tensor
    raw: RawData


def _noisy_labels(spec: RunSpec, raw: RawData, x: torch.Tensor, y: torch.Tensor, keep) -> NoisyLabels:
    c = raw.info.num_classes
    human = None
    if spec.noise == "human":
        human = load_human_labels(spec.dataset, spec.human_labels, spec.data_root)
        human = human if keep is None else human[keep]
        if spec.human_twin:
            twin_of = realised_transition(y, human, c)
            return noise_from_transition(y, twin_of, spec.seed)
    return corrupt_labels(
        y, c, spec.noise, spec.noise_rate, spec.seed, spec.dataset, class_map_name=spec.class_map,
        features=x if spec.noise == "instance" else None, human_labels=human,
    )  # fmt: skip


def noisy_training_set(spec: RunSpec) -> NoisyTrainingSet:
    """The run's training images and labels after noise, and its train/validation split."""
    raw = load_raw(spec.dataset, spec.data_root, spec.download)
    x, y = raw.x_train, raw.y_train
    keep = _subset(len(y), spec.train_subset, spec.seed)
    if keep is not None:
        x, y = x[keep], y[keep]
    noisy = _noisy_labels(spec, raw, x, y, keep)
    y_clean = y.clone()
    if spec.noise == "open_set":
        count = round(spec.noise_rate * len(y))
        source = open_set_images(
            spec.dataset, spec.open_set_source, count, spec.seed, spec.data_root, download=spec.download
        )
        x, replaced = replace_open_set(x, spec.noise_rate, source, spec.seed)
        y_clean[replaced] = NO_LABEL
        noisy = NoisyLabels(noisy.labels, replaced, noisy.transition)
    tr, va = split_train_val(len(y), spec.val_fraction, spec.seed)
    if len(va) == 0:  # the paper's model selection needs a validation set
        raise ValueError(f"val_fraction {spec.val_fraction:g} of {len(y)} training images leaves no validation "
                         f"image; use at least {1 / len(y):.2g} (the paper holds out 0.1)")
    return NoisyTrainingSet(x, y_clean, noisy, tr, va, raw)


def gallery_indices(is_noisy_train: torch.Tensor, seed: int, size: int = GALLERY_SIZE) -> torch.Tensor:
    """Up to ``size`` training indices (sorted, int64) of noisy samples, drawn from ``seed``: the
    samples whose f_y each epoch row records (``fy_gallery``) for the Noise insight gallery."""
    noisy = torch.nonzero(is_noisy_train.cpu()).squeeze(1)
    pick = torch.randperm(len(noisy), generator=torch.Generator().manual_seed(seed + 2))[:size]
    return noisy[pick].sort().values


def build_experiment_data(spec: RunSpec, device: torch.device | str = "cpu") -> ExperimentData:
    """Assemble the run's tensors from the spec (raises DatasetNotFoundError if data is absent)."""
    t = noisy_training_set(spec)
    x, tr, va = t.x, t.train_idx, t.val_idx
    y_noisy, is_noisy = t.noisy.labels, t.noisy.is_noisy
    mean = pixel_mean(x[tr])
    dev = torch.device(device)

    def put(t: torch.Tensor) -> torch.Tensor:
        return t.to(dev, non_blocking=True)

    return ExperimentData(
        x_train=put(x[tr] - mean),
        y_train=put(y_noisy[tr]),
        y_train_clean=put(t.y_clean[tr]),
        is_noisy=put(is_noisy[tr]),
        x_eval=put(torch.cat([x[va], t.raw.x_test]) - mean),
        y_val=put(y_noisy[va]),
        y_test=put(t.raw.y_test),
        num_classes=t.raw.info.num_classes,
        transition=t.noisy.transition,
        realised_rate=float(is_noisy.float().mean()),
        gallery_idx=put(gallery_indices(is_noisy[tr], spec.seed)),
    )


@dataclass(frozen=True)
class NoisePreview:
    """What a noise setting does to a data set's training labels: the realised (C, C) transition
    matrix, the realised rate overall and per clean class (C,), and the class names."""

    transition: torch.Tensor
    rate: float
    class_rates: torch.Tensor
    class_names: tuple[str, ...]


def noise_preview(spec: RunSpec | dict) -> NoisePreview:
    """The realised noise of a spec on its training set (before the split), without training:
    for the Launch form's matrix of instance and human noise (and any other kind). Loads the data
    set (and the human label file); cached per spec for the life of the process. Raises what
    :func:`noisy_training_set` raises (DatasetNotFoundError, DatasetFileError)."""
    spec = parse_spec(spec)
    return _preview(json.dumps({k: getattr(spec, k) for k in _NOISE_FIELDS}))


_NOISE_FIELDS = ("dataset", "data_root", "download", "train_subset", "val_fraction", "noise", "noise_rate",
                 "class_map", "open_set_source", "human_labels", "human_twin", "seed")


@functools.lru_cache(maxsize=32)
def _preview(fields_json: str) -> NoisePreview:
    t = noisy_training_set(parse_spec(json.loads(fields_json)))
    n = t.noisy
    return NoisePreview(n.transition, n.rate, n.class_rates, t.raw.info.class_names)


@dataclass(frozen=True)
class GallerySamples:
    """The flipped training samples a run records f_y for (``fy_gallery`` of its epoch rows, in
    this order): images (K, C, H, W) in [0, 1], the given (noisy) and true labels (K,), and the
    class names. ``index`` holds their training indices."""

    images: torch.Tensor
    given: torch.Tensor
    true: torch.Tensor
    index: torch.Tensor
    class_names: tuple[str, ...]


def gallery_samples(spec: RunSpec | dict) -> GallerySamples:
    """The gallery of a run: the same samples, in the same order, as its training recorded."""
    spec = parse_spec(spec)
    t = noisy_training_set(spec)
    tr = t.train_idx
    idx = gallery_indices(t.noisy.is_noisy[tr], spec.seed)
    rows = tr[idx]
    return GallerySamples(t.x[rows], t.noisy.labels[rows], t.y_clean[rows], idx, t.raw.info.class_names)

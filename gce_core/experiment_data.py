"""The data of one run: raw data set -> label noise -> train/validation split -> normalisation.

Noise is applied to the whole training set before the split, so the validation labels are noisy
too (the paper's protocol); the test set stays clean. Everything lands on the run's device once.
The raw data set is loaded once per process (gce_core.data.load_raw's cache), so in a long-lived
process a run's data costs a few tensor ops (about a millisecond for digits).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from gce_core.data import load_raw, open_set_images, pixel_mean, split_train_val
from gce_core.noise import corrupt_labels, realised_transition, replace_open_set
from gce_core.spec import RunSpec

NO_LABEL = -1  # clean label of an open-set image: it belongs to no class of this data set


@dataclass(frozen=True)
class ExperimentData:
    """Tensors of one run, on one device. Training-set arrays share the index i in [0, n_train)."""

    x_train: torch.Tensor  # (N, C, H, W) float32, mean-subtracted
    y_train: torch.Tensor  # (N,) int64 noisy labels, what the loss sees
    y_train_clean: torch.Tensor  # (N,) int64 true labels, NO_LABEL for open-set images
    is_noisy: torch.Tensor  # (N,) bool
    x_val: torch.Tensor
    y_val: torch.Tensor  # noisy
    x_test: torch.Tensor
    y_test: torch.Tensor  # clean
    num_classes: int
    transition: torch.Tensor  # (C, C) realised on the whole (pre-split) training set
    realised_rate: float

    @property
    def n_train(self) -> int:
        return int(self.y_train.shape[0])


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


def build_experiment_data(spec: RunSpec, device: torch.device | str = "cpu") -> ExperimentData:
    """Assemble the run's tensors from the spec (raises DatasetNotFoundError if data is absent)."""
    raw = load_raw(spec.dataset, spec.data_root, spec.download)
    x, y = raw.x_train, raw.y_train
    keep = _subset(len(y), spec.train_subset, spec.seed)
    if keep is not None:
        x, y = x[keep], y[keep]
    c = raw.info.num_classes
    noisy = corrupt_labels(
        y, c, spec.noise, spec.noise_rate, spec.seed, spec.dataset, class_map_name=spec.class_map
    )
    y_noisy, is_noisy, y_clean = noisy.labels, noisy.is_noisy, y.clone()
    if spec.noise == "open_set":
        count = round(spec.noise_rate * len(y))
        source = open_set_images(
            spec.dataset, spec.open_set_source, count, spec.seed, spec.data_root, download=spec.download
        )
        x, is_noisy = replace_open_set(x, spec.noise_rate, source, spec.seed)
        y_clean[is_noisy] = NO_LABEL
    transition = realised_transition(y, y_noisy, c)
    tr, va = split_train_val(len(y), spec.val_fraction, spec.seed)
    if len(va) == 0:  # the paper's model selection needs a validation set
        raise ValueError(f"val_fraction {spec.val_fraction:g} of {len(y)} training images leaves no validation "
                         f"image; use at least {1 / len(y):.2g} (the paper holds out 0.1)")
    mean = pixel_mean(x[tr])
    dev = torch.device(device)

    def put(t: torch.Tensor) -> torch.Tensor:
        return t.to(dev, non_blocking=True)

    return ExperimentData(
        x_train=put(x[tr] - mean),
        y_train=put(y_noisy[tr]),
        y_train_clean=put(y_clean[tr]),
        is_noisy=put(is_noisy[tr]),
        x_val=put(x[va] - mean),
        y_val=put(y_noisy[va]),
        x_test=put(raw.x_test - mean),
        y_test=put(raw.y_test),
        num_classes=c,
        transition=transition,
        realised_rate=float(is_noisy.float().mean()),
    )

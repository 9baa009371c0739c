"""Per-epoch metrics of a run and the run summary.

Training-set metrics come from the logits of the training pass itself (recorded per sample as
the epoch goes, like the paper's code reports training accuracy): no extra forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

HIST_BINS = 20  # bins of f_y histograms over [0, 1]

# The keys of one epoch's metrics row, in display order (docs/metrics.md explains each).
EPOCH_KEYS = (
    "epoch", "train_loss", "train_acc_noisy", "train_acc_clean", "memorised", "flipped_to_true",
    "val_acc", "test_acc", "lr", "seconds", "kept", "prune_precision", "prune_recall",
    "loss_sum_mean", "fy_hist_clean", "fy_hist_noisy",
)
SUMMARY_KEYS = ("test_acc_at_best_val", "best_val_epoch", "last_test_acc", "best_test_acc")


def _share(mask: torch.Tensor) -> float:
    """Mean of a bool tensor as a float; NaN for an empty tensor."""
    return float(mask.float().mean()) if mask.numel() else math.nan


def training_pass_metrics(
    logits: torch.Tensor, y_noisy: torch.Tensor, y_clean: torch.Tensor, is_noisy: torch.Tensor
) -> dict[str, object]:
    """Metrics of the training set from the epoch's per-sample logits (N, C).

    - train_acc_noisy: prediction == noisy label; train_acc_clean: prediction == true label
      (open-set images, clean label -1, are left out);
    - memorised: share of noisy samples predicted as their noisy label; flipped_to_true: as
      their true label;
    - fy_hist_clean / fy_hist_noisy: histograms of f_y (softmax at the noisy label), 20 bins.
    """
    logits = logits.float()
    pred = logits.argmax(dim=1)
    has_clean = y_clean >= 0
    f_y = torch.softmax(logits, dim=1).gather(1, y_noisy[:, None]).squeeze(1)
    noisy_true = is_noisy & has_clean

    def hist(values: torch.Tensor) -> list[int]:
        return torch.histc(values.cpu(), bins=HIST_BINS, min=0.0, max=1.0).long().tolist()

    return {
        "train_acc_noisy": _share(pred == y_noisy),
        "train_acc_clean": _share(pred[has_clean] == y_clean[has_clean]),
        "memorised": _share(pred[is_noisy] == y_noisy[is_noisy]),
        "flipped_to_true": _share(pred[noisy_true] == y_clean[noisy_true]),
        "fy_hist_clean": hist(f_y[~is_noisy]),
        "fy_hist_noisy": hist(f_y[is_noisy]),
    }


def pruning_quality(weights: torch.Tensor, is_noisy: torch.Tensor) -> tuple[float, float]:
    """(precision, recall) of pruning as a noise detector: pruned = weight 0.

    precision = share of pruned samples that are really noisy; recall = share of noisy
    samples that were pruned. NaN where undefined.
    """
    pruned = weights <= 0
    hits = float((pruned & is_noisy).sum())
    n_pruned, n_noisy = float(pruned.sum()), float(is_noisy.sum())
    return (hits / n_pruned if n_pruned else math.nan, hits / n_noisy if n_noisy else math.nan)


def summarize(history: Sequence[dict]) -> dict[str, float | int | None]:
    """Summary of a run from its epoch rows: test accuracy at the best validation epoch (the
    paper's number), at the last epoch, and the best test accuracy (optimistic: it peeks)."""
    if not history:
        return {key: None for key in SUMMARY_KEYS}
    best = max(history, key=lambda row: (row["val_acc"], -row["epoch"]))
    return {
        "test_acc_at_best_val": best["test_acc"],
        "best_val_epoch": best["epoch"],
        "last_test_acc": history[-1]["test_acc"],
        "best_test_acc": max(row["test_acc"] for row in history),
    }

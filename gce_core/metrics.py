"""Per-epoch metrics of a run and the run summary.

Training-set metrics come from the logits of the training pass itself (recorded per sample as
the epoch goes, like the paper's code reports training accuracy): no extra forward pass.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

from gce_core.bounds import loss_sum
from gce_core.losses import (
    pruning_quality,  # noqa: F401 (truncated Lq's; imported from here before)
)

if TYPE_CHECKING:
    from gce_core.experiment_data import ExperimentData
    from gce_core.spec import RunSpec

HIST_BINS = 20  # bins of f_y histograms over [0, 1]

# The keys of one epoch's metrics row, in display order (docs/library.md, "Metrics of an epoch", explains each).
EPOCH_KEYS = (
    "epoch", "train_loss", "train_acc_noisy", "train_acc_clean", "memorised", "flipped_to_true",
    "val_acc", "test_acc", "lr", "seconds", "kept", "prune_precision", "prune_recall",
    "loss_sum_mean", "fy_hist_clean", "fy_hist_noisy", "fy_gallery", "pred_gallery", "kept_gallery",
)
# The keys whose values are lists (histograms and the gallery's per-sample values), not numbers.
LIST_KEYS = ("fy_hist_clean", "fy_hist_noisy", "fy_gallery", "pred_gallery", "kept_gallery")
SUMMARY_KEYS = ("test_acc_at_best_val", "best_val_epoch", "last_test_acc", "best_test_acc")


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
    f_y, pred = fy_and_prediction(logits, y_noisy)
    has_clean = y_clean >= 0
    hit_noisy = pred == y_noisy
    hit_clean = pred == y_clean  # never true for open-set images (clean label -1)
    # All four shares in one float32 division (what mean() of each mask computes) and one host
    # transfer; 0/0 gives NaN where a share is undefined.
    hits = torch.stack([hit_noisy, hit_clean, hit_noisy & is_noisy, hit_clean & is_noisy])
    within = torch.stack([torch.ones_like(has_clean), has_clean, is_noisy, is_noisy & has_clean])
    shares = (hits.sum(1, dtype=torch.float32) / within.sum(1, dtype=torch.float32)).tolist()
    # Both histograms in one count: bin b of the clean samples is b, of the noisy ones HIST_BINS + b
    # (f_y = 1 falls in the last bin, as in torch.histc over [0, 1]; the NaN of a diverged epoch, in
    # the first, and the trainer stops the run).
    bins = (f_y * HIST_BINS).long().clamp_(0, HIST_BINS - 1) + HIST_BINS * is_noisy
    counts = torch.bincount(bins, minlength=2 * HIST_BINS).tolist()
    return {
        "train_acc_noisy": shares[0],
        "train_acc_clean": shares[1],
        "memorised": shares[2],
        "flipped_to_true": shares[3],
        "fy_hist_clean": counts[:HIST_BINS],
        "fy_hist_noisy": counts[HIST_BINS:],
    }


def fy_and_prediction(logits: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """f_y (softmax at label y) and the predicted class of each row of logits (N, C). f_y is
    exp(logit_y - logsumexp(logits)), the one entry of each row's softmax that is needed: torch's
    CPU softmax over a last dimension of 10 classes took 0.25 ms for the 1,293 rows of a digits
    epoch (one thread), this 0.07 ms."""
    logits = logits.float()
    f_y = (logits.gather(1, y[:, None]).squeeze(1) - torch.logsumexp(logits, dim=1)).exp()
    return f_y, logits.argmax(dim=1)


# --- one epoch's row, as the trainer assembles it -------------------------------------------
def accuracy(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Share of rows of logits (N, C) whose argmax is y (N,), as a float32 0-d tensor."""
    return (logits.argmax(1) == y).float().mean()


def epoch_train_metrics(
    data: ExperimentData, perm: torch.Tensor, logits_seen: torch.Tensor, train_loss: torch.Tensor
) -> dict:
    """Training-set metrics from the epoch's logits (N, C) in visiting order ``perm`` and its mean
    training loss: put back in index order once, so the labels and the gallery's indices apply
    as they are."""
    logits = torch.empty_like(logits_seen)
    logits[perm] = logits_seen
    metrics = training_pass_metrics(logits, data.y_train, data.y_train_clean, data.is_noisy)
    return {"train_loss": float(train_loss), **metrics, **gallery_metrics(data, logits)}


def gallery_metrics(data: ExperimentData, logits: torch.Tensor) -> dict:
    """f_y (rounded to 4 digits) and the predicted class of the Noise insight gallery's samples
    (``data.gallery_idx``, in that order) from the training set's logits (N, C) in index order."""
    idx = data.gallery_idx
    if idx is None or idx.numel() == 0:
        return {"fy_gallery": [], "pred_gallery": []}
    f_y, pred = fy_and_prediction(logits[idx], data.y_train[idx])
    return {"fy_gallery": [round(v, 4) for v in f_y.tolist()], "pred_gallery": pred.tolist()}


def evaluation_metrics(
    spec: RunSpec, val_logits: torch.Tensor, y_val: torch.Tensor, test_logits: torch.Tensor,
    y_test: torch.Tensor, sum_values=None,
) -> dict:
    """val_acc, test_acc and loss_sum_mean (the loss summed over all labels, mean over the test
    set) from the epoch's validation and test logits, with a single host transfer.
    ``sum_values``: the run's per-sample loss function where the loss's name does not give it
    (the run's ``LossState.sum_values``, e.g. forward correction with its T)."""
    sums = loss_sum(test_logits, sum_values or spec.loss, **({} if sum_values else loss_params(spec)))
    values = torch.stack([accuracy(val_logits, y_val), accuracy(test_logits, y_test), sums.mean()])
    val_acc, test_acc, loss_sum_mean = values.tolist()
    return {"val_acc": val_acc, "test_acc": test_acc, "loss_sum_mean": loss_sum_mean}


def epoch_row(
    spec: RunSpec, epoch: int, train_metrics: dict, evals: dict, lr: float, loss_row: dict,
    seconds: float, gallery_idx: torch.Tensor | None = None, weights: torch.Tensor | None = None,
) -> dict:
    """One epoch's metrics row (keys: EPOCH_KEYS, plus what the loss's state adds); NaN values
    become None. ``loss_row``: the run's ``LossState.row()``: kept, prune_precision and
    prune_recall for truncated Lq (else None), transition_estimate once for forward_est.
    ``weights``: the per-sample weights of a loss state that prunes (1 = kept), for
    kept_gallery: whether each gallery sample (``gallery_idx``) is kept; else None."""
    kept, precision, recall = (loss_row.get(k) for k in ("kept", "prune_precision", "prune_recall"))
    kept_gallery = None
    if weights is not None and gallery_idx is not None:
        kept_gallery = (weights[gallery_idx] > 0).tolist()
    row = {
        "epoch": epoch,
        **train_metrics,
        "val_acc": evals["val_acc"],
        "test_acc": evals["test_acc"],
        "lr": lr,
        "kept": kept,
        "prune_precision": precision,
        "prune_recall": recall,
        "loss_sum_mean": evals["loss_sum_mean"],
        "seconds": seconds,
        "kept_gallery": kept_gallery,
        **loss_row,
    }
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def loss_params(spec: RunSpec) -> dict:
    """The loss's own parameters of a spec, as loss functions take them."""
    return spec.loss_params()


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

"""The training loop of the lab: one entry point, ``train(spec)``, shared by the CLI, the job
supervisor and Ray.

The whole data set lives on the run's device as tensors; a batch is an index slice, augmentation
runs in batch on the device, and nothing in the hot loop synchronises with the host. On CUDA the
model runs channels_last under bf16 autocast.
"""

from __future__ import annotations

import copy
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from gce_core import augment
from gce_core.bounds import loss_sum
from gce_core.checkpoint import load_checkpoint, save_checkpoint
from gce_core.experiment_data import ExperimentData, build_experiment_data
from gce_core.losses import acs_weights, loss_values
from gce_core.metrics import pruning_quality, summarize, training_pass_metrics
from gce_core.models import init_seeded
from gce_core.spec import RunSpec, parse_spec

EVAL_BATCH = 1024
EpochCallback = Callable[[dict], None]
StopCheck = Callable[[], bool]


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda if available else cpu; explicit names are checked for availability."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dev = torch.device(name)
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {name!r} asked for, but CUDA is not available here; use --device cpu")
    return dev


@dataclass
class RunState:
    """Everything that changes during a run; saved whole in each checkpoint."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator  # data order and augmentation draws
    weights: torch.Tensor  # ACS weights per training index, 1 = kept
    epoch: int = 0  # epochs completed
    best_val: float = -1.0
    best_model: dict | None = None  # state_dict at the best validation epoch (truncated Lq only)
    history: list[dict] = field(default_factory=list)
    compiled: torch.nn.Module | None = None  # torch.compile'd view of model, for the training pass

    @property
    def forward_model(self) -> torch.nn.Module:
        return self.compiled if self.compiled is not None else self.model


def _make_optimizer(spec: RunSpec, model: torch.nn.Module) -> torch.optim.Optimizer:
    params = model.parameters()
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay, foreach=True)
    return torch.optim.SGD(
        params, lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay, foreach=True
    )


def new_state(spec: RunSpec, data: ExperimentData, device: torch.device) -> RunState:
    model = init_seeded(spec.model, tuple(data.x_train.shape[1:]), data.num_classes, spec.seed)
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = _make_optimizer(spec, model)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(spec.lr_milestones), gamma=spec.lr_gamma
    )
    generator = torch.Generator().manual_seed(spec.seed + 1)
    weights = torch.ones(data.n_train, device=device)
    return RunState(model, optimizer, scheduler, generator, weights)


def _checkpoint_dict(spec: RunSpec, st: RunState) -> dict:
    return {
        "spec": spec.to_json(),
        "epoch": st.epoch,
        "model": st.model.state_dict(),
        "optimizer": st.optimizer.state_dict(),
        "scheduler": st.scheduler.state_dict(),
        "generator": st.generator.get_state(),
        "weights": st.weights.cpu(),
        "best_val": st.best_val,
        "best_model": st.best_model,
        "history": st.history,
    }


def _restore(st: RunState, saved: dict, device: torch.device) -> None:
    st.model.load_state_dict(saved["model"])
    st.optimizer.load_state_dict(saved["optimizer"])
    st.scheduler.load_state_dict(saved["scheduler"])
    st.generator.set_state(saved["generator"])
    st.weights = saved["weights"].to(device)
    st.epoch, st.best_val = saved["epoch"], saved["best_val"]
    st.best_model, st.history = saved["best_model"], list(saved["history"])


def _autocast(device: torch.device):
    return torch.autocast("cuda", dtype=torch.bfloat16, enabled=device.type == "cuda")


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Logits (N, C) in float32 for images x (N, C, H, W), in eval mode, batch by batch."""
    was_training = model.training
    model.eval()
    out = []
    with _autocast(device):
        for start in range(0, x.shape[0], EVAL_BATCH):
            out.append(model(x[start : start + EVAL_BATCH]).float())
    model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


def evaluate(model, x, y, device) -> tuple[float, torch.Tensor]:
    """(accuracy, logits) of the model on (x, y)."""
    logits = predict_logits(model, x, device)
    return float((logits.argmax(1) == y).float().mean()), logits


def acs_step(spec: RunSpec, st: RunState, data: ExperimentData, device: torch.device) -> None:
    """The w-step of alternative convex search: w_i = 1 iff f_{y_i} > k, with f computed on the
    whole training set (no augmentation) by the best-validation model so far."""
    model = st.model
    if st.best_model is not None:
        model = copy.deepcopy(st.model)
        model.load_state_dict(st.best_model)
    logits = predict_logits(model, data.x_train, device)
    st.weights = acs_weights(logits, data.y_train, spec.k)


def is_prune_epoch(spec: RunSpec, epoch: int) -> bool:
    """Truncated Lq prunes at prune_start, then every prune_every epochs (1-based epochs)."""
    return (
        spec.loss == "truncated_lq"
        and epoch >= spec.prune_start
        and (epoch - spec.prune_start) % spec.prune_every == 0
    )


def train_one_epoch(
    spec: RunSpec,
    st: RunState,
    data: ExperimentData,
    device: torch.device,
    should_stop: StopCheck | None = None,
) -> dict | None:
    """One pass over the training set. Returns the training-set metrics, or None if
    ``should_stop`` asked to stop at a batch boundary (the epoch is then discarded)."""
    n = data.n_train
    perm = torch.randperm(n, generator=st.generator)
    if spec.augment:
        offsets, flips = augment.draw_epoch_params(n, st.generator)
        offsets, flips = offsets[perm].to(device), flips[perm].to(device)
    perm = perm.to(device)
    logits_seen = torch.empty(n, data.num_classes, device=device)
    loss_total = torch.zeros((), device=device)
    model, opt = st.forward_model, st.optimizer
    model.train()
    for start in range(0, n, spec.batch_size):
        if should_stop is not None and should_stop():
            return None
        idx = perm[start : start + spec.batch_size]
        xb = data.x_train[idx]
        if spec.augment:
            sl = slice(start, start + spec.batch_size)
            xb = augment.crop_and_flip(xb, offsets[sl], flips[sl])
        if device.type == "cuda":
            xb = xb.contiguous(memory_format=torch.channels_last)
        with _autocast(device):
            logits = model(xb)
        weights = st.weights[idx] if spec.loss == "truncated_lq" else None
        loss = loss_values(logits, data.y_train[idx], spec.loss, q=spec.q, k=spec.k, weights=weights)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        logits_seen[idx] = logits.detach().float()
        loss_total += loss.detach() * idx.shape[0]
    metrics = training_pass_metrics(logits_seen, data.y_train, data.y_train_clean, data.is_noisy)
    return {"train_loss": float(loss_total) / n, **metrics}


def _epoch_row(spec, st, data, device, train_metrics, lr, started) -> dict:
    val_acc, _ = evaluate(st.model, data.x_val, data.y_val, device)
    test_acc, test_logits = evaluate(st.model, data.x_test, data.y_test, device)
    sums = loss_sum(test_logits, spec.loss, **_loss_params(spec))
    kept = precision = recall = None
    if spec.loss == "truncated_lq":
        kept = int(st.weights.sum())
        precision, recall = pruning_quality(st.weights, data.is_noisy)
    row = {
        "epoch": st.epoch + 1,
        **train_metrics,
        "val_acc": val_acc,
        "test_acc": test_acc,
        "lr": lr,
        "kept": kept,
        "prune_precision": precision,
        "prune_recall": recall,
        "loss_sum_mean": float(sums.mean()),
        "seconds": time.perf_counter() - started,
    }
    return {k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}


def _loss_params(spec: RunSpec) -> dict:
    if spec.loss == "lq":
        return {"q": spec.q}
    if spec.loss == "truncated_lq":
        return {"q": spec.q, "k": spec.k}
    return {}


def train(
    spec: RunSpec | dict,
    on_epoch: EpochCallback | None = None,
    should_stop: StopCheck | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
) -> dict:
    """Train one run. Returns the summary (see metrics.SUMMARY_KEYS) plus run facts.

    on_epoch(row) is called after every completed epoch with its metrics row.
    should_stop() is polled at every batch boundary; when it returns True the run stops, the
    unfinished epoch is discarded and the summary has ``stopped: True``.
    checkpoint_dir: a checkpoint is written there after every epoch; if one is already there
    (same spec), training resumes from it exactly.
    """
    spec = parse_spec(spec)
    device = resolve_device(spec.device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = build_experiment_data(spec, device)
    st = new_state(spec, data, device)
    if checkpoint_dir is not None:
        saved = load_checkpoint(checkpoint_dir, spec.to_json())
        if saved is not None:
            _restore(st, saved, device)
    if spec.compile and device.type == "cuda":
        st.compiled = torch.compile(st.model)
    stopped = False
    while st.epoch < spec.epochs:
        started = time.perf_counter()
        epoch = st.epoch + 1
        if is_prune_epoch(spec, epoch):
            acs_step(spec, st, data, device)
        lr = st.optimizer.param_groups[0]["lr"]
        train_metrics = train_one_epoch(spec, st, data, device, should_stop)
        if train_metrics is None:
            stopped = True
            break
        st.scheduler.step()
        row = _epoch_row(spec, st, data, device, train_metrics, lr, started)
        st.epoch = epoch
        st.history.append(row)
        if row["val_acc"] > st.best_val:
            st.best_val = row["val_acc"]
            if spec.loss == "truncated_lq":
                st.best_model = {k: v.detach().clone() for k, v in st.model.state_dict().items()}
        # Report first, then checkpoint: a consumer never lacks an epoch the checkpoint holds;
        # after a crash in between, the resumed run re-delivers that epoch (dedupe by epoch).
        if on_epoch is not None:
            on_epoch(row)
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, _checkpoint_dict(spec, st))
    return {
        **summarize(st.history),
        "epochs_completed": st.epoch,
        "stopped": stopped,
        "device": str(device),
        "realised_noise_rate": data.realised_rate,
        "loss_formula": spec.loss_formula,
    }

"""The training loop of the lab: one entry point, ``train(spec)``, shared by the CLI, the job
runner and Ray.

Per batch: the model's logits, the run's loss (``losses.make_loss_state``, made once per run
from the registry: the per-sample values of the batch's training indices; a loss with state of
its run, such as truncated Lq's ACS weights or forward correction's T, keeps it there and gets
a call before and after each epoch), autograd's backward and the step of a torch optimiser (SGD with the spec's momentum and weight decay, or Adam). The whole
data set lives on the run's device as tensors; each epoch gathers it once in the epoch's order
and a batch is a slice of that, augmentation runs in batch on the device, and nothing in the
loop waits for the host. On CUDA (``mixed_precision``) the model runs channels_last, under bf16 autocast unless the
spec's ``precision`` is float32 (the paper's arithmetic). With
``compile`` the training forward is torch.compile'd (``compile_model``); torch keeps the compiled
graphs for the life of the process, so a later run of the same architecture and shapes in a
long-lived process compiles nothing. Speed against a plain loop: bench/bench_trainer.py.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from gce_core import augment
from gce_core.checkpoint import load_checkpoint, save_checkpoint
from gce_core.experiment_data import ExperimentData, build_experiment_data, resolve_device
from gce_core.losses import LossState, RunContext, make_loss_state
from gce_core.metrics import (
    accuracy,
    epoch_row,
    epoch_train_metrics,
    evaluation_metrics,
    summarize,
)
from gce_core.models import init_seeded
from gce_core.spec import RunSpec, parse_spec

EVAL_BATCH = 1024
COMPILE_BACKEND_ENV = "GCE_LAB_COMPILE_BACKEND"
# A crash loses at most this much training (a resume re-runs the epochs since the checkpoint,
# with the same numbers). Writing one every epoch took a third of a 25 ms digits epoch.
CHECKPOINT_EVERY_S = 1.0
EpochCallback = Callable[[dict], None]


class Diverged(RuntimeError):
    """The training loss of an epoch was not finite (NaN or infinite): the run cannot go on."""

StopCheck = Callable[[], bool]


def mixed_precision(device: torch.device) -> bool:
    """Whether runs on ``device`` take the accelerator path: channels_last images and models and
    bf16 autocast. True on CUDA. The one switch for both, so tests can run the path on the CPU
    (tests/test_train.py, CPU bf16 autocast)."""
    return device.type == "cuda"


@dataclass
class RunState:
    """Everything that changes during a run (saved whole in each checkpoint, the loss's state
    through its state_dict), and the run's compiled forward, made once per run."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    generator: torch.Generator  # data order and augmentation draws
    loss: LossState  # (logits, targets, training indices) -> per-sample values, and its epoch hooks
    epoch: int = 0  # epochs completed
    best_val: float = -1.0
    history: list[dict] = field(default_factory=list)
    compiled: torch.nn.Module | None = None  # torch.compile'd view of model, for the training pass

    @property
    def forward_model(self) -> torch.nn.Module:
        return self.compiled if self.compiled is not None else self.model


def make_optimizer(spec: RunSpec, params) -> torch.optim.Optimizer:
    """The spec's optimiser over ``params``: SGD (lr, momentum, weight_decay) or Adam (lr,
    weight_decay), torch's fused implementation (one kernel per step; 6% of a digits epoch on
    the CPU against the default for-loop, bench/bench_trainer.py) where the device has it."""
    params = list(params)
    if spec.optimizer == "adam":
        make = functools.partial(torch.optim.Adam, params, lr=spec.lr, weight_decay=spec.weight_decay)
    else:
        make = functools.partial(torch.optim.SGD, params, lr=spec.lr, momentum=spec.momentum,
                                 weight_decay=spec.weight_decay)
    try:
        return make(fused=True)
    except RuntimeError:  # no fused kernel for these parameters' device
        return make()


def make_scheduler(spec: RunSpec, optimizer: torch.optim.Optimizer):
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(spec.lr_milestones), gamma=spec.lr_gamma
    )


def data_generator(spec: RunSpec) -> torch.Generator:
    """The CPU generator of a run's data order and augmentation draws."""
    return torch.Generator().manual_seed(spec.seed + 1)


def new_model(spec: RunSpec, data: ExperimentData, device: torch.device) -> torch.nn.Module:
    """The run's seeded initial model on ``device`` (channels_last on the accelerator path)."""
    model = init_seeded(spec.model, tuple(data.x_train.shape[1:]), data.num_classes, spec.seed)
    model = model.to(device)
    if mixed_precision(device):
        model = model.to(memory_format=torch.channels_last)
    return model


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` torch.compile'd with the backend named by $GCE_LAB_COMPILE_BACKEND (default
    inductor, which on the CPU needs a C++ compiler). Compiling happens at the first call; torch
    then keeps the graphs for the life of the process, and a later model of the same architecture,
    shapes and device passes their guards, so nothing is compiled again
    (tests/test_train.py::test_a_second_compiled_run_in_one_process_compiles_nothing)."""
    return torch.compile(model, backend=os.environ.get(COMPILE_BACKEND_ENV, "inductor"))


def run_context(spec: RunSpec, data: ExperimentData, device: torch.device) -> RunContext:
    """What the run's loss state may see of the run (losses.RunContext)."""
    return RunContext(spec, data.x_train, data.y_train, data.is_noisy, data.num_classes,
                      lambda model: predict_logits(model, data.x_train, device, spec.precision))


def new_state(spec: RunSpec, data: ExperimentData, device: torch.device) -> RunState:
    """A run's state before its first epoch: seeded model, optimiser, schedule, data generator
    and the run's loss (with its state, e.g. truncated Lq's ACS weights, all 1)."""
    model = new_model(spec, data, device)
    optimizer = make_optimizer(spec, model.parameters())
    loss = make_loss_state(spec.loss, run_context(spec, data, device), **spec.loss_params())
    return RunState(model, optimizer, make_scheduler(spec, optimizer), data_generator(spec), loss)


def checkpoint_state(spec: RunSpec, st: RunState) -> dict:
    """What a checkpoint holds for a run (see checkpoint.py); train() resumes from it exactly."""
    return {
        "spec": spec.to_json(),
        "epoch": st.epoch,
        "model": st.model.state_dict(),
        "optimizer": st.optimizer.state_dict(),
        "scheduler": st.scheduler.state_dict(),
        "generator": st.generator.get_state(),
        "loss_state": st.loss.state_dict(),
        "best_val": st.best_val,
        "history": st.history,
    }


def restore_state(st: RunState, saved: dict, device: torch.device) -> None:
    """Load a checkpoint written by :func:`checkpoint_state` into a fresh state of the same spec."""
    st.model.load_state_dict(saved["model"])
    st.optimizer.load_state_dict(saved["optimizer"])
    st.scheduler.load_state_dict(saved["scheduler"])
    st.generator.set_state(saved["generator"])
    # (a checkpoint written before the loss-state hook kept truncated Lq's state at the top level)
    loss_state = saved.get("loss_state", {"weights": saved.get("weights"), "best_model": saved.get("best_model")})
    if loss_state:
        st.loss.load_state_dict(loss_state)
    st.epoch, st.best_val = saved["epoch"], saved["best_val"]
    st.history = list(saved["history"])


def device_autocast(device: torch.device, precision: str = "bf16"):
    """bf16 autocast on the accelerator path (``mixed_precision``) when the run's ``precision``
    (RunSpec.precision) is "bf16"; a no-op context for "float32" and off the accelerator path
    (a disabled torch.autocast still costs about 2% of a digits epoch)."""
    if precision == "float32" or not mixed_precision(device):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


def effective_precision(spec: RunSpec, device: torch.device) -> str:
    """The arithmetic a run of ``spec`` on ``device`` used: its precision on the accelerator
    path, float32 elsewhere. Recorded in the run's summary."""
    return spec.precision if mixed_precision(device) else "float32"


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, device: torch.device,
                   precision: str = "bf16") -> torch.Tensor:
    """Logits (N, C) in float32 for images x (N, C, H, W), in eval mode, EVAL_BATCH at a time."""
    was_training = model.training
    model.eval()
    try:
        with device_autocast(device, precision):
            chunks = [model(x[s : s + EVAL_BATCH]).float() for s in range(0, x.shape[0], EVAL_BATCH)]
    finally:
        model.train(was_training)
    return torch.cat(chunks) if chunks else torch.empty(0, device=device)


def evaluate(model, x, y, device) -> tuple[float, torch.Tensor]:
    """(accuracy, logits) of the model on (x, y)."""
    logits = predict_logits(model, x, device)
    return float(accuracy(logits, y)), logits


def train_one_epoch(
    spec: RunSpec,
    st: RunState,
    data: ExperimentData,
    device: torch.device,
    should_stop: StopCheck | None = None,
) -> dict | None:
    """One pass over the training set in the order drawn from st.generator. Returns the
    training-set metrics (from the logits of the pass itself), or None if ``should_stop`` asked
    to stop at a batch boundary (the epoch is then discarded)."""
    n, bs = data.n_train, spec.batch_size
    perm = torch.randperm(n, generator=st.generator).to(device)
    # The epoch's order gathered once (a transient copy of the training set); batches are slices.
    x, y = data.x_train[perm], data.y_train[perm]
    if spec.augment:  # drawn after the order, per training index
        offsets, flips = (t.to(device)[perm] for t in augment.draw_epoch_params(n, st.generator))
    channels_last = mixed_precision(device)
    autocast = device_autocast(device, spec.precision)  # decided once; entered per batch
    seen = []  # each batch's (logits, per-sample loss values), detached, in visiting order
    model, opt = st.forward_model, st.optimizer
    model.train()
    for start in range(0, n, bs):
        if should_stop is not None and should_stop():
            return None
        batch = slice(start, start + bs)
        xb = x[batch]
        if spec.augment:
            xb = augment.crop_and_flip(xb, offsets[batch], flips[batch])
        if channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        with autocast:
            logits = model(xb)
        values = st.loss(logits, y[batch], perm[batch])
        opt.zero_grad(set_to_none=True)
        values.mean().backward()
        opt.step()
        seen.append((logits.detach(), values.detach()))
    logits_seen, values_seen = (torch.cat(parts) for parts in zip(*seen, strict=True))
    return epoch_train_metrics(data, perm, logits_seen, values_seen.mean())


def evaluate_epoch(spec: RunSpec, st: RunState, data: ExperimentData, device: torch.device) -> dict:
    """val_acc, test_acc and loss_sum_mean of the model after an epoch (validation and test
    images in one pass)."""
    logits = predict_logits(st.model, data.x_eval, device, spec.precision)
    val_logits, test_logits = logits[: data.n_val], logits[data.n_val :]
    return evaluation_metrics(spec, val_logits, data.y_val, test_logits, data.y_test, st.loss.sum_values)


def record_epoch(spec: RunSpec, st: RunState, row: dict) -> None:
    """Book an epoch's row into the state: epoch count, history, best validation, and tell the
    loss's state whether the epoch was the best so far (truncated Lq keeps that model for its
    next w-step)."""
    st.epoch = row["epoch"]
    st.history.append(row)
    improved = row["val_acc"] > st.best_val
    if improved:
        st.best_val = row["val_acc"]
    st.loss.end_epoch(improved, st.model)


def run_epochs(
    spec: RunSpec,
    st: RunState,
    data: ExperimentData,
    device: torch.device,
    until_epoch: int,
    on_epoch: EpochCallback | None = None,
    should_stop: StopCheck | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    before_checkpoint: Callable[[], None] | None = None,
) -> bool:
    """Train from st.epoch up to ``until_epoch``, reporting every epoch and checkpointing the
    first, the last, and any epoch that ends CHECKPOINT_EVERY_S or more after the last checkpoint
    (calling ``before_checkpoint`` first). Returns True if ``should_stop`` stopped it."""
    saved_at = None
    while st.epoch < until_epoch:
        started = time.perf_counter()
        st.loss.start_epoch(st.epoch + 1, st.model)
        lr = st.optimizer.param_groups[0]["lr"]
        train_metrics = train_one_epoch(spec, st, data, device, should_stop)
        if train_metrics is None:
            return True
        if not math.isfinite(train_metrics["train_loss"]):  # nothing after this epoch would mean anything
            raise Diverged(f"diverged at epoch {st.epoch + 1} (training loss {train_metrics['train_loss']}): "
                           f"lower the learning rate (lr {spec.lr:g}), or choose a loss parameter further "
                           f"from its range's end")
        st.scheduler.step()
        evals = evaluate_epoch(spec, st, data, device)
        seconds = time.perf_counter() - started
        # a loss state that prunes (truncated Lq's ACS) exposes its per-sample weights
        row = epoch_row(spec, st.epoch + 1, train_metrics, evals, lr, st.loss.row(), seconds,
                        data.gallery_idx, getattr(st.loss, "weights", None))
        record_epoch(spec, st, row)
        # Report first, then checkpoint: a consumer never lacks an epoch the checkpoint holds (one
        # that holds rows back writes them in before_checkpoint); after a crash in between, the
        # resumed run re-delivers that epoch (dedupe by epoch).
        if on_epoch is not None:
            on_epoch(row)
        now = time.perf_counter()
        due = saved_at is None or now - saved_at >= CHECKPOINT_EVERY_S or st.epoch == until_epoch
        if checkpoint_dir is not None and due:
            if before_checkpoint is not None:
                before_checkpoint()
            save_checkpoint(checkpoint_dir, checkpoint_state(spec, st))
            saved_at = now
    return False


def run_summary(spec: RunSpec, st: RunState, data: ExperimentData, device, stopped: bool) -> dict:
    """The summary train() returns: metrics.summarize of the history plus run facts."""
    return {
        **summarize(st.history),
        "epochs_completed": st.epoch,
        "stopped": stopped,
        "device": str(device),
        "precision": effective_precision(spec, device),
        "realised_noise_rate": data.realised_rate,
        "loss_formula": spec.loss_formula,
    }


def train(
    spec: RunSpec | dict,
    on_epoch: EpochCallback | None = None,
    should_stop: StopCheck | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
    before_checkpoint: Callable[[], None] | None = None,
) -> dict:
    """Train one run. Returns the summary (see metrics.SUMMARY_KEYS) plus run facts.

    on_epoch(row) is called after every completed epoch with its metrics row.
    should_stop() is polled at every batch boundary; when it returns True the run stops, the
    unfinished epoch is discarded and the summary has ``stopped: True``.
    checkpoint_dir: a checkpoint is written there after the first and the last epoch and at most
    every CHECKPOINT_EVERY_S in between; if one is already there (same spec), training resumes
    from it exactly. before_checkpoint() is called before each one is written (a consumer that
    holds rows of on_epoch back writes them then, so no checkpoint holds an epoch it lacks).
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
            restore_state(st, saved, device)
    if spec.compile:
        st.compiled = compile_model(st.model)
    stopped = run_epochs(spec, st, data, device, spec.epochs, on_epoch, should_stop, checkpoint_dir,
                         before_checkpoint)
    return run_summary(spec, st, data, device, stopped)

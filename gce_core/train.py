"""The training loop of the lab: one entry point, ``train(spec)``, shared by the CLI, the job
supervisor and Ray.

The whole data set lives on the run's device as tensors; a batch is an index slice, augmentation
runs in batch on the device, and nothing in the hot loop synchronises with the host. On CUDA the
model runs channels_last under bf16 autocast. With ``compile`` the training forward is
torch.compile'd (``compile_model``); torch keeps the compiled graphs for the life of the process,
so later runs of the same architecture and shapes in one process (the job runner trains a group's
compile runs in turn) do not compile again.

Speed (bench/bench_trainer.py, docs/BENCHMARKS.md): per batch the loop runs the model, the loss
with its backward (losses: Lq's gradient in closed form, bitwise autograd's), and the optimiser
step (optim.FlatSGD: torch's fused SGD kernel once on a flat buffer, bitwise torch's). On the
CPU a Flatten/Linear/ReLU model (the mlp) skips autograd altogether (chain.Chain: the same
products, gradients written into the optimiser's buffer, its batches in inference mode;
evaluation runs the same chain), and its epochs run at the thread count that is fastest at the
moment (threads.ThreadTuner; the chain is made thread-invariant first, so this cannot change a
number). Labels, ACS weights, the per-sample logits and (for a training set up to
PREPERMUTE_MAX_BYTES) the images live in epoch order, so a batch slices them instead of
gathering. The epoch's metrics and evaluation (inference mode) are a few dozen ops and one
host transfer each.
"""

from __future__ import annotations

import copy
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from gce_core import augment
from gce_core.chain import Chain, layer_chain
from gce_core.checkpoint import load_checkpoint, save_checkpoint
from gce_core.experiment_data import ExperimentData, build_experiment_data
from gce_core.losses import acs_weights, backward_loss, loss_and_grad
from gce_core.metrics import (
    accuracy,
    epoch_row,
    epoch_train_metrics,
    evaluation_metrics,
    summarize,
)
from gce_core.models import init_seeded
from gce_core.optim import FlatSGD
from gce_core.spec import RunSpec, parse_spec
from gce_core.threads import (
    GradOfLogits,
    ThreadTuner,
    candidate_counts,
    make_thread_invariant,
    tuned_epoch,
)

EVAL_BATCH = 1024
# A training set up to this size is laid out in each epoch's order once (one gather), so that a
# batch is a view; larger ones are gathered batch by batch (no second copy of, say, CIFAR).
PREPERMUTE_MAX_BYTES = 64 * 2**20
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


def mixed_precision(device: torch.device) -> bool:
    """Whether runs on ``device`` take the accelerator path: channels_last images and models, bf16
    autocast, every model through autograd (no CPU chain). True on CUDA. The one switch for
    all of it, so tests can run the path on the CPU (tests/test_train.py, CPU bf16 autocast)."""
    return device.type == "cuda"


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
    stepper: FlatSGD | None = None  # runs the optimizer's step (flat buffers where it can)
    chain: Chain | None = None  # autograd-free step for Flatten/Linear/ReLU models on the CPU
    chain_grads: dict | None = None  # parameter name -> its gradient in the stepper's buffer
    tuner: ThreadTuner | None = None  # picks each epoch's thread count (a thread-invariant chain)

    def __post_init__(self):
        if self.stepper is None:
            self.stepper = FlatSGD(self.optimizer)
        steps = layer_chain(self.model)
        plain = not any(mixed_precision(p.device) for p in self.model.parameters())
        if self.chain is None and steps is not None and plain and self.stepper.flat:
            named = list(self.model.named_parameters())
            self.chain = Chain(steps, dict(named))
            self.chain_grads = self.stepper.grad_views(named)

    @property
    def forward_model(self) -> torch.nn.Module:
        return self.compiled if self.compiled is not None else self.model


def make_optimizer(spec: RunSpec, params) -> torch.optim.Optimizer:
    """The spec's optimiser over ``params``, with element-wise arithmetic that is the same for a
    tensor alone or stacked with others (fused runs stack K runs' tensors): SGD's fused kernel
    (one pass per step; optim.FlatSGD runs it on its flat buffer) where the device and torch
    have it, else SGD's foreach path; Adam's foreach path."""
    params = list(params)
    if spec.optimizer == "adam":
        return torch.optim.Adam(params, lr=spec.lr, weight_decay=spec.weight_decay, foreach=True)
    sgd = dict(lr=spec.lr, momentum=spec.momentum, weight_decay=spec.weight_decay)
    try:
        return torch.optim.SGD(params, **sgd, fused=True)
    except RuntimeError:  # no fused SGD kernel for these parameters' device
        return torch.optim.SGD(params, **sgd, foreach=True)


def make_scheduler(spec: RunSpec, optimizer: torch.optim.Optimizer):
    return torch.optim.lr_scheduler.MultiStepLR(
        optimizer, milestones=list(spec.lr_milestones), gamma=spec.lr_gamma
    )


def data_generator(spec: RunSpec) -> torch.Generator:
    """The CPU generator of a run's data order and augmentation draws."""
    return torch.Generator().manual_seed(spec.seed + 1)


def new_model(spec: RunSpec, data: ExperimentData, device: torch.device) -> torch.nn.Module:
    """The run's seeded initial model on ``device`` (channels_last on CUDA)."""
    model = init_seeded(spec.model, tuple(data.x_train.shape[1:]), data.num_classes, spec.seed)
    model = model.to(device)
    if mixed_precision(device):
        model = model.to(memory_format=torch.channels_last)
    return model


COMPILE_BACKEND_ENV = "GCE_LAB_COMPILE_BACKEND"


def compile_model(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` torch.compile'd with the backend named by $GCE_LAB_COMPILE_BACKEND (default
    inductor, which on the CPU needs a C++ compiler). Compiling happens at the first call; torch
    then keeps the graphs for the life of the process, and a later model of the same architecture,
    shapes and device passes their guards, so nothing is compiled again
    (tests/test_train.py::test_a_second_compiled_run_in_one_process_compiles_nothing)."""
    return torch.compile(model, backend=os.environ.get(COMPILE_BACKEND_ENV, "inductor"))


def new_state(spec: RunSpec, data: ExperimentData, device: torch.device) -> RunState:
    model = new_model(spec, data, device)
    optimizer = make_optimizer(spec, model.parameters())
    scheduler = make_scheduler(spec, optimizer)
    weights = torch.ones(data.n_train, device=device)
    st = RunState(model, optimizer, scheduler, data_generator(spec), weights)
    if st.chain is not None:

        def grad_of_logits(logits: torch.Tensor) -> torch.Tensor:
            targets = torch.arange(logits.shape[0]) % data.num_classes
            return loss_and_grad(logits, targets, spec.loss, q=spec.q, k=spec.k)[1]

        st.tuner = thread_tuner(st.chain, data, spec.batch_size, grad_of_logits)
    return st


def _chunk_rows(n: int, chunk: int) -> set[int]:
    """The row counts of ``n`` rows taken ``chunk`` at a time."""
    return {min(n, chunk), n % chunk} - {0}


def thread_tuner(
    chain: Chain, data: ExperimentData, batch_size: int, grad_of_logits: GradOfLogits
) -> ThreadTuner | None:
    """A ThreadTuner over the counts up to torch's current thread count, if ``chain`` (one run's
    or a fused group's) is made thread-invariant at every shape a run on ``data`` uses: its
    training batches, evaluation chunks and the w-step's pass over the training set. Else None:
    the run keeps the current count. grad_of_logits: see threads.make_thread_invariant."""
    counts = candidate_counts(torch.get_num_threads())
    if len(counts) < 2:
        return None
    n = data.n_train
    eval_rows = set().union(*(_chunk_rows(m, EVAL_BATCH) for m in (n, data.x_val.shape[0], data.x_test.shape[0])))
    shape = tuple(data.x_train.shape[1:])
    ok = make_thread_invariant(chain, shape, _chunk_rows(n, batch_size), eval_rows, counts, grad_of_logits)
    return ThreadTuner(counts) if ok else None


def checkpoint_state(spec: RunSpec, st: RunState) -> dict:
    """What a checkpoint holds for a run (see checkpoint.py); train() resumes from it exactly."""
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


def restore_state(st: RunState, saved: dict, device: torch.device) -> None:
    """Load a checkpoint written by :func:`checkpoint_state` into a fresh state of the same spec."""
    st.model.load_state_dict(saved["model"])
    st.optimizer.load_state_dict(saved["optimizer"])
    st.scheduler.load_state_dict(saved["scheduler"])
    st.stepper.resync()
    st.generator.set_state(saved["generator"])
    st.weights = saved["weights"].to(device)
    st.epoch, st.best_val = saved["epoch"], saved["best_val"]
    st.best_model, st.history = saved["best_model"], list(saved["history"])


_checkpoint_dict, _restore = checkpoint_state, restore_state  # earlier private names


def device_autocast(device: torch.device):
    """bf16 autocast on CUDA (``mixed_precision``), a no-op context elsewhere."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=mixed_precision(device))


def _forward_eval(model: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Logits (N, C) float32 of x, model already in eval mode (or a Chain's forward), grad off."""
    if x.shape[0] == 0:
        return torch.empty(0)
    with device_autocast(device):
        if x.shape[0] <= EVAL_BATCH:
            return model(x).float()
        return torch.cat(
            [model(x[s : s + EVAL_BATCH]).float() for s in range(0, x.shape[0], EVAL_BATCH)]
        )


@torch.no_grad()
def predict_logits(model: torch.nn.Module, x: torch.Tensor, device: torch.device) -> torch.Tensor:
    """Logits (N, C) in float32 for images x (N, C, H, W), in eval mode, batch by batch."""
    was_training = model.training
    model.eval()
    try:
        return _forward_eval(model, x, device)
    finally:
        model.train(was_training)


def evaluate(model, x, y, device) -> tuple[float, torch.Tensor]:
    """(accuracy, logits) of the model on (x, y)."""
    logits = predict_logits(model, x, device)
    return float(accuracy(logits, y)), logits


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


@dataclass
class EpochPlan:
    """One epoch's data order and draws, with per-sample arrays already in that order, so a
    batch is a slice of each (index, labels, weights, augmentation) and needs no gather."""

    perm: torch.Tensor  # (N,) training indices in visiting order, on the device
    y: torch.Tensor  # (N,) noisy labels in visiting order
    weights: torch.Tensor | None  # (N,) ACS weights in visiting order (truncated Lq only)
    offsets: torch.Tensor | None  # (N, 2) crop offsets (augment only)
    flips: torch.Tensor | None  # (N,) flip flags (augment only)
    x: torch.Tensor | None = None  # (N, ...) the images in visiting order (small sets only)


def plan_epoch(
    spec: RunSpec, data: ExperimentData, generator: torch.Generator, weights: torch.Tensor,
    device: torch.device, *, with_images: bool = True,
) -> EpochPlan:
    """Draw the epoch's order (and augmentation) from ``generator``, in the trainer's fixed order.
    ``with_images``: also lay a small training set out in that order (plan.x); the fused trainer,
    which gathers its own stacked batches, says False."""
    n = data.n_train
    perm = torch.randperm(n, generator=generator)
    offsets = flips = None
    if spec.augment:
        offsets, flips = augment.draw_epoch_params(n, generator)
        offsets, flips = offsets[perm].to(device), flips[perm].to(device)
    perm = perm.to(device)
    w = weights[perm] if spec.loss == "truncated_lq" else None
    x = None
    if with_images and data.x_train.numel() * data.x_train.element_size() <= PREPERMUTE_MAX_BYTES:
        x = data.x_train[perm]
    return EpochPlan(perm, data.y_train[perm], w, offsets, flips, x)


def batch_images(
    spec: RunSpec, data: ExperimentData, plan: EpochPlan, sl: slice, device: torch.device
) -> torch.Tensor:
    """The (augmented) images of the batch at slice ``sl`` of the epoch."""
    xb = plan.x[sl] if plan.x is not None else data.x_train[plan.perm[sl]]
    if spec.augment:
        xb = augment.crop_and_flip(xb, plan.offsets[sl], plan.flips[sl])
    if mixed_precision(device):
        xb = xb.contiguous(memory_format=torch.channels_last)
    return xb


def train_one_epoch(
    spec: RunSpec,
    st: RunState,
    data: ExperimentData,
    device: torch.device,
    should_stop: StopCheck | None = None,
) -> dict | None:
    """One pass over the training set. Returns the training-set metrics, or None if
    ``should_stop`` asked to stop at a batch boundary (the epoch is then discarded)."""
    n, bs = data.n_train, spec.batch_size
    plan = plan_epoch(spec, data, st.generator, st.weights, device)
    logits_seen = torch.empty(n, data.num_classes, device=device)  # in visiting order
    loss_total = torch.zeros((), device=device)
    model, opt = st.forward_model, st.stepper
    loss_kw = {"q": spec.q, "k": spec.k}
    if st.chain is None:  # a chain has no train/eval behaviour
        model.train()
    # A chain's step never needs autograd: inference mode skips its per-op bookkeeping.
    with torch.inference_mode(st.chain is not None):
        for start in range(0, n, bs):
            if should_stop is not None and should_stop():
                return None
            sl = slice(start, start + bs)
            xb = batch_images(spec, data, plan, sl, device)
            weights = plan.weights[sl] if plan.weights is not None else None
            if st.chain is not None:
                logits, tape = st.chain.forward(xb, out=logits_seen[sl])
                loss, dlogits = loss_and_grad(logits, plan.y[sl], spec.loss, weights=weights, **loss_kw)
                st.chain.backward(tape, dlogits, st.chain_grads)
            else:
                with device_autocast(device):
                    logits = model(xb)
                opt.zero_grad()
                loss = backward_loss(logits, plan.y[sl], spec.loss, weights=weights, **loss_kw)
                logits_seen[sl] = logits.detach()
            opt.step()
            loss_total.add_(loss, alpha=xb.shape[0])
    return epoch_train_metrics(data, plan.perm, logits_seen, loss_total)


@torch.inference_mode()
def _evaluate_epoch(spec: RunSpec, st: RunState, data: ExperimentData, device) -> dict:
    model = st.model
    # A chain model's forward without nn.Module's call machinery: the same products, bitwise
    # (and no train/eval behaviour to switch).
    net = model if st.chain is None else (lambda x: st.chain.forward(x, keep=False))
    if st.chain is None:
        model.eval()
    val_logits = _forward_eval(net, data.x_val, device)
    test_logits = _forward_eval(net, data.x_test, device)
    if st.chain is None:
        model.train()
    return evaluation_metrics(spec, val_logits, data.y_val, test_logits, data.y_test)


def _epoch_row(spec, st, data, device, train_metrics, lr, started) -> dict:
    evals = _evaluate_epoch(spec, st, data, device)
    seconds = time.perf_counter() - started
    return epoch_row(spec, st.epoch + 1, train_metrics, evals, lr, st.weights, data.is_noisy, seconds)


def record_epoch(spec: RunSpec, st: RunState, row: dict) -> None:
    """Book an epoch's row into the state: epoch count, history, best validation (and, for
    truncated Lq, the best model that the next w-step uses)."""
    st.epoch = row["epoch"]
    st.history.append(row)
    if row["val_acc"] > st.best_val:
        st.best_val = row["val_acc"]
        if spec.loss == "truncated_lq":
            st.best_model = {k: v.detach().clone() for k, v in st.model.state_dict().items()}


def run_epochs(
    spec: RunSpec,
    st: RunState,
    data: ExperimentData,
    device: torch.device,
    until_epoch: int,
    on_epoch: EpochCallback | None = None,
    should_stop: StopCheck | None = None,
    checkpoint_dir: str | os.PathLike | None = None,
) -> bool:
    """Train from st.epoch up to ``until_epoch`` (reporting and checkpointing every epoch).
    Returns True if ``should_stop`` stopped it."""
    while st.epoch < until_epoch:
        with tuned_epoch(st.tuner):
            started = time.perf_counter()
            if is_prune_epoch(spec, st.epoch + 1):
                acs_step(spec, st, data, device)
            lr = st.optimizer.param_groups[0]["lr"]
            train_metrics = train_one_epoch(spec, st, data, device, should_stop)
            if train_metrics is None:
                return True
            st.scheduler.step()
            row = _epoch_row(spec, st, data, device, train_metrics, lr, started)
        record_epoch(spec, st, row)
        # Report first, then checkpoint: a consumer never lacks an epoch the checkpoint holds;
        # after a crash in between, the resumed run re-delivers that epoch (dedupe by epoch).
        if on_epoch is not None:
            on_epoch(row)
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, checkpoint_state(spec, st))
    return False


def run_summary(spec: RunSpec, st: RunState, data: ExperimentData, device, stopped: bool) -> dict:
    """The summary train() returns: metrics.summarize of the history plus run facts."""
    return {
        **summarize(st.history),
        "epochs_completed": st.epoch,
        "stopped": stopped,
        "device": str(device),
        "realised_noise_rate": data.realised_rate,
        "loss_formula": spec.loss_formula,
    }


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
            restore_state(st, saved, device)
    if spec.compile and st.chain is None:  # the CPU chain (mlp) has no module forward to compile
        st.compiled = compile_model(st.model)
    stopped = run_epochs(spec, st, data, device, spec.epochs, on_epoch, should_stop, checkpoint_dir)
    return run_summary(spec, st, data, device, stopped)

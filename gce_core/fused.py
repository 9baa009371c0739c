"""Fused multi-run training: K runs that share data set and architecture, trained as one job.

A q sweep, or losses x seeds, on the same data and network: every batch runs the K networks as
one stacked network (weights (K, out, in), one batched matrix product per layer), each run with
its own labels, noise, seed, loss and metrics. Each run sees exactly what it would see alone under
``train()``: its own data order and augmentation draws (its own generator), initial weights,
noisy labels, validation split and ACS weights. Its loss and gradient are bitwise what it gets
alone (losses.stacked_loss_and_grad), and the optimiser applies SGD's (or Adam's) element-wise
arithmetic to the stacked tensors, for each element the arithmetic of the run alone. Only the
batched matrix products may round differently from the single ones (rarely, in the last bit;
tests hold fused rows to train()'s within 1e-4).

What can be fused (``can_fuse`` says why not otherwise): specs that differ only in
``FUSABLE_DIFFERENCES``; a model that is a chain of Flatten / Linear / ReLU layers (the lab's
``mlp``). Models with BatchNorm (cnn, resnet18, resnet34) keep running statistics per run, which
this trainer does not stack: train them one by one. ``compile=True`` is refused (nothing here is
compiled).

Each run gets its own checkpoint, in ``train()``'s format, in its own folder: a fused run can be
resumed fused, or alone by ``train()``. If the group's checkpoints are at different epochs (a crash
between two writes), the runs behind first catch up alone, then the group goes on fused.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from gce_core import augment
from gce_core.chain import Chain, layer_chain
from gce_core.checkpoint import load_checkpoint, save_checkpoint
from gce_core.experiment_data import ExperimentData, build_experiment_data
from gce_core.fusable import FUSABLE_DIFFERENCES
from gce_core.losses import stacked_loss_and_grad
from gce_core.metrics import epoch_row, epoch_train_metrics, evaluation_metrics
from gce_core.models import build_model, has_batch_norm
from gce_core.optim import FlatSGD
from gce_core.spec import RunSpec, parse_spec
from gce_core.threads import ThreadTuner, tuned_epoch
from gce_core.train import (
    EVAL_BATCH,
    RunState,
    acs_step,
    checkpoint_state,
    device_autocast,
    is_prune_epoch,
    make_optimizer,
    make_scheduler,
    mixed_precision,
    new_state,
    plan_epoch,
    record_epoch,
    resolve_device,
    restore_state,
    run_epochs,
    run_summary,
    thread_tuner,
)

RunEpochCallback = Callable[[int, dict], None]


# --- what can be fused ---------------------------------------------------------------------
def _meta_model(spec: RunSpec) -> nn.Module:
    from gce_core.data import dataset_info

    info = dataset_info(spec.dataset)
    with torch.device("meta"):
        return build_model(spec.model, info.image_shape, info.num_classes)


def can_fuse(specs: Sequence[RunSpec | dict]) -> tuple[bool, str]:
    """(True, "") if ``train_fused`` can train these specs as one job, else (False, why).

    They must differ only in FUSABLE_DIFFERENCES, use a Flatten / Linear / ReLU model (mlp; not the
    BatchNorm models cnn, resnet18, resnet34) and not ask for compile.
    """
    if len(specs) == 0:
        return False, "no runs given"
    specs = [parse_spec(s) for s in specs]
    first = specs[0].to_dict()
    for i, spec in enumerate(specs[1:], start=1):
        other = spec.to_dict()
        for key, value in first.items():
            if key not in FUSABLE_DIFFERENCES and other[key] != value:
                return False, (
                    f"run {i} differs from run 0 in {key!r} ({other[key]!r} vs {value!r}); fused "
                    f"runs may differ only in: {', '.join(FUSABLE_DIFFERENCES)}"
                )
    spec = specs[0]
    model = _meta_model(spec)
    if has_batch_norm(model):
        return False, (
            f"model {spec.model!r} has BatchNorm, whose running statistics the fused trainer does "
            "not stack; train these runs one by one (only Flatten/Linear/ReLU models such as "
            "'mlp' are fused)"
        )
    if layer_chain(model) is None:
        return False, f"model {spec.model!r} is not a Flatten/Linear/ReLU chain (only 'mlp' is fused)"
    if spec.compile:
        return False, "compile=True: the fused trainer does not torch.compile; set compile to false"
    return True, ""


# --- the stacked network ---------------------------------------------------------------------
def _stack(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    return torch.stack([t.detach() for t in tensors])


class _StackedLinear(torch.autograd.Function):
    """K linear layers at once: h (K, B, in), weight (K, out, in), bias (K, out) or None.

    The backward runs, per run, the products autograd runs for a single ``F.linear`` (grad of the
    weight as grad^T @ input, out x in), so each run's gradient is computed as it is alone and
    lands contiguous, ready for the optimiser's flat buffer.
    """

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda")
    def forward(ctx, h, weight, bias):
        ctx.save_for_backward(h, weight)
        ctx.has_bias = bias is not None
        if bias is None:
            return torch.bmm(h, weight.transpose(1, 2))
        return torch.baddbmm(bias[:, None, :], h, weight.transpose(1, 2))

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    def backward(ctx, grad):
        h, weight = ctx.saved_tensors
        grad_h = torch.bmm(grad, weight.to(grad.dtype)) if ctx.needs_input_grad[0] else None
        grad_w = torch.bmm(grad.transpose(1, 2), h.to(grad.dtype))
        grad_b = grad.sum(1) if ctx.has_bias else None
        return grad_h, grad_w, grad_b


class StackedChain:
    """K copies of a Flatten/Linear/ReLU chain as stacked leaf tensors ``params`` (name ->
    (K, ...)), named as the single model's state_dict keys."""

    def __init__(self, steps: list[tuple[str, str]], models: Sequence[nn.Module]):
        self.steps = steps
        names = [name for name, _ in models[0].named_parameters()]
        per_run = [dict(m.named_parameters()) for m in models]
        self.params = {n: _stack([p[n] for p in per_run]).requires_grad_() for n in names}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        """x (K, B, C, H, W) -> logits (K, B, classes)."""
        h = x
        for kind, name in self.steps:
            if kind == "flatten":
                h = h.flatten(2)
            elif kind == "relu":
                h = torch.relu(h)
            else:
                weight, bias = self.params[name + ".weight"], self.params.get(name + ".bias")
                h = _StackedLinear.apply(h, weight, bias)
        return h

    def copy_run_into(self, k: int, model: nn.Module) -> None:
        """Write run k's current weights into its own (unstacked) model."""
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.copy_(self.params[name][k])


# --- the group -------------------------------------------------------------------------------
class FusedGroup:
    """The K runs' shared training state: stacked network, optimiser, scheduler and data.

    The per-run ``RunState``s stay the record of each run (generator, ACS weights, best
    validation, history) and receive the stacked weights and optimiser state when a checkpoint
    or a w-step needs them.
    """

    def __init__(self, specs, states: list[RunState], datas: list[ExperimentData], device):
        self.specs, self.states, self.datas, self.device = specs, states, datas, device
        self.k = len(specs)
        self.net = StackedChain(layer_chain(states[0].model), [s.model for s in states])
        params = list(self.net.params.values())
        self.optimizer = make_optimizer(specs[0], params)
        self._stack_optimizer_state()
        self.stepper = FlatSGD(self.optimizer, runs=self.k)
        # On the CPU the stacked chain steps without autograd (chain.Chain), as train() does;
        # on CUDA it goes through autograd under bf16 autocast, as train() does there.
        self.chain = self.chain_grads = None
        if not mixed_precision(device) and self.stepper.flat:
            self.chain = Chain(self.net.steps, self.net.params)
            self.chain_grads = self.stepper.grad_views(list(self.net.params.items()))
        self.tuner = self._thread_tuner()
        self.scheduler = make_scheduler(specs[0], self.optimizer)
        self.scheduler.load_state_dict(states[0].scheduler.state_dict())
        self.shared_x = all(
            torch.equal(d.x_train, datas[0].x_train) and torch.equal(d.x_val, datas[0].x_val)
            and torch.equal(d.x_test, datas[0].x_test)
            for d in datas
        )
        if self.shared_x:  # same images for every run (same seed, no open-set noise): one copy
            self.x_train = datas[0].x_train  # (N, ...), indexed by (K, B) index rows
            self.x_val, self.x_test = datas[0].x_val[None], datas[0].x_test[None]
        else:
            self.x_train = _stack([d.x_train for d in datas])  # (K, N, ...)
            self.x_val = _stack([d.x_val for d in datas])
            self.x_test = _stack([d.x_test for d in datas])
        self.run_index = torch.arange(self.k, device=device)[:, None]

    @property
    def epoch(self) -> int:
        return self.states[0].epoch

    def _thread_tuner(self) -> ThreadTuner | None:
        """Each epoch's thread count, as train() picks it: only if the stacked chain, and every
        run's own chain (its w-step's forward), give the same bits at every count."""
        if self.chain is None or any(st.tuner is None for st in self.states):
            return None
        losses = [(s.loss, s.q, s.k) for s in self.specs]
        classes = self.datas[0].num_classes

        def grad_of_logits(logits: torch.Tensor) -> torch.Tensor:
            targets = (torch.arange(logits.shape[1]) % classes).expand(self.k, -1)
            return stacked_loss_and_grad(logits, targets, losses, torch.ones(targets.shape))[1]

        return thread_tuner(self.chain, self.datas[0], self.specs[0].batch_size, grad_of_logits)

    def _param_pairs(self, k: int):
        run_params = dict(self.states[k].model.named_parameters())
        return [(run_params[name], stacked) for name, stacked in self.net.params.items()]

    def _stack_optimizer_state(self) -> None:
        """Optimiser state and hyper-parameters of the runs (after a resume) onto the stack."""
        run_opts = [s.optimizer for s in self.states]
        group, run_group = self.optimizer.param_groups[0], run_opts[0].param_groups[0]
        for key in ("lr", "initial_lr"):
            if key in run_group:
                group[key] = run_group[key]
        for name, stacked in self.net.params.items():
            per_run = [opt.state.get(dict(s.model.named_parameters())[name], {})
                       for opt, s in zip(run_opts, self.states, strict=True)]
            if not per_run[0]:
                continue
            self.optimizer.state[stacked] = {
                key: _stack([st[key] for st in per_run]) if _is_per_element(value, stacked[0])
                else value.clone() if torch.is_tensor(value) else value
                for key, value in per_run[0].items()
            }

    def sync_run(self, k: int) -> None:
        """Give run k's own state the group's current weights, optimiser state and schedule."""
        st = self.states[k]
        self.net.copy_run_into(k, st.model)
        run_opt = st.optimizer
        run_opt.param_groups[0]["lr"] = self.optimizer.param_groups[0]["lr"]
        for run_param, stacked in self._param_pairs(k):
            state = self.optimizer.state.get(stacked)
            if state:
                run_opt.state[run_param] = {
                    key: value[k].clone() if _is_per_element(value, stacked)
                    else value.clone() if torch.is_tensor(value) else value
                    for key, value in state.items()
                }
        st.stepper.resync()
        st.scheduler.load_state_dict(self.scheduler.state_dict())

    # --- one epoch --------------------------------------------------------------------------
    def train_one_epoch(self, should_stop) -> list[dict] | None:
        k, dev = self.k, self.device
        plans = [plan_epoch(s, d, st.generator, st.weights, dev, with_images=False)
                 for s, d, st in zip(self.specs, self.datas, self.states, strict=True)]
        perm = torch.stack([p.perm for p in plans])  # (K, N)
        labels = torch.stack([p.y for p in plans])
        weights = None
        if any(p.weights is not None for p in plans):
            ones = torch.ones_like(perm, dtype=torch.float32)
            weights = torch.stack([p.weights if p.weights is not None else ones[0] for p in plans])
        losses = [(s.loss, s.q, s.k) for s in self.specs]
        n, bs = perm.shape[1], self.specs[0].batch_size
        logits_seen = torch.empty(k, n, self.datas[0].num_classes, device=dev)
        loss_total = torch.zeros(k, device=dev)
        # A chain's step never needs autograd: inference mode skips its per-op bookkeeping.
        with torch.inference_mode(self.chain is not None):
            for start in range(0, n, bs):
                if should_stop is not None and should_stop():
                    return None
                sl = slice(start, start + bs)
                xb = self._batch_images(plans, perm, sl)
                w = weights[:, sl] if weights is not None else None
                if self.chain is not None:
                    logits, tape = self.chain.forward(xb)
                    values, grad = stacked_loss_and_grad(logits, labels[:, sl], losses, w)
                    self.chain.backward(tape, grad, self.chain_grads)
                else:
                    with device_autocast(dev):
                        logits = self.net(xb)
                    values, grad = stacked_loss_and_grad(logits, labels[:, sl], losses, w)
                    self.stepper.zero_grad()
                    logits.backward(grad)
                self.stepper.step()
                logits_seen[:, sl] = logits.detach()
                loss_total.add_(values, alpha=xb.shape[1])  # as train() adds its 0-d loss
        return [epoch_train_metrics(d, p.perm, logits_seen[i], loss_total[i])
                for i, (d, p) in enumerate(zip(self.datas, plans, strict=True))]

    def _batch_images(self, plans, perm: torch.Tensor, sl: slice) -> torch.Tensor:
        idx = perm[:, sl]
        xb = self.x_train[idx] if self.shared_x else self.x_train[self.run_index, idx]
        if self.specs[0].augment:
            k, b = idx.shape
            offsets = torch.cat([p.offsets[sl] for p in plans])
            flips = torch.cat([p.flips[sl] for p in plans])
            xb = augment.crop_and_flip(xb.flatten(0, 1), offsets, flips).view(k, b, *xb.shape[2:])
        return xb

    @torch.inference_mode()
    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Stacked eval logits (K, N, C) float32 of x (K or 1, N, ...), in train()'s chunks."""
        x = x.expand(self.k, *x.shape[1:])
        net = self.net if self.chain is None else (lambda xb: self.chain.forward(xb, keep=False))
        with device_autocast(self.device):
            chunks = [net(x[:, s : s + EVAL_BATCH]).float()
                      for s in range(0, x.shape[1], EVAL_BATCH)]
        return chunks[0] if len(chunks) == 1 else torch.cat(chunks, dim=1)

    def evaluate(self) -> list[dict]:
        val, test = self._logits(self.x_val), self._logits(self.x_test)
        return [evaluation_metrics(s, val[i], d.y_val, test[i], d.y_test)
                for i, (s, d) in enumerate(zip(self.specs, self.datas, strict=True))]


def _is_per_element(value, param: torch.Tensor) -> bool:
    """True for optimiser state shaped like its parameter (momentum, Adam's moments), which is
    stacked per run; False for shared scalars (Adam's step count)."""
    return torch.is_tensor(value) and value.dim() > 0 and value.shape == param.shape


# --- the entry point -------------------------------------------------------------------------
def train_fused(
    specs: Sequence[RunSpec | dict],
    on_epoch: RunEpochCallback | None = None,
    should_stop: Callable[[], bool] | None = None,
    checkpoint_dirs: Sequence[str | os.PathLike] | None = None,
) -> list[dict]:
    """Train K fusable runs (see ``can_fuse``) as one job; returns their K summaries, each what
    ``train()`` returns for that spec alone.

    on_epoch(run_index, row) is called for every run after every completed epoch, row as in
    ``train()`` (its ``seconds`` is the fused epoch's wall time, all K runs together).
    should_stop() is polled at every batch boundary: the unfinished epoch is discarded for all
    runs and every summary has ``stopped: True``.
    checkpoint_dirs: one folder per run; each gets train()'s checkpoint after every epoch, and a
    run found there (same spec) resumes from it.
    """
    specs = [parse_spec(s) for s in specs]
    ok, why = can_fuse(specs)
    if not ok:
        raise ValueError(f"these runs cannot be fused: {why}")
    if checkpoint_dirs is not None and len(checkpoint_dirs) != len(specs):
        raise ValueError(f"checkpoint_dirs: need one folder per run ({len(specs)}), got {len(checkpoint_dirs)}")
    dirs = list(checkpoint_dirs) if checkpoint_dirs is not None else [None] * len(specs)
    device = resolve_device(specs[0].device)
    datas = [build_experiment_data(s, device) for s in specs]
    states = [new_state(s, d, device) for s, d in zip(specs, datas, strict=True)]
    for spec, st, folder in zip(specs, states, dirs, strict=True):
        if folder is not None:
            saved = load_checkpoint(folder, spec.to_json())
            if saved is not None:
                restore_state(st, saved, device)

    def report(i: int) -> Callable[[dict], None] | None:
        return None if on_epoch is None else (lambda row: on_epoch(i, row))

    def summaries(stopped: bool) -> list[dict]:
        return [run_summary(s, st, d, device, stopped) for s, st, d in zip(specs, states, datas, strict=True)]

    # Runs behind the others (a crash between two checkpoint writes) catch up alone.
    front = max(st.epoch for st in states)
    for i, (spec, st, data) in enumerate(zip(specs, states, datas, strict=True)):
        if st.epoch < front and run_epochs(spec, st, data, device, front, report(i), should_stop, dirs[i]):
            return summaries(True)
    group = FusedGroup(specs, states, datas, device)
    # A run's own state needs the group's weights for its checkpoint and, for truncated Lq,
    # for the best-validation model that its next w-step uses.
    needs_sync = [d is not None or s.loss == "truncated_lq" for s, d in zip(specs, dirs, strict=True)]
    while group.epoch < specs[0].epochs:
        with tuned_epoch(group.tuner):
            started = time.perf_counter()
            epoch = group.epoch + 1
            for i, spec in enumerate(specs):
                if is_prune_epoch(spec, epoch):
                    group.sync_run(i)
                    acs_step(spec, states[i], datas[i], device)
            lr = group.optimizer.param_groups[0]["lr"]
            train_metrics = group.train_one_epoch(should_stop)
            if train_metrics is None:
                return summaries(True)
            group.scheduler.step()
            evals = group.evaluate()
            seconds = time.perf_counter() - started
        for i, (spec, st, data) in enumerate(zip(specs, states, datas, strict=True)):
            if needs_sync[i]:
                group.sync_run(i)
            row = epoch_row(spec, epoch, train_metrics[i], evals[i], lr, st.weights, data.is_noisy, seconds)
            record_epoch(spec, st, row)
            if on_epoch is not None:
                on_epoch(i, row)
            if dirs[i] is not None:
                save_checkpoint(dirs[i], checkpoint_state(spec, st))
    return summaries(False)

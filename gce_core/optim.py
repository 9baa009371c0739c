"""The trainer's optimiser step: torch.optim.SGD's arithmetic on one flat buffer.

A small model's SGD step is a few dozen tiny kernels (weight decay, momentum, update, for every
tensor) plus Python bookkeeping; on a CPU that costs as much as a sizeable share of the model's
own arithmetic. ``FlatSGD`` lays every parameter, gradient and momentum buffer out as views into
three flat tensors and runs the optimiser's own element-wise arithmetic once on the whole
buffer, in the optimiser's flavour: with ``fused=True`` (the lab's choice, make_optimizer) torch's
fused SGD kernel, one pass; otherwise the ops of SGD's foreach path (weight decay
``g + wd * p``, momentum ``b * m + (1 - dampening) * d``, update ``p - lr * b``). Each element
sees the same float ops in the same order, so the result is bitwise the torch optimiser's.

The torch optimiser stays the source of truth: hyper-parameters are read from its
``param_groups`` at every step (a scheduler changes them there), and its momentum buffers are
views into the flat buffer, so ``state_dict()`` and checkpoints are torch's own format. Anything
the flat path does not reproduce (Adam, several parameter groups, nesterov, maximize, mixed
dtypes or devices, non-contiguous parameters such as channels_last conv weights) falls back to
``optimizer.step()``. One difference: torch skips a parameter whose ``.grad`` is None, while the
flat step treats its gradient as zero (weight decay and momentum still apply); every parameter of
the lab's models gets a gradient at every step.
"""

from __future__ import annotations

import torch

# The fused kernel works through a tensor in vectors and leaves its last (numel mod vector
# width) entries to scalar code, which rounds differently; chunks of a tensor are whole cache
# lines (16 floats), so only those last entries ever take the scalar path.
_ALIGNED = 16


class FlatSGD:
    """Steps ``optimizer`` (built over ``params``) on flat buffers when it can; see the module.

    ``runs``: the params are K runs' parameters stacked along a first dimension of size K (the
    fused trainer); each run's entries then get exactly the arithmetic a run alone gets."""

    def __init__(self, optimizer: torch.optim.Optimizer, runs: int = 1):
        self.optimizer = optimizer
        self.runs = runs
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.flat = self._can_flatten()
        if not self.flat:
            return
        with torch.no_grad():
            self.values = torch.cat([p.detach().reshape(-1) for p in self.params])
        for p, view in zip(self.params, self._views(self.values), strict=True):
            p.data = view
        self.grads = torch.zeros_like(self.values)
        for p, view in zip(self.params, self._views(self.grads), strict=True):
            p.grad = view
        self.momentum = torch.zeros_like(self.values)
        self._decayed: torch.Tensor | None = None  # g + wd * p (foreach flavour), made once
        spans = [slice(a, b) for a, b in self._segment_bounds()]
        self._segments = tuple([flat[s] for s in spans] for flat in (self.values, self.grads, self.momentum))
        self.resync()

    def _segment_bounds(self) -> list[tuple[int, int]]:
        """Spans of the flat buffer for the fused kernel, one tensor each, so that every entry
        takes the path (vector or scalar tail) it takes when torch steps each parameter of a run
        as its own tensor: parameters whose per-run size is a whole number of cache lines are
        merged (no tail anywhere in them), any other is cut into its runs' slices, one each."""
        bounds, start, offset = [], 0, 0
        for p in self.params:
            per_run = p.numel() // self.runs
            if per_run % _ALIGNED:
                if offset > start:
                    bounds.append((start, offset))
                bounds += [(offset + k * per_run, offset + (k + 1) * per_run) for k in range(self.runs)]
                start = offset + p.numel()
            offset += p.numel()
        if offset > start:
            bounds.append((start, offset))
        return bounds

    def _can_flatten(self) -> bool:
        opt = self.optimizer
        if type(opt) is not torch.optim.SGD or len(opt.param_groups) != 1 or not self.params:
            return False
        group = opt.param_groups[0]
        first = self.params[0]
        return (
            not group["nesterov"]
            and not group["maximize"]
            and all(
                p.dtype == first.dtype and p.device == first.device and p.is_contiguous()
                and not p.is_sparse
                for p in self.params
            )
        )

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        views, offset = [], 0
        for p in self.params:
            views.append(flat[offset : offset + p.numel()].view(p.shape))
            offset += p.numel()
        return views

    def grad_views(self, named_params) -> dict[str, torch.Tensor]:
        """name -> the flat-buffer gradient of that parameter, for (name, parameter) pairs of
        this optimiser's parameters (code that writes gradients itself, without autograd)."""
        if not self.flat:
            raise ValueError("gradient views exist only on the flat path")
        views = {id(p): v for p, v in zip(self.params, self._views(self.grads), strict=True)}
        return {name: views[id(p)] for name, p in named_params}

    def resync(self) -> None:
        """Adopt the optimiser's momentum buffers (after ``optimizer.load_state_dict``)."""
        if not self.flat:
            return
        state = self.optimizer.state
        buffers = [state.get(p, {}).get("momentum_buffer") for p in self.params]
        self.has_momentum = all(b is not None for b in buffers)
        if not self.has_momentum:
            return
        with torch.no_grad():
            for view, buf in zip(self._views(self.momentum), buffers, strict=True):
                view.copy_(buf)
        self._point_state_at_momentum()

    def _point_state_at_momentum(self) -> None:
        for p, view in zip(self.params, self._views(self.momentum), strict=True):
            self.optimizer.state[p]["momentum_buffer"] = view

    def zero_grad(self) -> None:
        """Zero the gradients (the flat buffer, or set them to None on the fallback path)."""
        if self.flat:
            self.grads.zero_()
        else:
            self.optimizer.zero_grad(set_to_none=True)

    def step(self) -> None:
        """One optimiser step from the gradients the last backward left. (No grad mode to set:
        the flat buffers are plain tensors, the parameters views of them through .data.)"""
        if not self.flat:
            self.optimizer.step()
            return
        # LR schedulers watch optimizer.step() to warn about a scheduler step before any
        # optimiser step; this flag is what they read.
        self.optimizer._opt_called = True
        group = self.optimizer.param_groups[0]
        lr, wd = group["lr"], group["weight_decay"]
        momentum, dampening = group["momentum"], group["dampening"]
        if group.get("fused"):
            first = momentum != 0 and not self.has_momentum
            values, grads, buffers = self._segments
            torch._fused_sgd_(
                values, grads, buffers if momentum != 0 else [],
                weight_decay=wd, momentum=momentum, lr=lr, dampening=dampening,
                nesterov=False, maximize=False, is_first_step=first,
            )
            if first:
                self.has_momentum = True
                self._point_state_at_momentum()
            return
        d = self.grads
        if wd != 0:
            if self._decayed is None:
                self._decayed = torch.empty_like(self.values)
            d = torch.add(self.grads, self.values, alpha=wd, out=self._decayed)
        if momentum != 0:
            if self.has_momentum:
                self.momentum.mul_(momentum).add_(d, alpha=1 - dampening)
            else:  # SGD's first step: the buffer starts as a copy of d
                self.momentum.copy_(d)
                self.has_momentum = True
                self._point_state_at_momentum()
            d = self.momentum
        self.values.add_(d, alpha=-lr)

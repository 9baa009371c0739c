"""Flatten / Linear / ReLU chains (the lab's ``mlp``) stepped without autograd, on the CPU.

For such a model a training step is a dozen matrix products and as many element-wise ops, and
on a CPU autograd's graph bookkeeping costs a sizeable share of them. ``Chain`` runs the forward
keeping what the backward needs, and the backward as the very products autograd runs for
``F.linear`` and ``relu`` (grad_W = g^T h, grad_h = g W, grad_b = sum of g over the batch,
relu's ``threshold_backward``), writing each gradient straight into the optimiser's flat
buffer: gradients are bitwise autograd's (tests/test_train.py compares the two paths).

The same code steps one model, tensors (B, features), or K stacked models, tensors
(K, B, features) with weights (K, out, in) (gce_core.fused).

Every matrix product goes through ``Chain._product`` under a key (layer name, "forward" |
"weight" | "input"): products in ``single_thread`` run on one intra-op thread (see
gce_core.threads: that keeps a run's bits independent of the thread count), and with ``trace``
set each product is also recorded with copies of its operands.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch
from torch import nn

from gce_core.models import MLP

Steps = list[tuple[str, str]]  # ("flatten" | "linear" | "relu", parameter prefix)
ProductKey = tuple[str, str]  # (layer name, "forward" | "weight" | "input")
Product = tuple[ProductKey, Callable[..., torch.Tensor], list]  # key, function, operands


def _copy_with_layout(t: torch.Tensor) -> torch.Tensor:
    """A copy of t with t's strides (a product's code path depends on its operands' layout)."""
    return torch.empty_strided(t.shape, t.stride(), dtype=t.dtype, device=t.device).copy_(t)


def layer_chain(model: nn.Module) -> Steps | None:
    """The model as a list of steps, or None if it is not a plain Flatten / Linear / ReLU chain
    (the lab's MLP, or an nn.Sequential of those layers)."""
    if isinstance(model, MLP):
        seq, prefix = model.net, "net."
    elif type(model) is nn.Sequential:
        seq, prefix = model, ""
    else:
        return None
    steps: Steps = []
    for name, layer in seq.named_children():
        if type(layer) is nn.Flatten and layer.start_dim == 1 and layer.end_dim == -1:
            steps.append(("flatten", prefix + name))
        elif type(layer) is nn.Linear:
            steps.append(("linear", prefix + name))
        elif type(layer) is nn.ReLU:
            steps.append(("relu", prefix + name))
        else:
            return None
    return steps


class Chain:
    """Forward and closed-form backward of a layer chain over ``params`` (name -> tensor, the
    model's parameter names; (out, in) weights for one model, (K, out, in) for K stacked).

    The parameters are looked up once, here: the chain keeps (detached) views of them, so they
    must keep their storage (in-place updates such as an optimiser step or ``load_state_dict``
    are fine; re-pointing ``p.data`` after this is not)."""

    def __init__(self, steps: Steps, params: Mapping[str, torch.Tensor]):
        self.steps = steps
        self.params = params
        linear = [i for i, (kind, _) in enumerate(steps) if kind == "linear"]
        if not linear:
            raise ValueError("a chain needs at least one Linear layer")
        self.stacked = params[steps[linear[0]][1] + ".weight"].dim() == 3
        self._first_linear = linear[0]  # no gradient is needed below it (the input's)
        self.single_thread: set[ProductKey] = set()  # products run on one intra-op thread
        self.trace: list[Product] | None = None  # when a list, every product is appended
        # (kind, name, weight, bias, weight transposed for the forward product) per step
        self._program = []
        for kind, name in steps:
            w, b = self._p(name + ".weight"), self._p(name + ".bias")
            w_t = None if w is None else w.transpose(-1, -2)
            bias = b if b is None or not self.stacked else b[:, None, :]
            self._program.append((kind, name, w, bias, w_t))

    def _p(self, name: str) -> torch.Tensor | None:
        p = self.params.get(name)
        return None if p is None else p.detach()

    @property
    def runs(self) -> int:
        """K for a stacked chain, 1 otherwise."""
        first = next(w for kind, _, w, _, _ in self._program if kind == "linear")
        return first.shape[0] if self.stacked else 1

    @property
    def out_features(self) -> int:
        """The width of the logits: the last Linear layer's output size."""
        last = [w for kind, _, w, _, _ in self._program if kind == "linear"][-1]
        return last.shape[-2]

    def _product(self, key: ProductKey, fn, *args: torch.Tensor, out: torch.Tensor | None = None):
        """fn(*args, out=out), on one thread if ``key`` is pinned there, traced if tracing."""
        if self.trace is not None:
            self.trace.append((key, fn, [_copy_with_layout(a) for a in args]))
        threads = torch.get_num_threads() if key in self.single_thread else 1
        if threads == 1:
            return fn(*args, out=out)
        torch.set_num_threads(1)
        try:
            return fn(*args, out=out)
        finally:
            torch.set_num_threads(threads)

    # No grad mode to set (a decorator costs as much as a small op, twice per step): the chain's
    # parameters are detached views, so with data inputs no graph is ever built.
    def forward(self, x: torch.Tensor, keep: bool = True, out: torch.Tensor | None = None):
        """Logits of x ((B, ...) or (K, B, ...)); with ``keep``, also the tape for backward.
        ``out``: a contiguous tensor the logits are written into (when the chain ends in a
        Linear layer; otherwise they are copied there)."""
        h, tape = x, []
        owned = False  # h is this call's own product, free to overwrite (ReLU in place)
        mm, addmm = (torch.bmm, torch.baddbmm) if self.stacked else (torch.mm, torch.addmm)
        last = len(self._program) - 1
        for i, (kind, name, _w, b, w_t) in enumerate(self._program):
            if kind == "flatten":
                h = h.flatten(2 if self.stacked else 1)
            elif kind == "relu":
                h = h.relu_() if owned else torch.relu(h)
                owned = True
                tape.append(h)
            else:
                if keep:
                    tape.append(h)
                target = out if i == last else None
                key = (name, "forward")
                h = (self._product(key, mm, h, w_t, out=target) if b is None
                     else self._product(key, addmm, b, h, w_t, out=target))
                owned = True
        if out is not None and h is not out:
            out.copy_(h)
            h = out
        return (h, tape) if keep else h

    def backward(self, tape: list, grad: torch.Tensor, grads: Mapping[str, torch.Tensor]) -> None:
        """Write d loss / d parameter into ``grads`` (name -> tensor shaped like the parameter)
        from grad = d loss / d logits."""
        tape = list(tape)
        batch_dim = 1 if self.stacked else 0
        mm = torch.bmm if self.stacked else torch.mm
        for i in range(len(self._program) - 1, -1, -1):
            kind, name, w, _b, _w_t = self._program[i]
            if kind == "flatten":
                continue
            if kind == "relu":
                grad = torch.ops.aten.threshold_backward(grad, tape.pop(), 0)
                continue
            h = tape.pop()
            self._product((name, "weight"), mm, grad.transpose(-1, -2), h, out=grads[name + ".weight"])
            bias_grad = grads.get(name + ".bias")
            if bias_grad is not None:
                torch.sum(grad, batch_dim, out=bias_grad)
            if i > self._first_linear:
                grad = self._product((name, "input"), mm, grad, w)

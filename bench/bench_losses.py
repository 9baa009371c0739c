"""One loss step (the batch-mean value and its gradient with respect to the logits) of each of
the lab's losses, against F.cross_entropy's forward and backward on the same logits.

The lab's steps are what its trainer runs per batch, in its two paths:
- autograd (CNNs, ResNets, every model on CUDA): ``gce_core.losses.backward_loss``, the gradient
  into logits.grad (CCE through autograd; MAE, Lq and truncated Lq through ``loss_and_grad``'s
  closed form, then ``logits.backward(grad)``);
- the CPU MLP's chain (no autograd): ``loss_and_grad`` in inference mode, the gradient returned.
A second reference is Lq as the paper's public code writes it (softmax, gather, (1 - p^q) / q,
through autograd). Shapes: a batch of 128 with 10 classes (digits, CIFAR-10) and 100 (CIFAR-100),
and a batch of 1024.

    python -m bench.bench_losses [--rounds 400] [--threads N] [--device cpu|cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from bench.common import Report, Table, device_facts, fmt_x, set_threads, sync
from gce_core.losses import backward_loss, loss_and_grad

SHAPES = ((128, 10), (128, 100), (1024, 100))
LOSSES = (("cce", {}), ("mae", {}), ("lq", {"q": 0.7}), ("truncated_lq", {"q": 0.7, "k": 0.5}))


def paper_style_lq(logits: torch.Tensor, y: torch.Tensor, q: float) -> torch.Tensor:
    """Lq as the paper's public code writes it: softmax, gather, (1 - p^q) / q."""
    p_y = torch.gather(F.softmax(logits, dim=1), 1, y[:, None])
    return ((1 - p_y**q) / q).mean()


BASELINE = "F.cross_entropy, forward and backward (baseline)"


def steps(n: int, c: int, device: torch.device, seed: int = 0) -> dict:
    """name -> a zero-argument loss step on fixed (n, c) logits."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, c, generator=g).to(device).requires_grad_()
    plain = logits.detach()
    y = torch.randint(0, c, (n,), generator=g).to(device)
    weights = torch.ones(n, device=device)

    def clear():
        logits.grad = None

    def chain_step(name, kw, extra):
        with torch.inference_mode():
            return loss_and_grad(plain, y, name, **kw, **extra)

    out = {BASELINE: lambda: (clear(), F.cross_entropy(logits, y).backward())}
    for name, kw in LOSSES:
        extra = {"weights": weights} if name == "truncated_lq" else {}
        out[f"{name}: autograd path"] = (
            lambda name=name, kw=kw, extra=extra: (clear(), backward_loss(logits, y, name, **kw, **extra)))
    for name, kw in LOSSES:
        extra = {"weights": weights} if name == "truncated_lq" else {}
        out[f"{name}: CPU chain path"] = lambda name=name, kw=kw, extra=extra: chain_step(name, kw, extra)
    out["Lq as the paper's code writes it, autograd"] = (
        lambda: (clear(), paper_style_lq(logits, y, 0.7).backward()))
    return out


def time_steps(contenders: dict, rounds: int, device: torch.device, per_round: int = 20) -> dict[str, list[float]]:
    """Seconds per step of each contender: ``rounds`` rounds in alternating order, each timing
    ``per_round`` steps in a row (one step is microseconds)."""
    names = list(contenders)
    for fn in contenders.values():
        for _ in range(per_round):
            fn()
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(rounds):
        for name in names if r % 2 == 0 else reversed(names):
            fn = contenders[name]
            sync(device)
            start = time.perf_counter()
            for _ in range(per_round):
                fn()
            sync(device)
            times[name].append((time.perf_counter() - start) / per_round)
    return times


def run(rounds: int = 400, threads: int | None = None, device: str = "cpu") -> Report:
    set_threads(threads)
    dev = torch.device(device)
    names = None
    rows: dict[str, list[str]] = {}
    for n, c in SHAPES:
        contenders = steps(n, c, dev)
        names = names or list(contenders)
        times = time_steps(contenders, rounds, dev)
        base = times[BASELINE]
        for name in contenders:
            ratio = statistics.median(a / b for a, b in zip(times[name], base, strict=True))
            cell = f"{statistics.median(times[name]) * 1e6:.1f} us ({fmt_x(ratio)})"
            rows.setdefault(name, [name]).append(cell)
    table = Table(
        f"One loss step (value and gradient), {device}: time per step and its ratio to F.cross_entropy",
        ["loss step", *(f"{n} x {c}" for n, c in SHAPES)],
        [rows[name] for name in names],
        note=(f"Median of {rounds} rounds in alternating order, 20 steps per round; the ratio is the median "
              "of per-round ratios to F.cross_entropy's forward and backward on the same float32 logits. "
              "Autograd path: gce_core.losses.backward_loss, the gradient into logits.grad as autograd "
              "puts it there. CPU chain path: gce_core.losses.loss_and_grad in inference mode, value and "
              "gradient returned (the MLP's step on the CPU)."),
    )
    return Report(f"Loss steps (bench/bench_losses.py, {device})", device_facts(dev), [table])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=400, help="alternating rounds (default: 400)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args(argv)
    print(run(args.rounds, args.threads, args.device).markdown())


if __name__ == "__main__":
    main()

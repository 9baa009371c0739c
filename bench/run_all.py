"""Run every benchmark and rewrite docs/BENCHMARKS.md with their tables, the date and the device.

    python -m bench.run_all [--quick] [--threads N] [--out docs/BENCHMARKS.md]
    make bench

The trainer and fused benchmarks run twice, with torch's default intra-op threads and with one
(on a small CPU the choice matters, and not always in the direction one expects); --threads N
runs everything with N threads only. --quick runs short versions (for checking the scripts, not
for figures to publish).
"""

from __future__ import annotations

import argparse
import pathlib

import torch

from bench import bench_compile, bench_fused, bench_losses, bench_throughput, bench_trainer
from bench.common import Report

DOC = pathlib.Path(__file__).resolve().parent.parent / "docs" / "BENCHMARKS.md"

INTRO = """# Benchmarks

Written by `python -m bench.run_all` (`make bench`) on {date}; every figure below comes from that
run. Each benchmark measures the lab against a baseline in the same process, runs the contenders
in alternating order round after round, and reports medians and the median of per-round ratios:
the machine is shared, and a busy spell then hits both sides of a ratio alike. Each section names
the CPU, torch version, intra-op threads and the load average when it started.

| script | lab | baseline |
|---|---|---|
| `bench/bench_trainer.py` | `gce_core.train.train` on digits | a plain DataLoader loop (the paper's public code's way), same network and data; CCE for the Lq cost |
| `bench/bench_fused.py` | `gce_core.fused.train_fused`, K = 6 runs as one job | the same 6 runs one by one with `train` |
| `bench/bench_throughput.py` | `train_one_epoch` on CIFAR-shaped data | the device's peak: a large matmul measured in the same process (and on known GPUs the vendor's dense bf16 figure) |
| `bench/bench_losses.py` | one loss step of each lab loss (value and gradient), in the trainer's two paths | `F.cross_entropy` forward and backward on the same logits |
| `bench/bench_compile.py` | a group's compile runs trained in turn by one process (the job runner's way) | each run in a fresh process of its own, with a warm compile cache |
"""

GPU_NOT_MEASURED = """## GPU

GPU figures were not measured: no CUDA device was available to this run (the session that wrote
this file had no GPU lent to it, and this machine has none). On a machine with one,

    python -m bench.bench_throughput --device cuda [--compile]

trains ResNet-34 (CIFAR-shaped, bf16 autocast, channels_last, on-device pad-crop and flip) and
reports images/s and the share of the GPU's bf16 peak, measured and nominal (`--compile` adds
torch.compile), and

    python -m bench.bench_compile --device cuda --model resnet34

times a group's ResNet-34 compile runs in turn against a process per run; `python -m
bench.run_all` adds both sections by itself when CUDA is available. The target there is at least
40% of the bf16 peak for ResNet-34. `pytest tests/test_cuda.py` checks the GPU path itself
(bf16 and channels_last training, fused rows against the runs alone, resume, compile once); on
a machine without CUDA those tests skip, and they have not run yet.
"""

READING = """## Reading the figures

- **Arithmetic floor.** `bench_trainer` counts a run's FLOPs with `torch.utils.flop_counter` and
  divides by the matmul peak measured in the same process: no trainer on this device can beat
  that time. The digits MLP's matrix products are small (batch 128, 64-256-256-10), so the
  floor is a large share of both trainers' time, and the speed-up over the plain loop is bounded
  by how much of the plain loop is overhead: the lab removes the DataLoader, the per-batch host
  reads, autograd's bookkeeping for the MLP, the per-tensor optimiser kernels and the per-epoch
  re-computation, but not the products themselves.
- **Fused runs.** Fusing K runs saves per-step overhead, not arithmetic: K runs are K times the
  FLOPs. The bound column of `bench_fused` is the sequential time over the K runs' arithmetic
  floor: the most any fused trainer could gain on this device. With one thread a single run
  already uses about half the core's peak, so the bound is near 2x and fusion gains little;
  with two threads the batched products use both cores better than one small run does.
- **Threads and a shared machine.** With two vCPUs, two intra-op threads win only when both run
  on a core of their own. On this host they sometimes do not (the same two-thread epoch then
  takes 12-13 ms instead of 8, one thread 10-11 ms throughout): a parallel product waits for
  the slower half, and the waiting thread's spinning slows the main one. So the lab's MLP runs
  pick their thread count epoch by epoch (`gce_core.threads.ThreadTuner`: the count with the
  lowest recent epoch time; the other count is re-timed after 16 epochs, then after twice as
  many each time it loses, up to 128); the run's numbers do not depend on it (below). The
  plain loop keeps torch's default. Compare figures from the same run only.
- **Loss steps.** `bench_losses` times one loss step alone against `F.cross_entropy`'s forward
  and backward (two fused kernels). On the CPU chain path (the MLP) the lab's steps return the
  gradient without autograd. On the autograd path they end with `logits.backward(grad)`, whose
  call costs more than the arithmetic at these sizes, and each step here also alternates with
  the others in a tight loop, which on this machine makes both halves slower than either alone.
  In a training step the loss is a small share: the trainer's Lq/CCE epoch ratio above is what
  a user sees.
- **Compile runs in turn.** `bench_compile` times whole processes, because what it measures is
  what a process pays before its first step: Python and torch, the data, and torch.compile. With
  a warm inductor cache compiling still costs a fresh process about 2.5 s on this CPU (tracing
  the model again and loading its kernels); a second run in the same process reuses the graphs
  and its first epoch is as short as any other. On a GPU with ResNet-34 both costs are larger;
  not measured here. Fusing the small CNN instead (torch.func vmap over its stacked weights, a
  grouped convolution per layer) was tried on this CPU and was slower than the runs one by one
  (a one-off measurement, not part of this file's run: 66 ms against 55 ms for a training step
  of 6 runs at batch 128): the runs already keep the core busy, so the lab fuses only the MLP.
- **Exactness.** The trainer's shortcuts keep the arithmetic: tests/test_losses.py,
  tests/test_optim.py and tests/test_chain.py hold the closed-form loss gradients, the flat SGD
  step and the autograd-free MLP step to autograd's and torch SGD's results bit for bit (the
  MLP step to autograd at one thread: at two, BLAS splits the sum of the 10x256 output layer's
  weight gradient across threads, so the lab pins that one product to one thread and its runs
  give the same bits at any count, tests/test_threads.py); tests/test_fused.py holds fused rows
  to one-by-one rows. Two speed-ups changed the last bits
  of the arithmetic itself: on the CPU, with fewer than 16 classes, the losses take log_softmax
  over the transposed view (`gce_core.losses.class_log_softmax`; ATen's last-dimension kernel
  runs a scalar exp there, about 4x slower for 10 classes), and SGD runs torch's fused kernel
  (one pass over the parameters instead of four; it rounds differently from the foreach ops).
  Each differs from what it replaced by a few units in the last place; over 60 epochs of CCE
  under heavy noise that moved the README's last-epoch accuracies by about one point, and the
  digits table there was re-measured after them.
"""


def render(reports: list[Report], cuda_measured: bool) -> str:
    date = reports[0].facts["date"] if reports else "?"
    parts = [INTRO.format(date=date)]
    parts += [r.markdown() for r in reports]
    if not cuda_measured:
        parts.append(GPU_NOT_MEASURED)
    parts.append(READING)
    return "\n".join(parts).rstrip() + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="short runs to check the scripts (default: off)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--out", default=str(DOC), help=f"where to write (default: {DOC})")
    args = parser.parse_args(argv)
    trainer_kw = dict(epochs=20, repeats=2, epoch_rounds=30) if args.quick else {}
    fused_kw = dict(epochs=10, repeats=1) if args.quick else {}
    throughput_kw = dict(steps=1, repeats=1) if args.quick else {}
    compile_kw = dict(runs=2, epochs=1, repeats=1) if args.quick else {}
    losses_kw = dict(rounds=20) if args.quick else {}
    default = torch.get_num_threads()
    settings = [args.threads] if args.threads else sorted({default, 1}, reverse=True)
    reports = []
    for threads in settings:
        reference = threads != settings[0]
        reports.append(bench_trainer.run(threads=threads, reference=reference, **trainer_kw))
        reports.append(bench_fused.run(threads=threads, reference=reference, **fused_kw))
    reports.append(bench_throughput.run("cpu", threads=settings[0], **throughput_kw))
    reports.append(bench_losses.run(threads=settings[0], **losses_kw))
    reports.append(bench_compile.run(device="cpu", **compile_kw))
    cuda = torch.cuda.is_available()
    if cuda:
        reports.append(bench_throughput.run("cuda", threads=args.threads, **throughput_kw))
        reports.append(bench_losses.run(device="cuda", **losses_kw))
        reports.append(bench_compile.run(device="cuda", model="resnet34", **compile_kw))
    for report in reports:
        print(report.markdown())
    text = render(reports, cuda)
    pathlib.Path(args.out).write_text(text)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

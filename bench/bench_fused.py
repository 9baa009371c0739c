"""K runs fused into one job (gce_core.fused.train_fused) against the same K runs trained one
after the other by gce_core.train.train, on the same specs.

Default: K = 6 = {CCE, Lq q=0.7} x seeds {0, 1, 2} on digits (MLP 64-256-256-10, batch 128,
uniform noise 0.4), and a q sweep (Lq, q in 0.1..1.0, one seed, so the runs share their images).
Both sides do the whole job: every epoch's metrics row for every run.

    python -m bench.bench_fused [--epochs 200] [--repeats 3] [--threads N]
"""

from __future__ import annotations

import argparse

import torch

from bench.bench_trainer import run_flops
from bench.common import (
    REFERENCE_NOTE,
    Report,
    Table,
    device_facts,
    fmt_s,
    fmt_x,
    interleaved,
    matmul_peak,
    paired_ratio,
    set_threads,
)
from gce_core.experiment_data import build_experiment_data
from gce_core.fused import train_fused
from gce_core.spec import parse_spec
from gce_core.train import train

BASE = dict(
    dataset="digits", model="mlp", batch_size=128, noise="uniform", noise_rate=0.4, device="cpu"
)


def groups(epochs: int) -> dict[str, list]:
    base = dict(BASE, epochs=epochs)
    return {
        "losses x seeds: {CCE, Lq} x {0, 1, 2}": [
            parse_spec(dict(base, loss=loss, seed=seed)) for loss in ("cce", "lq") for seed in (0, 1, 2)
        ],
        "q sweep: Lq, q = 0.1, 0.3, 0.5, 0.7, 0.9, 1.0": [
            parse_spec(dict(base, loss="lq", q=q)) for q in (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
        ],
    }


def run(epochs: int = 200, repeats: int = 3, threads: int | None = None, reference: bool = False) -> Report:
    set_threads(threads)
    facts = device_facts("cpu")
    peak, peak_what = matmul_peak("cpu")
    all_groups = groups(epochs)
    first = next(iter(all_groups.values()))[0]
    flops = 6 * run_flops(first, build_experiment_data(first, "cpu"))  # the same for every run
    table = Table(
        f"K = 6 runs fused vs one by one: digits MLP, {epochs} epochs, batch 128, uniform noise 0.4",
        ["group", "6 runs one by one (baseline)", "fused", "speed-up (sequential / fused)",
         "fused: share of measured peak", "speed-up bound (sequential / arithmetic floor)"],
        note=f"Median of {repeats} interleaved repeats; speed-up is the median of per-round ratios. "
        "Fused rows equal the one-by-one rows (tests/test_fused.py). The 6 runs are "
        f"{flops / 1e9:.0f} GFLOP (torch.utils.flop_counter); at the measured peak of "
        f"{peak / 1e9:.0f} GFLOP/s ({peak_what}) that takes {flops / peak:.1f} s, so no fused "
        "trainer on this device can beat the sequential runs by more than the bound column.",
    )
    speedups = []
    for label, specs in all_groups.items():
        times = interleaved(
            {
                "sequential": lambda specs=specs: [train(s) for s in specs],
                "fused": lambda specs=specs: train_fused(specs),
            },
            repeats,
        )
        speedup = paired_ratio(times["sequential"], times["fused"])
        speedups.append(speedup)
        med = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
        table.rows.append([label, fmt_s(med["sequential"]), fmt_s(med["fused"]), fmt_x(speedup),
                           f"{flops / med['fused'] / peak:.0%}", fmt_x(med["sequential"] * peak / flops)])
    worst = min(speedups)
    targets = [
        f"K = 6 fused >= 3x faster than 6 sequential runs: {fmt_x(worst)} (worst group) — "
        + ("met" if worst >= 3 else "NOT met")
    ]
    if reference:
        targets = [f"{REFERENCE_NOTE} {t}" for t in targets]
    name = f"Fused multi-run training (bench/bench_fused.py, {torch.get_num_threads()} thread(s))"
    return Report(name, facts, [table], targets)


def main(argv: list[str] | None = None) -> Report:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--epochs", type=int, default=200, help="epochs per run (default: 200)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved repeats (default: 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    args = parser.parse_args(argv)
    report = run(args.epochs, args.repeats, args.threads)
    print(report.markdown())
    return report


if __name__ == "__main__":
    main()

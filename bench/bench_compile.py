"""Compile runs of a group trained in turn by one process (as jobs.worker_process.train_in_turn
does) against each run in a fresh process of its own (how the job runner ran them before).

K runs with ``compile`` (default: the small CNN on digits, {CCE, Lq, MAE}, 2 epochs each, uniform
noise 0.4, torch.compile with inductor). Both sides are whole processes timed from the outside
(Python, torch, the data, compiling, training, each run's metrics rows), and both share one
inductor cache that an untimed run filled first: the baseline is a process per run at its best,
loading compiled kernels from a warm cache instead of building them. Inside, the first epoch of
every run is timed too: it holds what compiling costs that run.

    python -m bench.bench_compile [--runs 3] [--epochs 2] [--repeats 3] [--model cnn] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import statistics
import subprocess
import sys
import tempfile
import time

from bench.common import Report, Table, device_facts, fmt_s, fmt_x, paired_ratio

ROOT = pathlib.Path(__file__).resolve().parent.parent
LOSSES = ("cce", "lq", "mae", "truncated_lq")

# The body of a timed process: train the specs one after another; print each run's epoch times.
CHILD = """
import json, sys
from gce_core.train import train
for spec in json.loads(sys.argv[1]):
    rows = []
    train(spec, on_epoch=rows.append)
    print(json.dumps([row["seconds"] for row in rows]), flush=True)
"""


def specs(runs: int, epochs: int, model: str, device: str) -> list[dict]:
    if not 1 <= runs <= len(LOSSES):
        raise SystemExit(f"--runs must be in 1..{len(LOSSES)}, got {runs}")
    base = dict(dataset="digits", model=model, epochs=epochs, batch_size=128, noise="uniform",
                noise_rate=0.4, device=device, compile=True)  # fmt: skip
    return [dict(base, loss=loss, seed=seed) for seed, loss in enumerate(LOSSES[:runs])]


def run_process(batch: list[dict], env: dict[str, str]) -> tuple[float, list[list[float]]]:
    """(wall seconds, each run's epoch seconds) of one fresh process training ``batch`` in turn."""
    start = time.perf_counter()
    out = subprocess.run([sys.executable, "-c", CHILD, json.dumps(batch)], cwd=ROOT, env=env,
                         capture_output=True, text=True)  # fmt: skip
    wall = time.perf_counter() - start
    if out.returncode != 0:
        raise SystemExit(f"a benchmark process failed (exit code {out.returncode}):\n{out.stderr[-3000:]}")
    return wall, [json.loads(line) for line in out.stdout.splitlines() if line.startswith("[")]


def run(runs: int = 3, epochs: int = 2, repeats: int = 3, model: str = "cnn", device: str = "cpu") -> Report:
    batch = specs(runs, epochs, model, device)
    with tempfile.TemporaryDirectory(prefix="gce-bench-compile-") as cache:
        env = {**os.environ, "TORCHINDUCTOR_CACHE_DIR": cache, "PYTHONPATH": str(ROOT)}
        env.pop("GCE_LAB_COMPILE_BACKEND", None)  # inductor, as a user gets it
        print("filling the compile cache (one untimed run; minutes on a small CPU)...", flush=True)
        cold_wall, cold_epochs = run_process(batch[:1], env)
        alone_walls, turn_walls, alone_first, turn_first = [], [], [], []
        for r in range(repeats):
            order = ("alone", "turn") if r % 2 == 0 else ("turn", "alone")
            for side in order:
                print(f"round {r + 1}/{repeats}: {side}", flush=True)
                if side == "alone":
                    results = [run_process([spec], env) for spec in batch]
                    alone_walls.append(sum(wall for wall, _ in results))
                    alone_first.append([epochs_[0][0] for _, epochs_ in results])
                else:
                    wall, epochs_ = run_process(batch, env)
                    turn_walls.append(wall)
                    turn_first.append([e[0] for e in epochs_])
    ratio = paired_ratio(alone_walls, turn_walls)
    label = f"{model}, {runs} runs of {epochs} epochs, compile (inductor)"
    table = Table(
        f"Compile runs in turn vs a process per run: {label}, digits, batch 128, {device}",
        ["how", "wall time, all runs (median)", "first epoch of each run (median)", "speed-up (alone / in turn)"],
        [
            [f"{runs} processes, one run each (baseline; warm compile cache)", fmt_s(statistics.median(alone_walls)),
             ", ".join(fmt_s(statistics.median(col)) for col in zip(*alone_first, strict=True)), "1.00x"],
            [f"1 process, the {runs} runs in turn (the job runner)", fmt_s(statistics.median(turn_walls)),
             ", ".join(fmt_s(statistics.median(col)) for col in zip(*turn_first, strict=True)), fmt_x(ratio)],
        ],
        note=(f"Median of {repeats} interleaved rounds; speed-up is the median of per-round ratios. Wall "
              "times are whole processes (Python, torch, data, compile, training, metrics). A run's first "
              "epoch holds its compile time: in turn, only the first run's does. Before the rounds, one "
              f"untimed process filled the empty inductor cache: {fmt_s(cold_wall)} wall, first epoch "
              f"{fmt_s(cold_epochs[0][0])}."),
    )
    return Report(f"Compile runs in turn (bench/bench_compile.py, {device})", device_facts(device), [table])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help=f"runs with compile, 1..{len(LOSSES)} (default: 3)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per run (default: 2)")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved rounds (default: 3)")
    parser.add_argument("--model", default="cnn", help="cnn, resnet18 or resnet34 (default: cnn)")
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    args = parser.parse_args(argv)
    print(run(args.runs, args.epochs, args.repeats, args.model, args.device).markdown())


if __name__ == "__main__":
    main()

"""Shared pieces of the benchmarks: the device's description, interleaved timing, tables.

Timings on a shared machine drift (other processes, frequency): every benchmark runs its
contenders in alternating order, round after round, and reports medians; ratios are the median
of per-round ratios, so a slow spell hits both sides of a ratio alike.
"""

from __future__ import annotations

import datetime
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch


def cpu_model() -> str:
    """The CPU's model name from /proc/cpuinfo (platform.processor() elsewhere)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def device_facts(device: torch.device | str = "cpu") -> dict[str, str]:
    """What a reader needs to weigh a figure: device, cores, torch version, intra-op threads."""
    device = torch.device(device)
    facts = {
        "cpu": f"{cpu_model()} ({os.cpu_count()} logical cores)",
        "torch": torch.__version__,
        "threads": str(torch.get_num_threads()),
        "date": datetime.date.today().isoformat(),
    }
    if hasattr(os, "getloadavg"):  # other processes share this machine: say how busy it was
        facts["load average (1 min) at start"] = f"{os.getloadavg()[0]:.2f}"
    if device.type == "cuda":
        facts["gpu"] = torch.cuda.get_device_name(device)
    return facts


def matmul_peak(device: torch.device | str = "cpu", repeats: int = 10) -> tuple[float, str]:
    """(FLOP/s, what): the best of ``repeats`` large square matmuls, fp32 on the CPU (2048^2),
    bf16 on CUDA (8192^2), with the current threads. A measured peak, not a vendor's."""
    device = torch.device(device)
    n, dtype = (2048, torch.float32) if device.type == "cpu" else (8192, torch.bfloat16)
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n**3 / best, f"{n}x{n} {str(dtype).removeprefix('torch.')} matmul, best of {repeats}"


def sync(device: torch.device) -> None:
    """Wait for the device's queued work (CUDA); nothing elsewhere. Timers read after it."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def facts_line(facts: dict[str, str]) -> str:
    return "; ".join(f"{k}: {v}" for k, v in facts.items())


# Prefix of the summary lines of a run at fewer threads than the machine's default (make bench
# runs one thread too): such figures are for reference, beside the default count's.
REFERENCE_NOTE = "(reference run at one thread, both sides; the default thread count is above)"


def set_threads(threads: int | None) -> None:
    if threads is not None:
        if threads < 1:
            raise SystemExit(f"--threads must be >= 1, got {threads}")
        torch.set_num_threads(threads)


def interleaved(
    contenders: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
) -> dict[str, list[float]]:
    """Seconds per call of each contender, ``repeats`` rounds in alternating order (ABC, CBA...)
    after ``warmup`` untimed calls each."""
    if repeats < 1:
        raise SystemExit(f"repeats must be >= 1, got {repeats}")
    for fn in contenders.values():
        for _ in range(warmup):
            fn()
    names = list(contenders)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            start = time.perf_counter()
            contenders[name]()
            times[name].append(time.perf_counter() - start)
    return times


def paired_ratio(num: list[float], den: list[float]) -> float:
    """Median of the per-round ratios num[i] / den[i]."""
    return statistics.median(a / b for a, b in zip(num, den, strict=True))


@dataclass
class Table:
    """A titled markdown table; ``note`` says how to read it."""

    title: str
    header: list[str]
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "|".join("---" for _ in self.header) + "|")
        lines += ["| " + " | ".join(row) + " |" for row in self.rows]
        if self.note:
            lines += ["", self.note]
        return "\n".join(lines)


@dataclass
class Report:
    """What one benchmark measured: its tables and the facts of the machine it ran on."""

    name: str
    facts: dict[str, str]
    tables: list[Table]
    summary: list[str] = field(default_factory=list)  # the ratios that matter, one line each

    def markdown(self) -> str:
        parts = [f"## {self.name}", "", f"Measured on: {facts_line(self.facts)}.", ""]
        parts += [t.markdown() + "\n" for t in self.tables]
        if self.summary:
            parts += ["Summary:", ""] + [f"- {line}" for line in self.summary] + [""]
        return "\n".join(parts)


def fmt_s(seconds: float) -> str:
    return f"{seconds:.3f} s" if seconds < 10 else f"{seconds:.1f} s"


def fmt_x(ratio: float) -> str:
    return f"{ratio:.2f}x"

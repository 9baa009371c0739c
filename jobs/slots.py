"""Slots: how many runs a supervisor runs at once, and on what.

GCE_LAB_SLOTS_PER_GPU slots (default 1) per visible GPU, their processes started with
CUDA_VISIBLE_DEVICES set to that GPU (so the spec's device "auto" or "cuda" lands on it). On a CPU machine, a configurable number of slots,
each with an equal share of the cores as torch threads, so runs do not fight over cores.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Sequence

from jobs.config import default_cpu_slots, slots_per_gpu
from jobs.executor import Slot


def visible_gpus() -> list[str]:
    """GPU indices this machine offers, without initialising CUDA in this process:
    $CUDA_VISIBLE_DEVICES if set, else what `nvidia-smi -L` lists."""
    env = os.environ.get("CUDA_VISIBLE_DEVICES")
    if env is not None:
        ids = [x.strip() for x in env.split(",") if x.strip()]
        return [] if ids[:1] == ["-1"] else ids
    try:
        out = subprocess.run(["nvidia-smi", "-L"], capture_output=True, text=True, timeout=20, check=False)
    except (OSError, subprocess.SubprocessError):
        return []
    return [str(i) for i, line in enumerate(ln for ln in out.stdout.splitlines() if ln.startswith("GPU "))]


def _threads_env(threads: int) -> dict[str, str]:
    # The user's own setting wins.
    return {k: str(threads) for k in ("OMP_NUM_THREADS", "MKL_NUM_THREADS") if k not in os.environ}


def detect_slots(cpu_slots: int | None = None, *, gpus: Sequence[str] | None = None,
                 per_gpu: int | None = None) -> list[Slot]:
    """The slots of this machine. gpus None -> visible_gpus(); pass [] to use CPU slots only.
    cpu_slots None -> $GCE_LAB_SLOTS or max(3, half the cores); per_gpu None -> $GCE_LAB_SLOTS_PER_GPU."""
    gpus = visible_gpus() if gpus is None else list(gpus)
    if gpus:
        per_gpu = per_gpu if per_gpu is not None else slots_per_gpu()
        on = [g for g in gpus for _ in range(per_gpu)]
        return [Slot(i, f"cuda:{g}", {"CUDA_VISIBLE_DEVICES": g}) for i, g in enumerate(on)]
    n = cpu_slots if cpu_slots is not None else default_cpu_slots()
    if n < 1:
        raise ValueError(f"a supervisor needs at least 1 slot, got {n}")
    threads = max(1, (os.cpu_count() or 1) // n)
    return [Slot(i, "cpu", {"CUDA_VISIBLE_DEVICES": "", **_threads_env(threads)}) for i in range(n)]

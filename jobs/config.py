"""Where the lab keeps its things, and the limits and timings of the job runner.

Everything is read from environment variables at call time (not import time), so a test or a
second lab on the same machine only has to set them.

| variable                        | default                         | what                          |
|---------------------------------|---------------------------------|-------------------------------|
| GCE_LAB_HOME                    | ~/.gce_lab                      | database, checkpoints, logs   |
| GCE_LAB_DB_URL                  | sqlite:///<lab home>/gce_lab.db | any SQLAlchemy URL            |
| GCE_LAB_SLOTS                   | max(3, CPU cores // 2)          | runs at once on a CPU machine |
| GCE_LAB_SLOTS_PER_GPU           | 1                               | runs at once on each GPU      |
| GCE_LAB_MAX_QUEUED_PER_OWNER    | 200                             | queued runs one owner may have|
| GCE_LAB_MAX_EPOCHS              | 1000                            | epochs of one run             |
| GCE_LAB_MAX_GROUP_SIZE          | 500                             | runs in one group submission  |
| GCE_LAB_MAX_RETRIES             | 2                               | resumes after a crash         |
| GCE_LAB_HEARTBEAT_S             | 2                               | heartbeat period              |
| GCE_LAB_STALE_AFTER_S           | 30                              | heartbeat age that means dead |
| GCE_LAB_CANCEL_GRACE_S          | 5                               | wait before SIGTERM on cancel |
| GCE_LAB_KILL_GRACE_S            | 5                               | wait after SIGTERM for SIGKILL|
| GCE_LAB_CANCEL_POLL_S           | 0.5                             | cancel-flag reads, at most    |
| GCE_LAB_STORAGE_RETRY_S         | 5                               | wait after a storage fault    |
| GCE_LAB_STORAGE_RETRY_MAX_S     | 300                             | longest such wait (doubling)  |
| GCE_LAB_EXECUTOR                | local                           | where runs go: local or ray   |
| GCE_LAB_RAY_ADDRESS             | unset (Ray's own default)       | the Ray cluster, host:port    |
"""

from __future__ import annotations

import os
from dataclasses import dataclass, fields
from pathlib import Path
from typing import ClassVar

ENV_HOME = "GCE_LAB_HOME"
ENV_DB_URL = "GCE_LAB_DB_URL"
ENV_SLOTS = "GCE_LAB_SLOTS"
ENV_SLOTS_PER_GPU = "GCE_LAB_SLOTS_PER_GPU"
ENV_EXECUTOR = "GCE_LAB_EXECUTOR"
ENV_RAY_ADDRESS = "GCE_LAB_RAY_ADDRESS"
EXECUTORS = ("local", "ray")
DB_FILE = "gce_lab.db"
LOG_FILE = "log.txt"


def lab_home() -> Path:
    """$GCE_LAB_HOME, else ~/.gce_lab."""
    return Path(os.environ.get(ENV_HOME) or Path.home() / ".gce_lab").expanduser()


def db_url() -> str:
    """$GCE_LAB_DB_URL, else a SQLite file in the lab home."""
    return os.environ.get(ENV_DB_URL) or f"sqlite:///{lab_home() / DB_FILE}"


def executor_name(name: str | None = None) -> str:
    """``name``, else $GCE_LAB_EXECUTOR, else "local"; one of EXECUTORS ("local": warm run
    processes on this machine; "ray": a Ray task per run on a Ray cluster)."""
    value = (name or os.environ.get(ENV_EXECUTOR) or "local").strip().lower()
    if value not in EXECUTORS:
        raise ValueError(f"unknown executor {value!r} (from --executor or ${ENV_EXECUTOR}); "
                         f"use one of: {', '.join(EXECUTORS)}")
    return value


def ray_address(address: str | None = None) -> str | None:
    """``address``, else $GCE_LAB_RAY_ADDRESS, else None (Ray's own default: $RAY_ADDRESS, else
    a Ray started for this supervisor alone)."""
    return address or os.environ.get(ENV_RAY_ADDRESS) or None


def run_dir(run_id: str, home: Path | None = None) -> Path:
    """<lab home>/runs/<run id>/: the run's checkpoint.pt and log.txt."""
    return (home or lab_home()) / "runs" / run_id


def compile_cache_env(home: Path | None = None) -> dict[str, str]:
    """Where torch.compile keeps its compiled kernels for every run of this lab home
    (<lab home>/compile-cache), so a new run process reuses the kernels an earlier one built; an
    inductor cache dir already set in the environment wins."""
    return {"TORCHINDUCTOR_CACHE_DIR": str((home or lab_home()) / "compile-cache")}


def log_path(run_id: str, home: Path | None = None) -> Path:
    """The run's stdout and stderr, every attempt appended."""
    return run_dir(run_id, home) / LOG_FILE


def _env_number(name: str, default, kind=int):
    text = os.environ.get(name)
    if text is None or not text.strip():
        return default
    try:
        value = kind(text)
    except ValueError:
        raise ValueError(f"${name} must be a {kind.__name__}, got {text!r}") from None
    if value < 0:
        raise ValueError(f"${name} must be >= 0, got {text!r}")
    return value


def default_cpu_slots() -> int:
    """$GCE_LAB_SLOTS, else half the CPU cores but at least 3: a comparison's three losses train
    side by side (on 2 cores, 3 one-thread runs complete the quick demo sooner than 2 slots or one
    2-thread slot: docs/BENCHMARKS.md), and on a bigger machine each run gets 2 threads."""
    return max(1, _env_number(ENV_SLOTS, max(3, (os.cpu_count() or 1) // 2)))


def slots_per_gpu() -> int:
    """$GCE_LAB_SLOTS_PER_GPU, else 1: how many runs share one GPU at once (small runs leave most
    of a GPU idle; each slot is its own process, so BatchNorm and every model work as alone)."""
    return max(1, _env_number(ENV_SLOTS_PER_GPU, 1))


@dataclass(frozen=True)
class Limits:
    """What one submission may ask for; a refusal names the variable that raises the limit."""

    max_queued_per_owner: int = 200  # GCE_LAB_MAX_QUEUED_PER_OWNER: runs waiting, per owner
    max_epochs: int = 1000  # GCE_LAB_MAX_EPOCHS: epochs of one run
    max_group_size: int = 500  # GCE_LAB_MAX_GROUP_SIZE: runs in one submit_group / submit_grid

    ENV: ClassVar[dict[str, str]] = {
        "max_queued_per_owner": "GCE_LAB_MAX_QUEUED_PER_OWNER",
        "max_epochs": "GCE_LAB_MAX_EPOCHS",
        "max_group_size": "GCE_LAB_MAX_GROUP_SIZE",
    }

    @classmethod
    def from_env(cls) -> Limits:
        return cls(**{f.name: _env_number(cls.ENV[f.name], f.default) for f in fields(cls)})


@dataclass(frozen=True)
class SupervisorSettings:
    """Timings of the supervisor and its training children, in seconds."""

    max_retries: int = 2  # GCE_LAB_MAX_RETRIES: resumes after a crash before the run fails
    heartbeat_s: float = 2.0  # GCE_LAB_HEARTBEAT_S: how often a child and a supervisor heartbeat
    stale_after_s: float = 30.0  # GCE_LAB_STALE_AFTER_S: a heartbeat older than this means dead
    cancel_grace_s: float = 5.0  # GCE_LAB_CANCEL_GRACE_S: cancel not honoured -> SIGTERM
    kill_grace_s: float = 5.0  # GCE_LAB_KILL_GRACE_S: SIGTERM not honoured -> SIGKILL
    cancel_poll_s: float = 0.5  # GCE_LAB_CANCEL_POLL_S: how often a child reads its cancel flag (at batch boundaries)
    recover_every_s: float = 5.0  # how often a supervisor looks for orphaned runs
    storage_retry_s: float = 5.0  # GCE_LAB_STORAGE_RETRY_S: first wait after a storage fault (doubles)
    storage_retry_max_s: float = 300.0  # GCE_LAB_STORAGE_RETRY_MAX_S: the longest such wait

    ENV: ClassVar[dict[str, str]] = {
        "max_retries": "GCE_LAB_MAX_RETRIES",
        "heartbeat_s": "GCE_LAB_HEARTBEAT_S",
        "stale_after_s": "GCE_LAB_STALE_AFTER_S",
        "cancel_grace_s": "GCE_LAB_CANCEL_GRACE_S",
        "kill_grace_s": "GCE_LAB_KILL_GRACE_S",
        "cancel_poll_s": "GCE_LAB_CANCEL_POLL_S",
        "storage_retry_s": "GCE_LAB_STORAGE_RETRY_S",
        "storage_retry_max_s": "GCE_LAB_STORAGE_RETRY_MAX_S",
    }

    @classmethod
    def from_env(cls) -> SupervisorSettings:
        """Defaults, overridden by the variables in ENV."""
        values = {}
        for f in fields(cls):
            if f.name in cls.ENV:
                kind = int if f.type in ("int", int) else float  # the annotation, as text
                values[f.name] = _env_number(cls.ENV[f.name], f.default, kind)
        return cls(**values)

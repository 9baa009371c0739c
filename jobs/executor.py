"""The seam between the supervisor and where a run's process lives (this machine, or a Ray cluster).

An executor starts a run's training process in a slot and hands back a handle; the supervisor
polls handles, never processes. The exit codes below are the contract between a training process
(jobs.worker_process) and the supervisor.
"""

from __future__ import annotations

import signal
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:  # kept out at run time: a training process imports this before torch
    from jobs.records import RunRecord

EXIT_OK = 0  # completed (or cancelled): the process wrote the run's final status itself
EXIT_ERROR = 1  # training raised an exception: retrying would fail the same way
EXIT_STORAGE = 74  # a storage fault (disk full, read-only or unwritable lab home, database file): queued, retried later
EXIT_STOPPED = 75  # stopped at a batch boundary (SIGTERM/SIGINT): the run resumes from its checkpoint
EXIT_SUPERSEDED = 76  # the run is no longer this process's (restarted elsewhere, given up on)
EXIT_RETRYABLE = 77  # out of memory, or the database unreachable: treated like a crash (resumed)
# The last line of the run's log that starts with one of these says why its process ended.
ERROR_PREFIX = "error: "
STORAGE_PREFIX = "storage fault: "


@dataclass(frozen=True)
class Slot:
    """Where one run at a time goes: a GPU (env has CUDA_VISIBLE_DEVICES) or a share of CPUs."""

    index: int
    device: str  # "cpu" or "cuda:N" (N the physical GPU)
    env: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class ExitInfo:
    """How a run's process ended. ``code`` follows subprocess: -N means killed by signal N;
    None means unknown (the process was adopted from a previous supervisor, or its Ray worker
    died). ``detail``, when an executor knows more than the code, is what describe() says."""

    code: int | None
    detail: str | None = None

    def describe(self) -> str:
        if self.detail:
            return self.detail
        code = self.code
        if code is None:
            return "its process ended while no supervisor could see its exit status"
        if code < 0:
            try:
                name = signal.Signals(-code).name
            except ValueError:
                name = "an unknown signal"
            return f"its process was killed by {name} (signal {-code})"
        meaning = {
            EXIT_OK: "finished",
            EXIT_ERROR: "training raised an error",
            EXIT_STORAGE: "could not write to storage",
            EXIT_STOPPED: "stopped at a batch boundary",
            EXIT_SUPERSEDED: "found the run taken over",
            EXIT_RETRYABLE: "ran out of memory or lost the database",
        }.get(code, "exited")
        return f"its process {meaning} (exit code {code})"


class RunHandle(Protocol):
    """A started (or adopted) run's process."""

    pid: int | None

    def poll(self) -> ExitInfo | None:
        """None while it runs; how it ended once it has (and then the process is reaped)."""

    def terminate(self) -> None:
        """Ask it to stop at the next batch boundary (SIGTERM to its process group)."""

    def kill(self) -> None:
        """Stop it now (SIGKILL to its process group)."""


class Executor(Protocol):
    name: str
    host: str

    def start(self, run: RunRecord, token: str, slot: Slot, env: Mapping[str, str]) -> RunHandle:
        """Start training ``run`` (claimed with ``token``) in ``slot``."""

    def prepare(self, slot: Slot, env: Mapping[str, str]) -> bool:
        """Get ``slot`` ready for its next run (the local executor keeps a warm run process
        there); called for every free slot before a claim. True once it can start a run at once:
        the supervisor claims runs only for such slots."""

    def attach(self, run: RunRecord) -> RunHandle | None:
        """A handle on the process of a run started by a supervisor that is gone, if it still
        runs here; None otherwise."""

    def log_tail(self, run_id: str) -> str:
        """The last lines of the run's log, for failure reasons."""

    def note(self, run_id: str, message: str) -> None:
        """Add a supervisor line to the run's log."""

    def close(self) -> None:
        """The supervisor stops: let go of what the executor holds (runs in flight go on)."""

"""RunRecord: what the lab knows about one run, as the client hands it out (read-only)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from gce_core.spec import RunSpec
from jobs.status import RunStatus


@dataclass(frozen=True)
class RunRecord:
    """One run. Times are timezone-aware UTC; ``error`` is the last failure reason with the tail
    of the run's log; ``summary`` is gce_core.train's summary once completed."""

    id: str
    spec: RunSpec
    status: RunStatus
    owner: str
    group: str | None
    tags: tuple[str, ...]
    archived: bool
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None
    device: str | None
    pid: int | None
    heartbeat_at: datetime | None
    attempts: int  # times the run was started (a resume after a crash or a restart counts)
    error: str | None
    epochs_done: int
    summary: dict | None
    cancel_requested: bool
    # beyond the contract
    crashes: int = 0  # times its process died; past GCE_LAB_MAX_RETRIES the run fails
    host: str | None = None  # machine its process runs (or ran) on
    worker_id: str | None = None  # supervisor that watches it
    claim_token: str | None = None  # changes at every start; a stale process cannot write
    train_seconds: float = 0.0  # sum of the epochs' "seconds"
    storage_faults: int = 0  # storage faults in a row (disk full, read-only lab home); reset by progress
    not_before: datetime | None = None  # after a storage fault: not claimed again before then

    @property
    def progress(self) -> float:
        """Epochs done / epochs asked, in [0, 1]."""
        return min(1.0, self.epochs_done / self.spec.epochs) if self.spec.epochs else 1.0

    @property
    def seconds_per_epoch(self) -> float | None:
        return self.train_seconds / self.epochs_done if self.epochs_done else None

    @property
    def eta_seconds(self) -> float | None:
        """Seconds left, from the mean seconds per epoch so far; 0 once completed, None when
        unknown (no epoch yet) or when the run will not go on (failed, cancelled)."""
        if self.status == RunStatus.COMPLETED:
            return 0.0
        per_epoch = self.seconds_per_epoch
        if self.status.is_final or per_epoch is None:
            return None
        return per_epoch * max(0, self.spec.epochs - self.epochs_done)

    @property
    def warning(self) -> str | None:
        """A completed run's warning, e.g. that it ended at chance level (jobs.outcome.chance_warning)."""
        return (self.summary or {}).get("warning") if isinstance(self.summary, dict) else None

    @property
    def at_chance(self) -> bool:
        """Completed, but its last test accuracy is at chance level: it learned nothing."""
        return bool(self.warning and self.warning.startswith("ended at chance level"))

    @property
    def name(self) -> str:
        return self.spec.name or self.spec.label()

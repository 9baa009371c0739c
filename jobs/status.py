"""The states of a run, as stored in the database.

queued -> running -> completed | failed | cancelled
running -> interrupted (its process died; it resumes from its checkpoint) -> running
running -> queued (the supervisor shut down gracefully; it resumes from its checkpoint)
queued | interrupted -> cancelled
"""

from __future__ import annotations

from enum import Enum

from gce_core.messages import quote


class RunStatus(str, Enum):
    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"
    INTERRUPTED = "interrupted"

    def __str__(self) -> str:
        return self.value

    @property
    def is_final(self) -> bool:
        """True for completed, failed and cancelled: nothing will happen to the run any more."""
        return self in FINAL

    @classmethod
    def parse(cls, value: RunStatus | str) -> RunStatus:
        """A status from its name; ValueError listing the allowed names otherwise."""
        try:
            return cls(value)
        except ValueError:
            allowed = ", ".join(s.value for s in cls)
            raise ValueError(f"unknown run status {quote(value)}; allowed: {allowed}") from None


FINAL = frozenset({RunStatus.COMPLETED, RunStatus.FAILED, RunStatus.CANCELLED})
# Waiting for a slot: a supervisor may claim these (an interrupted run resumes from its checkpoint).
CLAIMABLE = (RunStatus.QUEUED, RunStatus.INTERRUPTED)

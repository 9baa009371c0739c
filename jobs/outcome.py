"""What becomes of a run whose process ended without writing the run's end itself.

A pure function of the run, how its process ended and why, so every case is testable on its own:

| case                                         | run becomes                               |
|----------------------------------------------|-------------------------------------------|
| cancel was requested                         | cancelled (its metrics stay)              |
| the supervisor is shutting down              | queued (resumes from its checkpoint)      |
| training raised an error (exit code 1)       | failed, with the error and the log's tail |
| it stopped at a batch boundary (exit code 75)| queued, not a crash                       |
| anything else (signal, OOM, lost heartbeat)  | interrupted and resumed from its          |
|                                              | checkpoint, until GCE_LAB_MAX_RETRIES     |
|                                              | crashes; then failed, saying why          |
"""

from __future__ import annotations

from dataclasses import dataclass

from jobs.executor import EXIT_ERROR, EXIT_STOPPED, ExitInfo
from jobs.logs import with_tail
from jobs.records import RunRecord
from jobs.status import RunStatus


@dataclass(frozen=True)
class Outcome:
    status: RunStatus
    reason: str  # one line, for the log
    error: str | None  # stored on the run (None keeps the previous one)
    crashed: bool = False


def decide(run: RunRecord, how: ExitInfo, *, forced: str | None = None, stopping: bool = False,
           max_retries: int = 2, log_tail: str = "") -> Outcome:
    """The run's next status. ``forced``: why the supervisor killed the process, if it did."""
    what = forced or how.describe()
    if run.cancel_requested:
        return Outcome(RunStatus.CANCELLED, f"cancelled; {what}", None)
    if stopping and how.code != EXIT_ERROR:
        return Outcome(RunStatus.QUEUED, f"the supervisor shut down ({what}); queued again, resumes "
                       f"from its last checkpoint", None)
    if how.code == EXIT_ERROR:
        return Outcome(RunStatus.FAILED, what, with_tail(what, log_tail))
    if how.code == EXIT_STOPPED:  # a clean stop: its checkpoint is the last completed epoch
        return Outcome(RunStatus.QUEUED, f"{what}; queued again, resumes from its last checkpoint", None)
    crashes = run.crashes + 1
    if crashes > max_retries:
        reason = (f"{what}; gave up after {crashes} crashes "
                  f"(the limit is GCE_LAB_MAX_RETRIES={max_retries} resumes)")
        return Outcome(RunStatus.FAILED, reason, with_tail(reason, log_tail), crashed=True)
    reason = (f"{what}; resuming from its last checkpoint ({run.epochs_done} epochs recorded), "
              f"retry {crashes} of {max_retries}")
    return Outcome(RunStatus.INTERRUPTED, reason, with_tail(reason, log_tail), crashed=True)

"""What becomes of a run whose process ended without writing the run's end itself.

A pure function of the run, how its process ended and why, so every case is testable on its own:

| case                                         | run becomes                               |
|----------------------------------------------|-------------------------------------------|
| cancel was requested                         | cancelled (its metrics stay)              |
| the supervisor is shutting down              | queued (resumes from its checkpoint)      |
| training raised an error (exit code 1)       | failed, the error on the first line, then |
|                                              | the log's tail                            |
| a storage fault (exit code 74: disk full,    | queued, not a crash, not claimed again    |
| read-only or unwritable lab home, database)  | before its back-off (5 s, doubling with   |
|                                              | each fault in a row, at most 300 s)       |
| it stopped at a batch boundary (exit code 75)| queued, not a crash                       |
| anything else (signal, OOM, lost heartbeat)  | interrupted and resumed from its          |
|                                              | checkpoint, until GCE_LAB_MAX_RETRIES     |
|                                              | crashes; then failed, saying why          |

Whether a completed run learned anything is ``chance_warning``'s business: a run that ends at
chance level is flagged in its summary.
"""

from __future__ import annotations

from dataclasses import dataclass

from gce_core.messages import clip
from jobs.executor import (
    ERROR_PREFIX,
    EXIT_ERROR,
    EXIT_STOPPED,
    EXIT_STORAGE,
    STORAGE_PREFIX,
    ExitInfo,
)
from jobs.logs import with_tail
from jobs.records import RunRecord
from jobs.status import RunStatus

# A run flagged at chance level: its last test accuracy is under this many times chance (1/classes).
CHANCE_FACTOR = 1.5


@dataclass(frozen=True)
class Outcome:
    status: RunStatus
    reason: str  # one line, for the log
    error: str | None  # stored on the run (None keeps the previous one)
    crashed: bool = False
    storage_fault: bool = False
    retry_in: float | None = None  # seconds before the run may be claimed again


def last_line(tail: str, prefix: str) -> str | None:
    """The text after ``prefix`` on the last line of ``tail`` that starts with it."""
    for line in reversed(tail.splitlines()):
        if line.startswith(prefix):
            return clip(line[len(prefix):].strip(), 300)
    return None


def storage_backoff(faults: int, base_s: float, max_s: float) -> float:
    """Seconds to wait after the ``faults``-th storage fault in a row: base, doubling, capped."""
    return min(max_s, base_s * 2 ** max(0, faults - 1))


def decide(run: RunRecord, how: ExitInfo, *, forced: str | None = None, stopping: bool = False,
           max_retries: int = 2, log_tail: str = "", storage_note: str | None = None,
           storage_retry_s: float = 5.0, storage_retry_max_s: float = 300.0) -> Outcome:
    """The run's next status. ``forced``: why the supervisor killed the process, if it did;
    ``storage_note``: what the supervisor sees wrong with the run's folder, if anything."""
    what = forced or how.describe()
    if run.cancel_requested:
        return Outcome(RunStatus.CANCELLED, f"cancelled; {what}", None)
    if stopping and how.code != EXIT_ERROR:
        return Outcome(RunStatus.QUEUED, f"the supervisor shut down ({what}); queued again, resumes "
                       f"from its last checkpoint", None)
    if how.code == EXIT_ERROR:
        said = last_line(log_tail, ERROR_PREFIX)
        reason = f"{what}: {said}" if said else what
        return Outcome(RunStatus.FAILED, reason, with_tail(reason, log_tail))
    if how.code == EXIT_STORAGE:
        faults = run.storage_faults + 1
        wait = storage_backoff(faults, storage_retry_s, storage_retry_max_s)
        said = (how.detail or last_line(log_tail, STORAGE_PREFIX) or storage_note
                or "its run folder or the database could not be written")
        reason = (f"storage fault: {said}; queued again, retried in {wait:g} s (storage fault {faults} in a "
                  f"row); its {run.epochs_done} stored epochs are kept and it resumes from its last checkpoint")
        return Outcome(RunStatus.QUEUED, reason, reason, storage_fault=True, retry_in=wait)
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


def chance_warning(num_classes: int, summary: dict) -> str | None:
    """A completed run whose last test accuracy is at chance level (under CHANCE_FACTOR / classes):
    one line saying so, else None. (Adam at lr 10 'completes' at 10% on ten classes.)"""
    last = summary.get("last_test_acc")
    if last is None or not num_classes:
        return None
    chance = 1.0 / num_classes
    if last >= CHANCE_FACTOR * chance:
        return None
    best = summary.get("best_test_acc")
    earlier = f" (its best epoch had {100 * best:.2f}%)" if best is not None and best >= CHANCE_FACTOR * chance else ""
    return (f"ended at chance level: test accuracy {100 * last:.2f}% in its last epoch{earlier}, and "
            f"chance is {100 * chance:.2f}% with {num_classes} classes; it learned nothing: lower the "
            f"learning rate (or check the noise rate)")

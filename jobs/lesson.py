"""The lesson's runs in the store: which of a step's runs the lab already has, and queueing the
missing ones (`python -m jobs lesson --prepare`, or the Lesson page when a step has none).

A stored run stands for a lesson run when its spec matches on every field but those in
``gce_core.lesson.IGNORED_FIELDS`` (name, device, ...): the quick demo's runs count. A finished
run is preferred to a running one, a running one to a queued one; failed and cancelled runs
never count.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from gce_core.lesson import LessonStep, spec_key, steps
from gce_core.spec import RunSpec
from jobs.client import MAX_PAGE, LabClient
from jobs.records import RunRecord
from jobs.status import RunStatus

LESSON_TAG = "lesson"
_PREFERENCE = {RunStatus.COMPLETED: 0, RunStatus.RUNNING: 1, RunStatus.INTERRUPTED: 2, RunStatus.QUEUED: 3}


def match(specs: Sequence[RunSpec], records: Iterable[RunRecord]) -> list[RunRecord | None]:
    """For each of ``specs``, the best stored run with the same configuration (None if none)."""
    best: dict[str, RunRecord] = {}
    for r in records:
        if r.status not in _PREFERENCE:
            continue
        key = spec_key(r.spec)
        held = best.get(key)
        if held is None or (_PREFERENCE[r.status], -r.epochs_done) < (_PREFERENCE[held.status], -held.epochs_done):
            best[key] = r
    return [best.get(spec_key(s)) for s in specs]


def candidates(client: LabClient) -> list[RunRecord]:
    """The runs a lesson may use: every run of the store that is not archived (newest 1000)."""
    return client.list_runs(limit=MAX_PAGE)


def step_runs(client: LabClient, step: LessonStep, records: Sequence[RunRecord] | None = None) -> list[RunRecord | None]:
    """The stored run for each of the step's specs, in the step's order (None where missing)."""
    return match(step.specs, candidates(client) if records is None else records)


def prepare(client: LabClient, step: LessonStep, *, owner: str = "lesson",
            records: Sequence[RunRecord] | None = None) -> list[str]:
    """Queue the step's runs that the store does not have yet, as the step's group, tagged
    'lesson'; the new ids (none when all are there)."""
    found = step_runs(client, step, records)
    missing = [s for s, r in zip(step.specs, found, strict=True) if r is None]
    if not missing:
        return []
    _, ids = client.submit_group(missing, owner=owner, group=step.group, tags=(LESSON_TAG,))
    return ids


def prepare_all(client: LabClient, keys: Iterable[str] | None = None, *, owner: str = "lesson") -> dict[str, list[str]]:
    """Step key -> the ids queued for it, for the steps ``keys`` (default: all). A run two steps
    share is queued once, for the first."""
    wanted = set(keys) if keys is not None else None
    out: dict[str, list[str]] = {}
    for step in steps():
        if wanted is None or step.key in wanted:
            out[step.key] = prepare(client, step, owner=owner)
    return out

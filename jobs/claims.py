"""Claiming waiting runs: the oldest one, and with it the runs of its group that one process can
train with it (fused by ``gce_core.fused``, or, with compile, one after another), inside the
caller's write transaction.

The oldest waiting run is always taken first, so sharing a process never lets a run jump the queue.
Its group-mates are taken only if they are waiting, belong to the same ``run_group`` and have the
same ``gce_core.fusable.process_key``, oldest first, at most ``fused_share`` of them.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, select, update

from gce_core.fusable import process_key
from gce_core.spec import parse_spec
from jobs.schema import runs
from jobs.status import CLAIMABLE

_WAITING = [s.value for s in CLAIMABLE]
_ORDER = (runs.c.created_at, runs.c.id)


def fused_share(waiting: int, free_slots: int, fuse_max: int) -> int:
    """How many of ``waiting`` runs of one group that can share a process a claim takes: an
    equal share of the ``free_slots`` slots free now (so 6 runs on 2 free slots go 3 + 3, not
    6 + 0), at most ``fuse_max`` (GCE_LAB_FUSE_MAX; 0 or 1: a process per run), at least 1."""
    if fuse_max <= 1 or waiting <= 1:
        return 1
    return max(1, min(fuse_max, waiting, math.ceil(waiting / max(1, free_slots))))


@functools.lru_cache(maxsize=4096)
def _key(spec_json: str) -> tuple | None:
    return process_key(parse_spec(spec_json))


def _take(conn: Connection, run_id: str, values: Mapping[str, Any]) -> bool:
    """The conditional UPDATE that is the claim's guarantee: only a waiting run is taken."""
    won = conn.execute(
        update(runs).where(runs.c.id == run_id, runs.c.status.in_(_WAITING)).values(**values)
    )
    return won.rowcount == 1


def _oldest(conn: Connection, values: Mapping[str, Any]):
    # PostgreSQL: FOR UPDATE SKIP LOCKED, so concurrent supervisors each lock a different
    # candidate instead of queueing on the same row; SQLite ignores it (BEGIN IMMEDIATE
    # already serialises writers).
    candidate = (
        select(runs.c.id, runs.c.run_group, runs.c.spec)
        .where(runs.c.status.in_(_WAITING))
        .order_by(*_ORDER)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    for _ in range(8):  # retry if the conditional UPDATE lost
        row = conn.execute(candidate).first()
        if row is None or _take(conn, row.id, values):
            return row
    return None


def claim_runs(
    conn: Connection, values: Mapping[str, Any], *, max_runs: int = 1, free_slots: int = 1
) -> list[str]:
    """Take the oldest waiting run and up to ``fused_share(...) - 1`` runs of its group with its
    ``process_key``, setting ``values`` (status running, one claim token, ...) on each; their ids,
    oldest first."""
    first = _oldest(conn, values)
    if first is None:
        return []
    taken = [first.id]
    key = _key(first.spec) if first.run_group is not None and max_runs > 1 else None
    if key is None:
        return taken
    mates = (
        select(runs.c.id, runs.c.spec)
        .where(runs.c.status.in_(_WAITING), runs.c.run_group == first.run_group)
        .order_by(*_ORDER)
        .with_for_update(skip_locked=True)
    )
    sharing = [r.id for r in conn.execute(mates) if _key(r.spec) == key]
    share = fused_share(1 + len(sharing), free_slots, max_runs)
    for run_id in sharing:
        if len(taken) == share:
            break
        if _take(conn, run_id, values):
            taken.append(run_id)
    return taken

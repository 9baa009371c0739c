"""Claiming a waiting run: the oldest one, inside the caller's write transaction.

One rule, read from indexed columns alone (the spec JSON is never parsed here): the oldest waiting
run is taken by a conditional UPDATE that succeeds only while it is still waiting.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import Connection, or_, select, update

from jobs.schema import runs
from jobs.status import CLAIMABLE

_WAITING = [s.value for s in CLAIMABLE]
_ORDER = (runs.c.created_at, runs.c.id)


def _take(conn: Connection, run_id: str, values: Mapping[str, Any]) -> bool:
    """The conditional UPDATE that is the claim's guarantee: only a waiting run is taken."""
    won = conn.execute(
        update(runs).where(runs.c.id == run_id, runs.c.status.in_(_WAITING)).values(**values)
    )
    return won.rowcount == 1


def ready(now: float | None):
    """Waiting runs that may be taken at ``now``: not backing off after a storage fault."""
    if now is None:
        return runs.c.status.in_(_WAITING)
    return runs.c.status.in_(_WAITING) & or_(runs.c.not_before.is_(None), runs.c.not_before <= now)


def claim_oldest(conn: Connection, values: Mapping[str, Any], now: float | None = None) -> str | None:
    """Take the oldest waiting run (at ``now``, one whose storage-fault back-off is over), setting
    ``values`` (status running, a claim token, ...) on it; its id, or None if nothing waits."""
    # PostgreSQL: FOR UPDATE SKIP LOCKED, so concurrent supervisors each lock a different
    # candidate instead of queueing on the same row; SQLite ignores it (BEGIN IMMEDIATE
    # already serialises writers).
    candidate = (
        select(runs.c.id)
        .where(ready(now))
        .order_by(*_ORDER)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    for _ in range(8):  # retry if the conditional UPDATE lost
        row = conn.execute(candidate).first()
        if row is None:
            return None
        if _take(conn, row.id, values):
            return row.id
    return None

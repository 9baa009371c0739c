"""The store: runs, their tags and per-epoch metrics, in one SQL database (SQLAlchemy Core).

One interface for every backend (SQLite file by default, PostgreSQL for several machines), checked
by one contract test suite. Every method is one short transaction. The methods a training
process calls take the run's ``claim_token``: it changes at every start, so a process that was
given up on (stale heartbeat, supervisor restart) can no longer write to the run.
"""

from __future__ import annotations

import functools
import json
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone

from sqlalchemy import Connection, and_, delete, exists, func, insert, select, update

from gce_core.spec import RunSpec, load_stored_spec
from jobs import config
from jobs.claims import claim_oldest, ready
from jobs.db import Database
from jobs.records import RunRecord
from jobs.registry import WorkerRegistry
from jobs.schema import metrics, migrate, run_tags, runs
from jobs.status import CLAIMABLE, FINAL, RunStatus


class Superseded(RuntimeError):
    """The run was started again elsewhere, or given up on: this process must stop writing."""


class RunActive(ValueError):
    """The run is running; cancel it first."""


class QueueFull(RuntimeError):
    def __init__(self, owner: str, queued: int, adding: int, limit: int):
        self.owner, self.queued, self.adding, self.limit = owner, queued, adding, limit
        super().__init__(f"owner {owner!r} has {queued} queued runs; {adding} more would pass the limit of {limit}")


@dataclass(frozen=True)
class NewRun:
    id: str
    spec: RunSpec
    owner: str
    group: str | None
    tags: tuple[str, ...] = ()


@dataclass(frozen=True)
class RunFilter:
    """Which runs to list; None means any."""

    status: tuple[RunStatus, ...] | None = None
    owner: str | None = None
    group: str | None = None
    tag: str | None = None
    include_archived: bool = False


def new_run_id() -> str:
    return uuid.uuid4().hex[:12]


def to_datetime(ts: float | None) -> datetime | None:
    return None if ts is None else datetime.fromtimestamp(ts, tz=timezone.utc)


@functools.lru_cache(maxsize=4096)
def _spec(text: str) -> RunSpec:
    # Validated once, when it was submitted: read back as written (a validator changed since
    # never breaks a listing).
    return load_stored_spec(text)


def _record(row, tags: Sequence[str]) -> RunRecord:
    return RunRecord(
        id=row.id, spec=_spec(row.spec), status=RunStatus(row.status), owner=row.owner,
        group=row.run_group, tags=tuple(sorted(tags)), archived=bool(row.archived),
        created_at=to_datetime(row.created_at), started_at=to_datetime(row.started_at),
        finished_at=to_datetime(row.finished_at), device=row.device, pid=row.pid,
        heartbeat_at=to_datetime(row.heartbeat_at), attempts=row.attempts, error=row.error,
        epochs_done=row.epochs_done, summary=None if row.summary is None else json.loads(row.summary),
        cancel_requested=bool(row.cancel_requested), crashes=row.crashes, host=row.host,
        worker_id=row.worker_id, claim_token=row.claim_token, train_seconds=row.train_seconds,
        storage_faults=row.storage_faults or 0, not_before=to_datetime(row.not_before),
    )


def _mine(run_id: str, token: str):
    """The run is still this process's to write: same start, still running."""
    return and_(runs.c.id == run_id, runs.c.claim_token == token, runs.c.status == RunStatus.RUNNING.value)


class Store:
    """All database access of the job runner. ``url`` None -> config.db_url()."""

    def __init__(self, url: str | None = None):
        self.db = Database(url or config.db_url())
        self.schema_version = self.db.write(migrate)

    @property
    def url(self) -> str:
        return self.db.url

    def close(self) -> None:
        self.db.dispose()

    # --- reading runs ---------------------------------------------------------------------------
    def _records(self, conn: Connection, rows: Sequence) -> list[RunRecord]:
        ids = [r.id for r in rows]
        tags: dict[str, list[str]] = {i: [] for i in ids}
        for start in range(0, len(ids), 500):
            chunk = ids[start : start + 500]
            for run_id, tag in conn.execute(select(run_tags.c.run_id, run_tags.c.tag).where(run_tags.c.run_id.in_(chunk))):
                tags[run_id].append(tag)
        return [_record(r, tags[r.id]) for r in rows]

    def get(self, run_id: str) -> RunRecord | None:
        def fn(conn):
            row = conn.execute(select(runs).where(runs.c.id == run_id)).first()
            return None if row is None else self._records(conn, [row])[0]

        return self.db.read(fn)

    def get_many(self, run_ids: Iterable[str]) -> dict[str, RunRecord]:
        ids = list(dict.fromkeys(run_ids))

        def fn(conn):
            rows = conn.execute(select(runs).where(runs.c.id.in_(ids))).all() if ids else []
            return {r.id: r for r in self._records(conn, rows)}

        return self.db.read(fn)

    @staticmethod
    def _where(f: RunFilter) -> list:
        where = []
        if f.status is not None:
            where.append(runs.c.status.in_([RunStatus.parse(s).value for s in f.status]))
        if f.owner is not None:
            where.append(runs.c.owner == f.owner)
        if f.group is not None:
            where.append(runs.c.run_group == f.group)
        if f.tag is not None:
            where.append(exists().where(run_tags.c.run_id == runs.c.id, run_tags.c.tag == f.tag))
        if not f.include_archived:
            where.append(runs.c.archived.is_(False))
        return where

    def list_runs(self, f: RunFilter = RunFilter(), *, limit: int = 100, offset: int = 0) -> list[RunRecord]:
        """Newest first."""
        query = (select(runs).where(*self._where(f)).order_by(runs.c.created_at.desc(), runs.c.id.desc())
                 .limit(limit).offset(offset))
        return self.db.read(lambda conn: self._records(conn, conn.execute(query).all()))

    def count_runs(self, f: RunFilter = RunFilter()) -> int:
        query = select(func.count()).select_from(runs).where(*self._where(f))
        return int(self.db.read(lambda conn: conn.execute(query).scalar_one()))

    def groups(self, *, include_archived: bool = False) -> list[str]:
        """Group names, the most recently submitted first."""
        where = [runs.c.run_group.is_not(None)]
        if not include_archived:
            where.append(runs.c.archived.is_(False))
        query = (select(runs.c.run_group, func.max(runs.c.created_at).label("last"))
                 .where(*where).group_by(runs.c.run_group).order_by(func.max(runs.c.created_at).desc()))
        return [r.run_group for r in self.db.read(lambda conn: conn.execute(query).all())]

    def metrics(self, run_id: str, since_epoch: int = 0) -> list[dict]:
        """The run's epoch rows with epoch > since_epoch, in epoch order."""
        query = (select(metrics.c.row).where(metrics.c.run_id == run_id, metrics.c.epoch > since_epoch)
                 .order_by(metrics.c.epoch))
        return [json.loads(r.row) for r in self.db.read(lambda conn: conn.execute(query).all())]

    def metrics_of(self, run_ids: Sequence[str]) -> dict[str, list[dict]]:
        ids = list(dict.fromkeys(run_ids))
        query = (select(metrics.c.run_id, metrics.c.row).where(metrics.c.run_id.in_(ids))
                 .order_by(metrics.c.run_id, metrics.c.epoch))
        out: dict[str, list[dict]] = {i: [] for i in ids}
        for r in self.db.read(lambda conn: conn.execute(query).all()) if ids else []:
            out[r.run_id].append(json.loads(r.row))
        return out

    # --- changing runs from the client ------------------------------------------------------------
    def insert_runs(self, new: Sequence[NewRun], *, now: float, max_queued_per_owner: int | None = None) -> None:
        """Queue all of ``new`` or none (QueueFull when an owner would pass the limit)."""
        per_owner: dict[str, int] = {}
        for n in new:
            per_owner[n.owner] = per_owner.get(n.owner, 0) + 1

        def fn(conn):
            if max_queued_per_owner is not None:
                for owner, adding in per_owner.items():
                    queued = conn.execute(select(func.count()).select_from(runs).where(
                        runs.c.owner == owner, runs.c.status == RunStatus.QUEUED.value)).scalar_one()
                    if queued + adding > max_queued_per_owner:
                        raise QueueFull(owner, queued, adding, max_queued_per_owner)
            conn.execute(insert(runs), [
                dict(id=n.id, spec=n.spec.to_json(), epochs=n.spec.epochs, status=RunStatus.QUEUED.value,
                     owner=n.owner, run_group=n.group, archived=False, created_at=now + i * 1e-6,
                     attempts=0, crashes=0, epochs_done=0, train_seconds=0.0, cancel_requested=False)
                for i, n in enumerate(new)
            ])
            tag_rows = [dict(run_id=n.id, tag=t) for n in new for t in n.tags]
            if tag_rows:
                conn.execute(insert(run_tags), tag_rows)

        if new:
            self.db.write(fn)

    def request_cancel(self, run_id: str, *, now: float) -> RunRecord | None:
        """Waiting runs are cancelled at once; a running one gets the flag its process polls."""

        def fn(conn):
            waiting = [s.value for s in CLAIMABLE]
            done = conn.execute(update(runs).where(runs.c.id == run_id, runs.c.status.in_(waiting)).values(
                status=RunStatus.CANCELLED.value, finished_at=now, cancel_requested=True, worker_id=None))
            if done.rowcount == 0:
                conn.execute(update(runs).where(runs.c.id == run_id, runs.c.status == RunStatus.RUNNING.value)
                             .values(cancel_requested=True))

        self.db.write(fn)
        return self.get(run_id)

    def set_tags(self, run_id: str, tags: Sequence[str]) -> bool:
        def fn(conn):
            if conn.execute(select(runs.c.id).where(runs.c.id == run_id)).first() is None:
                return False
            conn.execute(delete(run_tags).where(run_tags.c.run_id == run_id))
            if tags:
                conn.execute(insert(run_tags), [dict(run_id=run_id, tag=t) for t in dict.fromkeys(tags)])
            return True

        return self.db.write(fn)

    def set_archived(self, run_id: str, archived: bool) -> bool:
        query = update(runs).where(runs.c.id == run_id).values(archived=archived)
        return self.db.write(lambda conn: conn.execute(query).rowcount == 1)

    def delete_run(self, run_id: str) -> bool:
        """Remove the run, its tags and metrics; RunActive if it is running."""

        def fn(conn):
            status = conn.execute(select(runs.c.status).where(runs.c.id == run_id)).scalar()
            if status is None:
                return False
            if status == RunStatus.RUNNING.value:
                raise RunActive(f"run {run_id} is running; cancel it first (python -m jobs cancel {run_id})")
            conn.execute(delete(metrics).where(metrics.c.run_id == run_id))
            conn.execute(delete(run_tags).where(run_tags.c.run_id == run_id))
            conn.execute(delete(runs).where(runs.c.id == run_id))
            return True

        return self.db.write(fn)

    # --- the life of a run, from the supervisor and the training process -------------------------
    def claim(self, *, worker_id: str, host: str, device: str, now: float) -> RunRecord | None:
        """Atomically take the oldest waiting run: it becomes running with a new claim token;
        None if nothing waits."""
        values = dict(status=RunStatus.RUNNING.value, worker_id=worker_id, host=host, device=device,
                      claim_token=uuid.uuid4().hex, pid=None, heartbeat_at=now,
                      attempts=runs.c.attempts + 1, started_at=func.coalesce(runs.c.started_at, now))
        run_id = self.db.write(lambda conn: claim_oldest(conn, values, now))
        return None if run_id is None else self.get(run_id)

    def has_waiting(self, now: float | None = None) -> bool:
        """Whether any run waits to be claimed (at ``now``: one not backing off after a storage
        fault); a read, cheap to ask often."""
        query = select(exists().where(ready(now)))
        return bool(self.db.read(lambda conn: conn.execute(query).scalar()))

    def set_pid(self, run_id: str, token: str, pid: int) -> bool:
        query = update(runs).where(_mine(run_id, token)).values(pid=pid)
        return self.db.write(lambda conn: conn.execute(query).rowcount == 1)

    def heartbeat(self, run_id: str, token: str, *, now: float) -> bool:
        """Record that the run's process is alive; False if the run is no longer its to write."""
        query = update(runs).where(_mine(run_id, token)).values(heartbeat_at=now)
        return self.db.write(lambda conn: conn.execute(query).rowcount == 1)

    def control(self, run_id: str, token: str) -> tuple[bool, bool]:
        """(still mine, cancel requested) for a training process; one cheap read. A run that is
        gone is (False, True)."""
        query = select(runs.c.claim_token, runs.c.status, runs.c.cancel_requested).where(runs.c.id == run_id)
        row = self.db.read(lambda conn: conn.execute(query).first())
        if row is None:
            return False, True
        return row.claim_token == token and row.status == RunStatus.RUNNING.value, bool(row.cancel_requested)

    def add_epoch(self, run_id: str, token: str, row: dict, *, now: float) -> bool:
        """Store one epoch row (``add_epochs``); False if that epoch was already stored."""
        return self.add_epochs(run_id, token, [row], now=now) == 1

    def add_epochs(self, run_id: str, token: str, rows: list[dict], *, now: float) -> int:
        """Store epoch rows in one transaction; returns how many were new (a resumed run repeats
        the epochs since its checkpoint, which are already stored). Superseded if the run is not
        this process's."""
        epochs = [int(row["epoch"]) for row in rows]

        def fn(conn):
            if conn.execute(select(runs.c.id).where(_mine(run_id, token))).first() is None:
                raise Superseded(f"run {run_id} was started again elsewhere or given up on")
            have = set(conn.execute(select(metrics.c.epoch).where(
                (metrics.c.run_id == run_id) & metrics.c.epoch.in_(epochs))).scalars())
            new = [(epoch, row) for epoch, row in zip(epochs, rows, strict=True) if epoch not in have]
            if not new:
                return 0
            conn.execute(insert(metrics), [dict(run_id=run_id, epoch=epoch, row=json.dumps(row), recorded_at=now)
                                           for epoch, row in new])
            seconds = sum(float(row.get("seconds") or 0.0) for _, row in new)
            done = select(func.max(metrics.c.epoch)).where(metrics.c.run_id == run_id).scalar_subquery()
            conn.execute(update(runs).where(runs.c.id == run_id).values(
                epochs_done=done, train_seconds=runs.c.train_seconds + seconds, heartbeat_at=now,
                storage_faults=0))  # progress: a next storage fault backs off from the start
            return len(new)

        return self.db.write(fn)

    def complete(self, run_id: str, token: str, summary: dict, *, now: float) -> bool:
        query = update(runs).where(_mine(run_id, token)).values(
            status=RunStatus.COMPLETED.value, summary=json.dumps(summary), finished_at=now, error=None,
            storage_faults=0, not_before=None)
        return self.db.write(lambda conn: conn.execute(query).rowcount == 1)

    def finish(self, run_id: str, token: str, status: RunStatus, *, now: float,
               error: str | None = None, crashed: bool = False, storage_fault: bool = False,
               not_before: float | None = None) -> bool:
        """Move a running run (of this token) to ``status``; False if it was not running any more.
        ``storage_fault`` counts one more storage fault in a row; ``not_before``: the run is not
        claimed again before then (its back-off)."""
        values: dict = dict(status=status.value, pid=None, worker_id=None, not_before=not_before)
        if status in FINAL:
            values["finished_at"] = now
        if error is not None:
            values["error"] = error
        if crashed:
            values["crashes"] = runs.c.crashes + 1
        if storage_fault:
            values["storage_faults"] = runs.c.storage_faults + 1
        query = update(runs).where(_mine(run_id, token)).values(**values)
        return self.db.write(lambda conn: conn.execute(query).rowcount == 1)

    def adopt(self, run_id: str, token: str, worker_id: str) -> bool:
        """A supervisor takes over watching a run whose process outlived its supervisor."""
        query = update(runs).where(_mine(run_id, token)).values(worker_id=worker_id)
        return self.db.write(lambda conn: conn.execute(query).rowcount == 1)

    def running(self, *, worker_id: str | None = None) -> list[RunRecord]:
        where = [runs.c.status == RunStatus.RUNNING.value]
        if worker_id is not None:
            where.append(runs.c.worker_id == worker_id)
        query = select(runs).where(*where).order_by(runs.c.created_at)
        return self.db.read(lambda conn: self._records(conn, conn.execute(query).all()))

    @functools.cached_property
    def workers(self) -> WorkerRegistry:
        """The supervisors' registry, in the same database."""
        return WorkerRegistry(self.db)

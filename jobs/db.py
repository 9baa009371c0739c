"""Opening a database and running short transactions on it, the same way for every backend.

SQLite (the default) gets WAL, so readers never block the writer, a busy timeout, and
``BEGIN IMMEDIATE`` for write transactions, so two writers queue on the lock instead of failing
when a read transaction tries to become a write one. A transaction that still finds the database
locked is retried from the start, so "database is locked" never reaches a caller. Any other
SQLAlchemy URL (PostgreSQL for several machines) is used as is.

A SQLite file that cannot be opened or written (its disk full, a read-only file system, no
permission, not a database) raises ``StoreUnavailable``: one line saying what is wrong and what to
do, never a raw ``sqlite3.OperationalError``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DatabaseError, OperationalError

from gce_core.messages import clip

T = TypeVar("T")
BUSY_TIMEOUT_S = 30.0
LOCK_RETRIES = 8
_WRITE = "gce_lab_write"


def _prepare_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn, _record) -> None:
        # We send BEGIN ourselves (see _on_begin); pysqlite's own transaction handling is off.
        dbapi_conn.isolation_level = None
        cur = dbapi_conn.cursor()
        cur.execute(f"PRAGMA busy_timeout = {int(BUSY_TIMEOUT_S * 1000)}")
        if engine.url.database not in (None, "", ":memory:"):
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")  # durable at checkpoints; safe with WAL
        cur.execute("PRAGMA foreign_keys = ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        write = conn.get_execution_options().get(_WRITE, False)
        conn.exec_driver_sql("BEGIN IMMEDIATE" if write else "BEGIN")


def make_engine(url: str) -> Engine:
    """An engine for ``url``; for a SQLite file its folder is created."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite":
        return create_engine(url, pool_pre_ping=True)
    if parsed.database not in (None, "", ":memory:"):
        Path(parsed.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url, connect_args={"timeout": BUSY_TIMEOUT_S, "check_same_thread": False}
    )
    _prepare_sqlite(engine)
    return engine


def is_lock_error(exc: BaseException) -> bool:
    text = str(getattr(exc, "orig", exc)).lower()
    return "database is locked" in text or "database table is locked" in text or "busy" in text


class StoreUnavailable(RuntimeError):
    """The lab's database cannot be used now (disk full, read-only, no permission, not a
    database); str() says what is wrong and what to do. Nothing was changed."""


def _sqlite_file(url: str) -> str | None:
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or parsed.database in (None, "", ":memory:"):
        return None
    return str(Path(parsed.database).expanduser())


def unavailable(url: str, exc: BaseException) -> StoreUnavailable | None:
    """The StoreUnavailable for ``exc`` met on the database at ``url``, or None if ``exc`` is not
    a storage fault of a SQLite file."""
    from jobs.storage import SQLITE_STORAGE_MESSAGES, STORAGE_ERRNOS, diagnose

    path = _sqlite_file(url)
    if path is None:
        return None
    if isinstance(exc, OSError):
        if exc.errno not in STORAGE_ERRNOS:
            return None
        said = exc.strerror or str(exc)
    else:
        said = str(getattr(exc, "orig", exc))
        if not any(m in said.lower() for m in SQLITE_STORAGE_MESSAGES):
            return None
    why = diagnose(path)
    return StoreUnavailable(
        f"the lab's database {clip(path, 200)} cannot be used: {clip(said, 200)}"
        + (f" ({why})" if why else "")
        + "; free some space or make its folder writable (or point GCE_LAB_HOME or GCE_LAB_DB_URL "
        "elsewhere), then try again; nothing was changed")


class Database:
    """An engine plus the two ways the job runner touches it: ``read(fn)`` and ``write(fn)``.

    ``fn(conn)`` runs inside one transaction and may run again if the database was locked, so it
    must do nothing but database work.
    """

    def __init__(self, url: str):
        self.url = url
        try:
            self.engine = make_engine(url)
        except OSError as exc:  # its folder cannot be made
            raise (unavailable(url, exc) or exc) from exc
        self.dialect = self.engine.dialect.name

    def read(self, fn: Callable[[Connection], T]) -> T:
        return self._run(fn, write=False)

    def write(self, fn: Callable[[Connection], T]) -> T:
        return self._run(fn, write=True)

    def _run(self, fn: Callable[[Connection], T], *, write: bool) -> T:
        for attempt in range(LOCK_RETRIES):
            try:
                with self.engine.connect() as conn:
                    conn.execution_options(**{_WRITE: write})
                    with conn.begin():
                        return fn(conn)
            except DatabaseError as exc:  # OperationalError among them
                if isinstance(exc, OperationalError) and is_lock_error(exc) and attempt < LOCK_RETRIES - 1:
                    time.sleep(min(2.0, 0.05 * 2**attempt))
                    continue
                fault = unavailable(self.url, exc)
                if fault is not None:
                    raise fault from exc
                raise
        raise AssertionError("unreachable")

    def dispose(self) -> None:
        self.engine.dispose()

"""Opening a database and running short transactions on it, the same way for every backend.

SQLite (the default) gets WAL, so readers never block the writer, a busy timeout, and
``BEGIN IMMEDIATE`` for write transactions, so two writers queue on the lock instead of failing
when a read transaction tries to become a write one. A transaction that still finds the database
locked is retried from the start, so "database is locked" never reaches a caller. Any other
SQLAlchemy URL (PostgreSQL for several machines) is used as is.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

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


class Database:
    """An engine plus the two ways the job runner touches it: ``read(fn)`` and ``write(fn)``.

    ``fn(conn)`` runs inside one transaction and may run again if the database was locked, so it
    must do nothing but database work.
    """

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
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
            except OperationalError as exc:
                if not is_lock_error(exc) or attempt == LOCK_RETRIES - 1:
                    raise
                time.sleep(min(2.0, 0.05 * 2**attempt))
        raise AssertionError("unreachable")

    def dispose(self) -> None:
        self.engine.dispose()

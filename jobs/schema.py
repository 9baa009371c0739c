"""The tables of the job runner and their versioned migrations.

A new database gets the current tables and version ``SCHEMA_VERSION`` at once. An older one is
brought up step by step: ``MIGRATIONS[v]`` upgrades version v to v + 1. To change the schema,
change the tables here, bump ``SCHEMA_VERSION`` and add the step; never edit an applied step.
Times are stored as Unix seconds (float, UTC), the same in every backend.
"""

from __future__ import annotations

from collections.abc import Callable

from sqlalchemy import (
    Boolean,
    Column,
    Connection,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    inspect,
    select,
    text,
)

SCHEMA_VERSION = 2

metadata = MetaData()

schema_version = Table("schema_version", metadata, Column("version", Integer, nullable=False))

runs = Table(
    "runs",
    metadata,
    Column("id", String(32), primary_key=True),
    Column("spec", Text, nullable=False),  # RunSpec JSON, exactly as validated at submit
    Column("epochs", Integer, nullable=False),  # copy of spec.epochs, for progress queries
    Column("status", String(16), nullable=False),
    Column("owner", String(100), nullable=False),
    Column("run_group", String(200)),
    Column("archived", Boolean, nullable=False, default=False),
    Column("created_at", Float, nullable=False),
    Column("started_at", Float),
    Column("finished_at", Float),
    Column("device", String(32)),
    Column("host", String(255)),
    Column("pid", Integer),
    Column("worker_id", String(64)),
    Column("claim_token", String(64)),  # new at every start; fences off a stale process
    Column("heartbeat_at", Float),
    Column("attempts", Integer, nullable=False, default=0),
    Column("crashes", Integer, nullable=False, default=0),
    Column("error", Text),
    Column("epochs_done", Integer, nullable=False, default=0),
    Column("train_seconds", Float, nullable=False, default=0.0),
    Column("summary", Text),
    Column("cancel_requested", Boolean, nullable=False, default=False),
    # storage faults in a row (reset by a stored epoch), and when the run may be claimed again
    Column("storage_faults", Integer, nullable=False, default=0, server_default=text("0")),
    Column("not_before", Float),
    Index("ix_runs_status_created", "status", "created_at"),
    Index("ix_runs_owner", "owner"),
    Index("ix_runs_group", "run_group"),
)

run_tags = Table(
    "run_tags",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("tag", String(40), primary_key=True),
    Index("ix_run_tags_tag", "tag"),
)

metrics = Table(
    "metrics",
    metadata,
    Column("run_id", String(32), ForeignKey("runs.id", ondelete="CASCADE"), primary_key=True),
    Column("epoch", Integer, primary_key=True),
    Column("row", Text, nullable=False),  # the on_epoch row, JSON
    Column("recorded_at", Float, nullable=False),
)

workers = Table(
    "workers",
    metadata,
    Column("id", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("executor", String(32), nullable=False),
    Column("slots", Integer, nullable=False),
    Column("devices", Text, nullable=False),  # JSON list
    Column("datasets", Text),  # JSON list of the data sets in its data folder; NULL: not known
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
)



def _v1_to_v2(conn: Connection) -> None:
    """Storage faults back off (runs.storage_faults, runs.not_before); supervisors say which data
    sets they have (workers.datasets)."""
    conn.execute(text("ALTER TABLE runs ADD COLUMN storage_faults INTEGER NOT NULL DEFAULT 0"))
    conn.execute(text("ALTER TABLE runs ADD COLUMN not_before FLOAT"))
    conn.execute(text("ALTER TABLE workers ADD COLUMN datasets TEXT"))


# MIGRATIONS[v](conn) upgrades a database at version v to v + 1.
MIGRATIONS: dict[int, Callable[[Connection], None]] = {1: _v1_to_v2}


class SchemaError(RuntimeError):
    """The database was written by a newer version of the lab (or is not a lab database)."""


def _current_version(conn: Connection) -> int:
    if not inspect(conn).has_table("schema_version"):
        return 0
    version = conn.execute(select(schema_version.c.version)).scalar()
    return int(version or 0)


def migrate(conn: Connection) -> int:
    """Create or upgrade the schema inside the caller's write transaction; return its version."""
    if conn.dialect.name == "postgresql":  # two processes opening a new database at once
        conn.execute(text("SELECT pg_advisory_xact_lock(4242001)"))
    version = _current_version(conn)
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"the database is at schema version {version}, this code knows up to "
            f"{SCHEMA_VERSION}; update gce-lab (git pull) or point GCE_LAB_DB_URL elsewhere"
        )
    if version == 0:
        if inspect(conn).has_table("runs"):
            raise SchemaError("the database has a runs table but no schema_version; not a lab database?")
        metadata.create_all(conn)
        conn.execute(schema_version.insert().values(version=SCHEMA_VERSION))
        return SCHEMA_VERSION
    while version < SCHEMA_VERSION:
        MIGRATIONS[version](conn)
        version += 1
        conn.execute(schema_version.update().values(version=version))
    return version

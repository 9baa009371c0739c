"""Supervisors ("workers") announce themselves in the database and heartbeat there, so the lab can
say where runs go, and a supervisor can tell a dead colleague's runs from a live one's."""

from __future__ import annotations

import json
from dataclasses import dataclass

from sqlalchemy import delete, insert, select, update

from jobs.db import Database
from jobs.schema import workers


@dataclass(frozen=True)
class WorkerInfo:
    id: str
    host: str
    pid: int
    executor: str
    slots: int
    devices: tuple[str, ...]
    started_at: float
    heartbeat_at: float
    # {"root": data folder, "present": [data set names]} of the machine its runs go to; None: unknown
    datasets: dict | None = None


def data_folder_report() -> dict:
    """The built-in data sets this machine has ($GCE_LAB_DATA, else ~/.gce_lab/data): the embedded
    ones, and those whose files torchvision reads are in the data folder (gce_core.data's
    check_available: present, not verified; a corrupted one still fails its run at once)."""
    from gce_core.data import DATASETS, DatasetNotFoundError, check_available, default_data_root

    root = default_data_root()

    def there(name: str) -> bool:
        try:
            check_available(name, root)
        except (DatasetNotFoundError, OSError):  # missing, or not readable: as good as absent
            return False
        return True

    return {"root": str(root), "present": [name for name in DATASETS if there(name)]}


def _json_dict(text: str | None) -> dict | None:
    try:
        value = None if text is None else json.loads(text)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


class WorkerRegistry:
    def __init__(self, db: Database):
        self.db = db

    def register(self, w: WorkerInfo) -> None:
        row = dict(id=w.id, host=w.host, pid=w.pid, executor=w.executor, slots=w.slots,
                   devices=json.dumps(list(w.devices)), started_at=w.started_at, heartbeat_at=w.heartbeat_at,
                   datasets=None if w.datasets is None else json.dumps(w.datasets))
        self.db.write(lambda conn: conn.execute(insert(workers).values(**row)))

    def heartbeat(self, worker_id: str, *, now: float) -> None:
        query = update(workers).where(workers.c.id == worker_id).values(heartbeat_at=now)
        self.db.write(lambda conn: conn.execute(query))

    def remove(self, worker_id: str) -> None:
        self.db.write(lambda conn: conn.execute(delete(workers).where(workers.c.id == worker_id)))

    def all(self) -> list[WorkerInfo]:
        rows = self.db.read(lambda conn: conn.execute(select(workers).order_by(workers.c.started_at)).all())
        return [WorkerInfo(id=r.id, host=r.host, pid=r.pid, executor=r.executor, slots=r.slots,
                           devices=tuple(json.loads(r.devices)), started_at=r.started_at,
                           heartbeat_at=r.heartbeat_at, datasets=_json_dict(r.datasets)) for r in rows]

    def prune(self, *, older_than: float) -> int:
        """Forget workers whose last heartbeat is before ``older_than``."""
        query = delete(workers).where(workers.c.heartbeat_at < older_than)
        return self.db.write(lambda conn: conn.execute(query).rowcount)

"""Faults a real deployment meets (issue 19): storage that cannot be written, corrupted checkpoints,
a database on a full or read-only disk, runs that learn nothing, devices and data sets a machine
lacks.

The scenarios with real run processes use a real SQLite file and a real `python -m jobs.worker_process
--serve` child per slot, driven by ``Supervisor.tick`` as in tests/test_jobs_processes.py. A full
disk and a read-only file system are real: a small tmpfs mounted over the lab home's ``runs/`` (or
the database's folder), which needs root; those tests skip, saying why, elsewhere.
"""

import errno
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
import torch

from gce_core.checkpoint import PREVIOUS_NAME, TEMP_NAME, load_checkpoint, save_checkpoint
from gce_core.spec import parse_spec
from jobs import config
from jobs.client import LabClient, SubmitRefused
from jobs.config import SupervisorSettings
from jobs.executor import EXIT_ERROR, EXIT_STORAGE, ExitInfo
from jobs.executor_local import LocalExecutor
from jobs.outcome import chance_warning, decide
from jobs.registry import WorkerInfo
from jobs.status import RunStatus
from jobs.supervisor import Supervisor
from tests.test_jobs_processes import FULL, alone, cpu_slots, drive, strip

ROOT = Path(__file__).resolve().parents[1]
FAST_BACKOFF = dict(storage_retry_s=0.3, storage_retry_max_s=1.0, recover_every_s=1.0)


# --- tmpfs: a real full disk and a real read-only file system ------------------------------------
def _mount_problem() -> str | None:
    if os.geteuid() != 0:
        return f"mounting a tmpfs needs root (these tests run as uid {os.geteuid()})"
    probe = Path(f"/tmp/gce-tmpfs-probe-{uuid.uuid4().hex[:8]}")
    probe.mkdir()
    try:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                              capture_output=True, text=True)
        if done.returncode != 0:
            return f"mount -t tmpfs failed: {done.stderr.strip() or done.returncode}"
        subprocess.run(["umount", str(probe)], check=True)
        return None
    except OSError as exc:
        return f"cannot run mount: {exc}"
    finally:
        probe.rmdir()


_MOUNT_PROBLEM = _mount_problem() if sys.platform == "linux" else "tmpfs mounts are a Linux thing"
needs_tmpfs = pytest.mark.skipif(_MOUNT_PROBLEM is not None, reason=f"needs a tmpfs: {_MOUNT_PROBLEM}")


class Tmpfs:
    def __init__(self, path: Path, size: str):
        self.path = path
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True)

    def fill(self) -> None:
        """Write zeros until the disk is full."""
        fd = os.open(self.path / "filler", os.O_WRONLY | os.O_CREAT | os.O_APPEND)
        try:
            for size in (1 << 16, 512, 1):
                try:
                    while True:
                        os.write(fd, b"\0" * size)
                except OSError as exc:
                    assert exc.errno == errno.ENOSPC
        finally:
            os.close(fd)

    def free(self) -> None:
        (self.path / "filler").unlink()

    def read_only(self, on: bool) -> None:
        subprocess.run(["mount", "-o", f"remount,{'ro' if on else 'rw'}", str(self.path)], check=True)

    def unmount(self) -> None:
        subprocess.run(["umount", "-l", str(self.path)], check=False)


@pytest.fixture
def tmpfs():
    made = []

    def make(path: Path, size: str = "16m") -> Tmpfs:
        fs = Tmpfs(path, size)
        made.append(fs)
        return fs

    yield make
    for fs in made:
        fs.unmount()


@pytest.fixture
def sqlite_lab(lab_home):
    url = f"sqlite:///{lab_home / 'gce_lab.db'}"
    client = LabClient(url)
    made = []

    def supervisor(slots=1, **settings):
        sup = Supervisor(client.store, LocalExecutor(db_url=url, home=lab_home), cpu_slots(slots),
                         SupervisorSettings(**{**FAST_BACKOFF, **settings}))
        made.append(sup)
        return sup

    yield client, supervisor, lab_home
    for sup in made:
        for act in sup.active.values():
            act.handle.kill()
        deadline = time.monotonic() + 10
        while any(a.handle.poll() is None for a in sup.active.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        sup.close()
    client.close()


# --- the outcome of a storage fault --------------------------------------------------------------
def _run(**changes):
    from jobs.records import RunRecord

    base = dict(id="r", spec=parse_spec({}), status=RunStatus.RUNNING, owner="o", group=None, tags=(),
                archived=False, created_at=None, started_at=None, finished_at=None, device="cpu", pid=1,
                heartbeat_at=None, attempts=1, error=None, epochs_done=7, summary=None,
                cancel_requested=False)
    return RunRecord(**{**base, **changes})


def test_a_storage_fault_queues_the_run_again_with_its_reason_and_a_growing_back_off():
    tail = "epoch 7/60: ...\nstorage fault: No space left on device (/lab/runs/r/checkpoint.tmp) [errno 28 ENOSPC]"
    waits = []
    for faults in range(7):
        out = decide(_run(storage_faults=faults, crashes=2), ExitInfo(EXIT_STORAGE), log_tail=tail, max_retries=2)
        assert out.status == RunStatus.QUEUED and out.storage_fault and not out.crashed
        assert out.reason.startswith("storage fault: No space left on device (/lab/runs/r/checkpoint.tmp)")
        assert "its 7 stored epochs are kept" in out.error
        waits.append(out.retry_in)
    assert waits == [5, 10, 20, 40, 80, 160, 300]


def test_the_storage_fault_the_run_process_reported_wins_over_its_log_cut_short_by_the_full_disk():
    tail = "epoch 7/60: ...\nstorage fault: No space left on"  # the disk filled up mid-line
    said = "No space left on device (/lab/runs/r/checkpoint.tmp) [errno 28 ENOSPC]"
    out = decide(_run(), ExitInfo(EXIT_STORAGE, said), log_tail=tail)
    assert out.reason.startswith(f"storage fault: {said}; queued again")


def test_a_failed_run_says_its_cause_on_the_first_line_of_its_error():
    tail = "Traceback ...\nerror: DatasetNotFoundError: Data set 'cifar10' was not found in /data"
    out = decide(_run(), ExitInfo(EXIT_ERROR), log_tail=tail)
    assert out.status == RunStatus.FAILED
    assert out.error.splitlines()[0] == ("its process training raised an error (exit code 1): "
                                         "DatasetNotFoundError: Data set 'cifar10' was not found in /data")


# --- checkpoints: a failed write leaves nothing behind, a corrupted one is set aside -------------
SPEC = parse_spec(dict(dataset="digits", model="mlp", train_subset=100, epochs=3, batch_size=50))


def _state(epoch: int, spec=SPEC) -> dict:
    return {"spec": spec.to_json(), "epoch": epoch, "model": {}, "optimizer": {}, "scheduler": {},
            "generator": torch.Generator().get_state(), "best_val": 0.5, "history": [], "weights": None,
            "best_model": None}


def test_a_checkpoint_write_that_fails_leaves_no_temp_file_and_the_last_checkpoint_intact(tmp_path, monkeypatch):
    save_checkpoint(tmp_path, _state(1))

    def disk_full(obj, fh):
        fh.write(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError) as info:
        save_checkpoint(tmp_path, _state(2))
    assert info.value.errno == errno.ENOSPC
    assert not (tmp_path / TEMP_NAME).exists()
    monkeypatch.undo()
    assert load_checkpoint(tmp_path, SPEC.to_json())["epoch"] == 1


@pytest.mark.parametrize("damage", ["truncated", "random bytes", "empty", "another run's"])
def test_a_corrupted_checkpoint_is_set_aside_and_the_previous_one_used(tmp_path, damage):
    save_checkpoint(tmp_path, _state(1))
    save_checkpoint(tmp_path, _state(2))
    path = tmp_path / "checkpoint.pt"
    data = path.read_bytes()
    if damage == "truncated":
        path.write_bytes(data[: len(data) // 2])
    elif damage == "random bytes":
        path.write_bytes(os.urandom(len(data)))
    elif damage == "empty":
        path.write_bytes(b"")
    else:
        other = parse_spec(dict(SPEC.to_dict(), seed=9))
        torch.save({"format_version": 1, **_state(5, other)}, path)
    said = []
    state = load_checkpoint(tmp_path, SPEC.to_json(), foreign="set_aside", say=said.append)
    assert state is not None and state["epoch"] == 1  # the previous one
    aside = sorted(p.name for p in tmp_path.glob("checkpoint.bad-*.pt"))
    assert len(aside) == 1 and not path.exists()
    assert len(said) == 1 and "moved it aside to " + aside[0] in said[0] and "previous checkpoint" in said[0]
    # and with the previous one damaged too: epoch 0
    (tmp_path / PREVIOUS_NAME).write_bytes(b"\x00garbage")
    said.clear()
    assert load_checkpoint(tmp_path, SPEC.to_json(), foreign="set_aside", say=said.append) is None
    assert "starting again from epoch 0" in said[0] and len(list(tmp_path.glob("checkpoint.bad-*.pt"))) == 2


def test_a_checkpoint_of_another_spec_given_by_hand_is_still_refused(tmp_path):
    save_checkpoint(tmp_path, _state(1, parse_spec(dict(SPEC.to_dict(), seed=9))))
    with pytest.raises(ValueError, match="another run spec"):
        load_checkpoint(tmp_path, SPEC.to_json())


# --- runs that learn nothing ---------------------------------------------------------------------
def test_a_run_that_ends_at_chance_level_is_flagged():
    warning = chance_warning(10, {"last_test_acc": 0.1, "best_test_acc": 0.11, "test_acc_at_best_val": 0.1})
    assert warning.startswith("ended at chance level: test accuracy 10.00% in its last epoch")
    assert "lower the learning rate" in warning
    assert chance_warning(10, {"last_test_acc": 0.9}) is None
    assert chance_warning(100, {"last_test_acc": 0.05}) is None  # 5x chance with 100 classes
    assert chance_warning(10, {"last_test_acc": None}) is None


def test_a_completed_run_at_chance_level_stores_the_warning_and_the_cli_shows_it(lab_home, capsys, monkeypatch):
    import gce_core.train
    from jobs import worker_process
    from jobs.cli import main

    url = f"sqlite:///{lab_home / 'gce_lab.db'}"
    client = LabClient(url)
    run_id = client.submit(dict(dataset="digits", epochs=2, optimizer="adam", lr=10))
    run = client.store.claim(worker_id="w", host="h", device="cpu", now=time.time())

    def learns_nothing(spec, on_epoch, should_stop, checkpoint_dir, before_checkpoint):
        on_epoch(dict(epoch=1, train_loss=2.3, val_acc=0.1, test_acc=0.1, seconds=0.1))
        return {"stopped": False, "epochs_completed": 1, "test_acc_at_best_val": 0.1, "best_val_epoch": 1,
                "last_test_acc": 0.1, "best_test_acc": 0.1}

    monkeypatch.setattr(gce_core.train, "train", learns_nothing)
    monkeypatch.setenv("GCE_LAB_DB_URL", url)
    assert worker_process.run_guarded(run_id, run.claim_token) == 0
    done = client.get(run_id)
    assert done.status == RunStatus.COMPLETED and done.at_chance
    assert done.summary["warning"].startswith("ended at chance level")
    capsys.readouterr()
    assert main(["--db", url, "list"]) == 0
    assert "completed (at chance)" in capsys.readouterr().out
    assert main(["--db", url, "show", run_id]) == 0
    assert "  warning     ended at chance level" in capsys.readouterr().out
    client.close()


# --- devices and data sets this lab does not have -------------------------------------------------
def test_a_device_no_run_process_has_is_refused_at_submit_or_fails_at_once(lab_home):
    from jobs.worker_process import device_problem

    client = LabClient(f"sqlite:///{lab_home / 'gce_lab.db'}")
    with pytest.raises(SubmitRefused, match="device: cuda:7: every run process of the lab sees its own slot's GPU"):
        client.submit({"device": "cuda:7"})
    client.submit({"device": "cuda"})  # no worker running: nobody can tell yet
    now = time.time()
    client.store.workers.register(WorkerInfo(id="w1", host="cpubox", pid=1, executor="local", slots=2,
                                             devices=("cpu", "cpu"), started_at=now, heartbeat_at=now,
                                             datasets={"root": "/srv/data", "present": ["digits"]}))
    with pytest.raises(SubmitRefused, match="device: cuda: no running worker has a GPU"):
        client.submit({"device": "cuda"})
    with pytest.raises(SubmitRefused, match=r"dataset: cifar10 is not in the data folder of any running worker \(cpubox:/srv/data\)"):
        client.submit({"dataset": "cifar10"})
    client.submit({"dataset": "cifar10", "data_root": "/elsewhere"})  # a folder of its own: its run says
    client.close()
    if not torch.cuda.is_available():
        assert "device cuda:0 is not on this machine: its run process sees no GPU" in device_problem("cuda:0")
    assert device_problem(f"cuda:{torch.cuda.device_count()}") is not None
    assert device_problem("cpu") is None and device_problem("auto") is None


def test_the_data_folder_report_lists_what_a_supervisor_has(tmp_path, monkeypatch):
    from jobs.registry import data_folder_report
    from tests.fake_datasets import write_cifar10

    monkeypatch.setenv("GCE_LAB_DATA", str(tmp_path))
    assert data_folder_report() == {"root": str(tmp_path), "present": ["digits", "mnist5k"]}  # the embedded ones
    write_cifar10(tmp_path)
    assert data_folder_report()["present"] == ["digits", "mnist5k", "cifar10"]


# --- real run processes -------------------------------------------------------------------------
pytest_slow = pytest.mark.slow


@pytest_slow
@needs_tmpfs
def test_a_full_disk_queues_the_run_with_the_reason_and_it_completes_once_space_returns(sqlite_lab, tmpfs):
    client, supervisor, home = sqlite_lab
    disk = tmpfs(home / "runs", "16m")
    spec = {**FULL, "epochs": 40, "seed": 4}
    run_id = client.submit(spec)
    sup = supervisor(slots=1)
    drive(sup, lambda: client.get(run_id).epochs_done >= 2)
    disk.fill()
    kept = client.get(run_id).epochs_done
    drive(sup, lambda: client.get(run_id).storage_faults >= 1)
    run = client.get(run_id)
    assert run.status in (RunStatus.QUEUED, RunStatus.RUNNING) and run.crashes == 0
    assert run.error.startswith("storage fault: ") and "No space left on device" in run.error
    assert "queued again, retried in" in run.error
    assert run.epochs_done >= kept
    assert not list((home / "runs" / run_id).glob(TEMP_NAME))
    time.sleep(1.5)  # a few back-offs with the disk still full: retried, never failed
    drive(sup, lambda: client.get(run_id).status != RunStatus.RUNNING)
    assert client.get(run_id).status == RunStatus.QUEUED
    disk.free()
    drive(sup, lambda: client.get(run_id).status.is_final)
    run = client.get(run_id)
    assert run.status == RunStatus.COMPLETED and run.crashes == 0 and run.error is None, run.error
    got = client.metrics(run_id)
    assert [r["epoch"] for r in got] == list(range(1, 41))
    expected, _ = alone(spec)
    assert strip(got) == strip(expected)
    assert not list((home / "runs" / run_id).glob(TEMP_NAME))


@pytest_slow
@needs_tmpfs
def test_a_read_only_lab_home_backs_off_instead_of_spending_the_starts_and_resumes_when_writable(sqlite_lab, tmpfs):
    client, supervisor, home = sqlite_lab
    disk = tmpfs(home / "runs", "16m")
    sup = supervisor(slots=1)
    drive(sup, lambda: all(p.ready for p in sup.executor.warm.values()) and sup.executor.warm)
    disk.read_only(True)
    run_id = client.submit({**FULL, "epochs": 3})
    drive(sup, lambda: client.get(run_id).storage_faults >= 1)
    run = client.get(run_id)
    assert run.status == RunStatus.QUEUED and run.crashes == 0
    assert "storage fault: " in run.error and "read-only file system" in run.error.lower()
    started = time.monotonic()
    while time.monotonic() - started < 2.5:  # back-off 0.3, 0.6, 1.0 s: a few starts, not one per step
        sup.tick(time.time())
        time.sleep(0.05)
    assert client.get(run_id).attempts <= 5 and client.get(run_id).status != RunStatus.FAILED
    disk.read_only(False)
    drive(sup, lambda: client.get(run_id).status.is_final)
    run = client.get(run_id)
    assert run.status == RunStatus.COMPLETED and [r["epoch"] for r in client.metrics(run_id)] == [1, 2, 3]


@pytest_slow
def test_a_corrupted_checkpoint_after_a_crash_is_set_aside_and_the_run_ends_as_if_never_hurt(sqlite_lab):
    client, supervisor, home = sqlite_lab
    spec = {**FULL, "epochs": 30, "noise": "uniform", "noise_rate": 0.4, "seed": 5}
    run_id = client.submit(spec)
    sup = supervisor(slots=1)
    folder = config.run_dir(run_id, home)
    drive(sup, lambda: client.get(run_id).epochs_done >= 3 and (folder / "checkpoint.pt").exists())
    os.kill(client.get(run_id).pid, signal.SIGKILL)
    drive(sup, lambda: client.get(run_id).status != RunStatus.RUNNING)
    before = {r["epoch"]: r for r in client.metrics(run_id)}
    recorded = dict(client.store.db.read(lambda c: c.exec_driver_sql(
        "SELECT epoch, recorded_at FROM metrics WHERE run_id = ?", (run_id,)).all()))
    (folder / "checkpoint.pt").write_bytes(os.urandom(4096))
    if (folder / PREVIOUS_NAME).exists():
        (folder / PREVIOUS_NAME).write_bytes(b"")
    drive(sup, lambda: client.get(run_id).status.is_final)
    run = client.get(run_id)
    assert run.status == RunStatus.COMPLETED, run.error
    log = config.log_path(run_id, home).read_text()
    assert "is unusable: it cannot be read" in log and "moved it aside" in log
    assert len(list(folder.glob("checkpoint.bad-*.pt"))) >= 1
    got = client.metrics(run_id)
    assert [r["epoch"] for r in got] == list(range(1, 31))
    expected, _ = alone(spec)
    assert strip(got) == strip(expected)
    again = dict(client.store.db.read(lambda c: c.exec_driver_sql(
        "SELECT epoch, recorded_at FROM metrics WHERE run_id = ?", (run_id,)).all()))
    assert {e: again[e] for e in recorded} == recorded  # no stored epoch rewritten
    assert all(got[e - 1] == before[e] for e in before)


# --- the database on a full or read-only disk -------------------------------------------------------
def _jobs(home: Path, *argv: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "GCE_LAB_HOME": str(home), "PYTHONPATH": str(ROOT)}
    env.pop("GCE_LAB_DB_URL", None)
    return subprocess.run([sys.executable, "-m", "jobs", *argv], env=env, capture_output=True, text=True, timeout=120)


@pytest_slow
@needs_tmpfs
def test_a_submit_to_a_database_on_a_full_or_read_only_disk_is_a_one_line_refusal(tmp_path, tmpfs, lab_home):
    home = tmp_path / "dbhome"
    disk = tmpfs(home, "2m")
    client = LabClient(f"sqlite:///{home / 'gce_lab.db'}")
    client.submit({"epochs": 2})
    disk.fill()
    with pytest.raises(SubmitRefused, match=r"refused, nothing was queued: the lab's database .* cannot be used"):
        for _ in range(50):  # the WAL file may take a few rows before the disk says no
            client.submit({"epochs": 2, "name": "x" * 200})
    client.close()
    done = _jobs(home, "submit", "--epochs", "2")
    assert done.returncode in (1, 2) and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: ") and "cannot be used" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    disk.free()
    disk.read_only(True)
    done = _jobs(home, "submit", "--epochs", "2")
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
    assert "refused, nothing was queued: the lab's database" in done.stderr and "read-only file system" in done.stderr
    done = _jobs(home, "list")  # reading may work, or say in one line why not
    assert "Traceback" not in done.stderr, done.stderr
    assert (done.returncode == 0 and "runs 1-" in done.stdout) or (
        done.returncode == 1 and len(done.stderr.strip().splitlines()) == 1 and "cannot be used" in done.stderr)


# --- the store: back-off columns, and their migration -------------------------------------------------
def test_a_run_backing_off_is_not_claimed_before_its_time(store_url):
    from jobs.store import Store

    store = Store(store_url)
    client = LabClient(store_url)
    run_id = client.submit({"epochs": 1})
    run = store.claim(worker_id="w", host="h", device="cpu", now=100.0)
    assert store.finish(run_id, run.claim_token, RunStatus.QUEUED, now=100.0, error="storage fault: full",
                        storage_fault=True, not_before=130.0)
    assert store.get(run_id).storage_faults == 1 and store.get(run_id).not_before.timestamp() == 130.0
    assert not store.has_waiting(120.0) and store.claim(worker_id="w", host="h", device="cpu", now=120.0) is None
    assert store.has_waiting(130.0)
    run = store.claim(worker_id="w", host="h", device="cpu", now=130.0)
    assert run is not None and run.id == run_id and run.attempts == 2
    store.add_epoch(run_id, run.claim_token, {"epoch": 1, "seconds": 0.1}, now=131.0)
    assert store.get(run_id).storage_faults == 0  # progress: the next fault backs off from the start
    client.close()
    store.close()


def test_a_version_1_database_is_upgraded_and_keeps_its_runs(lab_home):
    from sqlalchemy import text

    from jobs.store import Store

    url = f"sqlite:///{lab_home / 'v1.db'}"
    client = LabClient(url)
    run_id = client.submit({"epochs": 1})
    client.close()
    old = Store(url)
    old.db.write(lambda c: [c.execute(text(sql)) for sql in (
        "ALTER TABLE runs DROP COLUMN storage_faults", "ALTER TABLE runs DROP COLUMN not_before",
        "ALTER TABLE workers DROP COLUMN datasets", "UPDATE schema_version SET version = 1")])
    old.close()
    store = Store(url)
    assert store.schema_version == 2
    run = store.get(run_id)
    assert run.status == RunStatus.QUEUED and run.storage_faults == 0 and run.not_before is None
    store.close()

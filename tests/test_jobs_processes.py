"""The acceptance tests of the job runner with real training processes and a real SQLite file.

The supervisor runs in the test's process and is driven by tick(now); every run is its own
`python -m jobs.worker_process` child, as in production (runs of a group: one child for the
group, trained by gce_core.fused, or in turn with compile). Each child imports torch (~2 s), so
the specs are tiny and the number of process starts is kept small.
"""

import os
import signal
import time
from pathlib import Path

import pytest
import torch

from gce_core.train import train
from jobs import config
from jobs.client import LabClient
from jobs.config import SupervisorSettings
from jobs.executor import Slot
from jobs.executor_local import LocalExecutor
from jobs.procs import pid_alive
from jobs.status import RunStatus
from jobs.supervisor import Supervisor
from tests.test_fused import assert_rows_close

pytestmark = pytest.mark.slow

TINY = dict(dataset="digits", model="mlp", train_subset=200, epochs=3, batch_size=64, lr=0.1)
# ~0.05 s per epoch on one thread: long enough to act on mid-run
FULL = dict(dataset="digits", model="mlp", batch_size=32, lr=0.05)
THREADS = 1  # torch threads of every child, so the reference run below can match them


def cpu_slots(n):
    env = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": str(THREADS), "MKL_NUM_THREADS": str(THREADS)}
    return [Slot(i, "cpu", env) for i in range(n)]


@pytest.fixture
def lab(store_url, lab_home):
    client = LabClient(store_url)
    made = []

    def supervisor(slots=2, **settings):
        sup = Supervisor(client.store, LocalExecutor(db_url=store_url, home=lab_home), cpu_slots(slots),
                         SupervisorSettings(**settings))
        made.append(sup)
        return sup

    yield client, supervisor
    for sup in made:  # never leave a training process behind
        for act in sup.active.values():
            act.handle.kill()
        deadline = time.monotonic() + 10
        while any(a.handle.poll() is None for a in sup.active.values()) and time.monotonic() < deadline:
            time.sleep(0.05)
        sup.close()
    client.close()


def drive(sup, until, *, timeout=480.0, on_tick=None):
    """Tick the supervisor until ``until()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            runs = [(r.id, r.status.value, r.epochs_done) for r in sup.store.list_runs(limit=1000)]
            raise AssertionError(f"not reached within {timeout} s; runs: {runs}")
        sup.tick(time.time())
        if on_tick is not None:
            on_tick()
        time.sleep(0.1)


def epochs_of(client, run_id):
    return [row["epoch"] for row in client.metrics(run_id)]


# The longest test here: once, on SQLite (claims on every backend are the store suite's business).
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_twenty_runs_on_two_slots_all_complete_with_contiguous_metrics(lab, tmp_path):
    client, supervisor = lab
    missing = {"dataset": "cifar10", "data_root": str(tmp_path / "no_data"), "epochs": 2}
    broken = client.submit({**TINY, **missing}, tags=["broken"])
    ids = [client.submit({**TINY, "seed": seed}) for seed in range(20)]
    sup = supervisor(slots=2)
    busy = []
    drive(sup, lambda: client.count_runs(status=["completed", "failed", "cancelled"]) == 21 and not sup.active,
          on_tick=lambda: busy.append(len(sup.active)))
    assert max(busy) == 2  # both slots used, never more
    for run_id in ids:
        run = client.get(run_id)
        assert run.status == RunStatus.COMPLETED and run.attempts == 1 and run.error is None
        assert epochs_of(client, run_id) == [1, 2, 3] and run.epochs_done == 3 and run.progress == 1.0
        assert run.summary["epochs_completed"] == 3 and run.summary["stopped"] is False
        assert not pid_alive(run.pid, marker=run_id)  # reaped
    assert len({client.get(i).summary["last_test_acc"] for i in ids}) > 1  # the seeds differ
    # a run whose training raises fails at once, saying why, with its log
    run = client.get(broken)
    assert run.status == RunStatus.FAILED and run.attempts == 1 and run.crashes == 0
    assert run.error.startswith("its process training raised an error (exit code 1)")
    assert "DatasetNotFoundError" in run.error and "cifar10" in run.error
    assert "DatasetNotFoundError" in config.log_path(broken).read_text()


def test_cancel_of_a_running_run_stops_it_within_five_seconds(lab):
    client, supervisor = lab
    run_id = client.submit({**FULL, "epochs": 1000})
    sup = supervisor(slots=1)
    drive(sup, lambda: client.get(run_id).epochs_done >= 1)
    pid = client.get(run_id).pid
    assert pid_alive(pid, marker=run_id)
    assert client.cancel(run_id).cancel_requested
    started = time.monotonic()
    drive(sup, lambda: client.get(run_id).status == RunStatus.CANCELLED and not Path(f"/proc/{pid}").exists(),
          timeout=5.0)
    assert time.monotonic() - started < 5.0
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)  # its whole process group is gone; no zombie is left (/proc has no entry)
    run = client.get(run_id)
    assert run.crashes == 0 and run.finished_at is not None
    assert epochs_of(client, run_id) == list(range(1, run.epochs_done + 1)) and run.epochs_done >= 1
    assert not sup.active


def test_a_run_cancelled_as_it_starts_never_trains(lab):
    client, supervisor = lab
    run_id = client.submit({**FULL, "epochs": 1000})
    sup = supervisor(slots=1)
    assert sup.tick(time.time()).started == [run_id]
    client.cancel(run_id)
    drive(sup, lambda: client.get(run_id).status.is_final and not sup.active)
    run = client.get(run_id)
    assert run.status == RunStatus.CANCELLED and run.crashes == 0 and client.metrics(run_id) == []


def test_a_training_process_killed_mid_run_resumes_and_ends_as_if_never_killed(lab):
    client, supervisor = lab
    spec = {**FULL, "epochs": 30, "noise": "uniform", "noise_rate": 0.4, "seed": 3}
    run_id = client.submit(spec)
    sup = supervisor(slots=1)
    drive(sup, lambda: client.get(run_id).epochs_done >= 3)
    os.kill(client.get(run_id).pid, signal.SIGKILL)
    killed_at = client.get(run_id).epochs_done
    drive(sup, lambda: client.get(run_id).status.is_final)
    run = client.get(run_id)
    assert killed_at < 30
    assert run.status == RunStatus.COMPLETED and run.attempts == 2 and run.crashes == 1
    assert "killed by SIGKILL (signal 9)" in config.log_path(run_id).read_text()
    got = client.metrics(run_id)
    assert [r["epoch"] for r in got] == list(range(1, 31))

    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        expected = []
        summary = train(spec, on_epoch=expected.append)
    finally:
        torch.set_num_threads(threads)

    def strip(rows):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]

    assert strip(got) == strip(expected)
    assert {k: run.summary[k] for k in ("test_acc_at_best_val", "best_val_epoch", "last_test_acc")} == {
        k: summary[k] for k in ("test_acc_at_best_val", "best_val_epoch", "last_test_acc")}


# --- fused runs: a group trained by one process (gce_core.fused) ---------------------------------
# On SQLite only, like the longest test above: fusing on every backend is the store suite's business.
sqlite_only = pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
GROUP = [dict(FULL, noise="uniform", noise_rate=0.4, loss=loss, seed=seed)
         for loss, seed in (("cce", 0), ("lq", 1), ("mae", 2))]


def alone(spec):
    """The rows of ``spec`` trained alone by gce_core.train, with the children's thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        rows = []
        train(spec, on_epoch=rows.append)
        return rows
    finally:
        torch.set_num_threads(threads)


def start_group(lab, epochs):
    """Submit GROUP with ``epochs`` as one group and a one-slot supervisor: (client, sup, specs, ids)."""
    client, supervisor = lab
    specs = [dict(spec, epochs=epochs) for spec in GROUP]
    _, ids = client.submit_group(specs)
    return client, supervisor(slots=1), specs, ids


@sqlite_only
def test_a_group_trains_as_one_process_with_the_rows_each_run_has_alone(lab):
    client, sup, specs, ids = start_group(lab, epochs=4)
    drive(sup, lambda: all(client.get(i).status.is_final for i in ids) and not sup.active)
    runs = [client.get(i) for i in ids]
    assert all(r.status == RunStatus.COMPLETED and r.attempts == 1 and r.crashes == 0 for r in runs)
    assert len({r.pid for r in runs}) == 1  # one process
    for run, spec in zip(runs, specs, strict=True):
        assert_rows_close(client.metrics(run.id), alone(spec))
        assert run.summary["epochs_completed"] == 4 and run.train_seconds > 0
        log = config.log_path(run.id).read_text()
        others = [i for i in ids if i != run.id]
        assert f"supervisor: fused with {', '.join(others)}: one process (pid {run.pid})" in log
        assert "epoch 4/4: train loss" in log and "(the fused epoch of 3 runs)" in log
        assert "completed: test accuracy" in log


@sqlite_only
def test_cancelling_one_fused_run_cancels_it_and_the_others_complete_resumed(lab):
    client, sup, _, (a, b, c) = start_group(lab, epochs=40)
    drive(sup, lambda: min(client.get(i).epochs_done for i in (a, b, c)) >= 2)
    first_pid = client.get(a).pid
    client.cancel(b)
    drive(sup, lambda: all(client.get(i).status.is_final for i in (a, b, c)) and not sup.active)
    cancelled = client.get(b)
    assert cancelled.status == RunStatus.CANCELLED and cancelled.crashes == 0 and cancelled.epochs_done < 40
    assert epochs_of(client, b) == list(range(1, cancelled.epochs_done + 1))
    for run_id in (a, c):
        run = client.get(run_id)
        assert run.status == RunStatus.COMPLETED and run.crashes == 0 and run.attempts == 2, run.error
        assert epochs_of(client, run_id) == list(range(1, 41))
        assert "of this fused process was cancelled" in config.log_path(run_id).read_text()
    assert client.get(a).pid == client.get(c).pid != first_pid  # resumed together, without b
    assert "stopped at a batch boundary (cancel)" in config.log_path(b).read_text()


@sqlite_only
def test_a_fused_process_killed_mid_run_resumes_and_ends_as_if_never_killed(lab):
    client, sup, specs, ids = start_group(lab, epochs=20)
    drive(sup, lambda: min(client.get(i).epochs_done for i in ids) >= 3)
    pid = client.get(ids[0]).pid
    assert {client.get(i).pid for i in ids} == {pid}
    os.kill(pid, signal.SIGKILL)
    killed_at = max(client.get(i).epochs_done for i in ids)
    drive(sup, lambda: all(client.get(i).status.is_final for i in ids) and not sup.active)
    assert killed_at < 20
    for run_id, spec in zip(ids, specs, strict=True):
        run = client.get(run_id)
        assert run.status == RunStatus.COMPLETED and run.attempts == 2 and run.crashes == 1, run.error
        assert "killed by SIGKILL (signal 9)" in config.log_path(run_id).read_text()
        assert run.pid != pid
        assert_rows_close(client.metrics(run_id), alone(spec))


@sqlite_only
def test_with_fuse_max_1_each_run_of_a_group_is_its_own_process(lab, monkeypatch):
    client, supervisor = lab
    monkeypatch.setenv("GCE_LAB_FUSE_MAX", "1")
    _, ids = client.submit_group([dict(TINY, epochs=2, seed=s) for s in (0, 1)])
    sup = supervisor(slots=1, fuse_max=SupervisorSettings.from_env().fuse_max)
    drive(sup, lambda: all(client.get(i).status.is_final for i in ids) and not sup.active)
    runs = [client.get(i) for i in ids]
    assert all(r.status == RunStatus.COMPLETED for r in runs) and runs[0].pid != runs[1].pid
    assert "fused" not in config.log_path(ids[0]).read_text()


@sqlite_only
def test_a_fused_process_that_outlives_its_supervisor_is_adopted_into_one_slot(lab):
    client, supervisor = lab
    _, ids = client.submit_group([dict(spec, epochs=30) for spec in GROUP])
    old = supervisor(slots=1)
    drive(old, lambda: min(client.get(i).epochs_done for i in ids) >= 1)
    (started,) = {id(a.handle): a.handle for a in old.active.values()}.values()
    old.active.clear()  # its supervisor is gone: the process goes on, unwatched
    old.close()
    new = supervisor(slots=2)
    report = new.tick(time.time())
    assert report.adopted == ids and report.started == []
    (handle,) = {id(a.handle): a.handle for a in new.active.values()}.values()
    assert handle.pid == started.pid and len(new._free_slots()) == 1  # one process, one slot
    drive(new, lambda: all(client.get(i).status.is_final for i in ids) and not new.active)
    for run_id in ids:
        run = client.get(run_id)
        assert run.status == RunStatus.COMPLETED and run.attempts == 1 and run.crashes == 0, run.error
        assert epochs_of(client, run_id) == list(range(1, 31))
    started.proc.wait(timeout=10)  # reap it: it was this test's child


# --- compile runs of a group: one process trains them in turn and compiles once ------------------
# ~0.06 s per epoch on one thread; dynamo traces with the eager backend (no C++ build in tests)
COMPILED = [dict(dataset="digits", model="cnn", train_subset=300, batch_size=32, device="cpu",
                 noise="uniform", noise_rate=0.4, compile=True, loss=loss, seed=seed)
            for loss, seed in (("cce", 0), ("lq", 1), ("mae", 2))]  # fmt: skip


def start_in_turn(lab, monkeypatch, epochs):
    """Submit COMPILED with ``epochs`` as one group and a one-slot supervisor: (client, sup, specs, ids)."""
    monkeypatch.setenv("GCE_LAB_COMPILE_BACKEND", "eager")  # the children's environment
    client, supervisor = lab
    specs = [dict(spec, epochs=epochs) for spec in COMPILED]
    _, ids = client.submit_group(specs)
    return client, supervisor(slots=1), specs, ids


@sqlite_only
def test_a_groups_compile_runs_train_in_turn_in_one_process_each_ending_when_done(lab, monkeypatch):
    client, sup, specs, ids = start_in_turn(lab, monkeypatch, epochs=3)
    drive(sup, lambda: all(client.get(i).status.is_final for i in ids) and not sup.active)
    runs = [client.get(i) for i in ids]
    assert all(r.status == RunStatus.COMPLETED and r.attempts == 1 and r.crashes == 0 for r in runs)
    assert len({r.pid for r in runs}) == 1  # one process
    ended = [r.finished_at for r in runs]
    assert ended == sorted(ended) and len(set(ended)) == 3  # one after another, each when done
    for run, spec in zip(runs, specs, strict=True):
        # the compiled run's rows are those of the plain run trained alone
        assert_rows_close(client.metrics(run.id), alone(dict(spec, compile=False)))
        log = config.log_path(run.id).read_text()
        others = [i for i in ids if i != run.id]
        assert f"supervisor: in turn with {', '.join(others)}: one process (pid {run.pid})" in log
        assert "epoch 3/3: train loss" in log and "fused epoch" not in log
        assert "completed: test accuracy" in log
    for run_id in ids[1:]:
        assert f"from run {ids[0]} on: what torch.compile has compiled here is reused" in config.log_path(run_id).read_text()


@sqlite_only
def test_cancelling_a_run_waiting_its_turn_ends_it_at_once_and_the_others_go_on(lab, monkeypatch):
    client, sup, _, (a, b, c) = start_in_turn(lab, monkeypatch, epochs=40)
    drive(sup, lambda: client.get(a).epochs_done >= 2)
    client.cancel(c)
    drive(sup, lambda: client.get(c).status.is_final)
    assert client.get(a).status == RunStatus.RUNNING and client.get(a).epochs_done < 40  # not stopped
    cancelled = client.get(c)
    assert cancelled.status == RunStatus.CANCELLED and cancelled.epochs_done == 0 and cancelled.crashes == 0
    assert "was cancelled while it waited for its turn" in config.log_path(c).read_text()
    drive(sup, lambda: all(client.get(i).status.is_final for i in (a, b)) and not sup.active)
    for run_id in (a, b):
        run = client.get(run_id)
        assert run.status == RunStatus.COMPLETED and run.attempts == 1 and run.crashes == 0, run.error
        assert epochs_of(client, run_id) == list(range(1, 41))


def test_every_run_process_shares_one_compile_cache_under_the_lab_home(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    executor = LocalExecutor(db_url="sqlite://", home=tmp_path)
    env = executor._env(cpu_slots(1)[0], {})
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path.absolute() / "compile-cache")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/elsewhere")  # the user's choice wins
    assert executor._env(cpu_slots(1)[0], {})["TORCHINDUCTOR_CACHE_DIR"] == "/elsewhere"

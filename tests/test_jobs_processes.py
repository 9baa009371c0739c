"""The acceptance tests of the job runner with real run processes and a real SQLite file.

The supervisor runs in the test's process and is driven by tick(now); every slot keeps a warm
`python -m jobs.worker_process --serve` child that trains the slot's runs one after another, as in
production. Each child imports torch (~2 s) when it starts, so the specs are tiny and the number
of process starts is kept small.
"""

import os
import signal
import time

import pytest
import torch

from gce_core.train import train
from jobs import config
from jobs.client import LabClient
from jobs.config import SupervisorSettings
from jobs.executor import Slot
from jobs.executor_local import WORKER_MODULE, LocalExecutor
from jobs.procs import pid_alive
from jobs.status import RunStatus
from jobs.supervisor import Supervisor

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
    for sup in made:  # never leave a run process behind
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
        time.sleep(0.05)


def epochs_of(client, run_id):
    return [row["epoch"] for row in client.metrics(run_id)]


def alone(spec):
    """The rows of ``spec`` trained by gce_core.train in this process, at the children's thread count."""
    threads = torch.get_num_threads()
    torch.set_num_threads(THREADS)
    try:
        rows = []
        summary = train(spec, on_epoch=rows.append)
        return rows, summary
    finally:
        torch.set_num_threads(threads)


def strip(rows):
    return [{k: v for k, v in r.items() if k != "seconds"} for r in rows]


# The longest test here: once, on SQLite (claims on every backend are the store suite's business).
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_twenty_runs_on_two_slots_all_complete_in_warm_processes(lab, tmp_path):
    client, supervisor = lab
    sup = supervisor(slots=2)
    # both warm processes ready first: on a loaded machine one can warm up for longer than the
    # other takes to drain these tiny runs
    drive(sup, lambda: all(sup.executor.prepare(s, sup.child_env) for s in sup.slots))
    missing = {"dataset": "cifar10", "data_root": str(tmp_path / "no_data"), "epochs": 2}
    broken = client.submit({**TINY, **missing}, tags=["broken"])
    ids = [client.submit({**TINY, "seed": seed}) for seed in range(20)]
    busy = []
    drive(sup, lambda: client.count_runs(status=["completed", "failed", "cancelled"]) == 21 and not sup.active,
          on_tick=lambda: busy.append(len(sup.active)))
    assert max(busy) == 2  # both slots used, never more
    for run_id in ids:
        run = client.get(run_id)
        assert run.status == RunStatus.COMPLETED and run.attempts == 1 and run.error is None
        assert epochs_of(client, run_id) == [1, 2, 3] and run.epochs_done == 3 and run.progress == 1.0
        assert run.summary["epochs_completed"] == 3 and run.summary["stopped"] is False
    # warm processes: two slots, plus one fresh process after the failing run (it exits after an error)
    assert len({client.get(i).pid for i in ids}) <= 3
    assert len({client.get(i).summary["last_test_acc"] for i in ids}) > 1  # the seeds differ
    # a run whose training raises fails at once, saying why, with its log
    run = client.get(broken)
    assert run.status == RunStatus.FAILED and run.attempts == 1 and run.crashes == 0
    assert run.error.startswith("its process training raised an error (exit code 1)")
    assert "DatasetNotFoundError" in run.error and "cifar10" in run.error
    assert "DatasetNotFoundError" in config.log_path(broken).read_text()
    assert "DatasetNotFoundError" not in config.log_path(ids[0]).read_text()  # each run its own log


def test_cancel_of_a_running_run_stops_it_within_five_seconds_and_its_process_takes_the_next(lab):
    client, supervisor = lab
    run_id = client.submit({**FULL, "epochs": 1000})
    sup = supervisor(slots=1)
    drive(sup, lambda: client.get(run_id).epochs_done >= 1)
    pid = client.get(run_id).pid
    assert pid_alive(pid, marker=WORKER_MODULE)
    assert client.cancel(run_id).cancel_requested
    started = time.monotonic()
    drive(sup, lambda: client.get(run_id).status == RunStatus.CANCELLED and not sup.active, timeout=5.0)
    assert time.monotonic() - started < 5.0
    run = client.get(run_id)
    assert run.crashes == 0 and run.finished_at is not None
    assert epochs_of(client, run_id) == list(range(1, run.epochs_done + 1)) and run.epochs_done >= 1
    assert "stopped at a batch boundary (cancel)" in config.log_path(run_id).read_text()
    nxt = client.submit(TINY)
    drive(sup, lambda: client.get(nxt).status.is_final and not sup.active)
    assert client.get(nxt).status == RunStatus.COMPLETED and client.get(nxt).pid == pid  # still warm


def test_a_run_cancelled_as_it_starts_never_trains(lab):
    client, supervisor = lab
    sup = supervisor(slots=1)
    drive(sup, lambda: sup.executor.prepare(sup.slots[0], sup.child_env))  # its warm process is ready
    process = sup.executor.warm[0]
    os.kill(process.pid, signal.SIGSTOP)  # so that the cancel lands between the claim and the start
    try:
        run_id = client.submit({**FULL, "epochs": 1000})
        assert sup.tick(time.time()).started == [run_id]
        client.cancel(run_id)
    finally:
        os.kill(process.pid, signal.SIGCONT)
    drive(sup, lambda: client.get(run_id).status.is_final and not sup.active)
    run = client.get(run_id)
    assert run.status == RunStatus.CANCELLED and run.crashes == 0 and client.metrics(run_id) == []


def test_a_run_process_killed_mid_run_resumes_and_ends_as_if_never_killed(lab):
    client, supervisor = lab
    spec = {**FULL, "epochs": 30, "noise": "uniform", "noise_rate": 0.4, "seed": 3}
    run_id = client.submit(spec)
    sup = supervisor(slots=1)
    drive(sup, lambda: client.get(run_id).epochs_done >= 3)
    pid = client.get(run_id).pid
    os.kill(pid, signal.SIGKILL)
    killed_at = client.get(run_id).epochs_done
    drive(sup, lambda: client.get(run_id).status.is_final)
    run = client.get(run_id)
    assert killed_at < 30
    assert run.status == RunStatus.COMPLETED and run.attempts == 2 and run.crashes == 1 and run.pid != pid
    assert "killed by SIGKILL (signal 9)" in config.log_path(run_id).read_text()
    got = client.metrics(run_id)
    assert [r["epoch"] for r in got] == list(range(1, 31))
    expected, summary = alone(spec)
    assert strip(got) == strip(expected)
    assert {k: run.summary[k] for k in ("test_acc_at_best_val", "best_val_epoch", "last_test_acc")} == {
        k: summary[k] for k in ("test_acc_at_best_val", "best_val_epoch", "last_test_acc")}


def test_a_stuck_run_is_killed_and_resumed_and_the_run_beside_it_never_notices(lab):
    client, supervisor = lab
    stuck = client.submit({**FULL, "epochs": 150, "seed": 1})
    other = client.submit({**FULL, "epochs": 150, "seed": 2})
    sup = supervisor(slots=2, heartbeat_s=0.5, stale_after_s=3.0)
    drive(sup, lambda: min(client.get(i).epochs_done for i in (stuck, other)) >= 1)
    stuck_pid, other_pid = client.get(stuck).pid, client.get(other).pid
    assert stuck_pid != other_pid
    os.kill(stuck_pid, signal.SIGSTOP)  # hangs: no batch, no heartbeat
    drive(sup, lambda: all(client.get(i).status.is_final for i in (stuck, other)) and not sup.active)
    run = client.get(stuck)
    assert run.status == RunStatus.COMPLETED and run.crashes == 1 and run.attempts == 2
    assert "no heartbeat for" in config.log_path(stuck).read_text()
    assert not pid_alive(stuck_pid)
    beside = client.get(other)
    assert beside.status == RunStatus.COMPLETED and beside.crashes == 0 and beside.attempts == 1
    assert beside.pid == other_pid and epochs_of(client, other) == list(range(1, 151))


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_a_run_process_that_outlives_its_supervisor_is_adopted_and_then_exits(lab):
    client, supervisor = lab
    run_id = client.submit({**FULL, "epochs": 200})  # still training when the new supervisor looks
    old = supervisor(slots=2)
    drive(old, lambda: client.get(run_id).epochs_done >= 1)
    (act,) = old.active.values()
    warm = old.executor.warm
    busy = act.handle.process
    idle = next(p for p in warm.values() if p is not busy)
    old.active.clear()  # its supervisor is gone: the process goes on, unwatched
    old.close()
    assert idle.proc.wait(timeout=10) is not None  # an idle warm process leaves with its supervisor
    new = supervisor(slots=2)
    report = new.tick(time.time())
    assert report.adopted == [run_id] and report.started == []
    assert new.active[run_id].handle.pid == busy.pid
    drive(new, lambda: client.get(run_id).status.is_final and not new.active)
    run = client.get(run_id)
    assert run.status == RunStatus.COMPLETED and run.attempts == 1 and run.crashes == 0, run.error
    assert epochs_of(client, run_id) == list(range(1, 201))
    assert busy.proc.wait(timeout=10) == 0  # it finished the run, then found no supervisor and left


# --- compile runs: a warm process keeps what torch.compile compiled for the next run -------------
# ~0.06 s per epoch on one thread; dynamo traces with the eager backend (no C++ build in tests)
COMPILED = [dict(dataset="digits", model="cnn", train_subset=300, batch_size=32, device="cpu", epochs=3,
                 noise="uniform", noise_rate=0.4, compile=True, loss=loss, seed=seed)
            for loss, seed in (("cce", 0), ("lq", 1))]  # fmt: skip


@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_compile_runs_of_one_slot_train_in_one_warm_process_with_the_plain_rows(lab, monkeypatch):
    monkeypatch.setenv("GCE_LAB_COMPILE_BACKEND", "eager")  # the children's environment
    client, supervisor = lab
    _, ids = client.submit_group(COMPILED)
    sup = supervisor(slots=1)
    drive(sup, lambda: all(client.get(i).status.is_final for i in ids) and not sup.active)
    runs = [client.get(i) for i in ids]
    assert all(r.status == RunStatus.COMPLETED and r.attempts == 1 and r.crashes == 0 for r in runs)
    assert len({r.pid for r in runs}) == 1  # one process: the second run finds the first's graphs
    for run, spec in zip(runs, COMPILED, strict=True):
        expected, _ = alone(dict(spec, compile=False))
        got = client.metrics(run.id)
        assert [r["epoch"] for r in got] == [1, 2, 3]
        for a, b in zip(strip(got), strip(expected), strict=True):
            assert a.keys() == b.keys()
            for key in a:
                if isinstance(a[key], float):
                    assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
                else:
                    assert a[key] == b[key], key


def test_every_run_process_shares_one_compile_cache_under_the_lab_home(tmp_path, monkeypatch):
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    executor = LocalExecutor(db_url="sqlite://", home=tmp_path)
    env = executor._env(cpu_slots(1)[0], {})
    assert env["TORCHINDUCTOR_CACHE_DIR"] == str(tmp_path.absolute() / "compile-cache")
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", "/elsewhere")  # the user's choice wins
    assert executor._env(cpu_slots(1)[0], {})["TORCHINDUCTOR_CACHE_DIR"] == "/elsewhere"

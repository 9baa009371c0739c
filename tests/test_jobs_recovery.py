"""A real `python -m jobs worker` process: graceful shutdown, then kill -9, then a restart.

Graceful (SIGTERM): running runs stop at a batch boundary and go back to queued, keeping their
checkpoints. kill -9 of the supervisor: its run processes live on (each finishes the run in hand,
then exits); on restart, the ones still alive are adopted and the ones that died meanwhile are
resumed. Every run ends completed.
"""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jobs import config
from jobs.client import LabClient
from jobs.config import SupervisorSettings
from jobs.executor import Slot
from jobs.executor_local import WORKER_MODULE, LocalExecutor
from jobs.procs import pid_alive
from jobs.status import RunStatus
from jobs.supervisor import Supervisor

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]
SPEC = dict(dataset="digits", model="mlp", batch_size=32, lr=0.05, epochs=40)


def start_worker(store_url, lab_home, log):
    env = {**os.environ, "GCE_LAB_HOME": str(lab_home), "GCE_LAB_DB_URL": store_url, "OMP_NUM_THREADS": "1",
           "GCE_LAB_KILL_GRACE_S": "20", "PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-m", "jobs", "worker", "--slots", "2", "--cpu", "--poll", "0.1"],
                            env=env, stdout=log, stderr=subprocess.STDOUT)


def wait_until(condition, what, timeout=300.0):
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def test_shutdown_then_kill_9_then_restart_every_run_completes(store_url, lab_home, tmp_path):
    client = LabClient(store_url)
    ids = [client.submit({**SPEC, "seed": seed}) for seed in range(3)]

    def running(min_epochs=1, than=None):
        runs = [client.get(i) for i in ids]
        return [r for r in runs if r.status == RunStatus.RUNNING and r.pid
                and r.epochs_done >= max(min_epochs, (than or {}).get(r.id, 0) + 1)]

    log = open(tmp_path / "worker.log", "ab")  # noqa: SIM115 - closed at the end
    procs = []
    try:
        # 1. graceful shutdown: in-flight runs go back to queued
        worker = start_worker(store_url, lab_home, log)
        procs.append(worker)
        wait_until(lambda: len(running()) == 2, "two runs training")
        assert client.executor_info()["workers_alive"] == 1
        in_flight = {r.id: r for r in running()}
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=60) == 0
        for run_id, before in in_flight.items():
            run = client.get(run_id)
            assert run.status == RunStatus.QUEUED and run.crashes == 0 and run.pid is None
            assert run.epochs_done >= before.epochs_done  # its metrics and checkpoint stay
            assert not pid_alive(before.pid, marker=WORKER_MODULE)
            assert "supervisor shut down" in config.log_path(run_id).read_text()
        assert client.executor_info()["workers_alive"] == 0
        done_at_shutdown = {i: client.get(i).epochs_done for i in ids}

        # 2. restart, then kill -9 the supervisor while runs train
        worker = start_worker(store_url, lab_home, log)
        procs.append(worker)
        wait_until(lambda: len(running(than=done_at_shutdown)) == 2, "two runs training again")
        orphans = {r.id: r.pid for r in running()}
        worker.kill()
        worker.wait(timeout=30)
        victim, survivor = list(orphans)
        os.kill(orphans[victim], signal.SIGKILL)  # dies while no supervisor watches
        wait_until(lambda: not pid_alive(orphans[victim], marker=WORKER_MODULE), "the victim to die")
        survivor_alive = pid_alive(orphans[survivor], marker=WORKER_MODULE)

        # 3. a new supervisor recovers everything
        settings = SupervisorSettings(recover_every_s=1.0)
        env = {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "1"}
        sup = Supervisor(client.store, LocalExecutor(db_url=store_url, home=lab_home),
                         [Slot(0, "cpu", env), Slot(1, "cpu", env)], settings)
        adopted, recovered = [], []
        deadline = time.monotonic() + 300
        while not (all(client.get(i).status.is_final for i in ids) and not sup.active):
            assert time.monotonic() < deadline, [(r.id, r.status.value) for r in (client.get(i) for i in ids)]
            report = sup.tick(time.time())
            adopted += report.adopted
            recovered += report.recovered
            time.sleep(0.05)
        sup.close()
        for run_id in ids:
            run = client.get(run_id)
            assert run.status == RunStatus.COMPLETED, (run_id, run.error)
            assert [r["epoch"] for r in client.metrics(run_id)] == list(range(1, 41))
        assert (victim, RunStatus.INTERRUPTED) in recovered
        victim_run = client.get(victim)
        assert victim_run.crashes == 1 and victim_run.attempts == 3
        assert "its process is gone and so is the supervisor" in config.log_path(victim).read_text()
        if survivor_alive:  # it may finish between our look and the restart; then nothing to adopt
            assert survivor in adopted or client.get(survivor).attempts == 2
        assert client.get(survivor).crashes == 0
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
        log.close()
        client.close()

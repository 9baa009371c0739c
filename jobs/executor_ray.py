"""The Ray executor: each run is one Ray task on a Ray cluster.

The supervisor (`python -m jobs worker --executor ray --ray-address HOST:PORT`) claims runs from
the shared database as with the local executor, and starts each as a Ray task asking for one GPU
(when its slot is a GPU slot and the spec's device is not "cpu") or for ``cpus_per_run`` CPUs.
The task runs in a fresh Ray worker process (``max_calls=1``) and calls the same entry as a local
run, ``jobs.worker_process.run_guarded``, so metrics, heartbeats, the cancel flag (read from
the database by ``should_stop``) and checkpoints behave the same. Its output is appended to
``<lab home>/runs/<id>/log.txt``: the lab home (logs and checkpoints) must be on a file system
that every node mounts at the same path, and the database a server every node reaches.

Ray never retries a run itself (``max_retries=0``): a task whose worker died (killed, out of
memory, node lost) is reported to the supervisor as a crash, and the supervisor's retry and
resume rules apply. ``terminate()`` is ``ray.cancel(ref)``, which the task's SIGINT handler turns
into a stop at the next batch boundary; ``kill()`` is ``ray.cancel(ref, force=True)``, which kills
the task's worker process. Runs of a supervisor that died are not adopted: Ray ends the tasks of a
driver that is gone, and the next supervisor resumes them from their checkpoints.

Ray is an optional extra, imported only here (``pip install -r requirements-extras.txt``).
"""

from __future__ import annotations

import os
import signal
import socket
import sys
import threading
from collections.abc import Mapping

from jobs import config
from jobs.executor import EXIT_STOPPED, ExitInfo, Slot
from jobs.logs import append_note, output_to, read_tail
from jobs.records import RunRecord

INSTALL = "pip install -r requirements-extras.txt (or: pip install 'gce-lab[ray]')"
GPU_SLOT = "ray:gpu"  # the device a claimed run shows: a GPU somewhere in the cluster
CPU_SLOT = "ray:cpu"


class RayUnavailable(RuntimeError):
    """Ray is not installed, or its cluster cannot be reached; the message says what to do."""


def import_ray():
    """The ray module, or RayUnavailable with the install command."""
    try:
        import ray
    except ImportError as exc:
        raise RayUnavailable(f"the Ray executor needs the ray package ({exc}); install it with: {INSTALL}") from None
    return ray


def run_task(run_id: str, token: str, env: Mapping[str, str]) -> int:
    """The body of a Ray task, in its own Ray worker process: the training process's entry for one
    run, with the lab's settings in the environment and stdout/stderr appended to the run's log.
    Returns the exit code a local training process would have (jobs.executor.EXIT_*)."""
    from jobs import worker_process

    os.environ.update(env)
    handlers = {}
    with output_to(config.log_path(run_id)):
        if threading.current_thread() is threading.main_thread():
            # ray.cancel(ref) interrupts the main thread as a SIGINT would: our handler only sets
            # the stop flag, so the run stops at a batch boundary like a local one on SIGTERM.
            handlers = worker_process.install_signal_handlers()
        try:
            print(f"Ray worker pid {os.getpid()} on {socket.gethostname()}", flush=True)
            return worker_process.run_guarded(run_id, token)
        except KeyboardInterrupt:  # a cancel that came before our handler was installed
            print("stopped by ray.cancel", flush=True)
            return EXIT_STOPPED
        finally:
            for sig, handler in handlers.items():
                signal.signal(sig, handler)


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


class RayHandle:
    """A run's Ray task. ``pid`` stays None here: the task writes its worker's pid to the store."""

    pid: int | None = None

    def __init__(self, ray, ref):
        self._ray, self.ref = ray, ref

    def poll(self) -> ExitInfo | None:
        ray = self._ray
        ready, _ = ray.wait([self.ref], timeout=0)
        if not ready:
            return None
        try:
            return ExitInfo(int(ray.get(self.ref)))
        except ray.exceptions.TaskCancelledError:
            return ExitInfo(-signal.SIGKILL, "its Ray task was cancelled (ray.cancel)")
        except ray.exceptions.WorkerCrashedError as exc:
            return ExitInfo(None, f"its Ray worker process died (WorkerCrashedError: {_first_line(exc)})")
        except ray.exceptions.RayError as exc:  # node died, Ray's out-of-memory killer, ...
            return ExitInfo(None, f"its Ray task failed ({type(exc).__name__}: {_first_line(exc)})")

    def _cancel(self, *, force: bool) -> None:
        try:
            self._ray.cancel(self.ref, force=force)
        except Exception as exc:  # already finished, or Ray unreachable: the next poll tells
            print(f"ray.cancel(force={force}) failed: {exc}", file=sys.stderr, flush=True)

    def terminate(self) -> None:
        self._cancel(force=False)

    def kill(self) -> None:
        self._cancel(force=True)


class RayExecutor:
    """Runs as Ray tasks on the cluster at ``address`` (None: Ray's own default, $RAY_ADDRESS or
    a Ray started for this process). Connects at once; RayUnavailable if it cannot."""

    name = "ray"

    def __init__(self, *, db_url: str, address: str | None = None, home=None, cpus_per_run: float = 1.0):
        self.ray = import_ray()
        self.db_url, self.address, self.cpus_per_run = db_url, address, cpus_per_run
        self.home = (home or config.lab_home()).absolute()
        self.host = socket.gethostname()
        self._connect()
        self._task = self.ray.remote(max_retries=0, retry_exceptions=False, max_calls=1)(run_task)

    def _probe(self) -> None:
        """Fail fast when nothing listens at HOST:PORT (ray.init would retry for minutes)."""
        host, sep, port = (self.address or "").rpartition(":")
        if not sep or not port.isdigit() or "://" in self.address:
            return  # "auto", "ray://...", or Ray's own default: left to ray.init
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=10).close()
        except OSError as exc:
            raise RayUnavailable(
                f"no Ray cluster answers at {self.address} ({exc.strerror or exc}). Start one with "
                "`ray start --head --port 6379`, or fix --ray-address / $GCE_LAB_RAY_ADDRESS") from None

    def _connect(self) -> None:
        ray = self.ray
        if ray.is_initialized():
            return
        self._probe()
        try:
            ray.init(address=self.address, namespace="gce-lab", log_to_driver=False, logging_level="WARNING")
        except (ConnectionError, RuntimeError, ValueError) as exc:
            where = self.address or "the default address"
            raise RayUnavailable(
                f"cannot connect to the Ray cluster at {where}: {_first_line(exc)}. Start one with "
                "`ray start --head --port 6379`, or fix --ray-address / $GCE_LAB_RAY_ADDRESS") from None

    def slots(self, n: int | None = None, *, cpu_only: bool = False) -> list[Slot]:
        """How many runs to keep in flight: ``n``, else one per GPU of the cluster, else its CPUs
        divided by cpus_per_run. Counted once, at start: restart the worker after adding nodes."""
        resources = self.ray.cluster_resources()
        gpus = 0 if cpu_only else int(resources.get("GPU", 0))
        if n is None:
            n = gpus or max(1, int(resources.get("CPU", 1) // self.cpus_per_run))
        if n < 1:
            raise ValueError(f"a supervisor needs at least 1 slot, got {n}")
        return [Slot(i, GPU_SLOT if gpus else CPU_SLOT) for i in range(n)]

    def _env(self, slot: Slot, extra: Mapping[str, str]) -> dict[str, str]:
        # Only what the training process reads; each node keeps its own data folder ($GCE_LAB_DATA).
        env = {**config.compile_cache_env(self.home), **slot.env, **extra,
               config.ENV_DB_URL: self.db_url, config.ENV_HOME: str(self.home)}
        env["PYTHONUNBUFFERED"] = "1"
        return env

    def _gpu(self, run: RunRecord, slot: Slot) -> bool:
        return slot.device == GPU_SLOT and run.spec.device != "cpu"

    def start(self, run: RunRecord, token: str, slot: Slot, env: Mapping[str, str]) -> RayHandle:
        """One Ray task (one GPU, or cpus_per_run CPUs) that trains ``run``."""
        gpu = self._gpu(run, slot)
        env = self._env(slot, env)
        if not gpu:  # Ray hides the GPUs from a task without any today, but says it will stop
            env["CUDA_VISIBLE_DEVICES"] = ""
        wants = "1 GPU" if gpu else f"{self.cpus_per_run:g} CPU"
        append_note(config.log_path(run.id, self.home), f"attempt {run.attempts} of run {run.id}: a Ray "
                    f"task ({wants}) from the supervisor on {self.host}, slot {slot.index}")
        options = dict(name=f"gce-lab-{run.id}", num_cpus=self.cpus_per_run, num_gpus=1 if gpu else 0)
        return RayHandle(self.ray, self._task.options(**options).remote(run.id, token, env))

    def prepare(self, slot: Slot, env: Mapping[str, str]) -> bool:
        """Nothing to prepare: Ray starts the task's worker process."""
        return True

    def attach(self, run: RunRecord) -> None:
        """Never: a Ray task dies with the supervisor (its driver) that started it."""
        return None

    def log_tail(self, run_id: str) -> str:
        return read_tail(config.log_path(run_id, self.home))

    def note(self, run_id: str, message: str) -> None:
        append_note(config.log_path(run_id, self.home), message)

    def close(self) -> None:
        """Disconnect from the cluster (the cluster goes on)."""
        if self.ray.is_initialized():
            self.ray.shutdown()

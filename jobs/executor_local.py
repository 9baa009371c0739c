"""The local executor: each run, or each group of runs claimed together, is its own process on this
machine.

The process is started fresh (`python -m jobs.worker_process RUN_ID TOKEN`, or `... --group TOKEN
RUN_ID ...` for runs claimed together: fused, or trained in turn; fork+exec, never a fork of a
process that has CUDA up), in a new session so that its whole process group can be signalled, with
stdout and stderr appended to <lab home>/runs/<id>/log.txt (a group's process: its first run's). Its command line names every
run id, so a later supervisor can tell it from a recycled pid for any of its runs.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

from jobs import config
from jobs.executor import ExitInfo, Slot
from jobs.logs import append_note, read_tail
from jobs.procs import pid_alive, signal_group
from jobs.records import RunRecord

_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)


class LocalHandle:
    """A process this supervisor started (so it can read the exit status and reap it)."""

    def __init__(self, proc: subprocess.Popen):
        self.proc = proc
        self.pid: int | None = proc.pid

    def poll(self) -> ExitInfo | None:
        code = self.proc.poll()
        if code is None:
            return None
        signal_group(self.proc.pid, signal.SIGKILL)  # anything the run left behind in its group
        return ExitInfo(code)

    def terminate(self) -> None:
        signal_group(self.proc.pid, signal.SIGTERM)

    def kill(self) -> None:
        signal_group(self.proc.pid, signal.SIGKILL)


class AdoptedHandle:
    """A run's process started by a previous supervisor: watched through /proc; its exit status
    is unknown (its parent is gone, so it is not ours to reap)."""

    def __init__(self, pid: int, run_id: str):
        self.pid: int | None = pid
        self.run_id = run_id

    def _alive(self) -> bool:
        return pid_alive(self.pid, marker=self.run_id)

    def poll(self) -> ExitInfo | None:
        return None if self._alive() else ExitInfo(None)

    def terminate(self) -> None:
        if self._alive():  # never signal a recycled pid
            signal_group(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        if self._alive():
            signal_group(self.pid, signal.SIGKILL)


class LocalExecutor:
    name = "local"

    def __init__(self, *, db_url: str, home: Path | None = None, python: str = sys.executable):
        self.db_url = db_url
        self.home = (home or config.lab_home()).absolute()
        self.python = python
        self.host = socket.gethostname()

    def _env(self, slot: Slot, extra: Mapping[str, str]) -> dict[str, str]:
        env = {**config.compile_cache_env(self.home), **os.environ, **slot.env, **extra}
        env[config.ENV_DB_URL] = self.db_url
        env[config.ENV_HOME] = str(self.home)
        env["PYTHONUNBUFFERED"] = "1"
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _PROJECT_ROOT + (os.pathsep + path if path else "")
        return env

    def _spawn(self, args: list[str], log_path: Path, slot: Slot, env: Mapping[str, str]) -> LocalHandle:
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                [self.python, "-m", "jobs.worker_process", *args],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                env=self._env(slot, env), start_new_session=True, close_fds=True,
            )
        return LocalHandle(proc)

    def _attempt_note(self, run: RunRecord, slot: Slot, extra: str = "") -> Path:
        path = config.log_path(run.id, self.home)
        path.parent.mkdir(parents=True, exist_ok=True)
        append_note(path, f"attempt {run.attempts} of run {run.id} on {self.host}, "
                    f"slot {slot.index} ({slot.device}){extra}")
        return path

    def start(self, run: RunRecord, token: str, slot: Slot, env: Mapping[str, str]) -> LocalHandle:
        log_path = self._attempt_note(run, slot)
        return self._spawn([run.id, token], log_path, slot, env)

    def start_group(self, runs: Sequence[RunRecord], token: str, slot: Slot,
                    env: Mapping[str, str]) -> LocalHandle:
        """One process for ``runs`` (`python -m jobs.worker_process --group TOKEN ID ...`); its
        output goes to the first run's log, each run's own lines to its log."""
        first = runs[0].id
        paths = [self._attempt_note(r, slot, "" if r.id == first else
                                    f"; the output of its process is in the log of run {first}")
                 for r in runs]
        return self._spawn(["--group", token, *(r.id for r in runs)], paths[0], slot, env)

    def attach(self, run: RunRecord) -> AdoptedHandle | None:
        if run.host != self.host or not pid_alive(run.pid, marker=run.id):
            return None
        return AdoptedHandle(run.pid, run.id)

    def log_tail(self, run_id: str) -> str:
        return read_tail(config.log_path(run_id, self.home))

    def note(self, run_id: str, message: str) -> None:
        append_note(config.log_path(run_id, self.home), message)

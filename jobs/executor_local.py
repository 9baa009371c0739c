"""The local executor: the runs train in processes on this machine, one run at a time per process.

Every slot keeps a warm run process (`python -m jobs.worker_process --serve`): started ahead of time
with the slot's environment (CUDA_VISIBLE_DEVICES, the thread count), it has imported torch and
the library and trained a tiny run before a run is claimed, so a claimed run starts training at
once. It takes the slot's runs one after another over its stdin and reports each run's exit code
on its stdout (``done RUN_ID CODE``, and a storage fault's text after it); it stays only after a
run that ended normally. Processes are
started by fork+exec (never a fork of a process that has CUDA up), each in a new session so that
its whole process group can be signalled: terminate and kill reach the one run it trains and no
other. A run's output goes to <lab home>/runs/<id>/log.txt; a warm process's own output (its
warm-up) to <lab home>/workers/slot-<i>.log.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

from jobs import config
from jobs.executor import ExitInfo, Slot
from jobs.logs import append_note, read_tail
from jobs.procs import pid_alive, signal_group
from jobs.records import RunRecord

_PROJECT_ROOT = str(Path(__file__).resolve().parent.parent)
WORKER_MODULE = "jobs.worker_process"  # in the command line of every run process
RETRY_WARM_UP_S = 10.0  # a run process that died warming up is replaced this long after its start


class WarmProcess:
    """One slot's warm run process: send it runs, read what it reports."""

    def __init__(self, proc: subprocess.Popen, log: Path):
        self.proc, self.log = proc, log
        self.pid = proc.pid
        self.started = time.monotonic()
        os.set_blocking(proc.stdout.fileno(), False)
        self._buf = b""
        self.ready = False  # warmed up
        self.retiring = False  # takes no more runs (it was signalled, or reported a failure)
        self.results: dict[str, ExitInfo] = {}  # run id -> how it ended, reported and not yet polled
        self.running: str | None = None  # the run it was sent and has not reported yet

    def read(self) -> None:
        """Take in what the process has reported so far (never blocks)."""
        try:
            while chunk := self.proc.stdout.read(65536):
                self._buf += chunk
        except (BlockingIOError, ValueError):  # nothing more now; closed
            pass
        *lines, self._buf = self._buf.split(b"\n")
        for line in lines:
            words = line.decode(errors="replace").strip().split(" ", 3)
            if words == ["ready"]:
                self.ready = True
            elif len(words) >= 3 and words[0] == "done":  # done RUN_ID CODE [what went wrong]
                self.results[words[1]] = ExitInfo(int(words[2]), words[3] if len(words) == 4 else None)
                self.running = None
                if int(words[2]) != 0:
                    self.retiring = True

    def alive(self) -> bool:
        return self.proc.poll() is None

    def usable(self) -> bool:
        return not self.retiring and self.alive()

    def send(self, run_id: str, token: str) -> None:
        self.proc.stdin.write(f"{run_id} {token}\n".encode())
        self.proc.stdin.flush()
        self.running = run_id

    def close(self) -> None:
        """Close its stdin: it exits when idle, or after the run in hand."""
        with contextlib.suppress(OSError):
            self.proc.stdin.close()


class LocalHandle:
    """A run in one of this supervisor's run processes (so it can read the exit code)."""

    def __init__(self, process: WarmProcess, run_id: str):
        self.process, self.run_id = process, run_id
        self.pid: int | None = process.pid

    def poll(self) -> ExitInfo | None:
        p = self.process
        p.read()
        if self.run_id not in p.results:
            if p.alive():
                return None
            p.read()  # what it wrote just before it ended
        if self.run_id in p.results:
            return p.results.pop(self.run_id)
        signal_group(p.pid, signal.SIGKILL)  # anything the run left behind in its group
        code = p.proc.returncode
        if code is not None and code >= 0:
            return ExitInfo(None, f"its run process ended (exit code {code}) before it reported the run "
                                  f"(its own log: {p.log})")
        return ExitInfo(code)

    def terminate(self) -> None:
        self.process.retiring = True  # it stops the run and exits
        signal_group(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        self.process.retiring = True
        signal_group(self.pid, signal.SIGKILL)


class AdoptedHandle:
    """A run's process started by a previous supervisor: watched through /proc; its exit status
    is unknown (its parent is gone, so it is not ours to reap)."""

    def __init__(self, pid: int, run_id: str):
        self.pid: int | None = pid
        self.run_id = run_id

    def _alive(self) -> bool:
        return pid_alive(self.pid, marker=WORKER_MODULE)

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
        self.warm: dict[int, WarmProcess] = {}  # slot index -> its run process

    def _env(self, slot: Slot, extra: Mapping[str, str]) -> dict[str, str]:
        env = {**config.compile_cache_env(self.home), **os.environ, **slot.env, **extra}
        env[config.ENV_DB_URL] = self.db_url
        env[config.ENV_HOME] = str(self.home)
        env["PYTHONUNBUFFERED"] = "1"
        path = env.get("PYTHONPATH")
        env["PYTHONPATH"] = _PROJECT_ROOT + (os.pathsep + path if path else "")
        return env

    def _spawn(self, slot: Slot, env: Mapping[str, str]) -> WarmProcess:
        log = self.home / "workers" / f"slot-{slot.index}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        append_note(log, f"a warm run process for slot {slot.index} ({slot.device}) starts")
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                [self.python, "-m", WORKER_MODULE, "--serve"],
                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=out,
                env=self._env(slot, env), start_new_session=True, close_fds=True,
            )
        return WarmProcess(proc, log)

    def _process(self, slot: Slot, env: Mapping[str, str]) -> WarmProcess:
        """The slot's run process, a new one started if it has none that can take a run."""
        p = self.warm.get(slot.index)
        if p is None or not p.usable():
            if p is not None and not p.ready and time.monotonic() - p.started < RETRY_WARM_UP_S:
                return p  # it died warming up (see its log): no new one at every supervisor step
            if p is not None:
                p.close()
            p = self.warm[slot.index] = self._spawn(slot, env)
        p.read()
        return p

    def prepare(self, slot: Slot, env: Mapping[str, str]) -> bool:
        """Whether the slot's warm run process has warmed up (one is started if there is none)."""
        return self._process(slot, env).ready

    def start(self, run: RunRecord, token: str, slot: Slot, env: Mapping[str, str]) -> LocalHandle:
        """Send ``run`` to the slot's run process (one still warming up takes it when it is ready)."""
        p = self._process(slot, env)
        try:
            p.send(run.id, token)
        except OSError:  # it died since it was prepared: a fresh one
            p.retiring = True
            p = self._process(slot, env)
            p.send(run.id, token)
        append_note(config.log_path(run.id, self.home), f"attempt {run.attempts} of run {run.id} on "
                    f"{self.host}, slot {slot.index} ({slot.device}), run process {p.pid}"
                    + ("" if p.ready else " (still warming up)"))
        return LocalHandle(p, run.id)

    def attach(self, run: RunRecord) -> AdoptedHandle | None:
        if run.host != self.host or not pid_alive(run.pid, marker=WORKER_MODULE):
            return None
        return AdoptedHandle(run.pid, run.id)

    def log_tail(self, run_id: str) -> str:
        return read_tail(config.log_path(run_id, self.home))

    def note(self, run_id: str, message: str) -> None:
        append_note(config.log_path(run_id, self.home), message)

    def close(self, wait_s: float = 5.0) -> None:
        """Let the warm processes go: idle ones exit (killed after ``wait_s``); one that trains a
        run finishes it first (a next supervisor adopts the run)."""
        for p in self.warm.values():
            p.close()
        deadline = time.monotonic() + wait_s
        for p in self.warm.values():
            p.read()
            while p.running is None and p.alive() and time.monotonic() < deadline:
                time.sleep(0.02)
            if p.running is None and p.alive():
                signal_group(p.pid, signal.SIGKILL)
        self.warm.clear()

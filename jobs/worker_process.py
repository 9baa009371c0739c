"""The training process of one run: `python -m jobs.worker_process RUN_ID CLAIM_TOKEN`.

Started by an executor after the supervisor claimed the run: the local executor runs this module
as a fresh process; the Ray executor calls ``run_guarded`` inside a fresh Ray worker process. It trains with gce_core.train,
resuming from the checkpoint in <lab home>/runs/<id>/ if there is one, writes every epoch to the
store (a repeated epoch is ignored), heartbeats from a thread, and stops at a batch boundary when
the run's cancel flag is set (read at most every GCE_LAB_CANCEL_POLL_S) or on SIGTERM/SIGINT.
It writes the run's end itself when it knows it (completed, cancelled); anything else the
supervisor reads from the exit code (jobs.executor.EXIT_*).
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback

from sqlalchemy.exc import OperationalError

from jobs import config
from jobs.executor import EXIT_ERROR, EXIT_OK, EXIT_RETRYABLE, EXIT_STOPPED, EXIT_SUPERSEDED

# Set by the signal handler, read by StopCheck: handlers only set flags.
_signalled: list[int] = []


def _on_signal(signum, _frame) -> None:
    _signalled.append(signum)


class Heartbeat(threading.Thread):
    """Writes the run's heartbeat every ``period`` seconds; ``lost`` is set once the run is no
    longer this process's."""

    def __init__(self, store, run_id: str, token: str, period: float):
        super().__init__(name=f"heartbeat-{run_id}", daemon=True)
        self.store, self.run_id, self.token, self.period = store, run_id, token, period
        self.lost = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.period):
            try:
                if not self.store.heartbeat(self.run_id, self.token, now=time.time()):
                    self.lost.set()
                    return
            except Exception as exc:  # a database hiccup: say so, keep training, try again
                print(f"heartbeat failed: {exc}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self._done.set()


class StopCheck:
    """gce_core.train's should_stop: True on a signal, a lost claim or the run's cancel flag.
    The database is read at most every ``poll_s`` seconds; ``reason`` says why it stopped."""

    def __init__(self, store, run_id: str, token: str, heartbeat: Heartbeat | None,
                 poll_s: float, clock=time.monotonic):
        self.store, self.run_id, self.token, self.heartbeat = store, run_id, token, heartbeat
        self.poll_s, self.clock = poll_s, clock
        self._next = clock()
        self.reason: str | None = None

    def __call__(self) -> bool:
        if self.reason is None:
            self.reason = self._check()
        return self.reason is not None

    def _check(self) -> str | None:
        if _signalled:
            return "signal"
        if self.heartbeat is not None and self.heartbeat.lost.is_set():
            return "superseded"
        now = self.clock()
        if now < self._next:
            return None
        self._next = now + self.poll_s
        try:
            mine, cancel = self.store.control(self.run_id, self.token)
        except Exception as exc:
            print(f"could not read the cancel flag: {exc}", file=sys.stderr, flush=True)
            return None
        if not mine:
            return "superseded"
        return "cancel" if cancel else None


def _fmt(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def run(run_id: str, token: str) -> int:
    from jobs.status import RunStatus
    from jobs.store import Store, Superseded

    settings = config.SupervisorSettings.from_env()
    store = Store(config.db_url())
    rec = store.get(run_id)
    if rec is None or rec.claim_token != token or rec.status != RunStatus.RUNNING:
        print(f"run {run_id} is not this process's to run any more; exiting", flush=True)
        return EXIT_SUPERSEDED
    store.set_pid(run_id, token, os.getpid())
    if rec.cancel_requested:  # cancelled before it got going: no need to load torch
        store.finish(run_id, token, RunStatus.CANCELLED, now=time.time())
        print(f"run {run_id} was cancelled before it started", flush=True)
        return EXIT_OK
    folder = config.run_dir(run_id)
    print(f"run {run_id} ({rec.name}), attempt {rec.attempts}, pid {os.getpid()}; checkpoints in {folder}", flush=True)
    beat = Heartbeat(store, run_id, token, settings.heartbeat_s)
    beat.start()
    check = StopCheck(store, run_id, token, beat, settings.cancel_poll_s)

    from gce_core.train import train

    def on_epoch(row: dict) -> None:
        store.add_epoch(run_id, token, row, now=time.time())
        print(f"epoch {row['epoch']}/{rec.spec.epochs}: train loss {row['train_loss']:.4f}, "
              f"val {_fmt(row['val_acc'])}, test {_fmt(row['test_acc'])}, {row['seconds']:.2f} s", flush=True)

    try:
        summary = train(rec.spec, on_epoch=on_epoch, should_stop=check, checkpoint_dir=folder)
    except Superseded as exc:
        print(f"stopping: {exc}", flush=True)
        return EXIT_SUPERSEDED
    finally:
        beat.stop()
    if summary["stopped"]:
        print(f"stopped at a batch boundary ({check.reason}) after {summary['epochs_completed']} epochs", flush=True)
        if check.reason == "cancel":
            store.finish(run_id, token, RunStatus.CANCELLED, now=time.time())
            return EXIT_OK
        return EXIT_SUPERSEDED if check.reason == "superseded" else EXIT_STOPPED
    if not store.complete(run_id, token, summary, now=time.time()):
        return EXIT_SUPERSEDED
    print(f"completed: test accuracy at best validation epoch {_fmt(summary['test_acc_at_best_val'])}", flush=True)
    return EXIT_OK


def install_signal_handlers() -> dict:
    """SIGTERM and SIGINT only set the stop flag; the previous handlers, to restore."""
    _signalled.clear()
    return {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}


def run_guarded(run_id: str, token: str) -> int:
    """``run`` with every exception mapped to its exit code (jobs.executor.EXIT_*)."""
    try:
        return run(run_id, token)
    except (MemoryError, OperationalError):
        traceback.print_exc()
        return EXIT_RETRYABLE
    except Exception as exc:
        traceback.print_exc()
        if type(exc).__name__ == "OutOfMemoryError":  # torch.OutOfMemoryError (CUDA)
            return EXIT_RETRYABLE
        print(f"error: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR


def main(argv: list[str] | None = None) -> int:
    install_signal_handlers()
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 2:
        print("usage: python -m jobs.worker_process RUN_ID CLAIM_TOKEN (started by the supervisor)", file=sys.stderr)
        return EXIT_ERROR
    return run_guarded(*args)


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is committed and the checkpoint fsynced: skip the interpreter's teardown, which
    # takes seconds with torch loaded and would hold a finished run's slot.
    os._exit(code)

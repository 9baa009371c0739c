"""The training process of one run, or of several runs of one group claimed together:

    python -m jobs.worker_process RUN_ID CLAIM_TOKEN
    python -m jobs.worker_process --group CLAIM_TOKEN RUN_ID [RUN_ID ...]

Started by an executor after the supervisor claimed the run(s): the local executor runs this module
as a fresh process; the Ray executor calls ``run_group_guarded`` inside a fresh Ray worker process.
One run trains with gce_core.train. Runs claimed together (one token; gce_core.fusable.process_key)
train as one job with gce_core.fused.train_fused (fused runs), or, with compile, one after another
with gce_core.train (runs in turn: the first compiles, the rest reuse its graphs; see
``train_in_turn``). Each run resumes from the checkpoint in <lab home>/runs/<id>/ if there is one,
and has every epoch written to the store (a repeated epoch is ignored). One thread heartbeats
every run (and, for runs in turn, ends the waiting ones that are cancelled); training stops at a
batch boundary when a run's cancel flag is set (read at most every GCE_LAB_CANCEL_POLL_S), a run
is taken over, or on SIGTERM/SIGINT. The process writes
the end of a run itself when it knows it (completed, cancelled); anything else the supervisor
reads from the exit code (jobs.executor.EXIT_*). A fused process stopped for one run (cancelled,
taken over) exits EXIT_STOPPED, so its other runs are queued again, not counted as crashed, and
resume fused without it. Runs in turn end one by one, as each is done (a failing one fails
alone; the next one starts).

The process's stdout is the first run's log; each run's own lines (start, epochs, end) go to its
own log.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Sequence

from sqlalchemy.exc import OperationalError

from jobs import config
from jobs.executor import EXIT_ERROR, EXIT_OK, EXIT_RETRYABLE, EXIT_STOPPED, EXIT_SUPERSEDED
from jobs.logs import append_line

# Set by the signal handler, read by StopCheck: handlers only set flags.
_signalled: list[int] = []


def _on_signal(signum, _frame) -> None:
    _signalled.append(signum)


class Heartbeat(threading.Thread):
    """Writes the heartbeat of every run of the process every ``period`` seconds; ``lost`` is set
    once none of them is this process's any more. ``on_beat``, if given, is called after each
    beat (in this thread: it runs while training computes, compiles or evaluates)."""

    def __init__(self, store, run_ids: Sequence[str], token: str, period: float,
                 on_beat: Callable[[], None] | None = None):
        super().__init__(name=f"heartbeat-{run_ids[0]}", daemon=True)
        self.store, self.run_ids, self.token, self.period = store, list(run_ids), token, period
        self.on_beat = on_beat
        self.lost = threading.Event()
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(self.period):
            try:
                if self.store.heartbeat_many(self.run_ids, self.token, now=time.time()) == 0:
                    self.lost.set()
                    return
                if self.on_beat is not None:
                    self.on_beat()
            except Exception as exc:  # a database hiccup: say so, keep training, try again
                print(f"heartbeat failed: {exc}", file=sys.stderr, flush=True)

    def stop(self) -> None:
        self._done.set()


class StopCheck:
    """The trainer's should_stop: True on a signal, or when ANY of the process's runs has its
    cancel flag set or is no longer this process's (fused runs stop together). The database is
    read at most every ``poll_s`` seconds. ``reason`` says why it stopped ("signal", "cancel",
    "superseded"); ``cancelled`` and ``lost`` name the runs."""

    def __init__(self, store, run_ids: Sequence[str], token: str, heartbeat: Heartbeat | None,
                 poll_s: float, clock=time.monotonic):
        self.store, self.run_ids, self.token, self.heartbeat = store, list(run_ids), token, heartbeat
        self.poll_s, self.clock = poll_s, clock
        self._next = clock()
        self.reason: str | None = None
        self.cancelled: list[str] = []
        self.lost: list[str] = []

    def __call__(self) -> bool:
        if self.reason is None:
            self.reason = self._check()
        return self.reason is not None

    def _check(self) -> str | None:
        if _signalled:
            return "signal"
        if self.heartbeat is not None and self.heartbeat.lost.is_set():
            self.lost = list(self.run_ids)
            return "superseded"
        now = self.clock()
        if now < self._next:
            return None
        self._next = now + self.poll_s
        try:
            states = self.store.controls(self.run_ids, self.token)
        except Exception as exc:
            print(f"could not read the cancel flag: {exc}", file=sys.stderr, flush=True)
            return None
        self.lost = [i for i in self.run_ids if not states[i][0]]
        self.cancelled = [i for i in self.run_ids if states[i][0] and states[i][1]]
        if self.cancelled:
            return "cancel"
        return "superseded" if self.lost else None


class WaitingRuns:
    """The runs of a process training in turn that have not started yet. ``check`` (the heartbeat
    thread calls it, so it also runs while the run in training compiles) writes a cancelled one
    ``cancelled`` at once and drops one that is no longer this process's; ``next`` hands out the
    next one that is still this process's to train. Both hold one lock: a run is either handed
    out or cancelled, never both."""

    def __init__(self, store, run_ids: Sequence[str], token: str, log: RunLogs):
        self.store, self.token, self.log = store, token, log
        self.ids = list(run_ids)
        self._lock = threading.Lock()

    def check(self) -> None:
        from jobs.status import RunStatus

        with self._lock:
            if not self.ids:
                return
            states = self.store.controls(self.ids, self.token)
            for run_id in list(self.ids):
                mine, cancel = states[run_id]
                if not mine:
                    self.log.say(run_id, f"run {run_id} is not this process's to run any more; "
                                         f"it will not train here")
                elif cancel:
                    self.store.finish(run_id, self.token, RunStatus.CANCELLED, now=time.time())
                    self.log.say(run_id, f"run {run_id} was cancelled while it waited for its turn")
                else:
                    continue
                self.ids.remove(run_id)

    def next(self) -> str | None:
        """The next run to train (its pid set; a cancelled one written cancelled on the way);
        None when none is left."""
        with self._lock:
            while self.ids:
                run_id = self.ids.pop(0)
                if _still_ours(self.store, [run_id], self.token, self.log)[0]:
                    return run_id
        return None


def _fmt(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


class RunLogs:
    """Lines for each run's log. The first run's log is this process's stdout (the executor opened
    it there); the lines of the other runs are appended to their logs."""

    def __init__(self, run_ids: Sequence[str]):
        self.first = run_ids[0]

    def say(self, run_id: str, text: str) -> None:
        if run_id == self.first:
            print(text, flush=True)
        else:
            append_line(config.log_path(run_id), text)

    def say_all(self, run_ids: Sequence[str], text: str) -> None:
        for run_id in run_ids:
            self.say(run_id, text)


def _still_ours(store, run_ids: Sequence[str], token: str, log: RunLogs) -> tuple[list, int]:
    """The records of the runs to train (ours, not cancelled), and how many were ours at all.
    A run cancelled before it got going is written cancelled here, without loading torch."""
    from jobs.status import RunStatus

    records, ours, train = store.get_many(run_ids), 0, []
    for run_id in run_ids:
        rec = records.get(run_id)
        if rec is None or rec.claim_token != token or rec.status != RunStatus.RUNNING:
            log.say(run_id, f"run {run_id} is not this process's to run any more; exiting")
            continue
        ours += 1
        store.set_pid(run_id, token, os.getpid())
        if rec.cancel_requested:
            store.finish(run_id, token, RunStatus.CANCELLED, now=time.time())
            log.say(run_id, f"run {run_id} was cancelled before it started")
            continue
        train.append(rec)
    return train, ours


def _train(specs, folders, on_epoch, should_stop) -> list[dict]:
    """gce_core.train for one run, gce_core.fused.train_fused for several: their summaries."""
    if len(specs) == 1:
        from gce_core.train import train

        return [train(specs[0], on_epoch=lambda row: on_epoch(0, row), should_stop=should_stop,
                      checkpoint_dir=folders[0])]
    from gce_core.fused import train_fused

    return train_fused(specs, on_epoch=on_epoch, should_stop=should_stop, checkpoint_dirs=folders)


def _stopped(store, ids: list[str], token: str, check: StopCheck, epochs: dict[str, int],
             log: RunLogs) -> int:
    """Write the end of the runs whose cancel stopped the process; the exit code for the rest.
    ``epochs``: the epochs each run has completed."""
    from jobs.status import RunStatus

    for run_id in check.cancelled:
        store.finish(run_id, token, RunStatus.CANCELLED, now=time.time())
    gone = set(check.cancelled) | set(check.lost)
    left = [i for i in ids if i not in gone]
    for run_id in ids:
        why = check.reason
        if run_id not in gone and gone:
            why = (f"run {', '.join(sorted(gone))} of this fused process was "
                   f"{'cancelled' if check.cancelled else 'taken over'}; this run resumes from its checkpoint")
        log.say(run_id, f"stopped at a batch boundary ({why}) after {epochs[run_id]} epochs")
    if left:
        return EXIT_STOPPED
    return EXIT_SUPERSEDED if check.reason == "superseded" else EXIT_OK


def _epoch_line(row: dict, epochs: int, fused: int) -> str:
    seconds = f"{row['seconds']:.2f} s" + (f" (the fused epoch of {fused} runs)" if fused > 1 else "")
    return (f"epoch {row['epoch']}/{epochs}: train loss {row['train_loss']:.4f}, "
            f"val {_fmt(row['val_acc'])}, test {_fmt(row['test_acc'])}, {seconds}")


def run_group(run_ids: Sequence[str], token: str) -> int:
    """Train the runs claimed together with ``token`` (one run, fusable runs of one group, or a
    group's compile runs in turn) in this process; the exit code (jobs.executor.EXIT_*)."""
    from jobs.store import Store, Superseded

    settings = config.SupervisorSettings.from_env()
    store = Store(config.db_url())
    log = RunLogs(run_ids)
    records, ours = _still_ours(store, run_ids, token, log)
    if not records:
        return EXIT_OK if ours else EXIT_SUPERSEDED
    ids = [r.id for r in records]
    folders = [config.run_dir(i) for i in ids]
    in_turn = len(records) > 1 and records[0].spec.compile
    for rec, folder in zip(records, folders, strict=True):
        how = "trained in turn with" if in_turn else "fused with"
        mates = f"; {how} {', '.join(i for i in ids if i != rec.id)}" if len(ids) > 1 else ""
        log.say(rec.id, f"run {rec.id} ({rec.name}), attempt {rec.attempts}, pid {os.getpid()}; "
                        f"checkpoints in {folder}{mates}")
    if in_turn:
        return train_in_turn(store, records, token, log, settings)
    beat = Heartbeat(store, ids, token, settings.heartbeat_s)
    beat.start()
    check = StopCheck(store, ids, token, beat, settings.cancel_poll_s)
    epochs = records[0].spec.epochs  # fused runs share it
    done = {r.id: r.epochs_done for r in records}

    def on_epoch(i: int, row: dict) -> None:
        store.add_epoch(ids[i], token, row, now=time.time())
        done[ids[i]] = row["epoch"]
        log.say(ids[i], _epoch_line(row, epochs, len(ids)))

    try:
        summaries = _train([r.spec for r in records], folders, on_epoch, check)
    except Superseded as exc:
        if len(ids) == 1:
            log.say(ids[0], f"stopping: {exc}")
            return EXIT_SUPERSEDED
        check.reason = "superseded"
        check.lost = [i for i, (mine, _) in store.controls(ids, token).items() if not mine]
        return _stopped(store, ids, token, check, done, log)
    finally:
        beat.stop()
    if summaries[0]["stopped"]:  # fused runs stop together
        epochs_completed = {i: s["epochs_completed"] for i, s in zip(ids, summaries, strict=True)}
        return _stopped(store, ids, token, check, epochs_completed, log)
    completed = 0
    for run_id, summary in zip(ids, summaries, strict=True):
        if store.complete(run_id, token, summary, now=time.time()):
            completed += 1
            best = _fmt(summary["test_acc_at_best_val"])
            log.say(run_id, f"completed: test accuracy at best validation epoch {best}")
    return EXIT_OK if completed == len(ids) else EXIT_SUPERSEDED


def _retryable(exc: BaseException) -> bool:
    """Out of memory (torch.OutOfMemoryError on CUDA) or the database out of reach: resumable."""
    return isinstance(exc, (MemoryError, OperationalError)) or type(exc).__name__ == "OutOfMemoryError"


def train_in_turn(store, records: Sequence, token: str, log: RunLogs, settings) -> int:
    """Train a group's compile runs claimed together one after another in this process. The first
    run compiles the model; torch keeps its graphs for the life of the process, so the others
    (same architecture and shapes: gce_core.fusable.in_turn_key) compile nothing. Each run ends as
    soon as it is done: completed, cancelled, taken over, or failed with its own error, and the
    next one starts; a waiting run that is cancelled ends at once (WaitingRuns). Only a signal, or
    an error that a resume may cure (out of memory, the database), ends the process early: the
    runs still its then resume later from their checkpoints. The exit code (jobs.executor.EXIT_*)."""
    from gce_core.train import train
    from jobs.status import RunStatus
    from jobs.store import Superseded

    first = records[0].id
    waiting = WaitingRuns(store, [r.id for r in records[1:]], token, log)
    beat = Heartbeat(store, [r.id for r in records], token, settings.heartbeat_s, on_beat=waiting.check)
    beat.start()
    specs = {r.id: r.spec for r in records}
    run_id: str | None = first
    try:
        while run_id is not None:
            if run_id != first:
                log.say(run_id, f"run {run_id} starts after the runs before it in this process "
                                f"(pid {os.getpid()}), from run {first} on: what torch.compile has "
                                f"compiled here is reused")
            check = StopCheck(store, [run_id], token, None, settings.cancel_poll_s)
            spec = specs[run_id]

            def on_epoch(row: dict, run_id: str = run_id, epochs: int = spec.epochs) -> None:
                store.add_epoch(run_id, token, row, now=time.time())
                log.say(run_id, _epoch_line(row, epochs, 1))

            try:
                summary = train(spec, on_epoch=on_epoch, should_stop=check, checkpoint_dir=config.run_dir(run_id))
            except Superseded as exc:
                log.say(run_id, f"stopping: {exc}")
                summary = None
            except Exception as exc:
                if _retryable(exc):
                    raise
                _fail(store, run_id, token, exc, log)
                summary = None
            if summary is not None and summary["stopped"]:
                if check.reason == "signal":
                    log.say(run_id, "stopped at a batch boundary (signal); resumes from its checkpoint")
                    for i in waiting.ids:
                        log.say(i, "the process stopped (signal) before this run's turn; it is queued again")
                    return EXIT_STOPPED
                if check.cancelled:
                    store.finish(run_id, token, RunStatus.CANCELLED, now=time.time())
                log.say(run_id, f"stopped at a batch boundary ({check.reason}) after "
                                f"{summary['epochs_completed']} epochs")
            elif summary is not None and store.complete(run_id, token, summary, now=time.time()):
                log.say(run_id, f"completed: test accuracy at best validation epoch "
                                f"{_fmt(summary['test_acc_at_best_val'])}")
            run_id = waiting.next()
    finally:
        beat.stop()
    return EXIT_OK


def _fail(store, run_id: str, token: str, exc: Exception, log: RunLogs) -> None:
    """Write a run trained in turn failed with its error (the traceback to its log)."""
    from jobs.logs import read_tail, with_tail
    from jobs.status import RunStatus

    log.say(run_id, traceback.format_exc().rstrip())
    what = f"training raised an error: {type(exc).__name__}: {exc}"
    log.say(run_id, f"error: {type(exc).__name__}: {exc}; the other runs of this process go on")
    error = with_tail(what, read_tail(config.log_path(run_id)))
    store.finish(run_id, token, RunStatus.FAILED, now=time.time(), error=error)


def run(run_id: str, token: str) -> int:
    """``run_group`` of one run."""
    return run_group([run_id], token)


def install_signal_handlers() -> dict:
    """SIGTERM and SIGINT only set the stop flag; the previous handlers, to restore."""
    _signalled.clear()
    return {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}


def run_group_guarded(run_ids: Sequence[str], token: str) -> int:
    """``run_group`` with every exception mapped to its exit code (jobs.executor.EXIT_*); the error
    line goes to every run's log (the traceback to the first's)."""
    try:
        return run_group(run_ids, token)
    except Exception as exc:  # MemoryError included
        traceback.print_exc()
        retry = _retryable(exc)
        line = f"error: {type(exc).__name__}: {exc}"
        print(line, file=sys.stderr, flush=True)
        RunLogs(run_ids).say_all(run_ids[1:], f"{line} (traceback in the log of run {run_ids[0]})")
        return EXIT_RETRYABLE if retry else EXIT_ERROR


def run_guarded(run_id: str, token: str) -> int:
    """``run_group_guarded`` of one run."""
    return run_group_guarded([run_id], token)


USAGE = ("usage: python -m jobs.worker_process RUN_ID CLAIM_TOKEN\n"
         "       python -m jobs.worker_process --group CLAIM_TOKEN RUN_ID [RUN_ID ...]\n"
         "(started by the supervisor)")


def main(argv: list[str] | None = None) -> int:
    install_signal_handlers()
    args = sys.argv[1:] if argv is None else argv
    if len(args) >= 3 and args[0] == "--group":
        return run_group_guarded(args[2:], args[1])
    if len(args) == 2 and not args[0].startswith("-"):
        return run_guarded(*args)
    print(USAGE, file=sys.stderr)
    return EXIT_ERROR


if __name__ == "__main__":
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    # Everything is committed and the checkpoint fsynced: skip the interpreter's teardown, which
    # takes seconds with torch loaded and would hold a finished run's slot.
    os._exit(code)

"""The training process of a run:

    python -m jobs.worker_process --serve         a warm run process: runs one after another
    python -m jobs.worker_process RUN_ID TOKEN    one run, then exit (a cold process)

A warm run process (the local executor keeps one in every free slot) imports torch and the library
and trains a tiny run once (``warm_up``), so that the optimiser, autograd and the embedded data set
are loaded before any run is claimed. Then it reads ``RUN_ID TOKEN`` lines on stdin and trains
each run with ``run_guarded``, its file descriptors 1 and 2 pointed at that run's log; after each
it writes ``done RUN_ID CODE`` to its result stream (what was its stdout when it started), after a
storage fault followed by the fault's text (a full disk may cut the log's last line short). It
stays for the next run only after a run that ended normally (exit code EXIT_OK) and no signal:
after an error, a stop or a signal it exits, and the executor starts a fresh one. It exits when
stdin closes (the supervisor is gone), after finishing the run in hand. Everything a process
loads stays loaded for the next run: the raw data sets (gce_core.data.load_raw's cache), the
compiled graphs of torch.compile (a later run of the same architecture and shapes compiles
nothing), CUDA's context.

Per run: the run's checkpoint in <lab home>/runs/<id>/ is resumed if there is one (one that cannot
be read, or is another spec's, is moved aside and the previous one, else epoch 0, is used, saying
so in the run's log), a device this process does not have fails the run at once, every epoch
is written to the store (the first at once, then together at most every ROWS_EVERY_S and before
each checkpoint: ``EpochRows``; a repeated epoch is ignored), a thread heartbeats the run, and training
stops at a batch boundary when its cancel flag is set (read at most every GCE_LAB_CANCEL_POLL_S),
the run is taken over, or on SIGTERM/SIGINT. The process writes the end of a run itself when it
knows it (completed, cancelled); anything else the supervisor reads from the exit code
(jobs.executor.EXIT_*), which a cold process exits with and a warm one reports. The last line of
the run's log that starts with "error: " or "storage fault: " says why (jobs.outcome reads it).
A storage fault (disk full, read-only lab home, database file unwritable) is its own exit code,
EXIT_STORAGE: the run goes back to the queue and is retried with back-off. A completed run whose
last test accuracy is at chance level gets a "warning" in its summary (jobs.outcome.chance_warning).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import threading
import time
import traceback

from sqlalchemy.exc import OperationalError

from jobs import config
from jobs.executor import (
    ERROR_PREFIX,
    EXIT_ERROR,
    EXIT_OK,
    EXIT_RETRYABLE,
    EXIT_STOPPED,
    EXIT_STORAGE,
    EXIT_SUPERSEDED,
    STORAGE_PREFIX,
)
from jobs.logs import output_to
from jobs.storage import is_storage_fault, storage_fault_text

# A run's epoch rows go to the store at most this often after its first (EpochRows): a write per
# epoch cost a tenth of a quick digits run (60 epochs of about 20 ms; docs/BENCHMARKS.md).
ROWS_EVERY_S = 0.25

# Set by the signal handler, read by StopCheck: handlers only set flags.
_signalled: list[int] = []


def _on_signal(signum, _frame) -> None:
    _signalled.append(signum)


def _tell(*parts, err: bool = False) -> None:
    """print, flushed; a log that cannot be written (full disk) never ends a run by itself."""
    with contextlib.suppress(OSError, ValueError):
        print(*parts, file=sys.stderr if err else sys.stdout, flush=True)


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
                _tell(f"heartbeat failed: {exc}", err=True)

    def stop(self) -> None:
        self._done.set()


class StopCheck:
    """The trainer's should_stop: True on a signal, when the run's cancel flag is set, or when it
    is no longer this process's. The database is read at most every ``poll_s`` seconds.
    ``reason`` says why it stopped: "signal", "cancel" or "superseded"."""

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
            _tell(f"could not read the cancel flag: {exc}", err=True)
            return None
        if not mine:
            return "superseded"
        return "cancel" if cancel else None


def _fmt(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def _loss(x) -> str:
    return "-" if x is None else f"{x:.4f}"


def _epoch_line(row: dict, epochs: int) -> str:
    return (f"epoch {row['epoch']}/{epochs}: train loss {_loss(row.get('train_loss'))}, "
            f"val {_fmt(row['val_acc'])}, test {_fmt(row['test_acc'])}, {row['seconds']:.2f} s")


_stores: dict[str, object] = {}


class EpochRows:
    """A run's epoch rows on their way to the store: the first at once (the first curve point),
    then together, at most every ``every_s``; ``flush()`` writes what is held (the trainer calls
    it before each checkpoint, so no checkpoint holds an epoch the store lacks: a crashed run
    resumes from its checkpoint and trains the held epochs again)."""

    def __init__(self, store, run_id: str, token: str, every_s: float = ROWS_EVERY_S, clock=time.monotonic):
        self.store, self.run_id, self.token, self.every_s, self.clock = store, run_id, token, every_s, clock
        self.held: list[dict] = []
        self.written_at: float | None = None

    def add(self, row: dict) -> None:
        self.held.append(row)
        if self.written_at is None or self.clock() - self.written_at >= self.every_s:
            self.flush()

    def flush(self) -> None:
        if self.held:
            self.store.add_epochs(self.run_id, self.token, self.held, now=time.time())
            self.held = []
        self.written_at = self.clock()


def _store():
    """The store at config.db_url(), opened once per process (a warm process keeps it)."""
    from jobs.store import Store

    url = config.db_url()
    if url not in _stores:
        _stores[url] = Store(url)
    return _stores[url]


def device_problem(device: str) -> str | None:
    """Why this process cannot train on ``device`` (a spec's: auto, cpu, cuda, cuda:N), or None."""
    if not device.startswith("cuda"):
        return None
    import torch

    n = torch.cuda.device_count() if torch.cuda.is_available() else 0
    index = int(device[5:]) if device.startswith("cuda:") else 0
    if index < n:
        return None
    sees = "no GPU" if n == 0 else f"{n} GPU{'s' if n > 1 else ''} (cuda:0{f' to cuda:{n - 1}' if n > 1 else ''})"
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    where = f", CUDA_VISIBLE_DEVICES={visible!r}" if visible is not None else ""
    return (f"device {device} is not on this machine: its run process sees {sees}{where}; submit the run "
            f"with device auto (the slot's GPU if it has one) or cpu")


def run(run_id: str, token: str) -> int:
    """Train the run claimed with ``token`` in this process; the exit code (jobs.executor.EXIT_*)."""
    from gce_core.checkpoint import load_checkpoint
    from gce_core.train import train
    from jobs.outcome import chance_warning
    from jobs.status import RunStatus
    from jobs.store import Superseded

    settings = config.SupervisorSettings.from_env()
    store = _store()
    rec = store.get(run_id)
    if rec is None or rec.claim_token != token or rec.status != RunStatus.RUNNING:
        print(f"run {run_id} is not this process's to run any more; exiting", flush=True)
        return EXIT_SUPERSEDED
    store.set_pid(run_id, token, os.getpid())
    if rec.cancel_requested:
        store.finish(run_id, token, RunStatus.CANCELLED, now=time.time())
        print(f"run {run_id} was cancelled before it started", flush=True)
        return EXIT_OK
    folder = config.run_dir(run_id)
    print(f"run {run_id} ({rec.name}), attempt {rec.attempts}, pid {os.getpid()}; checkpoints in {folder}",
          flush=True)
    problem = device_problem(rec.spec.device)
    if problem is not None:
        raise ValueError(problem)
    # A checkpoint that cannot be read, or is another spec's (this folder is this run's alone), is
    # moved aside here, saying so in the run's log; training then resumes from the previous good
    # one, or from epoch 0 (the store keeps the epochs already stored and ignores their repeats).
    load_checkpoint(folder, rec.spec.to_json(), foreign="set_aside", say=lambda line: _tell(line, err=True))
    beat = Heartbeat(store, run_id, token, settings.heartbeat_s)
    beat.start()
    check = StopCheck(store, run_id, token, beat, settings.cancel_poll_s)
    epochs = rec.spec.epochs

    rows = EpochRows(store, run_id, token)

    def on_epoch(row: dict) -> None:
        rows.add(row)
        print(_epoch_line(row, epochs), flush=True)

    try:
        summary = train(rec.spec, on_epoch=on_epoch, should_stop=check, checkpoint_dir=folder,
                        before_checkpoint=rows.flush)
        rows.flush()  # a stopped run's epochs since its last checkpoint
    except Superseded as exc:
        print(f"stopping: {exc}", flush=True)
        return EXIT_SUPERSEDED
    except Exception:
        with contextlib.suppress(Exception):  # the error below is the one to report
            rows.flush()  # the epochs before the error stay to be seen
        raise
    finally:
        beat.stop()
    if summary["stopped"]:
        if check.reason == "cancel":
            store.finish(run_id, token, RunStatus.CANCELLED, now=time.time())
        print(f"stopped at a batch boundary ({check.reason}) after {summary['epochs_completed']} epochs",
              flush=True)
        return {"cancel": EXIT_OK, "superseded": EXIT_SUPERSEDED}.get(check.reason, EXIT_STOPPED)
    warning = chance_warning(rec.spec.num_classes, summary)
    if warning is not None:
        summary = {**summary, "warning": warning}
    if not store.complete(run_id, token, summary, now=time.time()):
        return EXIT_SUPERSEDED
    print(f"completed: test accuracy at best validation epoch {_fmt(summary['test_acc_at_best_val'])}",
          flush=True)
    if warning is not None:
        print(f"warning: {warning}", flush=True)
    return EXIT_OK


def _retryable(exc: BaseException) -> bool:
    """Out of memory (torch.OutOfMemoryError on CUDA) or the database out of reach: resumable."""
    return isinstance(exc, (MemoryError, OperationalError)) or type(exc).__name__ == "OutOfMemoryError"


def run_guarded(run_id: str, token: str, said: list[str] | None = None) -> int:
    """``run`` with every exception mapped to its exit code (jobs.executor.EXIT_*); the traceback
    and a last line saying why ("error: ..." or "storage fault: ...", jobs.outcome reads it) go to
    stdout/stderr (the run's log), as far as it can be written. A storage fault's text is also
    appended to ``said``: on a full disk the log's last line may be cut short."""
    try:
        return run(run_id, token)
    except Exception as exc:  # MemoryError included
        with contextlib.suppress(OSError, ValueError):
            traceback.print_exc()
        if is_storage_fault(exc):
            text = storage_fault_text(exc)
            if said is not None:
                said.append(text)
            _tell(STORAGE_PREFIX + text, err=True)
            return EXIT_STORAGE
        _tell(f"{ERROR_PREFIX}{type(exc).__name__}: {exc}", err=True)
        return EXIT_RETRYABLE if _retryable(exc) else EXIT_ERROR


def install_signal_handlers() -> dict:
    """SIGTERM and SIGINT only set the stop flag; the previous handlers, to restore."""
    _signalled.clear()
    return {sig: signal.signal(sig, _on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}


def warm_up() -> None:
    """Load what every run needs before the first one is claimed: torch and the library, the
    optimiser (torch.optim imports torch._dynamo on first use, ~1 s), autograd, the embedded data
    set, by training a tiny run (no store, no checkpoint). On the CPU only: a GPU run pays its
    CUDA start in its own run."""
    from gce_core.spec import from_preset
    from gce_core.train import train

    train(from_preset("quick", "digits", epochs=1, train_subset=64, device="cpu"))


def serve(commands=None, results=None) -> int:
    """The warm run process's loop (see the module note). ``commands``: where run lines come from
    (default stdin); ``results``: where ``ready`` and ``done RUN_ID CODE`` lines go (default: this
    process's stdout as it was at the start; from then on fd 1 goes where fd 2 goes, the
    process's own log, and both to a run's log while it trains)."""
    commands = sys.stdin if commands is None else commands
    if results is None:
        results = os.fdopen(os.dup(1), "w", buffering=1)
        os.dup2(2, 1)
    started = time.perf_counter()
    warm_up()
    print(f"warm run process {os.getpid()}: ready in {time.perf_counter() - started:.2f} s", flush=True)
    _say(results, "ready")
    for line in iter(commands.readline, ""):
        parts = line.split()
        if len(parts) != 2:
            _say(results, f"error unreadable command {line.strip()!r}")
            continue
        run_id, token = parts
        said: list[str] = []
        try:
            with output_to(config.log_path(run_id)):
                code = run_guarded(run_id, token, said)
        except OSError as exc:  # the run's log cannot be opened: its folder is full or read-only
            if not is_storage_fault(exc):
                raise
            said.append(storage_fault_text(exc))
            _tell(f"run {run_id}: {STORAGE_PREFIX}{said[-1]}", err=True)
            code = EXIT_STORAGE
        # the pipe, not the disk, carries what went wrong: a full disk cuts the log's last line short
        note = " " + " ".join(said[-1].split()) if said else ""
        if not _say(results, f"done {run_id} {code}{note}") or code != EXIT_OK or _signalled:
            return code
    return EXIT_OK


def _say(results, line: str) -> bool:
    """Write a line to the result stream; False if nobody reads it any more."""
    try:
        results.write(line + "\n")
        results.flush()
        return True
    except (BrokenPipeError, ValueError, OSError):
        return False


USAGE = ("usage: python -m jobs.worker_process --serve\n"
         "       python -m jobs.worker_process RUN_ID CLAIM_TOKEN\n"
         "(started by the supervisor)")


def main(argv: list[str] | None = None) -> int:
    install_signal_handlers()
    args = sys.argv[1:] if argv is None else argv
    if args == ["--serve"]:
        return serve()
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

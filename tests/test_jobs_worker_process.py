"""The run process: its stop check (cheap: the database at most every poll_s; every reason), one run
from start to end against a fake store, the warm process's serve loop, and its command line."""

import io
import os
import time
from types import SimpleNamespace

import pytest

from gce_core.spec import parse_spec
from jobs import config, worker_process
from jobs.config import SupervisorSettings
from jobs.status import RunStatus
from jobs.worker_process import (
    EXIT_ERROR,
    EXIT_OK,
    EXIT_STOPPED,
    EXIT_STORAGE,
    EXIT_SUPERSEDED,
    EpochRows,
    Heartbeat,
    StopCheck,
)


class FakeStore:
    """control() answers ``mine`` and ``cancel``; the writes of a run process are recorded."""

    def __init__(self, record=None):
        self.reads = 0
        self.mine, self.cancel = True, False
        self.record = record
        self.finished: dict[str, RunStatus] = {}
        self.completed: list[str] = []
        self.epochs: list[int] = []
        self.writes: list[list[int]] = []  # the epochs of each add_epochs
        self.beats = 0

    def control(self, run_id, token):
        self.reads += 1
        return self.mine, self.cancel

    def get(self, run_id):
        return self.record if self.record is not None and self.record.id == run_id else None

    def set_pid(self, run_id, token, pid):
        return True

    def heartbeat(self, run_id, token, *, now):
        self.beats += 1
        return self.mine

    def add_epochs(self, run_id, token, rows, *, now):
        self.writes.append([row["epoch"] for row in rows])
        self.epochs += self.writes[-1]
        return len(rows)

    def complete(self, run_id, token, summary, *, now):
        self.completed.append(run_id)
        return True

    def finish(self, run_id, token, status, *, now, error=None, crashed=False):
        self.finished[run_id] = status
        return True


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.fixture
def setup():
    store, clock = FakeStore(), Clock()
    return store, clock, StopCheck(store, "r", "tok", None, poll_s=0.5, clock=clock)


def test_the_cancel_flag_is_read_at_most_every_poll_interval(setup):
    store, clock, check = setup
    for _ in range(100):  # a hundred batches within 0.4 s
        assert not check()
        clock.t += 0.004
    assert store.reads == 1
    clock.t += 0.2
    store.cancel = True
    assert check() and check.reason == "cancel" and store.reads == 2
    assert check() and store.reads == 2  # once stopped, it stays stopped without reading again


def test_a_lost_claim_stops_the_run(setup):
    store, _clock, check = setup
    store.mine = False
    assert check() and check.reason == "superseded"


def test_a_signal_stops_at_once_without_reading(setup, monkeypatch):
    store, _clock, check = setup
    monkeypatch.setattr(worker_process, "_signalled", [15])
    assert check() and check.reason == "signal" and store.reads == 0


def test_a_database_hiccup_does_not_stop_training(setup, capsys):
    store, _clock, check = setup

    def broken(*_):
        raise OSError("disk busy")

    store.control = broken
    assert not check()
    assert "could not read the cancel flag: disk busy" in capsys.readouterr().err


def test_the_heartbeat_sets_lost_once_the_run_is_not_this_processes():
    store = FakeStore()
    beat = Heartbeat(store, "r", "tok", 0.01)
    beat.start()
    deadline = time.monotonic() + 5
    while store.beats < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.beats >= 2 and not beat.lost.is_set()
    store.mine = False
    beat.join(5)
    assert beat.lost.is_set() and not beat.is_alive()


def test_epoch_rows_write_the_first_at_once_then_together_at_most_every_period():
    store, clock = FakeStore(), Clock()
    rows = EpochRows(store, "r", "tok", every_s=0.25, clock=clock)
    rows.add({"epoch": 1})
    clock.t += 0.1
    rows.add({"epoch": 2})
    clock.t += 0.1
    rows.add({"epoch": 3})
    assert store.writes == [[1]]  # 2 and 3 are held: 0.2 s since the last write
    clock.t += 0.1
    rows.add({"epoch": 4})
    assert store.writes == [[1], [2, 3, 4]]
    rows.add({"epoch": 5})
    rows.flush()  # what the trainer calls before a checkpoint
    rows.flush()  # nothing held: nothing written
    assert store.writes == [[1], [2, 3, 4], [5]] and store.epochs == [1, 2, 3, 4, 5]


# --- one run, with a fake trainer -----------------------------------------------------------------
def record(run_id="r", cancel=False, **spec):
    return SimpleNamespace(id=run_id, name=run_id, claim_token="tok", status=RunStatus.RUNNING,
                           cancel_requested=cancel, spec=parse_spec(dict(epochs=2, **spec)), attempts=1)


@pytest.fixture
def fake_run(lab_home, monkeypatch):
    """run() against a FakeStore, with gce_core.train.train replaced by ``behaviour(should_stop)``."""
    import gce_core.train

    monkeypatch.setenv(SupervisorSettings.ENV["heartbeat_s"], "60")

    def go(store, behaviour):
        def fake_train(spec, on_epoch, should_stop, checkpoint_dir, before_checkpoint):
            return behaviour(on_epoch, should_stop)

        monkeypatch.setattr(gce_core.train, "train", fake_train)
        monkeypatch.setattr(worker_process, "_store", lambda: store)
        return worker_process.run_guarded("r", "tok")

    return go


def completes(on_epoch, _stop):
    for e in (1, 2):
        on_epoch(dict(epoch=e, train_loss=0.5, val_acc=0.5, test_acc=0.5, seconds=0.1))
    return {"stopped": False, "epochs_completed": 2, "test_acc_at_best_val": 0.5}


def test_a_run_that_completes_writes_its_epochs_and_its_end(fake_run, capsys):
    store = FakeStore(record())
    assert fake_run(store, completes) == EXIT_OK
    assert store.epochs == [1, 2] and store.completed == ["r"]
    out = capsys.readouterr().out
    assert "epoch 2/2: train loss 0.5000, val 50.00%, test 50.00%" in out and "completed:" in out


@pytest.mark.parametrize("store_state, code, written", [
    ((True, True), EXIT_OK, RunStatus.CANCELLED),  # cancelled: the process writes it
    ((False, False), EXIT_SUPERSEDED, None),  # taken over: writes nothing
])  # fmt: skip
def test_a_run_stopped_by_its_flags_ends_as_they_say(fake_run, store_state, code, written):
    store = FakeStore(record())

    def stops(on_epoch, should_stop):
        store.mine, store.cancel = store_state
        assert should_stop()
        return {"stopped": True, "epochs_completed": 0}

    assert fake_run(store, stops) == code
    assert store.finished.get("r") == written and store.completed == []


def test_a_signal_stops_the_run_for_a_resume(fake_run, monkeypatch):
    store = FakeStore(record())

    def signalled(on_epoch, should_stop):
        monkeypatch.setattr(worker_process, "_signalled", [15])
        assert should_stop()
        return {"stopped": True, "epochs_completed": 1}

    assert fake_run(store, signalled) == EXIT_STOPPED
    assert store.finished == {} and store.completed == []


def test_a_run_cancelled_before_it_started_never_trains(fake_run):
    store = FakeStore(record(cancel=True))
    assert fake_run(store, lambda *_: pytest.fail("trained")) == EXIT_OK
    assert store.finished == {"r": RunStatus.CANCELLED}


def test_an_error_is_exit_code_1_with_the_traceback(fake_run, capsys):
    def raises(*_):
        raise ValueError("no such thing")

    assert fake_run(FakeStore(record()), raises) == EXIT_ERROR
    err = capsys.readouterr().err
    assert "Traceback" in err and "error: ValueError: no such thing" in err


def test_an_error_after_some_epochs_keeps_the_epochs_held_back(fake_run, capsys):
    def diverges(on_epoch, _stop):
        on_epoch(dict(epoch=1, train_loss=0.5, val_acc=0.5, test_acc=0.5, seconds=0.1))
        on_epoch(dict(epoch=2, train_loss=0.5, val_acc=0.5, test_acc=0.5, seconds=0.1))  # held
        raise ValueError("diverged at epoch 3")

    store = FakeStore(record())
    assert fake_run(store, diverges) == EXIT_ERROR
    assert store.writes == [[1], [2]]
    assert "error: ValueError: diverged at epoch 3" in capsys.readouterr().err


def test_a_run_that_is_not_ours_is_not_trained(fake_run):
    assert fake_run(FakeStore(None), lambda *_: pytest.fail("trained")) == EXIT_SUPERSEDED


# --- the warm process's loop ------------------------------------------------------------------------
def test_serve_trains_runs_in_turn_each_into_its_own_log_and_reports_each(lab_home, monkeypatch):
    codes = {"a": EXIT_OK, "b": EXIT_OK}

    def fake_run(run_id, token, said=None):
        os.write(1, f"training {run_id} with {token}\n".encode())  # what the run's process prints
        return codes[run_id]

    monkeypatch.setattr(worker_process, "warm_up", lambda: None)
    monkeypatch.setattr(worker_process, "run_guarded", fake_run)
    results = io.StringIO()
    assert worker_process.serve(io.StringIO("a t1\nnonsense\nb t2\n"), results) == EXIT_OK
    assert results.getvalue().splitlines() == ["ready", "done a 0", "error unreadable command 'nonsense'",
                                               "done b 0"]
    assert "training a with t1" in config.log_path("a").read_text()
    assert "training b with t2" in config.log_path("b").read_text()
    assert "training a" not in config.log_path("b").read_text()


@pytest.mark.parametrize("code", [EXIT_ERROR, EXIT_STOPPED, EXIT_SUPERSEDED])
def test_serve_exits_after_a_run_that_did_not_end_normally(lab_home, monkeypatch, code):
    monkeypatch.setattr(worker_process, "warm_up", lambda: None)
    monkeypatch.setattr(worker_process, "run_guarded", lambda run_id, token, said=None: code)
    results = io.StringIO()
    assert worker_process.serve(io.StringIO("a t1\nb t2\n"), results) == code
    assert results.getvalue().splitlines() == ["ready", f"done a {code}"]  # b is never taken


def test_serve_reports_a_storage_fault_with_its_text_on_the_result_pipe(lab_home, monkeypatch):
    def full_disk(run_id, token, said=None):
        said.append("No space left on device (/lab/runs/a/checkpoint.tmp) [errno 28 ENOSPC]")
        return EXIT_STORAGE

    monkeypatch.setattr(worker_process, "warm_up", lambda: None)
    monkeypatch.setattr(worker_process, "run_guarded", full_disk)
    results = io.StringIO()
    assert worker_process.serve(io.StringIO("a t1\nb t2\n"), results) == EXIT_STORAGE
    assert results.getvalue().splitlines() == [
        "ready", f"done a {EXIT_STORAGE} No space left on device (/lab/runs/a/checkpoint.tmp) [errno 28 ENOSPC]"]


def test_serve_exits_after_its_run_once_signalled(lab_home, monkeypatch):
    def signalled_run(run_id, token, said=None):
        monkeypatch.setattr(worker_process, "_signalled", [15])
        return EXIT_OK

    monkeypatch.setattr(worker_process, "warm_up", lambda: None)
    monkeypatch.setattr(worker_process, "run_guarded", signalled_run)
    results = io.StringIO()
    assert worker_process.serve(io.StringIO("a t1\nb t2\n"), results) == EXIT_OK
    assert results.getvalue().splitlines() == ["ready", "done a 0"]


def test_the_command_line_serves_or_takes_one_run(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(worker_process, "run_guarded", lambda run_id, token, said=None: calls.append((run_id, token)) or 0)
    monkeypatch.setattr(worker_process, "serve", lambda: calls.append("serve") or 0)
    monkeypatch.setattr(worker_process, "install_signal_handlers", lambda: {})
    assert worker_process.main(["r1", "tok"]) == 0
    assert worker_process.main(["--serve"]) == 0
    assert calls == [("r1", "tok"), "serve"]
    for bad in (["r1"], ["--group", "tok", "r1"], ["r1", "tok", "r2"]):
        assert worker_process.main(bad) == EXIT_ERROR
    assert "python -m jobs.worker_process --serve" in capsys.readouterr().err


def test_an_epoch_line_with_missing_numbers_says_so():
    row = dict(epoch=3, train_loss=None, val_acc=None, test_acc=0.5, seconds=0.25)
    assert worker_process._epoch_line(row, 10) == "epoch 3/10: train loss -, val -, test 50.00%, 0.25 s"

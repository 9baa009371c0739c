"""The training process's stop check: cheap (the database at most every poll_s), every reason, and
for fused runs which run stopped them; runs in turn (each ends on its own); its command line."""

import time
from types import SimpleNamespace

import pytest

from jobs import config, worker_process
from jobs.config import SupervisorSettings
from jobs.status import RunStatus
from jobs.worker_process import Heartbeat, RunLogs, StopCheck, WaitingRuns, train_in_turn


class FakeStore:
    """control() of every run: ``mine`` and ``cancel`` for all, or per run in ``state``."""

    def __init__(self):
        self.reads = 0
        self.mine, self.cancel = True, False
        self.state: dict[str, tuple[bool, bool]] = {}

    def controls(self, run_ids, token):
        self.reads += 1
        return {i: self.state.get(i, (self.mine, self.cancel)) for i in run_ids}


class Clock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t


@pytest.fixture
def setup():
    store, clock = FakeStore(), Clock()
    return store, clock, StopCheck(store, ["r"], "tok", None, poll_s=0.5, clock=clock)


def test_the_cancel_flag_is_read_at_most_every_poll_interval(setup):
    store, clock, check = setup
    for _ in range(100):  # a hundred batches within 0.4 s
        assert not check()
        clock.t += 0.004
    assert store.reads == 1
    clock.t += 0.2
    store.cancel = True
    assert check() and check.reason == "cancel" and store.reads == 2 and check.cancelled == ["r"]
    assert check() and store.reads == 2  # once stopped, it stays stopped without reading again


def test_a_lost_claim_stops_the_run(setup):
    store, _clock, check = setup
    store.mine = False
    assert check() and check.reason == "superseded" and check.lost == ["r"]


def test_a_signal_stops_at_once_without_reading(setup, monkeypatch):
    store, _clock, check = setup
    monkeypatch.setattr(worker_process, "_signalled", [15])
    assert check() and check.reason == "signal" and store.reads == 0


def test_a_database_hiccup_does_not_stop_training(setup, capsys):
    store, _clock, check = setup

    def broken(*_):
        raise OSError("disk busy")

    store.controls = broken
    assert not check()
    assert "could not read the cancel flag: disk busy" in capsys.readouterr().err


def test_a_fused_process_stops_when_any_of_its_runs_is_cancelled_and_names_it():
    store, clock = FakeStore(), Clock()
    check = StopCheck(store, ["a", "b", "c"], "tok", None, poll_s=0.5, clock=clock)
    assert not check() and store.reads == 1  # one read for all three runs
    clock.t += 1.0
    store.state = {"b": (True, True)}
    assert check() and check.reason == "cancel"
    assert (check.cancelled, check.lost) == (["b"], [])


def test_a_fused_process_stops_when_one_of_its_runs_is_taken_over():
    store, clock = FakeStore(), Clock()
    check = StopCheck(store, ["a", "b"], "tok", None, poll_s=0.5, clock=clock)
    store.state = {"a": (False, False)}
    assert check() and check.reason == "superseded"
    assert (check.cancelled, check.lost) == ([], ["a"])


def test_the_command_line_takes_one_run_or_a_group(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(worker_process, "run_group_guarded",
                        lambda ids, token: calls.append((list(ids), token)) or 0)
    monkeypatch.setattr(worker_process, "install_signal_handlers", lambda: {})
    assert worker_process.main(["r1", "tok"]) == 0
    assert worker_process.main(["--group", "tok", "r1", "r2", "r3"]) == 0
    assert calls == [(["r1"], "tok"), (["r1", "r2", "r3"], "tok")]
    for bad in (["r1"], ["--group", "tok"], ["r1", "tok", "r2"]):
        assert worker_process.main(bad) == worker_process.EXIT_ERROR
    assert "--group CLAIM_TOKEN RUN_ID [RUN_ID ...]" in capsys.readouterr().err


# --- runs in turn (a group's compile runs in one process) -----------------------------------------
class InTurnStore(FakeStore):
    """FakeStore plus the writes of a process training runs in turn, recorded."""

    def __init__(self, records=()):
        super().__init__()
        self.records = {r.id: r for r in records}
        self.finished: dict[str, tuple[RunStatus, str | None]] = {}
        self.completed: list[str] = []

    def finish(self, run_id, token, status, *, now, error=None, crashed=False):
        self.finished[run_id] = (status, error)
        return True

    def complete(self, run_id, token, summary, *, now):
        self.completed.append(run_id)
        return True

    def get_many(self, run_ids):
        return {i: self.records[i] for i in run_ids if i in self.records}

    def set_pid(self, run_id, token, pid):
        return True

    def add_epoch(self, run_id, token, row, *, now):
        return True

    def heartbeat_many(self, run_ids, token, *, now):
        return len(run_ids)


def test_a_cancelled_waiting_run_ends_at_once_and_one_taken_over_is_dropped(lab_home):
    records = [record(i, "cce") for i in "bcd"]
    store = InTurnStore(records)
    waiting = WaitingRuns(store, ["b", "c", "d"], "tok", RunLogs(["a", "b", "c", "d"]))
    waiting.check()
    assert waiting.ids == ["b", "c", "d"] and store.finished == {}
    store.state = {"c": (True, True), "d": (False, False)}
    waiting.check()
    assert waiting.ids == ["b"] and store.finished == {"c": (RunStatus.CANCELLED, None)}  # d: not written
    assert "was cancelled while it waited for its turn" in config.log_path("c").read_text()
    assert "it will not train here" in config.log_path("d").read_text()
    assert waiting.next() == "b" and waiting.next() is None


def test_next_skips_a_run_cancelled_since_the_last_check(lab_home):
    records = [record("b", "cce"), record("c", "lq")]
    records[0].cancel_requested = True
    store = InTurnStore(records)
    waiting = WaitingRuns(store, ["b", "c"], "tok", RunLogs(["a", "b", "c"]))
    assert waiting.next() == "c" and store.finished == {"b": (RunStatus.CANCELLED, None)}


def test_the_heartbeat_thread_checks_the_waiting_runs_after_each_beat():
    store, beats = InTurnStore(), []
    beat = Heartbeat(store, ["a", "b"], "tok", 0.01, on_beat=lambda: beats.append(1))
    beat.start()
    deadline = time.monotonic() + 5
    while len(beats) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    beat.stop()
    assert len(beats) >= 3


def record(run_id, loss):
    spec = SimpleNamespace(epochs=1, compile=True, loss=loss)
    return SimpleNamespace(id=run_id, name=run_id, claim_token="tok", status=RunStatus.RUNNING,
                           cancel_requested=False, spec=spec, attempts=1, epochs_done=0)


def test_a_run_in_turn_that_raises_fails_alone_and_the_next_one_trains(lab_home, monkeypatch):
    import gce_core.train

    trained = []

    def fake_train(spec, on_epoch, should_stop, checkpoint_dir):
        trained.append(spec.loss)
        if spec.loss == "bad":
            raise ValueError("no such thing")
        on_epoch(dict(epoch=1, train_loss=0.5, val_acc=0.5, test_acc=0.5, seconds=0.1))
        return {"stopped": False, "epochs_completed": 1, "test_acc_at_best_val": 0.5}

    monkeypatch.setattr(gce_core.train, "train", fake_train)
    records = [record("a", "cce"), record("b", "bad"), record("c", "lq")]
    store = InTurnStore(records)
    settings = SupervisorSettings(heartbeat_s=60.0)
    code = train_in_turn(store, records, "tok", RunLogs(["a", "b", "c"]), settings)
    assert code == worker_process.EXIT_OK
    assert trained == ["cce", "bad", "lq"] and store.completed == ["a", "c"]
    status, error = store.finished["b"]
    assert status == RunStatus.FAILED and "training raised an error: ValueError: no such thing" in error
    log_b = config.log_path("b").read_text()
    assert "Traceback" in log_b and "the other runs of this process go on" in log_b
    assert "from run a on: what torch.compile has compiled here is reused" in config.log_path("c").read_text()


def test_a_signal_stops_runs_in_turn_and_the_waiting_ones_go_back_to_the_queue(lab_home, monkeypatch):
    import gce_core.train

    trained = []

    def fake_train(spec, on_epoch, should_stop, checkpoint_dir):
        trained.append(spec.loss)
        monkeypatch.setattr(worker_process, "_signalled", [15])
        assert should_stop()
        return {"stopped": True, "epochs_completed": 0}

    monkeypatch.setattr(gce_core.train, "train", fake_train)
    records = [record("a", "cce"), record("b", "lq"), record("c", "mae")]
    store = InTurnStore(records)
    code = train_in_turn(store, records, "tok", RunLogs(["a", "b", "c"]), SupervisorSettings(heartbeat_s=60.0))
    assert code == worker_process.EXIT_STOPPED  # the supervisor queues every run still running
    assert trained == ["cce"] and store.completed == [] and store.finished == {}
    assert "before this run's turn; it is queued again" in config.log_path("c").read_text()

"""The training process's stop check: cheap (the database at most every poll_s), every reason, and
for fused runs which run stopped them; its command line."""

import pytest

from jobs import worker_process
from jobs.worker_process import StopCheck


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


def test_the_command_line_takes_one_run_or_fused_runs(monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(worker_process, "run_group_guarded",
                        lambda ids, token: calls.append((list(ids), token)) or 0)
    monkeypatch.setattr(worker_process, "install_signal_handlers", lambda: {})
    assert worker_process.main(["r1", "tok"]) == 0
    assert worker_process.main(["--fused", "tok", "r1", "r2", "r3"]) == 0
    assert calls == [(["r1"], "tok"), (["r1", "r2", "r3"], "tok")]
    for bad in (["r1"], ["--fused", "tok"], ["r1", "tok", "r2"]):
        assert worker_process.main(bad) == worker_process.EXIT_ERROR
    assert "--fused CLAIM_TOKEN RUN_ID [RUN_ID ...]" in capsys.readouterr().err

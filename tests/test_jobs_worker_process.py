"""The training process's stop check: cheap (the database at most every poll_s), and every reason."""

import pytest

from jobs import worker_process
from jobs.worker_process import StopCheck


class FakeStore:
    def __init__(self):
        self.reads = 0
        self.mine, self.cancel = True, False

    def control(self, run_id, token):
        self.reads += 1
        return self.mine, self.cancel


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

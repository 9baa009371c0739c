"""The supervisor's decisions, driven by tick(now) with a fake executor: no processes, no sleeps."""

import subprocess

import pytest

from gce_core.spec import parse_spec
from jobs.config import SupervisorSettings
from jobs.executor import EXIT_ERROR, EXIT_OK, EXIT_STOPPED, ExitInfo, Slot
from jobs.outcome import decide
from jobs.registry import WorkerInfo
from jobs.status import RunStatus
from jobs.store import NewRun, Store, new_run_id
from jobs.supervisor import Supervisor

SPEC = parse_spec(dict(dataset="digits", model="mlp", train_subset=200, epochs=4, batch_size=64))
T = 1_000_000.0
HOST = "testhost"
SETTINGS = SupervisorSettings(max_retries=2, heartbeat_s=1.0, stale_after_s=30.0, cancel_grace_s=5.0,
                              kill_grace_s=5.0, recover_every_s=0.0)


class FakeHandle:
    def __init__(self, pid):
        self.pid = pid
        self.exit: ExitInfo | None = None
        self.signals: list[str] = []

    def poll(self):
        return self.exit

    def terminate(self):
        self.signals.append("TERM")

    def kill(self):
        self.signals.append("KILL")


class FakeExecutor:
    name = "fake"
    host = HOST

    def __init__(self):
        self.started: list[tuple[str, str, Slot, dict, FakeHandle]] = []
        self.alive: dict[str, FakeHandle] = {}  # what attach() finds
        self.notes: list[tuple[str, str]] = []
        self.prepared: list[int] = []  # slot indexes, one per prepare()
        self.unready: set[int] = set()  # slots whose prepare() says not ready
        self.closed = False

    def start(self, run, token, slot, env):
        handle = FakeHandle(5000 + len(self.started))
        self.started.append((run.id, token, slot, dict(env), handle))
        return handle

    def prepare(self, slot, env):
        self.prepared.append(slot.index)
        return slot.index not in self.unready

    def close(self):
        self.closed = True

    def attach(self, run):
        return self.alive.get(run.id)

    def log_tail(self, run_id):
        return f"Traceback ...\nthe tail of {run_id}"

    def note(self, run_id, message):
        self.notes.append((run_id, message))

    def handle(self, run_id) -> FakeHandle:
        return [s[4] for s in self.started if s[0] == run_id][-1]


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    yield s
    s.close()


@pytest.fixture
def fake():
    return FakeExecutor()


def make_sup(store, fake, slots=2, **settings):
    s = SupervisorSettings(**{**SETTINGS.__dict__, **settings})
    return Supervisor(store, fake, [Slot(i, "cpu") for i in range(slots)], s, worker_id="me")


def queue(store, n=1, now=T - 100):
    new = [NewRun(new_run_id(), SPEC, "local", None) for _ in range(n)]
    store.insert_runs(new, now=now)
    return [r.id for r in new]


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_each_slot_gets_one_run_in_queue_order(store, fake):
    a, b, c = queue(store, 3)
    sup = make_sup(store, fake)
    report = sup.tick(T)
    assert report.started == [a, b] and set(sup.active) == {a, b}
    assert [s[2].index for s in fake.started] == [0, 1]
    assert fake.started[0][3]["GCE_LAB_HEARTBEAT_S"] == "1.0"
    assert store.get(a).pid == fake.handle(a).pid and store.get(a).worker_id == "me"
    assert sup.tick(T + 1).started == []
    # the process writes completed itself, then exits 0: the slot is reused
    store.complete(a, store.get(a).claim_token, {"last_test_acc": 0.9}, now=T + 2)
    fake.handle(a).exit = ExitInfo(EXIT_OK)
    report = sup.tick(T + 2)
    assert report.ended == [(a, RunStatus.COMPLETED)] and report.started == [c]
    assert not sup.tick(T + 3).queue_empty  # no free slot: the queue was not looked at
    for run_id in (b, c):
        store.complete(run_id, store.get(run_id).claim_token, {}, now=T + 4)
        fake.handle(run_id).exit = ExitInfo(EXIT_OK)
    report = sup.tick(T + 4)
    assert len(report.ended) == 2 and report.queue_empty and not sup.active


def test_a_crash_is_resumed_until_the_retry_limit_then_the_run_fails(store, fake):
    (run_id,) = queue(store)
    sup = make_sup(store, fake, slots=1)
    sup.tick(T)
    for crash in (1, 2):
        fake.handle(run_id).exit = ExitInfo(-9)
        report = sup.tick(T + crash)
        assert report.ended == [(run_id, RunStatus.INTERRUPTED)]
        assert report.started == [run_id]  # resumed in the same step
        run = store.get(run_id)
        assert run.status == RunStatus.RUNNING and run.crashes == crash and run.attempts == crash + 1
        assert "killed by SIGKILL (signal 9)" in run.error and f"retry {crash} of 2" in run.error
        assert f"the tail of {run_id}" in run.error
    fake.handle(run_id).exit = ExitInfo(-11)
    report = sup.tick(T + 3)
    assert report.ended == [(run_id, RunStatus.FAILED)] and report.started == []
    run = store.get(run_id)
    assert run.status == RunStatus.FAILED and run.crashes == 3 and run.attempts == 3
    assert "SIGSEGV (signal 11)" in run.error and "gave up after 3 crashes" in run.error
    assert "GCE_LAB_MAX_RETRIES=2" in run.error and run.finished_at.timestamp() == T + 3
    assert any("-> failed" in note for _, note in fake.notes)


def test_an_error_in_training_fails_the_run_at_once_with_its_log(store, fake):
    (run_id,) = queue(store)
    sup = make_sup(store, fake, slots=1)
    sup.tick(T)
    fake.handle(run_id).exit = ExitInfo(EXIT_ERROR)
    assert sup.tick(T + 1).ended == [(run_id, RunStatus.FAILED)]
    run = store.get(run_id)
    assert run.crashes == 0 and run.attempts == 1
    assert run.error.startswith("its process training raised an error (exit code 1)")
    assert f"--- last lines of its log ---\nTraceback ...\nthe tail of {run_id}" in run.error


def test_an_unhonoured_cancel_gets_sigterm_then_sigkill_and_ends_cancelled(store, fake):
    (run_id,) = queue(store)
    sup = make_sup(store, fake, slots=1)
    sup.tick(T)
    token = store.get(run_id).claim_token
    store.add_epoch(run_id, token, {"epoch": 1, "seconds": 1.0}, now=T)
    store.request_cancel(run_id, now=T)
    handle = fake.handle(run_id)
    for now, expected in [(T + 1, []), (T + 5.9, []), (T + 6, ["TERM"]), (T + 10.9, ["TERM"]),
                          (T + 11, ["TERM", "KILL"]), (T + 20, ["TERM", "KILL"])]:
        sup.tick(now)
        assert handle.signals == expected, now - T
    handle.exit = ExitInfo(-9)
    assert sup.tick(T + 21).ended == [(run_id, RunStatus.CANCELLED)]
    run = store.get(run_id)
    assert run.status == RunStatus.CANCELLED and run.crashes == 0 and run.epochs_done == 1
    assert len(store.metrics(run_id)) == 1  # its metrics stay
    assert sup.tick(T + 22).started == []


def test_a_cancel_honoured_by_the_process_needs_no_signal(store, fake):
    (run_id,) = queue(store)
    sup = make_sup(store, fake, slots=1)
    sup.tick(T)
    store.request_cancel(run_id, now=T)
    sup.tick(T + 1)
    store.finish(run_id, store.get(run_id).claim_token, RunStatus.CANCELLED, now=T + 1.5)  # the process did it
    fake.handle(run_id).exit = ExitInfo(EXIT_OK)
    assert sup.tick(T + 2).ended == [(run_id, RunStatus.CANCELLED)]
    assert fake.handle(run_id).signals == []


def test_a_process_whose_heartbeat_stops_is_killed_and_resumed(store, fake):
    (run_id,) = queue(store)
    sup = make_sup(store, fake, slots=1)
    sup.tick(T)
    sup.tick(T + 30)
    assert fake.handle(run_id).signals == []
    sup.tick(T + 31)
    assert fake.handle(run_id).signals == ["KILL"]
    fake.handle(run_id).exit = ExitInfo(-9)
    report = sup.tick(T + 32)
    assert report.ended == [(run_id, RunStatus.INTERRUPTED)] and report.started == [run_id]
    assert "no heartbeat for 31 s" in store.get(run_id).error


def test_graceful_stop_sends_runs_back_to_the_queue(store, fake):
    a, b, c = queue(store, 3)
    sup = make_sup(store, fake)
    sup.tick(T)
    sup.request_stop()  # what SIGINT/SIGTERM do: set a flag
    sup.tick(T + 1)
    assert fake.handle(a).signals == ["TERM"] and fake.handle(b).signals == ["TERM"]
    fake.handle(a).exit = ExitInfo(EXIT_STOPPED)
    report = sup.tick(T + 2)
    assert report.ended == [(a, RunStatus.QUEUED)] and report.started == []  # c is not claimed
    sup.tick(T + 6)  # the kill grace is over
    assert fake.handle(b).signals == ["TERM", "KILL"]
    fake.handle(b).exit = ExitInfo(-9)
    assert sup.tick(T + 7).ended == [(b, RunStatus.QUEUED)]
    assert not sup.active
    for run_id in (a, b, c):
        run = store.get(run_id)
        assert run.status == RunStatus.QUEUED and run.crashes == 0 and run.pid is None


def test_a_second_signal_kills_at_once(store, fake):
    (a,) = queue(store)
    sup = make_sup(store, fake, slots=1)
    sup.tick(T)
    sup.request_stop()
    sup.tick(T + 0.1)
    sup.request_stop()
    sup.tick(T + 0.2)
    assert fake.handle(a).signals == ["TERM", "KILL"]


def test_orphans_of_a_dead_supervisor_are_adopted_resumed_or_killed(store, fake):
    adopt, gone, hung, elsewhere_ok, elsewhere_stale = queue(store, 5)
    store.workers.register(WorkerInfo(id="old", host=HOST, pid=dead_pid(), executor="local", slots=3,
                                      devices=("cpu",) * 3, started_at=T, heartbeat_at=T + 40))
    for run_id, host in [(adopt, HOST), (gone, HOST), (hung, HOST), (elsewhere_ok, "far"), (elsewhere_stale, "far")]:
        run = store.claim(worker_id="old", host=host, device="cpu", now=T)
        assert run.id == run_id
        store.set_pid(run_id, run.claim_token, 100 + len(run_id))
        if run_id not in (hung, elsewhere_stale):
            store.heartbeat(run_id, run.claim_token, now=T + 39)
    fake.alive = {adopt: FakeHandle(101), hung: FakeHandle(103)}
    sup = make_sup(store, fake, slots=3)
    report = sup.tick(T + 40)
    assert report.adopted == [adopt] and sup.active[adopt].adopted
    assert dict(report.recovered) == {gone: RunStatus.INTERRUPTED, hung: RunStatus.INTERRUPTED,
                                      elsewhere_stale: RunStatus.INTERRUPTED}
    assert fake.alive[hung].signals == ["KILL"]
    assert "its process is gone and so is the supervisor" in store.get(gone).error
    assert "no heartbeat for 40 s; killed" in store.get(hung).error
    assert "no heartbeat for 40 s from host far" in store.get(elsewhere_stale).error
    assert store.get(gone).crashes == 1 and store.get(hung).crashes == 1
    assert store.get(elsewhere_ok).status == RunStatus.RUNNING and store.get(elsewhere_ok).worker_id == "old"
    assert store.get(adopt).worker_id == "me"
    assert sorted(report.started) == sorted([gone, hung])  # two free slots left after adopting one
    assert [w.id for w in store.workers.all()] == ["me"]  # the dead one is forgotten
    # the adopted process ends without writing anything: a crash, resumed
    fake.alive[adopt].exit = ExitInfo(None)
    report = sup.tick(T + 41)
    assert report.ended == [(adopt, RunStatus.INTERRUPTED)]
    assert "no supervisor could see its exit status" in store.get(adopt).error


def test_a_live_supervisors_runs_are_left_alone(store, fake):
    (run_id,) = queue(store)
    other = make_sup(store, FakeExecutor(), slots=1)
    other.id = "other"
    other.tick(T)
    sup = make_sup(store, fake, slots=1)
    report = sup.tick(T + 1)
    assert report.recovered == [] and report.adopted == [] and store.get(run_id).worker_id == "other"


@pytest.mark.parametrize("how, kwargs, status, crashed, fragment", [
    (ExitInfo(-9), {}, RunStatus.INTERRUPTED, True, "SIGKILL"),
    (ExitInfo(EXIT_ERROR), {}, RunStatus.FAILED, False, "training raised an error"),
    (ExitInfo(-9), {"stopping": True}, RunStatus.QUEUED, False, "shut down"),
    (ExitInfo(EXIT_ERROR), {"stopping": True}, RunStatus.FAILED, False, "exit code 1"),
    (ExitInfo(None), {"forced": "no heartbeat for 40 s"}, RunStatus.INTERRUPTED, True, "no heartbeat for 40 s"),
    (ExitInfo(-9), {"max_retries": 0}, RunStatus.FAILED, True, "gave up after 1 crashes"),
    (ExitInfo(77), {}, RunStatus.INTERRUPTED, True, "ran out of memory or lost the database (exit code 77)"),
    # a clean stop (a signal to the run's process): queued, not a crash
    (ExitInfo(EXIT_STOPPED), {}, RunStatus.QUEUED, False,
     "stopped at a batch boundary (exit code 75); queued again"),
])
def test_decide(store, how, kwargs, status, crashed, fragment):
    (run_id,) = queue(store)
    run = store.claim(worker_id="w", host=HOST, device="cpu", now=T)
    out = decide(run, how, **kwargs)
    assert (out.status, out.crashed) == (status, crashed) and fragment in out.reason
    store.request_cancel(run_id, now=T)
    assert decide(store.get(run_id), how, **kwargs).status == RunStatus.CANCELLED  # cancel wins


def test_a_run_of_ours_that_we_lost_track_of_is_recovered(store, fake):
    (run_id,) = queue(store)
    sup = make_sup(store, fake, slots=1)
    sup.tick(T)
    sup.active.clear()  # e.g. a database error while concluding it
    report = sup.tick(T + 1)
    assert report.recovered == [(run_id, RunStatus.INTERRUPTED)] and report.started == [run_id]
    assert store.get(run_id).attempts == 2


def test_every_free_slot_is_prepared_before_a_claim_and_the_executor_closed_at_the_end(store, fake):
    sup = make_sup(store, fake, slots=2)
    report = sup.tick(T)
    assert fake.prepared == [0, 1] and report.queue_empty and fake.started == []
    (run_id,) = queue(store)
    sup.tick(T + 1)
    assert fake.prepared == [0, 1, 0, 1] and [s[0] for s in fake.started] == [run_id]
    sup.tick(T + 2)
    assert fake.prepared[4:] == [1]  # slot 0 trains the run
    sup.close()
    assert fake.closed


def test_an_idle_step_writes_nothing(store, fake, monkeypatch):
    sup = make_sup(store, fake, slots=2)
    sup.tick(T)
    writes = []
    original = store.db.write
    monkeypatch.setattr(store.db, "write", lambda fn: writes.append(fn) or original(fn))
    for k in range(1, 5):
        assert sup.tick(T + k * 0.05).queue_empty
    assert writes == []  # the empty queue is seen by a read; the worker's heartbeat waits its period


def test_a_slot_that_is_not_ready_takes_no_run(store, fake):
    a, b = queue(store, 2)
    fake.unready = {0, 1}
    sup = make_sup(store, fake, slots=2)
    assert sup.tick(T).started == [] and store.get(a).status == RunStatus.QUEUED
    fake.unready = {0}
    assert sup.tick(T + 1).started == [a]
    assert sup.active[a].slot.index == 1
    fake.unready = set()
    assert sup.tick(T + 2).started == [b]

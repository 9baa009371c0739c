"""The store contract: every backend (tests/conftest.py STORE_BACKENDS) must pass this suite."""

import threading
from datetime import timezone

import pytest
from sqlalchemy import text

from gce_core.spec import parse_spec
from jobs.registry import WorkerInfo
from jobs.schema import SCHEMA_VERSION, SchemaError
from jobs.status import RunStatus
from jobs.store import NewRun, QueueFull, RunActive, RunFilter, Store, Superseded, new_run_id

SPEC = parse_spec(dict(dataset="digits", model="mlp", train_subset=200, epochs=4, batch_size=64))


@pytest.fixture
def store(store_url):
    s = Store(store_url)
    yield s
    s.close()


def queue(store, n=1, *, owner="local", group=None, tags=(), now=1000.0, **spec_fields):
    spec = SPEC.model_copy(update=spec_fields) if spec_fields else SPEC
    new = [NewRun(new_run_id(), spec, owner, group, tuple(tags)) for _ in range(n)]
    store.insert_runs(new, now=now)
    return [r.id for r in new]


def claim(store, now=2000.0, worker="w1"):
    return store.claim(worker_id=worker, host="h", device="cpu", now=now)


def row(epoch, seconds=0.5, **extra):
    return {"epoch": epoch, "train_loss": 1.0 / epoch, "test_acc": 0.1 * epoch, "seconds": seconds,
            "fy_hist_clean": [1, 2], **extra}


def test_new_database_gets_the_current_schema_and_reopening_keeps_the_runs(store_url):
    first = Store(store_url)
    assert first.schema_version == SCHEMA_VERSION
    (run_id,) = queue(first)
    first.close()
    again = Store(store_url)
    assert again.get(run_id).spec == SPEC
    version = again.db.read(lambda c: c.execute(text("SELECT version FROM schema_version")).scalar())
    assert version == SCHEMA_VERSION


def test_a_database_from_a_newer_lab_is_refused_with_what_to_do(store):
    store.db.write(lambda c: c.execute(text("UPDATE schema_version SET version = 99")))
    with pytest.raises(SchemaError, match=r"version 99.*update gce-lab"):
        Store(store.url)


def test_a_run_round_trips_with_everything_the_client_shows(store):
    (run_id,) = queue(store, owner="ana", group="g1", tags=["b", "a"], now=1234.5)
    run = store.get(run_id)
    assert run.spec == SPEC and run.spec.to_json() == SPEC.to_json()
    assert (run.status, run.owner, run.group, run.tags) == (RunStatus.QUEUED, "ana", "g1", ("a", "b"))
    assert run.created_at.tzinfo == timezone.utc and run.created_at.timestamp() == pytest.approx(1234.5)
    assert (run.attempts, run.crashes, run.epochs_done, run.archived, run.cancel_requested) == (0, 0, 0, False, False)
    assert run.started_at is None and run.pid is None and run.summary is None and run.error is None
    assert store.get("nope") is None


def test_list_is_newest_first_with_filters_paging_and_counts(store):
    old = queue(store, 3, owner="ana", group="g1", now=100.0)
    new = queue(store, 2, owner="bo", tags=["x"], now=200.0)
    assert [r.id for r in store.list_runs()] == new[::-1] + old[::-1]
    assert [r.id for r in store.list_runs(limit=2, offset=2)] == old[::-1][:2]
    assert store.count_runs() == 5
    assert store.count_runs(RunFilter(owner="ana")) == 3
    assert {r.id for r in store.list_runs(RunFilter(group="g1"))} == set(old)
    assert {r.id for r in store.list_runs(RunFilter(tag="x"))} == set(new)
    assert store.count_runs(RunFilter(tag="nope")) == 0
    claim(store)  # the oldest becomes running
    assert [r.id for r in store.list_runs(RunFilter(status=(RunStatus.RUNNING,)))] == [old[0]]
    assert store.count_runs(RunFilter(status=(RunStatus.QUEUED, RunStatus.RUNNING))) == 5


def test_archived_runs_are_hidden_unless_asked_for(store):
    a, b = queue(store, 2, group="g")
    assert store.set_archived(a, True) and not store.set_archived("nope", True)
    assert [r.id for r in store.list_runs()] == [b]
    assert store.count_runs(RunFilter(include_archived=True)) == 2
    assert store.get(a).archived
    store.set_archived(b, True)
    assert store.groups() == [] and store.groups(include_archived=True) == ["g"]


def test_groups_are_listed_most_recent_first(store):
    queue(store, group="old", now=1.0)
    queue(store, group="new", now=3.0)
    queue(store, group="old", now=2.0)
    queue(store)
    assert store.groups() == ["new", "old"]


def test_tags_are_replaced_as_a_set(store):
    (run_id,) = queue(store, tags=["a"])
    assert store.set_tags(run_id, ["c", "b", "c"])
    assert store.get(run_id).tags == ("b", "c")
    assert store.set_tags(run_id, []) and store.get(run_id).tags == ()
    assert not store.set_tags("nope", ["a"])


def test_queue_limit_per_owner_is_all_or_nothing(store):
    store.insert_runs([NewRun(new_run_id(), SPEC, "ana", None) for _ in range(3)], now=1.0, max_queued_per_owner=4)
    with pytest.raises(QueueFull) as info:
        store.insert_runs([NewRun(new_run_id(), SPEC, "ana", None) for _ in range(2)], now=2.0, max_queued_per_owner=4)
    assert (info.value.queued, info.value.adding, info.value.limit) == (3, 2, 4)
    assert store.count_runs() == 3
    store.insert_runs([NewRun(new_run_id(), SPEC, "bo", None) for _ in range(4)], now=3.0, max_queued_per_owner=4)
    assert store.count_runs(RunFilter(owner="bo")) == 4


def test_claim_takes_the_oldest_waiting_run_once(store):
    first, second = queue(store, 2)
    run = claim(store, now=5000.0)
    assert run.id == first and run.status == RunStatus.RUNNING
    assert run.attempts == 1 and run.worker_id == "w1" and run.device == "cpu" and run.host == "h"
    assert run.claim_token and run.heartbeat_at.timestamp() == 5000.0 and run.started_at.timestamp() == 5000.0
    assert claim(store).id == second
    assert claim(store) is None


def claim_concurrently(store, take, workers: int = 6) -> list:
    """What ``take(store, worker=name)`` returned, called until falsy by ``workers`` threads,
    each with its own Store on the same database."""
    got: list = []
    lock = threading.Lock()

    def worker(name):
        mine = Store(store.url)
        while taken := take(mine, worker=name):
            with lock:
                got.append(taken)
        mine.close()

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return got


def test_concurrent_claims_never_hand_out_a_run_twice(store):
    ids = set(queue(store, 30))
    got = [run.id for run in claim_concurrently(store, claim)]
    assert sorted(got) == sorted(ids)


def test_claims_take_runs_of_every_group_oldest_first_one_token_each(store):
    (a,) = queue(store, group="g", now=100.0, loss="cce")
    (lone,) = queue(store, now=101.0)
    (b,) = queue(store, group="g", now=102.0, model="cnn", compile=True)
    got = [claim(store) for _ in range(3)]
    assert [r.id for r in got] == [a, lone, b]
    assert len({r.claim_token for r in got}) == 3
    assert claim(store) is None


def test_has_waiting_answers_whether_a_claim_would_find_a_run(store):
    assert store.has_waiting() is False
    (a,) = queue(store)
    assert store.has_waiting() is True
    run = claim(store)
    assert store.has_waiting() is False
    store.finish(a, run.claim_token, RunStatus.INTERRUPTED, now=3000.0, crashed=True)
    assert store.has_waiting() is True  # an interrupted run waits to be resumed


def test_a_claim_reads_a_stored_spec_the_current_validator_would_refuse(store):
    (a,) = queue(store)
    # written by an older lab: a field since removed, a value out of today's range
    store.db.write(lambda conn: conn.execute(
        text("UPDATE runs SET spec = :s WHERE id = :i"),
        {"s": '{"dataset": "digits", "epochs": 4, "q": 5.0, "fused_width": 3}', "i": a}))
    run = claim(store)
    assert run.id == a and run.spec.q == 5.0 and run.spec.epochs == 4 and run.spec.loss == "lq"


def test_heartbeat_and_control_of_a_run(store):
    a, b = queue(store, 2)
    ta, tb = claim(store).claim_token, claim(store).claim_token
    assert store.heartbeat(a, ta, now=7000.0) is True
    assert store.get(a).heartbeat_at.timestamp() == 7000.0
    assert store.heartbeat(a, tb, now=7001.0) is False  # another run's token
    store.request_cancel(b, now=7001.0)
    assert store.control(a, ta) == (True, False)
    assert store.control(b, tb) == (True, True)
    store.finish(a, ta, RunStatus.QUEUED, now=7002.0)
    assert store.control(a, ta) == (False, False)
    assert store.heartbeat(a, ta, now=7003.0) is False
    assert store.control("gone", ta) == (False, True)


def test_an_interrupted_run_is_claimed_again_with_a_new_token(store):
    (run_id,) = queue(store)
    first = claim(store)
    assert store.finish(run_id, first.claim_token, RunStatus.INTERRUPTED, now=3000.0, error="boom", crashed=True)
    again = claim(store, now=4000.0)
    assert again.id == run_id and again.attempts == 2 and again.crashes == 1 and again.error == "boom"
    assert again.claim_token != first.claim_token
    assert again.started_at.timestamp() == 2000.0  # first start kept


def test_epochs_are_stored_once_and_in_order(store):
    (run_id,) = queue(store)
    token = claim(store).claim_token
    assert store.add_epoch(run_id, token, row(1), now=1.0)
    assert store.add_epoch(run_id, token, row(2, seconds=1.5), now=2.0)
    assert not store.add_epoch(run_id, token, row(2, seconds=9.0), now=3.0)  # a resumed run repeats it
    assert store.add_epoch(run_id, token, row(3), now=4.0)
    run = store.get(run_id)
    assert run.epochs_done == 3 and run.train_seconds == pytest.approx(2.5)
    assert [r["epoch"] for r in store.metrics(run_id)] == [1, 2, 3]
    assert store.metrics(run_id)[1] == row(2, seconds=1.5)
    assert [r["epoch"] for r in store.metrics(run_id, since_epoch=2)] == [3]
    assert store.metrics_of([run_id, "nope"]) == {run_id: store.metrics(run_id), "nope": []}


def test_a_stale_token_can_no_longer_write(store):
    (run_id,) = queue(store)
    old = claim(store).claim_token
    store.finish(run_id, old, RunStatus.INTERRUPTED, now=1.0, crashed=True)
    new = claim(store).claim_token
    with pytest.raises(Superseded):
        store.add_epoch(run_id, old, row(1), now=2.0)
    assert not store.heartbeat(run_id, old, now=3.0)
    assert not store.complete(run_id, old, {"x": 1}, now=3.0)
    assert not store.finish(run_id, old, RunStatus.FAILED, now=3.0)
    assert store.control(run_id, old) == (False, False)
    assert store.control(run_id, new) == (True, False)
    assert store.heartbeat(run_id, new, now=9.0) and store.get(run_id).heartbeat_at.timestamp() == 9.0


def test_complete_and_finish_record_the_end(store):
    a, b = queue(store, 2)
    ta, tb = claim(store).claim_token, claim(store).claim_token
    assert store.set_pid(a, ta, 4242) and store.get(a).pid == 4242
    assert store.complete(a, ta, {"last_test_acc": 0.5}, now=50.0)
    done = store.get(a)
    assert done.status == RunStatus.COMPLETED and done.summary == {"last_test_acc": 0.5}
    assert done.finished_at.timestamp() == 50.0
    assert store.finish(b, tb, RunStatus.FAILED, now=60.0, error="exit 1", crashed=True)
    failed = store.get(b)
    assert (failed.status, failed.error, failed.crashes, failed.pid) == (RunStatus.FAILED, "exit 1", 1, None)
    assert not store.finish(b, tb, RunStatus.CANCELLED, now=70.0)  # not running any more


def test_cancel_waiting_at_once_running_by_flag_final_untouched(store):
    done, running, interrupted, waiting = queue(store, 4)
    store.complete(done, claim(store).claim_token, {}, now=1.0)
    token = claim(store).claim_token
    store.finish(interrupted, claim(store).claim_token, RunStatus.INTERRUPTED, now=1.0, crashed=True)
    assert store.request_cancel(waiting, now=9.0).status == RunStatus.CANCELLED
    assert store.request_cancel(interrupted, now=9.0).status == RunStatus.CANCELLED
    assert store.get(waiting).finished_at.timestamp() == 9.0
    flagged = store.request_cancel(running, now=9.0)
    assert flagged.status == RunStatus.RUNNING and flagged.cancel_requested
    assert store.control(running, token) == (True, True)
    assert store.request_cancel(done, now=9.0).status == RunStatus.COMPLETED
    assert store.request_cancel("nope", now=9.0) is None
    assert claim(store) is None  # a cancelled run is never claimed


def test_delete_refuses_a_running_run_and_removes_everything_else(store):
    a, b = queue(store, 2, tags=["t"])
    token = claim(store).claim_token
    store.add_epoch(a, token, row(1), now=1.0)
    with pytest.raises(RunActive, match="cancel it first"):
        store.delete_run(a)
    store.finish(a, token, RunStatus.CANCELLED, now=2.0)
    assert store.delete_run(a) and store.get(a) is None and store.metrics(a) == []
    assert store.count_runs(RunFilter(tag="t")) == 1
    assert store.delete_run(b) and not store.delete_run(b)


def test_adopt_moves_a_run_to_another_supervisor(store):
    (run_id,) = queue(store)
    token = claim(store, worker="dead").claim_token
    assert store.adopt(run_id, token, "alive")
    assert [r.id for r in store.running(worker_id="alive")] == [run_id]
    assert store.running(worker_id="dead") == []
    assert not store.adopt(run_id, "other-token", "x")


def test_worker_registry(store):
    w = WorkerInfo(id="w1", host="h", pid=1, executor="local", slots=2, devices=("cpu", "cpu"),
                   started_at=10.0, heartbeat_at=10.0)
    store.workers.register(w)
    store.workers.heartbeat("w1", now=20.0)
    (got,) = store.workers.all()
    assert got.devices == ("cpu", "cpu") and got.heartbeat_at == 20.0 and got.slots == 2
    assert store.workers.prune(older_than=15.0) == 0
    store.workers.remove("w1")
    assert store.workers.all() == []

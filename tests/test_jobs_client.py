"""The client API the dashboard uses: refusals, groups and grids, reading, exports, concurrency."""

import multiprocessing
import time

import pytest

from gce_core.spec import parse_spec
from jobs import config
from jobs.client import LabClient, RunActive, RunNotFound, SubmitRefused
from jobs.config import Limits
from jobs.registry import WorkerInfo
from jobs.status import RunStatus

TINY = dict(dataset="digits", model="mlp", train_subset=200, epochs=4, batch_size=64)


@pytest.fixture
def client(store_url):
    c = LabClient(store_url)
    yield c
    c.close()


def refused(client, spec, **kw) -> SubmitRefused:
    with pytest.raises(SubmitRefused) as info:
        client.submit(spec, **kw)
    return info.value


@pytest.mark.parametrize("bad, field, fragment", [
    ({"epochs": "many"}, "epochs", "integer"),
    ({"lr": [0.1]}, "lr", "number"),
    ({"q": 1.5}, "q", "(0, 1]"),
    ({"q": 0}, "q", "(0, 1]"),
    ({"dataset": "imagenet"}, "dataset", "allowed: digits"),
    ({"epochs": 10**9}, "epochs", "5000"),
    ({"epochs": 2000}, "epochs", "GCE_LAB_MAX_EPOCHS"),
    ({"epochs": 0}, "epochs", "greater than or equal to 1"),
    ({"colour": "red"}, "colour", "unknown field"),
])
def test_bad_specs_are_refused_with_the_reason_and_nothing_is_queued(client, bad, field, fragment):
    err = refused(client, {**TINY, **bad})
    problems = dict(err.problems)
    assert field in problems and fragment in problems[field]
    assert str(err).startswith("refused, nothing was queued:") and field in str(err)
    assert isinstance(err, ValueError)
    assert client.count_runs(include_archived=True) == 0


def test_a_spec_that_is_not_an_object_is_refused(client):
    assert dict(refused(client, '["digits"]').problems) == {"spec": "expected a JSON object, got list"}


def test_the_epoch_limit_comes_from_the_environment(store_url, monkeypatch):
    monkeypatch.setenv("GCE_LAB_MAX_EPOCHS", "5")
    c = LabClient(store_url)
    assert c.limits.max_epochs == 5
    err = refused(c, {**TINY, "epochs": 6})
    assert "limit of 5 epochs per run" in str(err) and "GCE_LAB_MAX_EPOCHS" in str(err)
    assert c.submit({**TINY, "epochs": 5})


def test_the_queue_limit_per_owner_says_what_to_do(store_url):
    c = LabClient(store_url, limits=Limits(max_queued_per_owner=3))
    ids = [c.submit(TINY, owner="ana") for _ in range(3)]
    err = refused(c, TINY, owner="ana")
    assert "already has 3 queued runs" in str(err) and "GCE_LAB_MAX_QUEUED_PER_OWNER" in str(err)
    assert "cancel some" in str(err)
    assert c.submit(TINY, owner="bo")  # another owner is not affected
    c.cancel(ids[0])
    assert c.submit(TINY, owner="ana")  # a cancelled run no longer counts
    with pytest.raises(SubmitRefused, match="would pass it"):
        c.submit_group([TINY, TINY], owner="ana")
    assert c.count_runs(owner="ana") == 4


def test_a_group_is_queued_whole_or_not_at_all(client):
    with pytest.raises(SubmitRefused) as info:
        client.submit_group([TINY, {**TINY, "q": 7}, {**TINY, "noise": "bogus"}])
    assert [f for f, _ in info.value.problems] == ["runs[1].q", "runs[2].noise"]
    assert client.count_runs() == 0
    group, ids = client.submit_group([TINY, {**TINY, "seed": 1}], tags=["cmp"])
    assert group.startswith("group-") and len(ids) == 2
    assert {r.id for r in client.list_runs(group=group)} == set(ids)
    assert [client.get(i).spec.seed for i in ids] == [0, 1]
    assert client.get(ids[0]).tags == ("cmp",)
    assert client.submit_group([TINY], group="mine")[0] == "mine"
    assert client.groups() == ["mine", group]
    with pytest.raises(SubmitRefused, match="at least one spec"):
        client.submit_group([])


def test_group_size_is_limited(store_url):
    c = LabClient(store_url, limits=Limits(max_group_size=3))
    with pytest.raises(SubmitRefused, match=r"4 runs in one group is over the limit of 3.*GCE_LAB_MAX_GROUP_SIZE"):
        c.submit_group([TINY] * 4)
    assert c.count_runs() == 0


def test_a_grid_is_every_loss_noise_rate_and_seed(client):
    base = {**TINY, "noise": "uniform", "name": "sweep"}
    group, ids = client.submit_grid(base, losses=["cce", "gce"], noise_rates=[0.2, 0.4], seeds=[0, 1, 2],
                                    group="g")
    assert group == "g" and len(ids) == 12
    specs = [client.get(i).spec for i in ids]
    assert [(s.loss, s.noise_rate, s.seed) for s in specs] == [
        (loss, rate, seed) for loss in ("cce", "lq") for rate in (0.2, 0.4) for seed in (0, 1, 2)]
    assert all(s.noise == "uniform" and s.epochs == 4 for s in specs)
    assert specs[0].name == "sweep [cce, 0.2, seed 0]"
    with pytest.raises(SubmitRefused, match="noise 'none'"):
        client.submit_grid(TINY, losses=["cce"], noise_rates=[0.4], seeds=[0])
    with pytest.raises(SubmitRefused) as info:
        client.submit_grid(base, losses=["cce", "nope"], noise_rates=[0.2], seeds=[0])
    assert info.value.problems[0][0] == "runs[1].loss"
    assert client.count_runs() == 12


def test_unknown_ids_raise_a_key_error_that_says_so(client):
    for call in (client.get, client.cancel, client.archive, client.delete, client.metrics,
                 lambda i: client.tag(i, ["x"]), lambda i: client.export_csv([i])):
        with pytest.raises(KeyError) as info:
            call("nope")
        assert isinstance(info.value, RunNotFound) and "no run with id 'nope'" in str(info.value)


def test_cancel_of_a_queued_run_is_immediate_and_it_is_never_started(client):
    run_id = client.submit(TINY)
    run = client.cancel(run_id)
    assert run.status == RunStatus.CANCELLED and run.status.is_final and run.finished_at is not None
    assert client.store.claim(worker_id="w", host="h", device="cpu", now=time.time()) is None


def test_tags_are_plain_text_and_filter_the_list(client):
    a, b = client.submit(TINY), client.submit(TINY)
    assert client.tag(a, [" demo ", "paper", "demo"]).tags == ("demo", "paper")
    assert [r.id for r in client.list_runs(tag="demo")] == [a]
    for bad in (["x" * 41], [""], ["line\nbreak"], [3]):
        with pytest.raises(ValueError, match="tag"):
            client.tag(b, bad)
    with pytest.raises(SubmitRefused, match="1 to 40"):
        client.submit(TINY, tags=["y" * 50])
    assert client.count_runs() == 2


def test_list_filters_paging_and_status_names(client):
    ids = [client.submit(TINY, owner="ana" if i % 2 else "bo") for i in range(5)]
    assert [r.id for r in client.list_runs()] == ids[::-1]
    assert [r.id for r in client.list_runs(limit=2, offset=1)] == ids[::-1][1:3]
    assert client.count_runs(owner="ana") == 2
    client.cancel(ids[0])
    assert [r.id for r in client.list_runs(status=["cancelled"])] == [ids[0]]
    assert client.count_runs(status=[RunStatus.QUEUED, "cancelled"]) == 5
    assert client.count_runs(status="queued") == 4
    with pytest.raises(ValueError, match="allowed: queued, running"):
        client.list_runs(status=["done"])
    with pytest.raises(ValueError, match="limit"):
        client.list_runs(limit=0)
    client.archive(ids[1])
    assert client.count_runs() == 4 and client.count_runs(include_archived=True) == 5
    assert not client.archive(ids[1], False).archived


def start_with_epochs(client, run_id, rows):
    """Play a training process: claim the run and store epoch rows (no real training)."""
    run = client.store.claim(worker_id="w", host="h", device="cpu", now=time.time())
    assert run.id == run_id
    for row in rows:
        client.store.add_epoch(run_id, run.claim_token, row, now=time.time())
    return run.claim_token


def epoch_row(epoch, **kw):
    row = {"epoch": epoch, "train_loss": 2.0 / epoch, "train_acc_noisy": 0.5, "train_acc_clean": 0.6,
           "memorised": None, "flipped_to_true": None, "val_acc": 0.1 * epoch, "test_acc": 0.2 * epoch,
           "lr": 0.1, "seconds": 2.0, "kept": None, "prune_precision": None, "prune_recall": None,
           "loss_sum_mean": 3.0, "fy_hist_clean": [0] * 20, "fy_hist_noisy": [0] * 20}
    return {**row, **kw}


def test_progress_eta_and_metrics_since(client):
    run_id = client.submit({**TINY, "epochs": 10, "loss": "cce", "noise": "uniform", "noise_rate": 0.4})
    fresh = client.get(run_id)
    assert fresh.progress == 0.0 and fresh.eta_seconds is None and fresh.name == "cce | uniform 0.4 | seed 0"
    token = start_with_epochs(client, run_id, [epoch_row(e) for e in (1, 2, 3, 4)])
    run = client.get(run_id)
    assert run.progress == 0.4 and run.eta_seconds == pytest.approx(6 * 2.0)
    assert [r["epoch"] for r in client.metrics(run_id, since_epoch=2)] == [3, 4]
    assert client.metrics(run_id)[0] == epoch_row(1)
    client.store.complete(run_id, token, {"last_test_acc": 0.8}, now=time.time())
    assert client.get(run_id).eta_seconds == 0.0


def test_metrics_frame_is_long_with_the_spec_columns(client):
    a = client.submit({**TINY, "loss": "cce"})
    b = client.submit({**TINY, "loss": "lq", "q": 0.5, "noise": "uniform", "noise_rate": 0.2, "seed": 3})
    start_with_epochs(client, a, [epoch_row(1), epoch_row(2)])
    start_with_epochs(client, b, [epoch_row(1)])
    frame = client.metrics_frame([a, b])
    assert list(frame["run_id"]) == [a, a, b] and list(frame["epoch"]) == [1, 2, 1]
    assert list(frame["test_acc"]) == pytest.approx([0.2, 0.4, 0.2])
    last = frame.iloc[2]
    assert (last["loss"], last["q"], last["noise"], last["noise_rate"], last["seed"], last["dataset"]) == (
        "lq", 0.5, "uniform", 0.2, 3, "digits")
    assert "fy_hist_clean" not in frame.columns and {"val_acc", "lr", "name"} <= set(frame.columns)
    assert client.metrics_frame([]).empty


def test_export_csv_is_long_format(client):
    a = client.submit({**TINY, "name": "my run"})
    start_with_epochs(client, a, [epoch_row(1), epoch_row(2)])
    lines = client.export_csv([a]).splitlines()
    assert lines[0] == "run_id,name,epoch,metric,value"
    assert f"{a},my run,2,test_acc,0.4" in lines
    assert not any(",memorised," in ln or "fy_hist" in ln for ln in lines)  # empty and list values left out
    assert len(lines) == 1 + 2 * 8  # 8 scalar metrics with values per epoch


def test_delete_refuses_a_running_run_then_removes_metrics_and_folder(client, lab_home):
    run_id = client.submit(TINY)
    token = start_with_epochs(client, run_id, [epoch_row(1)])
    folder = config.run_dir(run_id)
    folder.mkdir(parents=True)
    (folder / "log.txt").write_text("hello")
    with pytest.raises(RunActive, match="cancel it first"):
        client.delete(run_id)
    client.store.finish(run_id, token, RunStatus.CANCELLED, now=time.time())
    client.delete(run_id)
    assert not folder.exists() and client.store.metrics(run_id) == []
    with pytest.raises(KeyError):
        client.get(run_id)


def test_executor_info_counts_live_supervisors(client):
    assert client.executor_info()["workers_alive"] == 0 and client.executor_info()["slots"] == 0
    now = time.time()
    for wid, beat in (("live", now), ("dead", now - 3600)):
        client.store.workers.register(WorkerInfo(id=wid, host="h", pid=1, executor="local", slots=2,
                                                 devices=("cuda:0", "cuda:1"), started_at=beat, heartbeat_at=beat))
    info = client.executor_info()
    assert (info["executor"], info["slots"], info["devices"], info["workers_alive"]) == (
        "local", 2, ["cuda:0", "cuda:1"], 1)


def _submitter(url, owner, count, gate, out):
    ids, errors = [], []
    try:
        client = LabClient(url)
        gate.wait(60)
        for i in range(count):
            try:
                ids.append(client.submit({**TINY, "seed": i}, owner=owner))
            except Exception as exc:  # reported to the test, which fails on any
                errors.append(f"{type(exc).__name__}: {exc}")
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}")
    out.put((owner, ids, errors))


def test_ten_concurrent_submitters_lose_nothing(client):
    # Forked (they touch no torch), so ten processes start in milliseconds and really overlap.
    ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
    gate, out = ctx.Event(), ctx.Queue()
    procs = [ctx.Process(target=_submitter, args=(client.url, f"user{i}", 20, gate, out)) for i in range(10)]
    for p in procs:
        p.start()
    gate.set()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    assert [errors for _, _, errors in results] == [[]] * 10  # no "database is locked", nothing else
    submitted = [i for _, ids, _ in results for i in ids]
    assert len(submitted) == 200 and len(set(submitted)) == 200
    stored = {r.id: r for r in client.list_runs(limit=1000)}
    assert set(stored) == set(submitted) and client.count_runs() == 200
    for owner, ids, _ in results:
        assert sorted(stored[i].spec.seed for i in ids) == list(range(20))
        assert all(stored[i].owner == owner and stored[i].status == RunStatus.QUEUED for i in ids)
    assert parse_spec(TINY) == stored[submitted[0]].spec.model_copy(update={"seed": 0})


def test_a_grid_over_losses_gives_each_loss_its_own_defaults_but_keeps_q(client):
    base = {**TINY, "noise": "uniform", "loss": "sce", "beta": 0.5, "q": 0.3, "prune_start": 2}
    _, ids = client.submit_grid(base, losses=["sce", "bootstrap_soft", "truncated_lq"], noise_rates=[0.4],
                                seeds=[0])
    sce, boot, trunc = (client.get(i).spec for i in ids)
    assert (sce.alpha, sce.beta, sce.A) == (0.1, 0.5, -4.0)  # the base's own loss keeps what it was given
    assert boot.beta == 0.95 and boot.alpha is None  # not sce's beta: bootstrapping's default
    assert (trunc.q, trunc.k, trunc.beta) == (0.3, 0.5, None)  # q carries over

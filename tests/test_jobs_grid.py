"""`python -m jobs grid`: queue a grid, reuse finished runs, top the queue up, print the table;
and the paper's Table 1 end to end on tiny files in the real CIFAR and IDX formats."""

from __future__ import annotations

import json
import os
import pathlib
import textwrap
import time

import pytest

from jobs import config
from jobs.cli import build_parser, main
from jobs.client import LabClient
from jobs.grid import cmd_grid, grid_from_args, grid_names, grid_tag, tagged_outcomes
from jobs.status import RunStatus
from tests.app_helpers import train_queued
from tests.test_grid import PAPER_COLUMNS, PAPER_ROWS, md_rows

DIGITS = ["grid", "--datasets", "digits", "--noises", "uniform:0.2,0.4", "--losses", "cce,lq", "--seeds", "2",
          "--preset", "quick", "--epochs", "3", "--train-subset", "100"]


def test_no_wait_queues_the_grid_and_a_second_call_reuses_every_run(cli, store_url):
    code, out, err = cli(*DIGITS, "--no-wait")
    assert code == 0, err
    assert "8 runs in 4 cells; 0 found in the store, 8 queued, 0 to queue" in err
    assert "no worker is running" in err and "[0/2]" in out
    client = LabClient(store_url)
    name = next(line.split()[1].rstrip(":") for line in err.splitlines() if line.startswith("grid "))
    assert client.count_runs(group=name, tag=grid_tag(name)) == 8 and grid_names(client) == [name]
    assert (config.lab_home() / "grids" / f"{name}.md").read_text() == out
    assert (config.lab_home() / "grids" / f"{name}.csv").exists() and (config.lab_home() / "grids" / f"{name}.tex").exists()
    train_queued(client)
    code, out, err = cli(*DIGITS, "--no-wait")
    assert "8 found in the store, 0 queued" in err and "no worker is running" not in err
    assert client.count_runs() == 8
    rows = md_rows(out)
    assert rows[0] == ["data · loss", "uniform 0.2", "uniform 0.4"]
    assert [r[0] for r in rows[1:]] == ["digits · CCE", "digits · Lq (GCE) q=0.7"]
    assert all("[" not in cell for r in rows[1:] for cell in r)  # every cell complete
    assert "cells 4/4 done, runs 8/8 done." in out


def test_runs_of_the_same_spec_from_elsewhere_are_reused_and_tagged(cli, store_url):
    client = LabClient(store_url)
    args = build_parser().parse_args(["--db", store_url, *DIGITS])
    specs = grid_from_args(args).specs()
    _, ids = client.submit_group([specs[0].model_copy(update={"name": "by hand"})], group="mine")
    train_queued(client)
    code, _out, err = cli(*DIGITS, "--no-wait")
    assert code == 0 and "1 found in the store, 7 queued" in err
    assert grid_tag(grid_from_args(args).name()) in client.get(ids[0]).tags and client.get(ids[0]).group == "mine"
    name = grid_from_args(args).name()
    assert len(tagged_outcomes(client, name)) == 8


def test_waiting_tops_the_queue_up_within_the_owners_limit_and_prints_progress(store_url, capsys, monkeypatch):
    monkeypatch.setenv("GCE_LAB_MAX_QUEUED_PER_OWNER", "3")
    client = LabClient(store_url)
    args = build_parser().parse_args(["--db", store_url, *DIGITS, "--poll", "0"])
    ticks = []

    def sleep(_seconds):  # plays the worker: one run ends per poll, the first of them fails
        ticks.append(1)
        run = client.store.claim(worker_id="t", host="t", device="cpu", now=time.time())
        if run is None:
            return
        if len(ticks) == 1:
            client.store.finish(run.id, run.claim_token, RunStatus.FAILED, now=time.time(), error="boom")
        else:
            client.store.complete(run.id, run.claim_token, {"test_acc_at_best_val": 0.5, "last_test_acc": 0.4,
                                                            "best_test_acc": 0.6}, now=time.time())

    assert cmd_grid(client, args, sleep=sleep) == 0
    out, err = capsys.readouterr()
    assert "8 runs in 4 cells; 0 found in the store, 3 queued, 5 to queue as the queue drains" in err
    assert err.count("cells ") >= 3 and "cells 4/4 done, runs 8/8 done" in err
    statuses = sorted(r.status.value for r in client.list_runs(limit=100))
    assert statuses == ["completed"] * 8 + ["failed"]  # the failed run was queued once more
    assert "50.00 ± 0.00" in out


def test_a_run_that_fails_again_is_not_retried_forever(store_url, capsys):
    client = LabClient(store_url)
    args = build_parser().parse_args(["--db", store_url, *DIGITS, "--poll", "0"])

    def sleep(_seconds):  # every run fails
        while (run := client.store.claim(worker_id="t", host="t", device="cpu", now=time.time())) is not None:
            client.store.finish(run.id, run.claim_token, RunStatus.FAILED, now=time.time(), error="boom")

    assert cmd_grid(client, args, sleep=sleep) == 0
    out, err = capsys.readouterr()
    assert client.count_runs() == 16  # each spec: the first attempt and one more
    assert "[0/2, 2 failed]" in out and "(8 failed)" in err


def test_table_queues_nothing(cli, store_url):
    code, out, _err = cli(*DIGITS, "--table", "--format", "csv")
    assert code == 0 and LabClient(store_url).count_runs() == 0
    assert out.splitlines()[0].startswith("dataset,loss,noise,rate,runs,done") and len(out.splitlines()) == 5


@pytest.mark.parametrize("argv, fragment", [
    (["grid", "--datasets", "digits"], "give --paper table1|table3, or every axis: --noises, --losses missing"),
    (["grid", "--paper", "table1", "--datasets", "digits"], "the paper preset is for cifar10, cifar100 and fashion_mnist"),
    ([*DIGITS, "--q", "3"], "q must be in (0, 1]"),
    ([*DIGITS, "--name", "x" * 40], "a grid name has at most 35 characters"),
    (["grid", "--paper", "table1", "--losses", "truncated_lq", "--epochs", "1"], "prune_start: truncated Lq prunes from epoch 2"),
])  # fmt: skip
def test_bad_grids_are_one_line_and_queue_nothing(cli, store_url, argv, fragment):
    code, _out, err = cli(*argv)
    assert code == 2 and err.startswith("error: ") and fragment in err and "Traceback" not in err
    assert LabClient(store_url).count_runs() == 0


# --- end to end: the paper's Table 1 on files in the real formats, through a real worker -----------
_MD5_PATCH = textwrap.dedent('''
    """Test-only: point torchvision's CIFAR checksums at the tiny files (tests/test_jobs_grid.py)."""
    import json, os
    from torchvision import datasets

    _md5 = json.loads(os.environ["GCE_TEST_CIFAR_MD5"])
    for _cls, _key in ((datasets.CIFAR10, "cifar10"), (datasets.CIFAR100, "cifar100")):
        _sums = _md5[_key]
        _cls.train_list = [[n, _sums[n]] for n, _ in _cls.train_list]
        _cls.test_list = [[n, _sums[n]] for n, _ in _cls.test_list]
        _cls.meta = dict(_cls.meta, md5=_sums[_cls.meta["filename"]])
''')


@pytest.mark.slow
@pytest.mark.timeout(1200)
@pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)
def test_table1_runs_end_to_end_on_cifar_and_idx_files_through_a_real_worker(store_url, lab_home, tmp_path,
                                                                             monkeypatch, capsys):
    from tests.fake_datasets import write_cifar10, write_cifar100, write_fashion_mnist

    data = tmp_path / "data"
    c10 = write_cifar10(data, per_batch=6, n_test=10)  # 30 training images: 27 to train, 3 to validate
    c100 = write_cifar100(data, n_train=40, n_test=10)
    write_fashion_mnist(data, n_train=30, n_test=10)
    patch = tmp_path / "patch"
    patch.mkdir()
    (patch / "sitecustomize.py").write_text(_MD5_PATCH)  # the run processes' checksums
    monkeypatch.setenv("GCE_TEST_CIFAR_MD5", json.dumps({"cifar10": c10.md5, "cifar100": c100.md5}))
    root = str(pathlib.Path(__file__).resolve().parent.parent)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(patch), root]))
    monkeypatch.setenv("GCE_LAB_DATA", str(data))
    monkeypatch.setenv("GCE_LAB_MAX_QUEUED_PER_OWNER", "1000")
    # The paper's axes and schedule shape; the MLP keeps 96 runs on a CPU to about a minute.
    grid = ["grid", "--paper", "table1", "--seeds", "1", "--epochs", "2", "--model", "mlp", "--batch-size", "16"]
    assert main(["--db", store_url, *grid, "--no-wait"]) == 0
    capsys.readouterr()
    assert main(["--db", store_url, "worker", "--slots", "1", "--cpu", "--until-idle", "--poll", "0.1"]) == 0
    capsys.readouterr()
    client = LabClient(store_url)
    runs = client.list_runs(limit=1000)
    assert len(runs) == 96 and {r.status for r in runs} == {RunStatus.COMPLETED}, [
        (r.spec.name, r.status.value, r.error) for r in runs if r.status != RunStatus.COMPLETED][:3]
    assert {r.summary["precision"] for r in runs} == {"float32"}  # recorded: CPU runs compute in float32
    opened = [r for r in runs if r.spec.noise == "class_dependent" and r.spec.dataset == "cifar100"]
    assert {r.spec.class_map for r in opened} == {"cifar100_blocks"}
    assert main(["--db", store_url, *grid]) == 0  # everything is reused: waits for nothing
    out, err = capsys.readouterr()
    assert "96 found in the store, 0 queued" in err
    rows = md_rows(out)
    assert rows[0] == ["data · loss", *PAPER_COLUMNS]
    assert [r[0] for r in rows[1:]] == PAPER_ROWS
    assert "(paper 87.13 ± 0.22, " in rows[3][2] and " ± " not in rows[3][2].split(" (paper")[0]  # Lq, uniform 0.4: 1 seed
    assert all("[" not in cell for r in rows[1:] for cell in r)
    assert "cells 96/96 done, runs 96/96 done." in out

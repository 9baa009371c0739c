"""`python -m jobs ...`: readable tables, one-line errors with exit code 2, a worker that drains."""

import signal

import pytest

from jobs import config
from jobs.cli import format_seconds, format_table
from jobs.client import LabClient
from jobs.status import RunStatus

TINY = ["--dataset", "digits", "--model", "mlp", "--train-subset", "200", "--epochs", "2", "--batch-size", "64"]


def test_submit_list_show_cancel_and_export(cli, store_url, tmp_path):
    code, out, _ = cli("submit", *TINY, "--loss", "cce", "--tag", "demo", "--owner", "ana")
    assert code == 0 and out.startswith("queued run ")
    run_id = out.split()[2].rstrip(":")
    code, out, _ = cli("list")
    lines = out.splitlines()
    assert lines[0].split() == ["ID", "STATUS", "NAME", "EPOCHS", "ETA", "TEST@BEST-VAL", "OWNER", "GROUP", "CREATED"]
    assert lines[2].startswith(f"{run_id}  queued") and "cce | clean | seed 0" in lines[2] and "0/2" in lines[2]
    assert lines[-1] == "runs 1-1 of 1, newest first"
    code, out, _ = cli("show", run_id)
    assert code == 0 and f"run {run_id}: cce | clean | seed 0" in out
    assert "status      queued - epoch 0/2 (0%), ETA -" in out and "tags demo" in out
    assert 'spec        train_subset=200 loss="cce" epochs=2 batch_size=64' in out  # what differs from defaults
    code, out, _ = cli("cancel", run_id)
    assert code == 0 and out.strip() == f"{run_id}: cancelled"
    assert cli("list", "--status", "queued")[1].strip() == "no runs match"
    code, out, _ = cli("export", run_id)
    assert code == 0 and out == "run_id,name,epoch,metric,value\n"
    code, out, _ = cli("export", run_id, "-o", str(tmp_path / "m.csv"))
    assert (tmp_path / "m.csv").read_text() == "run_id,name,epoch,metric,value\n" and "wrote 0 rows" in out


def test_a_grid_from_the_command_line(cli, store_url):
    code, out, _ = cli("submit", *TINY, "--noise", "uniform", "--losses", "cce,lq", "--noise-rates", "0.2,0.4",
                       "--seeds", "0,1", "--group", "sweep")
    assert code == 0 and out.startswith("queued 8 runs in group sweep")
    client = LabClient(store_url)
    assert client.count_runs(group="sweep") == 8
    assert sorted({r.spec.noise_rate for r in client.list_runs(group="sweep")}) == [0.2, 0.4]
    code, out, _ = cli("list", "--group", "sweep", "--limit", "3")
    assert out.splitlines()[-1] == "runs 1-3 of 8, newest first; --offset 3 for more"


@pytest.mark.parametrize("argv, fragment", [
    (["submit", *TINY, "--q", "3"], "q: q must be in (0, 1]"),
    (["submit", *TINY, "--epochs", "4000"], "epochs: 4000 is over this lab's limit of 1000"),
    (["submit", *TINY, "--dataset", "imagenet"], "unknown data set 'imagenet'"),
    (["show", "nope"], "no run with id 'nope'"),
    (["cancel", "nope"], "no run with id 'nope'"),
    (["list", "--status", "done"], "unknown run status 'done'; allowed: queued"),
    (["export"], "give run ids or --group NAME"),
])
def test_bad_input_is_one_line_and_exit_code_2(cli, store_url, argv, fragment):
    code, _out, err = cli(*argv)
    assert code == 2 and err.startswith("error: ") and fragment in err and "Traceback" not in err
    assert LabClient(store_url).count_runs() == 0


def test_worker_until_idle_runs_the_queue_and_show_has_the_result(cli, store_url):
    code, out, _ = cli("submit", *TINY, "--lr", "0.1")
    run_id = out.split()[2].rstrip(":")
    before = signal.getsignal(signal.SIGINT)
    code, out, _ = cli("worker", "--slots", "1", "--cpu", "--until-idle", "--poll", "0.1")
    assert code == 0 and "1 slot(s) (cpu)" in out and out.strip().endswith("stopped")
    assert signal.getsignal(signal.SIGINT) is before  # the worker's handlers are removed again
    run = LabClient(store_url).get(run_id)
    assert run.status == RunStatus.COMPLETED and run.epochs_done == 2
    code, out, _ = cli("show", run_id)
    assert "status      completed" in out and "result      test accuracy" in out and "last epoch  2:" in out
    assert "epoch 2/2: train loss" in out  # the log's tail
    code, out, _ = cli("logs", run_id)
    assert out == config.log_path(run_id).read_text() + "\n"
    code, out, _ = cli("export", run_id)
    assert len(out.splitlines()) == 1 + 2 * 8 and f"{run_id},lq q=0.7 | clean | seed 0,2,test_acc," in out
    assert LabClient(store_url).executor_info()["workers_alive"] == 0  # it left the registry


def test_table_and_duration_formatting():
    assert format_table(["A", "LONGER"], [["xyz", "1"], ["", "22"]]).splitlines() == [
        "A    LONGER", "---  ------", "xyz  1", "     22"]
    assert [format_seconds(s) for s in (None, 4.4, 65, 3725)] == ["-", "4s", "1m05s", "1h02m"]


def test_show_never_crashes_on_a_run_whose_last_row_has_no_numbers(cli, store_url):
    client = LabClient(store_url)
    run_id = client.submit({"dataset": "digits", "epochs": 2})
    run = client.store.claim(worker_id="w", host="h", device="cpu", now=1000.0)
    nan_row = {"epoch": 1, "train_loss": None, "val_acc": None, "test_acc": None, "seconds": 0.1}
    client.store.add_epoch(run_id, run.claim_token, nan_row, now=1001.0)
    code, out, _ = cli("show", run_id)
    assert code == 0 and "last epoch  1: train loss -, val -, test -" in out
    client.close()

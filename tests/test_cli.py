"""The gce_core command line: outputs on disk, tables, and one-line errors with exit code 2."""

import json
import subprocess
import sys

import pytest

from gce_core.cli import build_parser, main

TINY = ["--dataset", "digits", "--train-subset", "200", "--epochs", "3", "--batch-size", "64", "--lr", "0.1"]


def test_train_writes_spec_metrics_and_summary(tmp_path, capsys):
    out = tmp_path / "run"
    code = main(["train", *TINY, "--loss", "gce", "--q", "0.7", "--noise", "uniform", "--noise-rate", "0.4", "--out", str(out)])
    assert code == 0
    spec = json.loads((out / "spec.json").read_text())
    assert spec["loss"] == "lq" and spec["q"] == 0.7 and spec["noise_rate"] == 0.4
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    summary = json.loads((out / "summary.json").read_text())
    for key in ("test_acc_at_best_val", "best_val_epoch", "last_test_acc", "best_test_acc"):
        assert key in summary
    assert summary["last_test_acc"] == rows[-1]["test_acc"]
    assert "test accuracy at best validation epoch" in capsys.readouterr().out


def test_train_again_in_same_folder_resumes_without_duplicating_epochs(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    assert main(["train", *TINY, "--out", str(out)]) == 0  # already complete: nothing re-run
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]


def test_preset_then_explicit_options(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--preset", "quick", "--epochs", "1", "--train-subset", "100", "--out", str(out)]) == 0
    spec = json.loads((out / "spec.json").read_text())
    assert spec["epochs"] == 1 and spec["model"] == "mlp" and spec["lr"] == 0.1  # from the quick preset


def test_compare_prints_one_row_per_loss(capsys):
    assert main(["compare", *TINY, "--epochs", "2", "--losses", "cce,mae,lq", "--noise", "uniform", "--noise-rate", "0.4"]) == 0
    out = capsys.readouterr().out
    lines = [line for line in out.splitlines() if line.split() and line.split()[0] in ("cce", "mae", "lq")]
    assert [line.split()[0] for line in lines] == ["cce", "mae", "lq"]
    assert "uniform noise 0.4" in out


def test_bounds_prints_the_band(capsys):
    assert main(["bounds", "--classes", "10", "--q", "0.7"]) == 0
    out = capsys.readouterr().out
    assert "[11.4353, 12.8571]" in out  # (c - c^(1-q))/q and (c-1)/q for c=10, q=0.7
    assert "[18.0000, 18.0000]" in out  # MAE: 2(c-1)
    assert "inf" in out


@pytest.mark.parametrize(
    "args, fragment",
    [
        (["train", "--q", "1.5", "--out", "X"], "q: q must be in (0, 1]"),
        (["train", "--dataset", "imagenet", "--out", "X"], "allowed: digits"),
        (["train", "--noise", "uniform", "--noise-rate", "0.95", "--out", "X"], "1 - 1/c"),
        (["train", "--epochs", "100000", "--out", "X"], "epochs"),
        (["compare", "--losses", "focal"], "unknown loss 'focal'"),
        (["bounds", "--q", "0"], "q must be in (0, 1]"),
    ],
)
def test_bad_input_is_one_line_with_exit_code_2(tmp_path, capsys, args, fragment):
    args = [str(tmp_path / a) if a == "X" else a for a in args]
    assert main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert fragment in err


def test_missing_dataset_says_how_to_get_it(tmp_path, capsys):
    code = main(["train", "--dataset", "cifar10", "--data-root", str(tmp_path / "empty"), "--epochs", "1", "--out", str(tmp_path / "r")])
    assert code == 2
    err = capsys.readouterr().err
    assert "--download" in err and str(tmp_path / "empty") in err


def test_module_entry_point_has_no_traceback_for_user_error():
    proc = subprocess.run([sys.executable, "-m", "gce_core", "train", "--loss", "focal", "--out", "/tmp/x"],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "unknown loss" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "gce_core", "train", "--no-such-option"], capture_output=True, text=True)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr


def test_a_registry_loss_and_its_parameters_from_the_command_line(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--epochs", "1", "--loss", "sce", "--alpha", "0.5", "--out", str(out)]) == 0
    spec = json.loads((out / "spec.json").read_text())
    assert (spec["loss"], spec["alpha"], spec["beta"], spec["A"], spec["a"]) == ("sce", 0.5, 1.0, -4.0, None)
    assert "sce alpha=0.5 beta=1 A=-4 | clean | seed 0: test accuracy" in capsys.readouterr().out
    assert main(["train", *TINY, "--loss", "agce", "--a", "0", "--out", str(tmp_path / "bad")]) == 2
    assert capsys.readouterr().err.strip() == "error: a: a must be in (0, inf), got 0.0"


def test_the_loss_parameter_options_name_their_losses_and_defaults():
    text = build_parser().format_help() + build_parser()._subparsers._group_actions[0].choices["train"].format_help()
    for fragment in ("--alpha", "sce 0.1 in [0, inf)", "--A", "--a ", "aul 5.5", "--p ", "bootstrap_hard 0.8"):
        assert fragment in " ".join(text.split()), fragment


def test_compare_takes_every_registry_loss(capsys):
    assert main(["compare", *TINY, "--epochs", "1", "--losses", "cce,sce,nce_rce,bootstrap_hard"]) == 0
    out = capsys.readouterr().out
    assert [line.split()[0] for line in out.splitlines() if line.split() and line.split()[0] in
            ("cce", "sce", "nce_rce", "bootstrap_hard")] == ["cce", "sce", "nce_rce", "bootstrap_hard"]
    assert "nce_rce alpha=1 beta=1 A=-4" in out


def test_compare_gives_each_loss_its_own_q_unless_one_is_given(capsys, monkeypatch):
    import gce_core.train

    trained = []
    monkeypatch.setattr(gce_core.train, "train", lambda spec, on_epoch=None: trained.append(spec) or
                        {"test_acc_at_best_val": 0.5, "last_test_acc": 0.5, "best_test_acc": 0.5})
    assert main(["compare", *TINY, "--losses", "lq,agce,cce"]) == 0
    assert [s.loss_params() for s in trained] == [{"q": 0.7}, {"a": 0.6, "q": 0.6}, {}]
    trained.clear()
    assert main(["compare", *TINY, "--losses", "agce,lq,forward_est", "--q", "0.5", "--est-share", "0.5"]) == 0
    assert [s.loss_params() for s in trained] == [{"a": 0.6, "q": 0.5}, {"q": 0.5}, {"est_share": 0.5}]
    assert "forward_est est_share=0.5" in capsys.readouterr().out

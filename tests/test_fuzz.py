"""Fuzzing the lab's inputs (issue 19, defect 8): the client API, `python -m jobs` and
`python -m gce_core`, with a fixed seed and a few hundred cases each.

Every bad input is a refusal: the API raises SubmitRefused, ValueError or RunNotFound (never a
TypeError, RecursionError or UnicodeEncodeError), a CLI exits with code 1 or 2 and prints at most
three lines on stderr and no traceback; a refusal quotes at most ~100 characters of a bad value.
Whatever was accepted can be listed and shown. Nothing here trains: every `gce_core train` case
ends with `--epochs 0`, which is refused.
"""

import contextlib
import io
import json
import random
import subprocess
import sys
from pathlib import Path

import pytest

from gce_core.cli import main as gce_main
from gce_core.spec import RunSpec
from jobs.cli import main as jobs_main
from jobs.client import LabClient, RunNotFound, SubmitRefused

SEED = 19
ROOT = Path(__file__).resolve().parents[1]
HUGE = "z" * 1_000_000
TOO_MUCH = "z" * 130  # a refusal that quotes this much of HUGE echoed it


def _nested_list(depth):
    out = []
    for _ in range(depth):
        out = [out]
    return out


def _nested_dict(depth):
    out = {}
    for _ in range(depth):
        out = {"name": out}
    return out


DEEP = (_nested_list(5000), _nested_dict(3000))
NASTY = [
    None, 0, -1, 5, 2**70, -(2**70), 1e308, float("nan"), float("inf"), -0.0, 1e-300, True, 0.5,
    "", " ", "\x00", "a\ud800", "\udcff", "\x1b[31mred", "\u200b", "tab\there", "line\nbreak", HUGE,
    "'\"", "cuda:7", "cuda", "cpu", "digits", "cifar10", "lq", "cce", "uniform", "0.5", "-1", "1e-300",
    [], [1], ["a", "b"], [None], {}, {"a": 1}, b"bytes", *DEEP,
    "[" * 50_000, '{"loss": "lq"}', ("t1", "t2"), {"x"},
]
FIELDS = [*RunSpec.model_fields, "unknown_field", "k" * 500]
STATUSES = ["queued", "running", "bogus", "completed,failed"]


def _value(rng):
    return rng.choice(NASTY)


def _spec(rng):
    if rng.random() < 0.15:
        return _value(rng)
    spec = {"epochs": 1}
    for _ in range(rng.randint(0, 4)):
        spec[rng.choice(FIELDS)] = _value(rng)
    return spec


def _check_refusal(exc: BaseException) -> None:
    text = str(exc)
    assert TOO_MUCH not in text, f"echoes a long value: {text[:300]}"
    assert len(text) < 3000, f"{len(text)} characters: {text[:300]}"


def _api_case(client: LabClient, rng, ids: list[str]):
    kind = rng.randrange(12)
    some_id = rng.choice(ids) if ids and rng.random() < 0.5 else _value(rng)
    if kind == 0:
        return client.submit(_spec(rng), owner=rng.choice(["me", _value(rng)]),
                             group=rng.choice([None, _value(rng)]), tags=rng.choice([(), _value(rng), [_value(rng)]]))
    if kind == 1:
        return client.submit_group(rng.choice([[_spec(rng) for _ in range(rng.randint(0, 3))], _value(rng)]),
                                   tags=rng.choice([None, _value(rng)]))
    if kind == 2:
        return client.submit_grid(_spec(rng), losses=rng.choice([["lq", "cce"], _value(rng)]),
                                  noise_rates=rng.choice([[0.2], _value(rng), [_value(rng)]]),
                                  seeds=rng.choice([[0, 1], _value(rng), [_value(rng)]]))
    if kind == 3:
        return client.list_runs(status=rng.choice([None, _value(rng), rng.choice(STATUSES)]),
                                owner=rng.choice([None, _value(rng)]), tag=rng.choice([None, _value(rng)]),
                                limit=rng.choice([10, _value(rng)]), offset=rng.choice([0, _value(rng)]))
    if kind == 4:
        return client.count_runs(status=rng.choice([None, _value(rng)]), group=rng.choice([None, _value(rng)]))
    if kind == 5:
        return client.get(some_id)
    if kind == 6:
        return client.metrics(some_id, rng.choice([0, _value(rng)]))
    if kind == 7:
        return client.tag(some_id, rng.choice([[_value(rng)], _value(rng), ["ok"]]))
    if kind == 8:
        return client.archive(some_id, rng.choice([True, False, _value(rng)]))
    if kind == 9:
        return client.cancel(some_id)
    if kind == 10:
        return client.export_csv(rng.choice([[some_id], _value(rng)]))
    return client.metrics_frame(rng.choice([[some_id], _value(rng)]))


def test_the_client_api_refuses_every_fuzzed_input_without_crashing(lab_home):
    rng = random.Random(SEED)
    client = LabClient(f"sqlite:///{lab_home / 'gce_lab.db'}")
    ids: list[str] = []
    refused = accepted = 0
    for case in range(300):
        try:
            result = _api_case(client, rng, ids)
        except (SubmitRefused, ValueError, RunNotFound) as exc:
            _check_refusal(exc)
            refused += 1
            continue
        except Exception as exc:
            pytest.fail(f"case {case}: {type(exc).__name__}: {str(exc)[:300]}")
        accepted += 1
        if isinstance(result, str) and len(result) == 12 and not result.startswith("run_id"):
            ids.append(result)  # submit's
        elif isinstance(result, tuple) and len(result) == 2 and isinstance(result[1], list):
            ids += result[1]  # submit_group's and submit_grid's
    assert refused > 100 and accepted > 30  # both sides exercised
    # whatever was accepted can be read back, listed and shown
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert jobs_main(["--db", client.url, "list", "--all", "--limit", "1000"]) == 0
        for run_id in ids[:20]:
            assert jobs_main(["--db", client.url, "show", run_id]) == 0
    for run_id in ids:
        run = client.get(run_id)
        assert run.name.isprintable() and run.owner.isprintable()
    client.close()


def _cli_value(rng, files):
    """A command-line word: a nasty value as text (argv holds text only; a lone surrogate is what
    Python makes of bytes that are not UTF-8), or one of the spec files."""
    v = rng.choice([*NASTY, *files, *files])
    if isinstance(v, str):
        return v
    if isinstance(v, bytes):
        return v.decode()
    if isinstance(v, (list, dict, tuple, set)):
        if any(v is deep for deep in DEEP):
            return "[" * 1000
        return json.dumps(list(v) if isinstance(v, (tuple, set)) else v)
    return str(v)


def _spec_files(tmp_path: Path) -> list[str]:
    contents = {"list.json": "[1, 2]", "nested.json": "[" * 100_000 + "]" * 100_000, "empty.json": "",
                "binary.json": b"\xff\xfe\x00garbage", "number.json": "5", "null.json": "null",
                "ok.json": '{"loss": "cce"}', "huge.json": json.dumps({"name": HUGE}),
                "bad_field.json": json.dumps({"nope": 1, "model": "z" * 5000})}
    paths = []
    for name, text in contents.items():
        path = tmp_path / name
        if isinstance(text, bytes):
            path.write_bytes(text)
        else:
            path.write_text(text)
        paths.append(str(path))
    return [*paths, str(tmp_path), str(tmp_path / "missing.json")]


def _run_cli(main, argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:  # argparse
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def _check_cli(argv, code, err):
    assert code in (0, 1, 2), (argv[:6], code, err[:300])
    assert "Traceback" not in err, err[-2000:]
    assert TOO_MUCH not in err, f"echoes a long value: {err[:300]}"
    if code != 0:
        assert err.startswith("error: ") and len(err.strip().splitlines()) <= 3, err[:600]


JOBS_OPTIONS = {
    "submit": ["--epochs", "--loss", "--lr", "--noise", "--noise-rate", "--dataset", "--device", "--tag",
               "--owner", "--group", "--spec", "--preset", "--seeds", "--noise-rates", "--losses",
               "--name", "--val-fraction", "--lr-milestones", "--q", "--bogus"],
    "list": ["--status", "--owner", "--group", "--tag", "--limit", "--offset", "--bogus"],
    "show": ["--lines"], "logs": ["-n"], "cancel": [], "export": ["--group", "-o"],
}


def test_the_jobs_command_line_refuses_every_fuzzed_input_in_one_line(lab_home, tmp_path):
    rng = random.Random(SEED)
    files = _spec_files(tmp_path)
    url = f"sqlite:///{lab_home / 'gce_lab.db'}"
    codes = set()
    for _ in range(150):
        command = rng.choice([*JOBS_OPTIONS, "bogus"])
        argv = ["--db", url, command]
        if command in ("show", "logs", "cancel", "export") and rng.random() < 0.8:
            argv.append(_cli_value(rng, files))
        for _ in range(rng.randint(0, 4)):
            argv += [rng.choice(JOBS_OPTIONS.get(command) or ["--x"]), _cli_value(rng, files)]
        if command == "export" and "-o" in argv:
            argv[argv.index("-o") + 1] = str(tmp_path / "out.csv")
        code, _out, err = _run_cli(jobs_main, argv)
        _check_cli(argv, code, err)
        codes.add(code)
    assert {0, 2} <= codes


GCE_OPTIONS = {
    "train": ["--loss", "--lr", "--noise", "--noise-rate", "--dataset", "--device", "--spec", "--preset",
              "--q", "--k", "--model", "--name", "--val-fraction", "--seed", "--bogus"],
    "compare": ["--losses", "--seeds", "--spec", "--noise-rate"],
    "bounds": ["--classes", "--q", "--k", "--rate"],
}


def test_the_gce_core_command_line_refuses_every_fuzzed_input_in_one_line(tmp_path):
    rng = random.Random(SEED)
    files = _spec_files(tmp_path)
    codes = set()
    for _ in range(100):
        command = rng.choice([*GCE_OPTIONS, "bogus"])
        argv = [command]
        for _ in range(rng.randint(0, 4)):
            argv += [rng.choice(GCE_OPTIONS.get(command) or ["--x"]), _cli_value(rng, files)]
        if command in ("train", "compare"):
            argv += ["--epochs", "0"]  # never trains
        if command == "train":
            argv += ["--out", str(tmp_path / "out")]
        code, _out, err = _run_cli(gce_main, argv)
        _check_cli(argv, code, err)
        codes.add(code)
    assert 2 in codes


@pytest.mark.parametrize("module", ["jobs", "gce_core"])
def test_an_argument_error_is_one_line_and_a_hint_not_the_usage_block(module, lab_home):
    argv = ["submit" if module == "jobs" else "train", "--epochs", "x" * 5000]
    done = subprocess.run([sys.executable, "-m", module, *argv], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env={**__import__("os").environ, "GCE_LAB_HOME": str(lab_home)})
    assert done.returncode == 2 and done.stdout == ""
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 2 and "usage:" not in done.stderr, done.stderr
    assert lines[0].startswith("error: argument --epochs: invalid int value: 'xxxx")
    assert "… (5002 characters)" in lines[0] and len(lines[0]) < 250
    assert lines[1] == f"(`python -m {module} {argv[0]} --help` lists the options)"


def test_the_inputs_fuzzing_found_are_each_a_refusal(lab_home, tmp_path):
    client = LabClient(f"sqlite:///{lab_home / 'gce_lab.db'}")
    assert client.get(client.submit({"epochs": 1}, tags=None)).tags == ()  # None is no tags
    refusals = {
        "tags=5": lambda: client.submit({}, tags=5),
        "nested JSON": lambda: client.submit("[" * 100_000 + "]" * 100_000),
        "lone surrogate owner": lambda: client.submit({}, owner="me\ud800"),
        "control characters in owner": lambda: client.submit({}, owner="me\x1b[2J"),
        "control characters in group": lambda: client.submit({}, group="g\x00"),
        "control characters in name": lambda: client.submit({"name": "n\x07"}),
        "a 1,000,000-character value": lambda: client.submit({"model": HUGE}),
        "a 1,000,000-character owner": lambda: client.submit({}, owner=HUGE),
    }
    for what, call in refusals.items():
        with pytest.raises(SubmitRefused) as info:
            call()
        assert len(str(info.value)) < 400 and TOO_MUCH not in str(info.value), what
    with pytest.raises(ValueError, match="must be text"):
        client.list_runs(owner="\ud800")
    client.close()
    spec = tmp_path / "spec.json"
    spec.write_text("[1, 2]")
    for main, argv in ((jobs_main, ["--db", f"sqlite:///{lab_home / 'gce_lab.db'}", "submit", "--spec", str(spec)]),
                       (gce_main, ["train", "--spec", str(spec), "--out", str(tmp_path / "out")])):
        code, _out, err = _run_cli(main, argv)
        assert code == 2 and err == f"error: --spec {spec}: a spec file holds one JSON object " \
                                   '({"loss": "lq", ...}), not a list\n'

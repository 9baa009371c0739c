"""app.__main__ (`python -m app`): refusals, exit reasons, the supervision loop with fake children."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from app import __main__ as launcher


def test_public_address_without_password_is_refused(lab_home):
    env = {k: v for k, v in os.environ.items() if k != "GCE_LAB_PASSWORD"}
    proc = subprocess.run(
        [sys.executable, "-m", "app", "--address", "0.0.0.0", "--port", "1"],
        cwd=launcher.ROOT, env=env, capture_output=True, text=True, timeout=60,
    )
    assert proc.returncode == 2
    assert "refusing to serve the lab on '0.0.0.0' without a password" in proc.stderr
    assert "GCE_LAB_PASSWORD" in proc.stderr


def test_busy_port_is_reported(lab_home):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert "cannot listen on 127.0.0.1" in launcher.port_problem("127.0.0.1", port)
        assert launcher.main(["--port", str(port)]) == 2  # refused before starting anything


def test_commands_start_the_worker_and_streamlit_on_loopback():
    cmds = launcher.commands("127.0.0.1", 8600, slots=2)
    assert cmds["worker"][1:] == ["-m", "jobs", "worker", "--slots", "2"]
    server = cmds["server"]
    assert server[1:4] == ["-m", "streamlit", "run"] and server[4].endswith("app/main.py")
    assert server[server.index("--server.address") + 1] == "127.0.0.1"
    assert server[server.index("--server.port") + 1] == "8600"
    assert "--slots" not in launcher.commands("127.0.0.1", 8600, slots=None)["worker"]


@pytest.mark.parametrize(("code", "text"), [(0, "exit code 0"), (3, "exit code 3"), (-9, "killed by signal SIGKILL"), (-15, "killed by signal SIGTERM")])
def test_describe_exit(code, text):
    assert launcher.describe_exit(code) == text


def _fake(name_code: dict[str, str]) -> dict[str, list[str]]:
    """Children that run a line of Python each."""
    return {name: [sys.executable, "-c", code] for name, code in name_code.items()}


def test_loop_stops_when_a_child_dies_and_says_which(capsys):
    cmds = _fake({"worker": "import sys; sys.exit(3)", "server": "import time; time.sleep(60)"})
    lab = launcher.Launcher(cmds, "http://127.0.0.1:9", dict(os.environ))
    lab.start()
    try:
        code = None
        for _ in range(100):
            time.sleep(0.1)
            code = lab.tick()
            if code is not None:
                break
        assert code == 1
    finally:
        lab.stop(signal.SIGTERM)
    err = capsys.readouterr().err
    assert "the worker" in err and "stopped, exit code 3; stopping the lab" in err
    assert all(child.poll() is not None for child in lab.children.values())


def test_signal_is_forwarded_to_both_children(tmp_path):
    marker = tmp_path / "got"
    code = (
        "import signal, sys, time, pathlib\n"
        f"def h(s, f): pathlib.Path({str(marker)!r} + sys.argv[1]).write_text(str(s)); sys.exit(0)\n"
        "signal.signal(signal.SIGINT, h)\n"
        "time.sleep(60)\n"
    )
    cmds = {name: [sys.executable, "-c", code, name] for name in ("worker", "server")}
    lab = launcher.Launcher(cmds, "http://127.0.0.1:9", dict(os.environ))
    lab.start()
    time.sleep(1.5)  # let both install their handler
    lab.on_signal(signal.SIGINT, None)
    assert lab.tick() == 0
    lab.stop(signal.SIGINT)
    for name in ("worker", "server"):
        assert (tmp_path / f"got{name}").read_text() == str(int(signal.SIGINT))


def test_no_worker_starts_the_web_server_alone():
    cmds = launcher.commands("0.0.0.0", 8600, slots=None, worker=False)
    assert list(cmds) == ["server"]
    assert cmds["server"][cmds["server"].index("--server.address") + 1] == "0.0.0.0"
    assert launcher.build_parser().parse_args(["--no-worker"]).no_worker is True


def test_no_worker_still_needs_a_password_for_a_public_address(lab_home, capsys, monkeypatch):
    monkeypatch.delenv("GCE_LAB_PASSWORD", raising=False)
    assert launcher.main(["--no-worker", "--address", "0.0.0.0", "--port", "8655"]) == 2
    assert "password" in capsys.readouterr().err.lower()

"""app.__main__ (`python -m app`): refusals, exit reasons, the supervision loop with fake children,
and a real lab whose children die with the launcher (SIGHUP, kill -9)."""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import pytest

from app import __main__ as launcher
from tests.app_helpers import lab_processes
from tests.conftest import free_port


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
    assert server[1:4] == ["-m", "streamlit", "run"] and server[4].endswith("app/serve.py")  # behind the host guard
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


def test_public_host_needs_a_password(lab_home, capsys, monkeypatch):
    assert launcher.main(["--public-host", "lab.example.org", "--port", "1"]) == 2
    assert "refusing to answer to lab.example.org without a password" in capsys.readouterr().err
    monkeypatch.setenv("GCE_LAB_PASSWORD", "s3cret")
    assert launcher.main(["--public-host", "http://lab.example.org", "--port", "1"]) == 2
    assert "is not a host name" in capsys.readouterr().err


def test_a_held_port_names_the_process_that_holds_it(lab_home):
    holder = subprocess.Popen(
        [sys.executable, "-c", "import socket, sys, time; s = socket.socket(); s.bind(('127.0.0.1', 0)); s.listen(); "
         "print(s.getsockname()[1], flush=True); time.sleep(120)"],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        port = int(holder.stdout.readline())
        assert launcher.port_holders(port) == [(holder.pid, f"{sys.executable} -c " + holder.args[2])]
        problem = launcher.port_problem("127.0.0.1", port)
        assert problem.startswith(f"cannot listen on 127.0.0.1:{port} (Address already in use): process {holder.pid} holds it, another program")
        assert f"`kill {holder.pid}`" in problem
        assert launcher.port_problem("192.0.2.1", port) == f"cannot listen on 192.0.2.1:{port} (Cannot assign requested address); check --address and --port."
    finally:
        holder.kill()
        holder.wait()


# --- a real lab: the children go when the launcher goes ---------------------------------------------
def wait_for(check, timeout: float):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := check():
            return value
        time.sleep(0.25)
    return check()


def start_lab(home: pathlib.Path, port: int, *extra: str) -> subprocess.Popen:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCE_LAB_") or k == "GCE_LAB_DATA"}
    env["GCE_LAB_HOME"] = str(home)
    log = open(home / "lab.log", "ab")  # noqa: SIM115 - closed with the process
    proc = subprocess.Popen([sys.executable, "-m", "app", "--port", str(port), *extra],
                            cwd=launcher.ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    log.close()
    up = wait_for(lambda: proc.poll() is not None or launcher.healthy(f"http://127.0.0.1:{port}"), 120)
    assert up and proc.poll() is None, (home / "lab.log").read_text()
    return proc


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="the parent-death signal is Linux's")
@pytest.mark.parametrize("how", ["SIGKILL", "SIGHUP"])
def test_the_worker_and_the_server_die_with_the_launcher(lab_home, how):
    port = free_port()
    proc = start_lab(lab_home, port, "--slots", "1")
    try:
        children = wait_for(lambda: len(lab_processes(lab_home)) >= 3 and lab_processes(lab_home), 60)
        assert proc.pid in children and len(children) >= 3  # launcher, worker, server (and run processes)
        os.kill(proc.pid, getattr(signal, how))
        proc.wait(timeout=60)
        left = wait_for(lambda: not lab_processes(lab_home), 90) or lab_processes(lab_home)
        assert left is True, f"still running after {how} of the launcher: {left}"
        assert launcher.port_problem("127.0.0.1", port) is None  # the next `make run` can start
    finally:
        for pid in lab_processes(lab_home):  # only on failure: this test's own processes
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    if how == "SIGHUP":
        assert proc.returncode == 0
        assert "SIGHUP received, stopping the worker and the server" in (lab_home / "lab.log").read_text()

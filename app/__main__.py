"""`python -m app`: start the lab, the job worker and the Streamlit server, as one command.

Both run as child processes in their own sessions; Ctrl-C (SIGINT) or SIGTERM is forwarded to
both, and the launcher exits when either child dies, saying which and why. The store lives in
$GCE_LAB_HOME (default ~/.gce_lab), so a restart picks up where the lab stopped.

    python -m app [--address 127.0.0.1] [--port 8501] [--slots N] [--no-worker]

--no-worker starts the web server alone, for setups where workers run elsewhere (the compose
file's `worker` service, a Ray cluster).

A non-loopback --address is refused unless a password is configured ($GCE_LAB_PASSWORD or
`password` in .streamlit/secrets.toml).
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from app.auth import BindRefused, check_bind
from app.settings import configured_password

ROOT = pathlib.Path(__file__).resolve().parent.parent
MAIN = ROOT / "app" / "main.py"
STOP_TIMEOUT_S = {"worker": 30.0, "server": 10.0}  # the worker checkpoints its runs first
POLL_S = 0.2


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n")[0])
    p.add_argument("--address", default="127.0.0.1", help="address the web server binds (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8501, help="web server port (default: 8501)")
    p.add_argument("--slots", type=int, default=None, help="runs trained at once (default: the worker's, $GCE_LAB_SLOTS or half the CPU cores)")
    p.add_argument("--no-worker", action="store_true", help="start the web server only; workers run elsewhere (default: start one)")
    return p


def commands(address: str, port: int, slots: int | None, worker: bool = True) -> dict[str, list[str]]:
    """The child commands: the job worker (unless ``worker`` is False) and the Streamlit server."""
    cmds: dict[str, list[str]] = {}
    if worker:
        cmds["worker"] = [sys.executable, "-m", "jobs", "worker"]
        if slots is not None:
            cmds["worker"] += ["--slots", str(slots)]
    server = [
        sys.executable, "-m", "streamlit", "run", str(MAIN),
        "--server.address", address, "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
    ]
    cmds["server"] = server
    return cmds


def port_problem(address: str, port: int) -> str | None:
    """A message when (address, port) cannot be bound, else None."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as exc:
            return f"cannot listen on {address}:{port} ({exc.strerror}); is a lab already running? Pick another --port."
    return None


def describe_exit(code: int) -> str:
    """'exit code 1' or 'killed by signal SIGKILL'."""
    if code < 0:
        try:
            return f"killed by signal {signal.Signals(-code).name}"
        except ValueError:
            return f"killed by signal {-code}"
    return f"exit code {code}"


def healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


class Launcher:
    """Owns the two children. Signal handlers only set ``stop_signal``; ``tick`` does the work."""

    def __init__(self, cmds: dict[str, list[str]], url: str, env: dict[str, str]):
        self.cmds, self.url, self.env = cmds, url, env
        self.children: dict[str, subprocess.Popen] = {}
        self.stop_signal: int | None = None
        self.announced = False

    def start(self) -> None:
        for name, cmd in self.cmds.items():
            self.children[name] = subprocess.Popen(cmd, cwd=ROOT, env=self.env, start_new_session=True)

    def on_signal(self, signum: int, _frame) -> None:
        self.stop_signal = signum

    def tick(self) -> int | None:
        """One step: None to go on, else the exit code of the launcher."""
        if self.stop_signal is not None:
            print(f"gce-lab: {signal.Signals(self.stop_signal).name} received, stopping the worker and the server", flush=True)
            return 0
        for name, child in self.children.items():
            code = child.poll()
            if code is not None:
                print(f"gce-lab: the {name} ({' '.join(self.cmds[name][1:4])}) stopped, {describe_exit(code)}; stopping the lab", file=sys.stderr, flush=True)
                return 1
        if not self.announced and healthy(self.url):
            self.announced = True
            print(f"gce-lab: the lab is up at {self.url}  (Ctrl-C stops it; runs and results stay in the store)", flush=True)
        return None

    def stop(self, signum: int) -> None:
        """Forward ``signum`` to each live child, wait, then kill what is left."""
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signum)
        for name, child in self.children.items():
            try:
                child.wait(timeout=STOP_TIMEOUT_S[name])
            except subprocess.TimeoutExpired:
                print(f"gce-lab: the {name} did not stop in {STOP_TIMEOUT_S[name]:g} s, killing it", file=sys.stderr, flush=True)
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        check_bind(args.address, configured_password())
    except BindRefused as exc:
        print(f"gce-lab: {exc}", file=sys.stderr)
        return 2
    problem = port_problem(args.address, args.port)
    if problem:
        print(f"gce-lab: {problem}", file=sys.stderr)
        return 2
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    host = f"[{args.address}]" if ":" in args.address else args.address
    launcher = Launcher(commands(args.address, args.port, args.slots, worker=not args.no_worker), f"http://{host}:{args.port}", env)
    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, launcher.on_signal)
    launcher.start()
    code = None
    try:
        while code is None:
            time.sleep(POLL_S)
            code = launcher.tick()
    finally:
        launcher.stop(launcher.stop_signal or signal.SIGTERM)
    return code


if __name__ == "__main__":
    sys.exit(main())

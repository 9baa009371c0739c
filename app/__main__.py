"""`python -m app`: start the lab, the job worker and the Streamlit server, as one command.

Both run as child processes in their own sessions; Ctrl-C (SIGINT), SIGTERM or SIGHUP (the
terminal closed) stops both, and the launcher exits when either child dies, saying which and why.
Should the launcher itself be killed (kill -9), the children get SIGTERM from the kernel (Linux's
parent-death signal) and stop as on Ctrl-C. The store lives in $GCE_LAB_HOME (default
~/.gce_lab), so a restart picks up where the lab stopped; a port still held is reported with the
process that holds it.

    python -m app [--address 127.0.0.1] [--port 8501] [--slots N] [--no-worker] [--public-host NAME]

--no-worker starts the web server alone, for setups where workers run elsewhere (the compose
file's `worker` service, a Ray cluster).

A non-loopback --address, and --public-host, are refused unless a password is configured
($GCE_LAB_PASSWORD or `password` in .streamlit/secrets.toml). The web server answers only
requests for the lab's own names (app/guard.py): loopback, the addresses it listens on, and the
--public-host names.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import errno
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time
import urllib.request

from app.auth import BindRefused, check_bind
from app.settings import PUBLIC_HOST_ENV, configured_password, public_hosts

ROOT = pathlib.Path(__file__).resolve().parent.parent
SERVE = ROOT / "app" / "serve.py"  # app/main.py behind the host guard (app/guard.py)
STOP_TIMEOUT_S = {"worker": 30.0, "server": 10.0}  # the worker checkpoints its runs first
POLL_S = 0.2
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


def say(text: str, err: bool = False) -> None:
    """Print a line; after SIGHUP the terminal may be gone, which must not stop the shutdown."""
    with contextlib.suppress(OSError, ValueError):
        print(f"gce-lab: {text}", file=sys.stderr if err else sys.stdout, flush=True)


def die_with(parent_pid: int):
    """A preexec_fn for a child: the kernel sends it SIGTERM when the launcher dies, even by
    SIGKILL (Linux; elsewhere a no-op). Exits at once if the launcher is already gone."""

    def preexec() -> None:
        if not sys.platform.startswith("linux"):
            return
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, int(signal.SIGTERM), 0, 0, 0)
        if os.getppid() != parent_pid:  # died between fork and prctl
            os._exit(0)

    return preexec


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m app", description=__doc__.split("\n")[0])
    p.add_argument("--address", default="127.0.0.1", help="address the web server binds (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=int, default=8501, help="web server port (default: 8501)")
    p.add_argument("--slots", type=int, default=None, help="runs trained at once (default: the worker's, $GCE_LAB_SLOTS or half the CPU cores, at least 3)")
    p.add_argument("--no-worker", action="store_true", help="start the web server only; workers run elsewhere (default: start one)")
    p.add_argument("--public-host", action="append", default=[], metavar="NAME", help="a name the lab is reached by besides loopback (a reverse proxy, a DNS name), repeatable; needs a password (default: $GCE_LAB_PUBLIC_HOST)")
    return p


def commands(address: str, port: int, slots: int | None, worker: bool = True) -> dict[str, list[str]]:
    """The child commands: the job worker (unless ``worker`` is False) and the Streamlit server."""
    cmds: dict[str, list[str]] = {}
    if worker:
        cmds["worker"] = [sys.executable, "-m", "jobs", "worker"]
        if slots is not None:
            cmds["worker"] += ["--slots", str(slots)]
    server = [
        sys.executable, "-m", "streamlit", "run", str(SERVE),
        "--server.address", address, "--server.port", str(port), "--server.headless", "true",
        "--browser.gatherUsageStats", "false", "--server.fileWatcherType", "none",
    ]
    cmds["server"] = server
    return cmds


def port_holders(port: int) -> list[tuple[int, str]]:
    """(pid, command line) of the processes listening on TCP ``port`` that this user can see
    (Linux /proc; empty elsewhere or when the holder is another user's)."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = pathlib.Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if len(fields) > 9 and fields[3] == "0A" and int(fields[1].rsplit(":", 1)[1], 16) == port:
                inodes.add(f"socket:[{fields[9]}]")
    found = []
    if not inodes:
        return found
    for proc in pathlib.Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(os.readlink(fd) in inodes for fd in (proc / "fd").iterdir()):
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
                found.append((int(proc.name), cmd))
        except OSError:
            continue
    return sorted(found)


def port_problem(address: str, port: int) -> str | None:
    """A message when (address, port) cannot be bound, naming what holds it, else None."""
    family = socket.AF_INET6 if ":" in address else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((address, port))
        except OSError as exc:
            problem = f"cannot listen on {address}:{port} ({exc.strerror})"
            if exc.errno != errno.EADDRINUSE:  # an address not on this machine, a privileged port
                return f"{problem}; check --address and --port."
        else:
            return None
    holders = port_holders(port)
    if not holders:
        return f"{problem}; another user's process may hold it (`ss -ltnp 'sport = :{port}'` shows which). Pick another --port."
    pid, cmd = holders[0]
    shown = cmd if len(cmd) <= 160 else cmd[:160] + "..."
    if "streamlit" in cmd and ("app/serve.py" in cmd or "app/main.py" in cmd):
        what = "a GCE Lab web server still running (an earlier `python -m app`?)"
    else:
        what = "another program"
    return f"{problem}: process {pid} holds it, {what}: {shown}. Stop it (`kill {pid}`) or pick another --port."


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
            self.children[name] = subprocess.Popen(
                cmd, cwd=ROOT, env=self.env, start_new_session=True, preexec_fn=die_with(os.getpid()),
            )

    def on_signal(self, signum: int, _frame) -> None:
        self.stop_signal = signum

    def tick(self) -> int | None:
        """One step: None to go on, else the exit code of the launcher."""
        if self.stop_signal is not None:
            say(f"{signal.Signals(self.stop_signal).name} received, stopping the worker and the server")
            return 0
        for name, child in self.children.items():
            code = child.poll()
            if code is not None:
                say(f"the {name} ({' '.join(self.cmds[name][1:4])}) stopped, {describe_exit(code)}; stopping the lab", err=True)
                return 1
        if not self.announced and healthy(self.url):
            self.announced = True
            say(f"the lab is up at {self.url}  (Ctrl-C stops it; runs and results stay in the store)")
        return None

    def stop(self, signum: int) -> None:
        """Forward ``signum`` to each live child (SIGTERM for SIGHUP: the worker's graceful stop),
        wait, then kill what is left."""
        if signum == signal.SIGHUP:
            signum = signal.SIGTERM
        for child in self.children.values():
            if child.poll() is None:
                child.send_signal(signum)
        for name, child in self.children.items():
            try:
                child.wait(timeout=STOP_TIMEOUT_S[name])
            except subprocess.TimeoutExpired:
                say(f"the {name} did not stop in {STOP_TIMEOUT_S[name]:g} s, killing it", err=True)
                os.killpg(child.pid, signal.SIGKILL)
                child.wait()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    password = configured_password()
    try:
        check_bind(args.address, password)
        names = public_hosts({PUBLIC_HOST_ENV: ",".join([os.environ.get(PUBLIC_HOST_ENV, ""), *args.public_host])})
    except (BindRefused, ValueError) as exc:
        say(str(exc), err=True)
        return 2
    if names and not password:
        say(f"refusing to answer to {', '.join(names)} without a password: anyone who reaches the lab by "
            "that name could launch runs. Set GCE_LAB_PASSWORD (or `password` in .streamlit/secrets.toml).", err=True)
        return 2
    problem = port_problem(args.address, args.port)
    if problem:
        say(problem, err=True)
        return 2
    env = dict(os.environ)
    env[PUBLIC_HOST_ENV] = ",".join(names)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    host = f"[{args.address}]" if ":" in args.address else args.address
    launcher = Launcher(commands(args.address, args.port, args.slots, worker=not args.no_worker), f"http://{host}:{args.port}", env)
    for signum in STOP_SIGNALS:
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

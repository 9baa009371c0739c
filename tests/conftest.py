"""Shared fixtures.

``lab_home``: an empty lab home in tmp_path ($GCE_LAB_HOME), with every other GCE_LAB_* variable
cleared (but GCE_LAB_DATA, the data folder) so the developer's own settings never leak into a
test.
``store_url``: a fresh database for the job runner, one per backend in STORE_BACKENDS; the store
contract suite (and every other test that takes ``store_url``) runs once per backend.
``postgres_server``: a throwaway PostgreSQL cluster of this test session on 127.0.0.1 (Debian's
postgresql, which `make test` installs when missing and run as root); the PostgreSQL tests skip,
saying why, when its binaries or psycopg are missing.
"""

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from itertools import count
from pathlib import Path

import pytest

# Database backends the store contract suite runs against.
STORE_BACKENDS = ["sqlite", "postgresql"]

PG_INSTALL = ("`make test` installs it when run as root (apt-get install -y postgresql); "
              "or pip install -r requirements-extras.txt for psycopg")


@pytest.fixture
def lab_home(tmp_path, monkeypatch):
    for name in list(os.environ):
        if name.startswith("GCE_LAB_") and name != "GCE_LAB_DATA":
            monkeypatch.delenv(name)
    home = tmp_path / "lab"
    home.mkdir()
    monkeypatch.setenv("GCE_LAB_HOME", str(home))
    return home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pg_bindir() -> Path | None:
    """Debian keeps initdb and pg_ctl in /usr/lib/postgresql/<version>/bin, off the PATH."""
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"),
                      key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if versions:
        return versions[-1].parent
    found = shutil.which("pg_ctl")
    return Path(found).parent if found and shutil.which("initdb") else None


class PostgresServer:
    """A PostgreSQL cluster in a temporary folder, on 127.0.0.1 only (and a socket in that folder),
    trusting local connections. ``new_database()`` gives each test its own database."""

    USER = "lab"

    def __init__(self, bindir: Path, run_as: list[str], root: str, port: int):
        self.bindir, self.run_as, self.root, self.port = bindir, run_as, root, port
        self.data, self.log = f"{root}/data", f"{root}/server.log"
        self._names = count()

    def _pg(self, tool: str, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([*self.run_as, str(self.bindir / tool), *args], capture_output=True,
                              text=True, timeout=120, check=False)

    def _log_tail(self) -> str:
        try:
            return Path(self.log).read_text(errors="replace")[-1500:]
        except OSError:
            return ""

    def start(self) -> str | None:
        """None once it accepts connections, else why not."""
        init = self._pg("initdb", "-D", self.data, "-U", self.USER, "-A", "trust", "-E", "UTF8", "--no-sync")
        if init.returncode:
            return f"initdb failed: {(init.stderr or init.stdout).strip()[-800:]}"
        options = (f"-h 127.0.0.1 -p {self.port} -k {self.root} -c fsync=off -c synchronous_commit=off "
                   "-c full_page_writes=off -c max_connections=300")
        started = self._pg("pg_ctl", "-D", self.data, "-l", self.log, "-w", "-t", "60", "-o", options, "start")
        if started.returncode:
            return f"pg_ctl start failed: {(started.stderr or started.stdout).strip()[-400:]}\n{self._log_tail()}"
        return None

    def stop(self) -> None:
        self._pg("pg_ctl", "-D", self.data, "-m", "immediate", "-w", "stop")
        shutil.rmtree(self.root, ignore_errors=True)

    def url(self, database: str) -> str:
        return f"postgresql+psycopg://{self.USER}@127.0.0.1:{self.port}/{database}"

    def _admin(self, sql: str) -> None:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=self.USER, dbname="postgres",
                             autocommit=True) as conn:
            conn.execute(sql)

    def new_database(self) -> str:
        name = f"lab_test_{next(self._names)}"
        self._admin(f"CREATE DATABASE {name}")
        return name

    def drop_database(self, name: str) -> None:
        self._admin(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


@pytest.fixture(scope="session")
def postgres_server():
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip(f"PostgreSQL tests skipped: the server (initdb, pg_ctl) is not installed; {PG_INSTALL}")
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("PostgreSQL tests skipped: psycopg is not installed; pip install -r requirements-extras.txt")
    root = tempfile.mkdtemp(prefix="gce-pg-")
    run_as: list[str] = []
    if os.geteuid() == 0:  # initdb refuses root: run the server as the postgres user
        runuser = shutil.which("runuser")
        try:
            owner = pwd.getpwnam("postgres")
        except KeyError:
            owner = None
        if owner is None or runuser is None:
            shutil.rmtree(root, ignore_errors=True)
            pytest.skip("PostgreSQL tests skipped: running as root without a `postgres` user and runuser "
                        "to start the server as (initdb refuses root)")
        os.chown(root, owner.pw_uid, owner.pw_gid)
        run_as = [runuser, "-u", "postgres", "--"]
    server = PostgresServer(bindir, run_as, root, free_port())
    problem = server.start()
    if problem:
        server.stop()
        pytest.skip(f"PostgreSQL tests skipped: could not start a server on 127.0.0.1: {problem}")
    yield server
    server.stop()


@pytest.fixture(params=STORE_BACKENDS)
def store_url(request, lab_home):
    if request.param == "sqlite":
        yield f"sqlite:///{lab_home / 'gce_lab.db'}"
    elif request.param == "postgresql":
        server = request.getfixturevalue("postgres_server")
        name = server.new_database()
        yield server.url(name)
        server.drop_database(name)
    else:
        raise NotImplementedError(f"no fixture for store backend {request.param!r}")


@pytest.fixture
def cli(store_url, capsys):
    """``python -m jobs`` in this process against the test's store: (exit code, stdout, stderr)."""
    from jobs.cli import main

    def run(*argv):
        code = main(["--db", store_url, *argv])
        out, err = capsys.readouterr()
        return code, out, err

    return run

"""The Ray executor on a real Ray cluster on this machine's loopback.

One head node for this file (`ray start --head --block`, 2 CPUs, node address 127.0.0.1, in its own
session), stopped at the end with every process of its session. The supervisor runs in the test's
process, which is the Ray driver, and is driven by tick(now); every run is a Ray task in a fresh
Ray worker that imports torch, so the specs are tiny and the number of runs is small.
"""

import importlib.util
import ipaddress
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from jobs import config
from jobs.client import LabClient
from jobs.config import SupervisorSettings
from jobs.executor_ray import CPU_SLOT, INSTALL
from jobs.procs import pid_alive
from jobs.status import RunStatus
from jobs.supervisor import Supervisor
from tests.conftest import free_port

pytestmark = pytest.mark.timeout(300)
HAVE_RAY = importlib.util.find_spec("ray") is not None


def on_ray(test):
    """A test on the real cluster: slow, and on one store backend (the store itself is checked on
    every backend by test_jobs_store.py)."""
    return pytest.mark.slow(pytest.mark.parametrize("store_url", ["sqlite"], indirect=True)(test))

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(dataset="digits", model="mlp", train_subset=200, epochs=3, batch_size=64, lr=0.1)
FULL = dict(dataset="digits", model="mlp", batch_size=32, lr=0.05)  # ~0.05 s per epoch


# --- without a cluster: resources, configuration, and Ray missing --------------------------------
class FakeRay:
    """Just enough of the ray module to see what the executor asks of it."""

    class exceptions:  # mirrors ray.exceptions
        RayError = TaskCancelledError = WorkerCrashedError = type("RayError", (Exception,), {})

    def __init__(self, resources):
        self.resources, self.inits, self.submitted, self.remote_options = resources, [], [], {}

    def is_initialized(self):
        return bool(self.inits)

    def init(self, **kwargs):
        self.inits.append(kwargs)

    def cluster_resources(self):
        return self.resources

    def remote(self, **options):
        self.remote_options = options
        fake = self

        class Bound:
            def __init__(self, opts):
                self.opts = opts

            def remote(self, *args):
                fake.submitted.append((self.opts, args))
                return f"ref-{len(fake.submitted)}"

        class Remote:
            def options(self, **opts):
                return Bound(opts)

        return lambda fn: Remote()


@pytest.fixture
def fake_ray(monkeypatch):
    from jobs import executor_ray

    def make(resources):
        fake = FakeRay(resources)
        monkeypatch.setattr(executor_ray, "import_ray", lambda: fake)
        return fake

    return make


def claimed(client, **spec):
    client.submit({**TINY, **spec})
    return client.store.claim(worker_id="w", host="h", device="ray:gpu", now=time.time())


def test_each_run_asks_ray_for_one_gpu_unless_it_is_a_cpu_run(fake_ray, lab_home):
    from jobs.executor_ray import GPU_SLOT, RayExecutor

    fake = fake_ray({"CPU": 16.0, "GPU": 2.0})
    client = LabClient(f"sqlite:///{lab_home / 'lab.db'}")
    executor = RayExecutor(db_url=client.url, address="auto", home=lab_home)
    assert fake.inits == [dict(address="auto", namespace="gce-lab", log_to_driver=False, logging_level="WARNING")]
    # Ray never retries by itself (the supervisor does), and every run gets a fresh worker process
    assert fake.remote_options == dict(max_retries=0, retry_exceptions=False, max_calls=1)
    slots = executor.slots()
    assert [s.device for s in slots] == [GPU_SLOT, GPU_SLOT]  # one run per GPU of the cluster
    assert len(executor.slots(cpu_only=True)) == 16 and len(executor.slots(3)) == 3
    gpu_run, cpu_run = claimed(client, device="auto"), claimed(client, device="cpu")
    executor.start(gpu_run, gpu_run.claim_token, slots[0], {"GCE_LAB_HEARTBEAT_S": "2.0"})
    executor.start(cpu_run, cpu_run.claim_token, slots[1], {})
    (gpu_opts, gpu_args), (cpu_opts, cpu_args) = fake.submitted
    assert gpu_opts == dict(name=f"gce-lab-{gpu_run.id}", num_cpus=1.0, num_gpus=1)
    assert cpu_opts == dict(name=f"gce-lab-{cpu_run.id}", num_cpus=1.0, num_gpus=0)
    run_id, token, env = gpu_args
    assert (run_id, token) == (gpu_run.id, gpu_run.claim_token)
    assert env["GCE_LAB_DB_URL"] == client.url and env["GCE_LAB_HOME"] == str(lab_home.absolute())
    assert env["GCE_LAB_HEARTBEAT_S"] == "2.0" and "CUDA_VISIBLE_DEVICES" not in env  # Ray picks the GPU
    assert cpu_args[2]["CUDA_VISIBLE_DEVICES"] == ""
    assert "a Ray task (1 GPU)" in config.log_path(gpu_run.id).read_text()
    client.close()


def test_the_ray_executor_is_always_ready(fake_ray, lab_home):
    from jobs.executor_ray import RayExecutor

    fake_ray({"CPU": 4.0})
    executor = RayExecutor(db_url=f"sqlite:///{lab_home / 'lab.db'}", address="auto", home=lab_home)
    assert executor.prepare(executor.slots(1)[0], {}) is True  # Ray starts the task's process


def test_a_cluster_without_gpus_gets_cpu_slots(fake_ray, lab_home):
    from jobs.executor_ray import RayExecutor

    fake_ray({"CPU": 5.0})
    executor = RayExecutor(db_url="sqlite://", address="auto", home=lab_home, cpus_per_run=2)
    assert [s.device for s in executor.slots()] == [CPU_SLOT, CPU_SLOT]
    with pytest.raises(ValueError, match="at least 1 slot"):
        executor.slots(0)


def test_an_address_where_nothing_listens_fails_at_once_saying_what_to_do(fake_ray, lab_home):
    from jobs.executor_ray import RayExecutor, RayUnavailable

    fake = fake_ray({"CPU": 2.0})
    with pytest.raises(RayUnavailable, match=r"no Ray cluster answers at 127\.0\.0\.1:\d+.*ray start --head"):
        RayExecutor(db_url="sqlite://", address=f"127.0.0.1:{free_port()}", home=lab_home)
    assert fake.inits == []


def test_without_ray_the_worker_says_how_to_install_it(monkeypatch, lab_home, capsys):
    from jobs.cli import main
    from jobs.executor_ray import RayUnavailable, import_ray

    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RayUnavailable, match=r"pip install -r requirements-extras.txt"):
        import_ray()
    assert main(["--db", f"sqlite:///{lab_home / 'lab.db'}", "worker", "--executor", "ray"]) == 2
    err = capsys.readouterr().err
    assert "the Ray executor needs the ray package" in err and "gce-lab[ray]" in err


def test_the_executor_comes_from_the_environment_and_is_checked(monkeypatch):
    assert config.executor_name() == "local"
    monkeypatch.setenv("GCE_LAB_EXECUTOR", "Ray")
    assert config.executor_name() == "ray" and config.executor_name("local") == "local"
    monkeypatch.setenv("GCE_LAB_EXECUTOR", "slurm")
    with pytest.raises(ValueError, match=r"unknown executor 'slurm'.*GCE_LAB_EXECUTOR.*local, ray"):
        config.executor_name()
    monkeypatch.setenv("GCE_LAB_RAY_ADDRESS", "head:6379")
    assert config.ray_address() == "head:6379" and config.ray_address("other:1") == "other:1"


# --- the cluster --------------------------------------------------------------------------------
@dataclass
class Cluster:
    address: str
    session: int  # the head's session id: every process of the cluster on this machine
    temp_dir: str


def _stat(pid: int) -> list[str] | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None


def cluster_pids(cluster: Cluster) -> list[int]:
    """Live processes of the cluster: its session, or a command line naming its folder or port."""
    port = cluster.address.rsplit(":", 1)[1]
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        stat = _stat(int(entry.name))
        if stat is None or stat[0] == "Z":
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if int(stat[3]) == cluster.session or cluster.temp_dir in cmdline or f"127.0.0.1:{port}" in cmdline:
            found.append(int(entry.name))
    return found


def _address(hex_addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    raw = bytes.fromhex(hex_addr)
    if len(raw) == 4:
        return ipaddress.ip_address(raw[::-1])
    return ipaddress.ip_address(b"".join(raw[i : i + 4][::-1] for i in range(0, 16, 4)))


def listening_sockets(pids: list[int]) -> list[tuple[int, str, bool]]:
    """(pid, address:port, on loopback?) of every listening TCP socket of ``pids``."""
    inodes: dict[str, int] = {}
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes[link[8:-1]] = pid
        except OSError:
            continue
    found = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            local, state, inode = fields[1], fields[3], fields[9]
            if state != "0A" or inode not in inodes:  # 0A: LISTEN
                continue
            host, port = local.split(":")
            ip = _address(host)
            mapped = getattr(ip, "ipv4_mapped", None)
            loopback = ip.is_loopback or (mapped is not None and mapped.is_loopback)
            found.append((inodes[inode], f"{ip}:{int(port, 16)}", loopback))
    return found


def _wait_for_port(port: int, head: subprocess.Popen, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if head.poll() is not None:
            raise AssertionError(f"ray start exited with {head.returncode}:\n{log.read_text()[-3000:]}")
        if "Ray runtime started" in log.read_text(errors="replace"):
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    return
        time.sleep(0.5)
    raise AssertionError(f"the Ray head did not start within {timeout} s:\n{log.read_text()[-3000:]}")


def _stop(cluster: Cluster, head: subprocess.Popen) -> None:
    import ray

    if ray.is_initialized():
        ray.shutdown()
    head.terminate()  # `ray start --block` stops its processes on SIGTERM
    try:
        head.wait(timeout=30)
    except subprocess.TimeoutExpired:
        head.kill()
        head.wait()
    deadline = time.monotonic() + 15
    while cluster_pids(cluster) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid in cluster_pids(cluster):  # whatever did not stop: by pid, never by name
        os.kill(pid, signal.SIGKILL)


# Ray takes a node's address from its route to the outside, even when told 127.0.0.1, and opens
# its ports there; with this variable off (it means "no multi-node clusters") it takes 127.0.0.1,
# and every port it opens is on loopback (checked below). The driver (this process) needs it too,
# or it dials the head at the outside address.
LOOPBACK_ONLY = "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"


@pytest.fixture(scope="module")
def ray_cluster():
    if not HAVE_RAY:
        pytest.skip(f"Ray executor tests skipped: ray is not installed; {INSTALL}")
    import ray._private.ray_constants as ray_constants

    temp_dir = tempfile.mkdtemp(prefix="gce-ray-")  # short: Ray's socket paths must fit in 107 bytes
    port = free_port()
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])),
           LOOPBACK_ONLY: "0", "RAY_USAGE_STATS_ENABLED": "0"}
    log = Path(temp_dir) / "head.log"
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", "--port", str(port),
           "--node-ip-address", "127.0.0.1", "--ray-client-server-port", str(free_port()),
           "--num-cpus", "2", "--num-gpus", "0", "--object-store-memory", str(100 * 1024**2),
           "--include-dashboard", "false", "--disable-usage-stats", "--temp-dir", temp_dir]
    with open(log, "wb") as out:
        head = subprocess.Popen(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, start_new_session=True)
    cluster = Cluster(f"127.0.0.1:{port}", head.pid, temp_dir)
    patch = pytest.MonkeyPatch()
    patch.setenv(LOOPBACK_ONLY, "0")
    patch.setattr(ray_constants, "ENABLE_RAY_CLUSTER", False)  # read at import: set it for this driver
    try:
        _wait_for_port(port, head, log)
        yield cluster
    finally:
        _stop(cluster, head)
        patch.undo()
        left = cluster_pids(cluster)
        shutil.rmtree(temp_dir, ignore_errors=True)
        assert not left, f"Ray processes left behind: {left}"


# --- the lab on it --------------------------------------------------------------------------------
@pytest.fixture
def lab(ray_cluster, store_url, lab_home):
    from jobs.executor_ray import RayExecutor

    client = LabClient(store_url)
    executor = RayExecutor(db_url=store_url, address=ray_cluster.address, home=lab_home)
    made = []

    def supervisor(slots, **settings):
        sup = Supervisor(client.store, executor, executor.slots(slots),
                         SupervisorSettings(**{"stale_after_s": 120.0, **settings}))
        made.append(sup)
        return sup

    yield client, supervisor
    for sup in made:  # never leave a task behind
        for act in sup.active.values():
            act.handle.kill()
        deadline = time.monotonic() + 30
        while any(a.handle.poll() is None for a in sup.active.values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        sup.close()
    client.close()


def drive(sup, until, *, timeout=240.0, on_tick=None):
    """Tick the supervisor until ``until()`` holds; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not until():
        if time.monotonic() > deadline:
            runs = [(r.id, r.status.value, r.epochs_done, r.error) for r in sup.store.list_runs(limit=100)]
            raise AssertionError(f"not reached within {timeout} s; runs: {runs}")
        sup.tick(time.time())
        if on_tick is not None:
            on_tick()
        time.sleep(0.1)


def wait_gone(pid, timeout=30.0):
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    return not pid_alive(pid)


@on_ray
def test_runs_complete_as_ray_tasks_on_loopback_only(lab, ray_cluster):
    client, supervisor = lab
    ids = [client.submit({**TINY, "seed": seed}) for seed in range(3)]
    sup = supervisor(slots=2)
    assert [s.device for s in sup.slots] == [CPU_SLOT, CPU_SLOT]
    busy, listeners = [], set()

    def watch():
        busy.append(len(sup.active))
        if len(busy) % 10 == 1 and sup.active:  # while tasks run: the head, its workers, this driver
            listeners.update(listening_sockets([*cluster_pids(ray_cluster), os.getpid()]))

    drive(sup, lambda: client.count_runs(status=["completed", "failed", "cancelled"]) == 3 and not sup.active,
          on_tick=watch)
    assert max(busy) == 2
    assert len(listeners) >= 5  # the GCS, the raylet, the workers, the driver: all seen
    assert all(loopback for _, _, loopback in listeners), f"Ray listens beyond loopback: {sorted(listeners)}"
    assert client.executor_info()["executor"] == "ray"
    for run_id in ids:
        run = client.get(run_id)
        assert run.status == RunStatus.COMPLETED and run.attempts == 1 and run.error is None, run.error
        assert [r["epoch"] for r in client.metrics(run_id)] == [1, 2, 3] and run.summary["epochs_completed"] == 3
        assert run.device == CPU_SLOT and run.pid not in (None, os.getpid())  # a Ray worker's pid
        log = config.log_path(run_id).read_text()
        assert "a Ray task (1 CPU)" in log and "Ray worker pid" in log and "completed: test accuracy" in log
    assert len({client.get(i).summary["last_test_acc"] for i in ids}) > 1  # the seeds differ


@on_ray
def test_cancel_stops_the_ray_task_and_its_worker(lab):
    client, supervisor = lab
    run_id = client.submit({**FULL, "epochs": 1000})
    # no grace: the supervisor escalates to ray.cancel(force=True) right after the cancel flag
    sup = supervisor(slots=1, cancel_grace_s=0.0, kill_grace_s=0.0)
    drive(sup, lambda: client.get(run_id).epochs_done >= 1)
    pid = client.get(run_id).pid
    assert pid_alive(pid)
    client.cancel(run_id)
    started = time.monotonic()
    drive(sup, lambda: client.get(run_id).status == RunStatus.CANCELLED and not sup.active, timeout=30)
    assert time.monotonic() - started < 15
    assert wait_gone(pid), "the task's Ray worker still runs after the cancel"
    run = client.get(run_id)
    assert run.crashes == 0 and run.finished_at is not None and run.epochs_done >= 1
    assert [r["epoch"] for r in client.metrics(run_id)] == list(range(1, run.epochs_done + 1))
    time.sleep(1.0)
    assert client.get(run_id).epochs_done == run.epochs_done  # nothing trains any more


@on_ray
def test_a_killed_ray_worker_is_a_crash_and_the_run_resumes_to_the_end(lab):
    client, supervisor = lab
    run_id = client.submit({**FULL, "epochs": 40, "noise": "uniform", "noise_rate": 0.4, "seed": 3})
    sup = supervisor(slots=1)
    drive(sup, lambda: client.get(run_id).epochs_done >= 3)
    pid = client.get(run_id).pid
    os.kill(pid, signal.SIGKILL)
    killed_at = client.get(run_id).epochs_done
    drive(sup, lambda: client.get(run_id).status.is_final)
    run = client.get(run_id)
    assert killed_at < 40
    assert run.status == RunStatus.COMPLETED and run.attempts == 2 and run.crashes == 1, run.error
    assert run.pid != pid
    assert [r["epoch"] for r in client.metrics(run_id)] == list(range(1, 41))
    log = config.log_path(run_id).read_text()
    assert "its Ray worker process died (WorkerCrashedError" in log and "retry 1 of 2" in log


@on_ray
def test_kill_is_ray_cancel_force_and_counts_as_a_crash(lab):
    client, supervisor = lab
    run_id = client.submit({**FULL, "epochs": 1000})
    sup = supervisor(slots=1, max_retries=0)  # the first crash fails the run: no resume here
    drive(sup, lambda: client.get(run_id).epochs_done >= 1)
    pid = client.get(run_id).pid
    sup.active[run_id].handle.kill()  # what the supervisor does when a cancel or a shutdown is not honoured
    drive(sup, lambda: not sup.active, timeout=30)
    assert wait_gone(pid), "ray.cancel(force=True) left the task's worker running"
    run = client.get(run_id)
    assert run.status == RunStatus.FAILED and run.crashes == 1
    assert run.error.startswith("its Ray task was cancelled (ray.cancel); gave up after 1 crashes")


@on_ray
def test_the_worker_command_runs_the_queue_on_ray(ray_cluster, store_url, lab_home, capsys):
    from jobs.cli import main

    client = LabClient(store_url)
    run_id = client.submit(TINY)
    argv = ["--db", store_url, "worker", "--executor", "ray", "--ray-address", ray_cluster.address,
            "--slots", "1", "--poll", "0.1", "--until-idle"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "ray executor, 1 slot(s) (ray:cpu)" in out
    run = client.get(run_id)
    assert run.status == RunStatus.COMPLETED and run.epochs_done == 3 and run.device == CPU_SLOT
    assert client.executor_info()["workers_alive"] == 0  # it left the registry
    client.close()

"""Slots: runs at once per GPU (GCE_LAB_SLOTS_PER_GPU) and the CPU's share of threads; the local
executor's bookkeeping of a warm run process, with a stand-in process (no torch)."""

import signal
import subprocess
import sys
import time

import pytest

from jobs.executor import EXIT_OK, EXIT_STOPPED, EXIT_STORAGE, Slot
from jobs.executor_local import LocalHandle, WarmProcess
from jobs.slots import detect_slots


def test_one_slot_per_gpu_by_default_each_pinned_to_its_gpu(monkeypatch):
    monkeypatch.delenv("GCE_LAB_SLOTS_PER_GPU", raising=False)
    slots = detect_slots(gpus=["0", "3"])
    assert [(s.index, s.device, s.env["CUDA_VISIBLE_DEVICES"]) for s in slots] == [(0, "cuda:0", "0"), (1, "cuda:3", "3")]


def test_several_slots_can_share_a_gpu(monkeypatch):
    monkeypatch.setenv("GCE_LAB_SLOTS_PER_GPU", "3")
    slots = detect_slots(gpus=["0", "1"])
    assert [s.device for s in slots] == ["cuda:0"] * 3 + ["cuda:1"] * 3
    assert [s.index for s in slots] == list(range(6))
    assert [s.device for s in detect_slots(gpus=["0"], per_gpu=2)] == ["cuda:0", "cuda:0"]


def test_cpu_slots_split_the_cores_and_hide_the_gpus(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("MKL_NUM_THREADS", raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    slots = detect_slots(4, gpus=[])
    assert len(slots) == 4 and {s.device for s in slots} == {"cpu"}
    assert all(s.env == {"CUDA_VISIBLE_DEVICES": "", "OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"} for s in slots)
    with pytest.raises(ValueError, match="at least 1 slot"):
        detect_slots(0, gpus=[])


@pytest.mark.parametrize(("cores", "slots", "threads"), [(2, 3, "1"), (4, 3, "1"), (8, 4, "2"), (32, 16, "2")])
def test_default_cpu_slots_are_half_the_cores_but_at_least_3(monkeypatch, cores, slots, threads):
    for name in ("GCE_LAB_SLOTS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr("os.cpu_count", lambda: cores)
    got = detect_slots(gpus=[])
    assert len(got) == slots and {s.env["OMP_NUM_THREADS"] for s in got} == {threads}
    monkeypatch.setenv("GCE_LAB_SLOTS", "1")
    assert len(detect_slots(gpus=[])) == 1


# --- a warm process's reports, with a stand-in that speaks the protocol ----------------------------
STAND_IN = r"""
import sys
print("ready", flush=True)
for line in iter(sys.stdin.readline, ""):
    run_id, token = line.split()
    code = {"stop": 75, "full": 74}.get(token, 0)
    print(f"done {run_id} {code}" + (" No space left on device (/x) [errno 28 ENOSPC]" if code == 74 else ""), flush=True)
    if code:
        sys.exit(0)
"""


@pytest.fixture
def stand_in(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", STAND_IN], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            start_new_session=True)
    yield WarmProcess(proc, tmp_path / "slot-0.log")
    proc.kill()
    proc.wait()


def poll_until(handle, timeout=10.0):
    deadline = time.monotonic() + timeout
    while (how := handle.poll()) is None:
        assert time.monotonic() < deadline, "no report"
        time.sleep(0.01)
    return how


def test_a_warm_process_says_ready_then_reports_each_run_and_stays(stand_in):
    deadline = time.monotonic() + 10
    while not stand_in.ready:
        assert time.monotonic() < deadline
        stand_in.read()
        time.sleep(0.01)
    for run_id in ("a", "b"):
        stand_in.send(run_id, "tok")
        assert stand_in.running == run_id
        assert poll_until(LocalHandle(stand_in, run_id)).code == EXIT_OK
        assert stand_in.running is None and stand_in.usable()


def test_a_run_that_did_not_end_normally_retires_its_process(stand_in):
    stand_in.send("a", "stop")
    assert poll_until(LocalHandle(stand_in, "a")).code == EXIT_STOPPED
    assert stand_in.retiring and not stand_in.usable()


def test_a_storage_fault_comes_with_the_text_the_process_reported(stand_in):
    stand_in.send("a", "full")
    how = poll_until(LocalHandle(stand_in, "a"))
    assert how.code == EXIT_STORAGE and how.detail == "No space left on device (/x) [errno 28 ENOSPC]"
    assert stand_in.retiring


def test_a_process_that_dies_before_it_reports_is_a_crash_of_its_run(stand_in):
    handle = LocalHandle(stand_in, "a")
    handle.kill()
    how = poll_until(handle)
    assert how.code == -signal.SIGKILL and "SIGKILL" in how.describe()
    assert stand_in.retiring


def test_a_process_that_exits_without_a_report_is_not_a_normal_end(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", "import sys; sys.stdin.readline()"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, start_new_session=True)
    process = WarmProcess(proc, tmp_path / "slot-0.log")
    process.send("a", "tok")
    how = poll_until(LocalHandle(process, "a"))
    assert how.code is None and "before it reported the run" in how.describe()
    assert str(tmp_path / "slot-0.log") in how.describe()


def test_a_run_process_gets_its_slots_environment_and_the_labs_settings(tmp_path):
    from jobs.executor_local import LocalExecutor

    executor = LocalExecutor(db_url="sqlite://", home=tmp_path)
    env = executor._env(Slot(0, "cuda:1", {"CUDA_VISIBLE_DEVICES": "1"}), {"GCE_LAB_HEARTBEAT_S": "2.0"})
    assert env["CUDA_VISIBLE_DEVICES"] == "1" and env["GCE_LAB_HEARTBEAT_S"] == "2.0"
    assert env["GCE_LAB_DB_URL"] == "sqlite://" and env["GCE_LAB_HOME"] == str(tmp_path.absolute())

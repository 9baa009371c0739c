"""The Docker image and the compose file keep their promises (no Docker engine needed: both are
read as text and YAML; `make lint-docker` runs hadolint on the Dockerfile)."""

import re
import shlex
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is in requirements-dev.txt")

ROOT = Path(__file__).resolve().parents[1]


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not current and (not line or line.startswith("#")):
            continue
        current += " " + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


@pytest.fixture(scope="module")
def dockerfile():
    return instructions((ROOT / "Dockerfile").read_text())


@pytest.fixture(scope="module")
def compose():
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def last(dockerfile, name):
    found = [args for inst, args in dockerfile if inst == name]
    assert found, f"the Dockerfile has no {name}"
    return found[-1]


def test_the_image_runs_as_a_user_with_a_writable_home(dockerfile):
    user = last(dockerfile, "USER")
    assert user not in ("root", "0") and not user.startswith("0:")
    run = " ".join(args for inst, args in dockerfile if inst == "RUN")
    assert "--create-home" in run and f"chown -R {user}:{user}" in run and "/home/lab" in run
    assert "HOME=/home/lab" in " ".join(args for inst, args in dockerfile if inst == "ENV")


def test_the_image_serves_8501_with_a_health_check_and_keeps_data_in_volumes(dockerfile):
    assert last(dockerfile, "EXPOSE") == "8501"
    health = last(dockerfile, "HEALTHCHECK")
    assert "/_stcore/health" in health and "8501" in health
    volumes = last(dockerfile, "VOLUME")
    assert "/data" in volumes and "/home/lab/.gce_lab" in volumes
    env = " ".join(args for inst, args in dockerfile if inst == "ENV")
    assert "GCE_LAB_DATA=/data" in env and "GCE_LAB_HOME=/home/lab/.gce_lab" in env


def test_every_interface_only_through_the_launcher_that_requires_a_password(dockerfile):
    cmd = last(dockerfile, "CMD")
    assert cmd.startswith("[") and '"-m", "app"' in cmd  # exec form, `python -m app` checks the bind
    assert "server.address" not in cmd  # never a bare `streamlit run --server.address 0.0.0.0`
    from app.auth import BindRefused, check_bind

    address = re.search(r'"--address", "([^"]+)"', cmd).group(1)
    with pytest.raises(BindRefused, match="GCE_LAB_PASSWORD"):
        check_bind(address, None)


def test_the_image_has_the_compilers_torch_compile_needs(dockerfile):
    run = " ".join(args for inst, args in dockerfile if inst == "RUN")
    assert "apt-get install -y --no-install-recommends gcc g++ libc6-dev" in run
    assert "rm -rf /var/lib/apt/lists/*" in run


def test_the_image_installs_the_pinned_requirements_from_pypi(dockerfile):
    run = " ".join(args for inst, args in dockerfile if inst == "RUN")
    assert "pip install -r requirements.txt" in run and "requirements-extras.txt" in run
    assert "--index-url" not in run  # PyPI's Linux torch wheels are the CUDA ones
    assert last(dockerfile, "FROM").startswith("python:3.11")


def test_compose_web_is_password_protected_and_on_loopback(compose):
    web = compose["services"]["web"]
    assert web["ports"] == ["127.0.0.1:8501:8501"]
    assert re.fullmatch(r"\$\{GCE_LAB_PASSWORD:\?.+\}", web["environment"]["GCE_LAB_PASSWORD"])
    command = web["command"]
    # Through the launcher, which refuses 0.0.0.0 without a password; the worker service trains.
    assert command[:4] == ["python", "-m", "app", "--no-worker"]
    assert command[command.index("--address") + 1] == "0.0.0.0"


def test_compose_services_share_the_data_and_store_volumes(compose):
    for name in ("web", "worker", "ray-head", "ray-worker"):
        service = compose["services"][name]
        assert {"gce-data:/data", "gce-store:/home/lab/.gce_lab"} <= set(service["volumes"]), name
        assert service["image"] == "gce-lab:latest" and service["build"]["context"] == "."
    assert {"gce-data", "gce-store", "gce-postgres"} <= set(compose["volumes"])


def test_compose_gpu_services_reserve_the_nvidia_gpus(compose):
    for name in ("worker", "ray-worker"):
        (device,) = compose["services"][name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["count"] == "all" and device["capabilities"] == ["gpu"]
    assert compose["services"]["worker"]["command"] == ["python", "-m", "jobs", "worker"]


def test_compose_ray_profile_runs_ray_on_postgresql(compose):
    services = compose["services"]
    assert {n for n, s in services.items() if "ray" in s.get("profiles", [])} == {"postgres", "ray-head", "ray-worker"}
    assert not services["web"].get("profiles") and not services["worker"].get("profiles")
    head = services["ray-head"]
    script = head["command"][-1]
    assert "ray start --head --port 6379" in script and "python -m jobs worker --executor ray" in script
    assert "postgresql+psycopg://" in head["environment"]["GCE_LAB_DB_URL"]
    assert head["environment"]["GCE_LAB_EXECUTOR"] == "ray"
    assert head["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert all(p.startswith("127.0.0.1:") for p in head.get("ports", []))
    worker = shlex.join(services["ray-worker"]["command"])
    assert "ray start --address ray-head:6379 --block" in worker
    assert "POSTGRES_PASSWORD:?" in services["postgres"]["environment"]["POSTGRES_PASSWORD"]

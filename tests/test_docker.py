"""The Docker image and the compose files keep their promises. The Dockerfile and compose files
are read as text and YAML here; `compose config` runs through podman-compose where podman is
installed (`make docker-deps`); `make lint-docker` runs hadolint, and `make docker-test`
(docker/test.sh) builds the image and runs it with podman as docs/docker.md says."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

yaml = pytest.importorskip("yaml", reason="PyYAML is in requirements-dev.txt")

ROOT = Path(__file__).resolve().parents[1]
DOCS = (ROOT / "docs" / "docker.md").read_text()
SCRIPT = (ROOT / "docker" / "test.sh").read_text()


def instructions(text: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of a Dockerfile, continuation lines joined, comments dropped."""
    lines, current = [], ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        current += " " + line.rstrip("\\").strip()
        if not line.endswith("\\"):
            lines.append(current.strip())
            current = ""
    return [(ln.split(None, 1)[0].upper(), ln.split(None, 1)[1] if " " in ln else "") for ln in lines]


@pytest.fixture(scope="module")
def dockerfile():
    return instructions((ROOT / "Dockerfile").read_text())


def load(name: str) -> dict:
    return yaml.safe_load((ROOT / name).read_text())


@pytest.fixture(scope="module")
def compose():
    return load("compose.yaml")


def last(dockerfile, name):
    found = [args for inst, args in dockerfile if inst == name]
    assert found, f"the Dockerfile has no {name}"
    return found[-1]


def index_of(dockerfile, inst: str, contains: str) -> int:
    return next(i for i, (n, args) in enumerate(dockerfile) if n == inst and contains in args)


def test_the_dockerfile_needs_no_registry_but_its_base():
    # A `# syntax=` line makes BuildKit pull a frontend image first: no offline build.
    text = (ROOT / "Dockerfile").read_text()
    assert not re.search(r"^#\s*syntax\s*=", text, re.M | re.I)


def test_the_image_is_debian_slim_with_debians_python(dockerfile):
    assert ("ARG", "BASE=debian:bookworm-slim") in dockerfile
    assert last(dockerfile, "FROM") == "${BASE}"
    run = " ".join(args for inst, args in dockerfile if inst == "RUN")
    assert "apt-get install -y --no-install-recommends python3 python3-venv python3-dev" in run
    assert "python3 -m venv /opt/venv" in run
    assert "PATH=/opt/venv/bin:" in " ".join(args for inst, args in dockerfile if inst == "ENV")


def test_the_image_runs_as_a_user_with_a_writable_home(dockerfile):
    user = last(dockerfile, "USER")
    assert user not in ("root", "0") and not user.startswith("0:")
    run = " ".join(args for inst, args in dockerfile if inst == "RUN")
    assert "--create-home" in run and f"chown -R {user}:{user}" in run and "/home/lab" in run
    assert "HOME=/home/lab" in " ".join(args for inst, args in dockerfile if inst == "ENV")


def test_the_image_serves_one_port_with_a_health_check_and_keeps_data_in_volumes(dockerfile):
    assert last(dockerfile, "EXPOSE") == "8501"
    env = " ".join(args for inst, args in dockerfile if inst == "ENV")
    assert "GCE_LAB_PORT=8501" in env
    # The health check probes the port the server listens on: both read GCE_LAB_PORT.
    health = last(dockerfile, "HEALTHCHECK")
    assert "/_stcore/health" in health and "os.environ['GCE_LAB_PORT']" in health
    assert "8501" not in health
    assert '--port \\"$GCE_LAB_PORT\\"' in last(dockerfile, "CMD")
    volumes = last(dockerfile, "VOLUME")
    assert "/data" in volumes and "/home/lab/.gce_lab" in volumes
    assert "GCE_LAB_DATA=/data" in env and "GCE_LAB_HOME=/home/lab/.gce_lab" in env


def test_every_interface_only_through_the_launcher_that_requires_a_password(dockerfile):
    cmd = json.loads(last(dockerfile, "CMD"))
    # exec form; the shell only expands the port and `exec`s the launcher, which becomes PID 1
    # (docker stop's SIGTERM reaches it) and checks the bind address.
    assert cmd[:2] == ["sh", "-c"] and cmd[2].startswith("exec python -m app ")
    assert "server.address" not in cmd[2]  # never a bare `streamlit run --server.address 0.0.0.0`
    from app.auth import BindRefused, check_bind

    address = shlex.split(cmd[2])[shlex.split(cmd[2]).index("--address") + 1]
    assert address == "0.0.0.0"
    with pytest.raises(BindRefused, match="GCE_LAB_PASSWORD"):
        check_bind(address, None)


def test_the_image_has_the_compilers_torch_compile_needs(dockerfile):
    run = " ".join(args for inst, args in dockerfile if inst == "RUN")
    assert re.search(r"apt-get install -y --no-install-recommends [^&]*gcc g\+\+ libc6-dev", run)
    assert "rm -rf /var/lib/apt/lists/*" in run


def test_the_requirements_are_layers_of_their_own_before_the_code(dockerfile):
    requirements = index_of(dockerfile, "RUN", "pip install -r requirements.txt")
    extras = index_of(dockerfile, "RUN", "pip install -r requirements-extras.txt")
    first_code = index_of(dockerfile, "COPY", "gce_core/")
    assert requirements < extras < first_code
    # A build argument changes the cache key of every RUN after it: EXTRAS comes after the
    # requirements' layer, so the image with and without the extras share it.
    assert index_of(dockerfile, "ARG", "EXTRAS") > requirements
    copied = " ".join(args for inst, args in dockerfile if inst == "COPY" and dockerfile.index((inst, args)) < requirements)
    assert copied.split() == ["requirements.txt", "requirements-extras.txt", "./"]


def test_the_image_installs_the_pinned_requirements_from_pypi(dockerfile):
    run = dockerfile[index_of(dockerfile, "RUN", "pip install -r requirements.txt")][1]
    # PyPI's Linux torch wheels are the CUDA ones; TORCH_INDEX_URL (empty by default) takes
    # torch and torchvision from another index first, at the versions requirements.txt pins.
    assert ("ARG", 'TORCH_INDEX_URL=""') in dockerfile
    assert 'if [ -n "$TORCH_INDEX_URL" ]' in run and "grep -E '^(torch|torchvision)==' requirements.txt" in run
    # The build's CA bundle is used for pip only, never copied into the image.
    assert ("ARG", 'CA_BUNDLE=""') in dockerfile and 'export PIP_CERT="$CA_BUNDLE"' in run
    assert not any("CA_BUNDLE" in args or ".crt" in args for inst, args in dockerfile if inst in ("COPY", "ADD", "ENV"))


def test_compose_web_is_password_protected_and_on_loopback(compose):
    web = compose["services"]["web"]
    assert web["ports"] == ["127.0.0.1:8501:8501"]
    assert re.fullmatch(r"\$\{GCE_LAB_PASSWORD:\?.+\}", web["environment"]["GCE_LAB_PASSWORD"])
    command = web["command"]
    # Through the launcher, which refuses 0.0.0.0 without a password; the worker service trains.
    assert command[:4] == ["python", "-m", "app", "--no-worker"]
    assert command[command.index("--address") + 1] == "0.0.0.0"


def test_compose_services_share_the_volumes_and_wait_for_the_checkpoints(compose):
    ray = load("compose.ray.yaml")
    services = {**compose["services"], "ray-head": ray["services"]["ray-head"], "ray-worker": ray["services"]["ray-worker"]}
    for name, service in services.items():
        assert {"gce-data:/data", "gce-store:/home/lab/.gce_lab"} <= set(service["volumes"]), name
        assert service["image"] == "gce-lab:latest" and service["build"]["context"] == ".", name
        # The launcher waits up to 30 s for the worker to checkpoint; compose's default is 10 s.
        assert service["stop_grace_period"] == "40s", name
    assert {"gce-data", "gce-store"} <= set(compose["volumes"]) and "gce-postgres" in ray["volumes"]


def test_only_the_gpu_override_files_reserve_gpus(compose):
    # A device reservation is fatal on a host without a GPU: compose.yaml and compose.ray.yaml
    # have none; compose.gpu.yaml and compose.ray-gpu.yaml add them when asked for.
    assert "nvidia" not in (ROOT / "compose.yaml").read_text().replace("compose.gpu.yaml", "")
    assert "deploy" not in (ROOT / "compose.ray.yaml").read_text()
    for file, name in (("compose.gpu.yaml", "worker"), ("compose.ray-gpu.yaml", "ray-worker")):
        services = load(file)["services"]
        assert list(services) == [name]
        (device,) = services[name]["deploy"]["resources"]["reservations"]["devices"]
        assert device["driver"] == "nvidia" and device["count"] == "all" and device["capabilities"] == ["gpu"]
    assert compose["services"]["worker"]["command"] == ["python", "-m", "jobs", "worker"]


def test_compose_ray_runs_ray_on_postgresql():
    services = load("compose.ray.yaml")["services"]
    assert {"postgres", "ray-head", "ray-worker", "web", "worker"} == set(services)
    head = services["ray-head"]
    script = head["command"][-1]
    assert "ray start --head --port 6379" in script and "python -m jobs worker --executor ray" in script
    url = "postgresql+psycopg://lab:${POSTGRES_PASSWORD:?"
    for name in ("ray-head", "web", "worker"):
        assert services[name]["environment"]["GCE_LAB_DB_URL"].startswith(url), name
    assert head["environment"]["GCE_LAB_EXECUTOR"] == "ray"
    assert head["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert all(p.startswith("127.0.0.1:") for p in head.get("ports", []))
    worker = shlex.join(services["ray-worker"]["command"])
    assert "ray start --address ray-head:6379 --block" in worker
    assert "POSTGRES_PASSWORD:?" in services["postgres"]["environment"]["POSTGRES_PASSWORD"]


# `compose config` for real: every documented combination of files with only the variables
# docs/docker.md names for it, and the one line a missing variable gets.
SETUPS = {
    "default": ([], {"GCE_LAB_PASSWORD"}),
    "gpu": (["compose.gpu.yaml"], {"GCE_LAB_PASSWORD"}),
    "ray": (["compose.ray.yaml"], {"GCE_LAB_PASSWORD", "POSTGRES_PASSWORD"}),
    "ray-gpu": (["compose.ray.yaml", "compose.ray-gpu.yaml"], {"GCE_LAB_PASSWORD", "POSTGRES_PASSWORD"}),
}


def podman_compose() -> list[str]:
    found = shutil.which("podman-compose") or shutil.which("podman-compose", path=str(Path(sys.executable).parent))
    if not found:
        pytest.skip("podman-compose is missing (requirements-dev.txt installs it)")
    if not shutil.which("podman"):
        pytest.skip("podman is missing (make docker-deps installs it as root); podman-compose needs it")
    return [found]


def compose_config(files: list[str], env: dict[str, str]) -> subprocess.CompletedProcess:
    args = [a for f in ["compose.yaml", *files] for a in ("-f", f)]
    environ = {"PATH": os.environ["PATH"], "HOME": os.environ.get("HOME", "/root"), **env}
    return subprocess.run([*podman_compose(), *args, "config"], cwd=ROOT, env=environ,
                          capture_output=True, text=True, timeout=120)


def documented_command(files: list[str]) -> str:
    """The docs' `docker compose ... up` line for these files."""
    wanted = "docker compose " + "".join(f"-f {f} " for f in ["compose.yaml", *files] if files) + "up"
    lines = [ln for ln in DOCS.splitlines() if wanted in ln]
    assert lines, f"docs/docker.md has no `{wanted}`"
    return lines[0]


@pytest.mark.parametrize("setup", list(SETUPS))
def test_compose_config_passes_with_the_documented_variables_only(setup):
    files, variables = SETUPS[setup]
    documented = documented_command(files)
    named = set(re.findall(r"\b([A-Z_]+)=", DOCS[: DOCS.index(documented) + len(documented)].rsplit("```bash", 1)[1]))
    assert named == variables, f"docs/docker.md names {named} for {setup}"
    result = compose_config(files, {v: "abc123" for v in variables})
    assert result.returncode == 0, result.stderr
    config = yaml.safe_load(result.stdout)
    services = config["services"]
    gpus = {n for n, s in services.items() if "deploy" in s}
    assert gpus == {"gpu": {"worker"}, "ray-gpu": {"ray-worker"}}.get(setup, set())
    assert services["web"]["environment"]["GCE_LAB_PASSWORD"] == "abc123"
    assert all(s.get("stop_grace_period") == "40s" for n, s in services.items() if n != "postgres")
    if setup.startswith("ray"):
        assert set(services) == {"web", "worker", "postgres", "ray-head", "ray-worker"}
        url = "postgresql+psycopg://lab:abc123@postgres:5432/gce_lab"
        assert {services[n]["environment"]["GCE_LAB_DB_URL"] for n in ("web", "worker", "ray-head")} == {url}
    else:
        assert set(services) == {"web", "worker"}
        assert "GCE_LAB_DB_URL" not in services["web"].get("environment", {})


@pytest.mark.parametrize("setup", list(SETUPS))
def test_compose_config_names_each_missing_variable(setup):
    files, variables = SETUPS[setup]
    for missing in variables:
        result = compose_config(files, {v: "abc123" for v in variables - {missing}})
        assert result.returncode != 0
        assert f"required variable {missing} is missing a value: set {missing}" in result.stderr


def test_the_teachers_commands_are_those_make_docker_test_runs():
    """docs/docker.md's `docker run` and `docker stop` of one container, with podman, in docker/test.sh."""
    block = DOCS.split("## One container", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    run = " ".join(block.replace("\\\n", " ").split("docker run", 1)[1].split("\n", 1)[0].split())
    script_run = " ".join(SCRIPT.replace("\\\n", " ").split("podman run -d", 1)[1].split("\n", 1)[0].split())
    flags = lambda s: [w.split("=")[0] for w in shlex.split(s) if w.startswith("-")]  # noqa: E731
    assert flags(run) == flags("-d " + script_run), (run, script_run)
    assert "-p 127.0.0.1:" in run and "-v gce-data:/data -v gce-store:/home/lab/.gce_lab gce-lab" in run
    pairs = {  # docs/docker.md's command: what docker/test.sh runs for it
        "docker build -t gce-lab .": 'podman build --format docker',
        "docker exec gce-lab python -m jobs submit --dataset digits --losses cce,lq --noise uniform --noise-rate 0.4":
            'lab submit --dataset digits --losses cce,lq --noise uniform --noise-rate 0.4',
        "docker exec gce-lab python -m jobs list": 'lab list',
        "docker stop gce-lab": 'podman stop "$NAME"',
        "docker start gce-lab": 'podman start "$NAME"',
    }
    for documented, run_by_test in pairs.items():
        assert documented in DOCS, documented
        assert run_by_test in SCRIPT, run_by_test
    assert 'lab() { podman exec "$NAME" python -m jobs "$@"; }' in SCRIPT
    assert '-t "$IMAGE" .' in SCRIPT and '"$PY" -c' in SCRIPT
    # The offline classroom's copy into the data volume, as documented.
    assert 'docker run --rm -v gce-data:/data -v "$PWD/gce-data:/seed:ro" gce-lab cp -r /seed/. /data/' in DOCS
    assert 'podman run --rm -v "$DATA:/data" -v "$SEED:/seed:ro" "$IMAGE" cp -r /seed/. /data/' in SCRIPT

"""The lab's settings, read from the environment (and Streamlit secrets for the password).

| variable                 | default      | meaning                                                  |
|--------------------------|--------------|----------------------------------------------------------|
| GCE_LAB_PASSWORD         | unset        | password the lab asks for (also ``password`` in secrets)  |
| GCE_LAB_TEACHING         | 0            | 1: teaching mode for everyone (advanced controls hidden) |
| GCE_LAB_SESSION_CAP      | 24           | most runs one browser may have queued or running         |
| GCE_LAB_PUBLIC_HOST      | unset        | names (comma-separated) the lab answers to besides loopback |
| GCE_LAB_REFRESH_SECONDS  | 2            | live curves refresh period while runs are active         |
| GCE_LAB_HOME             | ~/.gce_lab   | the store (read by ``jobs``)                              |
| GCE_LAB_DB_URL           | unset        | a database URL instead of the sqlite file (``jobs``)     |
| GCE_LAB_DATA             | ~/.gce_lab/data | data folder (read by ``gce_core.data``)               |
"""

from __future__ import annotations

import os
import pathlib
import re
from collections.abc import Mapping
from dataclasses import dataclass

from gce_core.data import default_data_root

try:  # Python 3.11+; on 3.10 the password comes from the environment only
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    tomllib = None  # type: ignore[assignment]

DEFAULT_SESSION_CAP = 24
DEFAULT_REFRESH_SECONDS = 2.0
PASSWORD_ENV = "GCE_LAB_PASSWORD"
PUBLIC_HOST_ENV = "GCE_LAB_PUBLIC_HOST"
_HOSTNAME = re.compile(r"^(?=.{1,253}$)[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)*$")
PROJECT_ROOT = pathlib.Path(__file__).resolve().parent.parent
SECRETS_FILES = tuple(dict.fromkeys((  # where Streamlit looks for secrets (global first), and the project's
    pathlib.Path.home() / ".streamlit" / "secrets.toml",
    PROJECT_ROOT / ".streamlit" / "secrets.toml",
    pathlib.Path.cwd() / ".streamlit" / "secrets.toml",
)))


@dataclass(frozen=True)
class LabSettings:
    """What the app reads at start; see the module docstring for the variables."""

    password: str | None
    teaching: bool
    session_cap: int
    refresh_seconds: float
    data_root: pathlib.Path
    store_key: str  # identifies the store the client talks to (cache key for the client)


def _truthy(text: str | None) -> bool:
    return (text or "").strip().lower() in ("1", "true", "yes", "on")


def _positive(text: str | None, default: float, name: str) -> float:
    if text is None or not text.strip():
        return default
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{name} must be a positive number, got {text!r}") from None
    if value <= 0:
        raise ValueError(f"{name} must be a positive number, got {text!r}")
    return value


def secrets_password(files: tuple[pathlib.Path, ...] = SECRETS_FILES) -> str | None:
    """The ``password`` key of the Streamlit secrets files (the last one that sets it wins)."""
    found = None
    if tomllib is None:
        return None
    for path in files:
        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError):
            continue
        value = data.get("password")
        if isinstance(value, str) and value:
            found = value
    return found


def configured_password(
    env: Mapping[str, str] | None = None, files: tuple[pathlib.Path, ...] = SECRETS_FILES
) -> str | None:
    """$GCE_LAB_PASSWORD if set and not empty, else ``password`` from Streamlit secrets."""
    env = os.environ if env is None else env
    return env.get(PASSWORD_ENV) or secrets_password(files)


def public_hosts(env: Mapping[str, str] | None = None) -> tuple[str, ...]:
    """The names in $GCE_LAB_PUBLIC_HOST (comma-separated), lower case; ValueError for one that
    is not a host name."""
    env = os.environ if env is None else env
    names = []
    for raw in (env.get(PUBLIC_HOST_ENV) or "").split(","):
        name = raw.strip().lower().rstrip(".")
        if not name:
            continue
        if not _HOSTNAME.match(name):
            shown = raw.strip() if len(raw.strip()) <= 100 else raw.strip()[:100] + "..."
            raise ValueError(
                f"{PUBLIC_HOST_ENV}: {shown!r} is not a host name; give names like lab.example.org, "
                "comma-separated (no scheme, port or path)"
            )
        names.append(name)
    return tuple(dict.fromkeys(names))


def load_settings(
    env: Mapping[str, str] | None = None, files: tuple[pathlib.Path, ...] = SECRETS_FILES
) -> LabSettings:
    """Settings from ``env`` (default ``os.environ``); raises ValueError naming a bad variable."""
    env = os.environ if env is None else env
    cap = _positive(env.get("GCE_LAB_SESSION_CAP"), DEFAULT_SESSION_CAP, "GCE_LAB_SESSION_CAP")
    refresh = _positive(
        env.get("GCE_LAB_REFRESH_SECONDS"), DEFAULT_REFRESH_SECONDS, "GCE_LAB_REFRESH_SECONDS"
    )
    store_key = env.get("GCE_LAB_DB_URL") or f"home:{env.get('GCE_LAB_HOME', '~/.gce_lab')}"
    return LabSettings(
        password=configured_password(env, files),
        teaching=_truthy(env.get("GCE_LAB_TEACHING")),
        session_cap=int(cap),
        refresh_seconds=refresh,
        data_root=default_data_root(),
        store_key=store_key,
    )

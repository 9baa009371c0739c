"""Who owns the runs a browser launches: a stable owner per browser, and the caps enforced on it.

Each browser gets a signed cookie (``gce_lab_owner``, set by ``app.guard.LabGuard`` on the first
page it loads, kept a year, HttpOnly, SameSite=Strict). Its owner is ``web-<16 hex>``. The
signature (HMAC-SHA256 with a secret kept in ``<lab home>/web-secret``) means a browser cannot
pick another browser's owner; a browser without a valid cookie (cookies blocked, a client that is
not a browser) is owned by its address: ``web-local`` on this machine, else ``web-ip-<hash>``.

The store's per-owner queue cap (GCE_LAB_MAX_QUEUED_PER_OWNER) and the lab's cap on runs queued or
running (GCE_LAB_SESSION_CAP) both count this owner's runs, so neither resets with a new tab or
session. Clearing the cookies gives a new owner: the caps keep a class from burying each other by
accident; the password keeps strangers out.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import re
import secrets
import threading
from collections.abc import Mapping, Sequence
from http.cookies import CookieError, SimpleCookie
from pathlib import Path

from jobs.config import lab_home

COOKIE = "gce_lab_owner"
COOKIE_MAX_AGE_S = 365 * 24 * 3600
SECRET_FILE = "web-secret"
LOCAL_OWNER = "web-local"
_ID = re.compile(r"^[0-9a-f]{16}$")
_secrets: dict[Path, bytes] = {}
_secrets_lock = threading.Lock()
_owner_locks: dict[str, threading.Lock] = {}


def lab_secret(home: Path | None = None) -> bytes:
    """The signing secret of this lab home, made on first use (mode 600). Where the home is not
    writable, a secret for this process only (owners then last until the server restarts)."""
    home = Path(home or lab_home())
    with _secrets_lock:
        if home in _secrets:
            return _secrets[home]
        path = home / SECRET_FILE
        try:
            home.mkdir(parents=True, exist_ok=True)
            try:
                fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            except FileExistsError:
                value = bytes.fromhex(path.read_text().strip())
            else:
                value = secrets.token_bytes(32)
                with os.fdopen(fd, "w") as f:
                    f.write(value.hex())
            if len(value) < 16:
                raise ValueError("short secret")
        except (OSError, ValueError):
            value = secrets.token_bytes(32)
        _secrets[home] = value
        return value


def _sign(secret: bytes, ident: str) -> str:
    return hmac.new(secret, f"gce-lab-owner:{ident}".encode(), hashlib.sha256).hexdigest()[:32]


def new_cookie_value(secret: bytes | None = None) -> str:
    """'<16 hex>.<signature>' for a new browser."""
    ident = secrets.token_hex(8)
    return f"{ident}.{_sign(secret or lab_secret(), ident)}"


def owner_from_cookie(value: str | None, secret: bytes | None = None) -> str | None:
    """'web-<16 hex>' for a correctly signed cookie value, else None."""
    if not value or not isinstance(value, str):
        return None
    ident, _, sig = value.partition(".")
    if not _ID.match(ident) or not hmac.compare_digest(sig.encode(), _sign(secret or lab_secret(), ident).encode()):
        return None
    return f"web-{ident}"


def owner_from_cookie_header(header: str | None, secret: bytes | None = None) -> str | None:
    """The owner of a raw ``Cookie:`` header, else None."""
    if not header:
        return None
    jar = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return None
    morsel = jar.get(COOKIE)
    return owner_from_cookie(morsel.value if morsel else None, secret)


def set_cookie_header(secret: bytes | None = None) -> str:
    """The ``Set-Cookie`` value that gives a browser its owner."""
    return f"{COOKIE}={new_cookie_value(secret)}; Max-Age={COOKIE_MAX_AGE_S}; Path=/; HttpOnly; SameSite=Strict"


def owner_for(cookies: Mapping[str, str], address: str | None, secret: bytes | None = None) -> str:
    """The owner of a browser with these cookies, connecting from ``address`` (None: this
    machine)."""
    found = owner_from_cookie(cookies.get(COOKIE), secret)
    if found:
        return found
    if not address:
        return LOCAL_OWNER
    return "web-ip-" + hmac.new(secret or lab_secret(), address.encode(), hashlib.sha256).hexdigest()[:16]


def current_owner() -> str:
    """The owner of the browser running this Streamlit script (see the module docstring)."""
    import streamlit as st

    from app.auth import client_address

    return owner_for(dict(st.context.cookies), client_address())


# --- caps ------------------------------------------------------------------------------------------
def active_runs(client, owner: str) -> int:
    """Runs of ``owner`` queued or running (what GCE_LAB_SESSION_CAP limits)."""
    from jobs.status import RunStatus

    return client.count_runs(owner=owner, status=[s for s in RunStatus if not s.is_final], include_archived=True)


def cap_problem(active: int, new: int, cap: int) -> str | None:
    """A message when ``new`` more runs would take this browser past ``cap`` queued or running
    runs, else None."""
    if active + new <= cap:
        return None
    left = max(0, cap - active)
    return (
        f"this browser already has {active} run(s) queued or running; the cap is {cap} per "
        f"browser, so at most {left} more can be launched now. Wait for some to finish, or "
        "cancel some on the Runs page."
    )


def submit_owned(client, specs: Sequence, cap: int, owner: str | None = None, **kwargs) -> tuple[str, list[str]]:
    """``client.submit_group(specs)`` as ``owner`` (default: this browser's), refused with
    SubmitRefused([("runs", message)]) when it would pass ``cap`` queued or running runs. The
    check and the submit hold a lock per owner, so two tabs cannot both slip under the cap."""
    from jobs.client import SubmitRefused

    owner = owner or current_owner()
    with _secrets_lock:
        lock = _owner_locks.setdefault(owner, threading.Lock())
    with lock:
        problem = cap_problem(active_runs(client, owner), len(specs), cap)
        if problem:
            raise SubmitRefused(f"refused, nothing was queued: {problem}", [("runs", problem)])
        return client.submit_group(specs, owner=owner, **kwargs)


def own_first(records: Sequence, owner: str) -> list:
    """``records`` with ``owner``'s first, each part in its given order."""
    return [r for r in records if r.owner == owner] + [r for r in records if r.owner != owner]

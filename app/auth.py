"""Who may reach the lab: loopback by default, a password before anything else is exposed.

Rules (enforced by the launcher ``python -m app`` and again by the page itself):
- the server binds to 127.0.0.1 unless told otherwise;
- a non-loopback address is refused unless a password is configured;
- with a password configured, every browser session must enter it before any page runs.
"""

from __future__ import annotations

import hmac
import ipaddress

LOOPBACK_NAMES = ("localhost", "ip6-localhost", "ip6-loopback")


class BindRefused(ValueError):
    """Serving on this address without a password is not allowed; the message says what to do."""


def is_loopback(address: str) -> bool:
    """True for 127.0.0.0/8, ::1 and the usual loopback host names; False for anything else,
    including "" and 0.0.0.0 (every interface)."""
    host = address.strip().strip("[]").lower()
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(address: str, password: str | None) -> None:
    """Raise BindRefused unless ``address`` is loopback or a password is configured."""
    if is_loopback(address) or password:
        return
    raise BindRefused(
        f"refusing to serve the lab on {address!r} without a password: anyone who can reach "
        "this address could launch runs. Set GCE_LAB_PASSWORD (or `password` in "
        ".streamlit/secrets.toml), or use the default --address 127.0.0.1."
    )


def password_ok(given: str | None, expected: str | None) -> bool:
    """Constant-time comparison; with no password configured every session is let in."""
    if not expected:
        return True
    return hmac.compare_digest((given or "").encode(), expected.encode())


def failure_delay(failures: int) -> float:
    """Seconds to wait after the n-th wrong password in a session: 0, 1, 2, 4, then 8."""
    if failures <= 0:
        return 0.0
    return float(min(2 ** (failures - 1), 8))

"""Who may reach the lab: loopback by default, a password before anything else is exposed.

Rules (enforced by the launcher ``python -m app`` and again by the page itself):
- the server binds to 127.0.0.1 unless told otherwise;
- a non-loopback address is refused unless a password is configured;
- with a password configured, every browser session must enter it before any page runs;
- wrong passwords are counted per client address and over the whole lab (``Throttle``), so new
  sessions or many sessions at once do not make guessing faster.
"""

from __future__ import annotations

import hmac
import ipaddress
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

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
    """Seconds an address waits after its n-th wrong password in a row: none after the first
    (a typo), then 1, 2, 4, 8, ... up to a minute."""
    if failures <= 1:
        return 0.0
    return float(min(2 ** (failures - 2), Throttle.MAX_DELAY_S))


@dataclass(frozen=True)
class Attempt:
    """What a password attempt gave: ``ok``; ``checked`` is False when it came too early and the
    password was not even compared; ``wait`` is how long until the next attempt is heard."""

    ok: bool
    checked: bool
    wait: float
    failures: int  # wrong passwords in a row from this address

    def message(self) -> str | None:
        """The line to show under the password field (None when let in)."""
        if self.ok:
            return None
        if not self.checked:
            return f"Too many wrong passwords: the next try is heard in {math.ceil(self.wait)} s."
        return "Wrong password."


class Throttle:
    """Counts wrong passwords per client address and over the whole lab, in one server process.

    After an address's n-th wrong password in a row it waits ``failure_delay(n)`` before its next
    attempt is even compared, however many sessions it opens; its count is forgotten after
    ``FORGET_S`` without a wrong password, or on a right one. Once ``GLOBAL_FREE`` wrong passwords
    arrived from anywhere within ``FORGET_S``, every attempt waits ``GLOBAL_GAP_S`` after the last
    wrong one (many addresses cannot guess faster than that together). ``clock`` is for tests."""

    MAX_DELAY_S = 60.0
    FORGET_S = 900.0
    GLOBAL_FREE = 30
    GLOBAL_GAP_S = 2.0

    def __init__(self, clock: Callable[[], float] = time.monotonic):
        self.clock = clock
        self._lock = threading.Lock()
        self._by_address: dict[str, tuple[int, float]] = {}  # address -> (failures, last failure)
        self._recent: deque[float] = deque()  # times of wrong passwords, any address

    def _forget(self, now: float) -> None:
        while self._recent and now - self._recent[0] > self.FORGET_S:
            self._recent.popleft()
        for address, (_, last) in list(self._by_address.items()):
            if now - last > self.FORGET_S:
                del self._by_address[address]

    def wait(self, address: str, now: float | None = None) -> float:
        """Seconds until ``address`` may try again (0: now)."""
        now = self.clock() if now is None else now
        failures, last = self._by_address.get(address, (0, now))
        wait = last + failure_delay(failures) - now
        if len(self._recent) >= self.GLOBAL_FREE:
            wait = max(wait, self._recent[-1] + self.GLOBAL_GAP_S - now)
        return max(0.0, wait)

    def attempt(self, address: str | None, given: str | None, expected: str | None) -> Attempt:
        """Compare ``given`` with ``expected`` unless ``address`` (None: this machine) must still
        wait; count a wrong one."""
        address = address or "local"
        with self._lock:
            now = self.clock()
            self._forget(now)
            failures = self._by_address.get(address, (0, now))[0]
            early = self.wait(address, now)
            if early > 0:
                return Attempt(False, False, early, failures)
            if password_ok(given, expected):
                self._by_address.pop(address, None)
                return Attempt(True, True, 0.0, 0)
            failures += 1
            self._by_address[address] = (failures, now)
            self._recent.append(now)
            return Attempt(False, True, self.wait(address, now), failures)

    def clear(self) -> None:
        with self._lock:
            self._by_address.clear()
            self._recent.clear()


def client_address() -> str | None:
    """The address of the browser running this Streamlit script; None for this machine (and
    where there is no real connection, as under AppTest)."""
    import streamlit as st

    address = st.context.ip_address
    return address if isinstance(address, str) and address else None


THROTTLE = Throttle()  # the server's one counter: the page scripts of every session share it

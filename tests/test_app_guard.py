"""app.guard: the lab answers only to its own names (DNS rebinding), checked on the rules, on the
ASGI middleware, and on a real `python -m app` with a raw HTTP client and a raw websocket
handshake."""

from __future__ import annotations

import asyncio
import base64
import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from app import owner
from app.__main__ import ROOT, healthy
from app.guard import HostRules, LabGuard
from tests.conftest import free_port

LOOP = HostRules("127.0.0.1")


@pytest.mark.parametrize("host", ["127.0.0.1:8501", "localhost:8501", "LOCALHOST", "localhost.:8501", "[::1]:8501", "127.9.9.9", "ip6-localhost:1"])
def test_loopback_hosts_are_the_lab(host):
    assert LOOP.host_ok(host)
    assert LOOP.refusal(host, None) is None


@pytest.mark.parametrize("host", [
    "evil.example:8501", "evil.example", "localhost.evil.example:8501", "127.0.0.1.evil.example",
    "192.168.1.5:8501", "", None, "user@127.0.0.1:8501", "127.0.0.1:notaport", "127.0.0.1/x", "(several)",
])
def test_other_hosts_are_refused(host):
    assert not LOOP.host_ok(host)
    assert "is not a name the lab is served on" in LOOP.refusal(host, None)


def test_addresses_listened_on_and_public_names():
    wide = HostRules("0.0.0.0", ("lab.example.org",))
    assert wide.host_ok("192.168.1.5:8501") and wide.host_ok("[2001:db8::1]:8501")
    assert wide.host_ok("LAB.example.org:443") and not wide.host_ok("evil.example:8501")
    one = HostRules("192.168.1.5")
    assert one.host_ok("192.168.1.5:8501") and not one.host_ok("192.168.1.6:8501")
    assert not one.host_ok("lab.example.org")


@pytest.mark.parametrize(("origin", "ok"), [
    (None, True),  # not a browser
    ("http://127.0.0.1:8501", True),
    ("http://evil.example:8501", False),
    ("http://localhost:8888", False),  # another local page (a notebook, a dev server)
    ("http://127.0.0.1:8502", False),
    ("null", False),
    ("https://lab.example.org", True),  # a proxy in front that rewrites Host
])
def test_origin_must_be_the_lab(origin, ok):
    rules = HostRules("127.0.0.1", ("lab.example.org",))
    assert rules.origin_ok(origin, "127.0.0.1:8501") is ok
    assert (rules.refusal("127.0.0.1:8501", origin) is None) is ok


def test_a_refusal_quotes_at_most_100_characters():
    reason = LOOP.refusal("x" * 100_000, None)
    assert len(reason) < 600 and "xxx..." in reason


# --- the middleware -------------------------------------------------------------------------------
def _call(guard: LabGuard, scope: dict) -> tuple[list[dict], bool]:
    """(messages the guard sent, whether the app behind it ran)."""
    sent, reached = [], []

    async def inner(scope, receive, send):
        reached.append(True)
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"text/html")]})
        await send({"type": "http.response.body", "body": b"<html>"})

    async def receive():
        return {"type": "http.request"}

    async def send(message):
        sent.append(message)

    asyncio.run(LabGuard(inner, guard.rules)(scope, receive, send))
    return sent, bool(reached)


def _scope(kind: str, host: str, **headers: str) -> dict:
    pairs = [(b"host", host.encode())] + [(k.encode(), v.encode()) for k, v in headers.items()]
    return {"type": kind, "path": "/", "method": "GET", "headers": pairs}


def test_middleware_refuses_foreign_hosts_before_streamlit(lab_home):
    guard = LabGuard(None, LOOP)
    sent, reached = _call(guard, _scope("http", "evil.example:8501"))
    assert not reached and sent[0]["status"] == 403 and b"evil.example" in sent[1]["body"]
    sent, reached = _call(guard, _scope("websocket", "evil.example:8501"))
    assert not reached and sent == [{"type": "websocket.close", "code": 1008}]
    sent, reached = _call(guard, _scope("websocket", "127.0.0.1:8501", origin="http://evil.example:8501"))
    assert not reached and sent[0]["type"] == "websocket.close"


def test_middleware_gives_a_new_browser_its_owner_cookie(lab_home):
    guard = LabGuard(None, LOOP)
    sent, reached = _call(guard, _scope("http", "127.0.0.1:8501"))
    assert reached and sent[0]["status"] == 200
    cookie = dict(sent[0]["headers"])[b"set-cookie"].decode()
    assert cookie.startswith(f"{owner.COOKIE}=") and "HttpOnly" in cookie and "SameSite=Strict" in cookie
    value = cookie.split(";")[0].split("=", 1)[1]
    assert owner.owner_from_cookie(value).startswith("web-")
    sent, _ = _call(guard, _scope("http", "127.0.0.1:8501", cookie=f"{owner.COOKIE}={value}"))
    assert b"set-cookie" not in dict(sent[0]["headers"])  # a valid cookie is kept
    sent, _ = _call(guard, _scope("http", "127.0.0.1:8501", cookie=f"{owner.COOKIE}=0123456789abcdef.forged"))
    assert b"set-cookie" in dict(sent[0]["headers"])  # a forged one is replaced


# --- a real lab -----------------------------------------------------------------------------------
def http_status(port: int, host: str, path: str = "/", origin: str | None = None) -> tuple[int, str]:
    """Status code and headers of a raw HTTP/1.1 GET with this Host (and Origin)."""
    lines = [f"GET {path} HTTP/1.1", f"Host: {host}", "Connection: close"] + ([f"Origin: {origin}"] if origin else [])
    return _exchange(port, lines)


def websocket_status(port: int, host: str, origin: str | None = None) -> int:
    """Status code of a raw websocket handshake on /_stcore/stream (101: accepted)."""
    key = base64.b64encode(os.urandom(16)).decode()
    lines = ["GET /_stcore/stream HTTP/1.1", f"Host: {host}", "Upgrade: websocket", "Connection: Upgrade",
             f"Sec-WebSocket-Key: {key}", "Sec-WebSocket-Version: 13", "Sec-WebSocket-Protocol: streamlit"]
    return _exchange(port, lines + ([f"Origin: {origin}"] if origin else []))[0]


def _exchange(port: int, lines: list[str]) -> tuple[int, str]:
    with socket.create_connection(("127.0.0.1", port), timeout=30) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    head = data.split(b"\r\n\r\n")[0].decode("latin-1")
    return int(head.split()[1]), head.lower()


@pytest.fixture(scope="module")
def lab_port(tmp_path_factory):
    """`python -m app --no-worker` on a free port, no password: the loopback lab of the issue."""
    home = tmp_path_factory.mktemp("guard-lab")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCE_LAB_") or k == "GCE_LAB_DATA"}
    env["GCE_LAB_HOME"] = str(home)
    port = free_port()
    log = home / "lab.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "app", "--no-worker", "--port", str(port)],
                                cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120
    while not healthy(f"http://127.0.0.1:{port}") and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.5)
    try:
        assert proc.poll() is None and healthy(f"http://127.0.0.1:{port}"), log.read_text()
        yield port
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)


def test_real_lab_refuses_a_foreign_host_on_the_page_and_the_websocket(lab_port):
    port = lab_port
    evil = f"evil.example:{port}"
    status, _ = http_status(port, evil)
    assert status == 403
    assert http_status(port, evil, "/_stcore/health")[0] == 403
    assert websocket_status(port, evil, f"http://{evil}") == 403  # the rebinding attack itself
    assert websocket_status(port, evil) == 403
    assert websocket_status(port, f"127.0.0.1:{port}", f"http://{evil}") == 403  # a foreign page


def test_real_lab_serves_its_own_names(lab_port):
    port = lab_port
    for host in (f"127.0.0.1:{port}", f"localhost:{port}"):
        status, headers = http_status(port, host)
        assert status == 200 and f"set-cookie: {owner.COOKIE}=" in headers
        assert websocket_status(port, host, f"http://{host}") == 101

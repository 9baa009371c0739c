"""The names the lab answers to (against DNS rebinding), and the ASGI middleware that enforces
them in front of Streamlit (``app/serve.py``); it also hands each browser its owner cookie.

DNS rebinding: a page on evil.example whose name is made to resolve to 127.0.0.1 is, for the
browser, same-origin with the lab; its requests carry ``Host: evil.example:8501``. So every
request (the page, its assets, the ``/_stcore/stream`` websocket) must name a host the lab is
served on:
- a loopback name or address (localhost, 127.0.0.0/8, ::1);
- an IP address the server listens on (any address when it listens on every interface): a page
  can only present an IP literal as its own origin when it really came from that address;
- a public name configured with ``--public-host`` / $GCE_LAB_PUBLIC_HOST (which needs a password).
A browser's ``Origin``, when sent, must be the lab itself (same host and port as ``Host``) or a
configured public name (a reverse proxy that rewrites Host). Anything else gets HTTP 403.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

from app.auth import is_loopback

WILDCARD_ADDRESSES = ("", "0.0.0.0", "::")


def _hostname(netloc: str) -> str | None:
    """'Evil.Example.:8501' -> 'evil.example'; None when it is not a plain host[:port]."""
    try:
        parts = urlsplit(f"//{netloc}")
        _ = parts.port  # validates the port
    except ValueError:
        return None
    if not netloc or parts.hostname is None or parts.username is not None or parts.path or parts.query or parts.fragment:
        return None
    return parts.hostname.lower().rstrip(".") or None


def _ip(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        return ipaddress.ip_address(text.strip("[]"))
    except ValueError:
        return None


@dataclass(frozen=True)
class HostRules:
    """What the server listens on (``address``) and the public names configured for it."""

    address: str = "127.0.0.1"
    public: tuple[str, ...] = ()

    def host_ok(self, host: str | None) -> bool:
        """Whether a request's Host header names the lab (see the module docstring)."""
        name = _hostname(host or "")
        if name is None:
            return False
        if is_loopback(name) or name in {p.lower().rstrip(".") for p in self.public}:
            return True
        ip = _ip(name)
        if ip is None:
            return False
        bound = self.address.strip().strip("[]")
        return bound in WILDCARD_ADDRESSES or ip == _ip(bound)

    def origin_ok(self, origin: str | None, host: str | None) -> bool:
        """Whether a browser's Origin may talk to the lab: none at all (not a browser), the lab
        itself, or a configured public name."""
        if origin is None:
            return True
        parts = urlsplit(origin.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null" (sandboxed frames, file:) and the like
        if host is not None and parts.netloc.lower() == host.strip().lower():
            return True
        name = _hostname(parts.netloc)
        return name is not None and name in {p.lower().rstrip(".") for p in self.public}

    def refusal(self, host: str | None, origin: str | None) -> str | None:
        """A one-line reason to refuse the request, else None."""
        if not self.host_ok(host):
            return (
                f"GCE Lab refuses this request: Host {_quote(host)} is not a name the lab is served "
                "on (loopback names and addresses, the addresses it listens on, and the names given "
                "with --public-host). Open the address `python -m app` printed, or start it with "
                "--public-host NAME (a password is needed for that)."
            )
        if not self.origin_ok(origin, host):
            return (
                f"GCE Lab refuses this request: it comes from the page {_quote(origin)}, which is not "
                "the lab. Open the lab's own address instead."
            )
        return None


def _quote(text: str | None, limit: int = 100) -> str:
    if text is None:
        return "(none)"
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _header(scope: dict, name: bytes) -> str | None:
    values = [v for k, v in scope.get("headers", ()) if k.lower() == name]
    if len(values) != 1:
        return None if not values else "(several)"
    return values[0].decode("latin-1")


class LabGuard:
    """ASGI middleware: refuse HTTP requests and websockets whose Host or Origin is not the lab
    (403, nothing else runs), and give a browser without a valid owner cookie a new one on the
    HTML page it loads. ``rules`` default to the server's address and $GCE_LAB_PUBLIC_HOST."""

    def __init__(self, app, rules: HostRules | None = None):
        from app import owner
        from app.settings import public_hosts

        self.app = app
        if rules is None:
            from streamlit import config

            rules = HostRules(str(config.get_option("server.address") or ""), public_hosts())
        self.rules = rules
        self.owner = owner

    async def __call__(self, scope, receive, send):
        kind = scope["type"]
        if kind not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        reason = self.rules.refusal(_header(scope, b"host"), _header(scope, b"origin"))
        if reason is not None:
            if kind == "websocket":
                await send({"type": "websocket.close", "code": 1008})  # before accept: HTTP 403
            else:
                body = (reason + "\n").encode()
                await send({"type": "http.response.start", "status": 403, "headers": [
                    (b"content-type", b"text/plain; charset=utf-8"), (b"content-length", str(len(body)).encode()),
                ]})
                await send({"type": "http.response.body", "body": body})
            return
        if kind == "websocket" or self.owner.owner_from_cookie_header(_header(scope, b"cookie")):
            await self.app(scope, receive, send)
            return

        async def send_with_cookie(message):
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", ()))
                ctype = next((v for k, v in headers if k.lower() == b"content-type"), b"")
                if ctype.startswith(b"text/html"):
                    headers.append((b"set-cookie", self.owner.set_cookie_header().encode("latin-1")))
                    message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_cookie)

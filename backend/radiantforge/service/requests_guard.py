"""Who may ask the service anything: the checks every request passes before it reaches a route.

A web page in the artist's browser can send requests to a port on this machine: a form post or
a ``fetch`` with a "simple" content type goes out without a CORS preflight, and DNS rebinding lets
a page on ``evil.example`` talk to 127.0.0.1 under its own name. None of that needs the page to
read the answer to do harm (submit a job, cancel one). So, in this order:

1. **Host**: a loopback name or address (``localhost``, ``127.0.0.0/8``, ``::1``), or a name the
   operator allows; anything else (a rebinding domain) is refused with 403.
2. **Origin / Sec-Fetch-Site**: browsers send them; the add-on, scripts and curl do not. When
   present they must say "this service's own origin" or "no page" (``Sec-Fetch-Site: none``, a
   URL typed by the user); a cross-site or same-site page is refused with 403. ``Origin: null``
   (sandboxed frames, files) is a page too.
3. **Token**: with one, ``Authorization: Bearer <token>`` (compared in constant time), else 401.

A pure ASGI middleware: a refused request is answered before any body is read.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
from urllib.parse import urlsplit

from ..errors import quoted

# Browsers' Sec-Fetch-Site values that are no web page of someone else's.
_TRUSTED_FETCH_SITES = ("same-origin", "none")


def split_host_header(value: str) -> tuple[str, str]:
    """``"Example.com:8765"`` -> ("example.com", "8765"); ``"[::1]:80"`` -> ("::1", "80")."""
    value = value.strip()
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        return host.lower(), rest[1:] if rest.startswith(":") else ""
    host, sep, port = value.rpartition(":")
    if sep and port.isdigit() and ":" not in host:
        return host.lower().rstrip("."), port
    return value.lower().rstrip("."), ""


def is_loopback_name(host: str) -> bool:
    """localhost, 127.x.y.z or ::1 (a name any rebinding domain cannot pretend to be)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class RequestGuard:
    """ASGI middleware: Host, then Origin / Sec-Fetch-Site, then the token (module docstring).

    allowed_hosts: names (or addresses) besides loopback ones that Host may carry; "*": any.
    """

    def __init__(self, app, token: str | None = None, allowed_hosts: list[str] | None = None):
        self.app = app
        self.token = token or None
        names = [split_host_header(h)[0] for h in (allowed_hosts or []) if h]
        self.any_host = "*" in (allowed_hosts or [])
        self.allowed_hosts = {n for n in names if n != "*"}

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = {}
        for name, value in scope.get("headers", ()):
            headers.setdefault(name.decode("latin-1").lower(), value.decode("latin-1"))
        problem = self.host_problem(headers.get("host", "")) or self.origin_problem(headers)
        if problem is not None:
            return await _answer(send, 403, problem)
        if self.token is not None:
            problem = self.token_problem(headers.get("authorization"))
            if problem is not None:
                return await _answer(send, 401, problem, {"www-authenticate": "Bearer"})
        return await self.app(scope, receive, send)

    def host_allowed(self, host: str) -> bool:
        return self.any_host or is_loopback_name(host) or host in self.allowed_hosts

    def host_problem(self, host_header: str) -> str | None:
        host, _ = split_host_header(host_header)
        if not host:
            return "the request has no Host header"
        if self.host_allowed(host):
            return None
        return (f"this service does not answer to the host name {quoted(host)}: it answers on loopback names "
                "(localhost, 127.0.0.1, [::1]) and the names its operator allows (radiantforge serve --allow-host)")

    def origin_problem(self, headers: dict[str, str]) -> str | None:
        fetch_site = headers.get("sec-fetch-site")
        if fetch_site is not None and fetch_site.strip().lower() not in _TRUSTED_FETCH_SITES:
            return (f"refused a request sent by a web page ({quoted(fetch_site)} Sec-Fetch-Site): this service only "
                    "answers the Blender add-on and other programs, not pages in a browser")
        origin = headers.get("origin")
        if origin is None:
            return None
        if self._same_origin(origin, headers.get("host", "")):
            return None
        return (f"refused a request from the web page origin {quoted(origin)}: this service only answers the "
                "Blender add-on and other programs, not pages in a browser")

    def _same_origin(self, origin: str, host_header: str) -> bool:
        """The page that sent it was served by this very service (which serves none today)."""
        try:
            parts = urlsplit(origin.strip())
        except ValueError:
            return False
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return False  # "null", file://, extensions: not our origin
        return split_host_header(parts.netloc) == split_host_header(host_header) and \
            self.host_allowed(split_host_header(parts.netloc)[0])

    def token_problem(self, header: str | None) -> str | None:
        """None when the header carries the token, else what is wrong with it."""
        if not header:
            return "this service needs a token: send the header 'Authorization: Bearer <token>'"
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer":
            return "expected 'Authorization: Bearer <token>'"
        if not hmac.compare_digest(value.strip().encode("utf-8", "replace"), self.token.encode("utf-8")):
            return "wrong token"
        return None


async def _answer(send, status: int, detail: str, extra_headers: dict[str, str] | None = None) -> None:
    body = json.dumps({"detail": detail}).encode("utf-8")
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode("ascii"))]
    headers += [(k.encode("latin-1"), v.encode("latin-1")) for k, v in (extra_headers or {}).items()]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})

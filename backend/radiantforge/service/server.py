"""`serve`: bind the socket, build the app, run uvicorn until interrupted."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

from ..errors import InputError
from .app import API_VERSION, DEFAULT_MAX_UPLOAD_MB, MIB, create_app
from .scheduler import DEFAULT_CANCEL_GRACE_S
from .store import default_root

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
# Read when no token is passed, so that the token need not appear in the process list.
TOKEN_ENV = "RADIANTFORGE_TOKEN"


def is_loopback(host: str) -> bool:
    """True when ``host`` only accepts connections from this machine."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # any other host name may resolve to a public address


def _url(host: str, port: int) -> str:
    if host in ("0.0.0.0", "::", ""):
        host = "127.0.0.1"
    if ":" in host and not host.startswith("["):
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _bind(host: str, port: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise InputError(f"cannot resolve {host!r}: {exc}", field="host") from None
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    if os.name != "nt":  # on Windows SO_REUSEADDR would let two servers share the port
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port} ({exc.strerror or exc}); is another service running there? "
                         "choose another --port", field="port") from None
    sock.set_inheritable(False)
    return sock


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None, root: str | Path | None = None,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, device: str | None = None,
          cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S, log_level: str = "info") -> None:
    """Run the service until interrupted (Ctrl+C or SIGTERM stop it cleanly).

    host, port: where to listen; port 0 picks a free port. Listening beyond loopback needs a token.
    token: required as ``Authorization: Bearer <token>`` on every request; default: the
        RADIANTFORGE_TOKEN environment variable; none on loopback means no check.
    root: the folder of jobs and results (default: the per-user data folder, ``default_root()``).
    max_upload_mb: the largest job archive accepted.
    device: the device every job runs on (default: each job's own ``device`` parameter).
    cancel_grace_s: how long a cancelled job may take to checkpoint before its worker is killed.

    Prints ``Radiant Forge service listening on <url>`` and, while it runs, keeps
    ``root/service.json`` ({url, host, port, pid, version, api_version}) for a client that
    started the service itself with port 0 (poll GET /api/v1/health until it answers).
    """
    import uvicorn

    import radiantforge

    token = token or os.environ.get(TOKEN_ENV) or None
    if not is_loopback(host) and not token:
        raise InputError(f"refusing to listen on {host!r} without a token: anyone who can reach this machine could run jobs "
                         f"and read results. Pass --token (or set {TOKEN_ENV}), or listen on 127.0.0.1", field="token")
    if max_upload_mb <= 0:
        raise InputError(f"expected a positive size in MiB, got {max_upload_mb}", field="max_upload_mb")
    root = Path(root).expanduser() if root is not None else default_root()
    app = create_app(root, token=token, max_upload_bytes=int(max_upload_mb * MIB), device=device, cancel_grace_s=cancel_grace_s)
    service = app.state.service
    sock = _bind(host, port)
    actual_port = sock.getsockname()[1]
    url = _url(host, actual_port)
    service.announcement = {"url": url, "host": host, "port": actual_port, "pid": os.getpid(),
                            "version": radiantforge.__version__, "api_version": API_VERSION}
    print(f"Radiant Forge service listening on {url} (jobs in {service.root})", flush=True)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on")
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()

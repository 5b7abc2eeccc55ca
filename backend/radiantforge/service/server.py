"""`serve`: bind the socket, build the app, run uvicorn until interrupted."""

from __future__ import annotations

import ipaddress
import os
import socket
from pathlib import Path

from ..errors import InputError
from .app import API_VERSION, MIB, create_app
from .connections import MAX_CONNECTIONS, BoundedH11Protocol
from .options import (DEFAULT_CANCEL_GRACE_S, DEFAULT_HOST, DEFAULT_MAX_FILE_MB, DEFAULT_MAX_UNPACKED_MB,
                      DEFAULT_MAX_UPLOAD_MB, DEFAULT_PORT, DEFAULT_STOP_GRACE_S, TOKEN_ENV)
from .store import default_root

# On shutdown, open requests get this long to finish (a download in progress) before uvicorn closes them.
SHUTDOWN_REQUEST_GRACE_S = 5
# The file descriptors the service would like: a connection each, plus the store's files.
WANTED_OPEN_FILES = 4096


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


def raise_open_file_limit(wanted: int = WANTED_OPEN_FILES) -> int:
    """Raise this process's soft limit on open files towards ``wanted`` (never above the hard limit);
    returns the limit now in force. Many systems start processes at 1024."""
    try:
        import resource
    except ImportError:  # pragma: no cover - Windows has no such limit to raise
        return wanted
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
            soft = target
        except (ValueError, OSError):
            pass
    return soft


def serve(host: str = DEFAULT_HOST, port: int = DEFAULT_PORT, token: str | None = None, root: str | Path | None = None,
          max_upload_mb: float = DEFAULT_MAX_UPLOAD_MB, device: str | None = None,
          cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S, log_level: str = "info", *,
          max_unpacked_mb: float = DEFAULT_MAX_UNPACKED_MB, max_file_mb: float = DEFAULT_MAX_FILE_MB,
          allowed_hosts: list[str] | tuple[str, ...] = (), model_dirs: list[str] | tuple[str, ...] = (),
          stop_grace_s: float = DEFAULT_STOP_GRACE_S, ray_address: str | None = None, ray_cpus_per_job: int = 1) -> None:
    """Run the service until interrupted (Ctrl+C or SIGTERM stop it cleanly).

    host, port: where to listen; port 0 picks a free port. Listening beyond loopback needs a token.
    token: required as ``Authorization: Bearer <token>`` on every request; default: the
        RADIANTFORGE_TOKEN environment variable; none on loopback means no check.
    root: the folder of jobs and results (default: the per-user data folder, ``default_root()``).
    max_upload_mb: the largest job archive accepted; max_unpacked_mb, max_file_mb: the most an
        archive may unpack to, in all and per file.
    device: the device every job runs on (default: each job's own ``device`` parameter).
    cancel_grace_s: how long a cancelled job may take to checkpoint before its worker is killed.
    allowed_hosts: ``Host`` names requests may carry besides loopback ones and ``host`` itself
        ("*": any, only with a token): what a remote service is reached by.
    model_dirs: folders a job's ``model`` may name a folder in (besides Hugging Face ids in the cache).
    stop_grace_s: on Ctrl+C or SIGTERM, how long the running job gets to checkpoint and stop
        (it resumes at the next start) before its worker is killed.
    ray_address: run jobs as Ray tasks on this cluster ("auto": this machine's, started if none runs),
        several at once, instead of one local worker process at a time. The Ray nodes must see the
        service's ``root`` (and any job folder submitted by path) at the same path: a shared disk.
    ray_cpus_per_job: the CPUs a job's Ray task takes on a cluster without GPUs.

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
    if "*" in allowed_hosts and not token:
        raise InputError("--allow-host '*' answers requests for any host name, which lets any web page reach the "
                         f"service through DNS rebinding; it needs --token (or {TOKEN_ENV})", field="allow_host")
    for name, value in (("max_upload_mb", max_upload_mb), ("max_unpacked_mb", max_unpacked_mb),
                        ("max_file_mb", max_file_mb)):
        if not value > 0:
            raise InputError(f"expected a positive size in MiB, got {value}", field=name)
    for folder in model_dirs:
        if not Path(folder).expanduser().is_dir():
            raise InputError("no such folder; --model-dir names a folder that holds model folders", file=folder,
                             field="model_dir")
    if ray_address is not None and not ray_address.strip():
        raise InputError("expected auto or a Ray cluster address (head:6379)", field="--ray")
    if ray_cpus_per_job < 1:
        raise InputError(f"expected at least 1 CPU per job, got {ray_cpus_per_job}", field="--ray-cpus-per-job")
    root = Path(root).expanduser() if root is not None else default_root()
    bind_host = host if host not in ("0.0.0.0", "::", "") else None
    app = create_app(root, token=token, max_upload_bytes=int(max_upload_mb * MIB), device=device,
                     cancel_grace_s=cancel_grace_s, max_unpacked_bytes=int(max_unpacked_mb * MIB),
                     max_file_bytes=int(max_file_mb * MIB),
                     allowed_hosts=[*allowed_hosts, *([bind_host] if bind_host else [])],
                     model_roots=[Path(folder).expanduser().resolve() for folder in model_dirs],
                     stop_grace_s=stop_grace_s, ray_address=ray_address, ray_cpus_per_job=ray_cpus_per_job)
    service = app.state.service
    sock = _bind(host, port)
    actual_port = sock.getsockname()[1]
    url = _url(host, actual_port)
    service.announcement = {"url": url, "host": host, "port": actual_port, "pid": os.getpid(),
                            "version": radiantforge.__version__, "api_version": API_VERSION}
    raise_open_file_limit()
    print(f"Radiant Forge service listening on {url} (jobs in {service.root})", flush=True)
    config = uvicorn.Config(app, log_level=log_level, access_log=False, lifespan="on", http=BoundedH11Protocol,
                            # uvicorn answers 503 at this many connections or requests in progress;
                            # BoundedH11Protocol keeps connections below it (silent ones are evicted).
                            limit_concurrency=MAX_CONNECTIONS + 1,
                            timeout_graceful_shutdown=SHUTDOWN_REQUEST_GRACE_S,
                            proxy_headers=False)  # no proxy in front: X-Forwarded-* from a client is a lie
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()

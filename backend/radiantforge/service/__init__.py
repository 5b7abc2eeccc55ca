"""The backend service the Blender add-on talks to: ``radiantforge serve``.

An HTTP API (app.py) over a folder of jobs (store.py) that run one at a time, each in its own
worker process (scheduler.py, worker.py). ``serve`` (server.py) is the entry point;
``create_app`` gives the bare FastAPI app for embedding.

The names below load on first use, so that a worker process (``python -m
radiantforge.service.worker``) does not import the web framework it never uses.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "serve": "server", "is_loopback": "server", "TOKEN_ENV": "server", "DEFAULT_HOST": "server", "DEFAULT_PORT": "server",
    "create_app": "app", "API_PREFIX": "app", "API_VERSION": "app",
    "default_root": "store",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

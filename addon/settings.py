"""Which backend to talk to, independent of Blender's preferences (so scripts can use it too).

Environment variables (for headless scripts; they win over the preferences when set):

    RADIANTFORGE_URL      use a running service at this URL (Remote)
    RADIANTFORGE_TOKEN    its token
    RADIANTFORGE_PYTHON   start a local service with this interpreter (Local)
    RADIANTFORGE_ROOT     the local service's job folder (--root)

With none set, a Local backend is started with this process's own interpreter when it has
radiantforge installed (the pip `bpy` module inside the project venv).
"""

from __future__ import annotations

import dataclasses
import os

from .backend_process import launch_local_backend, python_for_this_process
from .client import BackendError, ServiceClient

ENVIRONMENT_VARIABLES = ("RADIANTFORGE_URL", "RADIANTFORGE_TOKEN", "RADIANTFORGE_PYTHON", "RADIANTFORGE_ROOT")
MODES = ("LOCAL", "REMOTE")


@dataclasses.dataclass
class BackendSettings:
    mode: str = "LOCAL"  # "LOCAL": the add-on starts the service; "REMOTE": a running one at url
    python: str = ""  # LOCAL: interpreter of the venv where radiantforge is installed
    port: int = 0  # LOCAL: 0 = any free port
    root: str = ""  # LOCAL: the service's job folder ('' = its default)
    url: str = ""  # REMOTE
    token: str = ""  # REMOTE

    @staticmethod
    def environment_is_set() -> bool:
        return any(os.environ.get(name) for name in ("RADIANTFORGE_URL", "RADIANTFORGE_PYTHON"))

    @classmethod
    def from_environment(cls) -> "BackendSettings":
        url = os.environ.get("RADIANTFORGE_URL", "").strip()
        if url:
            return cls(mode="REMOTE", url=url, token=os.environ.get("RADIANTFORGE_TOKEN", ""))
        return cls(mode="LOCAL", python=os.environ.get("RADIANTFORGE_PYTHON", "").strip() or python_for_this_process(),
                   root=os.environ.get("RADIANTFORGE_ROOT", "").strip())

    @property
    def shares_disk(self) -> bool:
        """A local service reads job folders in place; a remote one gets an upload."""
        return self.mode == "LOCAL"


def open_backend(settings: BackendSettings):
    """Connect step by step without blocking: a generator that yields while the service starts
    and returns a ServiceClient whose /health answered (use with ``yield from``)."""
    if settings.mode not in MODES:
        raise BackendError(f"backend: expected one of {', '.join(MODES)}, got {settings.mode!r}")
    if settings.mode == "REMOTE":
        client = ServiceClient(settings.url, settings.token)
        client.health()
        return client
    backend = launch_local_backend(settings.python, port=settings.port, root=settings.root or None)
    while not backend.poll_ready():
        yield
    return backend.client()


def connect(settings: BackendSettings, poll_interval: float = 0.2) -> ServiceClient:
    """Blocking form of :func:`open_backend`."""
    import time

    steps = open_backend(settings)
    while True:
        try:
            next(steps)
        except StopIteration as done:
            return done.value
        time.sleep(poll_interval)

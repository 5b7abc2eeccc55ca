"""Start and stop a local `radiantforge serve` with the Python interpreter the user points to.

Blender's own Python has no torch; the backend lives in a separate environment (a venv where the
project was pip-installed). The add-on runs

    <python> -m radiantforge serve --host 127.0.0.1 --port N [--root DIR]     (token T in RADIANTFORGE_TOKEN)

in its own process — a backend crash or an out-of-memory never takes Blender down — waits until
GET /api/v1/health answers, and stops it when Blender exits or the add-on is disabled.

`LocalBackend.launch()` returns at once and `poll_ready()` is called until it is True, so the modal
operator keeps Blender responsive while the service starts; `start()` does both and blocks.
"""

from __future__ import annotations

import atexit
import os
import secrets
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from .client import BackendError, ServiceClient

LOOPBACK = "127.0.0.1"
# Importing torch, FastAPI and the job store takes a few seconds on a cold disk.
STARTUP_TIMEOUT_S = 120.0
# The interpreter check imports only radiantforge/__init__ (no torch), which is quick.
INTERPRETER_CHECK_TIMEOUT_S = 60.0
# On SIGTERM the service asks its running job to checkpoint and stop, and waits up to its
# --stop-grace before killing it (the job then resumes at the next start). The add-on gives it
# that long plus a margin for the checkpoint write and the service's own exit, and no more:
# Blender's exit must not hang on a stuck service.
LOCAL_STOP_GRACE_S = 20.0
STOP_TIMEOUT_S = LOCAL_STOP_GRACE_S + 10.0
# `radiantforge serve` reads its token from this variable when --token is not given.
TOKEN_ENV = "RADIANTFORGE_TOKEN"
_LOG_TAIL_CHARS = 2000
# ModuleNotFoundError text printed by `python -m radiantforge` when the project is not installed.
_NOT_INSTALLED_MARKERS = ("No module named radiantforge", "No module named 'radiantforge'")


def backend_environment() -> dict[str, str]:
    """The environment of a backend child process: this one's, less what would mislead the venv's python.

    Blender sets PYTHONHOME/PYTHONPATH for its own interpreter; the venv's python must not see them.
    PYTHONSAFEPATH keeps the working folder off ``sys.path`` (Python 3.11+): a folder named like the
    package there (e.g. one beside a .blend) would otherwise shadow an editable install of radiantforge.
    """
    environment = dict(os.environ)
    for name in ("PYTHONHOME", "PYTHONPATH"):
        environment.pop(name, None)
    environment["PYTHONSAFEPATH"] = "1"
    return environment


def free_port(host: str = LOOPBACK) -> int:
    """A TCP port nobody listens on right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def check_interpreter(python: str) -> str:
    """Check that ``python`` runs and has radiantforge; returns its radiantforge version.

    Raises BackendError saying what to fix: an empty or wrong path, not a Python, project not installed.
    """
    python = (python or "").strip()
    if not python:
        raise BackendError("no Python interpreter set: in the Radiant Forge preferences, point 'Python' to the python "
                           "of a virtual environment where Radiant Forge is installed (pip install radiantforge)")
    path = Path(os.path.expanduser(python))
    if not path.exists():
        raise BackendError(f"Python interpreter {python!r} does not exist; point 'Python' in the preferences to "
                           "e.g. /path/to/venv/bin/python (Windows: venv\\Scripts\\python.exe)")
    if path.is_dir() or not os.access(path, os.X_OK):
        raise BackendError(f"{python!r} is not an executable Python interpreter; point 'Python' in the preferences to "
                           "the python file inside the venv's bin/ (Windows: Scripts\\python.exe)")
    try:
        completed = subprocess.run([str(path), "-c", "import radiantforge; print(radiantforge.__version__)"],
                                   capture_output=True, text=True, timeout=INTERPRETER_CHECK_TIMEOUT_S,
                                   env=backend_environment())
    except OSError as exc:
        raise BackendError(f"cannot run {python!r} ({exc.strerror or exc}); is it a Python interpreter?") from None
    except subprocess.TimeoutExpired:
        raise BackendError(f"{python!r} did not answer within {INTERPRETER_CHECK_TIMEOUT_S:.0f} s") from None
    if completed.returncode != 0:
        output = (completed.stderr or completed.stdout).strip()
        if any(marker in output for marker in _NOT_INSTALLED_MARKERS):
            raise BackendError(f"Radiant Forge is not installed in {python!r}: run `{python} -m pip install radiantforge` "
                               "(or `pip install -e .` in a checkout), or choose the venv where it is installed")
        raise BackendError(f"{python!r} failed to import radiantforge: {output[-_LOG_TAIL_CHARS:]}")
    return completed.stdout.strip()


class LocalBackend:
    """A `radiantforge serve` child process on loopback with a fresh random token."""

    def __init__(self, python: str, *, port: int = 0, root: str | None = None, log_dir: str | None = None):
        self.python = (python or "").strip()
        self.port = port
        self.root = root or None
        self.token = secrets.token_urlsafe(24)
        self.process: subprocess.Popen | None = None
        self.log_path = Path(log_dir or tempfile.gettempdir()) / f"radiantforge-serve-{os.getpid()}.log"
        self._log_file = None
        self._deadline = 0.0

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}"

    def client(self) -> ServiceClient:
        return ServiceClient(self.url, self.token)

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def command(self) -> list[str]:
        # The token travels in the environment (TOKEN_ENV), not on the command line where every
        # local user could read it in the process list.
        command = [self.python, "-m", "radiantforge", "serve", "--host", LOOPBACK, "--port", str(self.port),
                   "--stop-grace", f"{LOCAL_STOP_GRACE_S:g}"]
        if self.root:
            command += ["--root", str(self.root)]
        return command

    def launch(self) -> None:
        """Check the interpreter and start the process; returns without waiting for it to answer."""
        check_interpreter(self.python)
        if not self.port:
            self.port = free_port()
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        self._log_file = open(self.log_path, "ab")
        environment = backend_environment()
        environment["PYTHONUNBUFFERED"] = "1"
        environment[TOKEN_ENV] = self.token
        try:
            self.process = subprocess.Popen(self.command(), stdout=self._log_file, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=environment)
        except OSError as exc:
            self._close_log()
            raise BackendError(f"cannot start {self.python!r} ({exc.strerror or exc})") from None
        self._deadline = time.monotonic() + STARTUP_TIMEOUT_S

    def log_tail(self) -> str:
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")[-_LOG_TAIL_CHARS:]
        except OSError:
            return ""

    def poll_ready(self) -> bool:
        """True once the service answers /health; raises BackendError if it died or took too long."""
        if self.process is None:
            raise BackendError("the local backend was not started")
        code = self.process.poll()
        if code is not None:
            tail = self.log_tail().strip()
            self._close_log()
            if "invalid choice: 'serve'" in tail or "No module named radiantforge.service" in tail:
                raise BackendError(f"the Radiant Forge in {self.python!r} has no `serve` command; upgrade it "
                                   f"(pip install -U radiantforge). Log {self.log_path}:\n{tail}")
            raise BackendError(f"the local backend exited (code {code}) before it answered. Log {self.log_path}:\n{tail}")
        try:
            self.client().health()
            return True
        except BackendError as exc:
            if exc.status is not None or "version mismatch" in str(exc):
                raise  # it answered, with something we cannot use
            if time.monotonic() > self._deadline:
                self.stop()
                raise BackendError(f"the local backend did not answer within {STARTUP_TIMEOUT_S:.0f} s; "
                                   f"see its log {self.log_path}") from None
            return False

    def start(self, poll_interval: float = 0.2) -> ServiceClient:
        """Launch and block until the service answers. Returns a client for it."""
        self.launch()
        while not self.poll_ready():
            time.sleep(poll_interval)
        return self.client()

    def stop(self) -> None:
        """Terminate the service (it stops its worker); kill it if it does not exit in time."""
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=STOP_TIMEOUT_S)
        self._close_log()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None


# The one local backend of this Blender session (None when not started).
_current: LocalBackend | None = None


def current_local_backend() -> LocalBackend | None:
    return _current if _current is not None and _current.is_running() else None


def launch_local_backend(python: str, *, port: int = 0, root: str | None = None) -> LocalBackend:
    """Return the running local backend for ``python`` (same settings), or launch a new one (not yet ready)."""
    global _current
    running = current_local_backend()
    if running is not None and running.python == (python or "").strip() and (not port or running.port == port) \
            and running.root == (root or None):
        return running
    stop_local_backend()
    backend = LocalBackend(python, port=port, root=root)
    backend.launch()
    _current = backend
    return backend


def stop_local_backend() -> bool:
    """Stop the local backend if one runs; True if there was one."""
    global _current
    backend, _current = _current, None
    if backend is None:
        return False
    backend.stop()
    return True


atexit.register(stop_local_backend)


def python_for_this_process() -> str:
    """This process's interpreter when it has radiantforge installed (the pip `bpy` in the project venv), else ''.

    Blender's bundled Python never has it, so inside Blender this is '' and the preferences decide.
    """
    import importlib.util

    if sys.executable and importlib.util.find_spec("radiantforge") is not None:
        return sys.executable
    return ""

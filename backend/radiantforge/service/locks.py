"""An exclusive lock on a file, held for the life of a process (POSIX flock / Windows msvcrt).

The service holds one on its root folder, so two services never run the same jobs, and each
worker holds one on its job, so a worker that outlived a killed service has fully exited before
a new worker touches the same folder. The operating system drops the lock when the holder dies.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

# How often a blocking acquire retries on Windows, where msvcrt has no wait-forever mode.
_WINDOWS_RETRY_S = 0.1


class FileLock:
    """Exclusive lock on ``path`` (created if missing). The holder's pid is written into the file."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._fd: int | None = None

    def acquire(self, blocking: bool = True) -> bool:
        """Take the lock; returns False when ``blocking`` is False and someone else holds it."""
        if self._fd is not None:
            return True
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            locked = _lock_fd(fd, blocking)
        except BaseException:
            os.close(fd)
            raise
        if not locked:
            os.close(fd)
            return False
        self._fd = fd
        os.ftruncate(fd, 0)
        os.write(fd, str(os.getpid()).encode("ascii"))
        return True

    def release(self) -> None:
        if self._fd is None:
            return
        fd, self._fd = self._fd, None
        try:
            _unlock_fd(fd)
        finally:
            os.close(fd)

    def holder_pid(self) -> int | None:
        """The pid written by the current holder, when readable."""
        try:
            return int(self.path.read_text(encoding="ascii").strip() or "0") or None
        except (OSError, ValueError):
            return None


if os.name == "nt":  # pragma: no cover - exercised on Windows only
    import msvcrt

    def _lock_fd(fd: int, blocking: bool) -> bool:
        while True:
            try:
                os.lseek(fd, 0, os.SEEK_SET)
                msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
                return True
            except OSError:
                if not blocking:
                    return False
                time.sleep(_WINDOWS_RETRY_S)

    def _unlock_fd(fd: int) -> None:
        os.lseek(fd, 0, os.SEEK_SET)
        msvcrt.locking(fd, msvcrt.LK_UNLCK, 1)

else:
    import fcntl

    def _lock_fd(fd: int, blocking: bool) -> bool:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            return True
        except BlockingIOError:
            return False

    def _unlock_fd(fd: int) -> None:
        fcntl.flock(fd, fcntl.LOCK_UN)

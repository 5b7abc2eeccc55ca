"""The service's jobs on disk: ``root/jobs/<id>/`` survives restarts.

```
root/
  service.json          url, port and pid of the running service (for clients that started it)
  service.lock          held by the running service: one service per root
  incoming/<id>/        uploads being received and checked; cleared at start
  jobs/<id>/
    record.json         id, created, source (upload | path), job folder, events offset
    job/                the job folder of an uploaded job (a local-path job runs where it is)
    worker.log          stdout and stderr of the worker processes
    worker.lock         held by the worker running this job
    result.zip          the downloadable result, built on first request
```

A job's state is read from its events file (radiantforge.events), the job's only progress
channel, so it is right after a restart without any other bookkeeping. A job folder (local
or uploaded) may already hold events of an earlier run; ``events_offset`` is the number of
event lines it had when it was submitted, and everything the service reports (state, the
events list and its indices) starts there.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import secrets
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from ..jobs import EVENTS_FILE, RESULT_DIR
from .archive import remove_tree

JOBS_DIR = "jobs"
INCOMING_DIR = "incoming"
RECORD_FILE = "record.json"
UPLOADED_JOB_DIR = "job"
WORKER_LOG = "worker.log"
WORKER_LOCK = "worker.lock"
RESULT_ZIP = "result.zip"
SERVICE_FILE = "service.json"
SERVICE_LOCK = "service.lock"

SOURCE_UPLOAD = "upload"
SOURCE_PATH = "path"

QUEUED, RUNNING, FINISHED, FAILED, CANCELLED = "queued", "running", "finished", "failed", "cancelled"
TERMINAL_STATES = (FINISHED, FAILED, CANCELLED)
# event type -> the state it leaves the job in (the rule of radiantforge.jobs.job_state). A
# suspended job stopped because the service did: like a run that was killed, it counts as running
# (and is queued again first when the service starts); "queued" is the service's resume of a job.
_STATE_OF_EVENT = {"started": RUNNING, "suspended": RUNNING, "queued": QUEUED, "finished": FINISHED, "error": FAILED,
                   "cancelled": CANCELLED}

_JOB_ID_PATTERN = re.compile(r"^\d{8}-\d{6}-[0-9a-f]{8}$")


def default_root() -> Path:
    """The per-user data folder of the service (platform convention)."""
    if sys.platform == "win32":
        base = Path(os.environ.get("LOCALAPPDATA") or Path.home() / "AppData" / "Local")
    elif sys.platform == "darwin":
        base = Path.home() / "Library" / "Application Support"
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share")
    return base / "radiantforge" / "service"


def new_job_id() -> str:
    """Sortable by creation time, unique by its random tail: ``20250131-142501-9f3c2a1b``."""
    return time.strftime("%Y%m%d-%H%M%S") + "-" + secrets.token_hex(4)


def is_job_id(text: str) -> bool:
    """True for strings shaped like a job id (so an id never walks out of ``root/jobs``)."""
    return bool(_JOB_ID_PATTERN.match(text))


def write_json_atomic(path: Path, data: Any) -> None:
    """Write to a temporary name beside ``path``, then rename: readers never see half a file."""
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            json.dump(data, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def count_event_lines(path: Path) -> int:
    """Complete lines in an events file (0 when it does not exist)."""
    try:
        with open(path, "rb") as f:
            return sum(1 for line in f if line.endswith(b"\n"))
    except FileNotFoundError:
        return 0


class EventsIndex:
    """Incremental reader of one events file, starting at line ``first_line``.

    Keeps the byte offset of every complete line, so ``events(since)`` seeks instead of
    re-reading the whole file at every poll, and a running summary (state, last progress,
    last error) that only parses new lines.
    """

    def __init__(self, path: Path, first_line: int = 0):
        self.path = path
        self.first_line = first_line
        self._lock = threading.Lock()
        self._reset()

    def _reset(self) -> None:
        self._consumed = 0  # bytes of complete lines read so far
        self._line_starts: list[int] = []
        self.state = QUEUED
        self.last_progress: dict | None = None
        self.last_error: str | None = None
        self.last_terminal_line = -1  # absolute line number of the last finished/error/cancelled

    @property
    def count(self) -> int:
        """Events of this job (lines from ``first_line`` on)."""
        with self._lock:
            self._refresh_locked()
            return max(0, len(self._line_starts) - self.first_line)

    def refresh(self) -> None:
        with self._lock:
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        try:
            size = os.stat(self.path).st_size
        except FileNotFoundError:
            size = 0
        if size < self._consumed:  # replaced or truncated by someone: read again from the top
            self._reset()
        if size == self._consumed:
            return
        with open(self.path, "rb") as f:
            f.seek(self._consumed)
            data = f.read(size - self._consumed)
        start = 0
        while (end := data.find(b"\n", start)) != -1:
            line_number = len(self._line_starts)
            self._line_starts.append(self._consumed + start)
            if line_number >= self.first_line:
                self._summarise(data[start:end], line_number)
            start = end + 1
        self._consumed += start  # a partial last line waits until it is complete

    def _summarise(self, line: bytes, line_number: int) -> None:
        try:
            event = json.loads(line)
        except ValueError:
            return
        kind = event.get("type")
        if kind in _STATE_OF_EVENT:
            self.state = _STATE_OF_EVENT[kind]
            if self.state in TERMINAL_STATES:
                self.last_terminal_line = line_number
        if kind == "progress":
            self.last_progress = event
        elif kind == "error":
            self.last_error = event.get("message")
        elif kind in ("started", "queued"):
            self.last_error = None

    def line_count_absolute(self) -> int:
        with self._lock:
            self._refresh_locked()
            return len(self._line_starts)

    def events(self, since: int = 0, limit: int | None = None) -> tuple[list[dict], int]:
        """Events ``since`` (0-based, relative to ``first_line``) on, at most ``limit``; and the next index."""
        with self._lock:
            self._refresh_locked()
            total = max(0, len(self._line_starts) - self.first_line)
            since = max(0, since)
            stop = total if limit is None else min(total, since + limit)
            if since >= stop:
                return [], min(since, total)
            begin = self._line_starts[self.first_line + since]
            end = self._line_starts[self.first_line + stop] if self.first_line + stop < len(self._line_starts) else self._consumed
            with open(self.path, "rb") as f:
                f.seek(begin)
                data = f.read(end - begin)
        events = []
        for line in data.splitlines():
            try:
                events.append(json.loads(line))
            except ValueError:
                events.append({"type": "unreadable", "text": line.decode("utf-8", "replace")})
        return events, stop


@dataclasses.dataclass
class JobRecord:
    """What the service remembers of a job beyond its folder (``record.json``)."""

    id: str
    created: float
    source: str  # SOURCE_UPLOAD | SOURCE_PATH
    job_dir: str  # relative to the record folder for uploads, absolute for local paths
    kind: str
    events_offset: int = 0


class StoredJob:
    """A job of the store: its record, its folders and its events."""

    def __init__(self, record: JobRecord, record_dir: Path):
        self.record = record
        self.record_dir = record_dir
        self.events = EventsIndex(self.job_dir / EVENTS_FILE, first_line=record.events_offset)

    @property
    def id(self) -> str:
        return self.record.id

    @property
    def job_dir(self) -> Path:
        path = Path(self.record.job_dir)
        return path if path.is_absolute() else self.record_dir / path

    @property
    def result_dir(self) -> Path:
        return self.job_dir / RESULT_DIR

    @property
    def worker_log(self) -> Path:
        return self.record_dir / WORKER_LOG

    @property
    def worker_lock(self) -> Path:
        return self.record_dir / WORKER_LOCK

    @property
    def result_zip(self) -> Path:
        return self.record_dir / RESULT_ZIP


class JobStore:
    """All jobs under ``root/jobs``; thread-safe."""

    def __init__(self, root: str | Path):
        self.root = Path(root)
        self.jobs_dir = self.root / JOBS_DIR
        self.incoming_dir = self.root / INCOMING_DIR
        self._lock = threading.Lock()
        self._jobs: dict[str, StoredJob] = {}

    def open(self) -> None:
        """Create the folders, drop unfinished uploads, and load every job record."""
        self.jobs_dir.mkdir(parents=True, exist_ok=True)
        remove_tree(self.incoming_dir)
        self.incoming_dir.mkdir(parents=True, exist_ok=True)
        loaded = {}
        for record_dir in sorted(self.jobs_dir.iterdir()):
            record_file = record_dir / RECORD_FILE
            if not (record_dir.is_dir() and is_job_id(record_dir.name) and record_file.is_file()):
                continue
            try:
                record = JobRecord(**json.loads(record_file.read_text(encoding="utf-8")))
            except (ValueError, TypeError):
                continue  # a record from a future or broken version: leave it alone
            loaded[record.id] = StoredJob(record, record_dir)
        with self._lock:
            self._jobs = loaded

    def new_incoming(self) -> tuple[str, Path]:
        """A fresh id and a private folder to receive and check an upload in."""
        job_id = new_job_id()
        folder = self.incoming_dir / job_id
        folder.mkdir(parents=True)
        return job_id, folder

    def add(self, job_id: str, source: str, job_dir: Path, kind: str, staged_dir: Path | None = None) -> StoredJob:
        """Register a checked job. ``staged_dir`` (an incoming folder) becomes its record folder."""
        # An uploaded folder may carry the events of an earlier run too (a job moved to another machine).
        offset = count_event_lines(job_dir / EVENTS_FILE)
        stored_dir = job_dir.relative_to(staged_dir).as_posix() if source == SOURCE_UPLOAD else str(job_dir)
        record = JobRecord(id=job_id, created=time.time(), source=source, job_dir=stored_dir, kind=kind, events_offset=offset)
        if staged_dir is None:
            staged_dir = self.incoming_dir / job_id
            staged_dir.mkdir(parents=True)
        write_json_atomic(staged_dir / RECORD_FILE, dataclasses.asdict(record))
        record_dir = self.jobs_dir / job_id
        os.replace(staged_dir, record_dir)  # atomic: a job is in jobs/ whole or not at all
        job = StoredJob(record, record_dir)
        with self._lock:
            self._jobs[job_id] = job
        return job

    def get(self, job_id: str) -> StoredJob | None:
        with self._lock:
            return self._jobs.get(job_id)

    def all(self) -> list[StoredJob]:
        with self._lock:
            return sorted(self._jobs.values(), key=lambda job: (job.record.created, job.id))

    def remove(self, job_id: str) -> StoredJob | None:
        """Forget a job and delete its record folder (and so an uploaded job's files). A local
        job folder is the user's and stays where it is."""
        with self._lock:
            job = self._jobs.pop(job_id, None)
        if job is not None:
            remove_tree(job.record_dir)
        return job

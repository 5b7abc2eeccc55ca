"""Run the service's jobs one at a time, each in its own worker process.

A worker is ``python -m radiantforge.service.worker JOB_DIR`` (see worker.py). Running it as a
separate process is what keeps the service alive through a cancel, an out-of-memory kill, a
segfault in a native extension, or a bug: the scheduler only watches the process and the job's
events file. When a worker ends without a final event (finished, error, cancelled), the
scheduler writes one for it, naming the exit code or signal.

The worker's stdin is a pipe that the scheduler never writes to: when the service dies, however
it dies, the pipe closes and the worker exits at once (``--exit-with-parent``), so a restarted
service never finds a stray worker still writing into a job folder. Jobs that were running when
the service stopped are queued again at start and resume from their last checkpoint.

When the service stops on purpose (Ctrl+C, SIGTERM), ``stop`` asks the running job to checkpoint
and stop (a SUSPEND request: the job ends its run with a "suspended" event, not "cancelled"),
waits up to ``stop_grace_s`` for it, and only then kills it: at most the step in progress is lost.
A job whose worker died (out of memory, SIGKILL) ends "failed" with an error event that says which
step its checkpoint holds; ``resume`` queues it (or a cancelled job) again.

What a worker prints (Python tracebacks included) goes to its ``worker.log`` and, for a crash, to
the service's log; never into the events, which clients read.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import radiantforge

from ..errors import shorten
from ..events import EventLog
from ..jobs import (CANCEL_FILE, EVENTS_FILE, checkpoint_info, clear_stop_files, describe_checkpoint, request_cancel,
                    request_suspend)
from .options import DEFAULT_CANCEL_GRACE_S, DEFAULT_STOP_GRACE_S
from .store import CANCELLED, FAILED, QUEUED, RUNNING, TERMINAL_STATES, JobStore, StoredJob

log = logging.getLogger("radiantforge.service")

# States from which a job can be queued again (its folder still there): it ended without a result.
RESUMABLE_STATES = (FAILED, CANCELLED)
_POLL_S = 0.2  # how often the scheduler looks at the running worker
_LOG_TAIL_CHARS = 2000  # how much of the worker's output goes into a crash's error event
_WORKER_MODULE = "radiantforge.service.worker"


@dataclasses.dataclass
class ActiveRun:
    job: StoredJob
    process: subprocess.Popen
    log_file: object
    first_event_line: int  # events written from this line on belong to this run
    log_start: int  # byte offset in worker.log where this run's output starts
    started: float


def worker_command(job: StoredJob, device: str | None, model_roots: list[Path] | None = None) -> list[str]:
    command = [sys.executable, "-m", _WORKER_MODULE, str(job.job_dir), "--lock", str(job.worker_lock), "--exit-with-parent",
               "--keep-stop-requests"]
    if device:
        command += ["--device", device]
    # The worker validates the job again before running it: with the same confinement of models.
    command += ["--confine-models"]
    for root in model_roots or ():
        command += ["--model-root", str(root)]
    return command


def _worker_environment() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    # The worker must import the same radiantforge as the service, installed or not.
    package_parent = str(Path(radiantforge.__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    return env


def describe_exit(returncode: int) -> str:
    if returncode < 0:
        try:
            name = signal.Signals(-returncode).name
        except ValueError:
            name = f"signal {-returncode}"
        hint = " (the system may have run out of memory)" if name == "SIGKILL" else ""
        return f"the worker process was killed by {name}{hint}"
    return f"the worker process exited with code {returncode}"


class Scheduler:
    """One job at a time on the service's device; a thread that starts and watches workers."""

    def __init__(self, store: JobStore, device: str | None = None, cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S,
                 model_roots: list[Path] | None = None, stop_grace_s: float = DEFAULT_STOP_GRACE_S):
        self.store = store
        self.device = device
        self.cancel_grace_s = cancel_grace_s
        self.model_roots = list(model_roots or [])
        self.stop_grace_s = stop_grace_s
        self._cond = threading.Condition()
        self._queue: list[str] = []
        self._active: ActiveRun | None = None
        self._cancel_requested: dict[str, float] = {}  # job id -> time of the request
        self._stopping = False
        self._thread: threading.Thread | None = None

    # ---- life cycle -------------------------------------------------------------------------

    def start(self) -> None:
        """Queue every job that has not ended (those that were running first), start the thread."""
        interrupted, waiting = [], []
        for job in self.store.all():
            job.events.refresh()
            if job.events.state == RUNNING:
                interrupted.append(job.id)
            elif job.events.state == QUEUED:
                waiting.append(job.id)
        with self._cond:
            self._queue = interrupted + waiting
        self._thread = threading.Thread(target=self._loop, name="radiantforge-scheduler", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the thread; ask a running job to checkpoint and stop (SUSPEND), wait up to
        ``stop_grace_s``, then kill it. Either way its job is queued again at the next start and
        resumes from its checkpoint (the suspended one loses nothing)."""
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            run, self._active = self._active, None
        if run is None:
            return
        if run.process.poll() is None:
            log.info("job %s: asking the worker to checkpoint and stop (up to %.0f s)", run.job.id, self.stop_grace_s)
            if run.job.job_dir.is_dir():
                request_suspend(run.job.job_dir)
            try:
                run.process.wait(timeout=self.stop_grace_s)
            except subprocess.TimeoutExpired:
                log.warning("job %s: the worker did not stop within %.0f s; killing it (it resumes from its last "
                            "checkpoint)", run.job.id, self.stop_grace_s)
        _kill_process_tree(run.process)
        run.process.wait()
        run.log_file.close()

    # ---- requests -----------------------------------------------------------------------------

    def enqueue(self, job_id: str) -> None:
        with self._cond:
            self._queue.append(job_id)
            self._cond.notify_all()

    def state(self, job: StoredJob) -> str:
        """The state a client sees: the events' state, except that a job only counts as running
        while a worker runs it (one that was running when the service stopped is queued again)."""
        if not job.job_dir.is_dir():
            return FAILED  # a local job folder deleted behind the service's back
        job.events.refresh()
        events_state = job.events.state
        with self._cond:
            if events_state in TERMINAL_STATES:
                return events_state
            if self._runs(job.id):
                return RUNNING
            if job.id in self._queue:
                return QUEUED
        return events_state

    def queue_position(self, job_id: str) -> int | None:
        """0 for the next job to run; None when the job is not waiting."""
        with self._cond:
            return self._queue.index(job_id) if job_id in self._queue else None

    def _runs(self, job_id: str) -> bool:
        """Whether a worker runs ``job_id`` now (called with the lock held)."""
        return self._active is not None and self._active.job.id == job_id

    def worker_pid(self, job_id: str) -> int | None:
        with self._cond:
            if self._runs(job_id):
                return self._active.process.pid
        return None

    def describe(self) -> dict:
        """Where jobs run, for /health."""
        return {"kind": "local", "concurrent_jobs": 1}

    def wait_until_worker_exits(self, job_id: str, timeout: float) -> bool:
        """Wait (up to ``timeout`` s) until no worker runs ``job_id``; True when none does.

        A worker writes its job's final event a moment before its process ends."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._runs(job_id), timeout)

    def cancel_requested(self, job_id: str) -> bool:
        with self._cond:
            return job_id in self._cancel_requested

    def resume(self, job: StoredJob) -> None:
        """Queue a failed or cancelled job again; it continues from its checkpoint (when it has one).

        A "queued" event makes it waiting again on disk too, so a restart keeps it queued.
        Raises ValueError naming why when the job is not in RESUMABLE_STATES.
        """
        with self._cond:
            state = self.state(job)
            if state not in RESUMABLE_STATES:
                raise ValueError(state)
            (job.job_dir / CANCEL_FILE).unlink(missing_ok=True)
            info = checkpoint_info(job.job_dir, job.record.kind)
            EventLog(job.job_dir / EVENTS_FILE).emit("queued", message=f"resumed by a client: {describe_checkpoint(info)}",
                                                     by="service", checkpoint_step=None if info is None else info["step"])
            self._queue.append(job.id)
            self._cond.notify_all()

    def cancel(self, job: StoredJob) -> None:
        """A waiting job is cancelled at once; a running one is asked to stop (it checkpoints and
        ends with a 'cancelled' event) and killed if it has not ended after the grace period."""
        with self._cond:
            if self._runs(job.id):
                self._cancel_requested.setdefault(job.id, time.monotonic())
                request_cancel(job.job_dir)
                self._cond.notify_all()
                return
            if job.id in self._queue:
                self._queue.remove(job.id)
            job.events.refresh()
            if job.events.state not in TERMINAL_STATES:
                EventLog(job.job_dir / EVENTS_FILE).emit("cancelled", message="cancelled before it started", by="service")

    # ---- the thread ---------------------------------------------------------------------------

    def _loop(self) -> None:
        while True:
            with self._cond:
                if self._stopping:
                    return
                try:
                    self._step()
                except Exception:  # never let one bad job stop the queue
                    log.exception("scheduler error")
                self._cond.wait(_POLL_S)

    def _step(self) -> None:
        """One look at the running job and the queue (with the lock held)."""
        if self._active is not None:
            self._watch_active()
        if self._active is None and self._queue:
            self._start_next()

    def _next_startable(self) -> StoredJob | None:
        """Take the next job of the queue that is still to run, its stale stop requests cleared; None when
        the head of the queue was not (a deleted folder, a job that has ended meanwhile)."""
        job_id = self._queue.pop(0)
        job = self.store.get(job_id)
        if job is None:
            return None
        if not job.job_dir.is_dir():
            # Writing an error event would create the folder again: state() reports it instead.
            log.warning("job %s: its folder %s no longer exists; not starting it", job.id, job.job_dir)
            return None
        job.events.refresh()
        if job.events.state in TERMINAL_STATES:
            return None
        job.record_dir.mkdir(parents=True, exist_ok=True)
        # Stop requests of an earlier run are stale; any made from now on are for this worker.
        clear_stop_files(job.job_dir)
        return job

    def _start_next(self) -> None:
        job = self._next_startable()
        if job is None:
            return
        log_file = open(job.worker_log, "ab")
        log_start = log_file.tell()
        popen_options: dict = {}
        if os.name == "nt":  # pragma: no cover
            popen_options["creationflags"] = subprocess.CREATE_NEW_PROCESS_GROUP
        else:
            # Its own session: a Ctrl+C in the service's terminal stops the service (which then
            # stops the worker), not the worker behind its back; and killing the group also
            # ends anything the worker started (an encoder, for example).
            popen_options["start_new_session"] = True
        try:
            process = subprocess.Popen(
                worker_command(job, self.device, self.model_roots), stdin=subprocess.PIPE, stdout=log_file, stderr=subprocess.STDOUT,
                env=_worker_environment(), cwd=job.record_dir, close_fds=True, **popen_options,
            )
        except OSError as exc:
            log_file.close()
            EventLog(job.job_dir / EVENTS_FILE).emit("error", message=f"could not start a worker process: {exc}", stage="worker")
            return
        self._active = ActiveRun(job=job, process=process, log_file=log_file,
                                 first_event_line=job.events.line_count_absolute(), log_start=log_start, started=time.monotonic())
        log.info("job %s: worker %d started", job.id, process.pid)

    def _watch_active(self) -> None:
        run = self._active
        job = run.job
        returncode = run.process.poll()
        if returncode is None:
            requested_at = self._cancel_requested.get(job.id)
            if requested_at is not None:
                # Someone may have removed the request (a user's `run` of the same folder): ask again.
                if not (job.job_dir / CANCEL_FILE).exists():
                    request_cancel(job.job_dir)
                if time.monotonic() - requested_at > self.cancel_grace_s:
                    log.warning("job %s: worker did not stop within %.0f s of the cancel; killing it", job.id, self.cancel_grace_s)
                    _kill_process_tree(run.process)
            return
        run.log_file.close()
        self._active = None
        self._cond.notify_all()
        cancel_was_requested = self._cancel_requested.pop(job.id, None) is not None
        if not job.job_dir.is_dir():  # deleted behind our back: writing an event would recreate it
            log.warning("job %s: its folder %s is gone", job.id, job.job_dir)
            return
        job.events.refresh()
        if job.events.last_terminal_line >= run.first_event_line:
            log.info("job %s: worker ended (%s)", job.id, job.events.state)
            return
        events = EventLog(job.job_dir / EVENTS_FILE)
        if cancel_was_requested:
            events.emit("cancelled", message=f"the worker did not stop within {self.cancel_grace_s:g} s and was killed", by="service")
            return
        info = checkpoint_info(job.job_dir, job.record.kind)
        message = f"{describe_exit(returncode)} without reporting a result; {describe_checkpoint(info)}" + \
            ("; resume it to continue from there" if info is not None else "")
        tail = _read_tail(job.worker_log, run.log_start)
        last_line = _last_error_line(tail)
        if last_line:
            message += f" (last output: {shorten(last_line, 200)})"
        events.emit("error", message=message, stage="worker", exit_code=returncode,
                    checkpoint_step=None if info is None else info["step"], resumable=True)
        # The whole tail (a traceback, a native crash dump) is for the operator, not for clients.
        log.warning("job %s: %s\n%s", job.id, message, tail)


def _last_error_line(tail: str) -> str:
    """The line of a worker's output that names what killed it (``MemoryError: ...``), when there is one."""
    for line in reversed(tail.splitlines()):
        text = line.strip()
        if text and not text.startswith(("File ", "Traceback", "^", "~")) and ("Error" in text or "error" in text):
            return text
    return ""


def _read_tail(path: Path, start: int) -> str:
    try:
        with open(path, "rb") as f:
            size = f.seek(0, os.SEEK_END)
            f.seek(max(start, size - _LOG_TAIL_CHARS))
            return f.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _kill_process_tree(process: subprocess.Popen) -> None:
    if process.poll() is not None:
        return
    try:
        if os.name == "nt":  # pragma: no cover
            process.kill()
        else:
            os.killpg(process.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        process.kill()

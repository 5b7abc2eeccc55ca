"""``radiantforge serve --ray auto|ADDRESS``: the service's jobs run as Ray tasks on a cluster, several at once.

Each job is one Ray task that runs the job folder exactly as a local worker does
(:func:`radiantforge.jobs.run_job`, with the same model confinement and without clearing stop
requests), with the resources the batch path gives an entry (:func:`radiantforge.batch.on_ray.worker_resources`:
one GPU when the cluster has GPUs and the job's device allows CUDA, else ``cpus_per_job`` CPUs). As many
jobs run at once as the cluster fits; the others wait in the service's queue, so clients see the same
states, queue positions, events, cancel and results as with the local scheduler.

**Shared disk.** The task reads and writes the job folder in place: the service's ``--root`` (and any
folder submitted by path) must be reachable at the same path on every Ray node (one machine, or an NFS
mount). Progress, cancel and suspend travel through the job folder as they do locally (events.jsonl,
CANCEL, SUSPEND), so nothing a client sent ever reaches Ray but the job folder the service already
validated; the task validates it again with the service's model folders.

**Faults.** A task that does not stop within the cancel grace is cancelled with ``ray.cancel(force=True)``
(its worker process is killed). A Ray worker or node that dies mid-job (ray reports WorkerCrashedError,
NodeDiedError ...) gets its job run again from its checkpoint, at most ``max_retries`` times, with a
"warning" event naming the cause; after that the job fails with an error event that says so. When the
service stops, running jobs are asked to checkpoint (SUSPEND) and resume at its next start; if the
service dies, Ray ends the tasks it owned (they are not detached).
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import time
from pathlib import Path

from ..errors import shorten
from ..events import EventLog
from ..jobs import CANCEL_FILE, EVENTS_FILE, JOB_FILE, checkpoint_info, describe_checkpoint, request_cancel, request_suspend
from .options import DEFAULT_CANCEL_GRACE_S, DEFAULT_STOP_GRACE_S
from .scheduler import Scheduler
from .store import JobStore, StoredJob

log = logging.getLogger("radiantforge.service")

# Written by the task into the job's record folder (the service's own, never the client's): the worker's pid and node.
RAY_WORKER_FILE = "ray-worker.json"
# How long the cluster's size is trusted before it is asked again (nodes join and leave).
CLUSTER_REFRESH_S = 2.0


def run_job_in_ray_worker(job_dir: str, lock_path: str, worker_file: str, device: str | None, model_roots: list[str],
                          threads: int | None) -> dict:
    """The Ray task: run one job folder as the service's worker process does; returns run_job's outcome."""
    from ..jobs import run_job
    from .locks import FileLock

    if threads:
        import torch

        torch.set_num_threads(threads)
    lock = FileLock(lock_path)  # a stray run of the same job (a retry racing a dying worker) ends first
    lock.acquire(blocking=True)
    try:
        Path(worker_file).write_text(json.dumps({"pid": os.getpid(), "node": socket.gethostname()}), encoding="utf-8")
        outcome = run_job(job_dir, echo=False, device=device, model_roots=model_roots, clear_stop_requests=False)
        return {"state": outcome["state"]}  # the result itself is in the job folder
    finally:
        lock.release()


@dataclasses.dataclass
class RayRun:
    job: StoredJob
    ref: object  # the task's ObjectRef
    first_event_line: int  # events written from this line on belong to this run
    started: float
    attempt: int  # 1 for the first run; more after a Ray worker died


class RayScheduler(Scheduler):
    """The queue of :class:`Scheduler`, but each job a Ray task and as many at once as the cluster fits."""

    def __init__(self, store: JobStore, address: str, device: str | None = None,
                 cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S, model_roots: list[Path] | None = None,
                 stop_grace_s: float = DEFAULT_STOP_GRACE_S, max_retries: int | None = None, cpus_per_job: int = 1):
        from ..batch.runner import DEFAULT_MAX_RETRIES

        super().__init__(store, device=device, cancel_grace_s=cancel_grace_s, model_roots=model_roots,
                         stop_grace_s=stop_grace_s)
        self.address = address
        self.max_retries = DEFAULT_MAX_RETRIES if max_retries is None else max_retries
        self.cpus_per_job = cpus_per_job
        self._runs_by_id: dict[str, RayRun] = {}
        self._started_ray = False
        self._task = None
        self._fits: tuple[float, int] = (0.0, 1)  # (when asked, jobs the cluster fits)

    # ---- life cycle -------------------------------------------------------------------------

    def connect(self) -> None:
        """Join the cluster (or start one on this machine for "auto"); InputError naming --ray when that fails."""
        from ..batch.on_ray import connect_to_cluster
        from ..errors import InputError

        try:
            self._started_ray = connect_to_cluster(self.address)
        except InputError:
            raise
        except Exception as exc:  # Ray's own errors (no cluster there, a version mismatch): say where
            raise InputError(f"cannot join the Ray cluster at {self.address!r}: {type(exc).__name__}: "
                             f"{shorten(str(exc), 300)}", field="--ray") from None
        import ray

        self._task = ray.remote(run_job_in_ray_worker)
        log.info("jobs run on the Ray cluster at %s (%s)", self.address, ray.cluster_resources())

    def start(self) -> None:
        if self._task is None:
            self.connect()
        super().start()

    def stop(self) -> None:
        """Ask every running job to checkpoint and stop (SUSPEND), wait up to ``stop_grace_s``, cancel the rest."""
        import ray

        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join()
        with self._cond:
            runs, self._runs_by_id = list(self._runs_by_id.values()), {}
        for run in runs:
            if run.job.job_dir.is_dir():
                request_suspend(run.job.job_dir)
        if runs:
            log.info("asking %d running jobs to checkpoint and stop (up to %.0f s)", len(runs), self.stop_grace_s)
            _, late = ray.wait([run.ref for run in runs], num_returns=len(runs), timeout=self.stop_grace_s)
            for ref in late:
                log.warning("a Ray task did not stop within %.0f s; cancelling it (its job resumes from its last "
                            "checkpoint)", self.stop_grace_s)
                ray.cancel(ref, force=True)
        if self._started_ray:
            ray.shutdown()

    # ---- what the base class asks ----------------------------------------------------------------

    def _runs(self, job_id: str) -> bool:
        return job_id in self._runs_by_id

    def worker_pid(self, job_id: str) -> int | None:
        """The pid of the Ray worker process running the job (on its node), once the task has begun."""
        with self._cond:
            run = self._runs_by_id.get(job_id)
        if run is None:
            return None
        try:
            return int(json.loads((run.job.record_dir / RAY_WORKER_FILE).read_text(encoding="utf-8"))["pid"])
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def describe(self) -> dict:
        with self._cond:
            return {"kind": "ray", "address": self.address, "concurrent_jobs": self._cluster_fits(),
                    "running": len(self._runs_by_id)}

    def _step(self) -> None:
        if self._runs_by_id:
            self._watch_runs()
        while self._queue and len(self._runs_by_id) < self._cluster_fits():
            job = self._next_startable()
            if job is not None:
                self._dispatch(job, attempt=1)

    # ---- Ray ------------------------------------------------------------------------------------

    def _job_options(self, job: StoredJob) -> tuple[dict, int | None, int]:
        """(Ray task options, torch threads, jobs the cluster fits) for ``job``'s device, as the batch path picks them."""
        from ..batch.on_ray import worker_resources

        return worker_resources({"device": self.device or _job_device(job)}, self.cpus_per_job)

    def _cluster_fits(self) -> int:
        from ..batch.on_ray import worker_resources

        asked, fits = self._fits
        if time.monotonic() - asked > CLUSTER_REFRESH_S:
            fits = worker_resources({"device": self.device or "auto"}, self.cpus_per_job)[2]
            self._fits = (time.monotonic(), fits)
        return fits

    def _dispatch(self, job: StoredJob, attempt: int) -> None:
        options, threads, _ = self._job_options(job)
        (job.record_dir / RAY_WORKER_FILE).unlink(missing_ok=True)
        first_event_line = job.events.line_count_absolute()
        # max_retries=0: a dead worker's job is retried here, with an event saying why and from which step.
        ref = self._task.options(**options, max_retries=0, name=f"radiantforge-job-{job.id}").remote(
            str(job.job_dir), str(job.worker_lock), str(job.record_dir / RAY_WORKER_FILE), self.device,
            [str(root) for root in self.model_roots], threads)
        self._runs_by_id[job.id] = RayRun(job, ref, first_event_line, time.monotonic(), attempt)
        log.info("job %s: Ray task started (%s; attempt %d)", job.id, options, attempt)

    def _watch_runs(self) -> None:
        import ray

        runs = list(self._runs_by_id.values())
        ready, _ = ray.wait([run.ref for run in runs], num_returns=len(runs), timeout=0)
        ready = set(ready)
        for run in runs:
            if run.ref not in ready:
                self._press_cancel(run)
                continue
            del self._runs_by_id[run.job.id]
            self._cond.notify_all()
            self._ended(run)

    def _press_cancel(self, run: RayRun) -> None:
        import ray

        requested_at = self._cancel_requested.get(run.job.id)
        if requested_at is None:
            return
        if not (run.job.job_dir / CANCEL_FILE).exists():  # removed by someone else's run of the folder: ask again
            request_cancel(run.job.job_dir)
        if time.monotonic() - requested_at > self.cancel_grace_s:
            log.warning("job %s: the Ray task did not stop within %.0f s of the cancel; cancelling it", run.job.id,
                        self.cancel_grace_s)
            ray.cancel(run.ref, force=True)

    def _ended(self, run: RayRun) -> None:
        import ray

        job = run.job
        cancel_was_requested = self._cancel_requested.pop(job.id, None) is not None
        worker_died, problem = False, None
        try:
            ray.get(run.ref)
        except ray.exceptions.TaskCancelledError:
            problem = "the Ray task was cancelled"
        except (ray.exceptions.WorkerCrashedError, ray.exceptions.NodeDiedError, ray.exceptions.OwnerDiedError,
                ray.exceptions.ObjectLostError, ray.exceptions.LocalRayletDiedError) as exc:
            worker_died, problem = True, f"its Ray worker died ({type(exc).__name__})"
        except ray.exceptions.RayTaskError as exc:  # the task itself raised (run_job never does for a job's failure)
            cause = exc.cause if getattr(exc, "cause", None) is not None else exc
            problem = f"the Ray task failed: {type(cause).__name__}: {shorten(str(cause), 200)}"
            log.warning("job %s: %s", job.id, exc)
        except ray.exceptions.RayError as exc:
            worker_died, problem = True, f"Ray lost the task ({type(exc).__name__})"
        if not job.job_dir.is_dir():  # deleted behind our back: writing an event would recreate it
            log.warning("job %s: its folder %s is gone", job.id, job.job_dir)
            return
        job.events.refresh()
        if job.events.last_terminal_line >= run.first_event_line:
            log.info("job %s: Ray task ended (%s)", job.id, job.events.state)
            return
        events = EventLog(job.job_dir / EVENTS_FILE)
        if cancel_was_requested:
            events.emit("cancelled", message=f"the Ray task did not stop within {self.cancel_grace_s:g} s and was cancelled",
                        by="service")
            return
        if problem is None:  # returned without a final event: a suspend (the service is stopping), nothing to say
            return
        info = checkpoint_info(job.job_dir, job.record.kind)
        if worker_died and run.attempt <= self.max_retries and not self._stopping:
            events.emit("warning", message=f"{problem}; running it again ({describe_checkpoint(info)}; attempt "
                                           f"{run.attempt + 1} of {self.max_retries + 1})", by="service",
                        checkpoint_step=None if info is None else info["step"])
            self._dispatch(job, attempt=run.attempt + 1)
            return
        tries = f" {run.attempt} times" if worker_died and run.attempt > 1 else ""
        message = f"{problem}{tries} without reporting a result; {describe_checkpoint(info)}" + \
            ("; resume it to continue from there" if info is not None else "")
        events.emit("error", message=message, stage="worker", checkpoint_step=None if info is None else info["step"],
                    resumable=True)
        log.warning("job %s: %s", job.id, message)


def _job_device(job: StoredJob) -> str:
    """The device a job asks for in its job.json (validated when it was submitted), "auto" when it names none."""
    try:
        params = json.loads((job.job_dir / JOB_FILE).read_text(encoding="utf-8")).get("params", {})
        device = params.get("device", "auto") if isinstance(params, dict) else "auto"
        return device if isinstance(device, str) else "auto"
    except (OSError, ValueError, AttributeError):
        return "auto"

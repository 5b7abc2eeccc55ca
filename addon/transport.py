"""One job's trip through the service: (write its folder,) submit, follow, download, hand the result over.

`JobRunner` does it in small steps so the same code serves the modal operator (one `step()` per
timer tick: one rendered view, or one status poll — Blender stays responsive) and headless
scripts (`run_blocking()`). Network calls run in a helper thread; bpy is only touched from the
caller's thread, by the two parts a runner is made of:

- ``prepare`` (optional): writes the job folder step by step before it is sent (a Gaussian job's
  capture, ``capture.CapturePlan``);
- ``importer``: brings the finished result into Blender, one per job kind
  (``importers.gaussian_job``, ``importers.texture_job``, ``importers.text3d_job``).

    runner = JobRunner(job_dir, importer=GaussianJobImporter(), prepare=CapturePlan(scene, ...),
                       params=..., backend=BackendSettings(...))
    runner.run_blocking(on_progress=print)
    runner.state            # "finished" | "failed" | "cancelled" | "exported"
    runner.result_object    # what came into Blender (the splats, the textured or generated mesh)

This module itself never imports bpy.
"""

from __future__ import annotations

import copy
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from .client import TERMINAL_STATES, BackendError, ServiceClient, zip_job_folder
from .io.job_folder import EVENTS_FILE, JOB_FILE, RESULT_DIR, RESULT_FILE, JobError
from .io.nerf import CaptureError
from .settings import BackendSettings, open_backend

# Seconds between status polls of the service (each poll is two small GET requests).
POLL_INTERVAL_S = 0.5
# After asking the service to cancel, how long to wait for it to confirm before giving up on it.
CANCEL_CONFIRM_TIMEOUT_S = 60.0
# Phases that wait on the service (a blocking run sleeps a tick between their steps).
WAITING_PHASES = ("connect", "upload", "queued", "running", "download", "cancel")


class PreparationStep(Protocol):
    """What a preparation yields after each piece of work (``capture.CaptureProgress`` is one)."""

    message: str
    fraction: float


class JobPreparation(Protocol):
    """Writes a job folder step by step before it is sent (``capture.CapturePlan``)."""

    def write_job(self, job_dir: Path, params: dict[str, Any]) -> Iterator[PreparationStep]:
        """A generator: one piece of work per ``next()``; closing it removes what it made."""


class ImportedJob(Protocol):
    """What an importer brought into Blender (``importers.results.ImportedResult``)."""

    message: str  # the runner's closing message
    result_object: Any  # the object the panel points at (bpy.types.Object or None)
    preview: Any  # the image the panel shows (bpy.types.Image or None)
    metrics: dict


class ResultImporter(Protocol):
    """Brings a finished result of one job kind into Blender."""

    # None: a stopped job of this kind can be resumed from Blender; else a sentence saying why not.
    resume_refusal: str | None

    def import_result(self, result_dir: Path, name: str, metrics: dict) -> ImportedJob:
        """Import ``result_dir``; ``metrics`` are the job's last reported ones."""

    def discard(self) -> None:
        """The job ended without a result: remove what was made for it in the scene."""


# The ETA says "estimating…" until this share of the steps is done and ETA_MIN_SAMPLES progress events
# came in: the first steps run with few Gaussians (and the first run of a machine compiles), so an
# early rate is far off. After that the rate is the one over the last ETA_WINDOW_S training seconds,
# which follows the slow-down as densification adds Gaussians.
ETA_MIN_FRACTION = 0.05
ETA_MIN_SAMPLES = 3
ETA_WINDOW_S = 60.0
ESTIMATING = "estimating…"
# How long after an opacity reset the progress line explains the PSNR dip: this share of the run.
RESET_NOTE_FRACTION = 0.1


class EtaEstimate:
    """Seconds left from the (step, elapsed) pairs of a run's progress events, smoothed over a window."""

    def __init__(self):
        self.samples: list[tuple[int, float]] = []  # (step, training seconds), steps increasing

    def add(self, progress: dict) -> None:
        step, elapsed = progress.get("step"), progress.get("elapsed")
        if not isinstance(step, (int, float)) or not isinstance(elapsed, (int, float)):
            return
        if self.samples and step <= self.samples[-1][0]:
            if step < self.samples[-1][0]:  # a resumed run counts again from its checkpoint
                self.samples.clear()
            else:
                return
        self.samples.append((int(step), float(elapsed)))

    def seconds_left(self, total: int) -> float | None:
        """None while estimating (too early, or no rate yet)."""
        if len(self.samples) < ETA_MIN_SAMPLES or total <= 0:
            return None
        step, elapsed = self.samples[-1]
        if step < ETA_MIN_FRACTION * total:
            return None
        # The oldest sample inside the window, but never the very first one (it holds the warm-up).
        window = [s for s in self.samples[1:] if elapsed - s[1] <= ETA_WINDOW_S]
        first = window[0] if len(window) >= 2 else self.samples[-2]
        if step <= first[0] or elapsed <= first[1]:
            return None
        rate = (step - first[0]) / (elapsed - first[1])
        return max(0.0, (total - step) / rate)


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return f"time left: {ESTIMATING}"
    return f"{seconds / 60:.0f} min left" if seconds >= 90 else f"{seconds:.0f} s left"


def format_progress(progress: dict, eta_s: float | None | str = "event") -> str:
    """'step 500/3000 · loss 0.0213 · PSNR 24.31 dB · 41,230 Gaussians · 2 min left' from a progress event.

    eta_s: seconds left, None for "estimating…", or "event" for the event's own ``eta``."""
    parts = []
    if "step" in progress:
        parts.append(f"step {progress['step']}/{progress.get('total', '?')}")
    if isinstance(progress.get("loss"), (int, float)):
        parts.append(f"loss {progress['loss']:.4f}")
    if isinstance(progress.get("psnr"), (int, float)):
        parts.append(f"PSNR {progress['psnr']:.2f} dB")
    if isinstance(progress.get("n_gaussians"), (int, float)):
        parts.append(f"{int(progress['n_gaussians']):,} Gaussians")
    if eta_s == "event":
        eta = progress.get("eta", progress.get("eta_s"))
        if isinstance(eta, (int, float)):
            parts.append(format_eta(eta))
    elif parts:
        parts.append(format_eta(eta_s))
    return " · ".join(parts)


def progress_fraction(progress: dict) -> float:
    step, total = progress.get("step"), progress.get("total")
    if isinstance(step, (int, float)) and isinstance(total, (int, float)) and total > 0:
        return max(0.0, min(1.0, step / total))
    return 0.0


class JobRunner:
    """Prepare (optional), submit, follow, download and import one job, one small step at a time.

    Attributes the UI reads: ``phase`` (capture, connect, upload, queued, running, download,
    import, done), ``progress`` (0..1 within the phase), ``message``, ``state`` (running,
    exported, finished, failed, cancelled), ``error``, ``job_id``, ``metrics``, ``preview_path``,
    ``warnings``, ``imported``, ``result_object``.
    """

    def __init__(self, job_dir: str | os.PathLike, *, importer: ResultImporter, prepare: JobPreparation | None = None,
                 params: dict[str, Any] | None = None, backend: BackendSettings | None = None, submit: bool = True,
                 poll_interval: float = POLL_INTERVAL_S, name: str | None = None, resume_job_id: str | None = None):
        self.job_dir = Path(job_dir)
        self.importer = importer
        self.prepare = prepare
        self.params = dict(params or {})
        self.backend = backend
        self.submit = submit
        self.poll_interval = poll_interval
        self.name = name or self.job_dir.name
        # A job the service already has (failed or cancelled): ask it to resume instead of submitting.
        self.resume_job_id = resume_job_id
        self._reset_run_state()
        if resume_job_id:
            self.job_id = resume_job_id

    def _reset_run_state(self) -> None:
        """Everything one run of the runner changes (a resumed runner starts from here again)."""
        self.phase = "start"
        self.progress = 0.0
        self.message = ""
        self.state = "running"
        self.error = ""
        self.job_id = ""
        self.metrics: dict = {}
        self.preview_path: Path | None = None
        self.preview_version = 0  # bumped whenever a new preview arrived (the file name may stay the same)
        self._preview_warned = False
        self.warnings: list[str] = []
        # The backend's last info or warning event (e.g. the first run's ~30 s compile): the panel shows it.
        self.notice = ""
        self.opacity_reset_step: int | None = None  # the last opacity reset the backend announced
        self.eta = EtaEstimate()
        self.imported: ImportedJob | None = None
        self.result_dir: Path | None = None

        self.last_status: dict = {}  # the service's last summary of the job
        self.resumed_from_step: int | None = None  # set when this run resumed a job (its checkpoint's step)
        self._cancel_requested = False
        self._cancel_sent_at: float | None = None
        self._next_event = 0
        self._client: ServiceClient | None = None
        self._steps: Iterator[None] = self._run()

    # -- public --------------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.state != "running"

    @property
    def result_object(self):
        """The object the finished job brought into Blender (None before, or when it brought none)."""
        return self.imported.result_object if self.imported is not None else None

    @property
    def resumable(self) -> bool:
        """The job ended without a result and the service said it can continue it (from its checkpoint)."""
        return (self.state in ("failed", "cancelled") and bool(self.job_id) and self.importer.resume_refusal is None
                and bool(self.last_status.get("resumable")))

    def resumed(self) -> "JobRunner":
        """A new runner that asks the service to resume this job, then follows, downloads and imports
        it like a fresh one (same kind, same importer). Raises JobError when it cannot."""
        if self.importer.resume_refusal is not None:
            raise JobError(self.importer.resume_refusal)
        if not self.job_id:
            raise JobError("this job never reached the service; start it again")
        if not self.done:
            raise JobError(f"job {self.job_id} is still running")
        runner = copy.copy(self)
        runner.prepare = None
        runner.resume_job_id = self.job_id
        runner._reset_run_state()
        runner.job_id = self.job_id
        return runner

    def cancel(self) -> None:
        """Ask the job to stop: a capture stops after the current view, a service job is cancelled."""
        if not self.done:
            self._cancel_requested = True
            self.message = "cancelling…"

    def close(self) -> None:
        """Stop at once without waiting for the service (Blender is closing or the add-on is disabled).

        A capture in progress is abandoned and cleaned up; a job already sent keeps running on the service.
        """
        if not self.done:
            self._steps.close()
            self.state = "cancelled"
            self._set("done", "stopped")

    def step(self) -> bool:
        """Do one small piece of work. Returns True while there is more to do."""
        if self.done:
            return False
        try:
            next(self._steps)
            return True
        except StopIteration:
            return False
        except (BackendError, JobError, CaptureError, ValueError, OSError) as exc:
            self._fail(str(exc))
            return False
        except Exception as exc:  # a bug: report it in the UI instead of losing the job silently
            import traceback

            traceback.print_exc()
            self._fail(f"{type(exc).__name__}: {exc}")
            return False

    def run_blocking(self, on_progress: Callable[["JobRunner"], None] | None = None, tick: float = 0.05) -> "JobRunner":
        """Step until done (headless use); ``on_progress`` is called whenever the message changes."""
        last = None
        while self.step():
            if on_progress is not None and (self.phase, self.message) != last:
                last = (self.phase, self.message)
                on_progress(self)
            if self.phase in WAITING_PHASES:
                time.sleep(tick)
        if on_progress is not None:
            on_progress(self)
        return self

    # -- internals -----------------------------------------------------------------------------

    def _fail(self, message: str) -> None:
        self.state = "failed"
        self.error = message
        self.message = message
        self.phase = "done"
        self._steps.close()

    def _set(self, phase: str, message: str, progress: float | None = None) -> None:
        self.phase = phase
        self.message = message
        if progress is not None:
            self.progress = progress

    def _in_thread(self, function: Callable, *args):
        """Run a blocking (network) call in a helper thread, yielding until it returns."""
        box: dict[str, Any] = {}

        def work():
            try:
                box["value"] = function(*args)
            except BaseException as exc:  # handed back to the caller's thread
                box["error"] = exc

        thread = threading.Thread(target=work, name="radiantforge-request", daemon=True)
        thread.start()
        while thread.is_alive():
            yield
        if "error" in box:
            raise box["error"]
        return box.get("value")

    def _wait(self, seconds: float):
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not (self._cancel_requested and self._cancel_sent_at is None):
            yield

    def _run(self):
        try:
            yield from self._run_to_result()
        finally:
            if self.state != "finished":  # failed, cancelled, closed: nothing will use what was made for it
                self.importer.discard()

    def _run_to_result(self):
        if self.resume_job_id is None:
            if self.prepare is not None and self.submit:
                # A backend that cannot run the job fails now, not after every view was rendered.
                yield from self._connect()
            if self.prepare is not None:
                finished = yield from self._prepare()
                if not finished:
                    return
            elif not (self.job_dir / JOB_FILE).is_file():
                raise JobError(f"{self.job_dir}: not a job folder (no job.json)")
            if not self.submit:
                self.state = "exported"
                self._set("done", f"job folder written: {self.job_dir}", 1.0)
                return
        if self._cancel_requested:
            return self._cancelled("cancelled before the job was sent")

        if self._client is None:
            yield from self._connect()
        if self._cancel_requested:
            return self._cancelled("cancelled before the job was sent")
        if self.resume_job_id is not None:
            self._set("upload", f"asking the service to resume job {self.resume_job_id}…", 0.0)
            job = yield from self._in_thread(self._client.resume, self.resume_job_id)
            checkpoint = job.get("checkpoint") or {}
            self.resumed_from_step = checkpoint.get("step") if isinstance(checkpoint.get("step"), int) else 0
        else:
            job = yield from self._submit()
        self.job_id = str(job["id"])
        self._set("queued", f"job {self.job_id} queued" if self.resumed_from_step is None else
                  f"job {self.job_id} resumed from step {self.resumed_from_step}", 0.0)

        status = yield from self._follow()
        self.last_status = status
        state = status.get("state")
        if state == "cancelled":
            return self._cancelled("job cancelled")
        if state == "failed":
            where = (self.job_dir / EVENTS_FILE) if self.backend.shares_disk else f"job {self.job_id} on the service"
            raise JobError(f"the job failed: {status.get('error') or 'no reason given'} (details: {where})")
        if state != "finished":
            raise JobError(f"the service reported an unexpected job state {state!r}")

        self._set("download", "downloading the result…", 0.0)
        self.result_dir = yield from self._fetch_result()
        self._set("import", "importing the result…", 0.0)
        yield
        self.imported = self.importer.import_result(self.result_dir, self.name, self.metrics)
        self.metrics = self.imported.metrics or self.metrics
        if self.imported.preview is not None:
            self.preview_path = Path(self.imported.preview.filepath)
        self.state = "finished"
        self._set("done", self.imported.message, 1.0)

    def _connect(self):
        """Start or reach the service and check it (reachable, same API version, radiantforge importable)."""
        self._set("connect", "connecting to the backend…", 0.0)
        if self.backend is None:
            raise JobError("no backend configured; set one in the Radiant Forge preferences")
        self._client = yield from open_backend(self.backend)

    def _cancelled(self, message: str) -> None:
        self.state = "cancelled"
        self._set("done", message, self.progress)

    def _prepare(self):
        """Write the job folder step by step (a capture: one view per step). Returns False when cancelled."""
        self._set("capture", "preparing cameras…", 0.0)
        steps = self.prepare.write_job(self.job_dir, self.params)
        try:
            for progress in steps:
                self._set("capture", progress.message, progress.fraction)
                if self._cancel_requested:
                    steps.close()  # removes the half-written job, restores scene settings
                    self._cancelled("capture cancelled")
                    return False
                yield
        finally:
            steps.close()
        return True

    def _submit(self):
        if self.backend.shares_disk:
            self._set("upload", "handing the job folder to the local backend…", 0.0)
            try:
                return (yield from self._in_thread(self._client.submit_path, self.job_dir))
            except BackendError as exc:
                if exc.status is None or exc.status >= 500:
                    raise
                self.warnings.append(f"the service did not take the folder by path ({exc}); uploading it instead")
        self._set("upload", "packing the job folder…", 0.0)
        with tempfile.TemporaryDirectory(prefix="radiantforge-upload-") as scratch:
            archive = yield from self._in_thread(zip_job_folder, self.job_dir, Path(scratch) / f"{self.job_dir.name}.zip")
            size = archive.stat().st_size
            self._set("upload", f"uploading {size / 2**20:.1f} MiB…", 0.0)
            return (yield from self._in_thread(self._client.submit_archive, archive))

    def _follow(self):
        """Poll status and events until the job ends; returns the last status."""
        while True:
            if self._cancel_requested and self._cancel_sent_at is None:
                self._set("cancel", "asking the service to cancel the job…")
                yield from self._in_thread(self._client.cancel, self.job_id)
                self._cancel_sent_at = time.monotonic()
            status = yield from self._in_thread(self._client.job, self.job_id)
            events, self._next_event = yield from self._in_thread(self._client.events, self.job_id, self._next_event)
            self._absorb_events(events)
            state = status.get("state")
            if state in TERMINAL_STATES:
                return status
            progress = status.get("progress") or {}
            if self._cancel_sent_at is not None:
                if time.monotonic() - self._cancel_sent_at > CANCEL_CONFIRM_TIMEOUT_S:
                    self.warnings.append(f"the service did not confirm the cancel of job {self.job_id} "
                                         f"within {CANCEL_CONFIRM_TIMEOUT_S:.0f} s")
                    return {"state": "cancelled"}
                self._set("cancel", "waiting for the job to stop…")
            elif state == "running":
                self._set("running", self.running_message(progress), progress_fraction(progress))
            else:
                self._set("queued", f"job {self.job_id} {state}…", 0.0)
            yield from self._wait(self.poll_interval)

    def running_message(self, progress: dict) -> str:
        """The progress line of a running job: steps, loss, PSNR, Gaussians, a smoothed ETA ("estimating…"
        at first), and why the PSNR dips after an opacity reset; before the first step, the last notice."""
        self.eta.add(progress)
        total = progress.get("total")
        total = int(total) if isinstance(total, (int, float)) else 0
        line = format_progress(progress, self.eta.seconds_left(total))
        if not line:
            return self.notice or "training…"
        step = progress.get("step")
        if self.opacity_reset_step is not None and isinstance(step, (int, float)) \
                and 0 <= step - self.opacity_reset_step <= max(1.0, RESET_NOTE_FRACTION * total):
            line += f" · opacity reset at step {self.opacity_reset_step} — PSNR dips and recovers"
        return line

    def _absorb_events(self, events: list[dict]) -> None:
        for event in events:
            kind = event.get("type")
            if kind in ("info", "warning") and event.get("message"):
                self.notice = str(event["message"])
                if event.get("opacity_reset") and isinstance(event.get("step"), int):
                    self.opacity_reset_step = event["step"]
            if kind == "progress":
                self.eta.add(event)  # every event, not only the ones a status poll happens to see
            if kind == "warning" and event.get("message"):
                self.warnings.append(str(event["message"]))
            elif kind == "preview":
                relative = event.get("path") or event.get("file")
                if relative:
                    self._fetch_preview(str(relative))
            elif kind == "metrics" and isinstance(event.get("metrics"), dict):
                self.metrics = event["metrics"]

    def _fetch_preview(self, announced: str) -> None:
        """Make the preview the event announced readable here (the service may be on another machine)."""
        path = Path(announced)
        local = path if path.is_absolute() else self.job_dir / path
        try:
            if not local.is_file():
                # A remote service serves files of its result folder only, by their path inside it.
                parts = path.parts
                if RESULT_DIR not in parts:
                    return
                inside = "/".join(parts[len(parts) - parts[::-1].index(RESULT_DIR):])
                local = self._client.download_file(self.job_id, inside, self.job_dir / "previews" / path.name)
        except BackendError as exc:  # a missing preview is no reason to stop the job
            if not self._preview_warned:
                self.warnings.append(f"preview {announced}: {exc}")
                self._preview_warned = True
            return
        self.preview_path = local
        self.preview_version += 1

    def _fetch_result(self):
        """The result folder: the job's own result/ when the service wrote it in place, else a download."""
        in_place = self.job_dir / RESULT_DIR
        if (in_place / RESULT_FILE).is_file():
            return in_place
        target, counter = in_place, 1
        while target.exists():
            counter += 1
            target = self.job_dir / f"{RESULT_DIR}-{counter}"
        folder = yield from self._in_thread(self._client.download_result, self.job_id, target)
        if not (folder / RESULT_FILE).is_file() and (folder / RESULT_DIR / RESULT_FILE).is_file():
            folder = folder / RESULT_DIR  # the archive held the result folder itself
        return folder

"""A whole Gaussian job from Blender: capture → job folder → service → result → import.

`JobRunner` does it in small steps so the same code serves the modal operator (one `step()` per
timer tick: one rendered view, or one status poll — Blender stays responsive) and headless
scripts (`run_blocking()`). Network calls run in a helper thread; bpy is only touched from the
caller's thread.

    runner = JobRunner(job_dir, capture=CapturePlan(scene, cameras=...), backend=BackendSettings(...))
    runner.run_blocking(on_progress=print)
    runner.state            # "finished" | "failed" | "cancelled" | "exported"
    runner.imported_object  # the splat object
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Sequence

import bpy

from . import capture as capture_module
from .client import TERMINAL_STATES, BackendError, ServiceClient, zip_job_folder
from .importers import gaussians as gaussian_importer
from .importers import turntable as turntable_importer
from .settings import BackendSettings, open_backend

JOB_FORMAT_VERSION = 1
JOB_FILE = "job.json"
DATA_DIR = "data"
RESULT_DIR = "result"
JOBS_FOLDER_NAME = "radiantforge_jobs"
# Seconds between status polls of the service (each poll is two small GET requests).
POLL_INTERVAL_S = 0.5
# After asking the service to cancel, how long to wait for it to confirm before giving up on it.
CANCEL_CONFIRM_TIMEOUT_S = 60.0
RIG_COLLECTION_NAME = "RadiantForge Cameras"

# Result-file roles (result.json); matched loosely so older/newer backends still import.
ROLE_GAUSSIANS = "gaussians"
ROLE_TURNTABLE = "turntable"


class JobError(RuntimeError):
    """A job that cannot start or finish; the message says what to fix."""


# ------------------------------------------------------------------------------------------------
# Job folders
# ------------------------------------------------------------------------------------------------


def default_jobs_folder(scene_setting: str = "") -> Path:
    """The jobs folder: the scene's setting, else beside the saved .blend, else the temp folder."""
    if scene_setting:
        return Path(bpy.path.abspath(scene_setting))
    if bpy.data.filepath:
        return Path(bpy.path.abspath("//" + JOBS_FOLDER_NAME))
    return Path(tempfile.gettempdir()) / JOBS_FOLDER_NAME


def new_job_dir(jobs_folder: str | os.PathLike, name: str) -> Path:
    """A fresh, not yet existing folder ``<jobs_folder>/<YYYYmmdd-HHMMSS>-<name>[-n]``."""
    jobs_folder = Path(jobs_folder)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{bpy.path.clean_name(name) or 'job'}"
    candidate, counter = jobs_folder / stem, 1
    while candidate.exists():
        counter += 1
        candidate = jobs_folder / f"{stem}-{counter}"
    return candidate


def write_job_file(job_dir: str | os.PathLike, kind: str, params: dict[str, Any]) -> Path:
    """Write ``job_dir/job.json`` ({"format_version", "kind", "params"}); never over an existing job."""
    job_dir = Path(job_dir)
    job_file = job_dir / JOB_FILE
    if job_file.exists():
        raise JobError(f"{job_file}: a job already exists here; choose a new folder")
    job_dir.mkdir(parents=True, exist_ok=True)
    payload = {"format_version": JOB_FORMAT_VERSION, "kind": kind, "params": params}
    partial = job_file.with_name(JOB_FILE + ".partial")
    partial.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    os.replace(partial, job_file)
    return job_file


def gaussian_params(iters: int | None = None, sh_degree: int | None = None, max_gaussians: int | None = None,
                    **extra: Any) -> dict[str, Any]:
    """Parameters of a "gaussians" job; None / 0 caps are left to the backend's defaults."""
    params: dict[str, Any] = {}
    if iters:
        params["iters"] = int(iters)
    if sh_degree is not None:
        params["sh_degree"] = int(sh_degree)
    if max_gaussians:
        params["max_gaussians"] = int(max_gaussians)
    params.update({key: value for key, value in extra.items() if value is not None})
    return params


def check_dataset_folder(folder: str | os.PathLike) -> Path:
    """An existing dataset must look like NeRF-synthetic before anything is sent."""
    folder = Path(folder)
    if not folder.is_dir():
        raise JobError(f"dataset {folder}: no such folder; choose a NeRF-synthetic dataset folder (transforms_train.json + images)")
    if not (folder / "transforms_train.json").is_file():
        raise JobError(f"dataset {folder}: no transforms_train.json; expected a NeRF-synthetic dataset "
                       "(transforms_train.json, transforms_test.json, images) or a job folder (job.json + data/)")
    return folder


def job_from_dataset(dataset: str | os.PathLike, job_dir: str | os.PathLike, params: dict[str, Any]) -> Path:
    """A new job folder whose data/ is a copy of ``dataset`` (the user's folder is never touched)."""
    dataset = check_dataset_folder(dataset)
    job_dir = Path(job_dir)
    write_job_file(job_dir, "gaussians", params)
    data = job_dir / DATA_DIR
    if data.exists() and not any(data.iterdir()):
        data.rmdir()
    shutil.copytree(dataset, data)
    return job_dir


# ------------------------------------------------------------------------------------------------
# Results
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class ResultFiles:
    """The files of a finished job's result folder, by role."""

    folder: Path
    gaussians: Path | None = None
    turntable_frames: list[Path] = dataclasses.field(default_factory=list)
    turntable_video: Path | None = None
    turntable_gif: Path | None = None
    test_pairs: list[tuple[Path, Path | None]] = dataclasses.field(default_factory=list)
    metrics: dict = dataclasses.field(default_factory=dict)
    entries: list[dict] = dataclasses.field(default_factory=list)


def _result_entries(result_json: dict) -> list[dict]:
    files = result_json.get("files", [])
    if isinstance(files, dict):  # {"path": "role"} or {"role": "path"}
        return [{"path": k, "role": v} if "." in k or "/" in k else {"path": v, "role": k} for k, v in files.items()]
    return [entry for entry in files if isinstance(entry, dict) and "path" in entry]


def _resolve(folder: Path, path: str) -> Path | None:
    candidate = Path(path)
    for option in ((candidate,) if candidate.is_absolute() else ()) + (folder / candidate, folder / candidate.name,
                                                                       folder.parent / candidate):
        if option.exists():
            return option
    return None


def read_result_folder(folder: str | os.PathLike) -> ResultFiles:
    """Read ``result.json`` (roles) and ``metrics.json`` of a result folder; fall back to file names."""
    folder = Path(folder)
    if not (folder / "result.json").is_file() and (folder / RESULT_DIR / "result.json").is_file():
        folder = folder / RESULT_DIR  # a job folder was given
    found = ResultFiles(folder)
    manifest = folder / "result.json"
    if manifest.is_file():
        found.entries = _result_entries(json.loads(manifest.read_text(encoding="utf-8")))
    renders: dict[str, Path] = {}
    truths: dict[str, Path] = {}
    for entry in found.entries:
        role = str(entry.get("role", "")).lower()
        path = _resolve(folder, str(entry["path"]))
        if path is None:
            continue
        suffix = path.suffix.lower()
        if ROLE_GAUSSIANS in role or (suffix == ".ply" and "point" in path.stem and found.gaussians is None):
            if found.gaussians is None or ROLE_GAUSSIANS in role:
                found.gaussians = path
        elif ROLE_TURNTABLE in role:
            if path.is_dir():
                found.turntable_frames = turntable_importer.numbered_frames(path)
            elif suffix in turntable_importer.VIDEO_SUFFIXES:
                found.turntable_video = path
            elif suffix in turntable_importer.ANIMATION_SUFFIXES:
                found.turntable_gif = path
            elif suffix in turntable_importer.FRAME_SUFFIXES:
                found.turntable_frames.append(path)
        elif "metric" in role and suffix == ".json":
            found.metrics = json.loads(path.read_text(encoding="utf-8"))
        elif ("truth" in role or role.endswith("gt")) and path.is_file():
            truths[path.stem] = path
        elif ("test" in role or "render" in role) and path.is_file() and suffix in turntable_importer.FRAME_SUFFIXES:
            renders[path.stem] = path
    # Files the manifest did not name, found by the layout the backend writes.
    if found.gaussians is None:
        plys = sorted(folder.glob("*.ply"))
        found.gaussians = next((p for p in plys if "point_cloud" in p.name), plys[0] if plys else None)
    if not found.turntable_frames and (folder / "turntable").is_dir():
        found.turntable_frames = turntable_importer.numbered_frames(folder / "turntable")
    if found.turntable_video is None and (folder / "turntable.mp4").is_file():
        found.turntable_video = folder / "turntable.mp4"
    if found.turntable_gif is None and (folder / "turntable.gif").is_file():
        found.turntable_gif = folder / "turntable.gif"
    if not found.metrics and (folder / "metrics.json").is_file():
        found.metrics = json.loads((folder / "metrics.json").read_text(encoding="utf-8"))
    found.turntable_frames.sort(key=turntable_importer._frame_number)
    found.test_pairs = [(render, truths.get(stem)) for stem, render in sorted(renders.items())]
    return found


@dataclasses.dataclass
class ImportOptions:
    gaussians: bool = True
    display: str = "AUTO"
    splat_size: float = gaussian_importer.DEFAULT_SPLAT_SIZE
    turntable: bool = True
    test_renders: bool = True
    collection: bpy.types.Collection | None = None


@dataclasses.dataclass
class ImportedResult:
    splat_object: bpy.types.Object | None = None
    turntable: turntable_importer.TurntableImport | None = None
    test_images: list = dataclasses.field(default_factory=list)
    preview: bpy.types.Image | None = None
    metrics: dict = dataclasses.field(default_factory=dict)


def import_result(result_folder: str | os.PathLike, options: ImportOptions | None = None,
                  name: str | None = None) -> ImportedResult:
    """Import a finished result folder (or job folder): splats, turntable, test renders, metrics."""
    options = options or ImportOptions()
    files = read_result_folder(result_folder)
    name = name or files.folder.parent.name or "Radiant Forge"
    imported = ImportedResult(metrics=files.metrics)
    if options.gaussians:
        if files.gaussians is None:
            raise JobError(f"{files.folder}: the result has no Gaussian PLY (role 'gaussians' in result.json)")
        imported.splat_object = gaussian_importer.import_gaussians(
            files.gaussians, collection=options.collection, name=name, display=options.display,
            splat_size=options.splat_size)
        imported.splat_object["radiantforge_job"] = str(files.folder.parent)
    if options.turntable and (files.turntable_frames or files.turntable_video or files.turntable_gif):
        imported.turntable = turntable_importer.import_turntable(
            frames=files.turntable_frames or None, video=files.turntable_video or files.turntable_gif,
            name=f"{name} turntable")
    if options.test_renders and files.test_pairs:
        imported.test_images = turntable_importer.import_image_pairs(files.test_pairs, prefix=f"{name} test")
    preview_source = (files.turntable_frames[0] if files.turntable_frames
                      else files.test_pairs[0][0] if files.test_pairs else None)
    if preview_source is not None:
        imported.preview = load_preview(preview_source)
    return imported


PREVIEW_IMAGE_NAME = "RadiantForge Preview"


def load_preview(path: str | os.PathLike) -> bpy.types.Image:
    """(Re)load ``path`` into the one preview image the panel shows."""
    image = bpy.data.images.get(PREVIEW_IMAGE_NAME)
    if image is not None:
        image.filepath = str(path)
        image.reload()
    else:
        image = bpy.data.images.load(str(path), check_existing=False)
        image.name = PREVIEW_IMAGE_NAME
    return image


# ------------------------------------------------------------------------------------------------
# The runner
# ------------------------------------------------------------------------------------------------


@dataclasses.dataclass
class CapturePlan:
    """What to capture: ``cameras`` (e.g. a collection's), or an orbit rig around ``objects``."""

    scene: bpy.types.Scene
    cameras: Sequence[bpy.types.Object] | None = None
    objects: Sequence[bpy.types.Object] | None = None
    view_count: int = 48
    upper_hemisphere: bool = False
    focal_length_mm: float = 50.0
    keep_rig: bool = False
    settings: capture_module.CaptureSettings = dataclasses.field(default_factory=capture_module.CaptureSettings)


def format_progress(progress: dict) -> str:
    """'step 500/3000 · loss 0.0213 · PSNR 24.31 dB · 41,230 Gaussians · 2 min left' from a progress event."""
    parts = []
    if "step" in progress:
        parts.append(f"step {progress['step']}/{progress.get('total', '?')}")
    if isinstance(progress.get("loss"), (int, float)):
        parts.append(f"loss {progress['loss']:.4f}")
    if isinstance(progress.get("psnr"), (int, float)):
        parts.append(f"PSNR {progress['psnr']:.2f} dB")
    if isinstance(progress.get("n_gaussians"), (int, float)):
        parts.append(f"{int(progress['n_gaussians']):,} Gaussians")
    eta = progress.get("eta", progress.get("eta_s"))
    if isinstance(eta, (int, float)):
        parts.append(f"{eta / 60:.0f} min left" if eta >= 90 else f"{eta:.0f} s left")
    return " · ".join(parts)


def progress_fraction(progress: dict) -> float:
    step, total = progress.get("step"), progress.get("total")
    if isinstance(step, (int, float)) and isinstance(total, (int, float)) and total > 0:
        return max(0.0, min(1.0, step / total))
    return 0.0


class JobRunner:
    """Capture (optional), submit, follow, download and import one job, one small step at a time.

    Attributes the UI reads: ``phase`` (capture, connect, upload, queued, running, download,
    import, done), ``progress`` (0..1 within the phase), ``message``, ``state`` (running,
    exported, finished, failed, cancelled), ``error``, ``job_id``, ``metrics``, ``preview_path``,
    ``warnings``, ``imported``.
    """

    # Whether a job of this runner's kind can be resumed from Blender (None) or why not (a sentence).
    resume_refusal: str | None = None

    def __init__(self, job_dir: str | os.PathLike, *, capture: CapturePlan | None = None,
                 params: dict[str, Any] | None = None, backend: BackendSettings | None = None,
                 submit: bool = True, import_options: ImportOptions | None = None,
                 poll_interval: float = POLL_INTERVAL_S, name: str | None = None, resume_job_id: str | None = None):
        self.job_dir = Path(job_dir)
        self.capture_plan = capture
        self.params = dict(params or {})
        self.backend = backend
        self.submit = submit
        self.import_options = import_options or ImportOptions()
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
        self.imported: ImportedResult | None = None
        self.result_dir: Path | None = None
        self.capture_summary = None

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
    def resumable(self) -> bool:
        """The job ended without a result and the service said it can continue it (from its checkpoint)."""
        return (self.state in ("failed", "cancelled") and bool(self.job_id) and self.resume_refusal is None
                and bool(self.last_status.get("resumable")))

    def resumed(self) -> "JobRunner":
        """A new runner that asks the service to resume this job, then follows, downloads and imports
        it like a fresh one (same kind, same import options). Raises JobError when it cannot."""
        if self.resume_refusal is not None:
            raise JobError(self.resume_refusal)
        if not self.job_id:
            raise JobError("this job never reached the service; start it again")
        if not self.done:
            raise JobError(f"job {self.job_id} is still running")
        runner = copy.copy(self)
        runner.capture_plan = None
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
        except (BackendError, JobError, capture_module.CaptureError, ValueError, OSError) as exc:
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
            if self.phase in ("connect", "upload", "queued", "running", "download", "cancel"):
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
        if self.resume_job_id is None:
            if self.capture_plan is not None:
                finished = yield from self._capture()
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

        self._set("connect", "connecting to the backend…", 0.0)
        if self.backend is None:
            raise JobError("no backend configured; set one in the Radiant Forge preferences")
        self._client = yield from open_backend(self.backend)
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
            where = (self.job_dir / "events.jsonl") if self.backend.shares_disk else f"job {self.job_id} on the service"
            raise JobError(f"the job failed: {status.get('error') or 'no reason given'} (details: {where})")
        if state != "finished":
            raise JobError(f"the service reported an unexpected job state {state!r}")

        self._set("download", "downloading the result…", 0.0)
        self.result_dir = yield from self._fetch_result()
        self._set("import", "importing the result…", 0.0)
        yield
        self.imported = import_result(self.result_dir, self.import_options, name=self.name)
        self.metrics = self.imported.metrics or self.metrics
        if self.imported.preview is not None:
            self.preview_path = Path(self.imported.preview.filepath)
        self.state = "finished"
        self._set("done", self._finished_message(), 1.0)

    def _finished_message(self) -> str:
        parts = ["finished"]
        for key in ("psnr", "test_psnr", "PSNR"):
            if isinstance(self.metrics.get(key), (int, float)):
                parts.append(f"PSNR {self.metrics[key]:.2f} dB")
                break
        if self.imported is not None and self.imported.splat_object is not None:
            parts.append(f"{self.imported.splat_object['radiantforge_splat_count']:,} Gaussians imported")
        return " · ".join(parts)

    def _cancelled(self, message: str) -> None:
        self.state = "cancelled"
        self._set("done", message, self.progress)

    def _capture(self):
        """Write job.json and render data/ view by view. Returns False when cancelled."""
        plan = self.capture_plan
        write_job_file(self.job_dir, "gaussians", self.params)
        rig = None
        self._set("capture", "preparing cameras…", 0.0)
        try:
            cameras = list(plan.cameras or [])
            if not cameras:
                objects = list(plan.objects or [])
                if not objects:
                    objects = capture_module.renderable_geometry_objects(plan.scene)
                resolution = plan.settings.resolution
                rig = capture_module.create_orbit_rig(plan.scene, objects, n_views=plan.view_count,
                                                      focal_length_mm=plan.focal_length_mm, resolution=resolution,
                                                      upper_hemisphere=plan.upper_hemisphere,
                                                      collection_name=RIG_COLLECTION_NAME)
                cameras = rig.cameras
            views = capture_module.capture_dataset(plan.scene, cameras, str(self.job_dir / DATA_DIR), plan.settings)
            try:
                for progress in views:
                    self._set("capture", progress.message, progress.fraction)
                    if progress.summary is not None:
                        self.capture_summary = progress.summary
                    if self._cancel_requested:
                        views.close()  # removes the half-written dataset, restores scene settings
                        self._remove_unfinished_job()
                        self._cancelled("capture cancelled")
                        return False
                    yield
            finally:
                views.close()
        except BaseException:
            # A failed or cancelled capture leaves no half-made job behind (only what we created).
            self._remove_unfinished_job()
            raise
        finally:
            if rig is not None and not plan.keep_rig:
                capture_module.remove_rig(rig.collection)
        return True

    def _remove_unfinished_job(self) -> None:
        data = self.job_dir / DATA_DIR
        if data.is_dir() and not any(data.iterdir()):
            data.rmdir()
        job_file = self.job_dir / JOB_FILE
        if job_file.is_file() and not (self.job_dir / DATA_DIR).exists():
            job_file.unlink()
            try:
                self.job_dir.rmdir()
            except OSError:
                pass

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
                self._set("running", format_progress(progress) or "training…", progress_fraction(progress))
            else:
                self._set("queued", f"job {self.job_id} {state}…", 0.0)
            yield from self._wait(self.poll_interval)

    def _absorb_events(self, events: list[dict]) -> None:
        for event in events:
            kind = event.get("type")
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
        if (in_place / "result.json").is_file():
            return in_place
        target, counter = in_place, 1
        while target.exists():
            counter += 1
            target = self.job_dir / f"{RESULT_DIR}-{counter}"
        folder = yield from self._in_thread(self._client.download_result, self.job_id, target)
        if not (folder / "result.json").is_file() and (folder / RESULT_DIR / "result.json").is_file():
            folder = folder / RESULT_DIR  # the archive held the result folder itself
        return folder

"""The HTTP API of ``radiantforge serve`` (FastAPI), under ``/api/v1``.

```
GET    /health                        version, api_version, device, job kinds, local models, limits,
                                      scheduler (local, or ray: its address and how many jobs run at once)
POST   /jobs                          submit: multipart field `archive` (zip of a job folder),
                                      a raw zip body (Content-Type: application/zip), or JSON
                                      {"path": "/abs/job/dir"} (same disk: the job runs in place)
                                      -> 201 job summary
GET    /jobs                          {"jobs": [summary, ...]} oldest first
GET    /jobs/{id}                     summary: state, kind, created, progress (the last progress
                                      event), error, result (result.json) and result_files once finished
GET    /jobs/{id}/events?since=N      {"events": [...], "next": M, "state": ...}; N counts this job's events
POST   /jobs/{id}/cancel              queued: cancelled at once; running: asked to checkpoint and stop
POST   /jobs/{id}/resume              a failed or cancelled job is queued again and continues from
                                      its checkpoint (the summary's "checkpoint" says which step)
GET    /jobs/{id}/result.zip          the result folder, zipped (paths relative to result/)
GET    /jobs/{id}/files/{path}        one file of the result folder
DELETE /jobs/{id}                     a finished, failed or cancelled job (a local job folder is kept)
```

Who may ask (the trust boundary, DESIGN.md): any web page in the artist's browser can send
requests to a loopback port, so every request is checked before it reaches a route, in this order:

1. ``Host`` must be a loopback name or address (``localhost``, ``127.0.0.1``, ``[::1]``), the address
   the service listens on, or a name the operator allows (``--allow-host``): a page that rebinds
   its own domain to 127.0.0.1 (DNS rebinding) sends its own name and gets 403.
2. ``Origin`` and ``Sec-Fetch-Site``, when present, must say the request comes from this service's
   own origin or from no page at all: a cross-site form post or fetch gets 403. (The service serves
   no pages: the add-on, scripts and curl send neither header.)
3. With a token, ``Authorization: Bearer <token>`` (401 otherwise). The add-on always starts its
   local service with a fresh token.

An upload holds ``job.json`` and ``data/`` only; every path a job reads stays inside its ``data/``,
and a ``model`` folder inside the operator's ``--model-dir`` folders; downloads never follow links.
The service validates uploads from file headers (it decodes no pixels); workers do the heavy work.

Errors are ``{"detail": "<what is wrong>"}`` on one line, values echoed cut to ~80 characters and
no traceback ever (those go to the service's log): 400 malformed request or unsafe archive, 401
token, 403 refused origin or host, 404 unknown job or file, 409 not possible in the job's state,
413 body too large, 415 unknown body type, 422 a job that does not validate (the message names
the file and field).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import tempfile
import threading
import zipfile
from pathlib import Path

from fastapi import APIRouter, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

import radiantforge

from ..errors import InputError, quoted, shorten
from ..jobs import JOB_KINDS, checkpoint_info, job_state, validate_job
from .archive import extract_job_archive, remove_tree
from .locks import FileLock
from .requests_guard import RequestGuard
from .options import (DEFAULT_CANCEL_GRACE_S, DEFAULT_MAX_FILE_MB, DEFAULT_MAX_UNPACKED_MB, DEFAULT_MAX_UPLOAD_MB,
                      DEFAULT_STOP_GRACE_S)
from .scheduler import RESUMABLE_STATES, Scheduler
from .store import (
    FAILED, FINISHED, SERVICE_FILE, SERVICE_LOCK, SOURCE_PATH, SOURCE_UPLOAD, TERMINAL_STATES, UPLOADED_JOB_DIR,
    JobStore, StoredJob, is_job_id, write_json_atomic,
)
from .system import describe_device, local_models
from .uploads import UploadError, read_body_capped, receive_archive

log = logging.getLogger("radiantforge.service")

API_VERSION = 1
API_PREFIX = f"/api/v{API_VERSION}"
MIB = 1024 * 1024
MAX_JSON_BODY_BYTES = 64 * 1024  # {"path": ...}: a path, not a document
# The longest local path a client may name (PATH_MAX on Linux is 4096).
MAX_PATH_CHARS = 4096
# An error message sent to a client is one line of at most this many characters.
MAX_DETAIL_CHARS = 600
# Event fields that may hold a worker's output (older versions wrote them): never sent to clients.
PRIVATE_EVENT_FIELDS = ("traceback", "log_tail")
EVENTS_PAGE_LIMIT = 1000  # events per answer; `next` says where to continue
# A worker exits a moment after its job's final event; DELETE waits that long for it.
WORKER_EXIT_WAIT_S = 10.0
ZIP_MEDIA_TYPES = ("application/zip", "application/x-zip-compressed", "application/octet-stream")
# Already-compressed files are stored as they are in result.zip; deflating them costs time for nothing.
_STORED_SUFFIXES = (".png", ".jpg", ".jpeg", ".mp4", ".gif", ".webp", ".zip", ".npz", ".glb")


class Service:
    """The state behind the API: the job store, the scheduler and the settings."""

    def __init__(self, root: str | Path, token: str | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * MIB,
                 device: str | None = None, cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S, *,
                 max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_MB * MIB, max_file_bytes: int = DEFAULT_MAX_FILE_MB * MIB,
                 model_roots: list[Path] | None = None, stop_grace_s: float = DEFAULT_STOP_GRACE_S,
                 ray_address: str | None = None, ray_cpus_per_job: int = 1):
        self.root = Path(root).expanduser().resolve()
        self.token = token or None
        self.max_upload_bytes = int(max_upload_bytes)
        self.max_unpacked_bytes = int(max_unpacked_bytes)
        self.max_file_bytes = min(int(max_file_bytes), self.max_unpacked_bytes)
        # Folders a job's model may be a folder in ([] : Hugging Face ids from the cache only).
        self.model_roots = list(model_roots or [])
        self.device = device
        self.store = JobStore(self.root)
        if ray_address:  # jobs run as Ray tasks on a cluster that shares this disk (ray_scheduler.py)
            from .ray_scheduler import RayScheduler

            self.scheduler = RayScheduler(self.store, ray_address, device=device, cancel_grace_s=cancel_grace_s,
                                          model_roots=self.model_roots, stop_grace_s=stop_grace_s,
                                          cpus_per_job=ray_cpus_per_job)
        else:
            self.scheduler = Scheduler(self.store, device=device, cancel_grace_s=cancel_grace_s,
                                       model_roots=self.model_roots, stop_grace_s=stop_grace_s)
        self._root_lock = FileLock(self.root / SERVICE_LOCK)
        self._device_info: dict | None = None
        self._device_lock = threading.Lock()
        self._submit_lock = threading.Lock()
        # Written to root/service.json while the app runs (serve() sets it: url, port, pid ...).
        self.announcement: dict | None = None

    def open(self) -> None:
        """Take the root folder (one service per root) and load its jobs."""
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise InputError(f"cannot create the service folder: {exc}", file=self.root, field="root") from None
        if not self._root_lock.acquire(blocking=False):
            pid = self._root_lock.holder_pid()
            raise InputError(f"another Radiant Forge service{f' (pid {pid})' if pid else ''} is using this folder; "
                             "stop it or choose another --root", file=self.root, field="root")
        self.store.open()
        connect = getattr(self.scheduler, "connect", None)
        if connect is not None:  # join the Ray cluster now: a wrong address is an error before the service listens
            try:
                connect()
            except InputError:
                self._root_lock.release()
                raise

    def start(self) -> None:
        self.scheduler.start()
        # Importing torch to describe the device takes seconds: do it now, not in the first /health.
        threading.Thread(target=self.device_info, name="radiantforge-device-info", daemon=True).start()
        if self.announcement is not None:
            write_json_atomic(self.root / SERVICE_FILE, self.announcement)

    def close(self) -> None:
        # Here rather than after uvicorn returns: uvicorn re-raises SIGTERM once it has shut
        # down, which ends the process before any code after Server.run.
        if self.announcement is not None:
            (self.root / SERVICE_FILE).unlink(missing_ok=True)
        self.scheduler.stop()
        self._root_lock.release()

    # ---- what clients see -----------------------------------------------------------------------

    def device_info(self) -> dict:
        with self._device_lock:
            if self._device_info is None:
                self._device_info = describe_device(self.device)
            return self._device_info

    def health(self) -> dict:
        return {
            "status": "ok",
            "version": radiantforge.__version__,
            "api_version": API_VERSION,
            "device": self.device_info(),
            "job_kinds": sorted(JOB_KINDS),
            "models": local_models(model_roots=self.model_roots),
            "max_upload_bytes": self.max_upload_bytes,
            "max_unpacked_bytes": self.max_unpacked_bytes,
            "max_file_bytes": self.max_file_bytes,
            "scheduler": self.scheduler.describe(),
            "jobs": {"running": sum(1 for j in self.store.all() if self.scheduler.worker_pid(j.id) is not None),
                     "queued": sum(1 for j in self.store.all() if self.scheduler.queue_position(j.id) is not None)},
        }

    def summary(self, job: StoredJob) -> dict:
        state = self.scheduler.state(job)
        events = job.events
        out = {
            "id": job.id,
            "kind": job.record.kind,
            "state": state,
            "created": job.record.created,
            "source": job.record.source,
            "job_dir": str(job.job_dir),
            "events": events.count,
            "progress": events.last_progress,
            "error": (events.last_error if job.job_dir.is_dir() else f"the job folder {job.job_dir} no longer exists")
                     if state == FAILED else None,
            "queue_position": self.scheduler.queue_position(job.id),
            "worker_pid": self.scheduler.worker_pid(job.id),
            "cancel_requested": self.scheduler.cancel_requested(job.id),
            "checkpoint": checkpoint_info(job.job_dir, job.record.kind) if job.job_dir.is_dir() else None,
            "resumable": state in RESUMABLE_STATES and job.job_dir.is_dir(),
            "result": None,
            "result_files": [],
        }
        if state == FINISHED:
            out["result"] = _read_json(job.result_dir / "result.json")
            out["result_files"] = result_files(job)
        return out

    def job(self, job_id: str) -> StoredJob:
        job = self.store.get(job_id) if is_job_id(job_id) else None
        if job is None:
            raise HTTPException(404, f"no job with id {quoted(job_id)}")
        return job

    # ---- submitting -----------------------------------------------------------------------------

    def submit_path(self, raw_path) -> StoredJob:
        """A job folder on the service's own disk; it runs (and writes its results) in place."""
        if not isinstance(raw_path, str) or not raw_path:
            raise HTTPException(400, "expected a JSON object {\"path\": \"/absolute/path/to/job\"}")
        if len(raw_path) > MAX_PATH_CHARS or "\x00" in raw_path:
            raise HTTPException(422, f"path: expected a folder path of at most {MAX_PATH_CHARS} characters, got {quoted(raw_path)}")
        path = Path(raw_path).expanduser()
        if not path.is_absolute():
            raise HTTPException(422, f"path: expected an absolute path (the service's working folder is not the client's), got {quoted(raw_path)}")
        try:
            exists, is_dir = path.exists(), path.is_dir()
            job_dir = path.resolve() if is_dir else path
        except (OSError, RuntimeError) as exc:
            raise HTTPException(422, f"path: cannot be used ({shorten(getattr(exc, 'strerror', None) or str(exc))}): {quoted(raw_path)}") from None
        if not exists:
            raise HTTPException(422, f"{quoted(str(path))}: no such folder on the service's machine (a local path only works when client and service share a disk; upload an archive otherwise)")
        if not is_dir:
            raise HTTPException(422, f"{quoted(str(path))}: not a folder; expected a job folder (job.json + data/)")
        spec = _validate_or_422(job_dir, relative_to=None, model_roots=self.model_roots)
        if job_state(job_dir) == FINISHED:
            raise HTTPException(409, f"{quoted(str(job_dir))}: this job has finished; its result is in result/ (submit a "
                                     "new job folder to run it again)")
        with self._submit_lock:
            for other in self.store.all():
                if other.job_dir == job_dir and self.scheduler.state(other) not in TERMINAL_STATES:
                    raise HTTPException(409, f"{quoted(str(job_dir))}: job {other.id} is already {self.scheduler.state(other)} in this folder")
            job_id, staged = self.store.new_incoming()
            job = self.store.add(job_id, SOURCE_PATH, job_dir, spec.kind, staged_dir=staged)
        self.scheduler.enqueue(job.id)
        return job

    def submit_archive(self, job_id: str, staged: Path, archive: Path) -> StoredJob:
        """Unpack an uploaded archive in its incoming folder, check it, and queue it."""
        unpacked = staged / UPLOADED_JOB_DIR
        try:
            extract_job_archive(archive, unpacked, self.max_unpacked_bytes, self.max_file_bytes)
        except InputError as exc:
            raise HTTPException(400, str(exc)) from None
        finally:
            archive.unlink(missing_ok=True)
        spec = _validate_or_422(unpacked, relative_to=unpacked, model_roots=self.model_roots)
        job = self.store.add(job_id, SOURCE_UPLOAD, unpacked, spec.kind, staged_dir=staged)
        self.scheduler.enqueue(job.id)
        return job

    def resume(self, job: StoredJob) -> None:
        """Queue a failed or cancelled job again (409 in any other state)."""
        if not job.job_dir.is_dir():
            raise HTTPException(409, f"job {job.id} cannot be resumed: its folder no longer exists")
        try:
            self.scheduler.resume(job)
        except ValueError as exc:
            state = str(exc)
            reason = "it has finished; its result is ready" if state == FINISHED else f"it is already {state}"
            raise HTTPException(409, f"job {job.id} cannot be resumed: {reason}") from None


def _validate_or_422(job_dir: Path, relative_to: Path | None, model_roots: list[Path]):
    """validate_job, with its InputError as a 422; paths inside an upload are shown relative to it."""
    try:
        return validate_job(job_dir, model_roots=model_roots)
    except InputError as exc:
        message = str(exc)
        if relative_to is not None:
            message = message.replace(str(relative_to) + os.sep, "").replace(str(relative_to), ".")
        raise HTTPException(422, message) from None
    except Exception as exc:  # a reader that failed without an InputError: still the input's problem
        log.exception("validating %s", job_dir)
        raise HTTPException(422, f"the job folder could not be read ({type(exc).__name__}); see the service's log") from None


def _read_json(path: Path):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def result_files(job: StoredJob) -> list[str]:
    """Regular files of the result folder, as paths relative to it (posix separators), sorted.

    Symbolic links (to files or folders) are left out, and a result folder that is itself a link
    has no files: a download never reaches outside the job's own result (a local job folder is
    the user's, and anything may have been put in it).
    """
    root = job.result_dir
    if root.is_symlink() or not root.is_dir():
        return []
    files = []
    for folder, subfolders, names in os.walk(root, followlinks=False):
        subfolders[:] = [d for d in subfolders if not os.path.islink(os.path.join(folder, d))]
        for name in names:
            path = Path(folder) / name
            try:
                if stat.S_ISREG(os.lstat(path).st_mode):
                    files.append(path.relative_to(root).as_posix())
            except OSError:
                continue
    return sorted(files)


def result_file_path(job: StoredJob, relative: str) -> Path | None:
    """The file ``relative`` of the result folder when it is a regular file reached without any link."""
    root = job.result_dir
    parts = [p for p in relative.split("/") if p not in ("", ".")]
    if not parts or ".." in parts or "\x00" in relative or len(relative) > MAX_PATH_CHARS:
        return None
    path = root
    try:
        for part in ["", *parts]:
            path = path / part if part else path
            mode = os.lstat(path).st_mode
            if stat.S_ISLNK(mode):
                return None
        return path if stat.S_ISREG(mode) else None
    except (OSError, ValueError):
        return None


def build_result_zip(job: StoredJob) -> Path:
    """The zipped result folder, cached beside the job record; written to a temp name, then renamed."""
    files = result_files(job)
    newest = max((job.result_dir.joinpath(f).stat().st_mtime for f in files), default=0.0)
    target = job.result_zip
    if target.is_file() and target.stat().st_mtime >= newest:
        return target
    fd, tmp = tempfile.mkstemp(prefix="result.", suffix=".zip.tmp", dir=job.record_dir)
    os.close(fd)
    try:
        with zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
            for name in files:
                compression = zipfile.ZIP_STORED if name.lower().endswith(_STORED_SUFFIXES) else zipfile.ZIP_DEFLATED
                zf.write(job.result_dir / name, arcname=name, compress_type=compression)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def create_app(root: str | Path, token: str | None = None, max_upload_bytes: int = DEFAULT_MAX_UPLOAD_MB * MIB,
               device: str | None = None, cancel_grace_s: float = DEFAULT_CANCEL_GRACE_S, *,
               max_unpacked_bytes: int = DEFAULT_MAX_UNPACKED_MB * MIB, max_file_bytes: int = DEFAULT_MAX_FILE_MB * MIB,
               allowed_hosts: list[str] | tuple[str, ...] = (), model_roots: list[Path] | None = None,
               stop_grace_s: float = DEFAULT_STOP_GRACE_S, ray_address: str | None = None,
               ray_cpus_per_job: int = 1) -> FastAPI:
    """The FastAPI app over ``root``. Takes the root's lock now (InputError when another service
    holds it); the scheduler starts with the app and stops with it.

    allowed_hosts: Host names besides loopback ones that requests may carry ("*": any).
    model_roots: folders a job's model may be a folder in (default none: Hugging Face ids only).
    ray_address: run jobs as Ray tasks on this cluster ("auto": this machine's, started if none runs)
        instead of local worker processes; the cluster must see ``root`` at the same path.
    """
    service = Service(root, token=token, max_upload_bytes=max_upload_bytes, device=device, cancel_grace_s=cancel_grace_s,
                      max_unpacked_bytes=max_unpacked_bytes, max_file_bytes=max_file_bytes, model_roots=model_roots,
                      stop_grace_s=stop_grace_s, ray_address=ray_address, ray_cpus_per_job=ray_cpus_per_job)
    service.open()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        service.start()
        try:
            yield
        finally:
            service.close()

    # No /docs or /redoc: those pages load scripts from a CDN, which would then run with this
    # service's own origin (and so pass the origin check). /openapi.json stays for tools.
    app = FastAPI(title="Radiant Forge", version=radiantforge.__version__, lifespan=lifespan, docs_url=None,
                  redoc_url=None)
    app.state.service = service

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        return JSONResponse({"detail": one_line(exc.detail)}, status_code=exc.status_code, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def bad_parameters(request: Request, exc: RequestValidationError):
        problems = []
        for error in exc.errors()[:3]:  # FastAPI's own list echoes the whole input: name it, don't repeat it
            where = ".".join(str(p) for p in error.get("loc", ()) if p not in ("query", "path", "body"))
            problems.append(f"{where or 'request'}: {error.get('msg', 'invalid')}")
        return JSONResponse({"detail": one_line("; ".join(problems))}, status_code=422)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, exc: Exception):
        log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        return JSONResponse({"detail": "the service failed on this request; the reason is in the service's log"},
                            status_code=500)

    # Pure ASGI, outermost: refused requests never reach FastAPI (nor its body parsing).
    app.add_middleware(RequestGuard, token=service.token, allowed_hosts=list(allowed_hosts))

    router = APIRouter(prefix=API_PREFIX)

    @router.get("/health")
    def health():
        return service.health()

    @router.post("/jobs", status_code=201)
    async def submit_job(request: Request):
        media_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type == "application/json":
            try:
                raw = await read_body_capped(request, MAX_JSON_BODY_BYTES)
            except UploadError as exc:
                raise HTTPException(exc.status, exc.message, headers=None if exc.drained else {"Connection": "close"}) from None
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError) as exc:
                problem = "nested too deeply" if isinstance(exc, RecursionError) else shorten(str(exc))
                raise HTTPException(400, f"body is not valid JSON: {problem}") from None
            if not isinstance(body, dict) or "path" not in body:
                raise HTTPException(400, "expected a JSON object {\"path\": \"/absolute/path/to/job\"}")
            job = await _in_thread(service.submit_path, body["path"])
        elif media_type == "multipart/form-data" or media_type in ZIP_MEDIA_TYPES:
            job_id, staged = service.store.new_incoming()
            archive = staged / "upload.zip"
            try:
                try:
                    await receive_archive(request, archive, service.max_upload_bytes)
                except UploadError as exc:
                    headers = None if exc.drained else {"Connection": "close"}
                    raise HTTPException(exc.status, exc.message, headers=headers) from None
                job = await _in_thread(service.submit_archive, job_id, staged, archive)
            except BaseException:
                remove_tree(staged)
                raise
        else:
            raise HTTPException(415, f"unsupported Content-Type {quoted(media_type or '(none)')}: send multipart/form-data with a "
                                     "file field 'archive', a zip body (application/zip), or JSON {\"path\": ...}")
        return JSONResponse(service.summary(job), status_code=201)

    @router.get("/jobs")
    def list_jobs():
        return {"jobs": [service.summary(job) for job in service.store.all()]}

    @router.get("/jobs/{job_id}")
    def get_job(job_id: str):
        return service.summary(service.job(job_id))

    @router.get("/jobs/{job_id}/events")
    def get_events(job_id: str, since: int = Query(0, ge=0, le=2**62),
                   limit: int = Query(EVENTS_PAGE_LIMIT, ge=1, le=EVENTS_PAGE_LIMIT)):
        job = service.job(job_id)
        events, next_index = job.events.events(since, limit)
        for event in events:
            for name in PRIVATE_EVENT_FIELDS:
                event.pop(name, None)
        return {"events": events, "next": next_index, "state": service.scheduler.state(job)}

    @router.post("/jobs/{job_id}/cancel")
    def cancel_job(job_id: str):
        job = service.job(job_id)
        state = service.scheduler.state(job)
        if state in TERMINAL_STATES:
            raise HTTPException(409, f"job {job_id} has already ended ({state})")
        service.scheduler.cancel(job)
        return service.summary(job)

    @router.post("/jobs/{job_id}/resume")
    def resume_job(job_id: str):
        job = service.job(job_id)
        service.resume(job)
        return service.summary(job)

    @router.get("/jobs/{job_id}/result.zip")
    def get_result_zip(job_id: str):
        job = service.job(job_id)
        state = service.scheduler.state(job)
        if state != FINISHED:
            raise HTTPException(409, f"job {job_id} has no result: it is {state}")
        path = build_result_zip(job)
        return FileResponse(path, media_type="application/zip", filename=f"{job_id}-result.zip")

    @router.get("/jobs/{job_id}/files/{file_path:path}")
    def get_result_file(job_id: str, file_path: str):
        job = service.job(job_id)
        target = result_file_path(job, file_path)
        if target is None:
            raise HTTPException(404, f"no file {quoted(file_path)} in the result of job {job_id}")
        return FileResponse(target)

    @router.delete("/jobs/{job_id}")
    def delete_job(job_id: str):
        job = service.job(job_id)
        state = service.scheduler.state(job)
        if state not in TERMINAL_STATES:
            raise HTTPException(409, f"job {job_id} is {state}; cancel it before deleting it")
        if not service.scheduler.wait_until_worker_exits(job_id, WORKER_EXIT_WAIT_S):
            raise HTTPException(409, f"job {job_id} is {state} but its worker is still exiting; try again in a moment")
        service.store.remove(job_id)
        kept = str(job.job_dir) if job.record.source == SOURCE_PATH else None
        return {"id": job_id, "deleted": True, "job_dir_kept": kept}

    app.include_router(router)
    return app


def one_line(detail) -> str:
    """An error message as clients get it: one line, at most MAX_DETAIL_CHARS characters."""
    return shorten(detail if isinstance(detail, str) else json.dumps(detail, default=str), MAX_DETAIL_CHARS)


async def _in_thread(function, *args):
    from starlette.concurrency import run_in_threadpool

    return await run_in_threadpool(function, *args)

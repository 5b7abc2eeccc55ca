"""Talk to the Radiant Forge service (`radiantforge serve`) over HTTP with the standard library only.

Blender ships no HTTP client beyond urllib (and the pip `bpy` module has no `requests`), so this is
urllib plus a hand-written multipart body. Every failure becomes a `BackendError` whose message
says what to fix (URL, token, versions), never a bare socket traceback.

    client = ServiceClient("http://127.0.0.1:8765", token="...")
    health = client.health()                   # raises BackendError when unreachable / bad token / wrong version
    job = client.submit_archive(zip_job_folder(job_dir, tmp_zip))
    state = client.job(job["id"])              # {"state": ..., "progress": {...}, ...}
    client.download_result(job["id"], job_dir / "result")
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from pathlib import Path, PurePosixPath
from typing import Any, Iterator

from .io.job_folder import JOB_FILE, JOB_INPUT_ENTRIES, RESULT_DIR
from .version import ADDON_VERSION, API_VERSION

API_PREFIX = "/api/v1"
DEFAULT_TIMEOUT_S = 10.0
# Uploads and downloads of whole datasets get more time than a status poll.
TRANSFER_TIMEOUT_S = 600.0
_CHUNK_BYTES = 1 << 20
TERMINAL_STATES = ("finished", "failed", "cancelled")


class BackendError(RuntimeError):
    """A problem talking to the service; ``str(error)`` tells the user what to fix."""

    def __init__(self, message: str, *, status: int | None = None):
        super().__init__(message)
        self.status = status


def _detail_of(body: bytes) -> str:
    """The service's own explanation from an error body (FastAPI puts it under "detail")."""
    try:
        payload = json.loads(body.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        return body.decode("utf-8", errors="replace").strip()[:500]
    if isinstance(payload, dict):
        detail = payload.get("detail", payload.get("error", payload))
        if isinstance(detail, list):  # FastAPI validation errors: [{"loc": [...], "msg": ...}]
            return "; ".join(f"{'.'.join(str(p) for p in item.get('loc', []))}: {item.get('msg', '')}"
                             if isinstance(item, dict) else str(item) for item in detail)
        return detail if isinstance(detail, str) else json.dumps(detail)
    return str(payload)


class _MultipartFile:
    """A multipart/form-data body with one file field, streamed from disk (datasets can be large)."""

    def __init__(self, field: str, path: Path, filename: str, content_type: str = "application/zip"):
        self.boundary = "radiantforge-" + secrets.token_hex(16)
        self.path = path
        self.head = (f"--{self.boundary}\r\n"
                     f'Content-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
                     f"Content-Type: {content_type}\r\n\r\n").encode("utf-8")
        self.tail = f"\r\n--{self.boundary}--\r\n".encode("utf-8")
        self.length = len(self.head) + path.stat().st_size + len(self.tail)

    @property
    def content_type(self) -> str:
        return f"multipart/form-data; boundary={self.boundary}"

    def __iter__(self) -> Iterator[bytes]:
        yield self.head
        with open(self.path, "rb") as source:
            while chunk := source.read(_CHUNK_BYTES):
                yield chunk
        yield self.tail


class ServiceClient:
    """One Radiant Forge service at ``url`` (e.g. http://127.0.0.1:8765), authenticated by ``token``."""

    def __init__(self, url: str, token: str = "", timeout: float = DEFAULT_TIMEOUT_S):
        url = (url or "").strip()
        if not url:
            raise BackendError("no service URL: set the backend URL in the Radiant Forge preferences (e.g. http://127.0.0.1:8765)")
        if "://" not in url:
            url = "http://" + url
        parsed = urllib.parse.urlsplit(url)
        if parsed.scheme not in ("http", "https") or not parsed.hostname:
            raise BackendError(f"backend URL {url!r}: expected http://HOST:PORT or https://HOST:PORT")
        self.url = url.rstrip("/")
        self.token = (token or "").strip()
        self.timeout = timeout

    # -- plumbing ------------------------------------------------------------------------------

    def _open(self, method: str, path: str, *, data=None, headers: dict | None = None,
              timeout: float | None = None):
        headers = dict(headers or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url + API_PREFIX + path, data=data, method=method, headers=headers)
        try:
            return urllib.request.urlopen(request, timeout=timeout or self.timeout)
        except urllib.error.HTTPError as exc:
            body = exc.read()
            raise self._http_error(exc.code, path, _detail_of(body)) from None
        except urllib.error.URLError as exc:
            reason = getattr(exc, "reason", exc)
            raise BackendError(f"cannot reach the Radiant Forge service at {self.url} ({reason}). "
                               "Start it (Local backend: check the Python interpreter; Remote: run "
                               "`radiantforge serve` there) or fix the URL and port in the preferences") from None
        except (TimeoutError, OSError) as exc:
            raise BackendError(f"the Radiant Forge service at {self.url} did not answer ({exc}); "
                               "it may be busy or the network is down") from None

    def _http_error(self, status: int, path: str, detail: str) -> BackendError:
        if status in (401, 403):
            hint = ("the service needs a token: set the same token in the preferences as the server's --token"
                    if not self.token else "the token was refused: set the same token in the preferences as the server's --token")
            return BackendError(f"{self.url}: {status} {detail or 'unauthorized'} — {hint}", status=status)
        if status == 404 and path == "/health":
            return BackendError(f"{self.url} answers but is not a Radiant Forge service (no {API_PREFIX}/health); "
                                "check the URL and port", status=status)
        if status == 413:
            return BackendError(f"{self.url}: the upload is larger than the service accepts ({detail}); "
                                "lower the resolution or the number of views", status=status)
        if 400 <= status < 500:
            return BackendError(f"the service refused the request ({status}): {detail}", status=status)
        return BackendError(f"the service failed ({status}): {detail}; see the service's log", status=status)

    def _json(self, method: str, path: str, payload: Any = None, timeout: float | None = None) -> Any:
        data, headers = None, {"Accept": "application/json"}
        if payload is not None:
            data = json.dumps(payload).encode("utf-8")
            headers["Content-Type"] = "application/json"
        with self._open(method, path, data=data, headers=headers, timeout=timeout) as response:
            body = response.read()
        try:
            return json.loads(body.decode("utf-8")) if body else {}
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise BackendError(f"{self.url}{API_PREFIX}{path} did not answer JSON; is this a Radiant Forge service?") from None

    def _download(self, path: str, dest: Path) -> Path:
        """Stream ``path`` to ``dest`` through a temporary name (never a half-written file)."""
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".partial")
        with self._open("GET", path, timeout=TRANSFER_TIMEOUT_S) as response, open(partial, "wb") as out:
            shutil.copyfileobj(response, out, _CHUNK_BYTES)
        os.replace(partial, dest)
        return dest

    # -- API -----------------------------------------------------------------------------------

    def health(self, *, check_version: bool = True) -> dict:
        """GET /health: {status, version, api_version, device{type,name,memory_total_bytes}, job_kinds, models}."""
        health = self._json("GET", "/health")
        if not isinstance(health, dict) or "api_version" not in health:
            raise BackendError(f"{self.url} answered /health without an api_version; is this a Radiant Forge service?")
        if check_version and health.get("api_version") != API_VERSION:
            raise BackendError(f"version mismatch: the service (radiantforge {health.get('version', '?')}) speaks API "
                               f"version {health.get('api_version')}, this add-on ({ADDON_VERSION}) speaks {API_VERSION}; "
                               "install the same Radiant Forge version on both sides")
        return health

    def submit_archive(self, archive: str | os.PathLike) -> dict:
        """POST /jobs with a zip of a job folder (job.json + data/). Returns {id, state}."""
        body = _MultipartFile("archive", Path(archive), Path(archive).name)
        headers = {"Content-Type": body.content_type, "Content-Length": str(body.length), "Accept": "application/json"}
        with self._open("POST", "/jobs", data=iter(body), headers=headers, timeout=TRANSFER_TIMEOUT_S) as response:
            return json.loads(response.read().decode("utf-8"))

    def submit_path(self, job_dir: str | os.PathLike) -> dict:
        """POST /jobs naming a job folder on a disk the service shares with us. Returns {id, state}."""
        return self._json("POST", "/jobs", {"path": str(Path(job_dir).resolve())})

    def job(self, job_id: str) -> dict:
        """GET /jobs/{id}: {state, progress, error, result}."""
        return self._json("GET", f"/jobs/{urllib.parse.quote(job_id)}")

    def events(self, job_id: str, since: int = 0) -> tuple[list[dict], int]:
        """GET /jobs/{id}/events?since=N → (events, next index)."""
        answer = self._json("GET", f"/jobs/{urllib.parse.quote(job_id)}/events?since={int(since)}")
        return list(answer.get("events", [])), int(answer.get("next", since))

    def cancel(self, job_id: str) -> dict:
        """POST /jobs/{id}/cancel. A job that already ended (409) is not an error: returns its status."""
        try:
            return self._json("POST", f"/jobs/{urllib.parse.quote(job_id)}/cancel")
        except BackendError as exc:
            if exc.status == 409:
                return self.job(job_id)
            raise

    def resume(self, job_id: str) -> dict:
        """POST /jobs/{id}/resume: queue a failed or cancelled job again; it continues from its
        checkpoint. Returns its status. BackendError says why not (finished, running, unknown)."""
        try:
            return self._json("POST", f"/jobs/{urllib.parse.quote(job_id)}/resume")
        except BackendError as exc:
            if exc.status == 404:
                raise BackendError(f"the service no longer knows job {job_id} (it was deleted, or the service now "
                                   "keeps its jobs in another folder); start the job again", status=404) from None
            raise

    def download_file(self, job_id: str, relative_path: str, dest: str | os.PathLike) -> Path:
        """GET /jobs/{id}/files/{path} into ``dest``."""
        quoted = "/".join(urllib.parse.quote(part) for part in PurePosixPath(relative_path).parts)
        return self._download(f"/jobs/{urllib.parse.quote(job_id)}/files/{quoted}", Path(dest))

    def download_result(self, job_id: str, dest_dir: str | os.PathLike) -> Path:
        """GET /jobs/{id}/result.zip and unpack it as ``dest_dir`` (which must not exist yet)."""
        dest_dir = Path(dest_dir)
        if dest_dir.exists():
            raise BackendError(f"{dest_dir}: already exists; results are never written over an earlier result")
        dest_dir.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=".rf-download-", dir=dest_dir.parent) as scratch:
            archive = self._download(f"/jobs/{urllib.parse.quote(job_id)}/result.zip", Path(scratch) / "result.zip")
            unpacked = Path(scratch) / RESULT_DIR
            extract_zip_safely(archive, unpacked)
            os.replace(unpacked, dest_dir)
        return dest_dir


def extract_zip_safely(archive: str | os.PathLike, dest: str | os.PathLike) -> Path:
    """Unpack ``archive`` into ``dest`` refusing entries that would land outside it."""
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    root = dest.resolve()
    with zipfile.ZipFile(archive) as zf:
        for info in zf.infolist():
            parts = [p for p in PurePosixPath(info.filename.replace("\\", "/")).parts if p not in ("", ".")]
            if not parts:
                continue
            if info.filename.startswith("/") or ".." in parts or ":" in info.filename:
                raise BackendError(f"result archive entry {info.filename!r} points outside the result folder; refusing it")
            target = dest.joinpath(*parts)
            if not target.resolve().is_relative_to(root):
                raise BackendError(f"result archive entry {info.filename!r} points outside the result folder; refusing it")
            if info.is_dir():
                target.mkdir(parents=True, exist_ok=True)
                continue
            target.parent.mkdir(parents=True, exist_ok=True)
            with zf.open(info) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out, _CHUNK_BYTES)
    return dest


def zip_job_folder(job_dir: str | os.PathLike, archive: str | os.PathLike) -> Path:
    """Zip the inputs of ``job_dir`` (job.json + data/) with paths relative to the job folder."""
    job_dir, archive = Path(job_dir), Path(archive)
    if not (job_dir / JOB_FILE).is_file():
        raise BackendError(f"{job_dir}: not a job folder (no job.json)")
    partial = archive.with_name(archive.name + ".partial")
    # Images are already compressed PNGs: storing them is as small and much faster than deflating.
    with zipfile.ZipFile(partial, "w", compression=zipfile.ZIP_STORED) as zf:
        for entry in JOB_INPUT_ENTRIES:
            path = job_dir / entry
            if path.is_file():
                zf.write(path, entry)
            elif path.is_dir():
                for file in sorted(path.rglob("*")):
                    if file.is_file() and not file.is_symlink():
                        zf.write(file, file.relative_to(job_dir).as_posix())
    os.replace(partial, archive)
    return archive


def format_bytes(count: int | float | None) -> str:
    if not count:
        return "?"
    return f"{count / 2**30:.1f} GiB" if count >= 2**30 else f"{count / 2**20:.0f} MiB"


def describe_health(health: dict) -> list[str]:
    """Lines for the preferences / report: version, device, job kinds, models."""
    lines = [f"Radiant Forge {health.get('version', '?')} (API {health.get('api_version', '?')}) — {health.get('status', '?')}"]
    device = health.get("device") or {}
    if isinstance(device, dict):
        kind = str(device.get("type", "?")).upper()
        name = device.get("name") or ""
        memory = device.get("memory_total_bytes")
        text = f"Device: {kind}"
        if name:
            text += f" — {name}"
        if memory:
            text += f" ({format_bytes(memory)})"
        lines.append(text)
    if health.get("version") and health.get("version") != ADDON_VERSION:
        lines.append(f"Note: the service is version {health['version']}, the add-on {ADDON_VERSION}")
    kinds = health.get("job_kinds")
    if kinds:
        lines.append("Jobs: " + ", ".join(str(k) for k in kinds))
    models = health.get("models")
    if isinstance(models, dict):
        models = [f"{name}: {'ready' if ok else 'missing'}" if isinstance(ok, bool) else f"{name}: {ok}"
                  for name, ok in models.items()]
    if isinstance(models, list):
        named = [m.get("name", m.get("id", json.dumps(m))) + ("" if m.get("available", True) else " (missing)")
                 if isinstance(m, dict) else str(m) for m in models]
        lines.append("Models: " + (", ".join(named) if named else "none found locally"))
    return lines

"""The add-on's Batch: many jobs at once, from a batch file or from the selected meshes, listed with their states.

A batch is expanded *here* into ordinary job folders (job.json + data/), each submitted through the
service's one upload endpoint (``POST /jobs``): the service learns nothing new and takes nothing it
did not take before (an upload of job.json and data/ only; no client path ever names a file on its
side), and every entry gets its own job id, events, cancel and result. A service started with
``--ray`` runs as many of them at once as its cluster fits; the local one runs them in turn.

- :func:`read_batch_file`: a text file (one text-to-3D prompt per line, with the panel's Text-to-3D
  settings) or JSON lines in the backend's batch format (``radiantforge batch``: text3d, texture and
  gaussians entries, ``mesh`` and ``data`` relative to the file). Those paths are the artist's own
  files on this machine, copied into each job's ``data/``.
- :func:`entries_from_objects`: each selected mesh a texture entry with the panel's prompt and
  texture settings (a Gaussian capture of the selection is one scene, so one job, not a batch).
- :class:`BatchRun`: steps without blocking (a modal timer calls :meth:`BatchRun.step`): connects,
  writes and uploads one entry per step, then polls the states; :func:`batch_rows` is what the panel lists.

bpy is only needed by :func:`write_entry_job` for an entry made from a Blender object.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from .client import TERMINAL_STATES, BackendError, zip_job_folder
from .io.job_folder import DATA_DIR, JobError, job_from_dataset, write_job_file, write_text3d_job

KINDS = ("text3d", "texture", "gaussians")
# The field of an entry naming its input (a file or folder beside the batch file), by kind.
INPUT_FIELD = {"texture": "mesh", "gaussians": "data"}
MAX_BATCH_ENTRIES = 1000  # what one panel lists; a larger batch is for `radiantforge batch`
POLL_INTERVAL_S = 1.0  # how often the states are asked for once every entry is submitted
COMMENT_PREFIX = "#"


@dataclasses.dataclass
class BatchEntry:
    """One job of a batch. source: the Blender object's name (texture from the selection), or the file
    or folder its input is (from a batch file), or None (a text-to-3D prompt)."""

    kind: str
    label: str
    params: dict[str, Any]
    source: str | None = None
    from_object: bool = False
    job_id: str = ""
    state: str = "pending"  # pending (not yet submitted), then the service's: queued, running, finished ...
    progress: float = 0.0
    error: str = ""


def read_batch_file(path: str | os.PathLike, text3d_params: dict[str, Any]) -> list[BatchEntry]:
    """The entries of a batch file; raises JobError naming the line and field."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise JobError(f"{path}: cannot be read as UTF-8 text ({exc})") from None
    lines = [(number, line.strip()) for number, line in enumerate(text.splitlines(), start=1)
             if line.strip() and not line.strip().startswith(COMMENT_PREFIX)]
    if not lines:
        raise JobError(f"{path}: holds no entries (a prompt per line, or JSON lines of the batch format)")
    if len(lines) > MAX_BATCH_ENTRIES:
        raise JobError(f"{path}: {len(lines)} entries; the add-on submits at most {MAX_BATCH_ENTRIES} "
                       "(use `radiantforge batch` for more)")
    if path.suffix.lower() not in (".jsonl", ".json", ".ndjson"):
        return [BatchEntry("text3d", prompt, {**text3d_params, "prompt": prompt}) for _, prompt in lines]
    return [_json_entry(line, f"{path}:{number}", path.parent) for number, line in lines]


def _json_entry(line: str, where: str, base: Path) -> BatchEntry:
    try:
        raw = json.loads(line)
    except (json.JSONDecodeError, RecursionError) as exc:
        raise JobError(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict) or raw.get("kind") not in KINDS:
        raise JobError(f"{where}: kind: expected one of {', '.join(KINDS)}")
    kind = raw["kind"]
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise JobError(f"{where}: params: expected an object of job parameters")
    params = dict(params)
    if kind != "gaussians":
        if not isinstance(raw.get("prompt"), str) or not raw["prompt"].strip():
            raise JobError(f"{where}: prompt: missing; a {kind} entry needs one")
        params["prompt"] = raw["prompt"].strip()
    source = None
    if kind in INPUT_FIELD:
        field = INPUT_FIELD[kind]
        if not isinstance(raw.get(field), str) or not raw[field].strip():
            raise JobError(f"{where}: {field}: missing; a {kind} entry needs one")
        source = str((base / raw[field]).resolve())
        exists = Path(source).is_file() if kind == "texture" else Path(source).is_dir()
        if not exists:
            raise JobError(f"{where}: {field}: no such {'file' if kind == 'texture' else 'folder'} {source}")
    name = raw.get("name")
    label = name if isinstance(name, str) and name else params.get("prompt") or Path(source).name
    return BatchEntry(kind, label, params, source)


def entries_from_objects(objects, texture_params: dict[str, Any]) -> list[BatchEntry]:
    """A texture entry per mesh among ``objects`` (others skipped), each with the panel's prompt and settings."""
    entries = [BatchEntry("texture", obj.name, dict(texture_params), obj.name, from_object=True)
               for obj in objects if obj.type == "MESH"]
    if not entries:
        raise JobError("select one or more mesh objects: each becomes a texture job of the batch")
    return entries


def write_entry_job(entry: BatchEntry, job_dir: Path, *, target_mode: str = "SAME", depsgraph=None) -> Path:
    """The job folder of ``entry`` (job.json + data/), ready to zip and upload."""
    if entry.kind == "text3d":
        return write_text3d_job(job_dir, entry.params)
    if entry.kind == "gaussians":
        return job_from_dataset(entry.source, job_dir, entry.params)
    if entry.from_object:
        import bpy

        from .mesh_export import prepare_target, write_texture_job

        obj = bpy.data.objects.get(entry.source)
        if obj is None:
            raise JobError(f"{entry.label}: the object is gone")
        target = prepare_target(obj, target_mode)
        return write_texture_job(job_dir, target, entry.params, depsgraph)
    write_job_file(job_dir, "texture", entry.params)
    data = job_dir / DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    source = Path(entry.source)
    shutil.copyfile(source, data / source.name)
    for sibling in source.parent.glob(f"{source.stem}.mtl"):  # an OBJ's materials and the textures they name
        shutil.copyfile(sibling, data / sibling.name)
    return job_dir


def update_from_summary(entry: BatchEntry, summary: dict) -> None:
    """Take a job's state from the service's summary (GET /jobs/{id})."""
    entry.state = str(summary.get("state", entry.state))
    progress = summary.get("progress") or {}
    total, step = progress.get("total"), progress.get("step")
    if entry.state == "finished":
        entry.progress = 1.0
    elif isinstance(total, (int, float)) and total > 0 and isinstance(step, (int, float)):
        entry.progress = max(0.0, min(1.0, step / total))
    entry.error = str(summary.get("error") or "")


def batch_rows(entries: list[BatchEntry]) -> list[tuple[str, str]]:
    """(label, state) per entry, as the panel lists them: "running 40%", "failed: <why>"."""
    rows = []
    for entry in entries:
        state = entry.state
        if state == "running":
            state = f"running {entry.progress:.0%}"
        elif state == "failed" and entry.error:
            state = f"failed: {entry.error[:120]}"
        rows.append((f"{entry.kind} · {entry.label}"[:80], state))
    return rows


def count_states(entries: list[BatchEntry]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for entry in entries:
        counts[entry.state] = counts.get(entry.state, 0) + 1
    return counts


class BatchRun:
    """Submits a batch's entries one per step, then polls their states; never blocks for long.

    open_client: a generator function giving a ServiceClient (``settings.open_backend``), or a plain
    function returning one. write_job: (entry, job_dir) -> job_dir (default :func:`write_entry_job`).
    """

    def __init__(self, entries: list[BatchEntry], work_dir: str | os.PathLike, open_client: Callable,
                 write_job: Callable[[BatchEntry, Path], Path] | None = None):
        self.entries = entries
        self.work_dir = Path(work_dir)
        self.open_client = open_client
        self.write_job = write_job or write_entry_job
        self.client = None
        self.error = ""
        self._connecting = None
        self._last_poll = 0.0

    @property
    def done(self) -> bool:
        return bool(self.error) or (all(e.job_id or e.state == "failed" for e in self.entries)
                                    and all(e.state in TERMINAL_STATES for e in self.entries))

    def step(self) -> bool:
        """One small piece of work; True while the batch goes on."""
        if self.done:
            return False
        try:
            if self.client is None:
                self._connect()
            elif (entry := next((e for e in self.entries if e.state == "pending"), None)) is not None:
                self._submit(entry)
            elif time.monotonic() - self._last_poll >= POLL_INTERVAL_S:
                self.poll()
        except BackendError as exc:
            self.error = str(exc)
        return not self.done

    def _connect(self) -> None:
        if self._connecting is None:
            opened = self.open_client()
            if not hasattr(opened, "send"):  # a plain function gave the client itself
                self.client = opened
                return
            self._connecting = opened
        try:
            next(self._connecting)
        except StopIteration as finished:
            self.client, self._connecting = finished.value, None

    def _submit(self, entry: BatchEntry) -> None:
        number = self.entries.index(entry) + 1
        job_dir = self.work_dir / f"{number:03d}-{entry.kind}"
        try:
            self.write_job(entry, job_dir)
            archive = zip_job_folder(job_dir, job_dir.with_suffix(".zip"))
            answer = self.client.submit_archive(archive)
        except (JobError, OSError, ValueError, RuntimeError) as exc:  # this entry's own problem: the batch goes on
            entry.state, entry.error = "failed", str(exc)
            return
        except BackendError as exc:
            if exc.status is None:  # the service is unreachable: the batch cannot go on
                raise
            entry.state, entry.error = "failed", str(exc)  # refused (422: the job does not validate)
            return
        entry.job_id = str(answer["id"])
        update_from_summary(entry, answer)

    def poll(self) -> None:
        """Ask the service for the state of every submitted entry that has not ended."""
        self._last_poll = time.monotonic()
        for entry in self.entries:
            if entry.job_id and entry.state not in TERMINAL_STATES:
                update_from_summary(entry, self.client.job(entry.job_id))

    def cancel(self) -> None:
        """Cancel every submitted entry still queued or running; entries not yet submitted are dropped."""
        for entry in self.entries:
            if entry.state == "pending":
                entry.state = "cancelled"
            elif entry.job_id and entry.state not in TERMINAL_STATES and self.client is not None:
                update_from_summary(entry, self.client.cancel(entry.job_id))


# The batch this Blender session runs or ran last (what the Batch panel lists); not saved with the .blend.
_current: BatchRun | None = None


def current_batch() -> BatchRun | None:
    return _current


def set_current_batch(run: BatchRun | None) -> None:
    global _current
    _current = run

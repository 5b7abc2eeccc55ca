"""Finding a finished job's files: ``result.json`` roles first, then the file names the backend writes."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from .job_folder import DATA_DIR, METRICS_FILE, RESULT_DIR, RESULT_FILE, JobError
from .media import ANIMATION_SUFFIXES, FRAME_SUFFIXES, VIDEO_SUFFIXES, frame_number, numbered_frames

# Result-file roles (result.json); matched loosely so older/newer backends still import.
ROLE_GAUSSIANS = "gaussians"
ROLE_TURNTABLE = "turntable"
TURNTABLE_NAME = "turntable"  # turntable/ frames, turntable.mp4, turntable.gif
# In a capture's transforms files (under "radiantforge"): the names of the objects its views show.
CAPTURED_OBJECTS_KEY = "objects"
CAPTURE_TRANSFORMS = ("transforms_train.json", "transforms_test.json")


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


def resolve_result_path(folder: Path, path: str) -> Path | None:
    """Where a path named in result.json is here: as given, inside ``folder``, or beside it."""
    candidate = Path(path)
    for option in ((candidate,) if candidate.is_absolute() else ()) + (folder / candidate, folder / candidate.name,
                                                                       folder.parent / candidate):
        if option.exists():
            return option
    return None


def read_result_folder(folder: str | os.PathLike) -> ResultFiles:
    """Read ``result.json`` (roles) and ``metrics.json`` of a result folder; fall back to file names."""
    folder = Path(folder)
    if not (folder / RESULT_FILE).is_file() and (folder / RESULT_DIR / RESULT_FILE).is_file():
        folder = folder / RESULT_DIR  # a job folder was given
    found = ResultFiles(folder)
    manifest = folder / RESULT_FILE
    if manifest.is_file():
        found.entries = _result_entries(json.loads(manifest.read_text(encoding="utf-8")))
    renders: dict[str, Path] = {}
    truths: dict[str, Path] = {}
    for entry in found.entries:
        role = str(entry.get("role", "")).lower()
        path = resolve_result_path(folder, str(entry["path"]))
        if path is None:
            continue
        suffix = path.suffix.lower()
        if ROLE_GAUSSIANS in role or (suffix == ".ply" and "point" in path.stem and found.gaussians is None):
            if found.gaussians is None or ROLE_GAUSSIANS in role:
                found.gaussians = path
        elif ROLE_TURNTABLE in role:
            if path.is_dir():
                found.turntable_frames = numbered_frames(path)
            elif suffix in VIDEO_SUFFIXES:
                found.turntable_video = path
            elif suffix in ANIMATION_SUFFIXES:
                found.turntable_gif = path
            elif suffix in FRAME_SUFFIXES:
                found.turntable_frames.append(path)
        elif "metric" in role and suffix == ".json":
            found.metrics = json.loads(path.read_text(encoding="utf-8"))
        elif ("truth" in role or role.endswith("gt")) and path.is_file():
            truths[path.stem] = path
        elif ("test" in role or "render" in role) and path.is_file() and suffix in FRAME_SUFFIXES:
            renders[path.stem] = path
    # Files the manifest did not name, found by the layout the backend writes.
    if found.gaussians is None:
        plys = sorted(folder.glob("*.ply"))
        found.gaussians = next((p for p in plys if "point_cloud" in p.name), plys[0] if plys else None)
    if not found.turntable_frames and (folder / TURNTABLE_NAME).is_dir():
        found.turntable_frames = numbered_frames(folder / TURNTABLE_NAME)
    if found.turntable_video is None and (folder / f"{TURNTABLE_NAME}.mp4").is_file():
        found.turntable_video = folder / f"{TURNTABLE_NAME}.mp4"
    if found.turntable_gif is None and (folder / f"{TURNTABLE_NAME}.gif").is_file():
        found.turntable_gif = folder / f"{TURNTABLE_NAME}.gif"
    if not found.metrics and (folder / METRICS_FILE).is_file():
        found.metrics = json.loads((folder / METRICS_FILE).read_text(encoding="utf-8"))
    found.turntable_frames.sort(key=frame_number)
    found.test_pairs = [(render, truths.get(stem)) for stem, render in sorted(renders.items())]
    return found


def result_file_with_role(result_dir: str | os.PathLike, role: str, fallback_names: tuple[str, ...], what: str) -> Path:
    """The file a result folder names with ``role`` in result.json, else the first of ``fallback_names``
    there; raises JobError saying the result has no ``what``."""
    files = read_result_folder(result_dir)
    for entry in files.entries:
        if str(entry.get("role", "")).lower() == role:
            path = resolve_result_path(files.folder, str(entry["path"]))
            if path is not None and path.is_file():
                return path
    for name in fallback_names:
        if (files.folder / name).is_file():
            return files.folder / name
    raise JobError(f"{files.folder}: the result has no {what} (role {role!r} in result.json)")


def captured_object_names(result_folder: str | os.PathLike) -> list[str]:
    """Names of the Blender objects the job's capture rendered (its ``data/transforms_*.json``), or []
    for a job made from a dataset (or a capture from before the names were written)."""
    folder = Path(result_folder)
    job_dir = folder.parent if folder.name.startswith(RESULT_DIR) else folder
    for name in CAPTURE_TRANSFORMS:
        path = job_dir / DATA_DIR / name
        if not path.is_file():
            continue
        try:
            extra = json.loads(path.read_text(encoding="utf-8")).get("radiantforge") or {}
        except (OSError, ValueError, AttributeError):
            return []
        names = extra.get(CAPTURED_OBJECTS_KEY) if isinstance(extra, dict) else None
        return [str(n) for n in names if isinstance(n, str)] if isinstance(names, list) else []
    return []

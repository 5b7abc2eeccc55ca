"""Job folders as the add-on writes them: the names of their parts, job.json, a dataset's data/ copy.

See DESIGN.md ("The job folder")::

    job/
      job.json        {"format_version": 1, "kind": "gaussians", "params": {...}}
      data/           inputs (NeRF-synthetic dataset, points3d.ply, mesh.obj, prompt.txt)
      events.jsonl    appended by the backend
      result/         outputs + result.json

The names below are the backend's (``radiantforge.jobs``, ``radiantforge.result_folders``,
``radiantforge.data.transforms``, ``radiantforge.gaussians.train``). The add-on cannot import them:
the extension zip holds ``addon/`` only, and Blender's Python has no ``radiantforge`` (that lives
with torch in the service's own environment, possibly on another machine). So they are defined
once here, and ``tests/test_addon_io.py`` checks that they equal the backend's.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

JOB_FORMAT_VERSION = 1
JOB_FILE = "job.json"
DATA_DIR = "data"
RESULT_DIR = "result"
EVENTS_FILE = "events.jsonl"
RESULT_FILE = "result.json"  # inside result/: every output file and its role
METRICS_FILE = "metrics.json"  # inside result/ of a Gaussian job
POINTS_FILE = "points3d.ply"  # inside data/ of a Gaussian job
TRANSFORMS_FILES = {"train": "transforms_train.json", "test": "transforms_test.json"}  # inside data/
# Only these parts of a job folder are inputs; events, results and checkpoints stay behind.
JOB_INPUT_ENTRIES = (JOB_FILE, DATA_DIR)

# Job kinds (job.json "kind").
GAUSSIANS_KIND = "gaussians"
TEXTURE_KIND = "texture"
TEXT3D_KIND = "text3d"

PROMPT_FILE = "prompt.txt"  # inside data/ of a text-to-3D job


class JobError(RuntimeError):
    """A job that cannot start or finish; the message says what to fix."""


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


# The add-on's Quality presets: the backend's time budget in seconds (training, test evaluation and
# turntable on the backend's machine; the capture in Blender comes before it). The backend measures
# its own step cost and picks steps, Gaussian cap and resolution to fit (radiantforge.gaussians.budget).
# "STEPS" runs the fixed step count instead.
QUALITY_TIME_BUDGETS = {"DRAFT": 120, "STANDARD": 300, "HIGH": 1200}


def quality_time_budget(quality: str) -> int | None:
    """Seconds of the backend's time budget for a Quality preset; None for "STEPS" (a fixed step count)."""
    if quality == "STEPS":
        return None
    if quality not in QUALITY_TIME_BUDGETS:
        raise JobError(f"quality {quality!r}: expected one of STEPS, {', '.join(QUALITY_TIME_BUDGETS)}")
    return QUALITY_TIME_BUDGETS[quality]


def gaussian_params(steps: int | None = None, sh_degree: int | None = None, max_gaussians: int | None = None,
                    **extra: Any) -> dict[str, Any]:
    """Parameters of a "gaussians" job; None / 0 caps are left to the backend's defaults. With a
    ``time_budget`` (seconds) the backend chooses the steps itself, so ``steps`` is not sent."""
    params: dict[str, Any] = {}
    if steps and extra.get("time_budget") is None:
        params["steps"] = int(steps)
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
    if not (folder / TRANSFORMS_FILES["train"]).is_file():
        raise JobError(f"dataset {folder}: no transforms_train.json; expected a NeRF-synthetic dataset "
                       "(transforms_train.json, transforms_test.json, images) or a job folder (job.json + data/)")
    return folder


def job_from_dataset(dataset: str | os.PathLike, job_dir: str | os.PathLike, params: dict[str, Any]) -> Path:
    """A new job folder whose data/ is a copy of ``dataset`` (the user's folder is never touched)."""
    dataset = check_dataset_folder(dataset)
    job_dir = Path(job_dir)
    write_job_file(job_dir, GAUSSIANS_KIND, params)
    data = job_dir / DATA_DIR
    if data.exists() and not any(data.iterdir()):
        data.rmdir()
    shutil.copytree(dataset, data)
    return job_dir


def write_text3d_job(job_dir: str | os.PathLike, params: dict[str, Any]) -> Path:
    """A new job folder: job.json (kind "text3d") and data/prompt.txt.

    The prompt (in job.json) is the only input; data/prompt.txt repeats it for people browsing job
    folders, and keeps data/ from being empty (an uploaded archive holds no empty folders).
    """
    write_job_file(job_dir, TEXT3D_KIND, params)
    data = Path(job_dir) / DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    (data / PROMPT_FILE).write_text(params["prompt"] + "\n", encoding="utf-8")
    return Path(job_dir)


def remove_unfinished_job(job_dir: str | os.PathLike) -> None:
    """Undo a job folder whose data/ never got written (a failed or cancelled capture); only what
    the add-on created goes: an empty data/, then job.json and the folder when nothing else is in it."""
    job_dir = Path(job_dir)
    data = job_dir / DATA_DIR
    if data.is_dir() and not any(data.iterdir()):
        data.rmdir()
    job_file = job_dir / JOB_FILE
    if job_file.is_file() and not data.exists():
        job_file.unlink()
        try:
            job_dir.rmdir()
        except OSError:
            pass

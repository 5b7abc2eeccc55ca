"""Job folders: the contract between the add-on, the service, the CLI and the backend.

```
job/
  job.json        {"format_version": 1, "kind": "gaussians", "params": {...}}
  data/           inputs (NeRF-synthetic dataset, points3d.ply, meshes)
  events.jsonl    appended by the backend (radiantforge.events)
  result/         outputs + result.json
  checkpoints/    resumable state
  CANCEL          created by whoever wants the job to stop (service, add-on, user)
```

`run_job` validates the folder before any work starts, resumes from the last checkpoint when
there is one, and reports everything through the events file. It never raises for a job that
failed on bad input or was cancelled: the outcome is in the returned dict and in events.jsonl.
"""

from __future__ import annotations

import dataclasses
import json
import traceback
from pathlib import Path
from typing import Any, Callable

from .errors import InputError, JobCancelled, RadiantForgeError
from .events import EventLog, read_events

JOB_FORMAT_VERSION = 1
JOB_FILE = "job.json"
EVENTS_FILE = "events.jsonl"
CANCEL_FILE = "CANCEL"
DATA_DIR = "data"
RESULT_DIR = "result"
CHECKPOINT_DIR = "checkpoints"


@dataclasses.dataclass
class JobSpec:
    kind: str
    params: dict[str, Any]
    format_version: int = JOB_FORMAT_VERSION


def _gaussian_config_type():
    from .gaussians.train import GaussianTrainConfig

    return GaussianTrainConfig


def _texture_config_type():
    from .texture.config import TextureConfig

    return TextureConfig


def _text3d_config_type():
    from .text3d.config import Text3DConfig

    return Text3DConfig


# kind -> function returning the dataclass its params must fit
JOB_PARAM_TYPES: dict[str, Callable[[], type]] = {"gaussians": _gaussian_config_type, "texture": _texture_config_type,
                                                   "text3d": _text3d_config_type}


# Job kinds that read inputs from data/ (text-to-3D needs only its prompt).
KINDS_WITH_INPUTS = ("gaussians", "texture")


def write_job(job_dir: str | Path, kind: str, params: dict[str, Any] | None = None) -> Path:
    """Create ``job_dir/job.json`` (the data folder is the caller's to fill). Refuses to overwrite."""
    job_dir = Path(job_dir)
    job_file = job_dir / JOB_FILE
    if job_file.exists():
        raise InputError("a job already exists here; choose a new folder", file=job_file)
    spec = JobSpec(kind=kind, params=dict(params or {}))
    _check_params(spec, job_file)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / DATA_DIR).mkdir(exist_ok=True)
    job_file.write_text(json.dumps(dataclasses.asdict(spec), indent=2) + "\n", encoding="utf-8")
    return job_dir


def read_job_spec(job_dir: str | Path) -> JobSpec:
    """Read and check ``job.json``: kind known, format version supported, params well-formed."""
    job_file = Path(job_dir) / JOB_FILE
    if not job_file.is_file():
        raise InputError("missing job file (expected job.json with kind and params)", file=job_file)
    try:
        raw = json.loads(job_file.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}", file=job_file) from None
    if not isinstance(raw, dict):
        raise InputError("expected a JSON object", file=job_file)
    version = raw.get("format_version", JOB_FORMAT_VERSION)
    if version != JOB_FORMAT_VERSION:
        raise InputError(f"unsupported format version {version!r}, expected {JOB_FORMAT_VERSION}", file=job_file, field="format_version")
    kind = raw.get("kind")
    if kind not in JOB_PARAM_TYPES:
        raise InputError(f"unknown job kind {kind!r}; known kinds: {', '.join(sorted(JOB_PARAM_TYPES))}", file=job_file, field="kind")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise InputError("expected an object of parameter names to values", file=job_file, field="params")
    spec = JobSpec(kind=kind, params=params, format_version=version)
    _check_params(spec, job_file)
    return spec


def _check_params(spec: JobSpec, job_file: Path) -> None:
    if spec.kind not in JOB_PARAM_TYPES:
        raise InputError(f"unknown job kind {spec.kind!r}; known kinds: {', '.join(sorted(JOB_PARAM_TYPES))}", file=job_file, field="kind")
    config_type = JOB_PARAM_TYPES[spec.kind]()
    known = {f.name: f for f in dataclasses.fields(config_type)}
    for name, value in spec.params.items():
        if name not in known:
            raise InputError(f"unknown parameter; known: {', '.join(sorted(known))}", file=job_file, field=f"params.{name}")
    try:
        config_type(**spec.params)
    except InputError as exc:
        raise InputError(exc.problem, file=job_file, field=f"params.{exc.field}" if exc.field else "params") from None
    except (TypeError, ValueError) as exc:
        raise InputError(str(exc), file=job_file, field="params") from None


def validate_job(job_dir: str | Path) -> JobSpec:
    """Everything that can be checked before work starts: job.json and the data folder."""
    job_dir = Path(job_dir)
    spec = read_job_spec(job_dir)
    data_dir = job_dir / DATA_DIR
    if spec.kind in KINDS_WITH_INPUTS and not data_dir.is_dir():
        raise InputError("missing data folder", file=data_dir)
    if spec.kind == "gaussians":
        from .data.transforms import load_nerf_dataset

        config = _gaussian_config_type()(**spec.params)
        load_nerf_dataset(data_dir, downscale=config.downscale, background=config.background)
    elif spec.kind == "texture":
        _validate_texture_job(job_dir, spec)
    elif spec.kind == "text3d":
        _validate_text3d_job(job_dir, spec)
    return spec


def _validate_text3d_job(job_dir: Path, spec: JobSpec) -> None:
    """The prompt is not empty and the model is on this machine, before any work (no data/ inputs needed)."""
    from .text3d import check_text3d_job

    try:
        check_text3d_job(_text3d_config_type()(**spec.params))
    except InputError as exc:
        if exc.file is None and exc.field in ("prompt", "model"):  # a job parameter: name it as job.json does
            raise InputError(exc.problem, file=job_dir / JOB_FILE, field=f"params.{exc.field}") from None
        raise


def _validate_texture_job(job_dir: Path, spec: JobSpec) -> Path:
    """The prompt, the one mesh in data/ (faces, size limit) and the model's presence, before any work."""
    from .texture import check_texture_job

    config = _texture_config_type()(**spec.params)
    try:
        return check_texture_job(job_dir / DATA_DIR, config)
    except InputError as exc:
        if exc.file is None and exc.field in ("prompt", "model"):  # a job parameter: name it as job.json does
            raise InputError(exc.problem, file=job_dir / JOB_FILE, field=f"params.{exc.field}") from None
        raise


def request_cancel(job_dir: str | Path) -> None:
    """Ask a running job to stop; it writes a checkpoint and ends with a 'cancelled' event."""
    (Path(job_dir) / CANCEL_FILE).touch()


def cancel_requested(job_dir: str | Path) -> bool:
    return (Path(job_dir) / CANCEL_FILE).exists()


def job_state(job_dir: str | Path) -> str:
    """queued | running | finished | failed | cancelled, from the events file."""
    state = "queued"
    for event in read_events(Path(job_dir) / EVENTS_FILE):
        kind = event.get("type")
        if kind == "started":
            state = "running"
        elif kind == "finished":
            state = "finished"
        elif kind == "error":
            state = "failed"
        elif kind == "cancelled":
            state = "cancelled"
    return state


def run_job(job_dir: str | Path, *, echo: bool = False, device: str | None = None) -> dict[str, Any]:
    """Run (or resume) the job in ``job_dir``. Returns {"state": ..., "result": ..., "error": ...}."""
    job_dir = Path(job_dir)
    events = EventLog(job_dir / EVENTS_FILE, echo=echo)
    # A new run clears an old cancel request: the user started it again on purpose.
    (job_dir / CANCEL_FILE).unlink(missing_ok=True)
    try:
        spec = validate_job(job_dir)
    except InputError as exc:
        events.emit("error", message=str(exc), file=exc.file, field=exc.field, stage="validation")
        return {"state": "failed", "error": str(exc)}
    finished = _finished_result(job_dir)
    if finished is not None:  # running a finished job again is a no-op, never a silent retrain
        return {"state": "finished", "result": finished}
    resume = _has_checkpoint(job_dir, spec.kind)
    events.emit("started", kind=spec.kind, resumed=resume)
    try:
        if spec.kind == "gaussians":
            result = _run_gaussians(job_dir, spec, events, resume, device)
        elif spec.kind == "texture":
            result = _run_texture(job_dir, spec, events, resume, device)
        elif spec.kind == "text3d":
            result = _run_text3d(job_dir, spec, events, resume, device)
        else:  # pragma: no cover - read_job_spec only lets known kinds through
            raise InputError(f"unknown job kind {spec.kind!r}", field="kind")
    except JobCancelled:
        return {"state": "cancelled"}
    except RadiantForgeError as exc:
        events.emit("error", message=str(exc))
        return {"state": "failed", "error": str(exc)}
    except Exception as exc:  # a bug or an out-of-memory: report it, keep the caller alive
        events.emit("error", message=f"{type(exc).__name__}: {exc}", traceback=traceback.format_exc())
        return {"state": "failed", "error": f"{type(exc).__name__}: {exc}"}
    events.emit("finished", result=result)
    return {"state": "finished", "result": result}


def _finished_result(job_dir: Path) -> dict | None:
    """The result.json of a job that already finished, else None."""
    result_file = job_dir / RESULT_DIR / "result.json"
    if job_state(job_dir) == "finished" and result_file.is_file():
        return json.loads(result_file.read_text(encoding="utf-8"))
    return None


def _has_checkpoint(job_dir: Path, kind: str) -> bool:
    """Whether a killed or cancelled run of this job left a checkpoint to resume from."""
    if kind == "gaussians":
        from .gaussians.train import CHECKPOINT_FILE
    elif kind == "texture":
        from .texture.run import CHECKPOINT_FILE
    else:
        from .text3d.run import CHECKPOINT_FILE
    return (job_dir / CHECKPOINT_DIR / CHECKPOINT_FILE).is_file()


def _run_gaussians(job_dir: Path, spec: JobSpec, events: EventLog, resume: bool, device: str | None) -> dict:
    from .gaussians.train import GaussianTrainConfig, train_gaussians

    params = dict(spec.params)
    if device is not None:
        params["device"] = device
    config = GaussianTrainConfig(**params)
    outcome = train_gaussians(
        job_dir / DATA_DIR,
        job_dir / RESULT_DIR,
        config=config,
        checkpoint_dir=job_dir / CHECKPOINT_DIR,
        resume=resume,
        events=events,
        should_stop=lambda: cancel_requested(job_dir),
        preview_dir=job_dir / RESULT_DIR,  # inside result/ so a remote service can serve it
    )
    return json.loads((Path(outcome.out_dir) / "result.json").read_text(encoding="utf-8"))


def _run_texture(job_dir: Path, spec: JobSpec, events: EventLog, resume: bool, device: str | None) -> dict:
    from .texture import find_job_mesh, texture_mesh

    params = dict(spec.params)
    if device is not None:
        params["device"] = device
    config = _texture_config_type()(**params)
    outcome = texture_mesh(
        find_job_mesh(job_dir / DATA_DIR),
        job_dir / RESULT_DIR,
        prompt=config.prompt,
        config=config,
        checkpoint_dir=job_dir / CHECKPOINT_DIR,
        resume=resume,
        events=events,
        should_stop=lambda: cancel_requested(job_dir),
    )
    return json.loads((Path(outcome.out_dir) / "result.json").read_text(encoding="utf-8"))


def _run_text3d(job_dir: Path, spec: JobSpec, events: EventLog, resume: bool, device: str | None) -> dict:
    from .text3d import generate_3d

    params = dict(spec.params)
    if device is not None:
        params["device"] = device
    config = _text3d_config_type()(**params)
    outcome = generate_3d(
        config.prompt,
        job_dir / RESULT_DIR,
        config=config,
        checkpoint_dir=job_dir / CHECKPOINT_DIR,
        resume=resume,
        events=events,
        should_stop=lambda: cancel_requested(job_dir),
    )
    return json.loads((Path(outcome.out_dir) / "result.json").read_text(encoding="utf-8"))

"""Job folders: the contract between the add-on, the service, the CLI and the backend.

```
job/
  job.json        {"format_version": 1, "kind": "gaussians", "params": {...}}
  data/           inputs (NeRF-synthetic dataset, points3d.ply, meshes)
  events.jsonl    appended by the backend (radiantforge.events)
  result/         outputs + result.json
  checkpoints/    resumable state (a checkpoint and its .json: which step it holds)
  CANCEL          created by whoever wants the job to stop (service, add-on, user)
  SUSPEND         created by the service when it shuts down: checkpoint, stop, resume later
```

`run_job` validates the folder before any work starts, resumes from the last checkpoint when
there is one, and reports everything through the events file. It never raises for a job that
failed on bad input or was cancelled: the outcome is in the returned dict and in events.jsonl.

Validation reads files' headers, never their pixels or geometry (the service validates uploads
in its own process); the job itself decodes its inputs when it runs and reports what it finds
there as an error event. Every path a job reads lies inside its ``data/`` folder; a ``model``
given as a folder lies inside the model folders the caller allows (``model_roots``, the
service's ``--model-dir``), or anywhere when the caller allows any (the command line).
"""

from __future__ import annotations

import dataclasses
import json
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import STOP_CANCELLED, STOP_SUSPENDED, InputError, JobCancelled, RadiantForgeError, quoted, shorten
from .events import EventLog, read_events

JOB_FORMAT_VERSION = 1
JOB_FILE = "job.json"
EVENTS_FILE = "events.jsonl"
CANCEL_FILE = "CANCEL"
SUSPEND_FILE = "SUSPEND"
# job.json holds a kind and a few dozen parameters; anything this large is not one.
MAX_JOB_FILE_BYTES = 1 << 20
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
    if job_file.stat().st_size > MAX_JOB_FILE_BYTES:
        raise InputError(f"larger than {MAX_JOB_FILE_BYTES} bytes; a job file holds a kind and its parameters",
                         file=job_file)
    try:
        raw = json.loads(job_file.read_bytes().decode("utf-8-sig"))
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", file=job_file) from None
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}", file=job_file) from None
    except RecursionError:
        raise InputError("not valid JSON: nested too deeply", file=job_file) from None
    if not isinstance(raw, dict):
        raise InputError("expected a JSON object", file=job_file)
    version = raw.get("format_version", JOB_FORMAT_VERSION)
    if version != JOB_FORMAT_VERSION or isinstance(version, bool):
        raise InputError(f"unsupported format version {quoted(version)}, expected {JOB_FORMAT_VERSION}", file=job_file, field="format_version")
    kind = raw.get("kind")
    if not isinstance(kind, str) or kind not in JOB_PARAM_TYPES:
        raise InputError(f"unknown job kind {quoted(kind)}; known kinds: {', '.join(sorted(JOB_PARAM_TYPES))}", file=job_file, field="kind")
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise InputError("expected an object of parameter names to values", file=job_file, field="params")
    spec = JobSpec(kind=kind, params=params, format_version=version)
    _check_params(spec, job_file)
    return spec


def _check_params(spec: JobSpec, job_file: Path) -> None:
    if spec.kind not in JOB_PARAM_TYPES:
        raise InputError(f"unknown job kind {quoted(spec.kind)}; known kinds: {', '.join(sorted(JOB_PARAM_TYPES))}", file=job_file, field="kind")
    config_type = JOB_PARAM_TYPES[spec.kind]()
    known = {f.name: f for f in dataclasses.fields(config_type)}
    for name, value in spec.params.items():
        if name not in known:
            raise InputError(f"unknown parameter; known: {', '.join(sorted(known))}", file=job_file,
                             field=f"params.{shorten(name)}")
    try:
        config_type(**spec.params)
    except InputError as exc:
        raise InputError(exc.problem, file=job_file, field=f"params.{exc.field}" if exc.field else "params") from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise InputError(shorten(str(exc)), file=job_file, field="params") from None


def validate_job(job_dir: str | Path, *, model_roots: Sequence[str | Path] | None = None) -> JobSpec:
    """Everything that can be checked before work starts, from job.json and the headers of the files
    in data/ (no pixels are decoded, no mesh is parsed).

    model_roots: the folders a ``model`` given as a folder must lie in (None: anywhere).
    """
    job_dir = Path(job_dir)
    spec = read_job_spec(job_dir)
    data_dir = job_dir / DATA_DIR
    if spec.kind in KINDS_WITH_INPUTS and not data_dir.is_dir():
        raise InputError("missing data folder", file=data_dir)
    if spec.kind == "gaussians":
        from .data.transforms import check_nerf_dataset

        config = _gaussian_config_type()(**spec.params)
        check_nerf_dataset(data_dir, downscale=config.downscale, background=config.background)
    elif spec.kind == "texture":
        _validate_texture_job(job_dir, spec, model_roots)
    elif spec.kind == "text3d":
        _validate_text3d_job(job_dir, spec, model_roots)
    return spec


def _as_job_parameter(exc: InputError, job_dir: Path) -> InputError:
    """A problem with a job parameter (prompt, model) named as job.json names it; other problems as they are."""
    if exc.file is None and exc.field in ("prompt", "model"):
        return InputError(exc.problem, file=job_dir / JOB_FILE, field=f"params.{exc.field}")
    return exc


def _validate_text3d_job(job_dir: Path, spec: JobSpec, model_roots) -> None:
    """The prompt is not empty and the model is on this machine, before any work (no data/ inputs needed)."""
    from .text3d import check_text3d_job

    try:
        check_text3d_job(_text3d_config_type()(**spec.params), model_roots=model_roots)
    except InputError as exc:
        raise _as_job_parameter(exc, job_dir) from None


def _validate_texture_job(job_dir: Path, spec: JobSpec, model_roots) -> Path:
    """The prompt, the one mesh file in data/ (its size) and the model's presence, before any work."""
    from .texture import check_texture_job

    config = _texture_config_type()(**spec.params)
    try:
        return check_texture_job(job_dir / DATA_DIR, config, model_roots=model_roots)
    except InputError as exc:
        raise _as_job_parameter(exc, job_dir) from None


def request_cancel(job_dir: str | Path) -> None:
    """Ask a running job to stop; it writes a checkpoint and ends with a 'cancelled' event."""
    (Path(job_dir) / CANCEL_FILE).touch()


def request_suspend(job_dir: str | Path) -> None:
    """Ask a running job to checkpoint and stop without ending: it writes a 'suspended' event, and
    the next run resumes it (what the service does to its running job when it shuts down)."""
    (Path(job_dir) / SUSPEND_FILE).touch()


def clear_stop_files(job_dir: str | Path) -> None:
    """Forget earlier cancel and suspend requests (before a new run starts)."""
    (Path(job_dir) / CANCEL_FILE).unlink(missing_ok=True)
    (Path(job_dir) / SUSPEND_FILE).unlink(missing_ok=True)


def cancel_requested(job_dir: str | Path) -> bool:
    return (Path(job_dir) / CANCEL_FILE).exists()


def stop_requested(job_dir: str | Path) -> str | None:
    """STOP_CANCELLED, STOP_SUSPENDED or None: what the job's ``should_stop`` answers (a cancel wins)."""
    if cancel_requested(job_dir):
        return STOP_CANCELLED
    if (Path(job_dir) / SUSPEND_FILE).exists():
        return STOP_SUSPENDED
    return None


def job_state(job_dir: str | Path) -> str:
    """queued | running | finished | failed | cancelled, from the events file.

    A suspended job (the service stopped it to resume later) is "running": like a run that was
    killed, it continues from its checkpoint at the next run.
    """
    state = "queued"
    for event in read_events(Path(job_dir) / EVENTS_FILE):
        kind = event.get("type")
        if kind in ("started", STOP_SUSPENDED):
            state = "running"
        elif kind == "queued":
            state = "queued"
        elif kind == "finished":
            state = "finished"
        elif kind == "error":
            state = "failed"
        elif kind == "cancelled":
            state = "cancelled"
    return state


def checkpoint_file(job_dir: str | Path, kind: str) -> Path:
    """Where a job of ``kind`` keeps its checkpoint."""
    if kind == "gaussians":
        from .gaussians.train import CHECKPOINT_FILE
    elif kind == "texture":
        from .texture.run import CHECKPOINT_FILE
    else:
        from .text3d.run import CHECKPOINT_FILE
    return Path(job_dir) / CHECKPOINT_DIR / CHECKPOINT_FILE


def checkpoint_info(job_dir: str | Path, kind: str) -> dict | None:
    """{"step", "total", "time"} of the job's checkpoint, or None when it has none."""
    from .checkpoints import read_checkpoint_info

    return read_checkpoint_info(checkpoint_file(job_dir, kind))


def describe_checkpoint(info: dict | None) -> str:
    """"its checkpoint holds step 120 of 500", or "it has no checkpoint"."""
    if info is None:
        return "it has no checkpoint (it would start again from step 0)"
    total = f" of {info['total']}" if isinstance(info.get("total"), int) else ""
    return f"its checkpoint holds step {info['step']}{total}"


def run_job(job_dir: str | Path, *, echo: bool = False, device: str | None = None,
            model_roots: Sequence[str | Path] | None = None, clear_stop_requests: bool = True) -> dict[str, Any]:
    """Run (or resume) the job in ``job_dir``. Returns {"state": ..., "result": ..., "error": ...}.

    state: finished | failed | cancelled | suspended (stopped by a SUSPEND request; run again to continue).
    model_roots: the folders a ``model`` given as a folder must lie in (None: anywhere).
    clear_stop_requests: remove old CANCEL / SUSPEND files first (the user started the run on
        purpose). The service's workers pass False: the service cleared them before it started the
        worker, and one that appears now is a request made since, which must not be lost.
    """
    job_dir = Path(job_dir)
    events = EventLog(job_dir / EVENTS_FILE, echo=echo)
    if clear_stop_requests:
        clear_stop_files(job_dir)
    try:
        spec = validate_job(job_dir, model_roots=model_roots)
    except InputError as exc:
        events.emit("error", message=str(exc), file=exc.file, field=exc.field, stage="validation")
        return {"state": "failed", "error": str(exc)}
    finished = _finished_result(job_dir)
    if finished is not None:  # running a finished job again is a no-op, never a silent retrain
        return {"state": "finished", "result": finished}
    resume = checkpoint_file(job_dir, spec.kind).is_file()
    events.emit("started", kind=spec.kind, resumed=resume)
    runner = _RUNNERS[spec.kind]
    try:
        result = runner(job_dir, spec, events, resume, device)
    except JobCancelled as stopped:
        return {"state": stopped.reason}
    except RadiantForgeError as exc:
        return _failed(job_dir, spec.kind, events, str(exc))
    except Exception as exc:  # a bug or an out-of-memory: report it, keep the caller alive
        # The traceback is for whoever runs the job (the terminal, the service's worker log), not
        # for the events: those reach clients of the service.
        traceback.print_exc(file=sys.stderr)
        return _failed(job_dir, spec.kind, events, f"{type(exc).__name__}: {shorten(str(exc), 300)}")
    events.emit("finished", result=result)
    return {"state": "finished", "result": result}


def _failed(job_dir: Path, kind: str, events: EventLog, message: str) -> dict:
    info = checkpoint_info(job_dir, kind)
    events.emit("error", message=message, checkpoint_step=None if info is None else info["step"],
                resumable=info is not None, resume_hint=describe_checkpoint(info))
    return {"state": "failed", "error": message}


def _finished_result(job_dir: Path) -> dict | None:
    """The result.json of a job that already finished, else None."""
    result_file = job_dir / RESULT_DIR / "result.json"
    if job_state(job_dir) == "finished" and result_file.is_file():
        return json.loads(result_file.read_text(encoding="utf-8"))
    return None


def _should_stop(job_dir: Path) -> Callable[[], str | None]:
    return lambda: stop_requested(job_dir)


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
        should_stop=_should_stop(job_dir),
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
        should_stop=_should_stop(job_dir),
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
        should_stop=_should_stop(job_dir),
    )
    return json.loads((Path(outcome.out_dir) / "result.json").read_text(encoding="utf-8"))


# kind -> the function that runs a validated job of that kind
_RUNNERS: dict[str, Callable[[Path, JobSpec, EventLog, bool, str | None], dict]] = {
    "gaussians": _run_gaussians, "texture": _run_texture, "text3d": _run_text3d,
}

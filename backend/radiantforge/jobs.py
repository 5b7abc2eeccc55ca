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
import functools
import json
import sys
import traceback
from pathlib import Path
from typing import Any, Callable, Sequence

from .errors import STOP_CANCELLED, STOP_SUSPENDED, InputError, JobCancelled, RadiantForgeError, quoted, shorten
from .events import EventLog, read_events
from .result_folders import RESULT_FILE

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
    """A job.json as read: ``params`` as written there; ``config`` the job's config built from them
    (with any overrides the caller gave, e.g. the device), once, by :func:`read_job_spec`."""

    kind: str
    params: dict[str, Any]
    format_version: int = JOB_FORMAT_VERSION
    config: Any = dataclasses.field(default=None, repr=False, compare=False)


@dataclasses.dataclass(frozen=True)
class JobKind:
    """What the job folder code needs of one kind of job; adding a kind is one entry in JOB_KINDS.

    config_type: the dataclass its params must fit (built once per run, checked in __post_init__).
    reads_data: whether it needs inputs in data/.
    check: (job_dir, config, model_roots) -> None: what can be checked before work starts, from
        the headers of the files in data/ (never their pixels or geometry); raises InputError.
    run: (JobRun) -> Path: runs (or resumes) the job, returns its result folder.
    checkpoint_file: the checkpoint's name in checkpoints/.
    aliases: old parameter name -> its name now, accepted in job.json for a release.
    """

    config_type: type
    reads_data: bool
    check: Callable[[Path, Any, Sequence[str | Path] | None], None]
    run: Callable[["JobRun"], Path]
    checkpoint_file: str
    aliases: dict[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass
class JobRun:
    """A validated job about to run: its folder, its config (built once), where its events go."""

    job_dir: Path
    config: Any
    events: EventLog
    resume: bool

    @property
    def data_dir(self) -> Path:
        return self.job_dir / DATA_DIR

    @property
    def result_dir(self) -> Path:
        return self.job_dir / RESULT_DIR

    @property
    def checkpoint_dir(self) -> Path:
        return self.job_dir / CHECKPOINT_DIR

    def should_stop(self) -> str | None:
        return stop_requested(self.job_dir)


def _gaussian_kind() -> JobKind:
    from .data.transforms import check_nerf_dataset
    from .gaussians.config import GaussianTrainConfig
    from .gaussians.train import CHECKPOINT_FILE, train_gaussians

    def check(job_dir: Path, config, model_roots) -> None:
        check_nerf_dataset(job_dir / DATA_DIR, downscale=config.downscale, background=config.background)

    def run(job: JobRun) -> Path:
        return train_gaussians(job.data_dir, job.result_dir, config=job.config, checkpoint_dir=job.checkpoint_dir,
                               resume=job.resume, events=job.events, should_stop=job.should_stop,
                               preview_dir=job.result_dir).out_dir  # the preview inside result/: a service serves it

    return JobKind(GaussianTrainConfig, True, check, run, CHECKPOINT_FILE, aliases={"iters": "steps"})


def _texture_kind() -> JobKind:
    from .texture import check_texture_job, find_job_mesh, texture_mesh
    from .texture.config import TextureConfig
    from .texture.run import CHECKPOINT_FILE

    def check(job_dir: Path, config, model_roots) -> None:
        check_texture_job(job_dir / DATA_DIR, config, model_roots=model_roots)

    def run(job: JobRun) -> Path:
        return texture_mesh(find_job_mesh(job.data_dir), job.result_dir, prompt=job.config.prompt, config=job.config,
                            checkpoint_dir=job.checkpoint_dir, resume=job.resume, events=job.events,
                            should_stop=job.should_stop).out_dir

    return JobKind(TextureConfig, True, check, run, CHECKPOINT_FILE)


def _text3d_kind() -> JobKind:
    from .text3d import check_text3d_job, generate_3d
    from .text3d.config import Text3DConfig
    from .text3d.run import CHECKPOINT_FILE

    def check(job_dir: Path, config, model_roots) -> None:
        check_text3d_job(config, model_roots=model_roots)  # no data/ inputs: the prompt and the model

    def run(job: JobRun) -> Path:
        return generate_3d(job.config.prompt, job.result_dir, config=job.config, checkpoint_dir=job.checkpoint_dir,
                           resume=job.resume, events=job.events, should_stop=job.should_stop).out_dir

    return JobKind(Text3DConfig, False, check, run, CHECKPOINT_FILE)


# kind name -> its JobKind, built on first use (each imports its job's modules, and with them torch).
JOB_KINDS: dict[str, Callable[[], JobKind]] = {"gaussians": _gaussian_kind, "texture": _texture_kind,
                                                "text3d": _text3d_kind}


@functools.cache
def job_kind(name: str) -> JobKind:
    """The registered kind ``name`` (call only with a name in JOB_KINDS)."""
    return JOB_KINDS[name]()


def write_job(job_dir: str | Path, kind: str, params: dict[str, Any] | None = None) -> Path:
    """Create ``job_dir/job.json`` (the data folder is the caller's to fill). Refuses to overwrite."""
    job_dir = Path(job_dir)
    job_file = job_dir / JOB_FILE
    if job_file.exists():
        raise InputError("a job already exists here; choose a new folder", file=job_file)
    _check_kind(kind, job_file)
    params = dict(params or {})
    _build_config(kind, params, job_file)
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / DATA_DIR).mkdir(exist_ok=True)
    document = {"format_version": JOB_FORMAT_VERSION, "kind": kind, "params": params}
    job_file.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    return job_dir


def read_job_spec(job_dir: str | Path, overrides: dict[str, Any] | None = None) -> JobSpec:
    """Read and check ``job.json``: kind known, format version supported, params well-formed; the
    spec's config is built from the params with ``overrides`` (e.g. {"device": "cpu"}) applied."""
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
    _check_kind(kind, job_file)
    params = raw.get("params", {})
    if not isinstance(params, dict):
        raise InputError("expected an object of parameter names to values", file=job_file, field="params")
    config = _build_config(kind, params, job_file, overrides)
    return JobSpec(kind=kind, params=params, format_version=version, config=config)


def _check_kind(kind, job_file: Path) -> None:
    if not isinstance(kind, str) or kind not in JOB_KINDS:
        raise InputError(f"unknown job kind {quoted(kind)}; known kinds: {', '.join(sorted(JOB_KINDS))}",
                         file=job_file, field="kind")


def _build_config(kind: str, params: dict[str, Any], job_file: Path, overrides: dict[str, Any] | None = None):
    """The kind's config from job.json's params (old names accepted as aliases), with ``overrides``;
    a problem is named as the job file names it (``params.<name as written>``)."""
    job = job_kind(kind)
    known = {f.name for f in dataclasses.fields(job.config_type)}
    fields: dict[str, Any] = {}
    written_as: dict[str, str] = {}
    for name, value in params.items():
        canonical = job.aliases.get(name, name)
        if canonical not in known:
            raise InputError(f"unknown parameter; known: {', '.join(sorted(known))}", file=job_file,
                             field=f"params.{shorten(name)}")
        if canonical in fields:
            raise InputError(f"given twice, as {written_as[canonical]} and as {name}", file=job_file,
                             field=f"params.{name}")
        fields[canonical], written_as[canonical] = value, name
    try:
        return job.config_type(**{**fields, **(overrides or {})})
    except InputError as exc:
        field = f"params.{written_as.get(exc.field, exc.field)}" if exc.field else "params"
        raise InputError(exc.problem, file=job_file, field=field) from None
    except (TypeError, ValueError, RecursionError) as exc:
        raise InputError(shorten(str(exc)), file=job_file, field="params") from None


def validate_job(job_dir: str | Path, *, model_roots: Sequence[str | Path] | None = None,
                 overrides: dict[str, Any] | None = None) -> JobSpec:
    """Everything that can be checked before work starts, from job.json and the headers of the files
    in data/ (no pixels are decoded, no mesh is parsed). Returns the spec with its config built.

    model_roots: the folders a ``model`` given as a folder must lie in (None: anywhere).
    overrides: config fields the caller sets over job.json's (the device of this run).
    """
    job_dir = Path(job_dir)
    spec = read_job_spec(job_dir, overrides)
    job = job_kind(spec.kind)
    data_dir = job_dir / DATA_DIR
    if job.reads_data and not data_dir.is_dir():
        raise InputError("missing data folder", file=data_dir)
    try:
        job.check(job_dir, spec.config, model_roots)
    except InputError as exc:
        if exc.file is None and exc.field in ("prompt", "model"):  # a job parameter: named as job.json names it
            raise InputError(exc.problem, file=job_dir / JOB_FILE, field=f"params.{exc.field}") from None
        raise
    return spec


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
    return Path(job_dir) / CHECKPOINT_DIR / job_kind(kind).checkpoint_file


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
        spec = validate_job(job_dir, model_roots=model_roots, overrides={"device": device} if device else None)
    except InputError as exc:
        events.emit("error", message=str(exc), file=exc.file, field=exc.field, stage="validation")
        return {"state": "failed", "error": str(exc)}
    finished = _finished_result(job_dir)
    if finished is not None:  # running a finished job again is a no-op, never a silent retrain
        return {"state": "finished", "result": finished}
    resume = checkpoint_file(job_dir, spec.kind).is_file()
    events.emit("started", kind=spec.kind, resumed=resume)
    try:
        out_dir = job_kind(spec.kind).run(JobRun(job_dir, spec.config, events, resume))
        result = json.loads((out_dir / RESULT_FILE).read_text(encoding="utf-8"))
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
    result_file = job_dir / RESULT_DIR / RESULT_FILE
    if job_state(job_dir) == "finished" and result_file.is_file():
        return json.loads(result_file.read_text(encoding="utf-8"))
    return None

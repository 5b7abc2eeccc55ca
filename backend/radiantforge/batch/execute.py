"""Running one batch entry, the same way on this machine and inside a Ray worker.

An entry's files under the batch's output folder (the layout of today's prompt batches)::

    OUT/<folder>/                  its result (result.json when finished; written whole, then renamed)
    OUT/<folder>.checkpoints/      its checkpoints (a re-run resumes from them)
    OUT/<folder>.events.jsonl      its events

Guidance models are loaded once per process and kept for the next entries that use them
(:class:`ModelCache`): a batch of 100 prompts loads Stable Diffusion once per worker, not 100 times.
"""

from __future__ import annotations

import dataclasses
import json
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError, JobCancelled, RadiantForgeError, shorten
from ..events import EventLog
from ..result_folders import RESULT_FILE
from .entries import GUIDED_KINDS, BatchItem

# What each entry's "status" can be in the summary.
STATUSES = ("generated", "resumed", "skipped", "failed", "cancelled", "pending")

# (model, device) -> loaded guidance: what a guided entry asks the cache for.
GuidanceLoader = Callable[[str, Any], Any]


@dataclasses.dataclass
class EntryOutcome:
    """What became of one entry: status is one of STATUSES; attempts counts the runs Ray made of it."""

    folder: str
    kind: str
    label: str
    status: str = "pending"
    steps: int | None = None
    seconds: float | None = None
    error: str | None = None
    worker: str | None = None
    attempts: int = 0


def default_guidance_loader(model: str, device) -> Any:
    from ..guidance import load_stable_diffusion

    return load_stable_diffusion(model, device=device)


class ModelCache:
    """Guidance models of this process by (model, device), each loaded on first use and then reused."""

    def __init__(self, loader: GuidanceLoader | None = None):
        self.loader = loader or default_guidance_loader
        self.models: dict[tuple[str, str], Any] = {}
        self.loads = 0

    def get(self, model: str, device) -> Any:
        key = (str(model), str(device))
        if key not in self.models:
            self.models[key] = self.loader(model, device)
            self.loads += 1
        return self.models[key]

    def holds(self, model: str | None) -> bool:
        return model is not None and any(name == str(model) for name, _ in self.models)


def entry_paths(out_dir: Path, item: BatchItem) -> tuple[Path, Path, Path]:
    """(result folder, checkpoint folder, events file) of ``item`` under ``out_dir``."""
    return out_dir / item.folder, out_dir / f"{item.folder}.checkpoints", out_dir / f"{item.folder}.events.jsonl"


def finished_result(out_dir: Path, item: BatchItem) -> dict | None:
    """The result.json an earlier run left for ``item``, or None (none, unreadable, another kind or prompt)."""
    try:
        result = json.loads((out_dir / item.folder / RESULT_FILE).read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return None
    if not isinstance(result, dict) or result.get("kind") != item.kind:
        return None
    if item.prompt is not None and result.get("prompt", item.prompt) != item.prompt:
        return None
    return result


def result_figures(result: dict) -> tuple[int | None, float | None]:
    """(steps, training seconds) from a result.json's metrics."""
    metrics = result.get("metrics", {}) if isinstance(result.get("metrics"), dict) else {}
    return metrics.get("steps", result.get("steps")), metrics.get("train_seconds")


def has_checkpoint(checkpoint_dir: Path, kind: str) -> bool:
    from ..jobs import job_kind

    return (checkpoint_dir / job_kind(kind).checkpoint_file).is_file()


def run_entry(item: BatchItem, out_dir: Path, events: EventLog, models: ModelCache, *,
              should_stop: Callable[[], bool | str | None] | None = None,
              overrides: dict[str, Any] | None = None) -> EntryOutcome:
    """Run (or resume, from its checkpoint) one entry into ``out_dir/<folder>``; never raises for the entry's
    own failure (the outcome says it, and its events hold an error event) but re-raises JobCancelled.

    overrides: config fields this run sets over the entry's parameters (the device).
    """
    outcome = EntryOutcome(item.folder, item.kind, item.label)
    result_dir, checkpoint_dir, _ = entry_paths(out_dir, item)
    resume = has_checkpoint(checkpoint_dir, item.kind)
    events.emit("started", kind=item.kind, resumed=resume, label=item.label)
    started = time.perf_counter()
    try:
        config = item.config(overrides)
        result = _run(item, config, result_dir, checkpoint_dir, resume, events, should_stop, models)
    except JobCancelled:
        outcome.status = "cancelled"
        raise
    except Exception as exc:  # one entry's failure (bad mesh, NaN, out of memory ...) must not end the batch
        outcome.status = "failed"
        outcome.error = str(exc) if isinstance(exc, RadiantForgeError) else f"{type(exc).__name__}: {shorten(str(exc), 300)}"
        events.emit("error", message=outcome.error)
        return outcome
    outcome.status = "resumed" if resume else "generated"
    outcome.steps, outcome.seconds = result.metrics.get("steps"), result.metrics.get("train_seconds")
    if outcome.seconds is None:
        outcome.seconds = round(time.perf_counter() - started, 3)
    events.emit("finished", result={"out_dir": str(result_dir)})
    return outcome


def _run(item: BatchItem, config, result_dir: Path, checkpoint_dir: Path, resume: bool, events: EventLog,
         should_stop, models: ModelCache):
    common = dict(config=config, checkpoint_dir=checkpoint_dir, resume=resume, events=events, should_stop=should_stop)
    if item.kind in GUIDED_KINDS:
        from ..devices import resolve_device

        guidance = models.get(config.model, resolve_device(config.device))
        if item.kind == "text3d":
            from ..text3d import generate_3d

            return generate_3d(config.prompt, result_dir, guidance=guidance, **common)
        from ..texture import texture_mesh

        return texture_mesh(item.inputs["mesh"], result_dir, prompt=config.prompt, guidance=guidance, **common)
    if item.kind == "gaussians":
        from ..gaussians.train import train_gaussians

        return train_gaussians(item.inputs["data"], result_dir, preview_dir=result_dir, **common)
    raise InputError(f"unknown job kind {item.kind!r}", file=item.where, field="kind")

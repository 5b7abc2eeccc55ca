"""Batch generation: one text-to-3D result folder per prompt of a text file, resumable, with a summary table.

Prompts file: one prompt per line; blank lines and lines starting with ``#`` are ignored; a
prompt given twice is generated once. Layout of the output folder::

    OUT/
      a_red_teapot_1f3a9c2e/                  the result folder of "a red teapot" (result.json when finished)
      a_red_teapot_1f3a9c2e.checkpoints/      its checkpoints
      a_red_teapot_1f3a9c2e.events.jsonl      its events
      summary.json, summary.md                the table of every prompt's outcome

Folder names are the prompt's words plus a hash of the whole prompt, so they do not depend on
the prompt's line: editing or reordering the file keeps finished work. Running the same command
again skips finished prompts, resumes interrupted ones from their checkpoints and starts the rest.
Stable Diffusion is loaded once for the whole batch. A prompt that fails is reported in the table
and the batch goes on; a cancel (``should_stop``) checkpoints the current prompt and stops.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from ..devices import resolve_device
from ..errors import InputError, JobCancelled
from ..events import EventLog, jsonable
from ..guidance import load_stable_diffusion
from .config import Text3DConfig
from .run import RESULT_FILE, checkpoint_path, generate_3d, resolve_config

SUMMARY_JSON = "summary.json"
SUMMARY_TABLE = "summary.md"
COMMENT_PREFIX = "#"
# Characters of the prompt's words kept in a folder name, and hex digits of its hash.
FOLDER_WORD_CHARS = 40
FOLDER_HASH_CHARS = 8
# What each prompt's "status" can be in the summary.
STATUSES = ("generated", "resumed", "skipped", "failed", "cancelled", "pending")


@dataclass
class BatchEntry:
    """One prompt's outcome: status is one of STATUSES ("skipped": finished by an earlier run)."""

    prompt: str
    folder: str
    status: str = "pending"
    steps: int | None = None
    seconds: float | None = None
    n_faces: int | None = None
    error: str | None = None


@dataclass
class BatchResult:
    """entries: one per prompt, in file order; table: the summary as a Markdown table."""

    out_dir: Path
    entries: list[BatchEntry]
    table: str
    summary_path: Path
    elapsed: float = 0.0
    counts: dict[str, int] = field(default_factory=dict)


def read_prompts(prompts_file: str | os.PathLike) -> list[str]:
    """The prompts of a text file, in order, without blanks, comments and repeats."""
    path = Path(prompts_file)
    if not path.is_file():
        raise InputError("no such prompts file (expected a text file with one prompt per line)", file=path)
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise InputError(f"cannot be read as UTF-8 text: {exc}", file=path) from None
    prompts = []
    for line in text.splitlines():
        prompt = " ".join(line.split())
        if prompt and not prompt.startswith(COMMENT_PREFIX) and prompt not in prompts:
            prompts.append(prompt)
    if not prompts:
        raise InputError("holds no prompts (one per line; lines starting with # are comments)", file=path)
    return prompts


def prompt_folder_name(prompt: str) -> str:
    """A file-system-safe, order-independent folder name: the prompt's words and a hash of the prompt."""
    words = re.sub(r"[^a-z0-9]+", "_", prompt.lower()).strip("_")[:FOLDER_WORD_CHARS].rstrip("_") or "prompt"
    return f"{words}_{hashlib.sha1(prompt.encode('utf-8')).hexdigest()[:FOLDER_HASH_CHARS]}"


def _finished_entry(entry: BatchEntry, result_file: Path) -> bool:
    """Fill ``entry`` from an earlier run's result.json; False when it belongs to another prompt."""
    try:
        result = json.loads(result_file.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return False
    if result.get("prompt") != entry.prompt:
        return False
    metrics = result.get("metrics", {})
    entry.steps, entry.seconds, entry.n_faces = metrics.get("steps"), metrics.get("train_seconds"), metrics.get("n_faces")
    return True


def summary_table(entries: list[BatchEntry]) -> str:
    """A Markdown table: #, prompt, status, steps, minutes, faces, folder (and the error of failures)."""
    lines = ["| # | prompt | status | steps | minutes | faces | folder |", "|---|---|---|---|---|---|---|"]
    for index, entry in enumerate(entries, start=1):
        minutes = f"{entry.seconds / 60:.1f}" if entry.seconds is not None else ""
        status = entry.status + (f": {entry.error}" if entry.error else "")
        cells = [str(index), entry.prompt.replace("|", "\\|"), status.replace("|", "\\|"),
                 "" if entry.steps is None else str(entry.steps), minutes,
                 "" if entry.n_faces is None else f"{entry.n_faces:,}", entry.folder]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _write_summary(out_dir: Path, prompts_file: Path, entries: list[BatchEntry], elapsed: float) -> tuple[Path, str]:
    table = summary_table(entries)
    counts = {status: sum(e.status == status for e in entries) for status in STATUSES}
    payload = {"prompts_file": str(prompts_file), "elapsed_seconds": round(elapsed, 3), "counts": counts,
               "entries": [dataclasses.asdict(e) for e in entries]}
    for name, content in ((SUMMARY_JSON, json.dumps(jsonable(payload), indent=2) + "\n"), (SUMMARY_TABLE, table)):
        temporary = out_dir / f".{name}.{os.getpid()}.tmp"
        temporary.write_text(content, encoding="utf-8")
        os.replace(temporary, out_dir / name)
    return out_dir / SUMMARY_JSON, table


def batch_generate(
    prompts_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    config: Text3DConfig | None = None,
    guidance=None,
    events: EventLog | None = None,
    should_stop: Callable[[], bool] | None = None,
    **overrides,
) -> BatchResult:
    """Generate every prompt of ``prompts_file`` into its own folder under ``out_dir`` (see the module docstring).

    config / overrides: the settings every prompt shares (its prompt field is replaced per prompt).
    guidance: None loads ``config.model`` once for all prompts; or a loaded guidance model or a
        :class:`~radiantforge.text3d.Text3DOracle`, used for every prompt.
    events: batch-level info events; each prompt's own events go to ``<folder>.events.jsonl`` (echoed
        to the terminal when ``events.echo`` is set).
    should_stop: polled every step; when it turns true the current prompt is checkpointed, the
        summary written and :class:`~radiantforge.errors.JobCancelled` raised.
    """
    prompts_file = Path(prompts_file)
    prompts = read_prompts(prompts_file)
    base = resolve_config(config, prompts[0], overrides)  # every other setting is checked once, up front
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("exists and is not a folder; choose another output folder", file=out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    events = events if events is not None else EventLog(None)
    entries = [BatchEntry(prompt, prompt_folder_name(prompt)) for prompt in prompts]
    started = time.perf_counter()

    pending = []
    for entry in entries:
        result_file = out_dir / entry.folder / RESULT_FILE
        if result_file.is_file() and _finished_entry(entry, result_file):
            entry.status = "skipped"
        else:
            pending.append(entry)
    events.emit("info", message=f"{len(entries)} prompts: {len(entries) - len(pending)} already finished, "
                                f"{len(pending)} to generate", total=len(entries))
    if pending and guidance is None:
        guidance = load_stable_diffusion(base.model, device=resolve_device(base.device))  # once for the whole batch

    for number, entry in enumerate(pending, start=1):
        folder = out_dir / entry.folder
        checkpoints = out_dir / f"{entry.folder}.checkpoints"
        resume = checkpoint_path(checkpoints).is_file()
        events.emit("info", message=f"[{number}/{len(pending)}] {'resuming' if resume else 'generating'} "
                                    f"{entry.prompt!r} in {folder}", prompt=entry.prompt, folder=str(folder))
        prompt_events = EventLog(out_dir / f"{entry.folder}.events.jsonl", echo=events.echo)
        prompt_events.emit("started", kind="text3d", resumed=resume, prompt=entry.prompt)
        try:
            result = generate_3d(entry.prompt, folder, config=base, guidance=guidance, checkpoint_dir=checkpoints,
                                 resume=resume, events=prompt_events, should_stop=should_stop)
        except JobCancelled:
            entry.status = "cancelled"
            _write_summary(out_dir, prompts_file, entries, time.perf_counter() - started)
            raise
        except Exception as exc:  # one prompt's failure (bad checkpoint, NaN, no surface ...) must not end the batch
            entry.status = "failed"
            entry.error = str(exc) if isinstance(exc, InputError) else f"{type(exc).__name__}: {exc}"
            prompt_events.emit("error", message=entry.error, traceback=traceback.format_exc())
            events.emit("warning", message=f"{entry.prompt!r} failed: {entry.error}", prompt=entry.prompt)
            continue
        entry.status = "resumed" if resume else "generated"
        entry.steps, entry.seconds = result.metrics["steps"], result.metrics["train_seconds"]
        entry.n_faces = result.metrics["n_faces"]
        prompt_events.emit("finished", result={"out_dir": str(folder)})

    elapsed = time.perf_counter() - started
    summary_path, table = _write_summary(out_dir, prompts_file, entries, elapsed)
    counts = {status: sum(e.status == status for e in entries) for status in STATUSES}
    events.emit("info", message="batch finished: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n),
                counts=counts)
    return BatchResult(out_dir, entries, table, summary_path, elapsed, counts)

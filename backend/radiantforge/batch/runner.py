"""Run a batch: on this machine one entry after another (the default), or on a Ray cluster when asked.

Both paths share the entry format (:mod:`.entries`), the per-entry run (:mod:`.execute`) and the
summary written here (``summary.json`` and ``summary.md`` in the output folder). Finished entries
are skipped, interrupted ones resumed from their checkpoints; an entry that fails is reported once
and the batch goes on; a stop request (``should_stop``, Ctrl+C on the command line) checkpoints
the running entries, writes the summary and raises :class:`~radiantforge.errors.JobCancelled`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from pathlib import Path
from typing import Any, Callable

from ..errors import InputError, JobCancelled
from ..events import EventLog, jsonable
from .entries import BatchItem, read_batch
from .execute import STATUSES, EntryOutcome, GuidanceLoader, ModelCache, entry_paths, finished_result, result_figures, run_entry

SUMMARY_JSON = "summary.json"
SUMMARY_TABLE = "summary.md"
# Retries of an entry whose Ray worker died (a crash, a lost node, an out-of-memory kill).
DEFAULT_MAX_RETRIES = 2


@dataclasses.dataclass
class BatchReport:
    """outcomes: one per entry, in file order; table: the summary as Markdown; backend: "local" or "ray"."""

    out_dir: Path
    outcomes: list[EntryOutcome]
    table: str
    summary_path: Path
    elapsed: float
    counts: dict[str, int]
    backend: str = "local"
    model_loads: int | None = None  # guidance loads of the local path (None on Ray: each worker counts its own)


def run_batch(
    batch_file: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    ray: str | None = None,
    workers: int | None = None,
    shared_disk: bool = True,
    events: EventLog | None = None,
    should_stop: Callable[[], bool | str | None] | None = None,
    load_guidance: GuidanceLoader | None = None,
    overrides: dict[str, Any] | None = None,
    text_params: dict[str, Any] | None = None,
    max_retries: int = DEFAULT_MAX_RETRIES,
    cpus_per_entry: int = 1,
) -> BatchReport:
    """Run every entry of ``batch_file`` into its own folder under ``out_dir``.

    ray: None runs here, one entry after another, without importing Ray; "auto" joins the Ray
        cluster of this machine (or starts one), any other value is a cluster address ("host:6379").
    workers: Ray worker processes (default: one per GPU of the cluster, else one per ``cpus_per_entry`` CPUs).
    shared_disk: the workers write results into ``out_dir`` themselves; False: they write on their own
        node and send the result back through Ray's object store, and this process writes it.
    events: batch-level events (a line per finished entry); each entry's own go to ``<folder>.events.jsonl``.
    load_guidance: (model, device) -> guidance model, called once per model and process (default:
        Stable Diffusion from a folder or the Hugging Face cache; tests bring the oracle).
    overrides: config fields set over every entry's parameters, not part of its identity (the device).
    text_params: the parameters of every entry of a prompt-per-line text file.
    max_retries: how often an entry whose worker died is run again (from its checkpoint).
    """
    batch_file = Path(batch_file)
    items = read_batch(batch_file, text_params=text_params, check_models=load_guidance is None)
    for item in items:
        item.config(overrides)  # the overrides fit every entry, before any work starts
    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("exists and is not a folder; choose another output folder", file=out_dir)
    if max_retries < 0 or cpus_per_entry < 1 or (workers is not None and workers < 1):
        raise InputError("expected max_retries >= 0, cpus_per_entry >= 1 and workers >= 1", field="workers")
    out_dir.mkdir(parents=True, exist_ok=True)
    events = events if events is not None else EventLog(None)
    started = time.perf_counter()

    outcomes = {item.folder: EntryOutcome(item.folder, item.kind, item.label) for item in items}
    pending = []
    for item in items:
        result = finished_result(out_dir, item)
        if result is not None:
            outcome = outcomes[item.folder]
            outcome.status = "skipped"
            outcome.steps, outcome.seconds = result_figures(result)
        else:
            pending.append(item)
    where = "this machine" if ray is None else f"Ray ({ray})"
    events.emit("info", message=f"{len(items)} entries: {len(items) - len(pending)} already finished, "
                                f"{len(pending)} to run on {where}", total=len(items), pending=len(pending))

    model_loads = None
    try:
        if ray is None:
            model_loads = _run_here(pending, out_dir, outcomes, events, should_stop, load_guidance, overrides)
        elif pending:
            from .on_ray import run_on_ray

            run_on_ray(pending, out_dir, outcomes, address=ray, workers=workers, shared_disk=shared_disk,
                       events=events, should_stop=should_stop, load_guidance=load_guidance, overrides=overrides,
                       max_retries=max_retries, cpus_per_entry=cpus_per_entry)
    except JobCancelled:
        write_summary(out_dir, batch_file, [outcomes[i.folder] for i in items], time.perf_counter() - started)
        raise
    ordered = [outcomes[item.folder] for item in items]
    elapsed = time.perf_counter() - started
    summary_path, table = write_summary(out_dir, batch_file, ordered, elapsed)
    counts = count_statuses(ordered)
    events.emit("info", message="batch finished: " + ", ".join(f"{n} {s}" for s, n in counts.items() if n),
                counts=counts, elapsed=round(elapsed, 3))
    return BatchReport(out_dir, ordered, table, summary_path, elapsed, counts, "local" if ray is None else "ray",
                       model_loads)


def _run_here(pending: list[BatchItem], out_dir: Path, outcomes: dict[str, EntryOutcome], events: EventLog,
              should_stop, load_guidance, overrides) -> int:
    """One entry after another in this process; each guidance model loaded once. Returns the loads."""
    models = ModelCache(load_guidance)
    for number, item in enumerate(pending, start=1):
        result_dir, _, events_file = entry_paths(out_dir, item)
        events.emit("info", message=f"[{number}/{len(pending)}] {item.kind} {item.label!r} in {result_dir}",
                    entry=item.folder)
        try:
            outcome = run_entry(item, out_dir, EventLog(events_file, echo=events.echo), models,
                                should_stop=should_stop, overrides=overrides)
        except JobCancelled:
            outcomes[item.folder].status = "cancelled"
            raise
        outcome.attempts, outcome.worker = 1, "local"
        outcomes[item.folder] = outcome
        report_finished(events, outcome, number, len(pending))
    return models.loads


def report_finished(events: EventLog, outcome: EntryOutcome, done: int, total: int) -> None:
    """The line a finished (or failed) entry gets in the batch's events and on the terminal."""
    took = f" in {outcome.seconds:.1f} s" if outcome.seconds is not None else ""
    error = f": {outcome.error}" if outcome.error else ""
    kind = "warning" if outcome.status == "failed" else "info"
    events.emit(kind, message=f"[{done}/{total}] {outcome.status} {outcome.kind} {outcome.label!r}{took}{error}",
                entry=outcome.folder, status=outcome.status, steps=outcome.steps, attempts=outcome.attempts,
                worker=outcome.worker)


def count_statuses(outcomes: list[EntryOutcome]) -> dict[str, int]:
    return {status: sum(o.status == status for o in outcomes) for status in STATUSES}


def summary_table(outcomes: list[EntryOutcome]) -> str:
    """A Markdown table: #, kind, entry, status (with the error of failures), steps, minutes, runs, folder."""
    lines = ["| # | kind | entry | status | steps | minutes | runs | folder |", "|---|---|---|---|---|---|---|---|"]
    for index, o in enumerate(outcomes, start=1):
        minutes = f"{o.seconds / 60:.1f}" if o.seconds is not None else ""
        status = o.status + (f": {o.error}" if o.error else "")
        cells = [str(index), o.kind, o.label, status, "" if o.steps is None else str(o.steps), minutes,
                 str(o.attempts) if o.attempts else "", o.folder]
        lines.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(lines) + "\n"


def write_summary(out_dir: Path, batch_file: Path, outcomes: list[EntryOutcome], elapsed: float) -> tuple[Path, str]:
    """summary.json and summary.md, each written whole and renamed into place."""
    table = summary_table(outcomes)
    payload = {"batch_file": str(batch_file), "elapsed_seconds": round(elapsed, 3), "counts": count_statuses(outcomes),
               "entries": [dataclasses.asdict(o) for o in outcomes]}
    for name, content in ((SUMMARY_JSON, json.dumps(jsonable(payload), indent=2) + "\n"), (SUMMARY_TABLE, table)):
        temporary = out_dir / f".{name}.{os.getpid()}.tmp"
        temporary.write_text(content, encoding="utf-8")
        os.replace(temporary, out_dir / name)
    return out_dir / SUMMARY_JSON, table


class BatchProgress:
    """A one-line progress bar of the whole batch on stderr (entries done, and each running entry's step)."""

    WIDTH = 24

    def __init__(self, total: int, echo: bool):
        self.total, self.echo = total, echo
        self.done = 0
        self.running: dict[str, tuple[str, int, int]] = {}  # folder -> (label, step, steps)

    def update(self, folder: str, label: str, event: dict) -> None:
        if event.get("type") == "progress":
            self.running[folder] = (label, int(event.get("step", 0)), int(event.get("total", 0) or 0))
            self.draw()

    def finished(self, folder: str) -> None:
        self.running.pop(folder, None)
        self.done += 1
        self.draw()

    def draw(self) -> None:
        if not self.echo:
            return
        filled = int(self.WIDTH * self.done / max(self.total, 1))
        running = ", ".join(f"{label[:24]} {step}/{steps}" for label, step, steps in self.running.values())
        sys.stderr.write(f"\r[{'#' * filled}{'-' * (self.WIDTH - filled)}] {self.done}/{self.total} entries"
                         f"{'  running: ' + running if running else ''}\x1b[K")
        sys.stderr.flush()

"""The events file: the only progress channel of a job (one JSON object per line).

Event types: started, progress (step, total, loss, psnr, n_gaussians, elapsed, eta), preview,
warning, error, finished, cancelled. Every event carries ``type`` and ``time`` (unix seconds).
Readers (the service, the add-on) tail the file; a partial last line is ignored until complete.
"""

from __future__ import annotations

import json
import math
import os
import sys
import threading
import time
from pathlib import Path


def jsonable(value):
    """``value`` as JSON can hold it: numbers from tensors and arrays, paths as strings, NaN and infinity as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "item") and getattr(value, "ndim", 1) == 0:
        return jsonable(value.item())
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, dict):
        return {k: jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    return value


class EventLog:
    """Appends events to ``path`` (or nowhere when ``path`` is None) and optionally echoes progress.

    ``echo=True`` draws a one-line progress bar on stderr for terminal users.
    """

    def __init__(self, path: str | Path | None = None, echo: bool = False):
        self.path = Path(path) if path is not None else None
        self.echo = echo
        self._lock = threading.Lock()
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)

    def emit(self, type: str, **fields) -> dict:
        event = {"type": type, "time": round(time.time(), 3), **jsonable(fields)}
        if self.path is not None:
            line = json.dumps(event, allow_nan=False) + "\n"
            with self._lock, open(self.path, "a", encoding="utf-8") as f:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
        if self.echo:
            self._echo(event)
        return event

    def _echo(self, event: dict) -> None:
        kind = event["type"]
        if kind == "progress":
            step, total = event.get("step", 0), max(event.get("total", 1), 1)
            width = 30
            filled = int(width * step / total)
            bar = "#" * filled + "-" * (width - filled)
            extras = "  ".join(
                f"{k}={event[k]:.4g}" if isinstance(event[k], float) else f"{k}={event[k]}"
                for k in ("loss", "psnr", "n_gaussians", "eta")
                if event.get(k) is not None
            )
            end = "\n" if step >= total else ""
            sys.stderr.write(f"\r[{bar}] {step}/{total}  {extras}   {end}")
        elif kind in ("warning", "error"):
            sys.stderr.write(f"\n{kind}: {event.get('message', '')}\n")
        elif kind == "info" and event.get("message"):
            sys.stderr.write(f"\n{event['message']}\n")
        elif kind in ("started", "finished", "cancelled"):
            sys.stderr.write(f"\n{kind} {event.get('kind', '')}\n" if kind != "finished" else "\nfinished\n")
        sys.stderr.flush()


def read_events(path: str | Path, since: int = 0) -> list[dict]:
    """Events from line ``since`` on (0-based). A partial last line (being written) is skipped."""
    path = Path(path)
    if not path.exists():
        return []
    events = []
    with open(path, encoding="utf-8") as f:
        for index, line in enumerate(f):
            if index < since:
                continue
            if not line.endswith("\n"):
                break
            events.append(json.loads(line))
    return events

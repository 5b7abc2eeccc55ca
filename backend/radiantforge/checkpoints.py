"""Checkpoints of the three jobs (Gaussians, texture, text-to-3D), written and read the same way.

A checkpoint is written whole or not at all (a temporary file renamed over the old one), so a job
killed while saving still has its previous checkpoint. Reading one names the file and what is
wrong with it. A resumed run must keep every setting the optimisation depends on: the job lists
the settings it may change (its RESUMABLE_FIELDS) and any other difference is refused by name.

Checkpoints are loaded with ``torch.load(weights_only=True)``: they hold tensors, numbers, strings,
lists and dicts only (RNG states are tensors), so loading one never runs code, whoever made the
file. Beside each checkpoint a small ``<name>.json`` says which step it holds, so the service and
the events of a failed job can tell how far a resume goes without loading the checkpoint itself.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import torch

from .errors import InputError, quoted, shorten


def info_path(path: Path) -> Path:
    """The ``<checkpoint>.json`` beside a checkpoint (step, total, time)."""
    return path.with_name(path.name + ".json")


def write_checkpoint(path: Path, payload: dict, total: int | None = None) -> None:
    """``torch.save(payload)`` to ``path`` atomically (the folder is made when missing), then its info
    file: ``{"step": payload["step"], "total": total, "time": ...}``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    info = {"step": int(payload.get("step", 0)), "total": total, "time": round(time.time(), 3)}
    temporary_info = path.with_name(f".{path.name}.{os.getpid()}.json.tmp")
    try:
        temporary_info.write_text(json.dumps(info) + "\n", encoding="utf-8")
        os.replace(temporary_info, info_path(path))
    finally:
        temporary_info.unlink(missing_ok=True)


def read_checkpoint_info(path: Path) -> dict | None:
    """``{"step", "total", "time"}`` of the checkpoint at ``path``; None when there is none (or no readable info)."""
    if not path.is_file():
        return None
    try:
        info = json.loads(info_path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(info, dict) or not isinstance(info.get("step"), int):
        return None
    return info


def read_checkpoint(path: Path, *, kind: str, version: int) -> dict:
    """The payload of the ``kind`` checkpoint (e.g. "Gaussian training") of format ``version`` at ``path``.

    Loaded with ``weights_only=True``: plain data only, no code runs on load.
    """
    if not path.is_file():
        raise InputError("no checkpoint to resume from (run without resume first)", file=path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated, foreign or hostile file: say which and why, never run it
        raise InputError(f"cannot read the checkpoint ({type(exc).__name__}): {shorten(str(exc))}", file=path) from None
    if not isinstance(payload, dict) or payload.get("format") != version:
        raise InputError(f"not a {kind} checkpoint of format {version}", file=path)
    return payload


def _comparable(value):
    """Lists and tuples compare alike (a tuple setting comes back from a checkpoint as a list)."""
    return [_comparable(v) for v in value] if isinstance(value, (list, tuple)) else value


def check_same_config(saved_config: dict, config, resumable, path: Path) -> None:
    """Refuse to resume with a dataclass ``config`` that differs from ``saved_config`` outside ``resumable``."""
    for name, value in dataclasses.asdict(config).items():
        if name in resumable:
            continue
        saved = saved_config.get(name)
        if _comparable(saved) != _comparable(value):
            raise InputError(f"the checkpoint was made with {name}={quoted(saved)}; resume with the same value (got "
                             f"{quoted(value)}) or start again without resume", file=path, field=name)

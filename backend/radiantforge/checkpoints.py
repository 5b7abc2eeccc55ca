"""Checkpoints of the three jobs (Gaussians, texture, text-to-3D), written and read the same way.

A checkpoint is written whole or not at all (a temporary file renamed over the old one), so a job
killed while saving still has its previous checkpoint. Reading one names the file and what is
wrong with it. A resumed run must keep every setting the optimisation depends on: the job lists
the settings it may change (its RESUMABLE_FIELDS) and any other difference is refused by name.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import torch

from .errors import InputError


def write_checkpoint(path: Path, payload: dict) -> None:
    """``torch.save(payload)`` to ``path`` atomically (the folder is made when missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        torch.save(payload, temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)


def read_checkpoint(path: Path, *, kind: str, version: int, weights_only: bool = True) -> dict:
    """The payload of the ``kind`` checkpoint (e.g. "Gaussian training") of format ``version`` at ``path``.

    weights_only: load plain data only (no code runs on load); False where the payload holds other objects.
    """
    if not path.is_file():
        raise InputError("no checkpoint to resume from (run without resume first)", file=path)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=weights_only)
    except Exception as exc:  # a truncated or foreign file: say which and why
        raise InputError(f"cannot read the checkpoint: {exc}", file=path) from None
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
            raise InputError(f"the checkpoint was made with {name}={saved!r}; resume with the same value (got "
                             f"{value!r}) or start again without resume", file=path, field=name)

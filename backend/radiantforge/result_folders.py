"""The rules every job follows for its result folder (Gaussians, texture, text-to-3D).

A result is written complete into a hidden ``.<name>.partial-<pid>`` sibling and renamed into
place at the end, so the result name never holds half a result. While a job runs, its result
folder may hold only its live preview (``preview.png``), or a temporary preview a killed run left
half-written; anything else in it is the user's, and a new run refuses the folder rather than
touch it. A finished result (``result.json``) is only replaced when the caller says so.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from . import media
from .errors import InputError

PREVIEW_FILE = "preview.png"
RESULT_FILE = "result.json"


def write_preview(folder: Path, image) -> Path:
    """Write the live preview ``image`` ((H, W, 3) in [0, 1]) as ``folder/preview.png``: to a temporary
    name first, then renamed over the old one, so a viewer never reads half a PNG."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / PREVIEW_FILE
    temporary = folder / f".{PREVIEW_FILE}.{os.getpid()}.tmp.png"
    media.write_png(temporary, image)
    os.replace(temporary, path)
    return path


def is_preview_file(name: str) -> bool:
    """The live preview, or a temporary one (``.preview.png.<pid>.tmp.png``) of a run killed while writing it."""
    return name == PREVIEW_FILE or (name.startswith(f".{PREVIEW_FILE}.") and name.endswith(".tmp.png"))


def holds_only_preview(out_dir: Path) -> bool:
    """``out_dir`` is a folder with nothing in it but what a running (or killed) job leaves there."""
    return out_dir.is_dir() and all(is_preview_file(p.name) for p in out_dir.iterdir())


def check_out_dir(out_dir: Path, overwrite: bool) -> None:
    """Refuse, before any work starts, an output folder the job may not write: a file, a folder
    with the user's own things in it, or a finished result unless ``overwrite``."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError("exists and is not a folder; choose another output folder", file=out_dir)
    if not out_dir.is_dir() or holds_only_preview(out_dir):
        return
    if (out_dir / RESULT_FILE).is_file():
        if not overwrite:
            raise InputError("holds a finished result (result.json); choose another output folder, remove it, or "
                             "pass overwrite=True", file=out_dir)
    else:
        raise InputError("is not empty and holds no earlier result; choose an empty or new output folder", file=out_dir)


def replace_with(partial: Path, out_dir: Path) -> None:
    """Rename the complete ``partial`` folder to ``out_dir``, replacing what ``check_out_dir`` allowed
    there (an unfinished run's preview, or a finished result), only now that the new one is complete."""
    old = None
    if out_dir.exists():
        old = out_dir.parent / f".{out_dir.name}.replaced-{os.getpid()}"
        os.replace(out_dir, old)
    os.replace(partial, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

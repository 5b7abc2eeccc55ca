"""The rules every job follows for its result folder (Gaussians, texture, text-to-3D).

A result is written complete into a hidden ``.<name>.partial-<pid>`` sibling and renamed into
place at the end, so the result name never holds half a result. While a job runs, its result
folder may hold only its live preview (``preview.png``), or a temporary preview a killed run left
half-written; anything else in it is the user's, and a new run refuses the folder rather than
touch it. A finished result (``result.json``) is only replaced when the caller says so.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import time
from pathlib import Path
from typing import Iterator

from . import media
from .errors import InputError
from .events import jsonable

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


def write_json(path: Path, payload: dict) -> None:
    """A result file: indented JSON, NaN and infinity refused (other tools cannot read them)."""
    path.write_text(json.dumps(jsonable(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")


@contextlib.contextmanager
def partial_result(out_dir: Path, *, replace_finished: bool) -> Iterator[Path]:
    """A fresh hidden ``.<name>.partial-<pid>`` folder beside ``out_dir`` to write the result into;
    when the block ends without an error it is moved into place (:func:`move_into_place`), and it
    is removed in any case."""
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    try:
        yield partial
        move_into_place(partial, out_dir, replace_finished=replace_finished)
    finally:
        shutil.rmtree(partial, ignore_errors=True)


def move_into_place(partial: Path, out_dir: Path, *, replace_finished: bool) -> None:
    """Rename the complete ``partial`` folder to ``out_dir``.

    A folder holding only a live preview is replaced (the preview becomes part of the result when
    the result has none of its own); a finished result only with ``replace_finished``, and only now
    that the new one is complete. Anything else appeared while the job ran and is the user's: it is
    left alone and the new result is saved beside it as ``<name>.new-<time>``.
    """
    old = None
    if out_dir.exists():
        if holds_only_preview(out_dir):
            if (out_dir / PREVIEW_FILE).exists() and not (partial / PREVIEW_FILE).exists():
                os.replace(out_dir / PREVIEW_FILE, partial / PREVIEW_FILE)
            for leftover in out_dir.iterdir():  # the live preview, or temporary ones of a killed run
                leftover.unlink()
            out_dir.rmdir()
        elif replace_finished and (out_dir / RESULT_FILE).is_file():
            old = out_dir.parent / f".{out_dir.name}.replaced-{os.getpid()}"
            os.replace(out_dir, old)
        else:
            kept = out_dir.parent / f"{out_dir.name}.new-{time.strftime('%Y%m%d-%H%M%S')}"
            os.replace(partial, kept)
            raise InputError(f"was filled while this result was computed; the new result was saved as {kept}",
                             file=out_dir)
    os.replace(partial, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)

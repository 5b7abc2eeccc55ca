"""Turntable and render files by name: which suffixes are videos, animations or frames, and frame numbers."""

from __future__ import annotations

import os
import re
from pathlib import Path

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi")
ANIMATION_SUFFIXES = (".gif",)
FRAME_SUFFIXES = (".png", ".jpg", ".jpeg", ".exr")
_TRAILING_NUMBER = re.compile(r"(\d+)(?=\.[^.]+$)")


def frame_number(path: Path) -> int:
    """The number a file name ends in before its suffix (``frame_0012.png`` -> 12), or -1."""
    match = _TRAILING_NUMBER.search(path.name)
    return int(match.group(1)) if match else -1


def numbered_frames(folder: str | os.PathLike) -> list[Path]:
    """Image files of ``folder`` that end in a frame number, sorted by that number."""
    folder = Path(folder)
    frames = [p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in FRAME_SUFFIXES and frame_number(p) >= 0]
    return sorted(frames, key=frame_number)

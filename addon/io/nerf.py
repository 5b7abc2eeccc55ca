"""NeRF-synthetic datasets as a capture writes them: pinhole intrinsics, train/test splits, transforms files.

Conventions (shared with the backend's loader, see DESIGN.md):

- ``transform_matrix`` is camera-to-world in Blender world space with the Blender/OpenGL camera
  frame (looks down -Z, +Y up).
- Intrinsics are pinhole, in pixels of the written image, with pixel centres at +0.5:
  an unshifted camera has ``cx = w / 2``, ``cy = h / 2``; ``cy`` counts down from the top row.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Sequence

import numpy as np

from .job_folder import TRANSFORMS_FILES

TRAIN_SPLIT, TEST_SPLIT = "train", "test"
SENSOR_FITS = ("AUTO", "HORIZONTAL", "VERTICAL")


class CaptureError(ValueError):
    """Bad input to a capture: the message names the object, setting or file and what was expected."""


@dataclass(frozen=True)
class CameraIntrinsics:
    """Pinhole intrinsics in pixels of a ``w`` x ``h`` image; pixel centres at +0.5, cy from the top."""

    fl_x: float
    fl_y: float
    cx: float
    cy: float
    w: int
    h: int

    @property
    def camera_angle_x(self) -> float:
        """Horizontal field of view (radians) as NeRF-synthetic stores it."""
        return 2.0 * math.atan(0.5 * self.w / self.fl_x)

    def matrix(self) -> np.ndarray:
        """(3, 3) pinhole matrix."""
        return np.array([[self.fl_x, 0.0, self.cx], [0.0, self.fl_y, self.cy], [0.0, 0.0, 1.0]])

    def as_dict(self) -> dict:
        return {"camera_angle_x": self.camera_angle_x, "fl_x": self.fl_x, "fl_y": self.fl_y,
                "cx": self.cx, "cy": self.cy, "w": self.w, "h": self.h}


def intrinsics_from_lens(lens_mm: float, sensor_width_mm: float, sensor_height_mm: float, sensor_fit: str,
                         width: int, height: int, shift_x: float = 0.0, shift_y: float = 0.0,
                         pixel_aspect: tuple[float, float] = (1.0, 1.0)) -> CameraIntrinsics:
    """Intrinsics of a perspective Blender camera rendering a ``width`` x ``height`` image.

    Follows Blender's view plane: the sensor (``sensor_width``, or ``sensor_height`` for VERTICAL
    fit; AUTO uses ``sensor_width`` across the longer displayed side) spans the fitted image side;
    lens shift moves the frame by ``shift * fitted side``; non-square pixels (``pixel_aspect`` =
    Blender's pixel_aspect_x, pixel_aspect_y) give ``fl_y != fl_x``.
    """
    if sensor_fit not in SENSOR_FITS:
        raise CaptureError(f"sensor fit: expected one of {', '.join(SENSOR_FITS)}, got {sensor_fit!r}")
    aspect_x, aspect_y = pixel_aspect
    y_per_x = aspect_y / aspect_x  # height of a pixel in units of its width

    fit = sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if width * aspect_x >= height * aspect_y else "VERTICAL"
        sensor_mm = sensor_width_mm  # AUTO always spreads the sensor width over the longer side
    else:
        sensor_mm = sensor_width_mm if fit == "HORIZONTAL" else sensor_height_mm
    # Length of the fitted side, measured in pixel widths.
    fitted_side = float(width) if fit == "HORIZONTAL" else height * y_per_x

    fl_x = lens_mm / sensor_mm * fitted_side
    fl_y = fl_x / y_per_x
    # Positive shift moves the frame right/up, so the optical axis lands left of/below the centre.
    cx = 0.5 * width - shift_x * fitted_side
    cy = 0.5 * height + shift_y * fitted_side / y_per_x
    return CameraIntrinsics(fl_x, fl_y, cx, cy, width, height)


def split_views(n_views: int, test_every: int) -> list[str]:
    """Split name per view: every ``test_every``-th view (0, k, 2k, ...) is held out for testing."""
    if test_every < 2:
        raise CaptureError(f"test every: expected 2 or more (hold out every k-th view), got {test_every}")
    if n_views < 2:
        raise CaptureError(f"views: need at least 2 views (cameras) for a train and a test split, got {n_views}")
    return [TEST_SPLIT if view % test_every == 0 else TRAIN_SPLIT for view in range(n_views)]


def view_file_path(split: str, view: int) -> str:
    """NeRF-synthetic ``file_path`` of a view (no extension; the image is ``<path>.png``)."""
    return f"./{split}/r_{view}"


def build_transforms(
    splits: Sequence[str],
    intrinsics: Sequence[CameraIntrinsics],
    camera_to_worlds: Sequence[np.ndarray],
    camera_names: Sequence[str],
    extra: dict | None = None,
) -> dict[str, dict]:
    """The ``transforms_<split>.json`` contents, keyed by split.

    camera_to_worlds: one (4, 4) GL-frame camera-to-world per view. Intrinsics shared by all views
    go at the top of each file; when the cameras differ, every frame carries its own
    ``camera_angle_x, fl_x, fl_y, cx, cy, w, h`` (nerfstudio style).
    """
    shared = all(_same_intrinsics(k, intrinsics[0]) for k in intrinsics)
    files: dict[str, dict] = {}
    for split in (TRAIN_SPLIT, TEST_SPLIT):
        content: dict = dict(intrinsics[0].as_dict()) if shared else {"w": intrinsics[0].w, "h": intrinsics[0].h}
        frames = []
        for view, view_split in enumerate(splits):
            if view_split != split:
                continue
            frame = {"file_path": view_file_path(split, view),
                     "transform_matrix": [[float(v) for v in row] for row in camera_to_worlds[view]],
                     "camera": camera_names[view]}
            if not shared:
                frame.update(intrinsics[view].as_dict())
            frames.append(frame)
        content["frames"] = frames
        if extra:
            content["radiantforge"] = extra
        files[split] = content
    return files


def write_transforms(folder: str, contents: dict[str, dict]) -> None:
    """Write what :func:`build_transforms` made as ``folder/transforms_<split>.json``."""
    for split, content in contents.items():
        with open(os.path.join(folder, TRANSFORMS_FILES[split]), "w", encoding="utf-8") as handle:
            json.dump(content, handle, indent=2)


def _same_intrinsics(a: CameraIntrinsics, b: CameraIntrinsics, tolerance: float = 1e-9) -> bool:
    return (a.w, a.h) == (b.w, b.h) and all(
        abs(x - y) <= tolerance * max(1.0, abs(y)) for x, y in
        ((a.fl_x, b.fl_x), (a.fl_y, b.fl_y), (a.cx, b.cx), (a.cy, b.cy)))

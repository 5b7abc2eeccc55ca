"""Posed multi-view datasets in the NeRF-synthetic / nerfstudio ``transforms.json`` layout.

Two layouts load:

- **NeRF-synthetic** (lego etc., and what the Blender add-on writes): ``transforms_train.json``,
  ``transforms_test.json`` and optionally ``transforms_val.json`` in one folder, each a split.
- **nerfstudio**: one ``transforms.json``. Its frames are split by a fixed hold-out rule:
  frames 0, 8, 16, ... (every 8th frame, counted in the order of the json's ``frames`` list)
  form the test split, all others the train split; there is no val split. A file with a single
  frame has no test split. The dataset's ``notes`` state that the rule was applied.

When both exist, the split files win. ``root`` may also be a job folder whose ``data/`` holds the
dataset, or the path of one of the dataset's json files.

Per file: ``frames`` is a list of objects with ``file_path`` and ``transform_matrix`` (4x4
camera-to-world, OpenGL/Blender camera convention: the camera looks down -Z, +Y up).
Intrinsics come from the frame itself or, when the frame does not say, from the top level of the
file (nerfstudio allows per-frame intrinsics):

- focal length: ``fl_x`` (pixels), else ``camera_angle_x`` (radians, across the image width);
  ``fl_y``, else ``camera_angle_y``, else the x focal length;
- principal point: ``cx``, ``cy`` (pixels, pixel centres at +0.5), else the image centre;
- ``w``, ``h``: the image size in pixels; when given, the image on disk must have it.

``file_path`` is relative to the json's folder and stays inside it: an absolute path or one that
climbs out with ``..`` is refused (a dataset is one folder: a job's ``data/``, an upload), as is
``ply_file_path``. Without an image extension (NeRF-synthetic's ``./train/r_0``) it names a PNG;
with one (``images/frame_00001.jpg``) it is used as given. An image has at most
``MAX_IMAGE_PIXELS`` pixels; a transforms file is at most ``MAX_TRANSFORMS_BYTES`` and lists at
most ``MAX_FRAMES`` frames.
Images may be RGB or RGBA (PNG, JPG, ...); RGBA images are composited over the background
colour: ``rgb * a + background * (1 - a)``. All images of a split must have the same size.

Downscaling by ``downscale`` (2 = half the width and height) resizes with area averaging
(antialiased) after compositing, and scales the intrinsics by the exact size ratios.

Every problem with the input raises :class:`~radiantforge.errors.InputError` naming the file and
the field (``frames[3].transform_matrix``, ``camera_angle_x`` ...).

:func:`check_nerf_dataset` makes every check that needs no pixels (the json files, the paths, the
images' headers: size, and that they are images) without decoding anything: what the service
runs on an upload before it queues it. :func:`load_nerf_dataset` decodes.
"""

from __future__ import annotations

import json
import logging
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from radiantforge.cameras import Cameras, focal_from_fov
from radiantforge.data.pointcloud import PointCloud, check_points_ply, read_points_ply
from radiantforge.errors import InputError, quoted, shorten

log = logging.getLogger(__name__)

SPLIT_FILES = {
    "train": "transforms_train.json",
    "test": "transforms_test.json",
    "val": "transforms_val.json",
}
SINGLE_TRANSFORMS_FILE = "transforms.json"
JOB_DATA_FOLDER = "data"  # a job folder keeps its dataset here (see DESIGN.md)
POINTS_FILE = "points3d.ply"
POINTS_FILE_KEY = "ply_file_path"  # nerfstudio names its point cloud in transforms.json

# Single-file datasets: every HOLDOUT_EVERY-th frame (starting with the first) is a test view.
HOLDOUT_EVERY = 8

# The most pixels an image may have: an 8K frame (7680 x 4320) is 33 MP; decoded as float RGBA,
# this cap is 640 MB for one image. Larger photos are downscaled before training anyway.
MAX_IMAGE_PIXELS = 40_000_000

# The largest transforms file and the most frames one may list. Parsing JSON takes about five
# times its size in memory, and every frame is checked before any image is read, so a file from a
# client is bounded before it is parsed. Real captures stay far below: a 5,000-frame nerfstudio
# capture with per-frame intrinsics is about 3 MB.
MAX_TRANSFORMS_BYTES = 32 * 2**20
MAX_FRAMES = 50_000

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp"}
DEFAULT_IMAGE_SUFFIX = ".png"  # NeRF-synthetic file_path entries have none

# Pinhole camera models we can represent (nerfstudio's OPENCV is a pinhole plus distortion).
PINHOLE_CAMERA_MODELS = {"OPENCV", "PINHOLE", "SIMPLE_PINHOLE"}
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")

# A camera-to-world matrix is rigid: rotation part orthonormal with determinant +1, last row
# (0, 0, 0, 1). Tolerances allow the float32 round-off of files written by other tools.
ORTHONORMAL_TOLERANCE = 1e-3
BOTTOM_ROW_TOLERANCE = 1e-5

# 3DGS (getNerfppNorm) makes the scene radius 10% larger than the farthest camera.
SCENE_EXTENT_MARGIN = 1.1
# Radius used when all train cameras sit at one point (3DGS would return 0).
COINCIDENT_CAMERAS_RADIUS = 1.0

UINT8_MAX = 255.0
UINT16_MAX = 65535.0


@dataclass
class ViewSet:
    """V posed images of one split.

    images: (V, H, W, 3) float32 in [0, 1], RGBA inputs composited over the background.
    alphas: (V, H, W, 1) float32, or None when no image of the split had an alpha channel
        (images without one count as opaque when others have one).
    cameras: the V cameras; ``c2w_gl`` straight from each frame's ``transform_matrix``.
    names: each frame's ``file_path`` as written in the json.
    """

    images: torch.Tensor
    alphas: torch.Tensor | None
    cameras: Cameras
    names: list[str]

    def __len__(self) -> int:
        return self.images.shape[0]


@dataclass
class NerfDataset:
    """A loaded dataset.

    splits: "train" always; "test" and "val" when the dataset has them.
    background: (3,) the compositing colour of RGBA images (and the render background).
    points: the initial point cloud when the dataset has one (``points3d.ply``), else None.
    notes: what the loader assumed or ignored (hold-out rule, distortion ...), for warnings.
    """

    root: Path
    splits: dict[str, ViewSet]
    background: torch.Tensor
    points: PointCloud | None
    notes: list[str] = field(default_factory=list)

    @property
    def train(self) -> ViewSet:
        return self.splits["train"]

    @property
    def test(self) -> ViewSet | None:
        return self.splits.get("test")

    @property
    def val(self) -> ViewSet | None:
        return self.splits.get("val")

    def scene_extent(self) -> tuple[torch.Tensor, float]:
        """Centre (3,) and radius of the scene as 3DGS defines them from the train cameras.

        Centre: mean of the camera positions; radius: 1.1 x the largest distance of a camera
        from that centre (``COINCIDENT_CAMERAS_RADIUS`` when all cameras share one position).
        """
        centres = self.train.cameras.centers.to(torch.float64)
        centre = centres.mean(dim=0)
        farthest = float((centres - centre).norm(dim=-1).max())
        radius = SCENE_EXTENT_MARGIN * farthest if farthest > 0 else COINCIDENT_CAMERAS_RADIUS
        return centre.to(torch.float32), radius


@dataclass
class _FrameSpec:
    """One frame after the json checks, before its image is read."""

    json_path: Path
    index: int  # position in the json's "frames" list
    name: str  # file_path as written
    image_path: Path
    c2w_gl: np.ndarray  # (4, 4) float64
    frame: dict
    document: dict  # the whole json (top-level intrinsics)


def load_nerf_dataset(
    root: str | Path,
    *,
    downscale: float = 1,
    background=(1.0, 1.0, 1.0),
    splits=("train", "test", "val"),
) -> NerfDataset:
    """Load the dataset in folder ``root`` (layouts and rules in the module docstring).

    downscale: >= 1; images become round(W / downscale) x round(H / downscale).
    background: RGB in [0, 1] for compositing RGBA images.
    splits: which splits to load when present; "train" is always loaded.
    """
    downscale = _check_downscale(downscale)
    background_t = _check_background(background)
    root = Path(root)
    dataset_dir, documents, specs_by_split, notes = _read_frames(root, splits)
    loaded = {
        split: _load_split(specs, downscale, background_t.numpy()) for split, specs in specs_by_split.items()
    }
    for document_path, document in documents.items():
        _note_ignored_distortion(document_path, document, notes)
    points = _load_points(root, dataset_dir, documents)
    if points is not None:
        notes.extend(points.notes)
    for note in notes:
        log.info(note)
    return NerfDataset(root=dataset_dir, splits=loaded, background=background_t, points=points, notes=notes)


@dataclass
class DatasetSummary:
    """What :func:`check_nerf_dataset` found: per split, the frame count and the image size on disk."""

    root: Path
    frames: dict[str, int]
    image_sizes: dict[str, tuple[int, int]]  # split -> (W, H)
    has_points: bool
    notes: list[str] = field(default_factory=list)


def check_nerf_dataset(
    root: str | Path,
    *,
    downscale: float = 1,
    background=(1.0, 1.0, 1.0),
    splits=("train", "test", "val"),
) -> DatasetSummary:
    """Every check of :func:`load_nerf_dataset` that needs no pixels: the json files, the frames,
    the paths (inside the dataset folder), the images' headers (readable as images, sizes, the
    ``w``/``h`` and intrinsics they must fit) and the point cloud's header. Decodes nothing, so
    its cost is a few reads per image whatever the images hold. Raises InputError like the loader.
    """
    _check_downscale(downscale)
    _check_background(background)
    root = Path(root)
    dataset_dir, documents, specs_by_split, notes = _read_frames(root, splits)
    sizes = {}
    for split, specs in specs_by_split.items():
        for spec in specs:
            width, height = _probe_image(spec)
            _intrinsics(spec, width, height)
            if split not in sizes:
                sizes[split] = (width, height)
            elif sizes[split] != (width, height):
                _raise_size_mismatch(spec, (width, height), specs[0], sizes[split])
    points_file = _points_file(root, dataset_dir, documents)
    if points_file is not None:
        check_points_ply(points_file)
    return DatasetSummary(dataset_dir, {split: len(specs) for split, specs in specs_by_split.items()}, sizes,
                          points_file is not None, notes)


def _read_frames(root: Path, splits) -> tuple[Path, dict[Path, dict], dict[str, list[_FrameSpec]], list[str]]:
    """The dataset folder, its json documents, the frames of each wanted split, and notes."""
    wanted = ["train", *(s for s in splits if s != "train")]
    for split in wanted:
        if split not in SPLIT_FILES:
            raise InputError(f"unknown split {quoted(split)}; expected some of {list(SPLIT_FILES)}", field="splits")
    dataset_dir = _find_dataset_folder(root)
    notes: list[str] = []
    documents: dict[Path, dict] = {}
    specs_by_split = _frame_specs_by_split(dataset_dir, wanted, documents, notes)
    return dataset_dir, documents, specs_by_split, notes


# ----------------------------------------------------------------------------- arguments


def _check_downscale(downscale) -> float:
    try:
        value = float(downscale)
    except (TypeError, ValueError):
        raise InputError(f"must be a number >= 1, got {quoted(downscale)}", field="downscale") from None
    if not math.isfinite(value) or value < 1:
        raise InputError(f"must be a number >= 1, got {quoted(downscale)}", field="downscale")
    return value


def _check_background(background) -> torch.Tensor:
    try:
        values = [float(v) for v in background]
    except (TypeError, ValueError):
        raise InputError(f"must be three numbers in [0, 1], got {quoted(background)}", field="background") from None
    if len(values) != 3 or not all(0.0 <= v <= 1.0 for v in values):
        raise InputError(f"must be three numbers in [0, 1], got {quoted(background)}", field="background")
    return torch.tensor(values, dtype=torch.float32)


# ----------------------------------------------------------------------------- json files


def _find_dataset_folder(root: Path) -> Path:
    if root.is_file() and root.suffix.lower() == ".json":
        root = root.parent  # a path to one of the dataset's json files names its folder
    if not root.is_dir():
        raise InputError("dataset folder not found" if not root.exists() else "not a folder", file=root)
    for folder in (root, root / JOB_DATA_FOLDER):
        if (folder / SPLIT_FILES["train"]).is_file() or (folder / SINGLE_TRANSFORMS_FILE).is_file():
            return folder
    raise InputError(
        f"no {SPLIT_FILES['train']} or {SINGLE_TRANSFORMS_FILE} in this folder (nor in {JOB_DATA_FOLDER}/)",
        file=root,
        field=SPLIT_FILES["train"],
    )


def _read_json(path: Path) -> dict:
    try:
        size = path.stat().st_size
        if size > MAX_TRANSFORMS_BYTES:
            raise InputError(
                f"is {size / 2**20:.1f} MB; a transforms file may be at most {MAX_TRANSFORMS_BYTES // 2**20} MB", file=path
            )
        text = path.read_text(encoding="utf-8-sig")  # tolerate a byte-order mark
    except UnicodeDecodeError as exc:
        raise InputError(f"not UTF-8 text (byte {exc.start})", file=path) from None
    except OSError as exc:
        raise InputError(f"cannot read file: {exc.strerror or exc}", file=path) from None
    try:
        document = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"not valid JSON: {exc.msg}", file=path, field=f"line {exc.lineno} column {exc.colno}"
        ) from None
    if not isinstance(document, dict):
        raise InputError(f"must hold a JSON object, found {type(document).__name__}", file=path)
    return document


def _frames_of(path: Path, document: dict) -> list:
    if "frames" not in document:
        raise InputError("missing; expected a list of frames", file=path, field="frames")
    frames = document["frames"]
    if not isinstance(frames, list):
        raise InputError(f"must be a list, found {type(frames).__name__}", file=path, field="frames")
    if not frames:
        raise InputError("is empty; a split needs at least one frame", file=path, field="frames")
    if len(frames) > MAX_FRAMES:
        raise InputError(f"lists {len(frames):,} frames; at most {MAX_FRAMES:,} are allowed", file=path, field="frames")
    return frames


def _frame_specs_by_split(dataset_dir: Path, wanted, documents: dict, notes: list) -> dict[str, list[_FrameSpec]]:
    specs_by_split: dict[str, list[_FrameSpec]] = {}
    if (dataset_dir / SPLIT_FILES["train"]).is_file():
        for split in wanted:
            path = dataset_dir / SPLIT_FILES[split]
            if not path.is_file():
                continue
            documents[path] = _read_json(path)
            frames = _frames_of(path, documents[path])
            specs_by_split[split] = [_frame_spec(path, documents[path], i, f) for i, f in enumerate(frames)]
        return specs_by_split

    path = dataset_dir / SINGLE_TRANSFORMS_FILE
    documents[path] = _read_json(path)
    frames = _frames_of(path, documents[path])
    specs = [_frame_spec(path, documents[path], i, f) for i, f in enumerate(frames)]
    if len(specs) < 2:
        specs_by_split["train"] = specs
        notes.append(f"{path}: a single frame; it is used for training and there is no test split")
        return specs_by_split
    specs_by_split["train"] = [s for s in specs if s.index % HOLDOUT_EVERY != 0]
    test_specs = [s for s in specs if s.index % HOLDOUT_EVERY == 0]
    if "test" in wanted:
        specs_by_split["test"] = test_specs
    notes.append(
        f"{path}: no split files; frames 0, {HOLDOUT_EVERY}, {2 * HOLDOUT_EVERY}, ... "
        f"({len(test_specs)} of {len(specs)}) are held out as the test split"
    )
    return specs_by_split


def _frame_spec(json_path: Path, document: dict, index: int, frame) -> _FrameSpec:
    where = f"frames[{index}]"
    if not isinstance(frame, dict):
        raise InputError(f"must be an object, found {type(frame).__name__}", file=json_path, field=where)
    name = frame.get("file_path")
    if not isinstance(name, str) or not name.strip():
        problem = "missing" if "file_path" not in frame else f"must be a non-empty string, found {quoted(name)}"
        raise InputError(problem, file=json_path, field=f"{where}.file_path")
    camera_model = frame.get("camera_model", document.get("camera_model"))
    if camera_model is not None and camera_model not in PINHOLE_CAMERA_MODELS:
        raise InputError(
            f"camera model {quoted(camera_model)} is not supported; expected a pinhole model "
            f"({', '.join(sorted(PINHOLE_CAMERA_MODELS))})",
            file=json_path,
            field=f"{where}.camera_model" if "camera_model" in frame else "camera_model",
        )
    return _FrameSpec(
        json_path=json_path,
        index=index,
        name=name,
        image_path=_image_path(json_path, index, name),
        c2w_gl=_transform_matrix(json_path, index, frame),
        frame=frame,
        document=document,
    )


def confined_path(folder: Path, name: str, json_path: Path, field_name: str) -> Path:
    """``folder / name`` for a path written in a dataset file, which must stay inside ``folder``.

    Refused without looking at the disk (so the message tells nothing about files elsewhere):
    absolute paths, drive letters, ``..`` components, NUL characters.
    """
    normalized = name.replace("\\", "/")
    parts = [p for p in normalized.split("/") if p not in ("", ".")]
    if "\x00" in name or normalized.startswith("/") or (len(normalized) > 1 and normalized[1] == ":") or ".." in parts \
            or not parts:
        raise InputError(f"must be a path inside the dataset folder (relative, without '..'), got {quoted(name)}",
                         file=json_path, field=field_name)
    return folder.joinpath(*parts)


def _image_path(json_path: Path, index: int, name: str) -> Path:
    field_name = f"frames[{index}].file_path"
    given = confined_path(json_path.parent, name, json_path, field_name)
    candidates = [given] if given.suffix.lower() in IMAGE_SUFFIXES else [Path(f"{given}{DEFAULT_IMAGE_SUFFIX}"), given]
    for candidate in candidates:
        try:
            if candidate.is_file():
                return candidate
        except OSError:  # a name the file system refuses (too long): not found either
            pass
    shown = candidates[0].relative_to(json_path.parent).as_posix()
    raise InputError(f"image not found: {quoted(shown)} (in the dataset folder)", file=json_path, field=field_name)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _transform_matrix(json_path: Path, index: int, frame: dict) -> np.ndarray:
    where = f"frames[{index}].transform_matrix"
    if "transform_matrix" not in frame:
        raise InputError("missing; expected a 4x4 camera-to-world matrix", file=json_path, field=where)
    rows = frame["transform_matrix"]
    is_4x4 = (
        isinstance(rows, list)
        and len(rows) == 4
        and all(isinstance(r, list) and len(r) == 4 and all(_is_number(v) for v in r) for r in rows)
    )
    if not is_4x4:
        shape = (
            f"{len(rows)} rows of lengths {[len(r) if isinstance(r, list) else '-' for r in rows]}"
            if isinstance(rows, list)
            else type(rows).__name__
        )
        raise InputError(f"must be a 4x4 list of numbers, found {shape}", file=json_path, field=where)
    matrix = np.array(rows, dtype=np.float64)
    if not np.isfinite(matrix).all():
        raise InputError("holds NaN or infinite values", file=json_path, field=where)
    if np.abs(matrix[3] - [0.0, 0.0, 0.0, 1.0]).max() > BOTTOM_ROW_TOLERANCE:
        raise InputError(f"last row must be [0, 0, 0, 1], found {matrix[3].tolist()}", file=json_path, field=where)
    rotation = matrix[:3, :3]
    deviation = float(np.abs(rotation.T @ rotation - np.eye(3)).max())
    if deviation > ORTHONORMAL_TOLERANCE or np.linalg.det(rotation) <= 0:
        raise InputError(
            "the 3x3 rotation part must be a rotation (orthonormal, determinant +1); "
            f"max |R^T R - I| = {deviation:.3g}, det = {np.linalg.det(rotation):.3g}",
            file=json_path,
            field=where,
        )
    return matrix


# ----------------------------------------------------------------------------- intrinsics


def _lookup(spec: _FrameSpec, *keys: str):
    """First of ``keys`` present in the frame, else in the top level: (value, field name)."""
    for key in keys:
        if key in spec.frame:
            return spec.frame[key], f"frames[{spec.index}].{key}"
    for key in keys:
        if key in spec.document:
            return spec.document[key], key
    return None, None


def _positive_number(spec: _FrameSpec, value, field_name: str, what: str) -> float:
    if not _is_number(value) or not math.isfinite(value) or value <= 0:
        raise InputError(f"must be a positive number ({what}), found {quoted(value)}", file=spec.json_path, field=field_name)
    return float(value)


def _check_image_size(spec: _FrameSpec, width: int, height: int) -> None:
    for key, actual in (("w", width), ("h", height)):
        value, field_name = _lookup(spec, key)
        if value is None:
            continue
        expected = _positive_number(spec, value, field_name, "image size in pixels")
        if expected != actual:
            raise InputError(
                f"image {spec.image_path.name} is {width}x{height} pixels but {key} = {value:g}",
                file=spec.json_path,
                field=field_name,
            )


def _intrinsics(spec: _FrameSpec, width: int, height: int) -> np.ndarray:
    """(3, 3) pinhole matrix of a frame whose image is ``width`` x ``height``."""
    _check_image_size(spec, width, height)

    value, field_name = _lookup(spec, "fl_x", "camera_angle_x")
    if value is None:
        raise InputError(
            "missing; the focal length needs fl_x (pixels) or camera_angle_x (radians)",
            file=spec.json_path,
            field="fl_x / camera_angle_x",
        )
    if field_name.endswith("camera_angle_x"):
        fx = focal_from_fov(_field_of_view(spec, value, field_name), width)
    else:
        fx = _positive_number(spec, value, field_name, "focal length in pixels")

    value, field_name = _lookup(spec, "fl_y", "camera_angle_y")
    if value is None:
        fy = fx
    elif field_name.endswith("camera_angle_y"):
        fy = focal_from_fov(_field_of_view(spec, value, field_name), height)
    else:
        fy = _positive_number(spec, value, field_name, "focal length in pixels")

    centre = []
    for key, size in (("cx", width), ("cy", height)):
        value, field_name = _lookup(spec, key)
        if value is None:
            centre.append(size / 2.0)
            continue
        if not _is_number(value) or not math.isfinite(value) or not 0 < value < size:
            raise InputError(
                f"principal point {quoted(value)} lies outside the {width}x{height} image "
                "(are the intrinsics for another resolution?)",
                file=spec.json_path,
                field=field_name,
            )
        centre.append(float(value))
    return np.array([[fx, 0.0, centre[0]], [0.0, fy, centre[1]], [0.0, 0.0, 1.0]])


def _field_of_view(spec: _FrameSpec, value, field_name: str) -> float:
    if not _is_number(value) or not math.isfinite(value) or not 0 < value < math.pi:
        raise InputError(
            f"must be an angle in radians between 0 and pi, found {quoted(value)}", file=spec.json_path, field=field_name
        )
    return float(value)


def _note_ignored_distortion(path: Path, document: dict, notes: list) -> None:
    frames = document.get("frames", [])
    holders = [document, *(f for f in frames if isinstance(f, dict))]
    if any(_is_number(h.get(k)) and h.get(k) != 0 for h in holders for k in DISTORTION_KEYS):
        notes.append(f"{path}: lens distortion ({', '.join(DISTORTION_KEYS)}) is ignored; images are used as pinhole")


# ----------------------------------------------------------------------------- images


def _check_pixel_count(spec: _FrameSpec, width: int, height: int) -> None:
    if width * height > MAX_IMAGE_PIXELS:
        raise InputError(f"image {spec.image_path.name} is {width}x{height} pixels, more than the {MAX_IMAGE_PIXELS:,} "
                         "an image may have; downscale the images first", file=spec.json_path,
                         field=f"frames[{spec.index}].file_path")


def _probe_image(spec: _FrameSpec) -> tuple[int, int]:
    """(W, H) of a frame's image from its header (nothing is decoded); InputError when it is no image."""
    try:
        with Image.open(spec.image_path) as image:
            width, height = image.size
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise InputError(f"cannot read image {spec.image_path.name}: {shorten(str(exc))}", file=spec.json_path,
                         field=f"frames[{spec.index}].file_path") from None
    _check_pixel_count(spec, width, height)
    return width, height


def _read_image(spec: _FrameSpec) -> tuple[np.ndarray, np.ndarray | None]:
    """(H, W, 3) float32 colour and (H, W, 1) float32 alpha (None without an alpha channel)."""
    where = f"frames[{spec.index}].file_path"
    try:
        with Image.open(spec.image_path) as image:
            _check_pixel_count(spec, *image.size)
            image.load()
            mode = image.mode
            if mode in ("I;16", "I;16B", "I;16L", "I"):  # 16-bit greyscale
                grey = np.asarray(image, dtype=np.float32) / UINT16_MAX
                return np.repeat(grey[..., None], 3, axis=-1), None
            has_alpha = mode in ("RGBA", "LA", "PA", "RGBa", "La") or (
                mode == "P" and "transparency" in image.info
            )
            converted = image.convert("RGBA" if has_alpha else "RGB")
            pixels = np.asarray(converted, dtype=np.float32) / UINT8_MAX
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError, SyntaxError) as exc:
        raise InputError(
            f"cannot read image {spec.image_path.name}: {shorten(str(exc))}", file=spec.json_path, field=where
        ) from None
    if has_alpha:
        return pixels[..., :3], pixels[..., 3:4]
    return pixels, None


def _area_weights(size_in: int, size_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Exact area-averaging weights for resizing one axis from ``size_in`` to ``size_out``.

    Output pixel i covers input span [i s, (i + 1) s) with s = size_in / size_out; each input
    pixel j contributes its overlap with that span, divided by s. Returns ``indices`` and
    ``weights``, both (size_out, taps): out[i] = sum_t weights[i, t] * in[indices[i, t]].
    """
    step = size_in / size_out
    starts = np.arange(size_out) * step
    ends = starts + step
    taps = int(math.ceil(step)) + 1  # a span of length s touches at most ceil(s) + 1 pixels
    indices = np.floor(starts).astype(np.int64)[:, None] + np.arange(taps)[None, :]
    overlap = np.minimum(ends[:, None], indices + 1) - np.maximum(starts[:, None], indices)
    weights = np.clip(overlap, 0.0, None) / step
    return np.minimum(indices, size_in - 1), weights.astype(np.float32)


def _resize_area(array: np.ndarray, width: int, height: int) -> np.ndarray:
    """Resize (H, W, C) float32 to (height, width, C) by exact area averaging (antialiased,
    and the mean of the image is kept for any factor, integer or not)."""
    rows, row_weights = _area_weights(array.shape[0], height)
    array = np.einsum("ot,otwc->owc", row_weights, array[rows])
    columns, column_weights = _area_weights(array.shape[1], width)
    return np.einsum("ot,hotc->hoc", column_weights, array[:, columns])


@dataclass
class _LoadedView:
    rgb: np.ndarray  # (H', W', 3) composited, resized
    alpha: np.ndarray | None  # (H', W', 1)
    intrinsics: np.ndarray  # (3, 3) for the resized image
    source_size: tuple[int, int]  # (W, H) on disk


def _load_view(spec: _FrameSpec, downscale: float, background: np.ndarray) -> _LoadedView:
    rgb, alpha = _read_image(spec)
    height, width = rgb.shape[:2]
    intrinsics = _intrinsics(spec, width, height)
    if alpha is not None:
        rgb = rgb * alpha + background * (1.0 - alpha)
    if downscale != 1:
        new_width = max(1, round(width / downscale))
        new_height = max(1, round(height / downscale))
        rgb = _resize_area(rgb, new_width, new_height)
        alpha = None if alpha is None else _resize_area(alpha, new_width, new_height)
        intrinsics[0] *= new_width / width
        intrinsics[1] *= new_height / height
    return _LoadedView(rgb.astype(np.float32), alpha, intrinsics, (width, height))


def _raise_size_mismatch(spec: _FrameSpec, size: tuple[int, int], first: _FrameSpec, first_size: tuple[int, int]):
    raise InputError(
        f"image is {size[0]}x{size[1]} pixels but the first image of this split ({shorten(first.name)}) is "
        f"{first_size[0]}x{first_size[1]}; all images of a split must have the same size",
        file=spec.json_path,
        field=f"frames[{spec.index}].file_path",
    )


def _load_split(specs: list[_FrameSpec], downscale: float, background: np.ndarray) -> ViewSet:
    # Image decoding releases the GIL, so threads overlap it; map() keeps frame order, so the
    # first bad frame in the file is the one reported. Views are copied into one preallocated
    # array as they arrive, so the peak memory is the split's size, not twice it.
    workers = max(1, min(len(specs), os.cpu_count() or 1))
    pool = ThreadPoolExecutor(max_workers=workers)
    images = alphas = None
    intrinsics = []
    try:
        views = pool.map(lambda s: _load_view(s, downscale, background), specs)
        for position, (spec, view) in enumerate(zip(specs, views)):
            if images is None:
                first_size = view.source_size
                images = np.empty((len(specs), *view.rgb.shape), np.float32)
            elif view.source_size != first_size:
                _raise_size_mismatch(spec, view.source_size, specs[0], first_size)
            images[position] = view.rgb
            if view.alpha is not None and alphas is None:
                # Images before the first one with alpha had none: they are opaque.
                alphas = np.ones((*images.shape[:3], 1), np.float32)
            if alphas is not None:
                alphas[position] = 1.0 if view.alpha is None else view.alpha
            intrinsics.append(view.intrinsics)
    finally:
        # On an error, frames not yet started are dropped instead of decoded for nothing.
        pool.shutdown(wait=True, cancel_futures=True)

    height, width = images.shape[1:3]
    cameras = Cameras(
        c2w_gl=torch.from_numpy(np.stack([s.c2w_gl for s in specs])).to(torch.float32),
        intrinsics=torch.from_numpy(np.stack(intrinsics)).to(torch.float32),
        width=width,
        height=height,
    )
    return ViewSet(
        images=torch.from_numpy(images),
        alphas=None if alphas is None else torch.from_numpy(alphas),
        cameras=cameras,
        names=[s.name for s in specs],
    )


# ----------------------------------------------------------------------------- points


def _points_file(root: Path, dataset_dir: Path, documents: dict[Path, dict]) -> Path | None:
    """The point cloud a dataset names (``ply_file_path``, inside its folder) or holds (points3d.ply)."""
    for path, document in documents.items():
        if POINTS_FILE_KEY in document:
            value = document[POINTS_FILE_KEY]
            if not isinstance(value, str):
                raise InputError(f"must be a path inside the dataset folder, got {quoted(value)}", file=path,
                                 field=POINTS_FILE_KEY)
            points = confined_path(path.parent, value, path, POINTS_FILE_KEY)
            if not points.is_file():
                raise InputError(f"point cloud not found: {quoted(value)} (in the dataset folder)", file=path,
                                 field=POINTS_FILE_KEY)
            return points
    for folder in (dataset_dir, root):
        if (folder / POINTS_FILE).is_file():
            return folder / POINTS_FILE
    return None


def _load_points(root: Path, dataset_dir: Path, documents: dict[Path, dict]) -> PointCloud | None:
    points_file = _points_file(root, dataset_dir, documents)
    return None if points_file is None else read_points_ply(points_file)

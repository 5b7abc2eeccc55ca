"""Camera matrices in numpy: camera-to-world without scale, look-at, orbit directions, framing, projection.

Matrices are (4, 4) camera-to-world in Blender world space with the Blender/OpenGL camera frame
(looks down -Z, +Y up), as transforms files store them.
"""

from __future__ import annotations

import math

import numpy as np

from .nerf import CameraIntrinsics

# Blender/OpenGL camera frame -> OpenCV camera frame (flip Y and Z); used only to project points
# for colouring, mirroring the backend's single conversion (c2w_cv = c2w_gl @ GL_TO_CV).
GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])


def camera_to_world_without_scale(matrix_world) -> np.ndarray:
    """(4, 4) float64 camera-to-world from a camera's (4, 4) world matrix, its scale divided out of
    the rotation columns: Blender renders through the normalised matrix, and a scale would corrupt
    the inverse the loader takes (a no-op for unscaled cameras)."""
    c2w = np.array(matrix_world, dtype=np.float64)
    c2w[:3, :3] /= np.linalg.norm(c2w[:3, :3], axis=0, keepdims=True)
    return c2w


def world_to_camera_cv(camera_to_world: np.ndarray) -> np.ndarray:
    """(4, 4) world-to-camera in the OpenCV frame (+Z forward, +Y down) of a (4, 4) GL camera-to-world."""
    return np.linalg.inv(camera_to_world @ GL_TO_CV)


def project_points(points: np.ndarray, camera_to_world: np.ndarray,
                   intrinsics: CameraIntrinsics) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N, 2) (x right, y down, centres at +0.5) and depth (N,) of world points (N, 3)."""
    w2c_cv = world_to_camera_cv(camera_to_world)
    in_camera = points @ w2c_cv[:3, :3].T + w2c_cv[:3, 3]
    depth = in_camera[:, 2]
    safe_depth = np.where(np.abs(depth) > 1e-12, depth, 1e-12)
    k = intrinsics
    pixels = np.stack([k.fl_x * in_camera[:, 0] / safe_depth + k.cx,
                       k.fl_y * in_camera[:, 1] / safe_depth + k.cy], axis=-1)
    return pixels, depth


def fibonacci_directions(n: int, upper_hemisphere: bool = False, min_elevation_deg: float = 0.0) -> np.ndarray:
    """(n, 3) unit vectors spread evenly (equal area) over the sphere or the upper hemisphere (+Z)."""
    i = np.arange(n, dtype=np.float64) + 0.5
    z_low = math.sin(math.radians(min_elevation_deg)) if upper_hemisphere else -1.0
    z = 1.0 - (1.0 - z_low) * i / n  # uniform in z is uniform in area on the sphere
    golden_angle = math.pi * (3.0 - math.sqrt(5.0))
    theta = golden_angle * i
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    return np.stack([r * np.cos(theta), r * np.sin(theta), z], axis=-1)


# A floor: an object at most this thin (its height over its larger horizontal side) ...
FLOOR_FLATNESS = 0.05
# ... whose top lies at most this share of the subjects' height above their lowest point ...
FLOOR_TOP_TOLERANCE = 0.05
# ... and whose horizontal box covers at least this share of the subjects' on each axis.
FLOOR_COVERAGE = 0.9


def find_floor(boxes: dict[str, tuple[np.ndarray, np.ndarray]], subjects: list[str]) -> str | None:
    """The name of the object the ``subjects`` stand on, or None: a flat object (world Z up) under all
    of them that spans their footprint. ``boxes``: name -> (low (3,), high (3,)) world bounds of every
    object that renders; ``subjects``: the names the cameras circle (a floor among them counts too)."""
    candidates = []
    for name, (low, high) in boxes.items():
        size = np.asarray(high, np.float64) - np.asarray(low, np.float64)
        if max(size[0], size[1]) > 0 and size[2] <= FLOOR_FLATNESS * max(size[0], size[1]):
            candidates.append((float(size[0] * size[1]), name))
    for _, name in sorted(candidates, reverse=True):  # the largest flat object first
        others = [boxes[other] for other in subjects if other != name and other in boxes]
        if not others:
            continue
        low = np.min([np.asarray(b[0], np.float64) for b in others], axis=0)
        high = np.max([np.asarray(b[1], np.float64) for b in others], axis=0)
        floor_low, floor_high = (np.asarray(v, np.float64) for v in boxes[name])
        height = max(high[2] - low[2], 1e-9)
        under = floor_high[2] <= low[2] + FLOOR_TOP_TOLERANCE * height
        centre = 0.5 * (low[:2] + high[:2])
        spans = bool(np.all(floor_low[:2] <= centre) and np.all(centre <= floor_high[:2])
                     and np.all(floor_high[:2] - floor_low[:2] >= FLOOR_COVERAGE * (high[:2] - low[:2])))
        if under and spans:
            return name
    return None


def look_at_camera_to_world(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(4, 4) camera-to-world matrix of a Blender camera at ``eye`` (3,) looking at ``target`` (3,), world +Z up."""
    forward = np.asarray(target, np.float64) - np.asarray(eye, np.float64)
    forward /= np.linalg.norm(forward)
    up = np.array([0.0, 0.0, 1.0])
    if np.linalg.norm(np.cross(forward, up)) < 1e-6:  # looking straight up or down: no "right" from Z
        up = np.array([0.0, 1.0, 0.0])
    right = np.cross(forward, up)
    right /= np.linalg.norm(right)
    camera_up = np.cross(right, forward)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, camera_up, -forward, eye
    return c2w


def fit_distance(radius: float, focal_length_mm: float, sensor_width_mm: float, width: int, height: int,
                 margin: float = 1.1) -> float:
    """Distance at which a sphere of ``radius`` fits the narrower field of view of an AUTO-fit camera.

    AUTO sensor fit spreads ``sensor_width_mm`` over the longer image side, so the shorter side
    sees ``sensor * short / long``.
    """
    short_sensor = sensor_width_mm * min(width, height) / max(width, height)
    half_fov = math.atan(0.5 * short_sensor / focal_length_mm)
    return margin * radius / math.sin(half_fov)

"""Capture a Blender scene as a NeRF-synthetic dataset: cameras, renders, transforms JSON, points3d.ply.

Plain functions on ``bpy`` that the add-on's operators and ``radiantforge_addon.headless`` call.
Only ``bpy``, ``mathutils``, numpy and the standard library are used here (never torch).

What a capture writes (the ``data/`` folder of a job, see DESIGN.md)::

    transforms_train.json   camera_angle_x, fl_x, fl_y, cx, cy, w, h, frames[file_path, transform_matrix]
    transforms_test.json    the same for every ``test_every``-th view (view 0, k, 2k, ...)
    train/r_<view>.png      RGBA renders (transparent film), <view> = index of the view in the capture
    test/r_<view>.png
    points3d.ply            binary point cloud (x y z float, red green blue uchar), no faces

Conventions (shared with the backend's loader):

- ``transform_matrix`` is the camera's world matrix, camera-to-world in Blender world space with
  the Blender/OpenGL camera frame (looks down -Z, +Y up). Blender ignores a camera's scale when it
  renders, so the scale is divided out of the rotation columns (a no-op for unscaled cameras).
- Intrinsics are pinhole, in pixels of the written image, with pixel centres at +0.5:
  an unshifted camera has ``cx = w / 2``, ``cy = h / 2``; ``cy`` counts down from the top row.

The render step is a generator (:func:`capture_dataset`) that renders one view per ``next()``, so
a modal operator can show progress and cancel between views; closing the generator (or any error)
restores every scene setting it changed and removes the half-written folder.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from typing import Iterator, Sequence

import bpy
import numpy as np
from mathutils import Matrix
from mathutils.bvhtree import BVHTree
from mathutils.kdtree import KDTree

# Object types whose evaluated geometry is a surface (``Object.to_mesh()`` works for all of them).
GEOMETRY_TYPES = frozenset({"MESH", "CURVE", "SURFACE", "META", "FONT"})

# Render engine ids of Blender 4.2+ / 5.0 that the capture accepts.
ENGINES = ("BLENDER_WORKBENCH", "CYCLES", "BLENDER_EEVEE")
# EEVEE's engine id was BLENDER_EEVEE_NEXT in Blender 4.2-4.4 and is BLENDER_EEVEE again from 5.0.
EEVEE_IDS = ("BLENDER_EEVEE", "BLENDER_EEVEE_NEXT")

TRAIN_SPLIT, TEST_SPLIT = "train", "test"

# Blender/OpenGL camera frame -> OpenCV camera frame (flip Y and Z); used only to project points
# for colouring, mirroring the backend's single conversion.
_GL_TO_CV = np.diag([1.0, -1.0, -1.0, 1.0])

# Points whose surface is seen at a grazing angle get smeared colours: use views facing them.
MIN_FACING_COSINE = 0.2
# How many visible views a point's colour is averaged over, and how many candidate views
# (best-facing first) are ray-tested at most per point before giving up.
VIEWS_PER_POINT = 3
MAX_RAY_TESTS_PER_POINT = 16
# The occlusion ray stops this fraction of the scene radius short of the point itself, so the
# point's own triangle (and its neighbours at the same spot) never count as occluders.
OCCLUSION_EPSILON_FRACTION = 1e-3
# Half the width (pixels) of the area a render's pixel filter averages (Blender's default filter is
# 1.5 px wide): a pixel whose whole area lies on one object has that object's pure colour.
PIXEL_FILTER_HALF_WIDTH = 0.75
# A rendered pixel belongs to the surface when its alpha is above this (silhouette edges are not).
ALPHA_SURFACE_THRESHOLD = 0.5
# Colour of points of an object that no view saw at all (e.g. hidden inside another object).
UNSEEN_POINT_RGB = (128, 128, 128)


class CaptureError(ValueError):
    """Bad input to a capture: the message names the object, setting or file and what was expected."""


# ------------------------------------------------------------------------------------------------
# Scene geometry
# ------------------------------------------------------------------------------------------------


@dataclass
class SceneTriangles:
    """World-space triangles of evaluated geometry (modifiers, instances and constraints applied).

    vertices: (V, 3) float64, triangles: (T, 3) int64 indices into vertices,
    owners: names of the original objects, owner_of_triangle: (T,) int64 index into owners.
    """

    vertices: np.ndarray
    triangles: np.ndarray
    owners: list[str]
    owner_of_triangle: np.ndarray

    @property
    def corners(self) -> np.ndarray:
        """(T, 3, 3) the three world-space corners of every triangle."""
        return self.vertices[self.triangles]

    def bounds(self) -> tuple[np.ndarray, np.ndarray]:
        """Axis-aligned (min (3,), max (3,)) of the triangles' vertices."""
        used = self.vertices[np.unique(self.triangles)]
        return used.min(axis=0), used.max(axis=0)


def renderable_geometry_objects(scene: bpy.types.Scene) -> list[bpy.types.Object]:
    """Objects of the scene's view layer that render as surfaces (geometry types, not hidden in render)."""
    view_layer = bpy.context.view_layer if bpy.context.scene == scene else scene.view_layers[0]
    return [
        obj
        for obj in view_layer.objects
        if obj.type in GEOMETRY_TYPES and not obj.hide_render
    ]


def scene_depsgraph(scene: bpy.types.Scene) -> bpy.types.Depsgraph:
    """The evaluated dependency graph of ``scene`` (the active view layer's when it is the context's)."""
    if bpy.context.scene == scene:
        return bpy.context.evaluated_depsgraph_get()
    return scene.view_layers[0].depsgraph


def evaluated_triangles(
    depsgraph: bpy.types.Depsgraph, objects: Sequence[bpy.types.Object] | None = None
) -> SceneTriangles:
    """Triangles of the evaluated scene: every visible instance, modifiers applied, in world space.

    objects: restrict to these original objects (and the instances they generate); None = all
    geometry that renders (``hide_render`` off).
    """
    wanted = None if objects is None else {obj.name for obj in objects}
    vertex_blocks, triangle_blocks, owner_blocks = [], [], []
    owners: list[str] = []
    vertex_count = 0
    for instance in depsgraph.object_instances:
        evaluated = instance.object
        if evaluated.type not in GEOMETRY_TYPES:
            continue
        # An instance belongs to the object that generates it (particles, geometry nodes, collections).
        source = instance.parent.original if instance.is_instance else evaluated.original
        if source.hide_render or evaluated.original.hide_render:
            continue
        if wanted is not None and source.name not in wanted:
            continue
        world = np.array(instance.matrix_world, dtype=np.float64)
        mesh = evaluated.to_mesh()
        try:
            mesh.calc_loop_triangles()
            n_vertices, n_triangles = len(mesh.vertices), len(mesh.loop_triangles)
            if n_vertices == 0 or n_triangles == 0:
                continue
            local = np.empty(n_vertices * 3, dtype=np.float32)
            mesh.vertices.foreach_get("co", local)
            corner_ids = np.empty(n_triangles * 3, dtype=np.int32)
            mesh.loop_triangles.foreach_get("vertices", corner_ids)
        finally:
            evaluated.to_mesh_clear()
        local = local.reshape(-1, 3).astype(np.float64)
        vertex_blocks.append(local @ world[:3, :3].T + world[:3, 3])
        triangle_blocks.append(corner_ids.reshape(-1, 3).astype(np.int64) + vertex_count)
        vertex_count += n_vertices
        if source.name not in owners:
            owners.append(source.name)
        owner_blocks.append(np.full(n_triangles, owners.index(source.name), dtype=np.int64))
    if not triangle_blocks:
        return SceneTriangles(np.zeros((0, 3)), np.zeros((0, 3), np.int64), [], np.zeros(0, np.int64))
    return SceneTriangles(
        np.concatenate(vertex_blocks), np.concatenate(triangle_blocks), owners, np.concatenate(owner_blocks)
    )


# ------------------------------------------------------------------------------------------------
# Cameras: collections and the automatic orbit rig
# ------------------------------------------------------------------------------------------------


def collection_cameras(collection_name: str) -> list[bpy.types.Object]:
    """The camera objects of a collection (and its child collections), sorted by name."""
    collection = bpy.data.collections.get(collection_name)
    if collection is None:
        known = ", ".join(sorted(c.name for c in bpy.data.collections)) or "none"
        raise CaptureError(f"collection {collection_name!r}: no such collection (collections: {known})")
    cameras = sorted((obj for obj in collection.all_objects if obj.type == "CAMERA"), key=lambda o: o.name)
    if not cameras:
        raise CaptureError(f"collection {collection_name!r}: contains no camera objects")
    return cameras


def fibonacci_directions(n: int, upper_hemisphere: bool = False, min_elevation_deg: float = 0.0) -> np.ndarray:
    """(n, 3) unit vectors spread evenly (equal area) over the sphere or the upper hemisphere (+Z)."""
    i = np.arange(n, dtype=np.float64) + 0.5
    z_low = math.sin(math.radians(min_elevation_deg)) if upper_hemisphere else -1.0
    z = 1.0 - (1.0 - z_low) * i / n  # uniform in z is uniform in area on the sphere
    golden_angle = math.pi * (3.0 - math.sqrt(5.0))
    theta = golden_angle * i
    r = np.sqrt(np.clip(1.0 - z * z, 0.0, None))
    return np.stack([r * np.cos(theta), r * np.sin(theta), z], axis=-1)


def look_at_camera_to_world(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """(4, 4) camera-to-world matrix of a Blender camera at ``eye`` looking at ``target``, world +Z up."""
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


@dataclass
class OrbitRig:
    """Cameras created by :func:`create_orbit_rig`; remove them with :func:`remove_rig`."""

    collection: bpy.types.Collection
    cameras: list[bpy.types.Object]
    center: tuple[float, float, float]
    radius: float  # bounding-sphere radius of the captured objects (m)
    distance: float  # camera distance from the centre (m)


def create_orbit_rig(
    scene: bpy.types.Scene,
    objects: Sequence[bpy.types.Object],
    n_views: int = 60,
    focal_length_mm: float = 50.0,
    resolution: tuple[int, int] | None = None,
    upper_hemisphere: bool = False,
    min_elevation_deg: float = 0.0,
    sensor_width_mm: float = 36.0,
    margin: float = 1.1,
    collection_name: str = "RadiantForge Cameras",
) -> OrbitRig:
    """Camera objects spread evenly (Fibonacci) around ``objects``, all looking at their centre.

    The distance makes the bounding sphere of the evaluated objects (modifiers applied) fit the
    field of view at ``resolution`` (default: the scene's render size) with ``margin``. The cameras
    live in a new collection linked to the scene, so the artist can inspect or delete them.
    """
    if n_views < 1:
        raise CaptureError(f"views: expected at least 1 view, got {n_views}")
    if focal_length_mm <= 0:
        raise CaptureError(f"focal length: expected a positive length in mm, got {focal_length_mm}")
    geometry = [obj for obj in objects if obj.type in GEOMETRY_TYPES]
    if not geometry:
        raise CaptureError("objects: the orbit rig needs at least one mesh-like object to circle "
                           "(select the objects to capture)")
    triangles = evaluated_triangles(scene_depsgraph(scene), geometry)
    if len(triangles.triangles) == 0:
        names = ", ".join(obj.name for obj in geometry)
        raise CaptureError(f"objects ({names}): the evaluated geometry has no faces to capture")
    low, high = triangles.bounds()
    center = 0.5 * (low + high)
    # Bounding sphere about the box centre (tighter than half the box diagonal).
    used = triangles.vertices[np.unique(triangles.triangles)]
    radius = max(float(np.linalg.norm(used - center, axis=1).max()), 1e-4)
    width, height = resolution if resolution is not None else render_size(scene)
    distance = fit_distance(radius, focal_length_mm, sensor_width_mm, width, height, margin)

    collection = bpy.data.collections.new(collection_name)
    scene.collection.children.link(collection)
    cameras = []
    for index, direction in enumerate(fibonacci_directions(n_views, upper_hemisphere, min_elevation_deg)):
        data = bpy.data.cameras.new(f"RF_View_{index:03d}")
        data.type = "PERSP"
        data.lens = focal_length_mm
        data.sensor_width = sensor_width_mm
        data.sensor_fit = "AUTO"
        # Keep the whole bounding sphere between the clip planes.
        data.clip_start = max(1e-3, 0.5 * (distance - radius))
        data.clip_end = 2.0 * (distance + radius)
        camera = bpy.data.objects.new(f"RF_View_{index:03d}", data)
        camera.matrix_world = Matrix(look_at_camera_to_world(center + distance * direction, center).tolist())
        collection.objects.link(camera)
        cameras.append(camera)
    return OrbitRig(collection, cameras, tuple(float(c) for c in center), radius, distance)


def remove_rig(collection: bpy.types.Collection) -> None:
    """Delete a rig collection made by :func:`create_orbit_rig`, its camera objects and their data."""
    for obj in list(collection.objects):
        data = obj.data if obj.type == "CAMERA" else None
        bpy.data.objects.remove(obj, do_unlink=True)
        if data is not None and data.users == 0:
            bpy.data.cameras.remove(data)
    bpy.data.collections.remove(collection)


# ------------------------------------------------------------------------------------------------
# Intrinsics and extrinsics
# ------------------------------------------------------------------------------------------------


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


def render_size(scene: bpy.types.Scene) -> tuple[int, int]:
    """(width, height) in pixels of the images Blender writes (resolution times percentage)."""
    render = scene.render
    # Blender truncates, as in BKE_render_resolution.
    return (render.resolution_x * render.resolution_percentage // 100,
            render.resolution_y * render.resolution_percentage // 100)


def camera_intrinsics(camera: bpy.types.Object, scene: bpy.types.Scene) -> CameraIntrinsics:
    """Intrinsics of a perspective Blender camera rendering ``scene``'s current render settings.

    Follows Blender's view plane: the sensor (``sensor_width``, or ``sensor_height`` for VERTICAL
    fit; AUTO uses ``sensor_width`` across the longer displayed side) spans the fitted image side;
    lens shift moves the frame by ``shift * fitted side``; non-square pixels (pixel aspect) give
    ``fl_y != fl_x``.
    """
    if camera.type != "CAMERA":
        raise CaptureError(f"camera {camera.name!r}: is a {camera.type.lower()} object, expected a camera")
    data = camera.data
    if data.type != "PERSP":
        raise CaptureError(
            f"camera {camera.name!r}: type is {data.type}; only perspective cameras can be captured "
            "(Camera properties > Lens > Type: Perspective)"
        )
    width, height = render_size(scene)
    if width < 1 or height < 1:
        raise CaptureError(f"resolution: the render size is {width}x{height} pixels; expected at least 1x1")
    aspect_x, aspect_y = scene.render.pixel_aspect_x, scene.render.pixel_aspect_y
    y_per_x = aspect_y / aspect_x  # height of a pixel in units of its width

    fit = data.sensor_fit
    if fit == "AUTO":
        fit = "HORIZONTAL" if width * aspect_x >= height * aspect_y else "VERTICAL"
        sensor_mm = data.sensor_width  # AUTO always spreads the sensor width over the longer side
    else:
        sensor_mm = data.sensor_width if fit == "HORIZONTAL" else data.sensor_height
    # Length of the fitted side, measured in pixel widths.
    fitted_side = float(width) if fit == "HORIZONTAL" else height * y_per_x

    fl_x = data.lens / sensor_mm * fitted_side
    fl_y = fl_x / y_per_x
    # Positive shift moves the frame right/up, so the optical axis lands left of/below the centre.
    cx = 0.5 * width - data.shift_x * fitted_side
    cy = 0.5 * height + data.shift_y * fitted_side / y_per_x
    return CameraIntrinsics(fl_x, fl_y, cx, cy, width, height)


def camera_to_world(camera: bpy.types.Object) -> np.ndarray:
    """(4, 4) camera-to-world of ``camera`` (GL camera frame): its world matrix without scale."""
    c2w = np.array(camera.matrix_world, dtype=np.float64)
    # Blender renders through the normalised matrix; scale would corrupt the inverse the loader takes.
    c2w[:3, :3] /= np.linalg.norm(c2w[:3, :3], axis=0, keepdims=True)
    return c2w


# ------------------------------------------------------------------------------------------------
# Dataset layout
# ------------------------------------------------------------------------------------------------


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

    Intrinsics shared by all views go at the top of each file; when the cameras differ, every
    frame carries its own ``camera_angle_x, fl_x, fl_y, cx, cy, w, h`` (nerfstudio style).
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


def _same_intrinsics(a: CameraIntrinsics, b: CameraIntrinsics, tolerance: float = 1e-9) -> bool:
    return (a.w, a.h) == (b.w, b.h) and all(
        abs(x - y) <= tolerance * max(1.0, abs(y)) for x, y in
        ((a.fl_x, b.fl_x), (a.fl_y, b.fl_y), (a.cx, b.cx), (a.cy, b.cy)))


# ------------------------------------------------------------------------------------------------
# points3d.ply: surface samples coloured from the renders
# ------------------------------------------------------------------------------------------------


def sample_surface_points(
    triangles: SceneTriangles, n_points: int, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Area-uniform random points on the triangles.

    Returns points (N, 3), unit face normals (N, 3) and the owner (N,) of each point (an index
    into ``triangles.owners``).
    """
    corners = triangles.corners
    edge_1, edge_2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    cross = np.cross(edge_1, edge_2)
    double_area = np.linalg.norm(cross, axis=1)
    if double_area.sum() <= 0:
        raise CaptureError("objects: the geometry has zero surface area, no points can be sampled")
    rng = np.random.default_rng(seed)
    chosen = rng.choice(len(corners), size=n_points, p=double_area / double_area.sum())
    # Uniform barycentric coordinates: fold the unit square onto the triangle.
    u, v = rng.random(n_points), rng.random(n_points)
    folded = u + v > 1.0
    u[folded], v[folded] = 1.0 - u[folded], 1.0 - v[folded]
    points = corners[chosen, 0] + u[:, None] * edge_1[chosen] + v[:, None] * edge_2[chosen]
    normals = cross[chosen] / np.maximum(double_area[chosen], 1e-30)[:, None]
    return points, normals, triangles.owner_of_triangle[chosen]


@dataclass
class RenderedView:
    """One written render and the camera that made it."""

    image_path: str
    camera_to_world: np.ndarray  # (4, 4) GL camera frame
    intrinsics: CameraIntrinsics
    clip_start: float
    clip_end: float


def project_points(points: np.ndarray, view: RenderedView) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N, 2) (x right, y down, centres at +0.5) and depth (N,) of world points."""
    w2c_cv = np.linalg.inv(view.camera_to_world @ _GL_TO_CV)
    in_camera = points @ w2c_cv[:3, :3].T + w2c_cv[:3, 3]
    depth = in_camera[:, 2]
    safe_depth = np.where(np.abs(depth) > 1e-12, depth, 1e-12)
    k = view.intrinsics
    pixels = np.stack([k.fl_x * in_camera[:, 0] / safe_depth + k.cx,
                       k.fl_y * in_camera[:, 1] / safe_depth + k.cy], axis=-1)
    return pixels, depth


def choose_views_for_points(
    points: np.ndarray, normals: np.ndarray, point_owners: np.ndarray, views: Sequence[RenderedView],
    occluders: BVHTree, occluder_owners: np.ndarray, scene_radius: float,
) -> list[tuple[int, int, int, int, bool]]:
    """(point, view, pixel row, pixel column, clean) where the view sees the point, up to
    ``VIEWS_PER_POINT`` per point, best-facing views first.

    A view sees a point when the ray through the centre of the pixel the point falls in first hits
    the point's own object close to the point: that rejects occluded points, points behind a
    silhouette edge of another object, and pixels mostly covered by something else. A pair is
    clean when the whole area the pixel filter averages lies on the point's object (its pixel holds
    the pure surface colour); edge pairs (not clean) are only returned for points no view sees cleanly.
    points, normals: (N, 3); point_owners: (N,) and occluder_owners: (T,) indices into one owner list.
    """
    n_points, n_views = len(points), len(views)
    facing = np.full((n_points, n_views), -1.0)
    pixel_index = np.zeros((n_points, n_views, 2), dtype=np.int64)  # (row, column)
    footprint = np.zeros((n_points, n_views))  # size of a pixel on a fronto-parallel surface (m)
    centers = np.stack([view.camera_to_world[:3, 3] for view in views])
    for index, view in enumerate(views):
        pixels, depth = project_points(points, view)
        k = view.intrinsics
        inside = ((depth > view.clip_start) & (depth < view.clip_end)
                  & (pixels[:, 0] >= 0) & (pixels[:, 0] < k.w) & (pixels[:, 1] >= 0) & (pixels[:, 1] < k.h))
        to_camera = centers[index] - points
        to_camera /= np.linalg.norm(to_camera, axis=1, keepdims=True)
        # Two-sided: open surfaces (planes, leaves) are seen from both sides.
        cosine = np.abs(np.einsum("nc,nc->n", to_camera, normals))
        facing[:, index] = np.where(inside & (cosine >= MIN_FACING_COSINE), cosine, -1.0)
        pixel_index[:, index] = np.floor(pixels[:, ::-1]).clip(0).astype(np.int64)
        footprint[:, index] = np.abs(depth) / min(k.fl_x, k.fl_y)
    order = np.argsort(-facing, axis=1)[:, :MAX_RAY_TESTS_PER_POINT]
    epsilon = OCCLUSION_EPSILON_FRACTION * scene_radius
    rotations = np.stack([view.camera_to_world[:3, :3] for view in views])  # (V, 3, 3)
    focal = np.array([(v.intrinsics.fl_x, v.intrinsics.fl_y) for v in views])  # (V, 2)
    principal = np.array([(v.intrinsics.cx, v.intrinsics.cy) for v in views])  # (V, 2)

    def first_hits(view_ids: np.ndarray, xy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """First surface hit (P, 3) and its owner (P,) (-1: none) of the rays through image points
        xy (P, 2) of views view_ids (P,)."""
        # Image point -> OpenCV ray (x right, y down, z forward) -> Blender camera frame (y up, -z forward).
        camera_rays = np.concatenate([(xy - principal[view_ids]) / focal[view_ids] * (1.0, -1.0),
                                      -np.ones((len(view_ids), 1))], axis=1)
        directions = np.einsum("pij,pj->pi", rotations[view_ids], camera_rays)
        directions /= np.linalg.norm(directions, axis=1, keepdims=True)
        hits = np.full((len(view_ids), 3), np.nan)
        owners = np.full(len(view_ids), -1)
        for index, (origin, direction) in enumerate(zip(centers[view_ids].tolist(), directions.tolist())):
            location, _, triangle, _ = occluders.ray_cast(origin, direction)
            if location is not None:
                hits[index] = location
                owners[index] = occluder_owners[triangle]
        return hits, owners

    clean_count = np.zeros(n_points, dtype=np.int64)
    loose_count = np.zeros(n_points, dtype=np.int64)
    clean_pairs, loose_pairs = [], []
    reach = PIXEL_FILTER_HALF_WIDTH
    corner_offsets = [(dx, dy) for dx in (-reach, reach) for dy in (-reach, reach)]
    # Rank by rank over all points at once: rank 0 tries every point's best-facing view, and so on.
    for rank in range(order.shape[1]):
        view_ids = order[:, rank]
        ids = np.flatnonzero((facing[np.arange(n_points), view_ids] >= 0) & (clean_count < VIEWS_PER_POINT))
        if len(ids) == 0:
            break
        view_ids = view_ids[ids]
        rows_columns = pixel_index[ids, view_ids]
        centres_xy = rows_columns[:, ::-1] + 0.5
        hits, hit_owners = first_hits(view_ids, centres_xy)
        # Half a pixel diagonal on the image is about one footprint / cos along a tilted surface;
        # a farther hit on the same object means another part of it is in front.
        tolerance = footprint[ids, view_ids] / facing[ids, view_ids] + epsilon
        close = np.linalg.norm(np.nan_to_num(hits - points[ids], nan=np.inf), axis=1) <= tolerance
        seen = (hit_owners == point_owners[ids]) & close
        # Clean: the corners of the filter's square all see the object (for a convex patch, so does
        # all of it), so the pixel holds the pure surface colour.
        clean = seen.copy()
        for offset in corner_offsets:
            candidates = np.flatnonzero(clean)
            _, corner_owners = first_hits(view_ids[candidates], centres_xy[candidates] + offset)
            clean[candidates] = corner_owners == point_owners[ids[candidates]]
        for index in np.flatnonzero(seen):
            point_index = ids[index]
            pair = (int(point_index), int(view_ids[index]), int(rows_columns[index, 0]), int(rows_columns[index, 1]))
            if clean[index]:
                clean_pairs.append((*pair, True))
                clean_count[point_index] += 1
            elif loose_count[point_index] < VIEWS_PER_POINT:
                loose_pairs.append((*pair, False))
                loose_count[point_index] += 1
    # Edge pixels only for points that no view sees cleanly.
    return clean_pairs + [pair for pair in loose_pairs if clean_count[pair[0]] == 0]


def read_png_rgba(path: str) -> np.ndarray:
    """(H, W, 4) float32 in [0, 1], row 0 at the top, read with Blender's own image loader."""
    image = bpy.data.images.load(path, check_existing=False)
    try:
        width, height = image.size
        pixels = np.empty(width * height * 4, dtype=np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    return pixels.reshape(height, width, 4)[::-1]  # Blender stores the bottom row first


def colour_points(points: np.ndarray, normals: np.ndarray, point_owners: np.ndarray,
                  views: Sequence[RenderedView], occluders: BVHTree, occluder_owners: np.ndarray,
                  scene_radius: float) -> tuple[np.ndarray, np.ndarray]:
    """Colours (N, 3) uint8 from the renders that see each point, and seen (N,) bool.

    Per channel the median over the (up to ``VIEWS_PER_POINT``) views, so one view with a
    highlight does not spoil the colour. Only clean pixels (wholly on the point's object) count,
    unless an object has no clean pixel at all (too small in every view): then its edge pixels do.
    Unseen points are left for :func:`fill_unseen_colours`.
    """
    pairs = choose_views_for_points(points, normals, point_owners, views, occluders, occluder_owners, scene_radius)
    owners_seen_cleanly = {point_owners[pair[0]] for pair in pairs if pair[4]}
    pairs = [pair for pair in pairs if pair[4] or point_owners[pair[0]] not in owners_seen_cleanly]
    samples = np.full((len(points), VIEWS_PER_POINT, 3), np.nan)
    filled = np.zeros(len(points), dtype=np.int64)
    by_view: dict[int, list[tuple[int, int, int]]] = {}
    for point_index, view_index, row, column, _ in pairs:
        by_view.setdefault(view_index, []).append((point_index, row, column))
    for view_index, entries in sorted(by_view.items()):
        image = read_png_rgba(views[view_index].image_path)
        ids, rows, columns = (np.array(values) for values in zip(*entries))
        rgba = image[rows.clip(0, image.shape[0] - 1), columns.clip(0, image.shape[1] - 1)]
        on_surface = rgba[:, 3] > ALPHA_SURFACE_THRESHOLD  # skip half-covered silhouette pixels
        for point_index, colour in zip(ids[on_surface], rgba[on_surface, :3]):
            if filled[point_index] < VIEWS_PER_POINT:
                samples[point_index, filled[point_index]] = colour
                filled[point_index] += 1
    seen = filled > 0
    colours = np.tile(np.array(UNSEEN_POINT_RGB, dtype=np.float64), (len(points), 1))
    colours[seen] = 255.0 * np.nanmedian(samples[seen], axis=1)
    return np.clip(np.round(colours), 0, 255).astype(np.uint8), seen


def fill_unseen_colours(points: np.ndarray, owners: np.ndarray, colours: np.ndarray, seen: np.ndarray) -> np.ndarray:
    """Give each unseen point the colour of the nearest seen point of the same object.

    Points no camera sees well (e.g. in a narrow gap between two objects) still seed Gaussians,
    so a plausible neighbour colour beats a flat grey. points: (N, 3), owners: (N,), colours: (N, 3)
    uint8, seen: (N,) bool. Returns new colours (N, 3) uint8.
    """
    filled = colours.copy()
    for owner in np.unique(owners[~seen]):
        of_owner = owners == owner
        donors = np.flatnonzero(of_owner & seen)
        if len(donors) == 0:
            continue  # the whole object is hidden: keep the neutral colour
        tree = KDTree(len(donors))
        for slot, index in enumerate(donors):
            tree.insert(points[index], slot)
        tree.balance()
        for index in np.flatnonzero(of_owner & ~seen):
            _, slot, _ = tree.find(points[index])
            filled[index] = colours[donors[slot]]
    return filled


def write_points_ply(path: str, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Binary little-endian PLY point cloud: x y z float32, red green blue uint8; no faces.

    xyz: (N, 3), rgb: (N, 3) uint8. Written to a temporary name, then renamed.
    """
    xyz = np.asarray(xyz)
    rgb = np.asarray(rgb)
    if xyz.ndim != 2 or xyz.shape[1] != 3 or rgb.shape != xyz.shape:
        raise ValueError(f"write_points_ply: expected xyz (N, 3) and rgb (N, 3), got {xyz.shape} and {rgb.shape}")
    record = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")])
    vertices = np.empty(len(xyz), dtype=record)
    vertices["x"], vertices["y"], vertices["z"] = xyz[:, 0], xyz[:, 1], xyz[:, 2]
    vertices["red"], vertices["green"], vertices["blue"] = rgb[:, 0], rgb[:, 1], rgb[:, 2]
    header = (
        "ply\nformat binary_little_endian 1.0\ncomment written by Radiant Forge (Blender capture)\n"
        f"element vertex {len(xyz)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    temporary = f"{path}.partial"
    with open(temporary, "wb") as handle:
        handle.write(header.encode("ascii"))
        handle.write(vertices.tobytes())
    os.replace(temporary, path)


# ------------------------------------------------------------------------------------------------
# Rendering with temporary scene settings
# ------------------------------------------------------------------------------------------------


class SettingsOverride:
    """Sets attributes on Blender data and puts the old values back, in the order they were set."""

    def __init__(self):
        self._saved: list[tuple[object, str, object]] = []

    def set(self, owner, attribute: str, value) -> None:
        old = getattr(owner, attribute)
        if old == value:
            return
        self._saved.append((owner, attribute, old))
        setattr(owner, attribute, value)

    def remember(self, owner, attribute: str) -> None:
        """Put ``attribute`` back at the end even though it is changed elsewhere (e.g. scene.camera)."""
        self._saved.append((owner, attribute, getattr(owner, attribute)))

    def restore(self) -> list[str]:
        """Restore everything; returns messages for values that could not be put back."""
        problems = []
        # Forward order: enum pairs such as media_type -> file_format must be restored in that order.
        for owner, attribute, old in self._saved:
            try:
                setattr(owner, attribute, old)
            except (AttributeError, TypeError, ValueError, ReferenceError) as error:
                problems.append(f"{attribute}: {error}")
        self._saved.clear()
        return problems


@dataclass
class CaptureSettings:
    """How to render and write a capture.

    engine: None = the scene's engine, else one of ENGINES.
    resolution: (width, height) in pixels, None = the scene's render size (percentage applied).
    samples: render samples for Cycles / EEVEE (None = the scene's).
    test_every: every k-th view (0, k, 2k, ...) goes to the test split.
    n_points: points sampled for points3d.ply (0 = do not write it).
    point_objects: objects whose surface is sampled, None = everything that renders.
    hide_other_objects: hide geometry outside ``point_objects`` from the renders during capture.
    """

    engine: str | None = None
    resolution: tuple[int, int] | None = None
    samples: int | None = None
    test_every: int = 8
    n_points: int = 20000
    seed: int = 0
    point_objects: Sequence[bpy.types.Object] | None = None
    hide_other_objects: bool = False
    overwrite: bool = False


@dataclass
class CaptureProgress:
    """What one step of :func:`capture_dataset` did. ``stage``: render, points, write, done."""

    stage: str
    step: int
    total: int
    message: str
    elapsed_s: float
    summary: "CaptureSummary | None" = None

    @property
    def fraction(self) -> float:
        return self.step / self.total if self.total else 1.0


@dataclass
class CaptureSummary:
    out_dir: str
    n_train: int
    n_test: int
    width: int
    height: int
    engine: str
    n_points: int
    n_points_coloured: int
    seconds: float
    files: list[str] = field(default_factory=list)


def check_output_folder(out_dir: str, overwrite: bool) -> None:
    """Refuse to write into an existing file or a non-empty folder unless ``overwrite``."""
    if os.path.isfile(out_dir):
        raise CaptureError(f"output {out_dir}: is a file, expected a folder path")
    if os.path.isdir(out_dir) and os.listdir(out_dir) and not overwrite:
        raise CaptureError(f"output {out_dir}: folder exists and is not empty; choose another folder "
                           "or allow overwriting")


def _running_eevee_id(render) -> str:
    """The EEVEE engine id this Blender knows (see EEVEE_IDS)."""
    known = {item.identifier for item in render.bl_rna.properties["engine"].enum_items}
    for engine_id in EEVEE_IDS:
        if engine_id in known:
            return engine_id
    return EEVEE_IDS[0]


def _apply_render_settings(scene: bpy.types.Scene, settings: CaptureSettings, override: SettingsOverride) -> str:
    """Set up the scene for faithful dataset renders; returns the engine used."""
    render = scene.render
    engine = settings.engine or render.engine
    if engine not in ENGINES and engine not in EEVEE_IDS:
        raise CaptureError(f"engine: {engine!r} is not supported; expected one of {', '.join(ENGINES)}")
    if engine in EEVEE_IDS:
        engine = _running_eevee_id(render)
    override.set(render, "engine", engine)
    if settings.resolution is not None:
        width, height = (int(v) for v in settings.resolution)
        if width < 1 or height < 1:
            raise CaptureError(f"resolution: expected positive width and height, got {width}x{height}")
        override.set(render, "resolution_x", width)
        override.set(render, "resolution_y", height)
        override.set(render, "resolution_percentage", 100)
    override.set(render, "film_transparent", True)
    # Anything that changes the picture after or around the camera would break the camera model.
    override.set(render, "use_border", False)
    override.set(render, "use_multiview", False)
    override.set(render, "use_compositing", False)
    override.set(render, "use_sequencer", False)
    override.set(render, "use_motion_blur", False)
    override.set(render, "use_file_extension", True)
    # The date and render time stamped into each PNG would make identical captures differ byte-wise.
    override.set(render, "use_stamp_date", False)
    override.set(render, "use_stamp_render_time", False)
    image = render.image_settings
    if hasattr(image, "media_type"):  # Blender 5.0 groups formats by media type
        override.set(image, "media_type", "IMAGE")
    override.set(image, "file_format", "PNG")
    override.set(image, "color_mode", "RGBA")
    override.set(image, "color_depth", "8")
    override.set(image, "color_management", "FOLLOW_SCENE")
    if settings.samples is not None:
        if settings.samples < 1:
            raise CaptureError(f"samples: expected at least 1, got {settings.samples}")
        if engine == "CYCLES":
            override.set(scene.cycles, "samples", int(settings.samples))
        elif engine in EEVEE_IDS:
            override.set(scene.eevee, "taa_render_samples", int(settings.samples))
    if settings.hide_other_objects and settings.point_objects is not None:
        keep = {obj.name for obj in settings.point_objects}
        for obj in renderable_geometry_objects(scene):
            if obj.name not in keep:
                override.set(obj, "hide_render", True)
    return engine


def _render_view(scene: bpy.types.Scene, camera: bpy.types.Object, path_without_extension: str) -> str:
    scene.camera = camera
    scene.render.filepath = path_without_extension
    bpy.ops.render.render(write_still=True, scene=scene.name)
    written = path_without_extension + ".png"
    if not os.path.isfile(written):
        raise CaptureError(f"render of camera {camera.name!r}: Blender wrote no image at {written}")
    return written


def capture_dataset(
    scene: bpy.types.Scene,
    cameras: Sequence[bpy.types.Object],
    out_dir: str,
    settings: CaptureSettings | None = None,
) -> Iterator[CaptureProgress]:
    """Render every camera and write a NeRF-synthetic dataset into ``out_dir``, one view per step.

    A generator: each ``next()`` renders one view and yields a :class:`CaptureProgress`; the last
    item has ``stage == "done"`` and a :class:`CaptureSummary`. Everything is written into a hidden
    sibling folder that is renamed to ``out_dir`` at the end, so an error or ``close()`` (cancel)
    leaves no half-written dataset; scene settings are restored either way.
    """
    settings = settings or CaptureSettings()
    started = time.perf_counter()
    out_dir = os.path.abspath(out_dir)
    cameras = list(cameras)
    if not cameras:
        raise CaptureError("cameras: no cameras to capture")
    for camera in cameras:  # fail before rendering anything
        if camera.type != "CAMERA" or camera.data.type != "PERSP":
            camera_intrinsics(camera, scene)
    splits = split_views(len(cameras), settings.test_every)
    if settings.n_points < 0:
        raise CaptureError(f"points: expected 0 or more, got {settings.n_points}")
    check_output_folder(out_dir, settings.overwrite)
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{os.path.basename(out_dir)}.capturing-", dir=parent)

    override = SettingsOverride()
    override.remember(scene, "camera")  # every view sets it
    finished = False
    try:
        engine = _apply_render_settings(scene, settings, override)
        intrinsics = [camera_intrinsics(camera, scene) for camera in cameras]
        width, height = intrinsics[0].w, intrinsics[0].h
        camera_to_worlds = [camera_to_world(camera) for camera in cameras]
        for split in (TRAIN_SPLIT, TEST_SPLIT):
            os.makedirs(os.path.join(staging, split))

        views: list[RenderedView] = []
        for index, camera in enumerate(cameras):
            view_started = time.perf_counter()
            path = _render_view(scene, camera, os.path.join(staging, splits[index], f"r_{index}"))
            views.append(RenderedView(path, camera_to_worlds[index], intrinsics[index],
                                      camera.data.clip_start, camera.data.clip_end))
            yield CaptureProgress(
                "render", index + 1, len(cameras),
                f"rendered view {index + 1}/{len(cameras)} ({splits[index]}/r_{index}, {camera.name}) "
                f"in {time.perf_counter() - view_started:.2f} s",
                time.perf_counter() - started)

        n_coloured = 0
        if settings.n_points > 0:
            depsgraph = scene_depsgraph(scene)
            depsgraph.update()  # hide_render may have changed
            occluders = evaluated_triangles(depsgraph)
            samples_from = (occluders if settings.point_objects is None
                            else evaluated_triangles(depsgraph, settings.point_objects))
            if len(samples_from.triangles) == 0:
                raise CaptureError("objects: no mesh objects with faces render in this scene; "
                                   "nothing to sample for points3d.ply")
            low, high = occluders.bounds()
            scene_radius = max(0.5 * float(np.linalg.norm(high - low)), 1e-6)
            points, normals, owners = sample_surface_points(samples_from, settings.n_points, settings.seed)
            bvh = BVHTree.FromPolygons(occluders.vertices.tolist(), occluders.triangles.tolist(),
                                       all_triangles=True)
            # One owner numbering for sampled points and occluder triangles.
            point_owners = np.array([occluders.owners.index(samples_from.owners[o]) for o in owners])
            colours, seen = colour_points(points, normals, point_owners, views, bvh,
                                          occluders.owner_of_triangle, scene_radius)
            colours = fill_unseen_colours(points, owners, colours, seen)
            n_coloured = int(seen.sum())
            write_points_ply(os.path.join(staging, "points3d.ply"), points, colours)
            yield CaptureProgress("points", 1, 1,
                                  f"sampled {len(points)} surface points, {n_coloured} seen in the renders "
                                  f"(the rest take their nearest seen neighbour's colour)",
                                  time.perf_counter() - started)

        extra = {"generator": "radiantforge_addon.capture", "blender": bpy.app.version_string,
                 "engine": engine, "test_every": settings.test_every}
        contents = build_transforms(splits, intrinsics, camera_to_worlds, [c.name for c in cameras], extra)
        for split, content in contents.items():
            with open(os.path.join(staging, f"transforms_{split}.json"), "w", encoding="utf-8") as handle:
                json.dump(content, handle, indent=2)
        _move_into_place(staging, out_dir, settings.overwrite)
        finished = True
        files = sorted(os.path.relpath(os.path.join(root, name), out_dir)
                       for root, _, names in os.walk(out_dir) for name in names)
        summary = CaptureSummary(out_dir, splits.count(TRAIN_SPLIT), splits.count(TEST_SPLIT), width, height,
                                 engine, settings.n_points, n_coloured, time.perf_counter() - started, files)
        yield CaptureProgress("done", len(cameras), len(cameras),
                              f"wrote {out_dir}: {summary.n_train} train + {summary.n_test} test views "
                              f"at {width}x{height}, {settings.n_points} points",
                              summary.seconds, summary)
    finally:
        override.restore()
        if not finished:
            shutil.rmtree(staging, ignore_errors=True)


def _move_into_place(staging: str, out_dir: str, overwrite: bool) -> None:
    """Rename the finished staging folder to ``out_dir``; an old dataset is only removed after."""
    check_output_folder(out_dir, overwrite)  # something may have appeared while rendering
    previous = None
    if os.path.isdir(out_dir):
        if os.listdir(out_dir):
            previous = f"{out_dir}.replaced-{uuid.uuid4().hex[:8]}"
            os.rename(out_dir, previous)
        else:
            os.rmdir(out_dir)
    os.rename(staging, out_dir)
    if previous is not None:
        shutil.rmtree(previous, ignore_errors=True)


def run_capture(scene, cameras, out_dir, settings: CaptureSettings | None = None, on_progress=None) -> CaptureSummary:
    """Blocking capture (headless scripts, ``blender --background``): runs :func:`capture_dataset`."""
    summary = None
    for progress in capture_dataset(scene, cameras, out_dir, settings):
        if on_progress is not None:
            on_progress(progress)
        summary = progress.summary or summary
    return summary

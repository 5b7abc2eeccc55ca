"""Capture a Blender scene as a NeRF-synthetic dataset: cameras, renders, transforms JSON, points3d.ply.

Plain functions on ``bpy`` that the add-on's operators and ``radiantforge_addon.headless`` call:
they read the scene (evaluated triangles, cameras, render settings), render, and hand the numbers to
the bpy-free ``io`` package, which holds the formats and the geometry (``io.nerf``: intrinsics and
transforms files, ``io.cameras``: camera matrices, ``io.points``: surface points and their colours,
``io.ply``: points3d.ply). Only ``bpy``, ``mathutils``, numpy and the standard library are used
(never torch).

What a capture writes (the ``data/`` folder of a job, see DESIGN.md)::

    transforms_train.json   camera_angle_x, fl_x, fl_y, cx, cy, w, h, frames[file_path, transform_matrix]
    transforms_test.json    the same for every ``test_every``-th view (view 0, k, 2k, ...)
    train/r_<view>.png      RGBA renders (transparent film), <view> = index of the view in the capture
    test/r_<view>.png
    points3d.ply            binary point cloud (x y z float, red green blue uchar), no faces

Conventions (shared with the backend's loader): see ``io.nerf``. ``transform_matrix`` is the
camera's world matrix; Blender ignores a camera's scale when it renders, so the scale is divided
out of the rotation columns (a no-op for unscaled cameras).

The render step is a generator (:func:`capture_dataset`) that renders one view per ``next()``, so
a modal operator can show progress and cancel between views; closing the generator (or any error)
restores every scene setting it changed and removes the half-written folder.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import bpy
import numpy as np
from mathutils import Matrix, Vector
from mathutils.bvhtree import BVHTree
from mathutils.kdtree import KDTree

from .io.cameras import (camera_to_world_without_scale, fibonacci_directions, find_floor, fit_distance,
                         look_at_camera_to_world)
from .io.job_folder import DATA_DIR, GAUSSIANS_KIND, POINTS_FILE, remove_unfinished_job, write_job_file
from .io.nerf import (TEST_SPLIT, TRAIN_SPLIT, CameraIntrinsics, CaptureError, build_transforms, intrinsics_from_lens,
                      split_views, write_transforms)
from .io.ply import write_points_ply
from .io.results import CAPTURED_OBJECTS_KEY
from .io.points import RenderedView, SceneTriangles, colour_points, sample_surface_points

# Object types whose evaluated geometry is a surface (``Object.to_mesh()`` works for all of them).
GEOMETRY_TYPES = frozenset({"MESH", "CURVE", "SURFACE", "META", "FONT"})

# Render engine ids of Blender 4.2+ / 5.0 that the capture accepts.
ENGINES = ("BLENDER_WORKBENCH", "CYCLES", "BLENDER_EEVEE")
# "Fast Cycles" (the add-on's default): Cycles with few samples, adaptive sampling and denoising.
# Without a GPU, EEVEE takes 15-75 s a view and Cycles at the scene's default 4096 samples minutes;
# this preset renders a view in seconds with the Cycles look (lights, textures, shadows).
FAST_CYCLES = "FAST_CYCLES"
FAST_CYCLES_SAMPLES = 32
# EEVEE's engine id was BLENDER_EEVEE_NEXT in Blender 4.2-4.4 and is BLENDER_EEVEE again from 5.0.
EEVEE_IDS = ("BLENDER_EEVEE", "BLENDER_EEVEE_NEXT")

# ------------------------------------------------------------------------------------------------
# Scene geometry
# ------------------------------------------------------------------------------------------------


# On a splat object (set by importers.gaussians): how many splats it holds.
SPLAT_COUNT_KEY = "radiantforge_splat_count"


def renderable_geometry_objects(scene: bpy.types.Scene) -> list[bpy.types.Object]:
    """Objects of the scene's view layer that render as surfaces (geometry types, not hidden in render)."""
    view_layer = bpy.context.view_layer if bpy.context.scene == scene else scene.view_layers[0]
    # A view layer lists a just-removed object (a capture rig, a cancelled import) as None until
    # it is next evaluated.
    return [
        obj
        for obj in view_layer.objects
        if obj is not None and obj.type in GEOMETRY_TYPES and not obj.hide_render
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


def render_size(scene: bpy.types.Scene) -> tuple[int, int]:
    """(width, height) in pixels of the images Blender writes (resolution times percentage)."""
    render = scene.render
    # Blender truncates, as in BKE_render_resolution.
    return (render.resolution_x * render.resolution_percentage // 100,
            render.resolution_y * render.resolution_percentage // 100)


def camera_intrinsics(camera: bpy.types.Object, scene: bpy.types.Scene) -> CameraIntrinsics:
    """Intrinsics of a perspective Blender camera rendering ``scene``'s current render settings
    (lens, sensor and fit, shift, render size and pixel aspect: see ``io.nerf.intrinsics_from_lens``)."""
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
    return intrinsics_from_lens(data.lens, data.sensor_width, data.sensor_height, data.sensor_fit, width, height,
                                data.shift_x, data.shift_y, (scene.render.pixel_aspect_x, scene.render.pixel_aspect_y))


def camera_to_world(camera: bpy.types.Object) -> np.ndarray:
    """(4, 4) camera-to-world of ``camera`` (GL camera frame): its world matrix without scale."""
    return camera_to_world_without_scale(camera.matrix_world)


# ------------------------------------------------------------------------------------------------
# points3d.ply: surface samples coloured from the renders
# ------------------------------------------------------------------------------------------------


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

    engine: None = the scene's engine, else one of ENGINES or FAST_CYCLES (Cycles, FAST_CYCLES_SAMPLES
      samples unless ``samples`` says otherwise, adaptive sampling, denoising).
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
    fast = engine == FAST_CYCLES
    if fast:
        engine = "CYCLES"
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
    if fast:
        override.set(scene.cycles, "samples", int(settings.samples or FAST_CYCLES_SAMPLES))
        override.set(scene.cycles, "use_adaptive_sampling", True)
        override.set(scene.cycles, "use_denoising", True)
    elif settings.samples is not None:
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
                                          occluders.owner_of_triangle, scene_radius, read_png_rgba)
            colours = fill_unseen_colours(points, owners, colours, seen)
            n_coloured = int(seen.sum())
            write_points_ply(os.path.join(staging, POINTS_FILE), points, colours)
            yield CaptureProgress("points", 1, 1,
                                  f"sampled {len(points)} surface points, {n_coloured} seen in the renders "
                                  f"(the rest take their nearest seen neighbour's colour)",
                                  time.perf_counter() - started)

        # The objects the views show: the import hides them under the splats that stand in for them.
        extra = {"generator": "radiantforge_addon.capture", "blender": bpy.app.version_string,
                 "engine": engine, "test_every": settings.test_every,
                 CAPTURED_OBJECTS_KEY: [obj.name for obj in renderable_geometry_objects(scene)]}
        write_transforms(staging, build_transforms(splits, intrinsics, camera_to_worlds, [c.name for c in cameras], extra))
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


# ------------------------------------------------------------------------------------------------
# A Gaussian job's folder from a capture
# ------------------------------------------------------------------------------------------------

RIG_COLLECTION_NAME = "RadiantForge Cameras"


def world_bounds(obj: bpy.types.Object) -> tuple[np.ndarray, np.ndarray]:
    """(low (3,), high (3,)): the world-space box around ``obj``'s bounding box corners."""
    corners = np.array([obj.matrix_world @ Vector(corner) for corner in obj.bound_box], dtype=np.float64)
    return corners.min(axis=0), corners.max(axis=0)


def scene_floor(scene: bpy.types.Scene, subjects: Sequence[bpy.types.Object]) -> bpy.types.Object | None:
    """The object of ``scene`` the ``subjects`` stand on (a large flat one under them all), or None."""
    boxes = {obj.name: world_bounds(obj) for obj in renderable_geometry_objects(scene)}
    name = find_floor(boxes, [obj.name for obj in subjects])
    return bpy.data.objects[name] if name is not None else None


def capture_originals_not_splats(scene: bpy.types.Scene, override: "SettingsOverride") -> None:
    """A capture renders what the scene's splat objects stand in for, never the splats: an imported
    result hides its originals (``importers.originals``), and capturing again must see them."""
    from .importers import originals

    for obj in scene.objects:
        if obj.get(SPLAT_COUNT_KEY) is None:
            continue
        override.set(obj, "hide_render", True)
        if obj.get(originals.HIDDEN_KEY):
            for original in originals.originals_of(obj):
                override.set(original, "hide_render", False)
                override.set(original, "hide_viewport", False)  # the evaluated scene holds visible objects only


@dataclass
class CapturePlan:
    """What to capture: ``cameras`` (e.g. a collection's), or an orbit rig around ``objects``."""

    scene: bpy.types.Scene
    cameras: Sequence[bpy.types.Object] | None = None
    objects: Sequence[bpy.types.Object] | None = None
    view_count: int = 48
    # None: the upper hemisphere when the objects stand on a floor (scene_floor), else the whole sphere.
    upper_hemisphere: bool | None = None
    focal_length_mm: float = 50.0
    keep_rig: bool = False
    settings: CaptureSettings = field(default_factory=CaptureSettings)

    def write_job(self, job_dir: str | os.PathLike, params: dict[str, Any]) -> Iterator[CaptureProgress]:
        """Write job.json (kind "gaussians") and render data/ view by view: a generator, one view per
        ``next()``. An error or ``close()`` (cancel) leaves no half-made job behind (only what this
        made is removed); an orbit rig is removed at the end unless ``keep_rig``."""
        job_dir = Path(job_dir)
        write_job_file(job_dir, GAUSSIANS_KIND, params)
        rig = None
        stand_ins = SettingsOverride()
        try:
            capture_originals_not_splats(self.scene, stand_ins)
            cameras = list(self.cameras or [])
            if not cameras:
                objects = list(self.objects or []) or renderable_geometry_objects(self.scene)
                upper = self.upper_hemisphere
                if upper is None:
                    floor = scene_floor(self.scene, objects)
                    upper = floor is not None
                    yield CaptureProgress("cameras", 0, 1, f"orbit over the upper hemisphere: the objects stand on "
                                          f"{floor.name!r}" if upper else "orbit over the whole sphere (no floor found)",
                                          0.0)
                rig = create_orbit_rig(self.scene, objects, n_views=self.view_count,
                                       focal_length_mm=self.focal_length_mm, resolution=self.settings.resolution,
                                       upper_hemisphere=upper, collection_name=RIG_COLLECTION_NAME)
                cameras = rig.cameras
            views = capture_dataset(self.scene, cameras, str(job_dir / DATA_DIR), self.settings)
            try:
                yield from views
            finally:
                views.close()  # removes a half-written dataset, restores scene settings
        except BaseException:
            remove_unfinished_job(job_dir)
            raise
        finally:
            if rig is not None and not self.keep_rig:
                remove_rig(rig.collection)
            stand_ins.restore()

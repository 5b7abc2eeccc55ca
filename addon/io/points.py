"""The surface points of a capture (``points3d.ply``): area-uniform samples, coloured from the renders.

Plain numpy; the Blender side hands in what needs Blender: the evaluated triangles, a ray caster
(``mathutils.bvhtree.BVHTree`` has the ``ray_cast`` this module calls) and an image reader.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Protocol, Sequence

import numpy as np

from .cameras import project_points
from .nerf import CameraIntrinsics, CaptureError

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


class RayCaster(Protocol):
    """What :func:`choose_views_for_points` needs of the occluding geometry (a BVHTree of the triangles)."""

    def ray_cast(self, origin, direction):
        """(location or None, normal, triangle index, distance) of the first hit."""


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


def choose_views_for_points(
    points: np.ndarray, normals: np.ndarray, point_owners: np.ndarray, views: Sequence[RenderedView],
    occluders: RayCaster, occluder_owners: np.ndarray, scene_radius: float,
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
        pixels, depth = project_points(points, view.camera_to_world, view.intrinsics)
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


def colour_points(points: np.ndarray, normals: np.ndarray, point_owners: np.ndarray,
                  views: Sequence[RenderedView], occluders: RayCaster, occluder_owners: np.ndarray,
                  scene_radius: float, read_image: Callable[[str], np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Colours (N, 3) uint8 from the renders that see each point, and seen (N,) bool.

    Per channel the median over the (up to ``VIEWS_PER_POINT``) views, so one view with a
    highlight does not spoil the colour. Only clean pixels (wholly on the point's object) count,
    unless an object has no clean pixel at all (too small in every view): then its edge pixels do.
    Unseen points are left for ``capture.fill_unseen_colours``. read_image: a render's path ->
    (H, W, 4) float RGBA in [0, 1], row 0 at the top.
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
        image = read_image(views[view_index].image_path)
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


"""Visibility buffer of a triangle mesh: which triangle each pixel sees, where on it, how far away.

This step has no gradients (the geometry is fixed while a texture is optimised), so its result
can be computed once per camera and cached (:class:`VisibilityCache`); everything differentiable
happens afterwards in :mod:`radiantforge.mesh.shading`.

Cameras are :class:`radiantforge.cameras.Cameras`; rendering happens in the OpenCV camera frame
(``cameras.world_to_camera_cv()``: +Z forward, +Y down). Pixel (row i, column j) is sampled at
its centre, image coordinates (j + 0.5, i + 0.5).

How it works (pure PyTorch, the same code on cpu / cuda / mps, never F x H x W):

1. Homogeneous edge functions. For the ray ``d = ((u - cx) / fx, (v - cy) / fy, 1)`` through the
   pixel centre (u, v) and a triangle P0 P1 P2 in camera space, ``e_i = d . (P_j x P_k)`` with
   (i, j, k) cyclic. The ray's line meets the triangle iff e0, e1, e2 all share the sign of
   ``E = e0 + e1 + e2 = d . N`` (N the plane normal); then ``e_i / E`` are the exact
   (perspective-correct) barycentrics of the hit and ``z = det(P0, P1, P2) / E`` is its
   camera-space depth. Nothing is divided by a vertex
   depth, so a triangle crossing the camera plane needs no clipping: a pixel keeps a hit only when
   ``near < z < far`` (near-plane clipping done exactly, per pixel). The same edge seen from its
   two triangles gives exactly negated e values, so shared edges leave no cracks.
2. Candidates. Each triangle gets the screen bounding box of its part in front of the near plane
   (its vertices in front plus the points where its edges cross the near plane, so nothing blows
   up), clamped to the image. Boxes are grouped by size class (1, 2, 3, 4, 6, 8, 12, ... pixels
   per side) and each group is tested as dense (triangles, rows, columns) blocks, in chunks that
   bound memory: per-pixel work is broadcast arithmetic with no gathers. Nothing is dropped for
   being large: a triangle covering the whole image is one H x W block.
3. Z-buffer. Every hit writes the 64-bit key ``(float bits of z) << 32 | pair index`` with
   ``scatter_reduce(amin)``: positive float32 bit patterns order like the floats, so the nearest
   hit wins, and equal depths go to the lower triangle id (pairs are ordered by camera, then
   triangle) on every device. Edge coefficients are only computed for the (camera, triangle)
   pairs whose box holds a pixel centre, so sub-pixel triangles of dense meshes cost little.
4. The winners' barycentrics and depth are recomputed from their edge functions.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import torch
from torch import Tensor

from radiantforge.cameras import Cameras
from radiantforge.errors import InputError

DEFAULT_NEAR = 1e-3  # metres: hits closer to the camera plane than this are clipped
# (triangle, pixel) candidates tested at once. On the CPU: below torch's intra-op grain size, so
# each step runs on one thread (fork/join of tiny ops cost more than it gained, 10x more on a
# loaded 2-core machine) and temporaries stay near 128 KB. On GPUs: big enough to fill the device.
CPU_CANDIDATE_CHUNK = 1 << 15
GPU_CANDIDATE_CHUNK = 1 << 21
# The bounding boxes only choose candidates; the exact edge test decides. Widening them by a
# hundredth of a pixel keeps float rounding in the projection from ever losing a pixel centre.
BBOX_PAD_PX = 1e-2
_EMPTY_KEY = torch.iinfo(torch.int64).max  # z-buffer entry of a pixel nothing covers
_PAIR_BITS = 32  # low bits of a z-buffer key: index of the (camera, triangle) pair
_PAIR_MASK = (1 << _PAIR_BITS) - 1


@dataclass
class VisibilityBuffer:
    """What each pixel of each camera sees (at ``supersample`` times the camera resolution).

    tri_ids: (C, H, W) int64 index into the faces, -1 where nothing is hit (background).
    bary: (C, H, W, 3) float32 perspective-correct barycentrics of ``faces[tri_ids]``'s three
        vertices at the hit (they sum to 1); 0 on the background.
    depth: (C, H, W) float32 camera-space depth z (OpenCV, distance along the optical axis);
        0 on the background.
    supersample: samples per pixel along each axis; H and W are the cameras' size times this.
    front_facing: (C, H, W) bool, True where the triangle's front (counter-clockwise side, where
        its normal points) faces the camera; None if unknown.
    """

    tri_ids: Tensor
    bary: Tensor
    depth: Tensor
    supersample: int = 1
    front_facing: Tensor | None = None
    _fragments: "Fragments | None" = field(default=None, init=False, repr=False, compare=False)

    @property
    def mask(self) -> Tensor:
        """(C, H, W) bool: True where a triangle is hit."""
        return self.tri_ids >= 0

    @property
    def num_cameras(self) -> int:
        return self.tri_ids.shape[0]

    @property
    def height(self) -> int:
        return self.tri_ids.shape[1]

    @property
    def width(self) -> int:
        return self.tri_ids.shape[2]

    @property
    def device(self) -> torch.device:
        return self.tri_ids.device

    def fragments(self) -> "Fragments":
        """The covered pixels only, flattened: what the shading functions work on (computed once)."""
        if self._fragments is None:
            self._fragments = self._gather_fragments()
        return self._fragments

    def _gather_fragments(self) -> "Fragments":
        flat_ids = self.tri_ids.reshape(-1)
        pixel = torch.nonzero(flat_ids >= 0).squeeze(1)
        camera = torch.div(pixel, self.height * self.width, rounding_mode="floor")
        return Fragments(
            pixel=pixel,
            camera=camera,
            tri_ids=flat_ids.index_select(0, pixel),
            bary=self.bary.reshape(-1, 3).index_select(0, pixel),
            depth=self.depth.reshape(-1).index_select(0, pixel),
            front_facing=None if self.front_facing is None else self.front_facing.reshape(-1).index_select(0, pixel),
        )

    def to(self, device) -> "VisibilityBuffer":
        front = None if self.front_facing is None else self.front_facing.to(device)
        return VisibilityBuffer(self.tri_ids.to(device), self.bary.to(device), self.depth.to(device),
                                self.supersample, front)

    def select(self, cameras: slice) -> "VisibilityBuffer":
        """The buffer of some of the cameras (a slice of the first axis)."""
        front = None if self.front_facing is None else self.front_facing[cameras]
        return VisibilityBuffer(self.tri_ids[cameras], self.bary[cameras], self.depth[cameras], self.supersample, front)

    @staticmethod
    def cat(buffers: list["VisibilityBuffer"]) -> "VisibilityBuffer":
        """Stack the cameras of several buffers of the same size into one buffer."""
        known = all(b.front_facing is not None for b in buffers)
        return VisibilityBuffer(
            torch.cat([b.tri_ids for b in buffers]),
            torch.cat([b.bary for b in buffers]),
            torch.cat([b.depth for b in buffers]),
            buffers[0].supersample,
            torch.cat([b.front_facing for b in buffers]) if known else None,
        )


@dataclass
class Fragments:
    """The covered pixels of a :class:`VisibilityBuffer`, N of them, in flat pixel order.

    pixel: (N,) int64 flat index into (C, H, W); camera: (N,) int64 camera of each fragment;
    tri_ids: (N,) int64; bary: (N, 3) float32; depth: (N,) float32; front_facing: (N,) bool or None.
    """

    pixel: Tensor
    camera: Tensor
    tri_ids: Tensor
    bary: Tensor
    depth: Tensor
    front_facing: Tensor | None = None


def check_triangles(vertices: Tensor, faces: Tensor) -> tuple[Tensor, Tensor]:
    """Validate mesh tensors: vertices (V, 3) finite floats, faces (F, 3) integer indices < V.

    Returns them as float32 / int64 on the vertices' device; raises :class:`InputError` naming the field.
    """
    vertices = torch.as_tensor(vertices)
    faces = torch.as_tensor(faces, device=vertices.device)
    if vertices.ndim != 2 or vertices.shape[1] != 3:
        raise InputError(f"expected shape (V, 3), got {tuple(vertices.shape)}", field="vertices")
    if not vertices.is_floating_point():
        raise InputError(f"expected floating point coordinates, got {vertices.dtype}", field="vertices")
    if not torch.isfinite(vertices).all():
        raise InputError("contains NaN or infinite coordinates", field="vertices")
    if faces.ndim != 2 or faces.shape[1] != 3:
        raise InputError(f"expected shape (F, 3) (triangles), got {tuple(faces.shape)}", field="faces")
    if faces.is_floating_point() or faces.dtype == torch.bool:
        raise InputError(f"expected integer vertex indices, got {faces.dtype}", field="faces")
    if len(faces) == 0:
        raise InputError("the mesh has no faces", field="faces")
    if len(faces) > _PAIR_MASK:
        raise InputError(f"at most {_PAIR_MASK} triangles are supported, got {len(faces)}", field="faces")
    if faces.min() < 0 or faces.max() >= len(vertices):
        raise InputError(
            f"vertex indices must lie in [0, {len(vertices) - 1}], found [{int(faces.min())}, {int(faces.max())}]",
            field="faces",
        )
    return vertices.float(), faces.long()


def _setup_dtype(device: torch.device) -> torch.dtype:
    # Camera transform and cross products are done in float64 where the device has it (not MPS),
    # so depths stay accurate when the mesh is far from the world origin; per-pixel work is float32.
    return torch.float32 if device.type == "mps" else torch.float64


def _camera_space_vertices(vertices: Tensor, cameras: Cameras) -> Tensor:
    """(C, V, 3) vertices in each camera's OpenCV frame, in the setup precision."""
    dtype = _setup_dtype(vertices.device)
    w2c = cameras.world_to_camera_cv().to(device=vertices.device, dtype=dtype)  # (C, 4, 4)
    return vertices.to(dtype) @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]


def _gather_triangles(verts_cam: Tensor, faces: Tensor, cam: Tensor, tri: Tensor) -> Tensor:
    """(P, 3, 3) camera-space corners of triangle ``tri`` (P,) seen by camera ``cam`` (P,)."""
    num_verts = verts_cam.shape[1]
    corner_ids = cam[:, None] * num_verts + faces.index_select(0, tri)  # (P, 3)
    return verts_cam.reshape(-1, 3).index_select(0, corner_ids.reshape(-1)).reshape(-1, 3, 3)


NUM_COEFFICIENTS = 13  # per (camera, triangle): three edge normals, the plane normal, det


def _edge_coefficients(tri_cam: Tensor) -> Tensor:
    """(P, 13): edge normals P_j x P_k (9 values), plane normal N (3) and det(P0, P1, P2), float32.

    N = (P1 - P0) x (P2 - P0) equals n0 + n1 + n2, but summing the three per-pixel edge values
    loses digits on triangles seen at grazing angles (they are large next to their sum), so
    E = d . N and det = P0 . N are evaluated from N computed here in the setup precision.
    """
    # Component-wise on contiguous rows: several times faster than torch.cross + cat on the CPU.
    x0, y0, z0, x1, y1, z1, x2, y2, z2 = tri_cam.reshape(-1, 9).T.contiguous()
    ex1, ey1, ez1 = x1 - x0, y1 - y0, z1 - z0
    ex2, ey2, ez2 = x2 - x0, y2 - y0, z2 - z0
    plane_x = ey1 * ez2 - ez1 * ey2
    plane_y = ez1 * ex2 - ex1 * ez2
    plane_z = ex1 * ey2 - ey1 * ex2
    rows = [
        y1 * z2 - z1 * y2, z1 * x2 - x1 * z2, x1 * y2 - y1 * x2,  # n0 = P1 x P2
        y2 * z0 - z2 * y0, z2 * x0 - x2 * z0, x2 * y0 - y2 * x0,  # n1 = P2 x P0
        y0 * z1 - z0 * y1, z0 * x1 - x0 * z1, x0 * y1 - y0 * x1,  # n2 = P0 x P1
        plane_x, plane_y, plane_z,
        x0 * plane_x + y0 * plane_y + z0 * plane_z,  # det = P0 . N
    ]
    coeff = torch.empty(len(rows), len(x0), dtype=torch.float32, device=tri_cam.device)
    for row, value in zip(coeff, rows):
        row.copy_(value)
    return coeff.T.contiguous()


def _clipped_extent(tri_cam: Tensor, fx: Tensor, fy: Tensor, cx: Tensor, cy: Tensor, near: float):
    """Screen extent (x_min, x_max, y_min, y_max), each (S,), of the part of triangles (S, 3, 3)
    beyond the near plane: their corners in front plus the points where edges cross the plane.

    fx, fy, cx, cy: (S,) intrinsics of each triangle's camera. Points at the near plane project to
    finite (if large) coordinates, so nothing explodes; the caller clamps to the image.
    """
    z = tri_cam[..., 2]  # (S, 3)
    in_front = z > near
    nxt = tri_cam.roll(-1, dims=1)
    z_next = nxt[..., 2]
    crosses = in_front != (z_next > near)
    t = (near - z) / torch.where(crosses, z_next - z, torch.ones_like(z))
    crossing = tri_cam + t[..., None] * (nxt - tri_cam)
    points = torch.cat([tri_cam, crossing], dim=1)  # (S, 6, 3)
    valid = torch.cat([in_front, crosses], dim=1)
    depth = torch.where(valid, torch.cat([z, torch.full_like(z, near)], dim=1), torch.ones_like(points[..., 2]))
    xs = (fx[:, None] * points[..., 0] / depth + cx[:, None]).float()
    ys = (fy[:, None] * points[..., 1] / depth + cy[:, None]).float()
    inf = torch.tensor(float("inf"), device=xs.device)
    return (torch.where(valid, xs, inf).amin(-1), torch.where(valid, xs, -inf).amax(-1),
            torch.where(valid, ys, inf).amin(-1), torch.where(valid, ys, -inf).amax(-1))


def _screen_boxes(verts_cam: Tensor, faces: Tensor, intrinsics: Tensor, width: int, height: int, near: float):
    """Inclusive pixel ranges (C, F) col_lo, col_hi, row_lo, row_hi of each triangle's part beyond
    ``near``, and (C, F) whether any of it is (triangles wholly behind the near plane are not)."""
    num_cams, num_faces = len(verts_cam), len(faces)
    K = intrinsics.to(verts_cam)
    fx, fy, cx, cy = K[:, 0, 0], K[:, 1, 1], K[:, 0, 2], K[:, 1, 2]
    # Project every vertex once (float32 suffices: the boxes are padded and only pick candidates).
    z = verts_cam[..., 2]
    in_front = z > near  # (C, V)
    safe_z = torch.where(in_front, z, torch.ones_like(z))
    px = (fx[:, None] * verts_cam[..., 0] / safe_z + cx[:, None]).float()
    py = (fy[:, None] * verts_cam[..., 1] / safe_z + cy[:, None]).float()
    flat_faces = faces.reshape(-1)
    corner_x = px.index_select(1, flat_faces).reshape(num_cams, num_faces, 3)
    corner_y = py.index_select(1, flat_faces).reshape(num_cams, num_faces, 3)
    corners_in_front = in_front.index_select(1, flat_faces).reshape(num_cams, num_faces, 3).sum(-1)
    x_min, x_max = corner_x.amin(-1), corner_x.amax(-1)
    y_min, y_max = corner_y.amin(-1), corner_y.amax(-1)
    # Triangles crossing the near plane (few, usually none) get the extent of their clipped part.
    crossing = torch.nonzero(((corners_in_front > 0) & (corners_in_front < 3)).reshape(-1)).squeeze(1)
    if len(crossing):
        cam = torch.div(crossing, num_faces, rounding_mode="floor")
        tri_cam = _gather_triangles(verts_cam, faces, cam, crossing - cam * num_faces)
        extent = _clipped_extent(tri_cam, fx[cam], fy[cam], cx[cam], cy[cam], near)
        for bound, value in zip((x_min, x_max, y_min, y_max), extent):
            bound.view(-1).index_copy_(0, crossing, value)
    # Pixel j is a candidate when its centre j + 0.5 lies in [x_min, x_max] (padded); clamp in float
    # first so huge coordinates from points at the near plane never overflow the integer cast.
    col_lo = torch.ceil((x_min - 0.5 - BBOX_PAD_PX).clamp(-1.0, width)).long().clamp(min=0)
    col_hi = torch.floor((x_max - 0.5 + BBOX_PAD_PX).clamp(-1.0, width)).long().clamp(max=width - 1)
    row_lo = torch.ceil((y_min - 0.5 - BBOX_PAD_PX).clamp(-1.0, height)).long().clamp(min=0)
    row_hi = torch.floor((y_max - 0.5 + BBOX_PAD_PX).clamp(-1.0, height)).long().clamp(max=height - 1)
    return col_lo, col_hi, row_lo, row_hi, corners_in_front > 0


def _pixel_rays(cameras: Cameras, width: int, height: int, device) -> tuple[Tensor, Tensor]:
    """Normalised ray components per camera: (C * W,) (u - cx) / fx and (C * H,) (v - cy) / fy."""
    K = cameras.intrinsics.to(device=device, dtype=torch.float32)
    cols = torch.arange(width, device=device, dtype=torch.float32) + 0.5
    rows = torch.arange(height, device=device, dtype=torch.float32) + 0.5
    ray_x = (cols[None, :] - K[:, 0, 2, None]) / K[:, 0, 0, None]
    ray_y = (rows[None, :] - K[:, 1, 2, None]) / K[:, 1, 1, None]
    return ray_x.reshape(-1), ray_y.reshape(-1)


def _bucket_sizes(largest: int, device) -> Tensor:
    """Box side lengths of the size classes: 1, 2, 3, 4, 6, 8, 12, ... (at most 1.5x waste per axis)."""
    sizes, power = [1], 2
    while sizes[-1] < largest:
        sizes += [power, power * 3 // 2]
        power *= 2
    return torch.tensor(sizes, device=device)


def _test_block(pairs: Tensor, block_w: int, block_h: int, coeff: Tensor, pair_cam: Tensor, pair_col: Tensor,
                pair_row: Tensor, ray_x: Tensor, ray_y: Tensor, width: int, height: int, near: float, far: float,
                zbuffer: Tensor) -> None:
    """Edge-test a (P, block_h, block_w) block of pixels for P (camera, triangle) pairs; update the z-buffer.

    pairs: (P,) indices into the pair arrays: coeff (N, 13), pair_cam / pair_col / pair_row (N,)
    (each pair's camera and the top-left pixel of its box, where its block starts).
    """
    device = pairs.device
    cam = pair_cam.index_select(0, pairs)
    col0 = pair_col.index_select(0, pairs)
    row0 = pair_row.index_select(0, pairs)
    cols = col0[:, None] + torch.arange(block_w, device=device)  # (P, bw)
    rows = row0[:, None] + torch.arange(block_h, device=device)  # (P, bh)
    col_ok = cols < width
    row_ok = rows < height
    # Rays come from the same per-camera tables as everywhere else, so two triangles sharing an
    # edge evaluate it with bit-identical inputs (exactly negated e values: no cracks).
    rx = ray_x[cam[:, None] * width + torch.where(col_ok, cols, 0)][:, None, :]  # (P, 1, bw)
    ry = ray_y[cam[:, None] * height + torch.where(row_ok, rows, 0)][:, :, None]  # (P, bh, 1)
    c = coeff.index_select(0, pairs)[:, :, None, None]  # (P, 13, 1, 1)
    e0 = c[:, 0] * rx + c[:, 1] * ry + c[:, 2]
    e1 = c[:, 3] * rx + c[:, 4] * ry + c[:, 5]
    e2 = c[:, 6] * rx + c[:, 7] * ry + c[:, 8]
    plane = c[:, 9] * rx + c[:, 10] * ry + c[:, 11]  # E = d . N
    z = c[:, 12] / plane
    hit = (e0 * plane >= 0) & (e1 * plane >= 0) & (e2 * plane >= 0) & (z > near) & (z < far)
    hit &= col_ok[:, None, :] & row_ok[:, :, None]
    hit_index = torch.nonzero(hit.reshape(-1)).squeeze(1)
    p = torch.div(hit_index, block_h * block_w, rounding_mode="floor")
    within = hit_index - p * (block_h * block_w)
    dy = torch.div(within, block_w, rounding_mode="floor")
    dx = within - dy * block_w
    # Positive float32 bit patterns sort like the floats: the nearest hit wins, then the lowest
    # pair index (pairs are ordered by camera, then triangle id).
    z_bits = z.reshape(-1).index_select(0, hit_index).view(torch.int32).to(torch.int64)
    key = (z_bits << _PAIR_BITS) | pairs.index_select(0, p)
    pixel = (cam.index_select(0, p) * height + row0.index_select(0, p) + dy) * width + col0.index_select(0, p) + dx
    zbuffer.scatter_reduce_(0, pixel, key, reduce="amin", include_self=True)


def _edge_values(coeff: Tensor, ray_x: Tensor, ray_y: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Edge functions e0, e1, e2, E = d . N and det for rays (ray_x, ray_y, 1); coeff (N, 13) -> each (N,)."""
    e0 = coeff[:, 0] * ray_x + coeff[:, 1] * ray_y + coeff[:, 2]
    e1 = coeff[:, 3] * ray_x + coeff[:, 4] * ray_y + coeff[:, 5]
    e2 = coeff[:, 6] * ray_x + coeff[:, 7] * ray_y + coeff[:, 8]
    plane = coeff[:, 9] * ray_x + coeff[:, 10] * ray_y + coeff[:, 11]
    return e0, e1, e2, plane, coeff[:, 12]


@torch.no_grad()
def rasterize_mesh(
    vertices: Tensor,
    faces: Tensor,
    cameras: Cameras,
    *,
    supersample: int = 1,
    near: float = DEFAULT_NEAR,
    far: float = float("inf"),
    cull_backfaces: bool = False,
) -> VisibilityBuffer:
    """Visibility buffer of the triangles ``faces`` (F, 3) over ``vertices`` (V, 3) for every camera.

    supersample: k samples per pixel along each axis (the buffer is kH x kW, sample centres at
        (j + (s + 0.5) / k) in camera pixels); shading averages them back down for anti-aliasing.
    near, far: camera-space depth range kept (OpenCV z). Triangles crossing the near plane are
        clipped exactly there, per pixel.
    cull_backfaces: drop triangles whose vertices appear clockwise to the camera (Blender's
        convention: the front face is counter-clockwise). Off by default: two-sided rendering.

    Runs on the device of ``vertices``; no gradients. Returns a :class:`VisibilityBuffer`.
    """
    vertices, faces = check_triangles(vertices, faces)
    if int(supersample) != supersample or supersample < 1:
        raise InputError(f"expected a positive integer, got {supersample!r}", field="supersample")
    if not (0.0 < near < far):
        raise InputError(f"expected 0 < near < far, got near={near}, far={far}", field="near")
    device = vertices.device
    cameras = cameras.to(device)
    if supersample > 1:
        cameras = cameras.scaled(supersample)
    num_cams, num_faces = len(cameras), len(faces)
    width, height = cameras.width, cameras.height

    verts_cam = _camera_space_vertices(vertices, cameras)  # (C, V, 3)
    col_lo, col_hi, row_lo, row_hi, any_front = _screen_boxes(verts_cam, faces, cameras.intrinsics, width, height, near)
    box_w = (col_hi - col_lo + 1).clamp(min=0)
    box_h = (row_hi - row_lo + 1).clamp(min=0)
    count = torch.where(any_front, box_w * box_h, torch.zeros_like(box_w)).reshape(-1)

    # (camera, triangle) pairs that may cover a pixel centre, ordered by camera then triangle.
    pair_id = torch.nonzero(count > 0).squeeze(1)
    pair_cam = torch.div(pair_id, num_faces, rounding_mode="floor")
    pair_tri = pair_id - pair_cam * num_faces
    coeff = _edge_coefficients(_gather_triangles(verts_cam, faces, pair_cam, pair_tri))  # (N, 13)
    if cull_backfaces:  # front faces have det < 0 (counter-clockwise on screen, normal towards the camera)
        front = torch.nonzero(coeff[:, 12] < 0).squeeze(1)
        pair_id, pair_cam, pair_tri, coeff = (t.index_select(0, front) for t in (pair_id, pair_cam, pair_tri, coeff))
    if len(pair_id) > _PAIR_MASK:
        raise InputError(f"at most {_PAIR_MASK} visible (camera, triangle) pairs per call; render fewer cameras "
                         "at once", field="cameras")
    pair_col = col_lo.reshape(-1).index_select(0, pair_id)
    pair_row = row_lo.reshape(-1).index_select(0, pair_id)
    pair_w = box_w.reshape(-1).index_select(0, pair_id)
    pair_h = box_h.reshape(-1).index_select(0, pair_id)

    ray_x, ray_y = _pixel_rays(cameras, width, height, device)
    zbuffer = torch.full((num_cams * height * width,), _EMPTY_KEY, dtype=torch.int64, device=device)
    if len(pair_id):
        # Group pairs by box size class (bucket width x height) so every group is tested as one
        # dense (pairs, rows, cols) block: per-pixel work is then broadcast arithmetic, no gathers.
        sizes = _bucket_sizes(max(width, height), device)
        bucket = torch.searchsorted(sizes, pair_h) * len(sizes) + torch.searchsorted(sizes, pair_w)
        bucket, order = torch.sort(bucket)
        buckets, bucket_counts = torch.unique_consecutive(bucket, return_counts=True)
        side = sizes.tolist()
        chunk_size = CPU_CANDIDATE_CHUNK if device.type == "cpu" else GPU_CANDIDATE_CHUNK
        first = 0
        for bucket_key, n_pairs in zip(buckets.tolist(), bucket_counts.tolist()):
            bucket_h = min(side[bucket_key // len(side)], height)
            bucket_w = min(side[bucket_key % len(side)], width)
            pairs_per_chunk = max(1, chunk_size // (bucket_h * bucket_w))
            for chunk_first in range(first, first + n_pairs, pairs_per_chunk):
                chunk = order[chunk_first : min(chunk_first + pairs_per_chunk, first + n_pairs)]
                _test_block(chunk, bucket_w, bucket_h, coeff, pair_cam, pair_col, pair_row, ray_x, ray_y,
                            width, height, near, far, zbuffer)
            first += n_pairs

    is_covered = zbuffer != _EMPTY_KEY
    covered = torch.nonzero(is_covered).squeeze(1)
    winner = (zbuffer.index_select(0, covered) & _PAIR_MASK)  # pair index of each covered pixel
    tri_ids = torch.full((num_cams * height * width,), -1, dtype=torch.int64, device=device)
    tri_ids[covered] = pair_tri.index_select(0, winner)
    cam = pair_cam.index_select(0, winner)
    row = torch.div(covered - cam * height * width, width, rounding_mode="floor")
    col = covered - (cam * height + row) * width
    e0, e1, e2, plane, det = _edge_values(
        coeff.index_select(0, winner),
        ray_x.index_select(0, cam * width + col),
        ray_y.index_select(0, cam * height + row),
    )
    bary = torch.zeros(num_cams * height * width, 3, dtype=torch.float32, device=device)
    depth = torch.zeros(num_cams * height * width, dtype=torch.float32, device=device)
    # Normalised by their own sum so they add up to 1 (an affine combination for interpolation).
    bary[covered] = torch.stack([e0, e1, e2], dim=1) / (e0 + e1 + e2)[:, None]
    depth[covered] = det / plane
    front_facing = torch.zeros(num_cams * height * width, dtype=torch.bool, device=device)
    front_facing[covered] = det < 0  # the plane normal points back towards the camera at the origin
    return VisibilityBuffer(
        tri_ids.reshape(num_cams, height, width),
        bary.reshape(num_cams, height, width, 3),
        depth.reshape(num_cams, height, width),
        int(supersample),
        front_facing.reshape(num_cams, height, width),
    )


class VisibilityCache:
    """Visibility buffers of one fixed mesh, remembered per camera (least recently used dropped first).

    For optimisations that revisit the same views (fitting a texture to fixed views): the
    rasterisation is done once per distinct camera. The key is the camera's pose, intrinsics and
    image size; the mesh is assumed not to change (make a new cache if it does).
    """

    def __init__(self, vertices: Tensor, faces: Tensor, *, supersample: int = 1, near: float = DEFAULT_NEAR,
                 far: float = float("inf"), cull_backfaces: bool = False, max_cameras: int = 256):
        self.vertices, self.faces = check_triangles(vertices, faces)
        self.options = dict(supersample=supersample, near=near, far=far, cull_backfaces=cull_backfaces)
        self.max_cameras = int(max_cameras)
        self._buffers: OrderedDict[tuple, VisibilityBuffer] = OrderedDict()
        self.misses = 0  # cameras rasterised so far (for tests and statistics)

    @staticmethod
    def _key(cameras: Cameras, index: int) -> tuple:
        pose = cameras.c2w_gl[index].detach().cpu().numpy().tobytes()
        intrinsics = cameras.intrinsics[index].detach().cpu().numpy().tobytes()
        return pose, intrinsics, cameras.width, cameras.height

    def __call__(self, cameras: Cameras) -> VisibilityBuffer:
        """The visibility buffer of ``cameras`` (C cameras), rasterising only those not seen before."""
        keys = [self._key(cameras, i) for i in range(len(cameras))]
        missing = [i for i, key in enumerate(keys) if key not in self._buffers]
        if missing:
            fresh = rasterize_mesh(self.vertices, self.faces, cameras[torch.tensor(missing)], **self.options)
            self.misses += len(missing)
            for j, i in enumerate(missing):
                self._buffers[keys[i]] = fresh.select(slice(j, j + 1))
        buffers = []
        for key in keys:
            self._buffers.move_to_end(key)
            buffers.append(self._buffers[key])
        result = VisibilityBuffer.cat(buffers)
        while len(self._buffers) > self.max_cameras:
            self._buffers.popitem(last=False)
        return result

"""From a radiance field to a textured mesh file: marching cubes, cleanup, UVs, baked albedo, export.

Steps of :func:`extract_textured_mesh`:

1. :func:`density_grid`: the field's density at the R^3 points of a lattice spanning its box
   (corners included).
2. :func:`marching_cubes_mesh`: the iso-surface σ = ``density_threshold`` (scikit-image's marching
   cubes). The grid is padded with one layer of empty cells first, so a surface that touches the
   box is closed there; faces are oriented counter-clockwise seen from outside (checked with the
   signed volume, whatever the library's winding).
3. :func:`keep_large_components`: floaters go — connected components with fewer than
   ``min_component_ratio`` times the faces of the largest one are dropped.
4. :func:`decimate`: quadric edge-collapse decimation to ``target_faces`` (the
   ``fast-simplification`` package, a wrapper of Sven Forstmann's Fast-Quadric-Mesh-Simplification).
5. UVs from xatlas (:func:`radiantforge.mesh.io.generate_uv_atlas`).
6. :func:`bake_texture`: the UV layout is rasterised (:func:`rasterize_uv_layout`, pure PyTorch);
   each covered texel's surface point gets the field's albedo; empty texels around the charts are
   filled from their neighbours so that bilinear lookups and mipmaps at chart borders stay clean.

:func:`export_textured_mesh` writes .obj + .mtl + .png and a .glb. World space is Blender's
(Z up); OBJ and glTF are Y up by their specifications, so files store (x, z, −y) and Blender's
importers (and :func:`radiantforge.mesh.io.load_mesh`) bring the mesh back exactly where it was.
UVs follow OBJ/Blender (v up, texture row 0 at the top).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError, RadiantForgeError
from ..mesh.io import TriangleMesh, generate_uv_atlas

# Default iso-level: a ray crossing 10 cm of matter at σ = 10 /m keeps exp(−1) ≈ 37% of its light,
# where a NeRF's surface starts to show (stable-dreamfusion exports at the same level).
DEFAULT_DENSITY_THRESHOLD = 10.0
# (triangle, texel) pairs tested at once by the UV rasteriser: temporaries of a few hundred KB.
UV_CANDIDATE_CHUNK = 1 << 16
# Texel centres within this (barycentric) tolerance of a triangle count as inside it.
UV_INSIDE_TOLERANCE = 1e-6
# Keys of the UV rasteriser's nearest-triangle buffer: (distance bits) << 32 | face index.
_FACE_BITS = 32
_FACE_MASK = (1 << _FACE_BITS) - 1
_EMPTY_KEY = torch.iinfo(torch.int64).max
_NO_FACE = torch.iinfo(torch.int64).max
# glTF/OBJ (Y up) <- Blender world (Z up): (x, y, z) -> (x, z, -y); load_mesh applies the inverse.
Z_UP_TO_Y_UP = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])
MATERIAL_NAME = "radiantforge_albedo"


@dataclass
class MeshExtractionConfig:
    """Settings of :func:`extract_textured_mesh`.

    grid_resolution: lattice points per axis of the density grid.
    density_threshold: the iso-level of the surface (1/m).
    min_component_ratio: drop connected components with fewer faces than this times the largest's.
    target_faces: decimate to this many faces (None keeps marching cubes' faces).
    texture_size: side of the square albedo texture in pixels; texture_padding_px: gap between UV
        charts and the number of texels the colours are grown beyond each chart.
    chunk_points: points per field call.
    """

    grid_resolution: int = 128
    density_threshold: float = DEFAULT_DENSITY_THRESHOLD
    min_component_ratio: float = 0.1
    target_faces: int | None = 20000
    texture_size: int = 1024
    texture_padding_px: int = 4
    chunk_points: int = 1 << 15

    def __post_init__(self):
        if self.grid_resolution < 8:
            raise InputError(f"must be at least 8, got {self.grid_resolution}", field="grid_resolution")
        if not 0.0 <= self.min_component_ratio <= 1.0:
            raise InputError(f"must lie in [0, 1], got {self.min_component_ratio}", field="min_component_ratio")
        if self.target_faces is not None and self.target_faces < 4:
            raise InputError(f"must be at least 4 or None, got {self.target_faces}", field="target_faces")
        if self.texture_size < 8:
            raise InputError(f"must be at least 8, got {self.texture_size}", field="texture_size")
        if self.texture_padding_px < 0:
            raise InputError(f"must be >= 0, got {self.texture_padding_px}", field="texture_padding_px")


@torch.no_grad()
def density_grid(density_fn: Callable[[Tensor], Tensor], aabb: Tensor, resolution: int,
                 chunk_points: int = 1 << 15) -> Tensor:
    """σ at an R^3 lattice spanning ``aabb`` (2, 3), corners included: (R, R, R), index [i, j, k] = (x, y, z)."""
    aabb = torch.as_tensor(aabb, dtype=torch.float32)
    axes = [torch.linspace(float(aabb[0, d]), float(aabb[1, d]), resolution, device=aabb.device) for d in range(3)]
    points = torch.stack(torch.meshgrid(*axes, indexing="ij"), dim=-1).reshape(-1, 3)
    values = [density_fn(chunk).reshape(-1).float() for chunk in points.split(chunk_points)]
    return torch.cat(values).reshape(resolution, resolution, resolution).nan_to_num(0.0)


def signed_volume(vertices: np.ndarray, faces: np.ndarray) -> float:
    """Volume enclosed by a closed mesh, positive when its faces wind counter-clockwise seen from outside."""
    a, b, c = (vertices[faces[:, k]] for k in range(3))
    return float(np.einsum("ij,ij->i", a, np.cross(b, c)).sum() / 6.0)


def marching_cubes_mesh(grid: Tensor, aabb: Tensor, level: float) -> tuple[np.ndarray, np.ndarray]:
    """Iso-surface ``grid`` = ``level`` of a lattice grid (R, R, R) spanning ``aabb`` (2, 3).

    Returns world-space vertices (V, 3) float64 and faces (F, 3) int64, outward facing. Raises
    :class:`InputError` (field ``density_threshold``) when the density never crosses ``level``.
    """
    from skimage.measure import marching_cubes  # imported here: only mesh export needs scikit-image

    volume = grid.detach().cpu().double().numpy()
    low, high = float(volume.min()), float(volume.max())
    if not low < level < high:
        raise InputError(f"no surface: the density ranges over [{low:.4g}, {high:.4g}] and never crosses {level:.4g}",
                         field="density_threshold")
    # One layer below the level all around closes surfaces that touch the box.
    padded = np.pad(volume, 1, mode="constant", constant_values=min(low, level) - 1.0)
    box = torch.as_tensor(aabb, dtype=torch.float64).cpu().numpy()
    spacing = (box[1] - box[0]) / (np.array(volume.shape) - 1)
    vertices, faces, _, _ = marching_cubes(padded, level=level, spacing=tuple(spacing), allow_degenerate=False)
    vertices = vertices - spacing + box[0]  # undo the padding's one-cell offset
    faces = faces.astype(np.int64)
    if signed_volume(vertices, faces) < 0:
        faces = faces[:, ::-1].copy()
    return vertices, faces


def compact(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Drop degenerate faces (a repeated vertex) and vertices no face uses."""
    keep = (faces[:, 0] != faces[:, 1]) & (faces[:, 1] != faces[:, 2]) & (faces[:, 2] != faces[:, 0])
    faces = faces[keep]
    used, inverse = np.unique(faces.reshape(-1), return_inverse=True)
    return vertices[used], inverse.reshape(-1, 3).astype(np.int64)


def keep_large_components(vertices: np.ndarray, faces: np.ndarray, min_ratio: float) -> tuple[np.ndarray, np.ndarray]:
    """Keep the connected components with at least ``min_ratio`` times the faces of the largest one."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if len(faces) == 0:
        return vertices, faces
    edges = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    adjacency = coo_matrix((np.ones(len(edges)), (edges[:, 0], edges[:, 1])), shape=(len(vertices),) * 2)
    _, labels = connected_components(adjacency, directed=False)
    face_labels = labels[faces[:, 0]]
    faces_per_component = np.bincount(face_labels)
    kept = faces_per_component >= min_ratio * faces_per_component.max()
    return compact(vertices, faces[kept[face_labels]])


def decimate(vertices: np.ndarray, faces: np.ndarray, target_faces: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadric edge-collapse decimation to about ``target_faces`` faces (no-op when already below)."""
    if len(faces) <= target_faces:
        return vertices, faces
    try:
        import fast_simplification
    except ImportError as error:
        raise RadiantForgeError("mesh decimation needs the fast-simplification package: "
                                "pip install fast-simplification") from error
    new_vertices, new_faces = fast_simplification.simplify(np.ascontiguousarray(vertices, dtype=np.float64),
                                                           np.ascontiguousarray(faces, dtype=np.int64),
                                                           target_count=int(target_faces))
    return compact(np.asarray(new_vertices, dtype=np.float64), np.asarray(new_faces, dtype=np.int64))


def extract_mesh(density_fn: Callable[[Tensor], Tensor], aabb: Tensor,
                 config: MeshExtractionConfig | None = None) -> TriangleMesh:
    """Steps 1-4 of the module docstring: a cleaned, decimated world-space mesh (no UVs yet)."""
    config = config or MeshExtractionConfig()
    grid = density_grid(density_fn, aabb, config.grid_resolution, config.chunk_points)
    vertices, faces = marching_cubes_mesh(grid, aabb, config.density_threshold)
    vertices, faces = keep_large_components(vertices, faces, config.min_component_ratio)
    if config.target_faces is not None:
        vertices, faces = decimate(vertices, faces, config.target_faces)
    return TriangleMesh(torch.as_tensor(vertices, dtype=torch.float32), torch.as_tensor(faces, dtype=torch.int64))


def rasterize_uv_layout(uvs: Tensor, faces: Tensor, size: int, border_px: float = 1.0) -> tuple[Tensor, Tensor]:
    """Which triangle each texel centre of a size x size texture belongs to, and where on it.

    uvs: (V, 2) in [0, 1] (v up); faces: (F, 3) rows of ``uvs``. Texel (row i, column j) has its
    centre at u = (j + 0.5)/size, v = 1 − (i + 0.5)/size (row 0 = top of the image).
    A texel centre inside a triangle takes that triangle (the lowest face index where several
    overlap). A centre outside every triangle but within ``border_px`` texels of one takes the
    nearest point of the nearest triangle: conservative rasterisation, so that sliver triangles
    thinner than a texel still get texels and the texels that bilinear filtering reads just
    outside a chart's edge hold that edge's colour. Deterministic on every device.

    Returns face_ids (size, size) int64 (−1 where no triangle is near) and bary (size, size, 3)
    float32 barycentric coordinates of the chosen point in that triangle (0 where empty).
    """
    device = uvs.device
    pixel = torch.stack([uvs[:, 0] * size, (1.0 - uvs[:, 1]) * size], dim=-1).float()  # (V, 2) x right, y down
    corners = pixel[faces]  # (F, 3, 2)
    # Texel centres c + 0.5 within border_px of the triangle's box: columns ceil(min − border − 0.5) ..
    low = torch.ceil(corners.amin(1) - border_px - 0.5).clamp(0, size - 1).long()  # (F, 2)
    high = torch.floor(corners.amax(1) + border_px - 0.5).clamp(0, size - 1).long()
    extent = (high - low + 1).clamp(min=0)
    counts = extent[:, 0] * extent[:, 1]  # (F,) candidate texels per face
    chunks = _chunks_by_total(counts, UV_CANDIDATE_CHUNK)

    def candidates(start: int, stop: int) -> tuple[Tensor, Tensor, Tensor]:
        """(face (K,), texel index (K,), texel centre (K, 2)) for the faces start .. stop."""
        chunk_counts = counts[start:stop]
        face = torch.arange(start, stop, device=device).repeat_interleave(chunk_counts)
        first = torch.cumsum(chunk_counts, 0) - chunk_counts
        local = torch.arange(int(chunk_counts.sum()), device=device) - first.repeat_interleave(chunk_counts)
        col = low[face, 0] + local % extent[face, 0]
        row = low[face, 1] + local // extent[face, 0]
        return face, row * size + col, torch.stack([col, row], dim=-1).float() + 0.5

    # Pass 1: texel centres inside a triangle.
    inside_face = torch.full((size * size,), _NO_FACE, dtype=torch.int64, device=device)
    for start, stop in chunks:
        face, texel, centre = candidates(start, stop)
        inside = _inside(corners[face], centre)
        inside_face.scatter_reduce_(0, texel[inside], face[inside], reduce="amin")
    covered = inside_face != _NO_FACE
    # Pass 2: the still-empty texels near a triangle take its nearest point.
    near_key = torch.full((size * size,), _EMPTY_KEY, dtype=torch.int64, device=device)
    if border_px > 0:
        for start, stop in chunks:
            face, texel, centre = candidates(start, stop)
            empty = ~covered[texel]
            face, texel, centre = face[empty], texel[empty], centre[empty]
            distance, _ = _closest_point_barycentric(corners[face], centre)
            near = distance <= border_px
            # Key: float32 bits of the distance (non-negative floats order like their bits), then the face.
            key = (distance.view(torch.int32).long() << _FACE_BITS) | face
            near_key.scatter_reduce_(0, texel[near], key[near], reduce="amin")
    bordered = near_key != _EMPTY_KEY
    face_ids = torch.where(covered, inside_face, torch.where(bordered, near_key & _FACE_MASK, -1))
    texels = torch.nonzero(face_ids >= 0).squeeze(1)
    centre = torch.stack([texels % size, texels // size], dim=-1).float() + 0.5
    bary = torch.zeros(size * size, 3, dtype=torch.float32, device=device)
    bary[texels] = _closest_point_barycentric(corners[face_ids[texels]], centre)[1]
    return face_ids.reshape(size, size), bary.reshape(size, size, 3)


def _cross2(a: Tensor, b: Tensor) -> Tensor:
    return a[..., 0] * b[..., 1] - a[..., 1] * b[..., 0]


def _local_barycentric(corners: Tensor, point: Tensor) -> tuple[Tensor, Tensor]:
    """Barycentrics (K, 3) of points (K, 2) in triangles (K, 3, 2), from the first corner (small
    numbers, so float32 is exact enough), and whether each triangle has an area."""
    edge1, edge2 = corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]
    offset = point - corners[:, 0]
    area = _cross2(edge1, edge2)  # twice the signed area
    valid = area.abs() > 1e-12
    safe_area = torch.where(valid, area, torch.ones_like(area))
    b1 = _cross2(offset, edge2) / safe_area
    b2 = _cross2(edge1, offset) / safe_area
    return torch.stack([1.0 - b1 - b2, b1, b2], dim=-1), valid


def _inside(corners: Tensor, point: Tensor) -> Tensor:
    """(K,) whether points (K, 2) lie inside (or on the edge of) triangles (K, 3, 2)."""
    bary, valid = _local_barycentric(corners, point)
    return (bary >= -UV_INSIDE_TOLERANCE).all(-1) & valid


def _closest_point_barycentric(corners: Tensor, point: Tensor) -> tuple[Tensor, Tensor]:
    """Distance (K,) from points (K, 2) to triangles (K, 3, 2), and the barycentrics (K, 3) of the
    triangle's closest point (the point itself when inside)."""
    inside_bary, valid = _local_barycentric(corners, point)
    inside = (inside_bary >= -UV_INSIDE_TOLERANCE).all(-1) & valid
    # Otherwise (or for a degenerate triangle): the nearest point on the edges (p_k, p_k+1).
    edge = corners.roll(-1, dims=1) - corners  # (K, 3, 2)
    along = ((point[:, None] - corners) * edge).sum(-1) / (edge * edge).sum(-1).clamp(min=1e-24)
    along = along.clamp(0.0, 1.0)  # (K, 3)
    edge_distance = (point[:, None] - (corners + along[..., None] * edge)).norm(dim=-1)  # (K, 3)
    nearest_edge = edge_distance.argmin(-1, keepdim=True)  # (K, 1)
    t = along.gather(1, nearest_edge)
    edge_bary = torch.zeros_like(inside_bary).scatter(1, nearest_edge, 1.0 - t)
    edge_bary = edge_bary.scatter_add(1, (nearest_edge + 1) % 3, t)
    distance = torch.where(inside, torch.zeros_like(t[:, 0]), edge_distance.gather(1, nearest_edge)[:, 0])
    bary = torch.where(inside[:, None], inside_bary.clamp(min=0.0), edge_bary)
    return distance, bary / bary.sum(-1, keepdim=True)


def _chunks_by_total(counts: Tensor, budget: int) -> list[tuple[int, int]]:
    """Consecutive [start, stop) ranges of ``counts`` whose sums stay near ``budget`` (one item at least)."""
    totals = torch.cumsum(counts, 0).tolist()
    ranges, start, base = [], 0, 0
    for index, total in enumerate(totals):
        if total - base > budget and index > start:
            ranges.append((start, index))
            start, base = index, totals[index - 1]
    if start < len(totals):
        ranges.append((start, len(totals)))
    return ranges


def grow_texture(texture: Tensor, filled: Tensor, iterations: int) -> Tensor:
    """Extend colours (H, W, 3) from ``filled`` (H, W) texels into empty ones, one texel per iteration;
    texels still empty afterwards get the mean colour of the filled ones."""
    colors = texture.permute(2, 0, 1)[None] * filled[None, None]  # (1, 3, H, W)
    mask = filled[None, None].to(texture.dtype)
    for _ in range(iterations):
        neighbour_sum = F.avg_pool2d(colors, 3, stride=1, padding=1, divisor_override=1)
        neighbour_count = F.avg_pool2d(mask, 3, stride=1, padding=1, divisor_override=1)
        grow = (mask == 0) & (neighbour_count > 0)
        colors = torch.where(grow, neighbour_sum / neighbour_count.clamp(min=1.0), colors)
        mask = torch.where(grow, torch.ones_like(mask), mask)
    if bool((mask > 0).any()):
        mean = (colors.sum(dim=(2, 3)) / mask.sum()).reshape(1, 3, 1, 1)
        colors = torch.where(mask > 0, colors, mean.expand_as(colors))
    return colors[0].permute(1, 2, 0).contiguous()


@torch.no_grad()
def bake_texture(mesh: TriangleMesh, color_fn: Callable[[Tensor], Tensor], size: int, padding_px: int = 4,
                 chunk_points: int = 1 << 15) -> Tensor:
    """Texture (size, size, 3) in [0, 1] holding ``color_fn`` (N, 3) -> (N, 3) at the surface point under each texel.

    ``mesh`` needs UVs with ``face_uvs`` equal to ``faces`` (as :func:`generate_uv_atlas` makes them).
    """
    if not mesh.has_uvs:
        raise InputError("the mesh has no UVs to bake into", field="uvs")
    face_ids, bary = rasterize_uv_layout(mesh.uvs, mesh.face_uvs, size)
    covered = face_ids >= 0
    corners = mesh.vertices[mesh.faces[face_ids[covered]]]  # (K, 3, 3)
    points = (bary[covered][..., None] * corners).sum(1)  # (K, 3) surface points
    texture = torch.zeros(size, size, 3, dtype=torch.float32, device=mesh.vertices.device)
    if points.shape[0]:
        colors = torch.cat([color_fn(chunk).reshape(-1, 3).float() for chunk in points.split(chunk_points)])
        texture[covered] = colors.clamp(0.0, 1.0)
    return grow_texture(texture, covered, padding_px)


@torch.no_grad()
def extract_textured_mesh(field, config: MeshExtractionConfig | None = None) -> TriangleMesh:
    """A UV-mapped mesh of ``field``'s surface with its albedo baked into ``texture`` (world space, Z up).

    field: anything with ``aabb`` (2, 3), ``density(points)`` and ``albedo(points)`` (see
    :class:`radiantforge.nerf.field.RadianceField`).
    """
    config = config or MeshExtractionConfig()
    mesh = extract_mesh(field.density, field.aabb, config)
    mesh = generate_uv_atlas(mesh, resolution=config.texture_size, padding_px=config.texture_padding_px)
    field_device = field.aabb.device

    def albedo_on_mesh_device(points: Tensor) -> Tensor:
        # The mesh lives on the CPU (marching cubes and xatlas are CPU libraries); the field may not.
        return field.albedo(points.to(field_device)).to(points.device)

    mesh.texture = bake_texture(mesh, albedo_on_mesh_device, config.texture_size, config.texture_padding_px,
                                config.chunk_points)
    return mesh


def _to_y_up(vectors: Tensor) -> np.ndarray:
    return (vectors.detach().cpu().float() @ Z_UP_TO_Y_UP.T).numpy()


def _texture_image(texture: Tensor):
    from PIL import Image

    pixels = (texture.detach().cpu().clamp(0.0, 1.0) * 255.0 + 0.5).to(torch.uint8).numpy()
    return Image.fromarray(pixels, mode="RGB")


def _obj_text(mesh: TriangleMesh, mtl_name: str) -> str:
    vertices = _to_y_up(mesh.vertices)
    normals = _to_y_up(mesh.vertex_normals)
    uvs = mesh.uvs.detach().cpu().numpy()
    faces = mesh.faces.detach().cpu().numpy() + 1  # OBJ indices start at 1
    lines = ["# Radiant Forge text-to-3D mesh (Y up; Blender's importer turns it to Z up)",
             f"mtllib {mtl_name}", f"usemtl {MATERIAL_NAME}"]
    lines += [f"v {x:.6f} {y:.6f} {z:.6f}" for x, y, z in vertices]
    lines += [f"vt {u:.6f} {v:.6f}" for u, v in uvs]
    lines += [f"vn {x:.6f} {y:.6f} {z:.6f}" for x, y, z in normals]
    # Every vertex carries its own UV and normal (seams are split), so one index serves all three.
    lines += [f"f {a}/{a}/{a} {b}/{b}/{b} {c}/{c}/{c}" for a, b, c in faces]
    return "\n".join(lines) + "\n"


def _mtl_text(texture_name: str) -> str:
    return "\n".join([f"newmtl {MATERIAL_NAME}", "Ka 1.000 1.000 1.000", "Kd 1.000 1.000 1.000",
                      "Ks 0.000 0.000 0.000", "d 1.0", "illum 1", f"map_Kd {texture_name}", ""])


def _glb_bytes(mesh: TriangleMesh) -> bytes:
    import trimesh
    from trimesh.visual.material import PBRMaterial
    from trimesh.visual.texture import TextureVisuals

    material = PBRMaterial(name=MATERIAL_NAME, baseColorTexture=_texture_image(mesh.texture), metallicFactor=0.0,
                           roughnessFactor=1.0)
    visual = TextureVisuals(uv=mesh.uvs.detach().cpu().numpy(), material=material)
    tm = trimesh.Trimesh(vertices=_to_y_up(mesh.vertices), faces=mesh.faces.detach().cpu().numpy(),
                         vertex_normals=_to_y_up(mesh.vertex_normals), visual=visual, process=False)
    return tm.export(file_type="glb")


def export_textured_mesh(mesh: TriangleMesh, out_dir: str | Path, name: str = "mesh", *,
                         overwrite: bool = False) -> dict[str, Path]:
    """Write ``name``.obj, .mtl, .png (the texture) and .glb into ``out_dir``; returns their paths by role
    ("obj", "mtl", "texture", "glb"). ``mesh`` as :func:`extract_textured_mesh` makes it (world space,
    one UV per vertex, a texture).

    Each file is written under a temporary name and renamed into place, so a crash never leaves a
    half-written file under a final name. Existing files are kept (:class:`InputError`) unless
    ``overwrite``.
    """
    if not mesh.has_uvs or mesh.texture is None:
        raise InputError("the mesh needs UVs and a texture to be exported", field="texture")
    if len(mesh.uvs) != len(mesh.vertices) or not torch.equal(mesh.face_uvs, mesh.faces):
        raise InputError("expected one UV per vertex (vertices split along seams, as generate_uv_atlas makes them)",
                         field="face_uvs")
    if not name or any(sep in name for sep in ("/", "\\")) or name.strip(".") == "":
        raise InputError(f"expected a plain file stem, got {name!r}", field="name")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"obj": out_dir / f"{name}.obj", "mtl": out_dir / f"{name}.mtl", "texture": out_dir / f"{name}.png",
             "glb": out_dir / f"{name}.glb"}
    if not overwrite:
        for path in paths.values():
            if path.exists():
                raise InputError("already exists; choose another name or pass overwrite=True", file=path)
    contents = {
        "obj": _obj_text(mesh, paths["mtl"].name).encode(),
        "mtl": _mtl_text(paths["texture"].name).encode(),
        "glb": _glb_bytes(mesh),
    }
    import io

    png = io.BytesIO()
    _texture_image(mesh.texture).save(png, format="PNG")
    contents["texture"] = png.getvalue()
    # The texture and material first: an .obj that exists always finds them.
    for role in ("texture", "mtl", "obj", "glb"):
        temporary = paths[role].with_name(f".{paths[role].name}.partial")
        temporary.write_bytes(contents[role])
        os.replace(temporary, paths[role])
    return paths

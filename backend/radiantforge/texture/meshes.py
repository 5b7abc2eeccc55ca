"""The mesh of a texture job: reading and checking it, and writing the textured result (.obj/.mtl, .glb).

Checks (before any long work):
- no faces, unreadable file, unknown format: :func:`radiantforge.mesh.load_mesh` raises InputError;
- more than ``MAX_TEXTURE_FACES`` triangles: InputError (decimate first; the visibility buffer
  and the UV atlas grow with the face count, and SDS needs no more detail than a texture holds);
- a mesh of zero size: InputError;
- non-manifold edges (shared by more than two triangles): a *warning*, not an error. Texturing
  never needs a manifold (the renderer is two-sided and the texture lives in UV space), and
  artists' meshes often have such edges (intersecting parts, duplicated faces); the warning says
  how many, because duplicated faces may fight over the same pixels;
- no UVs: an atlas is made with xatlas (``uv_source = "xatlas"``); UVs outside the unit square
  give a warning (the texture tiles there, as in Blender).

Written files follow the formats' own conventions: OBJ and glTF are Y up, so the Blender (Z up)
vertices are turned back with (x, y, z) -> (x, z, −y), the inverse of the loader's rotation, and
Blender's importers put the mesh exactly where it was. OBJ UVs are v up like ours; glTF's v
down is handled by trimesh, which flips on export as it does on import.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from ..errors import InputError
from ..mesh import TriangleMesh, generate_uv_atlas, load_mesh
from ..mesh.io import MESH_SUFFIXES, Y_UP_SUFFIXES

# At most this many triangles: 1M triangles already make a 100+ MB visibility-buffer setup per
# view and minutes of xatlas; a texture of 4096^2 texels has no use for more.
MAX_TEXTURE_FACES = 1_000_000
# A mesh file larger than this holds far more than MAX_TEXTURE_FACES triangles in any format
# (an OBJ triangle with UVs and normals takes about 150 bytes; a binary glTF one about 40).
MAX_MESH_FILE_BYTES = 1 << 30
# Fraction of a bounding-box diagonal below which a mesh counts as having no size.
MIN_EXTENT = 1e-9
MATERIAL_NAME = "radiantforge_texture"


@dataclass
class PreparedMesh:
    """The mesh to texture, with what the run reports about it.

    mesh: vertices in Blender world space, UVs (its own or generated), on the CPU.
    uv_source: "mesh" (the file's own UVs) or "xatlas" (generated here).
    centre: (3,) bounding-box centre; radius: bounding-sphere radius around it (cameras are placed
        in units of it, so any mesh size works).
    warnings: things the user should know (non-manifold edges, UVs outside [0, 1]).
    fingerprint: SHA-1 of the mesh as read (positions, faces, its own UVs), before any atlas is
        made: a checkpoint resumes only on the mesh it was made for.
    """

    mesh: TriangleMesh
    uv_source: str
    centre: Tensor
    radius: float
    warnings: list[str]
    fingerprint: str = ""
    up_axis: str = "Z"


def mesh_fingerprint(mesh: TriangleMesh) -> str:
    """SHA-1 of the geometry and UVs of ``mesh``."""
    digest = hashlib.sha1()
    for tensor in (mesh.vertices, mesh.faces, mesh.uvs, mesh.face_uvs):
        if tensor is not None:
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def uv_fingerprint(mesh: TriangleMesh) -> str:
    """SHA-1 of the UVs of ``mesh`` (uvs and face_uvs): which UV layout a texture belongs to."""
    digest = hashlib.sha1()
    for tensor in (mesh.uvs, mesh.face_uvs):
        if tensor is not None:
            digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def check_reference_fits_uvs(reference_texture: Tensor, fingerprint: str | None, prepared: PreparedMesh) -> None:
    """InputError when an oracle's reference texture was made for other UVs than the job's."""
    if fingerprint is not None:
        if fingerprint != uv_fingerprint(prepared.mesh):
            raise InputError(f"the reference texture was made for other UVs than this job's ({prepared.uv_source} UVs); "
                             "make it for prepare_mesh(mesh).mesh and pass uv_fingerprint=uv_fingerprint(that mesh)",
                             field="reference_texture")
        return
    constant = bool((reference_texture - reference_texture[:1, :1]).abs().max() == 0)
    if prepared.uv_source == "xatlas" and not constant:
        raise InputError("the mesh has no UVs, so the job makes a new atlas that this reference texture was not made "
                         "for; paint it for prepare_mesh(mesh).mesh and pass uv_fingerprint=uv_fingerprint(that mesh)",
                         field="reference_texture")


def find_job_mesh(data_dir: str | os.PathLike) -> Path:
    """The one mesh file in a texture job's ``data/`` folder (OBJ companions .mtl / images may sit beside it)."""
    data_dir = Path(data_dir)
    if not data_dir.is_dir():
        raise InputError("missing data folder (it must hold the mesh to texture)", file=data_dir)
    meshes = sorted(p for p in data_dir.iterdir() if p.is_file() and p.suffix.lower() in MESH_SUFFIXES)
    if not meshes:
        raise InputError(f"no mesh file; expected one of {', '.join(MESH_SUFFIXES)}", file=data_dir)
    if len(meshes) > 1:
        raise InputError(f"holds {len(meshes)} mesh files ({', '.join(p.name for p in meshes)}); a texture job "
                         "textures exactly one", file=data_dir)
    return meshes[0]


def check_mesh_file_size(path: Path) -> None:
    """Refuse a mesh file too large to hold a mesh we can texture, before anything reads it."""
    size = path.stat().st_size
    if size > MAX_MESH_FILE_BYTES:
        raise InputError(f"is {size:,} bytes; a mesh of at most {MAX_TEXTURE_FACES:,} triangles fits in "
                         f"{MAX_MESH_FILE_BYTES:,}. Decimate it first (Blender: Decimate modifier)", file=path)


def check_face_count(mesh: TriangleMesh, source=None) -> None:
    if mesh.num_faces > MAX_TEXTURE_FACES:
        raise InputError(f"has {mesh.num_faces:,} triangles; at most {MAX_TEXTURE_FACES:,} can be textured. "
                         "Decimate it first (Blender: Decimate modifier)", file=source or mesh.source, field="faces")


def non_manifold_edge_count(mesh: TriangleMesh) -> int:
    """Edges shared by more than two triangles, vertices welded by position (UV seams are not edges)."""
    _, welded = torch.unique(mesh.vertices, dim=0, return_inverse=True)
    corners = welded[mesh.faces]  # (F, 3)
    edges = torch.cat([corners[:, [0, 1]], corners[:, [1, 2]], corners[:, [2, 0]]]).sort(dim=1).values
    edges = edges[edges[:, 0] != edges[:, 1]]  # degenerate triangles have no real edges there
    _, counts = torch.unique(edges, dim=0, return_counts=True)
    return int((counts > 2).sum())


def prepare_mesh(source: str | os.PathLike | TriangleMesh, *, atlas_resolution: int = 1024) -> PreparedMesh:
    """Load (or take) the mesh, check it, and give it UVs. Raises InputError for unusable meshes."""
    if isinstance(source, TriangleMesh):
        mesh, path = source, source.source
    else:
        path = Path(source)
        mesh = load_mesh(path)
    check_face_count(mesh, path)
    low, high = mesh.bounds()
    if float((high - low).norm()) <= MIN_EXTENT:
        raise InputError("the mesh has no size (all its vertices are at one point)", file=path, field="vertices")
    fingerprint = mesh_fingerprint(mesh)
    warnings = []
    # The up axis the file was read with (Blender's importers' defaults): OBJ / glTF say Y up; a PLY
    # or STL says nothing, so Z up is assumed, and the events say so (a Y-up scan lies on its side).
    # A TriangleMesh given by the caller is already in world space (Z up).
    suffix = "" if isinstance(source, TriangleMesh) else Path(path).suffix.lower()
    up_axis = "Y" if suffix in Y_UP_SUFFIXES else "Z"
    if suffix in (".ply", ".stl"):
        warnings.append(f"{Path(path).suffix.lower()} files do not record an up axis: Z up was assumed (a Y-up scan "
                        "such as the Stanford bunny lies on its side; rotate it to Z up first)")
    non_manifold = non_manifold_edge_count(mesh)
    if non_manifold:
        warnings.append(f"the mesh has {non_manifold} non-manifold edge(s) (shared by more than two faces); it is "
                        "textured anyway, but duplicated or intersecting faces may show seams")
    uv_source = "mesh"
    if not mesh.has_uvs:
        try:
            mesh = generate_uv_atlas(mesh, resolution=atlas_resolution)
        except ImportError as error:
            raise InputError("the mesh has no UVs and xatlas is not installed to make them (pip install xatlas), "
                             "or unwrap it first (Blender: UV > Smart UV Project)", file=path, field="uvs") from error
        uv_source = "xatlas"
    elif bool(((mesh.uvs < 0) | (mesh.uvs > 1)).any()):
        warnings.append("some UVs lie outside the unit square; the texture repeats there (as in Blender), and "
                        "those parts share texels with others")
    centre = (low + high) / 2
    radius = float((mesh.vertices - centre).norm(dim=1).max())
    return PreparedMesh(mesh, uv_source, centre, radius, warnings, fingerprint, up_axis)


# ------------------------------------------------------------------------------------------ writing


def z_up_to_y_up(points: np.ndarray) -> np.ndarray:
    """Blender (Z up) -> OBJ / glTF (Y up): (x, y, z) -> (x, z, −y)."""
    return np.stack([points[:, 0], points[:, 2], -points[:, 1]], axis=1)


def split_by_uv(mesh: TriangleMesh) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """One UV per vertex (as glTF needs): vertices (V', 3), normals (V', 3), uvs (V', 2), faces (F, 3)."""
    faces = mesh.faces.cpu().numpy()
    face_uvs = mesh.face_uvs.cpu().numpy()
    vertices = mesh.vertices.cpu().numpy()
    normals = mesh.vertex_normals.cpu().numpy()
    uvs = mesh.uvs.cpu().numpy()
    if np.array_equal(faces, face_uvs) and len(uvs) == len(vertices):
        return vertices, normals, uvs, faces
    pairs = np.stack([faces.reshape(-1), face_uvs.reshape(-1)], axis=1)
    unique, inverse = np.unique(pairs, axis=0, return_inverse=True)
    return vertices[unique[:, 0]], normals[unique[:, 0]], uvs[unique[:, 1]], inverse.reshape(-1, 3)


def _replace_atomically(path: Path, write) -> Path:
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        write(temporary)
        os.replace(temporary, path)
    finally:
        temporary.unlink(missing_ok=True)
    return path


def write_textured_obj(obj_path: str | os.PathLike, mesh: TriangleMesh, texture_file: str) -> tuple[Path, Path]:
    """``NAME.obj`` + ``NAME.mtl`` whose material maps ``texture_file`` (a path relative to the OBJ's folder).

    Faces keep the mesh's order and corner order, so a caller can match them to its own triangles.
    """
    obj_path = Path(obj_path)
    mtl_path = obj_path.with_suffix(".mtl")
    vertices = z_up_to_y_up(mesh.vertices.cpu().numpy().astype(np.float64))
    normals = z_up_to_y_up(mesh.vertex_normals.cpu().numpy().astype(np.float64))
    uvs = mesh.uvs.cpu().numpy().astype(np.float64)
    corners = np.stack([mesh.faces.cpu().numpy(), mesh.face_uvs.cpu().numpy(), mesh.faces.cpu().numpy()], axis=-1) + 1

    def write_obj(path: Path) -> None:
        with open(path, "w", encoding="utf-8") as out:
            out.write(f"# Radiant Forge textured mesh\nmtllib {mtl_path.name}\no textured_mesh\n")
            np.savetxt(out, vertices, fmt="v %.7g %.7g %.7g")
            np.savetxt(out, uvs, fmt="vt %.7g %.7g")
            np.savetxt(out, normals, fmt="vn %.6g %.6g %.6g")
            out.write(f"usemtl {MATERIAL_NAME}\ns 1\n")
            np.savetxt(out, corners.reshape(len(corners), 9), fmt="f %d/%d/%d %d/%d/%d %d/%d/%d")

    def write_mtl(path: Path) -> None:
        path.write_text(f"# Radiant Forge material\nnewmtl {MATERIAL_NAME}\nKa 1 1 1\nKd 1 1 1\nKs 0 0 0\nd 1\n"
                        f"illum 1\nmap_Kd {texture_file}\n", encoding="utf-8")

    _replace_atomically(mtl_path, write_mtl)
    _replace_atomically(obj_path, write_obj)
    return obj_path, mtl_path


def write_textured_glb(glb_path: str | os.PathLike, mesh: TriangleMesh, texture: Tensor) -> Path:
    """A binary glTF with the mesh, its UVs and ``texture`` (H, W, 3) in [0, 1] as the base colour."""
    import trimesh
    from PIL import Image

    from ..media import to_uint8

    vertices, normals, uvs, faces = split_by_uv(mesh)
    material = trimesh.visual.material.PBRMaterial(
        name=MATERIAL_NAME, baseColorTexture=Image.fromarray(to_uint8(texture)), metallicFactor=0.0,
        roughnessFactor=1.0, doubleSided=True)
    exported = trimesh.Trimesh(vertices=z_up_to_y_up(vertices), faces=faces, vertex_normals=z_up_to_y_up(normals),
                               visual=trimesh.visual.TextureVisuals(uv=uvs, material=material), process=False)
    data = exported.export(file_type="glb")
    return _replace_atomically(Path(glb_path), lambda path: path.write_bytes(data))

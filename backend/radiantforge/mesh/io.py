"""Triangle meshes with UVs as tensors, read from OBJ / PLY / GLB / glTF / STL / OFF (through trimesh).

Conventions of a loaded :class:`TriangleMesh`:

- World space is Blender's (Z up). OBJ and glTF files are Y up by their specifications, and
  Blender's importers turn them to Z up with the rotation (x, y, z) -> (x, -z, y); PLY, STL and
  OFF are taken as they are (Blender's importers' defaults). ``up_axis="auto"`` does the same, so
  a file shows up where Blender would put it.
- UVs follow OBJ and Blender: u to the right, v *up*, (0, 0) the bottom-left corner of the image.
  (glTF stores v down; trimesh flips it on load, so glTF files arrive in the same convention.)
  Textures are (H, W, 3) float32 in [0, 1] with row 0 the *top* of the image, as image readers
  give them; :func:`radiantforge.mesh.shading.sample_texture` handles the flip.
- Texture values are used as stored (sRGB-encoded colours, like Blender's colour display); no
  linearisation.
- Vertices are split where UVs differ (the UV seams), as trimesh loads them, so ``face_uvs`` is
  ``faces`` and ``uvs`` has one row per vertex. Vertex normals are area-weighted averages of face
  normals over all vertices at the same position, so the seams do not show in the shading.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from radiantforge.errors import InputError, quoted
from radiantforge.mesh.raster import check_triangles

MESH_SUFFIXES = (".obj", ".ply", ".glb", ".gltf", ".stl", ".off")
Y_UP_SUFFIXES = (".obj", ".glb", ".gltf")  # formats whose specification says +Y is up
UP_AXES = ("auto", "Y", "Z")
# (x, y, z) of a Y-up file -> Blender's Z-up world: what Blender's OBJ/glTF importers do by default.
Y_UP_TO_Z_UP = torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, -1.0], [0.0, 1.0, 0.0]])


@dataclass
class TriangleMesh:
    """A triangle mesh ready for rendering.

    vertices: (V, 3) float32 positions (Blender world space, Z up).
    faces: (F, 3) int64 vertex indices, counter-clockwise seen from the front.
    vertex_normals: (V, 3) float32 unit normals.
    uvs: (T, 2) float32 texture coordinates (v up) or None; face_uvs: (F, 3) int64 rows of uvs.
    texture: (H, W, 3) float32 in [0, 1] (row 0 = top) or None.
    vertex_colors: (V, 3) float32 in [0, 1] or None.
    source: the file it came from, if any (for messages).
    """

    vertices: Tensor
    faces: Tensor
    vertex_normals: Tensor | None = None
    uvs: Tensor | None = None
    face_uvs: Tensor | None = None
    texture: Tensor | None = None
    vertex_colors: Tensor | None = None
    source: str | None = field(default=None, compare=False)

    def __post_init__(self):
        self.vertices = torch.as_tensor(self.vertices, dtype=torch.float32)
        self.faces = torch.as_tensor(self.faces, dtype=torch.int64, device=self.vertices.device)
        if self.vertex_normals is None:
            self.vertex_normals = welded_vertex_normals(self.vertices, self.faces)
        if (self.uvs is None) != (self.face_uvs is None):
            raise InputError("uvs and face_uvs must be given together", file=self.source, field="uvs")

    @property
    def num_faces(self) -> int:
        return len(self.faces)

    @property
    def has_uvs(self) -> bool:
        return self.uvs is not None

    def face_normals(self) -> Tensor:
        """(F, 3) unit geometric normals (right-hand rule on the vertex order)."""
        corners = self.vertices[self.faces]
        normals = torch.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1)
        return torch.nn.functional.normalize(normals, dim=-1)

    def to(self, device) -> "TriangleMesh":
        def move(t):
            return None if t is None else t.to(device)

        return TriangleMesh(
            move(self.vertices), move(self.faces), move(self.vertex_normals), move(self.uvs), move(self.face_uvs),
            move(self.texture), move(self.vertex_colors), self.source,
        )

    def bounds(self) -> tuple[Tensor, Tensor]:
        """Axis-aligned bounding box corners (3,), (3,)."""
        return self.vertices.amin(0), self.vertices.amax(0)


def welded_vertex_normals(vertices: Tensor, faces: Tensor) -> Tensor:
    """(V, 3) area-weighted vertex normals, shared by all vertices at the same position.

    Vertices duplicated along UV seams get the same normal, so seams are invisible in shading.
    """
    corners = vertices[faces]  # (F, 3, 3)
    area_normals = torch.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1)
    _, welded = torch.unique(vertices, dim=0, return_inverse=True)  # (V,) position class per vertex
    sums = torch.zeros(int(welded.max()) + 1 if len(welded) else 0, 3, dtype=vertices.dtype, device=vertices.device)
    sums.index_add_(0, welded[faces].reshape(-1), area_normals.repeat_interleave(3, dim=0))
    return torch.nn.functional.normalize(sums[welded], dim=-1)


def _image_to_tensor(image) -> Tensor | None:
    """A PIL image (any mode) -> (H, W, 3) float32 in [0, 1], or None."""
    if image is None:
        return None
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    return torch.from_numpy(array.copy())


def _texture_of(visual) -> Tensor | None:
    material = getattr(visual, "material", None)
    if material is None:
        return None
    image = getattr(material, "image", None)  # SimpleMaterial (OBJ/MTL)
    if image is None:
        image = getattr(material, "baseColorTexture", None)  # PBRMaterial (glTF)
    return _image_to_tensor(image)


def load_mesh(path: str | Path, *, up_axis: str = "auto", generate_uvs: bool = False) -> TriangleMesh:
    """Read a triangle mesh file into a :class:`TriangleMesh` (on the CPU).

    up_axis: "auto" (Y for OBJ / glTF, Z otherwise, as Blender's importers), "Y" or "Z": the
        file's up axis; a Y-up file is rotated to Blender's Z up.
    generate_uvs: when the file has no UVs, make them with xatlas (:func:`generate_uv_atlas`).

    Scenes (glTF with several meshes) are flattened with their node transforms. Polygons are
    triangulated by the reader. Raises :class:`InputError` naming the file for a missing or
    unreadable file, an unknown format or a mesh without faces.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if up_axis not in UP_AXES:
        raise InputError(f"expected one of {', '.join(UP_AXES)}, got {quoted(up_axis)}", field="up_axis")
    if not path.is_file():
        raise InputError("no such file", file=path)
    if suffix not in MESH_SUFFIXES:
        raise InputError(f"unsupported mesh format {suffix or '(none)'}; expected one of {', '.join(MESH_SUFFIXES)}",
                         file=path)
    import trimesh  # imported here: only mesh jobs need it

    try:
        # process=False keeps vertices and faces as stored (no merging); OBJ vertices are still
        # split where their UVs differ, so every corner keeps its own UV.
        # Files a mesh refers to (an OBJ's .mtl and textures, a glTF's buffers and images) are read
        # from its own folder only: a name that climbs out with '..' or is absolute is refused.
        from trimesh.resolvers import FilePathResolver

        loaded = trimesh.load(str(path), process=False, resolver=FilePathResolver(str(path), allow_anywhere=False))
    except Exception as error:  # trimesh raises many kinds; the user needs the file and the reason
        raise InputError(f"could not be read as a mesh ({type(error).__name__}: {error})", file=path) from error
    if isinstance(loaded, trimesh.Scene):
        meshes = [g for g in loaded.geometry.values() if isinstance(g, trimesh.Trimesh)]
        if not meshes:
            raise InputError("contains no triangle mesh", file=path)
        loaded = loaded.to_mesh()  # node transforms applied, several meshes concatenated
    if not isinstance(loaded, trimesh.Trimesh) or len(loaded.faces) == 0:
        raise InputError("the mesh has no faces (a point cloud or an empty file?)", file=path, field="faces")

    vertices = torch.tensor(np.asarray(loaded.vertices), dtype=torch.float32)
    faces = torch.tensor(np.asarray(loaded.faces), dtype=torch.int64)
    try:
        check_triangles(vertices, faces)
    except InputError as error:
        raise InputError(error.problem, file=path, field=error.field) from None
    y_up = up_axis == "Y" or (up_axis == "auto" and suffix in Y_UP_SUFFIXES)
    if y_up:
        vertices = vertices @ Y_UP_TO_Z_UP.T

    uvs = face_uvs = texture = vertex_colors = None
    visual = loaded.visual
    uv_array = getattr(visual, "uv", None)
    if uv_array is not None and len(uv_array) == len(vertices):
        uvs = torch.tensor(np.asarray(uv_array), dtype=torch.float32)
        face_uvs = faces.clone()
        texture = _texture_of(visual)
    if getattr(visual, "kind", None) == "vertex":
        colors = np.asarray(visual.vertex_colors, dtype=np.float32)[:, :3] / 255.0
        vertex_colors = torch.from_numpy(colors.copy())
    mesh = TriangleMesh(vertices, faces, uvs=uvs, face_uvs=face_uvs, texture=texture, vertex_colors=vertex_colors,
                        source=str(path))
    if generate_uvs and not mesh.has_uvs:
        mesh = generate_uv_atlas(mesh)
    return mesh


def generate_uv_atlas(mesh: TriangleMesh, *, resolution: int = 1024, padding_px: int = 1) -> TriangleMesh:
    """A copy of ``mesh`` with a fresh UV atlas from xatlas (vertices split along the new seams).

    resolution / padding_px: the texture size the charts are packed for and the gap between charts
    in its pixels (so bilinear sampling does not bleed one chart into the next; see
    :mod:`radiantforge.mesh.atlas` for why 1 is enough).
    """
    from .atlas import AtlasOptions, make_uv_atlas

    atlas = make_uv_atlas(mesh.vertices.cpu().numpy(), mesh.faces.cpu().numpy(),
                          AtlasOptions(resolution=int(resolution), padding_px=int(padding_px)))
    vertex_map = torch.as_tensor(atlas.vertex_map, device=mesh.vertices.device)
    new_faces = torch.as_tensor(atlas.faces, device=mesh.vertices.device)
    uvs = torch.as_tensor(atlas.uvs, dtype=torch.float32, device=mesh.vertices.device)

    def remap(values):
        return None if values is None else values[vertex_map]

    return replace(
        mesh,
        vertices=mesh.vertices[vertex_map],
        faces=new_faces,
        vertex_normals=mesh.vertex_normals[vertex_map],
        uvs=uvs,
        face_uvs=new_faces.clone(),
        texture=None,  # the old texture does not fit the new UVs
        vertex_colors=remap(mesh.vertex_colors),
    )

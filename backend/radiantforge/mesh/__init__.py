"""Triangle meshes: loading (io), the visibility buffer (raster) and differentiable shading.

Typical use (texture optimisation with fixed geometry)::

    mesh = load_mesh("spot.obj")
    cache = VisibilityCache(mesh.vertices, mesh.faces, supersample=2)
    render = render_textured_mesh(mesh, texture, cameras, vbuf=cache(cameras), light=light)
    loss(render.rgb).backward()  # gradients reach ``texture``
"""

from radiantforge.mesh.io import TriangleMesh, generate_uv_atlas, load_mesh, welded_vertex_normals
from radiantforge.mesh.raster import Fragments, VisibilityBuffer, VisibilityCache, rasterize_mesh
from radiantforge.mesh.shading import (
    DirectionalLight,
    MeshRender,
    interpolate,
    interpolate_fragments,
    lambertian,
    render_textured_mesh,
    sample_texture,
)

__all__ = [
    "DirectionalLight",
    "Fragments",
    "MeshRender",
    "TriangleMesh",
    "VisibilityBuffer",
    "VisibilityCache",
    "generate_uv_atlas",
    "interpolate",
    "interpolate_fragments",
    "lambertian",
    "load_mesh",
    "rasterize_mesh",
    "render_textured_mesh",
    "sample_texture",
    "welded_vertex_normals",
]

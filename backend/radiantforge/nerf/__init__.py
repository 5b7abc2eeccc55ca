"""Radiance fields for text-to-3D: the field, its volume renderer, and mesh extraction.

- :mod:`.encoding`: tri-plane (default) and multi-resolution hash-grid encodings, pure PyTorch.
- :mod:`.field`: :class:`NerfField` (density with a blob bias + albedo MLPs inside a box) and
  :class:`BackgroundModel` (MLP on the view direction, fixed or random colour).
- :mod:`.render`: rays from :class:`~radiantforge.cameras.Cameras`, box clipping, stratified
  samples, :class:`OccupancyGrid` empty-space skipping, compositing, finite-difference normals,
  DreamFusion shading (albedo / textureless / lambertian / normal) and :class:`ShadingSchedule`.
- :mod:`.mesh_extract`: marching cubes, component cleanup, decimation, xatlas UVs, albedo
  baking and .glb / .obj export.

A typical optimisation step (the loop itself lives with the text-to-3D job)::

    field = NerfField(FieldConfig())
    occupancy = OccupancyGrid(field.aabb, resolution=64)
    views = sample_cameras(CameraSamplingConfig(batch_size=1), generator=g)
    shading = ShadingSchedule().pick(step, total_steps, g)
    out = render(field, views.cameras, RenderConfig(), shading=shading, occupancy=occupancy,
                 compute_normals=True, generator=g)   # normals for the orientation penalty
    loss = sds_loss(guidance, out.image, cond, uncond, sds_config).loss + w_orient * out.orientation_penalty.mean()
    if step % 16 == 0: occupancy.update(field.density, generator=g)
    ...
    mesh = extract_textured_mesh(field, MeshExtractionConfig())
    export_textured_mesh(mesh, out_dir, "mesh")
"""

from .encoding import HashGridConfig, HashGridEncoding, TriPlaneConfig, TriPlaneEncoding, make_encoding
from .field import BackgroundModel, FieldConfig, NerfField, RadianceField
from .mesh_extract import (MeshExtractionConfig, bake_texture, decimate, density_grid, export_textured_mesh,
                           extract_mesh, extract_textured_mesh, keep_large_components, marching_cubes_mesh,
                           rasterize_uv_layout)
from .render import (SHADING_MODES, NerfRender, OccupancyGrid, RenderConfig, ShadingSchedule, camera_rays,
                     compositing_weights, density_gradient_normals, intersect_aabb, render, sample_point_lights,
                     shade, stratified_samples)

__all__ = [
    "HashGridConfig", "HashGridEncoding", "TriPlaneConfig", "TriPlaneEncoding", "make_encoding",
    "BackgroundModel", "FieldConfig", "NerfField", "RadianceField",
    "MeshExtractionConfig", "bake_texture", "decimate", "density_grid", "export_textured_mesh", "extract_mesh",
    "extract_textured_mesh", "keep_large_components", "marching_cubes_mesh", "rasterize_uv_layout",
    "SHADING_MODES", "NerfRender", "OccupancyGrid", "RenderConfig", "ShadingSchedule", "camera_rays",
    "compositing_weights", "density_gradient_normals", "intersect_aabb", "render", "sample_point_lights", "shade",
    "stratified_samples",
]

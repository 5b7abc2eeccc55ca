"""The mesh a texture job textures, out of Blender: the target object, its UV map, data/mesh.obj.

- :func:`prepare_target`: the object to texture, the original or a new copy (its own new mesh
  datablock), and the UV map to use. A mesh without UVs gets a *new* UV map made by Smart UV
  Project (on the copy, or added beside nothing on the original: no existing layer is changed).
- :func:`write_texture_job`: ``job.json`` (kind "texture") and ``data/mesh.obj``: the *evaluated*
  mesh (modifiers applied) in world space, triangulated, with the chosen UV map, written by
  ``io.obj`` (Y up as OBJ files are; the backend turns it back to Blender's Z up).

The result comes back through ``importers.texture_job``.
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np

from .io.job_folder import DATA_DIR, TEXTURE_KIND, JobError, write_job_file
from .io.obj import write_obj

MESH_FILE = "mesh.obj"
NEW_UV_MAP_NAME = "RadiantForge UV"
COPY_SUFFIX = " textured"
SMART_PROJECT_MARGIN = 0.01  # island margin as a fraction of the UV square (room for filtering)


class TextureTarget:
    """What a texture job works on: ``obj`` (the original or the copy), the UV map name, what was created."""

    def __init__(self, obj: bpy.types.Object, uv_map: str, created_copy: bool, created_uv_map: bool):
        self.obj = obj
        self.name = obj.name  # to find it again safely (a removed object's Python wrapper is invalid)
        self.uv_map = uv_map
        self.created_copy = created_copy
        self.created_uv_map = created_uv_map

    def discard(self) -> None:
        """Remove what was made for a job that did not finish (the copy, or the new UV map)."""
        obj = bpy.data.objects.get(self.name)
        if obj is None:
            return
        if self.created_copy:
            mesh = obj.data
            bpy.data.objects.remove(obj)
            if mesh is not None and mesh.users == 0:
                bpy.data.meshes.remove(mesh)
        elif self.created_uv_map and self.uv_map in obj.data.uv_layers:
            obj.data.uv_layers.remove(obj.data.uv_layers[self.uv_map])



def smart_uv_project(obj: bpy.types.Object, uv_map: str) -> None:
    """Add the UV map ``uv_map`` to ``obj``'s mesh and fill it with Smart UV Project (all faces)."""
    layer = obj.data.uv_layers.new(name=uv_map)
    if layer is None:
        raise JobError(f"{obj.name}: cannot add a UV map (the mesh has the maximum number already)")
    obj.data.uv_layers.active = layer
    # Edit mode takes in every selected mesh, and Smart UV Project unwraps them all (adding a UV map
    # to those without one): select only the target while it runs, then restore the selection.
    view_layer = bpy.context.view_layer
    selected = [other for other in view_layer.objects if other.select_get()]
    active = view_layer.objects.active
    for other in selected:
        other.select_set(False)
    obj.select_set(True)
    view_layer.objects.active = obj
    try:
        with bpy.context.temp_override(active_object=obj, object=obj, selected_objects=[obj],
                                       selected_editable_objects=[obj]):
            bpy.ops.object.mode_set(mode="EDIT")
            try:
                bpy.ops.mesh.select_all(action="SELECT")
                bpy.ops.uv.smart_project(island_margin=SMART_PROJECT_MARGIN)
            finally:
                bpy.ops.object.mode_set(mode="OBJECT")
    finally:
        obj.select_set(False)
        for other in selected:
            other.select_set(True)
        view_layer.objects.active = active


def prepare_target(obj: bpy.types.Object, mode: str) -> TextureTarget:
    """The object the texture goes on (``mode`` "SAME" or "COPY") and the UV map it will use."""
    if obj is None or obj.type != "MESH":
        raise JobError("select a mesh object to texture")
    if obj.mode != "OBJECT":
        raise JobError(f"{obj.name} is in {obj.mode.title()} Mode; go back to Object Mode first")
    created_copy = mode == "COPY"
    if created_copy:
        copy = obj.copy()
        copy.data = obj.data.copy()
        copy.name = f"{obj.name}{COPY_SUFFIX}"
        for collection in obj.users_collection:
            collection.objects.link(copy)
        obj = copy
    uv_layers = obj.data.uv_layers
    if len(uv_layers):
        active = uv_layers.active or uv_layers[0]
        return TextureTarget(obj, active.name, created_copy, False)
    target = TextureTarget(obj, NEW_UV_MAP_NAME, created_copy, True)
    try:
        smart_uv_project(obj, NEW_UV_MAP_NAME)
    except BaseException:
        target.discard()
        raise
    return target


def evaluated_mesh_arrays(obj: bpy.types.Object, uv_map: str, depsgraph=None):
    """The evaluated mesh (modifiers applied) in world space, triangulated.

    Returns (vertices (V, 3) float64 Blender world space, uvs (L, 2) per loop, triangles (T, 3)
    vertex indices, triangle_loops (T, 3) loop indices).
    """
    depsgraph = depsgraph or bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    try:
        mesh.calc_loop_triangles()
        vertices = np.empty(len(mesh.vertices) * 3, dtype=np.float64)
        mesh.vertices.foreach_get("co", vertices)
        vertices = vertices.reshape(-1, 3)
        matrix = np.array(evaluated.matrix_world, dtype=np.float64)
        vertices = vertices @ matrix[:3, :3].T + matrix[:3, 3]
        triangles = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
        mesh.loop_triangles.foreach_get("vertices", triangles)
        triangle_loops = np.empty(len(mesh.loop_triangles) * 3, dtype=np.int64)
        mesh.loop_triangles.foreach_get("loops", triangle_loops)
        layer = mesh.uv_layers.get(uv_map)
        if layer is None:
            raise JobError(f"{obj.name}: the evaluated mesh has no UV map {uv_map!r} (a modifier removed it?)")
        uvs = np.empty(len(mesh.loops) * 2, dtype=np.float64)
        layer.data.foreach_get("uv", uvs)
    finally:
        evaluated.to_mesh_clear()
    if not len(triangles):
        raise JobError(f"{obj.name}: the mesh has no faces to texture")
    return vertices, uvs.reshape(-1, 2), triangles.reshape(-1, 3), triangle_loops.reshape(-1, 3)



def write_texture_job(job_dir: Path, target: TextureTarget, params: dict, depsgraph=None) -> Path:
    """A new job folder: job.json (kind "texture") and data/mesh.obj of the target's evaluated mesh."""
    vertices, uvs, triangles, triangle_loops = evaluated_mesh_arrays(target.obj, target.uv_map, depsgraph)
    write_job_file(job_dir, TEXTURE_KIND, params)
    data = job_dir / DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    write_obj(data / MESH_FILE, vertices, uvs, triangles, triangle_loops)
    return job_dir

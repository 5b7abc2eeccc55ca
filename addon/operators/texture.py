"""Texture the selected mesh from a prompt: export it, run a "texture" job on the backend, apply the result.

The operator stays thin; the work is done by plain functions a script can call:

- :func:`prepare_target`: the object to texture, the original or a new copy (its own new mesh
  datablock), and the UV map to use. A mesh without UVs gets a *new* UV map made by Smart UV
  Project (on the copy, or added beside nothing on the original: no existing layer is changed).
- :func:`write_texture_job`: ``job.json`` (kind "texture") and ``data/mesh.obj``: the *evaluated*
  mesh (modifiers applied) in world space, triangulated, with the chosen UV map, written with
  numpy (Y up as OBJ files are; the backend turns it back to Blender's Z up).
- :class:`TextureJobRunner`: `pipeline.JobRunner` (submit, follow, download, cancel) plus, once
  the result is in, :func:`apply_texture_result`: a *new* image (packed into the .blend) and a
  *new* material (Image Texture on the chosen UV map → Principled BSDF) put on the target. On
  the original, existing slots get the new material as an object-level link, so the mesh's own
  materials stay as they were (switch the slot's link back to Data to see them); existing
  materials and images are never modified. A failed or cancelled job removes the copy or the UV
  map it made.
"""

from __future__ import annotations

from pathlib import Path

import bpy
import numpy as np
from bpy.props import StringProperty

from .. import pipeline
from .jobs import _JobOperator
from ..preferences import backend_settings

TEXTURE_JOB_KIND = "texture"
MESH_FILE = "mesh.obj"
NEW_UV_MAP_NAME = "RadiantForge UV"
COPY_SUFFIX = " textured"
MATERIAL_PREFIX = "RF Texture"
# Characters of the prompt kept in datablock names (Blender allows 63 bytes).
NAME_PROMPT_CHARS = 40
SMART_PROJECT_MARGIN = 0.01  # island margin as a fraction of the UV square (room for filtering)
ROLE_TEXTURE = "texture"


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


def texture_params(scene: bpy.types.Scene) -> dict:
    """The job's parameters (backend TextureConfig fields) from the scene's Texture settings."""
    props = scene.radiantforge
    prompt = props.texture_prompt.strip()
    if not prompt:
        raise pipeline.JobError("the prompt is empty: describe the texture under Texture > Prompt")
    params = {"prompt": prompt, "negative_prompt": props.texture_negative_prompt.strip(),
              "guidance_scale": float(props.texture_guidance_scale), "steps": int(props.texture_steps),
              "resolution": int(props.texture_resolution), "texture_size": int(props.texture_size),
              "seed": int(props.texture_seed)}
    if props.texture_model.strip():
        params["model"] = props.texture_model.strip()
    return params


def smart_uv_project(obj: bpy.types.Object, uv_map: str) -> None:
    """Add the UV map ``uv_map`` to ``obj``'s mesh and fill it with Smart UV Project (all faces)."""
    layer = obj.data.uv_layers.new(name=uv_map)
    if layer is None:
        raise pipeline.JobError(f"{obj.name}: cannot add a UV map (the mesh has the maximum number already)")
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
        raise pipeline.JobError("select a mesh object to texture")
    if obj.mode != "OBJECT":
        raise pipeline.JobError(f"{obj.name} is in {obj.mode.title()} Mode; go back to Object Mode first")
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
            raise pipeline.JobError(f"{obj.name}: the evaluated mesh has no UV map {uv_map!r} (a modifier removed it?)")
        uvs = np.empty(len(mesh.loops) * 2, dtype=np.float64)
        layer.data.foreach_get("uv", uvs)
    finally:
        evaluated.to_mesh_clear()
    if not len(triangles):
        raise pipeline.JobError(f"{obj.name}: the mesh has no faces to texture")
    return vertices, uvs.reshape(-1, 2), triangles.reshape(-1, 3), triangle_loops.reshape(-1, 3)


def write_obj(path: Path, vertices: np.ndarray, uvs: np.ndarray, triangles: np.ndarray,
              triangle_loops: np.ndarray) -> Path:
    """An OBJ (Y up: Blender's (x, y, z) is written (x, z, -y), as Blender's exporter does) with one vt per loop."""
    y_up = np.stack([vertices[:, 0], vertices[:, 2], -vertices[:, 1]], axis=1)
    used = np.unique(triangle_loops)  # only the loops of triangles (every loop is in one)
    loop_to_vt = np.full(len(uvs), -1, dtype=np.int64)
    loop_to_vt[used] = np.arange(len(used))
    corners = np.stack([triangles + 1, loop_to_vt[triangle_loops] + 1], axis=-1).reshape(len(triangles), 6)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as out:
        out.write("# Radiant Forge: evaluated mesh for texturing\no mesh\n")
        np.savetxt(out, y_up, fmt="v %.9g %.9g %.9g")
        np.savetxt(out, uvs[used], fmt="vt %.9g %.9g")
        np.savetxt(out, corners, fmt="f %d/%d %d/%d %d/%d")
    partial.replace(path)
    return path


def write_texture_job(job_dir: Path, target: TextureTarget, params: dict, depsgraph=None) -> Path:
    """A new job folder: job.json (kind "texture") and data/mesh.obj of the target's evaluated mesh."""
    vertices, uvs, triangles, triangle_loops = evaluated_mesh_arrays(target.obj, target.uv_map, depsgraph)
    pipeline.write_job_file(job_dir, TEXTURE_JOB_KIND, params)
    data = job_dir / pipeline.DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    write_obj(data / MESH_FILE, vertices, uvs, triangles, triangle_loops)
    return job_dir


def _datablock_name(prompt: str) -> str:
    short = prompt.strip()[:NAME_PROMPT_CHARS].rstrip()
    return f"{MATERIAL_PREFIX}: {short}" if short else MATERIAL_PREFIX


def texture_file_of(result_dir: Path) -> Path:
    """The texture PNG a result folder names (role "texture" in result.json)."""
    files = pipeline.read_result_folder(result_dir)
    for entry in files.entries:
        if str(entry.get("role", "")).lower() == ROLE_TEXTURE:
            path = pipeline._resolve(files.folder, str(entry["path"]))
            if path is not None and path.is_file():
                return path
    fallback = files.folder / "texture.png"
    if fallback.is_file():
        return fallback
    raise pipeline.JobError(f"{files.folder}: the result has no texture (role 'texture' in result.json)")


def build_material(image: bpy.types.Image, uv_map: str, name: str) -> bpy.types.Material:
    """A new node material: UV Map (``uv_map``) → Image Texture (``image``) → Principled BSDF base colour."""
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender 4.x; from 5.0 every material has its node tree
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    shader = next((node for node in nodes if node.type == "BSDF_PRINCIPLED"), None)
    if shader is None:
        shader = nodes.new("ShaderNodeBsdfPrincipled")
        output = next((node for node in nodes if node.type == "OUTPUT_MATERIAL"), None) or \
            nodes.new("ShaderNodeOutputMaterial")
        links.new(shader.outputs["BSDF"], output.inputs["Surface"])
    texture_node = nodes.new("ShaderNodeTexImage")
    texture_node.image = image
    texture_node.interpolation = "Linear"
    texture_node.location = (shader.location.x - 400, shader.location.y)
    uv_node = nodes.new("ShaderNodeUVMap")
    uv_node.uv_map = uv_map
    uv_node.location = (texture_node.location.x - 250, texture_node.location.y)
    links.new(uv_node.outputs["UV"], texture_node.inputs["Vector"])
    links.new(texture_node.outputs["Color"], shader.inputs["Base Color"])
    if "Roughness" in shader.inputs:
        shader.inputs["Roughness"].default_value = 1.0  # the texture is an albedo learnt under diffuse light
    return material


def apply_texture_result(target: TextureTarget, result_dir: Path, prompt: str) -> tuple[bpy.types.Material, bpy.types.Image]:
    """Load the result's texture as a new packed image and put a new material using it on the target."""
    texture_path = texture_file_of(Path(result_dir))
    name = _datablock_name(prompt)
    image = bpy.data.images.load(str(texture_path), check_existing=False)
    image.name = name
    image.pack()  # the job folder may be a temporary one: the .blend keeps its own copy
    material = build_material(image, target.uv_map, name)
    obj = target.obj
    if target.created_copy:
        obj.data.materials.clear()  # the copy's own new mesh: nothing of the user's is touched
        obj.data.materials.append(material)
    elif len(obj.material_slots):
        for slot in obj.material_slots:  # object-level links: the mesh keeps its own materials
            slot.link = "OBJECT"
            slot.material = material
    else:
        obj.data.materials.append(material)
    obj["radiantforge_texture_job"] = str(Path(result_dir).parent)
    return material, image


class TextureJobRunner(pipeline.JobRunner):
    """A texture job from a written job folder: submit, follow, download, then apply the texture to ``target``."""

    # The object (or UV map) a texture job works on is removed when the job stops without a result,
    # and the texture only fits those UVs: a resumed job would have nothing to go onto.
    resume_refusal = ("a stopped texture job cannot be resumed from Blender (the object copy it textures was "
                      "removed); resume it where the service runs (`radiantforge run JOB --resume`) or texture "
                      "the mesh again")

    def __init__(self, job_dir, target: TextureTarget, prompt: str, **kwargs):
        options = pipeline.ImportOptions(gaussians=False, turntable=False, test_renders=False)
        super().__init__(job_dir, import_options=options, **kwargs)
        self.target = target
        self.prompt = prompt
        self.material: bpy.types.Material | None = None
        self.image: bpy.types.Image | None = None

    def _run(self):
        try:
            yield from super()._run()
            if self.state == "finished":
                self.material, self.image = apply_texture_result(self.target, self.result_dir, self.prompt)
                self.message = f"finished · material {self.material.name!r} on {self.target.obj.name!r}"
        finally:
            if self.material is None:
                self.target.discard()


def start_texture_job(context, job_dir: Path | None = None) -> TextureJobRunner:
    """Prepare the target, write the job folder and return its runner (not yet started)."""
    scene = context.scene
    props = scene.radiantforge
    params = texture_params(scene)
    source = context.active_object
    target = prepare_target(source, props.texture_target)
    try:
        job_dir = Path(job_dir) if job_dir else pipeline.new_job_dir(
            pipeline.default_jobs_folder(props.jobs_folder), f"{source.name}-texture")
        write_texture_job(job_dir, target, params, context.evaluated_depsgraph_get())
        return TextureJobRunner(job_dir, target, params["prompt"], params=params, backend=backend_settings(context),
                                name=f"{source.name} texture")
    except BaseException:
        target.discard()
        raise


class RADIANTFORGE_OT_texture_mesh(_JobOperator, bpy.types.Operator):
    """Texture the active mesh from the prompt (Stable Diffusion score distillation on the backend); the result comes back as a new material"""

    bl_idname = "radiant_forge.texture_mesh"
    bl_label = "Texture Selected Mesh"
    bl_options = {"REGISTER"}

    job_dir: StringProperty(name="Job Folder", subtype="DIR_PATH", default="", options={"SKIP_SAVE"},
                            description="New job folder (empty: a fresh one in the jobs folder)")

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if obj is None or obj.type != "MESH":
            cls.poll_message_set("select a mesh object")
            return False
        return True

    def make_runner(self, context):
        try:
            return start_texture_job(context, Path(bpy.path.abspath(self.job_dir)) if self.job_dir else None)
        except RuntimeError as exc:  # a bpy operator (Smart UV Project, mode switch) refused
            raise pipeline.JobError(str(exc)) from exc

    def _finish(self, context, runner):
        outcome = super()._finish(context, runner)
        if isinstance(runner, TextureJobRunner) and runner.material is not None:
            context.window_manager.radiantforge_job.result_object = runner.target.obj
        return outcome


CLASSES = (RADIANTFORGE_OT_texture_mesh,)

"""Generate an object from a text prompt: a "text3d" job on the backend, the mesh imported at the 3D cursor.

The operator stays thin; the work is done by plain functions a script can call:

- :func:`text3d_params`: the job's parameters (backend ``Text3DConfig`` fields) from the scene's
  Text-to-3D settings (prompt, steps, seed, resolution, guidance, and the advanced shading,
  regulariser and mesh settings).
- :func:`write_text3d_job`: ``job.json`` (kind "text3d") and ``data/prompt.txt`` (the prompt is
  the only input).
- :class:`Text3DJobRunner`: `pipeline.JobRunner` (submit, follow with previews, download, cancel,
  turntable import) plus, once the result is in, :func:`import_generated_mesh`: the result's
  textured .glb imported with its material (Principled BSDF with the baked albedo texture, packed
  into the .blend) and moved to where the 3D cursor was when the job started. The turntable
  comes in as an image sequence when "Import Turntable" is on.
"""

from __future__ import annotations

import math
from pathlib import Path

import bpy
from bpy.props import StringProperty

from .. import pipeline
from .jobs import _JobOperator
from ..preferences import backend_settings

TEXT3D_JOB_KIND = "text3d"
ROLE_MESH = "mesh"
PROMPT_FILE = "prompt.txt"
MESH_FALLBACK_NAMES = ("mesh.glb", "mesh.obj")
OBJECT_PREFIX = "RF"
# Characters of the prompt kept in datablock names (Blender allows 63 bytes).
NAME_PROMPT_CHARS = 40


def text3d_params(scene: bpy.types.Scene) -> dict:
    """The job's parameters (backend Text3DConfig fields) from the scene's Text-to-3D settings."""
    props = scene.radiantforge
    prompt = props.text3d_prompt.strip()
    if not prompt:
        raise pipeline.JobError("the prompt is empty: describe the object under Text-to-3D > Prompt")
    params = {
        "prompt": prompt, "negative_prompt": props.text3d_negative_prompt.strip(),
        "steps": int(props.text3d_steps), "seed": int(props.text3d_seed), "resolution": int(props.text3d_resolution),
        "guidance_scale": float(props.text3d_guidance_scale),
        "latent_iter_ratio": float(props.text3d_latent_iter_ratio),
        "albedo_probability": float(props.text3d_albedo_probability),
        "textureless_probability": float(props.text3d_textureless_probability),
        "ambient": float(props.text3d_ambient),
        "entropy_weight": float(props.text3d_entropy_weight),
        "orientation_weight": float(props.text3d_orientation_weight),
        "sparsity_weight": float(props.text3d_sparsity_weight),
        "target_faces": int(props.text3d_target_faces), "texture_size": int(props.text3d_texture_size),
    }
    if params["albedo_probability"] + params["textureless_probability"] > 1.0:
        raise pipeline.JobError("Text-to-3D > Advanced: Albedo and Textureless shares add up to more than 1")
    if props.text3d_model.strip():
        params["model"] = props.text3d_model.strip()
    return params


def write_text3d_job(job_dir: Path, params: dict) -> Path:
    """A new job folder: job.json (kind "text3d") and data/prompt.txt.

    The prompt (in job.json) is the only input; data/prompt.txt repeats it for people browsing job
    folders, and keeps data/ from being empty (an uploaded archive holds no empty folders).
    """
    pipeline.write_job_file(job_dir, TEXT3D_JOB_KIND, params)
    data = Path(job_dir) / pipeline.DATA_DIR
    data.mkdir(parents=True, exist_ok=True)
    (data / PROMPT_FILE).write_text(params["prompt"] + "\n", encoding="utf-8")
    return Path(job_dir)


def object_name(prompt: str) -> str:
    short = prompt.strip()[:NAME_PROMPT_CHARS].rstrip()
    return f"{OBJECT_PREFIX} {short}" if short else OBJECT_PREFIX


def mesh_file_of(result_dir: Path) -> Path:
    """The textured mesh a result folder names (role "mesh" in result.json: the .glb)."""
    files = pipeline.read_result_folder(result_dir)
    for entry in files.entries:
        if str(entry.get("role", "")).lower() == ROLE_MESH:
            path = pipeline._resolve(files.folder, str(entry["path"]))
            if path is not None and path.is_file():
                return path
    for name in MESH_FALLBACK_NAMES:
        if (files.folder / name).is_file():
            return files.folder / name
    raise pipeline.JobError(f"{files.folder}: the result has no mesh (role 'mesh' in result.json)")


def _import_file(path: Path) -> None:
    if path.suffix.lower() in (".glb", ".gltf"):
        bpy.ops.import_scene.gltf(filepath=str(path))  # its material: Principled BSDF with the texture
    else:
        bpy.ops.wm.obj_import(filepath=str(path))  # OBJ files are Y up: the importer's defaults turn them Z up


def import_generated_mesh(result_dir: Path, location=(0.0, 0.0, 0.0), name: str = OBJECT_PREFIX,
                          collection: bpy.types.Collection | None = None) -> bpy.types.Object:
    """Import the result's textured mesh with its material and move it to ``location`` (world space).

    The backend's meshes are centred on the generation box's centre, which becomes the object's
    origin, so ``location`` (the 3D cursor) is where the object's centre lands. Textures are packed
    into the .blend: the job folder may be a temporary one.
    """
    path = mesh_file_of(Path(result_dir))
    before = set(bpy.data.objects)
    _import_file(path)
    new_objects = [obj for obj in bpy.data.objects if obj not in before]
    meshes = [obj for obj in new_objects if obj.type == "MESH"]
    if not meshes:
        for obj in new_objects:
            bpy.data.objects.remove(obj)
        raise pipeline.JobError(f"{path}: no mesh came in from the result file")
    for root in (obj for obj in new_objects if obj.parent is None):
        root.location = tuple(a + b for a, b in zip(root.location, location))
    if collection is not None:
        for obj in new_objects:
            for owner in list(obj.users_collection):
                owner.objects.unlink(obj)
            collection.objects.link(obj)
    obj = meshes[0]
    obj.name = name
    for material in (slot.material for slot in obj.material_slots if slot.material is not None):
        for node in (material.node_tree.nodes if material.node_tree else []):
            image = getattr(node, "image", None)
            if image is not None and not image.packed_file and image.source == "FILE":
                image.pack()
    obj["radiantforge_text3d_job"] = str(Path(result_dir).parent)
    return obj


class Text3DJobRunner(pipeline.JobRunner):
    """A text3d job from a written job folder: submit, follow, download, then import the mesh at ``location``."""

    def __init__(self, job_dir, prompt: str, location=(0.0, 0.0, 0.0), import_turntable: bool = True, **kwargs):
        options = pipeline.ImportOptions(gaussians=False, turntable=import_turntable, test_renders=False)
        super().__init__(job_dir, import_options=options, **kwargs)
        self.prompt = prompt
        self.location = tuple(float(v) for v in location)
        self.result_object: bpy.types.Object | None = None

    def _run(self):
        yield from super()._run()
        if self.state == "finished":
            self.result_object = import_generated_mesh(self.result_dir, self.location, object_name(self.prompt))
            self.result_object["radiantforge_prompt"] = self.prompt
            faces = len(self.result_object.data.polygons)
            self.message = f"finished · {self.result_object.name!r} ({faces:,} faces) at the 3D cursor"

    def _finished_message(self) -> str:
        seconds = self.metrics.get("train_seconds")
        return "finished" + (f" · {seconds / 60:.1f} min" if isinstance(seconds, (int, float)) and
                             math.isfinite(seconds) else "")


def start_text3d_job(context, job_dir: Path | None = None) -> Text3DJobRunner:
    """Write the job folder from the scene's settings and return its runner (not yet started)."""
    scene = context.scene
    props = scene.radiantforge
    params = text3d_params(scene)
    job_dir = Path(job_dir) if job_dir else pipeline.new_job_dir(pipeline.default_jobs_folder(props.jobs_folder),
                                                                 f"text3d-{params['prompt'][:24]}")
    write_text3d_job(job_dir, params)
    return Text3DJobRunner(job_dir, params["prompt"], tuple(scene.cursor.location), props.import_turntable,
                           params=params, backend=backend_settings(context), name=object_name(params["prompt"]))


class RADIANTFORGE_OT_generate_from_text(_JobOperator, bpy.types.Operator):
    """Generate a textured 3D object from the prompt (a NeRF optimised with Stable Diffusion on the backend); it comes in at the 3D cursor"""

    bl_idname = "radiant_forge.generate_from_text"
    bl_label = "Generate from Text"
    bl_options = {"REGISTER"}

    job_dir: StringProperty(name="Job Folder", subtype="DIR_PATH", default="", options={"SKIP_SAVE"},
                            description="New job folder (empty: a fresh one in the jobs folder)")

    def make_runner(self, context):
        return start_text3d_job(context, Path(bpy.path.abspath(self.job_dir)) if self.job_dir else None)

    def _finish(self, context, runner):
        outcome = super()._finish(context, runner)
        if isinstance(runner, Text3DJobRunner) and runner.result_object is not None:
            context.window_manager.radiantforge_job.result_object = runner.result_object
        return outcome


CLASSES = (RADIANTFORGE_OT_generate_from_text,)

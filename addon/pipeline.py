"""Each job kind from the scene's settings: its parameters, its job folder, its runner.

A runner is the transport (``transport.JobRunner``: submit, follow, download) with the job kind's
importer (``importers.gaussian_job``, ``importers.texture_job``, ``importers.text3d_job``) and, for
a Gaussian job made from the scene, its capture (``capture.CapturePlan``). The operators call
these functions; so can scripts:

    runner = gaussian_job(job_dir, capture=CapturePlan(scene, ...), params=gaussian_params(steps=500),
                          backend=BackendSettings(...))
    runner.run_blocking(on_progress=print)
"""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Any

import bpy

from . import capture as capture_module
from .importers.gaussian_job import GaussianJobImporter
from .importers.results import ImportOptions
from .importers.text3d_job import Text3DJobImporter, object_name
from .importers.texture_job import TextureJobImporter
from .io.job_folder import JOB_FILE, JobError, gaussian_params, job_from_dataset, quality_time_budget, write_text3d_job
from .mesh_export import prepare_target, write_texture_job
from .preferences import backend_settings
from .settings import BackendSettings
from .transport import POLL_INTERVAL_S, JobRunner

JOBS_FOLDER_NAME = "radiantforge_jobs"
# Characters of a text-to-3D prompt kept in its job folder's name.
JOB_NAME_PROMPT_CHARS = 24


# ------------------------------------------------------------------------------------------------
# Job folders
# ------------------------------------------------------------------------------------------------


def default_jobs_folder(scene_setting: str = "") -> Path:
    """The jobs folder: the scene's setting, else beside the saved .blend, else the temp folder."""
    if scene_setting:
        return Path(bpy.path.abspath(scene_setting))
    if bpy.data.filepath:
        return Path(bpy.path.abspath("//" + JOBS_FOLDER_NAME))
    return Path(tempfile.gettempdir()) / JOBS_FOLDER_NAME


def new_job_dir(jobs_folder: str | os.PathLike, name: str) -> Path:
    """A fresh, not yet existing folder ``<jobs_folder>/<YYYYmmdd-HHMMSS>-<name>[-n]``."""
    jobs_folder = Path(jobs_folder)
    stem = f"{time.strftime('%Y%m%d-%H%M%S')}-{bpy.path.clean_name(name) or 'job'}"
    candidate, counter = jobs_folder / stem, 1
    while candidate.exists():
        counter += 1
        candidate = jobs_folder / f"{stem}-{counter}"
    return candidate


def job_dir_for(scene: bpy.types.Scene, requested: str | os.PathLike | None, name: str) -> Path:
    """The folder a new job goes in: ``requested`` (an operator's Job Folder, Blender-relative paths
    allowed), else a fresh one named ``name`` in the scene's jobs folder."""
    if requested:
        return Path(bpy.path.abspath(str(requested)))
    return new_job_dir(default_jobs_folder(scene.radiantforge.jobs_folder), name)


# ------------------------------------------------------------------------------------------------
# Gaussians
# ------------------------------------------------------------------------------------------------


def capture_settings_from_scene(scene: bpy.types.Scene, objects=None) -> capture_module.CaptureSettings:
    props = scene.radiantforge
    return capture_module.CaptureSettings(
        engine=None if props.engine == "SCENE" else props.engine,
        resolution=(props.resolution, props.resolution),
        samples=props.samples or None,
        test_every=props.test_every,
        n_points=props.point_count,
        point_objects=objects,
    )


def capture_plan_from_context(context) -> capture_module.CapturePlan:
    """Cameras and objects from the scene settings and the selection."""
    scene = context.scene
    props = scene.radiantforge
    if props.camera_source == "COLLECTION":
        if props.camera_collection is None:
            raise JobError("Capture > Cameras is 'Collection' but no camera collection is chosen")
        cameras = capture_module.collection_cameras(props.camera_collection.name)
        objects = None
    else:
        cameras = None
        selected = [obj for obj in (getattr(context, "selected_objects", None) or [])
                    if obj.type in capture_module.GEOMETRY_TYPES]
        objects = selected or None  # nothing selected: circle everything that renders
    return capture_module.CapturePlan(
        scene=scene, cameras=cameras, objects=objects, view_count=props.view_count,
        upper_hemisphere={"AUTO": None, "FULL": False, "UPPER": True}[props.hemisphere], focal_length_mm=props.focal_length, keep_rig=props.keep_rig,
        settings=capture_settings_from_scene(scene, objects))


def training_params(scene: bpy.types.Scene) -> dict:
    props = scene.radiantforge
    return gaussian_params(steps=props.steps, sh_degree=props.sh_degree, max_gaussians=props.max_gaussians,
                           time_budget=quality_time_budget(props.quality))


def import_options(scene: bpy.types.Scene) -> ImportOptions:
    props = scene.radiantforge
    return ImportOptions(display=props.display, turntable=props.import_turntable)


def gaussian_job(job_dir: str | os.PathLike, *, capture: capture_module.CapturePlan | None = None,
                 params: dict[str, Any] | None = None, backend: BackendSettings | None = None, submit: bool = True,
                 import_options: ImportOptions | None = None, poll_interval: float = POLL_INTERVAL_S,
                 name: str | None = None) -> JobRunner:
    """The runner of a "gaussians" job: ``capture`` writes the job folder first (else ``job_dir``
    is one already), the splats come back with ``import_options``; ``submit=False`` only writes it."""
    return JobRunner(job_dir, importer=GaussianJobImporter(import_options), prepare=capture, params=params,
                     backend=backend, submit=submit, poll_interval=poll_interval, name=name)


def capture_job_from_context(context, job_dir: str | None = None, submit: bool = True) -> JobRunner:
    """Capture the scene as the settings say into a new job folder, then (``submit``) train and import."""
    scene = context.scene
    return gaussian_job(job_dir_for(scene, job_dir, scene.name), capture=capture_plan_from_context(context),
                        params=training_params(scene), backend=backend_settings(context) if submit else None,
                        submit=submit, import_options=import_options(scene), name=f"{scene.name} splats")


def dataset_job_from_context(context, directory: str | None = None) -> JobRunner:
    """Train on an existing dataset (copied into a new job folder) or run an exported job folder as it is."""
    scene = context.scene
    props = scene.radiantforge
    source = bpy.path.abspath(directory or props.dataset_folder)
    if not source:
        raise JobError("no dataset chosen: set Gaussians > Dataset to a NeRF-synthetic folder or a job folder")
    source = Path(source)
    if (source / JOB_FILE).is_file():
        job_dir = source  # an exported job folder: run it as it is
    else:
        job_dir = job_from_dataset(source, job_dir_for(scene, None, source.name), training_params(scene))
    return gaussian_job(job_dir, params=training_params(scene), backend=backend_settings(context),
                        import_options=import_options(scene), name=f"{source.name} splats")


# ------------------------------------------------------------------------------------------------
# The guided jobs: texture and text-to-3D
# ------------------------------------------------------------------------------------------------


def guided_params(settings: bpy.types.PropertyGroup, empty_prompt_hint: str) -> dict[str, Any]:
    """The parameters of a guided job from its settings group (``scene.radiantforge.texture`` or
    ``.text3d``): the prompts, the model when one is named, and every number setting under its own
    name (the groups name them as the backend's config fields)."""
    prompt = settings.prompt.strip()
    if not prompt:
        raise JobError(f"the prompt is empty: {empty_prompt_hint}")
    return {"prompt": prompt, **guided_settings_params(settings)}


def guided_settings_params(settings: bpy.types.PropertyGroup) -> dict[str, Any]:
    """A guided job's parameters from its settings group without the prompt (a batch file brings its own)."""
    params: dict[str, Any] = {"negative_prompt": settings.negative_prompt.strip()}
    params.update({prop.identifier: getattr(settings, prop.identifier) for prop in settings.bl_rna.properties
                   if prop.type in ("INT", "FLOAT")})
    if settings.model.strip():
        params["model"] = settings.model.strip()
    if hasattr(settings, "representation"):  # Text-to-3D only: "nerf" or "gaussians"
        params["representation"] = settings.representation.lower()
    return params


def texture_params(scene: bpy.types.Scene) -> dict:
    """The job's parameters (backend TextureConfig fields) from the scene's Texture settings."""
    return guided_params(scene.radiantforge.texture, "describe the texture under Texture > Prompt")


def text3d_params(scene: bpy.types.Scene) -> dict:
    """The job's parameters (backend Text3DConfig fields) from the scene's Text-to-3D settings."""
    params = guided_params(scene.radiantforge.text3d, "describe the object under Text-to-3D > Prompt")
    if params["albedo_probability"] + params["textureless_probability"] > 1.0:
        raise JobError("Text-to-3D > Advanced: Albedo and Textureless shares add up to more than 1")
    return params


def texture_job_from_context(context, job_dir: str | None = None) -> JobRunner:
    """Texture the active object as the settings say: prepare the target (the object or a copy, its UV
    map), write the job folder and return its runner (not yet started). A failure removes what it made."""
    scene = context.scene
    params = texture_params(scene)
    source = context.active_object
    target = prepare_target(source, scene.radiantforge.texture.target)
    try:
        job_dir = job_dir_for(scene, job_dir, f"{source.name}-texture")
        write_texture_job(job_dir, target, params, context.evaluated_depsgraph_get())
        return JobRunner(job_dir, importer=TextureJobImporter(target, params["prompt"]), params=params,
                         backend=backend_settings(context), name=f"{source.name} texture")
    except BaseException:
        target.discard()
        raise


def text3d_job_from_context(context, job_dir: str | None = None) -> JobRunner:
    """Write a text-to-3D job folder from the settings and return its runner (not yet started); the
    object comes in at where the 3D cursor is now."""
    scene = context.scene
    params = text3d_params(scene)
    job_dir = job_dir_for(scene, job_dir, f"text3d-{params['prompt'][:JOB_NAME_PROMPT_CHARS]}")
    write_text3d_job(job_dir, params)
    importer = Text3DJobImporter(params["prompt"], tuple(scene.cursor.location), scene.radiantforge.import_turntable)
    return JobRunner(job_dir, importer=importer, params=params, backend=backend_settings(context),
                     name=object_name(params["prompt"]))

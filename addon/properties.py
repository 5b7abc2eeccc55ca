"""Settings stored in the .blend (per scene) and the live state of the running job (per window manager).

`Scene.radiantforge` holds what the artist chose (cameras, views, engine, training steps, import
options); `WindowManager.radiantforge_job` holds what the job is doing right now (progress,
message, metrics, preview) — runtime state that is not saved with the file.
"""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

ENGINE_ITEMS = [
    ("SCENE", "Scene's engine", "Render with the engine set in the scene's render properties"),
    ("CYCLES", "Cycles", "Path tracing: slowest, most faithful"),
    ("BLENDER_EEVEE", "EEVEE", "Real-time engine"),
    ("BLENDER_WORKBENCH", "Workbench", "Flat viewport shading: fastest, for quick tests"),
]

CAMERA_SOURCE_ITEMS = [
    ("ORBIT", "Orbit rig", "Cameras spread evenly around the selected objects"),
    ("COLLECTION", "Collection", "The cameras of a collection"),
]

DISPLAY_ITEMS = [
    ("AUTO", "Auto", "Ellipsoids, or points for very large splat files"),
    ("ELLIPSOIDS", "Ellipsoids", "An oriented ellipsoid per Gaussian (slower, closer to the splat render)"),
    ("POINTS", "Points", "A point per Gaussian (fast, for large files)"),
]

# Defaults: enough views for a small object, a resolution CPUs train on in minutes.
DEFAULT_VIEWS = 48
DEFAULT_RESOLUTION = 256
DEFAULT_TEST_EVERY = 8
DEFAULT_ITERS = 3000

TEXTURE_TARGET_ITEMS = [
    ("COPY", "New Copy", "Texture a copy of the object (with its own mesh); the original is left as it is"),
    ("SAME", "Same Object", "Put the new material on the selected object itself; its existing materials are kept"),
]
# Text-to-texture defaults: the backend's (SD's own 512 px views, a 1024^2 texture, 1000 steps, CFG 100).
DEFAULT_TEXTURE_STEPS = 1000
DEFAULT_TEXTURE_RESOLUTION = 512
DEFAULT_TEXTURE_SIZE = 1024
DEFAULT_GUIDANCE_SCALE = 100.0
# Text-to-3D defaults: the backend's Text3DConfig (64 px NeRF renders upsampled for SD, 3000 steps,
# DreamFusion's shading mix after a 20% normal-shading warm-up, its regulariser weights).
DEFAULT_TEXT3D_STEPS = 3000
DEFAULT_TEXT3D_RESOLUTION = 64
DEFAULT_TEXT3D_FACES = 20000


class RadiantForgeSceneSettings(bpy.types.PropertyGroup):
    # Capture
    camera_source: EnumProperty(name="Cameras", items=CAMERA_SOURCE_ITEMS, default="ORBIT")
    camera_collection: PointerProperty(name="Camera Collection", type=bpy.types.Collection,
                                       description="Collection whose cameras are rendered")
    view_count: IntProperty(name="Views", default=DEFAULT_VIEWS, min=2, soft_max=300,
                            description="Number of orbit cameras")
    upper_hemisphere: BoolProperty(name="Upper Hemisphere", default=False,
                                   description="Place orbit cameras above the objects only (for objects on a floor)")
    focal_length: FloatProperty(name="Focal Length", default=50.0, min=1.0, soft_max=300.0, unit="CAMERA",
                                description="Lens of the orbit cameras")
    test_every: IntProperty(name="Hold Out Every", default=DEFAULT_TEST_EVERY, min=2, soft_max=50,
                            description="Every k-th view is kept for testing, not training")
    engine: EnumProperty(name="Engine", items=ENGINE_ITEMS, default="SCENE")
    resolution: IntProperty(name="Resolution", default=DEFAULT_RESOLUTION, min=16, soft_max=2048, subtype="PIXEL",
                            description="Width and height of the rendered views")
    samples: IntProperty(name="Samples", default=0, min=0, soft_max=1024,
                         description="Render samples (Cycles, EEVEE); 0 keeps the scene's")
    point_count: IntProperty(name="Points", default=20000, min=0, soft_max=200000,
                             description="Surface points sampled for points3d.ply (the Gaussians' starting positions)")
    keep_rig: BoolProperty(name="Keep Orbit Cameras", default=False,
                           description="Keep the orbit cameras in the scene after the capture")
    jobs_folder: StringProperty(name="Jobs Folder", subtype="DIR_PATH", default="",
                                description="Where job folders are written (empty: beside the .blend, else the temporary folder)")
    dataset_folder: StringProperty(name="Dataset", subtype="DIR_PATH", default="",
                                   description="An existing NeRF-synthetic dataset (transforms_train.json) or job folder")

    # Gaussians (training)
    iters: IntProperty(name="Steps", default=DEFAULT_ITERS, min=1, soft_max=30000,
                       description="Optimisation steps")
    sh_degree: IntProperty(name="SH Degree", default=3, min=0, max=3,
                           description="Spherical-harmonics degree of the view-dependent colour")
    max_gaussians: IntProperty(name="Max Gaussians", default=0, min=0, soft_max=2_000_000,
                               description="Cap on the number of Gaussians (0: the backend's default)")

    # Texture (text-to-texture)
    texture_prompt: StringProperty(name="Prompt", default="",
                                   description="What the texture shows, e.g. 'a cow with black and white patches'")
    texture_negative_prompt: StringProperty(name="Negative Prompt", default="",
                                            description="What to steer away from (optional)")
    texture_guidance_scale: FloatProperty(name="Guidance Scale", default=DEFAULT_GUIDANCE_SCALE, min=1.0, soft_max=200.0,
                                          description="Classifier-free guidance: how strongly the prompt is followed")
    texture_steps: IntProperty(name="Steps", default=DEFAULT_TEXTURE_STEPS, min=1, soft_max=5000,
                               description="Optimisation steps")
    texture_resolution: IntProperty(name="Resolution", default=DEFAULT_TEXTURE_RESOLUTION, min=16, soft_max=1024,
                                    subtype="PIXEL", description="Size of the views rendered for the diffusion model")
    texture_size: IntProperty(name="Texture Size", default=DEFAULT_TEXTURE_SIZE, min=16, soft_max=4096, subtype="PIXEL",
                              description="Width and height of the texture image")
    texture_seed: IntProperty(name="Seed", default=0, min=0, description="Random seed (cameras, noise)")
    texture_model: StringProperty(name="Model", default="sd15",
                                  description="Stable Diffusion on the backend machine: sd15, sd21base, a Hugging Face "
                                              "id already in its cache, or a folder there")
    texture_target: EnumProperty(name="Apply To", items=TEXTURE_TARGET_ITEMS, default="COPY")

    # Text-to-3D (DreamFusion-style generation); the advanced ones are the backend's shading and regulariser settings
    text3d_prompt: StringProperty(name="Prompt", default="", description="What to make, e.g. 'a ceramic teapot'")
    text3d_negative_prompt: StringProperty(name="Negative Prompt", default="",
                                           description="What to steer away from (optional)")
    text3d_steps: IntProperty(name="Steps", default=DEFAULT_TEXT3D_STEPS, min=1, soft_max=20000,
                              description="Optimisation steps")
    text3d_seed: IntProperty(name="Seed", default=0, min=0, description="Random seed (field, cameras, noise)")
    text3d_resolution: IntProperty(name="Resolution", default=DEFAULT_TEXT3D_RESOLUTION, min=8, max=512, soft_max=128,
                                   subtype="PIXEL",
                                   description="Size of the NeRF renders while optimising (upsampled for the diffusion model)")
    text3d_guidance_scale: FloatProperty(name="Guidance Scale", default=DEFAULT_GUIDANCE_SCALE, min=1.0, soft_max=200.0,
                                         description="Classifier-free guidance: how strongly the prompt is followed")
    text3d_model: StringProperty(name="Model", default="sd15",
                                 description="Stable Diffusion on the backend machine: sd15, sd21base, a Hugging Face "
                                             "id already in its cache, or a folder there")
    text3d_latent_iter_ratio: FloatProperty(name="Normal Warm-up", default=0.2, min=0.0, max=1.0, subtype="FACTOR",
                                            description="Share of the steps that render normals only (geometry first)")
    text3d_albedo_probability: FloatProperty(name="Albedo Share", default=0.2, min=0.0, max=1.0, subtype="FACTOR",
                                             description="After the warm-up: share of steps rendering the plain colour")
    text3d_textureless_probability: FloatProperty(
        name="Textureless Share", default=0.4, min=0.0, max=1.0, subtype="FACTOR",
        description="After the warm-up: share of steps rendering grey lit geometry (the rest: lit colour)")
    text3d_ambient: FloatProperty(name="Ambient", default=0.1, min=0.0, max=1.0, subtype="FACTOR",
                                  description="Ambient share of the lit shading modes")
    text3d_entropy_weight: FloatProperty(name="Opacity Entropy", default=1e-3, min=0.0, soft_max=0.1, precision=4,
                                         description="Pushes every pixel to fully empty or fully solid")
    text3d_orientation_weight: FloatProperty(name="Orientation", default=1e-2, min=0.0, soft_max=1.0, precision=4,
                                             description="Penalises surface normals that face away from the camera")
    text3d_sparsity_weight: FloatProperty(name="Sparsity", default=0.0, min=0.0, soft_max=1.0, precision=4,
                                          description="Penalises opacity everywhere (fewer floaters); 0 is off")
    text3d_target_faces: IntProperty(name="Faces", default=DEFAULT_TEXT3D_FACES, min=0, soft_max=200000,
                                     description="Decimate the mesh to this many triangles (0 keeps them all)")
    text3d_texture_size: IntProperty(name="Texture Size", default=1024, min=8, soft_max=4096, subtype="PIXEL",
                                     description="Width and height of the baked colour texture")

    # Import
    display: EnumProperty(name="Display", items=DISPLAY_ITEMS, default="AUTO")
    import_turntable: BoolProperty(name="Import Turntable", default=True,
                                   description="Bring the turntable frames back as an image sequence")


class RadiantForgeJobStatus(bpy.types.PropertyGroup):
    """What the current (or last) job is doing; drawn by the panel and the status bar."""

    running: BoolProperty(default=False)
    cancel_requested: BoolProperty(default=False)
    phase: StringProperty(default="")
    progress: FloatProperty(default=0.0, min=0.0, max=1.0, subtype="FACTOR")
    message: StringProperty(default="")
    error: StringProperty(default="")
    job_id: StringProperty(default="")
    job_dir: StringProperty(default="", subtype="DIR_PATH")
    resumable: BoolProperty(default=False, description="The last job stopped and the service can continue it")
    metrics_json: StringProperty(default="", description="Metrics of the last finished job, as JSON")
    preview_image: PointerProperty(type=bpy.types.Image)
    result_object: PointerProperty(type=bpy.types.Object)


CLASSES = (RadiantForgeSceneSettings, RadiantForgeJobStatus)


def register_properties() -> None:
    bpy.types.Scene.radiantforge = PointerProperty(type=RadiantForgeSceneSettings)
    bpy.types.WindowManager.radiantforge_job = PointerProperty(type=RadiantForgeJobStatus)


def unregister_properties() -> None:
    del bpy.types.WindowManager.radiantforge_job
    del bpy.types.Scene.radiantforge

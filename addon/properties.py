"""Settings stored in the .blend (per scene) and the live state of the running job (per window manager).

`Scene.radiantforge` holds what the artist chose (cameras, views, engine, training steps, import
options), with one nested group per guided job kind (`Scene.radiantforge.texture`,
`Scene.radiantforge.text3d`); `WindowManager.radiantforge_job` holds what the job is doing right
now (progress, message, metrics, preview) — runtime state that is not saved with the file.
"""

from __future__ import annotations

import bpy
from bpy.props import (BoolProperty, EnumProperty, FloatProperty, IntProperty, PointerProperty,
                       StringProperty)

from .io.job_folder import QUALITY_TIME_BUDGETS

ENGINE_ITEMS = [
    ("FAST_CYCLES", "Fast Cycles", "Cycles with 32 samples (or Samples), adaptive sampling and denoising: "
                                   "seconds a view on a CPU"),
    ("SCENE", "Scene's engine", "Render with the engine and samples set in the scene's render properties"),
    ("CYCLES", "Cycles", "Path tracing: slowest, most faithful"),
    ("BLENDER_EEVEE", "EEVEE", "Real-time engine"),
    ("BLENDER_WORKBENCH", "Workbench", "Flat viewport shading: fastest, for quick tests"),
]

HEMISPHERE_ITEMS = [
    ("AUTO", "Auto", "Above the objects when they stand on a floor (a large flat object under them), else all around"),
    ("FULL", "Whole Sphere", "Cameras all around the objects, below them too"),
    ("UPPER", "Upper Hemisphere", "Cameras above the objects only"),
]

CAMERA_SOURCE_ITEMS = [
    ("ORBIT", "Orbit rig", "Cameras spread evenly around the selected objects"),
    ("COLLECTION", "Collection", "The cameras of a collection"),
]

def _quality_item(key: str, name: str) -> tuple[str, str, str]:
    minutes = QUALITY_TIME_BUDGETS[key] // 60
    return (key, f"{name} ({minutes} min)", f"The backend trains for about {minutes} minutes: steps, Gaussian cap "
                                            "and resolution are chosen from its measured step cost")


QUALITY_ITEMS = [_quality_item("DRAFT", "Draft"), _quality_item("STANDARD", "Standard"), _quality_item("HIGH", "High"),
                 ("STEPS", "Fixed Steps", "Train for exactly the Steps below, however long that takes")]

DISPLAY_ITEMS = [
    ("AUTO", "Auto", "Ellipsoids, or points for very large splat files"),
    ("ELLIPSOIDS", "Ellipsoids", "An oriented ellipsoid per Gaussian (slower, closer to the splat render)"),
    ("POINTS", "Points", "A point per Gaussian (fast, for large files)"),
]

# Capture and Gaussian defaults: enough views for a small object, a resolution CPUs train on in minutes.
DEFAULT_VIEWS = 48
DEFAULT_RESOLUTION = 256
DEFAULT_TEST_EVERY = 8
# Gaussian training steps: the add-on's own default, not the backend's 7000 (the shorter of the 3DGS
# paper's two schedules, timed on GPUs). The artist waits for this run inside Blender, often on a
# CPU, so it is shorter: enough for a result to look at; raise it for final quality.
DEFAULT_GAUSSIAN_STEPS = 3000

# Guided jobs' defaults are the backend's: TextureConfig (SD's own 512 px views, a 1024^2 texture,
# 1000 steps, CFG 100) and Text3DConfig (64 px NeRF renders upsampled for SD, 3000 steps,
# DreamFusion's shading mix after a 20% normal-shading warm-up, its regulariser weights).
DEFAULT_GUIDANCE_SCALE = 100.0
DEFAULT_MODEL = "sd15"
DEFAULT_TEXTURE_STEPS = 1000
DEFAULT_TEXTURE_RESOLUTION = 512
DEFAULT_TEXTURE_SIZE = 1024
DEFAULT_TEXT3D_STEPS = 3000
DEFAULT_TEXT3D_RESOLUTION = 64
DEFAULT_TEXT3D_FACES = 20000
DEFAULT_TEXT3D_TEXTURE_SIZE = 1024

# Text-to-3D representations (the backend's Text3DConfig.representation, lower case).
REPRESENTATION_ITEMS = [
    ("NERF", "NeRF", "DreamFusion: a neural field optimised with the diffusion model, then a mesh (the default)"),
    ("GAUSSIANS", "Gaussians", "DreamGaussian: 3D Gaussians optimised the same way, then a mesh; faster"),
]
TEXTURE_TARGET_ITEMS = [
    ("COPY", "New Copy", "Texture a copy of the object (with its own mesh); the original is left as it is"),
    ("SAME", "Same Object", "Put the new material on the selected object itself; its existing materials are kept"),
]


class _GuidedJobSettings:
    """What the two Stable Diffusion jobs share (a mixin: Blender registers the annotations of each group)."""

    negative_prompt: StringProperty(name="Negative Prompt", default="",
                                    description="What to steer away from (optional)")
    guidance_scale: FloatProperty(name="Guidance Scale", default=DEFAULT_GUIDANCE_SCALE, min=1.0, soft_max=200.0,
                                  description="Classifier-free guidance: how strongly the prompt is followed")
    model: StringProperty(name="Model", default=DEFAULT_MODEL,
                          description="Stable Diffusion on the backend machine: sd15, sd21base, a Hugging Face "
                                      "id already in its cache, or a folder there")


class RadiantForgeTextureSettings(_GuidedJobSettings, bpy.types.PropertyGroup):
    """``scene.radiantforge.texture``: text-to-texture. Every number here is sent as the job
    parameter of the same name (a backend TextureConfig field)."""

    prompt: StringProperty(name="Prompt", default="",
                           description="What the texture shows, e.g. 'a cow with black and white patches'")
    steps: IntProperty(name="Steps", default=DEFAULT_TEXTURE_STEPS, min=1, soft_max=5000,
                       description="Optimisation steps")
    resolution: IntProperty(name="Resolution", default=DEFAULT_TEXTURE_RESOLUTION, min=16, soft_max=1024,
                            subtype="PIXEL", description="Size of the views rendered for the diffusion model")
    texture_size: IntProperty(name="Texture Size", default=DEFAULT_TEXTURE_SIZE, min=16, soft_max=4096, subtype="PIXEL",
                              description="Width and height of the texture image")
    seed: IntProperty(name="Seed", default=0, min=0, description="Random seed (cameras, noise)")
    target: EnumProperty(name="Apply To", items=TEXTURE_TARGET_ITEMS, default="COPY")


class RadiantForgeText3DSettings(_GuidedJobSettings, bpy.types.PropertyGroup):
    """``scene.radiantforge.text3d``: DreamFusion-style generation; the advanced ones are the backend's
    shading and regulariser settings. Every number here is sent as the job parameter of the same
    name (a backend Text3DConfig field)."""

    prompt: StringProperty(name="Prompt", default="", description="What to make, e.g. 'a ceramic teapot'")
    representation: EnumProperty(name="Representation", items=REPRESENTATION_ITEMS, default="NERF",
                                 description="What is optimised before the mesh is made")
    steps: IntProperty(name="Steps", default=DEFAULT_TEXT3D_STEPS, min=1, soft_max=20000,
                       description="Optimisation steps")
    seed: IntProperty(name="Seed", default=0, min=0, description="Random seed (field, cameras, noise)")
    resolution: IntProperty(name="Resolution", default=DEFAULT_TEXT3D_RESOLUTION, min=8, max=512, soft_max=128,
                            subtype="PIXEL",
                            description="Size of the NeRF renders while optimising (upsampled for the diffusion model)")
    latent_iter_ratio: FloatProperty(name="Normal Warm-up", default=0.2, min=0.0, max=1.0, subtype="FACTOR",
                                     description="Share of the steps that render normals only (geometry first)")
    albedo_probability: FloatProperty(name="Albedo Share", default=0.2, min=0.0, max=1.0, subtype="FACTOR",
                                      description="After the warm-up: share of steps rendering the plain colour")
    textureless_probability: FloatProperty(
        name="Textureless Share", default=0.4, min=0.0, max=1.0, subtype="FACTOR",
        description="After the warm-up: share of steps rendering grey lit geometry (the rest: lit colour)")
    ambient: FloatProperty(name="Ambient", default=0.1, min=0.0, max=1.0, subtype="FACTOR",
                           description="Ambient share of the lit shading modes")
    entropy_weight: FloatProperty(name="Opacity Entropy", default=1e-3, min=0.0, soft_max=0.1, precision=4,
                                  description="Pushes every pixel to fully empty or fully solid")
    orientation_weight: FloatProperty(name="Orientation", default=1e-2, min=0.0, soft_max=1.0, precision=4,
                                      description="Penalises surface normals that face away from the camera")
    sparsity_weight: FloatProperty(name="Sparsity", default=0.0, min=0.0, soft_max=1.0, precision=4,
                                   description="Penalises opacity everywhere (fewer floaters); 0 is off")
    target_faces: IntProperty(name="Faces", default=DEFAULT_TEXT3D_FACES, min=0, soft_max=200000,
                              description="Decimate the mesh to this many triangles (0 keeps them all)")
    texture_size: IntProperty(name="Texture Size", default=DEFAULT_TEXT3D_TEXTURE_SIZE, min=8, soft_max=4096,
                              subtype="PIXEL", description="Width and height of the baked colour texture")


class RadiantForgeSceneSettings(bpy.types.PropertyGroup):
    # Capture
    camera_source: EnumProperty(name="Cameras", items=CAMERA_SOURCE_ITEMS, default="ORBIT")
    camera_collection: PointerProperty(name="Camera Collection", type=bpy.types.Collection,
                                       description="Collection whose cameras are rendered")
    view_count: IntProperty(name="Views", default=DEFAULT_VIEWS, min=2, soft_max=300,
                            description="Number of orbit cameras")
    hemisphere: EnumProperty(name="Orbit", items=HEMISPHERE_ITEMS, default="AUTO",
                             description="Where the orbit cameras go around the objects")
    focal_length: FloatProperty(name="Focal Length", default=50.0, min=1.0, soft_max=300.0, unit="CAMERA",
                                description="Lens of the orbit cameras")
    test_every: IntProperty(name="Hold Out Every", default=DEFAULT_TEST_EVERY, min=2, soft_max=50,
                            description="Every k-th view is kept for testing, not training")
    engine: EnumProperty(name="Engine", items=ENGINE_ITEMS, default="FAST_CYCLES")
    resolution: IntProperty(name="Resolution", default=DEFAULT_RESOLUTION, min=16, soft_max=2048, subtype="PIXEL",
                            description="Width and height of the rendered views")
    samples: IntProperty(name="Samples", default=0, min=0, soft_max=1024,
                         description="Render samples (Cycles, EEVEE); 0: Fast Cycles' 32, else the scene's")
    point_count: IntProperty(name="Points", default=20000, min=0, soft_max=200000,
                             description="Surface points sampled for points3d.ply (the Gaussians' starting positions)")
    keep_rig: BoolProperty(name="Keep Orbit Cameras", default=False,
                           description="Keep the orbit cameras in the scene after the capture")
    jobs_folder: StringProperty(name="Jobs Folder", subtype="DIR_PATH", default="",
                                description="Where job folders are written (empty: beside the .blend, else the temporary folder)")
    dataset_folder: StringProperty(name="Dataset", subtype="DIR_PATH", default="",
                                   description="An existing NeRF-synthetic dataset (transforms_train.json) or job folder")

    # Gaussians (training)
    quality: EnumProperty(name="Quality", items=QUALITY_ITEMS, default="STANDARD",
                          description="How long the backend may train (time on its machine; the capture comes first)")
    steps: IntProperty(name="Steps", default=DEFAULT_GAUSSIAN_STEPS, min=1, soft_max=30000,
                       description="Optimisation steps (Quality: Fixed Steps)")
    sh_degree: IntProperty(name="SH Degree", default=3, min=0, max=3,
                           description="Spherical-harmonics degree of the view-dependent colour")
    max_gaussians: IntProperty(name="Max Gaussians", default=0, min=0, soft_max=2_000_000,
                               description="Cap on the number of Gaussians (0: the backend's default)")

    # The guided jobs, one group each
    texture: PointerProperty(type=RadiantForgeTextureSettings)
    text3d: PointerProperty(type=RadiantForgeText3DSettings)

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
    notice: StringProperty(default="", description="The backend's last info or warning (e.g. a first-run compile)")
    job_id: StringProperty(default="")
    job_dir: StringProperty(default="", subtype="DIR_PATH")
    resumable: BoolProperty(default=False, description="The last job stopped and the service can continue it")
    metrics_json: StringProperty(default="", description="Metrics of the last finished job, as JSON")
    preview_image: PointerProperty(type=bpy.types.Image)
    result_object: PointerProperty(type=bpy.types.Object)


# Registered in this order: a group's PointerProperty needs its type registered first.
CLASSES = (RadiantForgeTextureSettings, RadiantForgeText3DSettings, RadiantForgeSceneSettings, RadiantForgeJobStatus)


def register_properties() -> None:
    bpy.types.Scene.radiantforge = PointerProperty(type=RadiantForgeSceneSettings)
    bpy.types.WindowManager.radiantforge_job = PointerProperty(type=RadiantForgeJobStatus)


def unregister_properties() -> None:
    del bpy.types.WindowManager.radiantforge_job
    del bpy.types.Scene.radiantforge

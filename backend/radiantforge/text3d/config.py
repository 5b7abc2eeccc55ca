"""Settings of a text-to-3D run (:class:`Text3DConfig`), checked field by field.

Every bad value raises :class:`~radiantforge.errors.InputError` naming the field, so the job
runner, the service and the CLI can show it before any work starts. The same fields are the
``params`` of a ``"text3d"`` job (``job.json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ..config_checks import (MAX_GUIDED_STEPS, MAX_MLP_DEPTH, MAX_MLP_WIDTH, MAX_SEED, MAX_TURNTABLE_FRAMES,
                             check_boolean, check_choice, check_colour, check_integer, check_number, check_range)
from ..devices import DEVICE_CHOICES
from ..errors import InputError, quoted
from ..gaussians.rasterizers import RASTERIZER_CHOICES
from ..guidance.sds import ANNEAL_SCHEDULES, MODES, SPACES, WEIGHTINGS
from ..nerf.field import BACKGROUND_MODES, ENCODINGS
from ..nerf.render import NORMAL_DIFFERENCES, SHADING_MODES

ELEVATION_SAMPLING = ("uniform_angle", "uniform_area")
# "nerf": DreamFusion (a NeRF, the default); "gaussians": DreamGaussian (3D Gaussians, then a mesh).
REPRESENTATIONS = ("nerf", "gaussians")
MAX_GAUSSIANS = 2_000_000
# Limits that keep a run within a laptop's memory; SD's own image size is 512.
MAX_RESOLUTION = 512
MAX_SAMPLES = 1024
MAX_BATCH_SIZE = 16
MAX_GRID_RESOLUTION = 512
MAX_TEXTURE_SIZE = 8192
# Progress events and preview images per run when ``progress_every`` / ``preview_every`` are left to choose.
DEFAULT_PROGRESS_EVENTS = 100
DEFAULT_PREVIEWS = 10


@dataclass
class Text3DConfig:
    """Everything that shapes a text-to-3D run (DreamFusion with a NeRF, then a textured mesh).

    Text and guidance
      prompt / negative_prompt: the text (the negative prompt is the unconditional branch of CFG).
      model: Stable Diffusion: "sd15", "sd21base", a Hugging Face id already in the cache, or a
        local diffusers folder (never downloaded).
      view_dependent_prompts: "<prompt>, front / side / back / overhead / bottom view" by camera
        angle, with the front → side → back embedding interpolation.
      guidance_scale, t_min, t_max, anneal ("fixed" | "linear" | "sqrt": the upper timestep bound
        falls from t_max to anneal_t_max over the run), weighting, grad_clip, sds_space ("latent" |
        "pixel"), sds_mode ("sds" | "csd"): the score distillation step
        (:class:`radiantforge.guidance.SDSConfig`).
    Optimisation
      steps, batch_size (views per step), seed; learning_rate (Adam, grid encoding) and
      network_learning_rate (the MLPs and the background).
    Rendering
      resolution: the NeRF is rendered at resolution x resolution pixels (64–128 is typical) and
        upsampled to the guidance model's own size; num_samples: samples per ray;
        normal_difference: "central" or "forward" finite differences for the normals.
    Cameras (metres and degrees; azimuth 0 = the object's front, seen from −Y)
      distance_range, elevation_range_deg, azimuth_range_deg, fov_range_deg, elevation_sampling;
      underside_fraction: the share of views drawn from beneath the object (−80° up to the low end
        of elevation_range_deg): a generated object stands on no floor, and an underside never seen
        grows stray material; 0 = none.
    Shading (DreamFusion)
      latent_iter_ratio: the first fraction of the steps renders normals only (geometry warm-up);
      afterwards albedo with albedo_probability, textureless with textureless_probability, else
      lambertian; ambient: the ambient share of the lit modes; light_jitter: standard deviation
      (metres) of the point light around the camera.
    Regularisers
      entropy_weight: opacity entropy (pixels fully empty or fully solid); orientation_weight:
      DreamFusion's penalty on normals facing away from the camera; sparsity_weight: mean opacity
      (fewer floaters), 0 = off.
    Field
      encoding ("triplane" | "hashgrid"), bound (half the box side, metres), hidden_dim,
      hidden_layers, blob_density, blob_radius (the initial density blob), background ("mlp" |
      "fixed" | "random") and background_color (for "fixed", and behind previews and turntables).
      occupancy_resolution, occupancy_update_every: the empty-space-skipping grid.
    Mesh out
      mesh_resolution (marching-cubes lattice per axis), density_threshold (iso-level, 1/m),
      min_component_ratio (drop smaller floaters), target_faces (decimation; 0 keeps all),
      texture_size (baked albedo texture).
    Turntables
      turntable_frames, turntable_resolution, turntable_elevation_deg, turntable_shading.
    Representation
      representation: "nerf" (everything above) or "gaussians" (DreamGaussian: Gaussians in a ball of
        blob_radius optimised with the same SDS, cameras and view-dependent prompts, rendered in albedo
        over a random background, or background_color when background is "fixed"; see
        :mod:`radiantforge.text3d.gaussian_path`). The NeRF-only fields (encoding, MLPs, shading,
        regularisers, occupancy, density_threshold) are then unused.
      gaussian_count: Gaussians at the start; max_gaussians: the densification cap;
      gaussian_position_lr: Adam's rate for the positions (metres), decaying 50x over the run (3x
        DreamGaussian's: with max_gaussians 15000, +1 dB on Spot with the oracle at 300 steps, and faster; the
        other parameters use DreamGaussian's fixed rates); gaussian_grow_grad2d: the mean view-space
        gradient above which a Gaussian is cloned or split; rasterizer: "auto" (native on the
        CPU, gsplat on CUDA), "native", "torch" or "gsplat".
    Bookkeeping
      device; checkpoint_every (0: only on cancel and at the end); progress_every, preview_every
      (None: about 100 progress events and 10 previews per run).
    """

    prompt: str = ""
    negative_prompt: str = ""
    model: str = "sd15"
    view_dependent_prompts: bool = True
    guidance_scale: float = 100.0
    t_min: float = 0.02
    t_max: float = 0.98
    anneal: str = "linear"
    anneal_t_max: float = 0.5
    weighting: str = "sds"
    grad_clip: float | None = None
    sds_space: str = "latent"
    sds_mode: str = "sds"

    steps: int = 3000
    batch_size: int = 1
    seed: int = 0
    learning_rate: float = 0.01
    network_learning_rate: float = 0.001

    resolution: int = 64
    num_samples: int = 64
    normal_difference: str = "central"

    distance_range: tuple[float, float] = (2.0, 2.8)
    elevation_range_deg: tuple[float, float] = (-10.0, 60.0)
    azimuth_range_deg: tuple[float, float] = (-180.0, 180.0)
    fov_range_deg: tuple[float, float] = (40.0, 70.0)
    elevation_sampling: str = "uniform_angle"
    underside_fraction: float = 0.1

    latent_iter_ratio: float = 0.2
    albedo_probability: float = 0.2
    textureless_probability: float = 0.4
    ambient: float = 0.1
    light_jitter: float = 0.5

    entropy_weight: float = 1e-3
    orientation_weight: float = 1e-2
    sparsity_weight: float = 0.0

    encoding: str = "triplane"
    bound: float = 1.0
    hidden_dim: int = 64
    hidden_layers: int = 1
    blob_density: float = 10.0
    blob_radius: float = 0.5
    background: str = "mlp"
    background_color: tuple[float, float, float] = (1.0, 1.0, 1.0)
    occupancy_resolution: int = 64
    occupancy_update_every: int = 16

    mesh_resolution: int = 128
    density_threshold: float = 10.0
    min_component_ratio: float = 0.1
    target_faces: int = 20000
    texture_size: int = 1024

    turntable_frames: int = 36
    turntable_resolution: int = 128
    turntable_elevation_deg: float = 20.0
    turntable_shading: str = "albedo"

    representation: str = "nerf"
    gaussian_count: int = 4096
    max_gaussians: int = 15000
    gaussian_position_lr: float = 3e-3
    gaussian_grow_grad2d: float = 2e-4
    rasterizer: str = "auto"

    device: str = "auto"
    checkpoint_every: int = 200
    progress_every: int | None = None
    preview_every: int | None = None

    def __post_init__(self):
        for name in ("prompt", "negative_prompt", "model"):
            if not isinstance(getattr(self, name), str):
                raise InputError(f"expected text, got {quoted(getattr(self, name))}", field=name)
        check_boolean(self, "view_dependent_prompts")
        check_number(self, "guidance_scale", low=0.0, low_open=True)
        check_number(self, "t_min", low=0.0, high=1.0)
        check_number(self, "t_max", low=0.0, high=1.0)
        if not self.t_min < self.t_max:
            raise InputError(f"must be below t_max={self.t_max}, got {self.t_min}", field="t_min")
        check_choice(self, "anneal", ANNEAL_SCHEDULES)
        check_number(self, "anneal_t_max", low=self.t_min, high=self.t_max)
        check_choice(self, "weighting", WEIGHTINGS)
        if self.grad_clip is not None:
            check_number(self, "grad_clip", low=0.0, low_open=True)
        check_choice(self, "sds_space", SPACES)
        check_choice(self, "sds_mode", MODES)

        check_integer(self, "steps", 1, MAX_GUIDED_STEPS)
        check_integer(self, "batch_size", 1, MAX_BATCH_SIZE)
        check_integer(self, "seed", 0, MAX_SEED)
        check_number(self, "learning_rate", low=0.0, low_open=True)
        check_number(self, "network_learning_rate", low=0.0, low_open=True)

        check_integer(self, "resolution", 8, MAX_RESOLUTION)
        check_integer(self, "num_samples", 4, MAX_SAMPLES)
        check_choice(self, "normal_difference", NORMAL_DIFFERENCES)

        self.distance_range = check_range(self, "distance_range", 0.0, math.inf, strict=True)
        self.elevation_range_deg = check_range(self, "elevation_range_deg", -90.0, 90.0)
        self.azimuth_range_deg = check_range(self, "azimuth_range_deg", -360.0, 360.0)
        self.fov_range_deg = check_range(self, "fov_range_deg", 0.0, 180.0, strict=True)
        check_choice(self, "elevation_sampling", ELEVATION_SAMPLING)
        check_number(self, "underside_fraction", low=0.0, high=0.5)

        check_number(self, "latent_iter_ratio", low=0.0, high=1.0)
        check_number(self, "albedo_probability", low=0.0, high=1.0)
        check_number(self, "textureless_probability", low=0.0, high=1.0)
        if self.albedo_probability + self.textureless_probability > 1.0:
            raise InputError(f"albedo_probability + textureless_probability must be at most 1, got "
                             f"{self.albedo_probability} + {self.textureless_probability}",
                             field="textureless_probability")
        check_number(self, "ambient", low=0.0, high=1.0)
        check_number(self, "light_jitter", low=0.0)

        for name in ("entropy_weight", "orientation_weight", "sparsity_weight"):
            check_number(self, name, low=0.0)

        check_choice(self, "encoding", ENCODINGS)
        check_number(self, "bound", low=0.0, low_open=True)
        check_integer(self, "hidden_dim", 1, MAX_MLP_WIDTH)
        check_integer(self, "hidden_layers", 0, MAX_MLP_DEPTH)
        check_number(self, "blob_density", low=0.0)
        check_number(self, "blob_radius", low=0.0, low_open=True)
        check_choice(self, "background", BACKGROUND_MODES)
        self.background_color = check_colour(self.background_color, "background_color")
        check_integer(self, "occupancy_resolution", 4, MAX_GRID_RESOLUTION)
        check_integer(self, "occupancy_update_every", 1)

        check_integer(self, "mesh_resolution", 8, MAX_GRID_RESOLUTION)
        check_number(self, "density_threshold", low=0.0, low_open=True)
        check_number(self, "min_component_ratio", low=0.0, high=1.0)
        check_integer(self, "target_faces", 0)
        if 0 < self.target_faces < 4:
            raise InputError(f"expected 0 (no decimation) or at least 4, got {self.target_faces}", field="target_faces")
        check_integer(self, "texture_size", 8, MAX_TEXTURE_SIZE)

        check_integer(self, "turntable_frames", 1, MAX_TURNTABLE_FRAMES)
        check_integer(self, "turntable_resolution", 8, MAX_RESOLUTION * 2)
        check_number(self, "turntable_elevation_deg", low=-90.0, high=90.0)
        check_choice(self, "turntable_shading", SHADING_MODES)

        check_choice(self, "representation", REPRESENTATIONS)
        check_integer(self, "gaussian_count", 1, MAX_GAUSSIANS)
        check_integer(self, "max_gaussians", 1, MAX_GAUSSIANS)
        if self.max_gaussians < self.gaussian_count:
            raise InputError(f"must be at least gaussian_count={self.gaussian_count}, got {self.max_gaussians}",
                             field="max_gaussians")
        check_number(self, "gaussian_position_lr", low=0.0, low_open=True)
        check_number(self, "gaussian_grow_grad2d", low=0.0, low_open=True)
        check_choice(self, "rasterizer", RASTERIZER_CHOICES)

        if not isinstance(self.device, str) or self.device.split(":")[0].lower() not in DEVICE_CHOICES:
            raise InputError(f"expected one of {', '.join(DEVICE_CHOICES)}, got {quoted(self.device)}", field="device")
        check_integer(self, "checkpoint_every", 0)
        for name in ("progress_every", "preview_every"):
            if getattr(self, name) is not None:
                check_integer(self, name, 1)

    @property
    def resolved_progress_every(self) -> int:
        return self.progress_every or max(1, self.steps // DEFAULT_PROGRESS_EVENTS)

    @property
    def resolved_preview_every(self) -> int:
        return self.preview_every or max(1, self.steps // DEFAULT_PREVIEWS)


# Fields a resumed run may change: none of them alters the optimisation (the mesh and turntable
# settings only shape what is made from the finished field).
RESUMABLE_FIELDS = frozenset({
    "device", "checkpoint_every", "progress_every", "preview_every", "mesh_resolution", "density_threshold",
    "min_component_ratio", "target_faces", "texture_size", "turntable_frames", "turntable_resolution",
    "turntable_elevation_deg", "turntable_shading", "rasterizer",
})
FIELD_NAMES = tuple(f.name for f in fields(Text3DConfig))


def check_prompt(prompt) -> str:
    """The prompt, stripped; InputError when it is missing or empty."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty; describe the object, e.g. 'a ceramic teapot'", field="prompt")
    return prompt.strip()

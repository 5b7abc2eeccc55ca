"""Settings of a text-to-texture run (:class:`TextureConfig`), checked field by field.

Every bad value raises :class:`~radiantforge.errors.InputError` naming the field, so the job
runner, the service (422) and the CLI can show it before any work starts. The same fields are
the ``params`` of a ``"texture"`` job (``job.json``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

from ..config_checks import (MAX_FREQUENCIES, MAX_GUIDED_STEPS, MAX_MLP_DEPTH, MAX_MLP_WIDTH, MAX_SEED,
                             MAX_TURNTABLE_FRAMES, check_boolean, check_choice, check_colour, check_integer,
                             check_number, check_range)
from ..devices import DEVICE_CHOICES
from ..errors import InputError, quoted
from ..guidance.sds import ANNEAL_SCHEDULES, MODES, SPACES, WEIGHTINGS

TEXTURE_TYPES = ("image", "mlp")  # a UV image optimised directly, or a coordinate MLP baked to one
SHADING_MODES = ("albedo", "lambertian")
ELEVATION_SAMPLING = ("uniform_angle", "uniform_area")
# Adam step sizes per texture representation when ``learning_rate`` is left to choose: texel
# values live in [0, 1] (a step of 0.02 per update), MLP weights want the usual small step.
DEFAULT_LEARNING_RATES = {"image": 0.02, "mlp": 1e-3}
# The largest texture and render sizes accepted (memory on a laptop GPU; SD's own size is 512).
MAX_TEXTURE_SIZE = 8192
MAX_RESOLUTION = 2048
MAX_SUPERSAMPLE = 4
MAX_BATCH_SIZE = 64
# Progress events per run when ``progress_every`` is left to choose, and previews per run.
DEFAULT_PROGRESS_EVENTS = 100
DEFAULT_PREVIEWS = 10


@dataclass
class TextureConfig:
    """Everything that shapes a text-to-texture run.

    prompt / negative_prompt: the text (the negative prompt is the unconditional branch of CFG).
    model: Stable Diffusion to guide with: "sd15", "sd21base", a Hugging Face id already in the
        cache, or a local diffusers folder (never downloaded).
    steps: optimisation steps; batch_size: views rendered per step.
    learning_rate: Adam step size (None: DEFAULT_LEARNING_RATES of the texture type).
    guidance_scale, t_min, t_max, anneal, anneal_t_max, weighting, grad_clip: the SDS settings
        (:class:`radiantforge.guidance.SDSConfig`); sds_space "latent" | "pixel"; sds_mode "sds" | "csd".
    resolution: rendered views are resolution x resolution pixels (resized to the model's own
        size, 512 for SD, before encoding); supersample: k x k samples per pixel (anti-aliasing).
    texture_size: the UV image is texture_size x texture_size texels.
    texture_type: "image" (texels optimised directly) or "mlp" (a coordinate MLP of the surface
        position with Fourier features, baked into a UV image at the end); mlp_width, mlp_depth,
        mlp_frequencies shape that MLP.
    shading: "albedo" (unlit texture) or "lambertian" (random light per view around the camera,
        ``light_spread_deg`` off the view direction at most, plus ``ambient``).
    distance_range (in bounding-sphere radii of the mesh), elevation_range_deg, azimuth_range_deg,
        fov_range_deg, elevation_sampling: where random cameras are drawn (azimuth 0 = the mesh's
        front, seen from -Y, as in Blender's Front view).
    view_dependent_prompts: append "front / side / back / overhead / bottom view" by camera angle.
    background: R, G, B behind the mesh.
    seed: every random choice; device: auto | cpu | cuda | mps.
    checkpoint_every: steps between checkpoints (0: only on cancel); progress_every /
        preview_every: steps between progress events / preview PNGs (None: about 100 / 10 per run).
    turntable_frames, turntable_resolution, turntable_elevation_deg: the result's turntable.
    """

    prompt: str = ""
    negative_prompt: str = ""
    model: str = "sd15"
    steps: int = 1000
    batch_size: int = 1
    learning_rate: float | None = None
    guidance_scale: float = 100.0
    t_min: float = 0.02
    t_max: float = 0.98
    anneal: str = "fixed"
    anneal_t_max: float = 0.5
    weighting: str = "sds"
    grad_clip: float | None = None
    sds_space: str = "latent"
    sds_mode: str = "sds"
    resolution: int = 512
    supersample: int = 1
    texture_size: int = 1024
    texture_type: str = "image"
    mlp_width: int = 64
    mlp_depth: int = 2
    mlp_frequencies: int = 6
    shading: str = "albedo"
    ambient: float = 0.3
    light_spread_deg: float = 45.0
    distance_range: tuple[float, float] = (2.4, 3.2)
    elevation_range_deg: tuple[float, float] = (-10.0, 45.0)
    azimuth_range_deg: tuple[float, float] = (-180.0, 180.0)
    fov_range_deg: tuple[float, float] = (40.0, 55.0)
    elevation_sampling: str = "uniform_angle"
    view_dependent_prompts: bool = True
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = 100
    progress_every: int | None = None
    preview_every: int | None = None
    turntable_frames: int = 36
    turntable_resolution: int = 256
    turntable_elevation_deg: float = 20.0

    def __post_init__(self):
        for name in ("prompt", "negative_prompt", "model"):
            if not isinstance(getattr(self, name), str):
                raise InputError(f"expected text, got {quoted(getattr(self, name))}", field=name)
        check_integer(self, "steps", 1, MAX_GUIDED_STEPS)
        check_integer(self, "batch_size", 1, MAX_BATCH_SIZE)
        if self.learning_rate is not None:
            check_number(self, "learning_rate", low=0.0, low_open=True)
        check_number(self, "guidance_scale", low=0.0, low_open=True)
        check_number(self, "t_min", low=0.0, high=1.0)
        check_number(self, "t_max", low=0.0, high=1.0)
        if not self.t_min < self.t_max:
            raise InputError(f"must be below t_max={self.t_max}, got {self.t_min}", field="t_min")
        check_number(self, "anneal_t_max", low=self.t_min, high=self.t_max)
        check_choice(self, "anneal", ANNEAL_SCHEDULES)
        check_choice(self, "weighting", WEIGHTINGS)
        if self.grad_clip is not None:
            check_number(self, "grad_clip", low=0.0, low_open=True)
        check_choice(self, "sds_space", SPACES)
        check_choice(self, "sds_mode", MODES)
        check_integer(self, "resolution", 8, MAX_RESOLUTION)
        check_integer(self, "supersample", 1, MAX_SUPERSAMPLE)
        check_integer(self, "texture_size", 4, MAX_TEXTURE_SIZE)
        check_choice(self, "texture_type", TEXTURE_TYPES)
        check_integer(self, "mlp_width", 1, MAX_MLP_WIDTH)
        check_integer(self, "mlp_depth", 1, MAX_MLP_DEPTH)
        check_integer(self, "mlp_frequencies", 0, MAX_FREQUENCIES)
        check_choice(self, "shading", SHADING_MODES)
        check_number(self, "ambient", low=0.0, high=1.0)
        check_number(self, "light_spread_deg", low=0.0, high=90.0)
        self.distance_range = check_range(self, "distance_range", 0.0, math.inf, strict=True)
        self.elevation_range_deg = check_range(self, "elevation_range_deg", -90.0, 90.0)
        self.azimuth_range_deg = check_range(self, "azimuth_range_deg", -360.0, 360.0)
        self.fov_range_deg = check_range(self, "fov_range_deg", 0.0, 180.0, strict=True)
        check_choice(self, "elevation_sampling", ELEVATION_SAMPLING)
        check_boolean(self, "view_dependent_prompts")
        self.background = check_colour(self.background)
        check_integer(self, "seed", 0, MAX_SEED)
        if not isinstance(self.device, str) or self.device.split(":")[0].lower() not in DEVICE_CHOICES:
            raise InputError(f"expected one of {', '.join(DEVICE_CHOICES)}, got {quoted(self.device)}", field="device")
        check_integer(self, "checkpoint_every", 0)
        for name in ("progress_every", "preview_every"):
            if getattr(self, name) is not None:
                check_integer(self, name, 1)
        check_integer(self, "turntable_frames", 1, MAX_TURNTABLE_FRAMES)
        check_integer(self, "turntable_resolution", 8, MAX_RESOLUTION)
        check_number(self, "turntable_elevation_deg", low=-90.0, high=90.0)

    @property
    def resolved_learning_rate(self) -> float:
        return self.learning_rate if self.learning_rate is not None else DEFAULT_LEARNING_RATES[self.texture_type]

    @property
    def resolved_progress_every(self) -> int:
        return self.progress_every or max(1, self.steps // DEFAULT_PROGRESS_EVENTS)

    @property
    def resolved_preview_every(self) -> int:
        return self.preview_every or max(1, self.steps // DEFAULT_PREVIEWS)


# Fields a resumed run may change: none of them alters the optimisation.
RESUMABLE_FIELDS = frozenset({
    "device", "checkpoint_every", "progress_every", "preview_every", "turntable_frames", "turntable_resolution",
    "turntable_elevation_deg",
})
FIELD_NAMES = tuple(f.name for f in fields(TextureConfig))


def check_prompt(prompt) -> str:
    """The prompt, stripped; InputError when it is missing or empty."""
    if not isinstance(prompt, str) or not prompt.strip():
        raise InputError("the prompt is empty; describe the texture, e.g. 'a cow with black and white patches'",
                         field="prompt")
    return prompt.strip()

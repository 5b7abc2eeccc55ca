"""What shapes a Gaussian training run: :class:`GaussianTrainConfig`, checked field by field."""

from __future__ import annotations

from dataclasses import dataclass

from ..config_checks import (MAX_GAUSSIAN_STEPS, MAX_SEED, MAX_TURNTABLE_FRAMES, check_choice, check_colour,
                             check_integer, check_number)
from ..devices import DEVICE_CHOICES
from ..errors import InputError, quoted
from . import model
from .budget import parse_duration
from .rasterizers import RASTERIZER_CHOICES

STRATEGIES = ("default", "mcmc")
# Per-strategy defaults of the options left as None (gsplat's simple_trainer values): MCMC starts
# from half-opaque Gaussians a tenth of the neighbour distance wide and regularises opacity and
# scale so that unneeded Gaussians fade out and get relocated.
STRATEGY_DEFAULTS = {
    "default": {"init_opacity": model.INITIAL_OPACITY, "init_scale": 1.0, "opacity_reg": 0.0, "scale_reg": 0.0},
    "mcmc": {"init_opacity": 0.5, "init_scale": 0.1, "opacity_reg": 0.01, "scale_reg": 0.01},
}
LPIPS_NETS = ("alex", "vgg")
# Config field -> the strategy field it sets (None in the config: the schedule for the run's steps).
SCHEDULE_FIELDS = {"refine_start": "refine_start_iter", "refine_stop": "refine_stop_iter",
                   "refine_every": "refine_every", "reset_every": "reset_every"}
# Progress events per run when ``progress_every`` is left to choose itself.
DEFAULT_PROGRESS_EVENTS = 100
# Config fields a resumed run may change: none of them alters the optimisation.
RESUMABLE_FIELDS = frozenset(
    {"checkpoint_every", "progress_every", "preview_every", "eval_every", "test_renders", "lpips_net", "device",
     "turntable_frames", "turntable_size"}
)
# The most Gaussians a run may hold: each costs about 700 bytes with its Adam state and gradients
# (59 floats at SH degree 3, times three), so this cap is about 14 GB, more than a CPU run can use.
MAX_GAUSSIANS = 20_000_000
# Random initial points are a placeholder that densification replaces (3DGS starts synthetic
# scenes from 100k); millions of them only cost the neighbour search before step 1.
MAX_INIT_POINTS = 2_000_000
# Beyond this an image of any camera is a few pixels wide.
MAX_DOWNSCALE = 64.0


@dataclass
class GaussianTrainConfig:
    """Everything that shapes a Gaussian training run. Bad values raise InputError naming the field.

    steps: optimisation steps (``iters`` in job.json files of earlier releases). sh_degree: highest
    SH degree (0-3), reached by raising the active degree every ``sh_degree_interval`` steps (None: the
    run's own, ``strategy.sh_degree_interval_for(steps)``: 1000 from 8000 steps on, else steps // 8).
    max_gaussians: cap on the count (None: no cap).
    downscale / background: how the dataset is loaded when training from a path; background is
    also the render background. ssim_lambda: λ of the loss. strategy: densification ("default").
    grow_grad2d / prune_opa: DefaultStrategy thresholds (prune_opa is MCMC's min_opacity too).
    refine_start / refine_stop / refine_every / reset_every: the densification schedule (None: the
    schedule for the run's steps, ``strategy.refine_schedule``; reset_every is the default
    strategy's only). checkpoint_every: steps between
    checkpoints (0: only on cancel and at the end). progress_every: steps between progress events
    (None: about 100 per run). eval_every: steps between test-split evaluations during training
    (0: only at the end). seed: every random choice. device: auto | cpu | cuda | mps.
    init_points: number of random initial points when the dataset has no point cloud.
    init_opacity / init_scale: opacity of the initial Gaussians and the factor on their
    neighbour-distance scale; opacity_reg / scale_reg: weights of the mean opacity and mean scale
    added to the loss (all four None: the strategy's defaults, STRATEGY_DEFAULTS). test_renders: save test renders beside ground
    truth. lpips_net: LPIPS backbone (alex | vgg). rasterize_backend: passed to ``rasterize``.
    turntable_frames: frames of the orbit turntable written with the result (GIF, MP4, PNG frames;
    0: none). turntable_size: its square size in pixels (None: the training images' larger side, at least 128).
    time_budget: seconds the whole job may take ("90s", "5m" and "1h30m" are read too); the job then
    measures a step here and chooses ``steps``, ``max_gaussians`` (at most the one given) and
    ``downscale`` itself (:mod:`.budget`), and stops at the deadline in any case.
    """

    steps: int = 7000
    sh_degree: int = 3
    sh_degree_interval: int | None = None
    max_gaussians: int | None = 500_000
    downscale: float = 1.0
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ssim_lambda: float = 0.2
    strategy: str = "default"
    grow_grad2d: float = 0.0002
    prune_opa: float = 0.005
    refine_start: int | None = None
    refine_stop: int | None = None
    refine_every: int | None = None
    reset_every: int | None = None
    checkpoint_every: int = 1000
    progress_every: int | None = None
    preview_every: int | None = None
    eval_every: int = 0
    seed: int = 0
    device: str = "auto"
    init_points: int = 20_000
    init_opacity: float | None = None
    init_scale: float | None = None
    opacity_reg: float | None = None
    scale_reg: float | None = None
    test_renders: bool = True
    lpips_net: str = "alex"
    rasterize_backend: str = "auto"
    turntable_frames: int = 48
    turntable_size: int | None = None
    time_budget: float | None = None

    def __post_init__(self):
        check_integer(self, "steps", minimum=1, maximum=MAX_GAUSSIAN_STEPS)
        check_integer(self, "sh_degree", minimum=0, maximum=3)
        if self.sh_degree_interval is not None:
            check_integer(self, "sh_degree_interval", minimum=1)
        if self.max_gaussians is not None:
            check_integer(self, "max_gaussians", minimum=1, maximum=MAX_GAUSSIANS)
        check_number(self, "downscale", low=0.0, high=MAX_DOWNSCALE, low_open=True)
        self.background = check_colour(self.background)
        check_number(self, "ssim_lambda", low=0.0, high=1.0)
        check_choice(self, "strategy", STRATEGIES)
        check_number(self, "grow_grad2d", low=0.0, low_open=True)
        check_number(self, "prune_opa", low=0.0, high=1.0, low_open=True, high_open=True)
        for name in SCHEDULE_FIELDS:
            if getattr(self, name) is not None:
                check_integer(self, name, minimum=0 if name == "refine_start" else 1)
        if self.strategy == "mcmc" and self.reset_every is not None:
            raise InputError("the mcmc strategy has no opacity reset; leave reset_every unset", field="reset_every")
        check_integer(self, "checkpoint_every", minimum=0)
        if self.progress_every is not None:
            check_integer(self, "progress_every", minimum=1)
        if self.preview_every is not None:
            check_integer(self, "preview_every", minimum=1)
        check_integer(self, "eval_every", minimum=0)
        check_integer(self, "turntable_frames", minimum=0, maximum=MAX_TURNTABLE_FRAMES)
        if self.turntable_size is not None:
            check_integer(self, "turntable_size", minimum=16, maximum=4096)
        check_integer(self, "seed", minimum=0, maximum=MAX_SEED)
        if not isinstance(self.device, str) or self.device.split(":")[0].lower() not in DEVICE_CHOICES:
            raise InputError(f"expected one of {', '.join(DEVICE_CHOICES)}, got {quoted(self.device)}", field="device")
        check_integer(self, "init_points", minimum=1, maximum=MAX_INIT_POINTS)
        if self.init_opacity is not None:
            check_number(self, "init_opacity", low=0.0, high=1.0, low_open=True, high_open=True)
        if self.init_scale is not None:
            check_number(self, "init_scale", low=0.0, low_open=True)
        for name in ("opacity_reg", "scale_reg"):
            if getattr(self, name) is not None:
                check_number(self, name, low=0.0)
        if not isinstance(self.test_renders, bool):
            raise InputError(f"expected true or false, got {quoted(self.test_renders)}", field="test_renders")
        check_choice(self, "lpips_net", LPIPS_NETS)
        check_choice(self, "rasterize_backend", RASTERIZER_CHOICES)
        if self.time_budget is not None:
            self.time_budget = parse_duration(self.time_budget)

    def schedule_overrides(self) -> dict[str, int]:
        """The strategy fields this config sets explicitly (refine_start_iter, ...)."""
        return {field: getattr(self, name) for name, field in SCHEDULE_FIELDS.items() if getattr(self, name) is not None}

    def resolved(self, name: str) -> float:
        """init_opacity, init_scale, opacity_reg or scale_reg: the set value or the strategy's default."""
        value = getattr(self, name)
        return STRATEGY_DEFAULTS[self.strategy][name] if value is None else value

    @property
    def resolved_progress_every(self) -> int:
        return self.progress_every or max(1, self.steps // DEFAULT_PROGRESS_EVENTS)

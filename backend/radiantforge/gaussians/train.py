"""Training 3D Gaussian splats on a posed image dataset, evaluating them, writing the result folder.

``train_gaussians(data, out_dir)`` runs the whole job:

1. load the dataset (NeRF-synthetic / transforms.json layout) unless one is passed in;
2. start from the dataset's point cloud or from random points (the events and the result say which);
3. optimise with Adam, loss ``(1 - λ)·L1 + λ·(1 - SSIM)``, one random training view per step, SH
   degree raised every ``sh_degree_interval`` steps, densification by
   :class:`~radiantforge.gaussians.strategy.CappedDefaultStrategy`;
4. checkpoint every ``checkpoint_every`` steps and when ``should_stop()`` turns true (then raise
   :class:`~radiantforge.errors.JobCancelled`); ``resume=True`` continues bit-for-bit;
5. evaluate on the test split (PSNR, SSIM, LPIPS when its weights are on this machine), save test
   renders beside ground truth, the PLY, ``metrics.json`` and ``result.json`` — all written into a
   temporary folder that is renamed to ``out_dir`` only when complete.

Reproducibility: every random choice comes from ``config.seed``. The view of step ``s`` is
element ``s % V`` of a permutation drawn for epoch ``s // V`` from a generator seeded with
(seed, epoch), so it depends on nothing but the seed and the step; gsplat's split draws from
torch's global generator, whose state is saved in checkpoints (and restored to the caller's
state when training returns).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from .. import media
from ..checkpoints import check_same_config, read_checkpoint, write_checkpoint
from ..config_checks import (MAX_GAUSSIAN_ITERS, MAX_SEED, MAX_TURNTABLE_FRAMES, apply_overrides, check_choice, check_colour,
                             check_integer, check_number)
from ..devices import DEVICE_CHOICES, RASTERIZE_BACKENDS, resolve_device
from ..errors import InputError, JobCancelled, quoted, stop_reason
from ..events import EventLog
from ..metrics import MetricUnavailable, finite_or_none, load_lpips, lpips_distance, lpips_weights_path, psnr, ssim
from ..result_folders import PREVIEW_FILE, RESULT_FILE, check_out_dir, holds_only_preview, write_preview
from . import model
from .splats import GaussianSplats
from .strategy import make_strategy

CHECKPOINT_FILE = "gaussians_checkpoint.pt"
CHECKPOINT_FORMAT = 1
PLY_FILE = "point_cloud.ply"
METRICS_FILE = "metrics.json"
TEST_RENDERS_DIR = "test_renders"
RESULT_KIND = "gaussians"

STRATEGIES = ("default", "mcmc")
# Per-strategy defaults of the options left as None (gsplat's simple_trainer values): MCMC starts
# from half-opaque Gaussians a tenth of the neighbour distance wide and regularises opacity and
# scale so that unneeded Gaussians fade out and get relocated.
STRATEGY_DEFAULTS = {
    "default": {"init_opacity": model.INITIAL_OPACITY, "init_scale": 1.0, "opacity_reg": 0.0, "scale_reg": 0.0},
    "mcmc": {"init_opacity": 0.5, "init_scale": 0.1, "opacity_reg": 0.01, "scale_reg": 0.01},
}
LPIPS_NETS = ("alex", "vgg")
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
# Multiplier of the seed in the per-epoch generator seed, so (seed, epoch) pairs never collide.
EPOCH_SEED_STRIDE = 1_000_003


@dataclass
class GaussianTrainConfig:
    """Everything that shapes a Gaussian training run. Bad values raise InputError naming the field.

    iters: optimisation steps. sh_degree: highest SH degree (0-3), reached by raising the active
    degree every ``sh_degree_interval`` steps. max_gaussians: cap on the count (None: no cap).
    downscale / background: how the dataset is loaded when training from a path; background is
    also the render background. ssim_lambda: λ of the loss. strategy: densification ("default").
    grow_grad2d / prune_opa: DefaultStrategy thresholds (prune_opa is MCMC's min_opacity too). checkpoint_every: steps between
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
    """

    iters: int = 7000
    sh_degree: int = 3
    sh_degree_interval: int = 1000
    max_gaussians: int | None = 500_000
    downscale: float = 1.0
    background: tuple[float, float, float] = (1.0, 1.0, 1.0)
    ssim_lambda: float = 0.2
    strategy: str = "default"
    grow_grad2d: float = 0.0002
    prune_opa: float = 0.005
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

    def __post_init__(self):
        check_integer(self, "iters", minimum=1, maximum=MAX_GAUSSIAN_ITERS)
        check_integer(self, "sh_degree", minimum=0, maximum=3)
        check_integer(self, "sh_degree_interval", minimum=1)
        if self.max_gaussians is not None:
            check_integer(self, "max_gaussians", minimum=1, maximum=MAX_GAUSSIANS)
        check_number(self, "downscale", low=0.0, high=MAX_DOWNSCALE, low_open=True)
        self.background = check_colour(self.background)
        check_number(self, "ssim_lambda", low=0.0, high=1.0)
        check_choice(self, "strategy", STRATEGIES)
        check_number(self, "grow_grad2d", low=0.0, low_open=True)
        check_number(self, "prune_opa", low=0.0, high=1.0, low_open=True, high_open=True)
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
        check_choice(self, "rasterize_backend", RASTERIZE_BACKENDS)

    def resolved(self, name: str) -> float:
        """init_opacity, init_scale, opacity_reg or scale_reg: the set value or the strategy's default."""
        value = getattr(self, name)
        return STRATEGY_DEFAULTS[self.strategy][name] if value is None else value

    @property
    def resolved_progress_every(self) -> int:
        return self.progress_every or max(1, self.iters // DEFAULT_PROGRESS_EVENTS)


@dataclass
class GaussianTrainResult:
    """What a finished training returns. files: role -> path (see result.json for every file)."""

    splats: GaussianSplats
    metrics: dict[str, Any]
    out_dir: Path
    files: dict[str, Path]
    n_gaussians: int
    elapsed: float
    init_source: str = ""
    history: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------------- training state


@dataclass
class _TrainState:
    params: torch.nn.ParameterDict
    optimizers: dict[str, torch.optim.Optimizer]
    strategy: Any
    strategy_state: dict[str, Any]
    step: int  # steps completed
    scene_extent: float
    init_source: str
    elapsed: float = 0.0  # wall seconds of training so far, over all sessions
    history: list[dict[str, Any]] = field(default_factory=list)


def checkpoint_path(checkpoint_dir: str | Path) -> Path:
    """Where the latest checkpoint of a run lives (a job can test it to decide on resuming)."""
    return Path(checkpoint_dir) / CHECKPOINT_FILE


def _rng_state(device: torch.device) -> dict[str, Any]:
    state = {"torch": torch.get_rng_state()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def _set_rng_state(state: dict[str, Any], device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_checkpoint(path: Path, state: _TrainState, config: GaussianTrainConfig, device: torch.device) -> None:
    """Everything the next steps depend on: parameters, Adam and strategy state, RNG, step."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "step": state.step,
        "config": dataclasses.asdict(config),
        "params": {name: p.detach().cpu().clone() for name, p in state.params.items()},
        "optimizers": {name: opt.state_dict() for name, opt in state.optimizers.items()},
        "strategy_state": {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in state.strategy_state.items()},
        "rng": _rng_state(device),
        "scene_extent": state.scene_extent,
        "init_source": state.init_source,
        "elapsed": state.elapsed,
        "history": state.history,
    }
    write_checkpoint(path, payload, total=config.iters)


def _load_checkpoint(path: Path, config: GaussianTrainConfig, device: torch.device) -> _TrainState:
    payload = read_checkpoint(path, kind="Gaussian training", version=CHECKPOINT_FORMAT)
    check_same_config(payload["config"], config, RESUMABLE_FIELDS, path)
    params = torch.nn.ParameterDict({name: torch.nn.Parameter(t.to(device)) for name, t in payload["params"].items()})
    optimizers = model.make_optimizers(params, payload["scene_extent"])
    for name, opt in optimizers.items():
        opt.load_state_dict(payload["optimizers"][name])
    strategy = _make_strategy(config)
    strategy_state = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in payload["strategy_state"].items()}
    _set_rng_state(payload["rng"], device)
    return _TrainState(params, optimizers, strategy, strategy_state, payload["step"], payload["scene_extent"],
                       payload["init_source"], payload["elapsed"], list(payload.get("history", [])))


def _make_strategy(config: GaussianTrainConfig):
    if config.strategy == "mcmc":
        return make_strategy("mcmc", config.iters, max_gaussians=config.max_gaussians, min_opacity=config.prune_opa)
    return make_strategy(config.strategy, config.iters, max_gaussians=config.max_gaussians,
                         grow_grad2d=config.grow_grad2d, prune_opa=config.prune_opa)


def init_gaussians(dataset, config: GaussianTrainConfig) -> tuple[GaussianSplats, model.InitialPoints]:
    """The starting Gaussians of a run with ``config`` (the same every time for the same seed)."""
    generator = torch.Generator().manual_seed(config.seed)
    points = model.initial_points(dataset, config.init_points, generator=generator)
    if config.max_gaussians is not None and len(points.xyz) > config.max_gaussians:
        keep = torch.randperm(len(points.xyz), generator=generator)[: config.max_gaussians]
        points = model.InitialPoints(points.xyz[keep], points.rgb[keep],
                                     points.source + f", subsampled to max_gaussians={config.max_gaussians}", points.kind)
    splats = model.init_splats(points, config.sh_degree, config.resolved("init_opacity"))
    splats.scales = splats.scales + math.log(config.resolved("init_scale"))
    return splats, points


def _fresh_state(dataset, config: GaussianTrainConfig, device: torch.device) -> _TrainState:
    splats, points = init_gaussians(dataset, config)
    _, radius = dataset.scene_extent()
    params = model.make_parameters(splats, device)
    optimizers = model.make_optimizers(params, float(radius))
    strategy = _make_strategy(config)
    strategy.check_sanity(params, optimizers)
    strategy_state = strategy.initialize_state(scene_scale=float(radius))
    torch.manual_seed(config.seed)
    return _TrainState(params, optimizers, strategy, strategy_state, 0, float(radius), points.source)


def view_for_step(step: int, n_views: int, seed: int) -> int:
    """The training view of ``step``: a fresh random permutation of the views every epoch."""
    epoch, position = divmod(step, n_views)
    generator = torch.Generator().manual_seed(seed * EPOCH_SEED_STRIDE + epoch)
    return int(torch.randperm(n_views, generator=generator)[position])


def active_sh_degree(step: int, config: GaussianTrainConfig) -> int:
    return min(config.sh_degree, step // config.sh_degree_interval)


def _render(params, viewmats, Ks, width: int, height: int, sh_degree: int, background: torch.Tensor, backend: str):
    from .rasterize import rasterize

    return rasterize(
        params["means"],
        torch.nn.functional.normalize(params["quats"], dim=-1),
        torch.exp(params["scales"]),
        torch.sigmoid(params["opacities"]),
        # Only the active bands: the rest get no gradient either way, and SH work scales with the count.
        torch.cat([params["sh0"], params["shN"][:, : (sh_degree + 1) ** 2 - 1]], dim=1),
        viewmats,
        Ks,
        width,
        height,
        sh_degree=sh_degree,
        background=background,
        backend=backend,
    )


def training_loss(render: torch.Tensor, target: torch.Tensor, ssim_lambda: float) -> torch.Tensor:
    """(1 - λ)·L1 + λ·(1 - SSIM) for (H, W, 3) images."""
    l1 = (render - target).abs().mean()
    return (1.0 - ssim_lambda) * l1 + ssim_lambda * (1.0 - ssim(render, target))


# --------------------------------------------------------------------------------------- the API


def train_gaussians(
    data,
    out_dir: str | Path,
    *,
    config: GaussianTrainConfig | None = None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    events: EventLog | None = None,
    should_stop: Callable[[], bool | str | None] | None = None,
    preview_dir: str | Path | None = None,
    overwrite: bool = False,
    **overrides,
) -> GaussianTrainResult:
    """Train Gaussians on ``data`` (a dataset folder or a loaded ``NerfDataset``) into ``out_dir``.

    config / overrides: a :class:`GaussianTrainConfig`, with fields replaced by ``overrides``.
    checkpoint_dir: where checkpoints go (default: ``<out_dir>.checkpoints`` beside ``out_dir``).
    resume: continue from the checkpoint there (same config, except RESUMABLE_FIELDS).
    events: progress, warning, info and cancelled events go here (the caller emits started/finished).
    should_stop: polled every step; when it returns True (or "cancelled" / "suspended") a checkpoint
        is written, a "cancelled" (or "suspended") event emitted and :class:`JobCancelled` raised.
    preview_dir: when given, a render of the preview view is written there as preview.png every
        ``preview_every`` steps and announced with a "preview" event.
    overwrite: replace a finished result in ``out_dir`` (otherwise that is an error).

    A dataset passed in is used as loaded: its background is the render background, and the
    config's ``downscale`` and ``background`` are not applied again.
    """
    config = _resolve_config(config, overrides)
    events = events if events is not None else EventLog(None)
    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir(out_dir)
    device = resolve_device(config.device)
    dataset = _load_dataset(data, config)
    for note in getattr(dataset, "notes", []) or []:
        events.emit("warning", message=str(note))

    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the caller's global RNG is left as it was
        if resume:
            state = _load_checkpoint(checkpoint_path(checkpoint_dir), config, device)
            events.emit("info", message=f"resuming from step {state.step} of {config.iters}", step=state.step)
        else:
            state = _fresh_state(dataset, config, device)
        events.emit("info", message=f"initialisation: {state.init_source}", init_source=state.init_source,
                    n_gaussians=len(state.params["means"]), device=str(device))
        prepare_rasterizer(config.rasterize_backend, device, events)
        _optimise(dataset, config, state, device, checkpoint_dir, events, should_stop,
                  Path(preview_dir) if preview_dir is not None else None)

    splats = GaussianSplats.from_dict({k: v.detach().cpu() for k, v in state.params.items()})
    return _write_result(dataset, config, state, splats, out_dir, overwrite, device, events)


def prepare_rasterizer(backend: str, device: torch.device, events: EventLog) -> str:
    """Get the native CPU rasterizer ready before the first step, saying so; the backend "auto" will use.

    The first run on a machine compiles its kernels (about half a minute per precision; Numba
    caches them on disk): without a word the job would look stuck. Where they cannot run, "auto"
    trains with the PyTorch rasterizer and a warning event says why; "native" raises.
    """
    if device.type != "cpu" or backend not in ("auto", "native"):
        return backend if backend != "auto" else ("gsplat" if device.type == "cuda" else "torch")
    from . import native

    if native.is_ready(torch.float32):
        return "native"
    reason = native.unavailable_reason()
    if reason is None:
        events.emit("info", message="preparing the native CPU rasterizer (the first run on a machine compiles it, "
                                    "about 30 s; later runs load it from the cache)")
    started = time.perf_counter()
    if native.ensure_ready(torch.float32, required=backend == "native"):
        seconds = time.perf_counter() - started
        events.emit("info", message=f"native CPU rasterizer ready in {seconds:.1f} s", seconds=round(seconds, 1))
        return "native"
    events.emit("warning", message=f"the native CPU rasterizer cannot run ({native.unavailable_reason()}); "
                                   "training with the PyTorch rasterizer instead (same results, about 3x slower)")
    return "torch"


def default_checkpoint_dir(out_dir: str | Path) -> Path:
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}.checkpoints"


def _resolve_config(config: GaussianTrainConfig | None, overrides: dict) -> GaussianTrainConfig:
    return apply_overrides(config, GaussianTrainConfig, overrides, "training")


def _load_dataset(data, config: GaussianTrainConfig):
    if isinstance(data, (str, Path)):
        from ..data.transforms import load_nerf_dataset

        return load_nerf_dataset(data, downscale=config.downscale, background=config.background)
    for attribute in ("train", "background", "scene_extent"):
        if not hasattr(data, attribute):
            raise InputError(f"expected a dataset folder or a loaded NerfDataset, got {type(data).__name__}",
                             field="data")
    return data


def _preview_views(dataset):
    """The view whose PSNR the progress events report: the first test view, else the first train view."""
    test = getattr(dataset, "test", None)
    views = test if test is not None and len(test) > 0 else dataset.train
    return views


def _optimise(dataset, config: GaussianTrainConfig, state: _TrainState, device: torch.device, checkpoint_dir: Path,
              events: EventLog, should_stop, preview_dir: Path | None) -> None:
    train = dataset.train
    images = torch.as_tensor(train.images, dtype=torch.float32).to(device)  # (V, H, W, 3)
    viewmats = train.cameras.world_to_camera_cv().to(device)  # (V, 4, 4)
    Ks = train.cameras.intrinsics.to(device)  # (V, 3, 3)
    width, height = train.cameras.width, train.cameras.height
    background = torch.as_tensor(dataset.background, dtype=torch.float32).to(device)
    preview = _preview_views(dataset)
    preview_image = torch.as_tensor(preview.images[0], dtype=torch.float32).to(device)
    preview_viewmat = preview.cameras[0].world_to_camera_cv().to(device)
    preview_K = preview.cameras.intrinsics[:1].to(device)

    progress_every = config.resolved_progress_every
    preview_every = config.preview_every or max(1, config.iters // 10)
    session_start = time.perf_counter()
    session_start_step = state.step
    elapsed_before = state.elapsed
    evaluation_seconds = 0.0  # periodic test evaluations are diagnostics, not training time

    def training_seconds() -> float:
        return time.perf_counter() - session_start - evaluation_seconds
    last_loss = float("nan")
    params, optimizers, strategy = state.params, state.optimizers, state.strategy
    opacity_reg, scale_reg = config.resolved("opacity_reg"), config.resolved("scale_reg")

    def render_preview(step: int) -> tuple[torch.Tensor, float]:
        with torch.no_grad():
            rgb, *_ = _render(params, preview_viewmat, preview_K, preview.cameras.width, preview.cameras.height,
                              active_sh_degree(step, config), background, config.rasterize_backend)
        rgb = rgb[0].clamp(0.0, 1.0)
        return rgb, float(psnr(rgb, preview_image))

    while state.step < config.iters:
        step = state.step
        requested = should_stop() if should_stop is not None else None
        if requested:
            reason = stop_reason(requested)
            state.elapsed = elapsed_before + training_seconds()
            path = checkpoint_path(checkpoint_dir)
            save_checkpoint(path, state, config, device)
            events.emit(reason, step=step, total=config.iters, checkpoint=str(path))
            raise JobCancelled(f"training stopped at step {step} of {config.iters}; checkpoint {path}", reason=reason)

        view = view_for_step(step, len(train), config.seed)
        rgb, _alpha, _depth, info = _render(params, viewmats[view : view + 1], Ks[view : view + 1], width, height,
                                            active_sh_degree(step, config), background, config.rasterize_backend)
        info.setdefault("gaussian_ids", None)  # DefaultStrategy reads it (None: not packed)
        strategy.step_pre_backward(params, optimizers, state.strategy_state, step, info)
        loss = training_loss(rgb[0], images[view], config.ssim_lambda)
        if opacity_reg > 0:
            loss = loss + opacity_reg * torch.sigmoid(params["opacities"]).mean()
        if scale_reg > 0:
            loss = loss + scale_reg * torch.exp(params["scales"]).mean()
        loss.backward()
        means_lr = model.means_learning_rate(step, config.iters, state.scene_extent)
        model.set_means_learning_rate(optimizers, means_lr)
        for optimizer in optimizers.values():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        # After the optimizer step, as gsplat's trainer does: it reads means2d's gradient from info.
        if config.strategy == "mcmc":
            strategy.step_post_backward(params, optimizers, state.strategy_state, step, info, lr=means_lr)
        else:
            strategy.step_post_backward(params, optimizers, state.strategy_state, step, info)
        params = state.params  # the strategy replaces Parameter objects in the dict, not the dict
        state.step = step + 1
        last_loss = float(loss.detach())
        if not math.isfinite(last_loss):
            events.emit("warning", message=f"loss became {last_loss} at step {step}; training stopped", step=step)
            raise FloatingPointError(f"training loss became {last_loss} at step {step}")

        done = state.step
        state.elapsed = elapsed_before + training_seconds()
        if config.checkpoint_every and done % config.checkpoint_every == 0 and done < config.iters:
            save_checkpoint(checkpoint_path(checkpoint_dir), state, config, device)
        evaluate_now = bool(config.eval_every) and dataset.test is not None and (
            done % config.eval_every == 0 or done == config.iters)
        if done % progress_every == 0 or done == config.iters or evaluate_now:
            rgb_preview, preview_psnr = render_preview(done)
            rate = (done - session_start_step) / max(training_seconds(), 1e-9)
            fields = {
                "step": done, "total": config.iters, "loss": last_loss, "psnr": preview_psnr,
                "n_gaussians": len(params["means"]), "elapsed": round(state.elapsed, 3),
                "eta": round((config.iters - done) / rate, 1) if rate > 0 else None,
            }
            if evaluate_now:
                evaluation_started = time.perf_counter()
                summary = _quick_eval(params, dataset, config, done, background)
                evaluation_seconds += time.perf_counter() - evaluation_started
                entry = {"step": done, "elapsed": round(state.elapsed, 3), "n_gaussians": len(params["means"]), **summary}
                state.history.append(entry)
                fields.update({"test_psnr": summary["psnr"], "test_ssim": summary["ssim"]})
            events.emit("progress", **fields)
            if preview_dir is not None and (done % preview_every == 0 or done == config.iters):
                path = write_preview(preview_dir, rgb_preview)
                events.emit("preview", step=done, path=str(path))

    save_checkpoint(checkpoint_path(checkpoint_dir), state, config, device)


def _quick_eval(params, dataset, config, step: int, background: torch.Tensor) -> dict[str, float]:
    """PSNR and SSIM over the test split with the current parameters (no files, no LPIPS)."""
    test = dataset.test
    viewmats = test.cameras.world_to_camera_cv().to(background.device)
    Ks = test.cameras.intrinsics.to(background.device)
    psnrs, ssims = [], []
    with torch.no_grad():
        for index in range(len(test)):
            rgb, *_ = _render(params, viewmats[index : index + 1], Ks[index : index + 1], test.cameras.width,
                              test.cameras.height, active_sh_degree(step, config), background, config.rasterize_backend)
            target = torch.as_tensor(test.images[index], dtype=torch.float32).to(rgb.device)
            rgb = rgb[0].clamp(0.0, 1.0)
            psnrs.append(float(psnr(rgb, target)))
            ssims.append(float(ssim(rgb, target)))
    return {"psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims)}


# ------------------------------------------------------------------------------------ evaluation


def _file_stem(name: str, index: int) -> str:
    stem = Path(str(name)).stem or f"view_{index}"
    return f"{index:03d}_" + re.sub(r"[^A-Za-z0-9_.-]+", "_", stem)


def evaluate_splats(splats: GaussianSplats, views, background, *, device="auto", renders_dir: str | Path | None = None,
                    lpips_net: str | None = "alex", backend: str = "auto") -> dict[str, Any]:
    """PSNR, SSIM and LPIPS of ``splats`` rendered from ``views`` (a ViewSet) against its images.

    renders_dir: when given, each render is saved beside its ground truth (render | truth PNG).
    lpips_net: LPIPS backbone, or None to skip. LPIPS is computed only when the backbone weights
    are on this machine; otherwise "lpips" is None and "lpips_status" says why and where they go.
    Returns means over the views and a "per_view" list.
    """
    from .render import render_views

    device = resolve_device(device)
    renders, _, _ = render_views(splats, views.cameras, background=background, backend=backend, device=device)
    targets = torch.as_tensor(views.images, dtype=torch.float32).cpu()

    lpips_model, lpips_status, lpips_path = None, "not requested", None
    if lpips_net is not None:
        lpips_path = lpips_weights_path(lpips_net)
        try:
            lpips_model = load_lpips(lpips_net, device=device)
            lpips_status = f"computed with the {lpips_net} backbone"
        except MetricUnavailable as exc:
            lpips_status = f"not computed: {exc.reason}"

    per_view = []
    if renders_dir is not None:
        renders_dir = Path(renders_dir)
        renders_dir.mkdir(parents=True, exist_ok=True)
    for index in range(len(renders)):
        render, target = renders[index], targets[index]
        name = views.names[index] if index < len(views.names) else f"view_{index}"
        entry = {"name": str(name), "psnr": finite_or_none(psnr(render, target)), "ssim": float(ssim(render, target))}
        if lpips_model is not None:
            entry["lpips"] = float(lpips_distance(lpips_model, render, target))
        if renders_dir is not None:
            file_name = _file_stem(name, index) + ".png"
            media.write_png(renders_dir / file_name, media.side_by_side(render, target))
            entry["render"] = f"{renders_dir.name}/{file_name}"
        per_view.append(entry)

    def mean_of(key):
        values = [v[key] for v in per_view if v.get(key) is not None]
        return sum(values) / len(values) if values else None

    return {
        "psnr": mean_of("psnr"),
        "ssim": mean_of("ssim"),
        "lpips": mean_of("lpips") if lpips_model is not None else None,
        "lpips_status": lpips_status,
        "lpips_weights_path": str(lpips_path) if lpips_path is not None else None,
        "n_views": len(per_view),
        "per_view": per_view,
    }


def evaluate_ply(ply, data, *, out_dir: str | Path | None = None, split: str = "test", background=(1.0, 1.0, 1.0),
                 device="auto", lpips_net: str | None = "alex", downscale: float = 1.0,
                 backend: str = "auto") -> dict[str, Any]:
    """Evaluate a Gaussian PLY on a split of a dataset folder (what ``radiantforge eval`` runs).

    With ``out_dir`` (new or empty), renders beside ground truth and metrics.json are written there.
    """
    from ..data.transforms import load_nerf_dataset
    from .ply import load_gaussian_ply

    background = check_colour(background)
    if out_dir is not None:
        out_dir = Path(out_dir)
        if out_dir.exists() and (not out_dir.is_dir() or any(out_dir.iterdir())):
            raise InputError("exists and is not an empty folder; choose a new folder for the evaluation", file=out_dir)
    dataset = load_nerf_dataset(data, downscale=downscale, background=background,
                                splits=("train", split) if split != "train" else ("train",))
    views = dataset.splits.get(split)
    if views is None or len(views) == 0:
        raise InputError(f"the dataset has no {quoted(split)} split (it has {', '.join(dataset.splits)})", file=data,
                         field="split")
    splats = load_gaussian_ply(ply)
    if out_dir is None:
        metrics = evaluate_splats(splats, views, dataset.background, device=device, lpips_net=lpips_net,
                                  backend=backend)
        metrics.update({"split": split, "ply": str(ply)})
        return metrics
    partial = _partial_dir(out_dir)
    try:
        metrics = evaluate_splats(splats, views, dataset.background, device=device, lpips_net=lpips_net,
                                  renders_dir=partial / TEST_RENDERS_DIR, backend=backend)
        metrics.update({"split": split, "ply": str(ply)})
        _write_json(partial / METRICS_FILE, metrics)
        _move_into_place(partial, out_dir, replace_finished=False)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return metrics


# ------------------------------------------------------------------------------- the result folder


def _partial_dir(out_dir: Path) -> Path:
    partial = out_dir.parent / f".{out_dir.name}.partial-{os.getpid()}"
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def _write_json(path: Path, payload: dict) -> None:
    from ..events import _jsonable

    path.write_text(json.dumps(_jsonable(payload), indent=2, allow_nan=False) + "\n", encoding="utf-8")


def _move_into_place(partial: Path, out_dir: Path, replace_finished: bool) -> None:
    """Rename the complete ``partial`` folder to ``out_dir`` (an empty ``out_dir`` is replaced;
    a finished one only with ``replace_finished``, and only once the new one is complete)."""
    old = None
    if out_dir.exists():
        if holds_only_preview(out_dir):  # the live preview becomes part of the finished result
            if (out_dir / PREVIEW_FILE).exists():
                os.replace(out_dir / PREVIEW_FILE, partial / PREVIEW_FILE)
            for leftover in out_dir.iterdir():  # temporary previews of a killed run
                leftover.unlink()
            out_dir.rmdir()
        elif replace_finished and (out_dir / RESULT_FILE).is_file():
            old = out_dir.parent / f".{out_dir.name}.replaced-{os.getpid()}"
            os.replace(out_dir, old)
        else:
            kept = out_dir.parent / f"{out_dir.name}.new-{time.strftime('%Y%m%d-%H%M%S')}"
            os.replace(partial, kept)
            raise InputError(f"was filled while this result was computed; the new result was saved as {kept}",
                             file=out_dir)
    os.replace(partial, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


TURNTABLE_NAME = "turntable"
MIN_TURNTABLE_SIZE = 128


def _write_turntable(splats: GaussianSplats, dataset, config: GaussianTrainConfig, folder: Path,
                     device: torch.device) -> list[dict]:
    """Orbit turntable (GIF, MP4, PNG frames) around the trained scene; result.json entries for it."""
    from .render import render_turntable

    cameras = dataset.train.cameras
    size = config.turntable_size or max(MIN_TURNTABLE_SIZE, cameras.width, cameras.height)
    written = render_turntable(splats, folder, n_frames=config.turntable_frames, width=size, height=size,
                               background=tuple(float(v) for v in dataset.background), name=TURNTABLE_NAME,
                               backend=config.rasterize_backend, device=device)
    descriptions = {"gif": "turntable (GIF)", "mp4": "turntable (MP4, H.264)", "frames": "turntable frames (PNG)"}
    return [{"path": Path(path).relative_to(folder).as_posix(), "role": "turntable", "format": kind,
             "description": descriptions[kind]} for kind, path in written.items()]


def _write_result(dataset, config: GaussianTrainConfig, state: _TrainState, splats: GaussianSplats, out_dir: Path,
                  overwrite: bool, device: torch.device, events: EventLog) -> GaussianTrainResult:
    from .ply import save_gaussian_ply

    partial = _partial_dir(out_dir)
    try:
        save_gaussian_ply(partial / PLY_FILE, splats)
        files = [{"path": PLY_FILE, "role": "gaussians", "description": "trained Gaussian splats (3DGS PLY layout)"}]
        test = getattr(dataset, "test", None)
        if test is not None and len(test) > 0:
            split_name, views = "test", test
        else:
            split_name, views = "train", dataset.train
            events.emit("warning", message="the dataset has no test split; the metrics are on the training views")
        metrics = evaluate_splats(splats, views, dataset.background, device=device,
                                  renders_dir=partial / TEST_RENDERS_DIR if config.test_renders else None,
                                  lpips_net=config.lpips_net, backend=config.rasterize_backend)
        if metrics["lpips"] is None:
            events.emit("warning", message=f"LPIPS {metrics['lpips_status']}")
        metrics.update({
            "split": split_name, "iters": state.step, "n_gaussians": len(splats), "train_seconds": round(state.elapsed, 3),
            "init_source": state.init_source, "history": state.history,
        })
        _write_json(partial / METRICS_FILE, metrics)
        files.append({"path": METRICS_FILE, "role": "metrics", "description": f"PSNR, SSIM, LPIPS on the {split_name} split"})
        for view in metrics["per_view"]:
            if "render" in view:
                files.append({"path": view["render"], "role": "test_render",
                              "description": f"render | ground truth of {view['name']}"})
        if config.turntable_frames > 0:
            files.extend(_write_turntable(splats, dataset, config, partial, device))
        files.append({"path": RESULT_FILE, "role": "result", "description": "this index of the result files"})
        result = {
            "kind": RESULT_KIND,
            "files": files,
            "metrics": {k: metrics[k] for k in ("psnr", "ssim", "lpips", "lpips_status", "split", "n_views")},
            "n_gaussians": len(splats),
            "iters": state.step,
            "init_source": state.init_source,
            "config": dataclasses.asdict(config),
        }
        _write_json(partial / RESULT_FILE, result)
        _move_into_place(partial, out_dir, replace_finished=overwrite)
    finally:
        shutil.rmtree(partial, ignore_errors=True)

    roles = {"gaussians": out_dir / PLY_FILE, "metrics": out_dir / METRICS_FILE, "result": out_dir / RESULT_FILE}
    if config.test_renders:
        roles["test_renders"] = out_dir / TEST_RENDERS_DIR
    return GaussianTrainResult(splats=splats, metrics=metrics, out_dir=out_dir, files=roles, n_gaussians=len(splats),
                               elapsed=state.elapsed, init_source=state.init_source, history=state.history)

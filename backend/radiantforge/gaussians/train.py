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

The settings are :class:`~.config.GaussianTrainConfig`; the loop's stop requests, checkpoint
cadence, progress and previews are :func:`radiantforge.runs.run_steps`'s; the metrics are
:mod:`.evaluation`'s.

Reproducibility: every random choice comes from ``config.seed``. The view of step ``s`` is
element ``s % V`` of a permutation drawn for epoch ``s // V`` from a generator seeded with
(seed, epoch), so it depends on nothing but the seed and the step; gsplat's split draws from
torch's global generator, whose state is saved in checkpoints (and restored to the caller's
state when training returns).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from ..checkpoints import check_same_config, read_checkpoint, write_checkpoint
from ..config_checks import apply_overrides
from ..devices import resolve_device
from ..errors import InputError
from ..events import EventLog
from ..metrics import psnr, ssim
from ..profiling import NO_PROFILE, StepProfile, NoProfile
from ..result_folders import RESULT_FILE, check_out_dir, partial_result, write_json
from ..runs import RunClock, RunPlan, default_checkpoint_dir, run_steps
from . import model
from . import budget
from .budget import BudgetPlan
from .config import RESUMABLE_FIELDS, GaussianTrainConfig
from .evaluation import METRICS_FILE, TEST_RENDERS_DIR, evaluate_ply, evaluate_splats
from .rasterizers import Rasterizer, prepare_rasterizer
from .splats import GaussianSplats
from .strategy import make_strategy, sh_degree_interval_for

__all__ = ["CHECKPOINT_FILE", "GaussianTrainConfig", "GaussianTrainResult", "checkpoint_path", "evaluate_ply",
           "evaluate_splats", "init_gaussians", "train_gaussians", "view_for_step"]

CHECKPOINT_FILE = "gaussians_checkpoint.pt"
CHECKPOINT_FORMAT = 1
PLY_FILE = "point_cloud.ply"
RESULT_KIND = "gaussians"
# Multiplier of the seed in the per-epoch generator seed, so (seed, epoch) pairs never collide.
EPOCH_SEED_STRIDE = 1_000_003


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
    budget_plan: BudgetPlan | None = None  # what a time budget chose (None: no budget)


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
        "budget_plan": state.budget_plan.as_dict() if state.budget_plan is not None else None,
    }
    write_checkpoint(path, payload, total=config.steps)


def _load_checkpoint(path: Path, config: GaussianTrainConfig, device: torch.device) -> _TrainState:
    payload = read_checkpoint(path, kind="Gaussian training", version=CHECKPOINT_FORMAT)
    check_same_config(payload["config"], config, RESUMABLE_FIELDS, path)
    params = torch.nn.ParameterDict({name: torch.nn.Parameter(t.to(device)) for name, t in payload["params"].items()})
    optimizers = model.make_optimizers(params, payload["scene_extent"], config.steps)
    for name, opt in optimizers.items():
        opt.load_state_dict(payload["optimizers"][name])
    strategy = _make_strategy(config)
    strategy_state = {k: (v.to(device) if isinstance(v, torch.Tensor) else v) for k, v in payload["strategy_state"].items()}
    _set_rng_state(payload["rng"], device)
    return _TrainState(params, optimizers, strategy, strategy_state, payload["step"], payload["scene_extent"],
                       payload["init_source"], payload["elapsed"], list(payload.get("history", [])))


def _saved_budget_plan(path: Path) -> BudgetPlan:
    """The time-budget plan a checkpoint's run started with."""
    payload = read_checkpoint(path, kind="Gaussian training", version=CHECKPOINT_FORMAT)
    saved = payload.get("budget_plan")
    if not isinstance(saved, dict):
        raise InputError("the checkpoint's run had no time budget; resume without time_budget (and with its steps)",
                         file=path, field="time_budget")
    return BudgetPlan(**{**saved, "image_size": tuple(saved["image_size"])})


def _plan_time_budget(data, dataset, config: GaussianTrainConfig, device: torch.device, rasterizer: Rasterizer,
                      job_started: float, events: EventLog):
    """Measure a step here and choose steps, cap and resolution for ``config.time_budget``.

    Returns the planned config, the dataset (reloaded when the plan halves the images) and the plan.
    """
    largest_cap = config.max_gaussians or budget.CAP_CANDIDATES[0]
    renders_after = (len(dataset.test) if getattr(dataset, "test", None) is not None else len(dataset.train)) \
        + config.turntable_frames
    downscale = config.downscale
    for halvings in range(budget.MAX_BUDGET_HALVINGS + 1):
        cost = _measure_step_cost(dataset, config, device, rasterizer)
        plan = budget.plan_from_cost(cost, config.time_budget, time.perf_counter() - job_started, largest_cap,
                                     downscale, (dataset.train.cameras.width, dataset.train.cameras.height),
                                     renders_after)
        can_halve = isinstance(data, (str, Path)) and halvings < budget.MAX_BUDGET_HALVINGS and \
            min(dataset.train.cameras.width, dataset.train.cameras.height) >= 2 * budget.MIN_BUDGET_IMAGE_SIZE
        if plan.steps >= budget.MIN_FULL_RESOLUTION_STEPS or not can_halve:
            break
        downscale *= 2.0
        events.emit("info", message=f"time budget: {plan.steps} steps at {plan.image_size[0]}x{plan.image_size[1]} "
                                    f"are too few; halving the images")
        dataset = _load_dataset(data, dataclasses.replace(config, downscale=downscale))
    budget.check_plan(plan)
    events.emit("info", message=plan.describe(), budget=plan.as_dict())
    planned = dataclasses.replace(config, steps=plan.steps, max_gaussians=plan.max_gaussians, downscale=plan.downscale)
    return planned, dataset, plan


def _measure_step_cost(dataset, config: GaussianTrainConfig, device: torch.device,
                       rasterizer: Rasterizer) -> budget.StepCost:
    """Time real training steps (render, loss, backward, Adam) on throwaway copies of the initial Gaussians."""
    splats, _ = init_gaussians(dataset, config)
    base = model.make_parameters(splats, device)
    _, radius = dataset.scene_extent()
    train = dataset.train
    images = torch.as_tensor(train.images[:1], dtype=torch.float32).to(device)
    viewmat = train.cameras[0].world_to_camera_cv().to(device)
    K = train.cameras.intrinsics[:1].to(device)
    background = torch.as_tensor(dataset.background, dtype=torch.float32).to(device)
    width, height = train.cameras.width, train.cameras.height

    def make_params(copies: int):
        generator = torch.Generator().manual_seed(copies)
        tensors = {name: torch.cat([p.detach()] * copies) for name, p in base.items()}
        if copies > 1:  # the copies sit beside their originals, as densification places them
            jitter = torch.randn(tensors["means"].shape, generator=generator) * 0.01 * float(radius) / 100
            tensors["means"] = tensors["means"] + jitter.to(device)
        params = torch.nn.ParameterDict({name: torch.nn.Parameter(t) for name, t in tensors.items()})
        return params, model.make_optimizers(params, float(radius), config.steps)

    def render(params):
        return _render(params, viewmat, K, width, height, config.sh_degree, background, rasterizer)

    def step(params, optimizers):
        rgb, *_ = render(params)
        training_loss(rgb[0], images[0], config.ssim_lambda).backward()
        for optimizer in optimizers.values():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)

    return budget.measure_step_cost(make_params, step, render)


def _make_strategy(config: GaussianTrainConfig):
    schedule = config.schedule_overrides()
    if config.strategy == "mcmc":
        return make_strategy("mcmc", config.steps, max_gaussians=config.max_gaussians, min_opacity=config.prune_opa,
                             **schedule)
    return make_strategy(config.strategy, config.steps, max_gaussians=config.max_gaussians,
                         grow_grad2d=config.grow_grad2d, prune_opa=config.prune_opa, **schedule)


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
    optimizers = model.make_optimizers(params, float(radius), config.steps)
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
    """The SH degree trained at ``step``; the interval follows ``config.steps`` (which a time budget sets)."""
    interval = config.sh_degree_interval or sh_degree_interval_for(config.steps)
    return min(config.sh_degree, step // interval)


def _render(params, viewmats, Ks, width: int, height: int, sh_degree: int, background: torch.Tensor, backend: Rasterizer):
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
    profile: StepProfile | None = None,
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
    profile: a :class:`~radiantforge.profiling.StepProfile` that collects where each step's time goes.

    A dataset passed in is used as loaded: its background is the render background, and the
    config's ``downscale`` and ``background`` are not applied again.
    """
    job_started = time.perf_counter()
    config = _resolve_config(config, overrides)
    events = events if events is not None else EventLog(None)
    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir(out_dir)
    device = resolve_device(config.device)
    budget_plan = None
    if config.time_budget is not None and resume:  # a resumed run keeps the plan it started with
        budget_plan = _saved_budget_plan(checkpoint_path(checkpoint_dir))
        config = dataclasses.replace(config, steps=budget_plan.steps, max_gaussians=budget_plan.max_gaussians,
                                     downscale=budget_plan.downscale)
    dataset = _load_dataset(data, config)
    for note in getattr(dataset, "notes", []) or []:
        events.emit("warning", message=str(note))

    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the caller's global RNG is left as it was
        rasterizer = prepare_rasterizer(config.rasterize_backend, device, events)  # resolved once for the run
        if config.time_budget is not None and budget_plan is None:
            config, dataset, budget_plan = _plan_time_budget(data, dataset, config, device, rasterizer, job_started,
                                                             events)
        if resume:
            state = _load_checkpoint(checkpoint_path(checkpoint_dir), config, device)
            events.emit("info", message=f"resuming from step {state.step} of {config.steps}", step=state.step)
        else:
            state = _fresh_state(dataset, config, device)
        state.budget_plan = budget_plan
        events.emit("info", message=f"initialisation: {state.init_source}", init_source=state.init_source,
                    n_gaussians=len(state.params["means"]), device=str(device))
        deadline = job_started + budget_plan.deadline_seconds if budget_plan is not None else None
        _optimise(dataset, config, state, device, checkpoint_dir, events, should_stop,
                  Path(preview_dir) if preview_dir is not None else None, rasterizer, profile or NO_PROFILE,
                  deadline=deadline)

    splats = GaussianSplats.from_dict({k: v.detach().cpu() for k, v in state.params.items()})
    return _write_result(dataset, config, state, splats, out_dir, overwrite, device, events, rasterizer)


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
              events: EventLog, should_stop, preview_dir: Path | None, rasterizer: Rasterizer,
              profile: StepProfile | NoProfile = NO_PROFILE, deadline: float | None = None) -> None:
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
    opacity_reg, scale_reg = config.resolved("opacity_reg"), config.resolved("scale_reg")
    # The preview render of the last progress event: its PSNR is in the event, the image may be the preview.
    rendered_preview: dict[int, torch.Tensor] = {}

    def render_preview(step: int) -> torch.Tensor:
        if step not in rendered_preview:
            with torch.no_grad():
                rgb, *_ = _render(state.params, preview_viewmat, preview_K, preview.cameras.width,
                                  preview.cameras.height, active_sh_degree(step, config), background, rasterizer)
            rendered_preview.clear()
            rendered_preview[step] = rgb[0].clamp(0.0, 1.0)
        return rendered_preview[step]

    def take_step() -> torch.Tensor:
        with profile.step():
            return _take_step()

    def _take_step() -> torch.Tensor:
        step, params, optimizers, strategy = state.step, state.params, state.optimizers, state.strategy
        with profile.section("view choice"):
            view = view_for_step(step, len(train), config.seed)
        with profile.section("rasterizer forward"):
            rgb, _alpha, _depth, info = _render(params, viewmats[view : view + 1], Ks[view : view + 1], width, height,
                                                active_sh_degree(step, config), background, rasterizer)
        with profile.section("densification"):
            info.setdefault("gaussian_ids", None)  # DefaultStrategy reads it (None: not packed)
            strategy.step_pre_backward(params, optimizers, state.strategy_state, step, info)
        with profile.section("loss and SSIM"):
            loss = training_loss(rgb[0], images[view], config.ssim_lambda)
            if opacity_reg > 0:
                loss = loss + opacity_reg * torch.sigmoid(params["opacities"]).mean()
            if scale_reg > 0:
                loss = loss + scale_reg * torch.exp(params["scales"]).mean()
        profile.split_backward(loss, rgb)
        with profile.section("optimizer"):
            means_lr = model.means_learning_rate(step, config.steps, state.scene_extent)
            model.set_means_learning_rate(optimizers, means_lr)
            for optimizer in optimizers.values():
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
        # After the optimizer step, as gsplat's trainer does: it reads means2d's gradient from info.
        with profile.section("densification"):
            if config.strategy == "mcmc":
                strategy.step_post_backward(params, optimizers, state.strategy_state, step, info, lr=means_lr)
            else:
                refined = strategy.step_post_backward(params, optimizers, state.strategy_state, step, info)
                if isinstance(refined, dict) and refined.get("reset"):
                    # The artist sees the PSNR drop at this step: say why, and that it recovers.
                    events.emit("info", message=f"opacity reset at step {step}: PSNR dips and recovers",
                                step=step, opacity_reset=True)
        state.step = step + 1
        return loss.detach()

    def evaluate_now(done: int) -> bool:
        return bool(config.eval_every) and dataset.test is not None and (
            done % config.eval_every == 0 or done == config.steps)

    def progress_fields(done: int, loss: torch.Tensor, clock: RunClock) -> dict[str, Any]:
        n_gaussians = len(state.params["means"])
        fields = {"loss": float(loss), "psnr": float(psnr(render_preview(done), preview_image)),
                  "n_gaussians": n_gaussians}
        if evaluate_now(done):
            with clock.excluded():  # periodic test evaluations are diagnostics, not training time
                summary = _quick_eval(state.params, dataset, config, done, background, rasterizer)
            state.history.append({"step": done, "elapsed": round(clock.elapsed(), 3), "n_gaussians": n_gaussians,
                                  **summary})
            fields.update({"test_psnr": summary["psnr"], "test_ssim": summary["ssim"]})
        return fields

    plan = RunPlan(
        label="training", total=config.steps, checkpoint_path=checkpoint_path(checkpoint_dir),
        save_checkpoint=lambda path: save_checkpoint(path, state, config, device),
        checkpoint_every=config.checkpoint_every, progress_every=config.resolved_progress_every,
        preview_every=config.preview_every or max(1, config.steps // 10), preview_dir=preview_dir, events=events,
        should_stop=should_stop, deadline=deadline,
    )
    run_steps(plan, state, take_step, loss_of=float, progress_fields=progress_fields, preview_image=render_preview,
              progress_also_at=evaluate_now)


def _quick_eval(params, dataset, config, step: int, background: torch.Tensor,
                rasterizer: Rasterizer) -> dict[str, float]:
    """PSNR and SSIM over the test split with the current parameters (no files, no LPIPS)."""
    test = dataset.test
    viewmats = test.cameras.world_to_camera_cv().to(background.device)
    Ks = test.cameras.intrinsics.to(background.device)
    psnrs, ssims = [], []
    with torch.no_grad():
        for index in range(len(test)):
            rgb, *_ = _render(params, viewmats[index : index + 1], Ks[index : index + 1], test.cameras.width,
                              test.cameras.height, active_sh_degree(step, config), background, rasterizer)
            target = torch.as_tensor(test.images[index], dtype=torch.float32).to(rgb.device)
            rgb = rgb[0].clamp(0.0, 1.0)
            psnrs.append(float(psnr(rgb, target)))
            ssims.append(float(ssim(rgb, target)))
    return {"psnr": sum(psnrs) / len(psnrs), "ssim": sum(ssims) / len(ssims)}


# ------------------------------------------------------------------------------- the result folder


TURNTABLE_NAME = "turntable"
MIN_TURNTABLE_SIZE = 128


def _write_turntable(splats: GaussianSplats, dataset, config: GaussianTrainConfig, folder: Path,
                     device: torch.device, rasterizer: Rasterizer) -> list[dict]:
    """Orbit turntable (GIF, MP4, PNG frames) around the trained scene; result.json entries for it."""
    from .render import render_turntable

    cameras = dataset.train.cameras
    size = config.turntable_size or max(MIN_TURNTABLE_SIZE, cameras.width, cameras.height)
    written = render_turntable(splats, folder, n_frames=config.turntable_frames, width=size, height=size,
                               background=tuple(float(v) for v in dataset.background), name=TURNTABLE_NAME,
                               backend=rasterizer, device=device)
    descriptions = {"gif": "turntable (GIF)", "mp4": "turntable (MP4, H.264)", "frames": "turntable frames (PNG)"}
    return [{"path": Path(path).relative_to(folder).as_posix(), "role": "turntable", "format": kind,
             "description": descriptions[kind]} for kind, path in written.items()]


def _budget_summary(state: _TrainState, config: GaussianTrainConfig) -> dict[str, Any]:
    """What a time budget chose and whether its deadline ended the run early (nothing without a budget)."""
    if state.budget_plan is None:
        return {}
    return {"time_budget": {**state.budget_plan.as_dict(), "planned_steps": config.steps,
                            "stopped_by_deadline": state.step < config.steps}}


def _write_result(dataset, config: GaussianTrainConfig, state: _TrainState, splats: GaussianSplats, out_dir: Path,
                  overwrite: bool, device: torch.device, events: EventLog,
                  rasterizer: Rasterizer) -> GaussianTrainResult:
    from .ply import save_gaussian_ply

    with partial_result(out_dir, replace_finished=overwrite) as partial:
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
                                  lpips_net=config.lpips_net, backend=rasterizer)
        if metrics["lpips"] is None:
            events.emit("warning", message=f"LPIPS {metrics['lpips_status']}")
        metrics.update({
            "split": split_name, "steps": state.step, "n_gaussians": len(splats), "train_seconds": round(state.elapsed, 3),
            "init_source": state.init_source, "history": state.history, **_budget_summary(state, config),
        })
        write_json(partial / METRICS_FILE, metrics)
        files.append({"path": METRICS_FILE, "role": "metrics", "description": f"PSNR, SSIM, LPIPS on the {split_name} split"})
        for view in metrics["per_view"]:
            if "render" in view:
                files.append({"path": view["render"], "role": "test_render",
                              "description": f"render | ground truth of {view['name']}"})
        if config.turntable_frames > 0:
            files.extend(_write_turntable(splats, dataset, config, partial, device, rasterizer))
        files.append({"path": RESULT_FILE, "role": "result", "description": "this index of the result files"})
        result = {
            "kind": RESULT_KIND,
            "files": files,
            "metrics": {k: metrics[k] for k in ("psnr", "ssim", "lpips", "lpips_status", "split", "n_views")},
            "n_gaussians": len(splats),
            "steps": state.step,
            "init_source": state.init_source,
            **_budget_summary(state, config),
            "config": dataclasses.asdict(config),
        }
        write_json(partial / RESULT_FILE, result)

    roles = {"gaussians": out_dir / PLY_FILE, "metrics": out_dir / METRICS_FILE, "result": out_dir / RESULT_FILE}
    if config.test_renders:
        roles["test_renders"] = out_dir / TEST_RENDERS_DIR
    return GaussianTrainResult(splats=splats, metrics=metrics, out_dir=out_dir, files=roles, n_gaussians=len(splats),
                               elapsed=state.elapsed, init_source=state.init_source, history=state.history)

"""Text-to-3D with 3D Gaussians (DreamGaussian-style), beside the NeRF path of :mod:`.run`.

1. ``gaussian_count`` isotropic Gaussians drawn uniformly in a ball of ``blob_radius`` (grey, opacity
   0.1, sized by their neighbours' distance as 3DGS initialises them), SH degree 0 (albedo only).
2. Each step: ``batch_size`` cameras from the same ranges as the NeRF path, the Gaussians rendered in
   albedo through the project's rasterizer (``rasterizer``: native kernels on the CPU, gsplat on CUDA)
   over a random background per view (empty space must be transparent, not background-coloured;
   ``background="fixed"`` uses ``background_color``), then the same SDS step (:func:`sds_loss`, CFG,
   annealed timesteps, view-dependent prompts or the oracle) and one Adam per parameter.
3. Densification: the project's :class:`~radiantforge.gaussians.strategy.CappedDefaultStrategy` on a
   short schedule (:func:`densify_schedule`): clone / split where the mean view-space gradient passes
   ``gaussian_grow_grad2d``, prune below opacity PRUNE_OPACITY, no opacity reset, capped at
   ``max_gaussians``.
4. The mesh from rendered depth and opacity: BAKE_VIEWS renders all around, fused into a truncated
   signed distance with space carving (:class:`GaussianSurfaceField`), then the NeRF path's extraction
   (:func:`~radiantforge.nerf.extract_textured_mesh`: marching cubes on the ``mesh_resolution``
   lattice, floaters dropped, decimation, xatlas UVs) with the albedo baked by back-projection from
   the same renders (each texel's surface point takes the colour of the views whose rendered depth
   agrees with it).

:func:`radiantforge.text3d.generate_3d` runs this path (``run._generate_with_gaussians``) when
``representation="gaussians"``; every render other than training's (held-out views, turntables, the
bake) folds the training low-pass into the scales first (:func:`as_seen_in_training`); results, checkpoints and resume work as for the NeRF path.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from ..cameras import Cameras, fibonacci_directions
from ..checkpoints import write_checkpoint
from ..events import EventLog
from ..gaussians import model as gaussian_model
from ..gaussians.rasterize import rasterize
from ..gaussians.rasterizers import Rasterizer, prepare_rasterizer
from ..gaussians.splats import GaussianSplats
from ..gaussians.strategy import make_strategy
from ..guidance import cameras_from_spherical, sample_cameras, sds_loss
from ..metrics import psnr
from ..nerf import MeshExtractionConfig, extract_textured_mesh
from ..runs import RunPlan, run_steps
from .conditioning import StepViews

GAUSSIAN_CHECKPOINT_FORMAT = 1
GAUSSIAN_CHECKPOINT_KIND = "text-to-3D (Gaussians)"
SH_DEGREE = 0  # albedo only: what SDS with albedo renders can teach, and what the baked texture holds
INITIAL_OPACITY = 0.1
INITIAL_GREY = 0.5
# DreamGaussian's learning rates (dreamgaussian/configs/text.yaml) for everything but the positions.
SCALES_LR = 5e-3
QUATS_LR = 5e-3
OPACITIES_LR = 5e-2
SH0_LR = 1e-2
# The positions' rate decays exponentially from gaussian_position_lr to this fraction of it (DreamGaussian: 1e-3 -> 2e-5).
POSITION_LR_FINAL_FRACTION = 0.02
ADAM_EPS = 1e-15
# Densification: from START to STOP (fractions of the run), every EVERY_FRACTION of it; Gaussians
# below PRUNE_OPACITY go at each refinement (DreamGaussian: 0.01).
DENSIFY_START_FRACTION = 0.1
DENSIFY_STOP_FRACTION = 0.7
DENSIFY_EVERY_FRACTION = 0.1
PRUNE_OPACITY = 0.01
# The mesh from renders: views on a Fibonacci sphere (all around, below included) at BAKE_RESOLUTION;
# a pixel with opacity below SURFACE_ALPHA is empty; the signed distance is truncated at
# TRUNCATION_OF_BOUND times the box's half-size; the fused field is 0.5 on the surface.
BAKE_VIEWS = 24
BAKE_RESOLUTION = 128
# The rasterizers' screen-space low-pass (px²): a Gaussian much smaller than a training pixel is drawn
# at least this big in training, so renders at a finer resolution must add the missing blur in world
# units (:func:`as_seen_in_training`), or the trained object looks eroded and thin: without it, bake
# renders at 256 px carved Spot down to a 0.097 m chamfer; with it 0.023 m (40 px training).
LOW_PASS_PX2 = 0.3
SURFACE_ALPHA = 0.5
# The truncation is a distance, not a number of lattice cells: rendered depths of soft Gaussians
# scatter by a few centimetres, and a view whose depth lies further behind a point than the
# truncation does not vote on it. Tuned on an object of our own (a tilted torus on a capsule, the
# oracle, 300 steps): 2.5 cells of a 64 lattice (0.08) gave a mesh chamfer of 0.0199 m, 0.11 of it
# 0.0157, 0.16 0.0122, 0.22 0.0110, 0.32 0.0112; 0.22 at a 128 lattice 0.0097 (scripts/bench_text3d.py
# --compare has the figures on Spot and the bunny).
TRUNCATION_OF_BOUND = 0.22
# The colour bake's depth test keeps the old 2.5 cells of a 64 lattice.
VISIBILITY_OF_BOUND = 0.08
SURFACE_LEVEL = 0.5

@dataclass
class GaussianState:
    """Everything the next steps depend on (what a checkpoint holds)."""

    params: torch.nn.ParameterDict
    optimizers: dict[str, torch.optim.Optimizer]
    strategy: Any
    strategy_state: dict[str, Any]
    generator: torch.Generator
    step: int = 0
    elapsed: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)

    def splats(self) -> GaussianSplats:
        """The Gaussians now, detached, on the CPU."""
        return GaussianSplats(**{name: self.params[name].detach().cpu().clone()
                                 for name in gaussian_model.PARAMETER_NAMES})

    @property
    def count(self) -> int:
        return len(self.params["means"])


# -------------------------------------------------------------------------------- setting up


def random_points_in_ball(count: int, radius: float, generator: torch.Generator) -> Tensor:
    """(count, 3) points uniform in the ball of ``radius`` around the origin."""
    direction = torch.nn.functional.normalize(torch.randn(count, 3, generator=generator), dim=-1)
    distance = radius * torch.rand(count, 1, generator=generator) ** (1.0 / 3.0)
    return direction * distance


def initial_splats(config) -> GaussianSplats:
    """``gaussian_count`` grey Gaussians in the ball of ``blob_radius`` (the same for the same seed)."""
    generator = torch.Generator().manual_seed(config.seed)
    xyz = random_points_in_ball(config.gaussian_count, config.blob_radius, generator)
    points = gaussian_model.InitialPoints(xyz, torch.full_like(xyz, INITIAL_GREY), "a ball", "random")
    return gaussian_model.init_splats(points, SH_DEGREE, INITIAL_OPACITY)


def learning_rates(config) -> dict[str, float]:
    return {"means": config.gaussian_position_lr, "scales": SCALES_LR, "quats": QUATS_LR,
            "opacities": OPACITIES_LR, "sh0": SH0_LR, "shN": SH0_LR}


def position_lr(config, step: int) -> float:
    """Log-linear decay from gaussian_position_lr to POSITION_LR_FINAL_FRACTION of it (a function of the step)."""
    progress = min(max(step / max(config.steps, 1), 0.0), 1.0)
    return config.gaussian_position_lr * POSITION_LR_FINAL_FRACTION ** progress


def make_optimizers(config, params: torch.nn.ParameterDict) -> dict[str, torch.optim.Adam]:
    """One Adam per parameter (one group each, named), the layout gsplat's strategy edits."""
    rates = learning_rates(config)
    return {name: torch.optim.Adam([{"params": [params[name]], "lr": rates[name], "name": name}], eps=ADAM_EPS)
            for name in gaussian_model.PARAMETER_NAMES}


def densify_schedule(steps: int) -> dict[str, int]:
    """Refinement window and cadence of a short SDS run; the opacity reset is pushed past the end."""
    every = max(1, round(steps * DENSIFY_EVERY_FRACTION))
    start = max(1, round(steps * DENSIFY_START_FRACTION))
    stop = max(start + 1, round(steps * DENSIFY_STOP_FRACTION))
    return {"refine_start_iter": start, "refine_stop_iter": stop, "refine_every": every, "reset_every": steps + 1}


def make_densifier(config):
    return make_strategy("default", config.steps, max_gaussians=config.max_gaussians,
                         grow_grad2d=config.gaussian_grow_grad2d, prune_opa=PRUNE_OPACITY,
                         **densify_schedule(config.steps))


def fresh_state(config, device: torch.device) -> GaussianState:
    params = gaussian_model.make_parameters(initial_splats(config), device)
    params["shN"] = torch.nn.Parameter(params["shN"][:, :0].contiguous())  # degree 0: no higher bands
    optimizers = make_optimizers(config, params)
    strategy = make_densifier(config)
    strategy.check_sanity(params, optimizers)
    strategy_state = strategy.initialize_state(scene_scale=float(config.bound))
    # gsplat's split draws from the global generator: seed it (inside the caller's fork_rng).
    torch.manual_seed(config.seed)
    return GaussianState(params, optimizers, strategy, strategy_state, torch.Generator().manual_seed(config.seed))


def save_state(path: Path, state: GaussianState, config) -> None:
    payload = {
        "format": GAUSSIAN_CHECKPOINT_FORMAT, "step": state.step, "config": dataclasses.asdict(config),
        "params": {name: p.detach().cpu().clone() for name, p in state.params.items()},
        "optimizers": {name: opt.state_dict() for name, opt in state.optimizers.items()},
        "strategy_state": {k: (v.cpu() if isinstance(v, Tensor) else v) for k, v in state.strategy_state.items()},
        "generator": state.generator.get_state(), "global_rng": torch.get_rng_state(),
        "elapsed": state.elapsed, "history": state.history,
    }
    write_checkpoint(path, payload, total=config.steps)


def load_state(payload: dict, config, device: torch.device) -> GaussianState:
    params = torch.nn.ParameterDict({name: torch.nn.Parameter(t.to(device)) for name, t in payload["params"].items()})
    optimizers = make_optimizers(config, params)
    for name, optimizer in optimizers.items():
        optimizer.load_state_dict(payload["optimizers"][name])
    strategy_state = {k: (v.to(device) if isinstance(v, Tensor) else v) for k, v in payload["strategy_state"].items()}
    generator = torch.Generator()
    generator.set_state(payload["generator"])
    torch.set_rng_state(payload["global_rng"])
    return GaussianState(params, optimizers, make_densifier(config), strategy_state, generator, int(payload["step"]),
                         float(payload["elapsed"]), list(payload.get("history", [])))


# -------------------------------------------------------------------------------- rendering


def render_gaussians(params, cameras: Cameras, background: Tensor, rasterizer: Rasterizer | str = "auto"):
    """(rgb (C, H, W, 3), alpha (C, H, W, 1), depth (C, H, W, 1), info) of the Gaussians in ``params``
    (gsplat's names: log scales, logit opacities) seen by ``cameras``, over ``background`` (C, 3)."""
    return rasterize(params["means"], torch.nn.functional.normalize(params["quats"], dim=-1),
                     torch.exp(params["scales"]), torch.sigmoid(params["opacities"]), params["sh0"],
                     cameras.world_to_camera_cv(), cameras.intrinsics, cameras.width, cameras.height,
                     sh_degree=SH_DEGREE, background=background, backend=rasterizer)


def training_pixel_size(config, resolution: int | None = None) -> float:
    """World size (m) of one pixel at the middle of the training distances and fields of view, in a
    render of ``resolution`` pixels (default: the training resolution)."""
    distance = sum(config.distance_range) / 2
    fov = math.radians(sum(config.fov_range_deg) / 2)
    return 2.0 * distance * math.tan(fov / 2) / (resolution or config.resolution)


def as_seen_in_training(params, config, render_resolution: int) -> dict[str, Tensor]:
    """The Gaussians of ``params`` as training saw them, for a render of ``render_resolution`` pixels
    (held-out views, turntables, the mesh bake; cameras at the training ranges' middle).

    Training drew every Gaussian with the rasterizer's low-pass of LOW_PASS_PX2 training pixels²;
    the render adds LOW_PASS_PX2 of its own pixels², so only the difference is folded into the (log)
    scales, in world units. Folding the whole training low-pass blurred the 64 px held-out views of
    a 40 px run twice over (oracle, 300 steps: bunny 22.5 dB and IoU 0.90 that way, Spot 23.5 / 0.88;
    see scripts/bench_text3d.py --compare for the figures now)."""
    training = training_pixel_size(config)
    render = training_pixel_size(config, render_resolution)
    blur = LOW_PASS_PX2 * max(training ** 2 - render ** 2, 0.0)
    seen = {name: params[name].detach() for name in gaussian_model.PARAMETER_NAMES}
    seen["scales"] = 0.5 * torch.log(torch.exp(2.0 * seen["scales"]) + blur)
    return seen


@torch.no_grad()
def render_splat_views(params, cameras: Cameras, background_color, rasterizer, device: torch.device):
    """Deterministic renders one camera at a time: (rgb (C, H, W, 3), opacity (C, H, W), depth (C, H, W)) on the CPU."""
    background = torch.as_tensor(background_color, dtype=torch.float32, device=device).reshape(1, 3)
    images, opacities, depths = [], [], []
    for index in range(len(cameras)):
        rgb, alpha, depth, _ = render_gaussians(params, cameras[index].to(device), background, rasterizer)
        images.append(rgb.clamp(0.0, 1.0).cpu())
        opacities.append(alpha[..., 0].cpu())
        depths.append(depth[..., 0].cpu())
    return torch.cat(images), torch.cat(opacities), torch.cat(depths)


def step_background(config, count: int, generator: torch.Generator, device: torch.device) -> Tensor:
    """(count, 3): one random colour per view, or background_color when the background is "fixed"."""
    if config.background == "fixed":
        return torch.tensor(config.background_color, device=device).expand(count, 3)
    return torch.rand(count, 3, generator=generator).to(device)


# -------------------------------------------------------------------------------- optimisation


@dataclass
class GaussianStepResult:
    loss: float
    sds: Any
    image: Tensor  # (C, H, W, 3)
    alpha: Tensor  # (C, H, W, 1)
    conditioning: Any
    refined: dict[str, int]


def optimisation_step(config, state: GaussianState, model, conditioner, device: torch.device, plan,
                      rasterizer: Rasterizer, timer=None) -> GaussianStepResult:
    """Step ``state.step``: cameras, render, SDS, backward, Adam, densification.

    plan: the NeRF path's :class:`~radiantforge.text3d.run.StepPlan` (camera sampling and SDS settings;
    its shading schedule and NeRF render settings are not used). timer: as in the NeRF path.
    """
    from .run import _phase

    step, generator, params = state.step, state.generator, state.params
    with _phase(timer, "render"):
        views = sample_cameras(plan.sampling, generator=generator)
        cameras = views.cameras.to(device)
        background = step_background(config, len(cameras), generator, device)
        image, alpha, _, info = render_gaussians(params, cameras, background, rasterizer)
        info.setdefault("gaussian_ids", None)  # DefaultStrategy reads it (None: not packed)
        state.strategy.step_pre_backward(params, state.optimizers, state.strategy_state, step, info)
    with _phase(timer, "guidance"):
        background_image = background[:, None, None, :].expand_as(image)
        conditioning = conditioner(StepViews(views, cameras, "albedo", None, background_image, config.ambient))
        output = sds_loss(model, image, conditioning.cond, conditioning.uncond, plan.guidance_settings,
                          step=step, total_steps=config.steps, generator=generator)
    with _phase(timer, "backward"):
        output.loss.backward()
    with _phase(timer, "optimizer"):
        for group in state.optimizers["means"].param_groups:
            group["lr"] = position_lr(config, step)
        for optimizer in state.optimizers.values():
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
        # After the optimizer step, as gsplat's trainer does: it reads means2d's gradient from info.
        refined = state.strategy.step_post_backward(params, state.optimizers, state.strategy_state, step, info)
    state.step = step + 1
    return GaussianStepResult(float(output.loss.detach()), output, image.detach(), alpha.detach(), conditioning,
                              refined)


def optimise(config, state: GaussianState, model, conditioner, device: torch.device, checkpoint_file: Path,
             preview_dir: Path, events: EventLog, should_stop, rasterizer: Rasterizer) -> None:
    from .run import PREVIEW_AZIMUTH_DEG, PREVIEW_ELEVATION_DEG, ring_cameras, step_plan

    plan = step_plan(config)

    def progress_fields(done: int, outcome: GaussianStepResult, clock) -> dict[str, Any]:
        entry = {"step": done, "loss": outcome.loss, "grad_norm": outcome.sds.grad_norm,
                 "timestep": float(outcome.sds.timesteps.float().mean()), "shading": "albedo",
                 "opacity": float(outcome.alpha.mean()), "n_gaussians": state.count,
                 "elapsed": round(state.elapsed, 3)}
        if outcome.conditioning.target is not None:  # the oracle knows the answer
            entry["psnr"] = float(psnr(outcome.image.clamp(0, 1), outcome.conditioning.target).mean())
        state.history.append(entry)
        return entry

    def preview(done: int) -> Tensor:
        camera = ring_cameras(config, torch.tensor([PREVIEW_AZIMUTH_DEG]), torch.tensor([PREVIEW_ELEVATION_DEG]),
                              config.turntable_resolution)
        seen = as_seen_in_training(state.params, config, config.turntable_resolution)
        rgb, opacity, _ = render_splat_views(seen, camera, config.background_color, rasterizer, device)
        return torch.cat([rgb[0], opacity[0, ..., None].expand_as(rgb[0])], dim=1)

    run_plan = RunPlan(
        label="text-to-3D (Gaussians)", total=config.steps, checkpoint_path=checkpoint_file,
        save_checkpoint=lambda path: save_state(path, state, config), checkpoint_every=config.checkpoint_every,
        progress_every=config.resolved_progress_every, preview_every=config.resolved_preview_every,
        preview_dir=preview_dir, events=events, should_stop=should_stop,
    )
    run_steps(run_plan, state, lambda: optimisation_step(config, state, model, conditioner, device, plan, rasterizer),
              loss_of=lambda outcome: outcome.loss, progress_fields=progress_fields, preview_image=preview)


# -------------------------------------------------------------------------------- the mesh


class GaussianSurfaceField:
    """What :func:`~radiantforge.nerf.extract_textured_mesh` needs from a field, made from renders of the Gaussians.

    The Gaussians are rendered (colour, opacity, expected depth) from ``views`` once; then, for any
    points (P, 3):

    density(points) -> (P,) in [0, 1], 0.5 on the surface: depth fusion (a truncated signed distance
      averaged over the views, as TSDF fusion does) with space carving. A view whose pixel under the
      point is empty (opacity < SURFACE_ALPHA) says the point is outside; a view whose rendered depth
      is within ``truncation`` behind the point or anywhere in front of it gives the signed distance
      ``clamp(depth - z, -truncation, truncation)``; a point behind the surface in every view that sees
      it is inside. Interior Gaussians (never seen) and the inside of the object are therefore solid,
      floaters outside the renders' silhouettes are carved away, and the surface lies where the renders
      put it: what the held-out views and the oracle measure.
    albedo(points) -> (P, 3): back-projection: the opacity-weighted mean colour over the views whose
      rendered depth is within ``visibility_tolerance`` of the point's depth (tighter than the
      truncation, so a surface does not take the colour of one in front of it); a point no view sees that way takes
      the view whose depth comes closest.
    """

    def __init__(self, splats: GaussianSplats, aabb: Tensor, views: Cameras, truncation: float, rasterizer,
                 background_color, visibility_tolerance: float):
        self.aabb = aabb.float()
        self.views = views
        self.truncation = float(truncation)
        self.visibility_tolerance = float(visibility_tolerance)
        params = {name: getattr(splats, name) for name in gaussian_model.PARAMETER_NAMES}
        self.rgb, self.alpha, self.depth = render_splat_views(params, views, background_color, rasterizer,
                                                              torch.device("cpu"))

    def _project(self, points: Tensor):
        """Per view and point: (colour (V, P, 3), opacity (V, P), rendered depth (V, P), point depth (V, P),
        inside the image (V, P) bool)."""
        w2c = self.views.world_to_camera_cv()  # (V, 4, 4)
        camera_points = points[None] @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]  # (V, P, 3)
        z = camera_points[..., 2]
        pixels = camera_points @ self.views.intrinsics.transpose(1, 2)  # (V, P, 3)
        u, v = pixels[..., 0] / z.clamp(min=1e-6), pixels[..., 1] / z.clamp(min=1e-6)
        width, height = self.views.width, self.views.height
        grid = torch.stack([u / width * 2 - 1, v / height * 2 - 1], dim=-1)[:, :, None, :]  # (V, P, 1, 2)

        def sample(image: Tensor) -> Tensor:  # (V, H, W, D) -> (V, P, D)
            out = torch.nn.functional.grid_sample(image.permute(0, 3, 1, 2), grid, mode="bilinear",
                                                  padding_mode="border", align_corners=False)
            return out[..., 0].permute(0, 2, 1)

        inside = (u >= 0) & (u < width) & (v >= 0) & (v < height) & (z > 0)
        # Depth nearest-pixel: bilinear depth across a silhouette edge would mix the object with empty space.
        nearest = torch.nn.functional.grid_sample(self.depth[:, None], grid, mode="nearest", padding_mode="border",
                                                  align_corners=False)[:, 0, :, 0]
        return sample(self.rgb), sample(self.alpha[..., None])[..., 0], nearest, z, inside

    def density(self, points: Tensor) -> Tensor:
        _, alpha, depth, z, inside = self._project(points)
        empty = inside & (alpha < SURFACE_ALPHA)
        signed = (depth - z).clamp(max=self.truncation)  # > 0: in front of the surface
        near = inside & ~empty & (signed >= -self.truncation)
        behind = inside & ~empty & ~near
        weight = near.float()
        tsdf = (weight * signed).sum(0) / weight.sum(0).clamp(min=1.0)
        tsdf = torch.where(weight.sum(0) > 0, tsdf, torch.where(behind.any(0), -self.truncation, self.truncation))
        tsdf = torch.where(empty.any(0) | ~inside.any(0), torch.full_like(tsdf, self.truncation), tsdf)
        return 0.5 - 0.5 * tsdf / self.truncation

    def albedo(self, points: Tensor) -> Tensor:
        colour, alpha, depth, z, inside = self._project(points)
        miss = (depth - z).abs() + (~inside).float() * 1e3 + (alpha < SURFACE_ALPHA).float() * 1e2
        weight = (miss <= self.visibility_tolerance).float() * alpha  # (V, P)
        total = weight.sum(dim=0)
        blended = (weight[..., None] * colour).sum(dim=0) / total.clamp(min=1e-8)[:, None]
        closest = colour.gather(0, miss.argmin(dim=0)[None, :, None].expand(1, -1, 3))[0]
        return torch.where(total[:, None] > 0, blended, closest)


def bake_cameras(config) -> Cameras:
    """BAKE_VIEWS cameras on a Fibonacci sphere around the object (from below too), at the training
    ranges' middle distance and field of view."""
    directions = fibonacci_directions(BAKE_VIEWS)  # (V, 3) unit vectors
    elevation = torch.rad2deg(torch.asin(directions[:, 2].clamp(-1.0, 1.0)))
    # Azimuth 0 = the front, seen from -Y (cameras_from_spherical's convention).
    azimuth = torch.rad2deg(torch.atan2(directions[:, 0], -directions[:, 1]))
    count = len(directions)
    return cameras_from_spherical(azimuth, elevation, torch.full((count,), sum(config.distance_range) / 2),
                                  torch.full((count,), sum(config.fov_range_deg) / 2), BAKE_RESOLUTION, BAKE_RESOLUTION)


def extract_gaussian_mesh(splats: GaussianSplats, config, rasterizer):
    """(textured mesh, iso-level) of the Gaussians: see the module docstring, step 4."""
    bound = float(config.bound)
    aabb = torch.tensor([[-bound] * 3, [bound] * 3])
    seen = GaussianSplats(**as_seen_in_training({name: getattr(splats, name)
                                                 for name in gaussian_model.PARAMETER_NAMES}, config, BAKE_RESOLUTION))
    surface = GaussianSurfaceField(seen, aabb, bake_cameras(config), TRUNCATION_OF_BOUND * bound, rasterizer,
                                   config.background_color, visibility_tolerance=VISIBILITY_OF_BOUND * bound)
    settings = MeshExtractionConfig(grid_resolution=config.mesh_resolution, density_threshold=SURFACE_LEVEL,
                                    min_component_ratio=config.min_component_ratio,
                                    target_faces=config.target_faces or None, texture_size=config.texture_size)
    return extract_textured_mesh(surface, settings), SURFACE_LEVEL


def prepare(config, device: torch.device, events: EventLog) -> Rasterizer:
    return prepare_rasterizer(config.rasterizer, device, events, field="rasterizer")


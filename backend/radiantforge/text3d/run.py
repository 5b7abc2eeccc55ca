"""Text-to-3D, end to end: ``generate_3d(prompt, out_dir)`` (DreamFusion with a NeRF, then a textured mesh).

1. The guidance model: Stable Diffusion from a folder or the Hugging Face cache (never
   downloaded), or a :class:`.Text3DOracle` in known-answer tests.
2. A :class:`~radiantforge.nerf.NerfField` (grid encoding + small MLPs, a density blob to start
   from, a background model) optimised with Adam. Each step draws ``batch_size`` cameras
   (distance, elevation, azimuth and field-of-view ranges), picks a shading mode
   (:class:`~radiantforge.nerf.ShadingSchedule`: normals only during the ``latent_iter_ratio``
   warm-up, then albedo / textureless / lambertian with a point light near the camera), renders
   the field at ``resolution`` pixels with empty-space skipping (an occupancy grid refreshed
   every ``occupancy_update_every`` steps), upsamples the images to the guidance model's size
   and applies SDS (CFG, w(t), annealed timesteps, view-dependent prompts with front / side /
   back interpolation) plus the regularisers: opacity entropy, orientation, sparsity.
3. Checkpoints every ``checkpoint_every`` steps and when ``should_stop()`` turns true (then
   :class:`~radiantforge.errors.JobCancelled` is raised); ``resume=True`` continues bit for bit
   on the CPU: every random draw comes from one generator whose state is in the checkpoint.
4. The result folder, written into a temporary folder renamed into place when complete:
   mesh.glb, mesh.obj/.mtl, mesh.png (marching cubes, cleanup, decimation, xatlas UVs, baked
   albedo), turntable.gif/.mp4 + frames (RGB), turntable_depth.gif/.mp4 + frames, preview.png,
   metrics.json, result.json.

While it runs, ``out_dir/preview.png`` (the field from the front: albedo | shaded) is refreshed
every ``preview_every`` steps and announced by a "preview" event; nothing else is written there
until the result is complete.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from .. import media
from ..cameras import Cameras
from ..checkpoints import check_same_config, read_checkpoint, write_checkpoint
from ..devices import resolve_device
from ..errors import InputError, RadiantForgeError
from ..events import EventLog
from ..guidance import CameraSamplingConfig, SDSConfig, cameras_from_spherical, sample_cameras, sds_loss
from ..guidance.guided_jobs import make_guidance as shared_make_guidance
from ..guidance.guided_jobs import oracle_prompt_when_none, resolve_guided_config
from ..mesh import TriangleMesh
from ..metrics import psnr
from ..result_folders import PREVIEW_FILE, RESULT_FILE, check_out_dir, partial_result, write_json
from ..nerf import (FieldConfig, MeshExtractionConfig, NerfField, OccupancyGrid, RenderConfig, ShadingSchedule,
                    export_textured_mesh, extract_textured_mesh, render, sample_point_lights)
from ..runs import RunPlan, default_checkpoint_dir, run_steps
from .conditioning import MeshTarget, OracleConditioner, PromptConditioner, StepViews, Text3DOracle
from .config import RESUMABLE_FIELDS, Text3DConfig, check_prompt
from .evaluate import mesh_chamfer, silhouette_iou

# The prompt a job records when an oracle is its guidance and the caller gave none.
ORACLE_PROMPT = "(oracle reference object)"

RESULT_KIND = "text3d"
CHECKPOINT_FILE = "text3d_checkpoint.pt"
CHECKPOINT_FORMAT = 1
GAUSSIAN_CHECKPOINT_FORMAT = 1  # .gaussian_path's checkpoints (same file name, their own kind)
MESH_NAME = "mesh"  # mesh.glb, mesh.obj, mesh.mtl, mesh.png
METRICS_FILE = "metrics.json"
TURNTABLE_NAME = "turntable"
DEPTH_TURNTABLE_NAME = "turntable_depth"
# Adam as NeRF-based text-to-3D code runs it: a faster second-moment decay (SDS gradients swing
# with the random timestep) and a tiny epsilon (grid features get small, sparse gradients).
ADAM_BETAS = (0.9, 0.99)
ADAM_EPS = 1e-15
# Opacity is clamped this far inside (0, 1) before its entropy: log(0) would be -inf.
ENTROPY_CLAMP = 1e-5
LIT_SHADINGS = ("lambertian", "textureless")
# The preview camera: the object's front, a little from above.
PREVIEW_AZIMUTH_DEG = 0.0
PREVIEW_ELEVATION_DEG = 15.0
# Held-out views of known-answer runs: a ring at two elevations, between the training ranges.
HELD_OUT_AZIMUTHS = 8
HELD_OUT_ELEVATIONS_DEG = (0.0, 30.0)
CHAMFER_SAMPLES = 8000
# When the field never reaches density_threshold (a short or failed run), the surface is taken at
# this fraction of the field's largest density instead, with a warning, so the run still ends in a mesh.
FALLBACK_SURFACE_FRACTION = 0.5


@dataclass
class Text3DResult:
    """A finished text-to-3D run.

    field: the optimised NeRF (on the CPU), or the optimised Gaussians (a GaussianSplats) when
    ``representation="gaussians"``. mesh: the extracted textured mesh (world space, Z up).
    metrics: what metrics.json holds. out_dir: the result folder. files: role -> path.
    """

    field: NerfField
    mesh: TriangleMesh
    metrics: dict[str, Any]
    out_dir: Path
    files: dict[str, Path]
    elapsed: float
    history: list[dict[str, Any]] = dataclasses.field(default_factory=list)


@dataclass
class _State:
    field: NerfField
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    occupancy: OccupancyGrid
    step: int = 0
    elapsed: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------- inputs


def resolve_config(config: Text3DConfig | None, prompt: str | None, overrides: dict) -> Text3DConfig:
    """``config`` (default Text3DConfig()) with ``overrides`` and the prompt applied and checked."""
    return resolve_guided_config(config, Text3DConfig, prompt, overrides, "text-to-3D", check_prompt)


def make_guidance(guidance, config: Text3DConfig, device: torch.device):
    """(guidance model, conditioner, description) for ``guidance``: None (load ``config.model``),
    a loaded Stable Diffusion guidance model, or a :class:`Text3DOracle`."""
    return shared_make_guidance(
        guidance, config, device, oracle_type=Text3DOracle,
        oracle_conditioner=lambda oracle: OracleConditioner(oracle, config.guidance_scale),
        prompt_conditioner=lambda model: PromptConditioner(model, config.prompt, config.negative_prompt,
                                                           config.view_dependent_prompts))


def sds_settings(config: Text3DConfig) -> SDSConfig:
    return SDSConfig(guidance_scale=config.guidance_scale, t_min=config.t_min, t_max=config.t_max,
                     anneal=config.anneal, anneal_t_max=config.anneal_t_max, weighting=config.weighting,
                     grad_clip=config.grad_clip, space=config.sds_space, mode=config.sds_mode, resize_to_native=True)


def camera_sampling(config: Text3DConfig) -> CameraSamplingConfig:
    return CameraSamplingConfig(
        distance_range=config.distance_range, elevation_range_deg=config.elevation_range_deg,
        azimuth_range_deg=config.azimuth_range_deg, fov_range_deg=config.fov_range_deg, width=config.resolution,
        height=config.resolution, batch_size=config.batch_size, elevation_sampling=config.elevation_sampling,
        underside_fraction=config.underside_fraction)


def field_config(config: Text3DConfig) -> FieldConfig:
    return FieldConfig(bound=config.bound, encoding=config.encoding, hidden_dim=config.hidden_dim,
                       hidden_layers=config.hidden_layers, blob_density=config.blob_density,
                       blob_radius=config.blob_radius, background=config.background,
                       background_color=config.background_color)


def training_render_config(config: Text3DConfig) -> RenderConfig:
    return RenderConfig(num_samples=config.num_samples, perturb=True, normal_difference=config.normal_difference,
                        ambient=config.ambient)


def evaluation_render_config(config: Text3DConfig) -> RenderConfig:
    """Bin-centre samples (no jitter): previews, turntables and held-out views are deterministic."""
    return dataclasses.replace(training_render_config(config), perturb=False)


def shading_schedule(config: Text3DConfig) -> ShadingSchedule:
    return ShadingSchedule(latent_iter_ratio=config.latent_iter_ratio, albedo_probability=config.albedo_probability,
                           textureless_probability=config.textureless_probability)


def ring_cameras(config: Text3DConfig, azimuths_deg: Tensor, elevations_deg: Tensor, resolution: int) -> Cameras:
    """Cameras at the middle of the training distance and field-of-view ranges, looking at the box centre."""
    count = len(azimuths_deg)
    distance = sum(config.distance_range) / 2
    fov = sum(config.fov_range_deg) / 2
    return cameras_from_spherical(azimuths_deg, elevations_deg, torch.full((count,), distance),
                                  torch.full((count,), fov), resolution, resolution)


# ----------------------------------------------------------------------------------- checkpoints


def checkpoint_path(checkpoint_dir: str | Path) -> Path:
    return Path(checkpoint_dir) / CHECKPOINT_FILE


def _make_optimizer(config: Text3DConfig, nerf: NerfField) -> torch.optim.Optimizer:
    """Adam with two groups: the grid encoding at ``learning_rate``, the MLPs and background at
    ``network_learning_rate`` (grid features need larger steps than MLP weights)."""
    grid = list(nerf.encoding.parameters())
    grid_ids = {id(p) for p in grid}
    networks = [p for p in nerf.parameters() if id(p) not in grid_ids]
    groups = [{"params": grid, "lr": config.learning_rate}]
    if networks:
        groups.append({"params": networks, "lr": config.network_learning_rate})
    return torch.optim.Adam(groups, betas=ADAM_BETAS, eps=ADAM_EPS)


def _fresh_state(config: Text3DConfig, device: torch.device) -> _State:
    # The field's initial weights come from the global generator: seed it (inside the caller's fork_rng).
    torch.manual_seed(config.seed)
    nerf = NerfField(field_config(config)).to(device)
    occupancy = OccupancyGrid(nerf.aabb, resolution=config.occupancy_resolution)
    return _State(nerf, _make_optimizer(config, nerf), torch.Generator().manual_seed(config.seed), occupancy)


def save_checkpoint(path: Path, state: _State, config: Text3DConfig) -> None:
    """Everything the next steps depend on: the field, Adam's moments, the generator, the occupancy grid, the step."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "step": state.step,
        "config": dataclasses.asdict(config),
        "field": {name: t.detach().cpu().clone() for name, t in state.field.state_dict().items()},
        "optimizer": state.optimizer.state_dict(),
        "generator": state.generator.get_state(),
        "occupancy": state.occupancy.state_dict(),
        "elapsed": state.elapsed,
        "history": state.history,
    }
    write_checkpoint(path, payload, total=config.steps)


def _load_state(payload: dict, config: Text3DConfig, device: torch.device) -> _State:
    state = _fresh_state(config, device)
    state.field.load_state_dict(payload["field"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.generator.set_state(payload["generator"])
    state.occupancy.load_state_dict(payload["occupancy"])
    state.step = int(payload["step"])
    state.elapsed = float(payload["elapsed"])
    state.history = list(payload.get("history", []))
    return state


# ------------------------------------------------------------------------------ the optimisation


def regularisers(config: Text3DConfig, out) -> dict[str, Tensor]:
    """The weighted regularisation terms of one render (only those with a positive weight)."""
    terms = {}
    if config.entropy_weight > 0:
        alpha = out.opacity.clamp(ENTROPY_CLAMP, 1.0 - ENTROPY_CLAMP)
        entropy = -(alpha * torch.log2(alpha) + (1.0 - alpha) * torch.log2(1.0 - alpha))
        terms["entropy"] = config.entropy_weight * entropy.mean()
    if config.orientation_weight > 0 and out.orientation_penalty is not None:
        terms["orientation"] = config.orientation_weight * out.orientation_penalty.mean()
    if config.sparsity_weight > 0:
        terms["sparsity"] = config.sparsity_weight * out.opacity.mean()
    return terms


@torch.no_grad()
def render_views(nerf: NerfField, cameras: Cameras, config: Text3DConfig, occupancy: OccupancyGrid | None,
                 shading: str = "albedo", device: torch.device | None = None):
    """Deterministic renders (one camera at a time, bounded memory) over ``background_color``.

    Lit shadings use a headlight (a point light at each camera). Returns (rgb (C, H, W, 3),
    opacity (C, H, W), depth (C, H, W) camera-space depth of the surface, 0 where empty), on the CPU.
    """
    device = device or nerf.aabb.device
    render_config = evaluation_render_config(config)
    background = torch.tensor(config.background_color, device=device)
    images, opacities, depths = [], [], []
    for index in range(len(cameras)):
        camera = cameras[index].to(device)
        lights = camera.centers if shading in LIT_SHADINGS else None
        out = render(nerf, camera, render_config, shading=shading, light_positions=lights, background=background,
                     occupancy=occupancy)
        images.append(out.image.clamp(0.0, 1.0).cpu())
        opacities.append(out.opacity.cpu())
        depths.append((out.depth / out.opacity.clamp(min=1e-6)).where(out.opacity > 1e-3, 0.0).cpu())
    return torch.cat(images), torch.cat(opacities), torch.cat(depths)


def _preview_image(state: _State, config: Text3DConfig, device: torch.device) -> Tensor:
    """(H, 2W, 3): the field from the front, albedo | textureless under a headlight."""
    camera = ring_cameras(config, torch.tensor([PREVIEW_AZIMUTH_DEG]), torch.tensor([PREVIEW_ELEVATION_DEG]),
                          config.resolution)
    albedo, _, _ = render_views(state.field, camera, config, state.occupancy, "albedo", device)
    shaded, _, _ = render_views(state.field, camera, config, state.occupancy, "textureless", device)
    return torch.cat([albedo[0], shaded[0]], dim=1)


@dataclass
class StepPlan:
    """What every optimisation step of a run shares (built once by :func:`step_plan`)."""

    sampling: CameraSamplingConfig
    schedule: ShadingSchedule
    render_config: RenderConfig
    guidance_settings: SDSConfig


def step_plan(config: Text3DConfig) -> StepPlan:
    return StepPlan(camera_sampling(config), shading_schedule(config), training_render_config(config),
                    sds_settings(config))


@dataclass
class StepResult:
    """One optimisation step: the total loss, the SDS output, the regularisers, the render and its conditioning."""

    loss: float
    sds: Any  # radiantforge.guidance.SDSOutput
    terms: dict[str, Tensor]
    shading: str
    render: Any  # radiantforge.nerf.NerfRender
    conditioning: Any  # .conditioning.Conditioning


def _phase(timer, name: str):
    """``timer.phase(name)`` (a context manager that times one part of a step, see scripts/bench_text3d.py) or nothing."""
    return timer.phase(name) if timer is not None else contextlib.nullcontext()


def optimisation_step(config: Text3DConfig, state: _State, model, conditioner, device: torch.device, plan: StepPlan,
                      timer=None) -> StepResult:
    """Step ``state.step`` of the run: occupancy refresh, cameras, shading, render, SDS, regularisers, Adam.

    timer: optional object whose ``phase(name)`` context manager times the parts ("occupancy",
    "render", "guidance", "backward", "optimizer"); the run itself passes none.
    """
    step, generator, nerf = state.step, state.generator, state.field
    if step % config.occupancy_update_every == 0:
        with _phase(timer, "occupancy"):
            state.occupancy.update(nerf.density, generator=generator)
    with _phase(timer, "render"):
        views = sample_cameras(plan.sampling, generator=generator)
        cameras = views.cameras.to(device)
        shading = plan.schedule.pick(step, config.steps, generator)
        lights = None
        if shading in LIT_SHADINGS:
            lights = sample_point_lights(views.cameras, generator, config.light_jitter).to(device)
        needs_normals = shading != "albedo" or config.orientation_weight > 0
        out = render(nerf, cameras, plan.render_config, shading=shading, light_positions=lights,
                     occupancy=state.occupancy, compute_normals=needs_normals, generator=generator)
    with _phase(timer, "guidance"):
        conditioning = conditioner(StepViews(views, cameras, shading, lights, out.background, config.ambient))
        output = sds_loss(model, out.image, conditioning.cond, conditioning.uncond, plan.guidance_settings,
                          step=step, total_steps=config.steps, generator=generator)
        terms = regularisers(config, out)
        loss = output.loss + sum(terms.values()) if terms else output.loss
    with _phase(timer, "backward"):
        state.optimizer.zero_grad(set_to_none=True)
        loss.backward()
    with _phase(timer, "optimizer"):
        state.optimizer.step()
    state.step = step + 1
    return StepResult(float(loss.detach()), output, terms, shading, out, conditioning)


def _optimise(config: Text3DConfig, state: _State, model, conditioner, device: torch.device, checkpoint_dir: Path,
              preview_dir: Path, events: EventLog, should_stop) -> None:
    plan = step_plan(config)

    def progress_fields(done: int, outcome: StepResult, clock) -> dict[str, Any]:
        out, output = outcome.render, outcome.sds
        entry = {"step": done, "loss": outcome.loss, "sds_loss": float(output.loss.detach()),
                 "grad_norm": output.grad_norm, "timestep": float(output.timesteps.float().mean()),
                 "shading": outcome.shading, "opacity": float(out.opacity.detach().mean()),
                 "occupied_fraction": state.occupancy.occupied_fraction, "elapsed": round(state.elapsed, 3)}
        entry.update({name: float(term.detach()) for name, term in outcome.terms.items()})
        target = outcome.conditioning.target
        if target is not None:  # the oracle knows the answer: report how close the views are
            entry["psnr"] = float(psnr(out.image.detach().clamp(0, 1), target).mean())
        state.history.append(entry)
        return entry

    run_plan = RunPlan(
        label="text-to-3D", total=config.steps, checkpoint_path=checkpoint_path(checkpoint_dir),
        save_checkpoint=lambda path: save_checkpoint(path, state, config),
        checkpoint_every=config.checkpoint_every, progress_every=config.resolved_progress_every,
        preview_every=config.resolved_preview_every, preview_dir=preview_dir, events=events, should_stop=should_stop,
    )
    run_steps(run_plan, state, lambda: optimisation_step(config, state, model, conditioner, device, plan),
              loss_of=lambda outcome: outcome.loss, progress_fields=progress_fields,
              preview_image=lambda done: _preview_image(state, config, device))


# ------------------------------------------------------------------------------------ the result


def extract_mesh(nerf: NerfField, config: Text3DConfig, occupancy: OccupancyGrid, events: EventLog) -> tuple[TriangleMesh, float]:
    """(textured mesh, iso-level used): marching cubes at ``density_threshold``, or, when the field
    never gets that dense, at FALLBACK_SURFACE_FRACTION of its largest density (with a warning)."""
    settings = MeshExtractionConfig(grid_resolution=config.mesh_resolution, density_threshold=config.density_threshold,
                                    min_component_ratio=config.min_component_ratio,
                                    target_faces=config.target_faces or None, texture_size=config.texture_size)
    try:
        return extract_textured_mesh(nerf, settings), config.density_threshold
    except InputError as error:
        if error.field != "density_threshold":
            raise
    peak = float(occupancy.density_ema.max()) if occupancy.num_updates else 0.0
    if not peak > 0:
        raise RadiantForgeError("the generated field is empty (no density anywhere): nothing to turn into a mesh; "
                                "run more steps or lower entropy_weight / sparsity_weight")
    level = FALLBACK_SURFACE_FRACTION * peak
    events.emit("warning", message=f"the field never reaches density_threshold={config.density_threshold:g}; "
                                   f"the mesh is taken at density {level:.3g} instead (half the field's largest)")
    try:
        return extract_textured_mesh(nerf, dataclasses.replace(settings, density_threshold=level)), level
    except InputError as error:
        raise RadiantForgeError(f"no surface could be extracted from the generated field: {error.problem}") from None


def turntable_frames(state: _State, config: Text3DConfig, device: torch.device) -> tuple[list[Tensor], list]:
    """(RGB frames (H, W, 3), depth frames (H, W, 3) uint8) of the field on a ring around it."""
    azimuths = torch.arange(config.turntable_frames, dtype=torch.float32) * (360.0 / config.turntable_frames)
    cameras = ring_cameras(config, azimuths, torch.full_like(azimuths, config.turntable_elevation_deg),
                           config.turntable_resolution)
    rgb, opacity, depth = render_views(state.field, cameras, config, state.occupancy, config.turntable_shading, device)
    depth_frames = [media.depth_to_rgb(d[..., None], a[..., None]) for d, a in zip(depth, opacity)]
    return list(rgb), depth_frames


def held_out_metrics(state: _State, config: Text3DConfig, target, device: torch.device) -> dict[str, Any]:
    """PSNR (albedo) and silhouette IoU of the field against a known target on a ring of held-out views.

    The views are rendered at ``turntable_resolution``: silhouettes at a training size of 32-64 px
    are dominated by half-covered edge pixels, which says more about the pixel grid than the shape.
    """
    def render_ring(cameras: Cameras) -> tuple[Tensor, Tensor]:
        rgb, opacity, _ = render_views(state.field, cameras, config, state.occupancy, "albedo", device)
        return rgb, opacity

    return ring_metrics(render_ring, config, target)


def ring_metrics(render_ring: Callable[[Cameras], tuple[Tensor, Tensor]], config: Text3DConfig,
                 target) -> dict[str, Any]:
    """:func:`held_out_metrics` for any representation: ``render_ring(cameras)`` -> (rgb (C, H, W, 3)
    over ``background_color``, opacity (C, H, W)) on the CPU."""
    azimuths = torch.arange(HELD_OUT_AZIMUTHS, dtype=torch.float32) * (360.0 / HELD_OUT_AZIMUTHS) + 180.0 / HELD_OUT_AZIMUTHS
    elevations = torch.tensor(HELD_OUT_ELEVATIONS_DEG).repeat(HELD_OUT_AZIMUTHS // len(HELD_OUT_ELEVATIONS_DEG) + 1)
    cameras = ring_cameras(config, azimuths, elevations[:HELD_OUT_AZIMUTHS], config.turntable_resolution)
    rgb, opacity = render_ring(cameras)
    metrics: dict[str, Any] = {}
    background = torch.tensor(config.background_color)
    with torch.no_grad():
        if isinstance(target, MeshTarget):
            truth, alpha = target.render(cameras, "albedo", None, background, config.ambient)
            metrics["held_out_silhouette_iou"] = silhouette_iou(opacity, alpha.cpu())
        else:
            truth = target(cameras, "albedo", None, background, config.ambient)
    metrics["held_out_psnr"] = float(psnr(rgb, truth.cpu().clamp(0, 1)).mean())
    metrics["held_out_views"] = len(cameras)
    return metrics


def _write_result(config: Text3DConfig, state: _State, out_dir: Path, device: torch.device, guidance_name: str,
                  oracle: Text3DOracle | None, events: EventLog, overwrite: bool) -> Text3DResult:
    events.emit("info", message="extracting the mesh (marching cubes, cleanup, UVs, texture)")
    extract_started = time.perf_counter()
    mesh, level = extract_mesh(state.field, config, state.occupancy, events)
    extract_seconds = time.perf_counter() - extract_started
    events.emit("info", message="rendering the turntables")
    frames, depth_frames = turntable_frames(state, config, device)
    metrics = {
        "steps": state.step, "train_seconds": round(state.elapsed, 3),
        "seconds_per_step": round(state.elapsed / max(state.step, 1), 4),
        "mesh_seconds": round(extract_seconds, 3), "n_faces": mesh.num_faces, "n_vertices": len(mesh.vertices),
        "density_threshold": level, "occupied_fraction": state.occupancy.occupied_fraction,
        "resolution": config.resolution, "guidance": guidance_name, "sds_space": config.sds_space,
        "sds_mode": config.sds_mode, "device": str(device), "prompt": config.prompt, "history": state.history,
    }
    if oracle is not None:
        metrics.update(held_out_metrics(state, config, oracle.target, device))
    roles = write_result_folder(config, out_dir, mesh, frames, depth_frames, metrics, oracle, overwrite)
    return Text3DResult(state.field.cpu(), mesh.to("cpu"), metrics, out_dir, roles, state.elapsed, state.history)


def write_result_folder(config: Text3DConfig, out_dir: Path, mesh: TriangleMesh, frames: list, depth_frames: list,
                        metrics: dict[str, Any], oracle: Text3DOracle | None, overwrite: bool) -> dict[str, Path]:
    """The result folder of either representation (mesh files, turntables, preview, metrics.json with the
    mesh's chamfer distance when the oracle knows the object, result.json); returns role -> path."""
    if oracle is not None and isinstance(oracle.target, MeshTarget):
        distances = mesh_chamfer(mesh, oracle.target.mesh, CHAMFER_SAMPLES, config.seed)
        metrics.update({f"mesh_{name}": value for name, value in distances.items()})
    with partial_result(out_dir, replace_finished=overwrite) as partial:
        mesh_files = export_textured_mesh(mesh, partial, MESH_NAME)
        turntable = media.write_turntable(partial, frames, name=TURNTABLE_NAME)
        depth_turntable = media.write_turntable(partial, depth_frames, name=DEPTH_TURNTABLE_NAME)
        media.write_png(partial / PREVIEW_FILE, media.side_by_side(frames[0], depth_frames[0]))
        files = [
            {"path": mesh_files["glb"].name, "role": "mesh", "description": "the generated object, textured (binary glTF)"},
            {"path": mesh_files["obj"].name, "role": "mesh_obj", "description": "the same mesh (Wavefront OBJ)"},
            {"path": mesh_files["mtl"].name, "role": "material", "description": "the OBJ's material"},
            {"path": mesh_files["texture"].name, "role": "texture", "description": "the baked albedo texture (OBJ / Blender UVs)"},
            {"path": PREVIEW_FILE, "role": "preview", "description": f"the {config.representation} from the front: colour | depth"},
        ]
        for kind, path in turntable.items():
            files.append({"path": Path(path).name, "role": "turntable", "description": f"RGB turntable ({kind})"})
        for kind, path in depth_turntable.items():
            files.append({"path": Path(path).name, "role": "depth", "description": f"depth turntable ({kind})"})
        write_json(partial / METRICS_FILE, metrics)
        files.append({"path": METRICS_FILE, "role": "metrics", "description": "run statistics"})
        files.append({"path": RESULT_FILE, "role": "result", "description": "this index of the result files"})
        summary_keys = ("steps", "train_seconds", "n_faces", "guidance", "held_out_psnr", "held_out_silhouette_iou",
                        "mesh_chamfer", "representation", "n_gaussians")
        result = {
            "kind": RESULT_KIND,
            "files": files,
            "metrics": {key: metrics[key] for key in summary_keys if key in metrics},
            "prompt": config.prompt,
            "config": dataclasses.asdict(config),
        }
        write_json(partial / RESULT_FILE, result)
    roles = {"mesh": out_dir / mesh_files["glb"].name, "mesh_obj": out_dir / mesh_files["obj"].name,
             "material": out_dir / mesh_files["mtl"].name, "texture": out_dir / mesh_files["texture"].name,
             "preview": out_dir / PREVIEW_FILE, "metrics": out_dir / METRICS_FILE, "result": out_dir / RESULT_FILE}
    roles.update({f"turntable_{kind}": out_dir / Path(path).name for kind, path in turntable.items()})
    roles.update({f"depth_{kind}": out_dir / Path(path).name for kind, path in depth_turntable.items()})
    return roles


def _generate_with_gaussians(config: Text3DConfig, out_dir: Path, checkpoint_dir: Path, payload: dict | None,
                             model, conditioner, guidance_name: str, device: torch.device, preview_dir: Path,
                             events: EventLog, should_stop, overwrite: bool) -> Text3DResult:
    """The ``representation="gaussians"`` run (:mod:`.gaussian_path`), into the same result folder."""
    from . import gaussian_path

    rasterizer = gaussian_path.prepare(config, device, events)
    if payload is not None:
        state = gaussian_path.load_state(payload, config, device)
        events.emit("info", message=f"resuming from step {state.step} of {config.steps}", step=state.step)
    else:
        state = gaussian_path.fresh_state(config, device)
    gaussian_path.optimise(config, state, model, conditioner, device, checkpoint_path(checkpoint_dir), preview_dir,
                           events, should_stop, rasterizer)
    events.emit("info", message="extracting the mesh (opacity lattice, marching cubes, UVs, back-projected texture)")
    splats = state.splats()
    extract_started = time.perf_counter()
    mesh, level = gaussian_path.extract_gaussian_mesh(splats, config, rasterizer)
    extract_seconds = time.perf_counter() - extract_started
    events.emit("info", message="rendering the turntables")
    azimuths = torch.arange(config.turntable_frames, dtype=torch.float32) * (360.0 / config.turntable_frames)
    cameras = ring_cameras(config, azimuths, torch.full_like(azimuths, config.turntable_elevation_deg),
                           config.turntable_resolution)
    seen = gaussian_path.as_seen_in_training(state.params, config, config.turntable_resolution)
    rgb, opacity, depth = gaussian_path.render_splat_views(seen, cameras, config.background_color,
                                                           rasterizer, device)
    depth_frames = [media.depth_to_rgb(d[..., None], a[..., None]) for d, a in zip(depth, opacity)]
    metrics = {
        "representation": "gaussians", "steps": state.step, "train_seconds": round(state.elapsed, 3),
        "seconds_per_step": round(state.elapsed / max(state.step, 1), 4), "mesh_seconds": round(extract_seconds, 3),
        "n_faces": mesh.num_faces, "n_vertices": len(mesh.vertices), "n_gaussians": state.count,
        "surface_level": level, "resolution": config.resolution, "guidance": guidance_name,
        "sds_space": config.sds_space, "sds_mode": config.sds_mode, "device": str(device),
        "rasterizer": rasterizer.name, "prompt": config.prompt, "history": state.history,
    }
    oracle = conditioner.oracle if isinstance(conditioner, OracleConditioner) else None
    if oracle is not None:
        def render_ring(ring: Cameras) -> tuple[Tensor, Tensor]:
            ring_rgb, ring_opacity, _ = gaussian_path.render_splat_views(seen, ring, config.background_color,
                                                                         rasterizer, device)
            return ring_rgb, ring_opacity

        metrics.update(ring_metrics(render_ring, config, oracle.target))
    roles = write_result_folder(config, out_dir, mesh, list(rgb), depth_frames, metrics, oracle, overwrite)
    return Text3DResult(splats, mesh.to("cpu"), metrics, out_dir, roles, state.elapsed, state.history)


# --------------------------------------------------------------------------------------- the API


def generate_3d(
    prompt: str | None,
    out_dir: str | Path,
    *,
    config: Text3DConfig | None = None,
    guidance=None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    events: EventLog | None = None,
    should_stop: Callable[[], bool | str | None] | None = None,
    overwrite: bool = False,
    **overrides,
) -> Text3DResult:
    """Generate a 3D object from ``prompt`` (see the module docstring); results go to ``out_dir``.

    config / overrides: a :class:`Text3DConfig`, with fields replaced by ``overrides`` (e.g.
        ``steps=2000, resolution=96``); ``prompt`` replaces ``config.prompt`` unless None.
    guidance: None loads ``config.model`` (Stable Diffusion; never downloaded); or a loaded guidance
        model (:func:`radiantforge.guidance.load_stable_diffusion`, loaded once for many prompts);
        or a :class:`Text3DOracle` (known-answer tests).
    checkpoint_dir: default ``<out_dir>.checkpoints`` beside ``out_dir``; resume: continue from it.
    events: progress, preview, warning, info and cancelled events (the caller emits started/finished).
    should_stop: polled every step; True (or "cancelled" / "suspended") writes a checkpoint, emits
        "cancelled" (or "suspended"), raises JobCancelled.
    overwrite: replace a finished result in ``out_dir`` (otherwise that is an error).
    """
    prompt = oracle_prompt_when_none(prompt, overrides, config, guidance, Text3DOracle, ORACLE_PROMPT)
    config = resolve_config(config, prompt, overrides)
    events = events if events is not None else EventLog(None)
    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir(out_dir)
    device = resolve_device(config.device)
    gaussians = config.representation == "gaussians"
    payload = read_checkpoint(checkpoint_path(checkpoint_dir), kind="text-to-3D (Gaussians)" if gaussians else "text-to-3D",
                              version=GAUSSIAN_CHECKPOINT_FORMAT if gaussians else CHECKPOINT_FORMAT) if resume else None
    if payload is not None:
        check_same_config(payload["config"], config, RESUMABLE_FIELDS, checkpoint_path(checkpoint_dir))
    model, conditioner, guidance_name = make_guidance(guidance, config, device)
    # A finished result being replaced keeps its preview until the new result is complete.
    preview_dir = checkpoint_dir if (out_dir / RESULT_FILE).is_file() else out_dir
    events.emit("info", message=f"generating {config.prompt!r} ({config.representation}) with {guidance_name} on {device}: "
                                f"{config.steps} steps at "
                                f"{config.resolution}x{config.resolution}", device=str(device), guidance=guidance_name)

    devices = [device] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):  # the caller's global RNG is left as it was
        if config.representation == "gaussians":
            return _generate_with_gaussians(config, out_dir, checkpoint_dir, payload, model, conditioner, guidance_name,
                                            device, preview_dir, events, should_stop, overwrite)
        if payload is not None:
            state = _load_state(payload, config, device)
            events.emit("info", message=f"resuming from step {state.step} of {config.steps}", step=state.step)
        else:
            state = _fresh_state(config, device)
        _optimise(config, state, model, conditioner, device, checkpoint_dir, preview_dir, events, should_stop)
        oracle = conditioner.oracle if isinstance(conditioner, OracleConditioner) else None
        return _write_result(config, state, out_dir, device, guidance_name, oracle, events, overwrite)


# ------------------------------------------------------------------------------------- job checks


def check_text3d_job(config: Text3DConfig, model_roots=None) -> None:
    """What a text3d job can check before work starts: the prompt is not empty and the model is on
    this machine (a folder inside ``model_roots`` when given, or in the Hugging Face cache).
    Raises InputError naming the field."""
    from ..guidance import resolve_model_folder

    check_prompt(config.prompt)
    resolve_model_folder(config.model, allowed_roots=model_roots)

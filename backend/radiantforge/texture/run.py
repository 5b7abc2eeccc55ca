"""Text-to-texture, end to end: ``texture_mesh(mesh, out_dir, prompt=...)``.

1. Read and check the mesh (:func:`.meshes.prepare_mesh`: faces, size limit, UVs or an xatlas
   atlas, warnings for non-manifold edges) and the guidance model (Stable Diffusion from a folder
   or the Hugging Face cache, never downloaded; or a :class:`.TextureOracle` in tests).
2. Optimise a UV image (or a coordinate MLP) with Adam. Each step draws ``batch_size`` cameras
   around the mesh's bounding sphere (and, with Lambertian shading, a light per view), renders
   the views with the visibility-buffer renderer, and applies SDS / CSD (latent or pixel path)
   with view-dependent prompts.
3. Checkpoint every ``checkpoint_every`` steps and when ``should_stop()`` turns true (then raise
   :class:`~radiantforge.errors.JobCancelled`); ``resume=True`` continues bit for bit on the CPU
   (every random draw comes from one generator whose state is in the checkpoint; CUDA's
   atomic-add backward passes are not bit-reproducible).
4. Write the result folder, into a temporary folder renamed into place when complete:
   texture.png, textured_mesh.obj/.mtl, textured_mesh.glb, turntable.gif/.mp4 + frames,
   preview.png, metrics.json, result.json.

While it runs, ``out_dir/preview.png`` is refreshed every ``preview_every`` steps (announced by
a "preview" event) so the add-on and the service can show it; nothing else is written there
until the result is complete.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from .. import media
from ..checkpoints import check_same_config, read_checkpoint, write_checkpoint
from ..devices import resolve_device
from ..errors import InputError
from ..events import EventLog
from ..guidance import (CameraSamplingConfig, GuidanceModel, SDSConfig, cameras_from_spherical, sample_cameras, sds_loss,
                        spherical_to_direction)
from ..guidance.guided_jobs import make_guidance as shared_make_guidance
from ..guidance.guided_jobs import oracle_prompt_when_none, resolve_guided_config
from ..mesh import DirectionalLight, TriangleMesh, rasterize_mesh, render_textured_mesh
from ..metrics import psnr
from ..result_folders import PREVIEW_FILE, RESULT_FILE, check_out_dir, partial_result, write_json
from ..runs import RunPlan, default_checkpoint_dir, run_steps
from .conditioning import OracleConditioner, PromptConditioner, TextureOracle
from .config import RESUMABLE_FIELDS, TextureConfig, check_prompt
from .fields import CoordinateMLPTexture, UVImageTexture, bake_to_uv_image, fill_uncovered_texels, render_texture_field
from .meshes import PreparedMesh, check_reference_fits_uvs, prepare_mesh, write_textured_glb, write_textured_obj

RESULT_KIND = "texture"
CHECKPOINT_FILE = "texture_checkpoint.pt"
CHECKPOINT_FORMAT = 1
# The prompt a job records when an oracle is its guidance and the caller gave none.
ORACLE_PROMPT = "(oracle reference texture)"
TEXTURE_FILE = "texture.png"
OBJ_FILE = "textured_mesh.obj"
MTL_FILE = "textured_mesh.mtl"
GLB_FILE = "textured_mesh.glb"
METRICS_FILE = "metrics.json"
TURNTABLE_NAME = "turntable"
# Adam's moment decay: the usual second-moment decay of 0.999 reacts too slowly to SDS's
# gradients, whose size swings with the random timestep; 0.99 is what SDS texturing code uses.
ADAM_BETAS = (0.9, 0.99)
ADAM_EPS = 1e-15  # texel gradients are tiny (one pixel's share of a noisy update); do not drown them
# The preview camera: the mesh's front, a little from above, as the turntable's first frame.
PREVIEW_AZIMUTH_DEG = 0.0
TURNTABLE_BATCH = 4  # turntable frames rendered at once (bounds memory at large sizes)
FINAL_WINDOW = 0.1  # the last tenth of the steps: their mean gradient norm is reported


@dataclass
class TextureResult:
    """A finished texture run.

    texture: (S, S, 3) float32 in [0, 1], the UV image written to texture.png (gutters filled).
    mesh: the mesh with the UVs the texture belongs to (its own, or the generated atlas).
    metrics: what metrics.json holds. out_dir: the result folder. files: role -> path.
    """

    texture: Tensor
    mesh: TriangleMesh
    metrics: dict[str, Any]
    out_dir: Path
    files: dict[str, Path]
    elapsed: float
    history: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class _State:
    field: torch.nn.Module
    optimizer: torch.optim.Optimizer
    generator: torch.Generator
    touched: Tensor | None  # (S, S) bool: texels that ever got a gradient (UV image only)
    step: int = 0
    elapsed: float = 0.0
    history: list[dict[str, Any]] = field(default_factory=list)


# ----------------------------------------------------------------------------------------- inputs


def resolve_config(config: TextureConfig | None, prompt: str | None, overrides: dict) -> TextureConfig:
    """``config`` (default TextureConfig()) with ``overrides`` and the prompt applied and checked."""
    return resolve_guided_config(config, TextureConfig, prompt, overrides, "texture", check_prompt)


def make_guidance(guidance, config: TextureConfig, device: torch.device):
    """(guidance model, conditioner, description) for ``guidance``: None (load ``config.model``),
    a loaded Stable Diffusion guidance model, or a :class:`TextureOracle`."""
    return shared_make_guidance(
        guidance, config, device, oracle_type=TextureOracle,
        oracle_conditioner=lambda oracle: OracleConditioner(oracle, config.guidance_scale, device),
        prompt_conditioner=lambda model: PromptConditioner(model, config.prompt, config.negative_prompt,
                                                           config.view_dependent_prompts))


def sds_config(config: TextureConfig) -> SDSConfig:
    return SDSConfig(guidance_scale=config.guidance_scale, t_min=config.t_min, t_max=config.t_max,
                     anneal=config.anneal, anneal_t_max=config.anneal_t_max, weighting=config.weighting,
                     grad_clip=config.grad_clip, space=config.sds_space, mode=config.sds_mode)


def camera_sampling(config: TextureConfig, prepared: PreparedMesh) -> CameraSamplingConfig:
    """Random-camera ranges in world units: distances scale with the mesh's bounding sphere."""
    low, high = config.distance_range
    return CameraSamplingConfig(
        distance_range=(low * prepared.radius, high * prepared.radius), elevation_range_deg=config.elevation_range_deg,
        azimuth_range_deg=config.azimuth_range_deg, fov_range_deg=config.fov_range_deg, width=config.resolution,
        height=config.resolution, target=tuple(prepared.centre.tolist()), batch_size=config.batch_size,
        elevation_sampling=config.elevation_sampling)


def orbit(config: TextureConfig, prepared: PreparedMesh, azimuths_deg: Tensor, resolution: int):
    """Cameras on a ring around the mesh at the turntable elevation, the middle distance and field of view."""
    count = len(azimuths_deg)
    distance = sum(config.distance_range) / 2 * prepared.radius
    fov = sum(config.fov_range_deg) / 2
    return cameras_from_spherical(azimuths_deg, torch.full((count,), config.turntable_elevation_deg),
                                  torch.full((count,), distance), torch.full((count,), fov), resolution, resolution,
                                  tuple(prepared.centre.tolist()))


def random_light(config: TextureConfig, views, generator: torch.Generator) -> DirectionalLight | None:
    """Per view, a light within ``light_spread_deg`` of the camera's direction (from the same side)."""
    if config.shading != "lambertian":
        return None
    count = len(views)
    spread = config.light_spread_deg
    azimuth = views.azimuth_deg + (torch.rand(count, generator=generator) * 2 - 1) * spread
    elevation = (views.elevation_deg + (torch.rand(count, generator=generator) * 2 - 1) * spread).clamp(-89.0, 89.0)
    return DirectionalLight(spherical_to_direction(azimuth, elevation), ambient=config.ambient,
                            diffuse=1.0 - config.ambient)


# ----------------------------------------------------------------------------------- checkpoints


def checkpoint_path(checkpoint_dir: str | Path) -> Path:
    return Path(checkpoint_dir) / CHECKPOINT_FILE


def _make_field(config: TextureConfig, prepared: PreparedMesh, device: torch.device) -> torch.nn.Module:
    if config.texture_type == "image":
        return UVImageTexture(config.texture_size).to(device)
    generator = torch.Generator().manual_seed(config.seed)
    return CoordinateMLPTexture(prepared.centre, prepared.radius, config.mlp_width, config.mlp_depth,
                                config.mlp_frequencies, generator=generator).to(device)


def _make_optimizer(config: TextureConfig, texture_field: torch.nn.Module) -> torch.optim.Optimizer:
    return torch.optim.Adam(texture_field.parameters(), lr=config.resolved_learning_rate, betas=ADAM_BETAS,
                            eps=ADAM_EPS)


def _fresh_state(config: TextureConfig, prepared: PreparedMesh, device: torch.device) -> _State:
    texture_field = _make_field(config, prepared, device)
    touched = torch.zeros(config.texture_size, config.texture_size, dtype=torch.bool, device=device) \
        if config.texture_type == "image" else None
    return _State(texture_field, _make_optimizer(config, texture_field), torch.Generator().manual_seed(config.seed),
                  touched)


def save_checkpoint(path: Path, state: _State, config: TextureConfig, prepared: PreparedMesh) -> None:
    """Everything the next steps depend on: the field, Adam's moments, the generator, the step."""
    payload = {
        "format": CHECKPOINT_FORMAT,
        "step": state.step,
        "config": dataclasses.asdict(config),
        "field": {name: t.detach().cpu().clone() for name, t in state.field.state_dict().items()},
        "optimizer": state.optimizer.state_dict(),
        "generator": state.generator.get_state(),
        "touched": None if state.touched is None else state.touched.cpu(),
        "elapsed": state.elapsed,
        "history": state.history,
        "mesh_fingerprint": prepared.fingerprint,
        "uv_source": prepared.uv_source,
        # A generated atlas is kept: the texture only fits these UVs (and xatlas may change between versions).
        "atlas": None if prepared.uv_source != "xatlas" else {
            name: getattr(prepared.mesh, name).cpu() for name in ("vertices", "faces", "vertex_normals", "uvs",
                                                                   "face_uvs")},
    }
    write_checkpoint(path, payload, total=config.steps)


def restore_atlas(payload: dict, prepared: PreparedMesh) -> PreparedMesh:
    """Put back the xatlas UVs a checkpoint was made with (the texture belongs to them)."""
    atlas = payload.get("atlas")
    if atlas is None or prepared.uv_source != "xatlas":
        return prepared
    mesh = dataclasses.replace(prepared.mesh, **atlas, texture=None)
    return dataclasses.replace(prepared, mesh=mesh)


def _load_state(payload: dict, config: TextureConfig, prepared: PreparedMesh, device: torch.device, path: Path) -> _State:
    if payload.get("mesh_fingerprint") != prepared.fingerprint:
        raise InputError("the checkpoint was made for another mesh (vertices, faces or UVs differ); start again",
                         file=path, field="mesh")
    state = _fresh_state(config, prepared, device)
    state.field.load_state_dict(payload["field"])
    state.optimizer.load_state_dict(payload["optimizer"])
    state.generator.set_state(payload["generator"])
    if payload.get("touched") is not None:
        state.touched = payload["touched"].to(device)
    state.step, state.elapsed, state.history = payload["step"], payload["elapsed"], list(payload["history"])
    return state


# ------------------------------------------------------------------------------------- the loop


def _optimise(config: TextureConfig, state: _State, prepared: PreparedMesh, mesh: TriangleMesh, model: GuidanceModel,
              conditioner, device: torch.device, checkpoint_dir: Path, out_dir: Path, events: EventLog,
              should_stop: Callable[[], bool | str | None] | None) -> None:
    sampling = camera_sampling(config, prepared)
    guidance_settings = sds_config(config)
    background = torch.tensor(config.background, device=device)
    preview_camera = orbit(config, prepared, torch.tensor([PREVIEW_AZIMUTH_DEG]), config.resolution).to(device)
    preview_vbuf = rasterize_mesh(mesh.vertices, mesh.faces, preview_camera, supersample=config.supersample)

    def take_step() -> tuple[Any, Tensor, Any]:
        step = state.step
        views = sample_cameras(sampling, generator=state.generator)
        cameras = views.cameras.to(device)
        light = random_light(config, views, state.generator)
        vbuf = rasterize_mesh(mesh.vertices, mesh.faces, cameras, supersample=config.supersample)

        def render_reference(texture: Tensor) -> Tensor:
            return render_textured_mesh(mesh, texture, cameras, light=light, background=background, vbuf=vbuf).rgb

        rgb, _alpha = render_texture_field(mesh, state.field, cameras, vbuf, light=light, background=background)
        conditioning = conditioner(views, render_reference)
        output = sds_loss(model, rgb, conditioning.cond, conditioning.uncond, guidance_settings, step=step,
                          total_steps=config.steps, generator=state.generator)
        state.optimizer.zero_grad(set_to_none=True)
        output.loss.backward()
        if state.touched is not None and state.field.texels.grad is not None:
            state.touched |= state.field.texels.grad.abs().sum(-1) > 0
        state.optimizer.step()
        state.field.project_()
        state.step = step + 1
        return output, rgb, conditioning

    def progress_fields(done: int, outcome, clock) -> dict[str, Any]:
        output, rgb, conditioning = outcome
        entry = {"step": done, "loss": float(output.loss.detach()), "grad_norm": output.grad_norm,
                 "timestep": float(output.timesteps.float().mean()), "elapsed": round(state.elapsed, 3)}
        if conditioning.target is not None:  # the oracle knows the answer: report how close the views are
            entry["psnr"] = float(psnr(rgb.detach().clamp(0, 1), conditioning.target).mean())
        state.history.append(entry)
        return entry

    def preview_image(done: int) -> Tensor:
        with torch.no_grad():
            preview, _ = render_texture_field(mesh, state.field, preview_camera, preview_vbuf, background=background)
        return preview[0].clamp(0, 1)

    plan = RunPlan(
        label="texturing", total=config.steps, checkpoint_path=checkpoint_path(checkpoint_dir),
        save_checkpoint=lambda path: save_checkpoint(path, state, config, prepared),
        checkpoint_every=config.checkpoint_every, progress_every=config.resolved_progress_every,
        preview_every=config.resolved_preview_every, preview_dir=out_dir, events=events, should_stop=should_stop,
    )
    run_steps(plan, state, take_step, loss_of=lambda outcome: float(outcome[0].loss.detach()),
              progress_fields=progress_fields, preview_image=preview_image)


# ------------------------------------------------------------------------------------ the result


def final_texture(config: TextureConfig, state: _State, mesh: TriangleMesh) -> tuple[Tensor, float]:
    """(texture (S, S, 3) on the CPU with its gutters filled, fraction of texels the result defines)."""
    with torch.no_grad():
        if isinstance(state.field, UVImageTexture):
            covered = state.touched
            texture = fill_uncovered_texels(state.field.texels.detach().clamp(0, 1), covered)
        else:
            texture, covered = bake_to_uv_image(mesh, state.field, config.texture_size)
    return texture.float().cpu(), float(covered.float().mean())


def render_turntable_frames(config: TextureConfig, prepared: PreparedMesh, mesh: TriangleMesh, texture: Tensor,
                            device: torch.device) -> tuple[list[Tensor], Tensor]:
    """(frames (H, W, 3) on the CPU, alpha (N, H, W, 1)) of the textured mesh on a ring around it, unlit."""
    azimuths = torch.arange(config.turntable_frames, dtype=torch.float32) * (360.0 / config.turntable_frames)
    cameras = orbit(config, prepared, azimuths, config.turntable_resolution)
    frames, alphas = [], []
    with torch.no_grad():
        for first in range(0, len(cameras), TURNTABLE_BATCH):
            batch = cameras[first:first + TURNTABLE_BATCH].to(device)
            render = render_textured_mesh(mesh, texture.to(device), batch, background=torch.tensor(config.background),
                                          supersample=2)
            frames += [frame.clamp(0, 1).cpu() for frame in render.rgb]
            alphas.append(render.alpha.cpu())
    return frames, torch.cat(alphas)


def _reference_psnr(config, prepared, mesh, reference: Tensor, frames: list[Tensor], alpha: Tensor, device) -> float:
    """PSNR over the mesh's pixels of the turntable against the same views of the reference texture."""
    truth, _ = render_turntable_frames(config, prepared, mesh, reference, device)
    mask = alpha[..., 0] > 0.5
    rendered, expected = torch.stack(frames)[mask], torch.stack(truth)[mask]
    return float(psnr(rendered[None, :, None], expected[None, :, None]))


def _write_result(config: TextureConfig, state: _State, prepared: PreparedMesh, mesh: TriangleMesh, out_dir: Path,
                  device: torch.device, guidance_name: str, oracle: TextureOracle | None,
                  events: EventLog, overwrite: bool) -> TextureResult:
    texture, coverage = final_texture(config, state, mesh)
    mesh_cpu = mesh.to("cpu")
    with partial_result(out_dir, replace_finished=overwrite) as partial:
        media.write_png(partial / TEXTURE_FILE, texture)
        write_textured_obj(partial / OBJ_FILE, mesh_cpu, TEXTURE_FILE)
        write_textured_glb(partial / GLB_FILE, mesh_cpu, texture)
        frames, alpha = render_turntable_frames(config, prepared, mesh, texture, device)
        turntable = media.write_turntable(partial, frames, name=TURNTABLE_NAME)
        media.write_png(partial / PREVIEW_FILE, frames[0])
        files = [
            {"path": GLB_FILE, "role": "textured_mesh", "description": "the mesh with its texture (binary glTF)"},
            {"path": OBJ_FILE, "role": "textured_mesh_obj", "description": "the mesh with its UVs (Wavefront OBJ)"},
            {"path": MTL_FILE, "role": "material", "description": f"the OBJ's material, mapping {TEXTURE_FILE}"},
            {"path": TEXTURE_FILE, "role": "texture", "description": "the UV texture (OBJ / Blender UVs, v up)"},
            {"path": PREVIEW_FILE, "role": "preview", "description": "the textured mesh from the front"},
        ]
        for kind, path in turntable.items():
            files.append({"path": Path(path).name, "role": "turntable", "description": f"turntable ({kind})"})
        last = [h["grad_norm"] for h in state.history if h["step"] > config.steps * (1 - FINAL_WINDOW)]
        metrics = {
            "steps": state.step, "train_seconds": round(state.elapsed, 3),
            "seconds_per_step": round(state.elapsed / max(state.step, 1), 4),
            "final_grad_norm": sum(last) / len(last) if last else None,
            "texel_coverage": coverage, "texture_size": config.texture_size, "resolution": config.resolution,
            "texture_type": config.texture_type, "uv_source": prepared.uv_source, "n_faces": mesh.num_faces,
            "n_vertices": len(mesh.vertices), "guidance": guidance_name, "sds_space": config.sds_space,
            "sds_mode": config.sds_mode, "device": str(device), "prompt": config.prompt,
            "history": state.history,
        }
        if oracle is not None:
            metrics["reference_psnr"] = _reference_psnr(config, prepared, mesh, oracle.reference_texture, frames,
                                                        alpha, device)
        write_json(partial / METRICS_FILE, metrics)
        files.append({"path": METRICS_FILE, "role": "metrics", "description": "run statistics"})
        files.append({"path": RESULT_FILE, "role": "result", "description": "this index of the result files"})
        summary_keys = ("steps", "train_seconds", "texel_coverage", "uv_source", "guidance", "reference_psnr")
        result = {
            "kind": RESULT_KIND,
            "files": files,
            "metrics": {key: metrics[key] for key in summary_keys if key in metrics},
            "prompt": config.prompt,
            "config": dataclasses.asdict(config),
        }
        write_json(partial / RESULT_FILE, result)
    if prepared.uv_source == "xatlas":
        events.emit("info", message="the mesh had no UVs: the texture uses a new UV atlas (see textured_mesh.obj)")
    roles = {"textured_mesh": out_dir / GLB_FILE, "textured_mesh_obj": out_dir / OBJ_FILE, "material": out_dir / MTL_FILE,
             "texture": out_dir / TEXTURE_FILE, "preview": out_dir / PREVIEW_FILE, "metrics": out_dir / METRICS_FILE,
             "result": out_dir / RESULT_FILE}
    roles.update({f"turntable_{kind}": out_dir / Path(path).name for kind, path in turntable.items()})
    return TextureResult(texture, mesh_cpu, metrics, out_dir, roles, state.elapsed, state.history)


# --------------------------------------------------------------------------------------- the API


def texture_mesh(
    mesh_path,
    out_dir: str | Path,
    *,
    prompt: str | None,
    config: TextureConfig | None = None,
    guidance=None,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    events: EventLog | None = None,
    should_stop: Callable[[], bool | str | None] | None = None,
    overwrite: bool = False,
    **overrides,
) -> TextureResult:
    """Texture the mesh at ``mesh_path`` (or a :class:`TriangleMesh`) from ``prompt``; results go to ``out_dir``.

    config / overrides: a :class:`TextureConfig`, with fields replaced by ``overrides`` (e.g.
        ``steps=500, texture_size=512``); ``prompt`` replaces ``config.prompt`` unless None.
    guidance: None loads ``config.model`` (Stable Diffusion; never downloaded); or a loaded guidance
        model (:func:`radiantforge.guidance.load_stable_diffusion`); or a :class:`TextureOracle`
        (known-answer tests).
    checkpoint_dir: default ``<out_dir>.checkpoints`` beside ``out_dir``; resume: continue from it.
    events: progress, preview, warning, info and cancelled events (the caller emits started/finished).
    should_stop: polled every step; True (or "cancelled" / "suspended") writes a checkpoint, emits
        "cancelled" (or "suspended"), raises JobCancelled.
    overwrite: replace a finished result in ``out_dir`` (otherwise that is an error).
    """
    prompt = oracle_prompt_when_none(prompt, overrides, config, guidance, TextureOracle, ORACLE_PROMPT)
    config = resolve_config(config, prompt, overrides)
    events = events if events is not None else EventLog(None)
    out_dir = Path(out_dir)
    check_out_dir(out_dir, overwrite)
    checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else default_checkpoint_dir(out_dir)
    device = resolve_device(config.device)
    payload = read_checkpoint(checkpoint_path(checkpoint_dir), kind="texture", version=CHECKPOINT_FORMAT) \
        if resume else None
    if payload is not None:
        check_same_config(payload["config"], config, RESUMABLE_FIELDS, checkpoint_path(checkpoint_dir))
    prepared = prepare_mesh(mesh_path, atlas_resolution=config.texture_size)
    if payload is not None:
        prepared = restore_atlas(payload, prepared)
    if isinstance(guidance, TextureOracle):
        check_reference_fits_uvs(guidance.reference_texture, guidance.uv_fingerprint, prepared)
    for warning in prepared.warnings:
        events.emit("warning", message=warning)
    model, conditioner, guidance_name = make_guidance(guidance, config, device)
    mesh = prepared.mesh.to(device)
    events.emit("info", message=f"texturing {mesh.num_faces:,} triangles ({prepared.uv_source} UVs) with {guidance_name}",
                n_faces=mesh.num_faces, uv_source=prepared.uv_source, up_axis=prepared.up_axis, device=str(device))

    if payload is not None:
        state = _load_state(payload, config, prepared, device, checkpoint_path(checkpoint_dir))
        events.emit("info", message=f"resuming from step {state.step} of {config.steps}", step=state.step)
    else:
        state = _fresh_state(config, prepared, device)
    _optimise(config, state, prepared, mesh, model, conditioner, device, checkpoint_dir, out_dir, events, should_stop)
    oracle = conditioner.oracle if isinstance(conditioner, OracleConditioner) else None
    return _write_result(config, state, prepared, mesh, out_dir, device, guidance_name, oracle, events, overwrite)


# ------------------------------------------------------------------------------------- job checks


def check_texture_job(data_dir: str | Path, config: TextureConfig, model_roots=None) -> Path:
    """What a texture job can check before work starts, without parsing the mesh; returns the mesh file.

    The prompt is not empty; ``data/`` holds exactly one mesh file of a known format and at most
    MAX_MESH_FILE_BYTES; the model is on this machine (a folder inside ``model_roots`` when given,
    or in the Hugging Face cache). The mesh itself (faces, MAX_TEXTURE_FACES) is checked when the
    job reads it. Raises InputError naming the field or file.
    """
    from ..guidance import resolve_model_folder
    from .meshes import check_mesh_file_size, find_job_mesh

    check_prompt(config.prompt)
    mesh_file = find_job_mesh(data_dir)
    check_mesh_file_size(mesh_file)
    resolve_model_folder(config.model, allowed_roots=model_roots)
    return mesh_file

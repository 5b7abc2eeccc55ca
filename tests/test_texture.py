"""Text-to-texture (radiantforge.texture): known answers with the oracle, the real diffusers path, jobs, CLI.

Known answers: the oracle denoiser (DESIGN.md) aimed at renders of Spot with its real texture
(../shared/assets/spot, the 1024^2 spot_texture.png), from the very camera and light each step
samples, must pull a grey 256^2 texture to Spot's: held-out renders of the written texture.png,
from a ring of cameras at azimuths the run never drew exactly, reach >= 25 dB PSNR over the mesh's pixels
(the grey start is below 15 dB, so the test can fail). Once through the PIXEL path (denoised
latents decoded, the step taken on the image) and once through the LATENT path, both with the
oracle's 2x2 space-to-depth autoencoder: a random tiny VAE is not invertible, this one is,
behind AutoencoderKL's interface. The latent run also uses Lambertian shading with a random
light per view: the recovered albedo must still match.

The real diffusers path: a tiny random Stable Diffusion saved with save_pretrained into a fake
Hugging Face cache is loaded by name ("sd15") through the job runner, exactly as users' models are.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from radiantforge.cli import main as cli_main
from radiantforge.errors import InputError, JobCancelled
from radiantforge.events import EventLog, read_events
from radiantforge.guidance import MODEL_ALIASES, OracleDenoiser, cameras_from_spherical
from radiantforge.jobs import job_state, run_job, validate_job, write_job
from radiantforge.mesh import TriangleMesh, interpolate_fragments, load_mesh, render_textured_mesh
from radiantforge.mesh.shading import scatter_to_image
from radiantforge.metrics import psnr
from radiantforge.texture import (TextureOracle, bake_to_uv_image, checkpoint_path, fill_uncovered_texels,
                                  non_manifold_edge_count, texture_mesh)
from radiantforge.texture import meshes as texture_meshes
from tiny_diffusion import build_tiny_stable_diffusion, install_in_fake_hf_cache

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")

RECOVERY_PSNR_DB = 25.0
GREY_START_MAX_DB = 15.0
TEXTURE_SIZE = 256  # recovered texture (the truth is Spot's own 1024^2 image)
RENDER_SIZE = 64
RECOVERY_STEPS = 200
VIEWS_PER_STEP = 2
RECOVERY_LR = 0.05
# Held out: a ring the random cameras (elevation -10..45 degrees, any azimuth) could draw, but
# at azimuths offset from the turntable's and never sampled exactly.
HELD_OUT_VIEWS = 6
HELD_OUT_ELEVATION_DEG = 30.0
HELD_OUT_AZIMUTH_OFFSET_DEG = 17.0
# A run small enough for the tiny model: 32 px views, a 64^2 texture, a few steps.
TINY_RUN = {"steps": 4, "resolution": 32, "texture_size": 64, "turntable_frames": 4, "turntable_resolution": 32,
            "device": "cpu"}


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """One intra-op thread: the tensors here are small, and on a shared 2-core machine two threads
    that wait on each other made every op 30x slower in a measurement."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def spot(shared_assets) -> TriangleMesh:
    return load_mesh(shared_assets / "spot" / "spot_triangulated.obj")


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    return build_tiny_stable_diffusion(tmp_path_factory.mktemp("tiny_sd") / "model")


@pytest.fixture
def hf_cache_with_tiny_sd15(tiny_model, tmp_path, monkeypatch):
    """A Hugging Face cache holding the tiny model under SD 1.5's id (what "sd15" resolves to)."""
    cache = tmp_path / "hf_cache"
    install_in_fake_hf_cache(tiny_model.folder, cache, MODEL_ALIASES["sd15"])
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    return cache


def spot_centre_and_radius(spot: TriangleMesh):
    low, high = spot.bounds()
    centre = (low + high) / 2
    return centre, float((spot.vertices - centre).norm(dim=1).max())


def held_out_psnr(spot: TriangleMesh, texture: torch.Tensor, size: int = RENDER_SIZE) -> float:
    """PSNR over the mesh's pixels of unlit renders with ``texture`` against Spot's own texture."""
    centre, radius = spot_centre_and_radius(spot)
    azimuths = torch.arange(HELD_OUT_VIEWS) * (360.0 / HELD_OUT_VIEWS) + HELD_OUT_AZIMUTH_OFFSET_DEG
    cameras = cameras_from_spherical(azimuths, torch.full((HELD_OUT_VIEWS,), HELD_OUT_ELEVATION_DEG),
                                     torch.full((HELD_OUT_VIEWS,), 2.8 * radius), torch.full((HELD_OUT_VIEWS,), 47.5),
                                     size, size, tuple(centre.tolist()))
    with torch.no_grad():
        truth = render_textured_mesh(spot, spot.texture, cameras, supersample=2)
        rendered = render_textured_mesh(spot, texture, cameras, vbuf=truth.vbuf)
    mask = truth.alpha[..., 0] > 0
    return float(psnr(rendered.rgb[mask][None, :, None], truth.rgb[mask][None, :, None]))


def read_png(path) -> torch.Tensor:
    return torch.from_numpy(np.asarray(Image.open(path).convert("RGB"), dtype=np.float32) / 255.0)


def run_oracle_recovery(spot, out_dir, **options):
    oracle = TextureOracle(OracleDenoiser("space_to_depth", device="cpu"), spot.texture)
    settings = dict(steps=RECOVERY_STEPS, texture_size=TEXTURE_SIZE, resolution=RENDER_SIZE, batch_size=VIEWS_PER_STEP,
                    learning_rate=RECOVERY_LR, guidance_scale=100.0, device="cpu", checkpoint_every=0,
                    turntable_frames=4, turntable_resolution=RENDER_SIZE)
    settings.update(options)
    events = EventLog(out_dir.parent / "events.jsonl")
    result = texture_mesh(spot, out_dir, prompt="spot the cow", guidance=oracle, events=events, **settings)
    return result, read_events(out_dir.parent / "events.jsonl")


# ----------------------------------------------------------------------------- known answers


@pytest.mark.parametrize("space, shading", [("pixel", "albedo"), ("latent", "lambertian")])
def test_oracle_sds_recovers_spots_texture(spot, tmp_path, space, shading):
    result, events = run_oracle_recovery(spot, tmp_path / "out", sds_space=space, shading=shading)
    recovered = read_png(result.files["texture"])  # what users get, 8-bit
    assert recovered.shape == (TEXTURE_SIZE, TEXTURE_SIZE, 3)
    start = held_out_psnr(spot, torch.full_like(recovered, 0.5))
    final = held_out_psnr(spot, recovered)
    print(f"{space}/{shading}: held-out PSNR {final:.2f} dB (grey start {start:.2f} dB), "
          f"{result.metrics['train_seconds']:.1f} s for {RECOVERY_STEPS} steps")
    assert start < GREY_START_MAX_DB
    assert final >= RECOVERY_PSNR_DB, f"{space}/{shading}: {final:.2f} dB"
    progress = [e for e in events if e["type"] == "progress"]
    assert progress[-1]["step"] == RECOVERY_STEPS and progress[-1]["psnr"] > progress[0]["psnr"] + 10
    assert result.metrics["reference_psnr"] >= RECOVERY_PSNR_DB


def test_coordinate_mlp_is_baked_into_the_uv_image(spot, tmp_path):
    """The MLP colour field, recovered under the oracle, then baked: the baked image renders like the field."""
    result, _ = run_oracle_recovery(spot, tmp_path / "out", texture_type="mlp", learning_rate=0.01, mlp_frequencies=8,
                                    steps=150)
    final = held_out_psnr(spot, read_png(result.files["texture"]))
    print(f"mlp: held-out PSNR {final:.2f} dB of the baked texture")
    assert final >= 20.0


def test_baking_a_linear_colour_field_is_exact_where_the_texture_is_sampled(spot):
    """colour(p) affine in p: barycentric interpolation is exact, so renders of the baked image must equal
    the field at the rendered surface points, up to bilinear texel filtering (Spot's UVs reach outside
    [0, 1], so the repeated squares are baked too)."""
    centre, radius = spot_centre_and_radius(spot)

    def colour_of_points(points):
        return ((points - centre) / radius * 0.5 + 0.5).clamp(0, 1)

    texture, covered = bake_to_uv_image(spot, colour_of_points, 512)
    assert 0.3 < float(covered.float().mean()) < 1.0
    cameras = cameras_from_spherical(torch.tensor([0.0, 120.0, 240.0]), torch.tensor([20.0, -5.0, 40.0]),
                                     torch.full((3,), 2.8 * radius), torch.full((3,), 45.0), 96, 96,
                                     tuple(centre.tolist()))
    render = render_textured_mesh(spot, texture, cameras, background=0.0)
    fragments = render.vbuf.fragments()
    points = interpolate_fragments(spot.vertices, fragments, spot.faces)
    expected = scatter_to_image(colour_of_points(points), fragments, render.vbuf)
    mask = render.alpha[..., 0] > 0
    value = float(psnr(render.rgb[mask][None, :, None], expected[mask][None, :, None]))
    assert value >= 40.0, f"{value:.1f} dB"


def test_gutters_are_filled_from_the_charts():
    texture = torch.zeros(8, 8, 3)
    covered = torch.zeros(8, 8, dtype=torch.bool)
    texture[2:4, 2:4] = torch.tensor([1.0, 0.5, 0.25])
    covered[2:4, 2:4] = True
    filled = fill_uncovered_texels(texture, covered)
    assert torch.allclose(filled, torch.tensor([1.0, 0.5, 0.25]).expand(8, 8, 3))  # one chart: its colour everywhere
    assert torch.equal(filled[covered], texture[covered])


# ------------------------------------------------------------------------ the real diffusers path


def make_texture_job(job_dir, shared_assets, **params):
    """A texture job whose data/ holds Spot (OBJ + MTL + its texture, as a Blender export would)."""
    write_job(job_dir, "texture", {"prompt": "a cow with black and white patches", **TINY_RUN, **params})
    for name in ("spot_triangulated.obj", "spot.mtl", "spot_texture.png"):
        shutil.copy(shared_assets / "spot" / name, job_dir / "data" / name)
    return job_dir


def test_tiny_stable_diffusion_job_writes_every_output(hf_cache_with_tiny_sd15, shared_assets, tmp_path):
    job = make_texture_job(tmp_path / "job", shared_assets, negative_prompt="blurry", guidance_scale=7.5)
    outcome = run_job(job)
    assert outcome["state"] == "finished", outcome
    result_dir = job / "result"
    result = json.loads((result_dir / "result.json").read_text())
    assert result["kind"] == "texture" and result["prompt"] == "a cow with black and white patches"
    roles = {}
    for entry in result["files"]:
        assert (result_dir / entry["path"]).exists(), entry
        roles.setdefault(entry["role"], []).append(entry["path"])
    assert {"textured_mesh", "textured_mesh_obj", "material", "texture", "turntable", "metrics", "result",
            "preview"} <= set(roles)
    assert sorted(roles["turntable"]) == ["turntable", "turntable.gif", "turntable.mp4"]
    assert result["metrics"]["steps"] == TINY_RUN["steps"] and result["metrics"]["uv_source"] == "mesh"
    assert str(hf_cache_with_tiny_sd15) in result["metrics"]["guidance"]  # loaded by name from the cache

    # The files agree with each other and with the input mesh: the GLB and the OBJ read back (Blender's
    # axes restored by the loader) with Spot's corners and UVs, and carry texture.png.
    spot = load_mesh(job / "data" / "spot_triangulated.obj")
    texture = read_png(result_dir / "texture.png")
    assert texture.shape == (TINY_RUN["texture_size"],) * 2 + (3,)
    for name in ("textured_mesh.glb", "textured_mesh.obj"):
        written = load_mesh(result_dir / name)
        assert torch.allclose(written.vertices[written.faces], spot.vertices[spot.faces], atol=1e-5), name
        assert torch.allclose(written.uvs[written.face_uvs], spot.uvs[spot.face_uvs], atol=1e-6), name
        assert torch.allclose(written.texture, texture, atol=1 / 255), name
    assert "map_Kd texture.png" in (result_dir / "textured_mesh.mtl").read_text()
    gif = Image.open(result_dir / "turntable.gif")
    assert gif.n_frames == TINY_RUN["turntable_frames"] and gif.size == (TINY_RUN["turntable_resolution"],) * 2
    assert len(list((result_dir / "turntable").glob("frame_*.png"))) == TINY_RUN["turntable_frames"]

    events = read_events(job / "events.jsonl")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and job_state(job) == "finished"
    assert [e["step"] for e in events if e["type"] == "progress"] == [1, 2, 3, 4]
    assert all(math.isfinite(e["grad_norm"]) and e["grad_norm"] > 0 for e in events if e["type"] == "progress")
    previews = [e for e in events if e["type"] == "preview"]
    assert previews and previews[-1]["path"].endswith("result/preview.png")
    assert any("outside the unit square" in e.get("message", "") for e in events if e["type"] == "warning")


def test_checkpoint_resume_is_bit_exact_and_cancel_stops_with_a_checkpoint(hf_cache_with_tiny_sd15, spot, tmp_path):
    """Tiny SD (timesteps, noise, cameras, light all drawn from the run's generator) with the coordinate MLP,
    Lambertian shading and CSD through the pixel path: a run cancelled after 3 steps and resumed ends
    bit-identical to an uninterrupted one."""
    settings = dict(TINY_RUN, steps=7, texture_type="mlp", shading="lambertian", batch_size=2, checkpoint_every=2,
                    sds_mode="csd", sds_space="pixel")
    straight = texture_mesh(spot, tmp_path / "straight", prompt="a cow", **settings)

    polls = []

    def stop_after_three_steps():
        polls.append(None)
        return len(polls) > 3

    events_path = tmp_path / "interrupted.events.jsonl"
    with pytest.raises(JobCancelled):
        texture_mesh(spot, tmp_path / "interrupted", prompt="a cow", events=EventLog(events_path),
                     should_stop=stop_after_three_steps, **settings)
    cancelled = [e for e in read_events(events_path) if e["type"] == "cancelled"]
    assert cancelled and cancelled[0]["step"] == 3
    checkpoint = torch.load(checkpoint_path(tmp_path / "interrupted.checkpoints"), weights_only=True)
    assert checkpoint["step"] == 3
    assert not (tmp_path / "interrupted" / "result.json").exists()  # only the preview of an unfinished run

    with pytest.raises(InputError) as changed:
        texture_mesh(spot, tmp_path / "interrupted", prompt="a cow", resume=True, **{**settings, "seed": 1})
    assert changed.value.field == "seed"
    moved = TriangleMesh(spot.vertices + 0.01, spot.faces, uvs=spot.uvs, face_uvs=spot.face_uvs)
    with pytest.raises(InputError, match="another mesh"):
        texture_mesh(moved, tmp_path / "interrupted", prompt="a cow", resume=True, **settings)
    resumed = texture_mesh(spot, tmp_path / "interrupted", prompt="a cow", resume=True,
                           events=EventLog(events_path), **settings)
    assert torch.equal(resumed.texture, straight.texture)
    first = torch.load(checkpoint_path(tmp_path / "straight.checkpoints"), weights_only=True)
    second = torch.load(checkpoint_path(tmp_path / "interrupted.checkpoints"), weights_only=True)
    for name, tensor in first["field"].items():
        assert torch.equal(tensor, second["field"][name]), name
    assert any("resuming from step 3" in e.get("message", "") for e in read_events(events_path))


def test_job_cancel_then_resume_through_the_job_runner(hf_cache_with_tiny_sd15, shared_assets, tmp_path, monkeypatch):
    job = make_texture_job(tmp_path / "job", shared_assets, steps=6, checkpoint_every=0)
    from radiantforge import jobs

    calls = []
    real = jobs.cancel_requested

    def cancel_at_step_two(job_dir):  # what a CANCEL file written by the service does, at a known step
        calls.append(None)
        return len(calls) > 2 or real(job_dir)

    monkeypatch.setattr(jobs, "cancel_requested", cancel_at_step_two)
    assert run_job(job)["state"] == "cancelled"
    monkeypatch.setattr(jobs, "cancel_requested", real)
    assert job_state(job) == "cancelled" and (job / "checkpoints" / "texture_checkpoint.pt").is_file()
    assert run_job(job)["state"] == "finished"
    started = [e for e in read_events(job / "events.jsonl") if e["type"] == "started"]
    assert [e["resumed"] for e in started] == [False, True]


# ------------------------------------------------------------------------------------ bad input


def test_bad_settings_name_the_field(spot, tmp_path):
    cases = [({"steps": 0}, "steps"), ({"texture_type": "voxels"}, "texture_type"), ({"sds_space": "x"}, "sds_space"),
             ({"resolution": 4}, "resolution"), ({"background": (2, 0, 0)}, "background"),
             ({"distance_range": (3, 1)}, "distance_range"), ({"t_min": 0.9, "t_max": 0.5}, "t_min"),
             ({"colour": "red"}, "colour")]
    for options, field in cases:
        with pytest.raises(InputError) as info:
            texture_mesh(spot, tmp_path / "out", prompt="a cow", **options)
        assert info.value.field == field, (options, str(info.value))
    for prompt in ("", "   "):
        with pytest.raises(InputError, match="prompt is empty") as info:
            texture_mesh(spot, tmp_path / "out", prompt=prompt, guidance=object())
        assert info.value.field == "prompt"
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "mine.txt").write_text("keep me")
    with pytest.raises(InputError, match="not empty"):
        texture_mesh(spot, tmp_path / "full", prompt="a cow")
    assert (tmp_path / "full" / "mine.txt").read_text() == "keep me"


def test_bad_meshes_fail_before_any_work(spot, tmp_path, monkeypatch):
    oracle = TextureOracle(OracleDenoiser("pixel", device="cpu"), torch.full((4, 4, 3), 0.5))
    points = tmp_path / "points.ply"
    points.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\nproperty float z\n"
                      "end_header\n0 0 0\n1 0 0\n0 1 0\n")
    with pytest.raises(InputError, match="no faces") as info:
        texture_mesh(points, tmp_path / "out", prompt="a cow", guidance=oracle)
    assert str(points) in str(info.value)
    with pytest.raises(InputError, match="no such file"):
        texture_mesh(tmp_path / "missing.obj", tmp_path / "out", prompt="a cow", guidance=oracle)

    monkeypatch.setattr(texture_meshes, "MAX_TEXTURE_FACES", 1000)
    with pytest.raises(InputError, match="5,856 triangles; at most 1,000") as info:
        texture_mesh(spot, tmp_path / "out", prompt="a cow", guidance=oracle)
    assert info.value.field == "faces"
    assert not (tmp_path / "out").exists()


def test_non_manifold_meshes_are_textured_with_a_warning(tmp_path):
    """Three triangles on one edge (a fin): a warning, a result; the mesh has no UVs, so xatlas makes them."""
    vertices = torch.tensor([[0.0, 0, 0], [0, 0, 1], [1, 0, 0.5], [-1, 0, 0.5], [0, 1, 0.5]])
    faces = torch.tensor([[0, 1, 2], [1, 0, 3], [0, 1, 4]])
    mesh = TriangleMesh(vertices, faces)
    assert non_manifold_edge_count(mesh) == 1
    oracle = TextureOracle(OracleDenoiser("pixel", device="cpu"), torch.full((16, 16, 3), 0.5))
    events = tmp_path / "events.jsonl"
    result = texture_mesh(mesh, tmp_path / "out", prompt="a fin", guidance=oracle, events=EventLog(events),
                          steps=2, resolution=16, texture_size=16, turntable_frames=2, turntable_resolution=16,
                          device="cpu")
    warnings = [e["message"] for e in read_events(events) if e["type"] == "warning"]
    assert any("1 non-manifold edge" in message for message in warnings)
    assert result.metrics["uv_source"] == "xatlas" and (tmp_path / "out" / "textured_mesh.glb").is_file()
    written = load_mesh(tmp_path / "out" / "textured_mesh.obj")
    assert written.has_uvs and torch.allclose(written.vertices[written.faces], result.mesh.vertices[result.mesh.faces],
                                              atol=1e-6)


def test_bad_texture_jobs_fail_validation_before_work(tmp_path, shared_assets, monkeypatch):
    empty_cache = tmp_path / "empty_cache"
    empty_cache.mkdir()
    monkeypatch.setenv("HF_HUB_CACHE", str(empty_cache))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    job = make_texture_job(tmp_path / "missing_model", shared_assets)
    outcome = run_job(job)
    events = read_events(job / "events.jsonl")
    assert outcome["state"] == "failed" and [e["type"] for e in events] == ["error"]
    assert events[0]["stage"] == "validation" and events[0]["field"] == "params.model"
    assert "hf download stable-diffusion-v1-5/stable-diffusion-v1-5" in events[0]["message"]
    assert not (job / "result").exists() and not (job / "checkpoints").exists()

    job = make_texture_job(tmp_path / "empty_prompt", shared_assets, prompt=" ")
    with pytest.raises(InputError) as info:
        validate_job(job)
    assert info.value.field == "params.prompt" and "job.json" in str(info.value)

    job = make_texture_job(tmp_path / "two_meshes", shared_assets)
    shutil.copy(shared_assets / "bunny" / "bun_zipper.ply", job / "data")
    with pytest.raises(InputError, match="2 mesh files"):
        validate_job(job)
    job = write_job(tmp_path / "no_mesh", "texture", {"prompt": "a cow"})
    with pytest.raises(InputError, match="no mesh file"):
        validate_job(job)
    with pytest.raises(InputError) as info:
        write_job(tmp_path / "bad_param", "texture", {"prompt": "a cow", "steps": -1})
    assert info.value.field == "params.steps"


# ------------------------------------------------------------------------------------------ CLI


def test_cli_textures_a_mesh_without_uvs(tiny_model, tmp_path, capsys):
    """`radiantforge texture` on an icosphere PLY (no UVs: xatlas), the model given as a folder."""
    import trimesh

    mesh_file = tmp_path / "ball.ply"
    trimesh.creation.icosphere(subdivisions=2).export(mesh_file)
    out = tmp_path / "out"
    arguments = ["texture", str(mesh_file), "--prompt", "a striped ball", "--out", str(out), "--steps", "3",
                 "--resolution", "32", "--texture-size", "32", "--model", str(tiny_model.folder), "--device", "cpu",
                 "--guidance-scale", "7.5", "--seed", "3", "--negative-prompt", "blurry"]
    assert cli_main(arguments) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["metrics"]["uv_source"] == "xatlas" and summary["metrics"]["steps"] == 3
    for role in ("textured_mesh", "textured_mesh_obj", "texture", "turntable_gif", "result"):
        assert (out / summary["files"][role].rsplit("/", 1)[-1]).is_file(), role
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["guidance_scale"] == 7.5 and result["config"]["negative_prompt"] == "blurry"
    assert any(e["type"] == "progress" for e in read_events(tmp_path / "out.events.jsonl"))

    assert cli_main(arguments) == 2  # a finished result is never overwritten
    assert "finished result" in capsys.readouterr().err
    assert cli_main(["texture", str(mesh_file), "--prompt", " ", "--out", str(tmp_path / "other")]) == 2
    assert "prompt" in capsys.readouterr().err
    assert cli_main(["texture", str(mesh_file), "--prompt", "x", "--out", str(tmp_path / "third"), "--resume"]) == 2
    assert "no checkpoint" in capsys.readouterr().err

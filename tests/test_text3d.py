"""Text-to-3D (radiantforge.text3d): known-answer generation with the oracle, and the real diffusers path.

Known answer: the oracle denoiser (DESIGN.md) targets renders of Spot (Keenan Crane's textured cow,
../shared/assets/spot) made by the mesh renderer from each step's cameras, with that step's
shading mode (normal / textureless / lambertian / albedo), point lights and random background.
Generation must recover Spot: held-out renders >= 22 dB PSNR and silhouette IoU >= 0.9, and the
extracted mesh within CHAMFER_LIMIT of the true surface. The latent path goes through the oracle's
2x2 space-to-depth "VAE" (exactly invertible; a random tiny VAE is not) with CFG at scale 100.

The tiny random Stable Diffusion of tests/tiny_diffusion.py (real diffusers UNet, VAE, CLIP text
encoder and tokenizer, loaded from a folder as a real model is) drives the end-to-end runs: every
result file, checkpoint / resume bit for bit, cancel, the job folder, the batch command, the CLI.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import imageio.v3 as iio
import pytest
import torch

from radiantforge import cli
from radiantforge.errors import InputError, JobCancelled
from radiantforge.events import EventLog, read_events
from radiantforge.guidance import CameraSamplingConfig, OracleDenoiser, load_stable_diffusion, sample_cameras
from radiantforge.jobs import job_state, run_job, write_job
from radiantforge.mesh import DirectionalLight, TriangleMesh, load_mesh, render_textured_mesh
from radiantforge.metrics import psnr
from radiantforge.nerf import RenderConfig, render
from radiantforge.text3d import (MeshTarget, Text3DOracle, batch_generate, chamfer_distance,
                                 generate_3d, mesh_chamfer, prompt_folder_name, read_prompts, silhouette_iou)

from tiny_diffusion import build_tiny_stable_diffusion

# Spot is scaled so that its longest half-extent is this (metres), inside the field's unit box.
SPOT_HALF_EXTENT = 0.7
# The extracted mesh must lie this close to Spot's surface (symmetric chamfer, metres): 2% of its
# 1.4 m length, about the 3 cm cell of the 64^3 marching-cubes lattice over the 2 m box.
CHAMFER_LIMIT = 0.03
PSNR_LIMIT_DB = 22.0
IOU_LIMIT = 0.9
# Settings of the known-answer run: 40 px renders, 300 steps (25-45 s on one core of the 2-core test
# machine). Apart from the sizes: larger learning rates than a 3000-step SD run, half the steps in
# albedo shading (the shaded modes teach no colour and there are few steps), a random background
# (empty space must be transparent, not background-coloured), forward-difference normals (half the
# density evaluations of central ones); CFG stays at DreamFusion's scale of 100.
ORACLE_SETTINGS = dict(
    steps=300, resolution=40, num_samples=32, guidance_scale=100.0, background="random",
    distance_range=(2.2, 2.8), fov_range_deg=(40.0, 45.0), learning_rate=0.03, network_learning_rate=0.003,
    latent_iter_ratio=0.1, albedo_probability=0.5, textureless_probability=0.2, orientation_weight=0.01,
    entropy_weight=0.001, normal_difference="forward", occupancy_resolution=32, mesh_resolution=64, target_faces=3000,
    texture_size=256, turntable_frames=8, turntable_resolution=64, checkpoint_every=0,
)
# Settings that make a tiny-diffusers run take a second: 12 px renders (upsampled to the model's 16 px).
TINY_SETTINGS = dict(
    resolution=12, num_samples=16, occupancy_resolution=16, mesh_resolution=24, target_faces=300, texture_size=32,
    turntable_frames=3, turntable_resolution=16, checkpoint_every=0,
)


@pytest.fixture
def single_thread():
    # Small renders are many small ops: one thread avoids OpenMP's wake-up cost on a shared 2-core machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="module")
def spot(shared_assets) -> TriangleMesh:
    """Spot, centred in the unit box with its longest half-extent SPOT_HALF_EXTENT (Z up, head toward −Y)."""
    mesh = load_mesh(shared_assets / "spot" / "spot_triangulated.obj")
    low, high = mesh.bounds()
    scale = SPOT_HALF_EXTENT / float((high - low).max() / 2)
    vertices = (mesh.vertices - (low + high) / 2) * scale
    return TriangleMesh(vertices, mesh.faces, uvs=mesh.uvs, face_uvs=mesh.face_uvs, texture=mesh.texture)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """(folder, loaded guidance) of a tiny random Stable Diffusion in the diffusers layout."""
    folder = tmp_path_factory.mktemp("tiny_sd") / "model"
    build_tiny_stable_diffusion(folder)
    return folder, load_stable_diffusion(folder, device="cpu")


# ------------------------------------------------------------------------------- known answer


def test_oracle_generation_recovers_spot(spot, tmp_path, single_thread):
    out = tmp_path / "spot"
    oracle = Text3DOracle(OracleDenoiser("space_to_depth", device="cpu"), MeshTarget(spot))
    result = generate_3d("a cow", out, guidance=oracle, events=EventLog(tmp_path / "events.jsonl"),
                         **ORACLE_SETTINGS)

    # Every shading mode took part (normal warm-up, then albedo / textureless / lambertian).
    assert {entry["shading"] for entry in result.history} == {"normal", "albedo", "textureless", "lambertian"}

    # Held-out views the run never drew, checked here independently of the run's own metrics.
    views = CameraSamplingConfig(width=64, height=64, distance_range=(2.3, 2.7), fov_range_deg=(42.0, 42.0),
                                 elevation_range_deg=(-5.0, 45.0))
    cameras = sample_cameras(views, batch_size=6, generator=torch.Generator().manual_seed(2024)).cameras
    white = torch.ones(3)
    truth, truth_alpha = MeshTarget(spot).render(cameras, "albedo", background=white)
    with torch.no_grad():
        out_render = render(result.field, cameras, RenderConfig(num_samples=64, perturb=False), background=white)
    held_out_psnr = float(psnr(out_render.image.clamp(0, 1), truth).mean())
    held_out_iou = silhouette_iou(out_render.opacity, truth_alpha)

    # The exported mesh, read back from the OBJ file (Y up on disk, Z up again once loaded).
    exported = load_mesh(result.files["mesh_obj"])
    distances = mesh_chamfer(exported, spot, count=8000)
    # Its baked texture seen from the same views: UVs, bake, files and axes all have to be right.
    mesh_render = render_textured_mesh(exported, exported.texture, cameras, background=white, supersample=2)
    mesh_psnr = float(psnr(mesh_render.rgb.clamp(0, 1), truth).mean())
    metrics = result.metrics
    print(f"held-out PSNR {held_out_psnr:.2f} dB, silhouette IoU {held_out_iou:.3f}; run's own ring: "
          f"{metrics['held_out_psnr']:.2f} dB, IoU {metrics['held_out_silhouette_iou']:.3f}; mesh chamfer "
          f"{distances['chamfer']:.4f} m (90% within {distances['hausdorff_90']:.4f} m), {exported.num_faces} faces, "
          f"textured-mesh PSNR {mesh_psnr:.2f} dB; {metrics['train_seconds']:.1f} s for {metrics['steps']} steps")
    assert held_out_psnr >= PSNR_LIMIT_DB
    assert held_out_iou >= IOU_LIMIT
    assert metrics["held_out_psnr"] >= PSNR_LIMIT_DB and metrics["held_out_silhouette_iou"] >= IOU_LIMIT
    assert distances["chamfer"] <= CHAMFER_LIMIT
    assert metrics["mesh_chamfer"] <= CHAMFER_LIMIT
    assert mesh_psnr >= PSNR_LIMIT_DB
    assert exported.num_faces <= ORACLE_SETTINGS["target_faces"]


def test_mesh_target_shades_like_the_mesh_renderer(spot):
    """The oracle's target renderer against render_textured_mesh: same albedo image; a point light far
    away is a directional light; textureless is lambertian on a white texture."""
    views = CameraSamplingConfig(width=32, height=32, distance_range=(2.5, 2.5), fov_range_deg=(45.0, 45.0))
    cameras = sample_cameras(views, batch_size=2, generator=torch.Generator().manual_seed(5)).cameras
    background = torch.tensor([0.2, 0.4, 0.6])
    target = MeshTarget(spot)
    albedo, alpha = target.render(cameras, "albedo", background=background)
    reference = render_textured_mesh(spot, spot.texture, cameras, background=background, supersample=2)
    assert torch.allclose(albedo, reference.rgb, atol=1e-5) and torch.allclose(alpha, reference.alpha[..., 0])

    direction = torch.nn.functional.normalize(torch.tensor([0.3, -0.8, 0.5]), dim=0)
    far_light = (direction * 1e5).expand(2, 3)  # 100 km away: every surface point sees the same direction
    ambient = 0.25
    light = DirectionalLight(direction, ambient=ambient, diffuse=1.0 - ambient)
    lit = target(cameras, "lambertian", far_light, background, ambient)
    lit_reference = render_textured_mesh(spot, spot.texture, cameras, light=light, background=background, supersample=2)
    assert (lit - lit_reference.rgb).abs().max() < 1e-3
    grey = target(cameras, "textureless", far_light, background, ambient)
    white = render_textured_mesh(spot, torch.ones(4, 4, 3), cameras, light=light, background=background, supersample=2)
    assert (grey - white.rgb).abs().max() < 1e-3
    normal = target(cameras, "normal", None, background, ambient)
    assert normal.shape == albedo.shape and not torch.allclose(normal, grey)


def test_evaluation_helpers_give_known_answers():
    grid = torch.stack(torch.meshgrid(*[torch.arange(4.0)] * 3, indexing="ij"), dim=-1).reshape(-1, 3)
    shifted = grid + torch.tensor([0.1, 0.0, 0.0])  # 1 m spacing: each point's nearest is its own copy
    distances = chamfer_distance(grid, shifted)
    assert math.isclose(distances["chamfer"], 0.1, rel_tol=1e-3)  # cdist in float32
    assert math.isclose(distances["hausdorff_90"], 0.1, rel_tol=1e-3)

    mask = torch.zeros(4, 4)
    mask[0, :4] = 1.0
    other = torch.zeros(4, 4)
    other[0, 2:] = 1.0
    other[1, :2] = 1.0
    assert math.isclose(silhouette_iou(mask, other), 2 / 6)

    square = TriangleMesh(torch.tensor([[0.0, 0, 0], [1, 0, 0], [1, 1, 0], [0, 1, 0]]), torch.tensor([[0, 1, 2], [0, 2, 3]]))
    assert mesh_chamfer(square, square, count=2000)["chamfer"] < 0.03  # two samplings of one surface


# ----------------------------------------------------------------------------- diffusers path


def test_tiny_diffusers_run_writes_every_result_file(tiny_model, tmp_path, single_thread):
    folder, guidance = tiny_model
    out = tmp_path / "teapot"
    events_path = tmp_path / "events.jsonl"
    result = generate_3d("a red teapot", out, guidance=guidance, negative_prompt="blurry", steps=6,
                         events=EventLog(events_path), **TINY_SETTINGS)

    manifest = json.loads((out / "result.json").read_text())
    assert manifest["kind"] == "text3d" and manifest["prompt"] == "a red teapot"
    roles = {entry["role"] for entry in manifest["files"]}
    assert {"mesh", "mesh_obj", "material", "texture", "preview", "turntable", "depth", "metrics", "result"} <= roles
    for entry in manifest["files"]:
        assert (out / entry["path"]).exists(), entry
    assert not list(tmp_path.glob(".teapot.partial*"))

    mesh = load_mesh(result.files["mesh"])  # the .glb
    assert mesh.has_uvs and mesh.texture is not None and 0 < mesh.num_faces <= TINY_SETTINGS["target_faces"]
    for name in ("turntable.gif", "turntable_depth.gif"):
        assert iio.imread(out / name, index=None).shape[0] == TINY_SETTINGS["turntable_frames"]
    assert len(list((out / "turntable").glob("frame_*.png"))) == TINY_SETTINGS["turntable_frames"]

    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["steps"] == 6 and metrics["guidance"] == str(folder) and metrics["n_faces"] == mesh.num_faces
    events = read_events(events_path)
    progress = [e for e in events if e["type"] == "progress"]
    assert [e["step"] for e in progress] == list(range(1, 7)) and all(e["total"] == 6 for e in progress)
    assert all(e["grad_norm"] > 0 and 20 <= e["timestep"] <= 980 for e in progress)
    assert any(e["type"] == "preview" for e in events)
    # The prompt reached the UNet as view-dependent prompts plus the negative prompt.
    assert {"a red teapot, front view", "a red teapot, side view", "a red teapot, back view", "blurry"} <= \
        set(guidance._embedding_cache)


def test_cancel_writes_a_checkpoint_and_resume_is_bit_exact(tiny_model, tmp_path, single_thread):
    _, guidance = tiny_model
    straight = generate_3d("a wooden chair", tmp_path / "straight", guidance=guidance, steps=8, **TINY_SETTINGS)

    calls = []

    def stop_after_three_steps():
        calls.append(1)
        return len(calls) > 3

    interrupted = tmp_path / "interrupted"
    events_path = tmp_path / "interrupted.events.jsonl"
    settings = {**TINY_SETTINGS, "checkpoint_every": 2}
    with pytest.raises(JobCancelled):
        generate_3d("a wooden chair", interrupted, guidance=guidance, steps=8, events=EventLog(events_path),
                    should_stop=stop_after_three_steps, **settings)
    cancelled = [e for e in read_events(events_path) if e["type"] == "cancelled"]
    assert len(cancelled) == 1 and cancelled[0]["step"] == 3
    assert (tmp_path / "interrupted.checkpoints" / "text3d_checkpoint.pt").is_file()
    assert {p.name for p in interrupted.iterdir()} == {"preview.png"}  # no result until it is complete

    with pytest.raises(InputError) as error:  # a different optimisation cannot continue this one
        generate_3d("a wooden chair", interrupted, guidance=guidance, steps=8, seed=1, resume=True, **settings)
    assert error.value.field == "seed"

    resumed = generate_3d("a wooden chair", interrupted, guidance=guidance, steps=8, resume=True,
                          events=EventLog(events_path), **settings)
    expected, actual = straight.field.state_dict(), resumed.field.state_dict()
    assert expected.keys() == actual.keys()
    for name in expected:
        assert torch.equal(expected[name], actual[name]), name
    assert [h["loss"] for h in straight.history] == [h["loss"] for h in resumed.history]
    assert (straight.out_dir / "mesh.obj").read_bytes() == (resumed.out_dir / "mesh.obj").read_bytes()


def test_job_folder_runs_text3d_and_checks_it_first(tiny_model, tmp_path, single_thread):
    folder, _ = tiny_model
    job = write_job(tmp_path / "job", "text3d", {"prompt": "a small cactus", "model": str(folder), "steps": 3,
                                                   **TINY_SETTINGS})
    outcome = run_job(job)
    assert outcome["state"] == "finished", outcome
    assert job_state(job) == "finished" and outcome["result"]["kind"] == "text3d"
    assert (job / "result" / "mesh.glb").is_file() and (job / "checkpoints" / "text3d_checkpoint.pt").is_file()

    missing_model = write_job(tmp_path / "no_model", "text3d", {"prompt": "a cactus", "model": str(tmp_path / "none")})
    outcome = run_job(missing_model)
    assert outcome["state"] == "failed" and "params.model" in outcome["error"]
    empty_prompt = write_job(tmp_path / "no_prompt", "text3d", {"prompt": " ", "model": str(folder)})
    outcome = run_job(empty_prompt)
    assert outcome["state"] == "failed" and "params.prompt" in outcome["error"]
    with pytest.raises(InputError) as error:
        write_job(tmp_path / "bad_steps", "text3d", {"prompt": "a cactus", "steps": 0})
    assert error.value.field == "params.steps"


@pytest.mark.parametrize("overrides, field", [
    ({"steps": 0}, "steps"), ({"resolution": 4}, "resolution"), ({"fov_range_deg": (50, 40)}, "fov_range_deg"),
    ({"anneal": "cosine"}, "anneal"), ({"t_min": 0.9, "t_max": 0.5}, "t_min"), ({"encoding": "voxels"}, "encoding"),
    ({"albedo_probability": 0.7, "textureless_probability": 0.5}, "textureless_probability"),
    ({"background_color": (2, 0, 0)}, "background_color"), ({"target_faces": 2}, "target_faces"),
    ({"entropy_weight": -1}, "entropy_weight"), ({"no_such_option": 1}, "no_such_option"),
])
def test_bad_settings_name_the_field(overrides, field, tmp_path):
    with pytest.raises(InputError) as error:
        generate_3d("a teapot", tmp_path / "out", **overrides)
    assert error.value.field == field
    assert not (tmp_path / "out").exists()


def test_bad_inputs_are_clear_errors_before_any_work(tmp_path):
    with pytest.raises(InputError) as error:
        generate_3d("   ", tmp_path / "out")
    assert error.value.field == "prompt"
    with pytest.raises(InputError) as error:
        generate_3d("a teapot", tmp_path / "out", model=str(tmp_path / "no_model_here"))
    assert error.value.field == "model"
    with pytest.raises(InputError) as error:
        generate_3d("a teapot", tmp_path / "out", guidance="sd15")
    assert error.value.field == "guidance"
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "notes.txt").write_text("mine")
    with pytest.raises(InputError) as error:
        generate_3d("a teapot", busy)
    assert error.value.file == str(busy) and (busy / "notes.txt").read_text() == "mine"
    empty = tmp_path / "prompts.txt"
    empty.write_text("# nothing yet\n\n")
    with pytest.raises(InputError) as error:
        read_prompts(empty)
    assert error.value.file == str(empty)


# ---------------------------------------------------------------------------- batch and CLI


def test_batch_skips_finished_prompts_and_resumes_the_interrupted_one(tiny_model, tmp_path, single_thread):
    _, guidance = tiny_model
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# props for the level\na wooden chair\na red teapot\n\na wooden chair\na small cactus\n")
    assert read_prompts(prompts) == ["a wooden chair", "a red teapot", "a small cactus"]
    out = tmp_path / "batch"
    settings = dict(guidance=guidance, steps=4, **TINY_SETTINGS)

    calls = []

    def stop_in_the_second_prompt():  # polled once per step: 4 steps of the first prompt, then 2 of the second
        calls.append(1)
        return len(calls) > 6

    with pytest.raises(JobCancelled):
        batch_generate(prompts, out, should_stop=stop_in_the_second_prompt, **settings)
    summary = json.loads((out / "summary.json").read_text())
    assert [e["status"] for e in summary["entries"]] == ["generated", "cancelled", "pending"]
    first = out / prompt_folder_name("a wooden chair") / "result.json"
    first_written = first.stat().st_mtime_ns

    result = batch_generate(prompts, out, **settings)
    assert [e.status for e in result.entries] == ["skipped", "resumed", "generated"]
    assert first.stat().st_mtime_ns == first_written  # the finished prompt was left alone
    for entry in result.entries:
        manifest = json.loads((out / entry.folder / "result.json").read_text())
        assert manifest["prompt"] == entry.prompt and entry.steps == 4
    second_events = read_events(out / f"{prompt_folder_name('a red teapot')}.events.jsonl")
    assert any(e.get("message") == "resuming from step 2 of 4" for e in second_events)
    table = (out / "summary.md").read_text()
    assert table == result.table and len(table.strip().splitlines()) == 2 + 3


def test_cli_text3d_and_batch(tiny_model, tmp_path, capsys, single_thread):
    folder, _ = tiny_model
    options = ["--model", str(folder), "--steps", "3", "--resolution", "12", "--target-faces", "300",
               "--texture-size", "32", "--set", "num_samples=16", "--set", "mesh_resolution=24", "--set",
               "turntable_frames=2", "--set", "turntable_resolution=16", "--set", "occupancy_resolution=16",
               "--set", "fov_range_deg=[45, 50]"]
    out = tmp_path / "lamp"
    assert cli.main(["text3d", "--prompt", "a desk lamp", "--out", str(out), *options]) == 0
    printed = json.loads(capsys.readouterr().out)
    assert printed["out_dir"] == str(out) and printed["metrics"]["steps"] == 3
    assert all(Path(path).exists() for path in printed["files"].values())
    assert json.loads((out / "result.json").read_text())["config"]["fov_range_deg"] == [45.0, 50.0]
    assert (tmp_path / "lamp.events.jsonl").is_file()

    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a desk lamp\na stool\n")
    batch_out = tmp_path / "batch"
    assert cli.main(["batch", str(prompts), "--out", str(batch_out), *options]) == 0
    first = capsys.readouterr().out
    assert first.count("| generated |") == 2 and "summary:" in first
    assert cli.main(["batch", str(prompts), "--out", str(batch_out), *options]) == 0
    assert capsys.readouterr().out.count("| skipped |") == 2

    assert cli.main(["text3d", "--prompt", "a lamp", "--out", str(tmp_path / "x"), "--set", "bogus=1"]) == 2
    assert "bogus" in capsys.readouterr().err
    assert cli.main(["text3d", "--prompt", "a lamp", "--out", str(tmp_path / "y"), "--set", "steps"]) == 2


def test_the_oracle_needs_no_prompt(spot, tmp_path):
    """The oracle's target is the answer: a run with no prompt goes ahead and records the oracle's
    stand-in prompt; without the oracle an empty prompt is still an error naming the field."""
    oracle = Text3DOracle(OracleDenoiser("space_to_depth", device="cpu"), MeshTarget(spot))
    result = generate_3d(None, tmp_path / "out", guidance=oracle, steps=2, **TINY_SETTINGS)
    recorded = json.loads((result.out_dir / "result.json").read_text())
    assert json.dumps(recorded).count("(oracle reference object)") >= 1
    with pytest.raises(InputError) as error:
        generate_3d(None, tmp_path / "no_oracle")
    assert error.value.field == "prompt"

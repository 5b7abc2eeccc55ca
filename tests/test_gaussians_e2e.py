"""End to end on a scene rendered by the real Blender: job folder -> training -> PLY, turntable, metrics."""

import json
import shutil
import subprocess
import sys

import imageio.v3 as iio
import pytest

from radiantforge.data.transforms import load_nerf_dataset
from radiantforge.events import read_events
from radiantforge.gaussians.formats import convert_splats
from radiantforge.gaussians.ply import load_gaussian_ply
from radiantforge.gaussians.train import GaussianTrainConfig, evaluate_splats, init_gaussians
from radiantforge.jobs import run_job, write_job

ITERS = 300


@pytest.fixture(scope="module")
def finished_job(tiny_blender_dataset, tmp_path_factory):
    job = tmp_path_factory.mktemp("e2e") / "job"
    write_job(job, "gaussians", {"iters": ITERS, "sh_degree": 1, "turntable_frames": 8, "turntable_size": 64,
                                 "checkpoint_every": 100})
    shutil.copytree(tiny_blender_dataset, job / "data", dirs_exist_ok=True)
    outcome = run_job(job)
    assert outcome["state"] == "finished", outcome
    return job, outcome


def test_training_on_a_blender_scene_beats_its_start(finished_job):
    job, outcome = finished_job
    dataset = load_nerf_dataset(job / "data")
    initial, _ = init_gaussians(dataset, GaussianTrainConfig(steps=ITERS, sh_degree=1))
    initial_psnr = evaluate_splats(initial, dataset.test, dataset.background, device="cpu")["psnr"]
    metrics = json.loads((job / "result" / "metrics.json").read_text())
    assert metrics["split"] == "test" and metrics["n_views"] == len(dataset.test)
    assert metrics["psnr"] > initial_psnr + 6.0, (initial_psnr, metrics["psnr"])
    assert metrics["psnr"] > 22.0 and metrics["ssim"] > 0.8
    assert metrics["lpips"] is None and "not computed" in metrics["lpips_status"]
    # the PLY holds what was evaluated: re-evaluating it gives the same PSNR
    splats = load_gaussian_ply(job / "result" / "point_cloud.ply")
    again = evaluate_splats(splats, dataset.test, dataset.background, device="cpu")["psnr"]
    assert abs(again - metrics["psnr"]) < 1e-3


def test_result_folder_lists_every_file_with_its_role(finished_job):
    job, outcome = finished_job
    result = json.loads((job / "result" / "result.json").read_text())
    assert result == outcome["result"]
    roles = {entry["role"] for entry in result["files"]}
    assert {"gaussians", "metrics", "test_render", "turntable", "result"} <= roles
    for entry in result["files"]:
        assert (job / "result" / entry["path"]).exists(), entry
    gif = [e for e in result["files"] if e["role"] == "turntable" and e["format"] == "gif"][0]
    frames = iio.imread(job / "result" / gif["path"], index=None)
    assert frames.shape[:3] == (8, 64, 64)
    # the object is in frame: the centre differs from the white background, the corners mostly do not
    assert (frames[:, 24:40, 24:40] < 200).any(axis=-1).mean() > 0.5
    events = read_events(job / "events.jsonl")
    kinds = [e["type"] for e in events]
    assert kinds[0] == "started" and kinds[-1] == "finished" and "progress" in kinds and "preview" in kinds
    assert (job / "result" / "preview.png").is_file()


def test_running_a_finished_job_again_changes_nothing(finished_job):
    job, outcome = finished_job
    before = (job / "result" / "point_cloud.ply").stat().st_mtime_ns
    again = run_job(job)
    assert again["state"] == "finished" and again["result"] == outcome["result"]
    assert (job / "result" / "point_cloud.ply").stat().st_mtime_ns == before


def test_cli_render_and_eval_read_the_trained_splats_in_any_format(finished_job, tmp_path):
    job, _ = finished_job
    ply = job / "result" / "point_cloud.ply"
    render = subprocess.run([sys.executable, "-m", "radiantforge", "render", str(ply), "--orbit", "4", "--size", "48x32",
                             "--depth", "--out", str(tmp_path / "turntable")], capture_output=True, text=True, timeout=120)
    assert render.returncode == 0, render.stderr
    files = json.loads(render.stdout)
    assert {"gif", "mp4", "frames", "depth_gif"} <= set(files)
    assert iio.imread(files["gif"], index=None).shape[:3] == (4, 32, 48)
    evaluation = subprocess.run([sys.executable, "-m", "radiantforge", "eval", str(ply), str(job / "data"),
                                 "--out", str(tmp_path / "eval")], capture_output=True, text=True, timeout=120)
    assert evaluation.returncode == 0, evaluation.stderr
    metrics = json.loads(evaluation.stdout)
    trained = json.loads((job / "result" / "metrics.json").read_text())
    assert abs(metrics["psnr"] - trained["psnr"]) < 1e-3

    # The other splat formats are read too: glTF keeps every value, so the same PSNR.
    glb = tmp_path / "trained.glb"
    convert_splats(ply, glb)
    from_glb = subprocess.run([sys.executable, "-m", "radiantforge", "eval", str(glb), str(job / "data")],
                              capture_output=True, text=True, timeout=120)
    assert from_glb.returncode == 0, from_glb.stderr
    assert abs(json.loads(from_glb.stdout)["psnr"] - trained["psnr"]) < 1e-3
    unknown = subprocess.run([sys.executable, "-m", "radiantforge", "render", str(tmp_path / "scene.obj"), "--out",
                              str(tmp_path / "o")], capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "scene.obj" in unknown.stderr and ".spz" in unknown.stderr, unknown.stderr


def test_cli_trains_with_the_rasterizer_asked_for(tiny_blender_dataset, tmp_path):
    out = tmp_path / "out"
    trained = subprocess.run([sys.executable, "-m", "radiantforge", "train-gaussians", str(tiny_blender_dataset),
                              "--out", str(out), "--steps", "20", "--sh-degree", "0", "--rasterizer", "torch"],
                             capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    result = json.loads((out / "result.json").read_text())
    assert result["config"]["rasterize_backend"] == "torch" and result["steps"] == 20
    unknown = subprocess.run([sys.executable, "-m", "radiantforge", "train-gaussians", str(tiny_blender_dataset),
                              "--out", str(tmp_path / "other"), "--rasterizer", "vulkan"],
                             capture_output=True, text=True, timeout=120)
    assert unknown.returncode == 2 and "--rasterizer" in unknown.stderr and "native" in unknown.stderr


def test_cli_errors_name_the_problem(tmp_path):
    missing = subprocess.run([sys.executable, "-m", "radiantforge", "train-gaussians", str(tmp_path / "nowhere"),
                              "--out", str(tmp_path / "out")], capture_output=True, text=True, timeout=120)
    assert missing.returncode == 2 and "nowhere" in missing.stderr and "Traceback" not in missing.stderr
    bad_colour = subprocess.run([sys.executable, "-m", "radiantforge", "render", "x.ply", "--out", "o",
                                 "--background", "red"], capture_output=True, text=True, timeout=60)
    assert bad_colour.returncode == 2 and "R,G,B" in bad_colour.stderr

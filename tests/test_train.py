"""Gaussian training end to end on a small synthetic scene.

The scene is a known set of Gaussians rendered with the project's rasterizer from an orbit of
cameras and written to disk in the NeRF-synthetic layout (RGBA PNGs + transforms_*.json), so
training goes through the real loader, the real renderer and the real result folder.
"""

from __future__ import annotations

import json
import math
import sys

import numpy as np
import pytest
import torch

from radiantforge.cameras import focal_from_fov, intrinsics_matrix, look_at_c2w_gl, Cameras, fibonacci_directions
from radiantforge.errors import InputError, JobCancelled
from radiantforge.events import EventLog, read_events
from radiantforge.gaussians import model
from radiantforge.gaussians.splats import GaussianSplats, rgb_to_sh0
from radiantforge.gaussians.train import (
    GaussianTrainConfig,
    checkpoint_path,
    evaluate_ply,
    evaluate_splats,
    init_gaussians,
    train_gaussians,
    view_for_step,
)

IMAGE_SIZE = 40
FOV_X_DEG = 40.0
CAMERA_DISTANCE = 3.0
SCENE_RADIUS = 0.5  # the known Gaussians lie in a ball of this radius around the origin
N_SCENE_GAUSSIANS = 150
N_TRAIN_VIEWS = 16
N_TEST_VIEWS = 4
TRAIN_ITERS = 300
EVAL_EVERY = 100

# Small runs: few random initial points and a cap that keeps every step cheap. At 40 px the pure-torch
# rasterizer is the fastest CPU path (the native one pays a JIT compile and per-call overhead); the
# rasterizer's own tests hold the backends to agreeing with each other.
FAST_OPTIONS = dict(init_points=400, max_gaussians=3000, sh_degree=1, sh_degree_interval=150, device="cpu",
                    checkpoint_every=0, rasterize_backend="torch")


def known_scene(seed: int = 0) -> GaussianSplats:
    """Opaque coloured blobs filling a ball: a solid object with texture to recover."""
    generator = torch.Generator().manual_seed(seed)
    direction = torch.nn.functional.normalize(torch.randn(N_SCENE_GAUSSIANS, 3, generator=generator), dim=-1)
    radius = SCENE_RADIUS * torch.rand(N_SCENE_GAUSSIANS, 1, generator=generator) ** (1 / 3)
    rgb = torch.rand(N_SCENE_GAUSSIANS, 3, generator=generator)
    return GaussianSplats(
        means=direction * radius,
        scales=torch.log(0.06 + 0.06 * torch.rand(N_SCENE_GAUSSIANS, 3, generator=generator)),
        quats=torch.nn.functional.normalize(torch.randn(N_SCENE_GAUSSIANS, 4, generator=generator), dim=-1),
        opacities=torch.full((N_SCENE_GAUSSIANS,), 3.0),  # sigmoid(3) = 0.95
        sh0=rgb_to_sh0(rgb)[:, None, :],
        shN=torch.zeros(N_SCENE_GAUSSIANS, 0, 3),
    )


def orbit(n: int, offset: float) -> Cameras:
    """Cameras spread over the sphere around the origin (``offset`` rotates the spiral for test views)."""
    directions = fibonacci_directions(n)
    angle = torch.tensor(offset)
    rotation = torch.tensor([[torch.cos(angle), -torch.sin(angle), 0.0], [torch.sin(angle), torch.cos(angle), 0.0],
                             [0.0, 0.0, 1.0]])
    eyes = CAMERA_DISTANCE * directions @ rotation.T
    focal = focal_from_fov(math.radians(FOV_X_DEG), IMAGE_SIZE)
    K = intrinsics_matrix(focal, focal, IMAGE_SIZE / 2, IMAGE_SIZE / 2)
    return Cameras(look_at_c2w_gl(eyes, torch.zeros(3)), K.expand(n, 3, 3), IMAGE_SIZE, IMAGE_SIZE)


def write_split(root, split: str, cameras: Cameras, splats: GaussianSplats) -> None:
    """Render ``splats`` from ``cameras`` and write RGBA PNGs + transforms_<split>.json."""
    import imageio.v3 as iio

    from radiantforge.gaussians.rasterize import rasterize

    params = splats.activated()
    frames = []
    (root / split).mkdir(parents=True)
    for index in range(len(cameras)):
        with torch.no_grad():
            premultiplied, alpha, _, _ = rasterize(
                params["means"], params["quats"], params["scales"], params["opacities"], params["sh_coeffs"],
                cameras[index].world_to_camera_cv(), cameras.intrinsics[index : index + 1], IMAGE_SIZE, IMAGE_SIZE,
                sh_degree=0, background=None, backend="torch",
            )
        # PNG stores straight (not premultiplied) colour; the loader composites it over the background.
        straight = premultiplied[0] / alpha[0].clamp(min=1e-6)
        rgba = torch.cat([straight, alpha[0]], dim=-1).clamp(0, 1)
        iio.imwrite(root / split / f"r_{index}.png", (rgba.numpy() * 255 + 0.5).astype(np.uint8))
        frames.append({"file_path": f"./{split}/r_{index}", "transform_matrix": cameras.c2w_gl[index].tolist()})
    document = {"camera_angle_x": math.radians(FOV_X_DEG), "frames": frames}
    (root / f"transforms_{split}.json").write_text(json.dumps(document))


@pytest.fixture(scope="module")
def scene_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("synthetic_scene")
    splats = known_scene()
    write_split(root, "train", orbit(N_TRAIN_VIEWS, 0.0), splats)
    write_split(root, "test", orbit(N_TEST_VIEWS, 0.7), splats)
    return root


@pytest.fixture(scope="module")
def dataset(scene_dir):
    from radiantforge.data.transforms import load_nerf_dataset

    return load_nerf_dataset(scene_dir)


@pytest.fixture(scope="module")
def no_lpips_weights(tmp_path_factory):
    """An empty torch hub cache, so LPIPS must report itself as not computed (and download nothing)."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TORCH_HOME", str(tmp_path_factory.mktemp("torch_home")))
        yield


@pytest.fixture(scope="module")
def trained(scene_dir, dataset, no_lpips_weights, tmp_path_factory):
    """One full training run shared by the tests that inspect its outcome."""
    work = tmp_path_factory.mktemp("trained")
    events_path = work / "events.jsonl"
    config = GaussianTrainConfig(steps=TRAIN_ITERS, eval_every=EVAL_EVERY, progress_every=10, **FAST_OPTIONS)
    initial_splats, _ = init_gaussians(dataset, config)
    initial = evaluate_splats(initial_splats, dataset.test, dataset.background, device="cpu", lpips_net=None,
                              backend="torch")
    result = train_gaussians(scene_dir, work / "result", config=config, events=EventLog(events_path),
                             preview_dir=work)
    return {"result": result, "initial": initial, "events": read_events(events_path), "work": work,
            "initial_count": len(initial_splats)}


def test_training_lowers_the_loss_and_raises_heldout_psnr(trained):
    progress = [e for e in trained["events"] if e["type"] == "progress"]
    assert len(progress) >= 10
    losses = [e["loss"] for e in progress]
    assert np.mean(losses[-3:]) < 0.5 * np.mean(losses[:3])
    initial_psnr, final_psnr = trained["initial"]["psnr"], trained["result"].metrics["psnr"]
    assert final_psnr > initial_psnr + 8.0, (initial_psnr, final_psnr)
    assert final_psnr > 22.0
    assert trained["result"].metrics["ssim"] > trained["initial"]["ssim"]
    # The preview PSNR in the events (a held-out view) rose too.
    assert progress[-1]["psnr"] > progress[0]["psnr"] + 5.0
    assert progress[-1]["step"] == progress[-1]["total"] == TRAIN_ITERS
    assert all(e["eta"] is not None and e["elapsed"] >= 0 for e in progress)
    # The held-out evaluations during training, and the last one agrees with the final evaluation.
    history = trained["result"].history
    assert [h["step"] for h in history] == [100, 200, 300]
    assert history[0]["psnr"] < history[-1]["psnr"]
    assert history[-1]["psnr"] == pytest.approx(final_psnr, abs=1e-3)
    assert [h["elapsed"] for h in history] == sorted(h["elapsed"] for h in history)


def test_densification_changes_the_count(trained):
    counts = [e["n_gaussians"] for e in trained["events"] if e["type"] == "progress"]
    assert trained["initial_count"] == FAST_OPTIONS["init_points"]
    assert max(counts) > trained["initial_count"]  # grew
    assert len(set(counts)) > 2  # and kept changing as it grew and pruned
    assert trained["result"].n_gaussians == counts[-1] == len(trained["result"].splats)


def test_result_folder_names_every_file_and_round_trips(trained, dataset):
    from radiantforge.gaussians.ply import load_gaussian_ply

    result = trained["result"]
    index = json.loads((result.out_dir / "result.json").read_text())
    assert index["kind"] == "gaussians"
    roles = {entry["role"] for entry in index["files"]}
    assert {"gaussians", "metrics", "result", "test_render"} <= roles
    for entry in index["files"]:
        if entry.get("format") == "frames":  # a turntable's PNG frames are listed as their folder
            assert any((result.out_dir / entry["path"]).glob("frame_*.png")), entry
        else:
            assert (result.out_dir / entry["path"]).is_file(), entry
    assert sum(entry["role"] == "test_render" for entry in index["files"]) == N_TEST_VIEWS
    assert "random points" in index["init_source"]
    # No partial folders are left beside the result.
    assert [p.name for p in result.out_dir.parent.iterdir() if "partial" in p.name] == []

    loaded = load_gaussian_ply(result.files["gaussians"])
    for name, tensor in result.splats.as_dict().items():
        assert torch.equal(getattr(loaded, name), tensor), name

    metrics = json.loads(result.files["metrics"].read_text())
    assert metrics["psnr"] == pytest.approx(result.metrics["psnr"])
    assert metrics["lpips"] is None and metrics["lpips_status"].startswith("not computed")
    assert metrics["lpips_weights_path"].endswith("alexnet-owt-7be5be79.pth")
    # A side-by-side render: render on the left, ground truth on the right.
    import imageio.v3 as iio

    first = iio.imread(result.out_dir / metrics["per_view"][0]["render"])
    assert first.shape == (IMAGE_SIZE, 2 * IMAGE_SIZE, 3)
    truth = (dataset.test.images[0].numpy() * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(first[:, IMAGE_SIZE:], truth)
    assert (trained["work"] / "preview.png").is_file()


def test_evaluate_ply_reproduces_the_training_metrics(trained, scene_dir, tmp_path):
    result = trained["result"]
    metrics = evaluate_ply(result.files["gaussians"], scene_dir, out_dir=tmp_path / "eval", device="cpu", lpips_net=None,
                           backend="torch")
    assert metrics["psnr"] == pytest.approx(result.metrics["psnr"], abs=1e-4)
    assert (tmp_path / "eval" / "metrics.json").is_file()
    with pytest.raises(InputError, match="split"):
        evaluate_ply(result.files["gaussians"], scene_dir, split="val", device="cpu", lpips_net=None)


def test_a_finished_result_is_never_overwritten_silently(trained, scene_dir):
    out_dir = trained["result"].out_dir
    before = (out_dir / "result.json").read_text()
    with pytest.raises(InputError, match="finished result"):
        train_gaussians(scene_dir, out_dir, steps=5, **FAST_OPTIONS)
    assert (out_dir / "result.json").read_text() == before


def test_cap_on_the_number_of_gaussians_holds(dataset, tmp_path):
    cap = 480
    events_path = tmp_path / "events.jsonl"
    options = {**FAST_OPTIONS, "max_gaussians": cap, "progress_every": 4}
    result = train_gaussians(dataset, tmp_path / "out", steps=120, events=EventLog(events_path), test_renders=False,
                             **options)
    counts = [e["n_gaussians"] for e in read_events(events_path) if e["type"] == "progress"]
    assert max(counts) <= cap
    assert max(counts) >= cap - 5  # the scene wants more: growth ran into the cap
    assert result.n_gaussians <= cap


@pytest.mark.parametrize("backend", ["torch", "native"])
def test_stop_checkpoints_and_resume_is_bit_exact(dataset, tmp_path, backend):
    iters, stop_after = 80, 30  # the strategy refines and resets at step 30, using statistics from before the stop
    options = {**FAST_OPTIONS, "test_renders": False, "progress_every": 10, "rasterize_backend": backend}

    straight = train_gaussians(dataset, tmp_path / "straight", steps=iters, **options)

    calls = {"n": 0}

    def stop_after_k_steps() -> bool:
        calls["n"] += 1
        return calls["n"] > stop_after

    events_path = tmp_path / "events.jsonl"
    checkpoints = tmp_path / "checkpoints"
    with pytest.raises(JobCancelled):
        train_gaussians(dataset, tmp_path / "resumed", steps=iters, checkpoint_dir=checkpoints,
                        events=EventLog(events_path), should_stop=stop_after_k_steps, **options)
    cancelled = [e for e in read_events(events_path) if e["type"] == "cancelled"]
    assert len(cancelled) == 1 and cancelled[0]["step"] == stop_after
    assert checkpoint_path(checkpoints).is_file()
    assert not (tmp_path / "resumed").exists()  # nothing half-done under the result name

    with pytest.raises(InputError) as refused:
        train_gaussians(dataset, tmp_path / "resumed", steps=iters + 1, checkpoint_dir=checkpoints, resume=True,
                        **options)
    assert refused.value.field == "steps"

    resumed = train_gaussians(dataset, tmp_path / "resumed", steps=iters, checkpoint_dir=checkpoints, resume=True,
                              events=EventLog(events_path), **options)
    for name, tensor in straight.splats.as_dict().items():
        assert torch.equal(getattr(resumed.splats, name), tensor), name
    assert resumed.metrics["psnr"] == straight.metrics["psnr"]


def test_resume_tolerates_a_half_written_preview_of_a_killed_run(dataset, tmp_path):
    """A run killed while writing its live preview leaves a temporary preview beside the real one;
    resuming into that folder must work and clean it up, while a user's own file still refuses it."""
    options = {**FAST_OPTIONS, "test_renders": False, "progress_every": 5}
    out_dir, checkpoints = tmp_path / "result", tmp_path / "checkpoints"
    with pytest.raises(JobCancelled):
        train_gaussians(dataset, out_dir, steps=20, checkpoint_dir=checkpoints, preview_dir=out_dir,
                        should_stop=lambda: len(list(out_dir.glob("preview.png"))) > 0, **options)
    assert (out_dir / "preview.png").is_file()
    (out_dir / ".preview.png.12345.tmp.png").write_bytes(b"half a png")
    (out_dir / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="not empty"):
        train_gaussians(dataset, out_dir, steps=20, checkpoint_dir=checkpoints, resume=True, **options)
    assert (out_dir / "notes.txt").read_text() == "mine"
    (out_dir / "notes.txt").unlink()
    result = train_gaussians(dataset, out_dir, steps=20, checkpoint_dir=checkpoints, resume=True,
                             preview_dir=out_dir, **options)
    assert (result.out_dir / "result.json").is_file() and (result.out_dir / "preview.png").is_file()
    assert not list(result.out_dir.glob(".preview.png.*"))


def test_auto_trains_with_the_native_rasterizer_and_falls_back_with_a_warning(dataset, tmp_path, monkeypatch):
    """backend "auto" on the CPU: native kernels (announced), ending where the PyTorch rasterizer does;
    without Numba, a warning event and exactly the PyTorch run."""
    from radiantforge.gaussians import native

    options = {**FAST_OPTIONS, "test_renders": False, "steps": 60}
    with_torch = train_gaussians(dataset, tmp_path / "torch", **options)
    monkeypatch.setattr(native, "_ready_dtypes", set())  # as in a fresh process, whatever ran before
    events_path = tmp_path / "native.jsonl"
    with_native = train_gaussians(dataset, tmp_path / "native", events=EventLog(events_path),
                                  **{**options, "rasterize_backend": "auto"})
    infos = [e["message"] for e in read_events(events_path) if e["type"] == "info"]
    assert any(message.startswith("native CPU rasterizer ready") for message in infos), infos
    # The two rasterizers agree to float rounding; over training the runs drift apart a little
    # (densification thresholds, Adam's normalisation), so the end points agree to a fraction of a dB.
    assert abs(with_native.metrics["psnr"] - with_torch.metrics["psnr"]) < 0.5

    monkeypatch.setattr(native, "_failure", None)
    monkeypatch.setattr(native, "_warned", False)
    monkeypatch.setattr(native, "_ready_dtypes", set())
    monkeypatch.setitem(sys.modules, "numba", None)  # import numba now fails
    events_path = tmp_path / "fallback.jsonl"
    with pytest.warns(RuntimeWarning, match="numba"):
        fallback = train_gaussians(dataset, tmp_path / "fallback", events=EventLog(events_path),
                                   **{**options, "rasterize_backend": "auto"})
    warnings = [e["message"] for e in read_events(events_path) if e["type"] == "warning"]
    assert any("PyTorch rasterizer instead" in message and "Numba" in message
               and native.running_command() in message for message in warnings), warnings
    for name, tensor in with_torch.splats.as_dict().items():
        assert torch.equal(getattr(fallback.splats, name), tensor), name


def test_resume_without_a_checkpoint_names_the_file(dataset, tmp_path):
    with pytest.raises(InputError, match="no checkpoint") as caught:
        train_gaussians(dataset, tmp_path / "out", checkpoint_dir=tmp_path / "ck", resume=True, **FAST_OPTIONS)
    assert caught.value.file.endswith("gaussians_checkpoint.pt")


@pytest.mark.parametrize(
    "options, field",
    [({"steps": 0}, "steps"), ({"sh_degree": 4}, "sh_degree"), ({"background": (2, 0, 0)}, "background"),
     ({"ssim_lambda": -0.1}, "ssim_lambda"), ({"strategy": "magic"}, "strategy"), ({"device": "tpu"}, "device"),
     ({"max_gaussians": 0}, "max_gaussians"), ({"steps": 1.5}, "steps"), ({"test_renders": "yes"}, "test_renders")],
)
def test_bad_config_names_the_field(options, field):
    with pytest.raises(InputError) as caught:
        GaussianTrainConfig(**options)
    assert caught.value.field == field


def test_unknown_option_and_bad_data_are_input_errors(tmp_path):
    with pytest.raises(InputError) as caught:
        train_gaussians(tmp_path, tmp_path / "out", bogus=1)
    assert caught.value.field == "bogus"
    with pytest.raises(InputError):
        train_gaussians(tmp_path / "missing", tmp_path / "out", steps=5)


def test_random_init_lies_in_the_visual_hull(dataset):
    generator = torch.Generator().manual_seed(0)
    points = model.initial_points(dataset, 500, generator=generator)
    assert points.kind == "random" and len(points.xyz) == 500
    # The candidates come from a box of half-size ~3.3 around the cameras; the alpha masks carve
    # them down to the object's silhouette hull, which hugs the ball of radius 0.5 (+ blob size).
    assert points.xyz.norm(dim=-1).max() < SCENE_RADIUS + 0.35
    assert torch.equal(points.rgb, torch.full_like(points.xyz, model.RANDOM_INIT_GREY))


def test_points3d_init_uses_the_cloud_with_neighbour_scales(tmp_path):
    spacing = 0.1
    grid = torch.stack(torch.meshgrid(*[torch.arange(6) * spacing] * 3, indexing="ij"), -1).reshape(-1, 3)
    colours = torch.rand(len(grid), 3, generator=torch.Generator().manual_seed(0))
    points = model.InitialPoints(grid, colours, "test grid", "points3d")
    splats = model.init_splats(points, sh_degree=3)
    # Every grid point has at least three neighbours at exactly one spacing.
    assert torch.allclose(torch.exp(splats.scales), torch.full((len(grid), 3), spacing), atol=1e-6)
    assert torch.allclose(torch.sigmoid(splats.opacities), torch.full((len(grid),), 0.1))
    assert torch.equal(splats.quats, torch.tensor([[1.0, 0, 0, 0]]).expand(len(grid), 4))
    assert splats.shN.shape == (len(grid), 15, 3) and splats.shN.abs().sum() == 0
    assert torch.allclose(splats.sh0[:, 0] * 0.28209479177387814 + 0.5, colours, atol=1e-6)


def test_dataset_point_cloud_is_preferred(dataset):
    class WithPoints:
        train, test, background = dataset.train, dataset.test, dataset.background
        points = model.InitialPoints(torch.zeros(7, 3), torch.ones(7, 3), "", "points3d")
        scene_extent = dataset.scene_extent

    points = model.initial_points(WithPoints(), 500, generator=torch.Generator())
    assert points.kind == "points3d" and len(points.xyz) == 7 and "point cloud" in points.source


def test_learning_rate_schedule_and_view_order():
    extent = 2.5
    # 30k steps and more: 3DGS's decay, 1.6e-4 -> 1.6e-6 times the extent, log-linear
    for total in (30_000, 60_000):
        assert model.means_learning_rate(0, total, extent) == pytest.approx(1.6e-4 * extent)
        assert model.means_learning_rate(total, total, extent) == pytest.approx(1.6e-6 * extent)
        assert model.means_learning_rate(total // 2, total, extent) == pytest.approx(1.6e-5 * extent)
    # shorter runs decay less: to 0.01 ** sqrt(steps / 30k), 0.305 of the start at 2,000 steps
    assert model.means_learning_rate(2000, 2000, extent) == pytest.approx(1.6e-4 * 0.3045 * extent, rel=1e-3)
    assert model.means_learning_rate(1000, 2000, extent) == pytest.approx(1.6e-4 * 0.3045 ** 0.5 * extent, rel=1e-3)
    # and their scales and base colour learn faster, (30k / steps) ** 0.25 up to 2x; the rest as 3DGS
    short, reference = model.base_learning_rates(extent, 2000), model.base_learning_rates(extent, 30_000)
    for name, factor in (("scales", 15 ** 0.25), ("sh0", 15 ** 0.25), ("shN", 15 ** 0.25), ("means", 1.0),
                         ("quats", 1.0), ("opacities", 1.0)):
        assert short[name] == pytest.approx(factor * reference[name])
    assert model.base_learning_rates(extent, 100)["sh0"] == pytest.approx(2.0 * reference["sh0"])
    assert reference == model.base_learning_rates(extent, 100_000)
    epoch = [view_for_step(step, 7, seed=3) for step in range(7)]
    assert sorted(epoch) == list(range(7))  # every view once per epoch
    assert [view_for_step(step, 7, seed=3) for step in range(7)] == epoch  # reproducible
    assert [view_for_step(step, 7, seed=3) for step in range(7, 14)] != epoch  # a new order next epoch


def test_mcmc_strategy_trains_too(dataset, tmp_path):
    cap = 900
    events_path = tmp_path / "events.jsonl"
    options = {**FAST_OPTIONS, "max_gaussians": cap}
    config = GaussianTrainConfig(steps=200, strategy="mcmc", test_renders=False, progress_every=20, **options)
    initial_splats, _ = init_gaussians(dataset, config)
    assert torch.allclose(torch.sigmoid(initial_splats.opacities), torch.tensor(0.5))  # MCMC's starting opacity
    initial = evaluate_splats(initial_splats, dataset.test, dataset.background, device="cpu", lpips_net=None,
                              backend="torch")
    result = train_gaussians(dataset, tmp_path / "out", config=config, events=EventLog(events_path))
    counts = [e["n_gaussians"] for e in read_events(events_path) if e["type"] == "progress"]
    assert counts[0] <= counts[-1] == cap  # a short run grows to its cap too (strategy.mcmc_growth)
    # MCMC starts from half-opaque Gaussians (a better first picture): a smaller rise.
    assert result.metrics["psnr"] > initial["psnr"] + 4.0, (initial["psnr"], result.metrics["psnr"])

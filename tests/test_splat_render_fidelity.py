"""Known answer: Blender's pictures of a trained splat file against the backend rasterizer's image of the same camera.

A real trained file (train-1000.ply, SH degree 3: view-dependent colour) is imported with the
real bpy and seen from one camera three ways: the viewport's offscreen Gaussian draw
(addon/viewport.py, Blender's gpu module: in background mode it works once a Workbench render
has initialised the GPU, here Mesa's llvmpipe), EEVEE and Cycles with the Gaussian sprites.
Each is compared, on the object's pixels, with ``render_views`` of the backend. Measured on this
machine (96 x 96): viewport 104 dB, EEVEE (1 sample) 62.5 dB, Cycles (64 samples) 72.5 dB, with the
render settings the import sets (addon/render_setup.py: Raw view transform, 0.01 px filter, 512
transparent bounces with none ended at random; nothing set by hand here); and Cycles on a dense file
(donut-sh0.ply, 45k splats, 48 x 48, 4 samples) 62.4 dB. The floors below are those minus a margin,
so a regression in any path fails.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from blender_helpers import run_bpy, splat_asset
from radiantforge.gaussians.ply import load_gaussian_ply
from radiantforge.gaussians.render import render_views, splat_framing, turntable_cameras

SIZE = 96
VIEWPORT_FLOOR_DB = 60.0  # measured 104
EEVEE_FLOOR_DB = 50.0  # measured 62.5
CYCLES_FLOOR_DB = 60.0  # measured 72.5 (Cycles' fixed seed: the same noise every run)
# A dense scene (donut-sh0.ply, 45k splats, 48 px, 4 Cycles samples): 62.4 dB with the import's settings,
# 20 dB while Cycles' Russian roulette could end transparent bounces (min transparent bounces 0).
DENSE_SIZE = 48
DENSE_CYCLES_FLOOR_DB = 50.0
OBJECT_ALPHA = 0.02  # object pixels: the backend's alpha above this

SCRIPT = """
import sys
import bpy
import mathutils
import numpy as np
from radiantforge_addon.importers import gaussians
from radiantforge_addon import render_setup, viewport

ply_path, camera_path, out_prefix, size = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
engines, cycles_samples = sys.argv[5].split(","), int(sys.argv[6])
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
saved = np.load(camera_path)
camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
scene.collection.objects.link(camera)
scene.camera = camera
camera.matrix_world = mathutils.Matrix(saved["c2w_gl"].tolist())
camera.data.sensor_fit = "HORIZONTAL"
camera.data.angle = float(saved["fov_x"])
scene.render.resolution_x = scene.render.resolution_y = size
result = {}

# The gpu module refuses to draw in background mode until a render has initialised the GPU.
scene.render.engine = "BLENDER_WORKBENCH"
bpy.ops.render.render()
obj = gaussians.import_gaussians(ply_path)
try:
    image = viewport.draw_splats_offscreen([obj], camera, size, size)
    np.save(out_prefix + "viewport.npy", image)
except SystemError as exc:
    result["viewport_error"] = str(exc)

scene.render.film_transparent = True
# The import set the view transform (Raw), Cycles' filter width and transparent bounces: not set here.
result["render_setup"] = render_setup.read_record(scene)
scene.render.image_settings.file_format = "OPEN_EXR"
for engine in engines:
    scene.render.engine = engine
    if engine == "CYCLES":
        scene.cycles.samples = cycles_samples
        scene.cycles.device = "CPU"
        scene.cycles.use_denoising = False
    else:
        scene.eevee.taa_render_samples = 1
    scene.render.filepath = out_prefix + engine + ".exr"
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(scene.render.filepath)
    pixels = np.array(image.pixels[:], dtype=np.float32).reshape(size, size, 4)[::-1]
    np.save(out_prefix + engine + ".npy", pixels)
report(result)
"""


def _psnr(image, reference, mask):
    mse = float(((np.clip(image, 0.0, 1.0) - reference)[mask] ** 2).mean())
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def render_in_blender(tmp_path, asset: str, size: int, engines: str, cycles_samples: int):
    """(what the script reported, out prefix, backend image (size, size, 3), object mask) for one test camera."""
    path = splat_asset(asset)
    splats = load_gaussian_ply(path)
    centre, radius = splat_framing(splats)
    cameras = turntable_cameras(centre, radius, 1, size, size, elevation_deg=30.0)
    fov_x = 2.0 * math.atan(0.5 * size / float(cameras.intrinsics[0, 0, 0]))
    np.savez(tmp_path / "camera.npz", c2w_gl=cameras.c2w_gl[0].numpy(), fov_x=fov_x)
    rgb, alpha, _ = render_views(splats, cameras, background=(0.0, 0.0, 0.0), backend="torch", device="cpu")
    prefix = str(tmp_path / "out_")
    info = run_bpy(SCRIPT, tmp_path, args=[str(path), str(tmp_path / "camera.npz"), prefix, str(size), engines,
                                           str(cycles_samples)], timeout=240)
    mask = alpha[0, ..., 0].numpy() > OBJECT_ALPHA
    assert mask.sum() > size * size / 30  # the object fills a good part of the frame
    return info, prefix, rgb[0].numpy(), mask


@pytest.fixture(scope="module")
def pictures(tmp_path_factory):
    return render_in_blender(tmp_path_factory.mktemp("fidelity"), "train-1000.ply", SIZE, "BLENDER_EEVEE,CYCLES", 64)


def test_viewport_draw_matches_the_backend(pictures):
    info, prefix, reference, mask = pictures
    if "viewport_error" in info:
        pytest.skip(f"Blender's gpu module cannot draw here: {info['viewport_error']}")
    image = np.load(prefix + "viewport.npy")
    assert _psnr(image[..., :3], reference, mask) > VIEWPORT_FLOOR_DB


@pytest.mark.parametrize("engine, floor", [("BLENDER_EEVEE", EEVEE_FLOOR_DB), ("CYCLES", CYCLES_FLOOR_DB)])
def test_final_render_matches_the_backend(pictures, engine, floor):
    info, prefix, reference, mask = pictures
    assert {entry["path"] for entry in info["render_setup"]} == {  # set by the import
        "view_settings.view_transform", "cycles.filter_width", "cycles.transparent_max_bounces",
        "cycles.min_transparent_bounces"}
    image = np.load(prefix + engine + ".npy")
    value = _psnr(image[..., :3], reference, mask)
    print(f"{engine}: {value:.1f} dB")
    assert value > floor
    assert image[0, 0, 3] < 0.01  # the corner is background: transparent film


def test_cycles_matches_the_backend_on_a_dense_scene(tmp_path):
    info, prefix, reference, mask = render_in_blender(tmp_path, "donut-sh0.ply", DENSE_SIZE, "CYCLES", 4)
    value = _psnr(np.load(prefix + "CYCLES.npy")[..., :3], reference, mask)
    print(f"CYCLES dense: {value:.1f} dB")
    assert value > DENSE_CYCLES_FLOOR_DB

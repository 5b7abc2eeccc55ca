"""Blender capture (addon/capture.py, addon/headless.py) checked against Blender itself.

Everything Blender runs in subprocesses with the real ``bpy`` and Blender user folders in a temp
dir. A known scene (a red box with a non-uniform scale, a blue sphere grown by a Displace
modifier, cameras with lens shift, VERTICAL/HORIZONTAL/AUTO sensor fit, a non-square image and
non-square pixels) is captured with Workbench, and:

- every camera's JSON intrinsics and matrix project known points to where Blender's own
  ``world_to_camera_view`` puts them (to 0.01 px), through the backend's GL->CV conversion;
- the rendered alpha matches the silhouettes predicted from the JSON cameras (convex objects:
  the silhouette is the convex hull of the projected evaluated vertices);
- points3d.ply is a binary vertex-only PLY, its points lie on the evaluated surfaces (so the
  modifier was applied) and carry the objects' known flat colours;
- headless bad input exits non-zero with a message naming the problem and writes nothing.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from blender_helpers import run_bpy
from radiantforge.cameras import c2w_gl_to_w2c_cv
from radiantforge.data.transforms import load_nerf_dataset

# Linear-light colours shown flat by Workbench (Object colour, Flat light, Standard view transform).
BOX_LINEAR_RGB = (0.8, 0.2, 0.05)
SPHERE_LINEAR_RGB = (0.05, 0.25, 0.9)
SPHERE_MESH_RADIUS = 0.3
DISPLACE_STRENGTH = 0.4  # no texture: every vertex moves (1 - midlevel 0.5) * 0.4 = 0.2 m outward
SPHERE_EVALUATED_RADIUS = SPHERE_MESH_RADIUS + 0.5 * DISPLACE_STRENGTH
SPHERE_CENTER = (0.55, 0.1, 0.1)
COLLECTION_RESOLUTION = (64, 40)
PIXEL_ASPECT = (1.0, 1.2)

# Shared by the scene script and the checks; the sphere is a UV sphere of these segments/rings.
SCENE_SCRIPT = """
import json, math, os, sys
import bpy
import numpy as np
from bpy_extras.object_utils import world_to_camera_view
from mathutils import Vector
from radiantforge_addon import capture

out = sys.argv[1]
params = json.loads(sys.argv[2])
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene

bpy.ops.mesh.primitive_cube_add(size=2.0, location=(-0.45, -0.1, 0.0), rotation=(0.3, -0.2, 0.5))
box = bpy.context.object
box.name = "Box"
box.scale = (0.35, 0.5, 0.3)
box.color = (*params["box_rgb"], 1.0)
bpy.ops.mesh.primitive_uv_sphere_add(segments=32, ring_count=16, radius=params["sphere_mesh_radius"],
                                     location=params["sphere_center"])
sphere = bpy.context.object
sphere.name = "Sphere"
sphere.color = (*params["sphere_rgb"], 1.0)
bpy.ops.object.shade_smooth()  # displace along smooth vertex normals = a uniformly larger sphere
displace = sphere.modifiers.new("Grow", "DISPLACE")
displace.strength = params["displace_strength"]

scene.render.engine = "BLENDER_WORKBENCH"
scene.display.shading.light = "FLAT"
scene.display.shading.color_type = "OBJECT"
scene.view_settings.view_transform = "Standard"
scene.render.dither_intensity = 0.0
scene.render.resolution_x, scene.render.resolution_y = params["resolution"]
scene.render.resolution_percentage = 100
scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = params["pixel_aspect"]

def add_camera(name, collection, location, lens, fit, shift, sensor=(36.0, 24.0), kind="PERSP"):
    data = bpy.data.cameras.new(name)
    data.type, data.lens, data.sensor_fit = kind, lens, fit
    data.sensor_width, data.sensor_height = sensor
    data.shift_x, data.shift_y = shift
    camera = bpy.data.objects.new(name, data)
    camera.location = location
    direction = Vector((0.0, 0.0, 0.0)) - Vector(location)
    camera.rotation_euler = direction.to_track_quat("-Z", "Y").to_euler()
    collection.objects.link(camera)
    return camera

cams = bpy.data.collections.new("Cams")
scene.collection.children.link(cams)
add_camera("Cam_A", cams, (0.5, -4.5, 1.2), 35.0, "AUTO", (0.1, -0.05))
add_camera("Cam_B", cams, (4.0, 1.0, 2.0), 50.0, "VERTICAL", (-0.08, 0.06), sensor=(36.0, 20.0))
add_camera("Cam_C", cams, (-3.0, 3.0, -1.5), 40.0, "HORIZONTAL", (0.0, 0.12), sensor=(30.0, 24.0))
add_camera("Cam_D", cams, (-1.0, -2.5, 3.5), 45.0, "AUTO", (0.0, 0.0))
ortho = bpy.data.collections.new("OrthoCams")
scene.collection.children.link(ortho)
add_camera("Cam_Ortho", ortho, (0.0, -5.0, 0.0), 50.0, "AUTO", (0.0, 0.0), kind="ORTHO")
bpy.context.view_layer.update()

depsgraph = bpy.context.evaluated_depsgraph_get()
def evaluated_world_vertices(obj):
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    local = np.array([v.co[:] for v in mesh.vertices])
    evaluated.to_mesh_clear()
    matrix = np.array(obj.matrix_world)
    return (local @ matrix[:3, :3].T + matrix[:3, 3]).tolist()

result = {"vertices": {"Box": evaluated_world_vertices(box), "Sphere": evaluated_world_vertices(sphere)},
          "box_matrix": [list(row) for row in box.matrix_world], "cameras": {}}

# Blender's own projection of known points into every camera, under the scene's settings.
rng = np.random.default_rng(7)
probe_points = np.concatenate([np.array(result["vertices"]["Box"]), rng.uniform(-1.0, 1.0, (40, 3))])
for camera in cams.objects:
    ndc = [list(world_to_camera_view(scene, camera, Vector(p))) for p in probe_points]
    result["cameras"][camera.name] = {"ndc": ndc}
result["probe_points"] = probe_points.tolist()

# The same check over many settings without rendering: sensor fits x image shapes x percentage
# x pixel aspect x shift, straight from capture.camera_intrinsics / camera_to_world.
sweep = []
camera = cams.objects["Cam_A"]
for fit in ("AUTO", "HORIZONTAL", "VERTICAL"):
    for size, percentage in (((64, 40), 100), ((40, 64), 100), ((90, 60), 50), ((33, 33), 100)):
        for aspect in ((1.0, 1.0), (1.0, 1.2), (2.0, 1.0)):
            for shift in ((0.0, 0.0), (0.15, -0.1)):
                camera.data.sensor_fit = fit
                camera.data.shift_x, camera.data.shift_y = shift
                scene.render.resolution_x, scene.render.resolution_y = size
                scene.render.resolution_percentage = percentage
                scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = aspect
                k = capture.camera_intrinsics(camera, scene)
                sweep.append({"intrinsics": k.as_dict(), "c2w": capture.camera_to_world(camera).tolist(),
                              "ndc": [list(world_to_camera_view(scene, camera, Vector(p))) for p in probe_points],
                              "label": f"{fit} {size} {percentage}% aspect {aspect} shift {shift}"})
result["sweep"] = sweep
camera.data.sensor_fit, (camera.data.shift_x, camera.data.shift_y) = "AUTO", (0.1, -0.05)
scene.render.resolution_x, scene.render.resolution_y = params["resolution"]
scene.render.resolution_percentage = 100
scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = params["pixel_aspect"]

try:
    capture.camera_intrinsics(ortho.objects["Cam_Ortho"], scene)
    result["ortho_error"] = None
except capture.CaptureError as error:
    result["ortho_error"] = str(error)

# An upper-hemisphere rig: cameras above the objects' centre, all removable afterwards.
counts = (len(bpy.data.objects), len(bpy.data.cameras), len(bpy.data.collections))
rig = capture.create_orbit_rig(scene, [box, sphere], n_views=12, upper_hemisphere=True, resolution=(32, 32))
result["hemisphere"] = {"camera_z": [c.matrix_world.translation.z for c in rig.cameras], "center_z": rig.center[2],
                        "added": len(bpy.data.objects) - counts[0]}
capture.remove_rig(rig.collection)
result["hemisphere"]["restored"] = counts == (len(bpy.data.objects), len(bpy.data.cameras), len(bpy.data.collections))

bpy.ops.wm.save_as_mainfile(filepath=os.path.join(out, "scene.blend"))

# Cancel half-way: the generator must restore the scene and leave no folder behind.
before = (scene.render.engine, scene.render.film_transparent, scene.render.resolution_x, scene.camera)
steps = capture.capture_dataset(scene, list(cams.objects), os.path.join(out, "cancelled"),
                                capture.CaptureSettings(engine="CYCLES", resolution=(16, 16), samples=1,
                                                        test_every=2, n_points=100))
first = next(steps)
during = (scene.render.engine, scene.render.film_transparent, scene.render.resolution_x)
steps.close()
after = (scene.render.engine, scene.render.film_transparent, scene.render.resolution_x, scene.camera)
result["cancel"] = {"first_stage": first.stage, "during": list(during), "restored": before == after,
                    "leftovers": sorted(os.listdir(out))}

bpy.ops.wm.read_factory_settings(use_empty=True)
bpy.ops.wm.save_as_mainfile(filepath=os.path.join(out, "empty.blend"))
report(result)
"""


def srgb_bytes(linear) -> np.ndarray:
    """sRGB encoding of linear values, as 0..255 floats."""
    c = np.asarray(linear, dtype=np.float64)
    encoded = np.where(c <= 0.0031308, 12.92 * c, 1.055 * np.power(c, 1 / 2.4) - 0.055)
    return 255.0 * encoded


def project(points: np.ndarray, c2w, intrinsics: dict) -> tuple[np.ndarray, np.ndarray]:
    """Pixel coordinates (N, 2) and depth (N,) through the backend's GL->CV conversion."""
    w2c = c2w_gl_to_w2c_cv(torch.tensor(c2w, dtype=torch.float64)).numpy()
    cam = points @ w2c[:3, :3].T + w2c[:3, 3]
    k = intrinsics
    return np.stack([k["fl_x"] * cam[:, 0] / cam[:, 2] + k["cx"], k["fl_y"] * cam[:, 1] / cam[:, 2] + k["cy"]], -1), cam[:, 2]


def ndc_to_pixels(ndc, width: int, height: int) -> np.ndarray:
    """world_to_camera_view's (0,0)=bottom-left..(1,1)=top-right frame -> pixels from the top-left corner."""
    ndc = np.asarray(ndc)
    return np.stack([ndc[:, 0] * width, (1.0 - ndc[:, 1]) * height], -1)


def convex_hull(points: np.ndarray) -> np.ndarray:
    """Counter-clockwise hull (monotone chain) of (N, 2) points (x right, y down)."""
    pts = sorted(map(tuple, points))

    def cross(o, a, b):
        return (a[0] - o[0]) * (b[1] - o[1]) - (a[1] - o[1]) * (b[0] - o[0])

    lower, upper = [], []
    for p in pts:
        while len(lower) >= 2 and cross(lower[-2], lower[-1], p) <= 0:
            lower.pop()
        lower.append(p)
    for p in reversed(pts):
        while len(upper) >= 2 and cross(upper[-2], upper[-1], p) <= 0:
            upper.pop()
        upper.append(p)
    return np.array(lower[:-1] + upper[:-1])


def signed_distance_inside(hull: np.ndarray, query: np.ndarray) -> np.ndarray:
    """(M,) distance of points inside a convex polygon to its nearest edge line (negative outside:
    minus the largest violated edge distance, a lower bound on the distance to the polygon)."""
    start, end = hull, np.roll(hull, -1, axis=0)
    edge = end - start
    normal = np.stack([-edge[:, 1], edge[:, 0]], -1)  # points inward for counter-clockwise order
    normal /= np.linalg.norm(normal, axis=1, keepdims=True)
    return ((query[:, None, :] - start[None]) * normal[None]).sum(-1).min(axis=1)


def load_frames(data_dir: Path) -> list[dict]:
    """Every frame of both splits with its intrinsics resolved (top-level or per frame)."""
    frames = []
    for split in ("train", "test"):
        document = json.loads((data_dir / f"transforms_{split}.json").read_text())
        for frame in document["frames"]:
            keys = ("fl_x", "fl_y", "cx", "cy", "w", "h", "camera_angle_x")
            intrinsics = {key: frame.get(key, document.get(key)) for key in keys}
            frames.append({"split": split, "frame": frame, "intrinsics": intrinsics})
    return frames


def read_ply(path: Path) -> tuple[list[str], np.ndarray, np.ndarray]:
    raw = path.read_bytes()
    end = raw.index(b"end_header\n") + len(b"end_header\n")
    header = raw[:end].decode("ascii").splitlines()
    record = np.dtype([("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("r", "u1"), ("g", "u1"), ("b", "u1")])
    vertices = np.frombuffer(raw[end:], dtype=record)
    xyz = np.stack([vertices["x"], vertices["y"], vertices["z"]], -1).astype(np.float64)
    rgb = np.stack([vertices["r"], vertices["g"], vertices["b"]], -1).astype(np.float64)
    return header, xyz, rgb


def headless(args: list[str], env: dict, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "radiantforge_addon.headless", "capture", *args],
                          env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture(scope="module")
def captured(tmp_path_factory):
    """The test scene, its Blender reference projections, and two captures of it."""
    root = tmp_path_factory.mktemp("capture")
    (root / "blender_user").mkdir()
    env = dict(os.environ, BLENDER_USER_RESOURCES=str(root / "blender_user"))
    params = {"box_rgb": BOX_LINEAR_RGB, "sphere_rgb": SPHERE_LINEAR_RGB, "sphere_mesh_radius": SPHERE_MESH_RADIUS,
              "sphere_center": SPHERE_CENTER, "displace_strength": DISPLACE_STRENGTH,
              "resolution": COLLECTION_RESOLUTION, "pixel_aspect": PIXEL_ASPECT}
    reference = run_bpy(SCENE_SCRIPT, root, args=[str(root), json.dumps(params)])
    blend = root / "scene.blend"

    collection_data = root / "collection_data"
    done = headless(["--blend", str(blend), "--collection", "Cams", "--out", str(collection_data), "--test-every", "2",
                     "--engine", "BLENDER_WORKBENCH", "--points", "3000"], env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    orbit_data = root / "orbit_data"
    orbit_data.mkdir()
    (orbit_data / "stale.txt").write_text("from an earlier capture")
    done = headless(["--blend", str(blend), "--out", str(orbit_data), "--overwrite", "--views", "10",
                     "--test-every", "5", "--resolution", "48x36", "--engine", "BLENDER_WORKBENCH", "--points", "5000",
                     "--seed", "3"], env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return {"root": root, "env": env, "reference": reference, "blend": blend,
            "collection": collection_data, "orbit": orbit_data, "orbit_log": done.stdout}


def test_intrinsics_match_blender_projection_over_settings(captured):
    """camera_intrinsics agrees with world_to_camera_view for every fit, shape, percentage, aspect, shift."""
    points = np.array(captured["reference"]["probe_points"])
    for case in captured["reference"]["sweep"]:
        k = case["intrinsics"]
        pixels, depth = project(points, case["c2w"], k)
        expected = ndc_to_pixels(case["ndc"], k["w"], k["h"])
        assert np.all(depth > 0)
        error = np.abs(pixels - expected).max()
        assert error < 0.01, f"{case['label']}: off by {error:.4f} px"
        assert k["camera_angle_x"] == pytest.approx(2 * np.arctan(0.5 * k["w"] / k["fl_x"]))
    unshifted_square = [c for c in captured["reference"]["sweep"] if "(33, 33) 100% aspect (1.0, 1.0) shift (0.0, 0.0)" in c["label"]]
    assert unshifted_square and all(c["intrinsics"]["cx"] == 16.5 and c["intrinsics"]["cy"] == 16.5 for c in unshifted_square)
    assert "Cam_Ortho" in captured["reference"]["ortho_error"] and "perspective" in captured["reference"]["ortho_error"]


def test_collection_json_matches_blender_projection(captured):
    """The written JSON (per-frame intrinsics, 64x40, VERTICAL fit, shifts, pixel aspect 1:1.2) projects
    known points where Blender does."""
    data = captured["collection"]
    frames = load_frames(data)
    assert sorted(f["frame"]["camera"] for f in frames) == ["Cam_A", "Cam_B", "Cam_C", "Cam_D"]
    assert [f["frame"]["file_path"] for f in frames if f["split"] == "test"] == ["./test/r_0", "./test/r_2"]
    points = np.array(captured["reference"]["probe_points"])
    for entry in frames:
        k, frame = entry["intrinsics"], entry["frame"]
        assert (k["w"], k["h"]) == COLLECTION_RESOLUTION
        assert "fl_x" in frame  # the cameras differ, so every frame carries its intrinsics
        assert k["fl_y"] == pytest.approx(k["fl_x"] * PIXEL_ASPECT[0] / PIXEL_ASPECT[1])
        c2w = np.array(frame["transform_matrix"])
        assert np.allclose(c2w[:3, :3].T @ c2w[:3, :3], np.eye(3), atol=1e-6)
        pixels, _ = project(points, c2w, k)
        expected = ndc_to_pixels(captured["reference"]["cameras"][frame["camera"]]["ndc"], k["w"], k["h"])
        assert np.abs(pixels - expected).max() < 0.01, frame["camera"]
        image = iio.imread(data / f"{frame['file_path']}.png")
        assert image.shape == (k["h"], k["w"], 4) and image.dtype == np.uint8

    # The backend's loader reads the same cameras.
    dataset = load_nerf_dataset(data)
    train = dataset.train
    first = next(f for f in frames if f["split"] == "train" and f["frame"]["file_path"] == train.names[0])
    k = first["intrinsics"]
    assert torch.allclose(train.cameras.intrinsics[0].double(),
                          torch.tensor([[k["fl_x"], 0, k["cx"]], [0, k["fl_y"], k["cy"]], [0, 0, 1]], dtype=torch.float64),
                          atol=1e-4)


@pytest.mark.parametrize("which", ["collection", "orbit"])
def test_alpha_silhouettes_match_projected_objects(captured, which):
    """Pixels >1 px inside the projected convex objects are opaque, pixels >1 px outside are transparent."""
    vertices = {name: np.array(v) for name, v in captured["reference"]["vertices"].items()}
    margin_px = 1.0
    for entry in load_frames(captured[which]):
        k, frame = entry["intrinsics"], entry["frame"]
        alpha = iio.imread(captured[which] / f"{frame['file_path']}.png")[..., 3] / 255.0
        rows, columns = np.mgrid[0:k["h"], 0:k["w"]]
        centres = np.stack([columns.ravel() + 0.5, rows.ravel() + 0.5], -1)
        distances = []
        for points in vertices.values():
            pixels, depth = project(points, frame["transform_matrix"], k)
            assert np.all(depth > 0)
            distances.append(signed_distance_inside(convex_hull(pixels), centres))
        inside = np.max(distances, axis=0) > margin_px
        outside = np.max(distances, axis=0) < -margin_px
        assert inside.sum() > 20, f"{frame['file_path']}: objects barely in view"
        assert np.all(alpha.ravel()[inside] > 0.5), frame["file_path"]
        assert np.all(alpha.ravel()[outside] < 0.5), frame["file_path"]


def test_orbit_rig_layout_and_overwrite(captured):
    data = captured["orbit"]
    assert not (data / "stale.txt").exists()
    assert not [p for p in data.parent.iterdir() if ".capturing-" in p.name or ".replaced-" in p.name]
    frames = load_frames(data)
    assert sorted(f["frame"]["file_path"] for f in frames if f["split"] == "test") == ["./test/r_0", "./test/r_5"]
    assert len([f for f in frames if f["split"] == "train"]) == 8
    document = json.loads((data / "transforms_train.json").read_text())
    assert (document["w"], document["h"]) == (48, 36) and document["cx"] == 24.0 and document["cy"] == 18.0
    # Every camera sits at one distance from the centre of the objects' bounds and looks at it.
    vertices = np.concatenate([np.array(v) for v in captured["reference"]["vertices"].values()])
    target = 0.5 * (vertices.min(axis=0) + vertices.max(axis=0))
    c2w = np.array([f["frame"]["transform_matrix"] for f in frames])
    offsets = target - c2w[:, :3, 3]
    distances = np.linalg.norm(offsets, axis=1)
    assert distances.std() < 1e-4 * distances.mean()
    looking = -c2w[:, :3, 2]
    assert np.allclose((offsets / distances[:, None] * looking).sum(axis=1), 1.0, atol=1e-6)
    assert sorted(p.name for p in (data / "train").iterdir()) == sorted(
        f"{Path(f['frame']['file_path']).name}.png" for f in frames if f["split"] == "train")


@pytest.mark.parametrize("which", ["collection", "orbit"])
def test_points3d_on_evaluated_surfaces_with_object_colours(captured, which):
    path = captured[which] / "points3d.ply"
    header, xyz, rgb = read_ply(path)
    expected_count = 3000 if which == "collection" else 5000
    assert header[:2] == ["ply", "format binary_little_endian 1.0"]
    assert [line for line in header if line.startswith("element")] == [f"element vertex {expected_count}"]
    assert [line for line in header if line.startswith("property")] == [
        "property float x", "property float y", "property float z",
        "property uchar red", "property uchar green", "property uchar blue"]
    assert len(xyz) == expected_count

    box_matrix = np.array(captured["reference"]["box_matrix"])
    local = (xyz - box_matrix[:3, 3]) @ np.linalg.inv(box_matrix[:3, :3]).T
    on_box = np.abs(np.abs(local).max(axis=1) - 1.0) < 1e-4  # the cube's faces are at +-1 in its mesh
    radius = np.linalg.norm(xyz - np.array(SPHERE_CENTER), axis=1)
    # Faceted UV sphere (32 x 16): faces sit between cos(pi/16) * r and r from the centre.
    on_sphere = (radius > SPHERE_EVALUATED_RADIUS * np.cos(np.pi / 16) - 1e-4) & (radius < SPHERE_EVALUATED_RADIUS + 1e-4)
    assert np.all(on_box | on_sphere)
    assert on_box.sum() > 0.2 * len(xyz) and on_sphere.sum() > 0.2 * len(xyz)
    assert radius[on_sphere].min() > SPHERE_MESH_RADIUS + 0.1  # the Displace modifier was applied

    for mask, linear in ((on_box, BOX_LINEAR_RGB), (on_sphere, SPHERE_LINEAR_RGB)):
        error = np.abs(rgb[mask] - srgb_bytes(linear)).max(axis=1)
        assert np.median(error) <= 1.0
        assert np.mean(error <= 6.0) >= 0.99, f"{np.mean(error <= 6.0):.3f} of points within 6/255"


def test_hemisphere_rig_is_above_and_removable(captured):
    hemisphere = captured["reference"]["hemisphere"]
    assert hemisphere["added"] == 12
    assert min(hemisphere["camera_z"]) > hemisphere["center_z"]
    assert hemisphere["restored"]


def test_cancel_restores_scene_and_leaves_nothing(captured):
    cancel = captured["reference"]["cancel"]
    assert cancel["first_stage"] == "render"
    assert cancel["during"] == ["CYCLES", True, 16]  # the capture did change the scene while running
    assert cancel["restored"]
    assert not [name for name in cancel["leftovers"] if "cancelled" in name]


def test_headless_bad_input(captured, tmp_path):
    env, blend = captured["env"], str(captured["blend"])
    failures = []

    def expect_failure(args, *fragments):
        done = headless(args, env)
        failures.append(done)
        assert done.returncode != 0, done.stdout[-2000:]
        assert "Traceback" not in done.stderr, done.stderr[-3000:]
        for fragment in fragments:
            assert fragment in done.stderr, done.stderr[-2000:]

    missing = tmp_path / "nowhere" / "scene.blend"
    expect_failure(["--blend", str(missing), "--out", str(tmp_path / "a")], str(missing), "no such file")
    expect_failure(["--blend", str(captured["root"] / "empty.blend"), "--out", str(tmp_path / "b")], "no mesh objects")

    occupied = tmp_path / "occupied"
    occupied.mkdir()
    (occupied / "mine.txt").write_text("keep me")
    expect_failure(["--default-scene", "--out", str(occupied)], str(occupied), "not empty")
    assert (occupied / "mine.txt").read_text() == "keep me" and sorted(os.listdir(occupied)) == ["mine.txt"]

    expect_failure(["--blend", blend, "--collection", "OrthoCams", "--out", str(tmp_path / "c")], "Cam_Ortho", "perspective")
    expect_failure(["--blend", blend, "--collection", "NoSuchCams", "--out", str(tmp_path / "d")], "NoSuchCams")
    expect_failure(["--default-scene", "--test-every", "1", "--out", str(tmp_path / "e")], "test every")
    expect_failure(["--default-scene", "--engine", "POVRAY", "--out", str(tmp_path / "f")], "POVRAY")
    # Nothing was written for any refused capture, not even a half-finished hidden folder.
    assert sorted(os.listdir(tmp_path)) == ["occupied"]

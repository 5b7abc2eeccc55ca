"""The mesh renderer against the real Blender (bpy 5.0.1), on the real Spot asset.

One bpy subprocess (its user folders in a temporary directory) imports Spot's OBJ with Blender's
own importer, places a Blender camera from our ``Cameras`` (``matrix_world`` = c2w in the GL
convention; ``lens = fx / W * sensor_width`` with a horizontal sensor fit), and for each view

- renders Workbench with flat lighting, the texture as colour, no anti-aliasing, transparent
  film (alpha = silhouette);
- casts one ray per pixel centre with ``scene.ray_cast``, the rays built from Blender's own view
  frame (``Camera.view_frame``) and ``matrix_world``: depth along the optical axis and the polygon
  hit, the reference for our depth and triangle ids. (Workbench writes no depth pass in 5.0.)

It also exports the imported mesh as GLB and PLY with Blender's exporters, which our loader must
read back to the same geometry, UVs and texture.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from radiantforge.cameras import Cameras, focal_from_fov, intrinsics_matrix, look_at_c2w_gl
from radiantforge.mesh import load_mesh, rasterize_mesh, render_textured_mesh
from radiantforge.metrics import psnr

WIDTH, HEIGHT = 160, 120  # not square: the horizontal sensor fit must hold fx to the width
SENSOR_WIDTH_MM = 36.0
MIN_SILHOUETTE_IOU = 0.99
DEPTH_RTOL = 1e-4
MIN_ID_AGREEMENT = 0.99
# Flat-lit Workbench without anti-aliasing shows the texture colour itself: 45-51 dB against our
# bilinear lookup when measured (8-bit PNG, filtering differences); upside down scores 8-11 dB.
MIN_TEXTURE_PSNR = 35.0

BLENDER_SCRIPT = r'''
import json, sys
import bpy
import numpy as np
from mathutils import Matrix, Vector

args = json.load(open(sys.argv[1]))
out = args["out"]
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
bpy.ops.wm.obj_import(filepath=args["mesh"])  # Blender's defaults: -Z forward, Y up -> Z up
mesh_object = [o for o in scene.objects if o.type == "MESH"][0]

camera_data = bpy.data.cameras.new("camera")
camera = bpy.data.objects.new("camera", camera_data)
scene.collection.objects.link(camera)
scene.camera = camera
camera_data.sensor_fit = "HORIZONTAL"
camera_data.sensor_width = args["sensor_width"]
camera_data.lens = args["lens"]
camera_data.clip_start = 0.01

render = scene.render
render.resolution_x, render.resolution_y = args["width"], args["height"]
render.resolution_percentage = 100
render.pixel_aspect_x = render.pixel_aspect_y = 1.0
render.engine = "BLENDER_WORKBENCH"
render.film_transparent = True
scene.display.render_aa = "OFF"
shading = scene.display.shading
shading.light = "FLAT"
shading.color_type = "TEXTURE"
scene.view_settings.view_transform = "Standard"
render.image_settings.file_format = "PNG"
render.image_settings.color_mode = "RGBA"

width, height = args["width"], args["height"]
report = {"fx_blender": []}
for index, c2w in enumerate(args["c2w"]):
    camera.matrix_world = Matrix(c2w)
    bpy.context.view_layer.update()
    render.filepath = f"{out}/render_{index}.png"
    bpy.ops.render.render(write_still=True)

    depsgraph = bpy.context.evaluated_depsgraph_get()
    projection = camera.calc_matrix_camera(depsgraph, x=width, y=height)
    report["fx_blender"].append(projection[0][0] * width / 2.0)
    # Rays through pixel centres from Blender's own view frame (camera space, looking down -Z).
    top_right, bottom_right, bottom_left, top_left = camera_data.view_frame(scene=scene)
    rotation = camera.matrix_world.to_3x3()
    origin = camera.matrix_world.translation
    forward = -(rotation @ Vector((0.0, 0.0, 1.0)))
    depth = np.zeros((height, width), dtype=np.float64)
    polygon = np.full((height, width), -1, dtype=np.int64)
    for row in range(height):
        fy = (row + 0.5) / height
        for col in range(width):
            fx = (col + 0.5) / width
            point = top_left.lerp(top_right, fx).lerp(bottom_left.lerp(bottom_right, fx), fy)
            direction = rotation @ point
            hit, location, _, face, _, _ = scene.ray_cast(depsgraph, origin, direction.normalized())
            if hit:
                depth[row, col] = (location - origin).dot(forward)
                polygon[row, col] = face
    np.save(f"{out}/depth_{index}.npy", depth)
    np.save(f"{out}/polygon_{index}.npy", polygon)

bpy.ops.object.select_all(action="DESELECT")
mesh_object.select_set(True)
bpy.context.view_layer.objects.active = mesh_object
bpy.ops.export_scene.gltf(filepath=f"{out}/spot.glb", export_format="GLB", use_selection=True)
bpy.ops.wm.ply_export(filepath=f"{out}/spot.ply", export_selected_objects=True, export_uv=True,
                      export_normals=False, ascii_format=False)
json.dump(report, open(f"{out}/report.json", "w"))
'''


def spot_cameras(centre: np.ndarray) -> Cameras:
    """Four views around Spot at different heights and distances, 50 degrees across."""
    views = [(20.0, 15.0, 2.8), (115.0, -10.0, 3.2), (200.0, 35.0, 2.6), (290.0, 60.0, 3.4)]
    eyes = []
    for azimuth_deg, elevation_deg, distance in views:
        a, e = math.radians(azimuth_deg), math.radians(elevation_deg)
        eyes.append(centre + distance * np.array([math.cos(e) * math.cos(a), math.cos(e) * math.sin(a), math.sin(e)]))
    c2w = look_at_c2w_gl(torch.tensor(np.array(eyes), dtype=torch.float32), torch.tensor(centre, dtype=torch.float32))
    fx = focal_from_fov(math.radians(50.0), WIDTH)
    return Cameras(c2w, intrinsics_matrix(fx, fx, WIDTH / 2, HEIGHT / 2).expand(len(views), 3, 3), WIDTH, HEIGHT)


@pytest.fixture(scope="module")
def blender_views(tmp_path_factory, shared_assets):
    """Run Blender once: renders, ray-cast depth and polygon ids, GLB and PLY exports."""
    root = tmp_path_factory.mktemp("mesh_blender")
    out = root / "out"
    out.mkdir()
    (root / "blender_user").mkdir()
    obj_path = shared_assets / "spot" / "spot_triangulated.obj"
    spot = load_mesh(obj_path)
    centre = ((spot.vertices.amin(0) + spot.vertices.amax(0)) / 2).numpy().astype(np.float64)
    cameras = spot_cameras(centre)
    fx = float(cameras.intrinsics[0, 0, 0])
    args = {
        "mesh": str(obj_path),
        "out": str(out),
        "width": WIDTH,
        "height": HEIGHT,
        "sensor_width": SENSOR_WIDTH_MM,
        "lens": fx / WIDTH * SENSOR_WIDTH_MM,
        "c2w": cameras.c2w_gl.double().tolist(),
    }
    (root / "args.json").write_text(json.dumps(args))
    (root / "script.py").write_text(BLENDER_SCRIPT)
    from conftest import blender_subprocess_env

    completed = subprocess.run(
        [sys.executable, str(root / "script.py"), str(root / "args.json")],
        env=blender_subprocess_env(root / "blender_user"), capture_output=True, text=True, timeout=300,
    )
    assert completed.returncode == 0, completed.stdout[-2000:] + completed.stderr[-4000:]
    views = []
    for index in range(len(cameras)):
        rgba = iio.imread(out / f"render_{index}.png").astype(np.float32) / 255.0
        views.append({
            "rgba": rgba,
            "depth": np.load(out / f"depth_{index}.npy"),
            "polygon": np.load(out / f"polygon_{index}.npy"),
        })
    report = json.loads((out / "report.json").read_text())
    return {"spot": spot, "cameras": cameras, "views": views, "out": out, "report": report}


def test_blender_uses_the_same_focal_length(blender_views):
    ours = blender_views["cameras"].intrinsics[:, 0, 0].numpy()
    assert np.allclose(blender_views["report"]["fx_blender"], ours, rtol=1e-5)


def test_silhouettes_match_workbench(blender_views):
    spot, cameras = blender_views["spot"], blender_views["cameras"]
    vbuf = rasterize_mesh(spot.vertices, spot.faces, cameras)
    for index, view in enumerate(blender_views["views"]):
        theirs = view["rgba"][..., 3] > 0.5
        ours = vbuf.mask[index].numpy()
        iou = (theirs & ours).sum() / (theirs | ours).sum()
        assert iou >= MIN_SILHOUETTE_IOU, f"view {index}: silhouette IoU {iou:.4f}"
        assert 0.05 < ours.mean() < 0.8


def test_depth_and_triangle_ids_match_blender_ray_casts(blender_views):
    spot, cameras = blender_views["spot"], blender_views["cameras"]
    vbuf = rasterize_mesh(spot.vertices, spot.faces, cameras)
    for index, view in enumerate(blender_views["views"]):
        theirs_hit = view["polygon"] >= 0
        ours_hit = vbuf.mask[index].numpy()
        assert (theirs_hit != ours_hit).mean() < 0.01, f"view {index}: coverage differs"
        both = theirs_hit & ours_hit
        agree = vbuf.tri_ids[index].numpy()[both] == view["polygon"][both]
        assert agree.mean() >= MIN_ID_AGREEMENT, f"view {index}: triangle ids agree on {agree.mean():.4f}"
        same = both & (vbuf.tri_ids[index].numpy() == view["polygon"])
        rel = np.abs(vbuf.depth[index].numpy()[same] - view["depth"][same]) / view["depth"][same]
        assert np.median(rel) < 1e-6 and rel.max() <= DEPTH_RTOL, f"view {index}: depth error up to {rel.max():.2e}"


def test_texture_colours_match_workbench(blender_views):
    # Flat-lit Workbench shows the texture colour itself: a check of the UV / image orientation.
    spot, cameras = blender_views["spot"], blender_views["cameras"]
    render = render_textured_mesh(spot, spot.texture, cameras, background=0.0)
    for index, view in enumerate(blender_views["views"]):
        inside = (view["rgba"][..., 3] > 0.5) & (render.alpha[index, ..., 0].numpy() > 0.5)
        theirs = torch.from_numpy(view["rgba"][..., :3][inside])
        ours = render.rgb[index][torch.from_numpy(inside)]
        value = psnr(ours[None, :, None], theirs[None, :, None]).item()
        assert value >= MIN_TEXTURE_PSNR, f"view {index}: texture PSNR {value:.1f} dB"
    # The same check must fail for a texture upside down: the threshold separates right from wrong.
    flipped = render_textured_mesh(spot, spot.texture.flip(0), cameras, background=0.0)
    view = blender_views["views"][0]
    inside = (view["rgba"][..., 3] > 0.5) & (flipped.alpha[0, ..., 0].numpy() > 0.5)
    wrong = psnr(flipped.rgb[0][torch.from_numpy(inside)][None, :, None],
                 torch.from_numpy(view["rgba"][..., :3][inside])[None, :, None]).item()
    assert wrong < MIN_TEXTURE_PSNR - 5


def test_blender_exports_load_back_the_same(blender_views):
    spot, cameras, out = blender_views["spot"], blender_views["cameras"], blender_views["out"]
    reference = render_textured_mesh(spot, spot.texture, cameras, background=0.0)
    glb = load_mesh(out / "spot.glb")  # glTF is Y up: the loader turns it back to Blender's Z up
    assert glb.texture is not None and glb.texture.shape == spot.texture.shape
    assert glb.num_faces == spot.num_faces
    from_glb = render_textured_mesh(glb, glb.texture, cameras, background=0.0)
    assert torch.equal(from_glb.alpha, reference.alpha)
    assert psnr(from_glb.rgb, reference.rgb).min() > 40.0

    ply = load_mesh(out / "spot.ply")  # PLY is taken as Z up, like Blender's importer
    assert ply.num_faces == spot.num_faces
    vbuf_ply = rasterize_mesh(ply.vertices, ply.faces, cameras)
    vbuf_obj = reference.vbuf
    assert (vbuf_ply.mask == vbuf_obj.mask).float().mean() > 0.999
    both = vbuf_ply.mask & vbuf_obj.mask
    assert torch.allclose(vbuf_ply.depth[both], vbuf_obj.depth[both], rtol=1e-5)
    if ply.has_uvs:  # UVs written by Blender's PLY exporter, read by trimesh
        from_ply = render_textured_mesh(ply, spot.texture, cameras, background=0.0)
        assert psnr(from_ply.rgb, reference.rgb).min() > 40.0

"""Importing Gaussian-splat PLYs into the real bpy: every attribute, the ellipsoids, the colours.

The files are real ones written by other tools (shared/assets/splats): train-1000.ply (SH degree 3,
62 properties, with normals) and donut-sh0.ply (Mip-Splatting, SH degree 0, no normals). Values
imported into Blender are compared with the same files read by plyfile; instance transforms with
an independent quaternion → matrix; rendered colours with the known SH colour of a splat.
"""

from __future__ import annotations

import numpy as np
import plyfile
import pytest

from blender_helpers import run_bpy, splat_asset

SH_C0 = 0.28209479177387814
DEFAULT_SPLAT_SIZE = 2.0  # the importer's default: ellipsoid semi-axes of 2 standard deviations

# Imports a PLY, dumps everything Blender holds about it into an .npz, reports the rest.
IMPORT_SCRIPT = """
import sys
import bpy
import numpy as np
from radiantforge_addon.importers import gaussians

ply_path, dump_path, display = sys.argv[1], sys.argv[2], sys.argv[3]
bpy.ops.wm.read_factory_settings(use_empty=True)
before = len(bpy.data.objects)
obj = gaussians.import_gaussians(ply_path, display=display)
mesh = obj.data
count = len(mesh.vertices)
arrays = {}
positions = np.empty(count * 3, dtype=np.float32)
mesh.vertices.foreach_get("co", positions)
arrays["__position"] = positions.reshape(-1, 3)
names = []
for attribute in mesh.attributes:
    if attribute.name.startswith(".") or attribute.name == "position":
        continue
    names.append((attribute.name, attribute.data_type, attribute.domain))
    values = np.empty(count, dtype=np.float32)
    attribute.data.foreach_get("value", values)
    arrays[attribute.name] = values

depsgraph = bpy.context.evaluated_depsgraph_get()
instance_matrices = []
for instance in depsgraph.object_instances:
    if instance.is_instance and instance.parent is not None and instance.parent.original == obj:
        instance_matrices.append(np.array(instance.matrix_world, dtype=np.float64))
arrays["__instances"] = np.array(instance_matrices).reshape(-1, 4, 4)
evaluated = obj.evaluated_get(depsgraph)
np.savez(dump_path, **arrays)

modifiers = [(m.type, m.node_group.name if m.node_group else None) for m in obj.modifiers]
report({
    "objects_added": len(bpy.data.objects) - before,
    "object_type": obj.type,
    "edges": len(mesh.edges), "faces": len(mesh.polygons),
    "attributes": names,
    "modifiers": modifiers,
    "splat_count": obj["radiantforge_splat_count"],
    "sh_degree": obj["radiantforge_sh_degree"],
    "material": [s.material.name for s in mesh.materials] if mesh.materials else None,
    "node_group_material": [n.inputs["Material"].default_value.name for n in obj.modifiers[0].node_group.nodes
                            if n.bl_idname == "GeometryNodeSetMaterial"],
})
"""


def _import(tmp_path, ply_path, display="ELLIPSOIDS"):
    dump = tmp_path / "dump.npz"
    info = run_bpy(IMPORT_SCRIPT, tmp_path, args=[str(ply_path), str(dump), display])
    return info, dict(np.load(dump))


def _ply_vertex(path):
    return plyfile.PlyData.read(str(path))["vertex"]


def _quaternion_matrix(wxyz: np.ndarray) -> np.ndarray:
    """(N, 4) w x y z (any length) -> (N, 3, 3) rotation matrices."""
    q = wxyz / np.linalg.norm(wxyz, axis=1, keepdims=True)
    w, x, y, z = q.T
    return np.stack([
        np.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], axis=-1),
        np.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], axis=-1),
        np.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], axis=-1),
    ], axis=1)


@pytest.mark.parametrize("asset, sh_degree", [("train-1000.ply", 3), ("donut-sh0.ply", 0)])
def test_every_ply_property_arrives_unchanged(tmp_path, asset, sh_degree):
    path = splat_asset(asset)
    vertex = _ply_vertex(path)
    names = list(vertex.data.dtype.names)
    info, arrays = _import(tmp_path, path)

    assert info["objects_added"] == 1
    assert info["object_type"] == "MESH"
    assert info["edges"] == 0 and info["faces"] == 0
    assert info["splat_count"] == len(vertex.data)
    assert info["sh_degree"] == sh_degree
    # Every property except x y z (the vertex positions) is a float point attribute of its own name.
    stored = {name: (kind, domain) for name, kind, domain in info["attributes"]}
    assert set(stored) == set(names) - {"x", "y", "z"}
    assert all(kind == "FLOAT" and domain == "POINT" for kind, domain in stored.values())
    expected_positions = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float32)
    np.testing.assert_array_equal(arrays["__position"], expected_positions)
    for name in stored:
        np.testing.assert_array_equal(arrays[name], np.asarray(vertex[name], dtype=np.float32), err_msg=name)

    assert info["modifiers"] == [["NODES", "RadiantForge Splats" + (f" SH{sh_degree}" if sh_degree else "")]]
    assert sorted(info["node_group_material"]) == ["RadiantForge Gaussian Sprite", "RadiantForge Splat", "RadiantForge Splat"]
    assert len(arrays["__instances"]) == len(vertex.data)


def test_ellipsoids_follow_position_rotation_and_scale(tmp_path):
    path = splat_asset("train-1000.ply")
    vertex = _ply_vertex(path)
    info, arrays = _import(tmp_path, path)
    matrices = arrays["__instances"]
    positions = np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1)
    quaternions = np.stack([vertex[f"rot_{i}"] for i in range(4)], axis=1).astype(np.float64)
    scales = np.exp(np.stack([vertex[f"scale_{i}"] for i in range(3)], axis=1).astype(np.float64)) * DEFAULT_SPLAT_SIZE
    expected = _quaternion_matrix(quaternions) * scales[:, None, :]  # R @ diag(s)
    # Instances come in point order; match them by position anyway so the test does not rely on it.
    order = np.lexsort(positions.T[::-1])
    got_order = np.lexsort(matrices[:, :3, 3].T[::-1])
    np.testing.assert_allclose(matrices[got_order, :3, 3], positions[order], atol=1e-5)
    scale_tolerance = 1e-5 * np.abs(expected).max()
    np.testing.assert_allclose(matrices[got_order, :3, :3], expected[order], rtol=1e-3, atol=scale_tolerance)


def test_points_display_makes_one_point_per_splat(tmp_path):
    path = splat_asset("donut-sh0.ply")
    script = """
    import bpy
    from radiantforge_addon.importers import gaussians
    bpy.ops.wm.read_factory_settings(use_empty=True)
    obj = gaussians.import_gaussians(PATH, display="AUTO")
    auto = obj.modifiers[0][gaussians.modifier_input_id(obj.modifiers[0].node_group, gaussians.INPUT_AS_POINTS)]
    gaussians.set_splat_display(obj, as_points=True, sprites=False)
    depsgraph = bpy.context.evaluated_depsgraph_get()
    clouds = []
    for instance in depsgraph.object_instances:
        if instance.parent is not None and instance.parent.original == obj and instance.object.type == "POINTCLOUD":
            clouds.append(len(instance.object.data.points))
    report({"auto_as_points": bool(auto), "point_clouds": clouds})
    """.replace("PATH", repr(str(path)))
    info = run_bpy(script, tmp_path)
    assert info["auto_as_points"] is False  # AUTO draws Gaussian sprites, not points
    assert info["point_clouds"] == [len(_ply_vertex(path).data)]


@pytest.mark.parametrize("encoding", ["big_endian", "ascii"])
def test_reader_handles_other_ply_encodings(tmp_path, encoding):
    source = plyfile.PlyData.read(str(splat_asset("train-1000.ply")))
    target = tmp_path / f"train-{encoding}.ply"
    if encoding == "ascii":
        plyfile.PlyData(source.elements, text=True).write(str(target))
    else:
        plyfile.PlyData(source.elements, text=False, byte_order=">").write(str(target))
    with open(target, "rb") as handle:
        assert (b"ascii" if encoding == "ascii" else b"binary_big_endian") in handle.read(200)
    info, arrays = _import(tmp_path, target)
    vertex = source["vertex"]
    assert info["splat_count"] == len(vertex.data)
    for name in ("f_dc_0", "f_rest_44", "opacity", "scale_2", "rot_3", "nx"):
        # plyfile writes ASCII floats with enough digits to round-trip float32
        np.testing.assert_array_equal(arrays[name], np.asarray(vertex[name], dtype=np.float32), err_msg=name)


def test_reader_rejects_files_that_are_not_splats(tmp_path):
    bunny = splat_asset("train-1000.ply").parent.parent / "bunny" / "bun_zipper.ply"
    script = """
    from radiantforge_addon.importers import gaussians
    from radiantforge_addon.io.ply import PlyError
    messages = []
    for path in PATHS:
        try:
            gaussians.read_gaussian_ply(path)
            messages.append(None)
        except PlyError as exc:
            messages.append(str(exc))
    report({"messages": messages})
    """
    truncated = tmp_path / "truncated.ply"
    truncated.write_bytes(splat_asset("train-1000.ply").read_bytes()[:5000])
    not_ply = tmp_path / "notes.ply"
    not_ply.write_text("hello")
    paths = [str(bunny), str(truncated), str(not_ply)]
    info = run_bpy(script.replace("PATHS", repr(paths)), tmp_path)
    bunny_msg, truncated_msg, not_ply_msg = info["messages"]
    assert "bun_zipper.ply" in bunny_msg and "missing vertex properties" in bunny_msg and "f_dc_0" in bunny_msg
    assert "truncated.ply" in truncated_msg and "ends early" in truncated_msg
    assert "notes.ply" in not_ply_msg and "not a PLY file" in not_ply_msg


RENDER_SCRIPT = """
import sys
import bpy
import numpy as np
from radiantforge_addon.importers import gaussians

ply_path, out_exr, engine, display = sys.argv[1:5]
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
obj = gaussians.import_gaussians(ply_path, display=display)
camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
scene.collection.objects.link(camera)
scene.camera = camera
camera.location = (0.0, -5.0, 0.0)
camera.rotation_euler = (np.pi / 2, 0.0, 0.0)
scene.render.engine = engine
scene.render.resolution_x = scene.render.resolution_y = SIZE
scene.render.film_transparent = True
scene.view_settings.view_transform = "Standard"
# Float output in scene-linear space: the comparison needs no 8-bit rounding or view transform.
scene.render.image_settings.file_format = "OPEN_EXR"
if engine == "CYCLES":
    scene.cycles.samples = 4
    scene.cycles.device = "CPU"
    scene.cycles.use_denoising = False  # the denoiser shifts flat colours by a few percent
scene.render.filepath = out_exr
bpy.ops.render.render(write_still=True)
image = bpy.data.images.load(out_exr)
pixels = np.array(image.pixels[:]).reshape(SIZE, SIZE, 4)
report({"centre": pixels[SIZE // 2, SIZE // 2].tolist(), "corner": pixels[0, 0].tolist()})
"""
RENDER_SIZE = 32


def _one_splat_ply(path, rgb, alpha):
    """A single round splat (radius 0.5 m) at the origin with colour ``rgb`` and opacity ``alpha``."""
    names = ["x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity", "scale_0", "scale_1", "scale_2",
             "rot_0", "rot_1", "rot_2", "rot_3"]
    record = np.zeros(1, dtype=[(n, "f4") for n in names])
    for channel in range(3):
        record[f"f_dc_{channel}"] = (rgb[channel] - 0.5) / SH_C0
    record["opacity"] = np.log(alpha / (1.0 - alpha))
    for axis in range(3):
        record[f"scale_{axis}"] = np.log(0.5)
    record["rot_0"] = 1.0
    plyfile.PlyData([plyfile.PlyElement.describe(record, "vertex")]).write(str(path))


def _srgb_to_linear(encoded):
    encoded = np.asarray(encoded, dtype=np.float64)
    return np.where(encoded <= 0.04045, encoded / 12.92, ((encoded + 0.055) / 1.055) ** 2.4)


@pytest.mark.parametrize("display", ["ELLIPSOIDS", "POINTS"])
def test_cycles_shows_the_splat_colour_and_opacity(tmp_path, display):
    """Blender's linear render of one splat = its SH colour (sRGB-decoded) times sigmoid(opacity)."""
    rgb, alpha = (0.8, 0.3, 0.1), 0.5
    _one_splat_ply(tmp_path / "one.ply", rgb, alpha)
    script = RENDER_SCRIPT.replace("SIZE", str(RENDER_SIZE))
    info = run_bpy(script, tmp_path, args=[str(tmp_path / "one.ply"), str(tmp_path / "out.exr"), "CYCLES", display])
    # The EXR holds premultiplied linear colour; alpha once: the ellipsoid's back face is see-through.
    np.testing.assert_allclose(info["centre"][:3], _srgb_to_linear(rgb) * alpha, rtol=1e-3)
    assert abs(info["centre"][3] - alpha) < 1e-3
    assert info["corner"][3] == 0.0  # transparent film around the splat


def test_eevee_shows_the_splat_colour(tmp_path):
    rgb, alpha = (0.2, 0.6, 0.9), 0.999
    _one_splat_ply(tmp_path / "one.ply", rgb, alpha)
    script = RENDER_SCRIPT.replace("SIZE", str(RENDER_SIZE))
    info = run_bpy(script, tmp_path, args=[str(tmp_path / "one.ply"), str(tmp_path / "out.exr"),
                                           "BLENDER_EEVEE", "ELLIPSOIDS"], timeout=180)
    np.testing.assert_allclose(info["centre"][:3], _srgb_to_linear(rgb) * alpha, rtol=1e-2, atol=1e-3)
    assert abs(info["centre"][3] - alpha) < 1e-2


def test_sprites_need_a_perspective_camera_else_the_ellipsoids_show(tmp_path):
    """AUTO draws camera-facing sprites; in a scene without an active camera (or with an orthographic
    one) they would face nothing and all be culled, so the ellipsoids show instead."""
    path = splat_asset("train-1000.ply")
    script = """
    import bpy
    from radiantforge_addon.importers import gaussians
    bpy.ops.wm.read_factory_settings(use_empty=True)
    obj = gaussians.import_gaussians(PATH, display="AUTO")
    def instanced():
        depsgraph = bpy.context.evaluated_depsgraph_get()
        vertices = [len(i.object.data.vertices) for i in depsgraph.object_instances
                    if i.is_instance and i.parent and i.parent.original == obj]
        return [len(vertices), sorted(set(vertices))]
    out = {"no_camera": instanced()}
    camera = bpy.data.objects.new("camera", bpy.data.cameras.new("camera"))
    bpy.context.scene.collection.objects.link(camera)
    camera.location = (0.0, -6.0, 0.0)
    camera.rotation_euler = (1.5708, 0.0, 0.0)
    bpy.context.scene.camera = camera
    out["perspective"] = instanced()
    camera.data.type = "ORTHO"
    out["orthographic"] = instanced()
    report(out)
    """.replace("PATH", repr(str(path)))
    info = run_bpy(script, tmp_path)
    count = len(_ply_vertex(path).data)
    sphere_vertices = info["no_camera"][1]
    assert info["no_camera"][0] == count and sphere_vertices[0] > 4  # one ellipsoid per splat
    assert info["orthographic"] == info["no_camera"]
    assert 0 < info["perspective"][0] <= count and info["perspective"][1] == [4]  # quads (culled ones dropped)


RENDER_SETUP_SCRIPT = """
import sys
import bpy
from radiantforge_addon.importers import gaussians
from radiantforge_addon import render_setup

ply_path = sys.argv[1]
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
factory = {"view": scene.view_settings.view_transform, "filter": scene.cycles.filter_width,
           "bounces": scene.cycles.transparent_max_bounces, "min_bounces": scene.cycles.min_transparent_bounces}
gaussians.import_gaussians(ply_path, display="POINTS")  # no sprites: nothing to set
untouched = {"view": scene.view_settings.view_transform, "record": render_setup.read_record(scene)}
gaussians.import_gaussians(ply_path)
after_import = {"view": scene.view_settings.view_transform, "filter": scene.cycles.filter_width,
                "bounces": scene.cycles.transparent_max_bounces, "min_bounces": scene.cycles.min_transparent_bounces,
                "record": render_setup.read_record(scene)}
scene.cycles.filter_width = 0.5  # the artist changes one setting afterwards
gaussians.import_gaussians(ply_path)  # a second import: the record keeps the artist's first values
second = render_setup.read_record(scene)
bpy.ops.wm.save_as_mainfile(filepath=sys.argv[2])
bpy.ops.wm.open_mainfile(filepath=sys.argv[2])
scene = bpy.context.scene
reopened = render_setup.read_record(scene)
scene.cycles.filter_width = 0.5
restored, left = render_setup.restore_render_settings(scene)
report({"factory": factory, "untouched": untouched, "after_import": after_import, "second": second,
        "reopened": reopened, "restored": [e["path"] for e in restored], "left": [e["path"] for e in left],
        "final": {"view": scene.view_settings.view_transform, "filter": scene.cycles.filter_width,
                  "bounces": scene.cycles.transparent_max_bounces, "min_bounces": scene.cycles.min_transparent_bounces,
                  "record": render_setup.read_record(scene)},
        "text": render_setup.describe(after_import["record"]),
        "restore_text": render_setup.describe_restore(restored, left),
        "filter_label": next(e["label"] for e in left)})
"""


def test_sprite_import_sets_the_render_settings_it_needs_and_restores_only_its_own(tmp_path):
    result = run_bpy(RENDER_SETUP_SCRIPT, tmp_path, args=[str(splat_asset("train-1000.ply")), str(tmp_path / "s.blend")])
    factory = result["factory"]
    assert factory["view"] != "Raw" and factory["bounces"] < 512 and factory["min_bounces"] < 512  # Blender's defaults
    assert factory["filter"] > 0.01
    assert result["untouched"] == {"view": factory["view"], "record": []}
    after = result["after_import"]
    assert (after["view"], after["bounces"], after["min_bounces"]) == ("Raw", 512, 512)
    assert after["filter"] == pytest.approx(0.01)
    assert [e["path"] for e in after["record"]] == ["view_settings.view_transform", "cycles.filter_width",
                                                    "cycles.transparent_max_bounces", "cycles.min_transparent_bounces"]
    assert f"view transform {factory['view']} → Raw" in result["text"]
    # The second import set the filter back to 0.01 but remembers the factory value, not the artist's 0.5.
    assert [e["before"] for e in result["second"]] == [e["before"] for e in after["record"]]
    assert result["reopened"] == result["second"]  # the record is saved with the .blend
    assert result["restored"] == ["view_settings.view_transform", "cycles.transparent_max_bounces",
                                  "cycles.min_transparent_bounces"]
    assert result["left"] == ["cycles.filter_width"]  # changed by the artist after the import: kept
    # the operator's report: what went back (now → before) and what was kept
    assert result["restore_text"].startswith(f"restored view transform Raw → {factory['view']}")
    assert result["restore_text"].endswith(f"; kept (changed since): {result['filter_label']}")
    final = result["final"]
    assert (final["view"], final["bounces"], final["min_bounces"], final["record"]) == (
        factory["view"], factory["bounces"], factory["min_bounces"], [])
    assert final["filter"] == pytest.approx(0.5)

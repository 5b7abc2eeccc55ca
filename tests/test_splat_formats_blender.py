"""The add-on's splat formats in the real bpy: import .spz / .splat / .glb, and export after edit-mode deletions.

train-1000.ply (written by another tool) is imported, a known set of splats is deleted in edit mode,
and File > Export (the registered operator) writes each format; the files are read back with
``io.splat_formats`` outside Blender and compared with the kept rows of the source file. The files
written by Niantic's ply_to_spz and antimatter15's convert.py (tests/data) are imported too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from blender_helpers import run_bpy, splat_asset
from radiantforge_addon.io import splat_formats as sf
from radiantforge_addon.io.ply import read_ply

DATA = Path(__file__).resolve().parent / "data"

SCRIPT = """
import sys
import bpy
import bmesh  # importable once bpy is
import radiantforge_addon
from radiantforge_addon.importers import gaussians

ply, out_dir, spz_ref, splat_ref = sys.argv[1:5]
bpy.ops.wm.read_factory_settings(use_empty=True)
radiantforge_addon.register()
result = {}
for key, path in (("spz_ref", spz_ref), ("splat_ref", splat_ref)):
    obj = gaussians.import_gaussians(path, display="POINTS")
    result[key] = [len(obj.data.vertices), obj["radiantforge_sh_degree"]]
    bpy.data.objects.remove(obj)

obj = gaussians.import_gaussians(ply, display="POINTS")
bpy.context.view_layer.objects.active = obj
obj.select_set(True)
bpy.ops.object.mode_set(mode="EDIT")
mesh = bmesh.from_edit_mesh(obj.data)
mesh.verts.ensure_lookup_table()
for vertex in mesh.verts:
    vertex.select_set(vertex.index % 3 == 0)  # delete every third splat
bmesh.update_edit_mesh(obj.data)
bpy.ops.mesh.delete(type="VERT")
# Still in edit mode: the export has to see the deletions.
for fmt in (".ply", ".spz", ".splat", ".glb"):
    status = bpy.ops.radiant_forge.export_splats(filepath=out_dir + "/edited" + fmt, file_format=fmt)
    result[fmt] = list(status)
result["remaining"] = len(bpy.data.objects[obj.name].data.vertices)
bpy.ops.object.mode_set(mode="OBJECT")
result["remaining_after"] = len(obj.data.vertices)
for fmt in (".spz", ".glb"):
    again = gaussians.import_gaussians(out_dir + "/edited" + fmt, display="POINTS")
    result["reimported" + fmt] = [len(again.data.vertices), again["radiantforge_sh_degree"]]
radiantforge_addon.unregister()
report(result)
"""


def test_export_after_edit_mode_deletion_and_import_every_format(tmp_path):
    source = splat_asset("train-1000.ply")
    result = run_bpy(SCRIPT, tmp_path, args=[str(source), str(tmp_path), str(DATA / "train-1000.ply_to_spz.spz"),
                                             str(DATA / "train-1000.convert_py.splat")])
    assert result["spz_ref"] == [1000, 3] and result["splat_ref"] == [1000, 0]
    kept = np.arange(1000) % 3 != 0
    assert result["remaining_after"] == int(kept.sum()) == 666
    original = sf.from_ply_columns(read_ply(source).elements["vertex"]).subset(kept)
    for fmt in (".ply", ".spz", ".splat", ".glb"):
        assert result[fmt] == ["FINISHED"], (fmt, result)
        path = tmp_path / f"edited{fmt}"
        written = (sf.from_ply_columns(read_ply(path).elements["vertex"]) if fmt == ".ply"
                   else sf.read_splats(path))
        assert len(written) == 666, fmt
        tolerance = {".ply": 0.0, ".glb": 2e-6, ".spz": 0.5 / 4096 + 1e-5, ".splat": 0.0}[fmt]
        assert np.abs(written.means - original.means).max() <= tolerance, fmt
    exact = sf.from_ply_columns(read_ply(tmp_path / "edited.ply").elements["vertex"])
    for field in ("log_scales", "quats", "opacity_logits", "sh0", "shN"):
        np.testing.assert_array_equal(getattr(exact, field), getattr(original, field))
    assert result["reimported.spz"] == [666, 3] and result["reimported.glb"] == [666, 3]

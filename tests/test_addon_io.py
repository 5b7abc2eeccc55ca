"""The add-on's bpy-free half (``radiantforge_addon.io``): it runs in a plain Python without Blender,
and its job-folder names are the backend's.

The first test runs in a subprocess whose import system refuses Blender's modules (bpy, mathutils,
bmesh, bpy_extras), imports every module of the package and checks known answers: intrinsics of a
known lens and sensor, a projection through them, a PLY round trip. The second compares the names
the add-on defines (it cannot import the backend: see ``io/job_folder.py``) with the backend's own.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
import textwrap

import pytest

from blender_helpers import REPO

BLENDER_MODULES = ("bpy", "mathutils", "bmesh", "bpy_extras")

WITHOUT_BLENDER = """
import importlib, json, pkgutil, sys, tempfile
from pathlib import Path

class RefuseBlender:
    # Imports of Blender's own modules fail, as in a Python without Blender.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ImportError(f"{name} is blocked in this test")
        return None

sys.meta_path.insert(0, RefuseBlender())
import numpy as np
import radiantforge_addon.io as package

modules = sorted(info.name for info in pkgutil.iter_modules(package.__path__))
for name in modules:
    importlib.import_module(f"radiantforge_addon.io.{name}")
from radiantforge_addon.io.cameras import project_points
from radiantforge_addon.io.nerf import intrinsics_from_lens
from radiantforge_addon.io.ply import read_ply, write_points_ply

out = {"modules": modules, "blender_loaded": sorted(m for m in sys.modules if m.split(".")[0] in BLOCKED)}
out["auto"] = intrinsics_from_lens(50.0, 36.0, 24.0, "AUTO", 640, 480).as_dict()
out["vertical_shifted"] = intrinsics_from_lens(50.0, 36.0, 24.0, "VERTICAL", 640, 480, shift_x=0.1, shift_y=-0.05).as_dict()
out["tall_pixels"] = intrinsics_from_lens(50.0, 36.0, 24.0, "HORIZONTAL", 640, 480, pixel_aspect=(1.0, 1.2)).as_dict()
# A camera at the origin looking down -Z (Blender's camera frame: +Y up) and two points in front of it.
pixels, depth = project_points(np.array([[0.0, 0.0, -2.0], [0.2, 0.1, -2.0]]), np.eye(4),
                               intrinsics_from_lens(50.0, 36.0, 24.0, "AUTO", 640, 480))
out["pixels"], out["depth"] = pixels.ravel().tolist(), depth.tolist()

xyz = np.array([[0.0, 1.5, -2.25], [3.0, 4.0, 5.0], [-1e3, 1e-3, 0.5]], dtype=np.float32)
rgb = np.array([[255, 0, 7], [1, 2, 3], [128, 64, 32]], dtype=np.uint8)
with tempfile.TemporaryDirectory() as folder:
    path = Path(folder) / "points3d.ply"
    write_points_ply(str(path), xyz, rgb)
    ply = read_ply(path)
vertex = ply.elements["vertex"]
out["ply"] = {"format": ply.format, "names": ply.property_names("vertex"),
              "xyz_equal": bool(np.array_equal(np.stack([vertex["x"], vertex["y"], vertex["z"]], 1), xyz)),
              "rgb_equal": bool(np.array_equal(np.stack([vertex["red"], vertex["green"], vertex["blue"]], 1), rgb)),
              "dtypes": [str(vertex[n].dtype) for n in ("x", "red")]}
print(json.dumps(out))
"""


def test_io_runs_without_blender_and_gives_known_answers(tmp_path):
    script = f"BLOCKED = {BLENDER_MODULES!r}\n" + textwrap.dedent(WITHOUT_BLENDER)
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120,
                               cwd=tmp_path)
    assert completed.returncode == 0, completed.stderr[-4000:]
    out = json.loads(completed.stdout.strip().splitlines()[-1])

    on_disk = sorted(p.stem for p in (REPO / "addon" / "io").glob("*.py") if p.stem != "__init__")
    assert out["modules"] == on_disk and "ply" in on_disk and "nerf" in on_disk
    assert out["blender_loaded"] == []

    # 50 mm on a 36 mm sensor across 640 px (AUTO fits the sensor width to the longer side).
    focal = 50.0 / 36.0 * 640
    assert out["auto"] == pytest.approx({"camera_angle_x": 2 * math.atan(320 / focal), "fl_x": focal, "fl_y": focal,
                                         "cx": 320.0, "cy": 240.0, "w": 640, "h": 480})
    # VERTICAL: the 24 mm sensor height spans 480 px; shift moves the frame by shift * 480 px.
    shifted = out["vertical_shifted"]
    assert (shifted["fl_x"], shifted["fl_y"]) == pytest.approx((1000.0, 1000.0))
    assert (shifted["cx"], shifted["cy"]) == pytest.approx((320.0 - 48.0, 240.0 - 24.0))
    # Pixels 1.2 times as tall as wide: fewer pixels per metre vertically.
    assert (out["tall_pixels"]["fl_x"], out["tall_pixels"]["fl_y"]) == pytest.approx((focal, focal / 1.2))

    # On the optical axis: the principal point; up and to the right: right of it and above it (rows count down).
    assert out["pixels"] == pytest.approx([320.0, 240.0, 320.0 + 0.1 * focal, 240.0 - 0.05 * focal])
    assert out["depth"] == pytest.approx([2.0, 2.0])

    assert out["ply"] == {"format": "binary_little_endian", "names": ["x", "y", "z", "red", "green", "blue"],
                          "xyz_equal": True, "rgb_equal": True, "dtypes": ["float32", "uint8"]}


def test_job_folder_names_are_the_backends():
    from radiantforge import jobs, result_folders
    from radiantforge.data import transforms
    from radiantforge.gaussians import train

    from radiantforge_addon.io import job_folder

    assert job_folder.JOB_FORMAT_VERSION == jobs.JOB_FORMAT_VERSION
    assert job_folder.JOB_FILE == jobs.JOB_FILE
    assert job_folder.DATA_DIR == jobs.DATA_DIR == transforms.JOB_DATA_FOLDER
    assert job_folder.RESULT_DIR == jobs.RESULT_DIR
    assert job_folder.EVENTS_FILE == jobs.EVENTS_FILE
    assert job_folder.RESULT_FILE == result_folders.RESULT_FILE
    assert job_folder.METRICS_FILE == train.METRICS_FILE
    assert job_folder.POINTS_FILE == transforms.POINTS_FILE
    assert job_folder.TRANSFORMS_FILES.items() <= transforms.SPLIT_FILES.items()
    assert {job_folder.GAUSSIANS_KIND, job_folder.TEXTURE_KIND, job_folder.TEXT3D_KIND} == set(jobs.JOB_KINDS)

"""The Blender extension as an artist gets it: build the zip, install it into the real bpy, use it, remove it."""

from __future__ import annotations

import json
import re
import tomllib
import zipfile


from blender_helpers import REPO, run_bpy, splat_asset

EXTENSION_ID = "radiant_forge"
MODULE = f"bl_ext.user_default.{EXTENSION_ID}"


def test_zip_has_manifest_and_addon_at_its_root(extension_zip):
    manifest = tomllib.loads((REPO / "blender_manifest.toml").read_text(encoding="utf-8"))
    assert extension_zip.name == f"{EXTENSION_ID}-{manifest['version']}.zip"
    with zipfile.ZipFile(extension_zip) as archive:
        names = archive.namelist()
        zipped_manifest = tomllib.loads(archive.read("blender_manifest.toml").decode("utf-8"))
    assert zipped_manifest == manifest
    assert "__init__.py" in names and "importers/gaussians.py" in names and "operators/jobs.py" in names
    assert not [n for n in names if "__pycache__" in n or n.endswith(".pyc")]
    shipped = {n for n in names if n.endswith(".py")}
    on_disk = {p.relative_to(REPO / "addon").as_posix() for p in (REPO / "addon").rglob("*.py")
               if "__pycache__" not in p.parts}
    assert shipped == on_disk

    assert manifest["schema_version"] == "1.0.0"
    assert manifest["id"] == EXTENSION_ID and manifest["type"] == "add-on"
    assert manifest["blender_version_min"] == "4.2.0"
    assert manifest["license"] == ["SPDX:GPL-3.0-or-later"]
    assert set(manifest["permissions"]) == {"files", "network"}
    assert all(reason.strip() for reason in manifest["permissions"].values())
    version_py = (REPO / "addon" / "version.py").read_text(encoding="utf-8")
    assert re.search(r'^ADDON_VERSION = "([^"]+)"', version_py, re.M).group(1) == manifest["version"]


INSTALL_SCRIPT = """
import sys
from pathlib import Path
import bpy
import addon_utils

zip_path, tmp = sys.argv[1], Path(sys.argv[2])
MODULE = "MODULE_NAME"

result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo="user_default", enable_on_install=True)
assert result == {"FINISHED"}, result
module = sys.modules[MODULE]
classes = list(module._registered_classes)
registered = sorted(cls.__name__ for cls in classes)
# A registered class carries its own bl_rna; unregistering removes it.
types_present = sorted(cls.__name__ for cls in classes if "bl_rna" in cls.__dict__)
preferences = bpy.context.preferences.addons[MODULE].preferences
checks = {
    "enabled": MODULE in bpy.context.preferences.addons,
    "registered": registered,
    "types_present": types_present,
    "scene_props": hasattr(bpy.types.Scene, "radiantforge"),
    "wm_props": hasattr(bpy.types.WindowManager, "radiantforge_job"),
    "preferences_backend": preferences.backend,
    "operators": sorted(op for op in dir(bpy.ops.radiant_forge)),
}

# 1. Import a splat file through the operator.
before = len(bpy.data.objects)
assert bpy.ops.radiant_forge.import_gaussians(filepath=SPLAT) == {"FINISHED"}
splat = bpy.context.view_layer.objects.active
checks["import"] = {"added": len(bpy.data.objects) - before, "name": splat.name, "vertices": len(splat.data.vertices),
                    "attributes": len([a for a in splat.data.attributes if not a.name.startswith(".") and a.name != "position"])}

# 2. Export a job folder of the default cube scene (no backend needed), under --background rules: it blocks.
bpy.data.objects.remove(splat)
settings = bpy.context.scene.radiantforge
settings.engine = "BLENDER_WORKBENCH"
settings.resolution = 16
settings.view_count = 4
settings.test_every = 2
settings.point_count = 50
settings.quality = "STEPS"
settings.steps = 123
job_dir = tmp / "exported_job"
assert bpy.ops.radiant_forge.export_job(job_dir=str(job_dir)) == {"FINISHED"}
status = bpy.context.window_manager.radiantforge_job
checks["export"] = {
    "files": sorted(p.relative_to(job_dir).as_posix() for p in job_dir.rglob("*") if p.is_file()),
    "job": __import__("json").loads((job_dir / "job.json").read_text()),
    "running_after": status.running,
    "rig_left": [c.name for c in bpy.data.collections if "Cameras" in c.name],
    "cameras_left": len(bpy.data.cameras),
}

# 3. Errors say what to fix: an unreachable remote backend, a wrong local interpreter.
preferences.backend = "REMOTE"
preferences.remote_url = "http://127.0.0.1:9"  # the discard port: nothing listens there
errors = {}
try:
    bpy.ops.radiant_forge.check_backend()
except RuntimeError as exc:
    errors["remote"] = str(exc)
preferences.backend = "LOCAL"
preferences.python_path = str(tmp / "no-such-venv" / "bin" / "python")
try:
    bpy.ops.radiant_forge.check_backend()
except RuntimeError as exc:
    errors["local"] = str(exc)
try:
    bpy.ops.radiant_forge.cancel_job()
except RuntimeError as exc:
    errors["cancel_without_job"] = str(exc)
checks["errors"] = errors

# 4. Disable: nothing of the add-on may stay registered.
bpy.ops.preferences.addon_disable(module=MODULE)
def leftovers():
    left = [cls.__name__ for cls in classes if "bl_rna" in cls.__dict__]
    left += [name for name in registered if getattr(bpy.types, name, None) is not None]
    left += [f"Scene.{p}" for p in ("radiantforge",) if hasattr(bpy.types.Scene, p)]
    left += [f"WindowManager.{p}" for p in ("radiantforge_job",) if hasattr(bpy.types.WindowManager, p)]
    for header in (bpy.types.STATUSBAR_HT_header, bpy.types.TOPBAR_MT_file_import):
        left += [f"{header.__name__} draw {f.__module__}" for f in header._dyn_ui_initialize() if f.__module__.startswith(MODULE)]
    left += [op for op in dir(bpy.ops.radiant_forge)]
    return left
checks["left_after_disable"] = leftovers()
checks["enabled_after_disable"] = MODULE in bpy.context.preferences.addons

# 5. Enabling again works (register twice in a session), and disabling again is clean too.
bpy.ops.preferences.addon_enable(module=MODULE)
checks["reenabled_ops"] = len(dir(bpy.ops.radiant_forge))
bpy.ops.preferences.addon_disable(module=MODULE)
checks["left_after_second_disable"] = leftovers()
report(checks)
"""

EXPECTED_OPERATORS = ["batch_cancel", "batch_from_file", "batch_from_selection", "cancel_job", "capture_train", "check_backend", "export_job", "export_splats", "generate_from_text", "import_gaussians",
                      "import_result", "import_turntable", "restore_render_settings", "resume_job", "start_backend", "stop_backend", "texture_mesh",
                      "toggle_originals", "train_dataset"]


def test_install_enable_use_disable_leaves_nothing(tmp_path, extension_zip):
    script = INSTALL_SCRIPT.replace("MODULE_NAME", MODULE).replace("SPLAT", repr(str(splat_asset("train-1000.ply"))))
    checks = run_bpy(script, tmp_path, args=[str(extension_zip), str(tmp_path)], timeout=120)

    assert checks["enabled"]
    assert checks["types_present"] == checks["registered"]
    for name in ("RADIANTFORGE_PT_main", "RADIANTFORGE_PT_capture", "RADIANTFORGE_PT_gaussians",
                 "RADIANTFORGE_PT_texture", "RADIANTFORGE_PT_text_to_3d", "RadiantForgePreferences",
                 "RADIANTFORGE_OT_capture_train", "RadiantForgeSceneSettings"):
        assert name in checks["registered"]
    assert checks["scene_props"] and checks["wm_props"]
    assert checks["preferences_backend"] == "LOCAL"
    assert checks["operators"] == EXPECTED_OPERATORS

    assert checks["import"] == {"added": 1, "name": "train-1000", "vertices": 1000, "attributes": 59}

    export = checks["export"]
    assert export["job"] == {"format_version": 1, "kind": "gaussians", "params": {"steps": 123, "sh_degree": 3}}
    files = export["files"]
    assert {"job.json", "data/transforms_train.json", "data/transforms_test.json", "data/points3d.ply"} <= set(files)
    assert len([f for f in files if f.endswith(".png")]) == 4  # 4 views: 2 train, 2 test
    assert not export["running_after"]
    assert export["rig_left"] == [] and export["cameras_left"] == 1  # the orbit rig is removed, the scene camera stays

    errors = checks["errors"]
    assert "cannot reach" in errors["remote"] and "127.0.0.1:9" in errors["remote"]
    assert "does not exist" in errors["local"] and "no-such-venv" in errors["local"]
    assert "poll" in errors["cancel_without_job"]  # Cancel is only available while a job runs

    assert checks["left_after_disable"] == []
    assert not checks["enabled_after_disable"]
    assert checks["reenabled_ops"] == len(EXPECTED_OPERATORS)
    assert checks["left_after_second_disable"] == []


def test_job_folder_is_what_the_backend_validates(tmp_path):
    """A folder exported by the add-on passes the backend's own job validation."""
    script = """
    import sys
    import bpy
    import radiantforge_addon
    radiantforge_addon.register()
    settings = bpy.context.scene.radiantforge
    settings.engine = "BLENDER_WORKBENCH"
    settings.resolution = 16
    settings.view_count = 6
    settings.test_every = 3
    settings.point_count = 30
    settings.quality = "STEPS"
    settings.steps = 50
    settings.sh_degree = 1
    settings.max_gaussians = 5000
    bpy.ops.radiant_forge.export_job(job_dir=sys.argv[1])
    settings.quality = "DRAFT"  # a time budget instead of steps
    bpy.ops.radiant_forge.export_job(job_dir=sys.argv[2])
    radiantforge_addon.unregister()
    report({"ok": True})
    """
    run_bpy(script, tmp_path, args=[str(tmp_path / "job"), str(tmp_path / "draft_job")])
    from radiantforge.jobs import validate_job

    spec = validate_job(tmp_path / "job")
    assert spec.kind == "gaussians"
    assert spec.params == {"steps": 50, "sh_degree": 1, "max_gaussians": 5000}
    assert spec.config.time_budget is None
    # Quality "Draft" sends the backend a two-minute budget and no steps: the backend picks them.
    draft = validate_job(tmp_path / "draft_job")
    assert draft.params == {"sh_degree": 1, "max_gaussians": 5000, "time_budget": 120}
    assert draft.config.time_budget == 120.0
    train = json.loads((tmp_path / "job" / "data" / "transforms_train.json").read_text())
    test = json.loads((tmp_path / "job" / "data" / "transforms_test.json").read_text())
    assert len(train["frames"]) == 4 and len(test["frames"]) == 2


def test_turntable_import_keeps_the_video_beside_the_blend(tmp_path):
    """Frames and an MP4 written by imageio/ffmpeg come in as an image sequence and a movie copied beside the .blend."""
    import imageio
    import imageio.v3 as iio
    import numpy as np

    result = tmp_path / "job" / "result"
    (result / "turntable").mkdir(parents=True)
    frames = [np.full((32, 48, 3), 30 * index, np.uint8) for index in range(6)]
    for index, frame in enumerate(frames):
        iio.imwrite(result / "turntable" / f"frame_{index:04d}.png", frame)
    imageio.mimwrite(result / "turntable.mp4", frames, fps=6, macro_block_size=16)
    (tmp_path / "scene").mkdir()
    script = """
    import sys
    from pathlib import Path
    import bpy
    import radiantforge_addon
    bpy.ops.wm.read_factory_settings(use_empty=True)
    bpy.ops.wm.save_as_mainfile(filepath=sys.argv[1])
    radiantforge_addon.register()
    assert bpy.ops.radiant_forge.import_turntable(directory=sys.argv[2], create_plane=True) == {"FINISHED"}
    sequence = next(i for i in bpy.data.images if i.source == "SEQUENCE")
    movie = next(i for i in bpy.data.images if i.source == "MOVIE")
    plane = next(o for o in bpy.data.objects if o.type == "MESH")
    texture = next(n for n in plane.active_material.node_tree.nodes if n.bl_idname == "ShaderNodeTexImage")
    report({"sequence": [sequence.name, Path(sequence.filepath).name, list(sequence.size)],
            "movie": [movie.filepath, movie.frame_duration, list(movie.size)],
            "plane": [texture.image == sequence, texture.image_user.frame_duration]})
    radiantforge_addon.unregister()
    """
    info = run_bpy(script, tmp_path, args=[str(tmp_path / "scene" / "scene.blend"), str(result)])
    assert info["sequence"] == ["job turntable frames", "frame_0000.png", [48, 32]]
    assert info["movie"] == ["//radiantforge-results/job_turntable/turntable.mp4", 6, [48, 32]]
    assert (tmp_path / "scene" / "radiantforge-results" / "job_turntable" / "turntable.mp4").read_bytes() == \
        (result / "turntable.mp4").read_bytes()
    assert info["plane"] == [True, 6]


CLIENT_ERRORS_SCRIPT = """
import json
import os
import stat
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from radiantforge_addon.backend_process import LocalBackend, check_interpreter
from radiantforge_addon.client import BackendError, ServiceClient

tmp = Path(sys.argv[1])

class OtherVersion(BaseHTTPRequestHandler):
    # A service of another API version at /api/v1/health, and a plain web server everywhere else.
    def do_GET(self):
        if self.path == "/api/v1/health" and self.server.speaks_radiantforge:
            body = json.dumps({"status": "ok", "version": "9.0.0", "api_version": 9}).encode()
            self.send_response(200)
        else:
            body = b"<html>not found</html>"
            self.send_response(404)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    def log_message(self, *args):
        pass

messages = {}
for speaks, key in ((True, "version"), (False, "not_service")):
    server = ThreadingHTTPServer(("127.0.0.1", 0), OtherVersion)
    server.speaks_radiantforge = speaks
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        ServiceClient(f"http://127.0.0.1:{server.server_address[1]}").health()
    except BackendError as exc:
        messages[key] = str(exc)
    server.shutdown()

# A real Python without the project on its path (no site-packages): "not installed", with the fix.
wrapper = tmp / "python-without-radiantforge"
wrapper.write_text(f"#!/bin/sh\\nexec {sys.executable} -S \\"$@\\"\\n")
wrapper.chmod(wrapper.stat().st_mode | stat.S_IXUSR)
try:
    check_interpreter(str(wrapper))
except BackendError as exc:
    messages["not_installed"] = str(exc)
try:
    LocalBackend(str(tmp)).start()
except BackendError as exc:
    messages["directory"] = str(exc)
try:
    ServiceClient("ftp://example.org")
except BackendError as exc:
    messages["scheme"] = str(exc)
messages["version_of_this_python"] = check_interpreter(sys.executable)
report(messages)
"""


def test_backend_errors_say_what_to_fix(tmp_path):
    messages = run_bpy(CLIENT_ERRORS_SCRIPT, tmp_path, args=[str(tmp_path)])
    assert "version mismatch" in messages["version"] and "API version 9" in messages["version"]
    assert "install the same Radiant Forge version" in messages["version"]
    assert "not a Radiant Forge service" in messages["not_service"]
    assert "not installed" in messages["not_installed"] and "pip install" in messages["not_installed"]
    assert "not an executable Python interpreter" in messages["directory"]
    assert "http://HOST:PORT" in messages["scheme"]
    from radiantforge import __version__

    assert messages["version_of_this_python"] == __version__

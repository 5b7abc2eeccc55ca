"""The add-on against a real `radiantforge serve` on loopback: capture → train → import, cancel, errors.

Everything is real: the pip `bpy` module renders a small scene, the add-on starts the service
with this interpreter (Local backend) or talks to it by URL and token (Remote: archive upload and
result.zip download), the service trains in its worker process on the CPU, and the imported
object's attributes are compared with the PLY the backend wrote, read by plyfile.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import plyfile

from blender_helpers import REPO, run_bpy

# Small enough for a CI CPU: a few views at a tiny size, a few training steps.
TINY_CAPTURE = ["--views", "8", "--test-every", "4", "--resolution", "24", "--engine", "BLENDER_WORKBENCH",
                "--points", "300"]


def _make_scene(tmp_path):
    script = """
    import sys
    import bpy
    from radiantforge_addon import demo_scene
    bpy.ops.wm.read_factory_settings(use_empty=True)
    demo_scene.build_default_scene(bpy.context.scene)
    bpy.ops.wm.save_as_mainfile(filepath=sys.argv[1])
    report({"objects": [o.name for o in bpy.data.objects]})
    """
    run_bpy(script, tmp_path, args=[str(tmp_path / "scene.blend")])
    return tmp_path / "scene.blend"


def test_example_script_captures_trains_imports_and_saves(tmp_path):
    blend = _make_scene(tmp_path)
    source_bytes = blend.read_bytes()
    out = tmp_path / "trained.blend"
    environment = {"BLENDER_USER_RESOURCES": str(tmp_path / "blender_user")}
    completed = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "blender_example.py"), str(blend), "--out", str(out), *TINY_CAPTURE,
         "--steps", "8", "--sh-degree", "1", "--service-root", str(tmp_path / "service")],
        capture_output=True, text=True, timeout=240, env={**__import__("os").environ, **environment}, cwd=tmp_path)
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    summary = json.loads(completed.stdout.strip().splitlines()[-1])
    assert summary["state"] == "finished" and summary["saved"] == str(out)
    assert blend.read_bytes() == source_bytes  # the input .blend is never written
    assert isinstance(summary["metrics"].get("psnr"), float)

    result_ply = tmp_path / "radiantforge_jobs"
    plys = sorted(result_ply.glob("*/result/point_cloud.ply"))
    assert len(plys) == 1, sorted(p.as_posix() for p in result_ply.rglob("*"))
    vertex = plyfile.PlyData.read(str(plys[0]))["vertex"]
    assert summary["splat_count"] == len(vertex.data)

    # Open the saved file in a fresh Blender and compare the object with the PLY.
    script = """
    import sys
    import bpy
    import numpy as np
    bpy.ops.wm.open_mainfile(filepath=sys.argv[1])
    obj = bpy.data.objects[sys.argv[2]]
    count = len(obj.data.vertices)
    arrays = {}
    positions = np.empty(count * 3, dtype=np.float32)
    obj.data.vertices.foreach_get("co", positions)
    arrays["__position"] = positions.reshape(-1, 3)
    for attribute in obj.data.attributes:
        if attribute.domain == "POINT" and attribute.data_type == "FLOAT" and not attribute.name.startswith("."):
            values = np.empty(count, dtype=np.float32)
            attribute.data.foreach_get("value", values)
            arrays[attribute.name] = values
    np.savez(sys.argv[3], **arrays)
    modifier = obj.modifiers[0]
    # The viewport draws real Gaussians itself (the modifier is off there); renders use the modifier.
    shown = {"viewport": modifier.show_viewport,
             "render": modifier.show_render}
    modifier.show_viewport = True
    depsgraph = bpy.context.evaluated_depsgraph_get()
    instances = sum(1 for i in depsgraph.object_instances if i.is_instance and i.parent and i.parent.original == obj)
    report({"modifiers": [m.type for m in obj.modifiers], "instances": instances, "shown": shown,
            "camera": bpy.context.scene.camera is not None})
    """
    dump = tmp_path / "saved.npz"
    info = run_bpy(script, tmp_path, args=[str(out), summary["object"], str(dump)])
    arrays = dict(np.load(dump))
    assert info["modifiers"] == ["NODES"]
    assert info["shown"] == {"viewport": False, "render": True}
    assert info["camera"] is False  # the capture's rig is gone: the sprites fall back to one ellipsoid per splat
    assert info["instances"] == len(vertex.data), info
    np.testing.assert_array_equal(arrays["__position"],
                                  np.stack([vertex["x"], vertex["y"], vertex["z"]], axis=1).astype(np.float32))
    for name in vertex.data.dtype.names:
        if name not in ("x", "y", "z"):
            np.testing.assert_array_equal(arrays[name], np.asarray(vertex[name], dtype=np.float32), err_msg=name)


REMOTE_SCRIPT = """
import os
import sys
import time
from pathlib import Path
import bpy
import radiantforge_addon
from radiantforge_addon import capture, demo_scene, pipeline
from radiantforge_addon.io import job_folder
from radiantforge_addon.backend_process import LocalBackend
from radiantforge_addon.client import BackendError, ServiceClient
from radiantforge_addon.settings import BackendSettings

tmp = Path(sys.argv[1])
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
objects = demo_scene.build_default_scene(scene)
service = LocalBackend(sys.executable, root=str(tmp / "service"))
client = service.start()
remote = BackendSettings(mode="REMOTE", url=client.url, token=client.token)
outcome = {}
try:
    try:
        ServiceClient(client.url, "not-the-token").health()
    except BackendError as exc:
        outcome["bad_token"] = str(exc)

    def plan():
        return capture.CapturePlan(scene=scene, objects=objects, view_count=8, settings=capture.CaptureSettings(
            engine="BLENDER_WORKBENCH", resolution=(24, 24), test_every=4, n_points=300))

    # Operators, as a script calls them: export a job folder, then train on its dataset through the
    # remote service (the folder is uploaded as a zip, the result comes back as result.zip).
    radiantforge_addon.register()
    settings = scene.radiantforge
    settings.engine, settings.resolution, settings.view_count = "BLENDER_WORKBENCH", 24, 8
    settings.test_every, settings.point_count, settings.steps, settings.sh_degree = 4, 300, 5, 0
    settings.quality = "STEPS"
    settings.jobs_folder = str(tmp / "jobs")
    assert bpy.ops.radiant_forge.export_job(job_dir=str(tmp / "exported")) == {"FINISHED"}
    os.environ["RADIANTFORGE_URL"], os.environ["RADIANTFORGE_TOKEN"] = client.url, client.token
    finished = bpy.ops.radiant_forge.train_dataset(directory=str(tmp / "exported" / "data"))
    status = bpy.context.window_manager.radiantforge_job
    outcome["remote"] = {"outcome": sorted(finished), "error": status.error, "job_dir": status.job_dir,
                         "object": status.result_object.name if status.result_object else None,
                         "count": status.result_object["radiantforge_splat_count"] if status.result_object else 0,
                         "metrics": status.metrics_json}
    del os.environ["RADIANTFORGE_URL"]
    radiantforge_addon.unregister()

    # Bad input comes back as the service's 4xx answer naming the field.
    bad = job_folder.job_from_dataset(tmp / "exported" / "data", tmp / "jobs" / "bad", {"steps": 5, "colour": "red"})
    runner = pipeline.gaussian_job(bad, backend=remote).run_blocking()
    outcome["bad_params"] = {"state": runner.state, "error": runner.error}

    # Cancel while the service trains: the job ends "cancelled", on the service as well.
    runner = pipeline.gaussian_job(tmp / "jobs" / "cancelled", capture=plan(), backend=remote,
                                   params=job_folder.gaussian_params(steps=100000, sh_degree=0, progress_every=1))
    seen_training = False
    deadline = time.monotonic() + 120
    while runner.step() and time.monotonic() < deadline:
        if runner.phase == "running" and runner.progress > 0 and not seen_training:
            seen_training = True
            runner.cancel()
        time.sleep(0.02)
    service_state = client.job(runner.job_id)["state"] if runner.job_id else None
    outcome["cancel"] = {"state": runner.state, "seen_training": seen_training, "service_state": service_state,
                         "objects": len(bpy.data.objects), "error": runner.error, "message": runner.message}

    # Cancel during the capture: nothing is left behind, the scene's settings are back.
    engine_before = scene.render.engine
    runner = pipeline.gaussian_job(tmp / "jobs" / "cancel-capture", capture=plan(), backend=remote,
                                   params=job_folder.gaussian_params(steps=5))
    steps = 0
    while runner.step():
        steps += 1
        if steps == 2:
            runner.cancel()
    outcome["cancel_capture"] = {"state": runner.state, "job_dir_exists": (tmp / "jobs" / "cancel-capture").exists(),
                                 "engine_restored": scene.render.engine == engine_before,
                                 "rig_left": [c.name for c in bpy.data.collections if "Cameras" in c.name],
                                 "error": runner.error}
finally:
    service.stop()
outcome["service_stopped"] = not service.is_running()
report(outcome)
"""


def test_remote_upload_download_cancel_and_bad_token(tmp_path):
    outcome = run_bpy(REMOTE_SCRIPT, tmp_path, args=[str(tmp_path)], timeout=300)

    assert "401" in outcome["bad_token"] and "token" in outcome["bad_token"]

    remote = outcome["remote"]
    assert remote["outcome"] == ["FINISHED"], remote["error"]
    job_dir = tmp_path / "jobs" / remote["job_dir"].rsplit("/", 1)[-1]
    assert remote["job_dir"] == str(job_dir) and job_dir.name.endswith("-data")
    # The dataset was copied into a new job folder (the exported one is untouched) and sent as a zip;
    # the result was downloaded into the client's job folder.
    assert sorted(p.name for p in (tmp_path / "exported").iterdir()) == ["data", "job.json"]
    vertex = plyfile.PlyData.read(str(job_dir / "result" / "point_cloud.ply"))["vertex"]
    assert remote["count"] == len(vertex.data) > 0
    assert "psnr" in json.loads(remote["metrics"])
    assert not (job_dir / "events.jsonl").exists()  # the job ran on the service's copy

    assert outcome["bad_params"]["state"] == "failed"
    assert "422" in outcome["bad_params"]["error"] and "params.colour" in outcome["bad_params"]["error"]

    cancel = outcome["cancel"]
    assert cancel["seen_training"], (cancel["error"], cancel["message"])
    assert cancel["state"] == "cancelled" and cancel["service_state"] == "cancelled"
    assert not (tmp_path / "jobs" / "cancelled" / "result").exists()

    cancel_capture = outcome["cancel_capture"]
    error = cancel_capture.pop("error")
    assert cancel_capture == {"state": "cancelled", "job_dir_exists": False, "engine_restored": True, "rig_left": []}, error
    assert outcome["service_stopped"]

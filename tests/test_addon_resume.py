"""The add-on's Resume: a job stopped on a real service continues from its checkpoint and is imported.

Real parts throughout: the pip `bpy` module captures the demo scene, the add-on's own LocalBackend
starts `radiantforge serve` with this interpreter (with its per-session token), the job trains in
a worker process and is cancelled mid-run through the add-on's JobRunner; then the Resume operator
(as a script calls it) asks the service to resume it, follows it to the end and imports the splats,
which are compared with the PLY the backend wrote.
"""

from __future__ import annotations

import json

import plyfile

from blender_helpers import run_bpy

STEPS = 200

SCRIPT = """
import json
import os
import sys
import time
from pathlib import Path

import bpy
import radiantforge_addon
from radiantforge_addon import capture, demo_scene, pipeline, session
from radiantforge_addon.backend_process import LocalBackend
from radiantforge_addon.io import job_folder
from radiantforge_addon.settings import BackendSettings

tmp = Path(sys.argv[1])
steps = int(sys.argv[2])
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
objects = demo_scene.build_default_scene(scene)
service = LocalBackend(sys.executable, root=str(tmp / "service"))
client = service.start()
backend = BackendSettings(mode="REMOTE", url=client.url, token=client.token)
outcome = {}
try:
    radiantforge_addon.register()
    plan = capture.CapturePlan(scene=scene, objects=objects, view_count=8, settings=capture.CaptureSettings(
        engine="BLENDER_WORKBENCH", resolution=(24, 24), test_every=4, n_points=300))
    params = job_folder.gaussian_params(steps=steps, sh_degree=0, checkpoint_every=50, progress_every=1,
                                        turntable_frames=0)
    runner = pipeline.gaussian_job(tmp / "jobs" / "stopped", capture=plan, backend=backend, params=params,
                                   name="resumed splats")
    deadline = time.monotonic() + 180
    while runner.step() and time.monotonic() < deadline:
        if runner.phase == "running" and runner.progress * steps >= 60 and not runner._cancel_requested:
            runner.cancel()
        time.sleep(0.02)
    session.sync_status(bpy.context, runner)
    status = bpy.context.window_manager.radiantforge_job
    outcome["stopped"] = {"state": runner.state, "resumable": status.resumable, "job_id": runner.job_id,
                          "checkpoint": client.job(runner.job_id)["checkpoint"]}

    # The panel's Resume button, as a script presses it (blocking: EXEC_DEFAULT).
    session.set_last_runner(runner)
    resumed = bpy.ops.radiant_forge.resume_job()
    obj = status.result_object
    outcome["resumed"] = {"outcome": sorted(resumed), "error": status.error, "message": status.message,
                          "count": obj["radiantforge_splat_count"] if obj else 0,
                          "result_dir": str(session.last_runner().result_dir),
                          "events": [e["type"] for e in client.events(runner.job_id)[0]]}

    # A finished job cannot be resumed: the service's 409 comes back as the operator's error.
    try:  # an operator that reports an error raises it to a script
        again = bpy.ops.radiant_forge.resume_job()
        raised = ""
    except RuntimeError as exc:
        again, raised = {"CANCELLED"}, str(exc)
    outcome["again"] = {"outcome": sorted(again), "error": status.error, "raised": raised}
    radiantforge_addon.unregister()
finally:
    service.stop()
report(outcome)
"""


def test_a_cancelled_job_resumes_from_its_checkpoint_and_is_imported(tmp_path):
    outcome = run_bpy(SCRIPT, tmp_path, args=[str(tmp_path), str(STEPS)], timeout=420)

    stopped = outcome["stopped"]
    assert stopped["state"] == "cancelled" and stopped["resumable"], stopped
    held = stopped["checkpoint"]["step"]
    assert 60 <= held < STEPS

    resumed = outcome["resumed"]
    assert resumed["outcome"] == ["FINISHED"], resumed["error"]
    # The service's story: started, cancelled, queued again by the resume, started (resumed), finished.
    events = resumed["events"]
    assert events.count("started") == 2 and "cancelled" in events and "queued" in events
    assert events[-1] == "finished"
    vertex = plyfile.PlyData.read(f"{resumed['result_dir']}/point_cloud.ply")["vertex"]
    assert resumed["count"] == len(vertex.data) > 0
    result = json.loads(open(f"{resumed['result_dir']}/result.json").read())
    assert result["steps"] == STEPS

    again = outcome["again"]
    assert again["outcome"] == ["CANCELLED"]
    assert "409" in again["error"] and "finished" in again["error"] and again["error"] in again["raised"]

"""The add-on's Batch (addon/batch.py) in the real bpy: the selected meshes become texture entries with the panel's
prompt and settings (a camera in the selection is skipped), each written as a texture job folder of its evaluated
mesh (known answer: the OBJ holds the cube's 8 corners where the cube sits, in OBJ's Y-up axes); a prompt-per-line
file and a JSON-lines batch file are read; and a BatchRun submits to a real service (tests/service_helpers.py):
the Gaussian entry finishes, the entry the service refuses (a mesh that is no mesh) is listed failed with the
service's reason, and the panel's rows say so.
"""

from __future__ import annotations

from blender_helpers import run_bpy
from service_helpers import ServiceProcess, make_sphere_dataset

TOKEN = "batch-addon-token"

SCRIPT = """
import json
import sys
from pathlib import Path

import bpy
import numpy as np

import radiantforge_addon
from radiantforge_addon import batch, pipeline
from radiantforge_addon.client import ServiceClient

tmp, url, token, sphere_data = Path(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
radiantforge_addon.register()
scene.radiantforge.texture.prompt = "weathered bronze"
bpy.ops.mesh.primitive_cube_add(size=2.0, location=(3.0, 0.0, 0.0))
bpy.context.active_object.name = "Crate"
bpy.ops.mesh.primitive_cube_add(size=1.0, location=(0.0, 0.0, 5.0))
bpy.context.active_object.name = "Box"
camera = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
scene.collection.objects.link(camera)
for obj in scene.objects:
    obj.select_set(True)

entries = batch.entries_from_objects(bpy.context.selected_objects, pipeline.texture_params(scene))
meshes = {}
for entry in entries:
    job_dir = batch.write_entry_job(entry, tmp / "jobs" / entry.label, depsgraph=bpy.context.evaluated_depsgraph_get())
    job = json.loads((job_dir / "job.json").read_text())
    corners = np.array([[float(v) for v in line.split()[1:4]] for line in (job_dir / "data" / "mesh.obj").read_text().splitlines()
                        if line.startswith("v ")])
    meshes[entry.label] = {"kind": job["kind"], "prompt": job["params"]["prompt"],
                           "steps": job["params"]["steps"], "panel_steps": scene.radiantforge.texture.steps,
                           "min": corners.min(axis=0).round(4).tolist(), "max": corners.max(axis=0).round(4).tolist(),
                           "count": len(corners)}

(tmp / "prompts.txt").write_text("a red teapot\\n# a comment\\n\\na blue chair\\n")
prompts = batch.read_batch_file(tmp / "prompts.txt", {"steps": 7})
(tmp / "not_a_mesh.obj").write_text("this is no mesh")
lines = [json.dumps({"kind": "gaussians", "data": sphere_data, "name": "sphere",
                     "params": {"steps": 20, "sh_degree": 0, "init_points": 100, "max_gaussians": 100, "device": "cpu",
                                "rasterize_backend": "torch", "turntable_frames": 0}}),
         json.dumps({"kind": "texture", "mesh": "not_a_mesh.obj", "prompt": "oak"})]
(tmp / "batch.jsonl").write_text("\\n".join(lines) + "\\n")
from_file = batch.read_batch_file(tmp / "batch.jsonl", {})

run = batch.BatchRun(from_file, tmp / "batch", lambda: ServiceClient(url, token))
rows_seen = set()
deadline = __import__("time").monotonic() + 90
while run.step() and __import__("time").monotonic() < deadline:
    rows_seen.update(state.split(" ")[0] for _, state in batch.batch_rows(run.entries))
    __import__("time").sleep(0.05)
report({"meshes": meshes, "labels": [e.label for e in entries],
        "prompts": [(e.kind, e.params) for e in prompts],
        "states": [(e.label, e.state, e.job_id, e.error) for e in run.entries], "error": run.error,
        "rows": batch.batch_rows(run.entries), "seen": sorted(rows_seen), "done": run.done})
radiantforge_addon.unregister()
"""


def test_batch_from_the_selection_and_from_files_submitted_and_listed(tmp_path):
    sphere = make_sphere_dataset(tmp_path / "sphere", n_train=4, n_test=1)
    service = ServiceProcess(tmp_path / "root", token=TOKEN).start()
    try:
        url = service.url.rsplit("/api/v1", 1)[0]
        out = run_bpy(SCRIPT, tmp_path, timeout=150,
                      args=[str(tmp_path), url, TOKEN, str(sphere)])
    finally:
        service.stop()

    assert sorted(out["labels"]) == ["Box", "Crate"]  # the camera is no mesh
    crate, box = out["meshes"]["Crate"], out["meshes"]["Box"]
    for mesh in (crate, box):
        assert mesh["kind"] == "texture" and mesh["prompt"] == "weathered bronze" and mesh["steps"] == mesh["panel_steps"]
        assert mesh["count"] == 8
    # OBJ is Y up: Blender's (x, y, z) is (x, z, -y) there.
    assert crate["min"] == [2.0, -1.0, -1.0] and crate["max"] == [4.0, 1.0, 1.0]
    assert box["min"] == [-0.5, 4.5, -0.5] and box["max"] == [0.5, 5.5, 0.5]
    assert out["prompts"] == [["text3d", {"steps": 7, "prompt": "a red teapot"}],
                              ["text3d", {"steps": 7, "prompt": "a blue chair"}]]

    assert out["done"] and not out["error"], out
    states = {label: (state, job_id, error) for label, state, job_id, error in out["states"]}
    assert states["sphere"][0] == "finished" and states["sphere"][1]
    refused_state, refused_id, refused_error = states["oak"]
    assert refused_state == "failed" and not refused_id and refused_error, refused_error  # 422: the service's reason
    rows = dict(map(tuple, out["rows"]))
    assert rows["gaussians · sphere"] == "finished"
    assert rows["texture · oak"].startswith("failed: ")
    assert {"pending", "running"} <= set(out["seen"])  # the rows followed the states as they changed

"""The add-on's "Generate from Text" against a real `radiantforge serve`, with the real bpy.

The service runs the tiny random Stable Diffusion of tests/tiny_diffusion.py, saved into a fake
Hugging Face cache (HF_HUB_CACHE of the service's process) under SD 1.5's id, so the add-on's
default model name "sd15" resolves there exactly as a real model would. The add-on starts the
service itself (Local backend) and hands it the job folder in place.

Checked:
- the job folder: job.json of kind "text3d" with the scene's Text-to-3D settings (advanced ones included);
- the generated mesh comes in with its material (Principled BSDF whose Base Color is an image,
  packed into the .blend, holding exactly the result's baked texture), its vertices are the
  result's mesh.obj moved to where the 3D cursor was when the job started;
- the RGB turntable comes in as an image sequence of every frame; the panel's preview is set;
- an empty prompt and a job the service rejects (no such model) leave nothing behind.
"""

from __future__ import annotations

import json

import numpy as np
from PIL import Image

from blender_helpers import run_bpy
from radiantforge.guidance import MODEL_ALIASES
from radiantforge.mesh import load_mesh
from tiny_diffusion import build_tiny_stable_diffusion, install_in_fake_hf_cache

CURSOR = (1.5, -2.0, 0.75)
TEXTURE_SIZE = 32

ADDON_SCRIPT = """
import os
import sys
from pathlib import Path

import bpy
import numpy as np

import radiantforge_addon

tmp = Path(sys.argv[1])
cursor = tuple(float(v) for v in sys.argv[2].split(","))
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene
radiantforge_addon.register()
settings = scene.radiantforge
settings.text3d.prompt = "a small wooden stool"
settings.text3d.negative_prompt = "blurry"
settings.text3d.steps, settings.text3d.seed, settings.text3d.resolution = 3, 4, 12
settings.text3d.guidance_scale = 7.5
settings.text3d.latent_iter_ratio, settings.text3d.albedo_probability = 0.0, 0.5
settings.text3d.textureless_probability, settings.text3d.ambient = 0.25, 0.2
settings.text3d.entropy_weight, settings.text3d.orientation_weight, settings.text3d.sparsity_weight = 0.01, 0.02, 0.001
settings.text3d.target_faces, settings.text3d.texture_size = 400, int(sys.argv[3])
settings.jobs_folder = str(tmp / "jobs")
status = bpy.context.window_manager.radiantforge_job


def run_operator(**options):
    # bpy.ops raises when an operator reports an error: return (["CANCELLED"], message) then.
    try:
        return sorted(bpy.ops.radiant_forge.generate_from_text(**options)), ""
    except RuntimeError as error:
        return ["CANCELLED"], str(error)


outcome = {}
os.environ["RADIANTFORGE_PYTHON"] = sys.executable
os.environ["RADIANTFORGE_ROOT"] = str(tmp / "service")
try:
    settings.text3d.prompt, prompt = "  ", settings.text3d.prompt
    result, error = run_operator()
    outcome["empty_prompt"] = {"result": result, "error": error, "objects": sorted(o.name for o in bpy.data.objects),
                               "jobs": sorted(p.name for p in (tmp / "jobs").glob("*")) if (tmp / "jobs").exists() else []}
    settings.text3d.prompt = prompt

    scene.cursor.location = cursor
    result, error = run_operator(job_dir=str(tmp / "jobs" / "stool"))
    scene.cursor.location = (0.0, 0.0, 0.0)  # moving the cursor afterwards moves nothing
    obj = status.result_object
    vertices = np.empty(len(obj.data.vertices) * 3, dtype=np.float64)
    obj.data.vertices.foreach_get("co", vertices)
    matrix = np.array(obj.matrix_world)
    world = vertices.reshape(-1, 3) @ matrix[:3, :3].T + matrix[:3, 3]
    np.save(tmp / "stool_vertices.npy", world)
    material = obj.material_slots[0].material
    shader = next(n for n in material.node_tree.nodes if n.type == "BSDF_PRINCIPLED")
    base = shader.inputs["Base Color"]
    image_node = base.links[0].from_node if base.is_linked else None
    image = image_node.image if image_node is not None and image_node.type == "TEX_IMAGE" else None
    if image is not None:
        pixels = np.empty(image.size[0] * image.size[1] * 4, dtype=np.float32)
        image.pixels.foreach_get(pixels)
        np.save(tmp / "stool_pixels.npy", pixels)
    sequences = [i for i in bpy.data.images if i.source == "SEQUENCE"]
    outcome["generated"] = {
        "result": result, "error": error or status.error, "message": status.message, "object": obj.name,
        "type": obj.type, "faces": len(obj.data.polygons), "materials": len(obj.material_slots),
        "image": None if image is None else {"size": list(image.size), "packed": image.packed_file is not None,
                                             "colorspace": image.colorspace_settings.name},
        "job_tag": obj.get("radiantforge_text3d_job"), "prompt_tag": obj.get("radiantforge_prompt"),
        "turntable_frames": [int(i.get("radiantforge_frame_count", 0)) for i in sequences],
        "preview": status.preview_image.name if status.preview_image else None,
    }

    settings.text3d.model = "nobody/no-such-model"
    before = sorted(o.name for o in bpy.data.objects)
    result, error = run_operator(job_dir=str(tmp / "jobs" / "rejected"))
    outcome["rejected"] = {"result": result, "error": error or status.error, "before": before,
                           "after": sorted(o.name for o in bpy.data.objects)}
finally:
    radiantforge_addon.unregister()  # stops the local service it started
print(flush=True)
report(outcome)
"""


def test_generate_from_text_through_the_service(tmp_path):
    model = build_tiny_stable_diffusion(tmp_path / "tiny_model")
    cache = tmp_path / "hf_cache"
    install_in_fake_hf_cache(model.folder, cache, MODEL_ALIASES["sd15"])
    environment = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    outcome = run_bpy(ADDON_SCRIPT, tmp_path, args=[str(tmp_path), ",".join(map(str, CURSOR)), str(TEXTURE_SIZE)],
                      env=environment, timeout=300)

    empty = outcome["empty_prompt"]
    assert empty["result"] == ["CANCELLED"] and "prompt is empty" in empty["error"]
    assert empty["objects"] == [] and empty["jobs"] == []

    generated = outcome["generated"]
    assert generated["result"] == ["FINISHED"], generated["error"]
    assert generated["object"] == "RF a small wooden stool" and generated["type"] == "MESH"
    assert generated["prompt_tag"] == "a small wooden stool"
    job = tmp_path / "jobs" / "stool"
    assert generated["job_tag"] == str(job)
    spec = json.loads((job / "job.json").read_text())
    assert spec["kind"] == "text3d" and (job / "data" / "prompt.txt").read_text() == "a small wooden stool\n"
    assert spec["params"] == {
        "prompt": "a small wooden stool", "negative_prompt": "blurry", "steps": 3, "seed": 4, "resolution": 12,
        "guidance_scale": 7.5, "latent_iter_ratio": 0.0, "albedo_probability": 0.5,
        "textureless_probability": 0.25, "ambient": spec["params"]["ambient"], "entropy_weight": spec["params"]["entropy_weight"],
        "orientation_weight": spec["params"]["orientation_weight"], "sparsity_weight": spec["params"]["sparsity_weight"],
        "target_faces": 400, "texture_size": TEXTURE_SIZE, "model": "sd15", "representation": "nerf"}
    assert np.allclose([spec["params"][k] for k in ("ambient", "entropy_weight", "orientation_weight", "sparsity_weight")],
                       [0.2, 0.01, 0.02, 0.001])

    # The mesh is the result's, moved to the cursor; its material shows the result's baked texture.
    result_mesh = load_mesh(job / "result" / "mesh.obj")
    assert generated["faces"] == result_mesh.num_faces <= 400
    blender_vertices = np.load(tmp_path / "stool_vertices.npy")
    expected = result_mesh.vertices.double().numpy() + np.array(CURSOR)
    assert blender_vertices.shape == expected.shape
    np.testing.assert_allclose(np.sort(blender_vertices, axis=0), np.sort(expected, axis=0), atol=1e-5)
    assert generated["image"]["size"] == [TEXTURE_SIZE, TEXTURE_SIZE] and generated["image"]["packed"]
    texture = np.asarray(Image.open(job / "result" / "mesh.png").convert("RGB"), dtype=np.float32) / 255.0
    pixels = np.load(tmp_path / "stool_pixels.npy").reshape(TEXTURE_SIZE, TEXTURE_SIZE, 4)[::-1, :, :3]
    assert generated["image"]["colorspace"] == "sRGB"  # colour data, shown as stored
    np.testing.assert_allclose(pixels, texture, atol=1e-6)

    manifest = json.loads((job / "result" / "result.json").read_text())
    frames = json.loads((job / "result" / "result.json").read_text())["config"]["turntable_frames"]
    assert manifest["kind"] == "text3d" and generated["turntable_frames"] == [frames]
    assert generated["preview"] is not None

    rejected = outcome["rejected"]
    assert rejected["result"] == ["CANCELLED"] and "422" in rejected["error"] and "model" in rejected["error"]
    assert rejected["after"] == rejected["before"]

"""The add-on's "Texture Selected Mesh" against a real `radiantforge serve`, with the real bpy.

The service runs the tiny random Stable Diffusion of tests/tiny_diffusion.py, saved into a fake
Hugging Face cache (HF_HUB_CACHE of the service's process) under SD 1.5's id, so the add-on's
default model name "sd15" resolves there exactly as a real model would.

Checked, on a UV sphere with a Subdivision modifier and a material of its own (textured in place,
through a local service that reads the job folder on disk) and on an icosphere without UVs that
is moved and turned (textured as a copy, through the same service as a remote one: upload,
download):
- the job's data/mesh.obj is the *evaluated* mesh in world space: its triangle corners and UVs,
  read back by the backend's loader, are Blender's loop triangles and loop UVs;
- the result comes back as a new material on the object (or copy) whose image holds exactly the
  result's texture.png, sampled through the UV map that was exported;
- nothing existing is changed: the sphere's own material (and its image) and mesh materials are
  as they were, the original icosphere keeps no UVs and no material;
- an empty prompt and a job the service rejects leave nothing behind (no copy, no UV map).
"""

from __future__ import annotations

import json

import numpy as np
import torch
from PIL import Image

from blender_helpers import run_bpy
from radiantforge.guidance import MODEL_ALIASES
from radiantforge.mesh import load_mesh
from tiny_diffusion import build_tiny_stable_diffusion, install_in_fake_hf_cache

ADDON_SCRIPT = """
import json
import os
import sys
from pathlib import Path

import bpy
import bmesh  # after bpy: the pip bpy module provides it
import numpy as np

import radiantforge_addon
from radiantforge_addon.settings import BackendSettings, connect

tmp = Path(sys.argv[1])
bpy.ops.wm.read_factory_settings(use_empty=True)
scene = bpy.context.scene

# A sphere with UVs, a modifier, a material and an image of the user's.
bpy.ops.mesh.primitive_uv_sphere_add(segments=12, ring_count=6, radius=0.8, location=(0.5, -0.3, 1.0))
sphere = bpy.context.active_object
sphere.name = "Ball"
sphere.modifiers.new("Subdivide", "SUBSURF").levels = 1
own_image = bpy.data.images.new("Own Image", 4, 4)
own_image.pixels.foreach_set(np.full(4 * 4 * 4, 0.25, dtype=np.float32))
own_material = bpy.data.materials.new("Own Material")
if own_material.node_tree is None:
    own_material.use_nodes = True
own_node = own_material.node_tree.nodes.new("ShaderNodeTexImage")
own_node.image = own_image
sphere.data.materials.append(own_material)
own_nodes_before = len(own_material.node_tree.nodes)
own_pixels_before = np.array(own_image.pixels[:])

# An icosphere without UVs or materials, moved and turned.
ico_mesh = bpy.data.meshes.new("Ico")
bm = bmesh.new()
bmesh.ops.create_icosphere(bm, subdivisions=2, radius=0.5)
bm.to_mesh(ico_mesh)
bm.free()
ico = bpy.data.objects.new("Ico", ico_mesh)
scene.collection.objects.link(ico)
ico.location = (-1.0, 0.5, 0.2)
ico.rotation_euler = (0.3, 0.0, 0.8)

radiantforge_addon.register()
settings = scene.radiantforge
settings.texture.prompt = "a red and white beach ball"
settings.texture.negative_prompt = "blurry"
settings.texture.guidance_scale = 7.5
settings.texture.steps, settings.texture.resolution, settings.texture.texture_size, settings.texture.seed = 3, 32, 64, 5
settings.jobs_folder = str(tmp / "jobs")
status = bpy.context.window_manager.radiantforge_job
view_layer = bpy.context.view_layer


def run_operator(**options):
    # bpy.ops raises when an operator reports an error: return (["CANCELLED"], message) then.
    try:
        return sorted(bpy.ops.radiant_forge.texture_mesh(**options)), ""
    except RuntimeError as error:
        return ["CANCELLED"], str(error)


def select(obj):
    for other in bpy.context.selected_objects:
        other.select_set(False)
    obj.select_set(True)
    view_layer.objects.active = obj


def evaluated_triangles(obj, uv_map):
    depsgraph = bpy.context.evaluated_depsgraph_get()
    evaluated = obj.evaluated_get(depsgraph)
    mesh = evaluated.to_mesh()
    mesh.calc_loop_triangles()
    matrix = np.array(evaluated.matrix_world)
    co = np.array([matrix[:3, :3] @ np.array(v.co) + matrix[:3, 3] for v in mesh.vertices])
    uv = np.array([d.uv[:] for d in mesh.uv_layers[uv_map].data])
    tris = np.array([t.vertices[:] for t in mesh.loop_triangles])
    loops = np.array([t.loops[:] for t in mesh.loop_triangles])
    evaluated.to_mesh_clear()
    return co[tris], uv[loops]


def material_report(obj):
    slots = [{"link": s.link, "material": s.material.name if s.material else None} for s in obj.material_slots]
    material = obj.material_slots[0].material
    image_node = next(n for n in material.node_tree.nodes if n.type == "TEX_IMAGE")
    uv_node = next(n for n in material.node_tree.nodes if n.type == "UVMAP")
    image = image_node.image
    pixels = np.empty(image.size[0] * image.size[1] * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    return slots, {"material": material.name, "image": image.name, "packed": image.packed_file is not None,
                   "size": list(image.size), "uv_map": uv_node.uv_map,
                   "linked_to_base_colour": any(l.to_socket.name == "Base Color" and l.from_node == image_node
                                                for l in material.node_tree.links)}, pixels


outcome = {}
# Local backend: the add-on starts the service (this interpreter) and hands it the job folder in place.
os.environ["RADIANTFORGE_PYTHON"] = sys.executable
os.environ["RADIANTFORGE_ROOT"] = str(tmp / "service")
try:
    # An empty prompt: refused before anything is made.
    settings.texture.prompt, prompt = "   ", settings.texture.prompt
    select(ico)
    settings.texture.target = "COPY"
    result, error = run_operator()
    outcome["empty_prompt"] = {"result": result, "error": error, "objects": sorted(o.name for o in bpy.data.objects)}
    settings.texture.prompt = prompt

    select(sphere)
    settings.texture.target = "SAME"
    result, error = run_operator(job_dir=str(tmp / "jobs" / "ball"))
    slots, material, pixels = material_report(sphere)
    np.save(tmp / "ball_pixels.npy", pixels)
    corners, uvs = evaluated_triangles(sphere, material["uv_map"])
    np.savez(tmp / "ball_triangles.npz", corners=corners, uvs=uvs)
    outcome["same"] = {"result": result, "error": error or status.error, "message": status.message,
                       "slots": slots, "material": material, "mesh_materials": [m.name for m in sphere.data.materials],
                       "own_nodes": len(own_material.node_tree.nodes) == own_nodes_before,
                       "own_image": own_image.name, "own_pixels_kept": bool(np.array_equal(own_image.pixels[:], own_pixels_before)),
                       "own_node_image": own_node.image.name, "result_object": status.result_object.name,
                       "uv_layers": sphere.data.uv_layers.keys()}

    # The same service as a remote one: the job folder is uploaded, the result downloaded.
    client = connect(BackendSettings.from_environment())
    os.environ["RADIANTFORGE_URL"], os.environ["RADIANTFORGE_TOKEN"] = client.url, client.token
    select(ico)
    settings.texture.target = "COPY"
    result, error = run_operator(job_dir=str(tmp / "jobs" / "ico"))
    copy = bpy.data.objects.get("Ico textured")
    slots, material, pixels = material_report(copy)
    np.save(tmp / "ico_pixels.npy", pixels)
    corners, uvs = evaluated_triangles(copy, material["uv_map"])
    np.savez(tmp / "ico_triangles.npz", corners=corners, uvs=uvs)
    outcome["copy"] = {"result": result, "error": error or status.error, "slots": slots, "material": material,
                       "copy_mesh_is_new": copy.data != ico.data, "copy_matrix": [list(r) for r in copy.matrix_world],
                       "original_matrix": [list(r) for r in ico.matrix_world],
                       "original_uv_layers": ico.data.uv_layers.keys(), "original_materials": len(ico.data.materials),
                       "copy_uv_layers": copy.data.uv_layers.keys()}

    # A job the service rejects (no such model on it): the copy made for it is removed again.
    settings.texture.model = "nobody/no-such-model"
    select(ico)
    result, error = run_operator(job_dir=str(tmp / "jobs" / "rejected"))
    outcome["rejected"] = {"result": result, "error": error or status.error,
                           "objects": sorted(o.name for o in bpy.data.objects),
                           "materials": sorted(m.name for m in bpy.data.materials)}
finally:
    os.environ.pop("RADIANTFORGE_URL", None)
    radiantforge_addon.unregister()  # stops the local service it started
# Blender prints long error reports truncated and without a newline: start the result on a line of its own.
print(flush=True)
report(outcome)
"""


def _texture_of_result(job_dir) -> np.ndarray:
    return np.asarray(Image.open(job_dir / "result" / "texture.png").convert("RGB"), dtype=np.float32) / 255.0


def _blender_pixels_as_image(path, size: int) -> np.ndarray:
    """Blender's image.pixels (bottom row first, RGBA) -> (H, W, 3) top row first, as the PNG."""
    return np.load(path).reshape(size, size, 4)[::-1, :, :3]


def _check_exported_mesh(job_dir, triangles_file):
    """data/mesh.obj and the result's OBJ read back as Blender's evaluated triangles and loop UVs."""
    blender = np.load(triangles_file)
    corners, uvs = torch.from_numpy(blender["corners"]).float(), torch.from_numpy(blender["uvs"]).float()
    for path in (job_dir / "data" / "mesh.obj", job_dir / "result" / "textured_mesh.obj"):
        mesh = load_mesh(path)
        assert mesh.num_faces == len(corners), path
        assert torch.allclose(mesh.vertices[mesh.faces], corners, atol=1e-5), path
        assert torch.allclose(mesh.uvs[mesh.face_uvs], uvs, atol=1e-6), path


def test_texture_selected_mesh_through_the_service(tmp_path):
    model = build_tiny_stable_diffusion(tmp_path / "tiny_model")
    cache = tmp_path / "hf_cache"
    install_in_fake_hf_cache(model.folder, cache, MODEL_ALIASES["sd15"])
    environment = {"HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1",
                   # Small tensors on a shared CPU: one thread per process runs fastest (see test_texture.py).
                   "OMP_NUM_THREADS": "1"}
    outcome = run_bpy(ADDON_SCRIPT, tmp_path, args=[str(tmp_path)], env=environment, timeout=240)

    empty = outcome["empty_prompt"]
    assert empty["result"] == ["CANCELLED"] and "prompt is empty" in empty["error"]
    assert "Ico textured" not in empty["objects"]

    same = outcome["same"]
    assert same["result"] == ["FINISHED"], same["error"]
    material = same["material"]
    assert material["material"].startswith("RF Texture: a red and white beach ball")
    assert same["slots"] == [{"link": "OBJECT", "material": material["material"]}]
    assert same["mesh_materials"] == ["Own Material"]  # the mesh's own material list is untouched
    assert same["own_nodes"] and same["own_image"] == "Own Image" and same["own_node_image"] == "Own Image"
    assert same["own_pixels_kept"]
    assert material["image"] == material["material"] and material["image"] != "Own Image" and material["packed"]
    assert material["uv_map"] == "UVMap" and material["linked_to_base_colour"]
    assert same["uv_layers"] == ["UVMap"] and same["result_object"] == "Ball"
    ball_job = tmp_path / "jobs" / "ball"
    texture = _texture_of_result(ball_job)
    assert material["size"] == [64, 64]
    np.testing.assert_allclose(_blender_pixels_as_image(tmp_path / "ball_pixels.npy", 64), texture, atol=1e-6)
    _check_exported_mesh(ball_job, tmp_path / "ball_triangles.npz")
    params = json.loads((ball_job / "job.json").read_text())["params"]
    assert params == {"prompt": "a red and white beach ball", "negative_prompt": "blurry", "guidance_scale": 7.5,
                      "steps": 3, "resolution": 32, "texture_size": 64, "seed": 5, "model": "sd15"}

    copy = outcome["copy"]
    assert copy["result"] == ["FINISHED"], copy["error"]
    assert copy["copy_mesh_is_new"] and copy["copy_matrix"] == copy["original_matrix"]
    assert copy["original_uv_layers"] == [] and copy["original_materials"] == 0
    assert copy["copy_uv_layers"] == ["RadiantForge UV"] and copy["material"]["uv_map"] == "RadiantForge UV"
    assert copy["slots"] == [{"link": "DATA", "material": copy["material"]["material"]}]
    ico_job = tmp_path / "jobs" / "ico"
    # The remote service ran its own copy of the job; the add-on downloaded the result next to the input.
    np.testing.assert_allclose(_blender_pixels_as_image(tmp_path / "ico_pixels.npy", 64), _texture_of_result(ico_job),
                               atol=1e-6)
    _check_exported_mesh(ico_job, tmp_path / "ico_triangles.npz")
    assert not (ico_job / "events.jsonl").exists()

    rejected = outcome["rejected"]
    assert rejected["result"] == ["CANCELLED"] and "422" in rejected["error"] and "model" in rejected["error"]
    assert rejected["objects"].count("Ico textured") == 1  # the earlier copy stays; no second copy is left
    assert sorted(o for o in rejected["objects"] if o.startswith("Ico")) == ["Ico", "Ico textured"]

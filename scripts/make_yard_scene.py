"""Build the "truck-class" tuning scene: Spot and the Stanford bunny in a textured walled yard.

A capture of our own for tuning Gaussian training on a scene that fills the frame, as a real
capture does (the demo and lego are objects on a plain background). Spot keeps its real texture,
the bunny gets a noise colour ramp, the floor is brick, four checker boxes stand around, and a
cylinder wall with a Voronoi/noise texture closes the yard. 200 cameras on a wavy ring look at
the middle, 160x90, Cycles at 24 samples. Usage::

    python scripts/make_yard_scene.py --out /tmp/yard.blend
    python -m radiantforge_addon.headless capture --blend /tmp/yard.blend --collection Cams \\
        --out /tmp/yard_data --points 10000          # about 3 min on 2 cores
    python scripts/bench_train.py /tmp/yard_data --steps 2000 --eval-every 500 --profile

Keep it apart from what you report on: tune on this scene, report on lego400 and captures you did
not tune on. Needs ``../shared/assets`` (spot, bunny) beside the repository.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import bpy
from mathutils import Vector

ASSETS = Path(__file__).resolve().parents[1].parent / "shared" / "assets"
CAMERA_COUNT = 200
RESOLUTION = (160, 90)
LOOK_AT = Vector((0.0, 0.0, 0.45))


def textured_material(name: str, texture_type: str, **inputs) -> tuple[bpy.types.Material, bpy.types.NodeTree]:
    """A Principled material whose base colour is a new texture node (returned in the node tree)."""
    material = bpy.data.materials.new(name)
    material.use_nodes = True
    tree = material.node_tree
    texture = tree.nodes.new(texture_type)
    for key, value in inputs.items():
        texture.inputs[key].default_value = value
    tree.links.new(texture.outputs["Color"], tree.nodes["Principled BSDF"].inputs["Base Color"])
    return material, tree


def add_objects(scene: bpy.types.Scene) -> None:
    bpy.ops.wm.obj_import(filepath=str(ASSETS / "spot" / "spot_triangulated.obj"), forward_axis="NEGATIVE_Z", up_axis="Y")
    spot = bpy.context.selected_objects[0]
    spot.location = (-0.45, 0.0, 0.72)
    bpy.ops.wm.ply_import(filepath=str(ASSETS / "bunny" / "bun_zipper.ply"), forward_axis="NEGATIVE_Z", up_axis="Y")
    bunny = bpy.context.selected_objects[0]
    bunny.scale = (6, 6, 6)
    bunny.location = (0.55, 0.1, -0.2)
    material = bpy.data.materials.new("bunny")
    material.use_nodes = True
    tree = material.node_tree
    noise = tree.nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 25.0
    ramp = tree.nodes.new("ShaderNodeValToRGB")
    ramp.color_ramp.elements[0].color = (0.8, 0.25, 0.05, 1)
    ramp.color_ramp.elements[1].color = (0.1, 0.4, 0.9, 1)
    tree.links.new(noise.outputs["Fac"], ramp.inputs["Fac"])
    tree.links.new(ramp.outputs["Color"], tree.nodes["Principled BSDF"].inputs["Base Color"])
    bunny.data.materials.append(material)

    bpy.ops.mesh.primitive_plane_add(size=20.0, location=(0, 0, 0))
    bpy.context.active_object.data.materials.append(textured_material("floor", "ShaderNodeTexBrick", Scale=6.0)[0])
    bpy.ops.mesh.primitive_cylinder_add(vertices=64, radius=9.0, depth=6.0, location=(0, 0, 2.9), end_fill_type="NOTHING")
    wall_material, tree = textured_material("wall", "ShaderNodeTexVoronoi", Scale=3.0)
    noise = tree.nodes.new("ShaderNodeTexNoise")
    noise.inputs["Scale"].default_value = 8.0
    mix = tree.nodes.new("ShaderNodeMix")
    mix.data_type = "RGBA"
    mix.inputs["Factor"].default_value = 0.5
    voronoi = next(node for node in tree.nodes if node.bl_idname == "ShaderNodeTexVoronoi")
    tree.links.new(voronoi.outputs["Color"], mix.inputs[6])
    tree.links.new(noise.outputs["Color"], mix.inputs[7])
    tree.links.new(mix.outputs[2], tree.nodes["Principled BSDF"].inputs["Base Color"])
    bpy.context.active_object.data.materials.append(wall_material)
    for k, (x, y, size) in enumerate([(2.5, 1.5, 0.6), (-2.2, 2.4, 0.8), (0.5, -2.8, 0.7), (-2.6, -1.8, 0.5)]):
        bpy.ops.mesh.primitive_cube_add(size=size, location=(x, y, size / 2), rotation=(0, 0, 0.4 * k))
        material, _ = textured_material(f"box{k}", "ShaderNodeTexChecker", Scale=4.0 + 2 * k,
                                        Color1=(0.9, 0.2 + 0.2 * k, 0.1, 1))
        bpy.context.active_object.data.materials.append(material)

    sun = bpy.data.objects.new("sun", bpy.data.lights.new("sun", "SUN"))
    sun.data.energy = 3.0
    sun.rotation_euler = (math.radians(40), math.radians(10), math.radians(30))
    scene.collection.objects.link(sun)
    world = bpy.data.worlds.new("sky")
    world.use_nodes = True
    world.node_tree.nodes["Background"].inputs["Color"].default_value = (0.45, 0.55, 0.7, 1)
    scene.world = world


def add_camera_ring(scene: bpy.types.Scene) -> None:
    """200 cameras on a ring whose radius and height wave, all looking at the middle of the yard."""
    cameras = bpy.data.collections.new("Cams")
    scene.collection.children.link(cameras)
    for i in range(CAMERA_COUNT):
        angle = 2 * math.pi * i / CAMERA_COUNT
        height = 0.7 + 0.6 * (0.5 + 0.5 * math.sin(3 * angle))
        radius = 2.6 + 0.3 * math.cos(5 * angle)
        camera = bpy.data.objects.new(f"cam{i:03d}", bpy.data.cameras.new(f"cam{i:03d}"))
        camera.data.lens = 24.0
        camera.location = (radius * math.cos(angle), radius * math.sin(angle), height)
        camera.rotation_euler = (LOOK_AT - camera.location).to_track_quat("-Z", "Y").to_euler()
        cameras.objects.link(camera)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="the .blend to write")
    args = parser.parse_args()
    if not ASSETS.is_dir():
        raise SystemExit(f"{ASSETS}: not found; the yard needs ../shared/assets (spot, bunny) beside the repository")
    bpy.ops.wm.read_factory_settings(use_empty=True)
    scene = bpy.context.scene
    add_objects(scene)
    add_camera_ring(scene)
    scene.render.engine = "CYCLES"
    scene.cycles.samples = 24
    scene.cycles.device = "CPU"
    scene.render.film_transparent = False
    scene.view_settings.view_transform = "Standard"
    scene.render.resolution_x, scene.render.resolution_y = RESOLUTION
    bpy.ops.wm.save_as_mainfile(filepath=str(args.out.resolve()))
    print(f"wrote {args.out} with {CAMERA_COUNT} cameras in the collection 'Cams'")


if __name__ == "__main__":
    main()

"""The built-in default scene: a small, colourful, textured object pair for testing Gaussian training.

A UV sphere wrapped in a striped, gridded rainbow texture and a tilted cube with a different
checker-and-ring pattern on every face, both textured with images computed here with numpy
(so Workbench, EEVEE and Cycles all show them), lit by a sun and a grey world so every engine
shows colour and shading. About 1.6 m across, centred at the origin. Fully deterministic: no
random numbers, no files read.

``build_default_scene(scene)`` fills an empty scene; ``new_empty_scene()`` gives one.
"""

from __future__ import annotations

import colorsys
import math

import bpy
import numpy as np
from mathutils import Euler, Matrix

SPHERE_RADIUS = 0.45
SPHERE_CENTER = (0.40, 0.10, 0.04)
SPHERE_SEGMENTS, SPHERE_RINGS = 48, 24
CUBE_SIZE = 0.62
CUBE_CENTER = (-0.44, -0.12, -0.04)  # ~7 cm clear of the sphere: no hidden crevice
CUBE_ROTATION_DEG = (18.0, -12.0, 32.0)

SPHERE_TEXTURE_SIZE = (512, 256)  # equirectangular: width spans longitude, height latitude
CUBE_FACE_TEXTURE_SIZE = 128  # one square cell per face in a 3 x 2 atlas

SUN_ROTATION_DEG = (40.0, 15.0, 35.0)
SUN_STRENGTH = 3.5
WORLD_GREY = 0.30  # ambient fill, so faces turned away from the sun keep their colour
DEFAULT_RESOLUTION = 128

COLLECTION_NAME = "RadiantForge Demo"


def new_empty_scene() -> bpy.types.Scene:
    """Reset Blender to factory settings with an empty scene (no cube, camera or light) and return it."""
    bpy.ops.wm.read_factory_settings(use_empty=True)
    return bpy.context.scene


# ------------------------------------------------------------------------------------------------
# Textures (numpy -> Blender images); values are sRGB display colours in [0, 1]
# ------------------------------------------------------------------------------------------------


def _hsv_to_rgb(hue: np.ndarray, saturation: np.ndarray, value: np.ndarray) -> np.ndarray:
    """Vectorised HSV -> RGB; all inputs broadcast, output (..., 3)."""
    hue = np.mod(hue, 1.0) * 6.0
    sector = np.floor(hue).astype(int) % 6
    fraction = hue - np.floor(hue)
    p = value * (1.0 - saturation)
    q = value * (1.0 - saturation * fraction)
    t = value * (1.0 - saturation * (1.0 - fraction))
    choices = [np.stack(c, axis=-1) for c in
               ((value, t, p), (q, value, p), (p, value, t), (p, q, value), (t, p, value), (value, p, q))]
    out = np.zeros(np.broadcast(hue, saturation, value).shape + (3,))
    for index, choice in enumerate(choices):
        out = np.where((sector == index)[..., None], choice, out)
    return out


def sphere_texture(width: int = SPHERE_TEXTURE_SIZE[0], height: int = SPHERE_TEXTURE_SIZE[1]) -> np.ndarray:
    """(height, width, 3) rainbow in longitude, bright/dark bands in latitude, thin dark grid lines."""
    v, u = np.meshgrid((np.arange(height) + 0.5) / height, (np.arange(width) + 0.5) / width, indexing="ij")
    hue = u + 0.15 * np.sin(2 * math.pi * 3 * v)  # wavy bands, so no two meridians look alike
    band = np.floor(v * 8) % 2
    saturation = 0.55 + 0.35 * band
    value = 0.65 + 0.3 * (1 - band)
    rgb = _hsv_to_rgb(hue, saturation, value)
    # Grid lines every 1/16 in longitude and 1/8 in latitude, about 2 texels wide.
    line_u = np.abs(((u * 16) % 1.0) - 0.5) > 0.5 - 16 * 1.0 / width
    line_v = np.abs(((v * 8) % 1.0) - 0.5) > 0.5 - 8 * 1.0 / height
    rgb[line_u | line_v] *= 0.25
    return rgb


def cube_texture(cell: int = CUBE_FACE_TEXTURE_SIZE) -> np.ndarray:
    """(2 * cell, 3 * cell, 3) atlas: per face a 4x4 checker of its own hue with a white ring."""
    atlas = np.zeros((2 * cell, 3 * cell, 3))
    y, x = np.meshgrid((np.arange(cell) + 0.5) / cell, (np.arange(cell) + 0.5) / cell, indexing="ij")
    checker = (np.floor(x * 4) + np.floor(y * 4)) % 2
    ring = np.abs(np.hypot(x - 0.5, y - 0.5) - 0.28) < 0.05
    for face in range(6):
        hue = face / 6.0 + 0.05
        light = np.array(colorsys.hsv_to_rgb(hue, 0.75, 0.95))
        dark = np.array(colorsys.hsv_to_rgb(hue + 0.08, 0.9, 0.45))
        pattern = np.where(checker[..., None] > 0, light, dark)
        pattern[ring] = (0.95, 0.95, 0.9)
        row, column = divmod(face, 3)
        atlas[row * cell:(row + 1) * cell, column * cell:(column + 1) * cell] = pattern
    return atlas


def image_from_array(name: str, rgb: np.ndarray) -> bpy.types.Image:
    """A packed sRGB Blender image from (H, W, 3) values in [0, 1] (row 0 = top of the picture)."""
    height, width = rgb.shape[:2]
    image = bpy.data.images.new(name, width=width, height=height, alpha=False)
    rgba = np.ones((height, width, 4), dtype=np.float32)
    rgba[..., :3] = np.clip(rgb, 0.0, 1.0)
    image.pixels.foreach_set(rgba[::-1].ravel())  # Blender stores the bottom row first
    image.update()
    image.pack()  # keep the pixels inside a saved .blend
    return image


def textured_material(name: str, image: bpy.types.Image, roughness: float = 0.6) -> bpy.types.Material:
    """Principled material whose base colour is ``image`` (also what Workbench's Texture mode shows)."""
    material = bpy.data.materials.new(name)
    if material.node_tree is None:  # Blender < 5.0 creates materials without nodes
        material.use_nodes = True
    nodes, links = material.node_tree.nodes, material.node_tree.links
    shader = next(node for node in nodes if node.type == "BSDF_PRINCIPLED")
    shader.inputs["Roughness"].default_value = roughness
    texture = nodes.new("ShaderNodeTexImage")
    texture.image = image
    texture.interpolation = "Linear"
    texture.location = (-400, 250)
    nodes.active = texture  # Workbench shows the active image texture
    links.new(texture.outputs["Color"], shader.inputs["Base Color"])
    # Average texture colour, so Workbench's Material mode and the viewport show something similar.
    pixels = np.empty(image.size[0] * image.size[1] * 4, dtype=np.float32)
    image.pixels.foreach_get(pixels)
    material.diffuse_color = (*pixels.reshape(-1, 4)[:, :3].mean(axis=0), 1.0)
    return material


# ------------------------------------------------------------------------------------------------
# Meshes from numpy (per-corner UVs)
# ------------------------------------------------------------------------------------------------


def _mesh_from_faces(name: str, vertices: np.ndarray, faces: list[list[int]], corner_uvs: np.ndarray,
                     smooth: bool) -> bpy.types.Mesh:
    mesh = bpy.data.meshes.new(name)
    mesh.from_pydata(vertices.tolist(), [], faces)
    uv_layer = mesh.uv_layers.new(name="UVMap")
    uv_layer.data.foreach_set("uv", corner_uvs.astype(np.float32).ravel())
    mesh.polygons.foreach_set("use_smooth", [smooth] * len(mesh.polygons))
    mesh.validate()
    mesh.update()
    return mesh


def uv_sphere_mesh(name: str, radius: float, segments: int, rings: int) -> bpy.types.Mesh:
    """Latitude-longitude sphere with an equirectangular UV map (u = longitude, v = latitude)."""
    vertices = [(0.0, 0.0, radius)]
    for ring in range(1, rings):
        polar = math.pi * ring / rings
        for segment in range(segments):
            azimuth = 2 * math.pi * segment / segments
            vertices.append((radius * math.sin(polar) * math.cos(azimuth),
                             radius * math.sin(polar) * math.sin(azimuth), radius * math.cos(polar)))
    vertices.append((0.0, 0.0, -radius))
    south = len(vertices) - 1

    def ring_vertex(ring: int, segment: int) -> int:
        return 1 + (ring - 1) * segments + segment % segments

    faces, uvs = [], []
    for segment in range(segments):
        u0, u1 = segment / segments, (segment + 1) / segments
        for ring in range(rings):
            v_top, v_bottom = 1.0 - ring / rings, 1.0 - (ring + 1) / rings
            if ring == 0:
                faces.append([0, ring_vertex(1, segment), ring_vertex(1, segment + 1)])
                uvs += [(0.5 * (u0 + u1), 1.0), (u0, v_bottom), (u1, v_bottom)]
            elif ring == rings - 1:
                faces.append([ring_vertex(ring, segment), south, ring_vertex(ring, segment + 1)])
                uvs += [(u0, v_top), (0.5 * (u0 + u1), 0.0), (u1, v_top)]
            else:
                faces.append([ring_vertex(ring, segment), ring_vertex(ring + 1, segment),
                              ring_vertex(ring + 1, segment + 1), ring_vertex(ring, segment + 1)])
                uvs += [(u0, v_top), (u0, v_bottom), (u1, v_bottom), (u1, v_top)]
    return _mesh_from_faces(name, np.array(vertices), faces, np.array(uvs), smooth=True)


def atlas_cube_mesh(name: str, size: float) -> bpy.types.Mesh:
    """Cube centred at the origin; face i maps onto cell i of a 3 x 2 texture atlas (row 0 on top)."""
    h = 0.5 * size
    corners = np.array([[x, y, z] for x in (-h, h) for y in (-h, h) for z in (-h, h)])
    # Counter-clockwise seen from outside: +X, -X, +Y, -Y, +Z, -Z
    faces = [[4, 6, 7, 5], [0, 1, 3, 2], [2, 3, 7, 6], [0, 4, 5, 1], [1, 5, 7, 3], [0, 2, 6, 4]]
    uvs = []
    for face in range(6):
        row, column = divmod(face, 3)
        u0, u1 = column / 3, (column + 1) / 3
        v1, v0 = 1.0 - row / 2, 1.0 - (row + 1) / 2  # texture row 0 is the top half of the image
        uvs += [(u0, v0), (u1, v0), (u1, v1), (u0, v1)]
    return _mesh_from_faces(name, corners, faces, np.array(uvs), smooth=False)


# ------------------------------------------------------------------------------------------------
# The scene
# ------------------------------------------------------------------------------------------------


def build_default_scene(scene: bpy.types.Scene | None = None) -> list[bpy.types.Object]:
    """Add the demo objects, lights, world and render settings to ``scene``; returns the two objects.

    Render settings: 128 x 128 px, Workbench with studio light fixed in world space (so shading
    agrees between views) and textures shown, Standard view transform (texture colours stay as
    painted), Cycles at 16 samples if the engine is switched.
    """
    scene = scene or bpy.context.scene
    if any(obj.type in {"MESH", "CURVE", "SURFACE", "META", "FONT"} for obj in scene.objects):
        raise ValueError(f"scene {scene.name!r}: already has geometry; build the default scene into an empty one")
    collection = bpy.data.collections.new(COLLECTION_NAME)
    scene.collection.children.link(collection)

    sphere = bpy.data.objects.new("RF Sphere", uv_sphere_mesh("RF Sphere", SPHERE_RADIUS, SPHERE_SEGMENTS, SPHERE_RINGS))
    sphere.location = SPHERE_CENTER
    sphere.data.materials.append(textured_material("RF Rainbow", image_from_array("RF Rainbow", sphere_texture())))
    collection.objects.link(sphere)

    cube = bpy.data.objects.new("RF Cube", atlas_cube_mesh("RF Cube", CUBE_SIZE))
    cube.matrix_world = Matrix.Translation(CUBE_CENTER) @ Euler(
        [math.radians(a) for a in CUBE_ROTATION_DEG], "XYZ").to_matrix().to_4x4()
    cube.data.materials.append(textured_material("RF Checker", image_from_array("RF Checker", cube_texture()), 0.45))
    collection.objects.link(cube)

    sun_data = bpy.data.lights.new("RF Sun", type="SUN")
    sun_data.energy = SUN_STRENGTH
    sun_data.angle = math.radians(5.0)
    sun = bpy.data.objects.new("RF Sun", sun_data)
    sun.rotation_euler = [math.radians(a) for a in SUN_ROTATION_DEG]
    collection.objects.link(sun)

    world = bpy.data.worlds.new("RF World")
    if world.node_tree is None:
        world.use_nodes = True
    background = next(node for node in world.node_tree.nodes if node.type == "BACKGROUND")
    background.inputs["Color"].default_value = (WORLD_GREY, WORLD_GREY, WORLD_GREY, 1.0)
    background.inputs["Strength"].default_value = 1.0
    world.color = (WORLD_GREY, WORLD_GREY, WORLD_GREY)
    scene.world = world

    render = scene.render
    render.engine = "BLENDER_WORKBENCH"
    render.resolution_x = render.resolution_y = DEFAULT_RESOLUTION
    render.resolution_percentage = 100
    render.film_transparent = True
    scene.view_settings.view_transform = "Standard"
    scene.view_settings.look = "None"
    shading = scene.display.shading
    shading.light = "STUDIO"
    shading.color_type = "TEXTURE"
    shading.use_world_space_lighting = True  # light fixed in the world, not following each camera
    shading.show_specular_highlight = False  # view-independent shading: a fair multi-view target
    if hasattr(scene, "cycles"):
        scene.cycles.samples = 16
    bpy.context.view_layer.update()
    return [sphere, cube]

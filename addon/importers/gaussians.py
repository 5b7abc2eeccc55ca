"""Import a 3D Gaussian Splatting PLY as one Blender object.

The object is a mesh of vertices only (one vertex per Gaussian) that carries every PLY property
as a float point attribute (x y z as the vertex positions; f_dc_*, f_rest_*, opacity, scale_*,
rot_*, normals … under their PLY names), so nothing in the file is lost and other tools can read
the data back. A Geometry Nodes modifier turns the points into something you can see:

- *ellipsoids*: a small ico-sphere instanced on every point, rotated by the splat quaternion
  (rot_0..3 = w x y z) and scaled by ``exp(scale_i) * size`` — a fair picture of each Gaussian;
- *points*: a point cloud with one sphere per splat (radius from the largest scale) — much
  cheaper, for big files.

Both carry two attributes that the shared material reads: ``splat_color`` (the degree-0 SH
colour ``0.5 + C0 * f_dc``, clamped to [0, 1] and turned from sRGB to Blender's linear space)
and ``splat_alpha`` (``sigmoid(opacity)``). The material emits the colour and blends with
transparency by alpha, in EEVEE and Cycles.

No axis conversion: files trained from Blender cameras are already in Blender world space.
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy
import numpy as np

from .. import render_setup
from ..io import splat_formats
from ..io.ply import PlyError, read_ply

SH_C0 = 0.28209479177387814  # degree-0 real spherical-harmonic constant (3DGS colour encoding)

NODE_GROUP_NAME = "RadiantForge Splats"
MATERIAL_NAME = "RadiantForge Splat"
# Bumped whenever the node setup changes, so an old group saved in a .blend gets rebuilt.
NODE_SETUP_VERSION = 2

COLOR_ATTRIBUTE = "splat_color"
ALPHA_ATTRIBUTE = "splat_alpha"

# Properties every 3DGS file has; without them the splats cannot be drawn.
REQUIRED_PROPERTIES = ("x", "y", "z", "f_dc_0", "f_dc_1", "f_dc_2", "opacity",
                       "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3")

# The ellipsoid drawn for a Gaussian has semi-axes exp(scale) * DEFAULT_SPLAT_SIZE: 2 standard
# deviations, where a Gaussian has fallen to exp(-2) ≈ 14 % of its peak, looks closest to the
# splat renders while leaving few holes.
DEFAULT_SPLAT_SIZE = 2.0
# Above this many splats "AUTO" display shows points instead of instanced ellipsoids.
LARGE_SPLAT_COUNT = 300_000
# Ico-sphere subdivisions of each instanced ellipsoid (2 → 42 vertices, smooth enough when shaded smooth).
ELLIPSOID_SUBDIVISIONS = 2

# sRGB transfer function (IEC 61966-2-1): splat colours are fitted to sRGB-encoded images.
_SRGB_LINEAR_THRESHOLD = 0.04045
_SRGB_LINEAR_SLOPE = 12.92
_SRGB_OFFSET = 0.055
_SRGB_GAMMA = 2.4

DISPLAY_MODES = ("AUTO", "GAUSSIANS", "ELLIPSOIDS", "POINTS")  # AUTO = GAUSSIANS (camera-facing Gaussian sprites)

# Modifier input identifiers are looked up by name (their "Socket_N" ids are not stable across builds).
INPUT_AS_POINTS = "Display as Points"
INPUT_SIZE = "Splat Size"
INPUT_SPRITES = "Gaussian Sprites"
INPUT_SRGB_BLEND = "Blend as Trained (sRGB)"
INPUT_RENDER_WIDTH = "Render Width"
SPRITE_MATERIAL_NAME = "RadiantForge Gaussian Sprite"
SPRITE_COLOR_ATTRIBUTE = "splat_sprite_color"
CONIC_ATTRIBUTE = "splat_conic"  # (a, b, c) of the inverse 2D covariance, metres^-2 in the sprite's plane
RADIUS_ATTRIBUTE = "splat_radius"  # (rx, ry, 0): half-sides of the sprite in metres
# The backend's rasterizer constants (radiantforge.gaussians.raster_constants), repeated: no backend import here.
ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
MAX_EXTENT_SIGMAS = 3.33
FOV_CLAMP_MARGIN = 0.3
LOW_PASS_EPS2D = 0.3  # px^2
NEAR_PLANE = 0.01


def read_gaussian_ply(filepath: str | os.PathLike) -> tuple[list[str], dict[str, np.ndarray]]:
    """Read a 3DGS PLY. Returns (property names in file order, {name: (N,) float32 array}).

    Raises PlyError naming the file when it is not a PLY or lacks a splat property.
    """
    ply = read_ply(filepath)
    if "vertex" not in ply.elements:
        raise PlyError(f"{filepath}: no 'vertex' element; a Gaussian splat file stores one vertex per splat")
    names = ply.property_names("vertex")
    missing = [name for name in REQUIRED_PROPERTIES if name not in names]
    if missing:
        raise PlyError(f"{filepath}: not a 3D Gaussian Splatting file: missing vertex properties {', '.join(missing)} "
                       f"(expected the layout of the original 3DGS code: x y z f_dc_0..2 [f_rest_*] opacity scale_0..2 rot_0..3)")
    vertex = ply.elements["vertex"]
    for name in names:
        if vertex[name].dtype == object:
            raise PlyError(f"{filepath}: vertex property {name!r} is a list; splat properties are single numbers")
    columns = {name: np.ascontiguousarray(vertex[name], dtype=np.float32) for name in names}
    return names, columns


def read_splat_file(filepath: str | os.PathLike) -> tuple[list[str], dict[str, np.ndarray]]:
    """Like :func:`read_gaussian_ply` for any splat format: .ply, or .spz / .splat / .glb / .gltf
    (``io.splat_formats``, converted to the 3DGS PLY columns). Raises ValueError naming the file."""
    if Path(filepath).suffix.lower() == ".ply":
        return read_gaussian_ply(filepath)
    columns = splat_formats.to_ply_columns(splat_formats.read_splats(filepath))
    return list(columns), columns


def read_splat_columns(mesh: bpy.types.Mesh) -> dict[str, np.ndarray] | None:
    """The 3DGS columns ({name: (N,) float32}) of an imported splat mesh, as it is now (after edits), or None.

    None when a required property is missing (not a splat mesh). Deleting vertices in edit mode
    deletes those splats.
    """
    count = len(mesh.vertices)
    names = {attribute.name for attribute in mesh.attributes
             if attribute.domain == "POINT" and attribute.data_type == "FLOAT"}
    if any(name not in names for name in REQUIRED_PROPERTIES if name not in ("x", "y", "z")):
        return None
    positions = np.empty(count * 3, dtype=np.float32)
    mesh.vertices.foreach_get("co", positions)
    positions = positions.reshape(count, 3)
    columns = {"x": positions[:, 0].copy(), "y": positions[:, 1].copy(), "z": positions[:, 2].copy()}
    for name in names:
        if name in REQUIRED_PROPERTIES or name.startswith("f_rest_"):
            values = np.empty(count, dtype=np.float32)
            mesh.attributes[name].data.foreach_get("value", values)
            columns[name] = values
    return columns


def sh_degree_of(property_names: list[str]) -> int:
    """SH degree from the number of f_rest_* properties: 3 * ((d + 1)^2 - 1) of them."""
    rest = sum(1 for name in property_names if name.startswith("f_rest_"))
    coefficients = rest // 3 + 1
    degree = int(round(coefficients ** 0.5)) - 1
    return degree if (degree + 1) ** 2 == coefficients else -1


def import_gaussians(filepath: str | os.PathLike, *, collection: bpy.types.Collection | None = None,
                     name: str | None = None, display: str = "AUTO",
                     splat_size: float = DEFAULT_SPLAT_SIZE, render_settings: bool = True) -> bpy.types.Object:
    """Import the splat file at ``filepath`` (3DGS PLY, SPZ, .splat, glTF with KHR_gaussian_splatting) as one
    object linked to ``collection`` (default: the scene's).

    display: "AUTO" (points above LARGE_SPLAT_COUNT splats, else ellipsoids), "ELLIPSOIDS" or "POINTS";
    it can be switched later on the modifier. render_settings: with sprites, set the scene's render
    settings they need (Raw view transform, Cycles filter and transparent bounces; recorded, and
    undone by ``render_setup.restore_render_settings``). Returns the new object.
    """
    if display not in DISPLAY_MODES:
        raise ValueError(f"display: expected one of {', '.join(DISPLAY_MODES)}, got {display!r}")
    filepath = Path(filepath)
    names, columns = read_splat_file(filepath)
    count = len(columns["x"])
    name = name or filepath.stem

    mesh = bpy.data.meshes.new(name)
    mesh.vertices.add(count)
    positions = np.stack([columns["x"], columns["y"], columns["z"]], axis=1)  # (N, 3)
    mesh.vertices.foreach_set("co", positions.ravel())
    for prop in names:
        if prop in ("x", "y", "z"):
            continue
        attribute = mesh.attributes.new(prop, "FLOAT", "POINT")
        attribute.data.foreach_set("value", columns[prop])
    mesh.update()

    obj = bpy.data.objects.new(name, mesh)
    obj["radiantforge_source"] = str(filepath)
    obj["radiantforge_splat_count"] = count
    obj["radiantforge_sh_degree"] = sh_degree_of(names)
    (collection or bpy.context.scene.collection).objects.link(obj)

    as_points = display == "POINTS"
    sprites = display in ("AUTO", "GAUSSIANS")
    add_splat_modifier(obj, as_points=as_points, splat_size=splat_size, sprites=sprites, scene=bpy.context.scene)
    if sprites and render_settings:
        render_setup.apply_splat_render_settings(bpy.context.scene)
    if hasattr(obj, "radiantforge_viewport_splats"):  # the add-on is registered: real Gaussians in the viewport
        obj.radiantforge_viewport_splats = True
    return obj


def add_splat_modifier(obj: bpy.types.Object, *, as_points: bool = False, splat_size: float = DEFAULT_SPLAT_SIZE,
                       sprites: bool = True, scene: bpy.types.Scene | None = None) -> bpy.types.Modifier:
    """Add the splat Geometry Nodes modifier to ``obj`` (a mesh with the 3DGS attributes).

    The sprites need the render width in pixels (the 0.3 px^2 low-pass is a pixel size): a driver
    follows ``scene``'s resolution.
    """
    modifier = obj.modifiers.new("Gaussian Splats", "NODES")
    modifier.node_group = splat_node_group(max(0, obj.get("radiantforge_sh_degree", 0)))
    set_splat_display(obj, as_points=as_points, splat_size=splat_size, sprites=sprites)
    if scene is not None:
        _drive_render_width(obj, modifier, scene)
    return modifier


def _drive_render_width(obj: bpy.types.Object, modifier: bpy.types.Modifier, scene: bpy.types.Scene) -> None:
    """A driver: the modifier's Render Width = the scene's resolution_x * resolution_percentage / 100."""
    key = modifier_input_id(modifier.node_group, INPUT_RENDER_WIDTH)
    modifier[key] = float(scene.render.resolution_x * scene.render.resolution_percentage / 100.0)
    driver = obj.driver_add(f'modifiers["{modifier.name}"]["{key}"]').driver
    driver.type = "SCRIPTED"
    for name, path in (("width", "render.resolution_x"), ("percent", "render.resolution_percentage")):
        variable = driver.variables.new()
        variable.name = name
        variable.type = "SINGLE_PROP"
        variable.targets[0].id_type = "SCENE"
        variable.targets[0].id = scene
        variable.targets[0].data_path = path
    driver.expression = "width * percent / 100"  # a simple expression: evaluated without Python scripts enabled


def modifier_input_id(group: bpy.types.NodeTree, name: str) -> str:
    """The identifier of the node group's input ``name``: the key of its value on a modifier (``modifier[id]``)."""
    for item in group.interface.items_tree:
        if item.item_type == "SOCKET" and item.in_out == "INPUT" and item.name == name:
            return item.identifier
    raise KeyError(f"node group {group.name!r} has no input {name!r}")


def splat_modifier(obj: bpy.types.Object | None) -> bpy.types.Modifier | None:
    """The Radiant Forge splat modifier of ``obj`` (None for another object, or None)."""
    if obj is None:
        return None
    return next((m for m in obj.modifiers if m.type == "NODES" and m.node_group
                 and m.node_group.name.startswith(NODE_GROUP_NAME)), None)


def set_splat_display(obj: bpy.types.Object, *, as_points: bool | None = None, splat_size: float | None = None,
                      sprites: bool | None = None, blend_as_trained: bool | None = None) -> None:
    """Switch an imported splat object between Gaussian sprites, ellipsoids and points, or change the splat size.

    sprites wins over as_points; blend_as_trained: sprite colours composite as sRGB values, as
    the backend does (needs the Raw view transform, see ``render_setup``), else scene-linear.
    """
    modifier = splat_modifier(obj)
    if modifier is None:
        raise ValueError(f"object {obj.name!r} has no Radiant Forge splat modifier; import the PLY with Radiant Forge first")
    if as_points is not None:
        modifier[modifier_input_id(modifier.node_group, INPUT_AS_POINTS)] = bool(as_points)
    if splat_size is not None:
        modifier[modifier_input_id(modifier.node_group, INPUT_SIZE)] = float(splat_size)
    if sprites is not None:
        modifier[modifier_input_id(modifier.node_group, INPUT_SPRITES)] = bool(sprites)
    if blend_as_trained is not None:
        modifier[modifier_input_id(modifier.node_group, INPUT_SRGB_BLEND)] = bool(blend_as_trained)
    obj.update_tag()


# --- material -------------------------------------------------------------------------------

def _versioned_material(name: str) -> tuple[bpy.types.Material, bool]:
    """(material, True) when ``name`` holds this setup version; else (material with an empty node tree, False)."""
    material = bpy.data.materials.get(name)
    if material is not None and material.get("radiantforge_setup_version") == NODE_SETUP_VERSION:
        return material, True
    if material is None:
        material = bpy.data.materials.new(name)
    material["radiantforge_setup_version"] = NODE_SETUP_VERSION
    if not material.use_nodes:  # Blender 5 always has nodes; older versions need the switch
        material.use_nodes = True
    material.node_tree.nodes.clear()
    return material, False


def splat_material() -> bpy.types.Material:
    """The shared splat material: emits splat_color, blends to transparent by splat_alpha."""
    material, current = _versioned_material(MATERIAL_NAME)
    if current:
        return material
    tree = material.node_tree
    nodes, links = tree.nodes, tree.links

    # The attribute lives on the instance domain for ellipsoids (read as INSTANCER) and on the
    # point cloud for points (read as GEOMETRY). A missing attribute reads as zero, so the sum is
    # whichever one exists.
    def attribute_sum(attribute_name: str, output: str, y: float):
        from_instances = nodes.new("ShaderNodeAttribute")
        from_instances.attribute_type = "INSTANCER"
        from_instances.attribute_name = attribute_name
        from_instances.location = (-700, y)
        from_geometry = nodes.new("ShaderNodeAttribute")
        from_geometry.attribute_type = "GEOMETRY"
        from_geometry.attribute_name = attribute_name
        from_geometry.location = (-700, y - 180)
        if output == "Color":
            add = nodes.new("ShaderNodeVectorMath")
            add.operation = "ADD"
        else:
            add = nodes.new("ShaderNodeMath")
            add.operation = "ADD"
        add.location = (-450, y - 60)
        links.new(from_instances.outputs[output], add.inputs[0])
        links.new(from_geometry.outputs[output], add.inputs[1])
        return add.outputs[0]

    color = attribute_sum(COLOR_ATTRIBUTE, "Color", 300)
    alpha = attribute_sum(ALPHA_ATTRIBUTE, "Fac", -100)

    emission = nodes.new("ShaderNodeEmission")
    emission.location = (-200, 200)
    emission.inputs["Strength"].default_value = 1.0
    links.new(color, emission.inputs["Color"])
    transparent = nodes.new("ShaderNodeBsdfTransparent")
    transparent.location = (-200, 0)
    # Only the side facing the camera shows: a ray through an ellipsoid meets it twice, and the
    # splat's opacity must apply once (Cycles ignores backface culling, so it is done here).
    geometry = nodes.new("ShaderNodeNewGeometry")
    geometry.location = (-700, -400)
    front = nodes.new("ShaderNodeMath")
    front.operation = "SUBTRACT"
    front.inputs[0].default_value = 1.0
    front.location = (-450, -350)
    links.new(geometry.outputs["Backfacing"], front.inputs[1])
    front_alpha = nodes.new("ShaderNodeMath")
    front_alpha.operation = "MULTIPLY"
    front_alpha.location = (-250, -200)
    links.new(alpha, front_alpha.inputs[0])
    links.new(front.outputs[0], front_alpha.inputs[1])
    mix = nodes.new("ShaderNodeMixShader")
    mix.location = (50, 100)
    links.new(front_alpha.outputs[0], mix.inputs["Fac"])
    links.new(transparent.outputs[0], mix.inputs[1])
    links.new(emission.outputs[0], mix.inputs[2])
    output = nodes.new("ShaderNodeOutputMaterial")
    output.location = (300, 100)
    links.new(mix.outputs[0], output.inputs["Surface"])

    if hasattr(material, "surface_render_method"):  # EEVEE Next (Blender 4.2+)
        material.surface_render_method = "BLENDED"
    if hasattr(material, "blend_method"):  # legacy EEVEE
        try:
            material.blend_method = "BLEND"
        except (TypeError, AttributeError):
            pass
    if hasattr(material, "use_backface_culling"):
        material.use_backface_culling = True
    material.diffuse_color = (0.8, 0.8, 0.8, 1.0)
    return material


# --- geometry nodes -------------------------------------------------------------------------

class _NodeBuilder:
    """Small helper to wire node trees: sockets or constants as inputs, one line per operation."""

    def __init__(self, tree: bpy.types.NodeTree):
        self.tree = tree
        self.nodes = tree.nodes
        self.links = tree.links
        self._column = 0

    def node(self, kind: str, x: float = 0.0, y: float = 0.0, **props):
        node = self.nodes.new(kind)
        node.location = (x, y)
        for key, value in props.items():
            setattr(node, key, value)
        return node

    def feed(self, socket, value) -> None:
        if isinstance(value, bpy.types.NodeSocket):
            self.links.new(value, socket)
        else:
            socket.default_value = value

    def math(self, operation: str, *inputs, clamp: bool = False, x: float = 0.0, y: float = 0.0):
        node = self.node("ShaderNodeMath", x, y, operation=operation, use_clamp=clamp)
        for index, value in enumerate(inputs):
            self.feed(node.inputs[index], value)
        return node.outputs[0]

    def attribute(self, name: str, x: float = 0.0, y: float = 0.0):
        node = self.node("GeometryNodeInputNamedAttribute", x, y, data_type="FLOAT")
        node.inputs["Name"].default_value = name
        return node.outputs["Attribute"]


def _srgb_to_linear(build: _NodeBuilder, encoded, x: float, y: float):
    """Piecewise sRGB decoding of one channel in [0, 1], as a field."""
    linear_part = build.math("DIVIDE", encoded, _SRGB_LINEAR_SLOPE, x=x, y=y)
    shifted = build.math("MULTIPLY_ADD", encoded, 1.0 / (1.0 + _SRGB_OFFSET), _SRGB_OFFSET / (1.0 + _SRGB_OFFSET), x=x, y=y - 40)
    power_part = build.math("POWER", shifted, _SRGB_GAMMA, x=x + 160, y=y - 40)
    is_linear = build.math("LESS_THAN", encoded, _SRGB_LINEAR_THRESHOLD, x=x + 160, y=y + 40)
    difference = build.math("SUBTRACT", linear_part, power_part, x=x + 320, y=y)
    # power + is_linear * (linear - power): selects one branch without a Switch node per channel
    return build.math("MULTIPLY_ADD", is_linear, difference, power_part, x=x + 480, y=y)


def splat_group_name(sh_degree: int) -> str:
    return NODE_GROUP_NAME if sh_degree == 0 else f"{NODE_GROUP_NAME} SH{sh_degree}"


def splat_node_group(sh_degree: int = 0) -> bpy.types.NodeTree:
    """The Geometry Nodes group that draws splats of an SH degree (built once per .blend and degree)."""
    group_name = splat_group_name(sh_degree)
    group = bpy.data.node_groups.get(group_name)
    if group is not None and group.get("radiantforge_setup_version") == NODE_SETUP_VERSION:
        return group
    if group is not None:  # an older setup: rename it out of the way, objects keep using it
        group.name = group_name + " (old)"
    group = bpy.data.node_groups.new(group_name, "GeometryNodeTree")
    group["radiantforge_setup_version"] = NODE_SETUP_VERSION
    interface = group.interface
    interface.new_socket("Geometry", in_out="INPUT", socket_type="NodeSocketGeometry")
    points_socket = interface.new_socket(INPUT_AS_POINTS, in_out="INPUT", socket_type="NodeSocketBool",
                                         description="Draw each splat as a point (fast) instead of an oriented ellipsoid")
    points_socket.default_value = False
    size_socket = interface.new_socket(INPUT_SIZE, in_out="INPUT", socket_type="NodeSocketFloat",
                                       description="Ellipsoid semi-axes in standard deviations of each Gaussian")
    size_socket.default_value = DEFAULT_SPLAT_SIZE
    size_socket.min_value = 0.0
    sprites_socket = interface.new_socket(INPUT_SPRITES, in_out="INPUT", socket_type="NodeSocketBool",
                                          description="Draw each splat as a camera-facing quad with the backend's 2D Gaussian "
                                                      "(matches its render; follows the active camera)")
    sprites_socket.default_value = True
    srgb_socket = interface.new_socket(INPUT_SRGB_BLEND, in_out="INPUT", socket_type="NodeSocketBool",
                                       description="Sprites blend sRGB colour values as the backend does (use the Raw view "
                                                   "transform); off: scene-linear colours that mix with other objects")
    srgb_socket.default_value = True
    width_socket = interface.new_socket(INPUT_RENDER_WIDTH, in_out="INPUT", socket_type="NodeSocketFloat",
                                        description="Render width in pixels (driven by the scene): sizes the 0.3 px² low-pass")
    width_socket.default_value = 1920.0
    width_socket.min_value = 1.0
    interface.new_socket("Geometry", in_out="OUTPUT", socket_type="NodeSocketGeometry")

    build = _NodeBuilder(group)
    group_in = build.node("NodeGroupInput", -1800, 0)
    group_out = build.node("NodeGroupOutput", 1400, 0)
    as_points = group_in.outputs[INPUT_AS_POINTS]
    size = group_in.outputs[INPUT_SIZE]

    # Colour: SH degree-0 term, clamped like the rasteriser does, then decoded from sRGB.
    channels = []
    for channel in range(3):
        y = 600 - channel * 200
        dc = build.attribute(f"f_dc_{channel}", -1600, y)
        encoded = build.math("MULTIPLY_ADD", dc, SH_C0, 0.5, clamp=True, x=-1400, y=y)
        channels.append(_srgb_to_linear(build, encoded, -1200, y))
    combine = build.node("FunctionNodeCombineColor", -500, 500)
    for index, channel in enumerate(channels):
        build.feed(combine.inputs[index], channel)
    build.feed(combine.inputs["Alpha"], 1.0)

    # Alpha: sigmoid of the stored logit.
    logit = build.attribute("opacity", -1600, -100)
    exp_negative = build.math("EXPONENT", build.math("MULTIPLY", logit, -1.0, x=-1400, y=-100), x=-1250, y=-100)
    alpha = build.math("DIVIDE", 1.0, build.math("ADD", exp_negative, 1.0, x=-1100, y=-100), x=-950, y=-100)

    store_color = build.node("GeometryNodeStoreNamedAttribute", -300, 200, data_type="FLOAT_COLOR", domain="POINT")
    store_color.inputs["Name"].default_value = COLOR_ATTRIBUTE
    build.feed(store_color.inputs["Geometry"], group_in.outputs["Geometry"])
    build.feed(store_color.inputs["Value"], combine.outputs["Color"])
    store_alpha = build.node("GeometryNodeStoreNamedAttribute", -100, 200, data_type="FLOAT", domain="POINT")
    store_alpha.inputs["Name"].default_value = ALPHA_ATTRIBUTE
    build.feed(store_alpha.inputs["Geometry"], store_color.outputs["Geometry"])
    build.feed(store_alpha.inputs["Value"], alpha)
    splats = store_alpha.outputs["Geometry"]

    # Scale per axis: exp(log-scale) * size (semi-axes of the drawn ellipsoid).
    axis_scales = [build.math("EXPONENT", build.attribute(f"scale_{axis}", -1600, -400 - axis * 120), x=-1400, y=-400 - axis * 120)
                   for axis in range(3)]
    scale_vector = build.node("ShaderNodeCombineXYZ", -1200, -500)
    for axis in range(3):
        build.feed(scale_vector.inputs[axis], axis_scales[axis])
    scaled = build.node("ShaderNodeVectorMath", -1000, -500, operation="SCALE")
    build.feed(scaled.inputs[0], scale_vector.outputs[0])
    build.feed(scaled.inputs["Scale"], size)

    # Rotation: quaternion stored w x y z (rot_0 = w), as in the 3DGS code.
    rotation = build.node("FunctionNodeQuaternionToRotation", -1000, -850)
    for index, component in enumerate(("W", "X", "Y", "Z")):
        build.feed(rotation.inputs[component], build.attribute(f"rot_{index}", -1200, -750 - index * 100))

    material = splat_material()
    sphere = build.node("GeometryNodeMeshIcoSphere", -300, -200)
    sphere.inputs["Radius"].default_value = 1.0
    sphere.inputs["Subdivisions"].default_value = ELLIPSOID_SUBDIVISIONS
    smooth = build.node("GeometryNodeSetShadeSmooth", -100, -200)
    build.feed(smooth.inputs[0], sphere.outputs["Mesh"])
    sphere_material = build.node("GeometryNodeSetMaterial", 100, -200)
    build.feed(sphere_material.inputs["Geometry"], smooth.outputs[0])
    sphere_material.inputs["Material"].default_value = material

    instances = build.node("GeometryNodeInstanceOnPoints", 400, 0)
    build.feed(instances.inputs["Points"], splats)
    build.feed(instances.inputs["Instance"], sphere_material.outputs["Geometry"])
    build.feed(instances.inputs["Rotation"], rotation.outputs["Rotation"])
    build.feed(instances.inputs["Scale"], scaled.outputs[0])

    # Points: one sphere per splat, radius from the largest axis.
    largest = build.math("MAXIMUM", build.math("MAXIMUM", axis_scales[0], axis_scales[1], x=-1200, y=-300), axis_scales[2], x=-1000, y=-300)
    radius = build.math("MULTIPLY", largest, size, x=-800, y=-300)
    to_points = build.node("GeometryNodeMeshToPoints", 400, 300)
    build.feed(to_points.inputs["Mesh"], splats)
    build.feed(to_points.inputs["Radius"], radius)
    points_material = build.node("GeometryNodeSetMaterial", 600, 300)
    build.feed(points_material.inputs["Geometry"], to_points.outputs["Points"])
    points_material.inputs["Material"].default_value = material

    switch = build.node("GeometryNodeSwitch", 1000, 0, input_type="GEOMETRY")
    build.feed(switch.inputs["Switch"], as_points)
    build.feed(switch.inputs["False"], instances.outputs["Instances"])
    build.feed(switch.inputs["True"], points_material.outputs["Geometry"])
    sprites, has_camera = _sprite_branch(build, splats, alpha, rotation.outputs["Rotation"], scale_vector.outputs[0],
                                         sh_degree, group_in.outputs[INPUT_SRGB_BLEND], group_in.outputs[INPUT_RENDER_WIDTH])
    # Sprites face the active camera; a scene without one shows the ellipsoids instead of nothing.
    use_sprites = build.node("FunctionNodeBooleanMath", 1000, -200, operation="AND")
    build.feed(use_sprites.inputs[0], group_in.outputs[INPUT_SPRITES])
    build.feed(use_sprites.inputs[1], has_camera)
    sprite_switch = build.node("GeometryNodeSwitch", 1200, 0, input_type="GEOMETRY")
    build.feed(sprite_switch.inputs["Switch"], use_sprites.outputs[0])
    build.feed(sprite_switch.inputs["False"], switch.outputs["Output"])
    build.feed(sprite_switch.inputs["True"], sprites)
    build.feed(group_out.inputs["Geometry"], sprite_switch.outputs["Output"])
    return group


# --- Gaussian sprites: the backend's 2D Gaussians in Cycles and EEVEE -------------------------
#
# One quad per splat in the plane through its mean perpendicular to the active camera's axis: a
# ray meets the quads of a pixel in the order of the means' camera depth (the backend's sort),
# once each. On the quad, the camera-plane offset u (metres) of a ray's hit maps to the pixel
# offset (f / z) u exactly, so alpha = o exp(-0.5 u^T Sigma2d^-1 u) with the backend's EWA
# covariance expressed in metres at depth z: M W Sigma W^T M^T + eps2d (z / f)^2 I, where
# M = [[1, 0, -x/z], [0, 1, -y/z]] with x/z, y/z clamped as the backend clamps its Jacobian.
# The quad's half-sides are the backend's opacity-aware radius, min(3.33, sqrt(2 ln(255 o))) sigma.
# SH colours are evaluated per splat along normalise(mean - camera), as the backend does.

def _vector(build: _NodeBuilder, operation: str, *inputs, x: float = 0.0, y: float = 0.0):
    node = build.node("ShaderNodeVectorMath", x, y, operation=operation)
    for index, value in enumerate(inputs):
        if operation == "SCALE" and index == 1:
            build.feed(node.inputs["Scale"], value)
        else:
            build.feed(node.inputs[index], value)
    return node.outputs["Value" if operation in ("DOT_PRODUCT", "LENGTH", "DISTANCE") else "Vector"]


def _combine(build: _NodeBuilder, x_value, y_value, z_value, x: float = 0.0, y: float = 0.0):
    node = build.node("ShaderNodeCombineXYZ", x, y)
    for index, value in enumerate((x_value, y_value, z_value)):
        build.feed(node.inputs[index], value)
    return node.outputs[0]


def _separate(build: _NodeBuilder, vector, x: float = 0.0, y: float = 0.0):
    node = build.node("ShaderNodeSeparateXYZ", x, y)
    build.feed(node.inputs[0], vector)
    return node.outputs[0], node.outputs[1], node.outputs[2]


def _sh_basis_fields(build: _NodeBuilder, direction, degree: int, x: float, y: float) -> list:
    """The real SH basis (3DGS order and signs, as radiantforge.gaussians.sh) of a unit-direction field."""
    dx, dy, dz = _separate(build, direction, x, y)
    m = build.math
    basis = [SH_C0]
    if degree >= 1:
        c1 = 0.4886025119029199
        basis += [m("MULTIPLY", dy, -c1), m("MULTIPLY", dz, c1), m("MULTIPLY", dx, -c1)]
    if degree >= 2:
        xx, yy, zz = m("MULTIPLY", dx, dx), m("MULTIPLY", dy, dy), m("MULTIPLY", dz, dz)
        xy, yz, xz = m("MULTIPLY", dx, dy), m("MULTIPLY", dy, dz), m("MULTIPLY", dx, dz)
        xx_plus_yy = m("ADD", xx, yy)
        basis += [m("MULTIPLY", xy, 1.0925484305920792), m("MULTIPLY", yz, -1.0925484305920792),
                  m("MULTIPLY", m("SUBTRACT", m("MULTIPLY", zz, 2.0), xx_plus_yy), 0.31539156525252005),
                  m("MULTIPLY", xz, -1.0925484305920792), m("MULTIPLY", m("SUBTRACT", xx, yy), 0.5462742152960396)]
    if degree >= 3:
        four_zz_minus = m("SUBTRACT", m("MULTIPLY", zz, 4.0), xx_plus_yy)
        basis += [
            m("MULTIPLY", m("MULTIPLY", dy, m("SUBTRACT", m("MULTIPLY", xx, 3.0), yy)), -0.5900435899266435),
            m("MULTIPLY", m("MULTIPLY", xy, dz), 2.890611442640554),
            m("MULTIPLY", m("MULTIPLY", dy, four_zz_minus), -0.4570457994644658),
            m("MULTIPLY", m("MULTIPLY", dz, m("SUBTRACT", m("MULTIPLY", zz, 2.0), m("MULTIPLY", xx_plus_yy, 3.0))),
              0.3731763325901154),
            m("MULTIPLY", m("MULTIPLY", dx, four_zz_minus), -0.4570457994644658),
            m("MULTIPLY", m("MULTIPLY", dz, m("SUBTRACT", xx, yy)), 1.445305721320277),
            m("MULTIPLY", m("MULTIPLY", dx, m("SUBTRACT", xx, m("MULTIPLY", yy, 3.0))), -0.5900435899266435),
        ]
    return basis


def _sprite_branch(build: _NodeBuilder, splats, alpha, rotation, scales, sh_degree: int, srgb_blend, render_width):
    """Geometry of the Gaussian sprites (instances of a unit quad with the sprite material) for ``splats``,
    and a socket that is 1 when the scene's active camera is a perspective one (the sprites need it)."""
    m = build.math
    x0, y0 = 1600, -1600
    camera = build.node("GeometryNodeInputActiveCamera", x0, y0).outputs[0]
    camera_info = build.node("GeometryNodeObjectInfo", x0 + 200, y0, transform_space="RELATIVE")
    build.feed(camera_info.inputs["Object"], camera)
    lens = build.node("GeometryNodeCameraInfo", x0 + 200, y0 - 300)
    build.feed(lens.inputs["Camera"], camera)
    projection = build.node("FunctionNodeSeparateMatrix", x0 + 400, y0 - 300)
    build.feed(projection.inputs[0], lens.outputs["Projection Matrix"])
    tan_half_x = m("DIVIDE", 1.0, projection.outputs["Column 1 Row 1"])
    tan_half_y = m("DIVIDE", 1.0, projection.outputs["Column 2 Row 2"])
    view = build.node("FunctionNodeInvertMatrix", x0 + 400, y0)  # object space -> camera (OpenGL axes)
    build.feed(view.inputs[0], camera_info.outputs["Transform"])

    position = build.node("GeometryNodeInputPosition", x0, y0 - 600).outputs[0]
    to_camera = build.node("FunctionNodeTransformPoint", x0 + 600, y0 - 600)
    build.feed(to_camera.inputs["Vector"], position)
    build.feed(to_camera.inputs["Transform"], view.outputs["Matrix"])
    gl_x, gl_y, gl_z = _separate(build, to_camera.outputs[0])
    depth = m("MULTIPLY", gl_z, -1.0)  # OpenCV z (forward)
    cv_y = m("MULTIPLY", gl_y, -1.0)
    safe_depth = m("MAXIMUM", depth, NEAR_PLANE)
    x_over_z = m("DIVIDE", gl_x, safe_depth)
    y_over_z = m("DIVIDE", cv_y, safe_depth)
    lim_x = m("MULTIPLY", tan_half_x, 1.0 + FOV_CLAMP_MARGIN)  # principal point at the centre: (W - cx) / fx = tan_half_x
    lim_y = m("MULTIPLY", tan_half_y, 1.0 + FOV_CLAMP_MARGIN)
    clamped_x = m("MINIMUM", m("MAXIMUM", x_over_z, m("MULTIPLY", lim_x, -1.0)), lim_x)
    clamped_y = m("MINIMUM", m("MAXIMUM", y_over_z, m("MULTIPLY", lim_y, -1.0)), lim_y)

    # Rows of W R S (camera from the Gaussian's unit frame), OpenGL axes: g0 = r0, g1 = -r1, g2 = -r2 in OpenCV.
    frame = build.node("FunctionNodeCombineTransform", x0 + 400, y0 - 900)
    build.feed(frame.inputs["Rotation"], rotation)
    build.feed(frame.inputs["Scale"], scales)
    view_frame = build.node("FunctionNodeMatrixMultiply", x0 + 600, y0 - 900)
    build.feed(view_frame.inputs[0], view.outputs["Matrix"])
    build.feed(view_frame.inputs[1], frame.outputs[0])
    entries = build.node("FunctionNodeSeparateMatrix", x0 + 800, y0 - 900)
    build.feed(entries.inputs[0], view_frame.outputs[0])
    rows = [_combine(build, *(entries.outputs[f"Column {column} Row {row}"] for column in (1, 2, 3))) for row in (1, 2, 3)]
    # b0 = g0 - (x/z) g2 = r0 + (x/z) r2; b1 = g1 - (y/z) g2 = -r1 + (y/z) r2: M W R S in metres at depth z.
    b0 = _vector(build, "ADD", rows[0], _vector(build, "SCALE", rows[2], clamped_x))
    b1 = _vector(build, "SUBTRACT", _vector(build, "SCALE", rows[2], clamped_y), rows[1])
    # eps2d px^2 in metres^2 at depth z: one pixel spans z * 2 tan_half_x / width metres.
    pixel = m("DIVIDE", m("MULTIPLY", safe_depth, m("MULTIPLY", tan_half_x, 2.0)), render_width)
    low_pass = m("MULTIPLY", m("MULTIPLY", pixel, pixel), LOW_PASS_EPS2D)
    cov_xx = m("ADD", _vector(build, "DOT_PRODUCT", b0, b0), low_pass)
    cov_xy = _vector(build, "DOT_PRODUCT", b0, b1)
    cov_yy = m("ADD", _vector(build, "DOT_PRODUCT", b1, b1), low_pass)
    det = m("SUBTRACT", m("MULTIPLY", cov_xx, cov_yy), m("MULTIPLY", cov_xy, cov_xy))
    conic = _combine(build, m("DIVIDE", cov_yy, det), m("DIVIDE", m("MULTIPLY", cov_xy, -1.0), det), m("DIVIDE", cov_xx, det))
    # Opacity-aware extent: beyond it o exp(-0.5 d^2) < 1/255.
    extent = m("MINIMUM", m("SQRT", m("MULTIPLY", m("LOGARITHM", m("DIVIDE", alpha, ALPHA_THRESHOLD), 2.718281828459045), 2.0)),
               MAX_EXTENT_SIGMAS)
    radius = _combine(build, m("MULTIPLY", extent, m("SQRT", cov_xx)), m("MULTIPLY", extent, m("SQRT", cov_yy)), 1.0)

    # SH colour along normalise(mean - camera centre), the backend's max(0, SH + 0.5).
    direction = _vector(build, "NORMALIZE", _vector(build, "SUBTRACT", position, camera_info.outputs["Location"]))
    basis = _sh_basis_fields(build, direction, sh_degree, x0, y0 - 1400)
    rest_per_channel = (sh_degree + 1) ** 2 - 1
    channels = []
    for channel in range(3):
        total = m("MULTIPLY", build.attribute(f"f_dc_{channel}"), basis[0])
        for k in range(1, len(basis)):
            coefficient = build.attribute(f"f_rest_{channel * rest_per_channel + k - 1}")
            total = m("MULTIPLY_ADD", coefficient, basis[k], total)
        encoded = m("MAXIMUM", m("ADD", total, 0.5), 0.0)
        linear = _srgb_to_linear(build, m("MINIMUM", encoded, 1.0), x0 + 800, y0 - 1800 - 200 * channel)
        # srgb_blend ? encoded : linear, as arithmetic (a Switch node per channel is no cheaper)
        channels.append(m("MULTIPLY_ADD", srgb_blend, m("SUBTRACT", encoded, linear), linear))
    color = build.node("FunctionNodeCombineColor", x0 + 1200, y0 - 1800)
    for index, channel in enumerate(channels):
        build.feed(color.inputs[index], channel)

    # Drop what the backend culls: behind the near plane, or too faint to reach 1/255.
    culled = m("MAXIMUM", m("LESS_THAN", depth, NEAR_PLANE), m("LESS_THAN", alpha, ALPHA_THRESHOLD))
    keep = build.node("GeometryNodeDeleteGeometry", x0 + 1000, y0, domain="POINT")
    build.feed(keep.inputs["Geometry"], splats)
    build.feed(keep.inputs["Selection"], culled)
    geometry = keep.outputs["Geometry"]
    for name, data_type, value in ((SPRITE_COLOR_ATTRIBUTE, "FLOAT_COLOR", color.outputs["Color"]),
                                   (CONIC_ATTRIBUTE, "FLOAT_VECTOR", conic), (RADIUS_ATTRIBUTE, "FLOAT_VECTOR", radius)):
        store = build.node("GeometryNodeStoreNamedAttribute", x0 + 1200, y0, data_type=data_type, domain="POINT")
        store.inputs["Name"].default_value = name
        build.feed(store.inputs["Geometry"], geometry)
        build.feed(store.inputs["Value"], value)
        geometry = store.outputs["Geometry"]

    quad = build.node("GeometryNodeMeshGrid", x0 + 1200, y0 + 300)
    quad.inputs["Size X"].default_value = quad.inputs["Size Y"].default_value = 2.0  # local [-1, 1]^2
    quad.inputs["Vertices X"].default_value = quad.inputs["Vertices Y"].default_value = 2
    quad_material = build.node("GeometryNodeSetMaterial", x0 + 1400, y0 + 300)
    build.feed(quad_material.inputs["Geometry"], quad.outputs["Mesh"])
    quad_material.inputs["Material"].default_value = sprite_material()
    # The quad's local x, y, z = the camera's right, down, forward (OpenCV): its rotation turned half a turn about x.
    half_turn = build.node("FunctionNodeAxisAngleToRotation", x0 + 1200, y0 - 200)
    half_turn.inputs["Axis"].default_value = (1.0, 0.0, 0.0)
    half_turn.inputs["Angle"].default_value = np.pi
    facing = build.node("FunctionNodeRotateRotation", x0 + 1400, y0 - 200, rotation_space="LOCAL")
    build.feed(facing.inputs["Rotation"], camera_info.outputs["Rotation"])
    build.feed(facing.inputs["Rotate By"], half_turn.outputs["Rotation"])
    instances = build.node("GeometryNodeInstanceOnPoints", x0 + 1600, y0)
    build.feed(instances.inputs["Points"], geometry)
    build.feed(instances.inputs["Instance"], quad_material.outputs["Geometry"])
    build.feed(instances.inputs["Rotation"], facing.outputs["Rotation"])
    build.feed(instances.inputs["Scale"], radius)
    # No active camera: Camera Info gives the identity; an orthographic one has no -1 there either (the
    # sprite projection is perspective): both show the ellipsoids.
    has_camera = m("LESS_THAN", projection.outputs["Column 3 Row 4"], -0.5)
    return instances.outputs["Instances"], has_camera


def sprite_material() -> bpy.types.Material:
    """The sprite material: the backend's alpha min(0.999, o exp(-0.5 u^T Q u)) (0 below 1/255) over emission."""
    material, current = _versioned_material(SPRITE_MATERIAL_NAME)
    if current:
        return material
    tree = material.node_tree
    build = _NodeBuilder(tree)
    m = build.math

    def instancer(name: str, output: str):
        node = build.node("ShaderNodeAttribute", attribute_type="INSTANCER", attribute_name=name)
        return node.outputs[output]

    # The hit point on the unit quad (object = instance space), times the half-sides: metres in the camera plane.
    local = build.node("ShaderNodeTexCoord").outputs["Object"]
    offset = _vector(build, "MULTIPLY", local, instancer(RADIUS_ATTRIBUTE, "Vector"))
    u, v, _ = _separate(build, offset)
    conic_a, conic_b, conic_c = _separate(build, instancer(CONIC_ATTRIBUTE, "Vector"))
    quadratic = m("ADD", m("ADD", m("MULTIPLY", conic_a, m("MULTIPLY", u, u)), m("MULTIPLY", conic_c, m("MULTIPLY", v, v))),
                  m("MULTIPLY", m("MULTIPLY", conic_b, 2.0), m("MULTIPLY", u, v)))
    raw = m("MULTIPLY", instancer(ALPHA_ATTRIBUTE, "Fac"), m("EXPONENT", m("MULTIPLY", quadratic, -0.5)))
    capped = m("MINIMUM", raw, MAX_ALPHA)
    alpha = m("MULTIPLY", capped, m("GREATER_THAN", raw, ALPHA_THRESHOLD - 1e-9))  # the backend skips alpha < 1/255

    emission = build.node("ShaderNodeEmission")
    emission.inputs["Strength"].default_value = 1.0
    build.feed(emission.inputs["Color"], instancer(SPRITE_COLOR_ATTRIBUTE, "Color"))
    transparent = build.node("ShaderNodeBsdfTransparent")
    mix = build.node("ShaderNodeMixShader")
    build.feed(mix.inputs["Fac"], alpha)
    build.feed(mix.inputs[1], transparent.outputs[0])
    build.feed(mix.inputs[2], emission.outputs[0])
    output = build.node("ShaderNodeOutputMaterial")
    build.feed(output.inputs["Surface"], mix.outputs[0])
    if hasattr(material, "surface_render_method"):
        material.surface_render_method = "BLENDED"  # EEVEE sorts blended instances by depth, as the backend does
    if hasattr(material, "use_backface_culling"):
        material.use_backface_culling = False  # the quad's normal points away from the camera
    if hasattr(material, "use_transparency_overlap"):
        material.use_transparency_overlap = True
    material.diffuse_color = (0.8, 0.8, 0.8, 1.0)
    return material

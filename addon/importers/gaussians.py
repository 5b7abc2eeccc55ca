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

from ..io.ply import PlyError, read_ply

SH_C0 = 0.28209479177387814  # degree-0 real spherical-harmonic constant (3DGS colour encoding)

NODE_GROUP_NAME = "RadiantForge Splats"
MATERIAL_NAME = "RadiantForge Splat"
# Bumped whenever the node setup changes, so an old group saved in a .blend gets rebuilt.
NODE_SETUP_VERSION = 1

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

DISPLAY_MODES = ("AUTO", "ELLIPSOIDS", "POINTS")

# Modifier input identifiers are looked up by name (their "Socket_N" ids are not stable across builds).
INPUT_AS_POINTS = "Display as Points"
INPUT_SIZE = "Splat Size"


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


def sh_degree_of(property_names: list[str]) -> int:
    """SH degree from the number of f_rest_* properties: 3 * ((d + 1)^2 - 1) of them."""
    rest = sum(1 for name in property_names if name.startswith("f_rest_"))
    coefficients = rest // 3 + 1
    degree = int(round(coefficients ** 0.5)) - 1
    return degree if (degree + 1) ** 2 == coefficients else -1


def import_gaussians(filepath: str | os.PathLike, *, collection: bpy.types.Collection | None = None,
                     name: str | None = None, display: str = "AUTO",
                     splat_size: float = DEFAULT_SPLAT_SIZE) -> bpy.types.Object:
    """Import the 3DGS PLY at ``filepath`` as one object linked to ``collection`` (default: the scene's).

    display: "AUTO" (points above LARGE_SPLAT_COUNT splats, else ellipsoids), "ELLIPSOIDS" or "POINTS";
    it can be switched later on the modifier. Returns the new object.
    """
    if display not in DISPLAY_MODES:
        raise ValueError(f"display: expected one of {', '.join(DISPLAY_MODES)}, got {display!r}")
    filepath = Path(filepath)
    names, columns = read_gaussian_ply(filepath)
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

    as_points = display == "POINTS" or (display == "AUTO" and count > LARGE_SPLAT_COUNT)
    add_splat_modifier(obj, as_points=as_points, splat_size=splat_size)
    return obj


def add_splat_modifier(obj: bpy.types.Object, *, as_points: bool = False,
                       splat_size: float = DEFAULT_SPLAT_SIZE) -> bpy.types.Modifier:
    """Add the splat Geometry Nodes modifier to ``obj`` (a mesh with the 3DGS attributes)."""
    modifier = obj.modifiers.new("Gaussian Splats", "NODES")
    modifier.node_group = splat_node_group()
    set_splat_display(obj, as_points=as_points, splat_size=splat_size)
    return modifier


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


def set_splat_display(obj: bpy.types.Object, *, as_points: bool | None = None, splat_size: float | None = None) -> None:
    """Switch an imported splat object between ellipsoids and points, or change the splat size."""
    modifier = splat_modifier(obj)
    if modifier is None:
        raise ValueError(f"object {obj.name!r} has no Radiant Forge splat modifier; import the PLY with Radiant Forge first")
    if as_points is not None:
        modifier[modifier_input_id(modifier.node_group, INPUT_AS_POINTS)] = bool(as_points)
    if splat_size is not None:
        modifier[modifier_input_id(modifier.node_group, INPUT_SIZE)] = float(splat_size)
    obj.update_tag()


# --- material -------------------------------------------------------------------------------

def splat_material() -> bpy.types.Material:
    """The shared splat material: emits splat_color, blends to transparent by splat_alpha."""
    material = bpy.data.materials.get(MATERIAL_NAME)
    if material is not None and material.get("radiantforge_setup_version") == NODE_SETUP_VERSION:
        return material
    if material is None:
        material = bpy.data.materials.new(MATERIAL_NAME)
    material["radiantforge_setup_version"] = NODE_SETUP_VERSION
    if not material.use_nodes:  # Blender 5 always has nodes; older versions need the switch
        material.use_nodes = True
    tree = material.node_tree
    tree.nodes.clear()
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


def splat_node_group() -> bpy.types.NodeTree:
    """The shared Geometry Nodes group that draws splats (built once per .blend)."""
    group = bpy.data.node_groups.get(NODE_GROUP_NAME)
    if group is not None and group.get("radiantforge_setup_version") == NODE_SETUP_VERSION:
        return group
    if group is not None:  # an older setup: rename it out of the way, objects keep using it
        group.name = NODE_GROUP_NAME + " (old)"
    group = bpy.data.node_groups.new(NODE_GROUP_NAME, "GeometryNodeTree")
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
    build.feed(group_out.inputs["Geometry"], switch.outputs["Output"])
    return group

"""Export operator: the active splat object to a .ply, .spz, .splat, .glb or .gltf file (logic in ``splat_export``)."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty
from bpy_extras.io_utils import ExportHelper

from .. import splat_export

FORMAT_ITEMS = (
    (".ply", "3DGS PLY", "The original 3D Gaussian Splatting layout, every SH degree"),
    (".spz", "SPZ", "Niantic's compressed splats (about 10x smaller, quantised)"),
    (".splat", ".splat", "antimatter15's 32-byte records (no view-dependent colour)"),
    (".glb", "glTF Binary", "glTF 2.0 with KHR_gaussian_splatting"),
    (".gltf", "glTF JSON", "glTF 2.0 with KHR_gaussian_splatting, buffer embedded"),
)


class RADIANTFORGE_OT_export_splats(bpy.types.Operator, ExportHelper):
    """Export the active Gaussian-splat object (the splats left after edit-mode deletions)"""

    bl_idname = "radiant_forge.export_splats"
    bl_label = "Export Gaussian Splats"
    bl_options = {"REGISTER"}

    filename_ext = ".ply"
    filter_glob: StringProperty(default="*.ply;*.spz;*.splat;*.glb;*.gltf", options={"HIDDEN"})
    file_format: EnumProperty(name="Format", items=FORMAT_ITEMS, default=".ply")
    world_space: BoolProperty(name="Apply Object Transform", default=True,
                              description="Bake the object's location, rotation and uniform scale into the splats")

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and obj.type == "MESH" and "opacity" in obj.data.attributes

    def check(self, context):
        wanted = str(Path(self.filepath).with_suffix(self.file_format)) if self.filepath else self.filepath
        if wanted != self.filepath:
            self.filepath = wanted
            return True
        return False

    def execute(self, context):
        path = Path(bpy.path.abspath(self.filepath)).with_suffix(self.file_format)
        try:
            count = splat_export.export_splats(context.active_object, path, world_space=self.world_space)
        except (ValueError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        self.report({"INFO"}, f"exported {count:,} Gaussians to {path}")
        return {"FINISHED"}


def menu_export(self, context):
    self.layout.operator(RADIANTFORGE_OT_export_splats.bl_idname, text="Gaussian Splats (.ply, .spz, .splat, .glb)")

"""Import operators: a Gaussian-splat PLY, a turntable, a finished job's whole result."""

from __future__ import annotations

from pathlib import Path

import bpy
from bpy.props import BoolProperty, EnumProperty, FloatProperty, StringProperty
from bpy_extras.io_utils import ImportHelper

from ..importers import gaussians as gaussian_importer
from ..importers import turntable as turntable_importer
from ..importers.results import ImportOptions, import_result
from ..io.job_folder import JobError
from ..io.ply import PlyError
from ..properties import DISPLAY_ITEMS
from .exporting import RADIANTFORGE_OT_export_splats


def _select_only(context, obj) -> None:
    """Make ``obj`` the only selected and the active object (when it is in the view layer)."""
    view_layer = context.view_layer
    if view_layer is None:
        return
    for other in context.selected_objects:
        other.select_set(False)
    try:
        obj.select_set(True)
    except RuntimeError:  # linked to a collection that is not in this view layer
        return
    view_layer.objects.active = obj


class RADIANTFORGE_OT_import_gaussians(bpy.types.Operator, ImportHelper):
    """Import Gaussian splats (3DGS PLY, SPZ, .splat, glTF with KHR_gaussian_splatting) as one point-cloud object"""

    bl_idname = "radiant_forge.import_gaussians"
    bl_label = "Import Gaussian Splats"
    bl_options = {"REGISTER", "UNDO"}

    filename_ext = ".ply"
    filter_glob: StringProperty(default="*.ply;*.spz;*.splat;*.glb;*.gltf", options={"HIDDEN"})
    display: EnumProperty(name="Display", items=DISPLAY_ITEMS, default="AUTO")
    splat_size: FloatProperty(name="Splat Size", default=gaussian_importer.DEFAULT_SPLAT_SIZE, min=0.0, soft_max=4.0,
                              description="Ellipsoid semi-axes in standard deviations")

    def execute(self, context):
        try:
            obj = gaussian_importer.import_gaussians(self.filepath, collection=context.collection,
                                                     display=self.display, splat_size=self.splat_size)
        except (PlyError, ValueError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        _select_only(context, obj)
        self.report({"INFO"}, f"imported {obj['radiantforge_splat_count']:,} Gaussians (SH degree "
                              f"{obj['radiantforge_sh_degree']}) as {obj.name!r}")
        return {"FINISHED"}


class RADIANTFORGE_OT_import_turntable(bpy.types.Operator):
    """Import a turntable (numbered frames and/or an MP4) as an image sequence; the video is kept beside the .blend"""

    bl_idname = "radiant_forge.import_turntable"
    bl_label = "Import Turntable"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(name="Folder", subtype="DIR_PATH",
                              description="Frame folder, or a job's result folder with turntable/ and turntable.mp4")
    create_plane: BoolProperty(name="Show on a Plane", default=False,
                               description="Also add a plane that plays the frames")

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        try:
            imported = turntable_importer.import_turntable_folder(bpy.path.abspath(self.directory),
                                                                  create_plane=self.create_plane,
                                                                  collection=context.collection)
        except (ValueError, OSError, RuntimeError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        parts = []
        if imported.sequence is not None:
            parts.append(f"{imported.frame_count} frames as image {imported.sequence.name!r}")
        if imported.video_path is not None:
            parts.append(f"video at {imported.video_path}")
        self.report({"INFO"}, "imported " + ", ".join(parts))
        return {"FINISHED"}


class RADIANTFORGE_OT_import_result(bpy.types.Operator):
    """Import a finished job's result: splats, turntable, test renders beside ground truth"""

    bl_idname = "radiant_forge.import_result"
    bl_label = "Import Job Result"
    bl_options = {"REGISTER", "UNDO"}

    directory: StringProperty(name="Folder", subtype="DIR_PATH", description="A job folder or its result/ folder")
    display: EnumProperty(name="Display", items=DISPLAY_ITEMS, default="AUTO")
    turntable: BoolProperty(name="Turntable", default=True)

    def invoke(self, context, event):
        context.window_manager.fileselect_add(self)
        return {"RUNNING_MODAL"}

    def execute(self, context):
        folder = Path(bpy.path.abspath(self.directory))
        options = ImportOptions(display=self.display, turntable=self.turntable, collection=context.collection)
        try:
            imported = import_result(folder, options)
        except (JobError, PlyError, ValueError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        status = context.window_manager.radiantforge_job
        if imported.preview is not None:
            status.preview_image = imported.preview
        if imported.metrics:
            import json

            status.metrics_json = json.dumps(imported.metrics)
        if imported.splat_object is not None:
            status.result_object = imported.splat_object
            _select_only(context, imported.splat_object)
        self.report({"INFO"}, f"imported the result of {folder}")
        return {"FINISHED"}


def menu_import(self, context):
    self.layout.operator(RADIANTFORGE_OT_import_gaussians.bl_idname, text="Gaussian Splats (.ply, .spz, .splat, .glb)")


# The export operator (operators/exporting.py) registers with these.
CLASSES = (RADIANTFORGE_OT_import_gaussians, RADIANTFORGE_OT_import_turntable, RADIANTFORGE_OT_import_result,
           RADIANTFORGE_OT_export_splats)

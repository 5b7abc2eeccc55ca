"""The "Radiant Forge" sidebar tab of the 3D viewport, and the job progress in the status bar."""

from __future__ import annotations

import json

import bpy

from . import render_setup, session
from .importers import gaussians as gaussian_importer
from .importers import originals

CATEGORY = "Radiant Forge"
# Metrics shown in the panel, in this order, when the backend reports them.
SHOWN_METRICS = (("psnr", "PSNR", "{:.2f} dB"), ("ssim", "SSIM", "{:.3f}"), ("lpips", "LPIPS", "{:.3f}"),
                 ("n_gaussians", "Gaussians", "{:,}"), ("train_seconds", "Training", "{:.0f} s"))
PREVIEW_SCALE = 8.0
# The settings each guided-job panel shows, in order (names in scene.radiantforge.texture / .text3d).
TEXTURE_SHOWN = ("prompt", "negative_prompt", "guidance_scale", "steps", "resolution", "texture_size", "seed", "model")
TEXT3D_SHOWN = ("prompt", "negative_prompt", "representation", "steps", "seed", "resolution", "guidance_scale", "model")
TEXT3D_ADVANCED_SHOWN = (("Shading", ("latent_iter_ratio", "albedo_probability", "textureless_probability", "ambient")),
                         ("Regularisers", ("entropy_weight", "orientation_weight", "sparsity_weight")),
                         ("Mesh", ("target_faces", "texture_size")))


def _job_status(context):
    return context.window_manager.radiantforge_job


# Text wrapping to the sidebar's width: Blender's interface font is about this many pixels per
# character at UI scale 1 (an average over lower-case text), and a label's icon and margins take the rest.
CHAR_WIDTH_PX = 6.5
LABEL_MARGIN_PX = 40
MIN_LINE_CHARS = 20
# The status bar has room for one line.
STATUS_BAR_CHARS = 120


def line_chars(context) -> int:
    """Characters that fit on one label of the region being drawn (the sidebar's width, UI scale applied)."""
    region = getattr(context, "region", None)
    width = getattr(region, "width", 0) or 0
    if width <= 0:
        return STATUS_BAR_CHARS
    preferences = getattr(context, "preferences", None)
    scale = getattr(getattr(preferences, "view", None), "ui_scale", 1.0) or 1.0
    return max(MIN_LINE_CHARS, int((width - LABEL_MARGIN_PX * scale) / (CHAR_WIDTH_PX * scale)))


def wrap_text(text: str, width: int) -> list[str]:
    """The whole of ``text`` in lines of at most ``width`` characters (long words are split, never dropped)."""
    import textwrap

    lines = []
    for paragraph in text.splitlines() or [""]:
        lines += textwrap.wrap(paragraph, width, break_long_words=True, break_on_hyphens=False) or [""]
    return lines or [""]


def _draw_wrapped(layout, text: str, width: int, icon: str) -> None:
    """``text`` as labels, the icon on the first line only (the rest indented under it)."""
    for index, line in enumerate(wrap_text(text, width)):
        layout.label(text=line, icon=icon if index == 0 else "BLANK1")


def draw_job_progress(layout, context, wrap: bool = True) -> None:
    """Progress bar + message of the running job (and the backend's last notice), or the last job's
    outcome: the whole error, wrapped to the panel's width, once. ``wrap=False``: one line (status bar)."""
    status = _job_status(context)
    width = line_chars(context) if wrap else STATUS_BAR_CHARS
    if status.running:
        text = f"{status.phase.capitalize()}: {status.message}" if status.phase else status.message
        lines = wrap_text(text, width) if wrap else [text[:width]]
        if hasattr(layout, "progress"):  # Blender 4.0+
            layout.progress(factor=status.progress, type="BAR", text=lines[0])
        else:
            layout.label(text=lines[0])
        for line in lines[1:]:
            layout.label(text=line)
        if wrap and status.notice and status.notice not in status.message:
            _draw_wrapped(layout, status.notice, width, "INFO")
    elif status.error:
        if wrap:
            _draw_wrapped(layout, status.error, width, "ERROR")
        else:
            layout.label(text=status.error[:width], icon="ERROR")
    elif status.message:
        if wrap:
            _draw_wrapped(layout, status.message, width, "INFO")
        else:
            layout.label(text=status.message[:width], icon="INFO")
    if not status.running and status.resumable:
        layout.operator("radiant_forge.resume_job", text="Resume from Checkpoint", icon="FILE_REFRESH")


def _job_button(layout, operator: str, text: str, icon: str) -> None:
    """One button that turns into Cancel while a job runs."""
    if session.is_job_running():
        layout.operator("radiant_forge.cancel_job", text="Cancel", icon="CANCEL")
    else:
        layout.operator(operator, text=text, icon=icon)


def _draw_props(layout, props, names) -> None:
    for name in names:
        layout.prop(props, name)


class RadiantForgePanel:
    """Mixin of every Radiant Forge panel: the sidebar tab of the 3D viewport. (A panel's bl_idname
    is its class name, which the bl_parent_id of the panels inside it name.)"""

    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY


class RadiantForgeSettingsPanel(RadiantForgePanel):
    """Mixin of the panels inside the main one that lay out settings (label column, no keyframe dots):
    they implement ``draw_settings(context, layout, props)``, props being ``scene.radiantforge``."""

    bl_parent_id = "RADIANTFORGE_PT_main"

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        self.draw_settings(context, layout, context.scene.radiantforge)


def _operator_unless_running(layout, operator: str, icon: str) -> None:
    """A button that is greyed out while a job runs."""
    row = layout.row()
    row.enabled = not session.is_job_running()
    row.operator(operator, icon=icon)


class RADIANTFORGE_PT_main(RadiantForgePanel, bpy.types.Panel):
    bl_label = "Radiant Forge"

    def draw(self, context):
        layout = self.layout
        status = _job_status(context)
        draw_job_progress(layout, context)
        if status.running and status.job_id:
            layout.label(text=f"Job {status.job_id}", icon="TIME")
        if status.metrics_json:
            try:
                metrics = json.loads(status.metrics_json)
            except json.JSONDecodeError:
                metrics = {}
            column = layout.column(align=True)
            for key, label, fmt in SHOWN_METRICS:
                value = metrics.get(key, metrics.get(f"test_{key}"))
                if isinstance(value, (int, float)):
                    row = column.row()
                    row.label(text=label)
                    row.label(text=fmt.format(value))
        preview = status.preview_image
        if preview is not None:
            preview.preview_ensure()
            layout.template_icon(icon_value=preview.preview.icon_id, scale=PREVIEW_SCALE)
        layout.operator("radiant_forge.check_backend", icon="CHECKMARK")


class RADIANTFORGE_PT_capture(RadiantForgeSettingsPanel, bpy.types.Panel):
    bl_label = "Capture"

    def draw_settings(self, context, layout, props):
        layout.prop(props, "camera_source", expand=True)
        if props.camera_source == "COLLECTION":
            layout.prop(props, "camera_collection")
        else:
            _draw_props(layout, props, ("view_count", "hemisphere", "focal_length", "keep_rig"))
            selected = len([o for o in context.selected_objects if o.type == "MESH"]) if hasattr(context, "selected_objects") else 0
            layout.label(text=f"Around {selected} selected object(s)" if selected else "Around everything that renders",
                         icon="OBJECT_DATA")
        _draw_props(layout, props, ("test_every", "engine", "resolution", "samples", "point_count", "jobs_folder"))
        _operator_unless_running(layout, "radiant_forge.export_job", "EXPORT")


class RADIANTFORGE_PT_gaussians(RadiantForgeSettingsPanel, bpy.types.Panel):
    bl_label = "Gaussians"

    def draw_settings(self, context, layout, props):
        layout.prop(props, "quality")
        if props.quality == "STEPS":
            layout.prop(props, "steps")
        _draw_props(layout, props, ("sh_degree", "max_gaussians", "display", "import_turntable"))
        _job_button(layout, "radiant_forge.capture_train", "Capture & Train", "RENDER_STILL")
        layout.separator()
        layout.prop(props, "dataset_folder")
        _operator_unless_running(layout, "radiant_forge.train_dataset", "FILE_FOLDER")
        layout.separator()
        column = layout.column(align=True)
        column.operator("radiant_forge.import_gaussians", icon="IMPORT")
        column.operator("radiant_forge.import_turntable", icon="RENDER_ANIMATION")
        column.operator("radiant_forge.import_result", icon="FILE_TICK")
        obj = context.active_object
        modifier = gaussian_importer.splat_modifier(obj)
        if modifier is not None:
            box = layout.box()
            box.label(text=f"{obj.name}: {obj.get('radiantforge_splat_count', 0):,} splats", icon="POINTCLOUD_DATA")
            for name in (gaussian_importer.INPUT_AS_POINTS, gaussian_importer.INPUT_SIZE):
                identifier = gaussian_importer.modifier_input_id(modifier.node_group, name)
                box.prop(modifier, f'["{identifier}"]', text=name)
            hidden = originals.originals_hidden(obj)
            if hidden is not None:
                box.operator("radiant_forge.toggle_originals", icon="HIDE_ON" if hidden else "HIDE_OFF",
                             text="Show Originals" if hidden else "Hide Originals")
        changes = render_setup.read_record(context.scene)
        if changes:
            box = layout.box()
            box.label(text="Render settings set for the splats:", icon="SCENE")
            for entry in changes:
                box.label(text=render_setup.describe([entry]))
            box.operator("radiant_forge.restore_render_settings", icon="LOOP_BACK")


class RADIANTFORGE_PT_texture(RadiantForgeSettingsPanel, bpy.types.Panel):
    bl_label = "Texture"
    bl_options = {"DEFAULT_CLOSED"}

    def draw_settings(self, context, layout, props):
        _draw_props(layout, props.texture, TEXTURE_SHOWN)
        layout.prop(props.texture, "target", expand=True)
        obj = context.active_object
        if obj is not None and obj.type == "MESH":
            layout.label(text=f"Texturing {obj.name}", icon="MESH_DATA")
        else:
            layout.label(text="Select a mesh object", icon="INFO")
        _job_button(layout, "radiant_forge.texture_mesh", "Texture Selected Mesh", "TEXTURE")


class RADIANTFORGE_PT_text_to_3d(RadiantForgeSettingsPanel, bpy.types.Panel):
    bl_label = "Text-to-3D"
    bl_options = {"DEFAULT_CLOSED"}

    def draw_settings(self, context, layout, props):
        _draw_props(layout, props.text3d, TEXT3D_SHOWN)
        layout.prop(props, "import_turntable")
        layout.label(text="The object comes in at the 3D cursor", icon="PIVOT_CURSOR")
        _job_button(layout, "radiant_forge.generate_from_text", "Generate from Text", "OUTLINER_OB_FONT")


class RADIANTFORGE_PT_text_to_3d_advanced(RadiantForgeSettingsPanel, bpy.types.Panel):
    bl_label = "Advanced"
    bl_parent_id = "RADIANTFORGE_PT_text_to_3d"
    bl_options = {"DEFAULT_CLOSED"}

    def draw_settings(self, context, layout, props):
        for heading, names in TEXT3D_ADVANCED_SHOWN:
            _draw_props(layout.column(heading=heading), props.text3d, names)


class RADIANTFORGE_PT_batch(RadiantForgePanel, bpy.types.Panel):
    """Many jobs at once (addon/batch.py): from a batch file or the selected meshes, each entry's state listed."""

    bl_label = "Batch"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        from . import batch

        row = self.layout.row(align=True)
        row.operator("radiant_forge.batch_from_file", icon="FILE_TEXT")
        row.operator("radiant_forge.batch_from_selection", icon="MESH_DATA")
        run = batch.current_batch()
        if run is None:
            return
        column = self.layout.column(align=True)
        if run.error:
            column.label(text=run.error[:200], icon="ERROR")
        for label, state in batch.batch_rows(run.entries):
            split = column.split(factor=0.6)
            split.label(text=label)
            split.label(text=state)
        if not run.done:
            self.layout.operator("radiant_forge.batch_cancel", icon="CANCEL")


def draw_status_bar(self, context):
    """Appended to the status bar: the running job's progress."""
    status = _job_status(context)
    if status.running:
        row = self.layout.row(align=True)
        draw_job_progress(row, context, wrap=False)
        row.operator("radiant_forge.cancel_job", text="", icon="CANCEL")


CLASSES = (RADIANTFORGE_PT_main, RADIANTFORGE_PT_capture, RADIANTFORGE_PT_gaussians, RADIANTFORGE_PT_texture,
           RADIANTFORGE_PT_text_to_3d, RADIANTFORGE_PT_text_to_3d_advanced, RADIANTFORGE_PT_batch)

"""The "Radiant Forge" sidebar tab of the 3D viewport, and the job progress in the status bar."""

from __future__ import annotations

import json

import bpy

from .importers import gaussians as gaussian_importer
from .operators.jobs import active_runner

CATEGORY = "Radiant Forge"
# Metrics shown in the panel, in this order, when the backend reports them.
SHOWN_METRICS = (("psnr", "PSNR", "{:.2f} dB"), ("ssim", "SSIM", "{:.3f}"), ("lpips", "LPIPS", "{:.3f}"),
                 ("n_gaussians", "Gaussians", "{:,}"), ("train_seconds", "Training", "{:.0f} s"))
PREVIEW_SCALE = 8.0


def _job_status(context):
    return context.window_manager.radiantforge_job


def draw_job_progress(layout, context) -> None:
    """Progress bar + message of the running job, or the last job's outcome."""
    status = _job_status(context)
    if status.running:
        text = f"{status.phase.capitalize()}: {status.message}" if status.phase else status.message
        if hasattr(layout, "progress"):  # Blender 4.0+
            layout.progress(factor=status.progress, type="BAR", text=text[:120])
        else:
            layout.label(text=text[:120])
    elif status.error:
        for line in _wrap(status.error):
            layout.label(text=line, icon="ERROR")
            break
    elif status.message:
        layout.label(text=status.message[:120], icon="INFO")
    if not status.running and status.resumable:
        layout.operator("radiant_forge.resume_job", text="Resume from Checkpoint", icon="FILE_REFRESH")


def _wrap(text: str, width: int = 60) -> list[str]:
    import textwrap

    return textwrap.wrap(text, width) or [""]


def _job_button(layout, operator: str, text: str, icon: str) -> None:
    """One button that turns into Cancel while a job runs."""
    if active_runner() is not None:
        layout.operator("radiant_forge.cancel_job", text="Cancel", icon="CANCEL")
    else:
        layout.operator(operator, text=text, icon=icon)


class RADIANTFORGE_PT_main(bpy.types.Panel):
    bl_label = "Radiant Forge"
    bl_idname = "RADIANTFORGE_PT_main"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY

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


class RADIANTFORGE_PT_capture(bpy.types.Panel):
    bl_label = "Capture"
    bl_idname = "RADIANTFORGE_PT_capture"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY
    bl_parent_id = "RADIANTFORGE_PT_main"

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        props = context.scene.radiantforge
        layout.prop(props, "camera_source", expand=True)
        if props.camera_source == "COLLECTION":
            layout.prop(props, "camera_collection")
        else:
            layout.prop(props, "view_count")
            layout.prop(props, "upper_hemisphere")
            layout.prop(props, "focal_length")
            layout.prop(props, "keep_rig")
            selected = len([o for o in context.selected_objects if o.type == "MESH"]) if hasattr(context, "selected_objects") else 0
            layout.label(text=f"Around {selected} selected object(s)" if selected else "Around everything that renders",
                         icon="OBJECT_DATA")
        layout.prop(props, "test_every")
        layout.prop(props, "engine")
        layout.prop(props, "resolution")
        layout.prop(props, "samples")
        layout.prop(props, "point_count")
        layout.prop(props, "jobs_folder")
        running = active_runner() is not None
        row = layout.row()
        row.enabled = not running
        row.operator("radiant_forge.export_job", icon="EXPORT")


class RADIANTFORGE_PT_gaussians(bpy.types.Panel):
    bl_label = "Gaussians"
    bl_idname = "RADIANTFORGE_PT_gaussians"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY
    bl_parent_id = "RADIANTFORGE_PT_main"

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        props = context.scene.radiantforge
        layout.prop(props, "iters")
        layout.prop(props, "sh_degree")
        layout.prop(props, "max_gaussians")
        layout.prop(props, "display")
        layout.prop(props, "import_turntable")
        _job_button(layout, "radiant_forge.capture_train", "Capture & Train", "RENDER_STILL")
        layout.separator()
        layout.prop(props, "dataset_folder")
        row = layout.row()
        row.enabled = active_runner() is None
        row.operator("radiant_forge.train_dataset", icon="FILE_FOLDER")
        layout.separator()
        column = layout.column(align=True)
        column.operator("radiant_forge.import_gaussians", icon="IMPORT")
        column.operator("radiant_forge.import_turntable", icon="RENDER_ANIMATION")
        column.operator("radiant_forge.import_result", icon="FILE_TICK")
        obj = context.active_object
        modifier = _splat_modifier(obj)
        if modifier is not None:
            box = layout.box()
            box.label(text=f"{obj.name}: {obj.get('radiantforge_splat_count', 0):,} splats", icon="POINTCLOUD_DATA")
            for name in (gaussian_importer.INPUT_AS_POINTS, gaussian_importer.INPUT_SIZE):
                identifier = gaussian_importer._modifier_input_id(modifier.node_group, name)
                box.prop(modifier, f'["{identifier}"]', text=name)


def _splat_modifier(obj):
    if obj is None:
        return None
    for modifier in obj.modifiers:
        if modifier.type == "NODES" and modifier.node_group and modifier.node_group.name.startswith(gaussian_importer.NODE_GROUP_NAME):
            return modifier
    return None


class RADIANTFORGE_PT_texture(bpy.types.Panel):
    bl_label = "Texture"
    bl_idname = "RADIANTFORGE_PT_texture"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY
    bl_parent_id = "RADIANTFORGE_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        props = context.scene.radiantforge
        layout.prop(props, "texture_prompt")
        layout.prop(props, "texture_negative_prompt")
        layout.prop(props, "texture_guidance_scale")
        layout.prop(props, "texture_steps")
        layout.prop(props, "texture_resolution")
        layout.prop(props, "texture_size")
        layout.prop(props, "texture_seed")
        layout.prop(props, "texture_model")
        layout.prop(props, "texture_target", expand=True)
        obj = context.active_object
        if obj is not None and obj.type == "MESH":
            layout.label(text=f"Texturing {obj.name}", icon="MESH_DATA")
        else:
            layout.label(text="Select a mesh object", icon="INFO")
        _job_button(layout, "radiant_forge.texture_mesh", "Texture Selected Mesh", "TEXTURE")


class RADIANTFORGE_PT_text_to_3d(bpy.types.Panel):
    bl_label = "Text-to-3D"
    bl_idname = "RADIANTFORGE_PT_text_to_3d"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY
    bl_parent_id = "RADIANTFORGE_PT_main"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        props = context.scene.radiantforge
        layout.prop(props, "text3d_prompt")
        layout.prop(props, "text3d_negative_prompt")
        layout.prop(props, "text3d_steps")
        layout.prop(props, "text3d_seed")
        layout.prop(props, "text3d_resolution")
        layout.prop(props, "text3d_guidance_scale")
        layout.prop(props, "text3d_model")
        layout.prop(props, "import_turntable")
        layout.label(text="The object comes in at the 3D cursor", icon="PIVOT_CURSOR")
        _job_button(layout, "radiant_forge.generate_from_text", "Generate from Text", "OUTLINER_OB_FONT")


class RADIANTFORGE_PT_text_to_3d_advanced(bpy.types.Panel):
    bl_label = "Advanced"
    bl_idname = "RADIANTFORGE_PT_text_to_3d_advanced"
    bl_space_type = "VIEW_3D"
    bl_region_type = "UI"
    bl_category = CATEGORY
    bl_parent_id = "RADIANTFORGE_PT_text_to_3d"
    bl_options = {"DEFAULT_CLOSED"}

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        props = context.scene.radiantforge
        column = layout.column(heading="Shading")
        column.prop(props, "text3d_latent_iter_ratio")
        column.prop(props, "text3d_albedo_probability")
        column.prop(props, "text3d_textureless_probability")
        column.prop(props, "text3d_ambient")
        column = layout.column(heading="Regularisers")
        column.prop(props, "text3d_entropy_weight")
        column.prop(props, "text3d_orientation_weight")
        column.prop(props, "text3d_sparsity_weight")
        column = layout.column(heading="Mesh")
        column.prop(props, "text3d_target_faces")
        column.prop(props, "text3d_texture_size")


def draw_status_bar(self, context):
    """Appended to the status bar: the running job's progress."""
    status = _job_status(context)
    if status.running:
        row = self.layout.row(align=True)
        draw_job_progress(row, context)
        row.operator("radiant_forge.cancel_job", text="", icon="CANCEL")


CLASSES = (RADIANTFORGE_PT_main, RADIANTFORGE_PT_capture, RADIANTFORGE_PT_gaussians, RADIANTFORGE_PT_texture,
           RADIANTFORGE_PT_text_to_3d, RADIANTFORGE_PT_text_to_3d_advanced)

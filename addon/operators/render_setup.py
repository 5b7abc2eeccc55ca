"""Undo the render settings the splat import set (addon/render_setup.py holds the logic)."""

from __future__ import annotations

import bpy

from .. import render_setup


class RADIANTFORGE_OT_restore_render_settings(bpy.types.Operator):
    """Put back the render settings the splat import changed (those changed since stay as they are)"""

    bl_idname = "radiant_forge.restore_render_settings"
    bl_label = "Restore Render Settings"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        return context.scene is not None and bool(render_setup.read_record(context.scene))

    def execute(self, context):
        restored, left = render_setup.restore_render_settings(context.scene)
        self.report({"INFO"}, render_setup.describe_restore(restored, left))
        return {"FINISHED"}


CLASSES = (RADIANTFORGE_OT_restore_render_settings,)

"""Show or hide the objects a splat object was captured from (the import hides them under the splats)."""

from __future__ import annotations

import bpy

from ..importers import originals


class RADIANTFORGE_OT_toggle_originals(bpy.types.Operator):
    """Show the objects this splat object was captured from, or hide them again"""

    bl_idname = "radiant_forge.toggle_originals"
    bl_label = "Show / Hide Originals"
    bl_options = {"REGISTER", "UNDO"}

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        return obj is not None and originals.originals_hidden(obj) is not None

    def execute(self, context):
        obj = context.active_object
        hidden = not originals.originals_hidden(obj)
        names = originals.set_originals_hidden(obj, hidden)
        self.report({"INFO"}, f"{'hid' if hidden else 'showed'} {len(names)} original object(s): {', '.join(names)}")
        return {"FINISHED"}


CLASSES = (RADIANTFORGE_OT_toggle_originals,)

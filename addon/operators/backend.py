"""Operators for the backend: check it, start and stop the local one."""

from __future__ import annotations

import bpy

from .. import backend_process
from ..client import BackendError, describe_health
from ..preferences import backend_settings, set_check_report
from ..settings import connect


def check_backend(context) -> list[str]:
    """Connect (starting the local backend if needed) and describe it. Raises BackendError."""
    settings = backend_settings(context)
    client = connect(settings)
    lines = describe_health(client.health())
    where = f"local, {client.url}" if settings.mode == "LOCAL" else client.url
    lines.insert(1, f"Service: {where}")
    return lines


class RADIANTFORGE_OT_check_backend(bpy.types.Operator):
    """Connect to the backend and report its version, device and models"""

    bl_idname = "radiant_forge.check_backend"
    bl_label = "Check Backend"
    bl_options = {"REGISTER"}

    def execute(self, context):
        try:
            lines = check_backend(context)
        except BackendError as exc:
            set_check_report(False, [str(exc)])
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        set_check_report(True, lines)
        self.report({"INFO"}, " | ".join(lines))
        return {"FINISHED"}


class RADIANTFORGE_OT_start_backend(bpy.types.Operator):
    """Start the local backend now (it also starts by itself with the first job)"""

    bl_idname = "radiant_forge.start_backend"
    bl_label = "Start Local Backend"
    bl_options = {"REGISTER"}

    def execute(self, context):
        settings = backend_settings(context)
        if settings.mode != "LOCAL":
            self.report({"WARNING"}, "the backend is set to Remote; nothing to start here")
            return {"CANCELLED"}
        try:
            client = connect(settings)
        except BackendError as exc:
            set_check_report(False, [str(exc)])
            self.report({"ERROR"}, str(exc))
            return {"CANCELLED"}
        set_check_report(True, [f"local backend running at {client.url}"])
        self.report({"INFO"}, f"local backend running at {client.url}")
        return {"FINISHED"}


class RADIANTFORGE_OT_stop_backend(bpy.types.Operator):
    """Stop the local backend started by this Blender session"""

    bl_idname = "radiant_forge.stop_backend"
    bl_label = "Stop Local Backend"
    bl_options = {"REGISTER"}

    def execute(self, context):
        stopped = backend_process.stop_local_backend()
        set_check_report(None, ["local backend stopped" if stopped else "no local backend was running"])
        self.report({"INFO"}, "local backend stopped" if stopped else "no local backend was running")
        return {"FINISHED"}


CLASSES = (RADIANTFORGE_OT_check_backend, RADIANTFORGE_OT_start_backend, RADIANTFORGE_OT_stop_backend)

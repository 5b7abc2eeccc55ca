"""Operators for the backend: check it, start and stop the local one."""

from __future__ import annotations

from typing import Callable

import bpy

from .. import backend_process, session
from ..client import BackendError, describe_health
from ..preferences import backend_settings
from ..settings import connect


def check_backend(context) -> list[str]:
    """Connect (starting the local backend if needed) and describe it. Raises BackendError."""
    settings = backend_settings(context)
    client = connect(settings)
    lines = describe_health(client.health())
    where = f"local, {client.url}" if settings.mode == "LOCAL" else client.url
    lines.insert(1, f"Service: {where}")
    return lines


def start_local_backend(context) -> list[str]:
    """Start the local backend (or find it running). Raises BackendError."""
    client = connect(backend_settings(context))
    return [f"local backend running at {client.url}"]


def report_backend_outcome(operator: bpy.types.Operator, attempt: Callable[[], list[str]]) -> set[str]:
    """Run ``attempt`` (it returns the lines to show) and report how it went, in the preferences
    (the session's check report) and the status bar; a BackendError is its one line."""
    try:
        lines = attempt()
    except BackendError as exc:
        session.set_check_report(False, [str(exc)])
        operator.report({"ERROR"}, str(exc))
        return {"CANCELLED"}
    session.set_check_report(True, lines)
    operator.report({"INFO"}, " | ".join(lines))
    return {"FINISHED"}


class RADIANTFORGE_OT_check_backend(bpy.types.Operator):
    """Connect to the backend and report its version, device and models"""

    bl_idname = "radiant_forge.check_backend"
    bl_label = "Check Backend"
    bl_options = {"REGISTER"}

    def execute(self, context):
        return report_backend_outcome(self, lambda: check_backend(context))


class RADIANTFORGE_OT_start_backend(bpy.types.Operator):
    """Start the local backend now (it also starts by itself with the first job)"""

    bl_idname = "radiant_forge.start_backend"
    bl_label = "Start Local Backend"
    bl_options = {"REGISTER"}

    def execute(self, context):
        if backend_settings(context).mode != "LOCAL":
            self.report({"WARNING"}, "the backend is set to Remote; nothing to start here")
            return {"CANCELLED"}
        return report_backend_outcome(self, lambda: start_local_backend(context))


class RADIANTFORGE_OT_stop_backend(bpy.types.Operator):
    """Stop the local backend started by this Blender session"""

    bl_idname = "radiant_forge.stop_backend"
    bl_label = "Stop Local Backend"
    bl_options = {"REGISTER"}

    def execute(self, context):
        message = "local backend stopped" if backend_process.stop_local_backend() else "no local backend was running"
        session.set_check_report(None, [message])
        self.report({"INFO"}, message)
        return {"FINISHED"}


CLASSES = (RADIANTFORGE_OT_check_backend, RADIANTFORGE_OT_start_backend, RADIANTFORGE_OT_stop_backend)

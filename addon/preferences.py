"""Add-on preferences: which backend to use (a local one the add-on starts, or a remote URL + token)."""

from __future__ import annotations

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty

from . import session
from .settings import BackendSettings

# The add-on's module name: "bl_ext.<repo>.radiant_forge" as an extension, "radiantforge_addon" in a venv.
ADDON_ID = __package__

BACKEND_ITEMS = [
    ("LOCAL", "Local", "Start the backend on this machine with the Python of a venv where Radiant Forge is installed"),
    ("REMOTE", "Remote", "Use a running `radiantforge serve` (e.g. on a GPU machine) by URL and token"),
]

class RadiantForgePreferences(bpy.types.AddonPreferences):
    bl_idname = ADDON_ID

    backend: EnumProperty(name="Backend", items=BACKEND_ITEMS, default="LOCAL")
    python_path: StringProperty(
        name="Python", subtype="FILE_PATH", default="",
        description="Python interpreter of a virtual environment where Radiant Forge is installed "
                    "(e.g. ~/venvs/radiantforge/bin/python)")
    local_port: IntProperty(name="Port", default=0, min=0, max=65535,
                            description="Port of the local backend (0: any free port)")
    jobs_root: StringProperty(name="Service Folder", subtype="DIR_PATH", default="",
                              description="Where the local backend keeps its jobs (empty: its per-user default)")
    remote_url: StringProperty(name="URL", default="http://127.0.0.1:8765",
                               description="Address of a running `radiantforge serve`")
    remote_token: StringProperty(name="Token", subtype="PASSWORD", default="",
                                 description="The token the server was started with (--token)")

    def backend_settings(self) -> BackendSettings:
        return BackendSettings(mode=self.backend, python=bpy.path.abspath(self.python_path) if self.python_path else "",
                               port=self.local_port, root=bpy.path.abspath(self.jobs_root) if self.jobs_root else "",
                               url=self.remote_url, token=self.remote_token)

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.prop(self, "backend", expand=True)
        if self.backend == "LOCAL":
            layout.prop(self, "python_path")
            layout.prop(self, "local_port")
            layout.prop(self, "jobs_root")
            row = layout.row(align=True)
            row.operator("radiant_forge.start_backend", icon="PLAY")
            row.operator("radiant_forge.stop_backend", icon="PAUSE")
        else:
            layout.prop(self, "remote_url")
            layout.prop(self, "remote_token")
        layout.operator("radiant_forge.check_backend", icon="CHECKMARK")
        check_ok, check_lines = session.check_report()  # the last check of this session (not saved)
        if check_lines:
            box = layout.box()
            icon = "CHECKMARK" if check_ok else "ERROR"
            for index, line in enumerate(check_lines):
                for part in _wrap(line):
                    box.label(text=part, icon=icon if index == 0 else "NONE")
                    icon = "NONE"


def _wrap(text: str, width: int = 90) -> list[str]:
    """Labels do not wrap; long error messages are split into lines."""
    import textwrap

    return textwrap.wrap(text, width) or [""]


def get_preferences(context=None) -> RadiantForgePreferences | None:
    """The add-on's preferences, or None when it is not enabled as an add-on (scripts using the venv package)."""
    context = context or bpy.context
    addon = context.preferences.addons.get(ADDON_ID)
    return addon.preferences if addon is not None else None


def backend_settings(context=None) -> BackendSettings:
    """Backend settings: RADIANTFORGE_* environment variables when set (headless scripts), else the
    preferences, else the defaults of BackendSettings.from_environment()."""
    if BackendSettings.environment_is_set():
        return BackendSettings.from_environment()
    preferences = get_preferences(context)
    if preferences is not None:
        return preferences.backend_settings()
    return BackendSettings.from_environment()


CLASSES = (RadiantForgePreferences,)

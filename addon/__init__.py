"""Radiant Forge Blender extension: capture a scene, train Gaussian splats on a backend, import them.

Registration lives here; the logic lives in plain modules (capture, pipeline, importers, client)
that scripts can call without registering anything. This module imports only bpy at load time so
that `import radiantforge_addon.capture` works from the pip `bpy` module without side effects.
"""

import bpy

_registered_classes: list = []


def _classes():
    from . import panel, preferences, properties
    from .operators import CLASSES as OPERATOR_CLASSES

    return [*properties.CLASSES, *preferences.CLASSES, *OPERATOR_CLASSES, *panel.CLASSES]


def register():
    from . import panel, properties
    from .operators import importing

    for cls in _classes():
        bpy.utils.register_class(cls)
        _registered_classes.append(cls)
    properties.register_properties()
    bpy.types.TOPBAR_MT_file_import.append(importing.menu_import)
    bpy.types.STATUSBAR_HT_header.append(panel.draw_status_bar)


def unregister():
    from . import backend_process, panel, properties
    from .operators import importing, jobs

    jobs.stop_active_job()
    backend_process.stop_local_backend()
    bpy.types.STATUSBAR_HT_header.remove(panel.draw_status_bar)
    bpy.types.TOPBAR_MT_file_import.remove(importing.menu_import)
    properties.unregister_properties()
    while _registered_classes:
        bpy.utils.unregister_class(_registered_classes.pop())

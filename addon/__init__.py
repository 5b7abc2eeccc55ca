"""Radiant Forge Blender extension: capture a scene, train Gaussian splats on a backend, import them.

Registration lives here; the logic lives in plain modules that scripts can call without
registering anything: ``io`` (formats and numpy geometry, no bpy), ``capture``, ``importers``,
``transport`` and ``pipeline`` (a job of each kind from the scene), ``client``. This module imports
nothing at load time (bpy only inside register/unregister), so ``import radiantforge_addon.io...``
works in a plain Python without Blender, and ``import radiantforge_addon.capture`` from the pip
``bpy`` module has no side effects.
"""

_registered_classes: list = []


def _classes():
    from . import panel, preferences, properties
    from .operators import CLASSES as OPERATOR_CLASSES

    return [*properties.CLASSES, *preferences.CLASSES, *OPERATOR_CLASSES, *panel.CLASSES]


def register():
    import bpy

    from . import panel, properties
    from .operators import exporting, importing

    for cls in _classes():
        bpy.utils.register_class(cls)
        _registered_classes.append(cls)
    properties.register_properties()
    bpy.types.TOPBAR_MT_file_import.append(importing.menu_import)
    bpy.types.TOPBAR_MT_file_export.append(exporting.menu_export)
    bpy.types.STATUSBAR_HT_header.append(panel.draw_status_bar)
    from . import viewport
    viewport.register()


def unregister():
    import bpy

    from . import backend_process, panel, properties, session
    from .operators import exporting, importing

    session.stop_active_job()
    backend_process.stop_local_backend()
    from . import viewport
    viewport.unregister()
    bpy.types.STATUSBAR_HT_header.remove(panel.draw_status_bar)
    bpy.types.TOPBAR_MT_file_import.remove(importing.menu_import)
    bpy.types.TOPBAR_MT_file_export.remove(exporting.menu_export)
    properties.unregister_properties()
    while _registered_classes:
        bpy.utils.unregister_class(_registered_classes.pop())

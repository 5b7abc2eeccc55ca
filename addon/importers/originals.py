"""The captured objects under a splat object: hidden when the splats come in (they stand in the same
place), shown again on request. The names are kept on the splat object, so this works after a save."""

from __future__ import annotations

import bpy

# On the splat object: the names of the objects its capture rendered, and whether they are hidden now.
ORIGINALS_KEY = "radiantforge_originals"
HIDDEN_KEY = "radiantforge_originals_hidden"


def originals_of(splat_object: bpy.types.Object) -> list[bpy.types.Object]:
    """The captured objects of ``splat_object`` that still exist (never the splat object itself)."""
    names = splat_object.get(ORIGINALS_KEY) or []
    return [bpy.data.objects[name] for name in names
            if name in bpy.data.objects and bpy.data.objects[name] != splat_object]


def set_originals_hidden(splat_object: bpy.types.Object, hidden: bool) -> list[str]:
    """Hide (or show) the captured objects in viewports and in renders; returns their names.

    ``hide_viewport`` and ``hide_render`` (not the view layer's eye, ``hide_set``): both are plain
    properties, so a later capture can show the originals for its renders and put the state back.
    """
    changed = []
    for obj in originals_of(splat_object):
        obj.hide_render = hidden
        obj.hide_viewport = hidden
        changed.append(obj.name)
    splat_object[HIDDEN_KEY] = hidden
    return changed


def hide_originals(splat_object: bpy.types.Object, names: list[str]) -> list[str]:
    """Remember ``names`` (the objects a capture rendered) on ``splat_object`` and hide them."""
    splat_object[ORIGINALS_KEY] = [name for name in names if name != splat_object.name]
    return set_originals_hidden(splat_object, True)


def originals_hidden(splat_object: bpy.types.Object) -> bool | None:
    """True or False, or None when the object has no captured originals in this file."""
    if not originals_of(splat_object):
        return None
    return bool(splat_object.get(HIDDEN_KEY, False))

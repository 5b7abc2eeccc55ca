"""The scene render settings the Gaussian sprites need, set on import and undone on request.

The sprites match the backend's render only when colours blend as sRGB values (the Raw view
transform), pixels are point-sampled as the backend does (Cycles' Filter Width 0.01; the default
1.5 px filter blurs), and Cycles follows enough transparent bounces through the overlapping quads,
none of them ended at random (its min transparent bounces; README, "Splats in Blender"; tests/test_splat_render_fidelity.py measures each). Importing splats
sets what differs and records each change in the scene (``scene["radiantforge_render_setup"]``:
the setting, its value before, the value set). :func:`restore_render_settings` puts back only
the settings that still hold the value the add-on set: what the artist changed since stays.
Nothing here touches a setting that already had a suitable value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

RECORD_KEY = "radiantforge_render_setup"
# Enough transparent bounces for the quads a pixel's ray crosses on a dense trained scene, and as
# many before Cycles may end a ray at random: with Cycles' min_transparent_bounces of 0 its Russian
# roulette ends rays early and leaves speckles (donut-sh0.ply, 45k splats, 96 px, 16 samples, against
# the backend: 20.2 dB with 0/128, 20.6 dB with 0/1024, 28.6 dB with 128/128, 52.5 dB with 256/256,
# 64.9 dB with 512/512 and 1024/1024). Cycles' default of 8 leaves dark stains (issue 13: 16.6 dB).
SPLAT_TRANSPARENT_BOUNCES = 512
SPLAT_FILTER_WIDTH = 0.01


@dataclass(frozen=True)
class Requirement:
    """One scene setting: ``path`` under the scene ("view_settings.view_transform"), the value the
    sprites need, and ``satisfied(current)`` when the current value already does."""

    path: str
    label: str
    wanted: Any
    satisfied: Callable[[Any], bool]


REQUIREMENTS = (
    Requirement("view_settings.view_transform", "view transform", "Raw", lambda value: value == "Raw"),
    Requirement("cycles.filter_width", "Cycles filter width", SPLAT_FILTER_WIDTH,
                lambda value: value <= SPLAT_FILTER_WIDTH + 1e-9),
    Requirement("cycles.transparent_max_bounces", "Cycles transparent bounces", SPLAT_TRANSPARENT_BOUNCES,
                lambda value: value >= SPLAT_TRANSPARENT_BOUNCES),
    Requirement("cycles.min_transparent_bounces", "Cycles min transparent bounces", SPLAT_TRANSPARENT_BOUNCES,
                lambda value: value >= SPLAT_TRANSPARENT_BOUNCES),
)


def _owner_and_name(scene, path: str):
    owner_path, _, name = path.rpartition(".")
    owner = scene
    for part in owner_path.split("."):
        owner = getattr(owner, part, None)
        if owner is None:
            return None, name
    return owner, name


def read_record(scene) -> list[dict]:
    """The changes recorded in ``scene``: [{"path", "label", "before", "after"}]."""
    text = scene.get(RECORD_KEY)
    if not text:
        return []
    try:
        record = json.loads(text)
    except ValueError:
        return []
    return [entry for entry in record if isinstance(entry, dict) and "path" in entry]


def _write_record(scene, record: list[dict]) -> None:
    if record:
        scene[RECORD_KEY] = json.dumps(record)
    elif RECORD_KEY in scene:
        del scene[RECORD_KEY]


def apply_splat_render_settings(scene) -> list[dict]:
    """Set each requirement ``scene`` does not meet yet; returns the changes this call made.

    A setting changed by an earlier import keeps its first "before" (restoring goes back to the
    artist's value, not to ours). A render engine that is not loaded (no ``scene.cycles``) is skipped.
    """
    record = read_record(scene)
    recorded = {entry["path"]: entry for entry in record}
    made = []
    for requirement in REQUIREMENTS:
        owner, name = _owner_and_name(scene, requirement.path)
        if owner is None or not hasattr(owner, name):
            continue
        current = getattr(owner, name)
        if requirement.satisfied(current):
            continue
        setattr(owner, name, requirement.wanted)
        change = {"path": requirement.path, "label": requirement.label, "before": current,
                  "after": getattr(owner, name)}
        made.append(change)
        if requirement.path in recorded:
            recorded[requirement.path]["after"] = change["after"]
        else:
            record.append(change)
    _write_record(scene, record)
    return made


def restore_render_settings(scene) -> tuple[list[dict], list[dict]]:
    """Put back the recorded settings that still hold the add-on's value; forget the record.

    Returns (restored, left): ``left`` are the settings changed since by someone else, kept as they are.
    """
    restored, left = [], []
    for entry in read_record(scene):
        owner, name = _owner_and_name(scene, entry["path"])
        if owner is None or not hasattr(owner, name):
            continue
        current = getattr(owner, name)
        same = abs(current - entry["after"]) < 1e-9 if isinstance(current, float) else current == entry["after"]
        if same:
            setattr(owner, name, entry["before"])
            restored.append(entry)
        else:
            left.append({**entry, "now": current})
    _write_record(scene, [])
    return restored, left


def describe(changes: list[dict]) -> str:
    """'view transform AgX → Raw, Cycles transparent bounces 8 → 512'."""
    def shown(value):
        return f"{value:g}" if isinstance(value, float) else str(value)

    return ", ".join(f"{entry['label']} {shown(entry['before'])} → {shown(entry['after'])}" for entry in changes)


def describe_restore(restored: list[dict], left: list[dict]) -> str:
    """What :func:`restore_render_settings` did, for the operator's report:
    'restored view transform Raw → AgX; kept (changed since): Cycles filter width'."""
    undone = [{**entry, "before": entry["after"], "after": entry["before"]} for entry in restored]
    message = f"restored {describe(undone) or 'nothing'}"
    if left:
        message += "; kept (changed since): " + ", ".join(entry["label"] for entry in left)
    return message

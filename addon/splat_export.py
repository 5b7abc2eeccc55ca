"""Export a splat object (as imported, after the artist's edits) to a splat file: .ply, .spz, .splat, .glb, .gltf.

The splats are the object's vertices with their 3DGS attributes as they are now
(``importers.gaussians.read_splat_columns``): vertices deleted or cropped in edit mode are splats
left out. The object's world transform (rotation, uniform scale, translation) is baked into the
splats, so the file shows what the scene shows. The formats themselves live in ``io.splat_formats``.
"""

from __future__ import annotations

import os
from pathlib import Path

import bpy
import numpy as np

from .importers.gaussians import read_splat_columns
from .io import splat_formats


def splat_arrays_of(obj: bpy.types.Object, *, world_space: bool = True) -> splat_formats.SplatArrays:
    """The splats of ``obj`` now (edit-mode changes included). Raises ValueError when it holds no splats."""
    if obj is None or obj.type != "MESH":
        raise ValueError("select a splat object (a mesh imported with Radiant Forge) to export")
    if obj.mode == "EDIT":
        # Edit-mode deletions live in the edit mesh until flushed, and attribute data cannot be read
        # while editing: flush, then read a plain copy.
        obj.update_from_editmode()
        copy = obj.data.copy()
        try:
            columns = read_splat_columns(copy)
        finally:
            bpy.data.meshes.remove(copy)
    else:
        columns = read_splat_columns(obj.data)
    if columns is None:
        raise ValueError(f"object {obj.name!r} has no 3DGS attributes (opacity, scale_*, rot_*, f_dc_*); "
                         "export objects imported as Gaussian splats")
    if not len(columns["x"]):
        raise ValueError(f"object {obj.name!r} has no splats left to export")
    splats = splat_formats.from_ply_columns(columns)
    if world_space:
        matrix = np.array(obj.matrix_world, dtype=np.float64)
        splats = splat_formats.transform_splats(splats, matrix, what=f"object {obj.name!r} transform")
    return splats


def export_splats(obj: bpy.types.Object, filepath: str | os.PathLike, *, world_space: bool = True) -> int:
    """Write the splats of ``obj`` to ``filepath`` (format by suffix). Returns how many were written."""
    splats = splat_arrays_of(obj, world_space=world_space)
    if Path(filepath).suffix.lower() == ".ply":
        splat_formats.write_gaussian_ply(filepath, splats)
    else:
        splat_formats.write_splats(filepath, splats)
    return len(splats)

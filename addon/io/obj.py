"""The mesh a texture job textures, as an OBJ file (numpy only; the backend reads it with its mesh loader)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_obj(path: Path, vertices: np.ndarray, uvs: np.ndarray, triangles: np.ndarray,
              triangle_loops: np.ndarray) -> Path:
    """An OBJ (Y up: Blender's (x, y, z) is written (x, z, -y), as Blender's exporter does) with one vt per loop.

    vertices: (V, 3) Blender world space, uvs: (L, 2) per loop, triangles: (T, 3) vertex indices,
    triangle_loops: (T, 3) loop indices. Written to a temporary name, then renamed.
    """
    y_up = np.stack([vertices[:, 0], vertices[:, 2], -vertices[:, 1]], axis=1)
    used = np.unique(triangle_loops)  # only the loops of triangles (every loop is in one)
    loop_to_vt = np.full(len(uvs), -1, dtype=np.int64)
    loop_to_vt[used] = np.arange(len(used))
    corners = np.stack([triangles + 1, loop_to_vt[triangle_loops] + 1], axis=-1).reshape(len(triangles), 6)
    partial = path.with_name(path.name + ".partial")
    with open(partial, "w", encoding="utf-8") as out:
        out.write("# Radiant Forge: evaluated mesh for texturing\no mesh\n")
        np.savetxt(out, y_up, fmt="v %.9g %.9g %.9g")
        np.savetxt(out, uvs[used], fmt="vt %.9g %.9g")
        np.savetxt(out, corners, fmt="f %d/%d %d/%d %d/%d")
    partial.replace(path)
    return path

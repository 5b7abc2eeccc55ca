"""UV atlases from xatlas that use the texture square, cached per mesh.

Why the options: left to itself, xatlas estimates texels-per-unit for a 1024 atlas, packs the
bunny's 323 charts into about 350^2 texels and then stretches that to the unit square, so the
padding (given in atlas texels) eats a third of the square (fill 0.44 measured). Setting
texels-per-unit from the surface area and the texture size makes the atlas about the texture's
size, so the padding is the texture's own texels (see scripts/bench_atlas.py for the figures).

The atlas is one page of whatever size the charts need (``resolution = 0``): with a fixed
resolution and that texel density xatlas opens a second page when the charts do not fit, and two
pages' UVs overlap in one texture (a bake then paints one chart over another). The page is scaled
uniformly into the unit square. Brute-force packing (Spot 0.56 -> 0.64 fill, +3.5 s) is on; xatlas's
extra bilinear texel is off because the padding and the bake's dilation already keep charts apart.

Atlases are cached by a SHA-256 of (vertices, faces, options, xatlas version) under the user cache
folder (``RADIANTFORGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/radiantforge``, else
``~/.cache/radiantforge``), as ``.npz`` read with ``allow_pickle=False``: a second job on the same
mesh skips xatlas (tens of seconds for a 69k-face mesh). File names come from the hash only.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

# The share of the square the charts are sized for: packing fills ~70-80 % at best, so sizing for
# more makes xatlas grow the atlas past the texture (and the UVs are then shrunk back into it).
TARGET_FILL = 0.7
# In the cache key: entries made before atlases were kept to one page may overlap, so they are not reused.
ATLAS_FORMAT = "radiantforge-atlas-2"


@dataclass(frozen=True)
class AtlasOptions:
    """resolution: the texture size in texels; padding_px: texels between charts (no bilinear bleed);
    brute_force: xatlas's exhaustive packing (tighter, slower); rotate_charts: let the packer rotate."""

    resolution: int = 1024
    padding_px: int = 2
    brute_force: bool = True
    rotate_charts: bool = True


@dataclass
class UVAtlas:
    """vertex_map: (V',) source vertex of each new vertex; faces: (F, 3) into the new vertices;
    uvs: (V', 2) in [0, 1]; from_cache: whether it was read from the cache."""

    vertex_map: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    from_cache: bool = False


def surface_area(vertices: np.ndarray, faces: np.ndarray) -> float:
    corners = vertices[faces].astype(np.float64)  # (F, 3, 3)
    return float(0.5 * np.linalg.norm(np.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0]),
                                      axis=1).sum())


def uv_fill_ratio(uvs: np.ndarray, faces: np.ndarray) -> float:
    """Sum of the UV triangle areas (unit square = 1)."""
    t = uvs[faces].astype(np.float64)  # (F, 3, 2)
    cross = (t[:, 1, 0] - t[:, 0, 0]) * (t[:, 2, 1] - t[:, 0, 1]) - (t[:, 2, 0] - t[:, 0, 0]) * (t[:, 1, 1] - t[:, 0, 1])
    return float(0.5 * np.abs(cross).sum())


def uv_bounding_box_usage(uvs: np.ndarray) -> float:
    """Area of the UVs' bounding box (unit square = 1)."""
    extent = uvs.max(axis=0) - uvs.min(axis=0)
    return float(extent[0] * extent[1])


def default_cache_dir() -> Path:
    root = os.environ.get("RADIANTFORGE_CACHE_DIR")
    if root:
        return Path(root) / "atlas"
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "radiantforge" / "atlas"


def atlas_key(vertices: np.ndarray, faces: np.ndarray, options: AtlasOptions) -> str:
    import xatlas

    digest = hashlib.sha256()
    digest.update(ATLAS_FORMAT.encode())
    digest.update(np.ascontiguousarray(vertices, dtype=np.float32).tobytes())
    digest.update(np.ascontiguousarray(faces, dtype=np.int64).tobytes())
    digest.update(repr(sorted(asdict(options).items())).encode())
    digest.update(str(getattr(xatlas, "__version__", "?")).encode())
    return digest.hexdigest()


def _run_xatlas(vertices: np.ndarray, faces: np.ndarray, options: AtlasOptions) -> UVAtlas:
    import xatlas  # imported here: only meshes without UVs need it

    pack = xatlas.PackOptions()
    pack.padding = int(options.padding_px)
    pack.bruteForce = bool(options.brute_force)
    pack.rotate_charts = bool(options.rotate_charts)
    pack.bilinear = False
    area = surface_area(vertices, faces)
    if area > 0:
        # One page of whatever size the charts need: with a fixed resolution xatlas opens a second
        # page when the charts do not fit, and the pages' UVs overlap in our single texture.
        pack.resolution = 0
        pack.texels_per_unit = float(options.resolution * np.sqrt(TARGET_FILL / area))
    else:
        pack.resolution = int(options.resolution)
    atlas = xatlas.Atlas()
    atlas.add_mesh(np.ascontiguousarray(vertices, dtype=np.float32), np.ascontiguousarray(faces, dtype=np.uint32))
    atlas.generate(pack_options=pack)
    if atlas.atlas_count != 1:
        raise RuntimeError(f"xatlas made {atlas.atlas_count} atlas pages; one texture needs one")
    vertex_map, new_faces, uvs = atlas[0]
    # xatlas normalises u by the atlas width and v by its height; back to texels, then one uniform
    # scale by the longer side keeps texels square and the whole atlas in the unit square.
    size = np.array([max(atlas.width, 1), max(atlas.height, 1)], dtype=np.float64)
    uvs = (np.asarray(uvs, dtype=np.float64) * size / size.max()).astype(np.float32)
    return UVAtlas(vertex_map.astype(np.int64), new_faces.astype(np.int64), uvs)


def make_uv_atlas(vertices: np.ndarray, faces: np.ndarray, options: AtlasOptions = AtlasOptions(), *,
                  cache_dir: str | os.PathLike | None | bool = None) -> UVAtlas:
    """A UV atlas for (V, 3) ``vertices`` and (F, 3) ``faces``; cache_dir: None for the default cache
    folder, False for no cache, or a folder (chosen by the caller, never by a service client)."""
    vertices = np.asarray(vertices)
    faces = np.asarray(faces)
    path = None
    if cache_dir is not False:
        folder = default_cache_dir() if cache_dir is None else Path(cache_dir)
        path = folder / f"{atlas_key(vertices, faces, options)}.npz"
        if path.is_file():
            try:
                with np.load(path, allow_pickle=False) as stored:
                    atlas = UVAtlas(stored["vertex_map"], stored["faces"], stored["uvs"], from_cache=True)
                if atlas.faces.shape == faces.shape and atlas.vertex_map.max(initial=-1) < len(vertices):
                    return atlas
            except (OSError, KeyError, ValueError):
                pass  # a damaged cache entry is made again
    atlas = _run_xatlas(vertices, faces, options)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
            np.savez(temporary, vertex_map=atlas.vertex_map, faces=atlas.faces, uvs=atlas.uvs)
            os.replace(temporary, path)
        except OSError:
            pass  # a read-only cache only costs time
    return atlas

"""UV atlases from xatlas that use the texture square, cached per mesh.

How an atlas is made (figures from scripts/bench_atlas.py, bunny = 69k faces, Spot = 5.9k):

1. A mesh of more than 10k faces is cut into pieces of about 2500 faces (k-means on the face
   centroids) and xatlas makes the charts of each piece: its chart growing costs more than
   linearly in the faces (the whole bunny: 20 s; its 28 pieces: 3.9 s with packing), and the
   round pieces give charts that pack better (bunny fill 0.55 whole -> 0.66). Spot is charted
   whole (0.65 against 0.61 in three pieces).
2. Texels-per-unit comes from the surface area and the texture size, so the charts are about the
   size they will have in the texture and the padding is the texture's own texels (left to
   itself xatlas sized the bunny for ~350^2 texels and its padding ate a third of the square).
   xatlas packs them (brute force) on one page of whatever size they need (``resolution = 0``):
   with a fixed resolution it opens a second page when the charts do not fit, and two pages' UVs
   overlap in one texture. Re-packing the finished charts into a fixed square at a larger scale
   was tried and never beat this layout with brute force on.
3. The page is scaled into the unit square axis by axis. xatlas's greedy packer fills its page
   steadily (bunny: 0.66-0.68 over four k-means seeds) but ends it 5-13 % longer one way than the
   other, and which way and by how much is chaotic; a uniform scale left that strip of the square
   empty (bunny 0.60-0.63). Stretching the short side makes texels up to that much taller than
   wide (at most MAX_TEXEL_ASPECT; ``UVAtlas.texel_aspect`` says how much): the texture carries
   more texels of the surface in that direction and never fewer in the other, and the gaps
   between charts only widen.

Padding is 1 texel by default: xatlas keeps charts about two texels apart at that setting, so
bilinear filtering reads no more texels from two charts than at 2 px (bunny: 4 of 751k at 1 px,
4 of 741k at 2 px; 1855 at 0 px), while 1 px fills more of the square (bunny 0.655 -> 0.664,
Spot 0.651 -> 0.658).
Mip levels past the first can mix neighbouring charts, as in any tight atlas.

Atlases are cached by a SHA-256 of (vertices, faces, options, xatlas version) under the user cache
folder (``RADIANTFORGE_CACHE_DIR``, else ``$XDG_CACHE_HOME/radiantforge``, else
``~/.cache/radiantforge``), as ``.npz`` read with ``allow_pickle=False``: a second job on the same
mesh skips xatlas. File names come from the hash only.
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
# xatlas makes the charts of at most this many faces at a time (see _run_xatlas). Chosen on the
# mean over k-means seeds 0-3 of the bunny's fill (the packing is chaotic, one seed says little):
# 1000: 0.63 (square scale), 2000: 0.659, 2500: 0.669, 3000: 0.665, 4000: 0.666 (5.3 s).
FACES_PER_PIECE = 2500
# Meshes up to this size are charted whole: xatlas takes a few seconds on them (Spot: 5.9k faces,
# 3.7 s, fill 0.651 whole against 0.61 in three pieces, both scaled uniformly).
WHOLE_MESH_FACES = 10_000
KMEANS_SEED = 0
KMEANS_SAMPLE = 50_000
KMEANS_ITERATIONS = 10
KMEANS_CHUNK = 20_000
# In the cache key: entries of older formats (two overlapping pages; charts of the whole mesh) are not reused.
ATLAS_FORMAT = "radiantforge-atlas-4"
# The most the page's short side is stretched to fill the square (step 3 of the module docstring);
# a page longer than this one way keeps the rest of the strip empty rather than texels this uneven.
MAX_TEXEL_ASPECT = 1.25


@dataclass(frozen=True)
class AtlasOptions:
    """resolution: the texture size in texels; padding_px: texels between charts (no bilinear bleed);
    brute_force: xatlas's exhaustive packing (tighter, slower); rotate_charts: let the packer rotate."""

    resolution: int = 1024
    padding_px: int = 1
    brute_force: bool = True
    rotate_charts: bool = True


@dataclass
class UVAtlas:
    """vertex_map: (V',) source vertex of each new vertex; faces: (F, 3) into the new vertices;
    uvs: (V', 2) in [0, 1]; texel_aspect: how much taller than wide (or wider than tall) a texel
    is on the surface, >= 1; from_cache: whether it was read from the cache."""

    vertex_map: np.ndarray
    faces: np.ndarray
    uvs: np.ndarray
    texel_aspect: float = 1.0
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


def split_into_pieces(vertices: np.ndarray, faces: np.ndarray, max_faces: int) -> list[np.ndarray]:
    """Face indices of ``ceil(F / max_faces)`` spatially compact pieces (one piece for a mesh of at
    most WHOLE_MESH_FACES): k-means (Lloyd, fixed seed) on the face centroids, whose cells are
    rounder than axis-aligned cuts (at 2 px padding the bunny filled 0.61 in k-means pieces, 0.56
    in median cuts). Pieces are returned in centre order; a piece left empty is dropped."""
    count = -(-len(faces) // max(1, int(max_faces)))
    if count <= 1 or len(faces) <= WHOLE_MESH_FACES:
        return [np.arange(len(faces))]
    centroids = vertices[faces].astype(np.float64).mean(axis=1)  # (F, 3)
    rng = np.random.default_rng(KMEANS_SEED)
    # the centres are fitted on a sample (a 1M-face mesh needs no more), then every face is assigned
    sample = centroids[rng.choice(len(faces), min(len(faces), KMEANS_SAMPLE), replace=False)]
    centres = sample[rng.choice(len(sample), count, replace=False)]

    def nearest(points: np.ndarray) -> np.ndarray:
        labels = np.empty(len(points), dtype=np.int64)
        for start in range(0, len(points), KMEANS_CHUNK):  # (chunk, count) distances at a time
            chunk = points[start:start + KMEANS_CHUNK]
            # |p - c|^2 without the |p|^2 term, which is the same for every centre
            distance = (centres ** 2).sum(axis=1)[None, :] - 2.0 * chunk @ centres.T
            labels[start:start + KMEANS_CHUNK] = distance.argmin(axis=1)
        return labels

    for _ in range(KMEANS_ITERATIONS):
        labels = nearest(sample)
        sums = np.zeros_like(centres)
        np.add.at(sums, labels, sample)
        sizes = np.bincount(labels, minlength=count)
        moved = sizes > 0  # a centre with no members stays where it is
        centres[moved] = sums[moved] / sizes[moved, None]
    labels = nearest(centroids)
    return [piece for piece in (np.nonzero(labels == index)[0] for index in range(count)) if len(piece)]


def _pack_options(options: AtlasOptions, *, texels_per_unit: float, resolution: int, brute_force: bool):
    import xatlas

    pack = xatlas.PackOptions()
    pack.padding = int(options.padding_px)
    pack.bruteForce = bool(brute_force)
    pack.rotate_charts = bool(options.rotate_charts)
    pack.bilinear = False
    pack.resolution = int(resolution)
    pack.texels_per_unit = float(texels_per_unit)
    return pack


def _run_xatlas(vertices: np.ndarray, faces: np.ndarray, options: AtlasOptions) -> UVAtlas:
    import xatlas  # imported here: only meshes without UVs need it

    vertices = np.asarray(vertices, dtype=np.float32)
    faces = np.asarray(faces, dtype=np.int64)
    area = surface_area(vertices, faces)
    # Charts per piece (step 1 of the module docstring).
    pieces = split_into_pieces(vertices, faces, FACES_PER_PIECE)
    atlas = xatlas.Atlas()
    piece_vertices = []
    for piece in pieces:
        used, local_faces = np.unique(faces[piece], return_inverse=True)
        atlas.add_mesh(vertices[used], local_faces.reshape(-1, 3).astype(np.uint32))
        piece_vertices.append(used)
    if area > 0:
        # One page of whatever size the charts need, at about the texture's texel density.
        pack = _pack_options(options, texels_per_unit=options.resolution * np.sqrt(TARGET_FILL / area),
                             resolution=0, brute_force=options.brute_force)
    else:
        pack = _pack_options(options, texels_per_unit=0.0, resolution=options.resolution, brute_force=False)
    atlas.generate(pack_options=pack)
    # All pieces' charts as one UV mesh in the original face order, UVs in texels.
    size = np.array([max(atlas.width, 1), max(atlas.height, 1)], dtype=np.float64)
    vertex_maps, piece_uv_lists = [], []
    new_faces = np.empty_like(faces)
    offset = 0
    for index, (piece, used) in enumerate(zip(pieces, piece_vertices)):
        piece_map, piece_faces, piece_uvs = atlas[index]
        new_faces[piece] = piece_faces.astype(np.int64) + offset
        offset += len(piece_map)
        vertex_maps.append(used[piece_map.astype(np.int64)])
        piece_uv_lists.append(np.asarray(piece_uvs, dtype=np.float64) * size)
    vertex_map = np.concatenate(vertex_maps)
    uvs = np.concatenate(piece_uv_lists)
    if atlas.atlas_count != 1:
        raise RuntimeError(f"xatlas made {atlas.atlas_count} atlas pages; one texture needs one")
    # each side into [0, 1], the short one stretched by at most MAX_TEXEL_ASPECT (step 3)
    scale_to_square = np.maximum(size, size.max() / MAX_TEXEL_ASPECT)
    texel_aspect = float(scale_to_square.max() / scale_to_square.min())
    return UVAtlas(vertex_map, new_faces, (uvs / scale_to_square).astype(np.float32), texel_aspect)


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
                    atlas = UVAtlas(stored["vertex_map"], stored["faces"], stored["uvs"],
                                    float(stored["texel_aspect"]), from_cache=True)
                if atlas.faces.shape == faces.shape and atlas.vertex_map.max(initial=-1) < len(vertices):
                    return atlas
            except (OSError, KeyError, ValueError):
                pass  # a damaged cache entry is made again
    atlas = _run_xatlas(vertices, faces, options)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temporary = path.with_name(f".{path.stem}.{os.getpid()}.tmp.npz")
            np.savez(temporary, vertex_map=atlas.vertex_map, faces=atlas.faces, uvs=atlas.uvs,
                     texel_aspect=np.float64(atlas.texel_aspect))
            os.replace(temporary, path)
        except OSError:
            pass  # a read-only cache only costs time
    return atlas

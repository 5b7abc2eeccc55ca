"""UV atlas fill and xatlas wall time for Spot and the bunny (../shared/assets), per option set.

    python scripts/bench_atlas.py [--meshes spot,bunny] [--resolution 1024] [--compare]

Fill = sum of UV triangle areas in the unit square; bbox = area of the UVs' bounding box.
Runs without the cache (each figure is a fresh xatlas run), then once more with a cache to time a hit.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from radiantforge.mesh import load_mesh
from radiantforge.mesh.atlas import AtlasOptions, make_uv_atlas, uv_bounding_box_usage, uv_fill_ratio

ASSETS = Path(__file__).resolve().parents[1] / ".." / "shared" / "assets"
MESHES = {"spot": (ASSETS / "spot" / "spot_triangulated.obj", "auto"), "bunny": (ASSETS / "bunny" / "bun_zipper.ply", "Y")}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--meshes", default="spot,bunny")
    parser.add_argument("--resolution", type=int, default=1024)
    parser.add_argument("--compare", action="store_true",
                        help="also measure 2-texel padding and the fast packer")
    args = parser.parse_args()
    option_sets = [AtlasOptions(resolution=args.resolution)]
    if args.compare:
        option_sets += [AtlasOptions(resolution=args.resolution, padding_px=2),
                        AtlasOptions(resolution=args.resolution, brute_force=False)]
    for name in args.meshes.split(","):
        path, up_axis = MESHES[name]
        mesh = load_mesh(path, up_axis=up_axis)
        vertices, faces = mesh.vertices.numpy(), mesh.faces.numpy()
        for options in option_sets:
            with tempfile.TemporaryDirectory() as cache:
                start = time.perf_counter()
                atlas = make_uv_atlas(vertices, faces, options, cache_dir=cache)
                fresh_s = time.perf_counter() - start
                start = time.perf_counter()
                again = make_uv_atlas(vertices, faces, options, cache_dir=cache)
                hit_s = time.perf_counter() - start
            print(f"{name:6s} faces={len(faces):6d} {options}: fill={uv_fill_ratio(atlas.uvs, atlas.faces):.3f} "
                  f"bbox={uv_bounding_box_usage(atlas.uvs):.3f} texel_aspect={atlas.texel_aspect:.3f} xatlas={fresh_s:.2f}s cache_hit={hit_s:.3f}s "
                  f"(hit={again.from_cache})", flush=True)


if __name__ == "__main__":
    main()

"""UV atlas: fill of the unit square on Spot (a known mesh), valid UVs, and the per-mesh cache."""

import time
from pathlib import Path

import numpy as np
import pytest

from radiantforge.mesh import load_mesh
from radiantforge.mesh.atlas import AtlasOptions, make_uv_atlas, uv_fill_ratio

SPOT = Path(__file__).resolve().parents[1] / ".." / "shared" / "assets" / "spot" / "spot_triangulated.obj"
# Measured 0.70 (scripts/bench_atlas.py); xatlas's own texel estimate gave 0.61 on Spot, 0.44 on the bunny.
FILL_FLOOR = 0.65

pytestmark = pytest.mark.skipif(not SPOT.is_file(), reason="needs ../shared/assets/spot")


@pytest.fixture(scope="module")
def spot_geometry():
    mesh = load_mesh(SPOT)
    return mesh.vertices.numpy(), mesh.faces.numpy()


def test_spot_atlas_fills_the_square_with_valid_uvs(spot_geometry, tmp_path):
    vertices, faces = spot_geometry
    atlas = make_uv_atlas(vertices, faces, AtlasOptions(resolution=1024), cache_dir=False)
    assert atlas.faces.shape == faces.shape
    assert uv_fill_ratio(atlas.uvs, atlas.faces) >= FILL_FLOOR
    assert atlas.uvs.min() >= 0.0 and atlas.uvs.max() <= 1.0
    # every new vertex is a copy of a source vertex, and each face keeps its corners' positions
    np.testing.assert_array_equal(vertices[atlas.vertex_map][atlas.faces], vertices[faces])


def test_cache_hit_returns_the_identical_atlas_faster(spot_geometry, tmp_path):
    vertices, faces = spot_geometry
    options = AtlasOptions(resolution=512)
    start = time.perf_counter()
    first = make_uv_atlas(vertices, faces, options, cache_dir=tmp_path)
    fresh_s = time.perf_counter() - start
    start = time.perf_counter()
    second = make_uv_atlas(vertices, faces, options, cache_dir=tmp_path)
    hit_s = time.perf_counter() - start
    assert not first.from_cache and second.from_cache
    assert hit_s < fresh_s
    for name in ("vertex_map", "faces", "uvs"):
        np.testing.assert_array_equal(getattr(first, name), getattr(second, name))
    # other options or another mesh are other entries
    assert not make_uv_atlas(vertices, faces, AtlasOptions(resolution=256), cache_dir=tmp_path).from_cache
    assert len(list(tmp_path.glob("*.npz"))) == 2

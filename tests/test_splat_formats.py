"""SPZ, .splat and glTF (KHR_gaussian_splatting): round trips within each format's quantisation, files
written by the reference implementations (tests/data/SOURCES.md), bad files, and `radiantforge convert`.

Source data: train-1000.ply (1,000 Gaussians, SH degree 3, written by another tool; shared assets).
"""

from __future__ import annotations

import base64
import gzip
import json
import struct
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pytest

from blender_helpers import splat_asset
from radiantforge_addon.io import splat_formats as sf
from radiantforge_addon.io.ply import read_ply

DATA = Path(__file__).resolve().parent / "data"
U8_STEP = 1.0 / 255.0


@pytest.fixture(scope="module")
def train_splats() -> sf.SplatArrays:
    return sf.from_ply_columns(read_ply(splat_asset("train-1000.ply")).elements["vertex"])


def _same_rotation_error(a: np.ndarray, b: np.ndarray) -> float:
    """Largest 1 - |<qa, qb>| over splats (q and -q are the same rotation)."""
    a = a / np.linalg.norm(a, axis=1, keepdims=True)
    b = b / np.linalg.norm(b, axis=1, keepdims=True)
    return float((1.0 - np.abs((a * b).sum(1))).max())


def _opacity(splats):
    return 1.0 / (1.0 + np.exp(-splats.opacity_logits.astype(np.float64)))


def _assert_spz_quantisation(decoded: sf.SplatArrays, source: sf.SplatArrays) -> None:
    """Both in the same axes; tolerances are the SPZ quantisation steps (half a step after rounding)."""
    assert np.abs(decoded.means - source.means).max() <= 0.5 / 4096 + 1e-5  # 12 fractional bits
    assert np.abs(decoded.log_scales - np.clip(source.log_scales, -10, 255 / 16 - 10)).max() <= 0.5 / 16 + 1e-5
    assert np.abs(_opacity(decoded) - _opacity(source)).max() <= 0.5 * U8_STEP + 1e-3  # alpha in (0, 1), u8
    colour_step = 1.0 / (0.15 * 255)
    assert np.abs(decoded.sh0 - np.clip(source.sh0, -127.5 * colour_step, 127.5 * colour_step)).max() <= 0.5 * colour_step + 1e-5
    assert _same_rotation_error(decoded.quats, source.quats) < 2e-5  # smallest three, 9 bits each
    degree1, rest = decoded.shN[:, :3] - source.shN[:, :3], decoded.shN[:, 3:] - source.shN[:, 3:]
    assert np.abs(degree1).max() <= (4 + 0.5) / 128 + 1e-5  # 5 bits: buckets of 8 steps of 1/128
    assert np.abs(rest).max() <= (8 + 0.5) / 128 + 1e-5  # 4 bits: buckets of 16


def test_spz_round_trip(tmp_path, train_splats):
    assert np.abs(train_splats.shN).max() < 1.0  # inside SPZ's SH range: no clipping in this comparison
    path = tmp_path / "train.spz"
    sf.write_spz(path, train_splats)
    raw = gzip.decompress(path.read_bytes())
    assert struct.unpack_from("<IIIBBBB", raw)[:5] == (sf.SPZ_MAGIC, 3, 1000, 3, 12)
    decoded = sf.read_spz(path)
    assert decoded.sh_degree == 3 and len(decoded) == 1000
    # Compare in the file's own (Y-up) axes, where the quantisation happened.
    _assert_spz_quantisation(sf.transform_splats(decoded, sf.Y_UP_FROM_BLENDER),
                             sf.transform_splats(train_splats, sf.Y_UP_FROM_BLENDER))
    # In Blender axes the positions are back within the same step.
    assert np.abs(decoded.means - train_splats.means).max() <= 0.5 / 4096 + 1e-5


def test_spz_written_by_niantic_ply_to_spz(train_splats):
    # ply_to_spz stores the PLY's axes unchanged, so the file's axes are the PLY's: compare there.
    decoded = sf.read_spz(DATA / "train-1000.ply_to_spz.spz")
    assert len(decoded) == 1000 and decoded.sh_degree == 3
    _assert_spz_quantisation(sf.transform_splats(decoded, sf.Y_UP_FROM_BLENDER), train_splats)


def test_spz_version_4_zstd_written_by_niantic(monkeypatch):
    """The current reference writes version 4 (zstd streams): the same splats as its gzip file."""
    v4 = DATA / "train-1000.ply_to_spz.v4.spz"
    monkeypatch.setitem(sys.modules, "zstandard", None)  # a Python without the zstandard module
    _expect_error(v4, "SPZ version 4 is zstd-compressed", "zstandard")
    monkeypatch.undo()
    pytest.importorskip("zstandard")
    from_v4, from_gzip = sf.read_spz(v4), sf.read_spz(DATA / "train-1000.ply_to_spz.spz")
    for field in ("means", "log_scales", "quats", "opacity_logits", "sh0", "shN"):
        np.testing.assert_array_equal(getattr(from_v4, field), getattr(from_gzip, field))


def test_splat_round_trip(tmp_path, train_splats):
    path = tmp_path / "train.splat"
    sf.write_splat(path, train_splats)
    assert path.stat().st_size == 32 * 1000
    decoded = sf.read_splat(path)
    assert decoded.sh_degree == 0
    np.testing.assert_array_equal(decoded.means, train_splats.means)  # float32 kept
    assert np.abs(decoded.log_scales - train_splats.log_scales).max() < 1e-5  # linear float32
    colour = np.clip(0.5 + sf.SH_C0 * train_splats.sh0, 0, 1)
    assert np.abs(0.5 + sf.SH_C0 * decoded.sh0 - colour).max() <= 0.5 * U8_STEP + 1e-6
    assert np.abs(_opacity(decoded) - _opacity(train_splats)).max() <= 0.5 * U8_STEP + 1e-6
    assert _same_rotation_error(decoded.quats, train_splats.quats) < 2e-4  # 8 bits a component


def test_splat_written_by_antimatter15_convert_py(train_splats):
    decoded = sf.read_splat(DATA / "train-1000.convert_py.splat")
    # convert.py sorts by size x opacity: match records by their (exact float32) positions.
    order_decoded = np.lexsort(decoded.means.T)
    order_source = np.lexsort(train_splats.means.T)
    decoded, source = decoded.subset(order_decoded), train_splats.subset(order_source)
    np.testing.assert_array_equal(decoded.means, source.means)
    assert np.abs(decoded.log_scales - source.log_scales).max() < 1e-5
    colour = np.clip(0.5 + sf.SH_C0 * source.sh0, 0, 1)
    # convert.py truncates to u8 (astype), so up to one whole step below.
    assert np.abs(0.5 + sf.SH_C0 * decoded.sh0 - colour).max() <= U8_STEP + 1e-6
    assert np.abs(_opacity(decoded) - _opacity(source)).max() <= U8_STEP + 1e-6
    assert _same_rotation_error(decoded.quats, source.quats) < 5e-4


@pytest.mark.parametrize("suffix", [".glb", ".gltf"])
def test_gltf_round_trip_is_exact(tmp_path, train_splats, suffix):
    path = tmp_path / f"train{suffix}"
    sf.write_gltf(path, train_splats)
    decoded = sf.read_gltf(path)
    np.testing.assert_allclose(decoded.means, train_splats.means, atol=2e-6)  # the node's -90° X turn, undone
    np.testing.assert_allclose(decoded.log_scales, train_splats.log_scales, atol=1e-5)
    np.testing.assert_allclose(decoded.sh0, train_splats.sh0, atol=1e-6)
    np.testing.assert_allclose(decoded.shN, train_splats.shN, atol=1e-5)
    np.testing.assert_allclose(_opacity(decoded), _opacity(train_splats), atol=1e-6)
    assert _same_rotation_error(decoded.quats, train_splats.quats) < 1e-6
    document = json.loads(path.read_bytes()[20:20 + struct.unpack_from("<I", path.read_bytes(), 12)[0]]
                          if suffix == ".glb" else path.read_text())
    primitive = document["meshes"][0]["primitives"][0]
    assert primitive["mode"] == 0 and primitive["extensions"]["KHR_gaussian_splatting"]["kernel"] == "ellipse"
    assert "KHR_gaussian_splatting:SH_DEGREE_3_COEF_6" in primitive["attributes"]
    assert document["extensionsUsed"] == ["KHR_gaussian_splatting"]


def test_gltf_from_the_spec_with_quantised_accessors_and_node_transforms(tmp_path, train_splats):
    """A .gltf + .bin assembled from the extension's text, with what our writer never writes:
    normalized i16 rotations, u8 opacities, interleaved position/scale, a parent node that moves
    and scales, glTF Y-up data. Expected values computed independently here."""
    n = 4
    rng = np.random.default_rng(3)
    positions = rng.normal(size=(n, 3)).astype("<f4")
    scales = rng.uniform(0.01, 0.2, size=(n, 3)).astype("<f4")
    quats_xyzw = rng.normal(size=(n, 4))
    quats_xyzw /= np.linalg.norm(quats_xyzw, axis=1, keepdims=True)
    rotations = np.round(quats_xyzw * 32767).astype("<i2")
    opacity = np.array([0, 64, 200, 255], "u1")
    sh0 = rng.normal(size=(n, 3)).astype("<f4")
    interleaved = np.concatenate([positions, scales], axis=1).astype("<f4")  # stride 24
    blob = interleaved.tobytes() + rotations.tobytes() + opacity.tobytes() + b"\0" * 4 + sh0.tobytes()
    (tmp_path / "splats.bin").write_bytes(blob)
    o_rot, o_opa = interleaved.nbytes, interleaved.nbytes + rotations.nbytes
    o_sh0 = o_opa + 8
    document = {
        "asset": {"version": "2.0"}, "extensionsUsed": ["KHR_gaussian_splatting"], "scene": 0,
        "scenes": [{"nodes": [0]}],
        "nodes": [{"translation": [1, 2, 3], "scale": [2, 2, 2], "children": [1]}, {"mesh": 0}],
        "buffers": [{"uri": "splats.bin", "byteLength": len(blob)}],
        "bufferViews": [{"buffer": 0, "byteOffset": 0, "byteLength": interleaved.nbytes, "byteStride": 24},
                        {"buffer": 0, "byteOffset": o_rot, "byteLength": rotations.nbytes},
                        {"buffer": 0, "byteOffset": o_opa, "byteLength": n},
                        {"buffer": 0, "byteOffset": o_sh0, "byteLength": sh0.nbytes}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": n, "type": "VEC3"},
                      {"bufferView": 0, "byteOffset": 12, "componentType": 5126, "count": n, "type": "VEC3"},
                      {"bufferView": 1, "componentType": 5122, "normalized": True, "count": n, "type": "VEC4"},
                      {"bufferView": 2, "componentType": 5121, "normalized": True, "count": n, "type": "SCALAR"},
                      {"bufferView": 3, "componentType": 5126, "count": n, "type": "VEC3"}],
        "meshes": [{"primitives": [{"mode": 0, "attributes": {
            "POSITION": 0, "KHR_gaussian_splatting:SCALE": 1, "KHR_gaussian_splatting:ROTATION": 2,
            "KHR_gaussian_splatting:OPACITY": 3, "KHR_gaussian_splatting:SH_DEGREE_0_COEF_0": 4},
            "extensions": {"KHR_gaussian_splatting": {"kernel": "ellipse", "colorSpace": "srgb_rec709_display"}}}]}],
    }
    path = tmp_path / "spec.gltf"
    path.write_text(json.dumps(document))
    decoded = sf.read_gltf(path)
    world_gltf = positions * 2 + np.array([1, 2, 3])
    expected_blender = np.stack([world_gltf[:, 0], -world_gltf[:, 2], world_gltf[:, 1]], axis=1)  # Y up -> Z up
    np.testing.assert_allclose(decoded.means, expected_blender, atol=1e-5)
    np.testing.assert_allclose(np.exp(decoded.log_scales), scales * 2, rtol=1e-5)
    np.testing.assert_allclose(decoded.sh0, sh0)
    opacity_read = _opacity(decoded)
    np.testing.assert_allclose(opacity_read[1:3], opacity[1:3] / 255.0, atol=1e-6)
    assert opacity_read[0] < 1e-5 and opacity_read[3] > 1 - 1e-5
    # Rotation: the splat's axes are the glTF quaternion's, then turned +90° about X into Blender.
    def matrix(w, x, y, z):
        return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - z * w), 2 * (x * z + y * w)],
                         [2 * (x * y + z * w), 1 - 2 * (x * x + z * z), 2 * (y * z - x * w)],
                         [2 * (x * z - y * w), 2 * (y * z + x * w), 1 - 2 * (x * x + y * y)]])
    turn = sf.BLENDER_FROM_Y_UP[:3, :3]
    for i in range(n):
        q = np.maximum(rotations[i] / 32767.0, -1.0)
        expected = turn @ matrix(q[3], *q[:3]) / np.linalg.norm(q) ** 2
        got = matrix(*(decoded.quats[i] / np.linalg.norm(decoded.quats[i])))
        np.testing.assert_allclose(got, expected, atol=1e-4)


def test_sh_rotation_keeps_view_dependent_colour(train_splats):
    """A rotated splat seen along the rotated direction has the colour it had before (degree 1-3)."""
    rotation = np.array([[0.36, 0.48, -0.8], [-0.8, 0.6, 0], [0.48, 0.64, 0.6]])
    transform = np.eye(4)
    transform[:3, :3] = rotation * 1.5
    turned = sf.transform_splats(train_splats, transform)
    directions = np.random.default_rng(1).normal(size=(16, 3))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    before = np.einsum("mk,nkc->nmc", sf._sh_basis(directions, 3), train_splats.shN)
    after = np.einsum("mk,nkc->nmc", sf._sh_basis(directions @ rotation.T, 3), turned.shN)
    np.testing.assert_allclose(after, before, atol=1e-5)
    np.testing.assert_allclose(turned.means, train_splats.means @ rotation.T * 1.5, atol=1e-4)


def _expect_error(path, *fragments):
    with pytest.raises(sf.SplatFormatError) as caught:
        sf.read_splats(path)
    message = str(caught.value)
    assert str(path) in message, message
    for fragment in fragments:
        assert fragment in message, message


def test_bad_files_say_what_was_expected(tmp_path, train_splats):
    truncated = tmp_path / "cut.splat"
    truncated.write_bytes(sf.splat_bytes(train_splats)[:1000])
    _expect_error(truncated, "32-byte records", "truncated")

    bad_magic = tmp_path / "magic.spz"
    bad_magic.write_bytes(gzip.compress(struct.pack("<IIIBBBB", 0x12345678, 3, 1, 0, 12, 0, 0) + b"\0" * 20))
    _expect_error(bad_magic, "bad SPZ magic", "NGSP")
    bad_version = tmp_path / "version.spz"
    bad_version.write_bytes(gzip.compress(struct.pack("<IIIBBBB", sf.SPZ_MAGIC, 9, 1, 0, 12, 0, 0) + b"\0" * 20))
    _expect_error(bad_version, "SPZ version 9")
    not_spz = tmp_path / "text.spz"
    not_spz.write_bytes(b"hello world")
    _expect_error(not_spz, "not an SPZ file")

    # A header that claims 2^31 points in a tiny file: rejected before any allocation.
    hostile = tmp_path / "hostile.spz"
    hostile.write_bytes(gzip.compress(struct.pack("<IIIBBBB", sf.SPZ_MAGIC, 3, 2 ** 31, 3, 12, 0, 0)))
    _expect_error(hostile, "claims 2147483648 points")
    # A gzip bomb (64 MiB of zeros after a one-point header) is inflated only as far as the header claims.
    bomb = tmp_path / "bomb.spz"
    bomb.write_bytes(gzip.compress(struct.pack("<IIIBBBB", sf.SPZ_MAGIC, 3, 1, 0, 12, 0, 0) + b"\0" * (64 << 20)))
    tracemalloc.start()
    assert len(sf.read_spz(bomb)) == 1
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert peak < 4 << 20, peak
    cut = tmp_path / "cut.spz"
    cut.write_bytes(sf.spz_bytes(train_splats)[:8000])
    _expect_error(cut, "SPZ data truncated: 1000 points of SH degree 3")

    plain = tmp_path / "mesh.gltf"
    plain.write_text(json.dumps({"asset": {"version": "2.0"}, "scenes": [{"nodes": [0]}],
                                 "nodes": [{"mesh": 0}], "meshes": [{"primitives": [{"attributes": {"POSITION": 0}}]}]}))
    _expect_error(plain, "no mesh primitive with the KHR_gaussian_splatting extension")
    compressed = tmp_path / "compressed.gltf"
    compressed.write_text(json.dumps({"asset": {"version": "2.0"},
                                      "extensionsRequired": ["KHR_gaussian_splatting_compression_spz_2"]}))
    _expect_error(compressed, "KHR_gaussian_splatting_compression_spz_2")
    escaping = tmp_path / "escape.gltf"
    sf.write_gltf(escaping, train_splats.subset(np.arange(2)))
    document = json.loads(escaping.read_text())
    document["buffers"][0]["uri"] = "../outside.bin"
    escaping.write_text(json.dumps(document))
    _expect_error(escaping, "expected a file name beside the .gltf")
    short_glb = tmp_path / "short.glb"
    sf.write_gltf(short_glb, train_splats)
    short_glb.write_bytes(short_glb.read_bytes()[:5000])
    _expect_error(short_glb, "GLB truncated")
    data_uri = base64.b64encode(b"\0" * 8).decode()
    overrun = tmp_path / "overrun.gltf"
    overrun.write_text(json.dumps({
        "asset": {"version": "2.0"}, "scenes": [{"nodes": [0]}], "nodes": [{"mesh": 0}],
        "buffers": [{"uri": "data:application/octet-stream;base64," + data_uri, "byteLength": 8}],
        "bufferViews": [{"buffer": 0, "byteLength": 8}],
        "accessors": [{"bufferView": 0, "componentType": 5126, "count": 10 ** 9, "type": "VEC3"}] * 5,
        "meshes": [{"primitives": [{"mode": 0, "attributes": {
            "POSITION": 0, "KHR_gaussian_splatting:SCALE": 1, "KHR_gaussian_splatting:ROTATION": 2,
            "KHR_gaussian_splatting:OPACITY": 3, "KHR_gaussian_splatting:SH_DEGREE_0_COEF_0": 4},
            "extensions": {"KHR_gaussian_splatting": {"kernel": "ellipse"}}}]}]}))
    _expect_error(overrun, "run past its buffer view")
    wrong_shape = json.loads(overrun.read_text())
    wrong_shape["accessors"][0]["bufferView"] = 7
    overrun.write_text(json.dumps(wrong_shape))
    _expect_error(overrun, "malformed glTF")


def test_cli_convert_every_format_back_to_ply(tmp_path, capsys):
    """`radiantforge convert` PLY -> each format -> PLY; the final PLY opens with the backend's reader."""
    from radiantforge.cli import main
    from radiantforge.gaussians.ply import load_gaussian_ply

    source = splat_asset("train-1000.ply")
    original = load_gaussian_ply(source)
    for suffix in (".glb", ".spz", ".splat"):
        converted, back = tmp_path / f"train{suffix}", tmp_path / f"back{suffix}.ply"
        assert main(["convert", str(source), str(converted)]) == 0
        assert main(["convert", str(converted), str(back)]) == 0
        splats = load_gaussian_ply(back)
        assert len(splats) == 1000 and splats.sh_degree == (0 if suffix == ".splat" else 3)
        tolerance = {".glb": 2e-6, ".spz": 0.5 / 4096 + 1e-5, ".splat": 0.0}[suffix]
        assert float((splats.means - original.means).abs().max()) <= tolerance
    assert "SH degree 3 dropped to 0" in capsys.readouterr().out
    assert main(["convert", str(tmp_path / "train.splat"), str(tmp_path / "x.obj")]) != 0
    assert "unknown splat format '.obj'" in capsys.readouterr().err


def test_glb_opens_in_trimesh_as_the_fallback_point_cloud(tmp_path, train_splats):
    """An independent glTF reader (trimesh) sees the spec's fallback: a point cloud, placed by the node's
    Z-up -> Y-up turn, with the COLOR_0 alpha as the splats' opacity."""
    trimesh = pytest.importorskip("trimesh")
    path = tmp_path / "train.glb"
    sf.write_gltf(path, train_splats)
    cloud = trimesh.load(path, force="scene").to_geometry()
    assert isinstance(cloud, trimesh.PointCloud) and len(cloud.vertices) == 1000
    np.testing.assert_allclose(cloud.vertices, train_splats.means @ sf.Y_UP_FROM_BLENDER[:3, :3].T, atol=1e-6)
    alpha = np.asarray(cloud.colors)[:, 3] / 255.0
    assert np.abs(alpha - _opacity(train_splats)).max() <= U8_STEP

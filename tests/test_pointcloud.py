"""Point-cloud PLY reading and writing, checked against plyfile (an independent reader/writer)
and against a real ASCII mesh PLY written by another tool (the Stanford bunny)."""


import numpy as np
import plyfile
import pytest
import torch

from radiantforge.data.pointcloud import DEFAULT_POINT_GREY, read_ply_vertices, read_points_ply, write_points_ply
from radiantforge.errors import InputError

from blender_helpers import SHARED_ASSETS

BUNNY = SHARED_ASSETS / "bunny" / "bun_zipper.ply"
BUNNY_VERTICES = 35947


def random_cloud(n=257, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, generator=g) * 3.0, torch.rand(n, 3, generator=g)


def test_write_then_read_round_trip(tmp_path):
    xyz, rgb = random_cloud()
    path = tmp_path / "points3d.ply"
    write_points_ply(path, xyz, rgb)
    cloud = read_points_ply(path)
    assert torch.equal(cloud.xyz, xyz)  # float32 on disk: exact
    # Colours are stored as 256 levels: within half a level, and exactly the rounded level.
    assert (cloud.rgb - rgb).abs().max() <= 0.5 / 255 + 1e-7
    assert torch.equal(torch.round(cloud.rgb * 255), torch.round(rgb * 255))
    assert cloud.notes == []
    assert not list(tmp_path.glob(".*tmp")), "temporary file left behind"


def test_written_file_as_plyfile_reads_it(tmp_path):
    xyz, rgb = random_cloud(50, seed=1)
    path = tmp_path / "cloud.ply"
    write_points_ply(path, xyz.numpy(), rgb.numpy())
    ply = plyfile.PlyData.read(str(path))
    assert ply.text is False and ply.byte_order == "<"
    assert [e.name for e in ply.elements] == ["vertex"]  # no faces
    vertex = ply["vertex"]
    assert [(p.name, p.val_dtype) for p in vertex.properties] == [
        ("x", "f4"), ("y", "f4"), ("z", "f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1"),
    ]  # fmt: skip
    np.testing.assert_array_equal(np.stack([vertex["x"], vertex["y"], vertex["z"]], -1), xyz.numpy())
    expected_levels = np.round(rgb.numpy().astype(np.float64) * 255).astype(np.uint8)
    np.testing.assert_array_equal(np.stack([vertex["red"], vertex["green"], vertex["blue"]], -1), expected_levels)


def test_real_ascii_mesh_ply_without_colours_reads_grey_with_note():
    cloud = read_points_ply(BUNNY)
    assert len(cloud) == BUNNY_VERTICES
    reference = plyfile.PlyData.read(str(BUNNY))["vertex"]
    expected = np.stack([reference["x"], reference["y"], reference["z"]], -1)
    np.testing.assert_array_equal(cloud.xyz.numpy(), expected)
    assert torch.all(cloud.rgb == DEFAULT_POINT_GREY)
    assert len(cloud.notes) == 1 and "no vertex colours" in cloud.notes[0] and "bun_zipper.ply" in cloud.notes[0]
    # The other scalar vertex properties come through too, typed as declared.
    columns, header = read_ply_vertices(BUNNY)
    assert list(columns) == ["x", "y", "z", "confidence", "intensity"]
    assert header.format == "ascii" and [e.name for e in header.elements] == ["vertex", "face"]
    np.testing.assert_array_equal(columns["confidence"], reference["confidence"])


def test_big_endian_double_xyz_with_faces_before_vertices(tmp_path):
    """Written by plyfile: big-endian, double positions, ushort colours, a face element first."""
    n = 40
    g = np.random.default_rng(3)
    vertices = np.empty(n, dtype=[("x", ">f8"), ("y", ">f8"), ("z", ">f8"), ("nx", ">f4"),
                                  ("red", ">u2"), ("green", ">u2"), ("blue", ">u2")])  # fmt: skip
    xyz = g.normal(size=(n, 3))
    levels = g.integers(0, 65536, size=(n, 3))
    for i, name in enumerate("xyz"):
        vertices[name] = xyz[:, i]
    for i, name in enumerate(("red", "green", "blue")):
        vertices[name] = levels[:, i]
    vertices["nx"] = 0.5
    faces = np.empty(3, dtype=[("vertex_indices", "O"), ("flag", ">u1")])
    faces["vertex_indices"] = [np.array([0, 1, 2], ">i4"), np.array([2, 3, 4, 5], ">i4"), np.array([7], ">i4")]
    faces["flag"] = [1, 2, 3]
    ply = plyfile.PlyData(
        [plyfile.PlyElement.describe(faces, "face", len_types={"vertex_indices": "u1"}),
         plyfile.PlyElement.describe(vertices, "vertex")],
        byte_order=">",
    )  # fmt: skip
    path = tmp_path / "be.ply"
    ply.write(str(path))
    cloud = read_points_ply(path)
    np.testing.assert_array_equal(cloud.xyz.numpy(), xyz.astype(np.float32))
    np.testing.assert_allclose(cloud.rgb.numpy(), (levels / 65535.0).astype(np.float32), rtol=0, atol=1e-7)


def test_ascii_float_rgb_written_by_hand(tmp_path):
    path = tmp_path / "ascii.ply"
    path.write_text(
        "ply\r\nformat ascii 1.0\r\ncomment hand written, CRLF line ends\r\nelement vertex 3\r\n"
        "property double x\r\nproperty double y\r\nproperty double z\r\n"
        "property float r\r\nproperty float g\r\nproperty float b\r\nend_header\r\n"
        "0 0 0 1 0 0\r\n1.5 -2 3e-1 0 0.5 0.25\r\n"
        "-7 8 9\r\n0.1 0.2 0.3\r\n"  # rows may span lines
    )
    cloud = read_points_ply(path)
    np.testing.assert_array_equal(cloud.xyz.numpy(), np.float32([[0, 0, 0], [1.5, -2, 0.3], [-7, 8, 9]]))
    np.testing.assert_array_equal(cloud.rgb.numpy(), np.float32([[1, 0, 0], [0, 0.5, 0.25], [0.1, 0.2, 0.3]]))


def test_float_colours_in_0_255_are_rescaled_with_note(tmp_path):
    path = tmp_path / "float255.ply"
    path.write_text(
        "ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
        "property float red\nproperty float green\nproperty float blue\nend_header\n"
        "0 0 0 255 0 51\n1 1 1 0 102 255\n"
    )
    cloud = read_points_ply(path)
    np.testing.assert_allclose(cloud.rgb.numpy(), [[1, 0, 0.2], [0, 0.4, 1]], atol=1e-7)
    assert any("0..255" in note for note in cloud.notes)


@pytest.mark.parametrize(
    "content, field",
    [
        (b"", None),
        (b"solid cube\nfacet normal 0 0 1\n", None),  # an ASCII STL
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\n0\n", "header"),  # no end_header
        (b"ply\nelement vertex 1\nproperty float x\nend_header\n0\n", "header"),  # no format
        (b"ply\nformat binary_middle_endian 1.0\nelement vertex 1\nend_header\n", "header line 2"),
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float128 x\nend_header\n0\n", "header line 4"),
        (b"ply\nformat ascii 1.0\nelement vertex one\nend_header\n", "header line 3"),
        (b"ply\nformat ascii 1.0\nvertices 3\nend_header\n", "header line 3"),
        (b"ply\nformat ascii 1.0\nelement face 0\nproperty list uchar int vertex_indices\nend_header\n", "vertex"),
        (b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\nproperty float z\n"
         b"end_header\n1 2 3\n4 5\n", "vertex"),  # ascii ends early
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\n"
         b"end_header\n1 two 3\n", "vertex"),  # not a number
        (b"ply\nformat binary_little_endian 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
         b"property float z\nend_header\n" + b"\0" * 20, "vertex"),  # truncated binary
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nend_header\n1 2\n", "z"),
        (b"ply\nformat ascii 1.0\nelement vertex 0\nproperty float x\nproperty float y\nproperty float z\n"
         b"end_header\n", "vertex"),  # no points
        (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nproperty float z\n"
         b"end_header\n1 nan 3\n", "y"),
    ],
)  # fmt: skip
def test_bad_files_raise_input_error_naming_file_and_part(tmp_path, content, field):
    path = tmp_path / "bad_points.ply"
    path.write_bytes(content)
    with pytest.raises(InputError) as caught:
        read_points_ply(path)
    message = str(caught.value)
    assert str(path) in message
    if field is not None:
        assert caught.value.field == field, message


def test_missing_file(tmp_path):
    with pytest.raises(InputError, match="not found") as caught:
        read_points_ply(tmp_path / "absent.ply")
    assert "absent.ply" in str(caught.value)


def test_writer_rejects_mismatched_shapes_and_keeps_existing_file(tmp_path):
    path = tmp_path / "points3d.ply"
    path.write_bytes(b"user's file")
    with pytest.raises(ValueError):
        write_points_ply(path, torch.zeros(4, 3), torch.zeros(5, 3))
    assert path.read_bytes() == b"user's file"

"""3DGS PLY files: real files written by other tools, an independent reading with plyfile, a
hand-written known-answer file, bit-exact round trips and bad files."""

import math
from pathlib import Path

import numpy as np
import plyfile
import pytest
import torch
from gsplat.cuda._torch_impl import _quat_scale_to_covar_preci, _spherical_harmonics

from radiantforge.errors import InputError
from radiantforge.gaussians.ply import gaussian_ply_property_names, load_gaussian_ply, save_gaussian_ply
from radiantforge.gaussians.splats import SH_C0, GaussianSplats, sh0_to_rgb

from blender_helpers import SHARED_ASSETS

SPLATS = SHARED_ASSETS / "splats"
TRAIN_SH3 = SPLATS / "train-1000.ply"  # original 3DGS layout, SH degree 3, 62 properties
DONUT_SH0 = SPLATS / "donut-sh0.ply"  # Mip-Splatting, SH degree 0, no normals, 14 properties
SH_C1 = 0.4886025119029199  # the degree-1 SH basis constant


def plyfile_vertices(path) -> np.ndarray:
    return plyfile.PlyData.read(str(path))["vertex"].data


def columns(data, names) -> np.ndarray:
    return np.stack([data[n] for n in names], axis=-1)


def assert_matches_independent_reading(splats: GaussianSplats, path: Path):
    """Every tensor of ``splats`` against plyfile's reading of the file, by property name."""
    data = plyfile_vertices(path)
    n = len(data)
    rest_names = [name for name in data.dtype.names if name.startswith("f_rest_")]
    rest_per_channel = len(rest_names) // 3
    assert len(splats) == n
    np.testing.assert_array_equal(splats.means.numpy(), columns(data, ["x", "y", "z"]))
    np.testing.assert_array_equal(splats.scales.numpy(), columns(data, ["scale_0", "scale_1", "scale_2"]))
    np.testing.assert_array_equal(splats.quats.numpy(), columns(data, ["rot_0", "rot_1", "rot_2", "rot_3"]))
    np.testing.assert_array_equal(splats.opacities.numpy(), data["opacity"])
    np.testing.assert_array_equal(splats.sh0[:, 0, :].numpy(), columns(data, ["f_dc_0", "f_dc_1", "f_dc_2"]))
    assert splats.shN.shape == (n, rest_per_channel, 3)
    # Channel-major: coefficient k (of K-1) of channel c is property f_rest_{c*(K-1)+k}.
    for c in range(3):
        for k in range(rest_per_channel):
            np.testing.assert_array_equal(splats.shN[:, k, c].numpy(), data[f"f_rest_{c * rest_per_channel + k}"])


def test_real_sh3_file_matches_plyfile_and_round_trips_byte_for_byte(tmp_path):
    splats = load_gaussian_ply(TRAIN_SH3)
    assert len(splats) == 1000 and splats.sh_degree == 3
    assert_matches_independent_reading(splats, TRAIN_SH3)
    # The file is in the exact original layout with zero normals: our writer reproduces it.
    copy = tmp_path / "copy.ply"
    save_gaussian_ply(copy, splats)
    assert copy.read_bytes() == TRAIN_SH3.read_bytes()


def test_real_sh0_file_without_normals(tmp_path):
    assert "nx" not in plyfile_vertices(DONUT_SH0).dtype.names
    splats = load_gaussian_ply(DONUT_SH0)
    assert len(splats) == 45624 and splats.sh_degree == 0 and splats.shN.shape == (45624, 0, 3)
    assert_matches_independent_reading(splats, DONUT_SH0)
    # Written back in the original layout (normals added as zeros), the values survive.
    copy = tmp_path / "donut.ply"
    save_gaussian_ply(copy, splats)
    data = plyfile_vertices(copy)
    assert list(data.dtype.names) == gaussian_ply_property_names(0)
    assert (columns(data, ["nx", "ny", "nz"]) == 0).all()
    assert_matches_independent_reading(load_gaussian_ply(copy), DONUT_SH0)


@pytest.mark.parametrize("sh_degree", [0, 1, 2, 3])
def test_layout_written_matches_the_original_3dgs_order(tmp_path, sh_degree):
    splats = random_splats(7, sh_degree, seed=sh_degree)
    path = tmp_path / "out.ply"
    save_gaussian_ply(path, splats)
    ply = plyfile.PlyData.read(str(path))
    assert ply.text is False and ply.byte_order == "<" and [e.name for e in ply.elements] == ["vertex"]
    rest = [f"f_rest_{i}" for i in range(3 * ((sh_degree + 1) ** 2 - 1))]
    expected = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *rest,
                "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip
    assert [p.name for p in ply["vertex"].properties] == expected
    assert {p.val_dtype for p in ply["vertex"].properties} == {"f4"}
    assert_matches_independent_reading(splats, path)


def random_splats(n, sh_degree, seed=0) -> GaussianSplats:
    g = torch.Generator().manual_seed(seed)
    k = (sh_degree + 1) ** 2
    return GaussianSplats(
        means=torch.randn(n, 3, generator=g) * 5,
        scales=torch.randn(n, 3, generator=g) - 3,
        quats=torch.randn(n, 4, generator=g),
        opacities=torch.randn(n, generator=g),
        sh0=torch.randn(n, 1, 3, generator=g),
        shN=torch.randn(n, k - 1, 3, generator=g) * 0.1,
    )


@pytest.mark.parametrize("sh_degree", [0, 1, 3])
def test_round_trip_is_bit_exact_including_special_values(tmp_path, sh_degree):
    splats = random_splats(300, sh_degree, seed=10 + sh_degree)
    specials = torch.tensor([-0.0, 1e-45, -3.4028235e38, float("inf"), float("nan")])
    splats.means[:5, 0] = specials
    splats.opacities[:5] = specials
    path = tmp_path / "splats.ply"
    save_gaussian_ply(path, splats)
    back = load_gaussian_ply(path)
    for name, tensor in splats.as_dict().items():
        loaded = getattr(back, name)
        assert loaded.dtype == torch.float32 and loaded.shape == tensor.shape, name
        assert torch.equal(loaded.view(torch.int32), tensor.contiguous().view(torch.int32)), name
    assert not list(tmp_path.glob(".*.tmp")), "temporary file left behind"


def write_ply_by_hand(path: Path, names: list[str], rows: np.ndarray, dtype="<f4", ply_type="float"):
    """A PLY written with numpy alone (not by the code under test)."""
    header = "ply\nformat binary_little_endian 1.0\nelement vertex %d\n" % len(rows)
    header += "".join(f"property {ply_type} {name}\n" for name in names) + "end_header\n"
    path.write_bytes(header.encode("ascii") + np.ascontiguousarray(rows, dtype=dtype).tobytes())


def test_known_answer_quaternion_scale_and_sh_semantics(tmp_path):
    """A degree-1 file written by hand: rot_0 is w, f_rest is channel-major, opacity is a logit,
    scales are logs. The loaded values are checked through gsplat's reference functions."""
    angle = math.radians(60.0)  # rotation about world Z
    stddevs = [2.0, 0.5, 0.25]
    opacity = 0.8
    dc_rgb = [0.25, 0.5, 0.75]
    names = ["x", "y", "z", "nx", "ny", "nz", "f_dc_0", "f_dc_1", "f_dc_2", *[f"f_rest_{i}" for i in range(9)],
             "opacity", "scale_0", "scale_1", "scale_2", "rot_0", "rot_1", "rot_2", "rot_3"]  # fmt: skip
    first = {"x": 1.0, "y": 2.0, "z": 3.0, "opacity": math.log(opacity / (1 - opacity)),
             "rot_0": math.cos(angle / 2), "rot_3": math.sin(angle / 2)}  # fmt: skip
    first.update({f"f_dc_{c}": (dc_rgb[c] - 0.5) / SH_C0 for c in range(3)})
    first.update({f"scale_{i}": math.log(s) for i, s in enumerate(stddevs)})
    first.update({f"f_rest_{i}": 100.0 + i for i in range(9)})
    # Second Gaussian: only f_rest_1 is set = red channel, second rest coefficient (the Y_1^0 ~ z basis).
    z_coefficient = 0.7
    second = {"rot_0": 1.0, "f_rest_1": z_coefficient}
    rows = np.array([[row.get(name, 0.0) for name in names] for row in (first, second)])
    path = tmp_path / "hand.ply"
    write_ply_by_hand(path, names, rows)

    splats = load_gaussian_ply(path)
    assert splats.sh_degree == 1
    torch.testing.assert_close(splats.quats[0], torch.tensor([math.cos(angle / 2), 0, 0, math.sin(angle / 2)]))
    torch.testing.assert_close(splats.means[0], torch.tensor([1.0, 2.0, 3.0]))
    activated = splats.activated()
    torch.testing.assert_close(activated["opacities"][0], torch.tensor(opacity))
    torch.testing.assert_close(activated["scales"][0], torch.tensor(stddevs))
    torch.testing.assert_close(sh0_to_rgb(splats.sh0[0, 0]), torch.tensor(dc_rgb))
    for c in range(3):
        for k in range(3):
            assert splats.shN[0, k, c].item() == 100.0 + 3 * c + k

    # gsplat's covariance from the loaded quaternion and scales: the largest axis (std 2) lies
    # along (cos 60, sin 60, 0), the smallest (std 0.25) along world Z.
    covariance, _ = _quat_scale_to_covar_preci(activated["quats"], activated["scales"], compute_preci=False)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance[0].double())
    torch.testing.assert_close(eigenvalues, torch.tensor([0.0625, 0.25, 4.0], dtype=torch.float64))
    major = eigenvectors[:, 2] * torch.sign(eigenvectors[0, 2])
    torch.testing.assert_close(major, torch.tensor([math.cos(angle), math.sin(angle), 0.0], dtype=torch.float64))
    torch.testing.assert_close(eigenvectors[:, 0].abs(), torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64))

    # gsplat's SH evaluation: seen from +Z the second Gaussian's red is C1 * 0.7, green and blue 0;
    # seen from +X or +Y nothing (a coefficient-major reading would put 0.7 on green's y basis).
    coeffs = splats.sh_coeffs[1:2].expand(3, 4, 3)
    colours = _spherical_harmonics(1, torch.eye(3), coeffs)  # directions +X, +Y, +Z
    expected = torch.zeros(3, 3)
    expected[2, 0] = SH_C1 * z_coefficient
    torch.testing.assert_close(colours, expected)


def test_any_property_order_double_type_and_extra_properties(tmp_path):
    """Other tools may order properties differently, use doubles and add their own."""
    reference = load_gaussian_ply(TRAIN_SH3)
    data = plyfile_vertices(TRAIN_SH3)
    names = list(reversed(data.dtype.names)) + ["filter_3D"]
    rows = np.stack([data[n].astype(np.float64) for n in names[:-1]] + [np.ones(len(data))], axis=-1)
    path = tmp_path / "shuffled.ply"
    write_ply_by_hand(path, names, rows, dtype="<f8", ply_type="double")
    splats = load_gaussian_ply(path)
    for name, tensor in reference.as_dict().items():
        assert torch.equal(getattr(splats, name), tensor), name


@pytest.mark.parametrize("dropped", ["x", "f_dc_1", "opacity", "scale_2", "rot_0", "rot_3"])
def test_missing_required_property_is_named(tmp_path, dropped):
    names = [n for n in gaussian_ply_property_names(0) if n != dropped]
    path = tmp_path / "incomplete.ply"
    write_ply_by_hand(path, names, np.zeros((3, len(names))))
    with pytest.raises(InputError) as caught:
        load_gaussian_ply(path)
    assert caught.value.field == dropped
    assert str(path) in str(caught.value) and f"'{dropped}'" in str(caught.value)


def test_f_rest_count_or_numbering_wrong(tmp_path):
    base = gaussian_ply_property_names(0)
    ten_rest = base + [f"f_rest_{i}" for i in range(10)]
    path = tmp_path / "ten.ply"
    write_ply_by_hand(path, ten_rest, np.zeros((2, len(ten_rest))))
    with pytest.raises(InputError, match="do not match any SH degree") as caught:
        load_gaussian_ply(path)
    assert caught.value.field == "f_rest" and str(path) in str(caught.value)

    gap = base + [f"f_rest_{i}" for i in range(10) if i != 4]  # nine, but f_rest_4 missing
    path = tmp_path / "gap.ply"
    write_ply_by_hand(path, gap, np.zeros((2, len(gap))))
    with pytest.raises(InputError) as caught:
        load_gaussian_ply(path)
    assert caught.value.field == "f_rest_4" and str(path) in str(caught.value)


def test_not_a_splat_file(tmp_path):
    with pytest.raises(InputError, match="not found"):
        load_gaussian_ply(tmp_path / "absent.ply")
    path = tmp_path / "mesh.obj"
    path.write_text("v 0 0 0\nv 1 0 0\n")
    with pytest.raises(InputError, match="not a PLY") as caught:
        load_gaussian_ply(path)
    assert str(path) in str(caught.value)
    # A real PLY that is a mesh, not splats: names the first missing property.
    with pytest.raises(InputError) as caught:
        load_gaussian_ply(SHARED_ASSETS / "bunny" / "bun_zipper.ply")
    assert caught.value.field == "f_dc_0"


def test_save_is_atomic(tmp_path):
    path = tmp_path / "result.ply"
    path.write_bytes(b"previous result")
    bad = random_splats(4, 1)
    bad.quats = bad.quats[:3]
    with pytest.raises(ValueError, match="quats"):
        save_gaussian_ply(path, bad)
    assert path.read_bytes() == b"previous result"

    # The final rename fails (the target is a folder): no temporary file is left behind.
    folder_target = tmp_path / "taken"
    folder_target.mkdir()
    with pytest.raises(OSError):
        save_gaussian_ply(folder_target, random_splats(4, 1))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.ply", "taken"]

    save_gaussian_ply(path, random_splats(4, 1))
    assert len(load_gaussian_ply(path)) == 4
    assert sorted(p.name for p in tmp_path.iterdir()) == ["result.ply", "taken"]

"""Gaussian splats in the PLY layout of the original 3DGS code, which every splat tool opens.

One ``vertex`` element, all properties ``float`` (float32), binary little-endian, in this order::

    x y z  nx ny nz  f_dc_0 f_dc_1 f_dc_2  f_rest_0 .. f_rest_{3(K-1)-1}
    opacity  scale_0 scale_1 scale_2  rot_0 rot_1 rot_2 rot_3

- ``opacity`` is the logit of the opacity, ``scale_*`` the log of the standard deviations,
  ``rot_*`` the quaternion as w, x, y, z (not necessarily normalised) — stored as is, as
  :class:`~radiantforge.gaussians.splats.GaussianSplats` keeps them.
- ``f_dc_c`` is the degree-0 SH coefficient of colour channel c (R, G, B).
- ``f_rest`` is channel-major, as the original code writes it (it flattens the (N, 3, K-1)
  transpose of the (N, K-1, 3) coefficients): coefficient k (1 .. K-1) of channel c is
  ``f_rest_{c*(K-1) + (k-1)}`` — all R coefficients first, then G, then B.
- ``nx ny nz`` are written as zeros (the original code's placeholder normals). On reading they
  are optional and ignored; so are extra properties other tools add (e.g. Mip-Splatting's
  ``filter_3D``).
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import torch

from radiantforge.data.pointcloud import ply_header_bytes, read_ply_vertices, write_file_atomically
from radiantforge.errors import InputError, quoted
from radiantforge.gaussians.splats import GaussianSplats, sh_degree_from_count

N_COLOUR_CHANNELS = 3
POSITION_PROPERTIES = ("x", "y", "z")
NORMAL_PROPERTIES = ("nx", "ny", "nz")
DC_PROPERTIES = tuple(f"f_dc_{c}" for c in range(N_COLOUR_CHANNELS))
OPACITY_PROPERTY = "opacity"
SCALE_PROPERTIES = ("scale_0", "scale_1", "scale_2")
ROTATION_PROPERTIES = ("rot_0", "rot_1", "rot_2", "rot_3")  # w, x, y, z
REQUIRED_PROPERTIES = (
    POSITION_PROPERTIES + DC_PROPERTIES + (OPACITY_PROPERTY,) + SCALE_PROPERTIES + ROTATION_PROPERTIES
)
F_REST_NAME = re.compile(r"f_rest_(\d+)$")


def gaussian_ply_property_names(sh_degree: int) -> list[str]:
    """The property names, in file order, of a 3DGS PLY with SH degree ``sh_degree``."""
    n_rest = N_COLOUR_CHANNELS * ((sh_degree + 1) ** 2 - 1)
    return [
        *POSITION_PROPERTIES,
        *NORMAL_PROPERTIES,
        *DC_PROPERTIES,
        *(f"f_rest_{i}" for i in range(n_rest)),
        OPACITY_PROPERTY,
        *SCALE_PROPERTIES,
        *ROTATION_PROPERTIES,
    ]


def save_gaussian_ply(path: str | Path, splats: GaussianSplats) -> None:
    """Write ``splats`` as a 3DGS PLY (layout in the module docstring).

    Atomic: the file is written under a temporary name beside ``path`` and renamed, so an
    existing file at ``path`` is replaced only by a complete new one.
    """
    n = len(splats)
    rest_count = splats.shN.shape[1]
    expected_shapes = {
        "means": (n, 3), "scales": (n, 3), "quats": (n, 4), "opacities": (n,),
        "sh0": (n, 1, N_COLOUR_CHANNELS), "shN": (n, rest_count, N_COLOUR_CHANNELS),
    }  # fmt: skip
    for name, shape in expected_shapes.items():
        actual = tuple(getattr(splats, name).shape)
        if actual != shape:
            raise ValueError(f"splats.{name} has shape {actual}, expected {shape}")
    sh_degree = splats.sh_degree  # raises when 1 + rest_count is not a square

    def as_numpy(t: torch.Tensor) -> np.ndarray:
        return t.detach().to("cpu", torch.float32).numpy()

    # Channel-major rest coefficients: (N, K-1, 3) -> (N, 3, K-1) -> (N, 3(K-1)).
    f_rest = as_numpy(splats.shN).transpose(0, 2, 1).reshape(n, -1)
    table = np.concatenate(
        [
            as_numpy(splats.means),
            np.zeros((n, len(NORMAL_PROPERTIES)), np.float32),
            as_numpy(splats.sh0).reshape(n, N_COLOUR_CHANNELS),
            f_rest,
            as_numpy(splats.opacities).reshape(n, 1),
            as_numpy(splats.scales),
            as_numpy(splats.quats),
        ],
        axis=1,
    ).astype("<f4")
    names = gaussian_ply_property_names(sh_degree)
    assert table.shape[1] == len(names)
    header = ply_header_bytes(n, [("float", name) for name in names])
    write_file_atomically(path, header + np.ascontiguousarray(table).tobytes())


def load_gaussian_ply(path: str | Path) -> GaussianSplats:
    """Read a 3DGS PLY written by this package, the original code or other splat tools.

    Any SH degree 0..3 (deduced from the number of ``f_rest_*`` properties), with or without
    normals, properties in any order and of any numeric type (converted to float32; float32
    files round-trip bit for bit). Missing properties raise :class:`InputError` naming them.
    """
    path = Path(path)
    columns, _ = read_ply_vertices(path)
    for name in REQUIRED_PROPERTIES:
        if name not in columns:
            raise InputError(
                f"vertex property {quoted(name)} is missing; a 3DGS PLY needs "
                f"{' '.join(REQUIRED_PROPERTIES)} (and f_rest_* for SH degree > 0)",
                file=path,
                field=name,
            )
    n = len(columns["x"])

    def stacked(names) -> torch.Tensor:
        return torch.from_numpy(np.stack([columns[name].astype(np.float32) for name in names], axis=-1))

    rest_indices = sorted(int(m.group(1)) for name in columns if (m := F_REST_NAME.match(name)))
    for expected, index in enumerate(rest_indices):
        if index != expected:
            raise InputError(
                f"f_rest properties must be numbered 0..{len(rest_indices) - 1} without gaps",
                file=path,
                field=f"f_rest_{expected}",
            )
    n_rest = len(rest_indices)
    rest_per_channel, remainder = divmod(n_rest, N_COLOUR_CHANNELS)
    try:
        if remainder:
            raise ValueError
        sh_degree_from_count(1 + rest_per_channel)
    except ValueError:
        raise InputError(
            f"{n_rest} f_rest properties do not match any SH degree (expected 0, 9, 24 or 45)",
            file=path,
            field="f_rest",
        ) from None

    if n_rest:
        # Channel-major in the file: (N, 3, K-1) -> (N, K-1, 3).
        f_rest = stacked([f"f_rest_{i}" for i in range(n_rest)])
        shN = f_rest.reshape(n, N_COLOUR_CHANNELS, rest_per_channel).transpose(1, 2).contiguous()
    else:
        shN = torch.zeros((n, 0, N_COLOUR_CHANNELS), dtype=torch.float32)

    return GaussianSplats(
        means=stacked(POSITION_PROPERTIES),
        scales=stacked(SCALE_PROPERTIES),
        quats=stacked(ROTATION_PROPERTIES),
        opacities=torch.from_numpy(columns[OPACITY_PROPERTY].astype(np.float32)),
        sh0=stacked(DC_PROPERTIES).reshape(n, 1, N_COLOUR_CHANNELS),
        shN=shN,
    )

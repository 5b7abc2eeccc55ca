"""Gaussian splats in every exchange format: 3DGS PLY, SPZ, .splat, glTF 2.0 + KHR_gaussian_splatting.

A thin wrapper: the formats themselves live in ``radiantforge_addon.io.splat_formats`` (numpy only),
which the Blender add-on runs too, so the backend and Blender read and write the same bytes. This
module converts between its numpy ``SplatArrays`` and :class:`GaussianSplats`, and turns its
errors into :class:`InputError`. PLY goes through :mod:`radiantforge.gaussians.ply` as before.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from radiantforge.errors import InputError
from radiantforge.gaussians.ply import load_gaussian_ply, save_gaussian_ply
from radiantforge.gaussians.splats import GaussianSplats
from radiantforge_addon.io import splat_formats
from radiantforge_addon.io.splat_formats import SplatArrays, SplatFormatError

SUFFIXES = splat_formats.SUFFIXES


def to_arrays(splats: GaussianSplats) -> SplatArrays:
    def as_numpy(t: torch.Tensor) -> np.ndarray:
        return t.detach().to("cpu", torch.float32).numpy()

    n = len(splats)
    return SplatArrays(as_numpy(splats.means), as_numpy(splats.scales), as_numpy(splats.quats),
                       as_numpy(splats.opacities).reshape(n), as_numpy(splats.sh0).reshape(n, 3), as_numpy(splats.shN))


def from_arrays(arrays: SplatArrays) -> GaussianSplats:
    n = len(arrays)
    return GaussianSplats(
        means=torch.from_numpy(np.ascontiguousarray(arrays.means, np.float32)),
        scales=torch.from_numpy(np.ascontiguousarray(arrays.log_scales, np.float32)),
        quats=torch.from_numpy(np.ascontiguousarray(arrays.quats, np.float32)),
        opacities=torch.from_numpy(np.ascontiguousarray(arrays.opacity_logits, np.float32)),
        sh0=torch.from_numpy(np.ascontiguousarray(arrays.sh0, np.float32)).reshape(n, 1, 3),
        shN=torch.from_numpy(np.ascontiguousarray(arrays.shN, np.float32)),
    )


def _check_suffix(path: Path) -> str:
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise InputError(f"unknown splat format {suffix!r}; expected one of {', '.join(SUFFIXES)}", file=path)
    return suffix


def load_splats(path: str | Path) -> GaussianSplats:
    """Read splats from a .ply, .spz, .splat, .glb or .gltf file (format by suffix)."""
    path = Path(path)
    if _check_suffix(path) == ".ply":
        return load_gaussian_ply(path)
    try:
        return from_arrays(splat_formats.read_splats(path))
    except SplatFormatError as exc:
        raise InputError(exc.problem, file=path) from None


def save_splats(path: str | Path, splats: GaussianSplats) -> None:
    """Write splats as .ply, .spz, .splat, .glb or .gltf (format by suffix; see splat_formats for what each keeps)."""
    path = Path(path)
    if _check_suffix(path) == ".ply":
        save_gaussian_ply(path, splats)
        return
    try:
        splat_formats.write_splats(path, to_arrays(splats))
    except SplatFormatError as exc:
        raise InputError(exc.problem, file=path) from None


def convert_splats(source: str | Path, target: str | Path) -> dict:
    """Convert a splat file to another format. Returns {count, sh_degree (read), sh_degree_written}."""
    splats = load_splats(source)
    save_splats(target, splats)
    written = 0 if Path(target).suffix.lower() == ".splat" else splats.sh_degree
    return {"count": len(splats), "sh_degree": splats.sh_degree, "sh_degree_written": written}

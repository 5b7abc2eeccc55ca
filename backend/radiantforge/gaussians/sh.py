"""Real spherical harmonics up to degree 3, in the basis and sign convention of the 3DGS code.

The basis matches the original 3D Gaussian Splatting implementation (and gsplat), so SH
coefficients read from any 3DGS PLY file give the same colours here:

    colour(dir) = max(0, sum_k coeffs[k] * Y_k(dir) + 0.5)

``dir`` is the unit vector from the camera centre to the Gaussian's mean. The ``+ 0.5`` and the
clamp at 0 are gsplat's convention (``rasterization(..., sh_degree=d)``).
"""

from __future__ import annotations

import torch
from torch import Tensor

MAX_SH_DEGREE = 3

# Normalisation constants of the real SH basis, per degree (3DGS ordering within a degree).
SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (
    -0.5900435899266435,
    2.890611442640554,
    -0.4570457994644658,
    0.3731763325901154,
    -0.4570457994644658,
    1.445305721320277,
    -0.5900435899266435,
)


def sh_basis(degree: int, dirs: Tensor) -> Tensor:
    """Basis values Y_k(dir): (..., (degree+1)^2) for unit directions ``dirs`` (..., 3)."""
    if not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"SH degree must be in 0..{MAX_SH_DEGREE}, got {degree}")
    x, y, z = dirs.unbind(-1)
    basis = [torch.full_like(x, SH_C0)]
    if degree >= 1:
        basis += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        xy, yz, xz = x * y, y * z, x * z
        basis += [
            SH_C2[0] * xy,
            SH_C2[1] * yz,
            SH_C2[2] * (2.0 * zz - xx - yy),
            SH_C2[3] * xz,
            SH_C2[4] * (xx - yy),
        ]
    if degree >= 3:
        basis += [
            SH_C3[0] * y * (3.0 * xx - yy),
            SH_C3[1] * xy * z,
            SH_C3[2] * y * (4.0 * zz - xx - yy),
            SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy),
            SH_C3[4] * x * (4.0 * zz - xx - yy),
            SH_C3[5] * z * (xx - yy),
            SH_C3[6] * x * (xx - 3.0 * yy),
        ]
    return torch.stack(basis, dim=-1)


def evaluate_sh(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """SH radiance (..., 3) along ``dirs`` (..., 3; normalised here) from ``coeffs`` (..., K, 3).

    Only the first (degree+1)^2 coefficients are used; K may hold more (a model whose SH degree is
    raised during training). Differentiable in ``dirs`` and ``coeffs``. No offset, no clamp: see
    :func:`sh_to_color`.
    """
    n_basis = (degree + 1) ** 2
    if coeffs.shape[-2] < n_basis:
        raise ValueError(f"SH degree {degree} needs {n_basis} coefficients per channel, got {coeffs.shape[-2]}")
    if degree == 0:  # the direction does not matter; skip normalising it (and its gradient)
        return SH_C0 * coeffs[..., 0, :]
    unit_dirs = torch.nn.functional.normalize(dirs, dim=-1)
    basis = sh_basis(degree, unit_dirs)  # (..., n_basis)
    return (basis.unsqueeze(-1) * coeffs[..., :n_basis, :]).sum(dim=-2)


def sh_to_color(degree: int, dirs: Tensor, coeffs: Tensor) -> Tensor:
    """Colour (..., 3) as gsplat computes it: max(0, SH(dirs) + 0.5)."""
    return torch.clamp_min(evaluate_sh(degree, dirs, coeffs) + 0.5, 0.0)

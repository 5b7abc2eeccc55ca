"""EWA projection of 3D Gaussians into pinhole cameras, with gsplat's culling rules.

Everything here is per (camera, Gaussian) and cheap next to compositing; it is written with plain
differentiable torch ops and autograd does its backward. The rules follow gsplat 1.5.3's fused
projection kernel so the pure-torch rasterizer and gsplat agree:

- camera-space mean ``t = R m + T``; culled when ``t.z`` is outside [near_plane, far_plane];
- 3D covariance ``R_q S S R_q^T`` from the (normalised) quaternion and the scales;
- 2D covariance ``J W Sigma W^T J^T`` with the perspective Jacobian ``J`` evaluated at a point whose
  x/z and y/z are clamped to the image's field of view widened by 30 % on each side (this keeps
  the Jacobian of Gaussians far outside the view from blowing up); the mean itself is not clamped;
- a low-pass filter ``eps2d`` (0.3 px^2) added to the diagonal; culled when the determinant <= 0;
- culled when opacity < 1/255 (it could never reach the alpha threshold);
- an opacity-aware screen radius ``ceil(k sqrt(Sigma_ii))`` with ``k = min(3.33, sqrt(2 ln(255 o)))``:
  beyond it ``o exp(-0.5 d^T Sigma^-1 d) < 1/255``, so no pixel outside it is touched;
- culled when that box lies entirely off-screen.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from .raster_constants import ALPHA_THRESHOLD, FOV_CLAMP_MARGIN, MAX_EXTENT_SIGMAS


class Projection(NamedTuple):
    """Projected Gaussians, per camera. Culled entries have ``visible`` False and radii 0.

    means2d: (C, N, 2) pixel coordinates of the means (differentiable).
    conics: (C, N, 3) upper triangle (a, b, c) of the inverse 2D covariance (differentiable).
    depths: (C, N) camera-space z of the means (differentiable).
    radii: (C, N, 2) int32 screen radii in pixels along x and y; 0 where culled.
    visible: (C, N) bool.
    """

    means2d: Tensor
    conics: Tensor
    depths: Tensor
    radii: Tensor
    visible: Tensor


def quat_to_rotmat(quats: Tensor) -> Tensor:
    """Rotation matrices (N, 3, 3) from quaternions (N, 4) in w, x, y, z order (normalised here)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]  # fmt: skip
    return torch.stack(rows, dim=-1).reshape(quats.shape[:-1] + (3, 3))


def covariance_entries(quats: Tensor, scales: Tensor) -> list[list[Tensor]]:
    """World-space covariance R S S R^T as a 3 x 3 nested list of (N,) tensors (symmetric)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    sx, sy, sz = scales.unbind(-1)
    rows = [
        (1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)),
        (2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)),
        (2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)),
    ]
    m = [(r0 * sx, r1 * sy, r2 * sz) for r0, r1, r2 in rows]  # R diag(s)
    entry = {(i, j): m[i][0] * m[j][0] + m[i][1] * m[j][1] + m[i][2] * m[j][2] for i in range(3) for j in range(i, 3)}
    return [[entry[min(i, j), max(i, j)] for j in range(3)] for i in range(3)]


def covariance_3d(quats: Tensor, scales: Tensor) -> Tensor:
    """World-space covariances (N, 3, 3) = R S S R^T from quats (N, 4) and std-dev scales (N, 3)."""
    rs = quat_to_rotmat(quats) * scales.unsqueeze(-2)  # R @ diag(s)
    return rs @ rs.transpose(-1, -2)


def project_gaussians(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
) -> Projection:
    """Project N Gaussians into C cameras (see the module docstring for the exact rules).

    means (N, 3), quats (N, 4) wxyz, scales (N, 3), opacities (N,), viewmats (C, 4, 4) world-to-camera
    (OpenCV: +Z forward, +Y down), Ks (C, 3, 3) pixel intrinsics.
    """
    # Written out entry by entry on (C, N) tensors: batched 3x3 matrix products of tiny matrices
    # are several times slower on CPU, forward and backward.
    rot = [[viewmats[:, i, j, None] for j in range(3)] for i in range(3)]  # world-to-camera, (C, 1) each
    trans = [viewmats[:, i, 3, None] for i in range(3)]
    mean = means.unbind(-1)
    x, y, depths = (sum(rot[i][j] * mean[j] for j in range(3)) + trans[i] for i in range(3))  # (C, N)

    with torch.no_grad():
        in_depth_range = (depths >= near_plane) & (depths <= far_plane)
    # Culled entries still flow through the maths below; give them a harmless depth so no inf/nan
    # appears in the forward pass (it would turn their zero gradients into nan).
    safe_z = torch.where(in_depth_range, depths, torch.ones_like(depths))

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # (C, 1)
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    inv_z = 1.0 / safe_z
    means2d = torch.stack([fx * x * inv_z + cx, fy * y * inv_z + cy], dim=-1)  # (C, N, 2)

    # Jacobian of the perspective map at the FOV-clamped point: [[j00, 0, j02], [0, j11, j12]].
    tan_half_x, tan_half_y = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + FOV_CLAMP_MARGIN * tan_half_x
    lim_x_neg = cx / fx + FOV_CLAMP_MARGIN * tan_half_x
    lim_y_pos = (height - cy) / fy + FOV_CLAMP_MARGIN * tan_half_y
    lim_y_neg = cy / fy + FOV_CLAMP_MARGIN * tan_half_y
    x_over_z = torch.minimum(torch.maximum(x * inv_z, -lim_x_neg), lim_x_pos)
    y_over_z = torch.minimum(torch.maximum(y * inv_z, -lim_y_neg), lim_y_pos)
    j00, j11 = fx * inv_z, fy * inv_z
    j02, j12 = -j00 * x_over_z, -j11 * y_over_z
    # A = J W (2 x 3), then the 2D covariance A Sigma A^T.
    a = [
        [j00 * rot[0][k] + j02 * rot[2][k] for k in range(3)],
        [j11 * rot[1][k] + j12 * rot[2][k] for k in range(3)],
    ]
    sigma = covariance_entries(quats, scales)  # Sigma[i][j], (N,) each
    b = [[sum(a[r][i] * sigma[i][k] for i in range(3)) for k in range(3)] for r in range(2)]  # A Sigma
    cov_xx = sum(b[0][k] * a[0][k] for k in range(3)) + eps2d
    cov_xy = sum(b[0][k] * a[1][k] for k in range(3))
    cov_yy = sum(b[1][k] * a[1][k] for k in range(3)) + eps2d
    det = cov_xx * cov_yy - cov_xy * cov_xy
    safe_det = torch.where(det > 0, det, torch.ones_like(det))
    conics = torch.stack([cov_yy / safe_det, -cov_xy / safe_det, cov_xx / safe_det], dim=-1)

    with torch.no_grad():
        opacity_ok = (opacities >= ALPHA_THRESHOLD)[None, :]
        extent = torch.sqrt(2.0 * torch.log(opacities.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD))
        extent = extent.clamp_max(MAX_EXTENT_SIGMAS)[None, :]
        radius_x = torch.ceil(extent * torch.sqrt(cov_xx.clamp_min(0)))
        radius_y = torch.ceil(extent * torch.sqrt(cov_yy.clamp_min(0)))
        mx, my = means2d[..., 0], means2d[..., 1]
        on_screen = (mx + radius_x > 0) & (mx - radius_x < width) & (my + radius_y > 0) & (my - radius_y < height)
        visible = in_depth_range & (det > 0) & opacity_ok & ((radius_x > 0) | (radius_y > 0)) & on_screen
        visible &= torch.isfinite(means2d).all(-1) & torch.isfinite(conics).all(-1)
        radii = torch.stack([radius_x, radius_y], dim=-1).to(torch.int32) * visible[..., None]
    return Projection(means2d, conics, depths, radii, visible)


def opacity_cutoff(opacities: Tensor) -> Tensor:
    """ln(255 o): the largest Mahalanobis half-square 0.5 d^T Sigma^-1 d with alpha >= 1/255."""
    return torch.log(opacities.clamp_min(ALPHA_THRESHOLD) / ALPHA_THRESHOLD)


__all__ = [
    "ALPHA_THRESHOLD",
    "Projection",
    "project_gaussians",
    "quat_to_rotmat",
    "covariance_3d",
    "covariance_entries",
    "opacity_cutoff",
]

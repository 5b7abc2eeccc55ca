"""Numba kernels of the native CPU rasterizer: projection + SH, tile binning, compositing, and their backward.

Stages (rasterizer.py chains them in two autograd Functions):

1. project_forward / project_backward: per (camera, Gaussian), prange over Gaussians: EWA
   projection with gsplat's culling and radii, SH colour, and the analytic backward to means,
   quaternions, scales and SH coefficients (plain float64 scalar maths).
2. bin_gaussians: the visible pairs sorted by depth (radix sort), packed into one table row each
   (everything compositing reads: one cache line in float32), and listed per 16 x 16 tile with a
   stable, parallel counting sort, so each tile's list is front to back.
3. composite_forward / composite_backward: tiles dealt to workers (one per thread); each tile is
   composited Gaussian by Gaussian over the 4 x 4 pixel blocks the Gaussian's ellipse reaches,
   each block one SIMD loop; pixels stop when their transmittance runs out and a tile stops when
   all its pixels have. The forward pass records, per entry it reaches, the 16-bit mask of the
   blocks the ellipse covers. The backward walks each tile's list back to front (gsplat's maths),
   over those masks' blocks without recomputing them (an entry whose blocks all lie beyond their
   pixels' last fragment is skipped at once), and adds each Gaussian's gradient into its worker's
   buffer; the buffers are summed at the end.

Determinism: tiles are dealt by a fixed longest-job-first rule on a cost estimate and the
per-worker buffers are summed in worker order, so the same inputs and thread count give
bit-identical results (training resumes bit for bit), whatever the thread timing.

Every kernel is compiled lazily for the dtype it is first called with (float32 in training,
float64 for gradcheck) and cached on disk (``cache=True``). Arrays are C-contiguous NumPy views of
torch tensors; outputs are written in place. The per-fragment work runs in the input dtype;
per-Gaussian geometry and gradient sums in float64.

The rules are the pure-PyTorch path's (``radiantforge.gaussians.rasterize``, gsplat 1.5.3):
alpha = min(MAX_ALPHA, o exp(-sigma)), fragments below ALPHA_THRESHOLD skipped, a pixel stops
before the fragment that would take its transmittance to <= TRANSMITTANCE_MIN, pixel centres at +0.5.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit, prange

# The shared rules, as module globals (Numba compiles them in as constants; after changing one
# there, touch this file so that the on-disk cache is rebuilt).
from ..raster_constants import (ALPHA_THRESHOLD, BINNING_SLACK, FOV_CLAMP_MARGIN, MAX_ALPHA, MAX_EXTENT_SIGMAS,
                                TRANSMITTANCE_MIN)
from .fastexp import exp_neg

NORMALIZE_EPS = 1e-12  # torch.nn.functional.normalize's eps

# Columns of the per-visible-Gaussian table built by bin_gaussians, in the working dtype: everything
# the compositing loops read about one Gaussian in one row (one cache line for float32 and 4 features).
# The first N_PARAMS columns are also the columns of the gradient composite_backward returns.
T_MX, T_MY, T_A, T_B, T_C, T_OPACITY = 0, 1, 2, 3, 4, 5
N_PARAMS = 6
# Half-extents of the alpha >= 1/255 ellipse (with BINNING_SLACK) along x and y; its x-interval on a
# pixel row, x - mean_x in slope * dy +- sqrt(reach - curvature * dy^2) (dy = row centre - mean y);
# the dy of its rightmost point (the leftmost is at -dy).
T_HALF_X, T_HALF_Y, T_SLOPE, T_REACH, T_CURVATURE, T_EXTREME_DY = 6, 7, 8, 9, 10, 11
T_FEATURES = 12  # then the features: colour, then camera depth

TILE_SIZE = 16  # tile side in pixels: tiles are binned, sorted and shared among workers
BLOCK_SIZE = 4  # a tile is composited in BLOCK_SIZE x BLOCK_SIZE pixel blocks, one SIMD loop each (16 lanes:
# _sum_lanes_into assumes it)
BLOCKS_PER_SIDE = TILE_SIZE // BLOCK_SIZE
BLOCK_PIXELS = BLOCK_SIZE * BLOCK_SIZE
TILE_BLOCKS = BLOCKS_PER_SIDE * BLOCKS_PER_SIDE
TILE_PIXELS = TILE_SIZE * TILE_SIZE
BAND_BITS = (1 << BLOCKS_PER_SIDE) - 1  # one band (row of blocks) of a tile's block mask

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2_0, SH_C2_1, SH_C2_2, SH_C2_3, SH_C2_4 = (
    1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396
)  # fmt: skip
SH_C3_0, SH_C3_1, SH_C3_2, SH_C3_3, SH_C3_4, SH_C3_5, SH_C3_6 = (
    -0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
    -0.4570457994644658, 1.445305721320277, -0.5900435899266435,
)  # fmt: skip

_OPTIONS = dict(cache=True, nogil=True, error_model="numpy", fastmath={"contract"})


# ----------------------------------------------------------------------------------- small helpers


@njit(inline="always", **_OPTIONS)
def _sh_colour(degree, x, y, z, coeffs, n):
    """sum_k Y_k(x, y, z) coeffs[n, k, :] for k < (degree+1)^2: the 3DGS real SH basis (as
    radiantforge.gaussians.sh.sh_basis), written out with scalars (no per-Gaussian arrays)."""
    r = SH_C0 * float(coeffs[n, 0, 0])
    g = SH_C0 * float(coeffs[n, 0, 1])
    b = SH_C0 * float(coeffs[n, 0, 2])
    if degree >= 1:
        for k, basis in ((1, -SH_C1 * y), (2, SH_C1 * z), (3, -SH_C1 * x)):
            r += basis * float(coeffs[n, k, 0])
            g += basis * float(coeffs[n, k, 1])
            b += basis * float(coeffs[n, k, 2])
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        for k, basis in ((4, SH_C2_0 * x * y), (5, SH_C2_1 * y * z), (6, SH_C2_2 * (2.0 * zz - xx - yy)),
                         (7, SH_C2_3 * x * z), (8, SH_C2_4 * (xx - yy))):  # fmt: skip
            r += basis * float(coeffs[n, k, 0])
            g += basis * float(coeffs[n, k, 1])
            b += basis * float(coeffs[n, k, 2])
    if degree >= 3:
        xx, yy, zz = x * x, y * y, z * z
        for k, basis in ((9, SH_C3_0 * y * (3.0 * xx - yy)), (10, SH_C3_1 * x * y * z),
                         (11, SH_C3_2 * y * (4.0 * zz - xx - yy)), (12, SH_C3_3 * z * (2.0 * zz - 3.0 * xx - 3.0 * yy)),
                         (13, SH_C3_4 * x * (4.0 * zz - xx - yy)), (14, SH_C3_5 * z * (xx - yy)),
                         (15, SH_C3_6 * x * (xx - 3.0 * yy))):  # fmt: skip
            r += basis * float(coeffs[n, k, 0])
            g += basis * float(coeffs[n, k, 1])
            b += basis * float(coeffs[n, k, 2])
    return r, g, b


@njit(inline="always", **_OPTIONS)
def _sh_colour_backward(degree, x, y, z, coeffs, n, gr, gg, gb, v_coeffs):
    """Backward of _sh_colour for colour gradient (gr, gg, gb): adds Y_k g into v_coeffs[n, k, :] and
    returns d/d(x, y, z) of sum_k Y_k (coeffs[n, k] . g) (the same polynomials differentiated)."""
    v_coeffs[n, 0, 0] += SH_C0 * gr
    v_coeffs[n, 0, 1] += SH_C0 * gg
    v_coeffs[n, 0, 2] += SH_C0 * gb
    dx = dy = dz = 0.0
    if degree >= 1:
        for k, basis, bx, by, bz in ((1, -SH_C1 * y, 0.0, -SH_C1, 0.0), (2, SH_C1 * z, 0.0, 0.0, SH_C1),
                                     (3, -SH_C1 * x, -SH_C1, 0.0, 0.0)):  # fmt: skip
            v_coeffs[n, k, 0] += basis * gr
            v_coeffs[n, k, 1] += basis * gg
            v_coeffs[n, k, 2] += basis * gb
            weight = float(coeffs[n, k, 0]) * gr + float(coeffs[n, k, 1]) * gg + float(coeffs[n, k, 2]) * gb
            dx += weight * bx
            dy += weight * by
            dz += weight * bz
    if degree >= 2:
        xx, yy, zz = x * x, y * y, z * z
        for k, basis, bx, by, bz in (
            (4, SH_C2_0 * x * y, SH_C2_0 * y, SH_C2_0 * x, 0.0),
            (5, SH_C2_1 * y * z, 0.0, SH_C2_1 * z, SH_C2_1 * y),
            (6, SH_C2_2 * (2.0 * zz - xx - yy), -2.0 * SH_C2_2 * x, -2.0 * SH_C2_2 * y, 4.0 * SH_C2_2 * z),
            (7, SH_C2_3 * x * z, SH_C2_3 * z, 0.0, SH_C2_3 * x),
            (8, SH_C2_4 * (xx - yy), 2.0 * SH_C2_4 * x, -2.0 * SH_C2_4 * y, 0.0),
        ):
            v_coeffs[n, k, 0] += basis * gr
            v_coeffs[n, k, 1] += basis * gg
            v_coeffs[n, k, 2] += basis * gb
            weight = float(coeffs[n, k, 0]) * gr + float(coeffs[n, k, 1]) * gg + float(coeffs[n, k, 2]) * gb
            dx += weight * bx
            dy += weight * by
            dz += weight * bz
    if degree >= 3:
        xx, yy, zz = x * x, y * y, z * z
        for k, basis, bx, by, bz in (
            (9, SH_C3_0 * y * (3.0 * xx - yy), SH_C3_0 * 6.0 * x * y, SH_C3_0 * (3.0 * xx - 3.0 * yy), 0.0),
            (10, SH_C3_1 * x * y * z, SH_C3_1 * y * z, SH_C3_1 * x * z, SH_C3_1 * x * y),
            (11, SH_C3_2 * y * (4.0 * zz - xx - yy), -2.0 * SH_C3_2 * x * y, SH_C3_2 * (4.0 * zz - xx - 3.0 * yy),
             8.0 * SH_C3_2 * y * z),
            (12, SH_C3_3 * z * (2.0 * zz - 3.0 * xx - 3.0 * yy), -6.0 * SH_C3_3 * x * z, -6.0 * SH_C3_3 * y * z,
             SH_C3_3 * (6.0 * zz - 3.0 * xx - 3.0 * yy)),
            (13, SH_C3_4 * x * (4.0 * zz - xx - yy), SH_C3_4 * (4.0 * zz - 3.0 * xx - yy), -2.0 * SH_C3_4 * x * y,
             8.0 * SH_C3_4 * x * z),
            (14, SH_C3_5 * z * (xx - yy), 2.0 * SH_C3_5 * x * z, -2.0 * SH_C3_5 * y * z, SH_C3_5 * (xx - yy)),
            (15, SH_C3_6 * x * (xx - 3.0 * yy), SH_C3_6 * (3.0 * xx - 3.0 * yy), -6.0 * SH_C3_6 * x * y, 0.0),
        ):
            v_coeffs[n, k, 0] += basis * gr
            v_coeffs[n, k, 1] += basis * gg
            v_coeffs[n, k, 2] += basis * gb
            weight = float(coeffs[n, k, 0]) * gr + float(coeffs[n, k, 1]) * gg + float(coeffs[n, k, 2]) * gb
            dx += weight * bx
            dy += weight * by
            dz += weight * bz
    return dx, dy, dz


@njit(**_OPTIONS)
def _rotation(qw, qx, qy, qz):
    """Rotation matrix entries (row-major) of a unit wxyz quaternion."""
    return (
        1.0 - 2.0 * (qy * qy + qz * qz), 2.0 * (qx * qy - qw * qz), 2.0 * (qx * qz + qw * qy),
        2.0 * (qx * qy + qw * qz), 1.0 - 2.0 * (qx * qx + qz * qz), 2.0 * (qy * qz - qw * qx),
        2.0 * (qx * qz - qw * qy), 2.0 * (qy * qz + qw * qx), 1.0 - 2.0 * (qx * qx + qy * qy),
    )  # fmt: skip


@njit(**_OPTIONS)
def _fov_limits(width, height, fx, fy, cx, cy):
    """Bounds of x/z and y/z for the Jacobian: the view's tangent range widened by FOV_CLAMP_MARGIN."""
    margin_x = FOV_CLAMP_MARGIN * 0.5 * width / fx
    margin_y = FOV_CLAMP_MARGIN * 0.5 * height / fy
    return cx / fx + margin_x, (width - cx) / fx + margin_x, cy / fy + margin_y, (height - cy) / fy + margin_y


# ------------------------------------------------------------------------------------ projection


@njit(parallel=True, **_OPTIONS)
def project_forward(means, quats, scales, opacities, viewmats, Ks, campos, coeffs, sh_degree, width, height,
                    near, far, eps2d, means2d, conics, depths, colors, radii):  # fmt: skip
    """EWA projection of N Gaussians into C cameras, with gsplat's culling, and SH colours.

    means (N, 3), quats (N, 4) wxyz, scales (N, 3), opacities (N,), viewmats (C, 4, 4), Ks (C, 3, 3),
    campos (C, 3) camera centres, coeffs (N, K, 3) SH coefficients (used when sh_degree >= 0).
    Writes means2d (C, N, 2), conics (C, N, 3), depths (C, N), colors (C, N, 3) (SH only; 0 where
    culled), radii (C, N, 2) int32 (0 = culled). Culled entries keep means2d computed with z = 1
    and depths = z, like the torch path.
    """
    N = means.shape[0]
    C = viewmats.shape[0]
    for n in prange(N):
        qw, qx, qy, qz = float(quats[n, 0]), float(quats[n, 1]), float(quats[n, 2]), float(quats[n, 3])
        inv_norm = 1.0 / max(math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz), NORMALIZE_EPS)
        r00, r01, r02, r10, r11, r12, r20, r21, r22 = _rotation(qw * inv_norm, qx * inv_norm, qy * inv_norm, qz * inv_norm)
        sx, sy, sz = float(scales[n, 0]), float(scales[n, 1]), float(scales[n, 2])
        m00, m01, m02 = r00 * sx, r01 * sy, r02 * sz
        m10, m11, m12 = r10 * sx, r11 * sy, r12 * sz
        m20, m21, m22 = r20 * sx, r21 * sy, r22 * sz
        s00 = m00 * m00 + m01 * m01 + m02 * m02
        s01 = m00 * m10 + m01 * m11 + m02 * m12
        s02 = m00 * m20 + m01 * m21 + m02 * m22
        s11 = m10 * m10 + m11 * m11 + m12 * m12
        s12 = m10 * m20 + m11 * m21 + m12 * m22
        s22 = m20 * m20 + m21 * m21 + m22 * m22
        opacity = float(opacities[n])
        extent = min(MAX_EXTENT_SIGMAS, math.sqrt(2.0 * math.log(max(opacity, ALPHA_THRESHOLD) / ALPHA_THRESHOLD)))
        px, py, pz = float(means[n, 0]), float(means[n, 1]), float(means[n, 2])
        for c in range(C):
            w00, w01, w02, t0 = float(viewmats[c, 0, 0]), float(viewmats[c, 0, 1]), float(viewmats[c, 0, 2]), float(viewmats[c, 0, 3])
            w10, w11, w12, t1 = float(viewmats[c, 1, 0]), float(viewmats[c, 1, 1]), float(viewmats[c, 1, 2]), float(viewmats[c, 1, 3])
            w20, w21, w22, t2 = float(viewmats[c, 2, 0]), float(viewmats[c, 2, 1]), float(viewmats[c, 2, 2]), float(viewmats[c, 2, 3])
            fx, fy, cx, cy = float(Ks[c, 0, 0]), float(Ks[c, 1, 1]), float(Ks[c, 0, 2]), float(Ks[c, 1, 2])
            x = w00 * px + w01 * py + w02 * pz + t0
            y = w10 * px + w11 * py + w12 * pz + t1
            z = w20 * px + w21 * py + w22 * pz + t2
            depths[c, n] = z
            in_range = z >= near and z <= far
            inv_z = 1.0 / z if in_range else 1.0
            mx = fx * x * inv_z + cx
            my = fy * y * inv_z + cy
            means2d[c, n, 0] = mx
            means2d[c, n, 1] = my
            radii[c, n, 0] = 0
            radii[c, n, 1] = 0
            conics[c, n, 0] = 0.0
            conics[c, n, 1] = 0.0
            conics[c, n, 2] = 0.0
            if sh_degree >= 0:
                colors[c, n, 0] = 0.0
                colors[c, n, 1] = 0.0
                colors[c, n, 2] = 0.0
            if not in_range or opacity < ALPHA_THRESHOLD:
                continue
            lim_xn, lim_xp, lim_yn, lim_yp = _fov_limits(width, height, fx, fy, cx, cy)
            xo = min(max(x * inv_z, -lim_xn), lim_xp)
            yo = min(max(y * inv_z, -lim_yn), lim_yp)
            j00, j11 = fx * inv_z, fy * inv_z
            j02, j12 = -j00 * xo, -j11 * yo
            # A = J W (2 x 3), cov2d = A Sigma A^T + eps2d I.
            a00, a01, a02 = j00 * w00 + j02 * w20, j00 * w01 + j02 * w21, j00 * w02 + j02 * w22
            a10, a11, a12 = j11 * w10 + j12 * w20, j11 * w11 + j12 * w21, j11 * w12 + j12 * w22
            b00 = a00 * s00 + a01 * s01 + a02 * s02
            b01 = a00 * s01 + a01 * s11 + a02 * s12
            b02 = a00 * s02 + a01 * s12 + a02 * s22
            b10 = a10 * s00 + a11 * s01 + a12 * s02
            b11 = a10 * s01 + a11 * s11 + a12 * s12
            b12 = a10 * s02 + a11 * s12 + a12 * s22
            cov_xx = b00 * a00 + b01 * a01 + b02 * a02 + eps2d
            cov_xy = b00 * a10 + b01 * a11 + b02 * a12
            cov_yy = b10 * a10 + b11 * a11 + b12 * a12 + eps2d
            det = cov_xx * cov_yy - cov_xy * cov_xy
            if not det > 0.0:
                continue
            radius_x = math.ceil(extent * math.sqrt(max(cov_xx, 0.0)))
            radius_y = math.ceil(extent * math.sqrt(max(cov_yy, 0.0)))
            if radius_x <= 0 and radius_y <= 0:
                continue
            if mx + radius_x <= 0 or mx - radius_x >= width or my + radius_y <= 0 or my - radius_y >= height:
                continue
            ca, cb, cc = cov_yy / det, -cov_xy / det, cov_xx / det
            if not (math.isfinite(mx) and math.isfinite(my) and math.isfinite(ca) and math.isfinite(cb) and math.isfinite(cc)):
                continue
            conics[c, n, 0] = ca
            conics[c, n, 1] = cb
            conics[c, n, 2] = cc
            radii[c, n, 0] = radius_x
            radii[c, n, 1] = radius_y
            if sh_degree >= 0:
                dx, dy, dz = px - float(campos[c, 0]), py - float(campos[c, 1]), pz - float(campos[c, 2])
                if sh_degree > 0:
                    inv_len = 1.0 / max(math.sqrt(dx * dx + dy * dy + dz * dz), NORMALIZE_EPS)
                    dx, dy, dz = dx * inv_len, dy * inv_len, dz * inv_len
                red, green, blue = _sh_colour(sh_degree, dx, dy, dz, coeffs, n)
                colors[c, n, 0] = max(red + 0.5, 0.0)
                colors[c, n, 1] = max(green + 0.5, 0.0)
                colors[c, n, 2] = max(blue + 0.5, 0.0)


@njit(parallel=True, **_OPTIONS)
def project_backward(means, quats, scales, viewmats, Ks, campos, coeffs, sh_degree, width, height, near, far, eps2d,
                     radii, v_means2d, v_conics, v_depths, v_colors, v_means, v_quats, v_scales, v_coeffs):  # fmt: skip
    """Gradients of project_forward's outputs back to means, quats, scales and SH coefficients.

    v_means2d (C, N, 2) and v_depths (C, N) flow for every entry (as in the torch path, where a culled
    entry's means2d uses z = 1); v_conics and v_colors only for visible ones (radii > 0).
    Writes v_means (N, 3), v_quats (N, 4), v_scales (N, 3) and v_coeffs (N, K, 3) (all overwritten).
    """
    N = means.shape[0]
    C = viewmats.shape[0]
    for n in prange(N):
        qw0, qx0, qy0, qz0 = float(quats[n, 0]), float(quats[n, 1]), float(quats[n, 2]), float(quats[n, 3])
        q_norm = max(math.sqrt(qw0 * qw0 + qx0 * qx0 + qy0 * qy0 + qz0 * qz0), NORMALIZE_EPS)
        qw, qx, qy, qz = qw0 / q_norm, qx0 / q_norm, qy0 / q_norm, qz0 / q_norm
        r00, r01, r02, r10, r11, r12, r20, r21, r22 = _rotation(qw, qx, qy, qz)
        sx, sy, sz = float(scales[n, 0]), float(scales[n, 1]), float(scales[n, 2])
        m00, m01, m02 = r00 * sx, r01 * sy, r02 * sz
        m10, m11, m12 = r10 * sx, r11 * sy, r12 * sz
        m20, m21, m22 = r20 * sx, r21 * sy, r22 * sz
        s00 = m00 * m00 + m01 * m01 + m02 * m02
        s01 = m00 * m10 + m01 * m11 + m02 * m12
        s02 = m00 * m20 + m01 * m21 + m02 * m22
        s11 = m10 * m10 + m11 * m11 + m12 * m12
        s12 = m10 * m20 + m11 * m21 + m12 * m22
        s22 = m20 * m20 + m21 * m21 + m22 * m22
        px, py, pz = float(means[n, 0]), float(means[n, 1]), float(means[n, 2])
        for k in range(v_coeffs.shape[1]):  # each camera below adds its share
            for ch in range(3):
                v_coeffs[n, k, ch] = 0.0
        # Gradient of the (symmetric) world covariance, summed over cameras; off-diagonals counted once.
        vs00 = vs01 = vs02 = vs11 = vs12 = vs22 = 0.0
        vpx = vpy = vpz = 0.0
        for c in range(C):
            w00, w01, w02, t0 = float(viewmats[c, 0, 0]), float(viewmats[c, 0, 1]), float(viewmats[c, 0, 2]), float(viewmats[c, 0, 3])
            w10, w11, w12, t1 = float(viewmats[c, 1, 0]), float(viewmats[c, 1, 1]), float(viewmats[c, 1, 2]), float(viewmats[c, 1, 3])
            w20, w21, w22, t2 = float(viewmats[c, 2, 0]), float(viewmats[c, 2, 1]), float(viewmats[c, 2, 2]), float(viewmats[c, 2, 3])
            fx, fy, cx, cy = float(Ks[c, 0, 0]), float(Ks[c, 1, 1]), float(Ks[c, 0, 2]), float(Ks[c, 1, 2])
            x = w00 * px + w01 * py + w02 * pz + t0
            y = w10 * px + w11 * py + w12 * pz + t1
            z = w20 * px + w21 * py + w22 * pz + t2
            in_range = z >= near and z <= far
            inv_z = 1.0 / z if in_range else 1.0
            # Camera-space gradient (vx, vy, vz) and the gradient of inv_z.
            vmx, vmy = float(v_means2d[c, n, 0]), float(v_means2d[c, n, 1])
            vx = fx * inv_z * vmx
            vy = fy * inv_z * vmy
            vz = float(v_depths[c, n])
            v_inv_z = fx * x * vmx + fy * y * vmy
            visible = radii[c, n, 0] > 0 or radii[c, n, 1] > 0
            if visible:
                lim_xn, lim_xp, lim_yn, lim_yp = _fov_limits(width, height, fx, fy, cx, cy)
                x_ratio, y_ratio = x * inv_z, y * inv_z
                xo = min(max(x_ratio, -lim_xn), lim_xp)
                yo = min(max(y_ratio, -lim_yn), lim_yp)
                j00, j11 = fx * inv_z, fy * inv_z
                j02, j12 = -j00 * xo, -j11 * yo
                a00, a01, a02 = j00 * w00 + j02 * w20, j00 * w01 + j02 * w21, j00 * w02 + j02 * w22
                a10, a11, a12 = j11 * w10 + j12 * w20, j11 * w11 + j12 * w21, j11 * w12 + j12 * w22
                b00 = a00 * s00 + a01 * s01 + a02 * s02
                b01 = a00 * s01 + a01 * s11 + a02 * s12
                b02 = a00 * s02 + a01 * s12 + a02 * s22
                b10 = a10 * s00 + a11 * s01 + a12 * s02
                b11 = a10 * s01 + a11 * s11 + a12 * s12
                b12 = a10 * s02 + a11 * s12 + a12 * s22
                cov_xx = b00 * a00 + b01 * a01 + b02 * a02 + eps2d
                cov_xy = b00 * a10 + b01 * a11 + b02 * a12
                cov_yy = b10 * a10 + b11 * a11 + b12 * a12 + eps2d
                det = cov_xx * cov_yy - cov_xy * cov_xy
                ca, cb, cc = cov_yy / det, -cov_xy / det, cov_xx / det
                # conic = (yy, -xy, xx) / det  ->  gradient of the 2D covariance entries.
                va, vb, vc = float(v_conics[c, n, 0]), float(v_conics[c, n, 1]), float(v_conics[c, n, 2])
                v_xx = -ca * ca * va - ca * cb * vb - cb * cb * vc
                v_yy = -cb * cb * va - cb * cc * vb - cc * cc * vc
                v_xy = -2.0 * ca * cb * va - (ca * cc + cb * cb) * vb - 2.0 * cb * cc * vc
                # cov = A S A^T with V = [[v_xx, v_xy/2], [v_xy/2, v_yy]]: dA = 2 V A S, dS = A^T V A.
                h = 0.5 * v_xy
                va00 = 2.0 * (v_xx * b00 + h * b10)
                va01 = 2.0 * (v_xx * b01 + h * b11)
                va02 = 2.0 * (v_xx * b02 + h * b12)
                va10 = 2.0 * (h * b00 + v_yy * b10)
                va11 = 2.0 * (h * b01 + v_yy * b11)
                va12 = 2.0 * (h * b02 + v_yy * b12)
                # (V A) rows, then A^T (V A).
                u00, u01, u02 = v_xx * a00 + h * a10, v_xx * a01 + h * a11, v_xx * a02 + h * a12
                u10, u11, u12 = h * a00 + v_yy * a10, h * a01 + v_yy * a11, h * a02 + v_yy * a12
                vs00 += a00 * u00 + a10 * u10
                vs11 += a01 * u01 + a11 * u11
                vs22 += a02 * u02 + a12 * u12
                vs01 += a00 * u01 + a10 * u11  # the (0,1) entry; (1,0) is the same
                vs02 += a00 * u02 + a10 * u12
                vs12 += a01 * u02 + a11 * u12
                # A = J W: dJ = dA W^T (only the non-zero entries of J).
                vj00 = va00 * w00 + va01 * w01 + va02 * w02
                vj02 = va00 * w20 + va01 * w21 + va02 * w22
                vj11 = va10 * w10 + va11 * w11 + va12 * w12
                vj12 = va10 * w20 + va11 * w21 + va12 * w22
                # j00 = fx inv_z, j11 = fy inv_z, j02 = -fx inv_z xo, j12 = -fy inv_z yo.
                v_inv_z += fx * vj00 + fy * vj11 - fx * xo * vj02 - fy * yo * vj12
                v_xo = -fx * inv_z * vj02
                v_yo = -fy * inv_z * vj12
                if -lim_xn < x_ratio and x_ratio < lim_xp:
                    vx += v_xo * inv_z
                    v_inv_z += v_xo * x
                if -lim_yn < y_ratio and y_ratio < lim_yp:
                    vy += v_yo * inv_z
                    v_inv_z += v_yo * y
                if sh_degree >= 0:
                    dx, dy, dz = px - float(campos[c, 0]), py - float(campos[c, 1]), pz - float(campos[c, 2])
                    length = max(math.sqrt(dx * dx + dy * dy + dz * dz), NORMALIZE_EPS)
                    ux, uy, uz = (dx / length, dy / length, dz / length) if sh_degree > 0 else (dx, dy, dz)
                    red, green, blue = _sh_colour(sh_degree, ux, uy, uz, coeffs, n)
                    # max(value + 0.5, 0) passes the gradient where value + 0.5 >= 0 (torch's clamp_min).
                    gr = float(v_colors[c, n, 0]) if red + 0.5 >= 0.0 else 0.0
                    gg = float(v_colors[c, n, 1]) if green + 0.5 >= 0.0 else 0.0
                    gb = float(v_colors[c, n, 2]) if blue + 0.5 >= 0.0 else 0.0
                    gx, gy, gz = _sh_colour_backward(sh_degree, ux, uy, uz, coeffs, n, gr, gg, gb, v_coeffs)
                    if sh_degree > 0:  # through normalize: drop the radial part, divide by the length
                        radial = gx * ux + gy * uy + gz * uz
                        vpx += (gx - ux * radial) / length
                        vpy += (gy - uy * radial) / length
                        vpz += (gz - uz * radial) / length
            if in_range:
                vz -= inv_z * inv_z * v_inv_z
            # t = W m + T.
            vpx += w00 * vx + w10 * vy + w20 * vz
            vpy += w01 * vx + w11 * vy + w21 * vz
            vpz += w02 * vx + w12 * vy + w22 * vz
        v_means[n, 0] = vpx
        v_means[n, 1] = vpy
        v_means[n, 2] = vpz
        # Sigma = M M^T, M = R diag(s): dM = (dS + dS^T) M with the full symmetric dS.
        vm00 = 2.0 * (vs00 * m00 + vs01 * m10 + vs02 * m20)
        vm01 = 2.0 * (vs00 * m01 + vs01 * m11 + vs02 * m21)
        vm02 = 2.0 * (vs00 * m02 + vs01 * m12 + vs02 * m22)
        vm10 = 2.0 * (vs01 * m00 + vs11 * m10 + vs12 * m20)
        vm11 = 2.0 * (vs01 * m01 + vs11 * m11 + vs12 * m21)
        vm12 = 2.0 * (vs01 * m02 + vs11 * m12 + vs12 * m22)
        vm20 = 2.0 * (vs02 * m00 + vs12 * m10 + vs22 * m20)
        vm21 = 2.0 * (vs02 * m01 + vs12 * m11 + vs22 * m21)
        vm22 = 2.0 * (vs02 * m02 + vs12 * m12 + vs22 * m22)
        v_scales[n, 0] = vm00 * r00 + vm10 * r10 + vm20 * r20
        v_scales[n, 1] = vm01 * r01 + vm11 * r11 + vm21 * r21
        v_scales[n, 2] = vm02 * r02 + vm12 * r12 + vm22 * r22
        v00, v01, v02 = vm00 * sx, vm01 * sy, vm02 * sz
        v10, v11, v12 = vm10 * sx, vm11 * sy, vm12 * sz
        v20, v21, v22 = vm20 * sx, vm21 * sy, vm22 * sz
        gw = 2.0 * (-qz * v01 + qy * v02 + qz * v10 - qx * v12 - qy * v20 + qx * v21)
        gx_ = 2.0 * (qy * v01 + qz * v02 + qy * v10 - 2.0 * qx * v11 - qw * v12 + qz * v20 + qw * v21 - 2.0 * qx * v22)
        gy_ = 2.0 * (-2.0 * qy * v00 + qx * v01 + qw * v02 + qx * v10 + qz * v12 - qw * v20 + qz * v21 - 2.0 * qy * v22)
        gz_ = 2.0 * (-2.0 * qz * v00 - qw * v01 + qx * v02 + qw * v10 - 2.0 * qz * v11 + qy * v12 + qx * v20 + qy * v21)
        # normalize: dq = (g - q (q . g)) / |q|.
        dot = gw * qw + gx_ * qx + gy_ * qy + gz_ * qz
        v_quats[n, 0] = (gw - qw * dot) / q_norm
        v_quats[n, 1] = (gx_ - qx * dot) / q_norm
        v_quats[n, 2] = (gy_ - qy * dot) / q_norm
        v_quats[n, 3] = (gz_ - qz * dot) / q_norm


# -------------------------------------------------------------------------------------- binning


@njit(**_OPTIONS)
def _argsort_floats(values):
    """Stable argsort of a float64 array: LSD radix sort on its bits, 8 bits per pass.

    Floats map to unsigned keys in the same order (negative ones have every bit flipped, positive
    ones the sign bit set). The keys travel with the indices (no gathers), and bytes that are the
    same in every key are skipped without a pass: float32 depths widened to float64 have three
    all-zero low bytes, and depths of one scene share their top byte.
    """
    n = values.shape[0]
    keys = np.empty(n, dtype=np.uint64)
    bits = values.view(np.uint64)
    sign = np.uint64(1) << np.uint64(63)
    differ = np.uint64(0)
    for i in range(n):
        b = bits[i]
        keys[i] = ~b if (b & sign) else (b | sign)
        differ |= keys[i] ^ keys[0]
    order = np.arange(n)
    keys_out = np.empty(n, dtype=np.uint64)
    order_out = np.empty(n, dtype=np.int64)
    counts = np.empty(256, dtype=np.int64)
    for byte in range(8):
        shift = np.uint64(8 * byte)
        if (differ >> shift) & np.uint64(255) == np.uint64(0):
            continue
        counts[:] = 0
        for i in range(n):
            counts[(keys[i] >> shift) & np.uint64(255)] += 1
        position = 0
        for d in range(256):
            count = counts[d]
            counts[d] = position
            position += count
        for i in range(n):
            digit = (keys[i] >> shift) & np.uint64(255)
            keys_out[counts[digit]] = keys[i]
            order_out[counts[digit]] = order[i]
            counts[digit] += 1
        keys, keys_out = keys_out, keys
        order, order_out = order_out, order
    return order


@njit(**_OPTIONS)
def _pixel_range(low, high, lo, hi):
    """Integers i in [lo, hi] with low <= i <= high, as (first, last); empty when first > last.

    Compares before converting so that huge or infinite bounds never overflow an integer.
    """
    if not low > lo:
        first = lo
    elif low > hi:
        first = hi + 1
    else:
        first = int(math.ceil(low))
    if not high < hi:
        last = hi
    elif high < lo:
        last = lo - 1
    else:
        last = int(math.floor(high))
    return first, last


@njit(**_OPTIONS)
def _centre_range(centre, half_extent, lo, hi):
    """Pixels [first, last] in [lo, hi] whose centres (i + 0.5) lie within half_extent of centre."""
    return _pixel_range(centre - half_extent - 0.5, centre + half_extent - 0.5, lo, hi)


@njit(**_OPTIONS)
def _band_columns(mx, my, slope, reach, curvature, extreme, row_first, row_last, col_lo, col_hi):
    """Pixel columns [first, last] in [col_lo, col_hi] the ellipse reaches over pixel rows [row_first, row_last].

    The right edge slope*dy + sqrt(reach - curvature dy^2) is concave in dy: its maximum over the
    band is at the rightmost point's dy clamped into the band (the convex left edge mirrors it).
    """
    dy_lo = row_first + 0.5 - my
    dy_hi = row_last + 0.5 - my
    dy_right = min(max(extreme, dy_lo), dy_hi)
    dy_left = min(max(-extreme, dy_lo), dy_hi)
    right = mx + slope * dy_right + math.sqrt(max(reach - curvature * dy_right * dy_right, 0.0)) - 0.5
    left = mx + slope * dy_left - math.sqrt(max(reach - curvature * dy_left * dy_left, 0.0)) - 0.5
    return _pixel_range(left, right, col_lo, col_hi)


@njit(**_OPTIONS)
def _tile_span(mx, my, half_x, slope, reach, curvature, extreme, band_first, band_last, width):
    """Tile columns [first, last] an ellipse reaches over pixel rows [band_first, band_last] (empty: first > last).

    A box at most two tiles wide is taken as it is (the exact span could only drop a corner tile,
    and its square roots cost more than the entry it saves). Scalar arguments only: an array
    argument would cost two reference-count updates per call.
    """
    col_first, col_last = _centre_range(mx, half_x, 0, width - 1)
    if col_first > col_last:
        return 1, 0
    if col_last // TILE_SIZE - col_first // TILE_SIZE >= 2:
        col_first, col_last = _band_columns(mx, my, slope, reach, curvature, extreme, band_first, band_last, 0, width - 1)
        if col_first > col_last:
            return 1, 0
    return col_first // TILE_SIZE, col_last // TILE_SIZE


@njit(**_OPTIONS)
def _tile_rows(my, half_y, height):
    """Tile rows [first, last] reached by pixel rows within half_y of my, and those pixel rows (first > last: none)."""
    row_first, row_last = _centre_range(my, half_y, 0, height - 1)
    if row_first > row_last:
        return 1, 0, row_first, row_last
    return row_first // TILE_SIZE, row_last // TILE_SIZE, row_first, row_last


@njit(parallel=True, **_OPTIONS)
def bin_gaussians(means2d, conics, opacities, depths, colors, radii, width, height, n_workers):
    """Pack the visible (camera, Gaussian) pairs and list, per tile, those whose ellipse reaches it.

    means2d (C, N, 2), conics (C, N, 3), opacities (N,), depths (C, N), colors (C, N, D), radii (C, N, 2).
    Returns
      table (V, T_FEATURES + D + 1) in the working dtype: one row per visible pair (columns T_*),
        features = colour, then camera depth (composited like a colour: the expected depth);
      flat_ids (V,) int64: camera * N + Gaussian of each row;
      entries (M,) int32: rows grouped by (camera, tile), front to back within each tile;
      tile_offsets (C * tiles + 1,) int64: entries of tile t are entries[tile_offsets[t]:tile_offsets[t + 1]].
    Rows are ordered by depth (ties by camera, then Gaussian) before the tiles are filled, so each
    tile's list comes out depth-sorted; the fill is split over workers by contiguous depth ranges
    with per-worker tile counters, which keeps it stable.
    """
    C, N = means2d.shape[0], means2d.shape[1]
    D = colors.shape[2]
    tiles_x = (width + TILE_SIZE - 1) // TILE_SIZE
    n_tiles = tiles_x * ((height + TILE_SIZE - 1) // TILE_SIZE)

    visible_flat = np.empty(C * N, dtype=np.int64)
    n_visible = 0
    for c in range(C):
        for n in range(N):
            if radii[c, n, 0] > 0 or radii[c, n, 1] > 0:
                visible_flat[n_visible] = c * N + n
                n_visible += 1
    visible_depths = np.empty(n_visible)  # float64: exact for float32 depths, one sort for both dtypes
    for v in range(n_visible):
        f = visible_flat[v]
        visible_depths[v] = depths[f // N, f % N]
    order = _argsort_floats(visible_depths)

    V = n_visible
    table = np.empty((V, T_FEATURES + D + 1), dtype=means2d.dtype)
    flat_ids = np.empty(V, dtype=np.int64)
    for v in prange(V):
        f = visible_flat[order[v]]
        c, n = f // N, f % N
        flat_ids[v] = f
        a, b, cc = float(conics[c, n, 0]), float(conics[c, n, 1]), float(conics[c, n, 2])
        table[v, T_MX] = means2d[c, n, 0]
        table[v, T_MY] = means2d[c, n, 1]
        table[v, T_A] = conics[c, n, 0]
        table[v, T_B] = conics[c, n, 1]
        table[v, T_C] = conics[c, n, 2]
        table[v, T_OPACITY] = opacities[n]
        two_cut = 2.0 * (math.log(max(float(opacities[n]), ALPHA_THRESHOLD) / ALPHA_THRESHOLD) + BINNING_SLACK)
        det = a * cc - b * b
        table[v, T_HALF_X] = math.sqrt(two_cut * cc / det)
        table[v, T_HALF_Y] = math.sqrt(two_cut * a / det)
        table[v, T_SLOPE] = -b / a
        table[v, T_REACH] = two_cut / a
        table[v, T_CURVATURE] = det / (a * a)
        table[v, T_EXTREME_DY] = -b * math.sqrt(two_cut / (cc * det))
        for d in range(D):
            table[v, T_FEATURES + d] = colors[c, n, d]
        table[v, T_FEATURES + D] = depths[c, n]

    # Per-worker tile counts over contiguous depth ranges, then offsets, then a stable fill.
    counts = np.zeros((n_workers, C * n_tiles), dtype=np.int64)
    for w in prange(n_workers):
        for v in range(V * w // n_workers, V * (w + 1) // n_workers):
            camera = flat_ids[v] // N
            mx, my, half_x = float(table[v, T_MX]), float(table[v, T_MY]), float(table[v, T_HALF_X])
            slope, reach, curvature = float(table[v, T_SLOPE]), float(table[v, T_REACH]), float(table[v, T_CURVATURE])
            extreme = float(table[v, T_EXTREME_DY])
            ty_first, ty_last, row_first, row_last = _tile_rows(my, float(table[v, T_HALF_Y]), height)
            for ty in range(ty_first, ty_last + 1):
                tx_first, tx_last = _tile_span(mx, my, half_x, slope, reach, curvature, extreme, max(row_first, ty * TILE_SIZE),
                                               min(row_last, ty * TILE_SIZE + TILE_SIZE - 1), width)  # fmt: skip
                base = camera * n_tiles + ty * tiles_x
                for tx in range(tx_first, tx_last + 1):
                    counts[w, base + tx] += 1
    tile_offsets = np.zeros(C * n_tiles + 1, dtype=np.int64)
    cursor = np.empty((n_workers, C * n_tiles), dtype=np.int64)
    for t in range(C * n_tiles):
        position = tile_offsets[t]
        for w in range(n_workers):
            cursor[w, t] = position
            position += counts[w, t]
        tile_offsets[t + 1] = position
    entries = np.empty(tile_offsets[C * n_tiles], dtype=np.int32)
    for w in prange(n_workers):
        for v in range(V * w // n_workers, V * (w + 1) // n_workers):
            camera = flat_ids[v] // N
            mx, my, half_x = float(table[v, T_MX]), float(table[v, T_MY]), float(table[v, T_HALF_X])
            slope, reach, curvature = float(table[v, T_SLOPE]), float(table[v, T_REACH]), float(table[v, T_CURVATURE])
            extreme = float(table[v, T_EXTREME_DY])
            ty_first, ty_last, row_first, row_last = _tile_rows(my, float(table[v, T_HALF_Y]), height)
            for ty in range(ty_first, ty_last + 1):
                tx_first, tx_last = _tile_span(mx, my, half_x, slope, reach, curvature, extreme, max(row_first, ty * TILE_SIZE),
                                               min(row_last, ty * TILE_SIZE + TILE_SIZE - 1), width)  # fmt: skip
                base = camera * n_tiles + ty * tiles_x
                for tx in range(tx_first, tx_last + 1):
                    entries[cursor[w, base + tx]] = v
                    cursor[w, base + tx] += 1
    return table, flat_ids, entries, tile_offsets


# ----------------------------------------------------------------------------------- compositing
#
# Pixels of a tile are stored block by block: pixel (lx, ly) of the tile is at
# ((ly // BLOCK_SIZE) * BLOCKS_PER_SIDE + lx // BLOCK_SIZE) * BLOCK_PIXELS + (ly % BLOCK_SIZE) * BLOCK_SIZE + lx % BLOCK_SIZE,
# so a block is BLOCK_PIXELS consecutive values and compositing one Gaussian over it is one loop
# that LLVM turns into SIMD code. For that the loops are written with care: every index is unsigned
# (a signed index gets Numba's negative-index fix-up, which hides the access pattern), the per-pixel
# state of a tile lives in one array at fixed offsets, and there are no branches, calls or reductions
# over floats inside (a reduction would need reassociation; any_stop / touched are boolean ORs).
# Fragment maths, identical in forward and backward (so both take exactly the same fragments):
#   d = mean - pixel centre, sigma = dx (a/2 dx + b dy) + c/2 dy^2, alpha = min(MAX_ALPHA, o exp(-sigma)).

U_BLOCK = np.uint64(BLOCK_PIXELS)
U_TILE = np.uint64(TILE_PIXELS)
# Forward state of a tile: transmittance, then the accumulated features, one TILE_PIXELS row each.
FWD_TRANS = np.uint64(0)
FWD_ACC = np.uint64(TILE_PIXELS)
FWD_ACC0, FWD_ACC1, FWD_ACC2, FWD_ACC3 = (np.uint64(TILE_PIXELS * (1 + f)) for f in range(4))
# Backward state of a tile: transmittance, "behind" (see composite_backward), then dL/d accum per feature.
BWD_TRANS = np.uint64(0)
BWD_BEHIND = np.uint64(TILE_PIXELS)
BWD_GRAD = np.uint64(2 * TILE_PIXELS)
BWD_GRAD0, BWD_GRAD1, BWD_GRAD2, BWD_GRAD3 = (np.uint64(TILE_PIXELS * (2 + f)) for f in range(4))
# Per-lane gradient sums of one Gaussian, one BLOCK_PIXELS row each: d/d mean x, mean y, 2 d/da,
# d/db, 2 d/dc (sigma's 1/2 applied once at the end), d/d opacity, then d/d features.
LG_MX, LG_MY, LG_A, LG_B, LG_C, LG_OPACITY = (np.uint64(BLOCK_PIXELS * q) for q in range(N_PARAMS))
LG_F0, LG_F1, LG_F2, LG_F3 = (np.uint64(BLOCK_PIXELS * (N_PARAMS + f)) for f in range(4))


@njit(**_OPTIONS)
def _deal_tiles(costs, n_workers):
    """Tiles in longest-first order and the worker of each: each tile goes to the least-loaded worker.

    Deterministic (ties by tile index), so gradients summed per worker are reproducible.
    """
    n = costs.shape[0]
    order = np.argsort(-costs, kind="mergesort")
    owner = np.empty(n, dtype=np.int64)
    load = np.zeros(n_workers, dtype=np.int64)
    for i in range(n):
        best = 0
        for w in range(1, n_workers):
            if load[w] < load[best]:
                best = w
        owner[order[i]] = best
        load[best] += costs[order[i]] + 1
    return order, owner


@njit(**_OPTIONS)
def _tile_geometry(tile, width, height):
    """(camera, x0, y0, x1, y1): the tile's camera and pixel rectangle [x0, x1) x [y0, y1)."""
    tiles_x = (width + TILE_SIZE - 1) // TILE_SIZE
    n_tiles = tiles_x * ((height + TILE_SIZE - 1) // TILE_SIZE)
    camera, index = tile // n_tiles, tile % n_tiles
    x0, y0 = (index % tiles_x) * TILE_SIZE, (index // tiles_x) * TILE_SIZE
    return camera, x0, y0, min(x0 + TILE_SIZE, width), min(y0 + TILE_SIZE, height)


@njit(**_OPTIONS)
def _tile_pixel(lx, ly):
    """Index of tile pixel (lx, ly) in the block-by-block layout."""
    block = (ly // BLOCK_SIZE) * BLOCKS_PER_SIDE + lx // BLOCK_SIZE
    return block * BLOCK_PIXELS + (ly % BLOCK_SIZE) * BLOCK_SIZE + lx % BLOCK_SIZE


@njit(**_OPTIONS)
def _lane_offsets(sample):
    """(2 * BLOCK_PIXELS,) pixel-centre offsets of a block's lanes from its corner: all x, then all y."""
    dtype = sample.dtype.type
    lanes = np.empty(2 * BLOCK_PIXELS, dtype=sample.dtype)
    for lane in range(BLOCK_PIXELS):
        lanes[lane] = dtype(lane % BLOCK_SIZE) + dtype(0.5)
        lanes[BLOCK_PIXELS + lane] = dtype(lane // BLOCK_SIZE) + dtype(0.5)
    return lanes


@njit(inline="always", **_OPTIONS)
def _forward_block_rgbd(state, last_local, lanes, base, dxm, dym, half_a, cb, half_c, opacity, f0, f1, f2, f3, position):
    """Composite one Gaussian over one block with 4 features (colour + depth). True if a pixel stopped."""
    dtype = state.dtype.type
    zero, one = dtype(0.0), dtype(1.0)
    alpha_min, alpha_max, t_min = dtype(ALPHA_THRESHOLD), dtype(MAX_ALPHA), dtype(TRANSMITTANCE_MIN)
    any_stop = False
    for lane in range(BLOCK_PIXELS):
        ul = np.uint64(lane)
        p = base + ul
        t = state[FWD_TRANS + p]
        dx = dxm - lanes[ul]
        dy = dym - lanes[U_BLOCK + ul]
        sigma = dx * (half_a * dx + cb * dy) + half_c * dy * dy
        alpha = min(alpha_max, opacity * exp_neg(sigma))
        valid = (t > zero) & (alpha >= alpha_min)
        t_next = t * (one - alpha)
        stop = valid & (t_next <= t_min)
        keep = valid & (t_next > t_min)
        weight = alpha * t if keep else zero
        state[FWD_ACC0 + p] += weight * f0
        state[FWD_ACC1 + p] += weight * f1
        state[FWD_ACC2 + p] += weight * f2
        state[FWD_ACC3 + p] += weight * f3
        state[FWD_TRANS + p] = -t if stop else (t_next if keep else t)  # a stopped pixel keeps T, marked by its sign
        last_local[p] = position if keep else last_local[p]
        any_stop |= stop
    return any_stop


@njit(inline="always", **_OPTIONS)
def _forward_block(state, last_local, lanes, weights, base, dxm, dym, half_a, cb, half_c, opacity, features_row, position):
    """_forward_block_rgbd for any number of features: the weights first, then one loop per feature."""
    dtype = state.dtype.type
    zero, one = dtype(0.0), dtype(1.0)
    alpha_min, alpha_max, t_min = dtype(ALPHA_THRESHOLD), dtype(MAX_ALPHA), dtype(TRANSMITTANCE_MIN)
    any_stop = False
    for lane in range(BLOCK_PIXELS):
        ul = np.uint64(lane)
        p = base + ul
        t = state[FWD_TRANS + p]
        dx = dxm - lanes[ul]
        dy = dym - lanes[U_BLOCK + ul]
        sigma = dx * (half_a * dx + cb * dy) + half_c * dy * dy
        alpha = min(alpha_max, opacity * exp_neg(sigma))
        valid = (t > zero) & (alpha >= alpha_min)
        t_next = t * (one - alpha)
        stop = valid & (t_next <= t_min)
        keep = valid & (t_next > t_min)
        weights[ul] = alpha * t if keep else zero
        state[FWD_TRANS + p] = -t if stop else (t_next if keep else t)
        last_local[p] = position if keep else last_local[p]
        any_stop |= stop
    for f in range(features_row.shape[0]):
        feature = features_row[f]
        row = FWD_ACC + np.uint64(f) * U_TILE + base
        for lane in range(BLOCK_PIXELS):
            state[row + np.uint64(lane)] += weights[np.uint64(lane)] * feature
    return any_stop


@njit(**_OPTIONS)
def _entry_blocks(table, v, x0, y0, x1, y1):
    """The blocks of tile [x0, x1) x [y0, y1) row v's box reaches: (by_first, by_last, bx_first, bx_last, exact).

    exact: the box is at least 3 blocks wide, so the per-band ellipse span (_band_block_columns) is
    worth its two square roots; narrower boxes just use their block columns.
    """
    row_first, row_last = _centre_range(float(table[v, T_MY]), float(table[v, T_HALF_Y]), y0, y1 - 1)
    col_first, col_last = _centre_range(float(table[v, T_MX]), float(table[v, T_HALF_X]), x0, x1 - 1)
    if row_first > row_last or col_first > col_last:
        return 1, 0, 1, 0, False
    bx_first, bx_last = (col_first - x0) // BLOCK_SIZE, (col_last - x0) // BLOCK_SIZE
    return (row_first - y0) // BLOCK_SIZE, (row_last - y0) // BLOCK_SIZE, bx_first, bx_last, bx_last - bx_first >= 2


@njit(**_OPTIONS)
def _band_block_columns(table, v, by, x0, y0, x1, y1):
    """Block columns [first, last] of band ``by`` (BLOCK_SIZE pixel rows) that row v's ellipse reaches."""
    band_first = max(y0 + by * BLOCK_SIZE, y0)
    band_last = min(y0 + by * BLOCK_SIZE + BLOCK_SIZE - 1, y1 - 1)
    col_first, col_last = _band_columns(float(table[v, T_MX]), float(table[v, T_MY]), float(table[v, T_SLOPE]),
                                        float(table[v, T_REACH]), float(table[v, T_CURVATURE]),
                                        float(table[v, T_EXTREME_DY]), band_first, band_last, x0, x1 - 1)  # fmt: skip
    if col_first > col_last:
        return 1, 0
    return (col_first - x0) // BLOCK_SIZE, (col_last - x0) // BLOCK_SIZE


@njit(**_OPTIONS)
def _entry_block_mask(table, v, x0, y0, x1, y1):
    """Bit by * BLOCKS_PER_SIDE + bx set for each block of tile [x0, x1) x [y0, y1) row v's ellipse reaches.

    Computed by the forward pass for the entries it reaches (entries behind a finished tile never
    are, nor does the backward pass need them) and kept for the backward pass.
    """
    by_first, by_last, bx_first, bx_last, exact = _entry_blocks(table, v, x0, y0, x1, y1)
    mask = 0
    for by in range(by_first, by_last + 1):
        if exact:
            bx_first, bx_last = _band_block_columns(table, v, by, x0, y0, x1, y1)
        for bx in range(bx_first, bx_last + 1):
            mask |= 1 << (by * BLOCKS_PER_SIDE + bx)
    return mask


@njit(parallel=True, **_OPTIONS)
def composite_forward(table, entries, tile_offsets, width, height, n_workers, accum, transmittance, last, tile_work,
                      entry_masks):  # fmt: skip
    """Front-to-back compositing of every tile, tiles shared among workers.

    Writes accum (C, H, W, F) = sum of alpha_i T_i features_i, transmittance (C, H, W) (T after the
    last composited fragment), last (C, H, W) int32 (1 + position in the tile's list of the last
    composited fragment, 0 if none), tile_work (C * tiles,) (blocks evaluated: the cost estimate
    the backward pass deals tiles by) and entry_masks (M,) uint16 (the blocks each entry reaches, see
    _entry_block_mask; written for the entries up to where the tile finished, all the backward reads).
    """
    dtype = table.dtype.type
    zero, one = dtype(0.0), dtype(1.0)
    F = table.shape[1] - T_FEATURES
    n_all = tile_offsets.shape[0] - 1
    order, owner = _deal_tiles(tile_offsets[1:] - tile_offsets[:-1], n_workers)
    for w in prange(n_workers):
        state = np.empty((1 + F) * TILE_PIXELS, dtype=table.dtype)
        last_local = np.empty(TILE_PIXELS, dtype=np.int32)
        weights = np.empty(BLOCK_PIXELS, dtype=table.dtype)
        live = np.empty(TILE_BLOCKS, dtype=np.int64)  # pixels of each block still compositing
        lanes = _lane_offsets(table[:0, 0])
        for i in range(n_all):
            tile = order[i]
            if owner[tile] != w:
                continue
            camera, x0, y0, x1, y1 = _tile_geometry(tile, width, height)
            state[:] = zero  # T = 0: pixels outside the image never composite
            last_local[:] = 0
            live[:] = 0
            for ly in range(y1 - y0):
                for lx in range(x1 - x0):
                    state[_tile_pixel(lx, ly)] = one
                    live[(ly // BLOCK_SIZE) * BLOCKS_PER_SIDE + lx // BLOCK_SIZE] += 1
            n_live = (x1 - x0) * (y1 - y0)
            live_bits = 0  # bit b: block b still has a pixel compositing
            for block in range(TILE_BLOCKS):
                live_bits |= (1 << block) if live[block] > 0 else 0
            work = 0
            start = tile_offsets[tile]
            for k in range(start, tile_offsets[tile + 1]):
                v = entries[k]
                reach = _entry_block_mask(table, v, x0, y0, x1, y1)
                entry_masks[k] = reach
                mask = reach & live_bits
                if mask == 0:
                    continue
                mx, my, cb, opacity = table[v, T_MX], table[v, T_MY], table[v, T_B], table[v, T_OPACITY]
                half_a, half_c = dtype(0.5) * table[v, T_A], dtype(0.5) * table[v, T_C]
                position = np.int32(k - start + 1)
                for by in range(BLOCKS_PER_SIDE):
                    band = (mask >> (by * BLOCKS_PER_SIDE)) & BAND_BITS
                    if band == 0:
                        continue
                    dym = my - dtype(y0 + by * BLOCK_SIZE)
                    for bx in range(BLOCKS_PER_SIDE):
                        if (band >> bx) & 1 == 0:
                            continue
                        block = by * BLOCKS_PER_SIDE + bx
                        work += 1
                        dxm = mx - dtype(x0 + bx * BLOCK_SIZE)
                        base = np.uint64(block * BLOCK_PIXELS)
                        if F == 4:
                            stopped = _forward_block_rgbd(state, last_local, lanes, base, dxm, dym, half_a, cb, half_c,
                                                          opacity, table[v, T_FEATURES], table[v, T_FEATURES + 1],
                                                          table[v, T_FEATURES + 2], table[v, T_FEATURES + 3], position)  # fmt: skip
                        else:
                            stopped = _forward_block(state, last_local, lanes, weights, base, dxm, dym, half_a, cb, half_c,
                                                     opacity, table[v, T_FEATURES:], position)  # fmt: skip
                        if stopped:
                            alive = 0
                            for lane in range(BLOCK_PIXELS):
                                alive += 1 if state[base + np.uint64(lane)] > zero else 0
                            n_live -= live[block] - alive
                            live[block] = alive
                            if alive == 0:
                                live_bits &= ~(1 << block)
                if n_live == 0:
                    break
            tile_work[tile] = work
            for row in range(y0, y1):
                for col in range(x0, x1):
                    p = _tile_pixel(col - x0, row - y0)
                    transmittance[camera, row, col] = abs(state[p])
                    last[camera, row, col] = last_local[p]
                    for f in range(F):
                        accum[camera, row, col, f] = state[(1 + f) * TILE_PIXELS + p]


@njit(inline="always", **_OPTIONS)
def _backward_block_rgbd(state, last_local, lanes, lane_grad, base, dxm, dym, ca, cb, cc, half_a, half_c, opacity,
                         f0, f1, f2, f3, position):  # fmt: skip
    """Back-to-front step of one Gaussian over one block with 4 features. True if it touched a pixel."""
    dtype = state.dtype.type
    zero, one = dtype(0.0), dtype(1.0)
    alpha_min, alpha_max = dtype(ALPHA_THRESHOLD), dtype(MAX_ALPHA)
    touched = False
    for lane in range(BLOCK_PIXELS):
        ul = np.uint64(lane)
        p = base + ul
        dx = dxm - lanes[ul]
        dy = dym - lanes[U_BLOCK + ul]
        sigma = dx * (half_a * dx + cb * dy) + half_c * dy * dy
        vis = exp_neg(sigma)
        raw = opacity * vis
        alpha = min(alpha_max, raw)
        valid = (position < last_local[p]) & (alpha >= alpha_min)
        inv_one_minus = one / (one - alpha)
        t_after = state[BWD_TRANS + p]
        t = t_after * inv_one_minus  # T in front of this fragment
        weight = alpha * t
        g0, g1, g2, g3 = state[BWD_GRAD0 + p], state[BWD_GRAD1 + p], state[BWD_GRAD2 + p], state[BWD_GRAD3 + p]
        feature_dot_grad = f0 * g0 + f1 * g1 + f2 * g2 + f3 * g3
        behind = state[BWD_BEHIND + p]
        grad_alpha = feature_dot_grad * t - behind * inv_one_minus
        state[BWD_TRANS + p] = t if valid else t_after
        state[BWD_BEHIND + p] = behind + weight * feature_dot_grad if valid else behind
        w_valid = weight if valid else zero
        lane_grad[LG_F0 + ul] += w_valid * g0
        lane_grad[LG_F1 + ul] += w_valid * g1
        lane_grad[LG_F2 + ul] += w_valid * g2
        lane_grad[LG_F3 + ul] += w_valid * g3
        flows = valid & (raw <= alpha_max)  # a capped alpha passes no gradient to its exponent
        grad_sigma = -raw * grad_alpha if flows else zero
        lane_grad[LG_MX + ul] += grad_sigma * (ca * dx + cb * dy)
        lane_grad[LG_MY + ul] += grad_sigma * (cb * dx + cc * dy)
        lane_grad[LG_A + ul] += grad_sigma * dx * dx
        lane_grad[LG_B + ul] += grad_sigma * dx * dy
        lane_grad[LG_C + ul] += grad_sigma * dy * dy
        lane_grad[LG_OPACITY + ul] += vis * grad_alpha if flows else zero
        touched |= valid
    return touched


@njit(inline="always", **_OPTIONS)
def _backward_block(state, last_local, lanes, lane_grad, scratch, base, dxm, dym, ca, cb, cc, half_a, half_c, opacity,
                    features_row, position):  # fmt: skip
    """_backward_block_rgbd for any number of features (per-feature loops around the main one).

    scratch (2 * BLOCK_PIXELS,): per-lane feature . grad, then per-lane weights.
    """
    dtype = state.dtype.type
    zero, one = dtype(0.0), dtype(1.0)
    alpha_min, alpha_max = dtype(ALPHA_THRESHOLD), dtype(MAX_ALPHA)
    F = features_row.shape[0]
    for lane in range(BLOCK_PIXELS):
        scratch[np.uint64(lane)] = zero
    for f in range(F):
        feature = features_row[f]
        row = BWD_GRAD + np.uint64(f) * U_TILE + base
        for lane in range(BLOCK_PIXELS):
            scratch[np.uint64(lane)] += feature * state[row + np.uint64(lane)]
    touched = False
    for lane in range(BLOCK_PIXELS):
        ul = np.uint64(lane)
        p = base + ul
        dx = dxm - lanes[ul]
        dy = dym - lanes[U_BLOCK + ul]
        sigma = dx * (half_a * dx + cb * dy) + half_c * dy * dy
        vis = exp_neg(sigma)
        raw = opacity * vis
        alpha = min(alpha_max, raw)
        valid = (position < last_local[p]) & (alpha >= alpha_min)
        inv_one_minus = one / (one - alpha)
        t_after = state[BWD_TRANS + p]
        t = t_after * inv_one_minus
        weight = alpha * t
        feature_dot_grad = scratch[ul]
        behind = state[BWD_BEHIND + p]
        grad_alpha = feature_dot_grad * t - behind * inv_one_minus
        state[BWD_TRANS + p] = t if valid else t_after
        state[BWD_BEHIND + p] = behind + weight * feature_dot_grad if valid else behind
        scratch[U_BLOCK + ul] = weight if valid else zero
        flows = valid & (raw <= alpha_max)
        grad_sigma = -raw * grad_alpha if flows else zero
        lane_grad[LG_MX + ul] += grad_sigma * (ca * dx + cb * dy)
        lane_grad[LG_MY + ul] += grad_sigma * (cb * dx + cc * dy)
        lane_grad[LG_A + ul] += grad_sigma * dx * dx
        lane_grad[LG_B + ul] += grad_sigma * dx * dy
        lane_grad[LG_C + ul] += grad_sigma * dy * dy
        lane_grad[LG_OPACITY + ul] += vis * grad_alpha if flows else zero
        touched |= valid
    for f in range(F):
        row = BWD_GRAD + np.uint64(f) * U_TILE + base
        out = np.uint64((N_PARAMS + f) * BLOCK_PIXELS)
        for lane in range(BLOCK_PIXELS):
            lane_grad[out + np.uint64(lane)] += scratch[U_BLOCK + np.uint64(lane)] * state[row + np.uint64(lane)]
    return touched


@njit(inline="always", **_OPTIONS)
def _sum_lanes_into(lane_grad, out):
    """out[q] += the sum of lane_grad's row q (BLOCK_PIXELS = 16 lanes), for every row.

    Pairwise, halving the row each step with constant trip counts (so LLVM unrolls and vectorises
    it): short dependency chains and always the same order (the result is reproducible). The
    rows are left holding partial sums; the caller zeroes them before the next Gaussian.
    """
    for q in range(out.shape[0]):
        row = np.uint64(q * BLOCK_PIXELS)
        for lane in range(8):
            lane_grad[row + np.uint64(lane)] += lane_grad[row + np.uint64(lane + 8)]
        for lane in range(4):
            lane_grad[row + np.uint64(lane)] += lane_grad[row + np.uint64(lane + 4)]
        for lane in range(2):
            lane_grad[row + np.uint64(lane)] += lane_grad[row + np.uint64(lane + 2)]
        out[q] += float(lane_grad[row]) + float(lane_grad[row + np.uint64(1)])


@njit(parallel=True, **_OPTIONS)
def composite_backward(table, entries, entry_masks, tile_offsets, width, height, n_workers, transmittance, last,
                       tile_work, v_accum, v_transmittance):  # fmt: skip
    """Gradients of composite_forward's accum and transmittance with respect to params and features.

    Per pixel, back to front from its last composited fragment: T is recovered by division
    (T_i = T_{i+1} / (1 - alpha_i)), and "behind" = T_final dL/dT_final + the sum over the fragments
    behind of w_j (f_j . g) gives dL/dalpha_i = T_i (f_i . g) - behind / (1 - alpha_i) (gsplat's
    backward). A capped alpha passes no gradient to the exponent (as in gsplat and the torch path).
    Returns (V, 6 + F) float64: d/d params columns then d/d features, summed over workers in worker order.
    """
    dtype = table.dtype.type
    zero = dtype(0.0)
    V = table.shape[0]
    F = table.shape[1] - T_FEATURES
    n_all = tile_offsets.shape[0] - 1
    order, owner = _deal_tiles(tile_work, n_workers)
    grad = np.zeros((n_workers, V, N_PARAMS + F))
    sink = np.zeros(n_workers)
    for w in prange(n_workers):
        state = np.empty((2 + F) * TILE_PIXELS, dtype=table.dtype)
        last_local = np.empty(TILE_PIXELS, dtype=np.int32)
        deepest_in_block = np.empty(TILE_BLOCKS, dtype=np.int64)
        blocks_by_depth = np.empty(TILE_BLOCKS, dtype=np.int64)
        lane_grad = np.empty((N_PARAMS + F) * BLOCK_PIXELS, dtype=table.dtype)
        scratch = np.empty(2 * BLOCK_PIXELS, dtype=table.dtype)
        lanes = _lane_offsets(table[:0, 0])
        for i in range(n_all):
            tile = order[i]
            if owner[tile] != w:
                continue
            camera, x0, y0, x1, y1 = _tile_geometry(tile, width, height)
            state[:] = zero
            last_local[:] = 0
            deepest_in_block[:] = 0
            for row in range(y0, y1):
                for col in range(x0, x1):
                    p = _tile_pixel(col - x0, row - y0)
                    t_final = transmittance[camera, row, col]
                    state[p] = t_final
                    state[TILE_PIXELS + p] = t_final * v_transmittance[camera, row, col]
                    last_local[p] = last[camera, row, col]
                    block = p // BLOCK_PIXELS
                    deepest_in_block[block] = max(deepest_in_block[block], last_local[p])
                    for f in range(F):
                        state[(2 + f) * TILE_PIXELS + p] = v_accum[camera, row, col, f]
            deepest = deepest_in_block.max()
            # Walking back to front, block b joins once position < deepest_in_block[b]: blocks in
            # that order (deepest first), and the bits of those that have joined.
            blocks_by_depth[:] = np.argsort(-deepest_in_block, kind="mergesort")
            joined, active_bits = 0, 0
            start = tile_offsets[tile]
            prefetched = 0.0
            for k in range(start + deepest - 1, start - 1, -1):
                position = np.int32(k - start)
                while joined < TILE_BLOCKS and deepest_in_block[blocks_by_depth[joined]] > position:
                    active_bits |= 1 << blocks_by_depth[joined]
                    joined += 1
                mask = int(entry_masks[k]) & active_bits
                if mask == 0:
                    continue
                v = entries[k]
                if k > start:
                    # Touch the next Gaussian's table and gradient rows now: their cache misses then
                    # overlap this Gaussian's work instead of stalling the next one.
                    v_next = entries[k - 1]
                    prefetched += float(table[v_next, T_HALF_Y]) + grad[w, v_next, 0]
                mx, my, ca, cb, cc, opacity = table[v, T_MX], table[v, T_MY], table[v, T_A], table[v, T_B], table[v, T_C], table[v, T_OPACITY]
                half_a, half_c = dtype(0.5) * ca, dtype(0.5) * cc
                touched = False
                lane_grad[:] = zero
                for by in range(BLOCKS_PER_SIDE):
                    band = (mask >> (by * BLOCKS_PER_SIDE)) & BAND_BITS
                    if band == 0:
                        continue
                    dym = my - dtype(y0 + by * BLOCK_SIZE)
                    for bx in range(BLOCKS_PER_SIDE):
                        if (band >> bx) & 1 == 0:
                            continue
                        block = by * BLOCKS_PER_SIDE + bx
                        dxm = mx - dtype(x0 + bx * BLOCK_SIZE)
                        base = np.uint64(block * BLOCK_PIXELS)
                        if F == 4:
                            touched |= _backward_block_rgbd(state, last_local, lanes, lane_grad, base, dxm, dym, ca, cb, cc,
                                                            half_a, half_c, opacity, table[v, T_FEATURES], table[v, T_FEATURES + 1],
                                                            table[v, T_FEATURES + 2], table[v, T_FEATURES + 3], position)  # fmt: skip
                        else:
                            touched |= _backward_block(state, last_local, lanes, lane_grad, scratch, base, dxm, dym, ca, cb,
                                                       cc, half_a, half_c, opacity, table[v, T_FEATURES:], position)  # fmt: skip
                if touched:
                    _sum_lanes_into(lane_grad, grad[w, v])
            sink[w] += prefetched  # keeps the prefetching loads alive
    total = np.empty((V, N_PARAMS + F))
    for v in prange(V):
        for j in range(N_PARAMS + F):
            s = 0.0
            for w in range(n_workers):
                s += grad[w, v, j]
            total[v, j] = s
        # The lanes summed d/da and d/dc without sigma's factor 1/2.
        total[v, T_A] *= 0.5
        total[v, T_C] *= 0.5
    return total


@njit(**_OPTIONS)
def scatter_gradients(total, flat_ids, N, v_means2d, v_conics, v_colors, v_depths, v_opacities):
    """Spread the packed gradients (V, 6 + D + 1) onto (C, N, ...) tensors and opacities (N,) (summed over cameras)."""
    D = v_colors.shape[2]
    for v in range(total.shape[0]):
        f = flat_ids[v]
        c, n = f // N, f % N
        v_means2d[c, n, 0] = total[v, T_MX]
        v_means2d[c, n, 1] = total[v, T_MY]
        v_conics[c, n, 0] = total[v, T_A]
        v_conics[c, n, 1] = total[v, T_B]
        v_conics[c, n, 2] = total[v, T_C]
        v_opacities[n] += total[v, T_OPACITY]
        for d in range(D):
            v_colors[c, n, d] = total[v, N_PARAMS + d]
        v_depths[c, n] = total[v, N_PARAMS + D]

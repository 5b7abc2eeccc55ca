"""A slow, obvious, dense Gaussian rasterizer: the yardstick for radiantforge.gaussians.rasterize.

Written independently of the fast path and in float64: every pixel looks at every Gaussian, one
Gaussian at a time in depth order, exactly as the rules read (gsplat 1.5.3 semantics):

    alpha = min(0.999, o * exp(-0.5 d^T Sigma^-1 d)), skipped when < 1/255;
    a pixel stops before the fragment that would bring T to <= 1e-4;
    colour = sum_i alpha_i T_i c_i + T_final * background; depth = sum_i alpha_i T_i z_i / (1 - T_final).

No tiles, no bounding boxes, no binning: only near/far and determinant culling (the other culls
of the fast path, opacity < 1/255 and off-screen boxes, can only remove Gaussians whose alpha
never reaches 1/255 on a pixel, so leaving them out here checks that claim too).
Cost: O(C * N * H * W); fine for tests (N ~ 100, 40 x 30 pixels) and the benchmark's small cases.
"""

from __future__ import annotations

import torch

ALPHA_MIN = 1.0 / 255.0
ALPHA_MAX = 0.999
T_MIN = 1e-4
FOV_MARGIN = 0.3

# Real SH basis (3DGS convention), written out term by term.
_C0 = 0.28209479177387814
_C1 = 0.4886025119029199


def _sh_basis(d: int, v: torch.Tensor) -> list[torch.Tensor]:
    x, y, z = v[..., 0], v[..., 1], v[..., 2]
    out = [torch.full_like(x, _C0)]
    if d >= 1:
        out += [-_C1 * y, _C1 * z, -_C1 * x]
    if d >= 2:
        out += [
            1.0925484305920792 * x * y,
            -1.0925484305920792 * y * z,
            0.31539156525252005 * (3 * z * z - 1),
            -1.0925484305920792 * x * z,
            0.5462742152960396 * (x * x - y * y),
        ]
    if d >= 3:
        out += [
            -0.5900435899266435 * y * (3 * x * x - y * y),
            2.890611442640554 * x * y * z,
            -0.4570457994644658 * y * (5 * z * z - 1),
            0.3731763325901154 * z * (5 * z * z - 3),
            -0.4570457994644658 * x * (5 * z * z - 1),
            1.445305721320277 * z * (x * x - y * y),
            -0.5900435899266435 * x * (x * x - 3 * y * y),
        ]
    return out


def _rotation(q: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) rotation matrices of (N, 4) wxyz quaternions (normalised here)."""
    q = q / q.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    return torch.stack(
        [
            torch.stack([1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)], -1),
            torch.stack([2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)], -1),
            torch.stack([2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)], -1),
        ],
        dim=-2,
    )


def reference_rasterize(
    means, quats, scales, opacities, colors, viewmats, Ks, width, height,
    sh_degree=None, background=None, near_plane=0.01, far_plane=1e10, eps2d=0.3,
):  # fmt: skip
    """Same inputs and meaning as ``rasterize``; returns colors (C,H,W,D), alphas (C,H,W,1), depths (C,H,W,1) in float64."""
    f64 = torch.float64
    means, quats, scales, opacities = means.to(f64), quats.to(f64), scales.to(f64), opacities.to(f64)
    colors, viewmats, Ks = colors.to(f64), viewmats.to(f64), Ks.to(f64)
    C, N = viewmats.shape[0], means.shape[0]
    D = 3 if sh_degree is not None else colors.shape[1]
    ys, xs = torch.meshgrid(torch.arange(height, dtype=f64) + 0.5, torch.arange(width, dtype=f64) + 0.5, indexing="ij")
    pixels = torch.stack([xs.reshape(-1), ys.reshape(-1)], dim=-1)  # (H*W, 2)
    out_c, out_a, out_d = [], [], []
    for cam in range(C):
        R, t = viewmats[cam, :3, :3], viewmats[cam, :3, 3]
        fx, fy, cx, cy = Ks[cam, 0, 0], Ks[cam, 1, 1], Ks[cam, 0, 2], Ks[cam, 1, 2]
        centre = torch.linalg.inv(viewmats[cam])[:3, 3]  # as gsplat: exact even if R is not quite orthonormal
        # Every Gaussian's camera-space mean, covariance, 2D covariance and colour, all at once.
        p_all = means @ R.T + t  # (N, 3)
        M_all = _rotation(quats) * scales[:, None, :]
        cov_cam = R @ (M_all @ M_all.transpose(1, 2)) @ R.T  # (N, 3, 3)
        in_range = (p_all[:, 2] >= near_plane) & (p_all[:, 2] <= far_plane)
        z = torch.where(in_range, p_all[:, 2], torch.ones_like(p_all[:, 2]))  # culled: keep inf out of the graph
        lim_x = torch.clamp(p_all[:, 0] / z, -(cx / fx + FOV_MARGIN * width / 2 / fx), (width - cx) / fx + FOV_MARGIN * width / 2 / fx)
        lim_y = torch.clamp(p_all[:, 1] / z, -(cy / fy + FOV_MARGIN * height / 2 / fy), (height - cy) / fy + FOV_MARGIN * height / 2 / fy)
        zero = torch.zeros_like(z)
        J = torch.stack(
            [torch.stack([fx / z, zero, -fx * lim_x / z], -1), torch.stack([zero, fy / z, -fy * lim_y / z], -1)], dim=1
        )  # (N, 2, 3)
        cov2 = J @ cov_cam @ J.transpose(1, 2) + eps2d * torch.eye(2, dtype=f64)
        det = cov2[:, 0, 0] * cov2[:, 1, 1] - cov2[:, 0, 1] * cov2[:, 1, 0]
        inv_cov = torch.stack(
            [torch.stack([cov2[:, 1, 1], -cov2[:, 0, 1]], -1), torch.stack([-cov2[:, 1, 0], cov2[:, 0, 0]], -1)], dim=1
        ) / det[:, None, None]
        mean2 = torch.stack([fx * p_all[:, 0] / z + cx, fy * p_all[:, 1] / z + cy], dim=-1)
        if sh_degree is None:
            col = colors
        else:
            v = means - centre
            basis = _sh_basis(sh_degree, v / v.norm(dim=-1, keepdim=True))
            col = torch.clamp_min(sum(b[:, None] * colors[:, k] for k, b in enumerate(basis)) + 0.5, 0.0)
        fragments = []  # (depth, index): only near/far and determinant culling
        for i in range(N):
            if bool(in_range[i]) and float(det[i]) > 0:
                fragments.append((float(z[i]), i))
        fragments.sort()
        T = torch.ones(len(pixels), dtype=f64)
        done = torch.zeros(len(pixels), dtype=torch.bool)
        acc = torch.zeros(len(pixels), D, dtype=f64)
        acc_depth = torch.zeros(len(pixels), dtype=f64)
        for _, i in fragments:
            d = pixels - mean2[i]
            power = 0.5 * torch.einsum("pi,ij,pj->p", d, inv_cov[i], d)
            alpha = torch.clamp_max(opacities[i] * torch.exp(-power), ALPHA_MAX)
            counts = (alpha >= ALPHA_MIN) & ~done
            next_T = T * (1 - alpha)
            stops = counts & (next_T <= T_MIN)
            done = done | stops
            use = counts & ~stops
            weight = torch.where(use, alpha * T, torch.zeros_like(T))
            acc = acc + weight[:, None] * col[i][None, :]
            acc_depth = acc_depth + weight * z[i]
            T = torch.where(use, next_T, T)
        colour = acc
        if background is not None:
            bg = background.to(f64).expand(C, D)[cam]
            colour = colour + T[:, None] * bg[None, :]
        alpha_img = 1 - T
        depth = acc_depth / alpha_img.clamp_min(1e-10)
        out_c.append(colour.reshape(height, width, D))
        out_a.append(alpha_img.reshape(height, width, 1))
        out_d.append(depth.reshape(height, width, 1))
    return torch.stack(out_c), torch.stack(out_a), torch.stack(out_d)


def reference_radii(means, quats, scales, opacities, viewmats, Ks, width, height, near_plane=0.01, far_plane=1e10, eps2d=0.3):
    """(C, N, 2) int32 screen radii by gsplat's rules (opacity-aware extent, culls -> 0), float64."""
    import math

    f64 = torch.float64
    C, N = viewmats.shape[0], means.shape[0]
    radii = torch.zeros(C, N, 2, dtype=torch.int32)
    for cam in range(C):
        R, t = viewmats[cam, :3, :3].to(f64), viewmats[cam, :3, 3].to(f64)
        fx, fy, cx, cy = (float(v) for v in (Ks[cam, 0, 0], Ks[cam, 1, 1], Ks[cam, 0, 2], Ks[cam, 1, 2]))
        for i in range(N):
            p = R @ means[i].to(f64) + t
            z = float(p[2])
            o = float(opacities[i])
            if not (near_plane <= z <= far_plane) or o < ALPHA_MIN:
                continue
            M = _rotation(quats[i : i + 1].to(f64))[0] @ torch.diag(scales[i].to(f64))
            cov_cam = R @ (M @ M.T) @ R.T
            tx = z * min((width - cx) / fx + FOV_MARGIN * width / 2 / fx, max(-(cx / fx + FOV_MARGIN * width / 2 / fx), float(p[0]) / z))
            ty = z * min((height - cy) / fy + FOV_MARGIN * height / 2 / fy, max(-(cy / fy + FOV_MARGIN * height / 2 / fy), float(p[1]) / z))
            J = torch.tensor([[fx / z, 0, -fx * tx / z**2], [0, fy / z, -fy * ty / z**2]], dtype=f64)
            cov2 = J @ cov_cam @ J.T + eps2d * torch.eye(2, dtype=f64)
            if float(torch.det(cov2)) <= 0:
                continue
            k = min(3.33, math.sqrt(2 * math.log(o * 255)))
            rx, ry = math.ceil(k * math.sqrt(float(cov2[0, 0]))), math.ceil(k * math.sqrt(float(cov2[1, 1])))
            mx, my = fx * float(p[0]) / z + cx, fy * float(p[1]) / z + cy
            if mx + rx <= 0 or mx - rx >= width or my + ry <= 0 or my - ry >= height or (rx <= 0 and ry <= 0):
                continue
            radii[cam, i] = torch.tensor([rx, ry], dtype=torch.int32)
    return radii

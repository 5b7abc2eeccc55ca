"""The numbers behind the splat viewport, in plain numpy (no bpy, no torch): testable anywhere.

These follow the backend rasterizer (``radiantforge.gaussians.projection`` / ``sh``, gsplat 1.5.3's
rules) line for line, and the GLSL in ``viewport.py`` follows these: a test compares the two numpy
halves with the backend's torch functions, and a Blender test compares the drawn image with the
backend's render.

- splat parameters from the 3DGS PLY attributes (log scales, logit opacity, wxyz quaternion,
  channel-major ``f_rest``);
- world covariance R S S R^T; the EWA 2D covariance J W Sigma W^T J^T with the FOV-clamped
  Jacobian, plus the 0.3 px^2 low-pass; the conic and the opacity-aware screen radius;
- SH colour up to degree 3 along normalise(mean - camera centre), ``max(0, SH + 0.5)``;
- the back-to-front order of the means (the GPU blends "over", back to front, which equals the
  backend's front-to-back compositing);
- a level of detail for millions of splats: the ones that matter most (opacity x footprint).
"""

from __future__ import annotations

import numpy as np

SH_C0 = 0.28209479177387814
SH_C1 = 0.4886025119029199
SH_C2 = (1.0925484305920792, -1.0925484305920792, 0.31539156525252005, -1.0925484305920792, 0.5462742152960396)
SH_C3 = (-0.5900435899266435, 2.890611442640554, -0.4570457994644658, 0.3731763325901154,
         -0.4570457994644658, 1.445305721320277, -0.5900435899266435)
MAX_SH_DEGREE = 3

# The backend's constants (radiantforge.gaussians.raster_constants), repeated: the add-on never imports the backend.
ALPHA_THRESHOLD = 1.0 / 255.0
MAX_ALPHA = 0.999
MAX_EXTENT_SIGMAS = 3.33
FOV_CLAMP_MARGIN = 0.3
LOW_PASS_EPS2D = 0.3  # px^2 added to the 2D covariance's diagonal (gsplat's eps2d)


def splat_parameters(columns: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Renderer inputs from 3DGS PLY columns ({name: (N,)}), as ``GaussianSplats.activated()`` makes them.

    Returns means (N, 3), quats (N, 4) wxyz normalised, scales (N, 3) standard deviations,
    opacities (N,) in [0, 1], sh (N, K, 3) with K = (degree + 1)^2 (f_rest is channel-major).
    """
    count = len(columns["x"])
    means = np.stack([columns[k] for k in ("x", "y", "z")], axis=1).astype(np.float32)
    quats = np.stack([columns[f"rot_{i}"] for i in range(4)], axis=1).astype(np.float32)
    norms = np.linalg.norm(quats, axis=1, keepdims=True)
    quats = quats / np.maximum(norms, 1e-12)  # torch.nn.functional.normalize's eps
    scales = np.exp(np.stack([columns[f"scale_{i}"] for i in range(3)], axis=1).astype(np.float32))
    opacities = 1.0 / (1.0 + np.exp(-columns["opacity"].astype(np.float32)))
    rest = sorted((name for name in columns if name.startswith("f_rest_")), key=lambda n: int(n[7:]))
    per_channel = len(rest) // 3
    sh = np.zeros((count, 1 + per_channel, 3), dtype=np.float32)
    for channel in range(3):
        sh[:, 0, channel] = columns[f"f_dc_{channel}"]
        for k in range(per_channel):
            sh[:, 1 + k, channel] = columns[rest[channel * per_channel + k]]
    return {"means": means, "quats": quats, "scales": scales.astype(np.float32),
            "opacities": opacities.astype(np.float32), "sh": sh}


def sh_degree_for(coefficients: int) -> int:
    """SH degree from coefficients per channel (1, 4, 9, 16)."""
    degree = int(round(coefficients ** 0.5)) - 1
    if (degree + 1) ** 2 != coefficients or not 0 <= degree <= MAX_SH_DEGREE:
        raise ValueError(f"{coefficients} SH coefficients per channel is not (d + 1)^2 for a degree d in 0..3")
    return degree


def rotation_matrices(quats: np.ndarray) -> np.ndarray:
    """(N, 3, 3) rotations from normalised wxyz quaternions (N, 4)."""
    w, x, y, z = quats.T
    return np.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], axis=-1).reshape(-1, 3, 3)


def covariances(quats: np.ndarray, scales: np.ndarray) -> np.ndarray:
    """World covariances (N, 3, 3) = R diag(s^2) R^T; quats (N, 4) normalised wxyz, scales (N, 3) std devs."""
    rs = rotation_matrices(quats) * scales[:, None, :]
    return rs @ np.swapaxes(rs, 1, 2)


def intrinsics_from_projection(projection: np.ndarray, width: int, height: int) -> tuple[float, float, float, float]:
    """Pixel intrinsics (fx, fy, cx, cy), +Y down, of a Blender/OpenGL perspective matrix (4, 4) for a width x height image."""
    p = np.asarray(projection, dtype=np.float64)
    return (p[0, 0] * width / 2.0, p[1, 1] * height / 2.0, (1.0 - p[0, 2]) * width / 2.0, (1.0 + p[1, 2]) * height / 2.0)


def gl_view_to_cv(view_matrix: np.ndarray) -> np.ndarray:
    """World-to-camera (4, 4) in the OpenCV convention (+Z forward, +Y down) from Blender's view matrix (GL)."""
    return np.diag([1.0, -1.0, -1.0, 1.0]) @ np.asarray(view_matrix, dtype=np.float64)


def project(means: np.ndarray, covs: np.ndarray, opacities: np.ndarray, viewmat_cv: np.ndarray,
            intrinsics: tuple[float, float, float, float], width: int, height: int,
            near_plane: float = 0.01, eps2d: float = LOW_PASS_EPS2D) -> dict[str, np.ndarray]:
    """EWA projection into one camera, the backend's rules. means (N, 3), covs (N, 3, 3) world, opacities (N,).

    Returns means2d (N, 2) pixels, depths (N,), conics (N, 3) = (a, b, c) of the inverse 2D
    covariance, radii (N, 2) opacity-aware screen radii in pixels, visible (N,) bool.
    """
    fx, fy, cx, cy = intrinsics
    rotation, translation = viewmat_cv[:3, :3], viewmat_cv[:3, 3]
    cam = means @ rotation.T + translation  # (N, 3)
    x, y, z = cam.T
    safe_z = np.where(z >= near_plane, z, 1.0)
    means2d = np.stack([fx * x / safe_z + cx, fy * y / safe_z + cy], axis=1)
    tan_half_x, tan_half_y = 0.5 * width / fx, 0.5 * height / fy
    x_over_z = np.clip(x / safe_z, -(cx / fx + FOV_CLAMP_MARGIN * tan_half_x), (width - cx) / fx + FOV_CLAMP_MARGIN * tan_half_x)
    y_over_z = np.clip(y / safe_z, -(cy / fy + FOV_CLAMP_MARGIN * tan_half_y), (height - cy) / fy + FOV_CLAMP_MARGIN * tan_half_y)
    jacobian = np.zeros((len(means), 2, 3))
    jacobian[:, 0, 0] = fx / safe_z
    jacobian[:, 0, 2] = -fx / safe_z * x_over_z
    jacobian[:, 1, 1] = fy / safe_z
    jacobian[:, 1, 2] = -fy / safe_z * y_over_z
    a = jacobian @ rotation  # J W: (N, 2, 3)
    cov2d = a @ covs @ np.swapaxes(a, 1, 2)
    cov_xx, cov_xy, cov_yy = cov2d[:, 0, 0] + eps2d, cov2d[:, 0, 1], cov2d[:, 1, 1] + eps2d
    det = cov_xx * cov_yy - cov_xy * cov_xy
    safe_det = np.where(det > 0, det, 1.0)
    conics = np.stack([cov_yy / safe_det, -cov_xy / safe_det, cov_xx / safe_det], axis=1)
    extent = np.minimum(np.sqrt(2.0 * np.log(np.maximum(opacities, ALPHA_THRESHOLD) / ALPHA_THRESHOLD)), MAX_EXTENT_SIGMAS)
    radii = np.ceil(extent[:, None] * np.sqrt(np.maximum(np.stack([cov_xx, cov_yy], axis=1), 0.0)))
    on_screen = ((means2d[:, 0] + radii[:, 0] > 0) & (means2d[:, 0] - radii[:, 0] < width)
                 & (means2d[:, 1] + radii[:, 1] > 0) & (means2d[:, 1] - radii[:, 1] < height))
    visible = (z >= near_plane) & (det > 0) & (opacities >= ALPHA_THRESHOLD) & (radii.max(axis=1) > 0) & on_screen
    return {"means2d": means2d, "depths": z, "conics": conics, "radii": radii * visible[:, None], "visible": visible}


def sh_basis(dirs: np.ndarray, degree: int) -> np.ndarray:
    """(N, (degree + 1)^2) real SH basis (3DGS order and signs) for unit directions (N, 3)."""
    x, y, z = dirs.T
    basis = [np.full_like(x, SH_C0)]
    if degree >= 1:
        basis += [-SH_C1 * y, SH_C1 * z, -SH_C1 * x]
    if degree >= 2:
        xx, yy, zz, xy, yz, xz = x * x, y * y, z * z, x * y, y * z, x * z
        basis += [SH_C2[0] * xy, SH_C2[1] * yz, SH_C2[2] * (2.0 * zz - xx - yy), SH_C2[3] * xz, SH_C2[4] * (xx - yy)]
    if degree >= 3:
        basis += [SH_C3[0] * y * (3.0 * xx - yy), SH_C3[1] * xy * z, SH_C3[2] * y * (4.0 * zz - xx - yy),
                  SH_C3[3] * z * (2.0 * zz - 3.0 * xx - 3.0 * yy), SH_C3[4] * x * (4.0 * zz - xx - yy),
                  SH_C3[5] * z * (xx - yy), SH_C3[6] * x * (xx - 3.0 * yy)]
    return np.stack(basis, axis=-1)


def sh_colors(sh: np.ndarray, dirs: np.ndarray, degree: int | None = None) -> np.ndarray:
    """Colours (N, 3) = max(0, SH(dirs) + 0.5) from coefficients sh (N, K, 3) along dirs (N, 3) (normalised here)."""
    degree = sh_degree_for(sh.shape[1]) if degree is None else degree
    norms = np.linalg.norm(dirs, axis=1, keepdims=True)
    unit = dirs / np.maximum(norms, 1e-12)
    basis = sh_basis(unit, degree)  # (N, K')
    return np.maximum((basis[:, :, None] * sh[:, :basis.shape[1], :]).sum(axis=1) + 0.5, 0.0)


def back_to_front(means: np.ndarray, viewmat_cv: np.ndarray) -> np.ndarray:
    """Indices (N,) of the means (N, 3) farthest first along the camera's +Z (the reverse of the backend's depth order)."""
    depth = means @ viewmat_cv[2, :3] + viewmat_cv[2, 3]
    # The backend sorts front to back with a stable sort (ties keep index order); reversing a stable
    # sort of the negated depths keeps that tie order after the reversal.
    return np.argsort(-depth, kind="stable")


def level_of_detail(opacities: np.ndarray, scales: np.ndarray, cap: int) -> np.ndarray:
    """Indices (<= cap,) of the splats that matter most, in index order: largest opacity x footprint.

    The footprint is the area of the two largest axes (s1 s2): a faint speck hardly shows, a large
    faint veil does. Everything is kept when the cloud has no more than ``cap`` splats.
    """
    count = len(opacities)
    if count <= cap:
        return np.arange(count)
    ordered = np.sort(scales, axis=1)
    importance = opacities * ordered[:, 2] * ordered[:, 1]
    keep = np.argpartition(-importance, cap - 1)[:cap]
    return np.sort(keep)

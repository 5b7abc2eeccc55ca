"""Rendering trained or loaded splats: batches of views, orbits and turntable files."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..cameras import Cameras, orbit_cameras
from ..devices import resolve_device
from .. import media
from .projection import quat_to_rotmat
from .rasterizers import Rasterizer, resolve_rasterizer
from .splats import GaussianSplats

DEFAULT_TURNTABLE_FOV_DEG = 40.0
# Framing frames the *whole* bulk of the scene, not a quantile of it: a sphere that holds 90% of the
# Gaussians leaves the other 10% to be cut at the frame edge from some angles. Only far floaters
# (common in real captures) are left out, so they do not shrink the object to a dot.
# Gaussians fainter than this hardly show on their own; they neither frame nor count towards the bulk.
FRAMING_MIN_OPACITY = 0.1
# A floater lies farther than this many robust standard deviations (1.4826 x the median absolute
# deviation, which a few far points cannot move) from the median along some axis. Every point of a
# compact object lies within ~2 of them along each axis (a uniform box: 1.35), so 5 drops only floaters.
FRAMING_OUTLIER_SIGMAS = 5.0
# A flat object has ~zero spread along one axis: its robust sigma there is floored at this fraction of
# the largest axis's, so the object's own thickness is not mistaken for floaters.
FRAMING_MIN_SIGMA_FRACTION = 0.05
# Each Gaussian reaches this many of its standard deviations (its alpha there is o * e^-4.5 < 1.2%).
FRAMING_EXTENT_SIGMAS = 3.0
# The framing sphere's silhouette spans at most 1 / 1.06 of the shorter half-side of the frame: a few
# pixels of background at the nearest edge.
FRAMING_MARGIN = 1.06


@torch.no_grad()
def render_views(splats: GaussianSplats, cameras: Cameras, background=(1.0, 1.0, 1.0), sh_degree: int | None = None,
                 backend: str | Rasterizer = "auto", device="auto"):
    """Render each camera without gradients. Returns rgb (C, H, W, 3), alpha (C, H, W, 1), depth (C, H, W, 1) on CPU.

    backend: a rasterizer name, resolved once here for all the views, or a Rasterizer a run resolved.
    """
    from .rasterize import rasterize

    device = resolve_device(device)
    rasterizer = resolve_rasterizer(backend, device)
    params = splats.to(device).activated()
    bg = torch.as_tensor(background, dtype=torch.float32, device=device)
    degree = splats.sh_degree if sh_degree is None else min(sh_degree, splats.sh_degree)
    viewmats = cameras.world_to_camera_cv().to(device)
    Ks = cameras.intrinsics.to(device)
    outputs = []
    for index in range(len(cameras)):  # one view at a time bounds memory on big scenes
        rgb, alpha, depth, _ = rasterize(
            params["means"], params["quats"], params["scales"], params["opacities"], params["sh_coeffs"],
            viewmats[index : index + 1], Ks[index : index + 1], cameras.width, cameras.height,
            sh_degree=degree, background=bg, backend=rasterizer,
        )
        outputs.append((rgb.cpu(), alpha.cpu(), depth.cpu()))
    rgb, alpha, depth = (torch.cat(parts) for parts in zip(*outputs))
    return rgb.clamp(0.0, 1.0), alpha, depth


def splat_framing(splats: GaussianSplats) -> tuple[torch.Tensor, float]:
    """Centre (3,) and radius of a sphere that holds the whole bulk of the scene (far floaters left out).

    The bulk: the Gaussians opaque enough to show (FRAMING_MIN_OPACITY) whose means lie within
    FRAMING_OUTLIER_SIGMAS robust standard deviations of the median on every axis. The sphere holds
    every one of them with its own extent (its ellipsoid of FRAMING_EXTENT_SIGMAS standard deviations):
    its centre is the middle of their bounding box, its radius the farthest reach from there.
    """
    means = splats.means.detach().float()
    if len(means) == 0:
        return torch.zeros(3), 1.0
    # The ellipsoids' true extents, not their largest scale in every direction: real splats hold large
    # flat discs (the donut, 0.21 across, has discs of scale 0.03 along their plane, 0.0003 across it).
    rotations = quat_to_rotmat(splats.quats.detach().float())
    variance = torch.exp(2.0 * splats.scales.detach().float())  # (N, 3) along the Gaussians' own axes
    shown = torch.sigmoid(splats.opacities.detach().float()) >= FRAMING_MIN_OPACITY
    if shown.sum() < 16:  # (nearly) all faint: frame them all rather than a handful
        shown = torch.ones_like(shown)
    means, rotations, variance = means[shown], rotations[shown], variance[shown]
    median = means.median(dim=0).values
    deviation = (means - median).abs()
    sigma = 1.4826 * deviation.median(dim=0).values
    if sigma.max() > 0:
        sigma = sigma.clamp_min(FRAMING_MIN_SIGMA_FRACTION * sigma.max())
        bulk = (deviation <= FRAMING_OUTLIER_SIGMAS * sigma).all(dim=-1)
        means, rotations, variance = means[bulk], rotations[bulk], variance[bulk]
    k = FRAMING_EXTENT_SIGMAS
    reach = k * (rotations.square() @ variance[..., None])[..., 0].sqrt()  # k sqrt(diag(R S^2 R^T)): box half-sides
    low, high = (means - reach).amin(dim=0), (means + reach).amax(dim=0)
    centre = 0.5 * (low + high)
    # A point m + w of an ellipsoid, seen from the centre c (offset o = m - c, unit u = o / |o|):
    # |o + w|^2 = |o|^2 + 2 o.w + |w|^2 <= |o|^2 + 2 |o| k sigma_u + (k sigma_max)^2, with sigma_u the
    # Gaussian's standard deviation along u. The bound is exact for a Gaussian stretched along u and
    # for a flat disc across it, where |o| + k sigma_max would overshoot by up to k sigma_max.
    offset = means - centre
    distance = offset.norm(dim=-1)
    along = (offset[:, None, :] @ rotations)[:, 0, :] / distance.clamp_min(1e-12)[:, None]  # u in the Gaussians' axes
    sigma_u = (along.square() * variance).sum(dim=-1).sqrt()
    far = distance.square() + 2.0 * distance * k * sigma_u + k * k * variance.amax(dim=-1)
    radius = far.max().sqrt().item()
    return centre, max(radius, 1e-3)


def turntable_cameras(centre, radius: float, n_frames: int, width: int, height: int,
                      elevation_deg: float = 20.0, fov_deg: float = DEFAULT_TURNTABLE_FOV_DEG) -> Cameras:
    """A ring of cameras around ``centre`` (Z up) far enough that a sphere of ``radius`` fits the view.

    ``fov_deg`` is the horizontal field of view (square pixels: the vertical one follows from the
    aspect). A sphere of radius r at distance d on the optical axis has an angular radius asin(r / d);
    its silhouette's radius on the image is f tan(asin(r / d)) pixels, which must fit the shorter half
    side with FRAMING_MARGIN to spare in both directions.
    """
    tan_half_x = math.tan(math.radians(fov_deg) * 0.5)
    tan_half_y = tan_half_x * height / width  # fx == fy: the half-sides are in the ratio of the sides
    tan_fit = min(tan_half_x, tan_half_y) / FRAMING_MARGIN
    distance = radius / math.sin(math.atan(tan_fit))
    centre = [float(v) for v in torch.as_tensor(centre).reshape(3)]
    return orbit_cameras(n_frames, distance, target=centre, fov_x_deg=fov_deg, width=width, height=height,
                         elevation_deg=elevation_deg)


def render_turntable(splats: GaussianSplats, out_dir: str | Path, *, n_frames: int = 60, width: int = 256,
                     height: int = 256, elevation_deg: float = 20.0, centre=None, radius: float | None = None,
                     background=(1.0, 1.0, 1.0), depth: bool = False, fps: int = media.DEFAULT_FPS,
                     name: str = "turntable", backend: str | Rasterizer = "auto", device="auto", write_frames: bool = True) -> dict[str, str]:
    """Render an orbit and write GIF, MP4 and PNG frames (plus a depth turntable when asked).

    Returns {"gif": ..., "mp4": ..., "frames": ..., "depth_gif": ...}.
    """
    if centre is None or radius is None:
        auto_centre, auto_radius = splat_framing(splats)
        centre = auto_centre if centre is None else centre
        radius = auto_radius if radius is None else radius
    cameras = turntable_cameras(centre, radius, n_frames, width, height, elevation_deg)
    rgb, alpha, depth_maps = render_views(splats, cameras, background=background, backend=backend, device=device)
    files = media.write_turntable(out_dir, list(rgb), name=name, fps=fps, write_frames=write_frames)
    if depth:
        depth_frames = [media.depth_to_rgb(d, a) for d, a in zip(depth_maps, alpha)]
        depth_files = media.write_turntable(out_dir, depth_frames, name=f"{name}_depth", fps=fps, write_frames=write_frames)
        files.update({f"depth_{k}": v for k, v in depth_files.items()})
    return files

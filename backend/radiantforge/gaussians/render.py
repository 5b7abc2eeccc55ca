"""Rendering trained or loaded splats: batches of views, orbits and turntable files."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from ..cameras import Cameras, orbit_cameras
from ..devices import resolve_device
from .. import media
from .rasterizers import Rasterizer, resolve_rasterizer
from .splats import GaussianSplats

DEFAULT_TURNTABLE_FOV_DEG = 40.0
# Fraction of the most opaque Gaussians' spread used to frame a scene: outliers (floaters far from
# the object, common in real captures) must not shrink the object to a dot.
FRAMING_QUANTILE = 0.9


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
    """Centre (3,) and radius of the bulk of the scene, for cameras that should see all of it."""
    means = splats.means.detach().float()
    if len(means) == 0:
        return torch.zeros(3), 1.0
    opacity = torch.sigmoid(splats.opacities.detach().float())
    solid = means[opacity > 0.5] if (opacity > 0.5).sum() >= 16 else means
    centre = solid.median(dim=0).values
    radius = torch.quantile((solid - centre).norm(dim=-1), FRAMING_QUANTILE).item()
    return centre, max(radius, 1e-3)


def turntable_cameras(centre, radius: float, n_frames: int, width: int, height: int,
                      elevation_deg: float = 20.0, fov_deg: float = DEFAULT_TURNTABLE_FOV_DEG) -> Cameras:
    """A ring of cameras around ``centre`` (Z up) far enough that a sphere of ``radius`` fits the view."""
    half_fov = math.radians(fov_deg) * 0.5 * min(1.0, height / width)
    distance = radius / math.sin(half_fov) * 1.1
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

"""Turntable framing: the orbit fits the whole bulk of a splat from every angle, and far floaters do
not shrink it. A synthetic cloud with known bounds, the exact sphere fit of the cameras, and two real
splat files (an object and a spread-out scene with floaters)."""

import math

import torch

from radiantforge.cameras import fibonacci_directions
from radiantforge.gaussians.ply import load_gaussian_ply
from radiantforge.gaussians.render import FRAMING_MARGIN, render_views, splat_framing, turntable_cameras
from radiantforge.gaussians.splats import GaussianSplats

BORDER_PX = 2  # the outer rows and columns that must stay (almost) background
MAX_BORDER_ALPHA = 0.1


def project(points: torch.Tensor, cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates (C, N, 2) and camera-space depths (C, N) of world points (N, 3)."""
    w2c = cameras.world_to_camera_cv()
    cam = points[None] @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]
    pixels = cam @ cameras.intrinsics.transpose(1, 2)
    return pixels[..., :2] / pixels[..., 2:], cam[..., 2]


def assert_inside_every_frame(points: torch.Tensor, cameras, margin_px: float = 0.0) -> None:
    uv, depth = project(points, cameras)
    assert (depth > 0).all()
    low = uv.amin(dim=1)  # (C, 2) per frame
    high = uv.amax(dim=1)
    size = torch.tensor([cameras.width, cameras.height], dtype=torch.float32)
    cut = ((low < margin_px) | (high > size - margin_px)).any(dim=-1)
    assert not cut.any(), (f"{int(cut.sum())} of {len(cameras)} frames cut the object: "
                           f"projected extents {low[cut].tolist()} .. {high[cut].tolist()} in {size.tolist()} px")


def projected_fill(points: torch.Tensor, cameras) -> torch.Tensor:
    """Per frame, the points' larger projected span (across or up the image) over the frame's shorter
    side, the one the framing sphere fits: about 1 when the points fill the framing."""
    uv, _ = project(points, cameras)
    span = (uv.amax(dim=1) - uv.amin(dim=1)).amax(dim=-1)
    return span / min(cameras.width, cameras.height)


def synthetic_splats(means: torch.Tensor, scale: float = 0.01, opacity: float = 0.9) -> GaussianSplats:
    n = len(means)
    return GaussianSplats(
        means=means.float(),
        scales=torch.full((n, 3), math.log(scale)),
        quats=torch.tensor([1.0, 0.0, 0.0, 0.0]).repeat(n, 1),
        opacities=torch.full((n,), math.log(opacity / (1 - opacity))),
        sh0=torch.zeros(n, 1, 3),
        shN=torch.zeros(n, 0, 3),
    )


def test_sphere_fits_the_shorter_side_exactly():
    """Known answer: the framing sphere's silhouette spans 1 / FRAMING_MARGIN of the shorter half-side."""
    centre, radius = torch.tensor([0.3, -0.2, 0.1]), 0.7
    sphere = centre + radius * fibonacci_directions(4000)
    for width, height in ((96, 64), (64, 96), (64, 64)):
        cameras = turntable_cameras(centre, radius, 8, width, height, elevation_deg=20.0, fov_deg=40.0)
        uv, _ = project(sphere, cameras)
        principal = cameras.intrinsics[:, None, :2, 2]
        reach = (uv - principal).norm(dim=-1).amax(dim=1)  # the silhouette's radius, per frame
        expected = 0.5 * min(width, height) / FRAMING_MARGIN
        assert torch.allclose(reach, torch.full_like(reach, expected), rtol=2e-3), (width, height, reach, expected)


def test_synthetic_box_fits_every_frame_and_floaters_do_not_shrink_it():
    """A box of Gaussians, off the origin, with a dense cluster in one corner (it pulls the median and
    the quantiles away from the box's middle) and a few far floaters: every box mean lies inside every
    frame of a wide turntable, and the box still fills most of the frame."""
    generator = torch.Generator().manual_seed(0)
    low, high = torch.tensor([-0.6, -0.3, -0.2]), torch.tensor([0.9, 0.4, 0.5])
    box = low + (high - low) * torch.rand(4000, 3, generator=generator)
    cluster = high - 0.1 * torch.rand(2000, 3, generator=generator)
    corners = torch.stack(torch.meshgrid(*[torch.stack([low[i], high[i]]) for i in range(3)], indexing="ij"), -1).reshape(8, 3)
    floaters = 40.0 * torch.nn.functional.normalize(torch.randn(5, 3, generator=generator), dim=-1)
    obj = torch.cat([box, cluster, corners])
    splats = synthetic_splats(torch.cat([obj, floaters]))

    centre, radius = splat_framing(splats)
    cameras = turntable_cameras(centre, radius, 24, 96, 64)
    assert_inside_every_frame(obj, cameras, margin_px=1.0)
    # The box's half-diagonal is 0.89; the floaters (40 away) must not be framed.
    assert radius < 1.2
    fill = projected_fill(obj, cameras)
    assert (fill > 0.5).all(), fill  # end-on, the 0.7-deep box spans 0.59 of the height


def _border_and_fill(alpha: torch.Tensor):
    """Per frame: the largest alpha on the outer BORDER_PX rows and columns, and the fraction of the
    frame's width spanned by the opaque (alpha > 0.5) columns."""
    a = alpha[..., 0]
    b = BORDER_PX
    border = torch.cat([a[:, :b].flatten(1), a[:, -b:].flatten(1), a[:, :, :b].flatten(1), a[:, :, -b:].flatten(1)], 1)
    columns = (a > 0.5).any(dim=1)  # (C, W)
    index = torch.arange(a.shape[2])
    first = torch.where(columns, index, a.shape[2]).amin(dim=1)
    last = torch.where(columns, index, -1).amax(dim=1)
    return border.amax(dim=1), (last - first + 1).clamp_min(0) / a.shape[2]


def test_donut_turntable_never_touches_the_frame_edge(shared_assets):
    """A real object splat (Mip-Splatting donut): rendered from 12 angles, no frame's border carries
    the object, and the object is in the middle and fills most of the frame."""
    splats = load_gaussian_ply(shared_assets / "splats" / "donut-sh0.ply")
    centre, radius = splat_framing(splats)
    cameras = turntable_cameras(centre, radius, 12, 64, 64)
    _, alpha, _ = render_views(splats, cameras, device="cpu")
    border, width_fill = _border_and_fill(alpha)
    assert (border < MAX_BORDER_ALPHA).all(), f"border alpha per frame {border.tolist()}"
    middle = alpha[:, 28:36, 28:36, 0].mean(dim=(1, 2))
    assert (middle > 0.9).all(), middle
    assert (width_fill > 0.7).all(), width_fill


def test_spread_scene_bulk_fits_every_frame(shared_assets):
    """A real scene splat (1,000 Gaussians of the 3DGS "train" scene, with floaters 10+ units out):
    its bulk, taken independently here as the opaque Gaussians inside the 1-99% quantiles on every
    axis, projects inside every frame; the floaters are not framed."""
    splats = load_gaussian_ply(shared_assets / "splats" / "train-1000.ply")
    opaque = splats.means[torch.sigmoid(splats.opacities) >= 0.5]
    low, high = torch.quantile(opaque, 0.01, dim=0), torch.quantile(opaque, 0.99, dim=0)
    bulk = opaque[((opaque >= low) & (opaque <= high)).all(dim=-1)]
    assert len(bulk) > 100

    centre, radius = splat_framing(splats)
    cameras = turntable_cameras(centre, radius, 24, 96, 96)
    assert_inside_every_frame(bulk, cameras, margin_px=1.0)
    farthest = (splats.means - centre).norm(dim=-1).max().item()
    assert radius < 0.6 * farthest, (radius, farthest)
    # The opaque bulk is long and low: it spans a third of the frame side-on, an eighth end-on (the
    # framing also holds the fainter Gaussians around it). Framing the floaters too halves both.
    fill = projected_fill(bulk, cameras)
    assert (fill > 0.1).all() and fill.max() > 0.3, fill

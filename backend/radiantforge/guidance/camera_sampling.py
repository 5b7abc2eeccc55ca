"""Random cameras around an object for score distillation, with the angles the prompts need.

Angles follow :mod:`radiantforge.guidance.prompts` and :func:`radiantforge.cameras.orbit_cameras`:
azimuth 0° = camera on the −Y side looking along +Y (the object's front), +90° = on the +X side,
elevation above the XY plane (Blender world space, Z up). Cameras look at ``target`` with world Z
up; the field of view spans the image width.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..cameras import Cameras, focal_from_fov, look_at_c2w_gl
from ..errors import InputError
from .prompts import wrap_azimuth_deg


# Underside cameras stop short of straight below: the look-at frame uses world Z as its up direction.
UNDERSIDE_LOWEST_DEG = -80.0
MAX_UNDERSIDE_FRACTION = 0.5


@dataclass
class CameraSamplingConfig:
    """Ranges to draw cameras from (inclusive), in metres and degrees.

    elevation_sampling: "uniform_angle" draws the elevation angle uniformly; "uniform_area" draws
    sin(elevation) uniformly so that camera directions cover the sphere band evenly (fewer views
    crowd near the poles).
    underside_fraction: the share of cameras drawn *below* elevation_range_deg instead, between
    UNDERSIDE_LOWEST_DEG and its low end (evenly over that cap's area), so an object that does not
    stand on a floor is seen from beneath too; 0 keeps every camera in elevation_range_deg (and
    the random stream as it was).
    """

    distance_range: tuple[float, float] = (2.5, 3.5)
    elevation_range_deg: tuple[float, float] = (-10.0, 60.0)
    azimuth_range_deg: tuple[float, float] = (-180.0, 180.0)
    fov_range_deg: tuple[float, float] = (40.0, 70.0)
    width: int = 64
    height: int = 64
    target: tuple[float, float, float] = (0.0, 0.0, 0.0)
    batch_size: int = 1
    elevation_sampling: Literal["uniform_angle", "uniform_area"] = "uniform_angle"
    underside_fraction: float = 0.0

    def __post_init__(self):
        for name, (low, high), lowest, highest in (
            ("distance_range", self.distance_range, 0.0, math.inf),
            ("elevation_range_deg", self.elevation_range_deg, -90.0, 90.0),
            ("azimuth_range_deg", self.azimuth_range_deg, -360.0, 360.0),
            ("fov_range_deg", self.fov_range_deg, 0.0, 180.0),
        ):
            # Distances and fields of view must stay strictly inside their bounds (0 m, 0° and 180° are degenerate).
            strict = name in ("distance_range", "fov_range_deg")
            inside = (lowest < low and high < highest) if strict else (lowest <= low and high <= highest)
            if not (inside and low <= high):
                bounds = f"({lowest}, {highest})" if strict else f"[{lowest}, {highest}]"
                raise InputError(f"expected (low, high) with low <= high, both in {bounds}, got ({low}, {high})",
                                 field=name)
        if self.width < 1 or self.height < 1:
            raise InputError(f"image size must be positive, got {self.width}x{self.height}", field="width")
        if self.batch_size < 1:
            raise InputError(f"must be at least 1, got {self.batch_size}", field="batch_size")
        if not 0.0 <= self.underside_fraction <= MAX_UNDERSIDE_FRACTION:
            raise InputError(f"expected a share in [0, {MAX_UNDERSIDE_FRACTION}], got {self.underside_fraction}",
                             field="underside_fraction")
        if self.elevation_sampling not in ("uniform_angle", "uniform_area"):
            raise InputError(f"expected uniform_angle or uniform_area, got {self.elevation_sampling!r}",
                             field="elevation_sampling")


@dataclass
class SampledViews:
    """cameras: C cameras; azimuth_deg (wrapped to (−180, 180]), elevation_deg, distance, fov_deg: (C,) each."""

    cameras: Cameras
    azimuth_deg: torch.Tensor
    elevation_deg: torch.Tensor
    distance: torch.Tensor
    fov_deg: torch.Tensor

    def __len__(self) -> int:
        return len(self.cameras)


def spherical_to_direction(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor) -> torch.Tensor:
    """(C, 3) unit vectors from the target to the camera for azimuths and elevations (C,)."""
    az = torch.deg2rad(torch.as_tensor(azimuth_deg, dtype=torch.float32))
    el = torch.deg2rad(torch.as_tensor(elevation_deg, dtype=torch.float32))
    return torch.stack([torch.sin(az) * torch.cos(el), -torch.cos(az) * torch.cos(el), torch.sin(el)], dim=-1)


def cameras_from_spherical(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor, distance: torch.Tensor,
                           fov_deg: torch.Tensor, width: int, height: int, target=(0.0, 0.0, 0.0)) -> Cameras:
    """Cameras at the given angles (C,), distances (C,) and horizontal fields of view (C,), looking at ``target``."""
    target_t = torch.as_tensor(target, dtype=torch.float32).reshape(3)
    eyes = target_t + torch.as_tensor(distance, dtype=torch.float32).reshape(-1, 1) * spherical_to_direction(
        azimuth_deg, elevation_deg)
    c2w = look_at_c2w_gl(eyes, target_t)
    fovs = torch.as_tensor(fov_deg, dtype=torch.float32).reshape(-1)
    intrinsics = torch.zeros(len(eyes), 3, 3)
    for i, fov in enumerate(fovs.tolist()):
        focal = focal_from_fov(math.radians(fov), width)
        intrinsics[i] = torch.tensor([[focal, 0.0, width / 2.0], [0.0, focal, height / 2.0], [0.0, 0.0, 1.0]])
    return Cameras(c2w, intrinsics, width, height)


def camera_angles(cameras: Cameras, target=(0.0, 0.0, 0.0)) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(azimuth_deg in (−180, 180], elevation_deg, distance), each (C,), of existing cameras around ``target``."""
    offset = cameras.centers - torch.as_tensor(target, dtype=torch.float32).to(cameras.centers)
    distance = offset.norm(dim=-1)
    azimuth = wrap_azimuth_deg(torch.rad2deg(torch.atan2(offset[:, 0], -offset[:, 1])))
    elevation = torch.rad2deg(torch.asin((offset[:, 2] / distance.clamp(min=1e-12)).clamp(-1.0, 1.0)))
    return azimuth, elevation, distance


def _uniform(low: float, high: float, count: int, generator: torch.Generator | None) -> torch.Tensor:
    return low + (high - low) * torch.rand(count, generator=generator)


def sample_cameras(config: CameraSamplingConfig | None = None, batch_size: int | None = None,
                   generator: torch.Generator | None = None) -> SampledViews:
    """Draw ``batch_size`` (default ``config.batch_size``) cameras; on the CPU (use ``.cameras.to(device)``).

    ``generator`` must be a CPU generator (for reproducible runs).
    """
    config = config or CameraSamplingConfig()
    count = batch_size or config.batch_size
    azimuth = _uniform(*config.azimuth_range_deg, count, generator)
    if config.elevation_sampling == "uniform_area":
        sin_low, sin_high = (math.sin(math.radians(e)) for e in config.elevation_range_deg)
        elevation = torch.rad2deg(torch.asin(_uniform(sin_low, sin_high, count, generator).clamp(-1.0, 1.0)))
    else:
        elevation = _uniform(*config.elevation_range_deg, count, generator)
    lowest_regular = config.elevation_range_deg[0]
    if config.underside_fraction > 0 and lowest_regular > UNDERSIDE_LOWEST_DEG:
        below = torch.rand(count, generator=generator) < config.underside_fraction
        sin_low, sin_high = (math.sin(math.radians(e)) for e in (UNDERSIDE_LOWEST_DEG, lowest_regular))
        underside = torch.rad2deg(torch.asin(_uniform(sin_low, sin_high, count, generator).clamp(-1.0, 1.0)))
        elevation = torch.where(below, underside, elevation)
    distance = _uniform(*config.distance_range, count, generator)
    fov = _uniform(*config.fov_range_deg, count, generator)
    cameras = cameras_from_spherical(azimuth, elevation, distance, fov, config.width, config.height, config.target)
    return SampledViews(cameras, wrap_azimuth_deg(azimuth), elevation, distance, fov)

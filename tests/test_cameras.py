import math

import torch

from radiantforge.cameras import (
    Cameras,
    c2w_gl_to_w2c_cv,
    fibonacci_directions,
    focal_from_fov,
    look_at_c2w_gl,
    orbit_cameras,
    w2c_cv_to_c2w_gl,
)


def project(cameras: Cameras, points: torch.Tensor) -> torch.Tensor:
    """(C, P, 2) pixel coordinates of world points (P, 3) through the CV world-to-camera matrices."""
    w2c = cameras.world_to_camera_cv()
    homogeneous = torch.cat([points, torch.ones(len(points), 1)], dim=-1)
    cam = (w2c @ homogeneous.T).transpose(1, 2)[..., :3]
    uv = (cameras.intrinsics @ cam.transpose(1, 2)).transpose(1, 2)
    return uv[..., :2] / uv[..., 2:]


def test_blender_default_camera_convention():
    # A Blender camera at (0, -5, 0) rotated 90 degrees about X looks along +Y with +Z up.
    c2w = torch.eye(4)
    c2w[:3, :3] = torch.tensor([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]])
    c2w[:3, 3] = torch.tensor([0.0, -5.0, 0.0])
    f = focal_from_fov(math.radians(60), 200)
    cams = Cameras(c2w[None], torch.tensor([[f, 0, 100.0], [0, f, 50.0], [0, 0, 1]])[None], 200, 100)
    uv = project(cams, torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))[0]
    assert torch.allclose(uv[0], torch.tensor([100.0, 50.0]), atol=1e-4)  # target -> principal point
    assert torch.isclose(uv[1, 0], torch.tensor(100.0 + f / 5.0), atol=1e-3)  # world +X -> image right
    assert torch.isclose(uv[2, 1], torch.tensor(50.0 - f / 5.0), atol=1e-3)  # world +Z (up) -> image up
    # the point is in front: camera-space z = 5
    assert torch.isclose(c2w_gl_to_w2c_cv(c2w)[2, 3], torch.tensor(5.0))


def test_conversion_round_trip_and_look_at():
    eyes = torch.randn(16, 3) * 4
    c2w = look_at_c2w_gl(eyes, torch.tensor([0.5, -0.2, 0.1]))
    rotation = c2w[:, :3, :3]
    assert torch.allclose(rotation @ rotation.transpose(1, 2), torch.eye(3).expand(16, 3, 3), atol=1e-5)
    assert torch.allclose(torch.linalg.det(rotation), torch.ones(16), atol=1e-5)
    assert torch.allclose(w2c_cv_to_c2w_gl(c2w_gl_to_w2c_cv(c2w)), c2w, atol=1e-5)
    # straight down the up axis is still a valid rotation
    top = look_at_c2w_gl(torch.tensor([[0.0, 0.0, 3.0]]), torch.zeros(3))
    assert torch.isfinite(top).all() and torch.allclose(torch.linalg.det(top[:, :3, :3]), torch.ones(1), atol=1e-5)


def test_orbit_cameras_see_the_target():
    cams = orbit_cameras(12, 3.0, target=(0.2, 0.1, 0.3), width=64, height=48, elevation_deg=30)
    uv = project(cams, torch.tensor([[0.2, 0.1, 0.3]]))
    assert torch.allclose(uv[:, 0], torch.tensor([32.0, 24.0]).expand(12, 2), atol=1e-3)
    assert torch.allclose((cams.centers - torch.tensor([0.2, 0.1, 0.3])).norm(dim=-1), torch.full((12,), 3.0), atol=1e-5)
    sphere = orbit_cameras(50, 2.0, elevation_deg=None, upper_hemisphere=True, min_elevation_deg=5)
    assert (sphere.centers[:, 2] >= 2.0 * math.sin(math.radians(5)) - 1e-5).all()


def test_fibonacci_directions_cover_the_sphere_evenly():
    dirs = fibonacci_directions(400)
    assert torch.allclose(dirs.norm(dim=-1), torch.ones(400), atol=1e-5)
    assert dirs.mean(dim=0).abs().max() < 0.01  # balanced
    # every direction has a neighbour within the spacing expected for 400 even points
    nearest = torch.cdist(dirs, dirs).fill_diagonal_(10).min(dim=1).values
    assert nearest.max() < 2.5 * math.sqrt(4 * math.pi / 400)


def test_scaled_intrinsics():
    cams = orbit_cameras(2, 3.0, width=101, height=64)
    half = cams.scaled(0.5)
    assert (half.width, half.height) == (50, 32)
    assert torch.allclose(half.intrinsics[:, 0, 0], cams.intrinsics[:, 0, 0] * 0.5)

"""The camera model of the whole backend, and the one place where GL becomes CV.

Files (``transforms.json``) and Blender store camera-to-world matrices in the OpenGL/Blender
camera convention: the camera looks down -Z with +Y up. Every renderer in the backend works in
the OpenCV convention of gsplat (+Z forward, +Y down) with world-to-camera matrices.
:func:`c2w_gl_to_w2c_cv` is the only conversion between the two.

Pixel convention: pixel (row i, column j) has its centre at image coordinates (j + 0.5, i + 0.5),
so a centred principal point is cx = W / 2, cy = H / 2 (as in NeRF-synthetic and gsplat).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

# Flips the camera's Y and Z axes: OpenGL/Blender camera frame <-> OpenCV camera frame.
GL_TO_CV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))

WORLD_UP = (0.0, 0.0, 1.0)  # Blender world space: Z up


def c2w_gl_to_w2c_cv(c2w_gl: torch.Tensor) -> torch.Tensor:
    """Camera-to-world in the GL convention (..., 4, 4) -> world-to-camera in the CV convention."""
    c2w_cv = c2w_gl @ GL_TO_CV.to(c2w_gl)
    return torch.linalg.inv(c2w_cv)


def w2c_cv_to_c2w_gl(w2c_cv: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`c2w_gl_to_w2c_cv`."""
    return torch.linalg.inv(w2c_cv) @ GL_TO_CV.to(w2c_cv)


def focal_from_fov(fov_rad: float, size_px: float) -> float:
    """Focal length in pixels for a field of view across ``size_px`` pixels."""
    return 0.5 * size_px / math.tan(0.5 * fov_rad)


def fov_from_focal(focal_px: float, size_px: float) -> float:
    return 2.0 * math.atan(0.5 * size_px / focal_px)


def intrinsics_matrix(fx: float, fy: float, cx: float, cy: float) -> torch.Tensor:
    """3x3 pinhole matrix in pixel units."""
    return torch.tensor([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]], dtype=torch.float32)


def look_at_c2w_gl(eyes: torch.Tensor, target: torch.Tensor, up=WORLD_UP) -> torch.Tensor:
    """Camera-to-world GL matrices (C, 4, 4) for cameras at ``eyes`` (C, 3) looking at ``target`` (3,)."""
    eyes = torch.as_tensor(eyes, dtype=torch.float32).reshape(-1, 3)
    target = torch.as_tensor(target, dtype=torch.float32).reshape(1, 3)
    forward = torch.nn.functional.normalize(target - eyes, dim=-1)
    up_vec = torch.tensor(up, dtype=torch.float32).expand_as(forward).clone()
    # A camera looking straight along the up axis has no defined "right": use world Y instead.
    parallel = torch.cross(forward, up_vec, dim=-1).norm(dim=-1) < 1e-6
    up_vec[parallel] = torch.tensor([0.0, 1.0, 0.0])
    right = torch.nn.functional.normalize(torch.cross(forward, up_vec, dim=-1), dim=-1)
    cam_up = torch.cross(right, forward, dim=-1)
    c2w = torch.eye(4).repeat(len(eyes), 1, 1)
    c2w[:, :3, 0] = right
    c2w[:, :3, 1] = cam_up
    c2w[:, :3, 2] = -forward  # GL cameras look down -Z
    c2w[:, :3, 3] = eyes
    return c2w


@dataclass
class Cameras:
    """A batch of pinhole cameras sharing one image size.

    c2w_gl: (C, 4, 4) camera-to-world, OpenGL/Blender camera convention (as in transforms.json).
    intrinsics: (C, 3, 3) pixel-unit pinhole matrices.
    """

    c2w_gl: torch.Tensor
    intrinsics: torch.Tensor
    width: int
    height: int

    def __post_init__(self):
        self.c2w_gl = torch.as_tensor(self.c2w_gl, dtype=torch.float32).reshape(-1, 4, 4)
        self.intrinsics = torch.as_tensor(self.intrinsics, dtype=torch.float32).reshape(-1, 3, 3)
        if len(self.intrinsics) == 1 and len(self.c2w_gl) > 1:
            self.intrinsics = self.intrinsics.expand(len(self.c2w_gl), 3, 3).clone()
        if len(self.intrinsics) != len(self.c2w_gl):
            raise ValueError(f"{len(self.c2w_gl)} poses but {len(self.intrinsics)} intrinsics")
        self.width, self.height = int(self.width), int(self.height)

    def __len__(self) -> int:
        return len(self.c2w_gl)

    def __getitem__(self, index) -> "Cameras":
        if isinstance(index, int):
            index = slice(index, index + 1) if index != -1 else slice(-1, None)
        return Cameras(self.c2w_gl[index], self.intrinsics[index], self.width, self.height)

    @property
    def device(self) -> torch.device:
        return self.c2w_gl.device

    def to(self, device) -> "Cameras":
        return Cameras(self.c2w_gl.to(device), self.intrinsics.to(device), self.width, self.height)

    def world_to_camera_cv(self) -> torch.Tensor:
        """(C, 4, 4) world-to-camera matrices in the OpenCV convention, as renderers take them."""
        return c2w_gl_to_w2c_cv(self.c2w_gl)

    @property
    def centers(self) -> torch.Tensor:
        """(C, 3) camera positions in world space."""
        return self.c2w_gl[:, :3, 3]

    def scaled(self, factor: float) -> "Cameras":
        """The same cameras for images resized by ``factor`` (0.5 = half size)."""
        K = self.intrinsics.clone()
        K[:, :2, :] *= factor
        return Cameras(self.c2w_gl, K, round(self.width * factor), round(self.height * factor))


def fibonacci_directions(n: int, upper_hemisphere: bool = False, min_elevation_deg: float = 0.0) -> torch.Tensor:
    """(n, 3) unit vectors spread evenly over the sphere (or the part above ``min_elevation_deg``)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z_low = math.sin(math.radians(min_elevation_deg)) if upper_hemisphere else -1.0
    z = 1.0 - (1.0 - z_low) * i / n  # uniform in z = uniform in area
    golden_angle = math.pi * (3.0 - math.sqrt(5.0))
    theta = golden_angle * i
    r = torch.sqrt((1.0 - z * z).clamp(min=0.0))
    return torch.stack([r * torch.cos(theta), r * torch.sin(theta), z], dim=-1).float()


def orbit_cameras(
    n_views: int,
    radius: float,
    target=(0.0, 0.0, 0.0),
    fov_x_deg: float = 40.0,
    width: int = 256,
    height: int = 256,
    elevation_deg: float | None = 20.0,
    upper_hemisphere: bool = True,
    min_elevation_deg: float = 5.0,
) -> Cameras:
    """Cameras around ``target``.

    With ``elevation_deg`` set: a turntable ring at that elevation (azimuth 0 looks along +Y from -Y).
    With ``elevation_deg=None``: views spread evenly over a sphere or the upper hemisphere.
    """
    target_t = torch.tensor(target, dtype=torch.float32)
    if elevation_deg is not None:
        azimuth = torch.arange(n_views, dtype=torch.float32) * (2 * math.pi / max(n_views, 1))
        elevation = math.radians(elevation_deg)
        dirs = torch.stack(
            [
                torch.sin(azimuth) * math.cos(elevation),
                -torch.cos(azimuth) * math.cos(elevation),
                torch.full_like(azimuth, math.sin(elevation)),
            ],
            dim=-1,
        )
    else:
        dirs = fibonacci_directions(n_views, upper_hemisphere, min_elevation_deg)
    eyes = target_t + radius * dirs
    c2w = look_at_c2w_gl(eyes, target_t)
    f = focal_from_fov(math.radians(fov_x_deg), width)
    K = intrinsics_matrix(f, f, width / 2.0, height / 2.0)
    return Cameras(c2w, K.expand(n_views, 3, 3).clone(), width, height)

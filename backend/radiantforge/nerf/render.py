"""Volume rendering of a radiance field: rays, samples, empty-space skipping, compositing, shading.

One :func:`render` call turns a field (:class:`radiantforge.nerf.field.RadianceField`) and a batch
of :class:`radiantforge.cameras.Cameras` into images, opacity, depth and normals:

1. Rays. Pixel (row i, column j) is shot through its centre (j + 0.5, i + 0.5) in the OpenCV
   camera frame (``cameras.world_to_camera_cv()``: +Z forward, +Y down), as every renderer here.
   Directions are unit vectors, so the ray parameter t is the distance from the camera centre.
2. Box. Each ray is clipped to the field's ``aabb`` (slab test); rays that miss it see only the
   background.
3. Stratified samples. [t_near, t_far] is cut into S equal bins of width Δ and each bin gets one
   sample (uniformly jittered while training, the bin centre otherwise). Each sample stands for
   its whole bin, so a density σ_i contributes optical thickness σ_i·Δ.
4. Empty-space skipping. An :class:`OccupancyGrid` (as in Instant-NGP and stable-dreamfusion: a
   coarse grid of the field's density, kept as a decaying running maximum) marks cells that can
   hold matter. The field is evaluated only at samples in occupied cells, packed into one batch;
   the others get σ = 0. The grid is conservative (dilated by one cell), so on a field whose
   empty space is truly empty the image is the same as with dense sampling.
   Colour is then evaluated only at samples with a visible compositing weight (see
   ``RenderConfig.min_sample_weight``): density decides where the field is seen, colour only
   matters there.
5. Compositing. T_i = exp(−Σ_{j<i} σ_j Δ), α_i = 1 − exp(−σ_i Δ), w_i = T_i α_i; colour Σ w_i c_i,
   opacity Σ w_i (≤ 1), expected distance Σ w_i t_i; the background fills the rest: colour +
   (1 − opacity)·background.
6. Normals: n = −∇σ / |∇σ| by finite differences of the density (grid encodings have no second
   derivative in ``grid_sample``, and differences are what DreamFusion re-implementations use);
   gradients flow through them into the geometry, which lambertian shading needs.

Shading modes (DreamFusion): "albedo" (c = a), "lambertian" (c = a·(ambient + (1 − ambient)·
max(0, n·l)) with l the unit vector from the sample to a point light), "textureless" (the same
with a = 1, grey), "normal" (c = (n + 1)/2). Shading is applied per sample before compositing.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cameras import Cameras
from ..errors import InputError

SHADING_MODES = ("albedo", "textureless", "lambertian", "normal")
NORMAL_DIFFERENCES = ("central", "forward")
# |∇σ| below this (in 1/m²) has no reliable direction: normalising it would amplify noise.
MIN_GRADIENT_NORM = 1e-8
# Cells whose density could make a ray lose at least this fraction of its light while crossing
# one cell count as occupied (Instant-NGP's "minimum optical thickness").
DEFAULT_MIN_OPTICAL_THICKNESS = 0.01


@dataclass
class RenderConfig:
    """Settings of :func:`render`.

    num_samples: samples per ray between the ray's entry into and exit from the box.
    perturb: jitter samples inside their bins (training); False puts them at bin centres.
    near: rays start at least this far (metres) from the camera centre.
    normal_difference: "central" (6 extra density evaluations per sample, second-order accurate)
        or "forward" (3, first-order); normal_epsilon: the step in metres.
    ambient: ambient share of the lambertian and textureless shading (the rest is diffuse).
    chunk_points: points per field call; bounded temporaries keep allocation and caches cheap on CPUs.
    min_sample_weight: samples with a smaller compositing weight get no colour (albedo, normals,
        shading), which saves most colour and normal evaluations once the field has a surface;
        0 shades every evaluated sample.
    """

    num_samples: int = 64
    perturb: bool = True
    near: float = 0.05
    normal_difference: Literal["central", "forward"] = "central"
    normal_epsilon: float = 0.01
    ambient: float = 0.1
    chunk_points: int = 8192
    min_sample_weight: float = 1e-4

    def __post_init__(self):
        if self.num_samples < 1:
            raise InputError(f"must be at least 1, got {self.num_samples}", field="num_samples")
        if self.near < 0:
            raise InputError(f"must be >= 0, got {self.near}", field="near")
        if self.normal_difference not in NORMAL_DIFFERENCES:
            raise InputError(f"expected one of {', '.join(NORMAL_DIFFERENCES)}, got {self.normal_difference!r}",
                             field="normal_difference")
        if not self.normal_epsilon > 0:
            raise InputError(f"must be positive, got {self.normal_epsilon}", field="normal_epsilon")
        if not 0.0 <= self.ambient <= 1.0:
            raise InputError(f"must lie in [0, 1], got {self.ambient}", field="ambient")
        if self.min_sample_weight < 0:
            raise InputError(f"must be >= 0, got {self.min_sample_weight}", field="min_sample_weight")
        if self.chunk_points < 1:
            raise InputError(f"must be at least 1, got {self.chunk_points}", field="chunk_points")


@dataclass
class NerfRender:
    """Everything one :func:`render` call produces, for C cameras of H x W pixels.

    image: (C, H, W, 3) shaded colour over the background, in [0, 1].
    foreground: (C, H, W, 3) shaded colour of the field alone (premultiplied by opacity).
    opacity: (C, H, W) Σ w_i in [0, 1].
    distance: (C, H, W) Σ w_i t_i, expected distance from the camera centre along the ray (0 on
        the background; divide by opacity for the surface distance).
    depth: (C, H, W) the same as camera-space depth (OpenCV z).
    normal: (C, H, W, 3) Σ w_i n_i, composited world-space unit normals (None when not computed).
    orientation_penalty: (C, H, W) Σ stopgrad(w_i)·max(0, n_i·d)², DreamFusion's penalty on
        normals facing away from the camera (None when normals were not computed).
    background: (C, H, W, 3) the background colour behind each pixel.
    sample_weights: (C, H, W, S) compositing weights w_i.
    num_evaluated: number of samples whose density was evaluated (not skipped by the occupancy grid).
    num_shaded: number of those whose colour was evaluated (weight above ``min_sample_weight``).
    """

    image: Tensor
    foreground: Tensor
    opacity: Tensor
    distance: Tensor
    depth: Tensor
    normal: Tensor | None
    orientation_penalty: Tensor | None
    background: Tensor
    sample_weights: Tensor
    num_evaluated: int
    num_shaded: int


def camera_rays(cameras: Cameras) -> tuple[Tensor, Tensor, Tensor]:
    """Rays through the pixel centres of every camera.

    Returns origins (C, H, W, 3), unit directions (C, H, W, 3) in world space, and
    z_per_distance (C, H, W): camera-space depth per metre travelled along each ray.
    """
    device = cameras.device
    w2c = cameras.world_to_camera_cv()  # (C, 4, 4)
    rotation_c2w = w2c[:, :3, :3].transpose(1, 2)  # inverse of a rotation
    centers = -(rotation_c2w @ w2c[:, :3, 3:4]).squeeze(-1)  # (C, 3)
    K = cameras.intrinsics.to(device)
    rows = torch.arange(cameras.height, device=device, dtype=torch.float32) + 0.5
    cols = torch.arange(cameras.width, device=device, dtype=torch.float32) + 0.5
    v, u = torch.meshgrid(rows, cols, indexing="ij")  # (H, W) pixel-centre coordinates
    x = (u[None] - K[:, 0, 2, None, None]) / K[:, 0, 0, None, None]
    y = (v[None] - K[:, 1, 2, None, None]) / K[:, 1, 1, None, None]
    dirs_cam = torch.stack([x, y, torch.ones_like(x)], dim=-1)  # (C, H, W, 3), z = 1
    lengths = dirs_cam.norm(dim=-1)
    dirs_world = torch.einsum("cij,chwj->chwi", rotation_c2w, dirs_cam) / lengths[..., None]
    origins = centers[:, None, None, :].expand_as(dirs_world)
    return origins, dirs_world, 1.0 / lengths


def intersect_aabb(origins: Tensor, directions: Tensor, aabb: Tensor,
                   near: float = 0.0) -> tuple[Tensor, Tensor, Tensor]:
    """Slab test of rays (N, 3), (N, 3) against the box ``aabb`` (2, 3).

    Returns t_near (N,) (at least ``near``), t_far (N,) and hit (N,) bool (the ray crosses the box
    beyond ``near``); for missed rays t_near = t_far.
    """
    # Axis-parallel rays divide by ±0 and get ±inf slabs, which min/max handle; nudge exact zeros
    # to a tiny value of their sign so that 0·inf never makes a NaN.
    safe = torch.where(directions.abs() < 1e-12, torch.full_like(directions, 1e-12).copysign(directions), directions)
    inverse = 1.0 / safe
    t0 = (aabb[0] - origins) * inverse
    t1 = (aabb[1] - origins) * inverse
    t_near = torch.minimum(t0, t1).amax(dim=-1).clamp(min=near)
    t_far = torch.maximum(t0, t1).amin(dim=-1)
    hit = t_far > t_near
    return t_near, torch.where(hit, t_far, t_near), hit


def stratified_samples(t_near: Tensor, t_far: Tensor, num_samples: int, perturb: bool,
                       generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """One sample per bin of S equal bins over [t_near, t_far] (N,).

    Returns t (N, S) sample distances and bin_width (N,) (Δ, the length each sample stands for).
    """
    bin_width = (t_far - t_near) / num_samples
    offsets = torch.arange(num_samples, device=t_near.device, dtype=t_near.dtype)
    if perturb:
        jitter = torch.rand(t_near.shape[0], num_samples, generator=generator,
                            device=generator.device if generator is not None else "cpu").to(t_near)
    else:
        jitter = torch.full((t_near.shape[0], num_samples), 0.5, device=t_near.device, dtype=t_near.dtype)
    return t_near[:, None] + (offsets[None] + jitter) * bin_width[:, None], bin_width


def compositing_weights(sigma: Tensor, bin_width: Tensor) -> Tensor:
    """w_i = T_i·α_i for densities (N, S) and bin widths (N,): (N, S), Σ_i w_i = 1 − exp(−Σ σ_i Δ) ≤ 1."""
    optical = sigma * bin_width[:, None]
    # Exclusive cumulative sum in log space: exact transmittance without a running product's drift.
    before = torch.cumsum(optical, dim=-1) - optical
    return torch.exp(-before) * (1.0 - torch.exp(-optical))


class OccupancyGrid:
    """A coarse grid over ``aabb`` that says where the field may hold matter (see the module docstring).

    density_ema: (R, R, R) running maximum of the density sampled in each cell, decayed by
    ``decay`` at every :meth:`update`; occupied: (R, R, R) bool, cells whose value exceeds the
    threshold min(mean of the grid, ``min_optical_thickness`` / cell size) — the mean lets it skip
    space while the whole field is still a diffuse fog — then dilated by one cell when ``dilate``
    (a cell sampled at one random point can miss matter in its corner). Until the first update
    every cell is occupied, so nothing is skipped.
    """

    def __init__(self, aabb: Tensor, resolution: int = 64, decay: float = 0.95,
                 min_optical_thickness: float = DEFAULT_MIN_OPTICAL_THICKNESS, dilate: bool = True):
        if resolution < 1:
            raise InputError(f"must be at least 1, got {resolution}", field="resolution")
        if not 0.0 <= decay <= 1.0:
            raise InputError(f"must lie in [0, 1], got {decay}", field="decay")
        self.aabb = torch.as_tensor(aabb, dtype=torch.float32).reshape(2, 3)
        self.resolution = int(resolution)
        self.decay = float(decay)
        self.min_optical_thickness = float(min_optical_thickness)
        self.dilate = bool(dilate)
        shape = (self.resolution,) * 3
        self.density_ema = torch.zeros(shape, device=self.aabb.device)
        self.occupied = torch.ones(shape, dtype=torch.bool, device=self.aabb.device)
        self.num_updates = 0

    @property
    def cell_size(self) -> Tensor:
        """(3,) cell edge lengths in metres."""
        return (self.aabb[1] - self.aabb[0]) / self.resolution

    @property
    def threshold(self) -> float:
        """The density above which a cell counts as occupied (before dilation)."""
        by_thickness = self.min_optical_thickness / float(self.cell_size.min())
        return min(float(self.density_ema.mean()), by_thickness)

    @property
    def occupied_fraction(self) -> float:
        return float(self.occupied.float().mean())

    def to(self, device) -> "OccupancyGrid":
        self.aabb = self.aabb.to(device)
        self.density_ema = self.density_ema.to(device)
        self.occupied = self.occupied.to(device)
        return self

    @torch.no_grad()
    def update(self, density_fn: Callable[[Tensor], Tensor], generator: torch.Generator | None = None,
               chunk_points: int = 1 << 16) -> None:
        """Sample ``density_fn`` (N, 3) -> (N,) at one random point in every cell and refresh the grid."""
        R = self.resolution
        device = self.aabb.device
        index = torch.arange(R, device=device, dtype=torch.float32)
        cells = torch.stack(torch.meshgrid(index, index, index, indexing="ij"), dim=-1).reshape(-1, 3)
        jitter = torch.rand(cells.shape, generator=generator,
                            device=generator.device if generator is not None else "cpu").to(device)
        points = self.aabb[0] + (cells + jitter) * self.cell_size
        density = torch.cat([density_fn(chunk).reshape(-1).float() for chunk in points.split(chunk_points)])
        density = density.reshape(R, R, R).nan_to_num(0.0)
        if self.num_updates == 0:
            self.density_ema = density
        else:
            self.density_ema = torch.maximum(self.density_ema * self.decay, density)
        self.num_updates += 1
        occupied = self.density_ema > self.threshold
        if self.dilate:
            occupied = F.max_pool3d(occupied[None, None].float(), kernel_size=3, stride=1, padding=1)[0, 0] > 0
        self.occupied = occupied

    def lookup(self, points: Tensor) -> Tensor:
        """(..., 3) world points -> (...) bool, True where the point's cell is occupied (outside: False)."""
        unit = (points - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((unit >= 0) & (unit <= 1)).all(dim=-1)
        index = (unit * self.resolution).long().clamp(0, self.resolution - 1)
        return self.occupied[index[..., 0], index[..., 1], index[..., 2]] & inside

    def state_dict(self) -> dict:
        return {"density_ema": self.density_ema.cpu(), "occupied": self.occupied.cpu(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        self.density_ema = state["density_ema"].to(self.aabb.device)
        self.occupied = state["occupied"].to(self.aabb.device)
        self.num_updates = int(state["num_updates"])


def _in_chunks(fn: Callable[[Tensor], Tensor | tuple], points: Tensor, chunk: int):
    """fn over (N, 3) points in chunks, outputs concatenated (a tensor or a tuple of tensors)."""
    if points.shape[0] <= chunk:
        return fn(points)
    outputs = [fn(part) for part in points.split(chunk)]
    if isinstance(outputs[0], tuple):
        return tuple(torch.cat(parts) for parts in zip(*outputs))
    return torch.cat(outputs)


def density_gradient_normals(density_fn: Callable[[Tensor], Tensor], points: Tensor, epsilon: float = 0.01,
                             difference: str = "central", density_at_points: Tensor | None = None,
                             chunk_points: int = 8192) -> Tensor:
    """Unit normals −∇σ/|∇σ| (M, 3) at ``points`` (M, 3) by finite differences of ``density_fn``.

    "forward" reuses ``density_at_points`` (M,) when given. Differentiable w.r.t. the field.
    """
    if points.shape[0] == 0:
        return points.new_zeros(0, 3)
    eye = torch.eye(3, device=points.device, dtype=points.dtype) * epsilon  # (3, 3) offsets along x, y, z
    if difference == "central":
        offsets = torch.cat([eye, -eye])  # (6, 3)
        values = _in_chunks(density_fn, (points[:, None, :] + offsets).reshape(-1, 3), chunk_points).reshape(-1, 6)
        gradient = (values[:, :3] - values[:, 3:]) / (2.0 * epsilon)
    elif difference == "forward":
        values = _in_chunks(density_fn, (points[:, None, :] + eye).reshape(-1, 3), chunk_points).reshape(-1, 3)
        center = density_at_points if density_at_points is not None else _in_chunks(density_fn, points, chunk_points)
        gradient = (values - center.reshape(-1, 1)) / epsilon
    else:
        raise InputError(f"expected one of {', '.join(NORMAL_DIFFERENCES)}, got {difference!r}",
                         field="normal_difference")
    return -gradient / gradient.norm(dim=-1, keepdim=True).clamp(min=MIN_GRADIENT_NORM)


def shade(mode: str, albedo: Tensor, normals: Tensor | None, points: Tensor, light_positions: Tensor | None,
          ambient: float) -> Tensor:
    """Per-sample colour (M, 3) for a shading ``mode``; albedo, normals, points, light_positions (M, 3)."""
    if mode == "albedo":
        return albedo
    if mode == "normal":
        return (normals + 1.0) * 0.5
    light_dirs = F.normalize(light_positions - points, dim=-1)
    diffuse = (normals * light_dirs).sum(-1, keepdim=True).clamp(min=0.0)
    lighting = ambient + (1.0 - ambient) * diffuse
    if mode == "textureless":
        return lighting.expand(-1, 3)
    return albedo * lighting  # lambertian


def sample_point_lights(cameras: Cameras, generator: torch.Generator | None = None,
                        jitter_std: float = 0.5) -> Tensor:
    """(C, 3) point-light positions near each camera: centre + N(0, jitter_std² I) (DreamFusion)."""
    noise = torch.randn(len(cameras), 3, generator=generator,
                        device=generator.device if generator is not None else "cpu")
    return cameras.centers + jitter_std * noise.to(cameras.centers)


def _background_colors(background, field, directions: Tensor, generator) -> Tensor:
    """(C, H, W, 3) background colours from a model, a colour (3,) / (C, 3) / (C, H, W, 3), or the field's own."""
    if background is None:
        background = getattr(field, "background", None)
        if background is None:
            return torch.zeros_like(directions)
    if isinstance(background, torch.nn.Module) or callable(background):
        return background(directions, generator=generator)
    colors = torch.as_tensor(background, dtype=directions.dtype, device=directions.device)
    if colors.ndim == 0:
        colors = colors.expand(3)
    if colors.shape == (3,):
        return colors.expand_as(directions)
    if colors.shape == (directions.shape[0], 3):
        return colors[:, None, None, :].expand_as(directions)
    if colors.shape == directions.shape:
        return colors
    raise InputError(f"expected a colour (3,), (C, 3) or (C, H, W, 3), got {tuple(colors.shape)}", field="background")


def render(field, cameras: Cameras, config: RenderConfig | None = None, *, shading: str = "albedo",
           light_positions: Tensor | None = None, background=None, occupancy: OccupancyGrid | None = None,
           compute_normals: bool | None = None, generator: torch.Generator | None = None) -> NerfRender:
    """Render ``field`` from every camera (see the module docstring).

    field: a :class:`~radiantforge.nerf.field.RadianceField` (``aabb``, ``density``, ``albedo``).
    shading: one of "albedo", "textureless", "lambertian", "normal".
    light_positions: (C, 3) or (3,) world-space point lights for lambertian / textureless shading
        (default: :func:`sample_point_lights` with ``generator``).
    background: None (the field's ``background`` model, black if it has none), a module called with
        the ray directions (C, H, W, 3), or a colour (3,), (C, 3) or (C, H, W, 3).
    occupancy: skip samples in cells this grid marks empty (None: evaluate every sample).
    compute_normals: None computes them only when the shading needs them; True also for albedo
        shading (for the orientation penalty), False never.
    generator: CPU generator for the sample jitter, default lights and a random background.
    """
    config = config or RenderConfig()
    if shading not in SHADING_MODES:
        raise InputError(f"expected one of {', '.join(SHADING_MODES)}, got {shading!r}", field="shading")
    needs_normals = shading != "albedo"
    if compute_normals is None:
        compute_normals = needs_normals
    elif needs_normals and not compute_normals:
        raise InputError(f"shading {shading!r} needs normals", field="compute_normals")
    aabb = field.aabb.to(cameras.device).float()
    C, H, W = len(cameras), cameras.height, cameras.width
    origins, directions, z_per_distance = camera_rays(cameras)
    num_rays = C * H * W
    rays_o, rays_d = origins.reshape(-1, 3), directions.reshape(-1, 3)
    t_near, t_far, hit = intersect_aabb(rays_o, rays_d, aabb, config.near)
    t, bin_width = stratified_samples(t_near, t_far, config.num_samples, config.perturb, generator)
    points = rays_o[:, None, :] + t[..., None] * rays_d[:, None, :]  # (N, S, 3)
    valid = hit[:, None].expand_as(t)
    if occupancy is not None:
        valid = valid & occupancy.lookup(points)
    packed_points = points[valid]  # (M, 3)
    sigma_packed = _in_chunks(field.density, packed_points, config.chunk_points)
    # Scatter the packed samples back to (N, S); skipped samples keep σ = 0.
    sigma = torch.zeros_like(t).masked_scatter(valid, sigma_packed.to(t.dtype))
    weights = compositing_weights(sigma, bin_width)  # (N, S)

    # Colours (albedo, normals, shading) only where a sample can be seen: every sample still shapes
    # the transmittance through σ, but one whose weight is below min_sample_weight adds at most
    # that much of its colour, so it is left out (at most S·min_sample_weight per pixel).
    shaded = valid & (weights.detach() > config.min_sample_weight)
    shaded_points = points[shaded]  # (K, 3)
    weights_shaded = weights[shaded][:, None]  # (K, 1)
    ray_index = torch.arange(num_rays, device=t.device)[:, None].expand_as(t)[shaded]  # (K,)
    albedo = _in_chunks(field.albedo, shaded_points, config.chunk_points) if shading != "normal" else None
    normals = None
    if compute_normals:
        normals = density_gradient_normals(field.density, shaded_points, config.normal_epsilon,
                                           config.normal_difference, sigma[shaded], config.chunk_points)
    lights_shaded = None
    if shading in ("lambertian", "textureless"):
        if light_positions is None:
            light_positions = sample_point_lights(cameras, generator)
        lights = torch.as_tensor(light_positions, dtype=torch.float32, device=cameras.device).reshape(-1, 3)
        lights = lights.expand(C, 3) if lights.shape[0] == 1 else lights
        if lights.shape[0] != C:
            raise InputError(f"expected (3,) or ({C}, 3), got {tuple(lights.shape)}", field="light_positions")
        lights_shaded = lights[ray_index // (H * W)]
    colors = shade(shading, albedo, normals, shaded_points, lights_shaded, config.ambient)

    def accumulate(values: Tensor, sample_weights: Tensor) -> Tensor:
        """Σ over each ray's shaded samples of weight·value: (K, D) -> (N, D)."""
        out = torch.zeros(num_rays, values.shape[-1], device=values.device, dtype=values.dtype)
        return out.index_add(0, ray_index, sample_weights * values)

    foreground = accumulate(colors, weights_shaded)
    opacity = weights.sum(-1)
    distance = (weights * t).sum(-1)
    normal_image = orientation = None
    if normals is not None:
        normal_image = accumulate(normals, weights_shaded).reshape(C, H, W, 3)
        facing_away = (normals * rays_d[ray_index]).sum(-1, keepdim=True).clamp(min=0.0) ** 2
        orientation = accumulate(facing_away, weights_shaded.detach()).reshape(C, H, W)

    background_colors = _background_colors(background, field, directions, generator)
    foreground = foreground.reshape(C, H, W, 3)
    opacity = opacity.reshape(C, H, W)
    image = foreground + (1.0 - opacity[..., None]) * background_colors
    distance = distance.reshape(C, H, W)
    return NerfRender(
        image=image, foreground=foreground, opacity=opacity, distance=distance, depth=distance * z_per_distance,
        normal=normal_image, orientation_penalty=orientation, background=background_colors,
        sample_weights=weights.reshape(C, H, W, -1), num_evaluated=int(packed_points.shape[0]),
        num_shaded=int(shaded_points.shape[0]),
    )


@dataclass
class ShadingSchedule:
    """Which shading each optimisation step uses (DreamFusion / stable-dreamfusion).

    During the first ``latent_iter_ratio`` of the run every step renders "normal" (a geometry
    warm-up); afterwards "albedo" with probability ``albedo_probability``, else "textureless" with
    probability ``textureless_probability`` (of the whole), else "lambertian".
    """

    latent_iter_ratio: float = 0.2
    albedo_probability: float = 0.2
    textureless_probability: float = 0.4

    def __post_init__(self):
        if not 0.0 <= self.latent_iter_ratio <= 1.0:
            raise InputError(f"must lie in [0, 1], got {self.latent_iter_ratio}", field="latent_iter_ratio")
        if not (self.albedo_probability >= 0 and self.textureless_probability >= 0
                and self.albedo_probability + self.textureless_probability <= 1.0):
            raise InputError("albedo_probability and textureless_probability must be >= 0 and sum to at most 1, "
                             f"got {self.albedo_probability} and {self.textureless_probability}",
                             field="albedo_probability")

    def pick(self, step: int, total_steps: int, generator: torch.Generator | None = None) -> str:
        if total_steps > 0 and step < self.latent_iter_ratio * total_steps:
            return "normal"
        draw = float(torch.rand((), generator=generator))
        if draw < self.albedo_probability:
            return "albedo"
        if draw < self.albedo_probability + self.textureless_probability:
            return "textureless"
        return "lambertian"

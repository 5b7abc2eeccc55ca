"""Known-answer tests of the NeRF field and volume renderer (radiantforge.nerf).

Analytic fields (a constant-density box, spheres) have closed-form opacity, silhouette, depth and
normals; the references below are computed independently in float64 from ray-box and ray-sphere
intersections. The fitting test recovers two analytic coloured spheres from random views, which
proves that gradients reach the encoding, both MLPs and the renderer.
"""

from __future__ import annotations

import math

import pytest
import torch

from radiantforge.cameras import Cameras, orbit_cameras
from radiantforge.errors import InputError
from radiantforge.guidance import CameraSamplingConfig, sample_cameras
from radiantforge.metrics import psnr
from radiantforge.nerf import (BackgroundModel, FieldConfig, HashGridConfig, HashGridEncoding, NerfField, OccupancyGrid,
                               RenderConfig, ShadingSchedule, TriPlaneConfig, TriPlaneEncoding, camera_rays,
                               compositing_weights, density_gradient_normals, render)

UNIT_BOX = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


class ConstantBoxField:
    """σ constant everywhere inside the render box; albedo a fixed colour."""

    def __init__(self, sigma: float, color=(0.2, 0.6, 0.9)):
        self.aabb = UNIT_BOX.clone()
        self.sigma = sigma
        self.color = torch.tensor(color)

    def density(self, points):
        return torch.full(points.shape[:-1], self.sigma)

    def albedo(self, points):
        return self.color.expand(*points.shape[:-1], 3)


class SphereField:
    """A ball of radius ``radius`` at ``center``: σ = peak inside, 0 outside, with an optional smooth
    shell of width ``softness`` (σ = peak·sigmoid((r − |x − c|)/softness)); albedo from a function."""

    def __init__(self, radius=0.5, center=(0.0, 0.0, 0.0), peak=500.0, softness=0.0, albedo_fn=None):
        self.aabb = UNIT_BOX.clone()
        self.radius, self.peak, self.softness = radius, peak, softness
        self.center = torch.tensor(center)
        self.albedo_fn = albedo_fn or (lambda p: (0.5 + 0.5 * p).clamp(0.0, 1.0))

    def density(self, points):
        distance = (points - self.center).norm(dim=-1)
        if self.softness == 0:
            return torch.where(distance < self.radius, torch.full_like(distance, self.peak), torch.zeros_like(distance))
        return self.peak * torch.sigmoid((self.radius - distance) / self.softness)

    def albedo(self, points):
        return self.albedo_fn(points)


def reference_rays(cameras: Cameras):
    """float64 origins and unit directions (C, H, W, 3) through pixel centres, from the CV projection itself."""
    w2c = cameras.world_to_camera_cv().double()
    K = cameras.intrinsics.double()
    v, u = torch.meshgrid(torch.arange(cameras.height, dtype=torch.float64) + 0.5,
                          torch.arange(cameras.width, dtype=torch.float64) + 0.5, indexing="ij")
    pixels = torch.stack([u, v, torch.ones_like(u)], dim=-1)  # (H, W, 3)
    dirs_cam = torch.einsum("cij,hwj->chwi", torch.linalg.inv(K), pixels)
    R, t = w2c[:, :3, :3], w2c[:, :3, 3]
    dirs = torch.einsum("cji,chwj->chwi", R, dirs_cam)  # R^T d
    origins = -torch.einsum("cji,cj->ci", R, t)[:, None, None, :].expand_as(dirs)
    return origins, torch.nn.functional.normalize(dirs, dim=-1)


def reference_sphere_hits(cameras: Cameras, radius: float, center=(0.0, 0.0, 0.0)):
    """(hit (C, H, W) bool, t_entry, chord length, entry point (C, H, W, 3)) of rays with a sphere, float64."""
    origins, dirs = reference_rays(cameras)
    oc = origins - torch.tensor(center, dtype=torch.float64)
    b = (oc * dirs).sum(-1)
    disc = b * b - (oc * oc).sum(-1) + radius * radius
    root = disc.clamp(min=0).sqrt()
    hit = disc > 0
    t_entry = -b - root
    return hit, t_entry, 2.0 * root * hit, origins + t_entry[..., None] * dirs


def test_camera_rays_pass_through_pixel_centres():
    cameras = orbit_cameras(3, 3.0, fov_x_deg=50.0, width=12, height=9, elevation_deg=30.0)
    origins, directions, z_per_distance = camera_rays(cameras)
    ref_origins, ref_dirs = reference_rays(cameras)
    assert torch.allclose(origins.double(), ref_origins, atol=1e-5)
    assert torch.allclose(directions.double(), ref_dirs, atol=1e-5)
    # A point along each ray projects back onto its pixel centre (j + 0.5, i + 0.5).
    points = origins + 2.0 * directions
    w2c = cameras.world_to_camera_cv()
    cam = torch.einsum("cij,chwj->chwi", w2c[:, :3, :3], points) + w2c[:, None, None, :3, 3]
    projected = torch.einsum("cij,chwj->chwi", cameras.intrinsics, cam)
    uv = projected[..., :2] / projected[..., 2:3]
    rows, cols = torch.meshgrid(torch.arange(9.0), torch.arange(12.0), indexing="ij")
    assert torch.allclose(uv[..., 0], cols + 0.5, atol=1e-3)
    assert torch.allclose(uv[..., 1], rows + 0.5, atol=1e-3)
    assert torch.allclose(cam[..., 2], 2.0 * z_per_distance, atol=1e-4)


def test_constant_density_opacity_is_one_minus_exp_of_chord():
    """σ constant in the box: opacity = 1 − exp(−σ·L) with L the ray's chord through the box."""
    sigma = 1.3
    cameras = orbit_cameras(4, 3.2, fov_x_deg=60.0, width=16, height=16, elevation_deg=25.0)
    out = render(ConstantBoxField(sigma), cameras, RenderConfig(num_samples=32, perturb=False), background=(0, 0, 0))
    origins, dirs = reference_rays(cameras)
    t0 = (UNIT_BOX[0].double() - origins) / dirs
    t1 = (UNIT_BOX[1].double() - origins) / dirs
    chord = (torch.maximum(t0, t1).amin(-1) - torch.minimum(t0, t1).amax(-1)).clamp(min=0)
    assert (chord > 0).any() and (chord == 0).any()  # rays both through and past the box
    expected = 1.0 - torch.exp(-sigma * chord)
    assert torch.allclose(out.opacity.double(), expected, atol=1e-5)
    # The image is the albedo premultiplied by opacity over a black background.
    assert torch.allclose(out.image, out.opacity[..., None] * torch.tensor([0.2, 0.6, 0.9]), atol=1e-5)
    weight_sums = out.sample_weights.sum(-1)
    assert torch.allclose(weight_sums, out.opacity, atol=1e-6)
    assert float(weight_sums.max()) <= 1.0 + 1e-6


def test_compositing_weights_never_exceed_one_and_follow_transmittance():
    generator = torch.Generator().manual_seed(0)
    sigma = torch.rand(64, 40, generator=generator) * 50.0
    widths = torch.rand(64, generator=generator) * 0.2
    weights = compositing_weights(sigma, widths)
    assert (weights >= 0).all() and float(weights.sum(-1).max()) <= 1.0 + 1e-6
    expected_total = 1.0 - torch.exp(-(sigma * widths[:, None]).sum(-1))
    assert torch.allclose(weights.sum(-1), expected_total, atol=1e-5)


def test_sphere_silhouette_and_depth_match_ray_sphere_intersection():
    radius = 0.55
    cameras = orbit_cameras(3, 2.8, fov_x_deg=45.0, width=40, height=40, elevation_deg=15.0)
    config = RenderConfig(num_samples=256, perturb=False)
    out = render(SphereField(radius=radius, peak=2000.0), cameras, config, background=(1, 1, 1))
    hit, t_entry, chord, entry = reference_sphere_hits(cameras, radius)
    silhouette = out.opacity > 0.5
    iou = (silhouette & hit).sum() / (silhouette | hit).sum()
    assert iou > 0.97, f"silhouette IoU {float(iou):.3f}"
    bin_width = 2.0 * math.sqrt(3.0) / config.num_samples  # the longest chord through the box over S bins
    solid = hit & (chord > 0.15)  # rays that cross enough matter to be opaque
    assert float(out.opacity[solid].min()) > 0.999
    surface_distance = out.distance[solid] / out.opacity[solid]
    assert float((surface_distance.double() - t_entry[solid]).abs().max()) < bin_width
    w2c = cameras.world_to_camera_cv().double()
    entry_z = (torch.einsum("cij,chwj->chwi", w2c[:, :3, :3], entry) + w2c[:, None, None, :3, 3])[..., 2]
    assert float((out.depth[solid].double() / out.opacity[solid] - entry_z[solid]).abs().max()) < bin_width
    assert float(out.opacity[~hit].max()) < 1e-6  # nothing where the rays miss
    assert torch.allclose(out.image[~hit], torch.ones(3))


# A hard sphere has exactly zero density outside, so skipping must change nothing. The soft one's
# tail is cut where a cell's optical thickness drops below the grid's minimum (0.01): what is lost
# stays below a few thousandths of opacity.
@pytest.mark.parametrize("softness, tolerance", [(0.0, 1e-5), (0.03, 5e-3)])
def test_occupancy_grid_skipping_gives_the_dense_image_with_far_fewer_samples(softness, tolerance):
    field = SphereField(radius=0.4, center=(0.1, -0.1, 0.05), peak=80.0, softness=softness)
    cameras = orbit_cameras(2, 3.0, fov_x_deg=40.0, width=32, height=32, elevation_deg=20.0)
    config = RenderConfig(num_samples=96, perturb=False)
    dense = render(field, cameras, config, background=(1, 1, 1))
    grid = OccupancyGrid(field.aabb, resolution=32)
    assert grid.occupied_fraction == 1.0  # nothing skipped before the first update
    generator = torch.Generator().manual_seed(0)
    for _ in range(3):
        grid.update(field.density, generator=generator)
    assert grid.occupied_fraction < 0.2
    skipped = render(field, cameras, config, background=(1, 1, 1), occupancy=grid)
    assert skipped.num_evaluated < 0.3 * dense.num_evaluated
    assert float((skipped.image - dense.image).abs().max()) < tolerance
    assert float((skipped.opacity - dense.opacity).abs().max()) < tolerance


def test_occupancy_grid_follows_a_moving_object():
    """The running maximum decays: cells the object left become empty, the new ones occupied."""
    generator = torch.Generator().manual_seed(1)
    grid = OccupancyGrid(UNIT_BOX, resolution=16, decay=0.5)
    before = SphereField(radius=0.3, center=(-0.5, 0.0, 0.0), peak=100.0)
    after = SphereField(radius=0.3, center=(0.5, 0.0, 0.0), peak=100.0)
    grid.update(before.density, generator=generator)
    left, right = torch.tensor([[-0.5, 0.0, 0.0]]), torch.tensor([[0.5, 0.0, 0.0]])
    assert bool(grid.lookup(left)) and not bool(grid.lookup(right))
    ema_left = grid.density_ema[4, 8, 8].item()
    for _ in range(12):
        grid.update(after.density, generator=generator)
    assert bool(grid.lookup(right)) and not bool(grid.lookup(left))
    assert grid.density_ema[4, 8, 8].item() == pytest.approx(ema_left * 0.5**12, rel=1e-5)
    assert not bool(grid.lookup(torch.tensor([[1.5, 0.0, 0.0]])))  # outside the box


# Forward differences are first-order: their step (0.01 m) must be small next to the shell's width.
@pytest.mark.parametrize("difference, softness", [("central", 0.01), ("forward", 0.03)])
def test_density_gradient_normals_of_a_sphere_point_outward(difference, softness):
    radius = 0.5
    field = SphereField(radius=radius, peak=200.0, softness=softness)
    cameras = orbit_cameras(3, 2.5, fov_x_deg=45.0, width=24, height=24, elevation_deg=30.0)
    config = RenderConfig(num_samples=128, perturb=False, normal_difference=difference)
    out = render(field, cameras, config, background=(0, 0, 0), compute_normals=True)
    opaque = out.opacity > 0.95
    assert opaque.sum() > 100
    # Any point p of a centred sphere's shell has the outward normal p/|p|; take p where the ray stops.
    origins, dirs = reference_rays(cameras)
    stops = origins + (out.distance / out.opacity.clamp(min=1e-6)).double()[..., None] * dirs
    rendered = torch.nn.functional.normalize(out.normal[opaque], dim=-1).double()
    analytic = torch.nn.functional.normalize(stops[opaque], dim=-1)
    assert float((rendered * analytic).sum(-1).min()) > 0.99
    # Directly at points on the surface as well.
    points = torch.nn.functional.normalize(torch.randn(500, 3, generator=torch.Generator().manual_seed(2)), dim=-1)
    normals = density_gradient_normals(field.density, radius * points, 0.01, difference)
    assert float((normals * points).sum(-1).min()) > 0.999
    # Outward normals face the camera: the orientation penalty is ~0 on an opaque surface (grazing
    # rays may still cross a little of the soft shell's far side). A faint ball lets its back half,
    # where the normals face away, be seen: there the penalty is large.
    assert float(out.orientation_penalty[opaque].median()) < 1e-4
    assert float(out.orientation_penalty[opaque].max()) < 1e-2
    faint = render(SphereField(radius=radius, peak=1.0, softness=softness), cameras, config, background=(0, 0, 0),
                   compute_normals=True)
    assert float(faint.orientation_penalty[opaque].median()) > 0.01


def test_shading_modes_match_analytic_lambertian_on_a_sphere():
    radius, albedo, ambient = 0.5, torch.tensor([0.8, 0.5, 0.2]), 0.1
    field = SphereField(radius=radius, peak=200.0, softness=0.01, albedo_fn=lambda p: albedo.expand(len(p), 3))
    cameras = orbit_cameras(2, 2.6, fov_x_deg=45.0, width=24, height=24, elevation_deg=20.0)
    lights = cameras.centers + torch.tensor([0.8, -0.3, 1.0])
    config = RenderConfig(num_samples=160, perturb=False, ambient=ambient)
    hit = reference_sphere_hits(cameras, radius)[0]
    # The soft shell stops rays a little outside the radius: take the point where each ray stops
    # (its depth is checked above) and the sphere's normal there, p/|p|.
    origins, dirs = reference_rays(cameras)
    stops_at = render(field, cameras, config, background=(0, 0, 0))
    stops = origins + (stops_at.distance / stops_at.opacity.clamp(min=1e-6)).double()[..., None] * dirs
    normals = torch.nn.functional.normalize(stops, dim=-1)
    light_dirs = torch.nn.functional.normalize(lights[:, None, None, :].double() - stops, dim=-1)
    lighting = ambient + (1 - ambient) * (normals * light_dirs).sum(-1).clamp(min=0)  # (C, H, W)
    expected = {
        "albedo": albedo.double().expand_as(stops),
        "lambertian": albedo.double() * lighting[..., None],
        "textureless": lighting[..., None].expand_as(stops),
        "normal": (normals + 1) / 2,
    }
    for shading, reference in expected.items():
        out = render(field, cameras, config, shading=shading, light_positions=lights, background=(0, 0, 0))
        opaque = (out.opacity > 0.99) & hit
        assert opaque.sum() > 100
        error = (out.image[opaque].double() - reference[opaque]).abs().max()
        assert error < 0.03, f"{shading}: max error {float(error):.4f}"


def test_render_rejects_bad_arguments():
    field = SphereField()
    cameras = orbit_cameras(1, 3.0, width=8, height=8)
    with pytest.raises(InputError, match="shading"):
        render(field, cameras, shading="phong")
    with pytest.raises(InputError, match="compute_normals"):
        render(field, cameras, shading="lambertian", compute_normals=False)
    with pytest.raises(InputError, match="light_positions"):
        render(field, cameras, shading="lambertian", light_positions=torch.zeros(2, 3))
    with pytest.raises(InputError, match="num_samples"):
        RenderConfig(num_samples=0)
    with pytest.raises(InputError, match="encoding"):
        FieldConfig(encoding="octree")
    with pytest.raises(InputError, match="background"):
        FieldConfig(background="sky")


def test_triplane_encoding_interpolates_bilinear_planes_exactly():
    """Planes holding linear functions of their two coordinates: the feature is their product, exactly."""
    encoding = TriPlaneEncoding(TriPlaneConfig(resolutions=(5, 9), features=2))
    with torch.no_grad():
        for planes in encoding.planes:
            R = planes.shape[-1]
            grid = torch.linspace(-1, 1, R)
            rows, cols = torch.meshgrid(grid, grid, indexing="ij")  # plane[.., row=b, col=a]
            for p in range(3):
                planes[p, 0] = 2.0 + cols + 0.5 * rows  # 2 + a + b/2
                planes[p, 1] = 1.5 - 0.25 * cols * rows  # bilinear: also exact
    points = torch.rand(200, 3, generator=torch.Generator().manual_seed(3)) * 2 - 1
    x, y, z = points.unbind(-1)
    pairs = [(x, y), (x, z), (y, z)]
    first = math.prod(2.0 + a + 0.5 * b for a, b in pairs)
    second = math.prod(1.5 - 0.25 * a * b for a, b in pairs)
    features = encoding(points)
    assert features.shape == (200, 4)
    for level in range(2):
        assert torch.allclose(features[:, 2 * level], first, atol=1e-4)
        assert torch.allclose(features[:, 2 * level + 1], second, atol=1e-4)


def test_hash_grid_interpolates_trilinear_tables_exactly_on_dense_levels():
    """Dense levels hold a linear function of the lattice coordinates: trilinear interpolation reproduces it."""
    config = HashGridConfig(num_levels=3, features_per_level=1, log2_table_size=12, base_resolution=4,
                            max_resolution=64)
    encoding = HashGridEncoding(config)
    resolutions = encoding.resolutions.tolist()
    dense = encoding.dense_levels.tolist()
    assert dense[0] and not dense[-1]  # a dense level and a hashed one
    with torch.no_grad():
        R = resolutions[0]
        side = torch.arange(R + 1, dtype=torch.float32)
        i, j, k = torch.meshgrid(side, side, side, indexing="ij")
        # Table row of lattice corner (i, j, k) on a dense level: i + (R+1)·(j + (R+1)·k).
        values = (0.5 * i + 2.0 * j - 1.0 * k) / R
        table_rows = (i + (R + 1) * (j + (R + 1) * k)).long().reshape(-1)
        encoding.table[table_rows, 0] = values.reshape(-1)
    points = torch.rand(300, 3, generator=torch.Generator().manual_seed(4)) * 2 - 1
    unit = (points + 1) / 2
    expected = 0.5 * unit[:, 0] + 2.0 * unit[:, 1] - 1.0 * unit[:, 2]
    features = encoding(points)
    assert features.shape == (300, 3)
    assert torch.allclose(features[:, 0], expected, atol=1e-5)
    # Gradients reach the hashed tables too.
    features[:, -1].sum().backward()
    assert encoding.table.grad[encoding.level_offsets[-1]:].abs().sum() > 0


def test_fresh_field_is_a_centred_blob_in_empty_space():
    field = NerfField(FieldConfig(blob_density=10.0, blob_radius=0.5)).requires_grad_(False)
    center = field.density(torch.zeros(1, 3))
    corners = field.density(torch.tensor([[1.0, 1.0, 1.0], [-1.0, 1.0, -1.0]]))
    assert 8.0 < float(center) < 12.0  # softplus(≈10)
    assert float(corners.max()) < 1e-6
    albedo = field.albedo(torch.rand(10, 3) - 0.5)
    assert torch.allclose(albedo, torch.full_like(albedo, 0.5), atol=0.01)  # grey until trained


def test_background_models():
    directions = torch.nn.functional.normalize(torch.randn(3, 4, 5, 3), dim=-1)
    fixed = BackgroundModel("fixed", color=(0.1, 0.2, 0.3))(directions)
    assert torch.allclose(fixed, torch.tensor([0.1, 0.2, 0.3]).expand_as(directions))
    random_model = BackgroundModel("random")
    first = random_model(directions, generator=torch.Generator().manual_seed(5))
    again = random_model(directions, generator=torch.Generator().manual_seed(5))
    assert torch.equal(first, again)
    assert torch.equal(first[:, :1, :1].expand_as(first), first)  # one colour per image
    assert not torch.allclose(first[0], first[1])
    mlp_model = BackgroundModel("mlp")
    colors = mlp_model(directions)
    assert colors.shape == directions.shape and ((colors > 0) & (colors < 1)).all()
    colors.sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in mlp_model.parameters())
    # The field's own background shows where nothing is.
    field = NerfField(FieldConfig(background="fixed", background_color=(0.0, 1.0, 0.0)))
    out = render(field, orbit_cameras(1, 3.0, width=8, height=8), RenderConfig(num_samples=16))
    assert torch.allclose(out.background, torch.tensor([0.0, 1.0, 0.0]).expand_as(out.background))


def test_shading_schedule_warms_up_on_normals_then_mixes():
    schedule = ShadingSchedule(latent_iter_ratio=0.25, albedo_probability=0.3, textureless_probability=0.3)
    generator = torch.Generator().manual_seed(6)
    assert {schedule.pick(step, 100, generator) for step in range(25)} == {"normal"}
    picks = [schedule.pick(50, 100, generator) for _ in range(3000)]
    for name, probability in (("albedo", 0.3), ("textureless", 0.3), ("lambertian", 0.4)):
        assert abs(picks.count(name) / len(picks) - probability) < 0.04
    with pytest.raises(InputError, match="albedo_probability"):
        ShadingSchedule(albedo_probability=0.8, textureless_probability=0.5)


# --- fitting: gradients flow through encoding, MLPs and renderer -----------------------------------

SCENE_SPHERES = [((0.25, 0.0, 0.0), 0.35, (0.9, 0.2, 0.1)), ((-0.3, 0.1, 0.05), 0.25, (0.1, 0.5, 0.9))]


def analytic_scene(cameras: Cameras) -> torch.Tensor:
    """(C, H, W, 3) renders of two coloured spheres on white (colour brightening upwards), by ray casting."""
    origins, dirs = reference_rays(cameras)
    nearest = torch.full(origins.shape[:-1], math.inf, dtype=torch.float64)
    image = torch.ones(*origins.shape[:-1], 3, dtype=torch.float64)
    for center, radius, color in SCENE_SPHERES:
        oc = origins - torch.tensor(center, dtype=torch.float64)
        b = (oc * dirs).sum(-1)
        disc = b * b - (oc * oc).sum(-1) + radius * radius
        t = -b - disc.clamp(min=0).sqrt()
        hit = (disc > 0) & (t > 0) & (t < nearest)
        nearest = torch.where(hit, t, nearest)
        height = (origins + t[..., None] * dirs)[..., 2:3] - center[2]
        shade = (torch.tensor(color, dtype=torch.float64) * (0.75 + 0.25 * height / radius)).clamp(0, 1)
        image = torch.where(hit[..., None], shade, image)
    return image.float()


@pytest.fixture
def single_thread():
    # 32-pixel renders are many small ops: one thread avoids OpenMP's wake-up cost on a shared 2-core machine.
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def test_field_fits_analytic_spheres_from_random_views(single_thread):
    torch.manual_seed(0)
    field = NerfField(FieldConfig(background="fixed"))
    views = CameraSamplingConfig(width=32, height=32, distance_range=(2.2, 2.8), fov_range_deg=(40.0, 50.0))
    held_out = sample_cameras(views, batch_size=4, generator=torch.Generator().manual_seed(123)).cameras
    held_out_truth = analytic_scene(held_out)
    train_config, eval_config = RenderConfig(num_samples=48), RenderConfig(num_samples=48, perturb=False)

    def held_out_psnr() -> float:
        with torch.no_grad():
            return float(psnr(render(field, held_out, eval_config, background=(1, 1, 1)).image, held_out_truth).mean())

    start = held_out_psnr()
    optimizer = torch.optim.Adam(field.parameters(), lr=0.02)
    generator = torch.Generator().manual_seed(0)
    occupancy = OccupancyGrid(field.aabb, resolution=32)
    for step in range(200):
        if step % 16 == 0:
            occupancy.update(field.density, generator=generator)
        cameras = sample_cameras(views, batch_size=1, generator=generator).cameras
        out = render(field, cameras, train_config, background=(1, 1, 1), occupancy=occupancy, generator=generator)
        loss = ((out.image - analytic_scene(cameras)) ** 2).mean()
        optimizer.zero_grad()
        loss.backward()
        if step == 0:
            for name, parameter in field.named_parameters():
                if not name.startswith("background"):  # a fixed background has no parameters in use
                    assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        optimizer.step()
    end = held_out_psnr()
    print(f"held-out PSNR {start:.1f} -> {end:.1f} dB")
    assert end > 24.0 and end > start + 8.0, f"held-out PSNR {start:.1f} -> {end:.1f} dB"

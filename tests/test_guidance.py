"""Guidance without Stable Diffusion: SDS / CSD with the oracle denoiser, view prompts, camera sampling.

The oracle denoiser (DESIGN.md) predicts ε̂(x_t, t) = (x_t − α_t·x*)/σ_t for a known target x*,
so SDS must pull a learnable image to x*. The latent-path tests use the oracle's 2×2
space-to-depth autoencoder (exactly invertible, AutoencoderKL's interface) because a random VAE is
not invertible; the pixel-diffusion tests use its identity autoencoder.
"""

from __future__ import annotations

import math
import zlib

import pytest
import torch

from radiantforge.cameras import orbit_cameras
from radiantforge.errors import InputError
from radiantforge.guidance import (
    VIEW_NAMES,
    CameraSamplingConfig,
    OracleDenoiser,
    SDSConfig,
    SpaceToDepthAutoencoder,
    ViewDependentPrompts,
    ViewPromptConfig,
    camera_angles,
    images_to_model_input,
    interpolation_weights,
    sample_cameras,
    scaled_linear_alphas_cumprod,
    sds_loss,
    sds_loss_on_latents,
    timestep_bounds,
    view_names,
)
from radiantforge.metrics import psnr

IMAGE_SIZE = 32
RECOVERY_STEPS = 60
RECOVERY_LR = 0.08
RECOVERY_PSNR_DB = 30.0
VIEWS_PER_STEP = 2


def textured_target(size: int = IMAGE_SIZE, seed: int = 0) -> torch.Tensor:
    """(H, W, 3) in [0, 1]: gradients, a sinusoidal pattern and per-pixel noise, so every pixel matters."""
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, size), torch.linspace(0, 1, size), indexing="ij")
    smooth = torch.stack([xx, yy, 0.5 + 0.4 * torch.sin(6 * xx) * torch.cos(5 * yy)], dim=-1)
    return (0.85 * smooth + 0.15 * torch.rand(size, size, 3, generator=generator)).clamp(0, 1)


def recover_with_sds(oracle: OracleDenoiser, target: torch.Tensor, config: SDSConfig) -> torch.Tensor:
    """Optimise a grey image with Adam and SDS under the oracle for ``target``; returns the result (H, W, 3)."""
    image = torch.nn.Parameter(torch.full_like(target, 0.5))
    optimizer = torch.optim.Adam([image], lr=RECOVERY_LR)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, RECOVERY_STEPS)
    generator = torch.Generator().manual_seed(1)
    targets = target.expand(VIEWS_PER_STEP, *target.shape)
    conditioning = oracle.conditioning(targets, config.guidance_scale)
    for step in range(RECOVERY_STEPS):
        views = image.expand(VIEWS_PER_STEP, *image.shape)
        output = sds_loss(oracle, views, conditioning.cond, conditioning.uncond, config, step=step,
                          total_steps=RECOVERY_STEPS, generator=generator)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
        schedule.step()
    return image.detach().clamp(0, 1)


@pytest.mark.parametrize(
    "latent_space, path, guidance_scale, anneal",
    [
        ("pixel", "latent", 1.0, "fixed"),  # pixel-space diffusion model, no CFG
        ("space_to_depth", "latent", 100.0, "linear"),  # latent SDS through the invertible VAE, CFG 100
        ("space_to_depth", "pixel", 100.0, "fixed"),  # decode the denoised latents, step in pixel space
    ],
)
def test_sds_with_oracle_recovers_the_target_image(latent_space, path, guidance_scale, anneal):
    target = textured_target()
    oracle = OracleDenoiser(latent_space, device="cpu")
    start_psnr = float(psnr(torch.full_like(target, 0.5), target))
    config = SDSConfig(guidance_scale=guidance_scale, space=path, anneal=anneal)
    recovered = recover_with_sds(oracle, target, config)
    recovered_psnr = float(psnr(recovered, target))
    assert start_psnr < 15.0
    assert recovered_psnr >= RECOVERY_PSNR_DB, f"{latent_space}/{path}: {recovered_psnr:.1f} dB"


def test_swapped_cfg_branches_do_not_recover_the_target():
    """The recovery test can fail: feeding cond and uncond the wrong way round lands far from x*."""
    target = textured_target()
    oracle = OracleDenoiser("space_to_depth", device="cpu")
    scale = 100.0
    conditioning = oracle.conditioning(target[None], scale)
    image = torch.nn.Parameter(torch.full_like(target, 0.5))
    optimizer = torch.optim.Adam([image], lr=RECOVERY_LR)
    generator = torch.Generator().manual_seed(1)
    for _ in range(20):
        output = sds_loss(oracle, image[None], conditioning.uncond, conditioning.cond, SDSConfig(guidance_scale=scale),
                          generator=generator)
        optimizer.zero_grad()
        output.loss.backward()
        optimizer.step()
    assert float(psnr(image.detach().clamp(0, 1), target)) < 15.0


def _closed_form_image_gradient(image, target, timesteps, weighting="sds"):
    """d loss / d image for the oracle: w(t)·(α_t/σ_t)·(x − x*) in [−1, 1] units, times 2·2 for the
    [0, 1] → [−1, 1] map on both x and x*, divided by the batch size (DESIGN.md's formula)."""
    alphas_cumprod = scaled_linear_alphas_cumprod()[timesteps].view(-1, 1, 1, 1)
    alpha, sigma = alphas_cumprod.sqrt(), (1 - alphas_cumprod).sqrt()
    weight = 1 - alphas_cumprod if weighting == "sds" else torch.ones_like(alphas_cumprod)
    return 4.0 * weight * alpha / sigma * (image - target) / image.shape[0]


@pytest.mark.parametrize("weighting", ["sds", "uniform"])
@pytest.mark.parametrize("guidance_scale", [1.0, 100.0])
def test_sds_image_gradient_matches_the_closed_form(weighting, guidance_scale):
    batch = 3
    targets = torch.stack([textured_target(16, seed) for seed in range(batch)])
    image = torch.rand(batch, 16, 16, 3, generator=torch.Generator().manual_seed(5)).requires_grad_(True)
    oracle = OracleDenoiser("pixel", device="cpu")
    conditioning = oracle.conditioning(targets, guidance_scale)
    config = SDSConfig(guidance_scale=guidance_scale, weighting=weighting)
    output = sds_loss(oracle, image, conditioning.cond, conditioning.uncond, config,
                      generator=torch.Generator().manual_seed(2))
    output.loss.backward()
    expected = _closed_form_image_gradient(image.detach(), targets, output.timesteps, weighting)
    # CFG at scale 100 amplifies float32 rounding of ε̂ a hundredfold: compare relative to the gradient's size.
    assert torch.allclose(image.grad, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max()))
    # The loss value is 0.5·‖g‖²/B of the latent-space gradient it applies.
    assert torch.isclose(output.loss, 0.5 * output.grad.pow(2).sum() / batch, rtol=1e-5)


@pytest.mark.parametrize("mode", ["sds", "csd"])
def test_latent_and_pixel_paths_give_the_same_image_gradient(mode):
    """With a linear invertible autoencoder the pixel variant is exactly latent SDS (module docstring)."""
    targets = torch.stack([textured_target(16, seed) for seed in range(2)])
    image = torch.rand(2, 16, 16, 3, generator=torch.Generator().manual_seed(3))
    oracle = OracleDenoiser("space_to_depth", device="cpu")
    conditioning = oracle.conditioning(targets, 7.5)
    gradients = {}
    for path in ("latent", "pixel"):
        x = image.clone().requires_grad_(True)
        config = SDSConfig(guidance_scale=7.5, space=path, mode=mode)
        output = sds_loss(oracle, x, conditioning.cond, conditioning.uncond, config,
                          generator=torch.Generator().manual_seed(4))
        output.loss.backward()
        gradients[path] = x.grad
    assert gradients["latent"].abs().max() > 0
    assert torch.allclose(gradients["latent"], gradients["pixel"], rtol=1e-4, atol=1e-7)


def test_csd_gradient_is_the_classifier_term_only():
    """CSD: w(t)·s·(ε̂_c − ε̂_∅); for the oracle w·s·(α/σ)·(g − c) = w·(α/σ)·(g − x*), whatever x is."""
    batch, scale, grey = 2, 20.0, 0.5
    targets = torch.stack([textured_target(16, seed) for seed in range(batch)])
    oracle = OracleDenoiser("pixel", device="cpu")
    conditioning = oracle.conditioning(targets, scale, uncond_grey=grey)
    image = torch.rand(batch, 16, 16, 3, generator=torch.Generator().manual_seed(6)).requires_grad_(True)
    output = sds_loss(oracle, image, conditioning.cond, conditioning.uncond, SDSConfig(guidance_scale=scale, mode="csd"),
                      generator=torch.Generator().manual_seed(7))
    output.loss.backward()
    expected = _closed_form_image_gradient(torch.full_like(targets, grey), targets, output.timesteps)
    assert torch.allclose(image.grad, expected, rtol=1e-3, atol=1e-4 * float(expected.abs().max()))


def test_gradient_clipping_bounds_every_element():
    clip = 0.01
    oracle = OracleDenoiser("pixel", device="cpu")
    target = textured_target(16)[None]
    conditioning = oracle.conditioning(target, 100.0)
    latents = torch.zeros(1, 3, 16, 16, requires_grad=True)
    output = sds_loss_on_latents(oracle, latents, conditioning.cond, conditioning.uncond,
                                 SDSConfig(grad_clip=clip), generator=torch.Generator().manual_seed(0))
    output.loss.backward()
    assert output.grad.abs().max() == pytest.approx(clip)
    assert torch.allclose(latents.grad, output.grad)  # batch of one: d loss / d latents is the gradient itself


def test_guidance_scale_one_needs_no_unconditional_branch():
    oracle = OracleDenoiser("pixel", device="cpu")
    target = textured_target(8)[None]
    cond = oracle.conditioning(target, 1.0).cond
    image = torch.full_like(target, 0.5)
    output = sds_loss(oracle, image, cond, None, SDSConfig(guidance_scale=1.0))
    assert output.grad.abs().sum() > 0
    with pytest.raises(InputError, match="uncond"):
        sds_loss(oracle, image, cond, None, SDSConfig(guidance_scale=100.0))


def test_timesteps_stay_in_range_and_anneal():
    config = SDSConfig()
    assert timestep_bounds(config) == (0.02, 0.98)
    linear = SDSConfig(anneal="linear", anneal_t_max=0.5)
    assert timestep_bounds(linear, 0, 100) == (0.02, 0.98)
    assert timestep_bounds(linear, 50, 100)[1] == pytest.approx(0.74)
    assert timestep_bounds(linear, 100, 100)[1] == pytest.approx(0.5)
    square_root = SDSConfig(anneal="sqrt", anneal_t_max=0.5)
    assert timestep_bounds(square_root, 25, 100)[1] == pytest.approx(0.98 - 0.48 * 0.5)

    oracle = OracleDenoiser("pixel", device="cpu")
    generator = torch.Generator().manual_seed(0)
    latents = torch.zeros(512, 3, 2, 2)
    seen = torch.cat([sds_loss_on_latents(oracle, latents, latents, latents, config, generator=generator).timesteps
                      for _ in range(4)])
    assert seen.min() >= 20 and seen.max() <= 980
    assert seen.min() < 30 and seen.max() > 970  # uniform over the whole range
    late = sds_loss_on_latents(oracle, latents, latents, latents, linear, step=100, total_steps=100,
                               generator=generator).timesteps
    assert late.max() <= 500


def test_bad_settings_are_input_errors():
    with pytest.raises(InputError, match="t_min"):
        SDSConfig(t_min=0.9, t_max=0.5)
    with pytest.raises(InputError, match="guidance_scale"):
        SDSConfig(guidance_scale=0.0)
    with pytest.raises(InputError, match="space"):
        SDSConfig(space="voxel")
    with pytest.raises(InputError, match="images"):
        images_to_model_input(torch.zeros(2, 3, 8, 8), None)
    with pytest.raises(InputError, match="latent_space"):
        OracleDenoiser("vq")
    with pytest.raises(InputError, match="distance_range"):
        CameraSamplingConfig(distance_range=(0.0, 1.0))
    with pytest.raises(InputError, match="prompt"):
        ViewDependentPrompts(lambda texts: torch.zeros(len(texts), 1, 1), "   ")


def test_images_become_model_input_in_minus_one_one_and_resize():
    images = torch.rand(2, 20, 24, 3)
    x = images_to_model_input(images, None)
    assert x.shape == (2, 3, 20, 24)
    assert torch.allclose(x, images.permute(0, 3, 1, 2) * 2 - 1)
    resized = images_to_model_input(images.requires_grad_(True), 32)
    assert resized.shape == (2, 3, 32, 32)
    resized.sum().backward()
    assert images.grad.abs().sum() > 0  # the resize is differentiable


def test_space_to_depth_autoencoder_is_exactly_invertible():
    autoencoder = SpaceToDepthAutoencoder()
    x = torch.rand(2, 3, 8, 6) * 2 - 1
    latents = autoencoder.encode(x).latent_dist.sample()
    assert latents.shape == (2, 12, 4, 3)
    assert torch.equal(autoencoder.decode(latents).sample, x)
    assert torch.equal(latents[:, :4, 0, 0], x[:, 0, :2, :2].reshape(2, 4))  # 2×2 block of channel 0 → 4 channels
    with pytest.raises(InputError, match="even"):
        autoencoder.encode(torch.zeros(1, 3, 5, 4))


def test_oracle_noise_prediction_is_exact():
    oracle = OracleDenoiser("space_to_depth", device="cpu")
    target = oracle.target_latents(textured_target(8)[None])
    noise = torch.randn(target.shape, generator=torch.Generator().manual_seed(0))
    t = torch.tensor([500])
    alphas_cumprod = oracle.alphas_cumprod[t]
    noisy = alphas_cumprod.sqrt() * target + (1 - alphas_cumprod).sqrt() * noise
    assert torch.allclose(oracle.predict_noise(noisy, t, target), noise, atol=1e-5)


# --- view-dependent prompts -------------------------------------------------------------------


def test_view_names_follow_the_blender_azimuth_convention():
    # orbit_cameras puts camera 0 on the −Y side looking along +Y, then turns counter-clockwise (seen from above).
    ring = orbit_cameras(12, radius=3.0, elevation_deg=20.0)
    azimuth, elevation, distance = camera_angles(ring)
    assert torch.allclose(azimuth[:7], torch.arange(7) * 30.0, atol=1e-3)
    assert torch.allclose(azimuth[7:], torch.arange(-150.0, 0.0, 30.0), atol=1e-3)  # wrapped to (−180, 180]
    assert torch.allclose(elevation, torch.full((12,), 20.0), atol=1e-3)
    assert torch.allclose(distance, torch.full((12,), 3.0), atol=1e-5)
    assert ring.centers[3, 0] > 2.0  # azimuth 90° is on +X
    assert view_names(azimuth, elevation) == ["front", "front", "side", "side", "side", "back", "back", "back",
                                              "side", "side", "side", "front"]
    assert view_names(torch.tensor([10.0, 10.0, 100.0]), torch.tensor([75.0, -75.0, 0.0])) == \
        ["overhead", "bottom", "side"]
    # Thresholds are settings: a narrow front cone makes 45° a side view.
    narrow = ViewPromptConfig(front_half_angle_deg=30.0)
    assert view_names(torch.tensor([45.0]), torch.tensor([0.0]), narrow) == ["side"]


def test_interpolation_weights_blend_front_side_back():
    weights = interpolation_weights(torch.tensor([0.0, 45.0, 90.0, 135.0, 180.0, -45.0, 270.0]))
    expected = torch.tensor([[1, 0, 0], [0.5, 0.5, 0], [0, 1, 0], [0, 0.5, 0.5], [0, 0, 1], [0.5, 0.5, 0], [0, 1, 0]])
    assert torch.allclose(weights, expected.float(), atol=1e-6)


def _deterministic_embed(calls: list):
    """Stand-in text encoder: each text gets its own fixed random (4, 6) embedding; records each call."""
    def embed(texts):
        calls.append(list(texts))
        rows = [torch.randn(4, 6, generator=torch.Generator().manual_seed(zlib.crc32(text.encode()))) for text in texts]
        return torch.stack(rows)
    return embed


def test_view_dependent_embeddings_interpolate_and_are_computed_once():
    calls: list = []
    embed = _deterministic_embed(calls)
    prompts = ViewDependentPrompts(embed, "a cow", negative_prompt="blurry")
    by_view = {view: embed([f"a cow, {view} view"])[0] for view in VIEW_NAMES}
    assert len(calls) == 1 + len(VIEW_NAMES)  # the constructor embedded everything in one call

    cond, uncond = prompts.embeddings(torch.tensor([0.0, 45.0, -135.0, 30.0, 200.0]),
                                      torch.tensor([10.0, 10.0, 0.0, 80.0, -80.0]))
    assert cond.shape == (5, 4, 6) and uncond.shape == (5, 4, 6)
    assert torch.allclose(cond[0], by_view["front"])
    assert torch.allclose(cond[1], 0.5 * by_view["front"] + 0.5 * by_view["side"])
    assert torch.allclose(cond[2], 0.5 * by_view["side"] + 0.5 * by_view["back"])
    assert torch.allclose(cond[3], by_view["overhead"])
    assert torch.allclose(cond[4], by_view["bottom"])
    assert torch.allclose(uncond, embed(["blurry"])[0].expand(5, 4, 6))
    assert prompts.texts(torch.tensor([0.0, 180.0]), torch.tensor([0.0, 0.0])) == ["a cow, front view", "a cow, back view"]

    discrete = ViewDependentPrompts(embed, "a cow", config=ViewPromptConfig(interpolate=False))
    cond, _ = discrete.embeddings(torch.tensor([30.0]), torch.tensor([0.0]))
    assert torch.allclose(cond[0], by_view["front"])
    plain = ViewDependentPrompts(embed, "a cow", view_dependent=False)
    cond, _ = plain.embeddings(torch.tensor([30.0, 120.0]), torch.tensor([0.0, 0.0]))
    assert torch.allclose(cond, embed(["a cow"]).expand(2, 4, 6))


# --- camera sampling --------------------------------------------------------------------------


def test_sampled_cameras_respect_ranges_and_look_at_the_target():
    target = (0.2, -0.1, 0.5)
    config = CameraSamplingConfig(distance_range=(2.0, 3.0), elevation_range_deg=(-10.0, 45.0),
                                  azimuth_range_deg=(-90.0, 90.0), fov_range_deg=(30.0, 60.0), width=64, height=48,
                                  target=target, batch_size=64)
    views = sample_cameras(config, generator=torch.Generator().manual_seed(0))
    assert len(views) == 64 and views.cameras.width == 64 and views.cameras.height == 48
    azimuth, elevation, distance = camera_angles(views.cameras, target)
    assert torch.allclose(azimuth, views.azimuth_deg, atol=1e-3)
    assert torch.allclose(elevation, views.elevation_deg, atol=1e-3)
    assert torch.allclose(distance, views.distance, atol=1e-4)
    assert views.distance.min() >= 2.0 and views.distance.max() <= 3.0
    assert views.elevation_deg.min() >= -10.0 and views.elevation_deg.max() <= 45.0
    assert views.azimuth_deg.min() >= -90.0 and views.azimuth_deg.max() <= 90.0
    # GL cameras look down −Z: that axis must point from the camera at the target.
    to_target = torch.nn.functional.normalize(torch.tensor(target) - views.cameras.centers, dim=-1)
    assert torch.allclose(-views.cameras.c2w_gl[:, :3, 2], to_target, atol=1e-5)
    # The field of view spans the image width.
    fov_from_intrinsics = torch.rad2deg(2 * torch.atan(0.5 * 64 / views.cameras.intrinsics[:, 0, 0]))
    assert torch.allclose(fov_from_intrinsics, views.fov_deg, atol=1e-3)
    assert torch.allclose(views.cameras.intrinsics[:, :2, 2], torch.tensor([32.0, 24.0]).expand(64, 2))
    again = sample_cameras(config, generator=torch.Generator().manual_seed(0))
    assert torch.equal(again.cameras.c2w_gl, views.cameras.c2w_gl)


def test_underside_cameras_see_the_object_from_beneath_in_their_share():
    band = dict(elevation_range_deg=(-10.0, 60.0), batch_size=4000)
    plain = sample_cameras(CameraSamplingConfig(**band), generator=torch.Generator().manual_seed(3))
    off = sample_cameras(CameraSamplingConfig(**band, underside_fraction=0.0), generator=torch.Generator().manual_seed(3))
    assert torch.equal(off.elevation_deg, plain.elevation_deg)  # 0 keeps the stream of earlier releases
    views = sample_cameras(CameraSamplingConfig(**band, underside_fraction=0.15),
                           generator=torch.Generator().manual_seed(3))
    below = views.elevation_deg < -10.0
    share = below.float().mean().item()
    assert abs(share - 0.15) < 4 * math.sqrt(0.15 * 0.85 / 4000)
    assert views.elevation_deg[below].min() >= -80.0 - 1e-4
    assert views.elevation_deg[~below].min() >= -10.0 and views.elevation_deg.max() <= 60.0
    # Even over the cap's area: sin(elevation) uniform between sin(-80°) and sin(-10°).
    heights = torch.sin(torch.deg2rad(views.elevation_deg[below]))
    low, high = math.sin(math.radians(-80.0)), math.sin(math.radians(-10.0))
    counts = torch.histc(heights, bins=3, min=low, max=high)
    expected = below.sum().item() / 3
    assert (counts - expected).abs().max() < 4 * math.sqrt(expected)
    # Cameras from beneath still look at the target with a proper frame.
    to_target = torch.nn.functional.normalize(-views.cameras.centers, dim=-1)
    assert torch.allclose(-views.cameras.c2w_gl[:, :3, 2], to_target, atol=1e-5)
    with pytest.raises(InputError, match="underside_fraction"):
        CameraSamplingConfig(underside_fraction=0.9)


def test_uniform_area_elevation_sampling_covers_the_sphere_evenly():
    config = CameraSamplingConfig(elevation_range_deg=(-90.0, 90.0), elevation_sampling="uniform_area")
    views = sample_cameras(config, batch_size=4000, generator=torch.Generator().manual_seed(0))
    heights = torch.sin(torch.deg2rad(views.elevation_deg))  # uniform on [−1, 1] for area-uniform directions
    counts = torch.histc(heights, bins=4, min=-1, max=1)
    assert (counts - 1000).abs().max() < 4 * math.sqrt(1000)

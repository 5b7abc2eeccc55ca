"""PSNR, SSIM and LPIPS: known answers and independent reference implementations."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from radiantforge import metrics

# Pixels closer than this to the border see the zero padding of the 3DGS SSIM; the references
# pad differently (reflection, cropping), so maps are compared on the interior only.
SSIM_BORDER = metrics.SSIM_WINDOW_SIZE // 2


def random_pair(seed: int, shape=(40, 48, 3)):
    """A random image and a noisy, shifted version of it (correlated, so SSIM is far from 0 and 1)."""
    generator = torch.Generator().manual_seed(seed)
    img = torch.rand(shape, generator=generator)
    ref = (0.7 * img + 0.3 * torch.rand(shape, generator=generator) + 0.05).clamp(0, 1)
    return img, ref


def test_psnr_known_answer():
    ref = torch.full((8, 9, 3), 0.25)
    for offset in (0.1, 0.01, 0.5):
        assert metrics.psnr(ref + offset, ref).item() == pytest.approx(-20 * math.log10(offset), abs=1e-4)


def test_psnr_batched_gives_one_value_per_image():
    ref = torch.zeros(3, 5, 6, 3)
    img = ref + torch.tensor([0.1, 0.2, 0.3]).view(3, 1, 1, 1)
    values = metrics.psnr(img, ref)
    assert values.shape == (3,)
    assert torch.allclose(values, torch.tensor([20.0, -20 * math.log10(0.2), -20 * math.log10(0.3)]), atol=1e-4)
    assert math.isinf(metrics.psnr(ref[0], ref[0]).item())


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="same shape"):
        metrics.psnr(torch.zeros(4, 4, 3), torch.zeros(4, 5, 3))


def test_ssim_of_identical_images_is_one_and_drops_with_noise():
    img, ref = random_pair(0)
    assert metrics.ssim(img, img).item() == pytest.approx(1.0, abs=1e-6)
    noisy = (img + 0.2 * torch.randn(img.shape, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    assert metrics.ssim(noisy, img).item() < 0.9


def scipy_reference_ssim_map(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """SSIM map written from the paper's formula with scipy's Gaussian filter (float64)."""
    from scipy.ndimage import gaussian_filter

    radius = metrics.SSIM_WINDOW_SIZE // 2
    truncate = radius / metrics.SSIM_SIGMA  # an 11x11 window exactly

    def blur(a):
        return np.stack([gaussian_filter(a[..., c], metrics.SSIM_SIGMA, truncate=truncate) for c in range(a.shape[-1])], -1)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    c1, c2 = 0.01**2, 0.03**2
    return ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ssim_map_matches_scipy_reference_on_interior(seed):
    img, ref = random_pair(seed)
    ours = metrics.ssim_map(img, ref)[0].double().numpy()
    expected = scipy_reference_ssim_map(img.double().numpy(), ref.double().numpy())
    b = SSIM_BORDER
    np.testing.assert_allclose(ours[b:-b, b:-b], expected[b:-b, b:-b], atol=2e-5)


@pytest.mark.parametrize("seed", [3, 4])
def test_ssim_matches_scikit_image(seed):
    skimage_metrics = pytest.importorskip("skimage.metrics")
    img, ref = random_pair(seed)
    # skimage with Gaussian weights, sigma 1.5 and population covariance is Wang et al.'s SSIM,
    # the one 3DGS implements; its map differs only within the window radius of the border.
    _, reference_map = skimage_metrics.structural_similarity(
        img.double().numpy(), ref.double().numpy(), gaussian_weights=True, sigma=metrics.SSIM_SIGMA,
        use_sample_covariance=False, data_range=1.0, channel_axis=-1, full=True,
    )
    ours = metrics.ssim_map(img, ref)[0].double().numpy()
    b = SSIM_BORDER
    np.testing.assert_allclose(ours[b:-b, b:-b], reference_map[b:-b, b:-b], atol=2e-5)
    # The mean over the interior agrees too (the global number differs only by border handling).
    assert ours[b:-b, b:-b].mean() == pytest.approx(reference_map[b:-b, b:-b].mean(), abs=1e-5)


def test_ssim_is_differentiable():
    img, ref = random_pair(5)
    img = img.clone().requires_grad_(True)
    (1 - metrics.ssim(img, ref)).backward()
    assert img.grad is not None and torch.isfinite(img.grad).all() and img.grad.abs().sum() > 0


@pytest.mark.parametrize("shape", [(1, 15, 19, 3), (2, 12, 9, 1)])
def test_fused_ssim_gradient_equals_autograd_of_the_unfused_map(shape):
    """The hand-written backward against autograd through the same formula (float64), with an
    upstream gradient that is not uniform, so every term of the chain rule is exercised."""
    generator = torch.Generator().manual_seed(sum(shape))
    img = torch.rand(shape, generator=generator, dtype=torch.float64)
    ref = (img + 0.2 * torch.randn(shape, generator=generator, dtype=torch.float64)).clamp(0, 1)
    weights = torch.rand(shape, generator=generator, dtype=torch.float64)

    fused_input = img.clone().requires_grad_(True)
    (metrics.ssim_map(fused_input, ref) * weights).sum().backward()

    reference_input = img.clone().requires_grad_(True)
    x, y = reference_input.permute(0, 3, 1, 2), ref.permute(0, 3, 1, 2)
    reference_map = metrics._ssim_terms(x, y)[0].permute(0, 2, 3, 1)  # plain autograd through the formula
    (reference_map * weights).sum().backward()

    with torch.no_grad():
        np.testing.assert_allclose(metrics.ssim_map(img, ref).numpy(), reference_map.detach().numpy(), atol=1e-12)
    np.testing.assert_allclose(fused_input.grad.numpy(), reference_input.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_lpips_without_weights_reports_where_they_would_go(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    expected_path = tmp_path / "torch_home" / "hub" / "checkpoints" / metrics.LPIPS_BACKBONE_FILES["alex"]
    assert metrics.lpips_weights_path("alex") == expected_path
    with pytest.raises(metrics.MetricUnavailable) as caught:
        metrics.load_lpips("alex")
    assert caught.value.weights_path == expected_path
    assert str(expected_path) in str(caught.value)
    assert not expected_path.exists()  # nothing was downloaded


def test_lpips_loads_backbone_from_the_local_file_only(tmp_path, monkeypatch):
    """A backbone file in the hub cache is used as is: no download, its tensors end up in the model."""
    import torchvision

    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    path = metrics.lpips_weights_path("alex")
    path.parent.mkdir(parents=True)
    torch.manual_seed(0)
    features = torchvision.models.alexnet(weights=None).features  # random stand-in for the ImageNet file
    torch.save({f"features.{k}": v for k, v in features.state_dict().items()}, path)

    model = metrics.load_lpips("alex")
    assert torch.equal(model.net.slice1[0].weight, features[0].weight)
    assert torch.equal(getattr(model.net.slice5, "10").bias, features[10].bias)

    img, ref = random_pair(6, shape=(64, 64, 3))
    assert metrics.lpips_distance(model, ref, ref).item() == pytest.approx(0.0, abs=1e-6)
    assert metrics.lpips_distance(model, img, ref).item() > 0.0
    assert metrics.lpips_distance(model, torch.stack([img, ref]), torch.stack([ref, ref])).shape == (2,)


def test_lpips_with_a_foreign_file_is_reported_not_crashed(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    path = metrics.lpips_weights_path("alex")
    path.parent.mkdir(parents=True)
    torch.save({"something.else": torch.zeros(3)}, path)
    with pytest.raises(metrics.MetricUnavailable, match="features.0"):
        metrics.load_lpips("alex")


def test_ssim_matches_the_3dgs_formulation_including_borders():
    """3DGS filters with one 2D 11x11 window and zero padding; ours runs two 1D passes. Same map."""
    import torch.nn.functional as F

    img, ref = random_pair(7)
    x, y = img.double().permute(2, 0, 1)[None], ref.double().permute(2, 0, 1)[None]
    window = metrics.gaussian_window().double().expand(3, 1, 11, 11)

    def blur(t):
        return F.conv2d(t, window, padding=5, groups=3)

    mx, my = blur(x), blur(y)
    vx, vy, cxy = blur(x * x) - mx**2, blur(y * y) - my**2, blur(x * y) - mx * my
    expected = ((2 * mx * my + 1e-4) * (2 * cxy + 9e-4)) / ((mx**2 + my**2 + 1e-4) * (vx + vy + 9e-4))
    ours = metrics.ssim_map(img.double(), ref.double())[0].permute(2, 0, 1)[None]
    assert torch.allclose(ours, expected, atol=1e-10)
    assert metrics.ssim(img, ref).item() == pytest.approx(expected.mean().item(), abs=1e-6)

"""Image quality metrics: PSNR, SSIM (as in the 3DGS code) and LPIPS (only from local weights).

Images are float tensors in [0, 1] shaped (H, W, 3) or batched (B, H, W, 3). Batched inputs give
one value per image (B,); single images give a 0-d tensor.

LPIPS needs a pretrained backbone (torchvision's AlexNet or VGG16 ImageNet weights). This module
never downloads: :func:`load_lpips` looks for the file in the torch hub cache first and raises
:class:`MetricUnavailable` (with the reason and the path where the file would go) when it is
absent, before anything that could reach the network is constructed.
"""

from __future__ import annotations

import math
import warnings
from pathlib import Path

import torch
import torch.nn.functional as F

from .errors import RadiantForgeError

# SSIM as in the original 3DGS code (and Wang et al. 2004): an 11x11 Gaussian window with
# sigma 1.5, zero padding so the map keeps the image size, constants for a data range of 1.
SSIM_WINDOW_SIZE = 11
SSIM_SIGMA = 1.5
SSIM_C1 = 0.01**2
SSIM_C2 = 0.03**2

# Torchvision ImageNet weight files behind the lpips package's backbones (torch hub cache names).
LPIPS_BACKBONE_FILES = {
    "alex": "alexnet-owt-7be5be79.pth",
    "vgg": "vgg16-397923af.pth",
}


class MetricUnavailable(RadiantForgeError):
    """A metric cannot be computed here (for LPIPS: the backbone weights are not on this machine)."""

    def __init__(self, reason: str, weights_path: Path | None = None):
        self.reason = reason
        self.weights_path = weights_path
        super().__init__(reason)


def _as_batch(image: torch.Tensor, name: str) -> tuple[torch.Tensor, bool]:
    """(H, W, C) or (B, H, W, C) -> (B, H, W, C) float, and whether the input was batched."""
    image = torch.as_tensor(image)
    if not image.is_floating_point():
        image = image.float()
    if image.ndim == 3:
        return image.unsqueeze(0), False
    if image.ndim == 4:
        return image, True
    raise ValueError(f"{name} must have shape (H, W, C) or (B, H, W, C), got {tuple(image.shape)}")


def _check_pair(img: torch.Tensor, ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, bool]:
    img_b, batched = _as_batch(img, "img")
    ref_b, _ = _as_batch(ref, "ref")
    if img_b.shape != ref_b.shape:
        raise ValueError(f"img {tuple(img.shape)} and ref {tuple(ref.shape)} must have the same shape")
    return img_b, ref_b.to(device=img_b.device, dtype=img_b.dtype), batched


def psnr(img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Peak signal-to-noise ratio in dB for a data range of 1. img, ref: (H, W, C) or (B, H, W, C).

    Returns a 0-d tensor, or (B,) for batched inputs; +inf where the images are identical.
    """
    img_b, ref_b, batched = _check_pair(img, ref)
    mse = (img_b - ref_b).pow(2).flatten(1).mean(dim=1)
    value = -10.0 * torch.log10(mse)
    return value if batched else value[0]


def gaussian_kernel_1d(size: int = SSIM_WINDOW_SIZE, sigma: float = SSIM_SIGMA, device=None) -> torch.Tensor:
    """(size,) normalised 1D Gaussian; its outer product with itself is the 2D SSIM window."""
    coords = torch.arange(size, dtype=torch.float32, device=device) - (size - 1) / 2.0
    g = torch.exp(-(coords**2) / (2.0 * sigma**2))
    return g / g.sum()


def gaussian_window(size: int = SSIM_WINDOW_SIZE, sigma: float = SSIM_SIGMA, device=None) -> torch.Tensor:
    """(size, size) normalised 2D Gaussian window."""
    g = gaussian_kernel_1d(size, sigma, device)
    return g[:, None] * g[None, :]


def _blur(images: torch.Tensor) -> torch.Tensor:
    """The SSIM window over every channel of (B, K, H, W), zero padded: two 1D passes (the 11x11
    window is separable, and zero padding commutes with that). With a symmetric kernel and zero
    padding the operation is its own adjoint, which the fused backward uses."""
    groups = images.shape[1]
    g = gaussian_kernel_1d(device=images.device).to(images.dtype)
    pad = SSIM_WINDOW_SIZE // 2
    blurred = F.conv2d(images, g.view(1, 1, -1, 1).expand(groups, 1, -1, 1), padding=(pad, 0), groups=groups)
    return F.conv2d(blurred, g.view(1, 1, 1, -1).expand(groups, 1, 1, -1), padding=(0, pad), groups=groups)


def _ssim_terms(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """x, y: (B, C, H, W). The SSIM map and the factors its gradient needs, all (B, C, H, W)."""
    channels = x.shape[1]
    mu_x, mu_y, e_xx, e_yy, e_xy = _blur(torch.cat([x, y, x * x, y * y, x * y], dim=1)).split(channels, dim=1)
    mu_x2, mu_y2, mu_xy = mu_x * mu_x, mu_y * mu_y, mu_x * mu_y
    luminance_num = 2.0 * mu_xy + SSIM_C1  # A1
    contrast_num = 2.0 * (e_xy - mu_xy) + SSIM_C2  # A2
    luminance_den = mu_x2 + mu_y2 + SSIM_C1  # B1
    contrast_den = (e_xx - mu_x2) + (e_yy - mu_y2) + SSIM_C2  # B2
    ssim_values = (luminance_num * contrast_num) / (luminance_den * contrast_den)
    return ssim_values, mu_x, mu_y, luminance_num, contrast_num, luminance_den, contrast_den


class _FusedSSIM(torch.autograd.Function):
    """The SSIM map with a hand-written backward (as the fused-SSIM CUDA kernels do it).

    Autograd through :func:`_ssim_terms` keeps a dozen (B, 5C, H, W)-sized intermediates and runs
    the convolution's backward over all five blurred images, the reference's two included. The
    gradient needs three blurs only: with S = A1·A2 / (B1·B2) as a function of μx, E[x²], E[xy],

        ∂S/∂μx = 2μy (A2 − A1) / D − 2μx S (1/B1 − 1/B2),   ∂S/∂E[x²] = −S / B2,   ∂S/∂E[xy] = 2 A1 / D

    (D = B1·B2), and the blur's adjoint is the blur itself, so
    ∂L/∂x = blur(g·∂S/∂μx) + 2x·blur(g·∂S/∂E[x²]) + y·blur(g·∂S/∂E[xy]).
    """

    @staticmethod
    def forward(ctx, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        ssim_values, mu_x, mu_y, a1, a2, b1, b2 = _ssim_terms(x, y)
        ctx.save_for_backward(x, y, ssim_values, mu_x, mu_y, a1, a2, b1, b2)
        return ssim_values

    @staticmethod
    def backward(ctx, grad_map: torch.Tensor):
        x, y, ssim_values, mu_x, mu_y, a1, a2, b1, b2 = ctx.saved_tensors
        inv_d = 1.0 / (b1 * b2)
        d_mu = 2.0 * mu_y * (a2 - a1) * inv_d - 2.0 * mu_x * ssim_values * (1.0 / b1 - 1.0 / b2)
        d_exx = -ssim_values / b2
        d_exy = 2.0 * a1 * inv_d
        channels = x.shape[1]
        g_mu, g_exx, g_exy = _blur(torch.cat([grad_map * d_mu, grad_map * d_exx, grad_map * d_exy], dim=1)
                                   ).split(channels, dim=1)
        return g_mu + 2.0 * x * g_exx + y * g_exy, None


def ssim_map(img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Per-pixel SSIM (B, H, W, C) as the 3DGS code computes it (zero-padded Gaussian filtering).

    Differentiable in ``img`` (a fused backward, :class:`_FusedSSIM`); ``ref`` is the reference
    and gets no gradient.
    """
    img_b, ref_b, _ = _check_pair(img, ref)
    x = img_b.permute(0, 3, 1, 2)  # (B, C, H, W)
    y = ref_b.permute(0, 3, 1, 2).to(x.dtype).detach()
    if x.requires_grad and torch.is_grad_enabled():
        values = _FusedSSIM.apply(x, y)
    else:
        values = _ssim_terms(x, y)[0]
    return values.permute(0, 2, 3, 1)


def ssim(img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """Mean SSIM over pixels and channels (11x11 Gaussian window, sigma 1.5). Differentiable in img.

    img, ref: (H, W, C) or (B, H, W, C) in [0, 1]. Returns a 0-d tensor, or (B,) when batched.
    """
    _, batched = _as_batch(img, "img")
    value = ssim_map(img, ref).flatten(1).mean(dim=1)
    return value if batched else value[0]


# ----------------------------------------------------------------------------------------- LPIPS


def lpips_weights_path(net: str = "alex") -> Path:
    """Where torch's hub cache keeps the backbone weights that LPIPS with ``net`` needs.

    The hub directory follows ``TORCH_HOME`` (default ``~/.cache/torch``) at the time of the call.
    """
    if net not in LPIPS_BACKBONE_FILES:
        raise ValueError(f"LPIPS backbone must be one of {sorted(LPIPS_BACKBONE_FILES)}, got {net!r}")
    return Path(torch.hub.get_dir()) / "checkpoints" / LPIPS_BACKBONE_FILES[net]


def load_lpips(net: str = "alex", device="cpu"):
    """An ``lpips.LPIPS`` model whose backbone weights come from the local hub cache only.

    Raises :class:`MetricUnavailable` when the package or the weights file is missing; nothing is
    ever downloaded (the backbone is built without weights and then filled from the local file).
    """
    weights = lpips_weights_path(net)
    if not weights.is_file():
        raise MetricUnavailable(
            f"LPIPS backbone weights ({net}) are not on this machine; put torchvision's "
            f"{LPIPS_BACKBONE_FILES[net]} at {weights} to compute LPIPS",
            weights,
        )
    try:
        import lpips as lpips_package
    except ImportError as exc:
        raise MetricUnavailable(f"the lpips package is not installed ({exc})", weights) from None

    # pnet_rand=True: build the backbone without pretrained weights (no download); the linear
    # calibration layers ship inside the lpips package and load from its folder.
    with warnings.catch_warnings():  # torchvision's "pretrained is deprecated" from inside lpips
        warnings.simplefilter("ignore", UserWarning)
        model = lpips_package.LPIPS(net=net, pretrained=True, pnet_rand=True, verbose=False)
    try:
        state = torch.load(weights, map_location="cpu", weights_only=True)
    except Exception as exc:  # a corrupt or foreign file: report, don't crash the evaluation
        raise MetricUnavailable(f"cannot read LPIPS backbone weights {weights}: {exc}", weights) from None
    _load_backbone_features(model.net, state, weights)
    return model.to(device).eval()


def _load_backbone_features(backbone: torch.nn.Module, state: dict, weights: Path) -> None:
    """Copy torchvision ``features.<i>.*`` tensors into the lpips backbone's slices.

    The lpips backbones keep torchvision's feature layers under their original index inside
    ``slice<k>`` containers, so layer ``features.<i>`` is child ``str(i)`` of some slice.
    """
    layers = {}
    for slice_module in backbone.children():
        for index, layer in slice_module.named_children():
            layers[index] = layer
    loaded = 0
    for index, layer in layers.items():
        layer_state = {k.split(".", 2)[2]: v for k, v in state.items() if k.startswith(f"features.{index}.")}
        expected = set(layer.state_dict())
        if set(layer_state) != expected:
            raise MetricUnavailable(
                f"{weights} does not hold the expected backbone layer features.{index} "
                f"(needs {sorted(expected)}, found {sorted(layer_state)})",
                weights,
            )
        if expected:
            layer.load_state_dict(layer_state)
            loaded += 1
    if loaded == 0:
        raise MetricUnavailable(f"{weights} holds no backbone layers", weights)


@torch.no_grad()
def lpips_distance(model, img: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
    """LPIPS distance with a model from :func:`load_lpips`. img, ref: (H, W, 3) or (B, H, W, 3) in [0, 1]."""
    img_b, ref_b, batched = _check_pair(img, ref)
    device = next(model.parameters()).device
    x = img_b.permute(0, 3, 1, 2).to(device)
    y = ref_b.permute(0, 3, 1, 2).to(device)
    value = model(x, y, normalize=True).flatten().cpu()  # normalize: [0, 1] -> [-1, 1]
    return value if batched else value[0]


def finite_or_none(value: float) -> float | None:
    """A metric for JSON: None instead of inf/NaN (PSNR of identical images is infinite)."""
    value = float(value)
    return value if math.isfinite(value) else None

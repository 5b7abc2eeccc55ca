"""The oracle denoiser: exact noise prediction for a known target, to test SDS without Stable Diffusion.

For a data distribution that is a single image x*, the ideal noise prediction is known in closed
form (DESIGN.md): ε̂(x_t, t) = (x_t − α_t·x*) / σ_t. Plugged into SDS the noise cancels and the
gradient is w(t)·(α_t/σ_t)·(x − x*): every render is pulled toward its target. With x* = the
render of a known asset from the *same* sampled camera, an SDS run must recover that asset.

The oracle's conditioning plays the role of the text embedding: it *is* the target, as latents
(B, C, h, w). :meth:`OracleDenoiser.conditioning` builds the conditional and unconditional targets
for a guidance scale s so that classifier-free guidance is exercised and still points at x*: the
unconditional branch targets a grey image g, the conditional one g + (x* − g)/s, so the guided
prediction ε̂_∅ + s(ε̂_c − ε̂_∅) is exactly the oracle for x*. A wrong CFG formula, a swapped
branch or a wrong sign makes SDS converge somewhere else, which the tests would see.

Latent spaces: a random tiny VAE is not invertible, so the latent oracle uses
:class:`SpaceToDepthAutoencoder`, a 2×2 space-to-depth "VAE" with the encode/decode interface of
diffusers' ``AutoencoderKL``; :class:`IdentityAutoencoder` gives a pixel-space diffusion model.
Both go through the very encode/decode code that Stable Diffusion's VAE goes through.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace

import torch
import torch.nn.functional as F

from ..devices import resolve_device
from ..errors import InputError
from .sds import GuidanceModel, images_to_model_input

# Stable Diffusion's training noise schedule ("scaled_linear"), so timestep fractions mean the same for the oracle.
SD_NUM_TRAIN_TIMESTEPS = 1000
SD_BETA_START = 0.00085
SD_BETA_END = 0.012
# Grey in [0, 1]: what the oracle's unconditional branch targets.
DEFAULT_UNCOND_GREY = 0.5
SPACE_TO_DEPTH_FACTOR = 2


def scaled_linear_alphas_cumprod(num_train_timesteps: int = SD_NUM_TRAIN_TIMESTEPS, beta_start: float = SD_BETA_START,
                                 beta_end: float = SD_BETA_END) -> torch.Tensor:
    """ᾱ_t (T,) float32 of the "scaled_linear" schedule: β linear in sqrt-space from beta_start to beta_end."""
    betas = torch.linspace(beta_start**0.5, beta_end**0.5, num_train_timesteps, dtype=torch.float64) ** 2
    return torch.cumprod(1.0 - betas, dim=0).float()


class _LatentDistribution:
    """A deterministic posterior with the methods callers use on diffusers' DiagonalGaussianDistribution."""

    def __init__(self, mean: torch.Tensor):
        self.mean = mean

    def sample(self, generator: torch.Generator | None = None) -> torch.Tensor:
        return self.mean

    def mode(self) -> torch.Tensor:
        return self.mean


class SpaceToDepthAutoencoder(torch.nn.Module):
    """An exactly invertible "VAE": 2×2 space-to-depth, with diffusers' ``AutoencoderKL`` interface.

    encode(x (B, 3, H, W)) -> object with ``.latent_dist.sample()`` (B, 12, H/2, W/2);
    decode(z) -> object with ``.sample`` (B, 3, H, W); ``config.scaling_factor`` = 1.
    Linear and invertible, so the oracle's known answer survives the trip through latent space.
    """

    downsampling_factor = SPACE_TO_DEPTH_FACTOR

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(scaling_factor=1.0, latent_channels=3 * SPACE_TO_DEPTH_FACTOR**2)

    def encode(self, x: torch.Tensor):
        if x.shape[-1] % SPACE_TO_DEPTH_FACTOR or x.shape[-2] % SPACE_TO_DEPTH_FACTOR:
            raise InputError(f"image size {tuple(x.shape[-2:])} must be even for the space-to-depth autoencoder",
                             field="images")
        return SimpleNamespace(latent_dist=_LatentDistribution(F.pixel_unshuffle(x, SPACE_TO_DEPTH_FACTOR)))

    def decode(self, z: torch.Tensor):
        return SimpleNamespace(sample=F.pixel_shuffle(z, SPACE_TO_DEPTH_FACTOR))


class IdentityAutoencoder(torch.nn.Module):
    """Latents are the image itself: the oracle becomes a pixel-space diffusion model."""

    downsampling_factor = 1

    def __init__(self):
        super().__init__()
        self.config = SimpleNamespace(scaling_factor=1.0, latent_channels=3)

    def encode(self, x: torch.Tensor):
        return SimpleNamespace(latent_dist=_LatentDistribution(x))

    def decode(self, z: torch.Tensor):
        return SimpleNamespace(sample=z)


AUTOENCODERS = {"pixel": IdentityAutoencoder, "space_to_depth": SpaceToDepthAutoencoder}


@dataclass
class OracleConditioning:
    """Conditional and unconditional targets (B, C, h, w) as latents, in the roles of text embeddings."""

    cond: torch.Tensor
    uncond: torch.Tensor


class OracleDenoiser(GuidanceModel):
    """ε̂(z_t, t, z*) = (z_t − α_t·z*) / σ_t, where the conditioning z* is the target latent (B, C, h, w).

    latent_space: "pixel" (identity autoencoder) or "space_to_depth" (the invertible 2×2 VAE).
    """

    def __init__(self, latent_space: str = "space_to_depth", alphas_cumprod: torch.Tensor | None = None,
                 device="auto"):
        if latent_space not in AUTOENCODERS:
            raise InputError(f"expected one of {', '.join(AUTOENCODERS)}, got {latent_space!r}", field="latent_space")
        self.device = resolve_device(device)
        self.dtype = torch.float32
        self.vae = AUTOENCODERS[latent_space]()
        self.latent_space = latent_space
        self.native_resolution = None
        acp = scaled_linear_alphas_cumprod() if alphas_cumprod is None else torch.as_tensor(alphas_cumprod).float()
        self.alphas_cumprod = acp.to(self.device)

    def predict_noise(self, latents_noisy: torch.Tensor, t: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        if conditioning.shape != latents_noisy.shape:
            raise InputError(f"oracle targets {tuple(conditioning.shape)} must match the latents "
                             f"{tuple(latents_noisy.shape)} (render the target at the same size)", field="conditioning")
        alphas_cumprod = self.alphas_cumprod.to(latents_noisy.device)[t].view(-1, 1, 1, 1).float()
        alpha, sigma = alphas_cumprod.sqrt(), (1.0 - alphas_cumprod).sqrt()
        return (latents_noisy.float() - alpha * conditioning.float()) / sigma

    def target_latents(self, target_images: torch.Tensor, resolution: int | None = None) -> torch.Tensor:
        """Target images (B, H, W, 3) in [0, 1] -> target latents (B, C, h, w), without gradients."""
        with torch.no_grad():
            return self.encode_images(images_to_model_input(target_images.detach(), resolution))

    def conditioning(self, target_images: torch.Tensor, guidance_scale: float = 1.0,
                     uncond_grey: float = DEFAULT_UNCOND_GREY) -> OracleConditioning:
        """Targets so that CFG with ``guidance_scale`` s points exactly at ``target_images`` (B, H, W, 3).

        uncond targets the grey image g; cond targets g + (x* − g)/s, so ε̂_∅ + s(ε̂_c − ε̂_∅) is the
        oracle for x*. With s = 1 the conditional target is x* itself.
        """
        if not guidance_scale > 0:
            raise InputError(f"must be positive, got {guidance_scale}", field="guidance_scale")
        target = self.target_latents(target_images)
        grey = self.target_latents(torch.full_like(target_images, uncond_grey))
        return OracleConditioning(cond=grey + (target - grey) / guidance_scale, uncond=grey)

"""Score Distillation Sampling (SDS) and Classifier Score Distillation (CSD).

Notation (DDPM, as in diffusers): a clean latent z is noised to z_t = α_t·z + σ_t·ε with
α_t = sqrt(ᾱ_t), σ_t = sqrt(1 − ᾱ_t), ᾱ_t = ``alphas_cumprod[t]`` of the model's scheduler.
A guidance model predicts ε̂(z_t, t, c) for a conditioning c (text embeddings for Stable
Diffusion, a target image for the oracle denoiser).

SDS (DreamFusion, latent space)
    ε̂_cfg = ε̂(z_t, t, ∅) + s·(ε̂(z_t, t, c) − ε̂(z_t, t, ∅))      classifier-free guidance, scale s
    g_z   = w(t)·(ε̂_cfg − ε),   w(t) = 1 − ᾱ_t = σ_t²
The "target trick" turns g_z into a loss whose gradient is exactly g_z / B:
    loss = 0.5·‖z − stopgrad(z − g_z)‖² / B       ⇒  ∂loss/∂z = g_z / B.
s = 1 means no guidance: the unconditional pass is skipped.

CSD (Yu et al. 2023, "Text-to-3D with Classifier Score Distillation") keeps only the classifier term:
    g_z = w(t)·s·(ε̂(z_t, t, c) − ε̂(z_t, t, ∅)),
where ∅ is the negative-prompt embedding when one is given.

Pixel-space variant (``space="pixel"``): gradients are formed on the image x (in [−1, 1], NCHW, at
the model resolution) instead of on the latent, so no backward pass goes through the VAE encoder.
Because ε̂ − ε = (α_t/σ_t)·(z − ẑ_0) with ẑ_0 = (z_t − σ_t·ε̂)/α_t, latent SDS is
g_z = w(t)·(α_t/σ_t)·(z − ẑ_0). The pixel variant takes the same step in pixel space,
    z = E(x) (no gradient),   x̂_0 = clamp(D(ẑ_0), −1, 1),   g_x = w(t)·(α_t/σ_t)·(x − x̂_0),
and for CSD g_x = w(t)·s·(α_t/σ_t)·(D(ẑ_0^∅) − D(ẑ_0^c)) (the denoised images of the two
branches). With an identity autoencoder the pixel variant equals latent SDS exactly, and with any
linear invertible autoencoder (the oracle's space-to-depth) both give the same image gradient,
which the tests check. The scale is therefore the same in both spaces: guidance scales and
learning rates carry over.

Images at this module's boundary are float (B, H, W, 3) in [0, 1] (DESIGN.md); they become
(B, 3, H, W) in [−1, 1] for the autoencoder, resized to the model's native resolution when asked.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from ..errors import InputError

SPACES = ("latent", "pixel")
MODES = ("sds", "csd")
ANNEAL_SCHEDULES = ("fixed", "linear", "sqrt")
WEIGHTINGS = ("sds", "uniform")


class GuidanceModel:
    """What SDS needs from a diffusion model; Stable Diffusion and the oracle denoiser both provide it.

    Subclasses set:
      alphas_cumprod: (T,) float32 on ``device``, the scheduler's ᾱ_t for t = 0 .. T-1.
      vae: an autoencoder with the interface of diffusers' ``AutoencoderKL``
        (``vae.encode(x).latent_dist.sample(generator)``, ``vae.decode(z).sample``,
        ``vae.config.scaling_factor``), or None for a diffusion model that works on pixels.
      native_resolution: the image size the model was trained at (512 for SD 1.5 / 2.1-base), or
        None when any size works.
      device, dtype: where and in which precision the networks run.
    and implement :meth:`predict_noise`.
    """

    alphas_cumprod: torch.Tensor
    vae: torch.nn.Module | None = None
    native_resolution: int | None = None
    device: torch.device = torch.device("cpu")
    dtype: torch.dtype = torch.float32

    @property
    def num_train_timesteps(self) -> int:
        return int(self.alphas_cumprod.shape[0])

    def predict_noise(self, latents_noisy: torch.Tensor, t: torch.Tensor, conditioning: torch.Tensor) -> torch.Tensor:
        """ε̂ for ``latents_noisy`` (B, C, h, w) at integer timesteps ``t`` (B,) given ``conditioning`` (B, ...).

        Returns (B, C, h, w) in float32.
        """
        raise NotImplementedError

    def encode_images(self, images: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, 3, H, W) in [−1, 1] -> latents (B, C, h, w) float32, scaled by ``vae.config.scaling_factor``."""
        if self.vae is None:
            return images.float()
        posterior = self.vae.encode(images.to(self.dtype)).latent_dist
        latents = posterior.sample(generator=generator) * self.vae.config.scaling_factor
        return latents.float()

    def decode_latents(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents (B, C, h, w) -> images (B, 3, H, W) float32, nominally in [−1, 1] (not clamped)."""
        if self.vae is None:
            return latents.float()
        images = self.vae.decode((latents / self.vae.config.scaling_factor).to(self.dtype)).sample
        return images.float()


@dataclass
class SDSConfig:
    """Settings of one score-distillation step.

    guidance_scale: classifier-free guidance scale s (100 as in DreamFusion; 1 = no guidance).
    t_min, t_max: timesteps are drawn uniformly in [t_min·T, t_max·T] (fractions of the T training steps).
    anneal: "fixed" keeps [t_min, t_max]; "linear" / "sqrt" lower the upper bound from t_max to
        ``anneal_t_max`` over the run (linearly / like the square root of progress), so late steps
        refine details with little noise. Needs ``step`` and ``total_steps`` in :func:`sds_loss`.
    weighting: "sds" w(t) = 1 − ᾱ_t; "uniform" w(t) = 1.
    grad_clip: clamp each gradient element to [−grad_clip, grad_clip] (None = no clipping).
    space: "latent" (gradients through the VAE encoder) or "pixel" (see the module docstring).
    mode: "sds" or "csd" (classifier score distillation).
    resize_to_native: resize images to the model's native resolution (512 for SD) before encoding.
    """

    guidance_scale: float = 100.0
    t_min: float = 0.02
    t_max: float = 0.98
    anneal: Literal["fixed", "linear", "sqrt"] = "fixed"
    anneal_t_max: float = 0.5
    weighting: Literal["sds", "uniform"] = "sds"
    grad_clip: float | None = None
    space: Literal["latent", "pixel"] = "latent"
    mode: Literal["sds", "csd"] = "sds"
    resize_to_native: bool = True

    def __post_init__(self):
        if not 0.0 <= self.t_min < self.t_max <= 1.0:
            raise InputError(f"need 0 <= t_min < t_max <= 1, got t_min={self.t_min}, t_max={self.t_max}", field="t_min")
        if not self.t_min <= self.anneal_t_max <= self.t_max:
            raise InputError(f"must lie in [t_min, t_max] = [{self.t_min}, {self.t_max}], got {self.anneal_t_max}",
                             field="anneal_t_max")
        if not (math.isfinite(self.guidance_scale) and self.guidance_scale > 0):
            raise InputError(f"must be a positive number, got {self.guidance_scale}", field="guidance_scale")
        if self.grad_clip is not None and not self.grad_clip > 0:
            raise InputError(f"must be positive or None, got {self.grad_clip}", field="grad_clip")
        for name, value, choices in (("anneal", self.anneal, ANNEAL_SCHEDULES), ("weighting", self.weighting, WEIGHTINGS),
                                     ("space", self.space, SPACES), ("mode", self.mode, MODES)):
            if value not in choices:
                raise InputError(f"expected one of {', '.join(choices)}, got {value!r}", field=name)


@dataclass
class SDSOutput:
    """Result of one score-distillation step.

    loss: scalar whose gradient w.r.t. the latents (latent space) or the model-resolution image
        (pixel space) is the SDS/CSD gradient divided by the batch size. Its value is not a quality
        measure (it is 0.5·‖g‖²/B).
    grad: (B, C, h, w) or (B, 3, H, W) the (clipped) gradient the loss applies, detached.
    timesteps: (B,) integer timesteps used.
    predicted_latents: (B, C, h, w) ẑ_0 of the guided prediction, detached (decode it for previews).
    noise: (B, C, h, w) the ε added to the latents.
    """

    loss: torch.Tensor
    grad: torch.Tensor
    timesteps: torch.Tensor
    predicted_latents: torch.Tensor
    noise: torch.Tensor

    @property
    def grad_norm(self) -> float:
        return float(self.grad.flatten(1).norm(dim=1).mean())


def timestep_bounds(config: SDSConfig, step: int | None = None, total_steps: int | None = None) -> tuple[float, float]:
    """The (t_lo, t_hi) fractions of the training timesteps to draw from at ``step`` of ``total_steps``."""
    if config.anneal == "fixed" or step is None or not total_steps:
        return config.t_min, config.t_max
    progress = min(max(step / total_steps, 0.0), 1.0)
    shape = progress if config.anneal == "linear" else math.sqrt(progress)
    t_hi = config.t_max - (config.t_max - config.anneal_t_max) * shape
    return config.t_min, max(t_hi, config.t_min)


def sample_timesteps(batch_size: int, num_train_timesteps: int, t_lo: float, t_hi: float,
                     generator: torch.Generator | None = None, device="cpu") -> torch.Tensor:
    """(B,) int64 timesteps uniform in [int(t_lo·T), int(t_hi·T)] (clamped to T − 1)."""
    low = int(t_lo * num_train_timesteps)
    high = min(int(t_hi * num_train_timesteps), num_train_timesteps - 1)
    high = max(high, low)
    t = torch.randint(low, high + 1, (batch_size,), generator=generator, device=generator.device if generator else "cpu")
    return t.to(device)


def classifier_free_guidance(eps_uncond: torch.Tensor, eps_cond: torch.Tensor, scale: float) -> torch.Tensor:
    """ε̂_∅ + s·(ε̂_c − ε̂_∅)."""
    return eps_uncond + scale * (eps_cond - eps_uncond)


def images_to_model_input(images: torch.Tensor, resolution: int | None) -> torch.Tensor:
    """(B, H, W, 3) in [0, 1] -> (B, 3, R, R) in [−1, 1]; differentiable. ``resolution`` None keeps the size."""
    if images.ndim == 3:
        images = images.unsqueeze(0)
    if images.ndim != 4 or images.shape[-1] != 3:
        raise InputError(f"expected images shaped (B, H, W, 3), got {tuple(images.shape)}", field="images")
    x = images.permute(0, 3, 1, 2).float() * 2.0 - 1.0
    if resolution is not None and tuple(x.shape[-2:]) != (resolution, resolution):
        shrinking = resolution < max(x.shape[-2:])
        x = F.interpolate(x, size=(resolution, resolution), mode="bilinear", align_corners=False,
                          antialias=shrinking and x.device.type != "mps")
    return x


def _broadcast_batch(conditioning: torch.Tensor, batch_size: int, name: str) -> torch.Tensor:
    if conditioning.shape[0] == batch_size:
        return conditioning
    if conditioning.shape[0] == 1:
        return conditioning.expand(batch_size, *conditioning.shape[1:])
    raise InputError(f"batch of {conditioning.shape[0]} does not match {batch_size} images", field=name)


def _target_trick_loss(x: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """0.5·‖x − stopgrad(x − grad)‖² / B, whose gradient w.r.t. x is grad / B."""
    target = (x - grad).detach()
    return 0.5 * F.mse_loss(x, target, reduction="sum") / x.shape[0]


def _clip(grad: torch.Tensor, config: SDSConfig) -> torch.Tensor:
    # A NaN from a fp16 overflow must not poison the parameters: zero it.
    grad = torch.nan_to_num(grad, nan=0.0, posinf=0.0, neginf=0.0)
    if config.grad_clip is not None:
        grad = grad.clamp(-config.grad_clip, config.grad_clip)
    return grad


@dataclass
class _NoisyPrediction:
    t: torch.Tensor  # (B,)
    noise: torch.Tensor  # (B, C, h, w)
    latents_noisy: torch.Tensor  # (B, C, h, w)
    alpha: torch.Tensor  # (B, 1, 1, 1)
    sigma: torch.Tensor  # (B, 1, 1, 1)
    weight: torch.Tensor  # (B, 1, 1, 1)
    eps_guided: torch.Tensor  # (B, C, h, w), the CFG prediction
    eps_cond: torch.Tensor
    eps_uncond: torch.Tensor | None


def _predict(guidance: GuidanceModel, latents: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None,
             config: SDSConfig, step, total_steps, generator) -> _NoisyPrediction:
    batch = latents.shape[0]
    t_lo, t_hi = timestep_bounds(config, step, total_steps)
    t = sample_timesteps(batch, guidance.num_train_timesteps, t_lo, t_hi, generator, latents.device)
    alphas_cumprod = guidance.alphas_cumprod.to(latents.device)[t].view(-1, 1, 1, 1).float()
    alpha, sigma = alphas_cumprod.sqrt(), (1.0 - alphas_cumprod).sqrt()
    weight = (1.0 - alphas_cumprod) if config.weighting == "sds" else torch.ones_like(alphas_cumprod)
    noise = torch.randn(latents.shape, generator=generator, device=generator.device if generator else "cpu").to(latents)
    with torch.no_grad():
        latents_noisy = alpha * latents.detach() + sigma * noise
        cond = _broadcast_batch(cond, batch, "text_embeddings")
        needs_uncond = config.mode == "csd" or config.guidance_scale != 1.0
        if needs_uncond:
            if uncond is None:
                raise InputError("classifier-free guidance needs unconditional (or negative-prompt) conditioning",
                                 field="uncond")
            uncond = _broadcast_batch(uncond, batch, "uncond")
            # One network call for both branches: [uncond; cond] along the batch.
            eps = guidance.predict_noise(torch.cat([latents_noisy, latents_noisy]), torch.cat([t, t]),
                                         torch.cat([uncond, cond])).float()
            eps_uncond, eps_cond = eps.chunk(2)
            eps_guided = classifier_free_guidance(eps_uncond, eps_cond, config.guidance_scale)
        else:
            eps_cond = guidance.predict_noise(latents_noisy, t, cond).float()
            eps_uncond, eps_guided = None, eps_cond
    return _NoisyPrediction(t, noise, latents_noisy, alpha, sigma, weight, eps_guided, eps_cond, eps_uncond)


def _denoised(p: _NoisyPrediction, eps: torch.Tensor) -> torch.Tensor:
    """ẑ_0 = (z_t − σ_t·ε̂) / α_t."""
    return (p.latents_noisy - p.sigma * eps) / p.alpha


def sds_loss_on_latents(guidance: GuidanceModel, latents: torch.Tensor, cond: torch.Tensor,
                        uncond: torch.Tensor | None, config: SDSConfig | None = None, *, step: int | None = None,
                        total_steps: int | None = None, generator: torch.Generator | None = None) -> SDSOutput:
    """SDS / CSD loss on latents (B, C, h, w) that carry gradients (encoded images, or latents rendered directly).

    cond, uncond: (B, ...) or (1, ...) conditioning for the model (text embeddings (B, L, D) for
    Stable Diffusion); ``uncond`` is the empty or negative prompt and may be None when
    guidance_scale is 1 in SDS mode.
    """
    config = config or SDSConfig()
    p = _predict(guidance, latents, cond, uncond, config, step, total_steps, generator)
    if config.mode == "sds":
        grad = p.weight * (p.eps_guided - p.noise)
    else:
        grad = p.weight * config.guidance_scale * (p.eps_cond - p.eps_uncond)
    grad = _clip(grad, config)
    loss = _target_trick_loss(latents.float(), grad)
    return SDSOutput(loss, grad, p.t, _denoised(p, p.eps_guided).detach(), p.noise)


def sds_loss(guidance: GuidanceModel, images: torch.Tensor, cond: torch.Tensor, uncond: torch.Tensor | None,
             config: SDSConfig | None = None, *, step: int | None = None, total_steps: int | None = None,
             generator: torch.Generator | None = None) -> SDSOutput:
    """SDS / CSD loss for rendered ``images`` (B, H, W, 3) in [0, 1]; backward() sends the gradient to them.

    ``config.space`` picks the latent path (encode with gradients, SDS on latents) or the pixel path
    (encode without gradients, decode the denoised latents, gradient on the image); see the module
    docstring for the math.
    """
    config = config or SDSConfig()
    resolution = guidance.native_resolution if config.resize_to_native else None
    x = images_to_model_input(images, resolution)
    if config.space == "latent":
        latents = guidance.encode_images(x, generator=generator)
        return sds_loss_on_latents(guidance, latents, cond, uncond, config, step=step, total_steps=total_steps,
                                   generator=generator)

    with torch.no_grad():
        latents = guidance.encode_images(x, generator=generator)
    p = _predict(guidance, latents, cond, uncond, config, step, total_steps, generator)
    # w(t)·α_t/σ_t: the factor that maps (z − ẑ_0) to latent SDS, reused in pixel space.
    step_scale = p.weight * p.alpha / p.sigma
    with torch.no_grad():
        if config.mode == "sds":
            denoised = guidance.decode_latents(_denoised(p, p.eps_guided)).clamp(-1.0, 1.0)
            grad = step_scale * (x.detach() - denoised)
        else:
            denoised_uncond = guidance.decode_latents(_denoised(p, p.eps_uncond))
            denoised_cond = guidance.decode_latents(_denoised(p, p.eps_cond))
            grad = step_scale * config.guidance_scale * (denoised_uncond - denoised_cond)
    grad = _clip(grad, config)
    loss = _target_trick_loss(x, grad)
    return SDSOutput(loss, grad, p.t, _denoised(p, p.eps_guided).detach(), p.noise)

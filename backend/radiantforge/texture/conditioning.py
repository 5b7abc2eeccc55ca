"""What the guidance model is conditioned on for each batch of views: the prompt, or an oracle's target.

- Stable Diffusion (any :class:`~radiantforge.guidance.GuidanceModel` with ``text_embeddings``):
  the view-dependent prompt embeddings of the sampled cameras (:class:`PromptConditioner`).
- :class:`TextureOracle`: the oracle denoiser (DESIGN.md) aimed at the render of a known
  reference texture on the same mesh, from the same camera, with the same light and background.
  SDS must then recover the reference: what the known-answer tests check. Pass one as
  ``texture_mesh(..., guidance=TextureOracle(OracleDenoiser("space_to_depth"), texture))``.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from ..errors import InputError
from ..guidance import OracleDenoiser, SampledViews
from ..guidance.guided_jobs import Conditioning, PromptEmbeddings


@dataclass
class TextureOracle:
    """Known-answer guidance: ``denoiser`` targets renders of ``reference_texture`` (H, W, 3) in [0, 1].

    uv_fingerprint: :func:`radiantforge.texture.meshes.uv_fingerprint` of the UVs the reference
        texture was made for; the job refuses a texture made for other UVs (a mesh without UVs gets
        a new atlas: take it from ``prepare_mesh(mesh).mesh``). None: not checked, except that a
        non-constant texture cannot fit an atlas the job makes itself.
    """

    denoiser: OracleDenoiser
    reference_texture: Tensor
    uv_fingerprint: str | None = None

    def __post_init__(self):
        if not isinstance(self.denoiser, OracleDenoiser):
            raise InputError(f"expected an OracleDenoiser, got {type(self.denoiser).__name__}", field="guidance")
        texture = torch.as_tensor(self.reference_texture, dtype=torch.float32)
        if texture.ndim != 3 or texture.shape[-1] != 3:
            raise InputError(f"expected (H, W, 3), got {tuple(texture.shape)}", field="reference_texture")
        self.reference_texture = texture


class PromptConditioner(PromptEmbeddings):
    """Text embeddings per sampled view (computed once per prompt by the model's cache)."""

    def __init__(self, model, prompt: str, negative_prompt: str, view_dependent: bool):
        super().__init__(model, prompt, negative_prompt, view_dependent, oracle_name="TextureOracle")

    def __call__(self, views: SampledViews, render_reference) -> Conditioning:
        return self.for_views(views)


class OracleConditioner:
    """The oracle's conditional / unconditional targets for renders of the reference texture."""

    kind = "oracle"

    def __init__(self, oracle: TextureOracle, guidance_scale: float, device=None):
        self.oracle = oracle
        self.guidance_scale = guidance_scale
        self.reference_texture = oracle.reference_texture.to(device) if device is not None else oracle.reference_texture

    def __call__(self, views: SampledViews, render_reference) -> Conditioning:
        """``render_reference(texture)`` renders a texture exactly as the optimised one is rendered this step."""
        with torch.no_grad():
            target = render_reference(self.reference_texture)
        targets = self.oracle.denoiser.conditioning(target, self.guidance_scale)
        return Conditioning(targets.cond, targets.uncond, target)

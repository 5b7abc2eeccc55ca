"""What the two guided jobs (text-to-texture, text-to-3D) set up the same way before their loop.

- :func:`resolve_guided_config`: the job's config with the caller's overrides and prompt applied;
- :func:`make_guidance`: the guidance model and the conditioner of each step, from what the caller
  passed (nothing: load ``config.model``; a loaded model; the job's oracle);
- :class:`Conditioning` and :class:`PromptEmbeddings`: what a conditioner hands to
  :func:`~radiantforge.guidance.sds_loss`, and the prompt side of it.

Each job keeps what differs: its oracle type and how an oracle target is rendered for a step.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from ..config_checks import apply_overrides
from ..errors import InputError
from .camera_sampling import SampledViews
from .loading import load_stable_diffusion
from .prompts import ViewDependentPrompts
from .sds import GuidanceModel


@dataclass
class Conditioning:
    """cond / uncond for :func:`radiantforge.guidance.sds_loss`; target: (B, H, W, 3) oracle renders or None."""

    cond: Tensor
    uncond: Tensor | None
    target: Tensor | None = None


class PromptEmbeddings:
    """Text embeddings per sampled view, each prompt encoded once (the model caches them)."""

    kind = "prompt"

    def __init__(self, model, prompt: str, negative_prompt: str, view_dependent: bool, oracle_name: str):
        if not hasattr(model, "text_embeddings"):
            raise InputError(f"{type(model).__name__} has no text encoder; pass a Stable Diffusion guidance model or "
                             f"a {oracle_name}", field="guidance")
        self.prompts = ViewDependentPrompts(model.text_embeddings, prompt, negative_prompt,
                                            view_dependent=view_dependent)

    def for_views(self, views: SampledViews) -> Conditioning:
        cond, uncond = self.prompts.embeddings(views.azimuth_deg, views.elevation_deg)
        return Conditioning(cond, uncond)


def resolve_guided_config(config, config_type: type, prompt: str | None, overrides: dict, what: str,
                          check_prompt: Callable[[Any], str]):
    """``config`` (default ``config_type()``) with ``overrides`` and the prompt applied, the prompt checked."""
    config = apply_overrides(config, config_type, {**overrides, **({"prompt": prompt} if prompt is not None else {})},
                             what)
    config.prompt = check_prompt(config.prompt)
    return config


def oracle_prompt_when_none(prompt: str | None, overrides: dict, config, guidance, oracle_type: type,
                            oracle_prompt: str) -> str | None:
    """``oracle_prompt`` when ``guidance`` is an ``oracle_type`` and no prompt was given anywhere
    (argument, overrides, config): the oracle's target is the answer, so no prompt is needed; else ``prompt``."""
    given = (prompt, overrides.get("prompt"), config.prompt if config is not None else None)
    if isinstance(guidance, oracle_type) and not any(str(text or "").strip() for text in given):
        return oracle_prompt
    return prompt


def make_guidance(guidance, config, device: torch.device, *, oracle_type: type,
                  oracle_conditioner: Callable[[Any], Any], prompt_conditioner: Callable[[Any], Any]):
    """(guidance model, conditioner, description) for ``guidance``: None (load ``config.model``),
    a loaded Stable Diffusion guidance model, or an ``oracle_type`` instance.

    oracle_conditioner(oracle) / prompt_conditioner(model): the job's conditioner for each case.
    """
    if guidance is None:
        guidance = load_stable_diffusion(config.model, device=device)
    if isinstance(guidance, oracle_type):
        return guidance.denoiser, oracle_conditioner(guidance), f"oracle ({guidance.denoiser.latent_space})"
    if not isinstance(guidance, GuidanceModel):
        raise InputError(f"expected a guidance model or a {oracle_type.__name__}, got {type(guidance).__name__}",
                         field="guidance")
    folder = getattr(guidance, "folder", None)
    return guidance, prompt_conditioner(guidance), str(folder) if folder is not None else type(guidance).__name__

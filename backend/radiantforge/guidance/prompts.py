"""View-dependent prompts: "<prompt>, front view" etc., chosen from the camera's azimuth and elevation.

Azimuth convention (the same as :func:`radiantforge.cameras.orbit_cameras`), in Blender world
space (Z up), measured around the object's centre:
  azimuth 0°    camera on the −Y side looking along +Y: the FRONT of the object (Blender's
                "Front" viewpoint, numpad 1, looks along +Y too);
  azimuth +90°  camera on the +X side (the azimuth grows counter-clockwise seen from above);
  azimuth ±180° camera on the +Y side: the BACK;
  elevation     angle above the XY plane, +90° = looking straight down.
The camera position is centre + r·(sin az·cos el, −cos az·cos el, sin el).

Views: "overhead" above ``overhead_elevation_deg``, "bottom" below ``bottom_elevation_deg``, else
"front" for |az| ≤ front_half_angle, "back" for |az| ≥ 180 − back_half_angle, "side" between.

Embedding interpolation: instead of switching embeddings at the front/side/back borders, the
text embedding blends linearly with |az|: front at 0°, side at 90°, back at 180°
(e(|az|) = (1 − r)·e_front + r·e_side with r = |az|/90 up to 90°, then side → back), as
stable-dreamfusion and threestudio do. Overhead and bottom views keep their own embedding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch

from ..errors import InputError

VIEW_NAMES = ("front", "side", "back", "overhead", "bottom")
FRONT, SIDE, BACK, OVERHEAD, BOTTOM = range(len(VIEW_NAMES))
QUARTER_TURN_DEG = 90.0


@dataclass
class ViewPromptConfig:
    front_half_angle_deg: float = 45.0
    back_half_angle_deg: float = 45.0
    overhead_elevation_deg: float = 60.0
    bottom_elevation_deg: float = -60.0
    interpolate: bool = True
    view_template: str = "{prompt}, {view} view"

    def __post_init__(self):
        if not (0 <= self.front_half_angle_deg and 0 <= self.back_half_angle_deg
                and self.front_half_angle_deg + self.back_half_angle_deg <= 180):
            raise InputError("front and back half angles must be >= 0 and add up to at most 180",
                             field="front_half_angle_deg")
        if not self.bottom_elevation_deg < self.overhead_elevation_deg:
            raise InputError("must be below overhead_elevation_deg", field="bottom_elevation_deg")
        if "{prompt}" not in self.view_template or "{view}" not in self.view_template:
            raise InputError("must contain {prompt} and {view}", field="view_template")


def wrap_azimuth_deg(azimuth_deg: torch.Tensor) -> torch.Tensor:
    """Azimuths to (−180, 180]."""
    wrapped = torch.remainder(torch.as_tensor(azimuth_deg, dtype=torch.float32) + 180.0, 360.0) - 180.0
    return torch.where(wrapped == -180.0, torch.full_like(wrapped, 180.0), wrapped)


def view_indices(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor,
                 config: ViewPromptConfig | None = None) -> torch.Tensor:
    """(B,) index into VIEW_NAMES for cameras at ``azimuth_deg`` (B,), ``elevation_deg`` (B,)."""
    config = config or ViewPromptConfig()
    abs_az = wrap_azimuth_deg(azimuth_deg).abs()
    elevation = torch.as_tensor(elevation_deg, dtype=torch.float32).expand_as(abs_az)
    index = torch.full(abs_az.shape, SIDE, dtype=torch.long)
    index[abs_az <= config.front_half_angle_deg] = FRONT
    index[abs_az >= 180.0 - config.back_half_angle_deg] = BACK
    index[elevation > config.overhead_elevation_deg] = OVERHEAD
    index[elevation < config.bottom_elevation_deg] = BOTTOM
    return index


def view_names(azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor, config: ViewPromptConfig | None = None) -> list[str]:
    return [VIEW_NAMES[i] for i in view_indices(azimuth_deg, elevation_deg, config).tolist()]


def view_prompt_texts(prompt: str, config: ViewPromptConfig | None = None) -> list[str]:
    """The five prompts, in VIEW_NAMES order."""
    config = config or ViewPromptConfig()
    return [config.view_template.format(prompt=prompt, view=view) for view in VIEW_NAMES]


def interpolation_weights(azimuth_deg: torch.Tensor) -> torch.Tensor:
    """(B, 3) weights of the front, side and back embeddings for azimuths (B,); rows sum to 1."""
    abs_az = wrap_azimuth_deg(azimuth_deg).abs()
    toward_side = (abs_az / QUARTER_TURN_DEG).clamp(max=1.0)  # 0 at front, 1 at side
    toward_back = ((abs_az - QUARTER_TURN_DEG) / QUARTER_TURN_DEG).clamp(min=0.0)  # 0 at side, 1 at back
    front = 1.0 - toward_side
    back = toward_back
    side = 1.0 - front - back
    return torch.stack([front, side, back], dim=-1)


class ViewDependentPrompts:
    """Text embeddings per camera for one prompt, computed once.

    embed: a function from a list of N strings to embeddings (N, L, D), such as
    :meth:`radiantforge.guidance.StableDiffusionGuidance.text_embeddings` (which caches them).
    view_dependent False: every camera gets the plain prompt.
    """

    def __init__(self, embed: Callable[[Sequence[str]], torch.Tensor], prompt: str, negative_prompt: str = "",
                 config: ViewPromptConfig | None = None, view_dependent: bool = True):
        if not prompt or not prompt.strip():
            raise InputError("the prompt is empty", field="prompt")
        self.config = config or ViewPromptConfig()
        self.prompt = prompt
        self.negative_prompt = negative_prompt
        self.view_dependent = view_dependent
        texts = view_prompt_texts(prompt, self.config) if view_dependent else [prompt]
        embeddings = embed([*texts, negative_prompt])
        self.view_embeddings = embeddings[:-1]  # (5, L, D), or (1, L, D) without view prompts
        self.uncond_embedding = embeddings[-1:]  # (1, L, D): empty or negative prompt

    def texts(self, azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor) -> list[str]:
        """The prompt each camera gets (for logs), ignoring interpolation."""
        if not self.view_dependent:
            return [self.prompt] * len(torch.as_tensor(azimuth_deg).reshape(-1))
        texts = view_prompt_texts(self.prompt, self.config)
        return [texts[i] for i in view_indices(azimuth_deg, elevation_deg, self.config).tolist()]

    def embeddings(self, azimuth_deg: torch.Tensor, elevation_deg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(cond (B, L, D), uncond (B, L, D)) for cameras at ``azimuth_deg`` (B,), ``elevation_deg`` (B,)."""
        azimuth_deg = torch.as_tensor(azimuth_deg, dtype=torch.float32).reshape(-1).cpu()
        elevation_deg = torch.as_tensor(elevation_deg, dtype=torch.float32).reshape(-1).cpu()
        batch = len(azimuth_deg)
        uncond = self.uncond_embedding.expand(batch, *self.uncond_embedding.shape[1:])
        if not self.view_dependent:
            return self.view_embeddings.expand(batch, *self.view_embeddings.shape[1:]), uncond
        index = view_indices(azimuth_deg, elevation_deg, self.config).to(self.view_embeddings.device)
        cond = self.view_embeddings[index]
        if self.config.interpolate:
            weights = interpolation_weights(azimuth_deg).to(self.view_embeddings)  # (B, 3)
            blended = torch.einsum("bk,kld->bld", weights, self.view_embeddings[[FRONT, SIDE, BACK]])
            horizontal = (index <= BACK).view(-1, 1, 1)
            cond = torch.where(horizontal, blended, cond)
        return cond, uncond

"""The Gaussian splat container shared by training, PLY I/O and rendering.

Storage follows the original 3DGS code (and its PLY layout): log scales, logit opacities,
wxyz quaternions (not necessarily normalised), colour as spherical-harmonic coefficients
(DC term ``sh0`` and the rest ``shN``). The parameter names match gsplat's trainer so
``gsplat.strategy`` can work on them directly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import torch

SH_C0 = 0.28209479177387814  # Y_0^0: colour = SH_C0 * sh0 + 0.5


def sh_coeff_count(degree: int) -> int:
    """Number of SH coefficients per colour channel for ``degree`` (1, 4, 9, 16)."""
    return (degree + 1) ** 2


def sh_degree_from_count(count: int) -> int:
    degree = int(round(math.sqrt(count))) - 1
    if sh_coeff_count(degree) != count:
        raise ValueError(f"{count} SH coefficients per channel is not (degree+1)^2 for any degree")
    return degree


def rgb_to_sh0(rgb: torch.Tensor) -> torch.Tensor:
    return (rgb - 0.5) / SH_C0


def sh0_to_rgb(sh0: torch.Tensor) -> torch.Tensor:
    return sh0 * SH_C0 + 0.5


@dataclass
class GaussianSplats:
    """N Gaussians.

    means: (N, 3) world positions; scales: (N, 3) log of the standard deviations;
    quats: (N, 4) rotation as w, x, y, z; opacities: (N,) logit of opacity;
    sh0: (N, 1, 3) DC coefficients; shN: (N, K-1, 3) higher-order coefficients (K = (d+1)^2).
    """

    means: torch.Tensor
    scales: torch.Tensor
    quats: torch.Tensor
    opacities: torch.Tensor
    sh0: torch.Tensor
    shN: torch.Tensor

    def __len__(self) -> int:
        return self.means.shape[0]

    @property
    def sh_degree(self) -> int:
        return sh_degree_from_count(1 + self.shN.shape[1])

    @property
    def sh_coeffs(self) -> torch.Tensor:
        """(N, K, 3) all SH coefficients."""
        return torch.cat([self.sh0, self.shN], dim=1)

    def activated(self) -> dict[str, torch.Tensor]:
        """Renderer inputs: normalised quats, scales, opacities in [0, 1], SH (N, K, 3)."""
        return {
            "means": self.means,
            "quats": torch.nn.functional.normalize(self.quats, dim=-1),
            "scales": torch.exp(self.scales),
            "opacities": torch.sigmoid(self.opacities),
            "sh_coeffs": self.sh_coeffs,
        }

    def to(self, device) -> "GaussianSplats":
        return GaussianSplats(**{f.name: getattr(self, f.name).to(device) for f in fields(self)})

    def detach(self) -> "GaussianSplats":
        return GaussianSplats(**{f.name: getattr(self, f.name).detach() for f in fields(self)})

    def as_dict(self) -> dict[str, torch.Tensor]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_dict(cls, params) -> "GaussianSplats":
        """From a dict or ``torch.nn.ParameterDict`` with the field names (extra keys ignored)."""
        return cls(**{f.name: params[f.name] for f in fields(cls)})

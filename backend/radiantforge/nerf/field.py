"""The radiance field of text-to-3D: density and albedo inside a bounding box, plus a background.

:class:`NerfField` = a grid encoding (:mod:`.encoding`) + two small MLPs:

- density σ(x) = softplus(MLP_σ(enc(x)) + blob(x)), where blob is a bias in pre-activation units
  that is positive inside a ball around the box centre and falls linearly outside it
  (``blob_density · (1 − |x − c| / blob_radius)``, the "Magic3D" density bias). A fresh field is
  therefore a soft ball in front of a transparent box: the guidance model first sees an object,
  and empty space starts empty (softplus of a very negative number is ~0).
- albedo a(x) = sigmoid(MLP_a(enc(x))), a diffuse colour in [0, 1]; shading is applied by the renderer.

:class:`BackgroundModel` gives the colour behind the object for each ray direction: a small MLP on
the view direction (DreamFusion), a fixed colour, or a random colour per image (so that the object
cannot hide in the background).

Anything with ``aabb`` (2, 3), ``density(points)`` and ``albedo(points)`` can be rendered by
:func:`radiantforge.nerf.render.render`; tests use analytic fields with that protocol.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError
from .encoding import HashGridConfig, TriPlaneConfig, make_encoding

BACKGROUND_MODES = ("mlp", "fixed", "random")
ENCODINGS = ("triplane", "hashgrid")
# The last layer of each MLP starts small so that a fresh field is the density blob with grey albedo.
OUTPUT_LAYER_INIT_STD = 1e-3
# Number of sin/cos frequency bands of the view direction fed to the background MLP: low, so the
# background stays a smooth gradient that cannot paint the object onto the sky.
BACKGROUND_FREQUENCIES = 2


class RadianceField(Protocol):
    """What the renderer and the mesh extractor need from a field.

    aabb: (2, 3) world-space box corners (min, max); nothing exists outside.
    """

    aabb: Tensor

    def density(self, points: Tensor) -> Tensor:
        """points (N, 3) world space -> σ (N,) >= 0, in 1/metres."""
        ...

    def albedo(self, points: Tensor) -> Tensor:
        """points (N, 3) -> albedo (N, 3) in [0, 1]."""
        ...


@dataclass
class FieldConfig:
    """Settings of :class:`NerfField`.

    bound: half the side of the cubic bounding box, in metres; center: its centre (world space).
    encoding: "triplane" (default, fastest on CPUs) or "hashgrid", with their settings.
    hidden_dim, hidden_layers: width and depth of the density and albedo MLPs.
    blob_density, blob_radius: the density bias (pre-softplus units; metres), see the module docstring.
    background: "mlp", "fixed" (``background_color``) or "random".
    """

    bound: float = 1.0
    center: tuple[float, float, float] = (0.0, 0.0, 0.0)
    encoding: Literal["triplane", "hashgrid"] = "triplane"
    triplane: TriPlaneConfig = field(default_factory=TriPlaneConfig)
    hashgrid: HashGridConfig = field(default_factory=HashGridConfig)
    hidden_dim: int = 64
    hidden_layers: int = 1
    blob_density: float = 10.0
    blob_radius: float = 0.5
    background: Literal["mlp", "fixed", "random"] = "mlp"
    background_color: tuple[float, float, float] = (1.0, 1.0, 1.0)

    def __post_init__(self):
        if not self.bound > 0:
            raise InputError(f"must be positive, got {self.bound}", field="bound")
        if len(self.center) != 3:
            raise InputError(f"expected 3 numbers, got {self.center}", field="center")
        if self.encoding not in ENCODINGS:
            raise InputError(f"expected one of {', '.join(ENCODINGS)}, got {self.encoding!r}", field="encoding")
        if self.hidden_dim < 1 or self.hidden_layers < 0:
            raise InputError(f"need hidden_dim >= 1 and hidden_layers >= 0, got {self.hidden_dim} and "
                             f"{self.hidden_layers}", field="hidden_dim")
        if not self.blob_radius > 0:
            raise InputError(f"must be positive, got {self.blob_radius}", field="blob_radius")
        if self.background not in BACKGROUND_MODES:
            raise InputError(f"expected one of {', '.join(BACKGROUND_MODES)}, got {self.background!r}",
                             field="background")
        if len(self.background_color) != 3 or not all(0.0 <= c <= 1.0 for c in self.background_color):
            raise InputError(f"expected 3 numbers in [0, 1], got {self.background_color}", field="background_color")


def mlp(in_dim: int, hidden_dim: int, hidden_layers: int, out_dim: int) -> torch.nn.Sequential:
    """Linear-ReLU stack with ``hidden_layers`` hidden layers; the output layer starts near zero."""
    layers: list[torch.nn.Module] = []
    width = in_dim
    for _ in range(hidden_layers):
        layers += [torch.nn.Linear(width, hidden_dim), torch.nn.ReLU(inplace=True)]
        width = hidden_dim
    output = torch.nn.Linear(width, out_dim)
    torch.nn.init.normal_(output.weight, std=OUTPUT_LAYER_INIT_STD)
    torch.nn.init.zeros_(output.bias)
    layers.append(output)
    return torch.nn.Sequential(*layers)


class BackgroundModel(torch.nn.Module):
    """Background colour per ray: (C, H, W, 3) directions -> (C, H, W, 3) colours in [0, 1].

    mode "mlp": sigmoid(MLP(Fourier features of the unit direction)); "fixed": ``color``;
    "random": one uniform random colour per image (drawn with ``generator``).
    """

    def __init__(self, mode: str = "mlp", color=(1.0, 1.0, 1.0), hidden_dim: int = 32):
        super().__init__()
        if mode not in BACKGROUND_MODES:
            raise InputError(f"expected one of {', '.join(BACKGROUND_MODES)}, got {mode!r}", field="background")
        self.mode = mode
        self.register_buffer("color", torch.as_tensor(color, dtype=torch.float32).reshape(3))
        self.net = mlp(3 + 6 * BACKGROUND_FREQUENCIES, hidden_dim, 1, 3) if mode == "mlp" else None

    def forward(self, directions: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """directions: (C, ..., 3) unit vectors -> colours (C, ..., 3)."""
        if self.mode == "fixed":
            return self.color.to(directions).expand_as(directions)
        if self.mode == "random":
            colors = torch.rand(directions.shape[0], 3, generator=generator,
                                device=generator.device if generator is not None else "cpu")
            colors = colors.to(directions).reshape(directions.shape[0], *([1] * (directions.ndim - 2)), 3)
            return colors.expand_as(directions)
        scales = 2.0 ** torch.arange(BACKGROUND_FREQUENCIES, device=directions.device, dtype=directions.dtype)
        angles = (directions[..., None, :] * scales[:, None] * math.pi).flatten(-2)  # (..., 3F)
        encoded = torch.cat([directions, torch.sin(angles), torch.cos(angles)], dim=-1)
        return torch.sigmoid(self.net(encoded))


class NerfField(torch.nn.Module):
    """Density and albedo inside ``aabb``; see the module docstring. Points are world-space (N, 3)."""

    def __init__(self, config: FieldConfig | None = None):
        super().__init__()
        self.config = config = config or FieldConfig()
        center = torch.tensor(config.center, dtype=torch.float32)
        self.register_buffer("center", center)
        self.register_buffer("aabb", torch.stack([center - config.bound, center + config.bound]))
        self.encoding = make_encoding(config.encoding, config.triplane, config.hashgrid)
        self.density_net = mlp(self.encoding.output_dim, config.hidden_dim, config.hidden_layers, 1)
        self.albedo_net = mlp(self.encoding.output_dim, config.hidden_dim, config.hidden_layers, 3)
        self.background = BackgroundModel(config.background, config.background_color)

    def normalize(self, points: Tensor) -> Tensor:
        """World points (N, 3) -> box coordinates in [-1, 1]^3."""
        return (points - self.center) / self.config.bound

    def density_bias(self, points: Tensor) -> Tensor:
        """(N,) the blob bias added before the softplus."""
        distance = (points - self.center).norm(dim=-1)
        return self.config.blob_density * (1.0 - distance / self.config.blob_radius)

    def density(self, points: Tensor) -> Tensor:
        """points (N, 3) -> σ (N,)."""
        raw = self.density_net(self.encoding(self.normalize(points))).squeeze(-1)
        return F.softplus(raw + self.density_bias(points))

    def albedo(self, points: Tensor) -> Tensor:
        """points (N, 3) -> albedo (N, 3) in [0, 1]."""
        return torch.sigmoid(self.albedo_net(self.encoding(self.normalize(points))))

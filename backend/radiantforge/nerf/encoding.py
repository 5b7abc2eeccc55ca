"""Trainable grid encodings of 3D points, pure PyTorch: tri-planes and a multi-resolution hash grid.

Both map points already normalised to the unit cube [-1, 1]^3 (the field's bounding box) to a
feature vector that a small MLP turns into density and albedo.

- :class:`TriPlaneEncoding` (the default): three axis-aligned feature planes (XY, XZ, YZ) at a few
  resolutions, sampled with ``F.grid_sample``; a point's feature at one resolution is the
  element-wise product of its three plane features (as in K-Planes), which makes features local
  in 3D rather than smeared along whole lines, and the levels are concatenated. Bilinear lookups
  in ``grid_sample``'s C++/CUDA kernels are the fastest grid encoding plain PyTorch offers on a CPU.
- :class:`HashGridEncoding`: the multi-resolution hash encoding of Instant-NGP (trilinear
  interpolation of hashed feature tables at geometrically growing resolutions), written with
  gathers. More expressive per parameter, several times slower than tri-planes on a CPU.

Neither is differentiated twice anywhere (normals come from finite differences in
:mod:`radiantforge.nerf.render`), so ``grid_sample`` with its single-backward kernel is enough.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor

from ..errors import InputError

# Plane features start near 1 with a little noise: a product of three planes then starts near 1
# everywhere (no dead features) and the noise breaks the symmetry between channels.
TRIPLANE_INIT_MEAN = 1.0
TRIPLANE_INIT_NOISE = 0.1
# Hash table entries start tiny, as in Instant-NGP: the MLP first sees a near-constant input.
HASH_INIT_RANGE = 1e-4
# Per-axis primes of the spatial hash (Teschner et al. 2003, as used by Instant-NGP); x's is 1.
HASH_PRIMES = (1, 2654435761, 805459861)
# The three planes as pairs of coordinate axes: (XY, XZ, YZ).
PLANE_AXES = ((0, 1), (0, 2), (1, 2))


@dataclass
class TriPlaneConfig:
    """resolutions: side length of the planes at each level; features: channels per plane per level."""

    resolutions: tuple[int, ...] = (32, 64, 128)
    features: int = 8

    def __post_init__(self):
        if not self.resolutions or any(int(r) < 2 for r in self.resolutions):
            raise InputError(f"expected one or more resolutions >= 2, got {self.resolutions}", field="resolutions")
        if self.features < 1:
            raise InputError(f"must be at least 1, got {self.features}", field="features")


@dataclass
class HashGridConfig:
    """Instant-NGP hash grid: ``num_levels`` resolutions growing geometrically from ``base_resolution``
    to ``max_resolution``, each a table of 2**``log2_table_size`` entries of ``features_per_level``."""

    num_levels: int = 12
    features_per_level: int = 2
    log2_table_size: int = 17
    base_resolution: int = 16
    max_resolution: int = 512

    def __post_init__(self):
        if self.num_levels < 1 or self.features_per_level < 1:
            raise InputError(f"need num_levels >= 1 and features_per_level >= 1, got {self.num_levels} and "
                             f"{self.features_per_level}", field="num_levels")
        if not 1 <= self.base_resolution <= self.max_resolution:
            raise InputError(f"need 1 <= base_resolution <= max_resolution, got {self.base_resolution} and "
                             f"{self.max_resolution}", field="base_resolution")
        if not 4 <= self.log2_table_size <= 24:
            raise InputError(f"expected 4 .. 24, got {self.log2_table_size}", field="log2_table_size")


class TriPlaneEncoding(torch.nn.Module):
    """Multi-resolution tri-plane features: points (N, 3) in [-1, 1]^3 -> features (N, levels·features)."""

    def __init__(self, config: TriPlaneConfig | None = None):
        super().__init__()
        self.config = config or TriPlaneConfig()
        self.planes = torch.nn.ParameterList()
        for resolution in self.config.resolutions:
            # (3 planes, C, R, R): one grid_sample call per level samples all three planes at once.
            noise = torch.randn(3, self.config.features, resolution, resolution)
            init = TRIPLANE_INIT_MEAN + TRIPLANE_INIT_NOISE * noise
            self.planes.append(torch.nn.Parameter(init))

    @property
    def output_dim(self) -> int:
        return len(self.config.resolutions) * self.config.features

    def forward(self, points: Tensor) -> Tensor:
        """points: (N, 3) in [-1, 1] (outside is clamped to the border) -> (N, output_dim)."""
        num_points = points.shape[0]
        # grid (3, 1, N, 2): plane p reads coordinates (a, b) = PLANE_AXES[p]; grid_sample's x is the
        # plane's width axis, so plane[:, :, row=b, col=a].
        coords = torch.stack([points[:, list(axes)] for axes in PLANE_AXES], dim=0).unsqueeze(1)
        features = []
        for planes in self.planes:
            sampled = F.grid_sample(planes, coords, mode="bilinear", padding_mode="border", align_corners=True)
            sampled = sampled.reshape(3, -1, num_points)  # (3, C, N)
            features.append(sampled[0] * sampled[1] * sampled[2])
        return torch.cat(features, dim=0).T


class HashGridEncoding(torch.nn.Module):
    """Multi-resolution hash encoding: points (N, 3) in [-1, 1]^3 -> features (N, levels·features)."""

    def __init__(self, config: HashGridConfig | None = None):
        super().__init__()
        self.config = config = config or HashGridConfig()
        growth = (math.exp((math.log(config.max_resolution) - math.log(config.base_resolution))
                           / max(config.num_levels - 1, 1)))
        resolutions = [int(math.floor(config.base_resolution * growth**level)) for level in range(config.num_levels)]
        table_size = 2**config.log2_table_size
        # Coarse levels whose (R+1)^3 lattice fits in the table are indexed densely (no collisions).
        dense = [(r + 1) ** 3 <= table_size for r in resolutions]
        sizes = [(r + 1) ** 3 if d else table_size for r, d in zip(resolutions, dense)]
        offsets = [0]
        for size in sizes[:-1]:
            offsets.append(offsets[-1] + size)
        self.register_buffer("resolutions", torch.tensor(resolutions, dtype=torch.int64), persistent=False)
        self.register_buffer("level_sizes", torch.tensor(sizes, dtype=torch.int64), persistent=False)
        self.register_buffer("level_offsets", torch.tensor(offsets, dtype=torch.int64), persistent=False)
        self.register_buffer("dense_levels", torch.tensor(dense), persistent=False)
        corners = torch.tensor([[(c >> 0) & 1, (c >> 1) & 1, (c >> 2) & 1] for c in range(8)], dtype=torch.int64)
        self.register_buffer("corner_offsets", corners, persistent=False)  # (8, 3)
        self.register_buffer("primes", torch.tensor(HASH_PRIMES, dtype=torch.int64), persistent=False)
        total = sum(sizes)
        self.table = torch.nn.Parameter(
            torch.empty(total, config.features_per_level).uniform_(-HASH_INIT_RANGE, HASH_INIT_RANGE))

    @property
    def output_dim(self) -> int:
        return self.config.num_levels * self.config.features_per_level

    def forward(self, points: Tensor) -> Tensor:
        """points: (N, 3) in [-1, 1] (outside is clamped) -> (N, output_dim)."""
        unit = ((points + 1.0) * 0.5).clamp(0.0, 1.0)  # (N, 3) in [0, 1]
        resolutions = self.resolutions.to(unit.dtype)  # (L,)
        scaled = unit[:, None, :] * resolutions[None, :, None]  # (N, L, 3) lattice coordinates
        base = torch.floor(scaled).long().clamp(max=self.resolutions[None, :, None] - 1)  # (N, L, 3)
        frac = scaled - base.to(scaled.dtype)  # (N, L, 3) in [0, 1]
        corners = base[:, :, None, :] + self.corner_offsets[None, None]  # (N, L, 8, 3)
        # Trilinear weight of each corner: product over axes of frac (offset 1) or 1 - frac (offset 0).
        offsets = self.corner_offsets.to(frac.dtype)  # (8, 3)
        weights = (frac[:, :, None, :] * offsets + (1.0 - frac[:, :, None, :]) * (1.0 - offsets)).prod(-1)
        side = (self.resolutions + 1)[None, :, None]  # (1, L, 1)
        dense_index = corners[..., 0] + side * (corners[..., 1] + side * corners[..., 2])
        hashed = corners[..., 0] * self.primes[0]
        hashed = torch.bitwise_xor(hashed, corners[..., 1] * self.primes[1])
        hashed = torch.bitwise_xor(hashed, corners[..., 2] * self.primes[2])
        index = torch.where(self.dense_levels[None, :, None], dense_index, hashed % self.level_sizes[None, :, None])
        index = index + self.level_offsets[None, :, None]  # (N, L, 8) rows of the shared table
        values = F.embedding(index, self.table)  # (N, L, 8, F)
        features = (values * weights[..., None]).sum(dim=2)  # (N, L, F)
        return features.reshape(points.shape[0], -1)


def make_encoding(kind: str, triplane: TriPlaneConfig | None = None,
                  hashgrid: HashGridConfig | None = None) -> torch.nn.Module:
    """The encoding named ``kind`` ("triplane" or "hashgrid")."""
    if kind == "triplane":
        return TriPlaneEncoding(triplane)
    if kind == "hashgrid":
        return HashGridEncoding(hashgrid)
    raise InputError(f"expected 'triplane' or 'hashgrid', got {kind!r}", field="encoding")

"""How close a generated object is to a known one: held-out PSNR, silhouette IoU, chamfer distance.

Used by the known-answer runs (the oracle knows the object) and their tests. Meshes are compared
by points sampled uniformly over their surfaces (area-weighted), with the symmetric chamfer
distance: the mean, over both point sets, of the distance to the nearest point of the other set.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ..errors import InputError
from ..mesh import TriangleMesh

# Point pairs per torch.cdist call: bounded temporaries (a 4096 x 4096 float matrix is 64 MB).
CDIST_CHUNK = 4096
SILHOUETTE_THRESHOLD = 0.5


def silhouette_iou(opacity: Tensor, reference: Tensor, threshold: float = SILHOUETTE_THRESHOLD) -> float:
    """Intersection over union of the masks ``opacity > threshold`` and ``reference > threshold`` (same shapes)."""
    if opacity.shape != reference.shape:
        raise InputError(f"shapes differ: {tuple(opacity.shape)} and {tuple(reference.shape)}", field="opacity")
    mask, truth = opacity > threshold, reference > threshold
    union = int((mask | truth).sum())
    if union == 0:
        return 1.0
    return int((mask & truth).sum()) / union


def sample_surface_points(mesh: TriangleMesh, count: int, generator: torch.Generator | None = None) -> Tensor:
    """(count, 3) points uniformly distributed over the surface of ``mesh`` (area-weighted faces)."""
    corners = mesh.vertices[mesh.faces].double()  # (F, 3, 3)
    areas = torch.cross(corners[:, 1] - corners[:, 0], corners[:, 2] - corners[:, 0], dim=-1).norm(dim=-1)
    if not float(areas.sum()) > 0:
        raise InputError("the mesh has no surface area", field="faces")
    face = torch.multinomial(areas.float().cpu(), count, replacement=True, generator=generator).to(corners.device)
    u, v = torch.rand(2, count, 1, generator=generator, dtype=torch.float64).to(corners.device)
    flip = (u + v) > 1.0  # fold the unit square onto the triangle
    u, v = torch.where(flip, 1.0 - u, u), torch.where(flip, 1.0 - v, v)
    chosen = corners[face]
    points = chosen[:, 0] + u * (chosen[:, 1] - chosen[:, 0]) + v * (chosen[:, 2] - chosen[:, 0])
    return points.float()


def nearest_distances(points: Tensor, reference: Tensor) -> Tensor:
    """(N,) distance from each of ``points`` (N, 3) to its nearest point of ``reference`` (M, 3)."""
    out = []
    for chunk in points.split(CDIST_CHUNK):
        best = torch.full((len(chunk),), float("inf"), dtype=chunk.dtype, device=chunk.device)
        for other in reference.split(CDIST_CHUNK):
            best = torch.minimum(best, torch.cdist(chunk, other).amin(dim=1))
        out.append(best)
    return torch.cat(out)


def chamfer_distance(points_a: Tensor, points_b: Tensor) -> dict[str, float]:
    """Symmetric chamfer distance between point sets (N, 3) and (M, 3), in the points' units.

    Returns {"chamfer": (mean a→b + mean b→a) / 2, "a_to_b": mean a→b, "b_to_a": mean b→a,
    "hausdorff_90": the 90th percentile of all nearest distances (robust worst case)}.
    """
    a_to_b = nearest_distances(points_a, points_b)
    b_to_a = nearest_distances(points_b, points_a)
    both = torch.cat([a_to_b, b_to_a])
    return {"chamfer": float((a_to_b.mean() + b_to_a.mean()) / 2), "a_to_b": float(a_to_b.mean()),
            "b_to_a": float(b_to_a.mean()), "hausdorff_90": float(torch.quantile(both, 0.9))}


def mesh_chamfer(mesh: TriangleMesh, reference: TriangleMesh, count: int = 20000, seed: int = 0) -> dict[str, float]:
    """:func:`chamfer_distance` between ``count`` surface samples of each mesh."""
    generator = torch.Generator().manual_seed(seed)
    return chamfer_distance(sample_surface_points(mesh.to("cpu"), count, generator),
                            sample_surface_points(reference.to("cpu"), count, generator))

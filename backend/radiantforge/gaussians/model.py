"""Initial Gaussians, their trainable parameters and the per-parameter Adam optimizers.

The parameter names are gsplat's trainer names (means, scales, quats, opacities, sh0, shN), one
``torch.nn.Parameter`` each in a ``torch.nn.ParameterDict``, and one Adam per parameter, which is
the layout ``gsplat.strategy`` edits when it clones, splits and prunes Gaussians.

Learning rates are the original 3DGS ones; the positions' rate is scaled by the scene extent and
decays exponentially over the run.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from ..cameras import Cameras
from .splats import GaussianSplats, rgb_to_sh0, sh_coeff_count

PARAMETER_NAMES = ("means", "scales", "quats", "opacities", "sh0", "shN")

# 3DGS learning rates (Kerbl et al. 2023, arguments/__init__.py of the reference code).
MEANS_LR_INIT = 1.6e-4  # times the scene extent
MEANS_LR_FINAL = 1.6e-6  # times the scene extent, reached at the last step
SCALES_LR = 5e-3
QUATS_LR = 1e-3
OPACITIES_LR = 5e-2
SH0_LR = 2.5e-3
SHN_LR = SH0_LR / 20.0  # view-dependent colour learns 20x slower than the base colour
# Runs shorter than the reference's 30k steps (Gaussian training on the CPU is mostly 2k-7k steps):
# the positions' rate decays to 0.01 ** sqrt(steps / 30k) of its start instead of 0.01 (2,000
# steps: 0.30, 7,000: 0.11, 30k: 0.01 as in 3DGS), and the scales' and base colour's rates are
# (30k / steps) ** (1/4) times the reference's, at most SHORT_RUN_MAX_BOOST (2,000 steps: 1.97x).
# Scaled 30k-step decay left the second half of a short run with positions that barely move.
# Tuned on the yard capture (scripts/bench_train.py, 175 views of 160x90, 2,000 steps, 2 threads):
# the reference rates 33.90 dB; final fraction 0.1 34.88, 0.3 35.06, 1 (no decay) 34.69; scales
# at 2x 34.53, base colour at 2x 34.39; final 0.1 with both at 2x 35.50; this rule 35.53. Reported
# on lego400 and the demo in the README.
REFERENCE_STEPS = 30_000
MEANS_LR_FINAL_FRACTION = MEANS_LR_FINAL / MEANS_LR_INIT
SHORT_RUN_BOOST_EXPONENT = 0.25
SHORT_RUN_MAX_BOOST = 2.0
# Adam epsilon of the reference code: tiny, so small gradients of rarely-seen Gaussians still move them.
ADAM_EPS = 1e-15

INITIAL_OPACITY = 0.1
NEAREST_NEIGHBOURS_FOR_SCALE = 3
# Guards log(0) for duplicate points in the initial cloud.
MIN_INITIAL_SCALE = 1e-7
RANDOM_INIT_GREY = 0.5

# Random initialisation: a candidate point is kept when at least this fraction of the training
# cameras see it, and rejected when any camera that sees it shows an (almost) empty pixel there.
RANDOM_INIT_MIN_VISIBLE_FRACTION = 0.5
RANDOM_INIT_EMPTY_ALPHA = 0.05
# Candidates drawn per round (as a multiple of the points still wanted) and the number of rounds.
RANDOM_INIT_OVERSAMPLING = 8
RANDOM_INIT_MAX_ROUNDS = 8
# Bounds on one round's candidates (memory and time) and on the acceptance rate assumed for it.
RANDOM_INIT_MAX_CANDIDATES = 2_000_000
RANDOM_INIT_MIN_ACCEPTANCE = 1e-4
RANDOM_INIT_CHUNK = 16384
# After this many accepted points, sample from their bounding box grown by this fraction of its size.
RANDOM_INIT_MIN_FOR_BOX = 64
RANDOM_INIT_PROBE = 1 << 18
RANDOM_INIT_BOX_MARGIN = 0.25


@dataclass
class InitialPoints:
    """Where training starts. xyz: (P, 3); rgb: (P, 3) in [0, 1]; source: a sentence saying which."""

    xyz: torch.Tensor
    rgb: torch.Tensor
    source: str
    kind: str  # "points3d" or "random"


def initial_points(dataset, n_random: int, *, generator: torch.Generator) -> InitialPoints:
    """The dataset's point cloud when it has one, else ``n_random`` random points.

    Random points are drawn uniformly in the cameras' bounding volume (the box around the camera
    centres, grown to hold the scene sphere), kept where at least half of the training cameras
    see them, and dropped where a camera that sees them shows an empty pixel (alpha below
    ``RANDOM_INIT_EMPTY_ALPHA``): for object captures with alpha masks that is the visual hull,
    for opaque images it is the volume the cameras share.
    """
    points = getattr(dataset, "points", None)
    if points is not None and len(points.xyz) > 0:
        xyz = torch.as_tensor(points.xyz, dtype=torch.float32)
        rgb = torch.as_tensor(points.rgb, dtype=torch.float32).clamp(0.0, 1.0)
        return InitialPoints(xyz, rgb, f"{len(xyz)} points from the dataset's point cloud", "points3d")
    xyz = random_points_in_camera_volume(dataset, n_random, generator=generator)
    rgb = torch.full_like(xyz, RANDOM_INIT_GREY)
    source = (
        f"{len(xyz)} random points in the cameras' bounding volume (no points3d.ply), kept where at "
        f"least {RANDOM_INIT_MIN_VISIBLE_FRACTION:.0%} of the training views see them and no view shows "
        "an empty pixel there"
    )
    return InitialPoints(xyz, rgb, source, "random")


def camera_bounding_box(cameras: Cameras, centre: torch.Tensor, radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(3,) low and high corners of the box around the camera centres and the scene sphere."""
    centres = cameras.centers.float()
    low = torch.minimum(centres.min(dim=0).values, centre - radius)
    high = torch.maximum(centres.max(dim=0).values, centre + radius)
    return low, high


def _project(points: torch.Tensor, cameras: Cameras) -> tuple[torch.Tensor, torch.Tensor]:
    """Pixel coordinates (C, P, 2) of points (P, 3) and whether each lies inside the image (C, P)."""
    w2c = cameras.world_to_camera_cv()  # (C, 4, 4)
    cam = points @ w2c[:, :3, :3].transpose(1, 2) + w2c[:, None, :3, 3]  # (C, P, 3)
    depth = cam[..., 2]
    in_front = depth > 1e-6
    uv_h = cam @ cameras.intrinsics.transpose(1, 2)  # (C, P, 3)
    uv = uv_h[..., :2] / depth.clamp(min=1e-6)[..., None]
    inside = in_front & (uv[..., 0] >= 0) & (uv[..., 0] < cameras.width) & (uv[..., 1] >= 0) & (uv[..., 1] < cameras.height)
    return uv, inside


def _view_alphas(views) -> torch.Tensor | None:
    alphas = getattr(views, "alphas", None)
    if alphas is None:
        return None
    alphas = torch.as_tensor(alphas, dtype=torch.float32)
    if alphas.ndim == 4:
        alphas = alphas[..., 0]
    return alphas  # (V, H, W)


def _in_hull(candidates: torch.Tensor, cameras: Cameras, alphas: torch.Tensor | None, min_visible: int) -> torch.Tensor:
    """(P,) whether each candidate (P, 3) is seen by ``min_visible`` cameras and never on an empty pixel."""
    keep = torch.zeros(len(candidates), dtype=torch.bool)
    for start in range(0, len(candidates), RANDOM_INIT_CHUNK):  # chunks bound the (C, P, 3) temporaries
        chunk = candidates[start : start + RANDOM_INIT_CHUNK]
        uv, inside = _project(chunk, cameras)
        accepted = inside.sum(dim=0) >= min_visible
        if alphas is not None:
            cols = uv[..., 0].long().clamp(0, cameras.width - 1)
            rows = uv[..., 1].long().clamp(0, cameras.height - 1)
            view_index = torch.arange(len(cameras))[:, None].expand_as(cols)
            alpha_at = alphas[view_index, rows, cols]  # (C, P)
            accepted &= ~(inside & (alpha_at < RANDOM_INIT_EMPTY_ALPHA)).any(dim=0)
        keep[start : start + len(chunk)] = accepted
    return keep


def random_points_in_camera_volume(dataset, n_points: int, *, generator: torch.Generator) -> torch.Tensor:
    """(n_points, 3) points drawn as :func:`initial_points` describes (fewer if the hull is tiny).

    Rejection sampling: once enough points were accepted, later rounds draw from their bounding
    box grown by ``RANDOM_INIT_BOX_MARGIN`` (the hull is small in the cameras' box, so most
    candidates would be wasted); the accepted points stay uniform over the hull.
    """
    cameras = dataset.train.cameras.to("cpu")
    centre, radius = dataset.scene_extent()
    centre = torch.as_tensor(centre, dtype=torch.float32).reshape(3)
    box_low, box_high = camera_bounding_box(cameras, centre, float(radius))
    low, high = box_low, box_high
    alphas = _view_alphas(dataset.train)
    min_visible = max(1, math.ceil(RANDOM_INIT_MIN_VISIBLE_FRACTION * len(cameras)))

    kept: list[torch.Tensor] = []
    n_kept = 0
    acceptance = 1.0 / RANDOM_INIT_OVERSAMPLING  # a guess, replaced by the measured rate after round one
    for round_index in range(RANDOM_INIT_MAX_ROUNDS):
        wanted = n_points - n_kept
        if wanted <= 0:
            break
        n_candidates = int(min(max(wanted / acceptance * 1.5, wanted), RANDOM_INIT_MAX_CANDIDATES))
        if round_index == 0:  # a probe that measures the acceptance rate and where the hull is
            n_candidates = min(n_candidates, RANDOM_INIT_PROBE)
        candidates = low + (high - low) * torch.rand(n_candidates, 3, generator=generator)
        keep = _in_hull(candidates, cameras, alphas, min_visible)
        acceptance = max(keep.float().mean().item(), RANDOM_INIT_MIN_ACCEPTANCE)
        chosen = candidates[keep][:wanted]
        kept.append(chosen)
        n_kept += len(chosen)
        if n_kept >= RANDOM_INIT_MIN_FOR_BOX:
            so_far = torch.cat(kept)
            margin = RANDOM_INIT_BOX_MARGIN * (so_far.max(dim=0).values - so_far.min(dim=0).values)
            new_low = torch.maximum(so_far.min(dim=0).values - margin, box_low)
            new_high = torch.minimum(so_far.max(dim=0).values + margin, box_high)
            shrink = float(torch.prod(high - low) / torch.prod(new_high - new_low).clamp(min=1e-12))
            acceptance = min(1.0, acceptance * shrink)
            low, high = new_low, new_high
    if n_kept == 0:
        # Nothing survived (masks empty, cameras looking away from each other): fall back to the box.
        return box_low + (box_high - box_low) * torch.rand(n_points, 3, generator=generator)
    return torch.cat(kept)


def mean_neighbour_distance(xyz: torch.Tensor, k: int = NEAREST_NEIGHBOURS_FOR_SCALE) -> torch.Tensor:
    """(P,) mean distance of each point to its ``k`` nearest other points."""
    count = len(xyz)
    if count <= 1:
        return torch.ones(count)
    k = min(k, count - 1)
    from scipy.spatial import cKDTree  # scipy comes with lpips; a k-d tree beats O(P^2) torch.cdist

    points = xyz.detach().cpu().double().numpy()
    distances, _ = cKDTree(points).query(points, k=k + 1)  # the first neighbour is the point itself
    return torch.from_numpy(distances[:, 1:].mean(axis=1)).float()


def init_splats(points: InitialPoints, sh_degree: int, initial_opacity: float = INITIAL_OPACITY) -> GaussianSplats:
    """Isotropic Gaussians at the points: scale = mean distance to the 3 nearest neighbours,
    identity rotation, opacity ``initial_opacity``, colour from the points (higher SH bands zero)."""
    xyz = points.xyz.float()
    count = len(xyz)
    distance = mean_neighbour_distance(xyz).clamp(min=MIN_INITIAL_SCALE)
    quats = torch.zeros(count, 4)
    quats[:, 0] = 1.0
    return GaussianSplats(
        means=xyz.clone(),
        scales=torch.log(distance)[:, None].repeat(1, 3),
        quats=quats,
        opacities=torch.full((count,), math.log(initial_opacity / (1.0 - initial_opacity))),
        sh0=rgb_to_sh0(points.rgb.float())[:, None, :],
        shN=torch.zeros(count, sh_coeff_count(sh_degree) - 1, 3),
    )


def make_parameters(splats: GaussianSplats, device) -> torch.nn.ParameterDict:
    """Trainable copies of ``splats`` on ``device``, keyed by gsplat's names."""
    return torch.nn.ParameterDict(
        {name: torch.nn.Parameter(tensor.detach().to(device).clone()) for name, tensor in splats.as_dict().items()}
    )


def short_run_boost(total_steps: int) -> float:
    """Factor on the scales' and base colour's rates for a run of ``total_steps`` (1 from 30k on)."""
    ratio = REFERENCE_STEPS / max(1, min(int(total_steps), REFERENCE_STEPS))
    return min(SHORT_RUN_MAX_BOOST, ratio ** SHORT_RUN_BOOST_EXPONENT)


def means_final_fraction(total_steps: int) -> float:
    """The positions' rate at the last step of a run of ``total_steps``, as a fraction of the first."""
    progress = max(1, min(int(total_steps), REFERENCE_STEPS)) / REFERENCE_STEPS
    return MEANS_LR_FINAL_FRACTION ** math.sqrt(progress)


def base_learning_rates(scene_extent: float, total_steps: int = REFERENCE_STEPS) -> dict[str, float]:
    """Learning rate of each parameter at step 0 of a run of ``total_steps``."""
    boost = short_run_boost(total_steps)
    return {
        "means": MEANS_LR_INIT * scene_extent,
        "scales": SCALES_LR * boost,
        "quats": QUATS_LR,
        "opacities": OPACITIES_LR,
        "sh0": SH0_LR * boost,
        "shN": SHN_LR * boost,
    }


def means_learning_rate(step: int, total_steps: int, scene_extent: float) -> float:
    """Exponential (log-linear) decay from 1.6e-4 times the extent to :func:`means_final_fraction`
    of that at the last step (1.6e-6 times the extent for 30k steps and more).

    A pure function of the step, so a resumed run follows exactly the same schedule.
    """
    progress = min(max(step / max(total_steps, 1), 0.0), 1.0)
    return MEANS_LR_INIT * means_final_fraction(total_steps) ** progress * scene_extent


def _fused_adam_supported(parameter: torch.Tensor) -> bool:
    """Fused Adam (one kernel per parameter instead of a dozen ops) where torch has it for the device.

    On the CPU, together with rendering only the active SH bands, it took about a fifth off a
    training step at 15k Gaussians (scripts/bench_train.py --issue6): the per-op overhead of the
    unfused update is comparable to the native rasterizer's own time there.
    """
    return parameter.dtype in (torch.float32, torch.float64) and parameter.device.type in ("cpu", "cuda", "mps")


def make_optimizers(params: torch.nn.ParameterDict, scene_extent: float,
                    total_steps: int = REFERENCE_STEPS) -> dict[str, torch.optim.Adam]:
    """One Adam per parameter (one param group each), as ``gsplat.strategy`` expects, at the rates
    of a run of ``total_steps``."""
    rates = base_learning_rates(scene_extent, total_steps)
    return {
        name: torch.optim.Adam([{"params": [params[name]], "lr": rates[name], "name": name}], eps=ADAM_EPS,
                               fused=_fused_adam_supported(params[name]))
        for name in PARAMETER_NAMES
    }


def set_means_learning_rate(optimizers: dict[str, torch.optim.Optimizer], lr: float) -> None:
    for group in optimizers["means"].param_groups:
        group["lr"] = lr

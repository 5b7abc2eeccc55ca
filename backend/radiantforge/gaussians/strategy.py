"""Adaptive density control: gsplat's DefaultStrategy with a working opacity reset and a cap.

What comes from gsplat unchanged: the running view-space gradient statistics
(``DefaultStrategy._update_state``), pruning by opacity and world size (``_prune_gs``) and the
parameter/optimizer surgery (``gsplat.strategy.ops.duplicate / split / remove / reset_opa``).

What this module adds:

- the periodic opacity reset actually happens (gsplat 1.5.3 writes
  ``step % self.reset_every == 0 & step > 0``, a chained comparison with ``0 & step`` that is
  always false, so its reset never fires);
- ``max_gaussians``: when growing would exceed the cap, only the Gaussians with the largest
  view-space gradients grow, so the count never passes it;
- :func:`refine_schedule`: the 30k-step schedule of 3DGS for long runs, and for short CPU runs
  the same 100-step cadence over a shorter window with one opacity reset.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
from gsplat.strategy import DefaultStrategy
from gsplat.strategy.base import Strategy
from gsplat.strategy.ops import duplicate, reset_opa, split

# The reference schedule of 3DGS / gsplat for a 30k-step run.
REFERENCE_ITERS = 30_000
REFERENCE_REFINE_START = 500
REFERENCE_REFINE_STOP = 15_000
REFERENCE_REFINE_EVERY = 100
REFERENCE_RESET_EVERY = 3_000
# Short runs keep refining every 100 steps: the view-space gradient statistics a refinement reads
# average over the views seen since the last one, and over 10 steps (what shrinking the schedule
# with the run gave) they are too noisy to pick the right Gaussians to grow (measured: see
# scripts/bench_train.py --schedules and the README). Only runs too short for a handful of
# 100-step refinements refine more often, down to every 10 steps.
MIN_REFINE_EVERY = 10
SHORT_RUN_REFINEMENTS = 10
# Refinement starts after this fraction of a short run (3DGS: 500 of 30k) and stops after
# REFINE_STOP_FRACTION of it (3DGS: 15k of 30k), leaving the last quarter to settle.
REFINE_START_FRACTION = 0.1
REFINE_STOP_FRACTION = 0.75
# A short run resets opacity once, halfway; 5 refinements at least must follow to regrow what it removed.
MIN_REFINEMENTS_AFTER_RESET = 5
# Opacities are reset to this multiple of the pruning threshold (gsplat's value).
RESET_OPACITY_FACTOR = 2.0


# The SH degree rises one band every 1000 steps in 3DGS (degree 3 at step 3000 of 30k). A short run
# raises it every steps // 8 (degree 3 at 3/8 of the run): measured on the truck-class yard at
# 2000 steps, every 1000 (degree 2 at the end, band 3 never) gave 33.08 dB, every 100 33.71, every 250 34.09.
REFERENCE_SH_DEGREE_INTERVAL = 1000
SH_DEGREE_INTERVAL_FRACTION = 1 / 8


def sh_degree_interval_for(steps: int) -> int:
    """Steps between raises of the active SH degree for a run of ``steps``."""
    return max(1, min(REFERENCE_SH_DEGREE_INTERVAL, round(steps * SH_DEGREE_INTERVAL_FRACTION)))


@dataclass
class RefineSchedule:
    refine_start_iter: int
    refine_stop_iter: int
    refine_every: int
    reset_every: int


def refine_schedule(iters: int) -> RefineSchedule:
    """The densification schedule of a run of ``iters`` steps.

    From 30k steps on, the 3DGS reference: refine every 100 steps from step 500 to 15k, reset
    opacities every 3k. Shorter runs keep the 100-step cadence (fewer refinements, each with
    statistics over 100 views) between 10% and 75% of the run, and reset once, halfway:
    2000 steps refine from 200 to 1500 and reset at 1000; 7000 steps refine from 500 to 5250 and
    reset at 3000. Runs shorter than 10 refinements of 100 steps refine ``iters // 20``-ly.
    """
    refine_every = REFERENCE_REFINE_EVERY
    if iters < SHORT_RUN_REFINEMENTS * REFERENCE_REFINE_EVERY:
        refine_every = max(MIN_REFINE_EVERY, iters // (2 * SHORT_RUN_REFINEMENTS))
    start = max(1, min(REFERENCE_REFINE_START, round(iters * REFINE_START_FRACTION)))
    stop = max(start + 1, min(REFERENCE_REFINE_STOP, round(iters * REFINE_STOP_FRACTION)))
    reset_every = min(REFERENCE_RESET_EVERY, max(MIN_REFINEMENTS_AFTER_RESET * refine_every, iters // 2))
    return RefineSchedule(refine_start_iter=start, refine_stop_iter=stop, refine_every=refine_every,
                          reset_every=reset_every)


@dataclass
class CappedDefaultStrategy(DefaultStrategy):
    """gsplat's DefaultStrategy with a cap on the number of Gaussians and an opacity reset that fires.

    ``max_gaussians=None`` means no cap. Everything else is DefaultStrategy's fields and
    behaviour (see its docstring); ``step_post_backward`` is written out here so the reset
    cannot fire twice should a later gsplat fix its condition.
    """

    max_gaussians: int | None = None

    def step_post_backward(self, params, optimizers, state: dict[str, Any], step: int, info: dict[str, Any],
                           packed: bool = False) -> dict[str, int]:
        """Accumulate gradient statistics; grow, prune and reset on schedule.

        Returns counts of what happened this step: {"duplicated", "split", "pruned", "reset"}.
        """
        report = {"duplicated": 0, "split": 0, "pruned": 0, "reset": 0}
        if step >= self.refine_stop_iter:
            return report

        self._update_state(params, state, info, packed=packed)

        if self.is_refine_step(step):
            report["duplicated"], report["split"] = self._grow_gs(params, optimizers, state, step)
            report["pruned"] = self._prune_gs(params, optimizers, state, step)
            state["grad2d"].zero_()
            state["count"].zero_()
            if self.refine_scale2d_stop_iter > 0:
                state["radii"].zero_()

        if self.is_reset_step(step):
            reset_opa(params=params, optimizers=optimizers, state=state, value=self.prune_opa * RESET_OPACITY_FACTOR)
            report["reset"] = 1
        return report

    def is_refine_step(self, step: int) -> bool:
        return (
            step > self.refine_start_iter
            and step % self.refine_every == 0
            and step % self.reset_every >= self.pause_refine_after_reset
        )

    def is_reset_step(self, step: int) -> bool:
        return step > 0 and step % self.reset_every == 0 and step < self.refine_stop_iter

    @torch.no_grad()
    def _grow_gs(self, params, optimizers, state: dict[str, Any], step: int) -> tuple[int, int]:
        """Duplicate small and split large Gaussians whose mean view-space gradient is high.

        Same rule as DefaultStrategy._grow_gs; with a cap, the candidates are ranked by gradient
        and only as many grow as the cap allows (each duplicate or split adds one Gaussian).
        """
        count = state["count"]
        grads = state["grad2d"] / count.clamp_min(1)
        n_now = len(params["means"])

        is_grad_high = grads > self.grow_grad2d
        if self.max_gaussians is not None:
            budget = max(0, self.max_gaussians - n_now)
            n_candidates = int(is_grad_high.sum().item())
            if n_candidates > budget:
                ranked = torch.where(is_grad_high, grads, torch.full_like(grads, -math.inf))
                chosen = torch.topk(ranked, budget).indices
                is_grad_high = torch.zeros_like(is_grad_high)
                is_grad_high[chosen] = True

        is_small = torch.exp(params["scales"]).max(dim=-1).values <= self.grow_scale3d * state["scene_scale"]
        is_dupli = is_grad_high & is_small
        is_split = is_grad_high & ~is_small
        if step < self.refine_scale2d_stop_iter:
            is_split |= state["radii"] > self.grow_scale2d
            if self.max_gaussians is not None:
                # Screen-size splits count against the cap too: keep only as many as still fit.
                room = max(0, self.max_gaussians - n_now - int(is_dupli.sum().item()))
                extra = torch.where(is_split)[0]
                if len(extra) > room:
                    is_split[extra[room:]] = False
        n_dupli = int(is_dupli.sum().item())
        n_split = int(is_split.sum().item())

        if n_dupli > 0:
            duplicate(params=params, optimizers=optimizers, state=state, mask=is_dupli)
        # Duplicates are appended at the end; they are not split in the same step.
        is_split = torch.cat([is_split, torch.zeros(n_dupli, dtype=torch.bool, device=is_split.device)])
        if n_split > 0:
            split(params=params, optimizers=optimizers, state=state, mask=is_split, revised_opacity=self.revised_opacity)
        return n_dupli, n_split


def make_strategy(name: str, iters: int, *, max_gaussians: int | None, **options):
    """The densification strategy for a run of ``iters`` steps: "default" or "mcmc".

    ``options`` override the strategy's fields (grow_grad2d, prune_opa, refine_every, ...).
    """
    if name == "default":
        fields = {**refine_schedule(iters).__dict__, **options}
        return CappedDefaultStrategy(max_gaussians=max_gaussians, **fields)
    if name == "mcmc":
        fields = {**mcmc_schedule(iters), **options}
        if "growth" not in options:  # from the window actually used, job overrides included
            fields["growth"] = mcmc_growth(fields["refine_start_iter"], fields["refine_stop_iter"], fields["refine_every"])
        if max_gaussians is not None:
            fields["cap_max"] = max_gaussians
        return TorchMCMCStrategy(**fields)
    raise ValueError(f"unknown densification strategy {name!r}; expected 'default' or 'mcmc'")


# ------------------------------------------------------------------------------------------ MCMC
#
# 3DGS as Markov Chain Monte Carlo (Kheradmand et al. 2024), as gsplat's MCMCStrategy does it, with
# its two CUDA pieces written in torch so it runs on every device: the relocation rule
# (``gsplat.relocation.compute_relocation``) and the covariance used to shape the position noise.

# Most copies one Gaussian may be split into in one relocation (gsplat's binomial table size).
MCMC_MAX_COPIES = 51
# Shape of the noise gate: Gaussians more opaque than about 1 - MCMC_NOISE_GATE_CENTRE barely move.
MCMC_NOISE_GATE_SHARPNESS = 100.0
MCMC_NOISE_GATE_CENTRE = 0.995
# gsplat's MCMC defaults for a 30k run: refine from 500 to 25k every 100 steps, grow 5% each time.
MCMC_REFERENCE_REFINE_STOP = 25_000
MCMC_GROWTH = 1.05


def relocation_opacity_and_scale(opacities: torch.Tensor, scales: torch.Tensor, copies: torch.Tensor):
    """Opacity (N,) and scales (N, 3) of each of ``copies`` (N,) Gaussians that replace one Gaussian.

    Eq. 9 of the MCMC paper: ``o' = 1 - (1 - o)^(1/n)`` keeps the opacity at the centre, and the
    scale shrinks by ``o / sum_{i=1..n} sum_{k=0..i-1} C(i-1, k) (-1)^k o'^(k+1) / sqrt(k+1)``.
    The double sum collapses (hockey-stick identity) to ``sum_{k=0..n-1} C(n, k+1) (-1)^k
    o'^(k+1) / sqrt(k+1)``, evaluated in float64 because the alternating terms cancel.
    """
    n = copies.clamp(1, MCMC_MAX_COPIES).to(torch.float64)
    o = opacities.to(torch.float64)
    new_o = 1.0 - torch.pow(1.0 - o, 1.0 / n)
    k = torch.arange(MCMC_MAX_COPIES, dtype=torch.float64, device=o.device)  # (K,)
    log_binom = torch.lgamma(n[:, None] + 1) - torch.lgamma(k + 2) - torch.lgamma(n[:, None] - k)
    valid = k[None, :] < n[:, None]
    binom = torch.where(valid, torch.exp(torch.where(valid, log_binom, torch.zeros_like(log_binom))), 0.0)
    sign = torch.where(k % 2 == 0, 1.0, -1.0)
    terms = binom * sign * torch.pow(new_o[:, None], k + 1) / torch.sqrt(k + 1)
    denominator = terms.sum(dim=1)
    new_scales = scales.to(torch.float64) * (o / denominator)[:, None]
    return new_o.to(opacities.dtype), new_scales.to(scales.dtype)


def covariances(quats: torch.Tensor, scales: torch.Tensor) -> torch.Tensor:
    """(N, 3, 3) R diag(s²) Rᵀ from quaternions (N, 4) wxyz (normalised here) and scales (N, 3)."""
    w, x, y, z = torch.nn.functional.normalize(quats, dim=-1).unbind(-1)
    rotation = torch.stack([
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ], dim=-1).reshape(-1, 3, 3)
    m = rotation * scales[:, None, :]
    return m @ m.transpose(1, 2)


def _teleport(params, optimizers, sources: torch.Tensor, targets: torch.Tensor | None, min_opacity: float) -> None:
    """Split each Gaussian in ``sources`` (indices, repeats allowed) into its share of copies.

    targets: the indices that receive the copies (dead Gaussians), or None to append them.
    """
    from gsplat.strategy.ops import _update_param_with_optimizer  # gsplat's param + Adam state surgery

    opacities = torch.sigmoid(params["opacities"])
    copies = torch.bincount(sources)[sources] + 1  # the source itself plus every copy drawn from it
    new_o, new_s = relocation_opacity_and_scale(opacities[sources], torch.exp(params["scales"])[sources], copies)
    new_o = new_o.clamp(min=min_opacity, max=1.0 - torch.finfo(torch.float32).eps)

    def param_fn(name: str, p: torch.Tensor) -> torch.Tensor:
        requires_grad = p.requires_grad
        p = p.detach().clone()
        if name == "opacities":
            p[sources] = torch.logit(new_o)
        elif name == "scales":
            p[sources] = torch.log(new_s)
        if targets is None:
            p = torch.cat([p, p[sources]])
        else:
            p[targets] = p[sources]
        return torch.nn.Parameter(p, requires_grad=requires_grad)

    def optimizer_fn(key: str, v: torch.Tensor) -> torch.Tensor:
        v = v.clone()
        v[sources] = 0  # fresh Adam moments for the changed Gaussians
        if targets is None:
            return torch.cat([v, torch.zeros((len(sources), *v.shape[1:]), device=v.device, dtype=v.dtype)])
        v[targets] = 0
        return v

    _update_param_with_optimizer(param_fn, optimizer_fn, params, optimizers)


@dataclass
class TorchMCMCStrategy(Strategy):
    """gsplat's MCMCStrategy on any device: relocate dead Gaussians, grow ``growth`` per refinement up to
    ``cap_max``, and shake positions with covariance-shaped noise scaled by the means' learning rate.

    Use with the MCMC regularisers in the loss (opacity and scale L1, see the training config).
    """

    cap_max: int = 1_000_000
    noise_lr: float = 5e5
    refine_start_iter: int = 500
    refine_stop_iter: int = MCMC_REFERENCE_REFINE_STOP
    refine_every: int = 100
    min_opacity: float = 0.005
    growth: float = MCMC_GROWTH

    def initialize_state(self, scene_scale: float = 1.0) -> dict[str, Any]:
        return {"scene_scale": scene_scale}  # no per-Gaussian tensors to keep in step

    def check_sanity(self, params, optimizers) -> None:
        super().check_sanity(params, optimizers)  # one Adam with one group per parameter
        for key in ("means", "scales", "quats", "opacities"):
            assert key in params, f"{key} is required in params but missing."

    def step_pre_backward(self, params, optimizers, state, step: int, info) -> None:
        """Nothing: MCMC does not read view-space gradients."""

    @torch.no_grad()
    def step_post_backward(self, params, optimizers, state, step: int, info, lr: float) -> dict[str, int]:
        report = {"relocated": 0, "added": 0}
        if self.refine_start_iter < step < self.refine_stop_iter and step % self.refine_every == 0:
            report["relocated"] = self._relocate(params, optimizers)
            report["added"] = self._add(params, optimizers)
        self._inject_noise(params, lr)
        return report

    def _relocate(self, params, optimizers) -> int:
        opacities = torch.sigmoid(params["opacities"].flatten())
        dead = opacities <= self.min_opacity
        n_dead = int(dead.sum().item())
        if n_dead == 0 or n_dead == len(opacities):
            return 0
        alive = torch.where(~dead)[0]
        sources = alive[torch.multinomial(opacities[alive], n_dead, replacement=True)]
        _teleport(params, optimizers, sources, torch.where(dead)[0], self.min_opacity)
        return n_dead

    def _add(self, params, optimizers) -> int:
        count = len(params["means"])
        n_new = max(0, min(self.cap_max, int(self.growth * count)) - count)
        if n_new == 0:
            return 0
        opacities = torch.sigmoid(params["opacities"].flatten())
        sources = torch.multinomial(opacities, n_new, replacement=True)
        _teleport(params, optimizers, sources, None, self.min_opacity)
        return n_new

    def _inject_noise(self, params, lr: float) -> None:
        opacities = torch.sigmoid(params["opacities"].flatten())
        gate = torch.sigmoid(MCMC_NOISE_GATE_SHARPNESS * ((1.0 - opacities) - MCMC_NOISE_GATE_CENTRE))
        noise = torch.randn_like(params["means"]) * gate[:, None] * (lr * self.noise_lr)
        covariance = covariances(params["quats"], torch.exp(params["scales"]))
        params["means"].add_(torch.einsum("nij,nj->ni", covariance, noise))


def refinement_count(start: int, stop: int, every: int) -> int:
    """How many refinements run in the window: steps strictly between start and stop that ``every`` divides."""
    if stop - 1 <= start:
        return 0
    return (stop - 1) // every - start // every


def mcmc_growth(start: int, stop: int, every: int) -> float:
    """Growth per refinement that follows gsplat's 30k curve (5% at each of its 244 refinements) over
    the same fraction of a window with fewer refinements, so a short run reaches ``cap_max`` at the same
    relative point of its window as a 30k run does (2,000 steps: 14 refinements of 2.34x).

    At 5% a 2,000-step run only doubled its initial points: on the yard capture (2,000 steps, 2
    threads) 20k Gaussians and 30.31 dB; with this growth, 34.89 dB at a cap of 200k and 33.95 dB at
    100k (scripts/bench_train.py --set strategy=mcmc).
    """
    reference = refinement_count(REFERENCE_REFINE_START, MCMC_REFERENCE_REFINE_STOP, REFERENCE_REFINE_EVERY)
    refinements = refinement_count(start, stop, every)
    if refinements <= 0 or refinements >= reference:
        return MCMC_GROWTH
    return MCMC_GROWTH ** (reference / refinements)


def mcmc_schedule(iters: int) -> dict[str, int]:
    """MCMC's refinement window for a run of ``iters`` steps: gsplat's 500 to 25k every 100 of 30k,
    and for short runs the same 100-step cadence (as :func:`refine_schedule`, for the same reason)
    from 10% of the run to 5/6 of it. Each refinement grows the count up to ``cap_max``, by
    :func:`mcmc_growth` (5% for 30k steps and more)."""
    schedule = refine_schedule(iters)
    stop_fraction = MCMC_REFERENCE_REFINE_STOP / REFERENCE_ITERS
    return {
        "refine_start_iter": schedule.refine_start_iter,
        "refine_stop_iter": max(schedule.refine_start_iter + 1,
                                min(MCMC_REFERENCE_REFINE_STOP, round(iters * stop_fraction))),
        "refine_every": schedule.refine_every,
    }

"""A time budget for Gaussian training: the steps, Gaussian cap and resolution that fit it on this machine.

An artist thinks in minutes, not steps. ``time_budget`` (seconds, or "90s" / "5m" / "1h30m") makes
the job measure what a step costs here before it starts, then choose:

1. the Gaussian cap and the step count: as many steps as fit (up to :data:`MAX_BUDGET_STEPS`),
   with the largest cap of :func:`cap_candidates` that still leaves :data:`GOOD_STEPS` steps;
2. the resolution: when even the smallest cap leaves fewer than :data:`MIN_FULL_RESOLUTION_STEPS`
   steps at full resolution, the images are halved (up to twice) and the step re-measured.

The cost model is measured, not assumed: a step (render, loss, backward, Adam) is timed at the
initial count N0 and at 2·N0 (every Gaussian duplicated in place, which doubles the overlaps as
densification does), giving ``t(N) = a + b·N``. A run's count grows from N0 towards the cap while
it refines (10%–75% of the steps) and stays there, so its mean step costs
``t(0.1·N0 + 0.325·(N0 + C) + 0.25·C)`` at worst (the cap reached). What the job does after
training (test evaluation, turntable, files) is reserved from the budget, measured the same way.

The plan is a guess from the first steps; the loop also stops at the budget's deadline (the result
then says at which step), so a run never overruns by more than one step and the writing after it.
The plan is saved in the checkpoint: a resumed run keeps it rather than measuring again.
"""

from __future__ import annotations

import math
import re
import time
from dataclasses import asdict, dataclass

import torch

from ..errors import InputError, quoted

# Most steps a budget run takes: past 30k the 3DGS schedule is done and more steps barely help.
MAX_BUDGET_STEPS = 30_000
# A plan tries the largest cap that leaves at least this many steps (3DGS's 7k "preview" quality).
GOOD_STEPS = 7_000
# Below this many steps at the smallest cap, the images are halved (coarser but converged).
MIN_FULL_RESOLUTION_STEPS = 1_500
MAX_BUDGET_HALVINGS = 2
# Images are never halved below this many pixels on their short side.
MIN_BUDGET_IMAGE_SIZE = 64
# Fewer steps than this cannot train anything worth a result: the budget is refused.
MIN_BUDGET_STEPS = 100
# Caps a plan chooses from, largest first; never below twice the initial count.
CAP_CANDIDATES = (1_000_000, 500_000, 300_000, 200_000, 150_000, 100_000, 70_000, 50_000, 30_000, 20_000)
# Share of the training time the plan leaves unused, for what the model misses (progress renders,
# previews, a busy machine); the deadline stops the loop in any case.
PLAN_MARGIN = 0.9
# Steps timed per calibration point, after the warm-up steps.
CALIBRATION_STEPS = 8
CALIBRATION_WARMUP = 2
# Renders after training take longer than the calibration's (SSIM, LPIPS, PNG writing): reserve this many times theirs.
RENDER_SAFETY = 2.0
# Seconds the result writing takes beyond its renders (PLY, metrics, GIF/MP4 encoding).
WRITING_SECONDS = 3.0
# The longest budget: a week.
MAX_TIME_BUDGET = 7 * 24 * 3600.0

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)\s*(h|min|m|sec|s)?", re.IGNORECASE)
_UNIT_SECONDS = {None: 1.0, "s": 1.0, "sec": 1.0, "m": 60.0, "min": 60.0, "h": 3600.0}


def parse_duration(value, field: str = "time_budget") -> float:
    """Seconds of ``value``: a number (seconds) or a text such as "90s", "5m", "1h30m", "2.5min"."""
    if isinstance(value, bool):
        raise InputError(f"expected a duration such as 90s or 5m, got {quoted(value)}", field=field)
    if isinstance(value, (int, float)):
        seconds = float(value)
    elif isinstance(value, str) and value.strip():
        text = value.strip().replace(" ", "")
        parts = list(_DURATION_PART.finditer(text))
        if not parts or "".join(p.group(0) for p in parts) != text:
            raise InputError(f"expected a duration such as 90s, 5m or 1h30m, got {quoted(value)}", field=field)
        seconds = sum(float(p.group(1)) * _UNIT_SECONDS[(p.group(2) or "").lower() or None] for p in parts)
    else:
        raise InputError(f"expected a duration such as 90s or 5m, got {quoted(value)}", field=field)
    if not math.isfinite(seconds) or seconds <= 0 or seconds > MAX_TIME_BUDGET:
        raise InputError(f"expected a duration between 1 s and 7 days, got {quoted(value)}", field=field)
    return seconds


@dataclass
class StepCost:
    """Measured seconds of a training step, ``fixed + per_gaussian · N``, and of a render alone."""

    fixed: float
    per_gaussian: float
    render_fixed: float
    render_per_gaussian: float
    n_initial: int

    def step_seconds(self, n: float) -> float:
        return self.fixed + self.per_gaussian * n

    def render_seconds(self, n: float) -> float:
        return self.render_fixed + self.render_per_gaussian * n


@dataclass
class BudgetPlan:
    """What a time budget chose, and why (saved in result.json and the checkpoint)."""

    time_budget: float
    steps: int
    max_gaussians: int
    downscale: float
    predicted_train_seconds: float
    reserved_seconds: float
    spent_seconds: float  # loading, compiling and measuring before the plan
    deadline_seconds: float  # training must end this many seconds after the job started
    step_ms_initial: float
    step_ms_at_cap: float
    n_initial: int
    image_size: tuple[int, int]

    def describe(self) -> str:
        resolution = "full resolution" if self.downscale == 1.0 else f"images downscaled {self.downscale:g}x"
        return (f"time budget {self.time_budget:g} s: {self.steps} steps, at most {self.max_gaussians:,} Gaussians, "
                f"{resolution} ({self.image_size[0]}x{self.image_size[1]}); a step measured {self.step_ms_initial:.0f} ms "
                f"at {self.n_initial:,} Gaussians, about {self.step_ms_at_cap:.0f} ms at the cap; training about "
                f"{self.predicted_train_seconds:.0f} s, {self.reserved_seconds:.0f} s kept for evaluation and files")

    def as_dict(self) -> dict:
        data = asdict(self)
        data["image_size"] = list(self.image_size)
        return data


def mean_count(n_initial: int, cap: int) -> float:
    """The mean Gaussian count of a run that grows from ``n_initial`` to ``cap`` while it refines."""
    return 0.1 * n_initial + 0.65 * 0.5 * (n_initial + cap) + 0.25 * cap


def cap_candidates(n_initial: int, largest: int) -> list[int]:
    floor = max(2 * n_initial, CAP_CANDIDATES[-1])
    caps = sorted({min(largest, c) for c in CAP_CANDIDATES if c >= floor} | {min(largest, floor)}, reverse=True)
    return caps


def choose_steps_and_cap(cost: StepCost, train_seconds: float, largest_cap: int) -> tuple[int, int]:
    """(steps, cap): the largest cap that leaves GOOD_STEPS steps, else the smallest cap and what fits."""
    caps = cap_candidates(cost.n_initial, largest_cap)
    choice = None
    for cap in caps:
        steps = int(train_seconds / cost.step_seconds(mean_count(cost.n_initial, cap)))
        choice = (min(steps, MAX_BUDGET_STEPS), cap)
        if steps >= GOOD_STEPS:
            break
    return choice


def measure_step_cost(make_params, step_fn, render_fn) -> StepCost:
    """Time training steps at N0 and 2·N0 Gaussians. make_params(copies) -> a ParameterDict with
    every Gaussian ``copies`` times; step_fn(params, optimizers) one step; render_fn(params) one render."""
    timings = {}
    for copies in (1, 2):
        params, optimizers = make_params(copies)
        for _ in range(CALIBRATION_WARMUP):
            step_fn(params, optimizers)
        started = time.perf_counter()
        for _ in range(CALIBRATION_STEPS):
            step_fn(params, optimizers)
        step = (time.perf_counter() - started) / CALIBRATION_STEPS
        with torch.no_grad():
            started = time.perf_counter()
            for _ in range(2):
                render_fn(params)
            render = (time.perf_counter() - started) / 2
        timings[copies] = (len(params["means"]), step, render)
    (n1, step1, render1), (n2, step2, render2) = timings[1], timings[2]
    per_gaussian = max(0.0, (step2 - step1) / max(n2 - n1, 1))
    render_per_gaussian = max(0.0, (render2 - render1) / max(n2 - n1, 1))
    return StepCost(fixed=max(step1 - per_gaussian * n1, 0.2 * step1), per_gaussian=per_gaussian,
                    render_fixed=max(render1 - render_per_gaussian * n1, 0.2 * render1),
                    render_per_gaussian=render_per_gaussian, n_initial=n1)


def plan_from_cost(cost: StepCost, budget: float, spent: float, largest_cap: int, downscale: float,
                   image_size: tuple[int, int], renders_after: int) -> BudgetPlan:
    """The plan for ``budget`` seconds of which ``spent`` are gone, with ``renders_after`` renders
    (test views and turntable frames) to do after training."""
    cap = largest_cap
    for _ in range(2):  # the reserve depends on the cap, the cap on the time the reserve leaves
        reserved = WRITING_SECONDS + RENDER_SAFETY * renders_after * cost.render_seconds(cap)
        train_seconds = max(0.0, (budget - spent - reserved) * PLAN_MARGIN)
        steps, cap = choose_steps_and_cap(cost, train_seconds, largest_cap)
    predicted = steps * cost.step_seconds(mean_count(cost.n_initial, cap))
    return BudgetPlan(time_budget=budget, steps=steps, max_gaussians=cap, downscale=downscale,
                      predicted_train_seconds=round(predicted, 1), reserved_seconds=round(reserved, 1),
                      spent_seconds=round(spent, 1), deadline_seconds=round(budget - reserved, 1),
                      step_ms_initial=round(1000.0 * cost.step_seconds(cost.n_initial), 2),
                      step_ms_at_cap=round(1000.0 * cost.step_seconds(cap), 2), n_initial=cost.n_initial,
                      image_size=tuple(image_size))


def check_plan(plan: BudgetPlan) -> None:
    """InputError when the budget leaves fewer than MIN_BUDGET_STEPS steps, saying what would do."""
    if plan.steps < MIN_BUDGET_STEPS:
        needed = (plan.spent_seconds + plan.reserved_seconds
                  + MIN_BUDGET_STEPS * plan.step_ms_initial / 1000.0 / PLAN_MARGIN)
        raise InputError(
            f"a time budget of {plan.time_budget:g} s leaves {plan.steps} training steps on this machine (a step takes "
            f"about {plan.step_ms_initial:.0f} ms at {plan.n_initial:,} Gaussians; {plan.spent_seconds:.0f} s went to "
            f"loading and measuring, {plan.reserved_seconds:.0f} s are kept for evaluation and files); give at least "
            f"{math.ceil(needed)} s", field="time_budget")

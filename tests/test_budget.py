"""A time budget for Gaussian training: durations, the plan from a measured step cost, and a real run."""

from __future__ import annotations

import json
import time

import pytest

from radiantforge.errors import InputError
from radiantforge.gaussians import budget
from radiantforge.gaussians.config import GaussianTrainConfig


@pytest.mark.parametrize("text, seconds", [("90s", 90), ("5m", 300), ("1h30m", 5400), ("2.5min", 150), (45, 45),
                                           ("120", 120), (" 3m 10s ", 190)])
def test_durations_read_as_an_artist_writes_them(text, seconds):
    assert budget.parse_duration(text) == seconds
    assert GaussianTrainConfig(time_budget=text).time_budget == seconds


@pytest.mark.parametrize("bad", ["soon", "5x", "", "-3s", 0, True, "9999h", "m5"])
def test_bad_durations_name_the_field(bad):
    with pytest.raises(InputError, match="duration") as raised:
        GaussianTrainConfig(time_budget=bad)
    assert raised.value.field == "time_budget"


def cost(fixed_ms: float, per_10k_ms: float, n_initial: int = 10_000) -> budget.StepCost:
    return budget.StepCost(fixed=fixed_ms / 1000, per_gaussian=per_10k_ms / 1000 / 10_000, render_fixed=fixed_ms / 3000,
                           render_per_gaussian=per_10k_ms / 3000 / 10_000, n_initial=n_initial)


def test_the_plan_fits_its_budget_and_grows_with_it():
    step_cost = cost(fixed_ms=10, per_10k_ms=4)
    plans = [budget.plan_from_cost(step_cost, seconds, spent=2.0, largest_cap=500_000, downscale=1.0,
                                   image_size=(160, 90), renders_after=30) for seconds in (30, 90, 300, 1200)]
    for plan in plans:
        predicted_mean_step = step_cost.step_seconds(budget.mean_count(step_cost.n_initial, plan.max_gaussians))
        # What the model predicts, plus what was spent and reserved, stays inside the budget.
        assert plan.spent_seconds + plan.steps * predicted_mean_step + plan.reserved_seconds <= plan.time_budget
        assert plan.deadline_seconds == pytest.approx(plan.time_budget - plan.reserved_seconds, abs=0.1)
        assert plan.max_gaussians >= 2 * step_cost.n_initial
    steps = [p.steps for p in plans]
    caps = [p.max_gaussians for p in plans]
    assert steps == sorted(steps) and caps == sorted(caps)
    assert plans[-1].steps >= budget.GOOD_STEPS and plans[-1].max_gaussians > plans[0].max_gaussians
    # A tight budget trades the cap for steps: it keeps the smallest cap rather than running 300 steps.
    assert plans[0].max_gaussians == budget.cap_candidates(step_cost.n_initial, 500_000)[-1]
    assert plans[0].steps > 1000


def test_the_cap_never_exceeds_the_one_asked_for_and_a_hopeless_budget_is_refused():
    plan = budget.plan_from_cost(cost(5, 1), 3600, spent=1.0, largest_cap=40_000, downscale=1.0,
                                 image_size=(64, 64), renders_after=10)
    assert plan.max_gaussians <= 40_000 and plan.steps == budget.MAX_BUDGET_STEPS
    hopeless = budget.plan_from_cost(cost(400, 50), 20, spent=5.0, largest_cap=500_000, downscale=1.0,
                                     image_size=(800, 800), renders_after=50)
    with pytest.raises(InputError, match=r"leaves \d+ training steps.*give at least \d+ s") as raised:
        budget.check_plan(hopeless)
    assert raised.value.field == "time_budget"


def test_a_budget_run_measures_plans_and_finishes_within_its_budget(tiny_blender_dataset, tmp_path):
    from radiantforge.events import EventLog
    from radiantforge.gaussians.train import train_gaussians

    seconds = 20.0
    started = time.perf_counter()
    result = train_gaussians(tiny_blender_dataset, tmp_path / "out", time_budget=f"{seconds:g}s", turntable_frames=0,
                             test_renders=False, checkpoint_every=0, events=EventLog(tmp_path / "events.jsonl"))
    took = time.perf_counter() - started
    assert took <= seconds * 1.1  # the whole job, writing included (the deadline guards the plan)
    saved = json.loads((tmp_path / "out" / "result.json").read_text())
    plan = saved["time_budget"]
    assert plan["time_budget"] == seconds and saved["steps"] == result.metrics["steps"] > budget.MIN_BUDGET_STEPS
    assert saved["config"]["steps"] == plan["steps"] and saved["config"]["max_gaussians"] == plan["max_gaussians"]
    assert result.n_gaussians <= plan["max_gaussians"]
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    described = [e for e in events if e.get("budget")]
    assert described and "time budget 20 s:" in described[0]["message"]

"""The loop every job runs (radiantforge.runs) and the result-folder rules (radiantforge.result_folders),
on a small problem with a known answer: gradient descent on (x - 3)^2 from x = 0."""

from __future__ import annotations

import json
from dataclasses import dataclass, field

import numpy as np
import pytest

from radiantforge.errors import STOP_SUSPENDED, InputError, JobCancelled
from radiantforge.events import EventLog, read_events
from radiantforge.result_folders import PREVIEW_FILE, RESULT_FILE, partial_result, write_json
from radiantforge.runs import RunPlan, run_steps

LEARNING_RATE = 0.1


@dataclass
class Descent:
    x: float = 0.0
    step: int = 0
    elapsed: float = 0.0
    saved_at: list[int] = field(default_factory=list)


def descend(state: Descent) -> float:
    loss = (state.x - 3.0) ** 2
    state.x -= LEARNING_RATE * 2 * (state.x - 3.0)
    state.step += 1
    return loss


def make_plan(tmp_path, state: Descent, total: int, **options) -> RunPlan:
    def save(path):
        state.saved_at.append(state.step)
        path.write_text(json.dumps({"x": state.x, "step": state.step}))

    settings = dict(label="descent", total=total, checkpoint_path=tmp_path / "checkpoint.json", save_checkpoint=save,
                    checkpoint_every=4, progress_every=3, preview_every=5, preview_dir=tmp_path / "result",
                    events=EventLog(tmp_path / "events.jsonl"))
    settings.update(options)
    return RunPlan(**settings)


def run(plan: RunPlan, state: Descent) -> None:
    run_steps(plan, state, lambda: descend(state), loss_of=float,
              progress_fields=lambda done, loss, clock: {"loss": loss, "x": state.x},
              preview_image=lambda done: np.full((2, 2, 3), min(state.x / 3.0, 1.0), np.float32))


def test_loop_reaches_the_known_answer_with_its_events_and_checkpoints(tmp_path):
    state = Descent()
    run(make_plan(tmp_path, state, total=10), state)
    assert state.step == 10 and state.x == pytest.approx(3.0 * (1 - 0.8**10))
    assert state.saved_at == [4, 8, 10]  # the cadence (not at the last step) and the final one
    events = read_events(tmp_path / "events.jsonl")
    progress = [e for e in events if e["type"] == "progress"]
    assert [e["step"] for e in progress] == [3, 6, 9, 10] and all(e["total"] == 10 for e in progress)
    assert progress[-1]["x"] == pytest.approx(state.x) and progress[-1]["eta"] == 0.0
    assert [e["step"] for e in events if e["type"] == "preview"] == [5, 10]
    assert (tmp_path / "result" / PREVIEW_FILE).is_file()


def test_a_stop_request_checkpoints_and_a_new_session_continues_to_the_same_answer(tmp_path):
    state = Descent()
    stop_at = {6}
    plan = make_plan(tmp_path, state, total=10, should_stop=lambda: STOP_SUSPENDED if state.step in stop_at else None)
    with pytest.raises(JobCancelled) as stopped:
        run(plan, state)
    assert stopped.value.reason == STOP_SUSPENDED and "descent stopped at step 6 of 10" in str(stopped.value)
    saved = json.loads((tmp_path / "checkpoint.json").read_text())
    assert saved["step"] == 6
    suspended = [e for e in read_events(tmp_path / "events.jsonl") if e["type"] == STOP_SUSPENDED]
    assert suspended == [{**suspended[0], "step": 6, "total": 10, "checkpoint": str(tmp_path / "checkpoint.json")}]

    resumed = Descent(x=saved["x"], step=saved["step"])
    stop_at.clear()
    run(make_plan(tmp_path, resumed, total=10), resumed)
    assert resumed.x == pytest.approx(3.0 * (1 - 0.8**10))


def test_a_loss_that_is_not_finite_ends_the_run_with_a_warning(tmp_path):
    state = Descent()
    plan = make_plan(tmp_path, state, total=10)
    with pytest.raises(FloatingPointError, match="the descent loss became nan at step 2"):
        run_steps(plan, state, lambda: descend(state) if state.step != 2 else (descend(state), float("nan"))[1],
                  loss_of=float, progress_fields=lambda done, loss, clock: {})
    warnings = [e for e in read_events(tmp_path / "events.jsonl") if e["type"] == "warning"]
    assert len(warnings) == 1 and "step 2" in warnings[0]["message"]


def test_a_partial_result_moves_into_place_keeping_the_live_preview_and_the_users_files(tmp_path):
    out_dir = tmp_path / "result"
    out_dir.mkdir()
    (out_dir / PREVIEW_FILE).write_bytes(b"live preview")
    with partial_result(out_dir, replace_finished=False) as partial:
        write_json(partial / RESULT_FILE, {"psnr": float("nan"), "steps": 3})
    assert (out_dir / PREVIEW_FILE).read_bytes() == b"live preview"  # the result had none of its own
    assert json.loads((out_dir / RESULT_FILE).read_text()) == {"psnr": None, "steps": 3}

    with partial_result(out_dir, replace_finished=True) as partial:  # a result with its own preview replaces both
        (partial / PREVIEW_FILE).write_bytes(b"final preview")
        write_json(partial / RESULT_FILE, {"steps": 4})
    assert (out_dir / PREVIEW_FILE).read_bytes() == b"final preview"

    other = tmp_path / "other"
    with pytest.raises(InputError, match="was filled while this result was computed"):
        with partial_result(other, replace_finished=True) as partial:
            write_json(partial / RESULT_FILE, {"steps": 5})
            other.mkdir()
            (other / "notes.txt").write_text("the user's")  # appears while the job runs
    assert (other / "notes.txt").read_text() == "the user's"
    kept = [p for p in tmp_path.iterdir() if p.name.startswith("other.new-")]
    assert len(kept) == 1 and json.loads((kept[0] / RESULT_FILE).read_text()) == {"steps": 5}
    assert not [p for p in tmp_path.iterdir() if ".partial-" in p.name]

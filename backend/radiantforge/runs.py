"""The optimisation loop every job runs (Gaussians, texture, text-to-3D), written once.

A job supplies its state (anything with ``step`` and ``elapsed``), a step function and what its
progress events and previews hold; :func:`run_steps` owns the rest, the same way for every job:

- a stop request (``should_stop()`` turning true, "cancelled" or "suspended") checkpoints the
  state, emits a "cancelled" / "suspended" event and raises :class:`~radiantforge.errors.JobCancelled`;
- a loss that is not finite ends the run with a warning event and ``FloatingPointError``;
- a checkpoint every ``checkpoint_every`` steps (0: only on a stop and at the end), and one at the end;
- a "progress" event every ``progress_every`` steps and at the last step, with ``total``, ``elapsed``
  and ``eta``; ``elapsed`` counts training time over all sessions of the run, without the time the
  job spends on diagnostics (it runs those under :meth:`RunClock.excluded`);
- a "preview" event every ``preview_every`` steps and at the last step, the image written through
  :func:`~radiantforge.result_folders.write_preview` into ``preview_dir``;
- a ``deadline`` (a time budget's): the first step that ends after it is the last, with an info event.

The result folder is the job's, written through :func:`~radiantforge.result_folders.partial_result`.
"""

from __future__ import annotations

import contextlib
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol

from .errors import JobCancelled, stop_reason
from .events import EventLog
from .result_folders import write_preview


class RunState(Protocol):
    step: int  # steps completed
    elapsed: float  # training seconds so far, over all sessions


@dataclass
class RunPlan:
    """What the loop needs to know of a run besides its state and its step function.

    label: the run in messages ("training", "texturing", "text-to-3D").
    total: the step count the run ends at. checkpoint_path: where its checkpoint goes.
    save_checkpoint: writes the job's state to a path. preview_dir: None for no previews.
    """

    label: str
    total: int
    checkpoint_path: Path
    save_checkpoint: Callable[[Path], None]
    checkpoint_every: int
    progress_every: int
    preview_every: int
    preview_dir: Path | None
    events: EventLog
    should_stop: Callable[[], bool | str | None] | None = None
    deadline: float | None = None  # time.perf_counter() after which no step starts (None: none)


class RunClock:
    """Training seconds of a run: what earlier sessions took plus this session's wall time, without
    the time spent inside :meth:`excluded` (evaluations are diagnostics, not training)."""

    def __init__(self, elapsed_before: float, start_step: int):
        self.elapsed_before = elapsed_before
        self.start_step = start_step
        self._started = time.perf_counter()
        self._excluded = 0.0

    def session_seconds(self) -> float:
        return time.perf_counter() - self._started - self._excluded

    def elapsed(self) -> float:
        return self.elapsed_before + self.session_seconds()

    def eta(self, done: int, total: int) -> float | None:
        """Seconds left at this session's rate; None before it has one."""
        rate = (done - self.start_step) / max(self.session_seconds(), 1e-9)
        return round((total - done) / rate, 1) if rate > 0 else None

    @contextlib.contextmanager
    def excluded(self) -> Iterator[None]:
        started = time.perf_counter()
        try:
            yield
        finally:
            self._excluded += time.perf_counter() - started


def default_checkpoint_dir(out_dir: str | Path) -> Path:
    """``<out_dir>.checkpoints`` beside the result folder: where a run without a job folder checkpoints."""
    out_dir = Path(out_dir)
    return out_dir.parent / f"{out_dir.name}.checkpoints"


def run_steps(
    plan: RunPlan,
    state: RunState,
    take_step: Callable[[], Any],
    loss_of: Callable[[Any], float],
    progress_fields: Callable[[int, Any, RunClock], dict[str, Any]],
    preview_image: Callable[[int], Any] | None = None,
    progress_also_at: Callable[[int], bool] | None = None,
) -> None:
    """Run ``take_step`` until ``state.step`` reaches ``plan.total``, then write the final checkpoint.

    take_step(): one optimisation step; it advances ``state.step`` and returns an outcome.
    loss_of(outcome): the step's loss (checked for being finite).
    progress_fields(done, outcome, clock): the job's fields of the progress event after step ``done``.
    preview_image(done): the live preview, (H, W, 3) in [0, 1].
    progress_also_at(done): extra steps that get a progress event (a periodic evaluation).
    """
    events = plan.events
    clock = RunClock(state.elapsed, state.step)
    while state.step < plan.total:
        step = state.step
        requested = plan.should_stop() if plan.should_stop is not None else None
        if requested:
            reason = stop_reason(requested)
            state.elapsed = clock.elapsed()
            plan.save_checkpoint(plan.checkpoint_path)
            events.emit(reason, step=step, total=plan.total, checkpoint=str(plan.checkpoint_path))
            raise JobCancelled(f"{plan.label} stopped at step {step} of {plan.total}; checkpoint {plan.checkpoint_path}",
                               reason=reason)

        outcome = take_step()
        loss = float(loss_of(outcome))
        if not math.isfinite(loss):
            events.emit("warning", message=f"the {plan.label} loss became {loss} at step {step}; the run stopped",
                        step=step)
            raise FloatingPointError(f"the {plan.label} loss became {loss} at step {step}")

        done = state.step
        state.elapsed = clock.elapsed()
        out_of_time = plan.deadline is not None and done < plan.total and time.perf_counter() >= plan.deadline
        if out_of_time:
            events.emit("info", message=f"the time budget ends {plan.label} at step {done} of {plan.total}",
                        step=done, total=plan.total, stopped_by="time_budget")
        if plan.checkpoint_every and done % plan.checkpoint_every == 0 and done < plan.total:
            plan.save_checkpoint(plan.checkpoint_path)
        last = done == plan.total or out_of_time
        if done % plan.progress_every == 0 or last or (progress_also_at is not None and progress_also_at(done)):
            fields = progress_fields(done, outcome, clock)
            events.emit("progress", **{"step": done, "total": plan.total, **fields,
                                       "elapsed": round(state.elapsed, 3), "eta": clock.eta(done, plan.total)})
        if plan.preview_dir is not None and preview_image is not None and (done % plan.preview_every == 0 or last):
            path = write_preview(plan.preview_dir, preview_image(done))
            events.emit("preview", step=done, path=str(path))
        if out_of_time:
            break
    plan.save_checkpoint(plan.checkpoint_path)

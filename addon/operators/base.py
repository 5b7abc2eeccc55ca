"""The base of every operator that runs a job: modal in the UI, blocking headless.

A job operator mixes in :class:`JobOperator` and implements ``make_runner(context)`` (usually one
call to a ``pipeline`` function). The runner is stepped from a timer (interactive Blender: one
view or one poll per tick, the UI stays responsive) or run to the end (``blender --background``,
or any call with EXEC_DEFAULT, e.g. from scripts). The session (``session``) holds it meanwhile.
"""

from __future__ import annotations

import bpy
from bpy.props import StringProperty

from .. import session
from ..io.job_folder import JobError
from ..io.nerf import CaptureError
from ..transport import JobRunner

# Seconds between modal timer ticks: short, since a tick that has nothing to do returns at once.
TIMER_INTERVAL_S = 0.05
# Areas that show the job's progress (the sidebar panel, the status bar, the preferences' check).
REDRAWN_AREAS = ("VIEW_3D", "STATUSBAR", "PREFERENCES")


def redraw_job_areas(context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in REDRAWN_AREAS:
                area.tag_redraw()


class NewJobFolder:
    """Mixin: the operator's optional Job Folder (a script names one; the UI makes a fresh one)."""

    job_dir: StringProperty(name="Job Folder", subtype="DIR_PATH", default="", options={"SKIP_SAVE"},
                            description="New job folder (empty: a fresh one in the jobs folder)")


class JobOperator:
    """Mixin for operators that run a job; subclasses implement ``make_runner(context)``."""

    bl_options = {"REGISTER"}

    def make_runner(self, context) -> JobRunner:  # pragma: no cover - overridden
        raise NotImplementedError

    def _start(self, context) -> JobRunner | None:
        if session.is_job_running():
            self.report({"ERROR"}, "a Radiant Forge job is already running; cancel it first")
            return None
        try:
            runner = self.make_runner(context)
        except (JobError, CaptureError, ValueError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return None
        session.begin_job(runner)
        context.window_manager.radiantforge_job.cancel_requested = False
        session.sync_status(context, runner)
        return runner

    def _finish(self, context, runner: JobRunner) -> set[str]:
        session.sync_status(context, runner)
        session.end_job(runner)
        for warning in runner.warnings:
            self.report({"WARNING"}, warning)
        if runner.state == "failed":
            self.report({"ERROR"}, runner.error)
            return {"CANCELLED"}
        if runner.state == "cancelled":
            self.report({"WARNING"}, runner.message or "cancelled")
            return {"CANCELLED"}
        self.report({"INFO"}, runner.message)
        return {"FINISHED"}

    def execute(self, context):
        """Blocking: used headless (blender --background) and by scripts calling the operator."""
        runner = self._start(context)
        if runner is None:
            return {"CANCELLED"}

        def echo(progress: JobRunner):
            session.sync_status(context, progress)
            if bpy.app.background:
                print(f"[radiant forge] {progress.phase}: {progress.message}", flush=True)

        runner.run_blocking(on_progress=echo)
        return self._finish(context, runner)

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        runner = self._start(context)
        if runner is None:
            return {"CANCELLED"}
        self._timer = context.window_manager.event_timer_add(TIMER_INTERVAL_S, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type != "TIMER":  # (other add-ons' timers tick here too: one extra step does no harm)
            return {"PASS_THROUGH"}
        runner = session.held_runner()
        if runner is None:  # the add-on was disabled or the job abandoned
            context.window_manager.event_timer_remove(self._timer)
            return {"CANCELLED"}
        if context.window_manager.radiantforge_job.cancel_requested:
            runner.cancel()
        running = runner.step()
        session.sync_status(context, runner)
        redraw_job_areas(context)
        if running:
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        return self._finish(context, runner)

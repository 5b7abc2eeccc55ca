"""Operators that run jobs: capture + train, export the job folder only, train on an existing dataset, cancel.

They stay thin: each builds a `pipeline.JobRunner` from the scene settings and either steps it
from a timer (interactive Blender: one view or one poll per tick, the UI stays responsive) or runs
it to the end (`blender --background`, or any call with EXEC_DEFAULT, e.g. from scripts).
"""

from __future__ import annotations

import json
from pathlib import Path

import bpy
from bpy.props import StringProperty

from .. import capture as capture_module
from .. import pipeline
from ..preferences import backend_settings

# Seconds between modal timer ticks: short, since a tick that has nothing to do returns at once.
TIMER_INTERVAL_S = 0.05

# The runner of the job in progress (at most one per Blender session).
_active_runner: pipeline.JobRunner | None = None
# The runner of the last job that ended (what Resume continues).
_last_runner: pipeline.JobRunner | None = None
# The preview file last loaded for the panel (reloading it on every tick would be wasteful).
_shown_preview: tuple | None = None  # (runner, preview_version) last loaded


def active_runner() -> pipeline.JobRunner | None:
    return _active_runner if _active_runner is not None and not _active_runner.done else None


def last_runner() -> pipeline.JobRunner | None:
    return _last_runner


def stop_active_job() -> None:
    """Abandon the job in progress (the add-on is being disabled): captures are cleaned up."""
    global _active_runner
    if _active_runner is not None:
        _active_runner.close()
        _active_runner = None


def capture_settings_from_scene(scene: bpy.types.Scene, objects=None) -> capture_module.CaptureSettings:
    props = scene.radiantforge
    return capture_module.CaptureSettings(
        engine=None if props.engine == "SCENE" else props.engine,
        resolution=(props.resolution, props.resolution),
        samples=props.samples or None,
        test_every=props.test_every,
        n_points=props.point_count,
        point_objects=objects,
    )


def capture_plan_from_context(context) -> pipeline.CapturePlan:
    """Cameras and objects from the scene settings and the selection."""
    scene = context.scene
    props = scene.radiantforge
    if props.camera_source == "COLLECTION":
        if props.camera_collection is None:
            raise pipeline.JobError("Capture > Cameras is 'Collection' but no camera collection is chosen")
        cameras = capture_module.collection_cameras(props.camera_collection.name)
        objects = None
    else:
        cameras = None
        selected = [obj for obj in (getattr(context, "selected_objects", None) or [])
                    if obj.type in capture_module.GEOMETRY_TYPES]
        objects = selected or None  # nothing selected: circle everything that renders
    return pipeline.CapturePlan(
        scene=scene, cameras=cameras, objects=objects, view_count=props.view_count,
        upper_hemisphere=props.upper_hemisphere, focal_length_mm=props.focal_length, keep_rig=props.keep_rig,
        settings=capture_settings_from_scene(scene, objects))


def training_params(scene: bpy.types.Scene) -> dict:
    props = scene.radiantforge
    return pipeline.gaussian_params(iters=props.iters, sh_degree=props.sh_degree, max_gaussians=props.max_gaussians)


def import_options(scene: bpy.types.Scene) -> pipeline.ImportOptions:
    props = scene.radiantforge
    return pipeline.ImportOptions(display=props.display, turntable=props.import_turntable)


def sync_status(context, runner: pipeline.JobRunner) -> None:
    """Copy the runner's state into WindowManager.radiantforge_job (what the panel draws)."""
    status = context.window_manager.radiantforge_job
    status.running = not runner.done
    status.phase = runner.phase
    status.progress = max(0.0, min(1.0, runner.progress))
    status.message = runner.message[:1000]
    status.error = runner.error[:1000]
    status.job_id = runner.job_id
    status.job_dir = str(runner.job_dir)
    status.resumable = runner.done and runner.resumable
    if runner.metrics:
        status.metrics_json = json.dumps(runner.metrics)
    global _shown_preview
    if runner.imported is not None and runner.imported.preview is not None:
        status.preview_image = runner.imported.preview
    elif runner.preview_path is not None and (runner, runner.preview_version) != _shown_preview \
            and runner.preview_path.is_file():
        status.preview_image = pipeline.load_preview(runner.preview_path)
        _shown_preview = (runner, runner.preview_version)
    if runner.imported is not None and runner.imported.splat_object is not None:
        status.result_object = runner.imported.splat_object
    if runner.done:
        status.cancel_requested = False


def _redraw(context) -> None:
    for window in context.window_manager.windows:
        for area in window.screen.areas:
            if area.type in ("VIEW_3D", "STATUSBAR", "PREFERENCES"):
                area.tag_redraw()


class _JobOperator:
    """Shared modal/blocking logic; subclasses implement make_runner(context)."""

    def make_runner(self, context) -> pipeline.JobRunner:  # pragma: no cover - overridden
        raise NotImplementedError

    def _start(self, context):
        global _active_runner
        if active_runner() is not None:
            self.report({"ERROR"}, "a Radiant Forge job is already running; cancel it first")
            return None
        try:
            runner = self.make_runner(context)
        except (pipeline.JobError, capture_module.CaptureError, ValueError, OSError) as exc:
            self.report({"ERROR"}, str(exc))
            return None
        _active_runner = runner
        context.window_manager.radiantforge_job.cancel_requested = False
        sync_status(context, runner)
        return runner

    def _finish(self, context, runner: pipeline.JobRunner):
        global _active_runner, _last_runner
        sync_status(context, runner)
        if _active_runner is runner:
            _active_runner = None
        _last_runner = runner
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

        def echo(progress: pipeline.JobRunner):
            sync_status(context, progress)
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
        runner = _active_runner
        if runner is None:  # the add-on was disabled or the job abandoned
            context.window_manager.event_timer_remove(self._timer)
            return {"CANCELLED"}
        if context.window_manager.radiantforge_job.cancel_requested:
            runner.cancel()
        running = runner.step()
        sync_status(context, runner)
        _redraw(context)
        if running:
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        return self._finish(context, runner)


class RADIANTFORGE_OT_capture_train(_JobOperator, bpy.types.Operator):
    """Render the scene from many cameras, train Gaussian splats on the backend and import them"""

    bl_idname = "radiant_forge.capture_train"
    bl_label = "Capture & Train"
    bl_options = {"REGISTER"}

    job_dir: StringProperty(name="Job Folder", subtype="DIR_PATH", default="", options={"SKIP_SAVE"},
                            description="New job folder (empty: a fresh one in the jobs folder)")

    def make_runner(self, context):
        scene = context.scene
        job_dir = Path(bpy.path.abspath(self.job_dir)) if self.job_dir else pipeline.new_job_dir(
            pipeline.default_jobs_folder(scene.radiantforge.jobs_folder), scene.name)
        return pipeline.JobRunner(job_dir, capture=capture_plan_from_context(context), params=training_params(scene),
                                  backend=backend_settings(context), import_options=import_options(scene),
                                  name=f"{scene.name} splats")


class RADIANTFORGE_OT_export_job(_JobOperator, bpy.types.Operator):
    """Render the views and write the job folder (job.json + data/) without training: for a remote machine or another tool"""

    bl_idname = "radiant_forge.export_job"
    bl_label = "Export Job Folder"
    bl_options = {"REGISTER"}

    job_dir: StringProperty(name="Job Folder", subtype="DIR_PATH", default="", options={"SKIP_SAVE"},
                            description="New job folder (empty: a fresh one in the jobs folder)")

    def make_runner(self, context):
        scene = context.scene
        job_dir = Path(bpy.path.abspath(self.job_dir)) if self.job_dir else pipeline.new_job_dir(
            pipeline.default_jobs_folder(scene.radiantforge.jobs_folder), scene.name)
        return pipeline.JobRunner(job_dir, capture=capture_plan_from_context(context), params=training_params(scene),
                                  submit=False)


class RADIANTFORGE_OT_train_dataset(_JobOperator, bpy.types.Operator):
    """Train Gaussians on an existing dataset folder (NeRF-synthetic) or job folder, then import them"""

    bl_idname = "radiant_forge.train_dataset"
    bl_label = "Train on Dataset"
    bl_options = {"REGISTER"}

    directory: StringProperty(name="Dataset", subtype="DIR_PATH", default="", options={"SKIP_SAVE"},
                              description="Dataset or job folder (empty: the scene's Dataset setting)")

    def make_runner(self, context):
        scene = context.scene
        props = scene.radiantforge
        source = bpy.path.abspath(self.directory or props.dataset_folder)
        if not source:
            raise pipeline.JobError("no dataset chosen: set Gaussians > Dataset to a NeRF-synthetic folder or a job folder")
        source = Path(source)
        if (source / pipeline.JOB_FILE).is_file():
            job_dir = source  # an exported job folder: run it as it is
        else:
            job_dir = pipeline.job_from_dataset(
                source, pipeline.new_job_dir(pipeline.default_jobs_folder(props.jobs_folder), source.name),
                training_params(scene))
        return pipeline.JobRunner(job_dir, params=training_params(scene), backend=backend_settings(context),
                                  import_options=import_options(scene), name=f"{source.name} splats")


class RADIANTFORGE_OT_resume_job(_JobOperator, bpy.types.Operator):
    """Continue the last job from its checkpoint on the service (after a cancel, a crash or a killed worker), then import its result"""

    bl_idname = "radiant_forge.resume_job"
    bl_label = "Resume"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        runner = last_runner()
        if active_runner() is not None:
            cls.poll_message_set("a job is running")
            return False
        if runner is None or not runner.job_id:
            cls.poll_message_set("no job of this session to resume")
            return False
        return True

    def make_runner(self, context):
        return last_runner().resumed()

    def _finish(self, context, runner):
        outcome = super()._finish(context, runner)
        result_object = getattr(runner, "result_object", None)  # a text-to-3D mesh (Gaussians: sync_status)
        if result_object is not None:
            context.window_manager.radiantforge_job.result_object = result_object
        return outcome


class RADIANTFORGE_OT_cancel_job(bpy.types.Operator):
    """Stop the running Radiant Forge job (a capture stops after the current view)"""

    bl_idname = "radiant_forge.cancel_job"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return active_runner() is not None

    def execute(self, context):
        runner = active_runner()
        if runner is None:
            self.report({"WARNING"}, "no Radiant Forge job is running")
            return {"CANCELLED"}
        runner.cancel()
        context.window_manager.radiantforge_job.cancel_requested = True
        context.window_manager.radiantforge_job.message = runner.message
        return {"FINISHED"}


CLASSES = (RADIANTFORGE_OT_capture_train, RADIANTFORGE_OT_export_job, RADIANTFORGE_OT_train_dataset,
           RADIANTFORGE_OT_resume_job, RADIANTFORGE_OT_cancel_job)

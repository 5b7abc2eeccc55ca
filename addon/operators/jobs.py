"""Operators that run Gaussian jobs: capture + train, export the job folder only, train on an existing
dataset; and for any job: resume the last one, cancel the running one.

They stay thin: each asks a ``pipeline`` function for its runner (see ``base.JobOperator``).
"""

from __future__ import annotations

import bpy
from bpy.props import StringProperty

from .. import pipeline, session
from .base import JobOperator, NewJobFolder


class RADIANTFORGE_OT_capture_train(NewJobFolder, JobOperator, bpy.types.Operator):
    """Render the scene from many cameras, train Gaussian splats on the backend and import them"""

    bl_idname = "radiant_forge.capture_train"
    bl_label = "Capture & Train"

    def make_runner(self, context):
        return pipeline.capture_job_from_context(context, self.job_dir)


class RADIANTFORGE_OT_export_job(NewJobFolder, JobOperator, bpy.types.Operator):
    """Render the views and write the job folder (job.json + data/) without training: for a remote machine or another tool"""

    bl_idname = "radiant_forge.export_job"
    bl_label = "Export Job Folder"

    def make_runner(self, context):
        return pipeline.capture_job_from_context(context, self.job_dir, submit=False)


class RADIANTFORGE_OT_train_dataset(JobOperator, bpy.types.Operator):
    """Train Gaussians on an existing dataset folder (NeRF-synthetic) or job folder, then import them"""

    bl_idname = "radiant_forge.train_dataset"
    bl_label = "Train on Dataset"

    directory: StringProperty(name="Dataset", subtype="DIR_PATH", default="", options={"SKIP_SAVE"},
                              description="Dataset or job folder (empty: the scene's Dataset setting)")

    def make_runner(self, context):
        return pipeline.dataset_job_from_context(context, self.directory)


class RADIANTFORGE_OT_resume_job(JobOperator, bpy.types.Operator):
    """Continue the last job from its checkpoint on the service (after a cancel, a crash or a killed worker), then import its result"""

    bl_idname = "radiant_forge.resume_job"
    bl_label = "Resume"

    @classmethod
    def poll(cls, context):
        runner = session.last_runner()
        if session.is_job_running():
            cls.poll_message_set("a job is running")
            return False
        if runner is None or not runner.job_id:
            cls.poll_message_set("no job of this session to resume")
            return False
        return True

    def make_runner(self, context):
        return session.last_runner().resumed()


class RADIANTFORGE_OT_cancel_job(bpy.types.Operator):
    """Stop the running Radiant Forge job (a capture stops after the current view)"""

    bl_idname = "radiant_forge.cancel_job"
    bl_label = "Cancel"
    bl_options = {"REGISTER"}

    @classmethod
    def poll(cls, context):
        return session.is_job_running()

    def execute(self, context):
        runner = session.active_runner()
        if runner is None:
            self.report({"WARNING"}, "no Radiant Forge job is running")
            return {"CANCELLED"}
        runner.cancel()
        context.window_manager.radiantforge_job.cancel_requested = True
        context.window_manager.radiantforge_job.message = runner.message
        return {"FINISHED"}


CLASSES = (RADIANTFORGE_OT_capture_train, RADIANTFORGE_OT_export_job, RADIANTFORGE_OT_train_dataset,
           RADIANTFORGE_OT_resume_job, RADIANTFORGE_OT_cancel_job)

"""Batch operators: submit a batch file or the selected meshes to the service, follow the entries' states.

Thin: ``addon/batch.py`` reads the file or the selection, writes and uploads one job per entry and
polls the states (a modal timer steps it; headless, ``execute`` runs it to the end).
"""

from __future__ import annotations

import time

import bpy
from bpy.props import StringProperty

from .. import batch, pipeline
from ..io.job_folder import JobError
from ..preferences import backend_settings
from ..settings import open_backend
from .base import TIMER_INTERVAL_S, redraw_job_areas

HEADLESS_POLL_S = 0.2


def _start(operator, context, entries: list[batch.BatchEntry]) -> batch.BatchRun | None:
    current = batch.current_batch()
    if current is not None and not current.done:
        operator.report({"ERROR"}, "a batch is already being submitted or followed; cancel it first")
        return None
    scene = context.scene
    settings = backend_settings(context)
    target_mode = scene.radiantforge.texture.target

    def write_job(entry, job_dir):  # the depsgraph of the moment the entry is written (the scene may change)
        return batch.write_entry_job(entry, job_dir, target_mode=target_mode,
                                     depsgraph=bpy.context.evaluated_depsgraph_get())

    run = batch.BatchRun(entries, pipeline.job_dir_for(scene, None, "batch"), lambda: open_backend(settings), write_job)
    batch.set_current_batch(run)
    return run


class BatchOperator:
    bl_options = {"REGISTER"}

    def entries(self, context) -> list[batch.BatchEntry]:  # pragma: no cover - overridden
        raise NotImplementedError

    def _begin(self, context) -> batch.BatchRun | None:
        try:
            entries = self.entries(context)
        except (JobError, OSError, ValueError) as exc:
            self.report({"ERROR"}, str(exc))
            return None
        return _start(self, context, entries)

    def execute(self, context):
        """Blocking (headless, scripts): submit every entry and wait until each has ended."""
        run = self._begin(context)
        if run is None:
            return {"CANCELLED"}
        while run.step():
            time.sleep(0 if any(e.state == "pending" for e in run.entries) else HEADLESS_POLL_S)
        return self._finish(run)

    def _finish(self, run: batch.BatchRun) -> set[str]:
        if run.error:
            self.report({"ERROR"}, run.error)
            return {"CANCELLED"}
        counts = batch.count_states(run.entries)
        self.report({"INFO"}, "batch: " + ", ".join(f"{n} {state}" for state, n in sorted(counts.items())))
        return {"FINISHED"}

    def _follow(self, context):
        if self._begin(context) is None:
            return {"CANCELLED"}
        self._timer = context.window_manager.event_timer_add(TIMER_INTERVAL_S, window=context.window)
        context.window_manager.modal_handler_add(self)
        return {"RUNNING_MODAL"}

    def modal(self, context, event):
        if event.type != "TIMER":
            return {"PASS_THROUGH"}
        run = batch.current_batch()
        running = run is not None and run.step()
        redraw_job_areas(context)
        if running:
            return {"RUNNING_MODAL"}
        context.window_manager.event_timer_remove(self._timer)
        return {"CANCELLED"} if run is None else self._finish(run)


class RADIANTFORGE_OT_batch_from_file(BatchOperator, bpy.types.Operator):
    """Submit a batch file: a text file with one text-to-3D prompt per line (the Text-to-3D settings apply), or JSON lines of the batch format (text3d, texture and gaussians entries)"""

    bl_idname = "radiant_forge.batch_from_file"
    bl_label = "Batch from File"

    filepath: StringProperty(name="Batch File", subtype="FILE_PATH", default="")
    filter_glob: StringProperty(default="*.txt;*.jsonl;*.json;*.ndjson", options={"HIDDEN"})

    def entries(self, context):
        if not self.filepath:
            raise JobError("choose a batch file")
        params = pipeline.guided_settings_params(context.scene.radiantforge.text3d)
        return batch.read_batch_file(bpy.path.abspath(self.filepath), params)

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        if not self.filepath:
            context.window_manager.fileselect_add(self)
            return {"RUNNING_MODAL"}
        return self._follow(context)

    def execute(self, context):
        if not bpy.app.background and context.window is not None and self.filepath:
            return self._follow(context)  # the file browser calls execute: follow without blocking
        return super().execute(context)


class RADIANTFORGE_OT_batch_from_selection(BatchOperator, bpy.types.Operator):
    """Texture every selected mesh with the Texture prompt and settings, one job each, as one batch (with a Ray service they run at once)"""

    bl_idname = "radiant_forge.batch_from_selection"
    bl_label = "Texture Selection"

    @classmethod
    def poll(cls, context):
        if not any(obj.type == "MESH" for obj in context.selected_objects):
            cls.poll_message_set("select one or more mesh objects")
            return False
        return True

    def entries(self, context):
        return batch.entries_from_objects(context.selected_objects, pipeline.texture_params(context.scene))

    def invoke(self, context, event):
        if bpy.app.background or context.window is None:
            return self.execute(context)
        return self._follow(context)


class RADIANTFORGE_OT_batch_cancel(bpy.types.Operator):
    """Cancel the batch's entries that are queued or running (those not yet submitted are dropped)"""

    bl_idname = "radiant_forge.batch_cancel"
    bl_label = "Cancel Batch"

    def execute(self, context):
        run = batch.current_batch()
        if run is None or run.done:
            return {"CANCELLED"}
        try:
            run.cancel()
        except Exception as exc:  # BackendError, the service gone: say it, keep Blender going
            self.report({"ERROR"}, str(exc))
        return {"FINISHED"}


CLASSES = (RADIANTFORGE_OT_batch_from_file, RADIANTFORGE_OT_batch_from_selection, RADIANTFORGE_OT_batch_cancel)

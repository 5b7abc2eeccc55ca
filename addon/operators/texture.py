"""Texture the selected mesh from a prompt: a "texture" job on the backend, the result applied as a new material.

The operator stays thin: ``pipeline.texture_job_from_context`` prepares the target and writes the
job folder (``mesh_export``), and the result is applied by ``importers.texture_job``.
"""

from __future__ import annotations

import bpy

from .. import pipeline
from ..io.job_folder import JobError
from .base import JobOperator, NewJobFolder


class RADIANTFORGE_OT_texture_mesh(NewJobFolder, JobOperator, bpy.types.Operator):
    """Texture the active mesh from the prompt (Stable Diffusion score distillation on the backend); the result comes back as a new material"""

    bl_idname = "radiant_forge.texture_mesh"
    bl_label = "Texture Selected Mesh"

    @classmethod
    def poll(cls, context):
        obj = context.active_object
        if obj is None or obj.type != "MESH":
            cls.poll_message_set("select a mesh object")
            return False
        return True

    def make_runner(self, context):
        try:
            return pipeline.texture_job_from_context(context, self.job_dir)
        except RuntimeError as exc:  # a bpy operator (Smart UV Project, mode switch) refused
            raise JobError(str(exc)) from exc


CLASSES = (RADIANTFORGE_OT_texture_mesh,)

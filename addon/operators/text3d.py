"""Generate an object from a text prompt: a "text3d" job on the backend, the mesh imported at the 3D cursor.

The operator stays thin: ``pipeline.text3d_job_from_context`` writes the job folder from the
scene's Text-to-3D settings, and the mesh comes back through ``importers.text3d_job``.
"""

from __future__ import annotations

import bpy

from .. import pipeline
from .base import JobOperator, NewJobFolder


class RADIANTFORGE_OT_generate_from_text(NewJobFolder, JobOperator, bpy.types.Operator):
    """Generate a textured 3D object from the prompt (a NeRF optimised with Stable Diffusion on the backend); it comes in at the 3D cursor"""

    bl_idname = "radiant_forge.generate_from_text"
    bl_label = "Generate from Text"

    def make_runner(self, context):
        return pipeline.text3d_job_from_context(context, self.job_dir)


CLASSES = (RADIANTFORGE_OT_generate_from_text,)

"""Text-to-3D: a NeRF optimised with Score Distillation Sampling (DreamFusion), then a textured mesh.

- :mod:`.config`: :class:`Text3DConfig` (every setting, checked field by field).
- :mod:`.conditioning`: prompt embeddings per view, or the oracle's known object
  (:class:`Text3DOracle`, :class:`MeshTarget`).
- :mod:`.run`: :func:`generate_3d`, the optimisation loop, checkpoints, mesh and turntables, the result folder.
- :mod:`.batch`: :func:`batch_generate`, one result folder per prompt of a text file, resumable.
- :mod:`.evaluate`: held-out PSNR, silhouette IoU and chamfer distance against a known object.

    from radiantforge.text3d import generate_3d
    result = generate_3d("a ceramic teapot", "out", steps=3000)
    result.files["mesh"]   # out/mesh.glb
"""

from .batch import BatchResult, batch_generate, prompt_folder_name, read_prompts
from .conditioning import Conditioning, MeshTarget, OracleConditioner, PromptConditioner, StepViews, Text3DOracle
from .config import RESUMABLE_FIELDS, Text3DConfig, check_prompt
from .evaluate import chamfer_distance, mesh_chamfer, sample_surface_points, silhouette_iou
from .run import (CHECKPOINT_FILE, RESULT_KIND, Text3DResult, check_text3d_job, checkpoint_path,
                  default_checkpoint_dir, generate_3d, render_views)

__all__ = [
    "BatchResult", "batch_generate", "prompt_folder_name", "read_prompts", "Conditioning", "MeshTarget",
    "OracleConditioner", "PromptConditioner", "StepViews", "Text3DOracle", "RESUMABLE_FIELDS", "Text3DConfig",
    "check_prompt", "chamfer_distance", "mesh_chamfer", "sample_surface_points", "silhouette_iou", "CHECKPOINT_FILE",
    "RESULT_KIND", "Text3DResult", "check_text3d_job", "checkpoint_path", "default_checkpoint_dir", "generate_3d",
    "render_views",
]

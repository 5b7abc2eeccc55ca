"""Text-to-texture: texture a mesh from a prompt with Score Distillation Sampling.

- :mod:`.config`: :class:`TextureConfig` (every setting, checked field by field).
- :mod:`.meshes`: reading and checking the mesh (faces, size limit, UVs or an xatlas atlas,
  non-manifold warning), writing the textured OBJ/MTL and GLB.
- :mod:`.fields`: the texture as a UV image or a coordinate MLP, their renderer, baking to UVs.
- :mod:`.conditioning`: prompt embeddings per view, or the oracle's target (:class:`TextureOracle`).
- :mod:`.run`: :func:`texture_mesh`, the optimisation loop, checkpoints, the result folder.

    from radiantforge.texture import texture_mesh
    result = texture_mesh("spot.obj", "out", prompt="a cow with black and white patches", steps=500)
    result.files["textured_mesh"]   # out/textured_mesh.glb
"""

from .conditioning import Conditioning, OracleConditioner, PromptConditioner, TextureOracle
from .config import TextureConfig, check_prompt
from .fields import (CoordinateMLPTexture, UVImageTexture, bake_to_uv_image, fill_uncovered_texels, render_texture_field,
                     uv_layout_buffer)
from .meshes import (MAX_TEXTURE_FACES, PreparedMesh, find_job_mesh, non_manifold_edge_count, prepare_mesh,
                     write_textured_glb, write_textured_obj)
from .run import (CHECKPOINT_FILE, RESULT_KIND, TextureResult, check_texture_job, checkpoint_path,
                  default_checkpoint_dir, texture_mesh)

__all__ = [
    "Conditioning", "OracleConditioner", "PromptConditioner", "TextureOracle", "TextureConfig", "check_prompt",
    "CoordinateMLPTexture", "UVImageTexture", "bake_to_uv_image", "fill_uncovered_texels", "render_texture_field",
    "uv_layout_buffer", "MAX_TEXTURE_FACES", "PreparedMesh", "find_job_mesh", "non_manifold_edge_count",
    "prepare_mesh", "write_textured_glb", "write_textured_obj", "CHECKPOINT_FILE", "RESULT_KIND", "TextureResult",
    "check_texture_job", "checkpoint_path", "default_checkpoint_dir", "texture_mesh",
]

"""Diffusion guidance shared by text-to-texture and text-to-3D.

- :mod:`.loading`: Stable Diffusion from a folder or the Hugging Face cache (never downloads),
  wrapped as :class:`StableDiffusionGuidance` (cached text embeddings, ε̂ prediction).
- :mod:`.sds`: SDS / CSD losses in latent or pixel space (:func:`sds_loss`, :class:`SDSConfig`).
- :mod:`.prompts`: view-dependent prompts and the front/side/back embedding interpolation.
- :mod:`.camera_sampling`: random cameras around the object and their azimuth/elevation.
- :mod:`.oracle`: the closed-form denoiser for a known target, to test all of it without SD.

A typical step::

    guidance = load_stable_diffusion("sd15")                 # or OracleDenoiser("space_to_depth")
    prompts = ViewDependentPrompts(guidance.text_embeddings, "a red teapot")
    views = sample_cameras(CameraSamplingConfig(batch_size=4), generator=g)
    images = render(views.cameras)                           # (B, H, W, 3) in [0, 1]
    cond, uncond = prompts.embeddings(views.azimuth_deg, views.elevation_deg)
    sds_loss(guidance, images, cond, uncond, SDSConfig(), step=i, total_steps=n).loss.backward()

With the oracle, ``cond, uncond`` come from ``oracle.conditioning(target_renders, guidance_scale)``.
Importing this package does not import diffusers; :func:`load_stable_diffusion` does.
"""

from .camera_sampling import (CameraSamplingConfig, SampledViews, camera_angles, cameras_from_spherical,
                              sample_cameras, spherical_to_direction)
from .loading import (MODEL_ALIASES, StableDiffusionGuidance, default_dtype, hf_hub_cache_dir, load_stable_diffusion,
                      resolve_model_folder)
from .oracle import (IdentityAutoencoder, OracleConditioning, OracleDenoiser, SpaceToDepthAutoencoder,
                     scaled_linear_alphas_cumprod)
from .prompts import (VIEW_NAMES, ViewDependentPrompts, ViewPromptConfig, interpolation_weights, view_indices,
                      view_names, view_prompt_texts, wrap_azimuth_deg)
from .sds import (GuidanceModel, SDSConfig, SDSOutput, classifier_free_guidance, images_to_model_input,
                  sample_timesteps, sds_loss, sds_loss_on_latents, timestep_bounds)

__all__ = [
    "CameraSamplingConfig", "SampledViews", "camera_angles", "cameras_from_spherical", "sample_cameras",
    "spherical_to_direction", "MODEL_ALIASES", "StableDiffusionGuidance", "default_dtype", "hf_hub_cache_dir",
    "load_stable_diffusion", "resolve_model_folder", "IdentityAutoencoder", "OracleConditioning", "OracleDenoiser",
    "SpaceToDepthAutoencoder", "scaled_linear_alphas_cumprod", "VIEW_NAMES", "ViewDependentPrompts",
    "ViewPromptConfig", "interpolation_weights", "view_indices", "view_names", "view_prompt_texts",
    "wrap_azimuth_deg", "GuidanceModel", "SDSConfig", "SDSOutput", "classifier_free_guidance",
    "images_to_model_input", "sample_timesteps", "sds_loss", "sds_loss_on_latents", "timestep_bounds",
]

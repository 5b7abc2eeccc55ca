"""What the guidance model is conditioned on at each step: the prompt, or an oracle's known object.

- Stable Diffusion (any :class:`~radiantforge.guidance.GuidanceModel` with ``text_embeddings``):
  the view-dependent prompt embeddings of the sampled cameras, front → side → back interpolated
  (:class:`PromptConditioner`).
- :class:`Text3DOracle`: the oracle denoiser (DESIGN.md) aimed at renders of a known object
  from the *same* cameras, with the *same* shading mode, point lights and background as the
  NeRF's render of that step. SDS must then recover the object: what the known-answer tests
  check. :class:`MeshTarget` renders a textured triangle mesh that way (through the
  visibility-buffer renderer of :mod:`radiantforge.mesh`, with the NeRF renderer's own
  :func:`~radiantforge.nerf.render.shade`, so both sides shade with the same formulas).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import Tensor

from ..cameras import Cameras
from ..errors import InputError
from ..guidance import OracleDenoiser, SampledViews
from ..guidance.guided_jobs import Conditioning, PromptEmbeddings
from ..mesh import TriangleMesh, interpolate_fragments, rasterize_mesh, sample_texture
from ..mesh.shading import downsample, scatter_to_image, shading_normals
from ..nerf.render import SHADING_MODES, shade

# Mesh targets are rendered with k x k samples per pixel, so their silhouettes have the fractional
# edge coverage that a volume render has.
DEFAULT_TARGET_SUPERSAMPLE = 2


class TargetRenderer(Protocol):
    """Renders the known answer: (C, H, W, 3) images in [0, 1] for ``cameras`` (C of them)."""

    def __call__(self, cameras: Cameras, shading: str, light_positions: Tensor | None, background: Tensor,
                 ambient: float) -> Tensor:
        ...


class MeshTarget:
    """A known textured (or vertex-coloured) mesh rendered the way the NeRF renderer shades.

    mesh: world-space :class:`TriangleMesh` with a texture and UVs, or vertex colours.
    render(...) -> (rgb (C, H, W, 3), alpha (C, H, W)); calling the object returns the rgb only.
    Shading modes as :func:`radiantforge.nerf.render.shade`: albedo, textureless, lambertian
    (point lights ``light_positions`` (C, 3), direction from each surface point) and normal
    ((n + 1) / 2 with world-space normals facing the camera).
    """

    def __init__(self, mesh: TriangleMesh, supersample: int = DEFAULT_TARGET_SUPERSAMPLE):
        if not isinstance(mesh, TriangleMesh):
            raise InputError(f"expected a TriangleMesh, got {type(mesh).__name__}", field="mesh")
        if not (mesh.texture is not None and mesh.has_uvs) and mesh.vertex_colors is None:
            raise InputError("the target mesh needs a texture with UVs, or vertex colours", field="mesh")
        self.mesh = mesh
        self.supersample = int(supersample)

    def render(self, cameras: Cameras, shading: str = "albedo", light_positions: Tensor | None = None,
               background=1.0, ambient: float = 0.1) -> tuple[Tensor, Tensor]:
        if shading not in SHADING_MODES:
            raise InputError(f"expected one of {', '.join(SHADING_MODES)}, got {shading!r}", field="shading")
        mesh = self.mesh
        device = mesh.vertices.device
        cameras = cameras.to(device)
        vbuf = rasterize_mesh(mesh.vertices, mesh.faces, cameras, supersample=self.supersample)
        fragments = vbuf.fragments()
        albedo = None
        if shading in ("albedo", "lambertian"):
            if mesh.texture is not None and mesh.has_uvs:
                albedo = sample_texture(mesh.texture, interpolate_fragments(mesh.uvs, fragments, mesh.face_uvs))
            else:
                albedo = interpolate_fragments(mesh.vertex_colors, fragments, mesh.faces)
        normals = points = lights = None
        if shading != "albedo":
            normals = shading_normals(mesh, fragments, cameras)
            points = interpolate_fragments(mesh.vertices, fragments, mesh.faces)
        if shading in ("lambertian", "textureless"):
            if light_positions is None:
                raise InputError(f"shading {shading!r} needs light positions", field="light_positions")
            lights = torch.as_tensor(light_positions, dtype=torch.float32, device=device).reshape(-1, 3)
            lights = lights.expand(len(cameras), 3).index_select(0, fragments.camera)
        colors = shade(shading, albedo, normals, points, lights, ambient)
        factor = vbuf.supersample
        foreground = downsample(scatter_to_image(colors, fragments, vbuf), factor)
        alpha = downsample(vbuf.mask.to(foreground.dtype)[..., None], factor)
        background = torch.as_tensor(background, dtype=foreground.dtype, device=device)
        if background.ndim == 2:  # (C, 3): one colour per camera
            background = background[:, None, None, :]
        return foreground + (1.0 - alpha) * background, alpha[..., 0]

    def __call__(self, cameras: Cameras, shading: str, light_positions: Tensor | None, background: Tensor,
                 ambient: float) -> Tensor:
        return self.render(cameras, shading, light_positions, background, ambient)[0]


@dataclass
class Text3DOracle:
    """Known-answer guidance: ``denoiser`` targets ``target``'s renders from each step's cameras.

    target: a :class:`MeshTarget` (or any :class:`TargetRenderer`); pass a :class:`TriangleMesh`
    and it is wrapped in a MeshTarget.
    """

    denoiser: OracleDenoiser
    target: object

    def __post_init__(self):
        if not isinstance(self.denoiser, OracleDenoiser):
            raise InputError(f"expected an OracleDenoiser, got {type(self.denoiser).__name__}", field="guidance")
        if isinstance(self.target, TriangleMesh):
            self.target = MeshTarget(self.target)
        if not callable(self.target):
            raise InputError(f"expected a MeshTarget, a TriangleMesh or a target renderer, got "
                             f"{type(self.target).__name__}", field="target")


@dataclass
class StepViews:
    """What a conditioner may need about one step's render: the views, shading, lights and background."""

    views: SampledViews
    cameras: Cameras  # on the run's device
    shading: str
    light_positions: Tensor | None  # (C, 3)
    background: Tensor  # (C, H, W, 3), the colour behind the NeRF in this render
    ambient: float


class PromptConditioner(PromptEmbeddings):
    """Text embeddings per sampled view (each prompt encoded once)."""

    def __init__(self, model, prompt: str, negative_prompt: str, view_dependent: bool):
        super().__init__(model, prompt, negative_prompt, view_dependent, oracle_name="Text3DOracle")

    def __call__(self, step: StepViews) -> Conditioning:
        return self.for_views(step.views)


class OracleConditioner:
    """The oracle's conditional / unconditional targets for renders of the known object."""

    kind = "oracle"

    def __init__(self, oracle: Text3DOracle, guidance_scale: float):
        self.oracle = oracle
        self.guidance_scale = guidance_scale

    def __call__(self, step: StepViews) -> Conditioning:
        with torch.no_grad():
            target = self.oracle.target(step.cameras, step.shading, step.light_positions, step.background.detach(),
                                        step.ambient).to(step.background.device)  # the mesh may live elsewhere
        targets = self.oracle.denoiser.conditioning(target, self.guidance_scale)
        return Conditioning(targets.cond, targets.uncond, target)

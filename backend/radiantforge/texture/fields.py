"""What is optimised (a UV image or a coordinate MLP), how it is rendered, and how it becomes a UV image.

Both representations answer ``albedo(mesh, fragments) -> (N, 3)`` for the covered pixels of a
visibility buffer, so one renderer (:func:`render_texture_field`) serves both, and gradients
flow from the rendered image to the texels or the MLP weights.

- :class:`UVImageTexture`: texels (S, S, 3) sampled bilinearly through the mesh's UVs (the UV
  convention of :mod:`radiantforge.mesh.shading`: v up, row 0 = top). Kept in [0, 1] by
  projection after every optimiser step (a clamp in the renderer would stop the gradient of
  texels that overshoot, and they would stay stuck there).
- :class:`CoordinateMLPTexture`: colour = sigmoid(MLP(Fourier features of the surface position)),
  continuous across UV seams; :func:`bake_to_uv_image` evaluates it at every texel's surface
  point to produce the UV image the result files carry.

Baking finds each texel's surface point with the same visibility-buffer rasteriser, run on the
UV layout: a triangle placed at (u, v, -1) in front of a camera at the origin with focal length
(W, H) and principal point (0, H) lands on pixel (u·W, (1 − v)·H), which is the texel grid of
``sample_texture``. A plane parallel to the image is mapped affinely, so the "perspective-correct"
barycentrics are the plain UV-space ones.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from ..cameras import Cameras
from ..mesh import DirectionalLight, TriangleMesh, interpolate_fragments, rasterize_mesh, sample_texture
from ..mesh.raster import Fragments, VisibilityBuffer
from ..mesh.shading import downsample, lambertian, scatter_to_image, shading_normals

INITIAL_GREY = 0.5  # the colour every texture starts from
# Texels evaluated per MLP call while baking (bounds memory on a 4096^2 texture).
BAKE_CHUNK = 1 << 16
# Texel rings grown outwards from the charts by neighbour averaging before the coarse fill:
# what bilinear filtering (and Blender's mipmaps at a distance) read across a chart's border.
GUTTER_DILATION_PASSES = 4
UV_PLANE_DEPTH = 1.0  # metres in front of the baking camera (any positive value works)


class UVImageTexture(torch.nn.Module):
    """A UV image (S, S, 3) in [0, 1], optimised texel by texel."""

    def __init__(self, size: int, initial: float = INITIAL_GREY):
        super().__init__()
        self.texels = torch.nn.Parameter(torch.full((size, size, 3), float(initial)))

    def albedo(self, mesh: TriangleMesh, fragments: Fragments) -> Tensor:
        """(N, 3) colours at the fragments, bilinear through the mesh's UVs."""
        uv = interpolate_fragments(mesh.uvs, fragments, mesh.face_uvs)
        return sample_texture(self.texels, uv)

    @torch.no_grad()
    def project_(self) -> None:
        """Back into [0, 1] after an optimiser step."""
        self.texels.clamp_(0.0, 1.0)


class CoordinateMLPTexture(torch.nn.Module):
    """colour(p) = sigmoid(MLP([q, sin(2^k·π·q), cos(2^k·π·q)] for k < L)), q = (p − centre) / radius.

    centre: (3,) and radius: the mesh's bounding sphere, so q lies in the unit ball.
    width / depth: hidden units and hidden layers; frequencies: L octaves of Fourier features.
    The last layer starts at zero, so the field starts uniformly grey (sigmoid(0) = 0.5).
    """

    def __init__(self, centre: Tensor, radius: float, width: int = 64, depth: int = 2, frequencies: int = 6,
                 generator: torch.Generator | None = None):
        super().__init__()
        self.register_buffer("centre", torch.as_tensor(centre, dtype=torch.float32).reshape(3).clone())
        self.radius = float(radius)
        self.register_buffer("octaves", (2.0 ** torch.arange(frequencies, dtype=torch.float32)) * math.pi)
        layers: list[torch.nn.Module] = []
        features = 3 + 6 * frequencies
        for _ in range(depth):
            layers += [torch.nn.Linear(features, width), torch.nn.ReLU()]
            features = width
        self.hidden = torch.nn.Sequential(*layers)
        self.output = torch.nn.Linear(features, 3)
        with torch.no_grad():  # a seeded initialisation: the same weights for the same seed everywhere
            for module in self.hidden:
                if isinstance(module, torch.nn.Linear):
                    bound = 1.0 / math.sqrt(module.in_features)
                    module.weight.copy_(torch.rand(module.weight.shape, generator=generator) * 2 * bound - bound)
                    module.bias.zero_()
            self.output.weight.zero_()
            self.output.bias.zero_()

    def forward(self, points: Tensor) -> Tensor:
        """(N, 3) world positions -> (N, 3) colours in (0, 1)."""
        q = (points - self.centre) / self.radius
        angles = q[..., None] * self.octaves  # (N, 3, L)
        features = torch.cat([q, angles.sin().flatten(1), angles.cos().flatten(1)], dim=-1)
        return torch.sigmoid(self.output(self.hidden(features)))

    def albedo(self, mesh: TriangleMesh, fragments: Fragments) -> Tensor:
        return self(interpolate_fragments(mesh.vertices, fragments, mesh.faces))

    def project_(self) -> None:
        """Nothing to do: the sigmoid keeps colours in range."""


def render_texture_field(mesh: TriangleMesh, field, cameras: Cameras, vbuf: VisibilityBuffer, *,
                         light: DirectionalLight | None = None, background: Tensor | float = 1.0,
                         smooth_normals: bool = True) -> tuple[Tensor, Tensor]:
    """Render ``field`` (anything with ``albedo(mesh, fragments)``) on ``mesh`` -> (rgb (C, H, W, 3), alpha (C, H, W, 1)).

    vbuf: the cameras' visibility buffer (its supersampling is averaged down). light: Lambertian
    shading (one direction, or one per camera), or None for the unlit albedo. Differentiable in the field.
    """
    fragments = vbuf.fragments()
    colour = field.albedo(mesh, fragments)
    if light is not None:
        normals = shading_normals(mesh, fragments, cameras, smooth=smooth_normals)
        direction = F.normalize(torch.as_tensor(light.direction, dtype=normals.dtype, device=normals.device)
                                .reshape(-1, 3), dim=-1)
        light_dirs = direction.expand(vbuf.num_cameras, 3).index_select(0, fragments.camera)
        colour = lambertian(colour, normals, light_dirs, light.ambient, light.diffuse)
    factor = vbuf.supersample
    premultiplied = downsample(scatter_to_image(colour, fragments, vbuf), factor)
    alpha = downsample(vbuf.mask.to(premultiplied.dtype)[..., None], factor)
    bg = torch.as_tensor(background, dtype=premultiplied.dtype, device=premultiplied.device).reshape(1, 1, 1, -1)
    return premultiplied + (1.0 - alpha) * bg, alpha


# ------------------------------------------------------------------------------------------ baking


def uv_layout_buffer(mesh: TriangleMesh, size: int) -> tuple[VisibilityBuffer, Tensor]:
    """Visibility buffer (1, size, size) of the mesh's UV layout: which triangle covers each texel centre.

    Triangles reaching outside the unit UV square also appear shifted by one square (the texture
    repeats, as ``sample_texture`` and Blender read it), so their texels are found too; where
    triangles overlap, the unshifted one with the lowest index wins. Returns (buffer, source_face
    (F',): the mesh face of each triangle the buffer's ``tri_ids`` index).
    """
    corner_uvs = mesh.uvs.float()[mesh.face_uvs]  # (F, 3, 2)
    low, high = corner_uvs.amin(1), corner_uvs.amax(1)
    shifted, source = [], []
    for shift in ((0, 0), (-1, 0), (1, 0), (0, -1), (0, 1), (-1, -1), (-1, 1), (1, -1), (1, 1)):
        offset = torch.tensor(shift, dtype=corner_uvs.dtype, device=corner_uvs.device)
        overlaps = ((low + offset < 1) & (high + offset > 0)).all(-1)
        faces = torch.nonzero(overlaps).squeeze(1) if shift != (0, 0) else torch.arange(len(corner_uvs),
                                                                                        device=corner_uvs.device)
        shifted.append(corner_uvs[faces] + offset)
        source.append(faces)
    corner_uvs, source_face = torch.cat(shifted), torch.cat(source)
    # (3F', 3) corners at (u, v, -depth) in front of the camera; each triangle has its own three vertices.
    plane = torch.cat([corner_uvs.reshape(-1, 2), torch.full_like(corner_uvs.reshape(-1, 2)[:, :1], -UV_PLANE_DEPTH)],
                      dim=1)
    triangles = torch.arange(len(plane), device=plane.device).reshape(-1, 3)
    intrinsics = torch.tensor([[size / UV_PLANE_DEPTH, 0.0, 0.0], [0.0, size / UV_PLANE_DEPTH, float(size)],
                               [0.0, 0.0, 1.0]])
    camera = Cameras(torch.eye(4)[None], intrinsics[None], size, size)
    return rasterize_mesh(plane, triangles, camera), source_face


def texel_surface_points(mesh: TriangleMesh, layout: VisibilityBuffer, source_face: Tensor) -> tuple[Tensor, Tensor]:
    """(covered (S, S) bool, points (N, 3)): the surface position under each covered texel, row-major."""
    fragments = layout.fragments()
    corners = mesh.vertices[mesh.faces][source_face]  # (F', 3, 3) face-varying positions
    return layout.mask[0], interpolate_fragments(corners, fragments)


@torch.no_grad()
def bake_to_uv_image(mesh: TriangleMesh, colour_of_points, size: int, chunk: int = BAKE_CHUNK) -> tuple[Tensor, Tensor]:
    """Evaluate ``colour_of_points`` ((N, 3) positions -> (N, 3) colours) at every texel's surface point.

    Returns (texture (S, S, 3) with the gutters filled by :func:`fill_uncovered_texels`, covered (S, S) bool).
    """
    layout, source_face = uv_layout_buffer(mesh, size)
    covered, points = texel_surface_points(mesh, layout, source_face)
    colours = torch.cat([colour_of_points(points[i:i + chunk]) for i in range(0, len(points), chunk)]) \
        if len(points) else points.new_zeros(0, 3)
    texture = points.new_full((size * size, 3), INITIAL_GREY)
    texture[covered.reshape(-1)] = colours.float()
    texture = texture.reshape(size, size, 3)
    return fill_uncovered_texels(texture, covered), covered


def _masked_average_pool(image: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """2x2 average of the covered texels of (1, C, H, W) ``image`` with (1, 1, H, W) 0/1 ``weight``.

    Odd sizes are padded with uncovered texels. Returns (coarse image, coarse weight).
    """
    pad_h, pad_w = image.shape[-2] % 2, image.shape[-1] % 2
    if pad_h or pad_w:
        image = F.pad(image, (0, pad_w, 0, pad_h))
        weight = F.pad(weight, (0, pad_w, 0, pad_h))
    total = F.avg_pool2d(image * weight, 2)
    count = F.avg_pool2d(weight, 2)
    return total / count.clamp(min=1e-12), (count > 0).to(weight.dtype)


@torch.no_grad()
def fill_uncovered_texels(texture: Tensor, covered: Tensor, dilation_passes: int = GUTTER_DILATION_PASSES) -> Tensor:
    """Texels outside the charts (covered False) get colours from the charts around them.

    texture: (H, W, C); covered: (H, W) bool. First ``dilation_passes`` rings are grown by averaging
    covered 3x3 neighbours (what bilinear filtering reads across a chart border), then every
    remaining texel gets the average of its region at the coarsest scale where it has covered
    neighbours (push-pull). Covered texels are returned unchanged.
    """
    if covered.all() or not covered.any():
        return texture
    image = texture.permute(2, 0, 1)[None].float()  # (1, C, H, W)
    weight = covered[None, None].to(image.dtype)
    channels = image.shape[1]
    kernel = torch.ones(1, 1, 3, 3, dtype=image.dtype, device=image.device)
    for _ in range(dilation_passes):
        total = F.conv2d(F.pad(image * weight, (1, 1, 1, 1)), kernel.expand(channels, 1, 3, 3), groups=channels)
        count = F.conv2d(F.pad(weight, (1, 1, 1, 1)), kernel)
        grow = (weight == 0) & (count > 0)
        image = torch.where(grow, total / count.clamp(min=1e-12), image)
        weight = torch.where(grow, torch.ones_like(weight), weight)
    filled = _push_pull(image, weight)
    result = torch.where(weight > 0, image, filled)
    return result[0].permute(1, 2, 0).to(texture.dtype)


def _push_pull(image: Tensor, weight: Tensor) -> Tensor:
    """Every texel's value from the finest pyramid level where its block holds a covered texel."""
    if bool((weight > 0).all()) or min(image.shape[-2:]) <= 1:
        return image
    coarse, coarse_weight = _masked_average_pool(image, weight)
    coarse = torch.where(coarse_weight > 0, coarse, _push_pull(coarse, coarse_weight))
    upsampled = coarse.repeat_interleave(2, dim=-2).repeat_interleave(2, dim=-1)[..., : image.shape[-2], : image.shape[-1]]
    return torch.where(weight > 0, image, upsampled)

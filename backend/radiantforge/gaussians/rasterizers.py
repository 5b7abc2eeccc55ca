"""The Gaussian rasterizer backends behind one interface, registered by name; the choice resolved once per run.

Three backends render the same images by the same rules (gsplat 1.5.3's, ``raster_constants``):

- "native": the Numba CPU kernels (``radiantforge.gaussians.native``), what "auto" uses on the CPU;
- "torch": the pure-PyTorch path (``radiantforge.gaussians.rasterize``), on any device;
- "gsplat": gsplat's CUDA kernels (``radiantforge.gaussians.gsplat_bridge``), what "auto" uses on CUDA.

Each is a :class:`Rasterizer`: a ``name`` and ``render(inputs) -> (colors, alphas, depths, info)``,
with :class:`RasterInputs` the arguments of ``rasterize`` in one tuple. A run (training, an
evaluation, a turntable) resolves its choice once, ``resolve_rasterizer(choice, device)`` or
``prepare_rasterizer`` (which also compiles the native kernels, saying so), and passes the
Rasterizer on: to ``rasterize(..., backend=rasterizer)`` or ``rasterizer.render``. A name given to
``rasterize(..., backend="auto")`` is resolved on every call, for callers that render once.

"auto" is gsplat on CUDA (when it imports), native on the CPU and torch elsewhere (Apple GPUs), the
first two with torch as their *fallback*. What a fallback still decides per call, because it
depends on the inputs or happens at run time: the native kernels take CPU float32/float64 tensors
without camera gradients and must compile (where they cannot, the torch path renders, with one
warning per process); gsplat's kernels compile on first use (where that fails, one warning and the
torch path for the rest of the process). A backend chosen by name has no fallback and raises
instead: NativeUnavailable, GsplatUnavailable, or ValueError for inputs it does not take.

Every backend ends with :func:`finish_image` (background, alpha and expected depth from what
compositing accumulated) and :func:`raster_info`, so their outputs cannot drift apart.
"""

from __future__ import annotations

import dataclasses
import time
from typing import ClassVar, NamedTuple

import torch
from torch import Tensor

from ..errors import InputError, quoted
from .sh import MAX_SH_DEGREE

AUTO = "auto"
# What "auto" tries, in this order, before settling on torch: the first that can run on the device.
AUTO_PREFERENCE = ("gsplat", "native")
# Expected depth divides the depth sum by alpha; where nothing was hit both are 0 (gsplat's clamp).
DEPTH_ALPHA_FLOOR = 1e-10

RasterOutputs = tuple  # (colors (C, H, W, D), alphas (C, H, W, 1), depths (C, H, W, 1), info dict)


class RasterInputs(NamedTuple):
    """The arguments of ``rasterize`` (meanings there), as every backend takes them."""

    means: Tensor  # (N, 3) world
    quats: Tensor  # (N, 4) wxyz
    scales: Tensor  # (N, 3) standard deviations
    opacities: Tensor  # (N,) in [0, 1]
    colors: Tensor  # (N, K, 3) SH coefficients with sh_degree, else (N, D) features
    viewmats: Tensor  # (C, 4, 4) world-to-camera, OpenCV
    Ks: Tensor  # (C, 3, 3)
    width: int
    height: int
    sh_degree: int | None = None
    background: Tensor | None = None  # (D,) or (C, D); (C, D) in the means' dtype once checked
    near_plane: float = 0.01
    far_plane: float = 1e10
    eps2d: float = 0.3

    @property
    def n_color(self) -> int:
        """D: channels of the output colours (3 with SH, else the features')."""
        return 3 if self.sh_degree is not None else self.colors.shape[-1]


def checked_inputs(inputs: RasterInputs) -> RasterInputs:
    """``inputs`` with int width and height and a (C, D) background; bad shapes raise ValueError naming the argument."""
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, background = inputs[:11]
    if means.ndim != 2 or means.shape[1] != 3:
        raise ValueError(f"means must be (N, 3), got {tuple(means.shape)}")
    N = means.shape[0]
    for name, tensor, shape in (("quats", quats, (N, 4)), ("scales", scales, (N, 3)), ("opacities", opacities, (N,))):
        if tuple(tensor.shape) != shape:
            raise ValueError(f"{name} must be {shape}, got {tuple(tensor.shape)}")
    if viewmats.ndim != 3 or viewmats.shape[1:] != (4, 4):
        raise ValueError(f"viewmats must be (C, 4, 4), got {tuple(viewmats.shape)}")
    if tuple(Ks.shape) != (viewmats.shape[0], 3, 3):
        raise ValueError(f"Ks must be ({viewmats.shape[0]}, 3, 3), got {tuple(Ks.shape)}")
    if int(width) <= 0 or int(height) <= 0:
        raise ValueError(f"width and height must be positive, got {width} x {height}")
    if sh_degree is not None:
        if not 0 <= sh_degree <= MAX_SH_DEGREE:
            raise ValueError(f"sh_degree must be in 0..{MAX_SH_DEGREE}, got {sh_degree}")
        if colors.ndim != 3 or colors.shape[0] != N or colors.shape[2] != 3:
            raise ValueError(f"with sh_degree, colors must be SH coefficients (N, K, 3), got {tuple(colors.shape)}")
        if colors.shape[1] < (sh_degree + 1) ** 2:
            raise ValueError(f"sh_degree {sh_degree} needs {(sh_degree + 1) ** 2} coefficients, colors has {colors.shape[1]}")
    elif colors.ndim != 2 or colors.shape[0] != N:
        raise ValueError(f"without sh_degree, colors must be features (N, D), got {tuple(colors.shape)}")
    if background is not None:
        if background.shape[-1] != inputs.n_color:
            raise ValueError(f"background must have {inputs.n_color} channels, got {tuple(background.shape)}")
        background = background.to(means.dtype).expand(viewmats.shape[0], background.shape[-1])
    return inputs._replace(width=int(width), height=int(height), background=background)


def finish_image(accum: Tensor, transmittance: Tensor, background: Tensor | None, alphas: Tensor | None = None):
    """The output images from what compositing accumulated; every backend ends here.

    accum (C, H, W, D + 1): sum_i w_i f_i, then sum_i w_i z_i (w_i = alpha_i T_i, z camera depth);
    transmittance (C, H, W, 1): T after the last composited fragment; background (C, D) or None
    (black); alphas: 1 - transmittance unless the backend has them already (gsplat).
    Returns colors (C, H, W, D) = sum w f + T background, alphas (C, H, W, 1) and depths
    (C, H, W, 1) = the expected depth sum w z / alpha (0 where alpha is 0).
    """
    n_color = accum.shape[-1] - 1
    if alphas is None:
        alphas = 1.0 - transmittance
    colors = accum[..., :n_color]
    if background is not None:
        colors = colors + transmittance * background[:, None, None, :]
    depths = accum[..., n_color:] / alphas.clamp_min(DEPTH_ALPHA_FLOOR)  # the depth sum is 0 where alpha is 0
    return colors, alphas, depths


def raster_info(inputs: RasterInputs, backend: str, means2d: Tensor, radii: Tensor, depths: Tensor, **extra) -> dict:
    """The info every backend returns: means2d (C, N, 2), radii (C, N, 2) int32, depths (C, N), image size, backend."""
    return {"width": inputs.width, "height": inputs.height, "n_cameras": inputs.viewmats.shape[0], "backend": backend,
            "means2d": means2d, "radii": radii, "depths": depths, **extra}  # fmt: skip


# ------------------------------------------------------------------------------------ the backends


@dataclasses.dataclass(frozen=True)
class Rasterizer:
    """A rasterizer backend: its registered ``name`` and ``render``.

    fallback: what renders the inputs this backend cannot take or cannot run on (auto's choice);
    None: raise instead (a backend chosen by name).
    """

    name: ClassVar[str] = ""
    fallback: Rasterizer | None = None

    def render(self, inputs: RasterInputs) -> RasterOutputs:
        """Check ``inputs`` and render them: (colors, alphas, depths, info) as ``rasterize`` returns them."""
        return self._render(checked_inputs(inputs))

    def _render(self, inputs: RasterInputs) -> RasterOutputs:
        outputs = self.try_render(inputs, required=self.fallback is None)
        return outputs if outputs is not None else self.fallback._render(inputs)

    def try_render(self, inputs: RasterInputs, required: bool) -> RasterOutputs | None:
        """Render checked inputs, or None (when not ``required``) where this backend cannot."""
        raise NotImplementedError

    @classmethod
    def can_try(cls, device: torch.device) -> bool:
        """Whether "auto" should pick this backend for tensors on ``device``."""
        return True

    def prepare(self, device: torch.device, events=None) -> Rasterizer:
        """Get ready for a run on ``device`` before its first step; returns what the run should use."""
        return self


RASTERIZERS: dict[str, type[Rasterizer]] = {}


def register_rasterizer(cls: type[Rasterizer]) -> type[Rasterizer]:
    """Class decorator: make ``cls`` a choice under ``cls.name``."""
    RASTERIZERS[cls.name] = cls
    return cls


@register_rasterizer
class NativeRasterizer(Rasterizer):
    name = "native"

    def try_render(self, inputs, required):
        from . import native

        return native.rasterize_native(inputs, required=required)

    @classmethod
    def can_try(cls, device):
        return device.type == "cpu"  # whether Numba runs, and for which inputs, is decided per call

    def prepare(self, device, events=None):
        """Compile the kernels (or load them from Numba's cache) now, saying so: the first run on a machine
        takes about half a minute per precision, and without a word a job would look stuck. Where they cannot
        run, a fallback is returned with a warning event; without one, NativeUnavailable is raised."""
        from . import native

        if device.type != "cpu" or native.is_ready(torch.float32):
            return self
        emit = events.emit if events is not None else (lambda *args, **kwargs: None)
        if native.unavailable_reason() is None:
            emit("info", message="preparing the native CPU rasterizer (the first run on a machine compiles it, "
                                 "about 30 s; later runs load it from the cache)")  # fmt: skip
        started = time.perf_counter()
        if native.ensure_ready(torch.float32, required=self.fallback is None):
            seconds = time.perf_counter() - started
            emit("info", message=f"native CPU rasterizer ready in {seconds:.1f} s", seconds=round(seconds, 1))
            return self
        emit("warning", message=f"the native CPU rasterizer cannot run ({native.unavailable_reason()}); "
                                f"{native.running_command()} goes on with the PyTorch rasterizer instead (same results, "
                                "about 3x slower)")  # fmt: skip
        return self.fallback.prepare(device, events)


@register_rasterizer
class TorchRasterizer(Rasterizer):
    name = "torch"

    def try_render(self, inputs, required):
        from .rasterize import rasterize_torch

        return rasterize_torch(inputs)


@register_rasterizer
class GsplatRasterizer(Rasterizer):
    name = "gsplat"

    def try_render(self, inputs, required):
        from . import gsplat_bridge

        if not gsplat_bridge.usable(inputs.means.device, required=required):
            return None
        return gsplat_bridge.rasterize_gsplat(inputs, required=required)

    @classmethod
    def can_try(cls, device):
        from . import gsplat_bridge

        return gsplat_bridge.usable(device)

    def prepare(self, device, events=None):
        from . import gsplat_bridge

        if self.fallback is None:
            gsplat_bridge.usable(device, required=True)  # GsplatUnavailable now rather than at the first step
        return self


# The choices a config or the CLI offers: ("auto", "native", "torch", "gsplat"); a backend registered
# later is still resolved by name.
RASTERIZER_CHOICES = (AUTO, *RASTERIZERS)


def resolve_rasterizer(choice: str | Rasterizer = AUTO, device: str | torch.device = "cpu", *,
                       field: str = "backend") -> Rasterizer:  # fmt: skip
    """The Rasterizer ``choice`` means for tensors on ``device`` (a Rasterizer is returned as it is).

    "auto": the first of AUTO_PREFERENCE that can run there, with torch as its fallback, else torch.
    A name that is not registered raises InputError naming ``field`` and the known choices.
    """
    if isinstance(choice, Rasterizer):
        return choice
    if choice == AUTO:
        device = torch.device(device)
        torch_path = TorchRasterizer()
        for name in AUTO_PREFERENCE:
            if RASTERIZERS[name].can_try(device):
                return RASTERIZERS[name](fallback=torch_path)
        return torch_path
    if not isinstance(choice, str) or choice not in RASTERIZERS:
        raise InputError(f"expected one of {', '.join((AUTO, *RASTERIZERS))}, got {quoted(choice)}", field=field)
    return RASTERIZERS[choice]()


def prepare_rasterizer(choice: str | Rasterizer, device: torch.device, events=None, *,
                       field: str = "rasterize_backend") -> Rasterizer:  # fmt: skip
    """``resolve_rasterizer`` for a run, ready before its first step: what the run renders with.

    The native kernels compile here (info events before and after; a warning event and the torch
    path where they cannot run, or NativeUnavailable when "native" was asked for); "gsplat" asked
    for where it cannot run raises GsplatUnavailable here. events: an EventLog (or None).
    """
    return resolve_rasterizer(choice, device, field=field).prepare(torch.device(device), events)


__all__ = [
    "AUTO",
    "RASTERIZERS",
    "RASTERIZER_CHOICES",
    "RasterInputs",
    "Rasterizer",
    "GsplatRasterizer",
    "NativeRasterizer",
    "TorchRasterizer",
    "checked_inputs",
    "finish_image",
    "prepare_rasterizer",
    "raster_info",
    "register_rasterizer",
    "resolve_rasterizer",
]

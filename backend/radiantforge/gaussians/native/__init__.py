"""Native CPU rasterizer: the "native" backend of ``rasterizers``, and what "auto" uses on the CPU.

What it is: projection + SH colours, tile binning, front-to-back compositing and the analytic
backward of all three, as parallel Numba kernels (``kernels.py``) behind two autograd Functions
(``rasterizer.py``). 16 x 16 pixel tiles are shared among all cores (one worker per torch thread);
each tile walks its depth-sorted Gaussian list front to back over the 4 x 4 pixel blocks each
Gaussian's alpha >= 1/255 ellipse reaches (one SIMD loop per block), and stops once every pixel's
transmittance has run out. The backward pass walks the same lists back to front (gsplat's
rasterize_to_pixels backward: transmittance recovered by division, the colour "behind" carried
along), with one gradient buffer per worker summed at the end in a fixed order, so results are
reproducible. They follow the pure-PyTorch path rule for rule and agree with it to float rounding
(tests/test_rasterize_native.py); projection, SH and binning are native too, because in torch they
cost more than the whole native compositing (measured with scripts/bench_rasterizer.py).

Threads: the kernels use torch.get_num_threads() threads, through the OpenMP runtime torch has
loaded (Numba's "omp" layer) where there is one. On a machine shared with other busy processes,
OMP_WAIT_POLICY=PASSIVE (set before torch starts) keeps idle OpenMP threads from spinning.

Why Numba (the toolchain choice)
- Users install it with ``pip install numba``: wheels for Linux, macOS and Windows (x86-64 and
  arm64), no compiler needed; it works with the numpy 1.26 that Blender's bpy pins.
- Its ``prange`` loops run on all cores (with the OpenMP runtime torch already loaded where
  present, else its own thread pool), so the kernels are genuinely parallel.
- Kernels compile on first use and are cached on disk (``cache=True``): a few tens of seconds
  once per machine, milliseconds afterwards.
- A C++ extension built with ``torch.utils.cpp_extension.load`` was the alternative: it needs a
  compiler, OpenMP headers and ninja on the user's machine (Apple clang has no OpenMP; on Windows
  MSVC must match torch's), and a minute of compile per torch version. Numba needs none of that.

Fallback: when Numba is missing or its kernels fail to compile or run, ``backend="auto"`` warns
once and uses the pure-PyTorch rasterizer for the rest of the process (same results, slower);
``backend="native"`` raises :class:`NativeUnavailable` instead. The same happens in a process
forked after its parent ran the kernels (GNU OpenMP, which the kernels share with torch, cannot
run in a forked child: Numba would terminate it); processes started with "spawn" (or fork+exec,
as the service's job workers are) use the kernels normally. Inputs the kernels do not handle
(float16, CUDA/MPS tensors, gradients with respect to the cameras) make "auto" use the torch path
and "native" raise ValueError naming the reason.
"""

from __future__ import annotations

import os
import sys
import warnings

import torch
from torch import Tensor

SUPPORTED_DTYPES = (torch.float32, torch.float64)

_failure: str | None = None  # why the native kernels cannot run in this process (set once)
_ready_dtypes: set = set()  # dtypes whose kernels compiled and ran a warm-up problem
_warned = False  # the fallback warning is given once per process
FORKED_REASON = (
    "this process was forked (os.fork / multiprocessing's 'fork' start method) after its parent ran the native "
    "kernels, and their OpenMP threads cannot run in a forked child; start workers with the 'spawn' method "
    "to use the native rasterizer in them"
)


def _after_fork_in_child() -> None:
    global _failure
    rasterizer = __import__("sys").modules.get(__name__ + ".rasterizer")
    if rasterizer is not None and rasterizer.kernels_launched and _failure is None:
        _failure = FORKED_REASON


if hasattr(os, "register_at_fork"):  # not on Windows, which has no fork
    os.register_at_fork(after_in_child=_after_fork_in_child)


class NativeUnavailable(RuntimeError):
    """backend="native" was asked for but the native kernels cannot run here."""


def unavailable_reason() -> str | None:
    """None when the native kernels can be tried; otherwise why not (Numba missing, an earlier failure)."""
    if _failure is not None:
        return _failure
    try:
        import numba  # noqa: F401
    except Exception as error:  # noqa: BLE001 - any import failure means "not usable"
        return f"Numba cannot be imported ({type(error).__name__}: {error}); install it with `pip install numba`"
    return None


def unsupported_inputs(means: Tensor, colors: Tensor, viewmats: Tensor, Ks: Tensor) -> str | None:
    """Why these inputs need the torch path (None when the native kernels take them)."""
    if means.device.type != "cpu":
        return f"the native rasterizer runs on the CPU; these tensors are on {means.device.type}"
    if means.dtype not in SUPPORTED_DTYPES or colors.dtype not in SUPPORTED_DTYPES:
        return f"the native rasterizer takes float32 or float64 tensors, got {means.dtype} / {colors.dtype}"
    if viewmats.requires_grad or Ks.requires_grad:
        return "the native rasterizer gives no gradients for viewmats or Ks (use backend='torch' to optimise cameras)"
    return None


def _warm_up(dtype: torch.dtype) -> None:
    """Compile (or load from the cache) every kernel for ``dtype`` on a tiny problem, forward and backward.

    Done once per dtype and process, so that a compile failure shows up here, where the caller can
    still fall back, rather than inside autograd's backward pass. Gradients are switched on for it:
    the first call may come from inside ``torch.no_grad()`` (``render``, ``eval``), and without them
    the backward half would fail and turn the native kernels off for the whole process.
    """
    with torch.enable_grad():
        _warm_up_with_gradients(dtype)


def _warm_up_with_gradients(dtype: torch.dtype) -> None:
    from ..rasterizers import RasterInputs
    from .rasterizer import rasterize_native

    means = torch.tensor([[0.0, 0.0, 2.0], [0.2, -0.1, 3.0]], dtype=dtype, requires_grad=True)
    quats = torch.tensor([[1.0, 0.1, 0.0, 0.0], [0.9, 0.0, 0.3, 0.1]], dtype=dtype, requires_grad=True)
    scales = torch.full((2, 3), 0.3, dtype=dtype, requires_grad=True)
    opacities = torch.tensor([0.8, 0.6], dtype=dtype, requires_grad=True)
    viewmats = torch.eye(4, dtype=dtype)[None]
    Ks = torch.tensor([[[16.0, 0.0, 8.0], [0.0, 16.0, 8.0], [0.0, 0.0, 1.0]]], dtype=dtype)
    # Colours from a generator of its own: the global RNG belongs to the caller (a training run that
    # resumes from a checkpoint has just restored it, and must draw the same numbers as before).
    generator = torch.Generator().manual_seed(0)
    sh_coeffs = torch.rand(2, 4, 3, dtype=dtype, generator=generator)
    features = torch.rand(2, 3, dtype=dtype, generator=generator)
    for colors, degree in ((sh_coeffs, 1), (features, None)):
        colors.requires_grad_(True)
        image, alpha, depth, _ = rasterize_native(
            RasterInputs(means, quats, scales, opacities, colors, viewmats, Ks, 16, 16, sh_degree=degree)
        )
        (image.sum() + alpha.sum() + depth.sum()).backward()
        if not bool(torch.isfinite(means.grad).all()):
            raise RuntimeError("the warm-up problem gave non-finite gradients")


def running_command() -> str:
    """What this process is, for a fallback warning: "radiantforge render", "radiantforge serve", or the script."""
    argv = sys.argv or ["python"]
    name = os.path.basename(argv[0]) or "python"
    if name in ("radiantforge", "__main__.py", "-m") and len(argv) > 1 and not argv[1].startswith("-"):
        return f"radiantforge {argv[1]}"
    return name


def is_ready(dtype: torch.dtype) -> bool:
    """The kernels for ``dtype`` have already compiled (or loaded from the cache) and run in this process."""
    return dtype in _ready_dtypes and _failure is None


def ensure_ready(dtype: torch.dtype, required: bool) -> bool:
    """True when the native kernels run for ``dtype``; else warn once (or raise if ``required``) and return False."""
    global _failure, _warned
    reason = unavailable_reason()
    if reason is None and dtype not in _ready_dtypes:
        try:
            _warm_up(dtype)
            _ready_dtypes.add(dtype)
        except Exception as error:  # noqa: BLE001 - compile or runtime failures of any kind
            _failure = f"its Numba kernels failed ({type(error).__name__}: {error})"
            reason = _failure
    if reason is None:
        return True
    if required:
        raise NativeUnavailable(f"rasterize(backend='native'): {reason}. Use backend='torch' or 'auto'.")
    if not _warned:
        _warned = True
        warnings.warn(
            f"radiantforge ({running_command()}): the native CPU rasterizer cannot run: {reason}; using the pure-PyTorch "
            "rasterizer instead (slower, same results).",
            RuntimeWarning,
            stacklevel=4,
        )
    return False


def rasterize_native(inputs, required: bool = False):
    """The native backend: ``rasterize``'s outputs for checked ``RasterInputs``, or None when it cannot run.

    None (after at most one warning per process) means: use the torch path. With ``required`` the
    reasons raise instead: NativeUnavailable (no Numba, compile failure) or ValueError (inputs it
    does not take).
    """
    problem = unsupported_inputs(inputs.means, inputs.colors, inputs.viewmats, inputs.Ks)
    if problem is not None:
        if required:
            raise ValueError(f"rasterize(backend='native'): {problem}")
        return None
    if not ensure_ready(inputs.means.dtype, required):
        return None
    from .rasterizer import rasterize_native as run

    return run(inputs)


__all__ = ["NativeUnavailable", "rasterize_native", "unavailable_reason", "unsupported_inputs", "ensure_ready", "is_ready"]

"""Run ``rasterize`` through gsplat's CUDA kernels when they are usable.

gsplat from the package registry compiles its CUDA extension the first time it is used. Where that
fails (no CUDA toolkit, no compiler, an ABI mismatch) ``rasterize(backend="auto")`` warns once and
uses the pure-torch path for the rest of the process; ``backend="gsplat"`` raises instead.

The outputs are mapped onto the torch path's: colours (C, H, W, D), alphas (C, H, W, 1), expected
depth (C, H, W, 1), and info with "means2d" (C, N, 2), "radii" (C, N, 2) int32, "depths" (C, N),
"width", "height", "n_cameras", "backend" = "gsplat" (plus gsplat's own keys, unpacked layout).
"""

from __future__ import annotations

import warnings

import torch
from torch import Tensor

_failure: str | None = None  # why gsplat could not run in this process (set once)


class GsplatUnavailable(RuntimeError):
    """backend="gsplat" was asked for but gsplat's CUDA rasterizer cannot run here."""


def _why_unusable(device: torch.device) -> str | None:
    if _failure is not None:
        return _failure
    if device.type != "cuda":
        return f"gsplat's rasterizer needs CUDA tensors; these are on {device.type}"
    if not torch.cuda.is_available():
        return "CUDA is not available to torch"
    try:
        import gsplat  # noqa: F401
    except Exception as error:  # noqa: BLE001 - any import failure means "not usable"
        return f"gsplat cannot be imported ({type(error).__name__}: {error})"
    return None


def usable(device: torch.device, required: bool = False) -> bool:
    """True when gsplat should be tried for tensors on ``device``; raises if ``required`` and it is not."""
    reason = _why_unusable(torch.device(device))
    if reason is not None and required:
        raise GsplatUnavailable(f"rasterize(backend='gsplat'): {reason}. Use backend='torch' or 'auto'.")
    return reason is None


def rasterize_gsplat(
    means: Tensor,
    quats: Tensor,
    scales: Tensor,
    opacities: Tensor,
    colors: Tensor,
    viewmats: Tensor,
    Ks: Tensor,
    width: int,
    height: int,
    *,
    sh_degree: int | None,
    background: Tensor | None,
    near_plane: float,
    far_plane: float,
    eps2d: float,
    required: bool = False,
):
    """gsplat.rasterization with the torch path's output layout, or None (after one warning) if it fails."""
    global _failure
    import gsplat

    n_color = 3 if sh_degree is not None else colors.shape[-1]
    try:
        render, alphas, meta = gsplat.rasterization(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane, eps2d=eps2d, sh_degree=sh_degree,
            packed=False, backgrounds=background, render_mode="RGB+ED", rasterize_mode="classic",
        )  # fmt: skip
    except Exception as error:  # noqa: BLE001 - JIT compilation or kernel launch failures of any kind
        if required:
            raise GsplatUnavailable(f"gsplat.rasterization failed: {type(error).__name__}: {error}") from error
        _failure = f"gsplat failed ({type(error).__name__}: {error})"
        warnings.warn(
            f"radiantforge: {_failure}; using the pure-PyTorch rasterizer instead (slower, same results).",
            RuntimeWarning,
            stacklevel=3,
        )
        return None
    info = dict(meta)
    info.update(
        {
            "means2d": meta["means2d"],
            "radii": meta["radii"].to(torch.int32),
            "depths": meta["depths"],
            "width": width,
            "height": height,
            "n_cameras": viewmats.shape[0],
            "backend": "gsplat",
        }
    )
    return render[..., :n_color], alphas, render[..., n_color:], info

"""Run ``rasterize`` through gsplat's CUDA kernels when they are usable.

gsplat from the package registry compiles its CUDA extension the first time it is used. Where that
fails (no CUDA toolkit, no compiler, an ABI mismatch) the "auto" choice warns once and uses the
pure-torch path for the rest of the process; ``backend="gsplat"`` raises instead (``rasterizers``).

The outputs are mapped onto the torch path's: colours (C, H, W, D), alphas (C, H, W, 1), expected
depth (C, H, W, 1), and info with "means2d" (C, N, 2), "radii" (C, N, 2) int32, "depths" (C, N),
"width", "height", "n_cameras", "backend" = "gsplat" (plus gsplat's own keys, unpacked layout).
"""

from __future__ import annotations

import warnings

import torch

from .rasterizers import RasterInputs, finish_image, raster_info

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


def rasterize_gsplat(inputs: RasterInputs, required: bool = False):
    """gsplat.rasterization with the torch path's output layout, or None (after one warning) if it fails.

    gsplat composites colours and the depth sum ("RGB+D"); background and expected depth are
    added by ``finish_image`` as for every backend (gsplat's own would compute the same:
    colour + T background with T = 1 - alpha, depth sum / alpha).
    """
    global _failure
    import gsplat

    try:
        render, alphas, meta = gsplat.rasterization(
            inputs.means, inputs.quats, inputs.scales, inputs.opacities, inputs.colors, inputs.viewmats, inputs.Ks,
            inputs.width, inputs.height, near_plane=inputs.near_plane, far_plane=inputs.far_plane, eps2d=inputs.eps2d,
            sh_degree=inputs.sh_degree, packed=False, render_mode="RGB+D", rasterize_mode="classic",
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
    images = finish_image(render, 1.0 - alphas, inputs.background, alphas=alphas)
    info = raster_info(inputs, "gsplat", meta["means2d"], meta["radii"].to(torch.int32), meta["depths"])
    return *images, {**meta, **info}

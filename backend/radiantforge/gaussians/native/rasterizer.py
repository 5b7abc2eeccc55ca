"""The native CPU rasterizer as two autograd Functions over the Numba kernels in ``kernels.py``.

    _Project:   means, quats, scales, opacities, SH coefficients, cameras
                -> means2d (C, N, 2), conics (C, N, 3), depths (C, N), colours (C, N, 3), radii (C, N, 2)
    _Composite: means2d, conics, colours, depths, opacities
                -> accumulated colour+depth (C, H, W, D + 1), final transmittance (C, H, W, 1)

Two Functions, as in gsplat, so that ``info["means2d"]`` is a real node between them: its ``.grad``
after backward is the view-space positional gradient densification reads. Background, alpha and
the expected-depth division are a few torch ops on images: ``rasterizers.finish_image``, as for every backend.
"""

from __future__ import annotations

import threading

import numba
import numpy as np
import torch
from torch import Tensor

from ..rasterizers import RasterInputs, finish_image, raster_info
from . import kernels

# Kernel calls are serialised: Numba's fallback threading layer (workqueue, used where no OpenMP
# or TBB runtime is found) aborts the process when two threads launch parallel kernels at once.
_KERNEL_LOCK = threading.Lock()
# Set once a parallel kernel has run in this process: from then on the process holds an OpenMP
# thread team, and Numba terminates a fork()ed child that tries to use it (GNU OpenMP is not
# fork-safe). A forked child therefore renders with the torch path instead (see __init__.py).
kernels_launched = False


def _numpy(tensor: Tensor) -> np.ndarray:
    """A writeable C-contiguous NumPy view (a copy only when the tensor is not contiguous)."""
    return tensor.detach().contiguous().numpy()


def _camera_arrays(viewmats: Tensor, Ks: Tensor):
    """float64 (C, 4, 4), (C, 3, 3) and camera centres (C, 3): one compiled signature whatever the dtype."""
    viewmats64 = np.ascontiguousarray(viewmats.detach().to(torch.float64).numpy())
    # Centre = -R^-1 t, with R^-1 from cross products of R's rows (exact for any invertible R, as
    # gsplat's full inverse; np.linalg would start OpenBLAS threads that spin after every call).
    rows, t = viewmats64[:, :3, :3], viewmats64[:, :3, 3]
    columns = (np.cross(rows[:, 1], rows[:, 2]), np.cross(rows[:, 2], rows[:, 0]), np.cross(rows[:, 0], rows[:, 1]))
    det = (rows[:, 0] * columns[0]).sum(-1)
    campos = -(columns[0] * t[:, 0:1] + columns[1] * t[:, 1:2] + columns[2] * t[:, 2:3]) / det[:, None]
    return viewmats64, Ks.detach().to(torch.float64).contiguous().numpy(), np.ascontiguousarray(campos)


def _set_threads() -> int:
    """Use as many threads as torch does (torch.set_num_threads governs both); returns the count.

    The kernels take it as their number of workers (calling numba.get_num_threads inside a kernel
    would keep it out of the on-disk cache). One setting for both is also the fast one: torch and
    Numba share the OpenMP thread pool, which is rebuilt whenever consecutive parallel regions ask
    for different numbers of threads.
    """
    global kernels_launched
    kernels_launched = True
    torch_threads = torch.get_num_threads()
    wanted = max(1, min(torch_threads, numba.config.NUMBA_NUM_THREADS))
    if numba.get_num_threads() != wanted:
        numba.set_num_threads(wanted)
    # Numba's OpenMP layer starts by calling omp_set_num_threads(NUMBA_NUM_THREADS) on the OpenMP
    # runtime it shares with torch, which would silently undo torch.set_num_threads: put it back.
    if torch.get_num_threads() != torch_threads:
        torch.set_num_threads(torch_threads)
    return wanted


class _Project(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, scales, opacities, coeffs, viewmats, Ks, settings):
        width, height, near, far, eps2d, sh_degree = settings
        C, N = viewmats.shape[0], means.shape[0]
        dtype = means.dtype
        means2d = means.new_empty(C, N, 2)
        conics = means.new_empty(C, N, 3)
        depths = means.new_empty(C, N)
        colors = means.new_empty(C, N, 3 if sh_degree >= 0 else 0)
        radii = torch.empty(C, N, 2, dtype=torch.int32)
        viewmats64, Ks64, campos = _camera_arrays(viewmats, Ks)
        arrays = [_numpy(t.to(dtype)) for t in (means, quats, scales, opacities, coeffs)]
        with _KERNEL_LOCK:
            _set_threads()
            kernels.project_forward(*arrays[:4], viewmats64, Ks64, campos, arrays[4], sh_degree, width, height,
                                    near, far, eps2d, means2d.numpy(), conics.numpy(), depths.numpy(),
                                    colors.numpy(), radii.numpy())  # fmt: skip
        ctx.settings = settings
        ctx.cameras = (viewmats64, Ks64, campos)
        ctx.save_for_backward(means, quats, scales, coeffs, radii)
        ctx.mark_non_differentiable(radii)
        return means2d, conics, depths, colors, radii

    @staticmethod
    def backward(ctx, v_means2d, v_conics, v_depths, v_colors, _v_radii):
        width, height, near, far, eps2d, sh_degree = ctx.settings
        means, quats, scales, coeffs, radii = ctx.saved_tensors
        C, N = radii.shape[0], means.shape[0]
        dtype = means.dtype

        def grad_or_zeros(grad, shape):
            return _numpy(grad.to(dtype)) if grad is not None else np.zeros(shape, dtype=_numpy(means).dtype)

        v_means = torch.empty_like(means)
        v_quats = torch.empty_like(quats, dtype=dtype)
        v_scales = torch.empty_like(scales, dtype=dtype)
        v_coeffs = torch.empty_like(coeffs, dtype=dtype)
        with _KERNEL_LOCK:
            _set_threads()
            kernels.project_backward(
                _numpy(means), _numpy(quats.to(dtype)), _numpy(scales.to(dtype)), *ctx.cameras, _numpy(coeffs.to(dtype)),
                sh_degree, width, height, near, far, eps2d, radii.numpy(),
                grad_or_zeros(v_means2d, (C, N, 2)), grad_or_zeros(v_conics, (C, N, 3)), grad_or_zeros(v_depths, (C, N)),
                grad_or_zeros(v_colors, (C, N, 3 if sh_degree >= 0 else 0)),
                v_means.numpy(), v_quats.numpy(), v_scales.numpy(), v_coeffs.numpy(),
            )  # fmt: skip
        return (v_means, v_quats.to(quats.dtype), v_scales.to(scales.dtype), None,
                v_coeffs.to(coeffs.dtype) if sh_degree >= 0 else None, None, None, None)


class _Composite(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, depths, opacities, radii, width, height, stats):
        C, N, D = colors.shape
        dtype = means2d.dtype
        with _KERNEL_LOCK:
            n_workers = _set_threads()
            table, flat_ids, entries, tile_offsets = kernels.bin_gaussians(
                _numpy(means2d), _numpy(conics.to(dtype)), _numpy(opacities.to(dtype)), _numpy(depths.to(dtype)),
                _numpy(colors.to(dtype)), radii.numpy(), width, height, n_workers,
            )  # fmt: skip
            accum = means2d.new_empty(C, height, width, D + 1)
            transmittance = means2d.new_empty(C, height, width, 1)
            last = torch.empty(C, height, width, dtype=torch.int32)
            tile_work = np.empty(len(tile_offsets) - 1, dtype=np.int64)
            entry_masks = np.empty(len(entries), dtype=np.uint16)
            kernels.composite_forward(table, entries, tile_offsets, width, height, n_workers, accum.numpy(),
                                      transmittance.numpy()[..., 0], last.numpy(), tile_work, entry_masks)  # fmt: skip
        blocks = int(tile_work.sum())
        stats.update({"visible": len(flat_ids), "tile_entries": len(entries), "blocks": blocks,
                      "fragments": blocks * kernels.BLOCK_PIXELS})
        ctx.tables = (table, flat_ids, entries, entry_masks, tile_offsets, tile_work)
        ctx.image = (width, height, N, D)
        ctx.opacity_dtype = opacities.dtype
        ctx.save_for_backward(transmittance, last)
        return accum, transmittance

    @staticmethod
    def backward(ctx, v_accum, v_transmittance):
        transmittance, last = ctx.saved_tensors
        table, flat_ids, entries, entry_masks, tile_offsets, tile_work = ctx.tables
        width, height, N, D = ctx.image
        C = transmittance.shape[0]
        dtype = transmittance.dtype
        if v_accum is None:
            v_accum = transmittance.new_zeros(C, height, width, D + 1)
        if v_transmittance is None:
            v_transmittance = torch.zeros_like(transmittance)
        with _KERNEL_LOCK:
            n_workers = _set_threads()
            total = kernels.composite_backward(
                table, entries, entry_masks, tile_offsets, width, height, n_workers,
                transmittance.numpy()[..., 0], last.numpy(), tile_work,
                _numpy(v_accum.to(dtype)), _numpy(v_transmittance.to(dtype))[..., 0],
            )  # fmt: skip
        v_means2d = torch.zeros(C, N, 2, dtype=dtype)
        v_conics = torch.zeros(C, N, 3, dtype=dtype)
        v_colors = torch.zeros(C, N, D, dtype=dtype)
        v_depths = torch.zeros(C, N, dtype=dtype)
        v_opacities = torch.zeros(N, dtype=ctx.opacity_dtype)
        kernels.scatter_gradients(total, flat_ids, N, v_means2d.numpy(), v_conics.numpy(), v_colors.numpy(),
                                  v_depths.numpy(), v_opacities.numpy())  # fmt: skip
        return v_means2d, v_conics, v_colors, v_depths, v_opacities, None, None, None, None


def rasterize_native(inputs: RasterInputs):
    """``rasterize`` on the CPU with the native kernels; same arguments, outputs and info as the torch path.

    Inputs must be checked CPU float32 or float64 tensors (checked by the caller); viewmats and Ks get no gradient.
    """
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree = inputs[:10]
    C, N = viewmats.shape[0], means.shape[0]
    if sh_degree is not None:
        coeffs = colors
        degree = sh_degree
    else:
        coeffs = means.new_zeros(N, 0, 3)
        degree = -1
    settings = (width, height, float(inputs.near_plane), float(inputs.far_plane), float(inputs.eps2d), degree)
    means2d, conics, depths, sh_colors, radii = _Project.apply(means, quats, scales, opacities, coeffs, viewmats, Ks, settings)
    features = sh_colors if sh_degree is not None else colors.to(means.dtype)[None].expand(C, N, colors.shape[1])
    stats: dict = {}
    accum, t_final = _Composite.apply(means2d, conics, features, depths, opacities, radii, width, height, stats)
    images = finish_image(accum, t_final, inputs.background)
    return *images, raster_info(inputs, "native", means2d, radii, depths, stats=stats)

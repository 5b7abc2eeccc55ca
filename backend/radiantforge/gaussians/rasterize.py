"""Differentiable Gaussian rasterizer: ``rasterize`` (any backend, see ``rasterizers``) and the pure-PyTorch path.

``rasterize`` renders with the backend its ``backend`` argument names or a run resolved
(``radiantforge.gaussians.rasterizers``: native on the CPU, gsplat on CUDA, this module's
pure-PyTorch path, ``rasterize_torch``, elsewhere). Every backend follows gsplat 1.5.3's CUDA
rasterizer rule for rule (constants in ``raster_constants``), so they agree:

1. project (``projection.project_gaussians``): EWA, eps2d low-pass, near/far, opacity and
   off-screen culling, opacity-aware screen radii;
2. colour: SH evaluated along normalise(mean - camera centre), ``max(0, SH + 0.5)``;
   or the given per-Gaussian features;
3. composite front to back in depth order per pixel (pixel centres at +0.5):
   ``alpha = min(0.999, o exp(-0.5 d^T Sigma^-1 d))``, fragments with alpha < 1/255 skipped,
   and the pixel stops *before* the fragment that would bring its transmittance to <= 1e-4
   (that fragment is not composited); background added as ``T_final * bg``;
   depth output = expected camera z, ``sum w_i z_i / (1 - T_final)`` (0 where nothing was hit).

How the torch path stays sparse and fast (never N x H x W; measured with
scripts/bench_rasterizer.py):

- Gaussians are sorted by (camera, depth) once.
- Each Gaussian is binned into the small screen tiles (``TILE_W x TILE_H`` pixels) its
  alpha >= 1/255 ellipse reaches (opacity-aware: the ellipse 0.5 d^T Q d <= ln(255 o)); per
  tile row the exact x-extent of the ellipse is used, tighter than any box for rotated Gaussians.
- One stable sort of the (Gaussian, tile) entries by a 16-bit tile key keeps depth order
  within each tile.
- Tiles are composited in depth *blocks* (the k-th group of ``DEPTH_BLOCK`` Gaussians of every
  active tile at once, like the CUDA kernel's shared-memory batches): the exponents of a block's
  (Gaussian, pixel) fragments are one (rows, 6) @ (6, pixels) matrix product, transmittance is a
  cumulative product along the block, colours are a batched matrix product, and a tile drops
  out once all its pixels have terminated, so work behind opaque surfaces is never done.
- A custom autograd.Function walks the blocks back to front in backward. It keeps each
  evaluated fragment's alpha and transmittance up to SAVED_FRAGMENT_BYTES and recomputes the
  blocks beyond that from their start transmittance and exponent coefficients, so memory stays
  bounded whatever the scene. Everything per fragment is plain arithmetic: boolean masks and
  ``where`` are many times slower than arithmetic on CPU.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor

from radiantforge.gaussians.projection import opacity_cutoff, project_gaussians
from radiantforge.gaussians.raster_constants import ALPHA_THRESHOLD, BINNING_SLACK, MAX_ALPHA, TRANSMITTANCE_MIN
from radiantforge.gaussians.rasterizers import (RasterInputs, Rasterizer, finish_image, raster_info,
                                                resolve_rasterizer)
from radiantforge.gaussians.sh import sh_to_color

TILE_W, TILE_H = 4, 4  # pixels per compositing tile
DEPTH_BLOCK = 32  # Gaussians per tile composited together in one step (at least)
MAX_DEPTH_BLOCK = 512  # ... and at most, when only a few deep tiles are left
BLOCK_ELEMENTS = 1 << 18  # fragments per chunk: keeps temporaries around 1 MB (cache and malloc)
# Backward needs each fragment's alpha and transmittance: forward keeps them for up to this many
# bytes (fragments already exclude everything behind terminated pixels), later chunks are recomputed.
SAVED_FRAGMENT_BYTES = 256 << 20
_INVALID_EXPONENT = 1e6  # exponent of padding fragments: exp(-1e6) == 0


class TileBins(NamedTuple):
    """Which packed Gaussians touch which tile, in front-to-back order per tile.

    entries: (M,) int64 packed-Gaussian index of every (Gaussian, tile) entry, grouped by tile.
    tile_start: (C * n_tiles,) int64 first entry of each tile; tile_count: (C * n_tiles,) entries.
    tile_center: (C * n_tiles, 2) pixel coordinates of each tile's centre.
    """

    entries: Tensor
    tile_start: Tensor
    tile_count: Tensor
    tile_center: Tensor
    tiles_x: int
    tiles_y: int


def _pixel_basis(device, dtype) -> Tensor:
    """(6, P) monomials [ox^2, ox*oy, oy^2, ox, oy, 1] of the pixel-centre offsets from the tile centre.

    Pixel p = iy * TILE_W + ix. The exponent 0.5 d^T Q d - ln(o) of every fragment of a
    (Gaussian, tile) pair is a quadratic in these offsets, so one (rows, 6) @ (6, P) product
    evaluates a whole block of fragments.
    """
    ox = torch.arange(TILE_W, dtype=torch.float64) + 0.5 - TILE_W / 2
    oy = torch.arange(TILE_H, dtype=torch.float64) + 0.5 - TILE_H / 2
    oy, ox = torch.meshgrid(oy, ox, indexing="ij")
    ox, oy = ox.reshape(-1), oy.reshape(-1)
    return torch.stack([ox * ox, ox * oy, oy * oy, ox, oy, torch.ones_like(ox)]).to(device=device, dtype=dtype)


@torch.no_grad()
def bin_gaussians(
    camera_ids: Tensor, means2d: Tensor, conics: Tensor, cutoffs: Tensor, depths: Tensor, n_cameras: int, width: int, height: int
) -> TileBins:
    """Sort packed Gaussians front to back and list, per tile, those whose alpha >= 1/255 ellipse reaches it.

    camera_ids (V,), means2d (V, 2), conics (V, 3), cutoffs (V,) = ln(255 o), depths (V,).
    For each tile row a Gaussian covers, the exact x-extent of its ellipse
    a dx^2 + 2 b dx dy + c dy^2 <= 2 (cutoff + BINNING_SLACK) over that band of pixel rows gives the
    tile columns: a superset of the pixels where alpha >= 1/255, and much tighter than a box.
    """
    device = means2d.device
    tiles_x, tiles_y = -(-width // TILE_W), -(-height // TILE_H)
    n_tiles = tiles_x * tiles_y

    # Front to back per camera; ties keep index order (as gsplat's stable radix sort does).
    order = torch.sort(depths, stable=True).indices
    if n_cameras > 1:
        order = order.index_select(0, torch.sort(camera_ids.index_select(0, order), stable=True).indices)

    # Per Gaussian, in float64: extents are compared with pixel centres.
    f64 = torch.float64
    mx, my = means2d.index_select(0, order).to(f64).unbind(1)
    a, b, c = conics.index_select(0, order).to(f64).unbind(1)
    two_cut = 2.0 * (cutoffs.index_select(0, order).to(f64) + BINNING_SLACK)
    det = (a * c - b * b).clamp_min(1e-300)
    half_y = torch.sqrt(two_cut * a / det)
    row_lo = torch.ceil(my - half_y - 0.5).clamp_(min=0)
    row_hi = torch.floor(my + half_y - 0.5).clamp_(max=height - 1)
    tile_row_lo = torch.div(row_lo, TILE_H, rounding_mode="floor")
    has_rows = (row_hi - row_lo + 1).clamp_(0, 1)  # 0 when the ellipse misses every pixel row
    n_bands = ((torch.div(row_hi, TILE_H, rounding_mode="floor") - tile_row_lo + 1) * has_rows).long()
    # Horizontal section at dy: centre -b/a dy, half-width sqrt(two_cut / a - det / a^2 dy^2).
    slope = -b / a
    curvature = det / (a * a)
    extreme_dy = -b * torch.sqrt(two_cut / (c * det))  # dy of the rightmost point (leftmost: -extreme_dy)
    key_base = (camera_ids.index_select(0, order) * n_tiles).to(f64)
    band_first = torch.cumsum(n_bands, 0) - n_bands
    per_gauss = torch.stack(  # (11, V): rows stay contiguous after the gather below
        [mx, my, row_lo, row_hi, tile_row_lo - band_first, two_cut / a, curvature, slope, extreme_dy, key_base, order.to(f64)]
    )

    # One entry per (Gaussian, tile row).
    band_owner = torch.repeat_interleave(n_bands)
    mx, my, row_lo, row_hi, row_offset, reach, curvature, slope, extreme_dy, key_base, gauss = per_gauss.index_select(
        1, band_owner
    ).unbind(0)
    tile_row = row_offset + torch.arange(len(band_owner), device=device, dtype=f64)
    dy_lo = torch.maximum(tile_row * TILE_H, row_lo) + 0.5 - my
    dy_hi = torch.minimum(tile_row * TILE_H + (TILE_H - 1), row_hi) + 0.5 - my

    def half_width(dy):
        return torch.sqrt((reach - curvature * dy * dy).clamp_min_(0))

    # The right edge slope*dy + half_width(dy) is concave: its maximum over the band is at the
    # rightmost point's dy clamped into the band (the convex left edge mirrors this).
    dy_right = torch.clamp(extreme_dy, dy_lo, dy_hi)
    dy_left = torch.clamp(-extreme_dy, dy_lo, dy_hi)
    col_lo = torch.ceil(mx + slope * dy_left - half_width(dy_left) - 0.5).clamp_(min=0)
    col_hi = torch.floor(mx + slope * dy_right + half_width(dy_right) - 0.5).clamp_(max=width - 1)
    tile_col_lo = torch.div(col_lo, TILE_W, rounding_mode="floor")
    has_cols = (col_hi - col_lo + 1).clamp_(0, 1)
    n_cols = ((torch.div(col_hi, TILE_W, rounding_mode="floor") - tile_col_lo + 1) * has_cols).long()

    # One entry per (Gaussian, tile); a band's tiles have consecutive keys.
    entry_band = torch.repeat_interleave(n_cols)
    n_entries = len(entry_band)
    wide = torch.int32 if n_cameras * n_tiles + n_entries < 2**31 else torch.int64
    entry_first = torch.cumsum(n_cols, 0) - n_cols
    band_key = ((key_base + tile_row * tiles_x + tile_col_lo).long() - entry_first).to(wide)
    tile_key = band_key.index_select(0, entry_band) + torch.arange(n_entries, device=device, dtype=wide)
    # Narrow keys sort much faster (int16 about twice as fast as int32 on CPU).
    key_dtype = next(t for t in (torch.int16, torch.int32, torch.int64) if n_cameras * n_tiles <= torch.iinfo(t).max)
    sorted_keys, by_tile = torch.sort(tile_key.to(key_dtype), stable=True)
    entries = gauss.long().index_select(0, entry_band.index_select(0, by_tile))

    boundaries = torch.arange(n_cameras * n_tiles + 1, device=device, dtype=wide)
    tile_edges = torch.searchsorted(sorted_keys.to(wide), boundaries)
    tile_start = tile_edges[:-1]
    tile_count = tile_edges[1:] - tile_start
    tile_index = torch.arange(n_tiles, device=device)
    center = torch.stack(
        [(tile_index % tiles_x) * TILE_W + TILE_W / 2, (tile_index // tiles_x) * TILE_H + TILE_H / 2], dim=-1
    ).to(means2d.dtype)
    return TileBins(entries, tile_start, tile_count, center.repeat(n_cameras, 1), tiles_x, tiles_y)


class _BlockRows(NamedTuple):
    """The (Gaussian, tile) rows of one depth block of some tiles: (A * K,) each, tile-major."""

    gauss: Tensor  # packed-Gaussian index of each row (int64)
    coef: Tensor  # (A * K, 6) exponent coefficients, see _block_rows


def _block_rows(table: Tensor, bins: TileBins, tiles: Tensor, first: int, size: int) -> _BlockRows:
    """Rows [first, first + size) of each tile's front-to-back list, and their exponent coefficients.

    The exponent ln(o) - 0.5 d^T Q d of a fragment (d = pixel - mean, Q the conic) is a quadratic in
    the pixel's offset from its tile centre: coef @ _pixel_basis. Rows past a tile's list repeat its
    last Gaussian with an exponent of -1e6 (alpha 0).
    """
    offsets = torch.arange(first, first + size, device=table.device)
    count = bins.tile_count.index_select(0, tiles)[:, None]
    rows = bins.tile_start.index_select(0, tiles)[:, None] + torch.minimum(offsets, count - 1)  # stay in the tile
    gauss = bins.entries.index_select(0, rows.view(-1))
    params = table.index_select(0, gauss)  # (A*size, 6 + F)
    mxr, myr, lin_x, lin_y = _row_offsets(params, bins, tiles, size)
    ca, cb, cc, log_opacity = params[:, 2], params[:, 3], params[:, 4], params[:, 5]
    const = log_opacity - 0.5 * (lin_x * mxr + lin_y * myr)
    const.masked_fill_((offsets[None, :] >= count).view(-1), -_INVALID_EXPONENT)
    coef = torch.stack([-0.5 * ca, -cb, -0.5 * cc, lin_x, lin_y, const], dim=-1)
    return _BlockRows(gauss, coef)


def _row_offsets(params: Tensor, bins: TileBins, tiles: Tensor, size: int):
    """Mean minus tile centre (mxr, myr) and Q (mxr, myr) for each row of a block."""
    center = bins.tile_center.index_select(0, tiles).repeat_interleave(size, dim=0)  # (A*size, 2)
    mxr = params[:, 0] - center[:, 0]
    myr = params[:, 1] - center[:, 1]
    lin_x = params[:, 2] * mxr + params[:, 3] * myr
    lin_y = params[:, 3] * mxr + params[:, 4] * myr
    return mxr, myr, lin_x, lin_y


def _raw_alpha(coef: Tensor, basis: Tensor, n_tiles: int) -> Tensor:
    """(A, K, P) o exp(-0.5 d^T Q d) for every fragment of a block: one small matrix product and exp."""
    return torch.mm(coef, basis).exp_().view(n_tiles, -1, basis.shape[1])


def _composite_block(raw_alpha: Tensor, t_start: Tensor, with_gate: bool = False):
    """Front-to-back compositing of one depth block. raw_alpha (A, K, P); t_start (A, P), 0 = pixel done.

    Returns alpha (thresholded and capped), 1 - alpha, transmittance after each fragment,
    t_kept = transmittance before each fragment where it is composited, else 0, and (with_gate)
    -d alpha / d exponent: -raw where 1/255 <= raw < MAX_ALPHA, else 0 (the cap passes no
    gradient, as in gsplat). Plain arithmetic throughout: masked ops are far slower on CPU.
    """
    alpha = torch.nn.functional.threshold(raw_alpha, _alpha_cut(raw_alpha.dtype), 0.0)
    neg_gate = torch.nn.functional.threshold(alpha.neg(), -MAX_ALPHA, 0.0) if with_gate else None
    alpha.clamp_max_(MAX_ALPHA)
    one_minus = torch.rsub(alpha, 1.0)
    t_after = torch.cumprod(one_minus, dim=1).mul_(t_start[:, None, :])
    # Composited iff the transmittance after it stays above the floor (T only falls, so the kept
    # fragments of a pixel are a prefix and the pixel stops at the first one that is not).
    t_kept = torch.nn.functional.threshold(t_after, TRANSMITTANCE_MIN, 0.0).div_(one_minus)
    return alpha, one_minus, t_after, t_kept, neg_gate


def _kept_and_gate(alpha: Tensor, t_after: Tensor):
    """t_kept and the negated alpha gate of _composite_block, from its saved alpha and t_after.

    Capped fragments have alpha == MAX_ALPHA exactly, so the strict threshold drops them as
    the gate from raw alpha does.
    """
    t_kept = torch.nn.functional.threshold(t_after, TRANSMITTANCE_MIN, 0.0).div_(torch.rsub(alpha, 1.0))
    return t_kept, torch.nn.functional.threshold(alpha.neg(), -MAX_ALPHA, 0.0)


def _alpha_cut(dtype) -> float:
    """Largest value below 1/255 in ``dtype``: threshold() keeps x > cut, i.e. alpha >= 1/255."""
    return float(torch.nextafter(torch.tensor(ALPHA_THRESHOLD, dtype=dtype), torch.tensor(0.0, dtype=dtype)))


class _CompositeTiles(torch.autograd.Function):
    """(packed Gaussian table) -> (accumulated features (C*tiles, P, F), final transmittance (C*tiles, P)).

    table: (V, 6 + F) rows [mean_x, mean_y, conic_a, conic_b, conic_c, ln(opacity), features...].
    """

    @staticmethod
    def forward(ctx, table: Tensor, bins: TileBins, pixel_inside: Tensor, basis: Tensor, stats: dict):
        n_feat = table.shape[1] - 6
        n_all_tiles, n_pix = pixel_inside.shape
        accum = table.new_zeros(n_all_tiles, n_pix, n_feat)
        t_final = table.new_ones(n_all_tiles, n_pix)
        t_running = pixel_inside.to(table.dtype)  # 0 marks a finished pixel (or one off the image)
        blocks = []  # (tiles, size, t_start, rows, saved) per chunk: what backward needs
        saved_bytes = 0
        active = torch.nonzero(bins.tile_count > 0).squeeze(1)
        first = 0
        while active.numel():
            # Few tiles left (the long tail of deep tiles): take deeper blocks, so the per-step
            # overhead is paid on a full chunk of fragments rather than on a handful.
            remaining = int(bins.tile_count.index_select(0, active).max()) - first
            size = min(max(DEPTH_BLOCK, BLOCK_ELEMENTS // (len(active) * n_pix)), MAX_DEPTH_BLOCK, remaining)
            chunk_tiles = max(1, BLOCK_ELEMENTS // (size * n_pix))
            for tiles in active.split(chunk_tiles):
                t_start = t_running.index_select(0, tiles)
                rows = _block_rows(table, bins, tiles, first, size)
                alpha, _, t_after, weight, _ = _composite_block(_raw_alpha(rows.coef, basis, len(tiles)), t_start)
                weight.mul_(alpha)
                # Features plus a column of ones: the block's total weight per pixel comes for free.
                features = torch.cat([table.index_select(0, rows.gauss)[:, 6:], table.new_ones(len(rows.gauss), 1)], dim=1)
                summed = torch.bmm(weight.transpose(1, 2), features.view(len(tiles), size, n_feat + 1))
                accum.index_add_(0, tiles, summed[..., :n_feat])
                t_end = t_after[:, -1, :]
                stopped = t_end <= TRANSMITTANCE_MIN
                # A pixel that stopped in this block keeps the transmittance before its stopping
                # fragment: what it started the block with minus what the block composited.
                t_final.index_copy_(0, tiles, torch.where(
                    t_start > 0, torch.where(stopped, t_start - summed[..., n_feat], t_end), t_final.index_select(0, tiles)
                ))  # fmt: skip
                t_running.index_copy_(0, tiles, torch.where(stopped, 0.0, t_end))
                saved = None
                if saved_bytes + 2 * alpha.numel() * alpha.element_size() <= SAVED_FRAGMENT_BYTES:
                    saved = (alpha, t_after)
                    saved_bytes += 2 * alpha.numel() * alpha.element_size()
                blocks.append((tiles, size, t_start, rows, saved))
            first += size
            active = active[(bins.tile_count[active] > first) & (t_running[active] > 0).any(dim=1)]
        stats["fragments"] = sum(len(block[0]) * block[1] for block in blocks) * n_pix
        ctx.blocks = blocks
        ctx.bins = bins
        ctx.basis = basis
        ctx.save_for_backward(table, t_final)
        return accum, t_final

    @staticmethod
    def backward(ctx, grad_accum: Tensor, grad_t_final: Tensor):
        table, t_final = ctx.saved_tensors
        bins, basis = ctx.bins, ctx.basis
        n_feat = table.shape[1] - 6
        grad_table = torch.zeros_like(table)
        if grad_accum is None:
            grad_accum = table.new_zeros(t_final.shape + (n_feat,))
        # Per pixel, the sum of everything behind the current fragment that its (1 - alpha) scales:
        # later fragments' weight * (feature . grad) plus T_final * dL/dT_final.
        behind = t_final * grad_t_final if grad_t_final is not None else torch.zeros_like(t_final)
        for tiles, size, t_start, (gauss, coef), saved in reversed(ctx.blocks):
            if saved is None:
                raw_alpha = _raw_alpha(coef, basis, len(tiles))
                alpha, _, t_after, t_kept, neg_gate = _composite_block(raw_alpha, t_start, with_gate=True)
            else:
                alpha, t_after = saved
                t_kept, neg_gate = _kept_and_gate(alpha, t_after)
            params = table.index_select(0, gauss)
            mxr, myr, lin_x, lin_y = _row_offsets(params, bins, tiles, size)
            weight = t_kept * alpha
            features = params[:, 6:].view(len(tiles), size, n_feat)
            grad_out = grad_accum.index_select(0, tiles)  # (A, P, F)
            feature_dot_grad = torch.bmm(features, grad_out.transpose(1, 2))  # (A, K, P)
            # Per pixel: everything behind fragment i = (behind the block + block total) - prefix_i.
            prefix = torch.cumsum(weight * feature_dot_grad, dim=1)
            behind_start = behind.index_select(0, tiles)
            behind_end = behind_start + prefix[:, -1]
            behind.index_copy_(0, tiles, behind_end)
            behind_each = torch.rsub(prefix, behind_end[:, None, :])
            # dL/dalpha_i = T_i (c_i . g) - behind_i / (1 - alpha_i) for composited fragments,
            # = t_kept * (c.g - behind / t_after) since t_after = T_i (1 - alpha_i); negated here.
            neg_grad_alpha = behind_each.div_(t_after.clamp_min(0.5 * TRANSMITTANCE_MIN)).sub_(feature_dot_grad).mul_(t_kept)
            grad_exponent = neg_grad_alpha.mul_(neg_gate)  # raw = exp(exponent)
            g = torch.mm(grad_exponent.view(-1, basis.shape[1]), basis.T)  # (A*K, 6) grads of the coefficients
            # coef = [-a/2, -b, -c/2, lin_x, lin_y, ln o - (lin_x mxr + lin_y myr)/2], lin = Q (mxr, myr).
            ca, cb, cc = params[:, 2], params[:, 3], params[:, 4]
            g_ca = -0.5 * g[:, 0] + mxr * g[:, 3] - 0.5 * mxr * mxr * g[:, 5]
            g_cb = -g[:, 1] + myr * g[:, 3] + mxr * g[:, 4] - mxr * myr * g[:, 5]
            g_cc = -0.5 * g[:, 2] + myr * g[:, 4] - 0.5 * myr * myr * g[:, 5]
            g_mx = ca * g[:, 3] + cb * g[:, 4] - lin_x * g[:, 5]
            g_my = cb * g[:, 3] + cc * g[:, 4] - lin_y * g[:, 5]
            g_features = torch.bmm(weight, grad_out).view(-1, n_feat)
            rows_grad = torch.cat([torch.stack([g_mx, g_my, g_ca, g_cb, g_cc, g[:, 5]], dim=-1), g_features], dim=-1)
            grad_table.index_add_(0, gauss, rows_grad)
        return grad_table, None, None, None, None


def rasterize(
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
    sh_degree: int | None = None,
    background: Tensor | None = None,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    eps2d: float = 0.3,
    backend: str | Rasterizer = "auto",
) -> tuple[Tensor, Tensor, Tensor, dict]:
    """Render N Gaussians into C pinhole cameras.

    means (N, 3) world; quats (N, 4) wxyz (normalised here); scales (N, 3) standard deviations;
    opacities (N,) in [0, 1]; colors (N, K, 3) SH coefficients when ``sh_degree`` is given, else
    (N, D) features; viewmats (C, 4, 4) world-to-camera (OpenCV: +Z forward, +Y down);
    Ks (C, 3, 3) pixel intrinsics; background (D,) or (C, D), None = black.

    Returns colors (C, H, W, D), alphas (C, H, W, 1), depths (C, H, W, 1) (expected camera z,
    0 where alpha is 0) and ``info`` with "means2d" (C, N, 2, in the autograd graph: call
    ``retain_grad()`` on it before backward for the view-space positional gradient), "radii"
    (C, N, 2) int32 (0 = culled), "depths" (C, N), "width", "height", "n_cameras", "backend"
    ("torch", "native" or "gsplat"); the torch and native paths add "stats" (visible (camera,
    Gaussian) pairs, (Gaussian, tile) entries, fragments evaluated).

    backend: a Rasterizer a run resolved once (``rasterizers.resolve_rasterizer``), or a name,
    resolved here for the means' device: "auto" uses gsplat's CUDA rasterizer for CUDA tensors
    when it can run (warning once and falling back to torch when its kernels fail to compile), the
    native CPU rasterizer (``radiantforge.gaussians.native``, Numba) for CPU tensors (warning once
    and falling back to torch when Numba is missing or fails; float16 inputs or camera gradients
    also use torch), and the pure-torch path otherwise (MPS); "torch" forces the pure-torch path;
    "gsplat" requires gsplat (GsplatUnavailable otherwise); "native" requires the native path
    (NativeUnavailable, or ValueError for inputs it does not take). An unknown name raises
    InputError (a ValueError) listing the known ones; bad shapes raise ValueError naming the argument.
    """
    rasterizer = resolve_rasterizer(backend, means.device)
    inputs = RasterInputs(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree, background,
                          near_plane, far_plane, eps2d)  # fmt: skip
    return rasterizer.render(inputs)


def rasterize_torch(inputs: RasterInputs) -> tuple[Tensor, Tensor, Tensor, dict]:
    """The pure-PyTorch backend: ``rasterize``'s outputs for checked inputs (``rasterizers.checked_inputs``)."""
    means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree = inputs[:10]
    C, N = viewmats.shape[0], means.shape[0]
    device, dtype = means.device, means.dtype
    if N == 0:  # nothing to composite: transmittance 1 everywhere
        accum = torch.zeros(C, height, width, inputs.n_color + 1, device=device, dtype=dtype)
        empty = finish_image(accum, torch.ones_like(accum[..., :1]), inputs.background)
        means2d = torch.zeros(C, N, 2, device=device, dtype=dtype) + 0 * means.sum()  # still in the graph
        radii = torch.zeros(C, N, 2, device=device, dtype=torch.int32)
        return *empty, raster_info(inputs, "torch", means2d, radii, torch.zeros(C, N, device=device, dtype=dtype))

    proj = project_gaussians(means, quats, scales, opacities, viewmats, Ks, width, height, inputs.near_plane,
                             inputs.far_plane, inputs.eps2d)  # fmt: skip
    camera_ids, gaussian_ids = torch.nonzero(proj.visible, as_tuple=True)
    flat_ids = camera_ids * N + gaussian_ids  # (V,) packed (camera, Gaussian) pairs
    visible_opacities = opacities.index_select(0, gaussian_ids)

    if sh_degree is not None:
        camera_centers = torch.linalg.inv(viewmats)[:, :3, 3]  # (C, 3)
        dirs = means.index_select(0, gaussian_ids) - camera_centers.index_select(0, camera_ids)
        features = sh_to_color(sh_degree, dirs, colors.index_select(0, gaussian_ids))  # (V, 3)
    else:
        features = colors.index_select(0, gaussian_ids)
    visible_depths = proj.depths.reshape(C * N).index_select(0, flat_ids)
    table = torch.cat(
        [
            proj.means2d.reshape(C * N, 2).index_select(0, flat_ids),
            proj.conics.reshape(C * N, 3).index_select(0, flat_ids),
            torch.log(visible_opacities)[:, None],
            features,
            visible_depths[:, None],
        ],
        dim=-1,
    )
    with torch.no_grad():
        bins = bin_gaussians(
            camera_ids, table[:, 0:2], table[:, 2:5], opacity_cutoff(visible_opacities), visible_depths, C, width, height
        )
    tiles_x, tiles_y = bins.tiles_x, bins.tiles_y
    pixel_inside = _pixel_inside_mask(C, tiles_x, tiles_y, width, height, device)
    basis = _pixel_basis(device, dtype)
    stats = {"visible": len(table), "tile_entries": len(bins.entries)}
    accum, transmittance = _CompositeTiles.apply(table, bins, pixel_inside, basis, stats)

    accum_image = _tiles_to_image(accum, C, tiles_x, tiles_y, width, height)  # (C, H, W, D + 1)
    t_final = _tiles_to_image(transmittance[..., None], C, tiles_x, tiles_y, width, height)  # (C, H, W, 1)
    images = finish_image(accum_image, t_final, inputs.background)
    return *images, raster_info(inputs, "torch", proj.means2d, proj.radii, proj.depths, stats=stats)


def _pixel_inside_mask(C, tiles_x, tiles_y, width, height, device) -> Tensor:
    """(C * tiles, P) True for tile pixels inside the image (edge tiles can overhang it)."""
    iy = torch.arange(tiles_y * TILE_H, device=device)[:, None] < height
    ix = torch.arange(tiles_x * TILE_W, device=device)[None, :] < width
    inside = (iy & ix).view(tiles_y, TILE_H, tiles_x, TILE_W).permute(0, 2, 1, 3).reshape(tiles_y * tiles_x, TILE_H * TILE_W)
    return inside.repeat(C, 1)


def _tiles_to_image(tiles: Tensor, C, tiles_x, tiles_y, width, height) -> Tensor:
    """(C * tiles, P, F) -> (C, H, W, F)."""
    n_feat = tiles.shape[-1]
    image = tiles.view(C, tiles_y, tiles_x, TILE_H, TILE_W, n_feat).permute(0, 1, 3, 2, 4, 5)
    return image.reshape(C, tiles_y * TILE_H, tiles_x * TILE_W, n_feat)[:, :height, :width]


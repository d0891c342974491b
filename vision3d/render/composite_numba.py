"""Front-to-back compositing and its hand-written backward as Numba kernels (CPU).

Same semantics as :mod:`vision3d.render.composite_torch` and gsplat's
``rasterize_to_pixels`` (thresholds: α ≤ 0.999, skip α < 1/255 or σ < 0, exclusive stop
at T ≤ 1e-4, pixel centres at +0.5). One ``prange`` iteration per tile; a tile first
gathers its Gaussians into small contiguous arrays, splits itself into SUB×SUB pixel
blocks with the Gaussians that can reach each block (exact culling, see ``SUB``), then
walks its pixels.

The backward mirrors gsplat's ``rasterize_to_pixels_bwd``: each pixel walks its list back
to front from the last Gaussian the forward used, recovering ``T_i = T_{i+1} / (1 − α_i)``
and keeping the colour already composited behind. Gradients go to per-intersection slots
(one per (tile, Gaussian) pair, so tiles never race) and are then summed per Gaussian
(:func:`_scatter_rows`). ``absgrad`` sums ``|∂L/∂means2d|`` per pixel, as gsplat's CUDA
backward does.

Kernels always compute in float64 (inputs are converted, results cast back): one compiled
specialisation instead of two, and a backward whose transmittance recovery stays accurate
next to opaque Gaussians. Thresholds are the same constants as gsplat's float32 ones.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import Tensor

from .composite_torch import ALPHA_MAX, ALPHA_MIN, T_MIN
from .tiles import TileBins

# Skip exp() when σ is certainly past the 1/255 cut: σ > log(255·o) + margin. The exact
# test still decides every case the margin lets through, so results are unchanged.
_PREFILTER_MARGIN = 1e-3
# Tiles are split into SUB×SUB pixel blocks; a block only visits the Gaussians whose
# {σ <= cut} ellipse reaches it (plus one pixel of slack). Gaussians left out of a block
# have α < 1/255 at all its pixels, so the skip is exact: it only saves work.
SUB = 4
# Tiles differ a lot in cost: hand them to threads a few at a time (dynamic balancing)
# instead of Numba's default of one contiguous chunk per thread.
_CHUNK = 2


@numba.njit(cache=True)
def _gather_tile(start, end, flatten_ids, means2d, conics, opacities, colors):
    """Copy one tile's Gaussians (front to back) into contiguous arrays."""
    n = end - start
    D = colors.shape[1]
    gx = np.empty(n, means2d.dtype)
    gy = np.empty(n, means2d.dtype)
    ca = np.empty(n, means2d.dtype)
    cb = np.empty(n, means2d.dtype)
    cc = np.empty(n, means2d.dtype)
    op = np.empty(n, means2d.dtype)
    cut = np.empty(n, means2d.dtype)
    col = np.empty((n, D), colors.dtype)
    for k in range(n):
        g = flatten_ids[start + k]
        gx[k] = means2d[g, 0]
        gy[k] = means2d[g, 1]
        ca[k] = conics[g, 0]
        cb[k] = conics[g, 1]
        cc[k] = conics[g, 2]
        o = opacities[g]
        op[k] = o
        cut[k] = math.log(255.0 * o) + _PREFILTER_MARGIN if o > 0 else -1.0
        for d in range(D):
            col[k, d] = colors[g, d]
    return gx, gy, ca, cb, cc, op, cut, col


@numba.njit(cache=True)
def _block_lists(gx, gy, ca, cb, cc, cut, x0, y0, tile_size):
    """Per SUB×SUB block of the tile at pixel (x0, y0): the tile-list positions that can reach it.

    Returns CSR ``(block_offsets [nb*nb + 1], block_ids)``, each block's ids in list (depth) order.
    """
    nb = (tile_size + SUB - 1) // SUB
    n = gx.shape[0]
    lo = np.zeros((n, 2), np.int64)
    hi = np.zeros((n, 2), np.int64)  # exclusive block bounds, x then y
    for k in range(n):
        if not cut[k] >= 0:  # α < 1/255 everywhere: never composited
            continue
        det = ca[k] * cc[k] - cb[k] * cb[k]
        if det > 0 and math.isfinite(det):
            hx = math.sqrt(2.0 * cut[k] * cc[k] / det) + 1.0  # ellipse half-extents (px) + slack
            hy = math.sqrt(2.0 * cut[k] * ca[k] / det) + 1.0
            # pixel centres are at index + 0.5
            px0, px1 = math.floor(gx[k] - 0.5 - hx) - x0, math.ceil(gx[k] - 0.5 + hx) - x0
            py0, py1 = math.floor(gy[k] - 0.5 - hy) - y0, math.ceil(gy[k] - 0.5 + hy) - y0
            if not (math.isfinite(px0) and math.isfinite(px1) and math.isfinite(py0) and math.isfinite(py1)):
                lo[k, 0], lo[k, 1], hi[k, 0], hi[k, 1] = 0, 0, nb, nb
                continue
            lo[k, 0] = min(max(px0 // SUB, 0), nb)
            hi[k, 0] = min(max(px1 // SUB + 1, 0), nb)
            lo[k, 1] = min(max(py0 // SUB, 0), nb)
            hi[k, 1] = min(max(py1 // SUB + 1, 0), nb)
        else:
            lo[k, 0], lo[k, 1], hi[k, 0], hi[k, 1] = 0, 0, nb, nb
    boff = np.zeros(nb * nb + 1, np.int64)
    for k in range(n):
        for by in range(lo[k, 1], hi[k, 1]):
            for bx in range(lo[k, 0], hi[k, 0]):
                boff[by * nb + bx + 1] += 1
    for b in range(nb * nb):
        boff[b + 1] += boff[b]
    bids = np.empty(boff[nb * nb], np.int64)
    cursor = boff[:-1].copy()
    for k in range(n):
        for by in range(lo[k, 1], hi[k, 1]):
            for bx in range(lo[k, 0], hi[k, 0]):
                b = by * nb + bx
                bids[cursor[b]] = k
                cursor[b] += 1
    return boff, bids


@numba.njit(parallel=True, cache=True)
def _composite_fwd(
    means2d,  # [P, 2]
    conics,  # [P, 3]
    colors,  # [P, D]
    opacities,  # [P]
    offsets,  # [n_tiles + 1] int64
    flatten_ids,  # [n_isects] int64
    consts,  # [5] (alpha_max, alpha_min, t_min, 1, 1/2), float64
    centers,  # [max(H, W)] pixel centres i + 0.5, float64
    tile_size,
    tile_width,
    tile_height,
    out_colors,  # [C, H, W, D] zero-initialised
    out_trans,  # [C, H, W] final transmittance
    out_last,  # [C, H, W] int32: position in the pixel's block list of the last Gaussian used, -1 if none
):
    height, width, D = out_colors.shape[1], out_colors.shape[2], out_colors.shape[3]
    alpha_max, alpha_min, t_min, one, half = consts[0], consts[1], consts[2], consts[3], consts[4]
    tiles_per_cam = tile_width * tile_height
    nb = (tile_size + SUB - 1) // SUB
    for t in numba.prange(offsets.shape[0] - 1):
        cam = t // tiles_per_cam
        ty = (t % tiles_per_cam) // tile_width
        tx = t % tile_width
        x0, y0 = tx * tile_size, ty * tile_size
        start, end = offsets[t], offsets[t + 1]
        gx, gy, ca, cb, cc, op, cut, col = _gather_tile(start, end, flatten_ids, means2d, conics, opacities, colors)
        boff, bids = _block_lists(gx, gy, ca, cb, cc, cut, x0, y0, tile_size)
        acc = np.empty(D, colors.dtype)
        for py in range(y0, min(y0 + tile_size, height)):
            fy = centers[py]
            for px in range(x0, min(x0 + tile_size, width)):
                fx = centers[px]
                b = ((py - y0) // SUB) * nb + (px - x0) // SUB
                trans = one
                last = -1
                for d in range(D):
                    acc[d] = 0
                for j in range(boff[b], boff[b + 1]):
                    k = bids[j]
                    dx = gx[k] - fx
                    dy = gy[k] - fy
                    sigma = half * (ca[k] * dx * dx + cc[k] * dy * dy) + cb[k] * dx * dy
                    if sigma < 0 or sigma > cut[k]:
                        continue
                    alpha = min(alpha_max, op[k] * math.exp(-sigma))
                    if alpha < alpha_min:
                        continue
                    next_t = trans * (one - alpha)
                    if next_t <= t_min:
                        break
                    w = alpha * trans
                    for d in range(D):
                        acc[d] += w * col[k, d]
                    trans = next_t
                    last = j
                for d in range(D):
                    out_colors[cam, py, px, d] = acc[d]
                out_trans[cam, py, px] = trans
                out_last[cam, py, px] = last


@numba.njit(parallel=True, cache=True)
def _composite_bwd(
    means2d,  # [P, 2]
    conics,  # [P, 3]
    colors,  # [P, D]
    opacities,  # [P]
    offsets,  # [n_tiles + 1]
    flatten_ids,  # [n_isects]
    consts,  # [5]
    centers,  # [max(H, W)]
    tile_size,
    tile_width,
    tile_height,
    trans_final,  # [C, H, W]
    last_ids,  # [C, H, W]
    v_colors_px,  # [C, H, W, D]
    v_alphas_px,  # [C, H, W]
    grads,  # [n_isects, 8 + D] zero-initialised, one row per intersection (one cache line or two):
    #         means2d (2) | absgrad (2) | conics (3) | opacity (1) | colours (D)
):
    height, width, D = v_colors_px.shape[1], v_colors_px.shape[2], v_colors_px.shape[3]
    alpha_max, alpha_min, one, half = consts[0], consts[1], consts[3], consts[4]
    tiles_per_cam = tile_width * tile_height
    nb = (tile_size + SUB - 1) // SUB
    for t in numba.prange(offsets.shape[0] - 1):
        cam = t // tiles_per_cam
        ty = (t % tiles_per_cam) // tile_width
        tx = t % tile_width
        x0, y0 = tx * tile_size, ty * tile_size
        start, end = offsets[t], offsets[t + 1]
        if end == start:
            continue
        gx, gy, ca, cb, cc, op, cut, col = _gather_tile(start, end, flatten_ids, means2d, conics, opacities, colors)
        boff, bids = _block_lists(gx, gy, ca, cb, cc, cut, x0, y0, tile_size)
        buffer = np.empty(D, colors.dtype)
        vc = np.empty(D, colors.dtype)
        for py in range(y0, min(y0 + tile_size, height)):
            fy = centers[py]
            for px in range(x0, min(x0 + tile_size, width)):
                fx = centers[px]
                t_final = trans_final[cam, py, px]
                trans = t_final
                va = v_alphas_px[cam, py, px]
                for d in range(D):
                    buffer[d] = 0
                    vc[d] = v_colors_px[cam, py, px, d]
                b = ((py - y0) // SUB) * nb + (px - x0) // SUB
                for j in range(last_ids[cam, py, px], boff[b] - 1, -1):
                    k = bids[j]
                    dx = gx[k] - fx
                    dy = gy[k] - fy
                    sigma = half * (ca[k] * dx * dx + cc[k] * dy * dy) + cb[k] * dx * dy
                    if sigma < 0 or sigma > cut[k]:
                        continue
                    vis = math.exp(-sigma)
                    alpha = min(alpha_max, op[k] * vis)
                    if alpha < alpha_min:
                        continue
                    ra = one / (one - alpha)
                    trans = trans * ra
                    fac = alpha * trans
                    i = start + k
                    v_alpha = t_final * ra * va
                    for d in range(D):
                        grads[i, 8 + d] += fac * vc[d]
                        v_alpha += (col[k, d] * trans - buffer[d] * ra) * vc[d]
                        buffer[d] += col[k, d] * fac
                    if op[k] * vis <= alpha_max:
                        v_sigma = -op[k] * vis * v_alpha
                        vx = v_sigma * (ca[k] * dx + cb[k] * dy)
                        vy = v_sigma * (cb[k] * dx + cc[k] * dy)
                        grads[i, 0] += vx
                        grads[i, 1] += vy
                        grads[i, 2] += abs(vx)
                        grads[i, 3] += abs(vy)
                        grads[i, 4] += half * v_sigma * dx * dx
                        grads[i, 5] += v_sigma * dx * dy
                        grads[i, 6] += half * v_sigma * dy * dy
                        grads[i, 7] += vis * v_alpha


@numba.njit(cache=True)
def _scatter_rows(per_isect, flatten_ids, out):  # [n_isects, F] -> out [P, F] (+=)
    """Sum per-intersection gradient rows into their Gaussians (serial: no races)."""
    for i in range(flatten_ids.shape[0]):
        g = flatten_ids[i]
        for f in range(per_isect.shape[1]):
            out[g, f] += per_isect[i, f]


def _constants(width: int, height: int) -> tuple[np.ndarray, np.ndarray]:
    """Thresholds and pixel centres as arrays of the compute dtype (float64)."""
    consts = np.array([ALPHA_MAX, ALPHA_MIN, T_MIN, 1.0, 0.5], dtype=np.float64)
    centers = np.arange(max(width, height), dtype=np.float64) + 0.5
    return consts, centers


def _np(t: Tensor) -> np.ndarray:
    """A float64 (or integer) C-contiguous numpy view/copy of a tensor."""
    t = t.detach()
    return (t.double() if t.is_floating_point() else t).contiguous().numpy()


class _RasterizeToPixels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, bins, n_cameras, width, height, absgrad_target):  # noqa: D102
        dtype = means2d.dtype
        D = colors.shape[-1]
        consts, centers = _constants(width, height)
        out_colors = np.zeros((n_cameras, height, width, D), dtype=consts.dtype)
        out_trans = np.empty((n_cameras, height, width), dtype=consts.dtype)
        out_last = np.empty((n_cameras, height, width), dtype=np.int32)
        with numba.parallel_chunksize(_CHUNK):
            _composite_fwd(
                _np(means2d), _np(conics), _np(colors), _np(opacities), _np(bins.offsets), _np(bins.flatten_ids),
                consts, centers, bins.tile_size, bins.tile_width, bins.tile_height, out_colors, out_trans, out_last,
            )  # fmt: skip
        trans = torch.from_numpy(out_trans)
        last = torch.from_numpy(out_last)
        ctx.save_for_backward(means2d, conics, colors, opacities, bins.offsets, bins.flatten_ids, trans, last)
        ctx.meta = (bins.tile_size, bins.tile_width, bins.tile_height)
        ctx.absgrad_target = absgrad_target
        return torch.from_numpy(out_colors).to(dtype), (1.0 - trans)[..., None].to(dtype)

    @staticmethod
    def backward(ctx, v_colors_px, v_alphas_px):  # noqa: D102
        means2d, conics, colors, opacities, offsets, flatten_ids, trans, last = ctx.saved_tensors
        tile_size, tile_width, tile_height = ctx.meta
        n_isects, D = flatten_ids.shape[0], colors.shape[-1]
        np_dtype = np.float64
        consts, centers = _constants(trans.shape[2], trans.shape[1])
        grads = np.zeros((n_isects, 8 + D), np_dtype)
        with numba.parallel_chunksize(_CHUNK):
            _composite_bwd(
                _np(means2d), _np(conics), _np(colors), _np(opacities), _np(offsets), _np(flatten_ids), consts,
                centers, tile_size, tile_width, tile_height, trans.numpy(), last.numpy(),
                _np(v_colors_px), _np(v_alphas_px[..., 0]), grads,
            )  # fmt: skip
        per_gauss = np.zeros((means2d.shape[0], 8 + D), np_dtype)
        if n_isects:
            _scatter_rows(grads, flatten_ids.numpy(), per_gauss)
        per_gauss = torch.from_numpy(per_gauss)

        def part(lo: int, hi: int, like: Tensor) -> Tensor:
            return per_gauss[:, lo:hi].reshape(like.shape).to(like.dtype)

        if ctx.absgrad_target is not None:
            ctx.absgrad_target.absgrad = part(2, 4, means2d).reshape(ctx.absgrad_target.shape)
        return (part(0, 2, means2d), part(4, 7, conics), part(8, 8 + D, colors), part(7, 8, opacities),
                None, None, None, None, None)  # fmt: skip


def rasterize_to_pixels_numba(
    means2d: Tensor,  # [P, 2]
    conics: Tensor,  # [P, 3]
    colors: Tensor,  # [P, D]
    opacities: Tensor,  # [P]
    width: int,
    height: int,
    n_cameras: int,
    bins: TileBins,
    absgrad_target: Tensor | None = None,  # gets `.absgrad` (its own shape, P·2 entries) in backward
) -> tuple[Tensor, Tensor]:  # colours [C, H, W, D], alphas [C, H, W, 1]
    """Composite every tile with the Numba kernels (no background; callers add ``(1 − alpha)·background``)."""
    dtype = means2d.dtype
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"the Numba rasterizer supports float32 and float64, got {dtype}")
    conics, colors, opacities = conics.to(dtype), colors.to(dtype), opacities.to(dtype)
    return _RasterizeToPixels.apply(means2d, conics, colors, opacities, bins, n_cameras, width, height,
                                    absgrad_target)  # fmt: skip

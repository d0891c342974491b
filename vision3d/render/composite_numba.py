"""Front-to-back compositing and its hand-written backward as Numba kernels (CPU).

Same semantics as :mod:`vision3d.render.composite_torch` and gsplat's
``rasterize_to_pixels`` (thresholds: α ≤ 0.999, skip α < 1/255 or σ < 0, exclusive stop
at T ≤ 1e-4, pixel centres at +0.5). One ``prange`` iteration per tile.

Inside a tile the loops run in *splatting order*: the tile's Gaussians front to back, and
for each one only the pixels inside its ``σ ≤ cut`` ellipse, the cut of
:func:`vision3d.render.tiles.ellipse_cut` that binning culls with (beyond it α < 1/255, so
nothing is composited there). Each row's span of that ellipse is solved
from the quadratic σ(dx) (:func:`_row_span`), so no pixel outside it is ever visited and
the exact per-pixel tests almost never fail. ``exp(−σ)`` is never evaluated per pixel: σ is
quadratic in the pixel's column and row, so ``E = exp(−σ)`` and its ratios to the next column
(``H``), the previous column and the next row (``V``) are each geometric in both directions. A
walker carries ``(E, H, H⁻, V)`` from the first row's span start down the rows and along to each
row's span start with a few products per step (:func:`_walk_columns`), and the span itself is
``E, E·H, E·H²·e^(−a), …``. A Gaussian's tile costs six exponentials, not two per row (the
per-row pair was about 1 ms of 7 at 128²/20k on 2 threads); in float64 the products drift ~1e-15
relative over a tile. Conics with an entry above ``_WALK_CONIC_MAX`` fall back to one exponential
per pixel. Pixels keep their state (transmittance, accumulated colour, done flag) in tile-local
arrays. Every pixel still sees its Gaussians in list order with the per-pixel formulation's
arithmetic (up to that drift); the work is the ellipses' area instead of tile area × list length.

The backward mirrors gsplat's ``rasterize_to_pixels_bwd`` in reverse splatting order:
Gaussians back to front, each pixel (at list positions up to the last Gaussian its forward
used) recovering ``T_i = T_{i+1} / (1 − α_i)`` and keeping the colour composited behind.
A Gaussian's gradient is summed over its pixels in registers and written once to its
per-intersection row (one per (tile, Gaussian) pair, so tiles never race); the rows are
then summed per Gaussian (:func:`_sum_rows`). ``absgrad``
sums ``|∂L/∂means2d|`` per pixel, as gsplat's CUDA backward does.

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

from .cpu_threads import torch_single_threaded
from .numba_cache import use_user_cache
from .projection_numba import float64_numpy
from .thresholds import ALPHA_MAX, ALPHA_MIN, T_MIN
from .tiles import TileBins, ellipse_cut

use_user_cache(__file__)  # before the first @numba.njit(cache=True): Numba fixes the cache folder there

# The walker (exp(−σ) by products, see the module docstring) is used while every conic entry is at most
# this (px⁻²); the default eps2d = 0.3 blur bounds them by 1/0.3. Sharper conics get exp(−σ) per pixel:
# a walk there would multiply ratios as large as exp(±a·16) (overflow).
_WALK_CONIC_MAX = 8.0
# Tiles differ a lot in cost: hand them to threads a few at a time (dynamic balancing)
# instead of Numba's default of one contiguous chunk per thread.
_CHUNK = 2


@numba.njit(cache=True, inline="always")
def _tile_pixels(t, tiles_per_cam, tile_width, tile_size, width, height):
    """Camera and pixel bounds of tile ``t``: ``(cam, x0, y0, x1, y1, tw, n_px)``, ``[x0, x1)`` x ``[y0, y1)``."""
    cam = t // tiles_per_cam
    ty = (t % tiles_per_cam) // tile_width
    tx = t % tile_width
    x0, y0 = tx * tile_size, ty * tile_size
    x1, y1 = min(x0 + tile_size, width), min(y0 + tile_size, height)
    return cam, x0, y0, x1, y1, x1 - x0, (x1 - x0) * (y1 - y0)


@numba.njit(cache=True)
def _gather_tile(start, end, flatten_ids, means2d, conics, opacities, cuts, colors):
    """Copy one tile's Gaussians (front to back) into contiguous arrays; ``cut < 0``: never composited."""
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
        op[k] = opacities[g]
        cut[k] = cuts[g]
        for d in range(D):
            col[k, d] = colors[g, d]
    return gx, gy, ca, cb, cc, op, cut, col


@numba.njit(cache=True, inline="always")
def _positive_definite(gx, gy, a, det):
    """Whether the conic bounds an ellipse (else every pixel of the tile is tested exactly)."""
    return a > 0 and det > 0 and math.isfinite(det) and math.isfinite(gx) and math.isfinite(gy)


@numba.njit(cache=True, inline="always")
def _rows(gy, a, c, det, cut, y0, y1):
    """Pixel rows ``[lo, hi)`` of ``[y0, y1)`` whose centres can lie inside the ellipse ``σ ≤ cut``.

    The ellipse's half-height is ``√(2·cut·a / det)`` for the conic ``(a, b, c)``, ``det = ac − b²``.

    Falls back to all rows when the conic is not positive definite (the exact per-pixel
    test then decides).
    """
    if not (a > 0 and det > 0 and math.isfinite(det) and math.isfinite(gy)):
        return y0, y1
    h = math.sqrt(2.0 * cut * a / det)  # half-height (px)
    lo = max(float(y0), math.ceil(gy - h - 0.5))
    hi = min(float(y1), math.floor(gy + h - 0.5) + 1.0)
    return int(lo), int(max(lo, hi))


@numba.njit(cache=True, inline="always")
def _row_span(gx, dy, a, inv_a, b, det, cut, x0, x1):
    """Pixel columns ``[lo, hi)`` of ``[x0, x1)`` whose centres on a row at offset ``dy`` can have σ ≤ cut.

    σ(dx) = ½a·dx² + b·dy·dx + ½c·dy² ≤ cut has roots ``dx = (−b·dy ± √(2a·cut − det·dy²)) / a``;
    ``dx = gx − (px + 0.5)``, ``inv_a = 1/a``; all columns when degenerate. No slack is needed: ``cut`` carries
    ``CUT_MARGIN`` above the 1/255 threshold, far more than the roots' rounding error.
    """
    if not (a > 0 and det > 0 and math.isfinite(det) and math.isfinite(gx)):
        return x0, x1
    disc = 2.0 * a * cut - det * dy * dy
    if disc < 0:
        return x0, x0
    root = math.sqrt(disc)
    lo = max(float(x0), math.ceil(gx - (root - b * dy) * inv_a - 0.5))
    hi = min(float(x1), math.floor(gx + (root + b * dy) * inv_a - 0.5) + 1.0)
    return int(lo), int(max(lo, hi))


@numba.njit(cache=True, inline="always")
def _walk_ratios(a, b, c):
    """A Gaussian's step factors ``exp(−a), exp(a), exp(−b), exp(b), exp(−c)`` (three exponentials)."""
    qa, qb = math.exp(-a), math.exp(-b)
    return qa, 1.0 / qa, qb, 1.0 / qb, math.exp(-c)


@numba.njit(cache=True, inline="always")
def _walk_start(gx, dy, a, b, c, col, qa, half):
    """Walker state at column ``col`` of the row at offset ``dy``: ``(E, H, Hl, V)``.

    ``E = exp(−σ)`` there, and its ratios to the next column ``H = E(col+1)/E``, the previous column
    ``Hl = E(col−1)/E`` and the next row ``V``. ``σ(dx−1) − σ(dx) = −a·dx + a/2 − b·dy`` and likewise in y.
    """
    dx = gx - (col + half)
    h = math.exp(a * dx - half * a + b * dy)
    e = math.exp(-(half * (a * dx * dx + c * dy * dy) + b * dx * dy))
    return e, h, qa / h, math.exp(c * dy - half * c + b * dx)


@numba.njit(cache=True, inline="always")
def _walk_columns(e, h, hl, v, n, qa, qai, qb, qbi):
    """Move the walker ``n`` columns (right if positive): each ratio is itself geometric."""
    for _ in range(n):
        e, h, hl, v = e * h, h * qa, hl * qai, v * qb
    for _ in range(-n):
        e, h, hl, v = e * hl, h * qai, hl * qa, v * qbi
    return e, h, hl, v


@numba.njit(cache=True, inline="always")
def _walk_to(e, h, hl, v, started, walk, ic, c0, gx, dy, a, b, c, qa, qai, qb, qbi, half):
    """Walker state at column ``c0`` of the current row (cursor at ``ic``), and whether it is walking.

    Starts the walk (three exponentials) at the first span when ``walk``; without it the state stays 1.
    """
    if started:
        return _walk_columns(e, h, hl, v, c0 - ic, qa, qai, qb, qbi) + (True,)
    if walk:
        return _walk_start(gx, dy, a, b, c, c0, qa, half) + (True,)
    return e, h, hl, v, False


@numba.njit(cache=True, inline="always")
def _walk_setup(gx, gy, a, b, c, one):
    """Per Gaussian: ``det = ac − b²``, whether exp(−σ) is walked, the step factors and ``1/a``."""
    det = a * c - b * b
    pd = _positive_definite(gx, gy, a, det)
    walk = pd and max(a, c, abs(b)) <= _WALK_CONIC_MAX
    qa, qai, qb, qbi, qc = _walk_ratios(a, b, c) if walk else (one, one, one, one, one)
    return det, walk, qa, qai, qb, qbi, qc, one / a if pd else one


@numba.njit(cache=True, inline="always")
def _exact_exp(dx, dy, a, b, c, cut, half):
    """``exp(−σ)`` at offset ``(dx, dy)`` by the exact per-pixel test, or −1 where σ ∉ [0, cut] (skip)."""
    sigma = half * (a * dx * dx + c * dy * dy) + b * dx * dy
    if sigma < 0 or sigma > cut:
        return -1.0
    return math.exp(-sigma)


@numba.njit(parallel=True, cache=True)
def _composite_fwd(
    means2d,  # [P, 2]
    conics,  # [P, 3]
    colors,  # [P, D]
    opacities,  # [P]
    cuts,  # [P] ellipse_cut(opacities)
    offsets,  # [n_tiles + 1] int64
    flatten_ids,  # [n_isects] int64
    consts,  # [5] (alpha_max, alpha_min, t_min, 1, 1/2), float64
    tile_size,
    tile_width,
    tile_height,
    out_colors,  # [C, H, W, D] zero-initialised
    out_trans,  # [C, H, W] final transmittance
    out_last,  # [C, H, W] int32: tile-list position of the last Gaussian used, -1 if none
):
    height, width, D = out_colors.shape[1], out_colors.shape[2], out_colors.shape[3]
    alpha_max, alpha_min, t_min, one, half = consts[0], consts[1], consts[2], consts[3], consts[4]
    tiles_per_cam = tile_width * tile_height
    for t in numba.prange(offsets.shape[0] - 1):
        cam, x0, y0, x1, y1, tw, n_px = _tile_pixels(t, tiles_per_cam, tile_width, tile_size, width, height)
        start, end = offsets[t], offsets[t + 1]
        gx, gy, ca, cb, cc, op, cut, col = _gather_tile(start, end, flatten_ids, means2d, conics, opacities, cuts, colors)
        trans = np.ones(n_px, np.float64)
        acc = np.zeros((n_px, D), np.float64)
        last = np.full(n_px, -1, np.int32)
        done = np.zeros(n_px, np.bool_)
        row_done = np.zeros(y1 - y0, np.int64)  # finished pixels per row: full rows are skipped
        n_done = 0
        for k in range(end - start):
            if not cut[k] >= 0:
                continue
            a, b, c, o = ca[k], cb[k], cc[k], op[k]
            det, walk, qa, qai, qb, qbi, qc, inv_a = _walk_setup(gx[k], gy[k], a, b, c, one)
            e = h = hl = v = one  # walker state at column ic of the current row
            ic, started = 0, False
            r0, r1 = _rows(gy[k], a, c, det, cut[k], y0, y1)
            for py in range(r0, r1):
                if started:
                    e, h, hl, v = e * v, h * qb, hl * qbi, v * qc
                if row_done[py - y0] == tw:
                    continue
                dy = gy[k] - (py + half)
                c0, c1 = _row_span(gx[k], dy, a, inv_a, b, det, cut[k], x0, x1)
                if c0 == c1:
                    continue
                e, h, hl, v, started = _walk_to(e, h, hl, v, started, walk, ic, c0, gx[k], dy, a, b, c, qa, qai, qb, qbi,
                                                half)  # fmt: skip
                ic = c0
                vis, ratio = e, h
                row = (py - y0) * tw - x0
                for px in range(c0, c1):
                    p = row + px
                    g = vis
                    vis *= ratio
                    ratio *= qa
                    if done[p]:
                        continue
                    if not walk:  # exact per-pixel test (the span is the whole tile row when not pd)
                        g = _exact_exp(gx[k] - (px + half), dy, a, b, c, cut[k], half)
                        if g < 0:
                            continue
                    alpha = min(alpha_max, o * g)
                    if alpha < alpha_min:
                        continue
                    next_t = trans[p] * (one - alpha)
                    if next_t <= t_min:
                        done[p] = True
                        row_done[py - y0] += 1
                        n_done += 1
                        continue
                    w = alpha * trans[p]
                    for d in range(D):
                        acc[p, d] += w * col[k, d]
                    trans[p] = next_t
                    last[p] = k
            if n_done == n_px:
                break
        for py in range(y0, y1):
            for px in range(x0, x1):
                p = (py - y0) * tw + px - x0
                for d in range(D):
                    out_colors[cam, py, px, d] = acc[p, d]
                out_trans[cam, py, px] = trans[p]
                out_last[cam, py, px] = last[p]


@numba.njit(parallel=True, cache=True)
def _composite_bwd(
    means2d,  # [P, 2]
    conics,  # [P, 3]
    colors,  # [P, D]
    opacities,  # [P]
    cuts,  # [P]
    offsets,  # [n_tiles + 1]
    flatten_ids,  # [n_isects]
    consts,  # [5]
    tile_size,
    tile_width,
    tile_height,
    trans_final,  # [C, H, W]
    last_ids,  # [C, H, W]
    v_colors_px,  # [C, H, W, D]
    v_alphas_px,  # [C, H, W]
    grads,  # [n_isects, 8 + D] zero-initialised, one row per intersection:
    #         means2d (2) | absgrad (2) | conics (3) | opacity (1) | colours (D)
):
    height, width, D = v_colors_px.shape[1], v_colors_px.shape[2], v_colors_px.shape[3]
    alpha_max, alpha_min, one, half = consts[0], consts[1], consts[3], consts[4]
    tiles_per_cam = tile_width * tile_height
    for t in numba.prange(offsets.shape[0] - 1):
        start, end = offsets[t], offsets[t + 1]
        if end == start:
            continue
        cam, x0, y0, x1, y1, tw, n_px = _tile_pixels(t, tiles_per_cam, tile_width, tile_size, width, height)
        gx, gy, ca, cb, cc, op, cut, col = _gather_tile(start, end, flatten_ids, means2d, conics, opacities, cuts, colors)
        # per-pixel state: transmittance (recovered back to front), colour behind, upstream grads
        trans = np.empty(n_px, np.float64)
        t_final = np.empty(n_px, np.float64)
        last = np.empty(n_px, np.int32)
        va = np.empty(n_px, np.float64)
        vc = np.empty((n_px, D), np.float64)
        buffer = np.zeros((n_px, D), np.float64)
        row_last = np.full(y1 - y0, -1, np.int64)  # a row is skipped for Gaussians behind all its pixels' last
        for py in range(y0, y1):
            for px in range(x0, x1):
                p = (py - y0) * tw + px - x0
                t_final[p] = trans_final[cam, py, px]
                trans[p] = t_final[p]
                last[p] = last_ids[cam, py, px]
                row_last[py - y0] = max(row_last[py - y0], last[p])
                va[p] = v_alphas_px[cam, py, px]
                for d in range(D):
                    vc[p, d] = v_colors_px[cam, py, px, d]
        v_col = np.empty(D, np.float64)
        for k in range(end - start - 1, -1, -1):
            if not cut[k] >= 0:
                continue
            a, b, c, o = ca[k], cb[k], cc[k], op[k]
            g_x = g_y = g_ax = g_ay = g_a = g_b = g_c = g_o = 0.0
            for d in range(D):
                v_col[d] = 0.0
            det, walk, qa, qai, qb, qbi, qc, inv_a = _walk_setup(gx[k], gy[k], a, b, c, one)
            e = h = hl = v = one  # walker state at column ic of the current row
            ic, started = 0, False
            r0, r1 = _rows(gy[k], a, c, det, cut[k], y0, y1)
            for py in range(r0, r1):
                if started:
                    e, h, hl, v = e * v, h * qb, hl * qbi, v * qc
                if k > row_last[py - y0]:
                    continue
                dy = gy[k] - (py + half)
                c0, c1 = _row_span(gx[k], dy, a, inv_a, b, det, cut[k], x0, x1)
                if c0 == c1:
                    continue
                e, h, hl, v, started = _walk_to(e, h, hl, v, started, walk, ic, c0, gx[k], dy, a, b, c, qa, qai, qb, qbi,
                                                half)  # fmt: skip
                ic = c0
                g, ratio = e, h
                row = (py - y0) * tw - x0
                for px in range(c0, c1):
                    p = row + px
                    vis = g
                    g *= ratio
                    ratio *= qa
                    if k > last[p]:
                        continue
                    dx = gx[k] - (px + half)
                    if not walk:  # exact per-pixel test (the span is the whole tile row when not pd)
                        vis = _exact_exp(dx, dy, a, b, c, cut[k], half)
                        if vis < 0:
                            continue
                    alpha = min(alpha_max, o * vis)
                    if alpha < alpha_min:
                        continue
                    ra = one / (one - alpha)
                    trans[p] *= ra
                    fac = alpha * trans[p]
                    v_alpha = t_final[p] * ra * va[p]
                    for d in range(D):
                        v_col[d] += fac * vc[p, d]
                        v_alpha += (col[k, d] * trans[p] - buffer[p, d] * ra) * vc[p, d]
                        buffer[p, d] += col[k, d] * fac
                    if o * vis <= alpha_max:
                        v_sigma = -o * vis * v_alpha
                        vx = v_sigma * (a * dx + b * dy)
                        vy = v_sigma * (b * dx + c * dy)
                        g_x += vx
                        g_y += vy
                        g_ax += abs(vx)
                        g_ay += abs(vy)
                        g_a += half * v_sigma * dx * dx
                        g_b += v_sigma * dx * dy
                        g_c += half * v_sigma * dy * dy
                        g_o += vis * v_alpha
            i = start + k
            grads[i, 0], grads[i, 1], grads[i, 2], grads[i, 3] = g_x, g_y, g_ax, g_ay
            grads[i, 4], grads[i, 5], grads[i, 6], grads[i, 7] = g_a, g_b, g_c, g_o
            for d in range(D):
                grads[i, 8 + d] = v_col[d]


@numba.njit(cache=True)
def _sum_rows(per_isect, flatten_ids, out):  # [n_isects, F] -> out [P, F] (+=)
    """Sum per-intersection gradient rows into their Gaussians.

    One thread: a sub-millisecond pass at 100k intersections, where a parallel version
    paid more in per-thread partial arrays and waking threads than it saved.
    """
    for i in range(flatten_ids.shape[0]):
        g = flatten_ids[i]
        for f in range(per_isect.shape[1]):
            out[g, f] += per_isect[i, f]


def _constants() -> np.ndarray:
    """Thresholds as an array of the compute dtype (float64)."""
    return np.array([ALPHA_MAX, ALPHA_MIN, T_MIN, 1.0, 0.5], dtype=np.float64)


class _RasterizeToPixels(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means2d, conics, colors, opacities, bins, n_cameras, width, height, absgrad_target):  # noqa: D102
        dtype = means2d.dtype
        D = colors.shape[-1]
        consts = _constants()
        out_colors = np.zeros((n_cameras, height, width, D), dtype=consts.dtype)
        out_trans = np.empty((n_cameras, height, width), dtype=consts.dtype)
        out_last = np.empty((n_cameras, height, width), dtype=np.int32)
        cuts = ellipse_cut(opacities)
        with numba.parallel_chunksize(_CHUNK):
            _composite_fwd(
                *(float64_numpy(t) for t in (means2d, conics, colors, opacities, cuts)),
                bins.offsets.contiguous().numpy(), bins.flatten_ids.contiguous().numpy(), consts,
                bins.tile_size, bins.tile_width, bins.tile_height, out_colors, out_trans, out_last,
            )  # fmt: skip
        trans = torch.from_numpy(out_trans)
        last = torch.from_numpy(out_last)
        ctx.save_for_backward(means2d, conics, colors, opacities, cuts, bins.offsets.contiguous(),
                              bins.flatten_ids.contiguous(), trans, last)  # fmt: skip
        ctx.meta = (bins.tile_size, bins.tile_width, bins.tile_height)
        ctx.absgrad_target = absgrad_target
        return torch.from_numpy(out_colors).to(dtype), (1.0 - trans)[..., None].to(dtype)

    @staticmethod
    @torch_single_threaded()  # runs between Numba kernels: see vision3d.render.cpu_threads
    def backward(ctx, v_colors_px, v_alphas_px):  # noqa: D102
        means2d, conics, colors, opacities, cuts, offsets, flatten_ids, trans, last = ctx.saved_tensors
        tile_size, tile_width, tile_height = ctx.meta
        n_isects, D = flatten_ids.shape[0], colors.shape[-1]
        np_dtype = np.float64
        consts = _constants()
        grads = np.zeros((n_isects, 8 + D), np_dtype)
        with numba.parallel_chunksize(_CHUNK):
            _composite_bwd(
                *(float64_numpy(t) for t in (means2d, conics, colors, opacities, cuts)), offsets.numpy(),
                flatten_ids.numpy(), consts, tile_size, tile_width, tile_height, trans.numpy(), last.numpy(),
                float64_numpy(v_colors_px), float64_numpy(v_alphas_px[..., 0]), grads,
            )  # fmt: skip
        per_gauss = np.zeros((means2d.shape[0], 8 + D), np_dtype)
        if n_isects:
            _sum_rows(grads, flatten_ids.numpy(), per_gauss)
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

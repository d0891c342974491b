"""Tile binning as Numba kernels; same result as :func:`vision3d.render.tiles.isect_tiles`.

Visible Gaussians are ordered front to back, ties in index order
(:func:`_radix_argsort`: a stable LSD radix sort of the depths' IEEE bits, exact for
float32 and float64). In parallel over Gaussians, each lists the tiles of its rectangle
(:func:`.tiles.tile_rects`) that it can reach — given conics and opacities, those its α ≥ 1/255
ellipse meets (:func:`.tiles.ellipse_meets_rect`) — and one serial counting sort over
those pairs, in visiting order, fills the tiles' lists. Every tile's list comes out depth-sorted
with ties in index order, exactly like the torch version and gsplat's radix sort.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import Tensor

from .numba_cache import use_user_cache
from .projection_numba import float64_numpy
from .tiles import TileBins, ellipse_cut, tile_grid, tile_rects

use_user_cache(__file__)  # before the first @numba.njit(cache=True): Numba fixes the cache folder there

_DIGIT_BITS = 16


@numba.njit(cache=True)
def _radix_argsort(keys):  # [n] uint64 -> [n] int64, stable
    """Indices that sort ``keys`` ascending, equal keys in index order (LSD radix, 16-bit digits)."""
    n = keys.shape[0]
    idx = np.arange(n)
    tmp = np.empty(n, np.int64)
    mask = np.uint64((1 << _DIGIT_BITS) - 1)
    for shift in range(0, 64, _DIGIT_BITS):
        s = np.uint64(shift)
        counts = np.zeros((1 << _DIGIT_BITS) + 1, np.int64)
        for i in range(n):
            counts[int((keys[idx[i]] >> s) & mask) + 1] += 1
        if counts.max() == n:  # one digit value only: this pass would not move anything
            continue
        for d in range(1 << _DIGIT_BITS):
            counts[d + 1] += counts[d]
        for i in range(n):
            d = int((keys[idx[i]] >> s) & mask)
            tmp[counts[d]] = idx[i]
            counts[d] += 1
        idx, tmp = tmp, idx
    return idx


def _sortable_bits(values: np.ndarray) -> np.ndarray:
    """Unsigned integers that order like the floats ``values`` (sign bit flipped, negatives inverted)."""
    if values.dtype == np.float64:
        bits = values.view(np.uint64)
        sign = np.uint64(1 << 63)
    else:
        bits = values.astype(np.float32).view(np.uint32).astype(np.uint64)
        sign = np.uint64(1 << 31)
    negative = (bits & sign) != 0
    return np.where(negative, ~bits if values.dtype == np.float64 else (~bits) & np.uint64(0xFFFFFFFF), bits | sign)


@numba.njit(cache=True, inline="always")
def _meets_rect(gx, gy, a, b, c, cut, xa, xb, ya, yb):
    """Scalar :func:`.tiles.ellipse_meets_rect`: does ``σ ≤ cut`` reach the rectangle of pixel centres?"""
    if not cut >= 0:
        return False
    det = a * c - b * b
    if not (a > 0 and c > 0 and det > 0 and math.isfinite(det) and math.isfinite(gx) and math.isfinite(gy)):
        return True
    if xa <= gx <= xb and ya <= gy <= yb:
        return True
    for px in (xa, xb):  # vertical edges: best dy for this dx, clamped to the edge
        dx = gx - px
        dy = min(max(-b * dx / c, gy - yb), gy - ya)
        if 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy <= cut:
            return True
    for py in (ya, yb):  # horizontal edges
        dy = gy - py
        dx = min(max(-b * dy / a, gx - xb), gx - xa)
        if 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy <= cut:
            return True
    return False


@numba.njit(cache=True)
def _gather_ordered(order, rects, means2d, conics, cut):
    """Per-Gaussian binning inputs in visiting order, contiguous: ``[n, 4]`` rects and ``[n, 6]`` ellipses."""
    n = order.shape[0]
    r = np.empty((n, 4), np.int64)
    e = np.empty((n, 6), np.float64)  # gx, gy, a, b, c, cut
    for j in range(n):
        i = order[j]
        for k in range(4):
            r[j, k] = rects[i, k]
        e[j, 0], e[j, 1] = means2d[i, 0], means2d[i, 1]
        e[j, 2], e[j, 3], e[j, 4], e[j, 5] = conics[i, 0], conics[i, 1], conics[i, 2], cut[i]
    return r, e


@numba.njit(parallel=True, cache=True)
def _live_tiles(rects, ellipses, cam_of, tile_size, width, height, tile_width, tiles_per_cam):
    """Every ordered Gaussian's live tiles (global tile ids, row-major), parallel over Gaussians.

    Returns ``(tiles, first, n_live)``: Gaussian ``j``'s tiles are ``tiles[first[j] : first[j] + n_live[j]]``
    (``first`` is the prefix sum of the rectangles' sizes, so each Gaussian writes its own slots).
    """
    n = rects.shape[0]
    first = np.zeros(n + 1, np.int64)
    for j in range(n):
        first[j + 1] = first[j] + (rects[j, 1] - rects[j, 0]) * (rects[j, 3] - rects[j, 2])
    tiles = np.empty(first[n], np.int64)
    n_live = np.zeros(n, np.int64)
    for j in numba.prange(n):
        e = ellipses[j]
        gx, gy, a, b, c, cut = e[0], e[1], e[2], e[3], e[4], e[5]
        k = first[j]
        for ty in range(rects[j, 2], rects[j, 3]):
            y0 = ty * tile_size
            ya, yb = y0 + 0.5, min(y0 + tile_size, height) - 0.5
            for tx in range(rects[j, 0], rects[j, 1]):
                x0 = tx * tile_size
                if _meets_rect(gx, gy, a, b, c, cut, x0 + 0.5, min(x0 + tile_size, width) - 0.5, ya, yb):
                    tiles[k] = cam_of[j] * tiles_per_cam + ty * tile_width + tx
                    k += 1
        n_live[j] = k - first[j]
    return tiles, first, n_live


@numba.njit(cache=True)
def _bin(order, tiles, first, n_live, depth_bits, n_tiles, tiles_per_cam, offsets, tiles_per_gauss):
    """Stable counting sort of the live (Gaussian, tile) pairs by tile (one thread: ~0.3 ms at 60k pairs).

    Pairs are visited in ``order`` (front to back; tile ids include the camera), so every tile's list comes out
    depth-sorted with ties in index order. Also writes gsplat's sort key of every intersection
    (``isect_ids``, for ``info``) and the per-Gaussian tile counts.
    """
    counts = np.zeros(n_tiles, dtype=np.int64)
    for j in range(order.shape[0]):
        for k in range(first[j], first[j] + n_live[j]):
            counts[tiles[k]] += 1
    offsets[0] = 0
    for t in range(n_tiles):
        offsets[t + 1] = offsets[t] + counts[t]
    flatten_ids = np.empty(offsets[n_tiles], dtype=np.int64)
    isect_ids = np.empty(offsets[n_tiles], dtype=np.int64)
    tile_bits = 0
    while (1 << tile_bits) <= tiles_per_cam:  # == tiles_per_cam.bit_length()
        tile_bits += 1
    tile_keys = np.empty(n_tiles, np.int64)  # camera and tile bits of gsplat's key, per global tile
    for t in range(n_tiles):
        tile_keys[t] = ((t // tiles_per_cam) << (32 + tile_bits)) | ((t % tiles_per_cam) << 32)
    cursor = offsets[:-1].copy()
    for j in range(order.shape[0]):
        i = order[j]
        tiles_per_gauss[i] = n_live[j]
        for k in range(first[j], first[j] + n_live[j]):
            t = tiles[k]
            flatten_ids[cursor[t]] = i
            isect_ids[cursor[t]] = tile_keys[t] | depth_bits[i]
            cursor[t] += 1
    return flatten_ids, isect_ids


@torch.no_grad()
def isect_tiles_numba(
    means2d: Tensor,  # [P, 2]
    radii: Tensor,  # [P] int, 0 = culled
    depths: Tensor,  # [P]
    camera_ids: Tensor,  # [P] int64
    n_cameras: int,
    width: int,
    height: int,
    tile_size: int = 16,
    conics: Tensor | None = None,  # [P, 3], with opacities: keep only tiles the α ≥ 1/255 ellipse meets
    opacities: Tensor | None = None,  # [P]
) -> TileBins:
    """Bin projected Gaussians into tiles, each list front to back (CPU tensors)."""
    tile_width, tile_height = tile_grid(width, height, tile_size)
    n_tiles = n_cameras * tile_width * tile_height
    xmin, xmax, ymin, ymax = tile_rects(means2d.detach(), radii, tile_size, tile_width, tile_height)
    rects = torch.stack([xmin, xmax, ymin, ymax], dim=-1).numpy()  # [P, 4]
    visible = torch.nonzero(radii > 0).flatten().numpy()
    depth_np = depths.detach().contiguous().numpy()
    order = visible[_radix_argsort(_sortable_bits(depth_np[visible]))]  # front to back
    P = means2d.shape[0]
    if conics is None:  # gsplat's square: a unit circle with an infinite cut meets every tile
        conics, cut = torch.tensor([1.0, 0.0, 1.0]).expand(P, 3), torch.full((P,), torch.inf)
    else:
        cut = ellipse_cut(opacities)
    rects_o, ellipses = _gather_ordered(order, rects, *(float64_numpy(t) for t in (means2d, conics, cut)))
    offsets = np.empty(n_tiles + 1, dtype=np.int64)
    tiles_per_gauss = np.zeros(P, dtype=np.int32)
    depth_bits = depths.detach().float().contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    cam_of = camera_ids.contiguous().numpy()[order]
    tiles_per_cam = tile_width * tile_height
    tiles, first, n_live = _live_tiles(rects_o, ellipses, cam_of, tile_size, width, height, tile_width, tiles_per_cam)
    flatten_ids, isect_ids = _bin(order, tiles, first, n_live, depth_bits.numpy(), n_tiles, tiles_per_cam, offsets,
                                  tiles_per_gauss)  # fmt: skip
    return TileBins(tile_width, tile_height, tile_size, torch.from_numpy(offsets), torch.from_numpy(flatten_ids),
                    torch.from_numpy(tiles_per_gauss), torch.from_numpy(isect_ids))  # fmt: skip

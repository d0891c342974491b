"""Tile binning as Numba kernels; same result as :func:`vision3d.render.tiles.isect_tiles`.

Visible Gaussians are ordered by camera, then front to back, ties in index order
(:func:`_radix_argsort`: a stable LSD radix sort of the depths' IEEE bits, exact for
float32 and float64). Binning is a counting sort run in parallel over rows of tiles: each
row walks its camera's ordered Gaussians, counts those whose tile rectangle
(:func:`.tiles.tile_rects`) covers the row into a per-tile histogram, and a second pass
writes the ids into their tile's slots. Every tile's list comes out depth-sorted with ties
in index order, exactly like the torch version and gsplat's radix sort.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

from .tiles import TileBins, tile_grid, tile_rects

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


@numba.njit(cache=True)
def _group_by_camera(order, camera_ids, n_cameras):
    """Stable counting sort of ``order`` by camera: ``(ordered, camera_offsets [C + 1])``."""
    cam_off = np.zeros(n_cameras + 1, np.int64)
    for i in order:
        cam_off[camera_ids[i] + 1] += 1
    for c in range(n_cameras):
        cam_off[c + 1] += cam_off[c]
    out = np.empty(order.shape[0], np.int64)
    cursor = cam_off[:-1].copy()
    for i in order:
        out[cursor[camera_ids[i]]] = i
        cursor[camera_ids[i]] += 1
    return out, cam_off


@numba.njit(parallel=True, cache=True)
def _bin(order, cam_off, rects, depth_bits, n_cameras, tile_width, tile_height, offsets):
    """Counting sort of (Gaussian, tile) pairs by tile, parallel over rows of tiles.

    ``order`` holds visible Gaussians grouped by camera (``cam_off``), each group front to
    back. Also writes gsplat's sort key of every intersection (``isect_ids``, for ``info``).
    """
    tiles_per_cam = tile_width * tile_height
    n_tiles = n_cameras * tiles_per_cam
    counts = np.zeros(n_tiles, dtype=np.int64)
    for r in numba.prange(n_cameras * tile_height):
        cam, ty = r // tile_height, r % tile_height
        base = cam * tiles_per_cam + ty * tile_width
        for j in range(cam_off[cam], cam_off[cam + 1]):
            i = order[j]
            if rects[i, 2] <= ty < rects[i, 3]:
                for tx in range(rects[i, 0], rects[i, 1]):
                    counts[base + tx] += 1
    offsets[0] = 0
    for t in range(n_tiles):
        offsets[t + 1] = offsets[t] + counts[t]
    flatten_ids = np.empty(offsets[n_tiles], dtype=np.int64)
    isect_ids = np.empty(offsets[n_tiles], dtype=np.int64)
    tile_bits = 0
    while (1 << tile_bits) <= tiles_per_cam:  # == tiles_per_cam.bit_length()
        tile_bits += 1
    for r in numba.prange(n_cameras * tile_height):
        cam, ty = r // tile_height, r % tile_height
        base = cam * tiles_per_cam + ty * tile_width
        cam_key = cam << (32 + tile_bits)
        cursor = offsets[base : base + tile_width].copy()
        for j in range(cam_off[cam], cam_off[cam + 1]):
            i = order[j]
            if rects[i, 2] <= ty < rects[i, 3]:
                for tx in range(rects[i, 0], rects[i, 1]):
                    flatten_ids[cursor[tx]] = i
                    isect_ids[cursor[tx]] = cam_key | ((ty * tile_width + tx) << 32) | depth_bits[i]
                    cursor[tx] += 1
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
) -> TileBins:
    """Bin projected Gaussians into tiles, each list front to back (CPU tensors)."""
    tile_width, tile_height = tile_grid(width, height, tile_size)
    n_tiles = n_cameras * tile_width * tile_height
    xmin, xmax, ymin, ymax = tile_rects(means2d.detach(), radii, tile_size, tile_width, tile_height)
    rects = torch.stack([xmin, xmax, ymin, ymax], dim=-1).numpy()  # [P, 4]
    visible = torch.nonzero(radii > 0).flatten().numpy()
    depth_np = depths.detach().contiguous().numpy()
    by_depth = visible[_radix_argsort(_sortable_bits(depth_np[visible]))]
    order, cam_off = _group_by_camera(by_depth, camera_ids.contiguous().numpy(), n_cameras)
    offsets = np.empty(n_tiles + 1, dtype=np.int64)
    depth_bits = depths.detach().float().contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    flatten_ids, isect_ids = _bin(order, cam_off, rects, depth_bits.numpy(), n_cameras, tile_width, tile_height,
                                  offsets)  # fmt: skip
    tiles_per_gauss = ((xmax - xmin) * (ymax - ymin)).to(torch.int32)
    return TileBins(tile_width, tile_height, tile_size, torch.from_numpy(offsets), torch.from_numpy(flatten_ids),
                    tiles_per_gauss, torch.from_numpy(isect_ids))  # fmt: skip

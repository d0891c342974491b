"""Tile binning as Numba kernels; same result as :func:`vision3d.render.tiles.isect_tiles`.

Gaussians are visited front to back (one stable torch sort of the depths), each one's
tile rectangle (:func:`.tiles.tile_rects`) is counted into a per-tile histogram, and a second pass writes the ids
into their tile's slot: a counting sort, so every tile's list comes out depth-sorted with
ties in index order, exactly like the torch version and gsplat's radix sort.
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from torch import Tensor

from .tiles import TileBins, tile_rects


@numba.njit(cache=True)
def _bin(order, rects, camera_ids, depth_bits, tile_width, tile_height, n_tiles, offsets):
    """Counting sort of (Gaussian, tile) pairs by tile, visiting Gaussians in ``order``.

    Also writes gsplat's sort key of every intersection (``isect_ids``, for ``info``).
    """
    tiles_per_cam = tile_width * tile_height
    counts = np.zeros(n_tiles, dtype=np.int64)
    for i in order:
        base = camera_ids[i] * tiles_per_cam
        for ty in range(rects[i, 2], rects[i, 3]):
            for tx in range(rects[i, 0], rects[i, 1]):
                counts[base + ty * tile_width + tx] += 1
    offsets[0] = 0
    for t in range(n_tiles):
        offsets[t + 1] = offsets[t] + counts[t]
    flatten_ids = np.empty(offsets[n_tiles], dtype=np.int64)
    isect_ids = np.empty(offsets[n_tiles], dtype=np.int64)
    tile_bits = 0
    while (1 << tile_bits) <= tiles_per_cam:  # == tiles_per_cam.bit_length()
        tile_bits += 1
    cursor = offsets[:-1].copy()
    for i in order:
        base = camera_ids[i] * tiles_per_cam
        cam_key = camera_ids[i] << (32 + tile_bits)
        for ty in range(rects[i, 2], rects[i, 3]):
            for tx in range(rects[i, 0], rects[i, 1]):
                t = base + ty * tile_width + tx
                flatten_ids[cursor[t]] = i
                isect_ids[cursor[t]] = cam_key | ((ty * tile_width + tx) << 32) | depth_bits[i]
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
) -> TileBins:
    """Bin projected Gaussians into tiles, each list front to back (CPU tensors)."""
    tile_width = -(-width // tile_size)
    tile_height = -(-height // tile_size)
    n_tiles = n_cameras * tile_width * tile_height
    xmin, xmax, ymin, ymax = tile_rects(means2d.detach(), radii, tile_size, tile_width, tile_height)
    rects = torch.stack([xmin, xmax, ymin, ymax], dim=-1)  # [P, 4]
    order = torch.nonzero(radii > 0).flatten()
    order = order[torch.sort(depths.detach()[order], stable=True).indices]
    offsets = np.empty(n_tiles + 1, dtype=np.int64)
    depth_bits = depths.detach().float().contiguous().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    flatten_ids, isect_ids = _bin(order.numpy(), rects.numpy(), camera_ids.contiguous().numpy(),
                                  depth_bits.numpy(), tile_width, tile_height, n_tiles, offsets)  # fmt: skip
    tiles_per_gauss = ((xmax - xmin) * (ymax - ymin)).to(torch.int32)
    return TileBins(tile_width, tile_height, tile_size, torch.from_numpy(offsets), torch.from_numpy(flatten_ids),
                    tiles_per_gauss, torch.from_numpy(isect_ids))  # fmt: skip

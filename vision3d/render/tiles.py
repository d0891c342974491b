"""Tile binning in torch: which Gaussians touch which 16×16 tile, front to back.

Follows gsplat 1.4's ``isect_tiles`` + ``isect_offset_encode``: a visible Gaussian
(``radii > 0``) covers the tiles ``[floor((x − r)/ts), ceil((x + r)/ts))`` in x (same in y),
clamped to the image's tiles; each tile's list is sorted by depth, ties broken by the
Gaussian's flat index (gsplat's stable radix sort gives the same order).

Given the conics and opacities (ours, not gsplat 1.4), a tile of that square is kept only
where the Gaussian can be composited there: its ellipse ``σ ≤ log(o / ALPHA_MIN) +
CUT_MARGIN`` (outside it α < 1/255) meets the rectangle of the tile's pixel centres
(:func:`ellipse_meets_rect`). The square of radius 3σ_max misses that ellipse on about a third of
its tiles for random anisotropic Gaussians (measured: 85k → 59k intersections at 128²/20k, 498k →
314k at 256²/50k); the dropped intersections add nothing to any pixel, so images and gradients are
unchanged and compositing skips their per-tile setup.

All entries are flat over "projected Gaussians" ``P``: ``P = C·N`` in gsplat's unpacked
layout (entry ``c·N + n``), or ``P = nnz`` in the packed layout. ``camera_ids[P]`` says
which camera each entry belongs to.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .thresholds import ALPHA_MIN, CUT_MARGIN


@dataclass
class TileBins:
    """Per-tile, depth-sorted intersection lists (CSR layout over ``C·tile_height·tile_width`` tiles)."""

    tile_width: int
    tile_height: int
    tile_size: int
    offsets: Tensor  # [C * tile_height * tile_width + 1] int64, list of tile t is flatten_ids[offsets[t]:offsets[t+1]]
    flatten_ids: Tensor  # [n_isects] int64, index into the P projected Gaussians
    tiles_per_gauss: Tensor  # [P] int32
    isect_ids: Tensor | None = None  # [n_isects] int64 gsplat sort keys, when the binning produced them

    @property
    def n_tiles(self) -> int:
        return self.offsets.numel() - 1

    def isect_offsets(self, n_cameras: int) -> Tensor:  # [C, tile_height, tile_width] int32 (gsplat's layout)
        return self.offsets[:-1].to(torch.int32).reshape(n_cameras, self.tile_height, self.tile_width)


def tile_grid(width: int, height: int, tile_size: int) -> tuple[int, int]:
    """Tiles per row and per column covering a ``width × height`` image (the last ones partial)."""
    return -(-width // tile_size), -(-height // tile_size)


def tile_rects(
    means2d: Tensor,  # [P, 2]
    radii: Tensor,  # [P] int
    tile_size: int,
    tile_width: int,
    tile_height: int,
) -> tuple[Tensor, Tensor, Tensor, Tensor]:  # xmin, xmax, ymin, ymax, each [P] int64 (max exclusive)
    """gsplat's tile rectangle of each Gaussian; empty (min == max) when ``radii == 0``."""
    r = radii.to(means2d.dtype) / tile_size
    tx, ty = means2d[:, 0] / tile_size, means2d[:, 1] / tile_size
    xmin = torch.floor(tx - r).clamp(0, tile_width).long()
    xmax = torch.ceil(tx + r).clamp(0, tile_width).long()
    ymin = torch.floor(ty - r).clamp(0, tile_height).long()
    ymax = torch.ceil(ty + r).clamp(0, tile_height).long()
    empty = radii <= 0
    xmax = torch.where(empty, xmin, xmax)
    ymax = torch.where(empty, ymin, ymax)
    return xmin, xmax, ymin, ymax


def ellipse_cut(opacities: Tensor) -> Tensor:  # [P] -> [P]
    """``σ`` bound of the ellipse where a Gaussian of opacity ``o`` reaches α ≥ 1/255 (negative: nowhere)."""
    o = opacities.detach().double()
    return torch.where(o > 0, torch.log(o.clamp_min(1e-300) / ALPHA_MIN) + CUT_MARGIN, -1.0)


def ellipse_meets_rect(
    means2d: Tensor,  # [M, 2] pixels
    conics: Tensor,  # [M, 3] (a, b, c)
    cut: Tensor,  # [M] (ellipse_cut)
    xa: Tensor, xb: Tensor, ya: Tensor, yb: Tensor,  # [M] rectangle of pixel centres, inclusive
) -> Tensor:  # [M] bool
    """Whether ``σ(d) = ½(a·dx² + c·dy²) + b·dx·dy ≤ cut`` somewhere in the rectangle (``d = mean − p``).

    Exact minimum of the quadratic over the (continuous) rectangle: 0 when the mean is inside,
    else the least of the four edges' minima (each a clamped 1D quadratic). Conservative: a
    conic that is not positive definite, or non-finite, counts as meeting every rectangle;
    ``cut < 0`` meets none.
    """
    gx, gy = means2d[:, 0].double(), means2d[:, 1].double()
    a, b, c = conics[:, 0].double(), conics[:, 1].double(), conics[:, 2].double()
    xa, xb, ya, yb = xa.double(), xb.double(), ya.double(), yb.double()
    det = a * c - b * b
    definite = (a > 0) & (c > 0) & (det > 0) & torch.isfinite(det) & torch.isfinite(gx) & torch.isfinite(gy)
    a_s, c_s = torch.where(definite, a, 1.0), torch.where(definite, c, 1.0)

    def sigma(dx: Tensor, dy: Tensor) -> Tensor:
        return 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy

    least = torch.where((xa <= gx) & (gx <= xb) & (ya <= gy) & (gy <= yb), 0.0, torch.inf)
    for px in (xa, xb):  # vertical edges: best dy for this dx, clamped to the edge
        dx = gx - px
        dy = torch.minimum(torch.maximum(-b * dx / c_s, gy - yb), gy - ya)
        least = torch.minimum(least, sigma(dx, dy))
    for py in (ya, yb):  # horizontal edges
        dy = gy - py
        dx = torch.minimum(torch.maximum(-b * dy / a_s, gx - xb), gx - xa)
        least = torch.minimum(least, sigma(dx, dy))
    return (cut >= 0) & (~definite | (least <= cut))


@torch.no_grad()
def isect_tiles(
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
    """Bin projected Gaussians into tiles, each tile's list sorted front to back (vectorised torch)."""
    tile_width, tile_height = tile_grid(width, height, tile_size)
    n_tiles = n_cameras * tile_width * tile_height
    means2d, depths = means2d.detach(), depths.detach()
    xmin, xmax, ymin, ymax = tile_rects(means2d, radii, tile_size, tile_width, tile_height)
    w = xmax - xmin
    counts = w * (ymax - ymin)  # [P]
    # Visit Gaussians front to back (stable: ties keep index order), emit their tiles,
    # then a stable sort by tile keeps that depth order inside every tile.
    order = torch.sort(depths, stable=True).indices  # [P]
    order = order[counts[order] > 0]
    ids = torch.repeat_interleave(order, counts[order])  # [n_isects]
    starts = torch.cumsum(counts[order], 0) - counts[order]
    local = torch.arange(ids.numel(), device=ids.device) - torch.repeat_interleave(starts, counts[order])
    tx = xmin[ids] + local % w[ids]
    ty = ymin[ids] + local // w[ids]
    if conics is not None:
        x0, y0 = tx * tile_size, ty * tile_size
        live = ellipse_meets_rect(
            means2d[ids], conics.detach()[ids], ellipse_cut(opacities)[ids],
            x0 + 0.5, (x0 + tile_size).clamp(max=width) - 0.5, y0 + 0.5, (y0 + tile_size).clamp(max=height) - 0.5,
        )  # fmt: skip
        ids, tx, ty = ids[live], tx[live], ty[live]
        counts = torch.bincount(ids, minlength=means2d.shape[0])
    key = (camera_ids[ids] * tile_height + ty) * tile_width + tx
    key, perm = torch.sort(key, stable=True)
    flatten_ids = ids[perm]
    per_tile = torch.bincount(key, minlength=n_tiles)
    offsets = torch.zeros(n_tiles + 1, dtype=torch.int64, device=means2d.device)
    offsets[1:] = torch.cumsum(per_tile, 0)
    return TileBins(tile_width, tile_height, tile_size, offsets, flatten_ids, counts.to(torch.int32))


def encode_isect_ids(
    bins: TileBins,
    depths: Tensor,  # [P]
    camera_ids: Tensor,  # [P] int64
) -> Tensor:  # [n_isects] int64
    """gsplat's sort keys ``camera << (32 + tile_bits) | tile << 32 | float32 depth bits`` (for info only)."""
    if bins.isect_ids is not None:
        return bins.isect_ids
    n_per_cam = bins.tile_width * bins.tile_height
    tile_bits = n_per_cam.bit_length()
    tiles = torch.repeat_interleave(
        torch.arange(bins.n_tiles, device=depths.device), bins.offsets[1:] - bins.offsets[:-1]
    )
    cam = camera_ids[bins.flatten_ids]
    depth_bits = depths.detach()[bins.flatten_ids].float().view(torch.int32).to(torch.int64) & 0xFFFFFFFF
    return (cam << (32 + tile_bits)) | ((tiles % n_per_cam) << 32) | depth_bits

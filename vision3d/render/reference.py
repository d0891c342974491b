"""Brute-force compositing for tests: every Gaussian at every pixel, depth-sorted, one step at a time.

This mirrors gsplat's per-pixel loop literally (running transmittance, skip and stop
rules) but vectorised over pixels instead of tiles, with no lists and no padding. It keeps
gsplat's tile culling as a mask (a Gaussian only reaches pixels whose tile lies in its
tile rectangle), because that is part of gsplat's output. It loops over Gaussians in
Python, so it is for tiny scenes only; it is differentiable by autograd.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .thresholds import ALPHA_MAX, ALPHA_MIN, T_MIN
from .tiles import tile_grid, tile_rects


def rasterize_dense_reference(
    means2d: Tensor,  # [P, 2]
    conics: Tensor,  # [P, 3]
    colors: Tensor,  # [P, D]
    opacities: Tensor,  # [P]
    radii: Tensor,  # [P] int, 0 = culled
    depths: Tensor,  # [P]
    camera_ids: Tensor,  # [P] int64
    n_cameras: int,
    width: int,
    height: int,
    tile_size: int = 16,
) -> tuple[Tensor, Tensor]:  # colours [C, H, W, D], alphas [C, H, W, 1]
    tw, th = tile_grid(width, height, tile_size)
    xmin, xmax, ymin, ymax = tile_rects(means2d.detach(), radii, tile_size, tw, th)
    ys, xs = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    px = xs.reshape(-1).to(means2d) + 0.5  # [HW]
    py = ys.reshape(-1).to(means2d) + 0.5
    tx, ty = xs.reshape(-1) // tile_size, ys.reshape(-1) // tile_size
    images, alphas = [], []
    for cam in range(n_cameras):
        out = colors.new_zeros(height * width, colors.shape[-1])
        trans = means2d.new_ones(height * width)
        done = torch.zeros(height * width, dtype=torch.bool)
        idx = torch.nonzero((camera_ids == cam) & (radii > 0)).flatten()
        idx = idx[torch.sort(depths.detach()[idx], stable=True).indices]
        for g in idx.tolist():
            in_rect = (tx >= xmin[g]) & (tx < xmax[g]) & (ty >= ymin[g]) & (ty < ymax[g])
            dx, dy = means2d[g, 0] - px, means2d[g, 1] - py
            a, b, c = conics[g]
            sigma = 0.5 * (a * dx * dx + c * dy * dy) + b * dx * dy
            alpha = torch.clamp_max(opacities[g] * torch.exp(-sigma), ALPHA_MAX)
            use = in_rect & ~done & (sigma >= 0) & (alpha >= ALPHA_MIN)
            next_t = trans * (1 - alpha)
            stop = use & (next_t <= T_MIN)
            done = done | stop
            use = use & ~stop
            out = out + torch.where(use[:, None], (alpha * trans)[:, None] * colors[g], torch.zeros_like(out))
            trans = torch.where(use, next_t, trans)
        images.append(out.reshape(height, width, -1))
        alphas.append((1 - trans).reshape(height, width, 1))
    return torch.stack(images), torch.stack(alphas)

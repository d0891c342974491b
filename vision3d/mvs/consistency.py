"""Geometric consistency across views: keep depths that other views' depth maps confirm.

For a pixel ``p`` of view ``r`` with depth ``d``, its 3-D point is projected into a source view ``s``; the
depth stored at the nearest pixel there is back-projected from that pixel's centre and projected into
``r`` again (ACMP's fusion check). The pair agrees when the round trip lands within ``max_reprojection_px``
of ``p`` and its depth in ``r`` is within ``max_relative_depth`` of ``d``. A pixel is kept when at least
``min_consistent`` sources agree. The mean of its own point and the agreeing sources' points is returned
too, as the fused point (averaging removes part of the per-view noise).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vision3d.geometry.camera import pixel_grid, project_points, unproject_depth
from vision3d.geometry.se3 import invert_pose, transform_points


@dataclass
class GeometricFilterConfig:
    """Thresholds of :func:`geometric_consistency` (ACMP's defaults: 2 px, 1 %, 2 views; ours for pixels: 1)."""

    max_reprojection_px: float = 1.0
    max_relative_depth: float = 0.01
    min_consistent: int = 2


@dataclass
class Consistency:
    """``mask [V, H, W]`` bool (kept), ``count [V, H, W]`` agreeing sources, ``points [V, H, W, 3]`` fused world points."""

    mask: Tensor
    count: Tensor
    points: Tensor


def world_points(depth: Tensor, K: Tensor, c2w: Tensor) -> Tensor:  # noqa: N803
    """World points ``[V, H, W, 3]`` of z-depth maps ``[V, H, W]`` (pixel centres at +0.5, OpenCV axes)."""
    v, h, w = depth.shape
    return transform_points(c2w, unproject_depth(depth, K).reshape(v, -1, 3)).reshape(v, h, w, 3)


def round_trip(points: Tensor, pixels: Tensor, K_ref: Tensor, w2c_ref: Tensor, K_src: Tensor,  # noqa: N803
               w2c_src: Tensor, src_depth: Tensor, src_points: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Reference → source → reference round trip of world ``points [N, 3]`` seen at reference ``pixels [N, 2]``.

    Each point is projected into the source (``K_src [3, 3]``, ``w2c_src [4, 4]``); the source's depth at the
    nearest pixel (``src_depth [H, W]``, world points ``src_points [H, W, 3]``) is projected back into the
    reference. Returns the reprojection error in pixels ``[N]``, the returned point's reference z-depth ``[N]``,
    the returned world points ``[N, 3]`` and ``[N]`` bool, whether the source had a depth there.
    """
    h, w = src_depth.shape
    xy, z = project_points(transform_points(w2c_src, points)[None], K_src[None])
    col, row = xy[0, :, 0].floor().long(), xy[0, :, 1].floor().long()
    inside = (z[0] > 0) & (col >= 0) & (col < w) & (row >= 0) & (row < h)
    row, col = row.clamp(0, h - 1), col.clamp(0, w - 1)
    back = src_points[row, col]  # the source pixel's centre at its depth
    xy_r, z_r = project_points(transform_points(w2c_ref, back)[None], K_ref[None])
    return (xy_r[0] - pixels).norm(dim=-1), z_r[0], back, inside & (src_depth[row, col] > 0)


def geometric_consistency(depth: Tensor, K: Tensor, c2w: Tensor, sources: list[list[int]],  # noqa: N803
                          cfg: GeometricFilterConfig | None = None) -> Consistency:
    """Check every view's depth ``[V, H, W]`` (0 = none) against its ``sources[v]``; ``K [V, 3, 3]``, ``c2w [V, 4, 4]``."""
    cfg = cfg or GeometricFilterConfig()
    v, h, w = depth.shape
    points = world_points(depth, K, c2w)
    w2c = invert_pose(c2w)
    pix = pixel_grid(h, w, device=depth.device, dtype=depth.dtype).reshape(-1, 2)
    count = torch.zeros(v, h, w, dtype=torch.long, device=depth.device)
    fused = torch.zeros_like(points)
    for r in range(v):
        own = points[r].reshape(-1, 3)
        valid_r = depth[r].reshape(-1) > 0
        total, n = own.clone(), torch.ones(h * w, dtype=depth.dtype, device=depth.device)
        for s in sources[r]:
            err_px, z_r, back, hit = round_trip(own, pix, K[r], w2c[r], K[s], w2c[s], depth[s], points[s])
            err_rel = (z_r - depth[r].reshape(-1)).abs() / depth[r].reshape(-1).clamp_min(1e-12)
            agree = valid_r & hit & (err_px < cfg.max_reprojection_px) & (err_rel < cfg.max_relative_depth)
            count[r] += agree.reshape(h, w)
            total += torch.where(agree[:, None], back, torch.zeros_like(back))
            n += agree.to(n.dtype)
        fused[r] = (total / n[:, None]).reshape(h, w, 3)
    mask = (count >= cfg.min_consistent) & (depth > 0)
    return Consistency(mask, count, fused)

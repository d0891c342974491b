"""Pinhole cameras: pixel grids, unprojection of depth with intrinsics, projection, intrinsics scaling.

Pixel coordinates follow nerfstudio: the centre of pixel ``(row i, column j)`` is ``(j + 0.5, i + 0.5)``
(``pixel_offset=0.5``); keypoints from OpenCV (centre at integer coordinates) need ``+0.5``. Depth is
planar z-depth (distance along the optical axis), 0 where unknown.
"""

from __future__ import annotations

import torch

from vision3d.geometry._checks import check_shape

__all__ = ["pixel_grid", "unproject_depth", "unproject_points", "project_points", "scale_intrinsics",
           "normalize_pixels"]


def pixel_grid(height: int, width: int, pixel_offset: float = 0.5, device=None,
               dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Pixel-centre coordinates ``[H, W, 2]`` as ``(x, y)``."""
    ys = torch.arange(height, device=device, dtype=dtype) + pixel_offset
    xs = torch.arange(width, device=device, dtype=dtype) + pixel_offset
    y, x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([x, y], dim=-1)


def normalize_pixels(pixels: torch.Tensor, K: torch.Tensor) -> torch.Tensor:  # noqa: N803
    """Pixels ``[B, N, 2]`` to normalized image coordinates ``K^-1 p`` ``[B, N, 2]`` (pinhole, no skew)."""
    check_shape("pixels", pixels, "*", "*", 2)
    check_shape("K", K, "*", 3, 3)
    f = torch.stack([K[:, 0, 0], K[:, 1, 1]], dim=-1)[:, None]
    c = torch.stack([K[:, 0, 2], K[:, 1, 2]], dim=-1)[:, None]
    return (pixels - c) / f


def unproject_points(pixels: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:  # noqa: N803
    """Pixels ``[B, N, 2]`` with z-depth ``[B, N]`` to camera points ``[B, N, 3]``: ``X = d K^-1 [p, 1]``."""
    check_shape("depth", depth, "*", "*")
    xy = normalize_pixels(pixels, K)
    if depth.shape != xy.shape[:2]:
        raise ValueError(f"depth must have shape {list(xy.shape[:2])} to match pixels, got {list(depth.shape)}")
    return torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1) * depth[..., None]


def unproject_depth(depth: torch.Tensor, K: torch.Tensor, pixel_offset: float = 0.5) -> torch.Tensor:  # noqa: N803
    """Depth maps ``[B, H, W]`` to camera points ``[B, H, W, 3]`` (OpenCV axes; invalid depth gives 0)."""
    check_shape("depth", depth, "*", "*", "*")
    check_shape("K", K, depth.shape[0], 3, 3)
    b, h, w = depth.shape
    grid = pixel_grid(h, w, pixel_offset, depth.device, depth.dtype).reshape(1, -1, 2).expand(b, -1, -1)
    return unproject_points(grid, depth.reshape(b, -1), K).reshape(b, h, w, 3)


def project_points(points: torch.Tensor, K: torch.Tensor, eps: float = 1e-8) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: N803
    """Camera points ``[B, N, 3]`` to pixels ``[B, N, 2]`` and their z-depth ``[B, N]``."""
    check_shape("points", points, "*", "*", 3)
    check_shape("K", K, points.shape[0], 3, 3)
    z = points[..., 2]
    safe = torch.where(z.abs() < eps, torch.full_like(z, eps), z)
    xy = points[..., :2] / safe[..., None]
    f = torch.stack([K[:, 0, 0], K[:, 1, 1]], dim=-1)[:, None]
    c = torch.stack([K[:, 0, 2], K[:, 1, 2]], dim=-1)[:, None]
    return xy * f + c, z


def scale_intrinsics(K: torch.Tensor, sx: float, sy: float) -> torch.Tensor:  # noqa: N803
    """Intrinsics ``[..., 3, 3]`` after resizing the image by ``(sx, sy)`` (pixel-centre-at-+0.5 convention)."""
    check_shape("K", K, "...", 3, 3)
    S = torch.diag(torch.tensor([sx, sy, 1.0], dtype=K.dtype, device=K.device))  # noqa: N806
    return S @ K

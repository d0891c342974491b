"""Geometric consistency checks for scenes with depth: reprojection between views and flow from depth.

They check that a scene's depth, poses and intrinsics agree (our renders, importers and bundled scene are
tested with them) and tell a user whether their own RGB-D capture is usable. Conventions are those of
``transforms.json``: ``c2w`` camera-to-world [4, 4] in OpenGL axes (camera looks down -Z), planar z-depth
in metres (0 = unknown), pixel centres at +0.5. The maths is :mod:`vision3d.geometry`'s (float64 torch);
these wrappers take and return numpy arrays for one view at a time.
"""

from __future__ import annotations

import numpy as np
import torch

from vision3d.geometry.camera import pixel_grid, project_points, unproject_depth
from vision3d.geometry.se3 import invert_pose, opengl_to_opencv, transform_points


def _t(x) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x, dtype=np.float64))


def backproject(depth: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> np.ndarray:  # noqa: N803
    """World points [H, W, 3] of planar z-depth ``depth`` [H, W] (NaN where depth <= 0)."""
    d = _t(depth)
    cam = unproject_depth(d[None], _t(K)[None])[0]  # [H, W, 3], OpenCV axes
    world = transform_points(opengl_to_opencv(_t(c2w)), cam.reshape(-1, 3)).reshape(cam.shape)
    return torch.where((d > 0)[..., None], world, torch.nan).numpy()


def project(points: np.ndarray, K: np.ndarray, c2w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
    """Pixel coordinates [..., 2] (x right, y down, centres at +0.5) and planar depth [...] of world points."""
    pts = _t(points)
    w2c = invert_pose(opengl_to_opencv(_t(c2w)))
    cam = transform_points(w2c, pts.reshape(-1, 3))
    uv, z = project_points(cam[None], _t(K)[None])
    return uv[0].reshape(*pts.shape[:-1], 2).numpy(), z[0].reshape(pts.shape[:-1]).numpy()


def flow_from_depth(depth: np.ndarray, K: np.ndarray, c2w_a: np.ndarray, c2w_b: np.ndarray) -> np.ndarray:  # noqa: N803
    """Forward flow [H, W, 2] in pixels from view a to view b of a static scene (NaN where depth is unknown)."""
    h, w = depth.shape
    uv_b, _ = project(backproject(depth, K, c2w_a), K, c2w_b)
    return uv_b - pixel_grid(h, w, dtype=torch.float64).numpy()


def flow_at_infinity(K: np.ndarray, c2w_a: np.ndarray, c2w_b: np.ndarray, height: int, width: int) -> np.ndarray:  # noqa: N803
    """Flow [H, W, 2] of infinitely far points (an environment map) from view a to b: only the rotation
    counts. NaN where the direction falls behind camera b."""
    ones = torch.ones(1, height, width, dtype=torch.float64)
    dirs = unproject_depth(ones, _t(K)[None])[0].reshape(-1, 3)  # OpenCV camera a
    rot_a = opengl_to_opencv(_t(c2w_a))[:3, :3]
    rot_b = opengl_to_opencv(_t(c2w_b))[:3, :3]
    dirs_b = dirs @ (rot_b.T @ rot_a).T
    uv, z = project_points(dirs_b[None], _t(K)[None])
    flow = uv[0] - pixel_grid(height, width, dtype=torch.float64).reshape(-1, 2)
    flow = torch.where((z[0] > 0)[:, None], flow, torch.nan)
    return flow.reshape(height, width, 2).numpy()


def reprojection_depth_error(
    depth_a: np.ndarray,  # [H, W] metres
    depth_b: np.ndarray,  # [H, W] metres
    K: np.ndarray,  # noqa: N803  [3, 3]
    c2w_a: np.ndarray,  # [4, 4]
    c2w_b: np.ndarray,  # [4, 4]
    K_b: np.ndarray | None = None,  # noqa: N803
) -> np.ndarray:
    """Relative depth errors |z_pred - z_b| / z_b of view a's points that land inside view b.

    Each pixel of ``depth_a`` is lifted to 3D, projected into b, and its predicted depth is compared with
    ``depth_b`` interpolated bilinearly there (only where all four neighbours are known). Occluded points
    give large errors, so look at the median.
    """
    K_b = K if K_b is None else K_b  # noqa: N806
    uv, z = project(backproject(depth_a, K, c2w_a), K_b, c2w_b)
    observed = sample_bilinear(depth_b, uv)
    ok = np.isfinite(z) & (z > 0) & np.isfinite(observed)
    return np.abs(z[ok] - observed[ok]) / observed[ok]


def sample_bilinear(image: np.ndarray, uv: np.ndarray) -> np.ndarray:
    """``image`` [H, W] at pixel coordinates ``uv`` [..., 2] (centres at +0.5); NaN outside the image or
    where one of the four neighbours is unknown (<= 0 or NaN)."""
    h, w = image.shape
    x = np.nan_to_num(uv[..., 0], nan=-10.0) - 0.5
    y = np.nan_to_num(uv[..., 1], nan=-10.0) - 0.5
    x0, y0 = np.floor(x).astype(int), np.floor(y).astype(int)
    inside = (x0 >= 0) & (x0 + 1 < w) & (y0 >= 0) & (y0 + 1 < h)
    x0c, y0c = np.clip(x0, 0, w - 2), np.clip(y0, 0, h - 2)
    fx, fy = x - x0c, y - y0c
    img = np.where(image > 0, image.astype(np.float64), np.nan)
    value = (img[y0c, x0c] * (1 - fx) * (1 - fy) + img[y0c, x0c + 1] * fx * (1 - fy)
             + img[y0c + 1, x0c] * (1 - fx) * fy + img[y0c + 1, x0c + 1] * fx * fy)
    return np.where(inside, value, np.nan)

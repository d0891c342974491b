"""Pinhole cameras: the one camera type, pixel grids, unprojection of depth, projection, intrinsics scaling.

One pixel-centre convention for all of vision3d, that of nerfstudio, gsplat and Blender: the centre of
pixel (column u, row v) is at (u + 0.5, v + 0.5) (``PIXEL_CENTRE``); :class:`PinholeCamera` states it in
full. Values from OpenCV and calibration files (centres at integers) are converted where they enter
(:meth:`PinholeCamera.from_opencv`). Depth is planar z-depth (distance along the optical axis), 0 where unknown.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from vision3d.geometry._checks import check_shape

__all__ = ["PIXEL_CENTRE", "PinholeCamera", "pixel_grid", "unproject_depth", "unproject_points", "project_points",
           "scale_intrinsics", "normalize_pixels", "unit_depth_rays"]

PIXEL_CENTRE = 0.5
"""Offset from a pixel's index to its centre's coordinate (see the module docstring)."""


@dataclass
class PinholeCamera:
    """Pinhole intrinsics in pixels (``fx, fy, cx, cy``) and the image size (``width, height``).

    Pixel-centre convention: pixel (column u, row v) covers ``[u, u + 1) x [v, v + 1)`` in pixel
    coordinates and its centre is at ``(u + 0.5, v + 0.5)``, so a principal point in the middle of the image
    is ``(width / 2, height / 2)``. This is nerfstudio's, gsplat's and Blender's convention, and what
    ``transforms.json`` holds. OpenCV, ROS and calibration files put the centre of pixel (u, v) at (u, v):
    their ``cx, cy`` and keypoints need +0.5 (:meth:`from_opencv`, :meth:`to_opencv`). An event's (x, y) or
    an array index is a pixel *index*, not a coordinate: :meth:`normalize_index` adds the 0.5.

    Camera axes are OpenCV's (x right, y down, z forward): a camera point ``X`` lands on pixel coordinates
    ``(fx X/Z + cx, fy Y/Z + cy)``.
    """

    fx: float
    fy: float
    cx: float
    cy: float
    width: int
    height: int

    @property
    def K(self) -> np.ndarray:  # noqa: N802  (the usual name of the intrinsics matrix)
        """Intrinsics [3, 3] (float64) in this convention."""
        return np.array([[self.fx, 0.0, self.cx], [0.0, self.fy, self.cy], [0.0, 0.0, 1.0]])

    @classmethod
    def from_K(cls, K, width: int, height: int) -> PinholeCamera:  # noqa: N802, N803
        """From intrinsics [3, 3] already in this convention (``transforms.json``, nerfstudio, gsplat)."""
        K = np.asarray(K, np.float64)  # noqa: N806
        return cls(float(K[0, 0]), float(K[1, 1]), float(K[0, 2]), float(K[1, 2]), int(width), int(height))

    @classmethod
    def from_opencv(cls, fx: float, fy: float, cx: float, cy: float, width: int, height: int) -> PinholeCamera:
        """From OpenCV/ROS/ViSP calibration values (pixel centres at integers): ``cx, cy`` gain 0.5."""
        return cls(fx, fy, cx + PIXEL_CENTRE, cy + PIXEL_CENTRE, width, height)

    def to_opencv(self) -> tuple[float, float, float, float]:
        """``(fx, fy, cx, cy)`` in OpenCV's convention (pixel centres at integers), as calibration files hold them."""
        return self.fx, self.fy, self.cx - PIXEL_CENTRE, self.cy - PIXEL_CENTRE

    @classmethod
    def default_for(cls, width: int, height: int, fov_deg: float = 70.0) -> PinholeCamera:
        """A guess when no calibration exists: principal point at the image centre, horizontal field of view."""
        f = 0.5 * width / np.tan(np.deg2rad(fov_deg) / 2)
        return cls(f, f, width / 2, height / 2, width, height)

    def scaled(self, factor: float) -> PinholeCamera:
        """The camera seen through pixel binning by ``factor`` (pixel index ``x // factor``; size rounded up)."""
        return PinholeCamera(self.fx / factor, self.fy / factor, self.cx / factor, self.cy / factor,
                             int(-(-self.width // factor)), int(-(-self.height // factor)))

    def cropped(self, x0: int, y0: int, width: int, height: int) -> PinholeCamera:
        """The ``width x height`` window whose top-left pixel is ``(x0, y0)``."""
        return PinholeCamera(self.fx, self.fy, self.cx - x0, self.cy - y0, width, height)

    def normalize(self, xy):
        """Pixel coordinates [..., 2] (numpy or torch) to normalised image coordinates ``K^-1 [p; 1]`` [..., 2]."""
        lib = torch if isinstance(xy, torch.Tensor) else np
        return lib.stack([(xy[..., 0] - self.cx) / self.fx, (xy[..., 1] - self.cy) / self.fy], -1)

    def normalize_index(self, ij):
        """Pixel indices [..., 2] (an event's ``x, y``, an array's column and row) to normalised coordinates."""
        return self.normalize(ij + PIXEL_CENTRE)

    def project(self, points):
        """Camera points [..., 3] (numpy or torch, OpenCV axes) to pixel coordinates [..., 2]."""
        lib = torch if isinstance(points, torch.Tensor) else np
        z = points[..., 2]
        return lib.stack([self.fx * points[..., 0] / z + self.cx, self.fy * points[..., 1] / z + self.cy], -1)

    def pixel_centres(self, supersample: int = 1) -> np.ndarray:
        """Coordinates ``(x, y)`` [H * s, W * s, 2] of the centres of an ``s x s`` sub-pixel grid (s = 1: pixel centres)."""
        s = supersample
        ys, xs = np.meshgrid((np.arange(self.height * s) + PIXEL_CENTRE) / s,
                             (np.arange(self.width * s) + PIXEL_CENTRE) / s, indexing="ij")
        return np.stack([xs, ys], -1)

    def rays(self, supersample: int = 1) -> np.ndarray:
        """Ray directions [H * s, W * s, 3] with unit z (OpenCV axes) through :meth:`pixel_centres`."""
        xy = self.normalize(self.pixel_centres(supersample))
        return np.concatenate([xy, np.ones_like(xy[..., :1])], -1)

    def to_dict(self) -> dict:
        return {k: getattr(self, k) for k in ("fx", "fy", "cx", "cy", "width", "height")}


def pixel_grid(height: int, width: int, pixel_offset: float = PIXEL_CENTRE, device=None,
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


def unit_depth_rays(pixels: torch.Tensor, K: torch.Tensor) -> torch.Tensor:  # noqa: N803
    """Pixels ``[B, N, 2]`` to their camera rays ``K^-1 [p, 1]`` ``[B, N, 3]`` (z = 1, not unit length)."""
    xy = normalize_pixels(pixels, K)
    return torch.cat([xy, torch.ones_like(xy[..., :1])], dim=-1)


def unproject_points(pixels: torch.Tensor, depth: torch.Tensor, K: torch.Tensor) -> torch.Tensor:  # noqa: N803
    """Pixels ``[B, N, 2]`` with z-depth ``[B, N]`` to camera points ``[B, N, 3]``: ``X = d K^-1 [p, 1]``."""
    check_shape("depth", depth, "*", "*")
    rays = unit_depth_rays(pixels, K)
    if depth.shape != rays.shape[:2]:
        raise ValueError(f"depth must have shape {list(rays.shape[:2])} to match pixels, got {list(depth.shape)}")
    return rays * depth[..., None]


def unproject_depth(depth: torch.Tensor, K: torch.Tensor, pixel_offset: float = PIXEL_CENTRE) -> torch.Tensor:  # noqa: N803
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

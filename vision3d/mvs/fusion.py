"""Fusion of geometrically consistent depth maps into one coloured, oriented point cloud.

Every kept pixel (:func:`.consistency.geometric_consistency`) contributes its fused point (the mean over
the views that agree), its colour and its normal rotated to world. Several views see the same surface,
so the cloud is optionally thinned on a voxel grid (open3d's ``voxel_down_sample``, which averages
points, colours and normals per voxel).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor


@dataclass
class PointCloud:
    """``points [N, 3]`` world, ``colors [N, 3]`` in [0, 1], ``normals [N, 3]`` unit, world frame (numpy float64)."""

    points: np.ndarray
    colors: np.ndarray
    normals: np.ndarray

    def to_open3d(self):
        import open3d as o3d  # noqa: PLC0415

        pcd = o3d.geometry.PointCloud(o3d.utility.Vector3dVector(self.points))
        pcd.colors = o3d.utility.Vector3dVector(self.colors)
        pcd.normals = o3d.utility.Vector3dVector(self.normals)
        return pcd

    def save(self, path: str | Path) -> None:
        """Write a .ply (or any format open3d writes), creating the folder."""
        import open3d as o3d  # noqa: PLC0415

        if len(self.points) == 0:
            raise ValueError(f"{path}: the point cloud is empty (no pixel passed the geometric filter)")
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        if not o3d.io.write_point_cloud(str(path), self.to_open3d()):
            raise OSError(f"{path}: open3d could not write the point cloud")


def fuse_points(points: Tensor, normal: Tensor, images: Tensor, c2w: Tensor, mask: Tensor,  # noqa: N803
                voxel_size: float | None = None) -> PointCloud:
    """Gather kept pixels into a :class:`PointCloud`.

    ``points [V, H, W, 3]`` world points (the fused ones of :class:`.consistency.Consistency`), ``normal
    [V, H, W, 3]`` camera-frame normals, ``images [V, H, W, 3]`` RGB (uint8 or float in [0, 1]), ``c2w
    [V, 4, 4]``, ``mask [V, H, W]`` bool; ``voxel_size`` (world units) thins the cloud when given.
    """
    colors = images.to(points.dtype) / 255.0 if images.dtype == torch.uint8 else images.to(points.dtype)
    world_normals = torch.einsum("vij,vhwj->vhwi", c2w[:, :3, :3].to(normal.dtype), normal)
    cloud = PointCloud(points[mask].double().cpu().numpy(), colors[mask].double().cpu().numpy(),
                       world_normals[mask].double().cpu().numpy())
    if voxel_size is None or len(cloud.points) == 0:
        return cloud
    pcd = cloud.to_open3d().voxel_down_sample(voxel_size)
    normals = np.asarray(pcd.normals)
    normals = normals / np.linalg.norm(normals, axis=1, keepdims=True).clip(1e-12)
    return PointCloud(np.asarray(pcd.points), np.asarray(pcd.colors), normals)

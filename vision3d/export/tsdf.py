"""TSDF fusion of rendered depth and colour into a coloured mesh (open3d's VoxelBlockGrid).

Decisions:
- Views are ``RenderedView`` records: RGB, planar (z) depth, intrinsics and a nerfstudio (OpenGL) c2w. open3d
  wants world-to-camera OpenCV extrinsics; they come from ``geometry.se3`` (``opengl_to_opencv``, then
  ``invert_pose``), never a hand-written flip.
- K passes unchanged: open3d's voxel-block integration reads pixel ``int(u)`` for a projected ``u``, so its
  pixel centres are at +0.5, as nerfstudio's (a half-pixel shift doubles the error of the sphere test).
- open3d's sparse (hashed) voxel blocks, so only voxels near observed surfaces cost memory; on CUDA when open3d
  has it, else on the CPU. (Its legacy ScalableTSDFVolume extracted no surface at all in open3d 0.20 here.)
- A voxel enters the surface when ``min_views`` views observed it (default 2, what a triangulation needs), so
  a floater that one render shows is dropped.
- Pixels with no depth (0, or beyond ``max_depth``) are not integrated. The mesh is cropped to the box, so
  fused background (the far side of an HDRI, a background sphere of splats) does not enter it.
- Defaults from the box: voxel = longest box side / 512, truncation = 4 voxels (a band a few voxels wide is
  what KinectFusion-style fusion needs to close the surface without smearing thin parts).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import torch
import trimesh

from vision3d.data.consistency import backproject
from vision3d.export.marching_cubes import EmptyMeshError
from vision3d.geometry.camera import PinholeCamera
from vision3d.geometry.se3 import invert_pose, opengl_to_opencv

DEFAULT_VOXELS_PER_SIDE = 512
DEFAULT_TRUNCATION_VOXELS = 4.0
DEFAULT_MIN_VIEWS = 2.0
BLOCK_RESOLUTION = 8  # voxels per hashed block side (open3d allocates blocks near observed surfaces only)
INITIAL_BLOCKS = 20_000  # open3d's hash map grows beyond this as needed


@dataclass
class RenderedView:
    """One rendered camera: ``rgb [H, W, 3]`` in [0, 1], planar ``depth [H, W]`` (0 = none), its intrinsics
    (vision3d's one camera type, pixel centres at +0.5), ``c2w [4, 4]`` camera-to-world in nerfstudio/OpenGL axes."""

    rgb: np.ndarray
    depth: np.ndarray
    camera: PinholeCamera
    c2w: np.ndarray


def default_voxel_size(box: np.ndarray, voxels_per_side: int = DEFAULT_VOXELS_PER_SIDE) -> float:
    """The box's longest side over ``voxels_per_side``; ``box [2, 3]``."""
    box = np.asarray(box, np.float64).reshape(2, 3)
    return float((box[1] - box[0]).max() / voxels_per_side)


def world_to_camera_opencv(c2w_opengl: np.ndarray) -> np.ndarray:
    """open3d's extrinsic: world-to-camera in OpenCV axes [4, 4] (float64) from a nerfstudio c2w [3 or 4, 4]."""
    c2w = torch.eye(4, dtype=torch.float64)
    c2w[: len(c2w_opengl)] = torch.as_tensor(np.asarray(c2w_opengl), dtype=torch.float64)
    return invert_pose(opengl_to_opencv(c2w)).numpy()


def inside_box(points: np.ndarray, box: np.ndarray) -> np.ndarray:
    """``[N]`` bool: which ``points [N, 3]`` lie inside ``box [2, 3]`` (faces included)."""
    box = np.asarray(box, np.float64).reshape(2, 3)
    return np.all((points >= box[0]) & (points <= box[1]), axis=1)


def crop_to_box(mesh: trimesh.Trimesh, box: np.ndarray) -> trimesh.Trimesh:
    """The faces of ``mesh`` whose three vertices lie inside ``box [2, 3]``."""
    inside = inside_box(mesh.vertices, box)
    keep = inside[mesh.faces].all(axis=1)
    cropped = mesh.submesh([np.flatnonzero(keep)], append=True) if keep.any() else trimesh.Trimesh()
    return cropped


def fuse_tsdf(
    views: Iterable[RenderedView],
    box: np.ndarray,
    voxel_size: float | None = None,
    truncation: float | None = None,
    max_depth: float | None = None,
    min_views: float = DEFAULT_MIN_VIEWS,
) -> trimesh.Trimesh:
    """Integrate ``views`` into a TSDF and extract its coloured zero level set, cropped to ``box [2, 3]``.

    Args:
        voxel_size: voxel edge in scene units; default :func:`default_voxel_size`.
        truncation: SDF truncation distance in scene units; default 4 voxels.
        max_depth: depths beyond this are not integrated; default (and at most) the distance from each camera to
            the farthest corner of the box, since nothing farther can be inside it.
        min_views: voxels observed by fewer views (open3d's integration weight) are left out of the surface.
    Raises:
        EmptyMeshError: nothing was integrated, or the fused surface has no face inside the box.
    """
    import open3d as o3d
    import open3d.core as o3c

    box = np.asarray(box, np.float64).reshape(2, 3)
    voxel_size = default_voxel_size(box) if voxel_size is None else float(voxel_size)
    truncation = DEFAULT_TRUNCATION_VOXELS * voxel_size if truncation is None else float(truncation)
    corners = np.stack(np.meshgrid(*box.T, indexing="ij"), -1).reshape(8, 3)
    if voxel_size <= 0 or truncation <= 0:
        raise ValueError(f"voxel size and truncation must be positive, got {voxel_size} and {truncation}")
    device = o3c.Device("CUDA:0" if o3c.cuda.is_available() else "CPU:0")
    grid = o3d.t.geometry.VoxelBlockGrid(
        attr_names=("tsdf", "weight", "color"), attr_dtypes=(o3c.float32, o3c.float32, o3c.float32),
        attr_channels=(1, 1, 3), voxel_size=voxel_size, block_resolution=BLOCK_RESOLUTION,
        block_count=INITIAL_BLOCKS, device=device,
    )
    trunc_voxels = truncation / voxel_size
    n_pixels = 0
    for view in views:
        farthest = float(np.linalg.norm(corners - np.asarray(view.c2w)[:3, 3], axis=1).max())
        depth_max = farthest if max_depth is None else min(farthest, float(max_depth))
        depth = np.where(np.isfinite(view.depth) & (view.depth > 0) & (view.depth < depth_max), view.depth, 0.0)
        valid = depth > 0
        if not valid.any():
            continue
        n_pixels += int(valid.sum())
        depth_image = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(depth, np.float32))).to(device)
        color_image = o3d.t.geometry.Image(o3c.Tensor(np.ascontiguousarray(np.clip(view.rgb, 0, 1), np.float32)))
        if view.depth.shape != (view.camera.height, view.camera.width):
            raise ValueError(f"depth {view.depth.shape} does not match the camera's {view.camera.height}x{view.camera.width}")
        intrinsic = o3c.Tensor(view.camera.K, o3c.float64)
        extrinsic = o3c.Tensor(world_to_camera_opencv(view.c2w), o3c.float64)
        # blocks around every valid pixel's point: open3d's depth-image overload samples every 4th row and column
        # only, so a view whose few valid pixels are off that grid (a small or mostly empty render) touched no
        # block and open3d aborted the whole export
        points = backproject(depth, view.camera.K, view.c2w)[valid]
        cloud = o3d.t.geometry.PointCloud(o3c.Tensor(points.astype(np.float32))).to(device)
        blocks = grid.compute_unique_block_coordinates(cloud, trunc_voxel_multiplier=trunc_voxels)
        grid.integrate(blocks, depth_image, color_image.to(device), intrinsic, intrinsic, extrinsic, 1.0, depth_max,
                       trunc_voxel_multiplier=trunc_voxels)
    if n_pixels == 0:
        raise EmptyMeshError("no rendered pixel had a depth to integrate (empty TSDF)")
    fused = grid.extract_triangle_mesh(weight_threshold=min_views - 0.5).cpu()  # open3d keeps weight > threshold
    if fused.vertex.positions.shape[0] == 0:
        raise EmptyMeshError(f"the TSDF is empty: no surface seen by {min_views:g} views "
                             f"(voxel {voxel_size:.4g}, truncation {truncation:.4g})")
    colors = fused.vertex.colors.numpy() if "colors" in fused.vertex else None
    mesh = trimesh.Trimesh(
        fused.vertex.positions.numpy().astype(np.float64), fused.triangle.indices.numpy().astype(np.int64),
        vertex_colors=None if colors is None else np.round(np.clip(colors, 0, 1) * 255).astype(np.uint8),
        process=False,
    )
    mesh = crop_to_box(mesh, box)
    if len(mesh.faces) == 0:
        raise EmptyMeshError(f"the TSDF has no surface inside the box {np.round(box, 4).tolist()} "
                             f"(voxel {voxel_size:.4g}, truncation {truncation:.4g})")
    return mesh

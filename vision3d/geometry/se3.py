"""Rigid transforms SE(3) as 4x4 matrices ``[..., 4, 4]``: build, invert, apply, relative poses, axis conventions.

Conventions: ``c2w`` is camera-to-world. OpenCV camera axes are x right, y down, z forward; nerfstudio /
OpenGL / Blender camera axes are x right, y up, z backward. :func:`opengl_to_opencv` is the one place that
converts between them (it flips camera y and z, its own inverse; :func:`opencv_to_opengl` names the way back). The relative pose of a pair is ReLoc3r's
``T_{1<-2} = inv(c2w_1) @ c2w_2`` (camera 2 expressed in camera 1, "2 to 1"), so ``X_1 = T_{1<-2} X_2``.
"""

from __future__ import annotations

import numpy as np
import torch

from vision3d.geometry._checks import check_shape

__all__ = ["make_pose", "invert_pose", "transform_points", "relative_pose", "opengl_to_opencv", "opencv_to_opengl",
           "OPENGL_TO_OPENCV"]

OPENGL_TO_OPENCV = torch.diag(torch.tensor([1.0, -1.0, -1.0, 1.0]))


def make_pose(R: torch.Tensor, t: torch.Tensor) -> torch.Tensor:  # noqa: N803
    """``[..., 3, 3]`` and ``[..., 3]`` to ``[..., 4, 4]``."""
    check_shape("R", R, "...", 3, 3)
    check_shape("t", t, "...", 3)
    bottom = torch.zeros(*R.shape[:-2], 1, 4, dtype=R.dtype, device=R.device)
    bottom[..., 0, 3] = 1.0
    return torch.cat([torch.cat([R, t[..., None]], dim=-1), bottom], dim=-2)


def invert_pose(T: torch.Tensor) -> torch.Tensor:  # noqa: N803
    """Inverse of rigid transforms ``[..., 4, 4]`` (exact: ``[R^T | -R^T t]``)."""
    check_shape("T", T, "...", 4, 4)
    Rt = T[..., :3, :3].transpose(-1, -2)  # noqa: N806
    return make_pose(Rt, -(Rt @ T[..., :3, 3:4])[..., 0])


def transform_points(T: torch.Tensor, points: torch.Tensor) -> torch.Tensor:  # noqa: N803
    """Apply ``T [..., 4, 4]`` to ``points [..., N, 3]``."""
    check_shape("T", T, "...", 4, 4)
    check_shape("points", points, "...", "*", 3)
    return points @ T[..., :3, :3].transpose(-1, -2) + T[..., None, :3, 3]


def relative_pose(c2w_1: torch.Tensor, c2w_2: torch.Tensor) -> torch.Tensor:
    """ReLoc3r's ground truth ``inv(c2w_1) @ c2w_2`` ``[..., 4, 4]`` (camera 2 in camera 1's frame)."""
    check_shape("c2w_1", c2w_1, "...", 4, 4)
    check_shape("c2w_2", c2w_2, "...", 4, 4)
    return invert_pose(c2w_1) @ c2w_2


def opengl_to_opencv(c2w):
    """Camera-to-world ``[..., 4, 4]`` (torch or numpy) in OpenGL/nerfstudio camera axes to OpenCV axes
    (flip camera y and z)."""
    if isinstance(c2w, np.ndarray):
        if c2w.shape[-2:] != (4, 4):
            raise ValueError(f"c2w must have shape [..., 4, 4], got {list(c2w.shape)}")
        return c2w @ OPENGL_TO_OPENCV.numpy().astype(c2w.dtype)
    check_shape("c2w", c2w, "...", 4, 4)
    return c2w @ OPENGL_TO_OPENCV.to(c2w)


def opencv_to_opengl(c2w):
    """Camera-to-world ``[..., 4, 4]`` in OpenCV camera axes to OpenGL/nerfstudio axes (the same flip)."""
    return opengl_to_opencv(c2w)

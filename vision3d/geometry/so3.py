"""Rotations SO(3): exp/log (kornia), geodesic angles, and the network-output parametrizations (9D SVD, 6D).

All functions take batched tensors ``[..., 3, 3]`` / ``[..., 3]`` and are differentiable.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from kornia.geometry.conversions import axis_angle_to_rotation_matrix, rotation_matrix_to_axis_angle

from vision3d.geometry._checks import check_shape

__all__ = [
    "so3_exp",
    "so3_log",
    "skew",
    "rotation_angle",
    "vector_angle",
    "svd_orthogonalize",
    "rotation_6d_to_matrix",
    "random_rotation",
]


def so3_exp(omega: torch.Tensor) -> torch.Tensor:
    """Axis-angle ``[..., 3]`` (radians) to rotation matrices ``[..., 3, 3]`` (Rodrigues, via kornia)."""
    check_shape("omega", omega, "...", 3)
    flat = omega.reshape(-1, 3)
    return axis_angle_to_rotation_matrix(flat).reshape(*omega.shape[:-1], 3, 3)


def so3_log(R: torch.Tensor) -> torch.Tensor:  # noqa: N803
    """Rotation matrices ``[..., 3, 3]`` to axis-angle ``[..., 3]`` (via kornia)."""
    check_shape("R", R, "...", 3, 3)
    flat = R.reshape(-1, 3, 3)
    return rotation_matrix_to_axis_angle(flat).reshape(*R.shape[:-2], 3)


def skew(v: torch.Tensor) -> torch.Tensor:
    """Cross-product matrices ``[..., 3, 3]`` of vectors ``[..., 3]``: ``skew(a) @ b == a x b``."""
    check_shape("v", v, "...", 3)
    zero = torch.zeros_like(v[..., 0])
    x, y, z = v.unbind(-1)
    return torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*v.shape[:-1], 3, 3)


def rotation_angle(R1: torch.Tensor, R2: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:  # noqa: N803
    """Geodesic angle (radians) ``arccos((tr(R1^T R2) - 1) / 2)`` ``[...]``.

    The cosine is clamped to ``±(1 - eps)`` as ReLoc3r's loss does, which keeps the gradient finite
    (and zero at an exact match). For evaluation use :func:`vision3d.geometry.metrics.rotation_error_deg`.
    """
    check_shape("R1", R1, "...", 3, 3)
    check_shape("R2", R2, "...", 3, 3)
    trace = (R1 * R2).sum(dim=(-1, -2))  # tr(R1^T R2)
    cos = ((trace - 1.0) / 2.0).clamp(-1.0 + eps, 1.0 - eps)
    return torch.acos(cos)


def vector_angle(a: torch.Tensor, b: torch.Tensor, eps: float = 1e-6, up_to_sign: bool = False) -> torch.Tensor:
    """Angle (radians) between vectors ``[..., D]``: the one implementation (losses and metrics call it).

    Scale-free; the cosine is clamped to ``±(1 - eps)`` (``eps > 0`` keeps the gradient finite; metrics
    pass 0). ``up_to_sign`` takes the smaller angle of ``b`` and ``-b``. A zero vector gives ``pi / 2``.
    """
    check_shape("a", a, "...", "*")
    check_shape("b", b, "...", "*")
    cos = F.cosine_similarity(a, b, dim=-1, eps=1e-12)
    if up_to_sign:
        cos = cos.abs()
    return torch.acos(cos.clamp(-1.0 + eps, 1.0 - eps))


def svd_orthogonalize(m: torch.Tensor, normalize_rows: bool = True) -> torch.Tensor:
    """Project ``[..., 9]`` or ``[..., 3, 3]`` onto SO(3): ``U diag(1, 1, det(U V^T)) V^T`` of the SVD.

    ``normalize_rows`` first scales each row to unit length, as ReLoc3r's pose head does (so a
    ReLoc3r checkpoint gives the same rotation here).
    """
    if m.shape[-1] == 9:
        m = m.reshape(*m.shape[:-1], 3, 3)
    check_shape("m", m, "...", 3, 3)
    if normalize_rows:
        m = F.normalize(m, dim=-1)
    u, _, vh = torch.linalg.svd(m)
    det = torch.det(u @ vh)
    ones = torch.ones_like(det)
    d = torch.stack([ones, ones, det], dim=-1)
    return u @ (d[..., :, None] * vh)


def rotation_6d_to_matrix(d6: torch.Tensor) -> torch.Tensor:
    """Zhou et al.'s continuous 6D representation ``[..., 6]`` to rotations (Gram-Schmidt; rows b1, b2, b3)."""
    check_shape("d6", d6, "...", 6)
    a1, a2 = d6[..., :3], d6[..., 3:]
    b1 = F.normalize(a1, dim=-1)
    b2 = F.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.cross(b1, b2, dim=-1)
    return torch.stack((b1, b2, b3), dim=-2)


def random_rotation(n: int, max_angle: float = torch.pi, generator: torch.Generator | None = None,
                    dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``n`` rotations ``[n, 3, 3]`` with uniformly random axes and angles uniform in ``[0, max_angle]``."""
    axis = F.normalize(torch.randn(n, 3, generator=generator, dtype=dtype), dim=-1)
    angle = torch.rand(n, 1, generator=generator, dtype=dtype) * max_angle
    return so3_exp(axis * angle)

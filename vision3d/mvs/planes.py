"""Plane hypotheses of PatchMatch MVS: pixel rays, plane-induced homographies, depth along a neighbour's plane.

A hypothesis at reference pixel ``p`` is a z-depth ``d`` and a unit normal ``n`` in the reference camera's
frame (OpenCV axes). Its plane is ``n·X = ρ`` with ``ρ = d n·r(p)``, ``r(p) = K⁻¹ [x, y, 1]`` the ray of
pixel centre ``(x, y) = (col + 0.5, row + 0.5)`` (vision3d's pixel convention). Points on the plane seen
from a source camera ``X_s = R X + t`` map by the homography ``H = K_s (R + t nᵀ / ρ) K⁻¹``. Normals face
the camera (``n·r < 0``), so ``ρ < 0`` for every valid hypothesis.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vision3d.geometry.camera import PIXEL_CENTRE, unit_depth_rays


def pixel_rays(K: Tensor, rows: Tensor, cols: Tensor) -> Tensor:  # noqa: N803
    """Rays ``K⁻¹ [col + 0.5, row + 0.5, 1]`` ``[N, 3]`` (z = 1) of integer pixels ``rows, cols [N]``."""
    centres = torch.stack([cols, rows], dim=-1).to(K.dtype) + PIXEL_CENTRE
    return unit_depth_rays(centres[None], K[None])[0]


def plane_offset(depth: Tensor, normal: Tensor, rays: Tensor) -> Tensor:
    """``ρ = d n·r`` ``[...]`` of hypotheses ``depth [...]``, ``normal [..., 3]`` at pixels with ``rays [..., 3]``."""
    return depth * (normal * rays).sum(-1)


def depth_on_plane(offset: Tensor, normal: Tensor, rays: Tensor) -> Tensor:
    """z-depth ``ρ / n·r`` ``[...]`` where the rays ``[..., 3]`` meet the planes ``n·X = ρ``; NaN when parallel."""
    denom = (normal * rays).sum(-1)
    return torch.where(denom.abs() > 1e-12, offset / denom, torch.full_like(denom, float("nan")))


def plane_homographies(K_ref: Tensor, K_src: Tensor, R: Tensor, t: Tensor,  # noqa: N803
                       normal: Tensor, offset: Tensor) -> Tensor:
    """Homographies ``[..., S, 3, 3]`` from reference to source pixels induced by planes ``normal [..., 3]``,
    ``offset [...]``; ``K_src [S, 3, 3]`` and ``R [S, 3, 3]``, ``t [S, 3]`` take reference-camera points to
    source-camera points. Pixel coordinates are pixel-centre coordinates (+0.5)."""
    tn = t[..., :, None] * normal[..., None, None, :] / offset[..., None, None, None]  # [..., S, 3, 3]
    return K_src @ (R + tn) @ torch.linalg.inv(K_ref)


def random_normals(rays: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Unit normals ``[N, 3]`` uniform on the hemisphere facing the camera along ``rays [N, 3]`` (``n·r < 0``)."""
    n = torch.randn(rays.shape, generator=generator, device=rays.device, dtype=rays.dtype)
    n = n / n.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return torch.where(((n * rays).sum(-1) > 0)[:, None], -n, n)


def facing(normal: Tensor, rays: Tensor, min_cos: float) -> Tensor:
    """``[...]`` bool: the normals face the camera at an angle to the ray reversed of at most ``acos(min_cos)``."""
    cos = -(normal * rays).sum(-1) / rays.norm(dim=-1)
    return cos > min_cos

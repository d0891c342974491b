"""Weighted Kabsch / Umeyama (Procrustes) alignment of 3D point sets, differentiable through the SVD."""

from __future__ import annotations

import torch

from vision3d.geometry._checks import check_shape

__all__ = ["weighted_procrustes"]


def weighted_procrustes(
    src: torch.Tensor,  # [B, N, 3]
    dst: torch.Tensor,  # [B, N, 3]
    weights: torch.Tensor | None = None,  # [B, N], >= 0
    with_scale: bool = False,
    eps: float = 1e-9,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Least-squares ``s, R, t`` minimising ``sum_i w_i |s R src_i + t - dst_i|^2``.

    Returns ``R [B, 3, 3]`` (a proper rotation, reflections corrected), ``t [B, 3]`` and ``s [B]``
    (ones unless ``with_scale``). At least three non-collinear points with positive weight are needed.
    """
    check_shape("src", src, "*", "*", 3)
    check_shape("dst", dst, *src.shape)
    if weights is None:
        weights = torch.ones(src.shape[:2], dtype=src.dtype, device=src.device)
    check_shape("weights", weights, *src.shape[:2])
    if src.shape[1] < 3:
        raise ValueError(f"weighted_procrustes needs at least 3 points, got {src.shape[1]}")
    w = weights.clamp_min(0.0)
    w = w / w.sum(dim=1, keepdim=True).clamp_min(eps)
    mu_s = (w[..., None] * src).sum(1)
    mu_d = (w[..., None] * dst).sum(1)
    xs, xd = src - mu_s[:, None], dst - mu_d[:, None]
    cov = (w[..., None] * xd).transpose(1, 2) @ xs  # [B, 3, 3] = sum w dst src^T
    u, sig, vh = torch.linalg.svd(cov)
    det = torch.det(u @ vh)
    ones = torch.ones_like(det)
    d = torch.stack([ones, ones, det], dim=-1)
    R = u @ (d[..., :, None] * vh)  # noqa: N806
    if with_scale:
        var_s = (w * (xs**2).sum(-1)).sum(1)
        s = (sig * d).sum(-1) / var_s.clamp_min(eps)
    else:
        s = torch.ones_like(det)
    t = mu_d - s[:, None] * (R @ mu_s[..., None])[..., 0]
    return R, t, s

"""Weighted perspective-n-point: normalized DLT initialisation and IRLS Gauss-Newton refinement on SE(3).

Everything is batched over problems ``[B, N, ...]`` and differentiable (the DLT through ``eigh``, the
refinement through its unrolled iterations), so gradients reach the correspondence weights and points.
Inputs are 3D points in the reference frame and their pixel observations in the target camera; the result
``(R, t)`` maps reference points into the target camera, ``x ~ K (R X + t)``.
"""

from __future__ import annotations

import torch

from vision3d.geometry._checks import check_shape
from vision3d.geometry.camera import normalize_pixels
from vision3d.geometry.so3 import skew, so3_exp

__all__ = ["dlt_pnp", "refine_pnp", "weighted_pnp", "reprojection_errors"]


def dlt_pnp(
    points3d: torch.Tensor,  # [B, N, 3]
    xy: torch.Tensor,  # [B, N, 2] normalized image coordinates K^-1 p
    weights: torch.Tensor | None = None,  # [B, N]
    eps: float = 1e-9,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted direct linear transform with Hartley normalisation of the 3D points (N >= 6).

    The 3x4 projection matrix is the eigenvector of the smallest eigenvalue of the weighted normal
    equations; its left 3x3 block is projected onto SO(3) and its scale divided out. Non-planar points
    are required (a planar configuration is degenerate for the DLT).
    """
    check_shape("points3d", points3d, "*", "*", 3)
    check_shape("xy", xy, *points3d.shape[:2], 2)
    b, n, _ = points3d.shape
    if n < 6:
        raise ValueError(f"dlt_pnp needs at least 6 correspondences, got {n}")
    if weights is None:
        weights = torch.ones(b, n, dtype=points3d.dtype, device=points3d.device)
    check_shape("weights", weights, b, n)
    w = weights.clamp_min(0.0)
    w = w / w.sum(1, keepdim=True).clamp_min(eps)
    centre = (w[..., None] * points3d).sum(1, keepdim=True)
    scale = ((w * ((points3d - centre) ** 2).sum(-1)).sum(1) / 3.0).clamp_min(eps).sqrt()  # rms per axis
    X = (points3d - centre) / scale[:, None, None]  # noqa: N806
    Xh = torch.cat([X, torch.ones_like(X[..., :1])], dim=-1)  # [B, N, 4]  # noqa: N806
    zero = torch.zeros_like(Xh)
    u, v = xy[..., 0:1], xy[..., 1:2]
    row1 = torch.cat([Xh, zero, -u * Xh], dim=-1)
    row2 = torch.cat([zero, Xh, -v * Xh], dim=-1)
    A = torch.cat([row1, row2], dim=1)  # [B, 2N, 12]  # noqa: N806
    ww = torch.cat([w, w], dim=1)
    ata = (A * ww[..., None]).transpose(1, 2) @ A
    _, vecs = torch.linalg.eigh(ata)
    P = vecs[..., 0].reshape(b, 3, 4)  # noqa: N806
    M, p4 = P[..., :3], P[..., 3]  # noqa: N806
    # sign: points must lie in front of the camera
    depth = (Xh @ P[:, 2:3, :].transpose(1, 2))[..., 0]
    sign = torch.sign((w * depth).sum(1))
    sign = torch.where(sign == 0, torch.ones_like(sign), sign)
    M, p4 = M * sign[:, None, None], p4 * sign[:, None]  # noqa: N806
    uu, sig, vh = torch.linalg.svd(M)
    det = torch.det(uu @ vh)
    ones = torch.ones_like(det)
    d = torch.stack([ones, ones, det], dim=-1)
    R = uu @ (d[..., :, None] * vh)  # noqa: N806
    s = sig.mean(-1).clamp_min(eps)
    t_norm = p4 / s[:, None]
    # undo the normalisation: R (X - c) / scale + t_norm  ->  (R X + t) / scale
    t = scale[:, None] * t_norm - (R @ centre[:, 0, :, None])[..., 0]
    return R, t


def reprojection_errors(R: torch.Tensor, t: torch.Tensor, points3d: torch.Tensor, xy: torch.Tensor,  # noqa: N803
                        eps: float = 1e-6) -> torch.Tensor:
    """Distances ``[B, N]`` between projected points and observations (normalized coordinates; inf behind)."""
    Y = points3d @ R.transpose(1, 2) + t[:, None]  # noqa: N806
    z = Y[..., 2]
    proj = Y[..., :2] / z.clamp_min(eps)[..., None]
    err = (proj - xy).norm(dim=-1)
    return torch.where(z > eps, err, torch.full_like(err, float("inf")))


def refine_pnp(
    R: torch.Tensor,  # noqa: N803  [B, 3, 3]
    t: torch.Tensor,  # [B, 3]
    points3d: torch.Tensor,  # [B, N, 3]
    xy: torch.Tensor,  # [B, N, 2] normalized coordinates
    weights: torch.Tensor | None = None,  # [B, N]
    iterations: int = 5,
    robust_scale: float | None = None,
    damping: float = 1e-6,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted Gauss-Newton on the reprojection error, pose updated as ``T <- exp(delta) T``.

    With ``robust_scale`` (normalized units) each step is an IRLS step with Cauchy weights
    ``1 / (1 + (r / c)^2)`` multiplying the given weights.
    """
    b, n, _ = points3d.shape
    if weights is None:
        weights = torch.ones(b, n, dtype=points3d.dtype, device=points3d.device)
    eye = torch.eye(6, dtype=points3d.dtype, device=points3d.device)
    for _ in range(iterations):
        Y = points3d @ R.transpose(1, 2) + t[:, None]  # noqa: N806
        z = Y[..., 2].clamp_min(1e-6)
        x, y = Y[..., 0] / z, Y[..., 1] / z
        r = torch.stack([x - xy[..., 0], y - xy[..., 1]], dim=-1)  # [B, N, 2]
        w = weights * (Y[..., 2] > 1e-6).to(weights.dtype)
        if robust_scale is not None:
            w = w / (1.0 + (r.detach().norm(dim=-1) / robust_scale) ** 2)
        inv_z = 1.0 / z
        zero = torch.zeros_like(z)
        # d(pi)/dY [B, N, 2, 3]
        dpi = torch.stack([torch.stack([inv_z, zero, -x * inv_z], -1), torch.stack([zero, inv_z, -y * inv_z], -1)], -2)
        # dY/d(omega) = -[Y]x, dY/dv = I
        J = torch.cat([dpi @ -skew(Y), dpi], dim=-1).reshape(b, 2 * n, 6)  # noqa: N806
        Jw = J * w.repeat_interleave(2, dim=1)[..., None]  # noqa: N806
        H = Jw.transpose(1, 2) @ J  # noqa: N806
        g = (Jw.transpose(1, 2) @ r.reshape(b, 2 * n, 1))[..., 0]
        H = H + damping * (H.diagonal(dim1=-2, dim2=-1).mean(-1)[:, None, None] + 1e-9) * eye  # noqa: N806
        delta = -torch.linalg.solve(H, g)
        dR = so3_exp(delta[:, :3])  # noqa: N806
        R = dR @ R  # noqa: N806
        t = (dR @ t[..., None])[..., 0] + delta[:, 3:]
    return R, t


def weighted_pnp(
    points3d: torch.Tensor,  # [B, N, 3]
    pixels: torch.Tensor,  # [B, N, 2]
    K: torch.Tensor,  # noqa: N803  [B, 3, 3]
    weights: torch.Tensor | None = None,  # [B, N]
    iterations: int = 5,
    robust_scale_px: float | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Weighted PnP from pixels: DLT initialisation, then ``iterations`` (IRLS) Gauss-Newton steps.

    ``robust_scale_px`` is the Cauchy scale in pixels (converted with the mean focal length).
    """
    check_shape("points3d", points3d, "*", "*", 3)
    check_shape("pixels", pixels, *points3d.shape[:2], 2)
    check_shape("K", K, points3d.shape[0], 3, 3)
    xy = normalize_pixels(pixels, K)
    R, t = dlt_pnp(points3d, xy, weights)  # noqa: N806
    scale = None
    if robust_scale_px is not None:
        scale = robust_scale_px / float(((K[:, 0, 0] + K[:, 1, 1]) / 2).mean())
    return refine_pnp(R, t, points3d, xy, weights, iterations, scale)

"""RANSAC with weights: hypotheses from weight-proportional minimal samples, scored by the summed weight of
their inliers, then a weighted refit on the inliers (differentiable with respect to the weights).

:func:`weighted_ransac` is generic over a batched minimal solver and a residual function;
:func:`ransac_pnp` and :func:`ransac_procrustes` are the two uses in this package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vision3d.geometry._checks import check_shape
from vision3d.geometry.camera import normalize_pixels
from vision3d.geometry.pnp import dlt_pnp, refine_pnp, reprojection_errors
from vision3d.geometry.procrustes import weighted_procrustes

__all__ = ["RansacResult", "weighted_ransac", "ransac_pnp", "ransac_procrustes"]


@dataclass
class RansacResult:
    R: torch.Tensor  # [3, 3]
    t: torch.Tensor  # [3]
    inliers: torch.Tensor  # [N] bool
    score: float  # summed weight of the inliers of the best hypothesis
    success: bool  # False when too few inliers were found to refit


def weighted_ransac(
    solver: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    residuals: Callable[..., torch.Tensor],
    data: tuple[torch.Tensor, ...],  # each [N, ...]
    weights: torch.Tensor,  # [N]
    sample_size: int,
    threshold: float,
    num_hypotheses: int = 256,
    weighted_sampling: bool = True,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]:
    """Best of ``num_hypotheses`` models, all solved in one batch (no gradient).

    ``solver(*[H, k, ...] samples, weights [H, k])`` returns ``(R [H, 3, 3], t [H, 3])``;
    ``residuals(R, t, *[H, N, ...] data)`` returns ``[H, N]``. Returns ``R, t, inlier mask [N], score``.
    """
    n = weights.shape[0]
    if n < sample_size:
        raise ValueError(f"RANSAC needs at least {sample_size} correspondences, got {n}")
    with torch.no_grad():
        w = weights.detach().clamp_min(0.0)
        probs = w if (weighted_sampling and float(w.sum()) > 0) else torch.ones_like(w)
        probs = probs + 1e-12
        idx = torch.multinomial(probs.expand(num_hypotheses, n).contiguous(), sample_size, replacement=False, generator=generator)
        samples = tuple(d[idx] for d in data)
        R, t = solver(*samples, torch.ones(num_hypotheses, sample_size, dtype=w.dtype, device=w.device))  # noqa: N806
        full = tuple(d[None].expand(num_hypotheses, *d.shape) for d in data)
        res = residuals(R, t, *full)  # [H, N]
        inl = res < threshold
        score = (inl.to(w.dtype) * w[None]).sum(-1)
        score = torch.where(torch.isfinite(R).all(-1).all(-1) & torch.isfinite(t).all(-1), score, -1.0)
        best = int(torch.argmax(score))
    return R[best], t[best], inl[best], float(score[best])


def ransac_pnp(
    points3d: torch.Tensor,  # [N, 3] in the reference camera
    pixels: torch.Tensor,  # [N, 2] in the target image
    K: torch.Tensor,  # noqa: N803  [3, 3] of the target camera
    weights: torch.Tensor | None = None,  # [N]
    threshold_px: float = 2.0,
    num_hypotheses: int = 256,
    refine_iterations: int = 5,
    weighted_sampling: bool = True,
    generator: torch.Generator | None = None,
) -> RansacResult:
    """Weighted RANSAC over 6-point DLT hypotheses, then a weighted DLT + Gauss-Newton refit on the inliers.

    The refit is differentiable with respect to ``weights``, ``points3d`` and ``pixels`` through its
    Gauss-Newton steps (the inlier set and the DLT starting point are constants). Returns ``success=False`` (and the best hypothesis)
    when fewer than 6 inliers are found.
    """
    check_shape("points3d", points3d, "*", 3)
    check_shape("pixels", pixels, points3d.shape[0], 2)
    check_shape("K", K, 3, 3)
    if weights is None:
        weights = torch.ones(points3d.shape[0], dtype=points3d.dtype, device=points3d.device)
    check_shape("weights", weights, points3d.shape[0])
    xy = normalize_pixels(pixels[None], K[None])[0]
    focal = float((K[0, 0] + K[1, 1]) / 2)
    R0, t0, inl, score = weighted_ransac(  # noqa: N806
        lambda X, x, w: dlt_pnp(X, x, w),
        lambda R, t, X, x: reprojection_errors(R, t, X, x),
        (points3d, xy), weights, 6, threshold_px / focal, num_hypotheses, weighted_sampling, generator)
    if int(inl.sum()) < 6:
        return RansacResult(R0, t0, inl, score, False)
    w_in = weights * inl.to(weights.dtype)
    with torch.no_grad():  # the DLT's eigen-decomposition has unstable gradients; start the refit from it
        R, t = dlt_pnp(points3d[None], xy[None], w_in[None])  # noqa: N806
    R, t = refine_pnp(R, t, points3d[None], xy[None], w_in[None], refine_iterations)  # noqa: N806
    # one local-optimisation round: inliers of the refined pose, refit from it
    with torch.no_grad():
        inl2 = reprojection_errors(R, t, points3d[None], xy[None])[0] < threshold_px / focal
    if int(inl2.sum()) >= 6:
        inl = inl2
        w_in = weights * inl.to(weights.dtype)
        R, t = refine_pnp(R, t, points3d[None], xy[None], w_in[None], refine_iterations)  # noqa: N806
    return RansacResult(R[0], t[0], inl, score, True)


def ransac_procrustes(
    src: torch.Tensor,  # [N, 3]
    dst: torch.Tensor,  # [N, 3]
    weights: torch.Tensor | None = None,  # [N]
    threshold: float = 0.01,
    num_hypotheses: int = 256,
    weighted_sampling: bool = True,
    generator: torch.Generator | None = None,
) -> RansacResult:
    """Weighted RANSAC over 3-point Kabsch hypotheses, then a weighted Kabsch refit on the inliers."""
    check_shape("src", src, "*", 3)
    check_shape("dst", dst, src.shape[0], 3)
    if weights is None:
        weights = torch.ones(src.shape[0], dtype=src.dtype, device=src.device)
    check_shape("weights", weights, src.shape[0])

    def solve(a, b, w):
        R, t, _ = weighted_procrustes(a, b, w)  # noqa: N806
        return R, t

    def resid(R, t, a, b):  # noqa: N803
        return (a @ R.transpose(1, 2) + t[:, None] - b).norm(dim=-1)

    R0, t0, inl, score = weighted_ransac(solve, resid, (src, dst), weights, 3, threshold, num_hypotheses,  # noqa: N806
                                         weighted_sampling, generator)
    if int(inl.sum()) < 3:
        return RansacResult(R0, t0, inl, score, False)
    w_in = weights * inl.to(weights.dtype)
    R, t, _ = weighted_procrustes(src[None], dst[None], w_in[None])  # noqa: N806
    with torch.no_grad():
        inl2 = resid(R, t, src[None], dst[None])[0] < threshold
    if int(inl2.sum()) >= 3:
        inl = inl2
        R, t, _ = weighted_procrustes(src[None], dst[None], (weights * inl.to(weights.dtype))[None])  # noqa: N806
    return RansacResult(R[0], t[0], inl, score, True)

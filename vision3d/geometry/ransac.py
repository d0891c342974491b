"""RANSAC with weights: hypotheses from weight-proportional minimal samples, scored by the summed weight of
their inliers, then a weighted refit on the inliers (differentiable with respect to the weights).

:func:`weighted_ransac` is generic over a batched minimal solver and a residual function, and solves a batch
of problems at once (padded to a common size, a ``valid`` mask marks the real correspondences);
:func:`ransac_pnp_batch` / :func:`ransac_pnp` and :func:`ransac_procrustes` are the uses in this package.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from vision3d.geometry._checks import check_shape
from vision3d.geometry.camera import normalize_pixels
from vision3d.geometry.pnp import dlt_pnp, refine_pnp, reprojection_errors
from vision3d.geometry.procrustes import weighted_procrustes

__all__ = ["RansacResult", "weighted_ransac", "ransac_pnp", "ransac_pnp_batch", "ransac_procrustes"]


@dataclass
class RansacResult:
    """One problem: ``R [3, 3]``, ``t [3]``, ``inliers [N]``, float ``score``, bool ``success``; from
    :func:`ransac_pnp_batch` every field has a leading ``[B]`` (``score`` and ``success`` are tensors)."""

    R: torch.Tensor
    t: torch.Tensor
    inliers: torch.Tensor  # bool
    score: float | torch.Tensor  # summed weight of the inliers of the best hypothesis
    success: bool | torch.Tensor  # False when too few inliers were found to refit


def weighted_ransac(
    solver: Callable[..., tuple[torch.Tensor, torch.Tensor]],
    residuals: Callable[..., torch.Tensor],
    data: tuple[torch.Tensor, ...],  # each [B, N, ...]
    weights: torch.Tensor,  # [B, N]
    sample_size: int,
    threshold: float | torch.Tensor,  # scalar or [B]
    num_hypotheses: int = 256,
    weighted_sampling: bool = True,
    generator: torch.Generator | None = None,
    valid: torch.Tensor | None = None,  # [B, N] bool; padding is never sampled nor counted
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Best of ``num_hypotheses`` models per problem, all ``B * H`` solved in one batch (no gradient).

    ``solver(*[B*H, k, ...] samples, weights [B*H, k])`` returns ``(R [B*H, 3, 3], t [B*H, 3])``;
    ``residuals(R, t, *[B*H, N, ...] data)`` returns ``[B*H, N]``. Returns ``R [B, 3, 3], t [B, 3]``,
    inlier masks ``[B, N]`` and scores ``[B]``. One ``multinomial`` call draws every sample, so a single
    problem (``B = 1``) consumes ``generator`` exactly as before batching.
    """
    b, n = weights.shape
    h = num_hypotheses
    if valid is None:
        valid = torch.ones_like(weights, dtype=torch.bool)
    counts = valid.sum(1)
    if int(counts.min()) < sample_size:
        raise ValueError(f"RANSAC needs at least {sample_size} correspondences, got {int(counts.min())}")
    with torch.no_grad():
        vf = valid.to(weights.dtype)
        w = weights.detach().clamp_min(0.0) * vf
        use_w = (w.sum(1, keepdim=True) > 0) & weighted_sampling
        probs = torch.where(use_w, w, vf) + 1e-12 * vf
        idx = torch.multinomial(probs[:, None].expand(b, h, n).reshape(b * h, n), sample_size, replacement=False,
                                generator=generator)  # [B*H, k]
        rows = torch.arange(b, device=idx.device).repeat_interleave(h)[:, None]
        samples = tuple(d[rows, idx] for d in data)
        R, t = solver(*samples, torch.ones(b * h, sample_size, dtype=w.dtype, device=w.device))  # noqa: N806
        full = tuple(d[:, None].expand(b, h, *d.shape[1:]).reshape(b * h, *d.shape[1:]) for d in data)
        res = residuals(R, t, *full).reshape(b, h, n)
        thr = torch.as_tensor(threshold, dtype=res.dtype, device=res.device).reshape(-1, 1, 1)
        inl = (res < thr) & valid[:, None]
        score = (inl.to(w.dtype) * w[:, None]).sum(-1)  # [B, H]
        finite = (torch.isfinite(R).all(-1).all(-1) & torch.isfinite(t).all(-1)).reshape(b, h)
        score = torch.where(finite, score, -1.0)
        best = torch.argmax(score, dim=1)
        ar = torch.arange(b, device=best.device)
        R, t = R.reshape(b, h, 3, 3)[ar, best], t.reshape(b, h, 3)[ar, best]  # noqa: N806
    return R, t, inl[ar, best], score[ar, best]


def ransac_pnp_batch(
    points3d: torch.Tensor,  # [B, N, 3] in the reference camera
    pixels: torch.Tensor,  # [B, N, 2] in the target image
    K: torch.Tensor,  # noqa: N803  [B, 3, 3] of the target camera
    weights: torch.Tensor | None = None,  # [B, N]
    threshold_px: float = 2.0,
    num_hypotheses: int = 256,
    refine_iterations: int = 5,
    weighted_sampling: bool = True,
    generator: torch.Generator | None = None,
    valid: torch.Tensor | None = None,  # [B, N] bool, False on padding
) -> RansacResult:
    """Weighted RANSAC over 6-point DLT hypotheses, then a weighted DLT + Gauss-Newton refit on the inliers,
    for ``B`` problems padded to ``N`` correspondences (``valid`` marks the real ones, each problem needs 6).

    The refit is differentiable with respect to ``weights``, ``points3d`` and ``pixels`` through its
    Gauss-Newton steps (the inlier set and the DLT starting point are constants). ``success[b]`` is False (and
    the result that problem's best hypothesis) when fewer than 6 inliers are found.
    """
    check_shape("points3d", points3d, "*", "*", 3)
    b, n = points3d.shape[:2]
    check_shape("pixels", pixels, b, n, 2)
    check_shape("K", K, b, 3, 3)
    if weights is None:
        weights = torch.ones(b, n, dtype=points3d.dtype, device=points3d.device)
    check_shape("weights", weights, b, n)
    if valid is None:
        valid = torch.ones(b, n, dtype=torch.bool, device=points3d.device)
    xy = normalize_pixels(pixels, K)
    thr = threshold_px / ((K[:, 0, 0] + K[:, 1, 1]) / 2)  # [B] normalized units
    R0, t0, inl, score = weighted_ransac(  # noqa: N806
        lambda X, x, w: dlt_pnp(X, x, w),
        lambda R, t, X, x: reprojection_errors(R, t, X, x),
        (points3d, xy), weights, 6, thr, num_hypotheses, weighted_sampling, generator, valid)
    success = inl.sum(1) >= 6
    w_in = weights * (inl & success[:, None]).to(weights.dtype)
    # a problem that failed gets uniform weights on its valid points so the batched solve stays finite
    w_in = torch.where(success[:, None], w_in, valid.to(weights.dtype))
    with torch.no_grad():  # the DLT's eigen-decomposition has unstable gradients; start the refit from it
        R, t = dlt_pnp(points3d, xy, w_in)  # noqa: N806
    R, t = refine_pnp(R, t, points3d, xy, w_in, refine_iterations)  # noqa: N806
    # one local-optimisation round: inliers of the refined pose, refit from it (where it keeps 6 inliers)
    with torch.no_grad():
        inl2 = (reprojection_errors(R, t, points3d, xy) < thr[:, None]) & valid
        again = success & (inl2.sum(1) >= 6)
    inl = torch.where(again[:, None], inl2, inl)
    w_in = torch.where(again[:, None], weights * inl.to(weights.dtype), w_in)
    R2, t2 = refine_pnp(R, t, points3d, xy, w_in, refine_iterations)  # noqa: N806
    R = torch.where(again[:, None, None], R2, R)  # noqa: N806
    t = torch.where(again[:, None], t2, t)
    R = torch.where(success[:, None, None], R, R0)  # noqa: N806
    t = torch.where(success[:, None], t, t0)
    return RansacResult(R, t, inl, score, success)


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
    """:func:`ransac_pnp_batch` for one problem (``R [3, 3]``, ``t [3]``, ``inliers [N]``, float, bool)."""
    check_shape("points3d", points3d, "*", 3)
    check_shape("pixels", pixels, points3d.shape[0], 2)
    check_shape("K", K, 3, 3)
    if weights is not None:
        check_shape("weights", weights, points3d.shape[0])
        weights = weights[None]
    res = ransac_pnp_batch(points3d[None], pixels[None], K[None], weights, threshold_px, num_hypotheses,
                           refine_iterations, weighted_sampling, generator)
    return RansacResult(res.R[0], res.t[0], res.inliers[0], float(res.score[0]), bool(res.success[0]))


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

    R0, t0, inl, score = weighted_ransac(solve, resid, (src[None], dst[None]), weights[None], 3, threshold,  # noqa: N806
                                         num_hypotheses, weighted_sampling, generator)
    R0, t0, inl, score = R0[0], t0[0], inl[0], float(score[0])  # noqa: N806
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

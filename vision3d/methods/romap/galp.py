"""3D-GALP (RoMaP, ICCV 2025): view-dependent per-Gaussian part labels, their softness and anchor loss.

Each Gaussian carries its part label as SH coefficients ``[N, K, P]`` (``K = (degree + 1)²``, one
channel per part), evaluated per view with :func:`vision3d.render.sh.spherical_harmonics` and
rasterized as ``P`` extra channels; the render is trained with L1 against one-hot 2D part masks.
Decisions where the paper is silent or differs from ours:
- one channel per part (the official code packs parts into 3 RGB "colours"); part id 0 in a mask
  is background and renders as all-zero, as in the paper; the raw SH value is the label (no
  gsplat ``+0.5``/clamp, so the zero init renders as background and gradients never vanish);
- the view-averaged label ``r̄_i`` (entropy, 3D mask) is the mean over the training views, not the
  sphere mean ``C0 · c0``: with views in a narrow cone the higher bands carry much of the label;
- the anchors' kNN loss compares labels evaluated at the training views (L1 over parts, as the
  official code's 3-channel L1); neighbours come from a scipy cKDTree over the means (a random
  subset of at most ``knn_max_points``), refreshed with the softness; k shrinks with few Gaussians;
- labels start from the masks' blend-weighted votes (:func:`mask_votes`), not from zero, and the
  higher bands learn 20× slower than the DC term (``rest_lr_ratio``): see docs/romap.md.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from scipy.spatial import cKDTree
from torch import Tensor

from ...render.rasterize import rasterize_gaussians
from ...render.sh import _C0 as SH_C0
from ...render.sh import MAX_SH_DEGREE, spherical_harmonics


@dataclass
class GalpConfig:
    """3D-GALP weights and schedules. Defaults are the paper's / official code's unless noted."""

    sh_degree: int = 3
    """SH degree of the label (the paper's ablation peaks at 3)."""
    label_weight: float = 30.0
    """weight of the rendered-label L1 against the 2D part masks (×30 in the official code)."""
    knn_k: int = 50
    """neighbours per anchor in the consistency loss."""
    knn_fraction: float = 0.003
    """k is also capped at this share of the Gaussians (at least 1). Ours: the paper's 50 neighbours among
    ~10⁵–10⁶ Gaussians are a local neighbourhood; among the ~3000 of a CPU scene they span 1/60 of it,
    across part borders, and the term lowered part mIoU (docs/romap.md). 0.003 keeps k = 50 from ~17k."""
    knn_weight: float = 2.0
    """λ of the kNN consistency loss (also multiplied by ``label_weight``, as the code does)."""
    knn_start_step: int = 50
    """no kNN loss before this step."""
    n_anchors: int = 1000
    """K: the K/2 softest plus the K/2 most certain Gaussians (at most ``anchor_fraction`` of them)."""
    anchor_fraction: float = 1.0
    """K is also capped at this share of the Gaussians (1.0: no cap). The paper's 1000 anchors sit among
    ~10⁵–10⁶ Gaussians; whether a CPU scene of a few thousand wants fewer depends on the scene
    (docs/romap.md): on the 3-slab bunny 0.005 helped (80 steps: 307 instead of 6 Gaussians with a label
    > 0.5), on the two-blob test scene it cost the 3D mask a quarter of its part."""
    knn_max_points: int = 300_000
    """neighbours are searched among a random subset of at most this many Gaussians."""
    refresh_every: int = 50
    """softness, anchors and neighbours are recomputed every this many steps."""
    entropy_clip_percentile: float = 10.0
    """entropies below this percentile are raised to it before ``S = H · v`` (official code)."""
    rest_lr_ratio: float = 0.05
    """the label's higher SH bands learn at this fraction of the label rate (as splatfacto's colour
    ``features_rest``, 1/20 of ``features_dc``): the model stores them divided by it. Ours: at one rate, 200
    steps of Adam on 21 views let the 15 higher coefficients fit each view's mask noise, and the held-out
    views' labels fell apart (docs/romap.md)."""
    init: str = "vote"
    """label start: ``"vote"`` (the one-hot majority of each Gaussian's blend-weighted votes of the 2D masks,
    :func:`mask_votes`, as its DC term), ``"soft-vote"`` (each class's share of the votes) or ``"zero"``
    (all background, the paper's). Ours: from zero the labels had not converged after
    the few hundred steps an edit affords (docs/romap.md)."""
    mask_threshold: float = 0.5
    """3D mask: a Gaussian belongs to a part when its mean label is largest for the part and at least
    this (:func:`.selection.part_membership`; ours, the official code thresholds an L1 distance)."""


def init_label_coeffs(n_gaussians: int, n_parts: int, sh_degree: int = 3, device=None) -> Tensor:  # [N, K, P]
    """Zero label coefficients: every Gaussian starts as background."""
    if not 0 <= sh_degree <= MAX_SH_DEGREE:
        raise ValueError(f"sh_degree must be in [0, {MAX_SH_DEGREE}], got {sh_degree}")
    if n_parts < 1:
        raise ValueError(f"n_parts must be >= 1, got {n_parts}")
    return torch.zeros(n_gaussians, (sh_degree + 1) ** 2, n_parts, device=device)


def mask_votes(
    render_view: Callable[[int, Tensor], Tensor],  # (view, feats [N, D]) -> rendered [H, W, D]
    part_ids: Sequence[Tensor],  # per view [H, W] int, 0 = background
    n_gaussians: int,
    n_parts: int,
    device: torch.device | str | None = None,
) -> Tensor:  # [N, P + 1] votes, column 0 = background
    """Blend-weighted votes ``V_ic = Σ_views Σ_pixels w_i(pixel) · [id(pixel) = c]`` of every Gaussian.

    ``w_i`` is the Gaussian's alpha-blending weight at the pixel (occluded Gaussians get none). The render
    is linear in the features, so the votes are the gradient of ``Σ render · one-hot(ids)`` with respect to
    zero per-Gaussian features: one forward and backward pass per view.
    """
    feats = torch.zeros(n_gaussians, n_parts + 1, device=device, requires_grad=True)
    for view, ids in enumerate(part_ids):
        rendered = render_view(view, feats)
        onehot = F.one_hot(ids.long().to(rendered.device), n_parts + 1).to(rendered.dtype)
        if onehot.shape != rendered.shape:
            raise ValueError(f"part ids of view {view} {list(ids.shape)} do not match the render {list(rendered.shape[:2])}")
        (rendered * onehot).sum().backward()
    return feats.grad


def init_labels_from_votes(votes: Tensor, sh_degree: int, soft: bool) -> Tensor:  # [N, P + 1] -> [N, K, P]
    """Label coefficients whose label is the vote (``soft``: each class's share; else the one-hot of the
    majority), view-independent (DC only); Gaussians without votes stay background."""
    n, classes = votes.shape
    coeffs = init_label_coeffs(n, classes - 1, sh_degree, device=votes.device)
    total = votes.sum(-1, keepdim=True)
    if soft:
        label = votes / total.clamp_min(1e-12)
    else:
        label = F.one_hot(votes.argmax(-1), classes).to(votes.dtype)
    label = torch.where(total > 0, label, torch.zeros_like(label))
    coeffs[:, 0, :] = label[:, 1:] / SH_C0
    return coeffs


def camera_centres(viewmats: Tensor) -> Tensor:  # [C, 4, 4] world-to-camera -> [C, 3]
    """World positions of the cameras of world-to-camera matrices."""
    return torch.linalg.inv(viewmats)[:, :3, 3]


def eval_labels(
    label_coeffs: Tensor,  # [N, K, P]
    means: Tensor,  # [N, 3]
    centres: Tensor,  # [C, 3] camera positions
    sh_degree: int,
) -> Tensor:  # [C, N, P]
    """Per-view labels ``SH(r_i, mean_i − centre_c)`` (raw SH values, no offset or clamp)."""
    dirs = means[None, :, :] - centres[:, None, :]
    return spherical_harmonics(sh_degree, dirs, label_coeffs[None].expand(centres.shape[0], -1, -1, -1))


def mean_labels(label_coeffs: Tensor, means: Tensor, centres: Tensor, sh_degree: int) -> Tensor:  # -> [N, P]
    """View-averaged labels ``r̄_i``: the mean of the per-view labels over the views ``centres [V, 3]``."""
    return eval_labels(label_coeffs, means, centres, sh_degree).mean(dim=0)


def render_labels(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3] activated (not log)
    opacities: Tensor,  # [N] activated (not logit)
    label_coeffs: Tensor,  # [N, K, P]
    viewmats: Tensor,  # [C, 4, 4] world-to-camera
    Ks: Tensor,  # [C, 3, 3]  # noqa: N803
    width: int,
    height: int,
    sh_degree: int = 3,
    **raster_kwargs,
) -> Tensor:  # [C, H, W, P]
    """Label maps ``R_φ``: the per-view labels composited by :func:`rasterize_gaussians` (background 0)."""
    feats = eval_labels(label_coeffs, means, camera_centres(viewmats), sh_degree)
    render, _, _ = rasterize_gaussians(means, quats, scales, opacities, feats, viewmats, Ks, width, height,
                                       **raster_kwargs)  # fmt: skip
    return render


def part_masks_to_onehot(part_ids: Tensor, n_parts: int) -> Tensor:  # [C, H, W] int -> [C, H, W, P]
    """One-hot part masks: id 0 is background (all zeros), id p in 1..P sets channel p − 1."""
    if part_ids.dtype.is_floating_point:
        raise ValueError(f"part ids must be an integer tensor, got {part_ids.dtype}")
    if part_ids.numel() and (int(part_ids.min()) < 0 or int(part_ids.max()) > n_parts):
        raise ValueError(f"part ids must lie in [0, {n_parts}], got [{int(part_ids.min())}, {int(part_ids.max())}]")
    return F.one_hot(part_ids.long(), n_parts + 1)[..., 1:].float()


def label_loss(rendered: Tensor, masks: Tensor, weight: float = 30.0) -> Tensor:  # [C, H, W, P] x2 -> []
    """``weight · L1(R_φ, one-hot masks)``, mean over pixels and parts."""
    if rendered.shape != masks.shape:
        raise ValueError(f"rendered labels {list(rendered.shape)} and masks {list(masks.shape)} differ in shape")
    return weight * (rendered - masks).abs().mean()


def label_softness(
    label_coeffs: Tensor,  # [N, K, P]
    means: Tensor,  # [N, 3]
    centres: Tensor,  # [V, 3] the views over which the label's variance is taken
    sh_degree: int,
    entropy_clip_percentile: float = 10.0,
) -> Tensor:  # [N] in [0, 1]
    """Softness ``S_i = H_i · v_i``, min-max normalised (all zeros when every S_i is equal).

    ``H_i`` is the entropy of ``p_ij = softmax_j cos(r̄_i, e_j)`` with ``r̄_i`` the mean label and
    ``e_j`` part j's one-hot vector (so ``cos = r̄_ij / |r̄_i|``), raised to its
    ``entropy_clip_percentile``-th percentile; ``v_i`` is the variance of the per-view label over
    the ``V`` views, summed over parts.
    """
    with torch.no_grad():
        labels = eval_labels(label_coeffs, means, centres, sh_degree)  # [V, N, P]
        p = F.normalize(labels.mean(dim=0), dim=-1).softmax(dim=-1)  # cosines to the parts -> [N, P]
        entropy = -(p * p.clamp_min(1e-12).log()).sum(-1)
        if entropy.numel():
            entropy = entropy.clamp_min(torch.quantile(entropy, entropy_clip_percentile / 100.0))
        variance = labels.var(dim=0, unbiased=False).sum(-1)
        s = entropy * variance
        if s.numel() == 0:
            return s
        span = s.max() - s.min()
        return (s - s.min()) / span if span > 0 else torch.zeros_like(s)


def select_anchors(softness: Tensor, n_anchors: int) -> Tensor:  # [N] -> [<= n_anchors] long
    """Indices of the ``n_anchors // 2`` softest and ``n_anchors // 2`` most certain Gaussians."""
    half = min(n_anchors // 2, softness.shape[0] // 2)
    order = torch.argsort(softness, descending=True)
    return torch.cat([order[:half], order[order.shape[0] - half :]])


def knn_neighbours(
    means: Tensor,  # [N, 3]
    anchors: Tensor,  # [A] long
    k: int,
    max_points: int = 300_000,
    generator: torch.Generator | None = None,
) -> Tensor:  # [A, k'] long, k' = min(k, candidates - 1)
    """The ``k`` nearest Gaussians to each anchor (the anchor itself excluded), by a cKDTree."""
    n = means.shape[0]
    candidates = torch.randperm(n, generator=generator)[:max_points] if n > max_points else torch.arange(n)
    pts = means.detach().cpu().double().numpy()
    tree = cKDTree(pts[candidates.numpy()])
    k_eff = min(k, candidates.shape[0] - 1)
    if k_eff < 1 or anchors.numel() == 0:
        return torch.zeros(anchors.shape[0], 0, dtype=torch.long, device=means.device)
    _, idx = tree.query(pts[anchors.cpu().numpy()], k=k_eff + 1)  # +1: the anchor finds itself
    idx = candidates[torch.from_numpy(np.asarray(idx).reshape(anchors.shape[0], -1))]
    keep = idx != anchors.cpu()[:, None]
    # drop the anchor itself (or the farthest neighbour when the anchor was not a candidate)
    rows = [r[m][:k_eff] for r, m in zip(idx, keep, strict=True)]
    return torch.stack(rows).to(means.device)


def knn_consistency_loss(
    label_coeffs: Tensor,  # [N, K, P]
    means: Tensor,  # [N, 3]
    centres: Tensor,  # [C, 3] the views at which labels are compared
    anchors: Tensor,  # [A] long
    neighbours: Tensor,  # [A, k] long
    sh_degree: int,
) -> Tensor:  # scalar
    """Mean over views, anchors and their neighbours of ``||r_i^φ − r_j^φ||_1`` (L1 over parts).

    Labels are compared as evaluated at the views (label units), not as raw SH coefficients, so
    the term is on the scale of the label L1 and still sees view-dependent disagreement.
    """
    if neighbours.numel() == 0:
        return label_coeffs.sum() * 0.0
    used, inverse = torch.unique(torch.cat([anchors, neighbours.flatten()]), return_inverse=True)
    labels = eval_labels(label_coeffs[used], means[used].detach(), centres, sh_degree)  # [C, U, P]
    r_i = labels[:, inverse[: anchors.shape[0]], None, :]  # [C, A, 1, P]
    r_j = labels[:, inverse[anchors.shape[0] :].reshape(neighbours.shape), :]  # [C, A, k, P]
    return (r_i - r_j).abs().sum(-1).mean()


class GalpLoss:
    """The 3D-GALP training loss with its schedule: label L1, plus the anchors' kNN term after
    ``knn_start_step``, with softness, anchors and neighbours refreshed every ``refresh_every`` steps."""

    def __init__(self, config: GalpConfig, seed: int = 0):
        self.config = config
        self.generator = torch.Generator().manual_seed(seed)
        self.anchors: Tensor | None = None
        self.neighbours: Tensor | None = None
        self.softness: Tensor | None = None
        self._refreshed_at: int | None = None
        self._n_gaussians: int | None = None

    def refresh(self, label_coeffs: Tensor, means: Tensor, centres: Tensor, step: int) -> None:
        """Recompute softness over the views ``centres [V, 3]``, the anchors and their neighbours."""
        cfg = self.config
        self.softness = label_softness(label_coeffs, means, centres, cfg.sh_degree, cfg.entropy_clip_percentile)
        n_anchors = min(cfg.n_anchors, max(2, round(cfg.anchor_fraction * means.shape[0])))
        self.anchors = select_anchors(self.softness, n_anchors)
        k = min(cfg.knn_k, max(1, round(cfg.knn_fraction * means.shape[0])))
        self.neighbours = knn_neighbours(means, self.anchors, k, cfg.knn_max_points, self.generator)
        self._refreshed_at = step
        self._n_gaussians = means.shape[0]

    def __call__(
        self,
        step: int,
        rendered: Tensor,  # [C, H, W, P] from render_labels
        masks: Tensor,  # [C, H, W, P] one-hot
        label_coeffs: Tensor,  # [N, K, P]
        means: Tensor,  # [N, 3]
        centres: Tensor,  # [V, 3] training-camera positions, for the softness and the kNN term
    ) -> dict[str, Tensor]:
        """``{"galp_label": ..., "galp_knn": ...}`` (weighted; ``galp_knn`` only once active)."""
        cfg = self.config
        out = {"galp_label": label_loss(rendered, masks, cfg.label_weight)}
        if step >= cfg.knn_start_step:
            stale = self._refreshed_at is None or step - self._refreshed_at >= cfg.refresh_every
            if stale or self._n_gaussians != means.shape[0]:  # densification changes N
                self.refresh(label_coeffs, means, centres, step)
            knn = knn_consistency_loss(label_coeffs, means, centres, self.anchors, self.neighbours, cfg.sh_degree)
            out["galp_knn"] = cfg.label_weight * cfg.knn_weight * knn
        return out

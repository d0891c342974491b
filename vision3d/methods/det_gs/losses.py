"""DET-GS's losses: hierarchical patch-normalized depth, Canny-edge-aware depth smoothness, RGB-guided TV.

DET-GS (Huang, Xu, Perry, arXiv 2508.04099) trains 3D Gaussian splatting with

    L = (1 - λ) L1 + λ D-SSIM + L_depth + 0.1 L_edge + 0.8 L_tv

Every weight and threshold lives in :class:`DetGSLossConfig`, and each regularizer can be switched off
(all three off is the 3DGS baseline; one at a time is the paper's ablation). All functions take
single images, channels last, as nerfstudio's models produce them: RGB ``[H, W, 3]`` in [0, 1] and depth
``[H, W]`` or ``[H, W, 1]`` in scene units (any units: see *Scale*). They are pure torch (CPU or CUDA) and differentiable in the
rendered inputs; only the Canny edge map goes through OpenCV, once per ground-truth image.

Decisions on what the paper leaves open (each is a config field; the reason is given here):

- **Weights fall with the number of training views** (``support_reference_views=8``,
  ``tv_support_exponent=2``). All three terms are priors; what the photometric loss triangulates grows
  with the views, the priors' error does not. Up to 8 views the paper's weights; with n > 8, L_depth and
  L_edge are scaled by s = 8/n and L_tv by s². Why (docs/det-gs.md, dragon-360, 24 views): the
  monocular-like prior is less accurate (depth AbsRel 0.061 after the best affine fit) than base's
  24-view geometry (~0.03), so the paper's constant weights pulled the shape towards it (−0.5 to −1.2 dB);
  and L_tv, which acts on the image but moves geometry, raised depth AbsRel 0.028 -> 0.070 even at s
  (one run: indicative only, runs differ by 1-2 dB), so it falls faster. 0: the paper's constant weights.

- **Scale** (:func:`to_comparison_space`). Every depth det-gs sees is first divided by a robust statistic
  of its own view, the median over the view's valid pixels (detached), so no term, threshold or gradient
  balance depends on the scene's units: a scene in millimetres trains as the same scene in metres (and
  its Gaussians' screen-space gradients, which drive densification, keep the photometric loss's balance).
  ``depth_near_fraction`` is relative to that median too. The paper's depths are in COLMAP's arbitrary
  units, so it fixes no unit; its weights (β = 0.1) are kept for the dimensionless depth.
- **L_edge's space** (``edge_space="disparity"``). The paper smooths depth. We smooth the normalized
  disparity ``median/D``: it is affine in pixel coordinates on every plane, so the cross-shaped Laplacian
  of L_edge is zero on a tilted ground or wall (depth of a receding plane grows like 1/(y - horizon), and
  the paper's L_edge pulls far ground and background towards the camera); and far content, whose
  disparity barely changes, no longer dominates the term. ``"depth"`` is the paper's (normalized) choice.

- **Comparison space** (``depth_space="disparity"``). Monocular networks (Depth Anything, MiDaS, DPT)
  predict disparity up to an unknown affine map. Patch normalization removes exactly an affine map, so
  comparing rendered *disparity* 1/D with prior disparity is exact for such a prior; comparing depth with
  negated disparity (DNGaussian's ``255 - depth_mono``) is only a first-order approximation, whose slope
  -1/D^2 differs between near and far patches and so biases the global term. ``"depth"`` is kept for
  metric-depth priors and DNGaussian parity: a disparity prior then enters negated. Metric depth priors
  (``depth_file_path``) are converted exactly to whichever space is chosen.
- **Margin** (``depth_margin=0.2``, DNGaussian's ``error_tolerance``). A normalized residual ``e`` costs
  ``e^2`` only where ``|e| > margin``. Unlike DNGaussian, the sum is divided by the number of all valid
  pixels, not of those over the margin: DNGaussian's mean over the selected pixels is NaN when none are
  selected and inflates the weight of a few remaining outliers; per pixel the gradient is the same.
- **δ** of the local normalization is ``depth_local_eps`` (1e-2) times the whole map's standard deviation,
  as DNGaussian: it is a noise floor for flat patches (a flat wall's noise is not blown up to unit variance)
  and, being relative, keeps the loss invariant to a global scale. The local term is therefore exactly
  invariant to per-patch affine maps only with δ = 0; with δ > 0 the error is of order δ/σ_P.
- **σ_I** of the global normalization is the whole map's standard deviation (the paper's definition),
  detached (as DNGaussian) so the model cannot shrink the global residuals by inflating its depth range
  with floaters. ``depth_global_std="within_patch"`` uses the pooled within-patch deviation instead, which
  makes the global term exactly invariant to per-patch shifts (the whole-image σ_I changes when patches
  shift, so the paper's global term is invariant to per-patch shifts only up to that one scalar).
- **Passes** (``depth_passes_alternate=True``): L_depth's hard and soft renders take turns on its steps
  (each every 2·``depth_every`` steps), which halves their cost: a det-gs step then costs 1.2x a base
  step at 96 px instead of 1.3-1.4x (the paper gives no cost, DNGaussian renders both every time).
- **Patches**: one size per term per step drawn uniformly from ``patch_size_range`` (inclusive), and a
  random grid origin in [0, size) so that the right and bottom remainders are covered over steps;
  drawn from ``numpy.random.default_rng([seed, step])`` so a run is reproducible and independent of the
  global RNG. Patches with less than ``depth_min_valid_fraction`` valid pixels are dropped.
- **ω** (``constant_opacity=0.95``, DNGaussian's value) and the two passes: see
  :func:`depth_pass_parameters`. The paper's ``D = Σ ω e^{-ι(n-1)} G2D_n ‖μ_n - o‖`` with ι = -ln(1-ω)
  is ordinary front-to-back compositing with every opacity set to ω, in the case where the Gaussians in
  front cover the pixel at their centre (``e^{-ι(n-1)} = (1-ω)^{n-1}``); we render with the rasterizer's
  exact compositing at opacity ω, as DNGaussian's code does, rather than the simplified product.
- **Depth** is planar z-depth (the rasterizer's D/ED modes) rather than the paper's ray distance
  ‖μ - o‖: dataset depth maps (nerfstudio convention) and monocular disparity are both of z, and the
  two differ per pixel by 1/cos of the ray angle, which patch normalization does not remove.
- **Canny** runs in OpenCV on the 8-bit ground truth, because the paper's thresholds 20/200 are OpenCV's
  (unnormalized 3x3 Sobel on 0..255, L1 magnitude by default, no pre-blur). kornia's ``canny`` works on
  [0, 1] images with the same unnormalized Sobel (magnitude 255 times smaller, L2 norm) and blurs first, so
  the equivalent call is ``kornia.filters.canny(gray, 20/255, 200/255, kernel_size=1)``, which agrees with
  ``cv2.Canny(gray8, 20, 200, L2gradient=True)`` up to rounding; we keep OpenCV so the thresholds mean what
  the paper's code meant. The colour image goes to OpenCV directly (``canny_input="rgb"``): OpenCV then
  uses, per pixel, the channel with the largest gradient, so edges between regions of equal luminance
  but different colour are found too.
- **Where L_edge acts** (``edge_skip_unknown_depth``, ``edge_prior_jump``). The paper masks only Canny
  edges of the image. With a depth prior we also leave out (i) pixels where the prior knows no depth (the
  sky of a 360° capture: dataset depth 0 there), and (ii) depth edges of the prior, neighbours whose prior
  disparity differs by more than ``edge_prior_jump`` of its range (silhouettes against a same-coloured
  background, the horizon), where Canny finds no edge. Why (docs/det-gs.md, dragon-360, 24 views; the
  likely mechanism, supported by a count of Gaussians near cameras): the sky's Gaussians, smoothed
  towards the disparity of the ground at the horizon, moved in from infinity to the camera orbit and
  became floaters in front of held-out cameras (depth AbsRel 0.036 -> 0.123 on one seed, all from pixels
  rendered too near). Without a prior L_edge is the paper's. (A monocular prior knows the sky, as farthest;
  so does the monocular-like prior, :mod:`.depth_priors`, and (i) then concerns holes of dataset depth.)
- **D̄ is not detached** (``edge_detach_mean=False``): the loss is then the stated formula and its
  gradient is the true one (a masked Laplacian smoothing), so gradient descent provably lowers it.
- **TV channels** (``tv_channels="per_channel"``): masks and penalties are taken per colour channel and
  averaged (where the ground truth is flat in channel c, the render should be flat in c); ``"luminance"``
  applies the formula to Rec. 601 luma of both images instead. The horizontal and vertical terms are each
  a mean over their own forward differences (``H x (W-1)`` and ``(H-1) x W``) and are summed.
- **D-SSIM** is ``1 - SSIM`` (3DGS, splatfacto) with ``ssim_lambda=0.2`` (3DGS; the paper does not say).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from kornia.color import rgb_to_grayscale
from kornia.filters import filter2d
from pytorch_msssim import ssim

from vision3d.errors import ConfigError

DepthKind = Literal["depth", "disparity"]


@dataclass
class DetGSLossConfig:
    """Weights, thresholds and switches of DET-GS's loss. Defaults are the paper's (or the documented choice)."""

    # photometric
    ssim_lambda: float = 0.2
    """λ in (1-λ) L1 + λ (1 - SSIM); 3DGS's value (the paper does not state it)."""

    support_reference_views: int = 8
    """regularizer weights are multiplied by s = min(1, this / number of training views); 0: constant weights."""
    tv_support_exponent: float = 2.0
    """L_tv's weight is multiplied by s ** this (L_depth's and L_edge's by s); see the docstring."""

    # hierarchical depth supervision
    use_depth: bool = True
    """switch for L_depth (needs a depth prior)."""
    depth_weight: float = 1.0
    """overall weight of L_depth in the total loss (the paper adds it with weight 1)."""
    depth_local_weight: float = 0.1
    """γ: weight of the patch-local normalized term."""
    depth_global_weight: float = 1.0
    """η: weight of the globally normalized term."""
    depth_every: int = 5
    """L_depth is applied when step % depth_every == 0."""
    depth_start_step: int = 0
    """no L_depth before this step."""
    patch_size_range: tuple[int, int] = (5, 20)
    """patch side drawn uniformly from this inclusive range, each step and term."""
    depth_margin: float = 0.2
    """error tolerance on normalized residuals (DNGaussian's 0.2)."""
    depth_local_eps: float = 1e-2
    """δ = depth_local_eps * std(whole map) in the local normalization."""
    depth_space: Literal["disparity", "depth"] = "disparity"
    """space in which rendered and prior maps are compared (see the module docstring)."""
    depth_global_std: Literal["image", "within_patch"] = "image"
    """σ_I: whole-map std (paper) or pooled within-patch std."""
    depth_detach_global_std: bool = True
    """detach σ_I (DNGaussian does)."""
    depth_near_fraction: float = 1e-2
    """depths are clamped to at least this fraction of the view's median depth before 1/D."""
    depth_min_valid_fraction: float = 0.5
    """patches with a smaller fraction of valid prior pixels are dropped."""
    constant_opacity: float = 0.95
    """ω: opacity of every Gaussian in the hard depth pass (DNGaussian's value)."""
    depth_passes: tuple[str, ...] = ("hard", "soft")
    """which extra depth renders the model makes for L_depth: 'hard' (ω, means learn), 'soft' (opacities learn)."""
    depth_passes_alternate: bool = True
    """render one of ``depth_passes`` per L_depth step, in turn (each every len·depth_every steps); see the docstring."""
    seed: int = 0
    """seed of the patch sizes and grid offsets (combined with the step)."""

    # edge-aware depth smoothness
    use_edge: bool = True
    """switch for L_edge."""
    edge_weight: float = 0.1
    """β."""
    canny_low: float = 20.0
    """OpenCV Canny low threshold (8-bit gradient units)."""
    canny_high: float = 200.0
    """OpenCV Canny high threshold (8-bit gradient units)."""
    canny_l2_gradient: bool = False
    """OpenCV's L2gradient flag (False: |gx|+|gy|, OpenCV's default)."""
    canny_input: Literal["rgb", "gray"] = "rgb"
    """give OpenCV the colour image (per-pixel strongest channel) or its luma."""
    edge_detach_mean: bool = False
    """detach the masked neighbourhood mean D̄."""
    edge_space: Literal["disparity", "depth"] = "disparity"
    """what L_edge smooths: median-normalized disparity (zero on planes) or depth (the paper's); see the docstring."""
    edge_min_accumulation: float = 0.5
    """L_edge's median depth is taken over pixels whose rendered opacity is at least this (not the background)."""
    edge_skip_unknown_depth: bool = True
    """L_edge leaves out pixels where the depth prior is not valid (sky, no depth); see the docstring."""
    edge_prior_jump: float = 0.05
    """neighbours whose prior disparity differs by more than this fraction of the view's prior disparity range
    are depth edges of the prior, where L_edge lets depth jump like at Canny edges (0: Canny edges only)."""

    # RGB-guided edge-preserving TV
    use_tv: bool = True
    """switch for L_tv."""
    tv_weight: float = 0.8
    """ϕ."""
    tv_tau_edge: float = 1e-2
    """ground-truth gradients below this are 'flat' (RGB in [0, 1])."""
    tv_tau_s: float = 1e-4
    """rendered gradients below this are free."""
    tv_channels: Literal["per_channel", "luminance"] = "per_channel"
    """channel reduction (see the module docstring)."""

    def __post_init__(self) -> None:
        low, high = self.patch_size_range
        if not 2 <= low <= high:
            raise ConfigError(f"patch_size_range must satisfy 2 <= low <= high, got {self.patch_size_range}")
        if self.depth_every < 1:
            raise ConfigError(f"depth_every must be >= 1, got {self.depth_every}")
        if not 0.0 < self.constant_opacity < 1.0:
            raise ConfigError(f"constant_opacity ω must be in (0, 1), got {self.constant_opacity}")
        unknown = set(self.depth_passes) - {"hard", "soft", "color"}
        if unknown:
            raise ConfigError(f"depth_passes may contain 'hard', 'soft', 'color'; got {sorted(unknown)}")

    def depth_active(self, step: int) -> bool:
        """Whether L_depth is applied at ``step`` (switched on, started, and on the every-N schedule)."""
        return self.use_depth and step >= self.depth_start_step and step % self.depth_every == 0

    def depth_passes_at(self, step: int) -> tuple[str, ...]:
        """The depth passes rendered for L_depth at ``step`` (none when L_depth is not active there)."""
        if not self.depth_active(step):
            return ()
        if not self.depth_passes_alternate or len(self.depth_passes) < 2:
            return tuple(self.depth_passes)
        return (self.depth_passes[(step // self.depth_every) % len(self.depth_passes)],)

    def view_support_factor(self, num_train_views: int | None) -> float:
        """s = ``min(1, support_reference_views / num_train_views)``, the factor on L_depth's and L_edge's weights.

        1 when either is unknown or ``support_reference_views`` is 0 (the paper's constant weights).
        """
        if not self.support_reference_views or not num_train_views:
            return 1.0
        return min(1.0, self.support_reference_views / num_train_views)


# ----------------------------------------------------------------------------- helpers
def _as_depth_map(depth: torch.Tensor, name: str) -> torch.Tensor:
    """[H, W] or [H, W, 1] -> [H, W]."""
    if depth.ndim == 3 and depth.shape[-1] == 1:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise ValueError(f"{name} must be [H, W] or [H, W, 1], got shape {tuple(depth.shape)}")
    return depth


def _check_rgb(image: torch.Tensor, name: str) -> None:
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"{name} must be [H, W, 3] (channels last), got shape {tuple(image.shape)}")


def median_depth(depth: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
    """The view's depth scale: median of ``depth`` [H, W] over ``valid`` pixels that are finite and positive.

    Detached (a unit, not something to optimise). Falls back to all finite positive pixels when fewer than
    two are valid, and to 1 when there are none.
    """
    depth = depth.detach()
    usable = torch.isfinite(depth) & (depth > 0)
    chosen = usable & valid.to(depth.device).bool() if valid is not None else usable
    values = depth[chosen] if chosen.sum() >= 2 else depth[usable]
    return values.median() if values.numel() else depth.new_ones(())


def to_comparison_space(
    values: torch.Tensor,
    kind: DepthKind,
    space: str,
    near_fraction: float = 1e-2,
    valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """Map a depth or (affine-ambiguous) disparity map into a unit-free space for det-gs's losses.

    A depth is divided by its :func:`median_depth` over ``valid`` first, so the result does not depend on
    the scene's units.

    Args:
        values: [H, W] depth (any units) or disparity (arbitrary affine units).
        kind: what ``values`` holds.
        space: ``"disparity"`` (depth -> m/max(depth, near_fraction·m) with m the median; disparity
            unchanged) or ``"depth"`` (depth -> depth/m; disparity negated, DNGaussian's first-order
            convention).
        near_fraction: smallest depth inverted, relative to the median, so empty pixels stay finite.
        valid: [H, W] bool, the pixels the median is taken over (default: all finite positive ones).
    Returns:
        [H, W] map in which a larger value means farther (depth space) or nearer (disparity space).
    """
    if kind not in ("depth", "disparity"):
        raise ValueError(f"kind must be 'depth' or 'disparity', got {kind!r}")
    if space not in ("disparity", "depth"):
        raise ValueError(f"space must be 'disparity' or 'depth', got {space!r}")
    if kind == "disparity":
        return values if space == "disparity" else -values
    relative = values / median_depth(values, valid)
    return 1.0 / relative.clamp_min(near_fraction) if space == "disparity" else relative


def draw_patch_grid(size_range: tuple[int, int], seed: int, step: int, n: int = 2) -> list[tuple[int, int, int]]:
    """``n`` patch grids ``(size, offset_y, offset_x)`` for one step, reproducible from (seed, step).

    Size is uniform on the inclusive ``size_range``; the offsets are uniform on [0, size).
    """
    rng = np.random.default_rng([seed, step])
    grids = []
    for _ in range(n):
        size = int(rng.integers(size_range[0], size_range[1] + 1))
        oy, ox = (int(v) for v in rng.integers(0, size, size=2))
        grids.append((size, oy, ox))
    return grids


def patchify(x: torch.Tensor, size: int, offset: tuple[int, int] = (0, 0)) -> torch.Tensor:
    """Non-overlapping ``size`` x ``size`` patches of ``x`` [H, W] on a grid starting at ``offset`` (y, x).

    Pixels left over at the borders (before the offset, after the last whole patch) are not used.

    Returns:
        [P, size*size], patches in row-major order, pixels in row-major order within a patch.
    """
    oy, ox = offset
    ny, nx = (x.shape[0] - oy) // size, (x.shape[1] - ox) // size
    if ny < 1 or nx < 1:
        raise ValueError(f"patch size {size} (offset {offset}) does not fit an image of size {tuple(x.shape)}")
    crop = x[oy : oy + ny * size, ox : ox + nx * size]
    return crop.reshape(ny, size, nx, size).permute(0, 2, 1, 3).reshape(ny * nx, size * size)


def _masked_std(x: torch.Tensor, valid: torch.Tensor) -> torch.Tensor:
    """Unbiased standard deviation of ``x`` over ``valid`` pixels (a scalar)."""
    xv = x[valid]
    if xv.numel() < 2:
        return x.new_zeros(())
    return xv.std()


def _patch_stats(xp: torch.Tensor, vp: torch.Tensor):
    """Per-patch count, mean and unbiased variance over valid pixels. xp, vp: [P, K] -> three [P, 1]."""
    n = vp.sum(dim=1, keepdim=True)
    mean = (xp * vp).sum(dim=1, keepdim=True) / n.clamp_min(1.0)
    var = (((xp - mean) ** 2) * vp).sum(dim=1, keepdim=True) / (n - 1.0).clamp_min(1.0)
    return n, mean, var


def patch_normalize(
    x: torch.Tensor,
    valid: torch.Tensor,
    size: int,
    offset: tuple[int, int] = (0, 0),
    mode: Literal["local", "global"] = "local",
    local_eps: float = 1e-2,
    global_std: Literal["image", "within_patch"] = "image",
    detach_global_std: bool = True,
):
    """DET-GS's patch normalizations of one map.

    local:  ``(x - μ_P) / (σ_P + δ)`` with δ = ``local_eps`` · std(x over valid pixels), detached.
    global: ``(x - μ_P) / σ_I`` with σ_I the std of x over all valid pixels (``global_std="image"``) or the
    pooled within-patch std (``"within_patch"``).
    μ_P and σ_P are the patch's mean and unbiased std over its valid pixels.

    Invariances (exact, with ``local_eps=0`` for local): local is unchanged by any per-patch affine map
    ``a_P x + b_P`` with ``a_P > 0``; global is unchanged by a global affine map ``a x + b`` with ``a > 0``,
    and with ``"within_patch"`` also by per-patch shifts ``a x + b_P``. With ``"image"`` a per-patch shift
    changes the global result only through the scalar σ_I.

    Args:
        x: [H, W] map. valid: [H, W] bool. size, offset: the patch grid (see :func:`patchify`).
    Returns:
        (normalized [P, size*size], valid [P, size*size] bool) — invalid entries of ``normalized`` are 0.
    """
    xp = patchify(x, size, offset)
    vp = patchify(valid.to(x.dtype), size, offset)
    n, mean, var = _patch_stats(xp, vp)
    centred = (xp - mean) * vp
    if mode == "local":
        delta = local_eps * _masked_std(x, valid).detach()
        std = torch.sqrt(var.clamp_min(1e-20))
        out = centred / (std + delta + 1e-12)
    elif mode == "global":
        if global_std == "image":
            sigma = _masked_std(x, valid)
        elif global_std == "within_patch":
            pooled = (var * (n - 1.0).clamp_min(0.0)).sum() / (n - 1.0).clamp_min(0.0).sum().clamp_min(1.0)
            sigma = torch.sqrt(pooled.clamp_min(1e-20))
        else:
            raise ValueError(f"global_std must be 'image' or 'within_patch', got {global_std!r}")
        if detach_global_std:
            sigma = sigma.detach()
        out = centred / (sigma + 1e-12)
    else:
        raise ValueError(f"mode must be 'local' or 'global', got {mode!r}")
    return out, vp > 0


def margin_l2(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor, margin: float) -> torch.Tensor:
    """``Σ valid · 1[|e| > margin] · e² / Σ valid`` with ``e = pred - target`` (any equal shapes); 0 if nothing valid."""
    err = pred - target
    keep = valid & (err.abs() > margin)
    return (err * keep).pow(2).sum() / valid.sum().clamp_min(1)


def hierarchical_depth_loss(
    depth: torch.Tensor,
    prior: torch.Tensor,
    config: DetGSLossConfig,
    step: int,
    prior_kind: DepthKind = "disparity",
    prior_valid: torch.Tensor | None = None,
    depth_kind: DepthKind = "depth",
) -> dict[str, torch.Tensor]:
    """DET-GS's L_depth terms for one rendered depth map against a prior, *unweighted*.

    Both maps are mapped to ``config.depth_space`` (:func:`to_comparison_space`), cut into patches on two
    grids drawn from (``config.seed``, ``step``), normalized locally and globally, and compared with the
    margin L2 (:func:`margin_l2`).

    Args:
        depth: [H, W] or [H, W, 1] rendered depth, scene units (or disparity if ``depth_kind``).
        prior: [H, W] or [H, W, 1] prior of kind ``prior_kind``.
        prior_valid: [H, W] bool; default: finite prior, and positive when it is a depth. Pixels where the
            rendered depth is not positive (nothing rendered) are left out as well.
    Returns:
        {"local": scalar, "global": scalar}; multiply by γ, η (see :func:`depth_loss`).
    """
    depth = _as_depth_map(depth, "depth")
    prior = _as_depth_map(prior, "prior")
    if depth.shape != prior.shape:
        raise ValueError(f"depth {tuple(depth.shape)} and prior {tuple(prior.shape)} differ in size")
    prior = prior.to(depth)
    if prior_valid is None:
        prior_valid = torch.isfinite(prior)
        if prior_kind == "depth":
            prior_valid = prior_valid & (prior > 0)
    prior_valid = _as_depth_map(prior_valid, "prior_valid").to(depth.device).bool()
    # pixels the render leaves empty (expected depth 0) carry no depth to compare; they would be huge
    # outliers in disparity and inflate σ_I
    valid = prior_valid & torch.isfinite(depth).detach()
    if depth_kind == "depth":
        valid = valid & (depth.detach() > 0)
    space, near = config.depth_space, config.depth_near_fraction
    rendered = to_comparison_space(depth, depth_kind, space, near, valid)
    target = to_comparison_space(torch.where(prior_valid, prior, torch.ones_like(prior)), prior_kind, space, near, prior_valid)
    target = torch.where(prior_valid, target, torch.zeros_like(target))

    (size_l, oy_l, ox_l), (size_g, oy_g, ox_g) = draw_patch_grid(config.patch_size_range, config.seed, step, n=2)
    terms = {}
    for name, (size, oy, ox) in (("local", (size_l, oy_l, ox_l)), ("global", (size_g, oy_g, ox_g))):
        size = min(size, depth.shape[0], depth.shape[1])
        oy, ox = min(oy, depth.shape[0] - size), min(ox, depth.shape[1] - size)
        kwargs = dict(
            size=size,
            offset=(oy, ox),
            mode=name,
            local_eps=config.depth_local_eps,
            global_std=config.depth_global_std,
            detach_global_std=config.depth_detach_global_std,
        )
        a, patch_valid = patch_normalize(rendered, valid, **kwargs)
        b, _ = patch_normalize(target, valid, **kwargs)
        enough = patch_valid.float().mean(dim=1, keepdim=True) >= config.depth_min_valid_fraction
        terms[name] = margin_l2(a, b, patch_valid & enough, config.depth_margin)
    return terms


def depth_loss(
    depth: torch.Tensor,
    prior: torch.Tensor,
    config: DetGSLossConfig,
    step: int,
    prior_kind: DepthKind = "disparity",
    prior_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """``depth_weight · (γ L_local + η L_global)`` for one depth render; zero when not active at ``step``."""
    if not config.depth_active(step):
        return depth.new_zeros(())
    terms = hierarchical_depth_loss(depth, prior, config, step, prior_kind, prior_valid)
    return config.depth_weight * (config.depth_local_weight * terms["local"] + config.depth_global_weight * terms["global"])


def depth_pass_parameters(
    pass_name: Literal["hard", "soft", "color"],
    means: torch.Tensor,
    scales: torch.Tensor,
    quats: torch.Tensor,
    opacities: torch.Tensor,
    constant_opacity: float = 0.95,
) -> dict[str, torch.Tensor]:
    """Gaussian parameters for one of L_depth's render passes, with what must not learn detached.

    - ``"hard"``: every opacity is the constant ω (no gradient), scales and rotations are detached, so
      L_depth moves only the **means**: with a near-opaque ω each Gaussian is a hard surface element, and
      the depth error cannot be explained away by making Gaussians transparent (the paper's
      ``D = Σ ω e^{-ι(n-1)} G2D_n ‖μ_n - o‖``; DNGaussian's ``render_for_depth``).
    - ``"soft"``: means, scales and rotations are detached and the learned opacities are kept, so
      L_depth moves only the **opacities** (DNGaussian's ``render_for_opa``).
    - ``"color"``: all parameters as given (the ordinary render's depth).

    Args:
        means: [N, 3]. scales: [N, 3] (activated). quats: [N, 4]. opacities: [N] or [N, 1] (activated).
    Returns:
        {"means", "scales", "quats", "opacities"} to pass as overrides to the model's render
        (``SplatModel.render(means=..., scales=..., quats=..., opacities=...)``). Colours are irrelevant
        to a depth render; the model may pass constant ones.
    """
    if pass_name == "hard":
        return {
            "means": means,
            "scales": scales.detach(),
            "quats": quats.detach(),
            "opacities": torch.full_like(opacities.detach(), constant_opacity),
        }
    if pass_name == "soft":
        return {"means": means.detach(), "scales": scales.detach(), "quats": quats.detach(), "opacities": opacities}
    if pass_name == "color":
        return {"means": means, "scales": scales, "quats": quats, "opacities": opacities}
    raise ValueError(f"pass_name must be 'hard', 'soft' or 'color', got {pass_name!r}")


# ----------------------------------------------------------------------------- edge-aware depth smoothness
def canny_edges(
    image: torch.Tensor,
    low: float = 20.0,
    high: float = 200.0,
    l2_gradient: bool = False,
    input_mode: Literal["rgb", "gray"] = "rgb",
) -> torch.Tensor:
    """OpenCV Canny edges of a ground-truth image (not differentiable; compute once per image and cache).

    Args:
        image: [H, W, 3] RGB, float in [0, 1] or uint8.
        low, high: OpenCV hysteresis thresholds in 8-bit Sobel units (the paper's 20, 200).
        l2_gradient: OpenCV's ``L2gradient``.
        input_mode: ``"rgb"`` (OpenCV takes the strongest channel per pixel) or ``"gray"`` (Rec. 601 luma).
    Returns:
        [H, W] bool on ``image``'s device, True on edge pixels.
    """
    _check_rgb(image, "image")
    array = image.detach().cpu()
    if array.dtype != torch.uint8:
        array = (array.float().clamp(0.0, 1.0) * 255.0).round().to(torch.uint8)
    array = np.ascontiguousarray(array.numpy())
    if input_mode == "gray":
        array = cv2.cvtColor(array, cv2.COLOR_RGB2GRAY)
    elif input_mode != "rgb":
        raise ValueError(f"input_mode must be 'rgb' or 'gray', got {input_mode!r}")
    edges = cv2.Canny(array, float(low), float(high), L2gradient=bool(l2_gradient))
    return torch.from_numpy(edges > 0).to(image.device)


def prior_depth_edges(prior: torch.Tensor, prior_kind: DepthKind, valid: torch.Tensor, jump: float) -> torch.Tensor:
    """Depth edges of a prior: both pixels of every 4-neighbour pair whose disparity differs by more than
    ``jump`` times the view's disparity range (2nd to 98th percentile over valid pixels; unit- and affine-free).

    Args:
        prior: [H, W] depth or disparity (``prior_kind``). valid: [H, W] bool.
    Returns:
        [H, W] bool; pairs with an invalid pixel are not edges (those pixels are handled by the validity mask).
    """
    valid = valid.bool()
    if jump <= 0 or valid.sum() < 2:
        return torch.zeros_like(valid)
    prior = prior.float()
    disparity = prior if prior_kind == "disparity" else 1.0 / torch.where(valid, prior, torch.ones_like(prior)).clamp_min(1e-12)
    values = disparity[valid]
    values = values[:: -(-values.numel() // 2**20)]  # torch.quantile takes at most 2**24 values; a stride keeps it exact enough
    lo, hi = torch.quantile(values, torch.tensor([0.02, 0.98], device=prior.device)).tolist()
    threshold = jump * max(hi - lo, 1e-12)
    edges = torch.zeros_like(valid)
    for dim in (0, 1):
        step = (torch.diff(disparity, dim=dim).abs() > threshold) & valid.narrow(dim, 1, valid.shape[dim] - 1)
        step = step & valid.narrow(dim, 0, valid.shape[dim] - 1)
        edges.narrow(dim, 1, valid.shape[dim] - 1).logical_or_(step)
        edges.narrow(dim, 0, valid.shape[dim] - 1).logical_or_(step)
    return edges


def edge_mask(
    gt_rgb: torch.Tensor,
    config: DetGSLossConfig,
    prior: torch.Tensor | None = None,
    prior_kind: DepthKind = "disparity",
    prior_valid: torch.Tensor | None = None,
) -> torch.Tensor:
    """The pixels L_edge leaves out, [H, W] bool: Canny edges of ``gt_rgb`` [H, W, 3] and, with a prior
    [H, W], its unknown pixels and depth edges (see the docstring, *Where L_edge acts*). Compute once per image."""
    mask = canny_edges(gt_rgb, config.canny_low, config.canny_high, config.canny_l2_gradient, config.canny_input)
    if prior is None:
        return mask
    prior = _as_depth_map(prior, "prior").to(mask.device)
    if prior_valid is None:
        prior_valid = torch.isfinite(prior) & (prior > 0) if prior_kind == "depth" else torch.isfinite(prior)
    prior_valid = _as_depth_map(prior_valid, "prior_valid").to(mask.device).bool()
    if config.edge_skip_unknown_depth:
        mask = mask | ~prior_valid
    return mask | prior_depth_edges(prior, prior_kind, prior_valid, config.edge_prior_jump)


_CROSS = torch.tensor([[0.0, 1.0, 0.0], [1.0, 1.0, 1.0], [0.0, 1.0, 0.0]])


def masked_cross_mean(depth: torch.Tensor, mask: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``D̄ = Σ_N D·m / (Σ_N m + eps)`` over the cross-shaped 3x3 neighbourhood N (centre and 4 neighbours).

    Pixels outside the image count as masked out. depth, mask: [H, W] -> [H, W].
    """
    kernel = _CROSS.to(depth)[None]
    m = mask.to(depth)[None, None]
    num = filter2d(depth[None, None] * m, kernel, border_type="constant")
    den = filter2d(m, kernel, border_type="constant")
    return (num / (den + eps))[0, 0]


def edge_aware_depth_loss(
    depth: torch.Tensor,
    edges: torch.Tensor,
    detach_mean: bool = False,
    space: Literal["disparity", "depth"] = "disparity",
    scale_valid: torch.Tensor | None = None,
    near_fraction: float = 1e-2,
) -> torch.Tensor:
    """DET-GS's L_edge = mean(m · (D - D̄)²), m = 1 - E the non-edge mask, D̄ from :func:`masked_cross_mean`.

    D is the rendered depth mapped by :func:`to_comparison_space` (median-normalized disparity or depth),
    so the loss has no units. Zero exactly when D is constant on every 4-connected region of non-edge
    pixels (an 8-connected Canny edge line separates such regions, so depth may jump across it); in
    disparity space also (away from masked pixels and the border) where the surface is a plane.

    Args:
        depth: [H, W] or [H, W, 1] rendered depth (any units).
        edges: [H, W] bool, the pixels left out: Canny edges of the ground truth (:func:`edge_mask`).
        space: ``"disparity"`` or ``"depth"`` (see the module docstring).
        scale_valid: [H, W] bool, pixels whose median depth sets the scale (default: all positive ones).
    Returns:
        scalar, mean over all H·W pixels.
    """
    depth = _as_depth_map(depth, "depth")
    edges = _as_depth_map(edges, "edges")
    if edges.shape != depth.shape:
        raise ValueError(f"edges {tuple(edges.shape)} and depth {tuple(depth.shape)} differ in size")
    if scale_valid is not None:
        scale_valid = _as_depth_map(scale_valid, "scale_valid")
    depth = to_comparison_space(depth, "depth", space, near_fraction, scale_valid)
    mask = (~edges.bool()).to(depth)
    mean = masked_cross_mean(depth, mask)
    if detach_mean:
        mean = mean.detach()
    return (mask * (depth - mean) ** 2).mean()


# ----------------------------------------------------------------------------- RGB-guided TV
def edge_preserving_tv_loss(
    rgb: torch.Tensor,
    gt_rgb: torch.Tensor,
    tau_edge: float = 1e-2,
    tau_s: float = 1e-4,
    channels: Literal["per_channel", "luminance"] = "per_channel",
) -> torch.Tensor:
    """DET-GS's L_tv = mean(M_h · max(|∇_h I| - τ_s, 0)) + mean(M_v · max(|∇_v I| - τ_s, 0)).

    ``M = 1[|∇ I_gt| < τ_edge]``; ∇ are forward differences; I is the rendered image.

    Args:
        rgb: [H, W, 3] rendered, in [0, 1]. gt_rgb: [H, W, 3] ground truth, in [0, 1].
        channels: ``"per_channel"`` (masks and penalties per channel, averaged) or ``"luminance"``.
    Returns:
        scalar.
    """
    _check_rgb(rgb, "rgb")
    _check_rgb(gt_rgb, "gt_rgb")
    if rgb.shape != gt_rgb.shape:
        raise ValueError(f"rgb {tuple(rgb.shape)} and gt_rgb {tuple(gt_rgb.shape)} differ in size")
    gt_rgb = gt_rgb.to(rgb)
    if channels == "luminance":
        rgb = rgb_to_grayscale(rgb.permute(2, 0, 1)).permute(1, 2, 0)
        gt_rgb = rgb_to_grayscale(gt_rgb.permute(2, 0, 1)).permute(1, 2, 0)
    elif channels != "per_channel":
        raise ValueError(f"channels must be 'per_channel' or 'luminance', got {channels!r}")
    total = rgb.new_zeros(())
    for dim in (1, 0):  # horizontal (along W), vertical (along H)
        grad = torch.diff(rgb, dim=dim).abs()
        flat = torch.diff(gt_rgb, dim=dim).abs() < tau_edge
        total = total + (flat * F.relu(grad - tau_s)).mean()
    return total


# ----------------------------------------------------------------------------- photometric and totals
def photometric_loss(rgb: torch.Tensor, gt_rgb: torch.Tensor, ssim_lambda: float = 0.2) -> torch.Tensor:
    """``(1 - λ) L1 + λ (1 - SSIM)`` on [H, W, 3] images in [0, 1] (pytorch_msssim's SSIM, as splatfacto)."""
    _check_rgb(rgb, "rgb")
    l1 = (rgb - gt_rgb).abs().mean()
    s = ssim(rgb.permute(2, 0, 1)[None], gt_rgb.permute(2, 0, 1)[None].to(rgb), data_range=1.0, size_average=True)
    return (1.0 - ssim_lambda) * l1 + ssim_lambda * (1.0 - s)


def regularizer_losses(
    config: DetGSLossConfig,
    step: int,
    rgb: torch.Tensor,
    gt_rgb: torch.Tensor,
    depth: torch.Tensor | None = None,
    prior: torch.Tensor | None = None,
    prior_kind: DepthKind = "disparity",
    prior_valid: torch.Tensor | None = None,
    depth_passes: Mapping[str, torch.Tensor] | None = None,
    edges: torch.Tensor | None = None,
    accumulation: torch.Tensor | None = None,
    num_train_views: int | None = None,
) -> dict[str, torch.Tensor]:
    """DET-GS's weighted regularizers for one training image; add them to the photometric loss.

    Args:
        config: the loss configuration.
        step: training step (schedules L_depth and seeds its patches).
        rgb: [H, W, 3] rendered image in [0, 1] (the ordinary colour pass).
        gt_rgb: [H, W, 3] ground truth in [0, 1].
        depth: [H, W] or [H, W, 1] depth of the colour pass (for L_edge; and for L_depth when no
            ``depth_passes`` are given).
        prior: [H, W] depth prior of kind ``prior_kind`` (None: L_depth is skipped).
        prior_valid: [H, W] bool, pixels where the prior is known.
        depth_passes: depths of the extra passes, e.g. {"hard": D_ω, "soft": D_soft}, rendered with
            :func:`depth_pass_parameters`; each gets the full L_depth.
        edges: [H, W] bool cached :func:`edge_mask` (Canny edges of ``gt_rgb``, and the prior's unknown pixels
            and depth edges); computed here when None.
        accumulation: [H, W] or [H, W, 1] rendered opacity of the colour pass; where it is at least
            ``edge_min_accumulation`` sets L_edge's depth scale (None: every pixel with a positive depth).
        num_train_views: size of the training set; scales L_depth and L_edge by
            s = :meth:`DetGSLossConfig.view_support_factor` and L_tv by s ** ``tv_support_exponent``
            (None: s = 1).
    Returns:
        dict of weighted scalar losses, with only the active terms: ``depth_<pass>`` (every
        ``depth_every`` steps), ``edge``, ``tv``.
    """
    losses: dict[str, torch.Tensor] = {}
    if prior is not None and config.depth_active(step):
        passes = dict(depth_passes) if depth_passes else ({"color": depth} if depth is not None else {})
        for name, pass_depth in passes.items():
            losses[f"depth_{name}"] = depth_loss(pass_depth, prior, config, step, prior_kind, prior_valid)
    if config.use_edge and config.edge_weight > 0 and depth is not None:
        if edges is None:
            edges = edge_mask(gt_rgb, config, prior, prior_kind, prior_valid)
        covered = accumulation >= config.edge_min_accumulation if accumulation is not None else None
        losses["edge"] = config.edge_weight * edge_aware_depth_loss(
            depth, edges, config.edge_detach_mean, config.edge_space, covered, config.depth_near_fraction
        )
    if config.use_tv and config.tv_weight > 0:
        losses["tv"] = config.tv_weight * edge_preserving_tv_loss(
            rgb, gt_rgb, config.tv_tau_edge, config.tv_tau_s, config.tv_channels
        )
    factor = config.view_support_factor(num_train_views)
    if factor == 1.0:
        return losses
    return {name: factor ** (config.tv_support_exponent if name == "tv" else 1.0) * value for name, value in losses.items()}


def total_loss(
    config: DetGSLossConfig,
    step: int,
    rgb: torch.Tensor,
    gt_rgb: torch.Tensor,
    **regularizer_inputs,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """``L = (1-λ) L1 + λ D-SSIM + L_depth + β L_edge + ϕ L_tv``; returns (total, dict of its terms).

    ``regularizer_inputs`` are :func:`regularizer_losses`' keyword arguments (depth, prior, ...).
    """
    terms = {"photometric": photometric_loss(rgb, gt_rgb, config.ssim_lambda)}
    terms.update(regularizer_losses(config, step, rgb, gt_rgb, **regularizer_inputs))
    return sum(terms.values()), terms

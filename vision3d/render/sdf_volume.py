"""Volume rendering of signed distances: NeuS's discrete opacity and VolSDF's Laplace density.

Pure functions over batched tensors, so the surface methods (HelixSurf) and the tests share one formula.
Sign convention: the SDF is positive outside the surface (in free space) and negative inside.
"""

from __future__ import annotations

import torch
from torch import Tensor


def neus_alpha(
    sdf: Tensor,  # [..., S, 1] signed distance at the sample midpoints
    cos: Tensor,  # [..., S, 1] dot(ray direction, SDF gradient) at the samples
    deltas: Tensor,  # [..., S, 1] sample interval lengths along the ray
    inv_s: Tensor | float,  # NeuS's learned sharpness s (1 / standard deviation), > 0
    cos_anneal_ratio: float = 1.0,
) -> Tensor:
    """NeuS's discrete opacity α_i = max((Φ_s(f(p_i)) − Φ_s(f(p_{i+1}))) / Φ_s(f(p_i)), 0) (eq. 13), [..., S, 1].

    The SDF at the interval's ends is estimated from the midpoint value and the directional derivative
    ``cos`` (f ± cos·δ/2). As in NeuS, ``cos`` is forced non-positive (a ray leaving a surface adds no
    opacity) and, with ``cos_anneal_ratio`` < 1, blended towards −½(1 − cos) early in training so that
    gradients reach back-facing samples too. Φ_s is the logistic sigmoid of s·f.
    """
    if cos_anneal_ratio < 0 or cos_anneal_ratio > 1:
        raise ValueError(f"neus_alpha: cos_anneal_ratio must lie in [0, 1], got {cos_anneal_ratio}")
    iter_cos = -(torch.relu(-cos * 0.5 + 0.5) * (1.0 - cos_anneal_ratio) + torch.relu(-cos) * cos_anneal_ratio)
    prev_cdf = torch.sigmoid((sdf - iter_cos * deltas * 0.5) * inv_s)
    next_cdf = torch.sigmoid((sdf + iter_cos * deltas * 0.5) * inv_s)
    return ((prev_cdf - next_cdf + 1e-5) / (prev_cdf + 1e-5)).clip(0.0, 1.0)


def neus_alpha_along_rays(
    sdf: Tensor,  # [R, S] signed distance at the sample midpoints, NaN where not evaluated
    t: Tensor,  # [R, S] ray distance of the sample midpoints
    deltas: Tensor,  # [R, S] sample interval lengths
    inv_s: Tensor | float,
    cos_anneal_ratio: float = 1.0,
) -> Tensor:
    """NeuS's α [R, S] from SDF values alone, without gradients (to choose which samples to evaluate).

    ``cos`` (the directional derivative along the ray) is the SDF's difference quotient between neighbouring
    samples: the mean of the forward and backward quotients where both neighbours were evaluated, the one
    available otherwise, −1 (a ray heading straight at a surface) where neither. α is 0 where ``sdf`` is NaN.
    """
    slope = (sdf[:, 1:] - sdf[:, :-1]) / (t[:, 1:] - t[:, :-1]).clamp_min(1e-12)  # [R, S - 1]
    missing = torch.full_like(slope[:, :1], float("nan"))
    cos = torch.stack([torch.cat([slope, missing], 1), torch.cat([missing, slope], 1)]).nanmean(dim=0)
    cos = torch.nan_to_num(cos, nan=-1.0)
    alpha = neus_alpha(torch.nan_to_num(sdf, nan=1.0)[..., None], cos[..., None], deltas[..., None], inv_s,
                       cos_anneal_ratio)[..., 0]
    return torch.where(torch.isnan(sdf), torch.zeros_like(alpha), alpha)


def laplace_cdf(x: Tensor, beta: Tensor | float) -> Tensor:
    """CDF of the zero-mean Laplace distribution with scale ``beta`` at ``x`` (any shape)."""
    return 0.5 + 0.5 * torch.sign(x) * (1.0 - torch.exp(-x.abs() / beta))


def volsdf_density(sdf: Tensor, beta: Tensor | float) -> Tensor:
    """VolSDF's density σ = (1/β)·Ψ_β(−f) (eq. 2 with α = 1/β), same shape as ``sdf``."""
    return laplace_cdf(-sdf, beta) / beta


def neus_density(sdf: Tensor, inv_s: Tensor | float) -> Tensor:
    """NeuS's logistic density φ_s(f) = s·σ(s·f)·(1 − σ(s·f)) of signed distances (any shape).

    It peaks at s/4 on the surface (f = 0) and is symmetric in f; HelixSurf's occupancy grid thresholds it.
    """
    cdf = torch.sigmoid(sdf * inv_s)
    return inv_s * cdf * (1.0 - cdf)

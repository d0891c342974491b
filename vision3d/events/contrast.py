"""Contrast maximization's objective: the image of warped events (IWE) and its sharpness.

Shared by E-MoFlow (:mod:`vision3d.events.emoflow`) and the CMax baseline (:mod:`vision3d.events.cmax`).
Decisions (official E-MoFlow code unless marked ours; every value is a :class:`ContrastConfig` field):

* events vote regardless of polarity by default, bilinearly (official) or with the quadratic B-spline
  (ours: C¹ at pixel centres, so a sub-pixel warp has no kink in contrast; see docs/emoflow.md);
* the IWE is blurred by a 3×3 Gaussian (kornia), σ = 1 official;
* the objective is ``−(L_grad + L_var)``: the IWE's variance plus the mean ``|∂x| + |∂y|`` of an
  unnormalised Sobel filter (kornia ``spatial_gradient(normalized=False)``);
* (ours) counts are rescaled to MVSEC's event density before the contrast terms, so that E-MoFlow's
  DEC weight λ = 2.5 weighs as in the paper whatever the sensor size; the rescaling divides by every
  event of the window (``iwe_density_over="events"``) or by the vote mass inside the image (``"inside"``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor


@dataclass
class ContrastConfig:
    blur_kernel: int = 3
    blur_sigma: float = 1.0
    iwe_density_ref: float | None = 30_000 / (346 * 260)
    """Scale the IWE so its mean is this many events per pixel before the contrast terms (ours).
    λ and δ were tuned on MVSEC (30k events on 346×260, 0.33 events/pixel); variance grows with
    the square of the density, so without this a dense small sensor makes the DEC term
    negligible. ``None`` uses raw counts as the official code does."""
    iwe_density_over: Literal["events", "inside"] = "events"
    """What the ``iwe_density_ref`` rescaling divides by (ours). ``events``: every event of the window, so
    the rescaled IWE (like the official raw counts) loses contrast as warped events leave the image, and
    contrast maximization prefers warps that keep them in. ``inside``: the vote mass that lands inside the
    image (differentiable in the warp), so the IWE's mean is ``iwe_density_ref`` whatever the warp. See
    docs/emoflow.md (mixed motion) for what it changes."""
    iwe_kernel: Literal["bilinear", "quadratic"] = "bilinear"
    """How warped events vote into the IWE (see :func:`image_of_warped_events`). ``bilinear`` is official."""


def image_of_warped_events(
    xy: Tensor,  # [N, 2] pixel positions
    height: int,
    width: int,
    weights: Tensor | None = None,  # [N], or [N, K] for K images voted in one pass
    kernel: Literal["bilinear", "quadratic"] = "bilinear",
) -> Tensor:  # [H, W], or [K, H, W]
    """Voting of events into an image; differentiable in ``xy``; outside votes dropped.

    ``bilinear`` (official) spreads each event over its 4 neighbouring pixels. ``quadratic`` uses the
    separable quadratic B-spline (3×3 pixels), which is bilinear voting averaged over a uniform
    sub-pixel offset: it is smooth (C¹) in ``xy``, so an event at a pixel centre has no kink there.
    """
    w = torch.ones_like(xy[:, :1]) if weights is None else weights.reshape(xy.shape[0], -1)  # [N, K]
    if kernel == "bilinear":
        x0, y0 = torch.floor(xy[:, 0]), torch.floor(xy[:, 1])
        fx, fy = xy[:, 0] - x0, xy[:, 1] - y0
        taps_x = ((0, 1 - fx), (1, fx))
        taps_y = ((0, 1 - fy), (1, fy))
    elif kernel == "quadratic":
        x0, y0 = torch.round(xy[:, 0]), torch.round(xy[:, 1])
        fx, fy = xy[:, 0] - x0, xy[:, 1] - y0  # in [-0.5, 0.5]
        taps_x = ((-1, 0.5 * (0.5 - fx) ** 2), (0, 0.75 - fx * fx), (1, 0.5 * (0.5 + fx) ** 2))
        taps_y = ((-1, 0.5 * (0.5 - fy) ** 2), (0, 0.75 - fy * fy), (1, 0.5 * (0.5 + fy) ** 2))
    else:
        raise ValueError(f"unknown voting kernel {kernel!r}")
    img = xy.new_zeros(height * width, w.shape[1])
    for dy, wy in taps_y:
        yi = y0.long() + dy
        for dx, wx in taps_x:
            xi = x0.long() + dx
            ok = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            img = img.index_add(0, (yi * width + xi)[ok], ((wx * wy)[:, None] * w)[ok])
    img = img.T.reshape(-1, height, width)
    return img if weights is not None and weights.dim() == 2 else img[0]


def blur(img: Tensor, kernel: int = 3, sigma: float = 1.0) -> Tensor:
    import kornia

    if sigma <= 0:
        return img
    return kornia.filters.gaussian_blur2d(img[None, None], (kernel, kernel), (sigma, sigma))[0, 0]


def contrast_terms(iwe: Tensor) -> tuple[Tensor, Tensor]:  # ([], [])
    """(variance, mean |Sobel| gradient magnitude) of an IWE [H, W]."""
    import kornia

    grad = kornia.filters.spatial_gradient(iwe[None, None], mode="sobel", normalized=False)[0, 0]
    return iwe.var(), grad.abs().sum(0).mean()


def focus_loss(
    xy_warped: Tensor, height: int, width: int, config: ContrastConfig, weights: Tensor | None = None
) -> tuple[Tensor, Tensor]:  # ([], [H, W])
    """``−(L_grad + L_var)`` of the blurred IWE (density-rescaled), and the blurred IWE in event counts."""
    if config.iwe_density_over not in ("events", "inside"):
        raise ValueError(f"unknown iwe_density_over {config.iwe_density_over!r}")
    mass_inside = config.iwe_density_ref is not None and config.iwe_density_over == "inside"
    if mass_inside and weights is not None:  # signed weights: their IWE and the |w| mass in one vote
        votes, mass = image_of_warped_events(xy_warped, height, width, torch.stack([weights, weights.abs()], -1),
                                             config.iwe_kernel)  # fmt: skip
    else:
        votes = mass = image_of_warped_events(xy_warped, height, width, weights, config.iwe_kernel)
    iwe = blur(votes, config.blur_kernel, config.blur_sigma)
    scaled = iwe
    if config.iwe_density_ref is not None:
        n = mass.sum().clamp_min(1.0) if mass_inside else max(xy_warped.shape[0], 1)
        scaled = iwe * (config.iwe_density_ref * height * width / n)
    var, grad = contrast_terms(scaled)
    return -(grad + var), iwe

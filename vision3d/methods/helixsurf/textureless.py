"""HelixSurf's textureless-region targets: superpixel plane normals and Manhattan seeds.

Per training image: skimage's Felzenszwalb superpixels (the official ``scale=100, sigma=0.5, min_size=5``).
Each superpixel gets one plane normal, the normalised mean of the blended normals of its pixels (MVS normals
weighted ``w``, the SDF's rendered normals ``1 − w``, the SDF's alone where MVS has nothing); it is planar
when that mean is long (the normals agree: mean resultant length ≥ ``min_coherence``) and it has at least
``min_pixels`` pixels. ``w`` starts at 1 and is divided by 4 at each refresh, as the official code does.
Superpixels with (almost) no MVS support whose normal lies within ``manhattan_min_cos`` of one of the
scene's axes become Manhattan seeds: their target is that axis (sign towards the normal).
Decision: the official code picks planes in a sliding window of 31 px over the ray-cast mesh; we use the
superpixels themselves as the windows (one normal per superpixel), which the issue asks for.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from skimage.segmentation import felzenszwalb
from torch import Tensor


@dataclass
class TexturelessConfig:
    """Superpixel and plane settings (Felzenszwalb's as the official code)."""

    scale: float = 100.0
    sigma: float = 0.5
    min_size: int = 5
    min_pixels: int = 20
    """Superpixels smaller than this get no plane."""
    min_coherence: float = 0.9
    """Mean resultant length of a superpixel's normals above which it is a plane."""
    manhattan_max_support: float = 0.1
    """A superpixel with at most this fraction of MVS-kept pixels has no MVS support (Manhattan candidate)."""
    manhattan_min_cos: float = 0.9
    """cos between a superpixel's normal and a scene axis above which it snaps to that axis (the official 0.9)."""


def superpixels(image: np.ndarray, cfg: TexturelessConfig) -> np.ndarray:
    """Felzenszwalb labels [H, W] (int, 0..n-1) of an RGB image [H, W, 3] in [0, 1]."""
    return felzenszwalb(image, scale=cfg.scale, sigma=cfg.sigma, min_size=cfg.min_size, channel_axis=-1)


def blend_normals(sdf_normals: Tensor, mvs_normals: Tensor, mvs_mask: Tensor, mvs_weight: float) -> Tensor:
    """Unit normals [..., 3]: ``w·n_mvs + (1 − w)·n_sdf`` where MVS kept the pixel (``mvs_mask [...]``), n_sdf elsewhere."""
    blended = torch.where(mvs_mask[..., None], mvs_weight * mvs_normals + (1.0 - mvs_weight) * sdf_normals, sdf_normals)
    return torch.nn.functional.normalize(blended, dim=-1)


@dataclass
class PlaneTargets:
    """Per pixel of one view: ``plane_normal [H, W, 3]`` world with ``plane_mask [H, W]``, and
    ``manhattan_normal [H, W, 3]`` with ``manhattan_mask [H, W]``."""

    plane_normal: Tensor
    plane_mask: Tensor
    manhattan_normal: Tensor
    manhattan_mask: Tensor


def plane_targets(labels: Tensor, normals: Tensor, valid: Tensor, mvs_mask: Tensor, axes: Tensor,
                  cfg: TexturelessConfig) -> PlaneTargets:
    """One plane normal per superpixel and Manhattan seeds, for one view.

    ``labels [H, W]`` superpixel ids, ``normals [H, W, 3]`` unit (blended, world), ``valid [H, W]`` where the
    normals exist, ``mvs_mask [H, W]`` where MVS kept the pixel, ``axes [3, 3]`` the scene's axes as rows.
    """
    flat = labels.reshape(-1).long()
    n_labels = int(flat.max()) + 1
    v = valid.reshape(-1).to(normals.dtype)
    sums = torch.zeros(n_labels, 3, dtype=normals.dtype, device=normals.device)
    sums.index_add_(0, flat, normals.reshape(-1, 3) * v[:, None])
    count = torch.zeros(n_labels, dtype=normals.dtype, device=normals.device).index_add_(0, flat, v)
    support = torch.zeros_like(count).index_add_(0, flat, (mvs_mask.reshape(-1) & valid.reshape(-1)).to(normals.dtype))
    mean = sums / count.clamp_min(1)[:, None]
    coherence = mean.norm(dim=-1)
    unit = mean / coherence.clamp_min(1e-12)[:, None]
    planar = (count >= cfg.min_pixels) & (coherence >= cfg.min_coherence)
    cos = unit @ axes.T.to(unit)  # [n_labels, 3]
    best = cos.abs().argmax(dim=-1)
    best_cos = cos.gather(1, best[:, None])[:, 0]
    snapped = axes.to(unit)[best] * torch.sign(best_cos)[:, None]
    seeds = planar & (support <= cfg.manhattan_max_support * count) & (best_cos.abs() >= cfg.manhattan_min_cos)
    shape = labels.shape
    return PlaneTargets(unit[flat].reshape(*shape, 3), (planar[flat] & valid.reshape(-1)).reshape(shape),
                        snapped[flat].reshape(*shape, 3), (seeds[flat] & valid.reshape(-1)).reshape(shape))

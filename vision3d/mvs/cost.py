"""Photometric cost of plane hypotheses: NCC of homography-warped patches, best-k over source views.

This torch version is the readable reference and the CUDA path; :mod:`.cost_numba` computes the same
numbers on CPU. For a hypothesis at pixel ``p`` and each source view, the window's samples
``q = p + (du, dv)`` (``du, dv`` in ``range(-radius, radius + 1, step)``, Gipuma's sparse window) are
mapped by the plane's homography and read bilinearly from the source image. Samples outside the
reference image are dropped (weight 0). The cost is ``1 − NCC`` in [0, 2], weighted NCC when
``bilateral`` (COLMAP's weights ``exp(−Δg²/2σ_c² − |q−p|²/2σ_s²)``, ``Δg`` the gray difference to the
centre). A source scores the worst cost, 2, where a sample leaves its image (or falls behind it), where
either patch is flat (weighted variance below ``min_variance``) or where the plane does not face the
camera. The aggregated cost is the mean of the ``top_k`` lowest source costs (occlusion-robust, as in
Gipuma/ACMP).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from .planes import pixel_rays, plane_homographies, plane_offset

WORST_COST = 2.0


@dataclass
class MatchingCostConfig:
    """Window and aggregation of the NCC matching cost (images are gray in [0, 1])."""

    radius: int = 5
    """Half window size in pixels: an 11×11 window."""
    step: int = 2
    """Sample every ``step``-th pixel of the window (36 samples for 11×11)."""
    bilateral: bool = True
    """Weight samples by colour and spatial distance to the centre (bilateral-weighted NCC)."""
    sigma_color: float = 0.2
    sigma_spatial: float = 5.0
    top_k: int = 2
    """Aggregate the mean of the k best source views."""
    min_variance: float = 1e-5
    """Weighted gray variance below which a patch counts as flat (cost 2)."""

    def window_offsets(self) -> tuple[list[int], list[int]]:
        """Window sample offsets ``(dv, du)`` in pixels, row-major."""
        r = list(range(-self.radius, self.radius + 1, self.step))
        return [dv for dv in r for _ in r], [du for _ in r for du in r]


def ref_window(ref: Tensor, rows: Tensor, cols: Tensor,
               cfg: MatchingCostConfig) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Window samples of the reference image ``[H, W]`` at pixels ``rows, cols [N]``: the sample
    coordinates ``qr, qc [N, P]`` (long), whether each is inside the image and the weights ``[N, P]``
    (0 outside)."""
    h, w = ref.shape
    dv, du = (torch.tensor(o, device=ref.device) for o in cfg.window_offsets())
    qr, qc = rows[:, None] + dv, cols[:, None] + du
    inside = (qr >= 0) & (qr < h) & (qc >= 0) & (qc < w)
    weight = inside.to(ref.dtype)
    if cfg.bilateral:
        values = ref[qr.clamp(0, h - 1), qc.clamp(0, w - 1)]
        dg = values - ref[rows, cols][:, None]
        ds2 = (du * du + dv * dv).to(ref.dtype)
        weight = weight * torch.exp(-dg * dg / (2 * cfg.sigma_color**2) - ds2 / (2 * cfg.sigma_spatial**2))
    return qr, qc, inside, weight


def bilinear(image: Tensor, u: Tensor, v: Tensor) -> tuple[Tensor, Tensor]:
    """Bilinear samples of ``image [S, H, W]`` at index coordinates ``u, v [..., S, P]`` (pixel ``(i, j)`` at
    ``(j, i)``) and whether each lies inside (``0 ≤ u < W − 1``, ``0 ≤ v < H − 1``); outside reads 0."""
    s, h, w = image.shape
    inside = (u >= 0) & (u < w - 1) & (v >= 0) & (v < h - 1)
    u0 = torch.where(inside, u, torch.zeros_like(u)).floor()
    v0 = torch.where(inside, v, torch.zeros_like(v)).floor()
    fu, fv = u - u0, v - v0
    i0, j0 = v0.long(), u0.long()
    flat = image.reshape(s, h * w)
    view = torch.arange(s, device=image.device).view(*([1] * (u.dim() - 2)), s, 1).expand_as(i0)

    def at(i: Tensor, j: Tensor) -> Tensor:
        return flat[view, i * w + j]

    value = ((1 - fv) * ((1 - fu) * at(i0, j0) + fu * at(i0, j0 + 1))
             + fv * ((1 - fu) * at(i0 + 1, j0) + fu * at(i0 + 1, j0 + 1)))
    return torch.where(inside, value, torch.zeros_like(value)), inside


def aggregate_top_k(costs: Tensor, k: int) -> Tensor:
    """Mean of the ``k`` lowest costs over the last axis ``[..., S] -> [...]``."""
    k = min(k, costs.shape[-1])
    return costs.sort(dim=-1).values[..., :k].mean(-1)


def plane_costs_torch(ref: Tensor, srcs: Tensor, K_ref: Tensor, K_src: Tensor, R: Tensor, t: Tensor,  # noqa: N803
                      rows: Tensor, cols: Tensor, depth: Tensor, normal: Tensor,
                      cfg: MatchingCostConfig, chunk: int = 4096) -> Tensor:
    """Aggregated costs ``[N, C]`` of ``C`` plane hypotheses per pixel.

    ``ref [H, W]`` and ``srcs [S, Hs, Ws]`` are gray images; ``K_ref [3, 3]``, ``K_src [S, 3, 3]``; ``R [S, 3, 3]``
    and ``t [S, 3]`` map reference-camera points to source cameras; ``rows, cols [N]`` the pixels;
    ``depth [N, C]`` z-depths and ``normal [N, C, 3]`` unit normals in the reference camera frame.
    Pixels are processed ``chunk`` at a time to bound memory.
    """
    out = torch.empty(depth.shape, dtype=ref.dtype, device=ref.device)
    for start in range(0, rows.shape[0], chunk):
        sl = slice(start, start + chunk)
        out[sl] = _plane_costs_chunk(ref, srcs, K_ref, K_src, R, t, rows[sl], cols[sl], depth[sl], normal[sl], cfg)
    return out


def _plane_costs_chunk(ref, srcs, K_ref, K_src, R, t, rows, cols, depth, normal, cfg):  # noqa: N803
    qr, qc, in_ref, weight = ref_window(ref, rows, cols, cfg)  # [N, P]
    ref_vals = ref[qr.clamp(0, ref.shape[0] - 1), qc.clamp(0, ref.shape[1] - 1)]
    rays = pixel_rays(K_ref, rows, cols)  # [N, 3]
    offset = plane_offset(depth, normal, rays[:, None])  # [N, C]
    safe_offset = torch.where(offset < 0, offset, -torch.ones_like(offset))
    H = plane_homographies(K_ref, K_src, R, t, normal, safe_offset)  # [N, C, S, 3, 3]  # noqa: N806
    points = torch.stack([qc + 0.5, qr + 0.5, torch.ones_like(qc)], dim=-1).to(ref.dtype)  # [N, P, 3]
    h = torch.einsum("ncsij,npj->ncspi", H, points)  # [N, C, S, P, 3]
    z = h[..., 2]
    ahead = z > 1e-12
    safe_z = torch.where(ahead, z, torch.ones_like(z))
    src_vals, inside = bilinear(srcs, h[..., 0] / safe_z - 0.5, h[..., 1] / safe_z - 0.5)  # [N, C, S, P]
    seen = ((ahead & inside) | ~in_ref[:, None, None]).all(-1)  # [N, C, S]

    w = weight[:, None, None]  # [N, 1, 1, P]
    sw = w.sum(-1)
    r = ref_vals[:, None, None]
    mean_r = (w * r).sum(-1) / sw
    mean_s = (w * src_vals).sum(-1) / sw
    var_r = (w * r * r).sum(-1) / sw - mean_r * mean_r
    var_s = (w * src_vals * src_vals).sum(-1) / sw - mean_s * mean_s
    cov = (w * r * src_vals).sum(-1) / sw - mean_r * mean_s
    ok = seen & (var_r > cfg.min_variance) & (var_s > cfg.min_variance) & (offset < 0)[..., None]
    ncc = cov / torch.sqrt(torch.where(ok, var_r * var_s, torch.ones_like(var_s)))
    cost = torch.where(ok, (1 - ncc).clamp(0, WORST_COST), torch.full_like(ncc, WORST_COST))
    return aggregate_top_k(cost, cfg.top_k)

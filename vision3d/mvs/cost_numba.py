"""The NCC plane cost of :mod:`.cost` as a Numba kernel on CPU, same numbers as ``plane_costs_torch``.

Parallel over pixels; per pixel the reference window and its weights are read once, then every
(hypothesis, source) pair is warped sample by sample and reduced to weighted NCC, and the ``top_k``
lowest source costs are averaged. The homography is split as ``H = K_s R K⁻¹ + (K_s t)(K⁻ᵀ n)ᵀ / ρ`` so
the per-source matrices are computed once. Sums are accumulated in float64.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import Tensor

from vision3d.render.numba_cache import use_user_cache

from .cost import WORST_COST, MatchingCostConfig

use_user_cache(__file__, "the PatchMatch cost kernel", 10)  # before the first @numba.njit(cache=True)


@numba.njit(parallel=True, cache=True)
def _plane_costs_kernel(ref, srcs, k_inv, b_mats, b_vecs, rows, cols, depth, normal,  # noqa: PLR0913, PLR0915
                        dv, du, bilateral, sigma_color, sigma_spatial, top_k, min_variance, out):
    h, w = ref.shape
    n_src, hs, ws = srcs.shape
    n_pix, n_cand = depth.shape
    n_win = dv.shape[0]
    k = min(top_k, n_src)
    for i in numba.prange(n_pix):
        row, col = rows[i], cols[i]
        weights = np.zeros(n_win)
        values = np.zeros(n_win)
        inside = np.zeros(n_win, np.bool_)
        centre = ref[row, col]
        for p in range(n_win):
            qr, qc = row + dv[p], col + du[p]
            if qr < 0 or qr >= h or qc < 0 or qc >= w:
                continue
            inside[p] = True
            values[p] = ref[qr, qc]
            wt = 1.0
            if bilateral:
                dg = values[p] - centre
                wt = math.exp(-dg * dg / (2.0 * sigma_color * sigma_color)
                              - (du[p] * du[p] + dv[p] * dv[p]) / (2.0 * sigma_spatial * sigma_spatial))
            weights[p] = wt
        sw = weights.sum()
        mean_r = (weights * values).sum() / sw
        var_r = (weights * values * values).sum() / sw - mean_r * mean_r
        ray_x = k_inv[0, 0] * (col + 0.5) + k_inv[0, 1] * (row + 0.5) + k_inv[0, 2]
        ray_y = k_inv[1, 0] * (col + 0.5) + k_inv[1, 1] * (row + 0.5) + k_inv[1, 2]
        ray_z = k_inv[2, 0] * (col + 0.5) + k_inv[2, 1] * (row + 0.5) + k_inv[2, 2]
        src_cost = np.empty(n_src)
        for c in range(n_cand):
            nx, ny, nz = normal[i, c, 0], normal[i, c, 1], normal[i, c, 2]
            offset = depth[i, c] * (nx * ray_x + ny * ray_y + nz * ray_z)
            # m = K^-T n / rho: the plane's row vector in pixel coordinates
            m0 = (k_inv[0, 0] * nx + k_inv[1, 0] * ny + k_inv[2, 0] * nz) / offset if offset < 0 else 0.0
            m1 = (k_inv[0, 1] * nx + k_inv[1, 1] * ny + k_inv[2, 1] * nz) / offset if offset < 0 else 0.0
            m2 = (k_inv[0, 2] * nx + k_inv[1, 2] * ny + k_inv[2, 2] * nz) / offset if offset < 0 else 0.0
            for s in range(n_src):
                src_cost[s] = WORST_COST
                if not offset < 0:
                    continue
                h00 = b_mats[s, 0, 0] + b_vecs[s, 0] * m0
                h01 = b_mats[s, 0, 1] + b_vecs[s, 0] * m1
                h02 = b_mats[s, 0, 2] + b_vecs[s, 0] * m2
                h10 = b_mats[s, 1, 0] + b_vecs[s, 1] * m0
                h11 = b_mats[s, 1, 1] + b_vecs[s, 1] * m1
                h12 = b_mats[s, 1, 2] + b_vecs[s, 1] * m2
                h20 = b_mats[s, 2, 0] + b_vecs[s, 2] * m0
                h21 = b_mats[s, 2, 1] + b_vecs[s, 2] * m1
                h22 = b_mats[s, 2, 2] + b_vecs[s, 2] * m2
                s_wv = 0.0
                s_wvv = 0.0
                s_wrv = 0.0
                seen = True
                for p in range(n_win):
                    if not inside[p]:
                        continue
                    x = col + du[p] + 0.5
                    y = row + dv[p] + 0.5
                    hz = h20 * x + h21 * y + h22
                    if not hz > 1e-12:
                        seen = False
                        break
                    u = (h00 * x + h01 * y + h02) / hz - 0.5
                    v = (h10 * x + h11 * y + h12) / hz - 0.5
                    if not (u >= 0 and u < ws - 1 and v >= 0 and v < hs - 1):
                        seen = False
                        break
                    u0 = math.floor(u)
                    v0 = math.floor(v)
                    fu = u - u0
                    fv = v - v0
                    j0 = int(u0)
                    i0 = int(v0)
                    val = ((1 - fv) * ((1 - fu) * srcs[s, i0, j0] + fu * srcs[s, i0, j0 + 1])
                           + fv * ((1 - fu) * srcs[s, i0 + 1, j0] + fu * srcs[s, i0 + 1, j0 + 1]))
                    wt = weights[p]
                    s_wv += wt * val
                    s_wvv += wt * val * val
                    s_wrv += wt * values[p] * val
                if not seen:
                    continue
                mean_s = s_wv / sw
                var_s = s_wvv / sw - mean_s * mean_s
                if not (var_r > min_variance and var_s > min_variance):
                    continue
                ncc = (s_wrv / sw - mean_r * mean_s) / math.sqrt(var_r * var_s)
                src_cost[s] = min(max(1.0 - ncc, 0.0), WORST_COST)
            src_cost.sort()
            out[i, c] = src_cost[:k].mean()


def plane_costs_numba(ref: Tensor, srcs: Tensor, K_ref: Tensor, K_src: Tensor, R: Tensor, t: Tensor,  # noqa: N803
                      rows: Tensor, cols: Tensor, depth: Tensor, normal: Tensor,
                      cfg: MatchingCostConfig) -> Tensor:
    """Same contract as :func:`.cost.plane_costs_torch` (CPU tensors); returns costs ``[N, C]`` in ``ref``'s dtype."""
    k_inv = torch.linalg.inv(K_ref.double())
    b_mats = K_src.double() @ R.double() @ k_inv  # [S, 3, 3]
    b_vecs = (K_src.double() @ t.double()[..., None])[..., 0]  # [S, 3]
    dv, du = (np.asarray(o, dtype=np.int64) for o in cfg.window_offsets())
    out = np.empty(tuple(depth.shape), dtype=np.float64)
    _plane_costs_kernel(ref.double().numpy(), srcs.double().numpy(), k_inv.numpy(), b_mats.numpy(), b_vecs.numpy(),
                        rows.numpy().astype(np.int64), cols.numpy().astype(np.int64), depth.double().numpy(),
                        normal.double().numpy(), dv, du, cfg.bilateral, float(cfg.sigma_color),
                        float(cfg.sigma_spatial), int(cfg.top_k), float(cfg.min_variance), out)
    return torch.from_numpy(out).to(ref.dtype)

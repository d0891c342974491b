"""EWA projection fused into one Numba kernel, with its hand-written backward (CPU).

Same maths, culling and outputs as :func:`vision3d.render.projection.fully_fused_projection`
(gsplat 1.4's pinhole ``fully_fused_projection``): one ``prange`` iteration per Gaussian
projects it into every camera, so a projection costs one pass instead of the ~100 small
torch ops (and ~200 in backward) of the autograd version, whose per-op overhead dominates
on a CPU at splatting sizes.

The backward recomputes the forward per (camera, Gaussian) and applies the chain rule
through the conic inverse, the antialiasing compensation, ``J Σ_c Jᵀ`` with the clamped
Jacobian, the world→camera transform, ``Σ = R S Sᵀ Rᵀ`` and the quaternion normalisation,
reaching the same gradients as autograd on the torch version (tested against it): culled
entries (depth outside the planes) get zero gradient, entries with a degenerate 2D
covariance keep the gradient of ``means2d`` and ``depths`` only.

Used for quaternion/scale Gaussians when neither ``viewmats`` nor ``Ks`` need gradients
(camera optimisation and ``covars`` inputs go through the torch version). Computes in
float64 and casts back, like the compositing kernels.
"""

from __future__ import annotations

import math

import numba
import numpy as np
import torch
from torch import Tensor

from .cpu_threads import torch_single_threaded
from .numba_cache import use_user_cache

use_user_cache(__file__)  # before the first @numba.njit(cache=True): Numba fixes the cache folder there

# Gaussians per parallel work item (each allocates its scratch space once).
_CHUNK = 512


@numba.njit(cache=True, inline="always")
def _rotation(qw, qx, qy, qz):
    """Row-major 3×3 rotation of a normalised wxyz quaternion."""
    return (
        1 - 2 * (qy * qy + qz * qz), 2 * (qx * qy - qw * qz), 2 * (qx * qz + qw * qy),
        2 * (qx * qy + qw * qz), 1 - 2 * (qx * qx + qz * qz), 2 * (qy * qz - qw * qx),
        2 * (qx * qz - qw * qy), 2 * (qy * qz + qw * qx), 1 - 2 * (qx * qx + qy * qy),
    )  # fmt: skip


@numba.njit(cache=True, inline="always")
def _gaussian_frame(quats, scales, n, M):
    """Write ``M = R(q̂) diag(s)`` (row-major, 9) of Gaussian ``n``; return q̂ and |q|."""
    qw, qx, qy, qz = quats[n, 0], quats[n, 1], quats[n, 2], quats[n, 3]
    qnorm = max(math.sqrt(qw * qw + qx * qx + qy * qy + qz * qz), 1e-12)  # as F.normalize
    qw, qx, qy, qz = qw / qnorm, qx / qnorm, qy / qnorm, qz / qnorm
    R = _rotation(qw, qx, qy, qz)
    for i in range(3):
        for j in range(3):
            M[3 * i + j] = R[3 * i + j] * scales[n, j]
    return qw, qx, qy, qz, qnorm


@numba.njit(cache=True, inline="always")
def _camera_cov(viewmat, M, S, WM):
    """Camera-frame covariance ``S = (Rc M)(Rc M)ᵀ`` (row-major, 9; ``WM`` is work space)."""
    for i in range(3):
        for j in range(3):
            WM[3 * i + j] = viewmat[i, 0] * M[j] + viewmat[i, 1] * M[3 + j] + viewmat[i, 2] * M[6 + j]
    for i in range(3):
        for j in range(3):
            S[3 * i + j] = WM[3 * i] * WM[3 * j] + WM[3 * i + 1] * WM[3 * j + 1] + WM[3 * i + 2] * WM[3 * j + 2]


@numba.njit(cache=True, inline="always")
def _clamped(u, z, lim_neg, lim_pos):
    """``t = z·clamp(u/z, −lim_neg, lim_pos)`` and ``(∂t/∂u, ∂t/∂z)``."""
    r = u / z
    if r < -lim_neg:
        return -lim_neg * z, 0.0, -lim_neg
    if r > lim_pos:
        return lim_pos * z, 0.0, lim_pos
    return u, 1.0, 0.0


@numba.njit(cache=True, inline="always")
def _project_gaussian(n, means, quats, scales, viewmats, Ks, width, height, eps2d, near, far, radius_clip,
                      radii, means2d, depths, conics, comps, scratch):  # fmt: skip
    """Forward of Gaussian ``n`` into every camera (``scratch``: [3, 9] work space)."""
    C = viewmats.shape[0]
    M, S, WM = scratch[0], scratch[1], scratch[2]
    _gaussian_frame(quats, scales, n, M)
    for c in range(C):
        V, K = viewmats[c], Ks[c]
        x = V[0, 0] * means[n, 0] + V[0, 1] * means[n, 1] + V[0, 2] * means[n, 2] + V[0, 3]
        y = V[1, 0] * means[n, 0] + V[1, 1] * means[n, 1] + V[1, 2] * means[n, 2] + V[1, 3]
        z = V[2, 0] * means[n, 0] + V[2, 1] * means[n, 1] + V[2, 2] * means[n, 2] + V[2, 3]
        depths[c, n] = z
        in_depth = near < z < far
        if not in_depth:
            x, y, z = 0.0, 0.0, 1.0
        fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
        tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
        tx = _clamped(x, z, cx / fx + 0.3 * tan_x, (width - cx) / fx + 0.3 * tan_x)[0]
        ty = _clamped(y, z, cy / fy + 0.3 * tan_y, (height - cy) / fy + 0.3 * tan_y)[0]
        rz = 1.0 / z
        j00, j02, j11, j12 = fx * rz, -fx * tx * rz * rz, fy * rz, -fy * ty * rz * rz
        _camera_cov(V, M, S, WM)
        a = j00 * (j00 * S[0] + 2 * j02 * S[2]) + j02 * j02 * S[8]
        b = j00 * (j11 * S[1] + j12 * S[2]) + j02 * (j11 * S[7] + j12 * S[8])
        cc = j11 * (j11 * S[4] + 2 * j12 * S[5]) + j12 * j12 * S[8]
        mx, my = fx * x * rz + cx, fy * y * rz + cy
        means2d[c, n, 0], means2d[c, n, 1] = mx, my
        det_orig = a * cc - b * b
        a, cc = a + eps2d, cc + eps2d
        det = a * cc - b * b
        valid = in_depth and det > 0 and math.isfinite(det) and math.isfinite(mx) and math.isfinite(my)
        radii[c, n] = 0
        if not valid:
            conics[c, n, 0] = conics[c, n, 1] = conics[c, n, 2] = 0.0
            comps[c, n] = 0.0
            continue
        conics[c, n, 0], conics[c, n, 1], conics[c, n, 2] = cc / det, -b / det, a / det
        comps[c, n] = math.sqrt(max(det_orig / det, 0.0))
        half_trace = 0.5 * (a + cc)
        radius = math.ceil(3.0 * math.sqrt(half_trace + math.sqrt(max(half_trace * half_trace - det, 0.01))))
        if (math.isfinite(radius) and radius > radius_clip and mx + radius > 0 and mx - radius < width
                and my + radius > 0 and my - radius < height):  # fmt: skip
            radii[c, n] = int(min(radius, 2.0**30))


@numba.njit(parallel=True, cache=True)
def _project_fwd(means, quats, scales, viewmats, Ks, width, height, eps2d, near, far, radius_clip,
                 radii, means2d, depths, conics, comps):  # fmt: skip
    N = means.shape[0]
    for chunk in numba.prange((N + _CHUNK - 1) // _CHUNK):
        scratch = np.empty((3, 9))  # one allocation per chunk, not per Gaussian
        for n in range(chunk * _CHUNK, min(N, (chunk + 1) * _CHUNK)):
            _project_gaussian(n, means, quats, scales, viewmats, Ks, width, height, eps2d, near, far, radius_clip,
                              radii, means2d, depths, conics, comps, scratch)  # fmt: skip


@numba.njit(cache=True, inline="always")
def _project_gaussian_bwd(n, means, quats, scales, viewmats, Ks, width, height, eps2d, near, far,
                          v_means2d, v_depths, v_conics, v_comps, v_means, v_quats, v_scales, scratch):  # fmt: skip
    """Gradients of Gaussian ``n`` summed over cameras (``scratch``: [7, 9] work space)."""
    C = viewmats.shape[0]
    M, S, WM, VS, VSc, VM, VR = scratch[0], scratch[1], scratch[2], scratch[3], scratch[4], scratch[5], scratch[6]
    VS[:] = 0.0  # ∂L/∂Σ (world, symmetric), summed over cameras
    qw, qx, qy, qz, qnorm = _gaussian_frame(quats, scales, n, M)
    for c in range(C):
        V, K = viewmats[c], Ks[c]
        x = V[0, 0] * means[n, 0] + V[0, 1] * means[n, 1] + V[0, 2] * means[n, 2] + V[0, 3]
        y = V[1, 0] * means[n, 0] + V[1, 1] * means[n, 1] + V[1, 2] * means[n, 2] + V[1, 3]
        z = V[2, 0] * means[n, 0] + V[2, 1] * means[n, 1] + V[2, 2] * means[n, 2] + V[2, 3]
        vx, vy, vz = 0.0, 0.0, v_depths[c, n]  # depths = z, always differentiable
        in_depth = near < z < far
        if in_depth:
            fx, fy, cx, cy = K[0, 0], K[1, 1], K[0, 2], K[1, 2]
            tan_x, tan_y = 0.5 * width / fx, 0.5 * height / fy
            tx, dtx_dx, dtx_dz = _clamped(x, z, cx / fx + 0.3 * tan_x, (width - cx) / fx + 0.3 * tan_x)
            ty, dty_dy, dty_dz = _clamped(y, z, cy / fy + 0.3 * tan_y, (height - cy) / fy + 0.3 * tan_y)
            rz = 1.0 / z
            rz2 = rz * rz
            # means2d = (fx·x/z + cx, fy·y/z + cy)
            gmx, gmy = v_means2d[c, n, 0], v_means2d[c, n, 1]
            vx += gmx * fx * rz
            vy += gmy * fy * rz
            vz -= (gmx * fx * x + gmy * fy * y) * rz2
            j00, j02, j11, j12 = fx * rz, -fx * tx * rz2, fy * rz, -fy * ty * rz2
            _camera_cov(V, M, S, WM)
            a = j00 * (j00 * S[0] + 2 * j02 * S[2]) + j02 * j02 * S[8] + eps2d
            b = j00 * (j11 * S[1] + j12 * S[2]) + j02 * (j11 * S[7] + j12 * S[8])
            cc = j11 * (j11 * S[4] + 2 * j12 * S[5]) + j12 * j12 * S[8] + eps2d
            det = a * cc - b * b
            mx, my = fx * x * rz + cx, fy * y * rz + cy
            if det > 0 and math.isfinite(det) and math.isfinite(mx) and math.isfinite(my):
                # conic = (c, −b, a) / det
                g0, g1, g2 = v_conics[c, n, 0], v_conics[c, n, 1], v_conics[c, n, 2]
                s = -(g0 * cc - g1 * b + g2 * a) / (det * det)
                va = s * cc + g2 / det
                vc = s * a + g0 / det
                vb = -2.0 * s * b - g1 / det
                # compensation = sqrt((a−ε)(c−ε) − b²) / det)
                det_orig = (a - eps2d) * (cc - eps2d) - b * b
                ratio = det_orig / det
                if ratio > 0:
                    vr = v_comps[c, n] * 0.5 / math.sqrt(ratio)
                    va += vr * ((cc - eps2d) / det - ratio * cc / det)
                    vc += vr * ((a - eps2d) / det - ratio * a / det)
                    vb += vr * (-2.0 * b / det + ratio * 2.0 * b / det)
                # cov2d = J S Jᵀ, G = [[va, vb/2], [vb/2, vc]]
                hb = 0.5 * vb
                # ∂L/∂S = Jᵀ G J (symmetric), J = [[j00, 0, j02], [0, j11, j12]]
                Jx = (j00, 0.0, j02)
                Jy = (0.0, j11, j12)
                for i in range(3):
                    for j in range(3):
                        VSc[3 * i + j] = (va * Jx[i] * Jx[j] + hb * (Jx[i] * Jy[j] + Jy[i] * Jx[j])
                                          + vc * Jy[i] * Jy[j])  # fmt: skip
                # ∂L/∂J = 2 G J S: rows (G J S)[0] and [1], entries 0/2 and 1/2 are used
                JS0 = (j00 * S[0] + j02 * S[6], j00 * S[1] + j02 * S[7], j00 * S[2] + j02 * S[8])
                JS1 = (j11 * S[3] + j12 * S[6], j11 * S[4] + j12 * S[7], j11 * S[5] + j12 * S[8])
                v_j00 = 2.0 * (va * JS0[0] + hb * JS1[0])
                v_j02 = 2.0 * (va * JS0[2] + hb * JS1[2])
                v_j11 = 2.0 * (hb * JS0[1] + vc * JS1[1])
                v_j12 = 2.0 * (hb * JS0[2] + vc * JS1[2])
                vz += -(v_j00 * fx + v_j11 * fy) * rz2 + 2.0 * (v_j02 * fx * tx + v_j12 * fy * ty) * rz2 * rz
                v_tx, v_ty = -v_j02 * fx * rz2, -v_j12 * fy * rz2
                vx += v_tx * dtx_dx
                vz += v_tx * dtx_dz
                vy += v_ty * dty_dy
                vz += v_ty * dty_dz
                # S = Rc Σ Rcᵀ  ->  ∂L/∂Σ += Rcᵀ (∂L/∂S) Rc
                for i in range(3):
                    for j in range(3):
                        acc = 0.0
                        for k in range(3):
                            for m in range(3):
                                acc += V[k, i] * VSc[3 * k + m] * V[m, j]
                        VS[3 * i + j] += acc
        # p = Rc μ + t  ->  ∂L/∂μ += Rcᵀ ∂L/∂p
        for j in range(3):
            v_means[n, j] += V[0, j] * vx + V[1, j] * vy + V[2, j] * vz
    # Σ = M Mᵀ -> ∂L/∂M = 2 VS M;  M = R diag(s)
    for i in range(3):
        for j in range(3):
            VM[3 * i + j] = 2.0 * (VS[3 * i] * M[j] + VS[3 * i + 1] * M[3 + j] + VS[3 * i + 2] * M[6 + j])
    R = _rotation(qw, qx, qy, qz)
    for j in range(3):
        v_scales[n, j] = VM[j] * R[j] + VM[3 + j] * R[3 + j] + VM[6 + j] * R[6 + j]
        for i in range(3):
            VR[3 * i + j] = VM[3 * i + j] * scales[n, j]
    # R(q̂): derivatives of the nine entries w.r.t. (w, x, y, z)
    gw = 2.0 * (-qz * VR[1] + qy * VR[2] + qz * VR[3] - qx * VR[5] - qy * VR[6] + qx * VR[7])
    gx = 2.0 * (qy * VR[1] + qz * VR[2] + qy * VR[3] - 2 * qx * VR[4] - qw * VR[5] + qz * VR[6]
                + qw * VR[7] - 2 * qx * VR[8])  # fmt: skip
    gy = 2.0 * (-2 * qy * VR[0] + qx * VR[1] + qw * VR[2] + qx * VR[3] + qz * VR[5] - qw * VR[6]
                + qz * VR[7] - 2 * qy * VR[8])  # fmt: skip
    gz = 2.0 * (-2 * qz * VR[0] - qw * VR[1] + qx * VR[2] + qw * VR[3] - 2 * qz * VR[4] + qy * VR[5]
                + qx * VR[6] + qy * VR[7])  # fmt: skip
    # q̂ = q / |q|
    dot = qw * gw + qx * gx + qy * gy + qz * gz
    v_quats[n, 0] = (gw - qw * dot) / qnorm
    v_quats[n, 1] = (gx - qx * dot) / qnorm
    v_quats[n, 2] = (gy - qy * dot) / qnorm
    v_quats[n, 3] = (gz - qz * dot) / qnorm


@numba.njit(parallel=True, cache=True)
def _project_bwd(means, quats, scales, viewmats, Ks, width, height, eps2d, near, far,
                 v_means2d, v_depths, v_conics, v_comps, v_means, v_quats, v_scales):  # fmt: skip
    N = means.shape[0]
    for chunk in numba.prange((N + _CHUNK - 1) // _CHUNK):
        scratch = np.empty((7, 9))
        for n in range(chunk * _CHUNK, min(N, (chunk + 1) * _CHUNK)):
            _project_gaussian_bwd(n, means, quats, scales, viewmats, Ks, width, height, eps2d, near, far,
                                  v_means2d, v_depths, v_conics, v_comps, v_means, v_quats, v_scales, scratch)  # fmt: skip


def float64_numpy(t: Tensor) -> np.ndarray:
    """A detached, contiguous float64 numpy copy (or view) of a CPU tensor, as the kernels take it."""
    return t.detach().to(torch.float64).contiguous().numpy()


class _FusedProjection(torch.autograd.Function):
    @staticmethod
    def forward(ctx, means, quats, scales, viewmats, Ks, width, height, eps2d, near, far, radius_clip):  # noqa: D102
        C, N = viewmats.shape[0], means.shape[0]
        radii = np.empty((C, N), np.int32)
        means2d, depths = np.empty((C, N, 2)), np.empty((C, N))
        conics, comps = np.empty((C, N, 3)), np.empty((C, N))
        arrays = tuple(float64_numpy(t) for t in (means, quats, scales, viewmats, Ks))
        args = (*arrays, float(width), float(height), float(eps2d), float(near), float(far))
        _project_fwd(*args, float(radius_clip), radii, means2d, depths, conics, comps)
        ctx.args = args
        ctx.dtypes = (means.dtype, quats.dtype, scales.dtype)
        radii = torch.from_numpy(radii)
        ctx.mark_non_differentiable(radii)
        dtype = means.dtype
        return (radii, torch.from_numpy(means2d).to(dtype), torch.from_numpy(depths).to(dtype),
                torch.from_numpy(conics).to(dtype), torch.from_numpy(comps).to(dtype))  # fmt: skip

    @staticmethod
    @torch_single_threaded()  # runs between Numba kernels: see vision3d.render.cpu_threads
    def backward(ctx, _v_radii, v_means2d, v_depths, v_conics, v_comps):  # noqa: D102
        means, quats, scales = ctx.args[:3]
        v_means, v_quats, v_scales = np.zeros_like(means), np.zeros_like(quats), np.zeros_like(scales)
        grads = (float64_numpy(t) for t in (v_means2d, v_depths, v_conics, v_comps))
        _project_bwd(*ctx.args, *grads, v_means, v_quats, v_scales)
        dm, dq, ds = ctx.dtypes
        return (torch.from_numpy(v_means).to(dm), torch.from_numpy(v_quats).to(dq), torch.from_numpy(v_scales).to(ds),
                None, None, None, None, None, None, None, None)  # fmt: skip


def fused_projection_numba(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    viewmats: Tensor,  # [C, 4, 4], no grad
    Ks: Tensor,  # [C, 3, 3], no grad
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    calc_compensations: bool = False,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """``fully_fused_projection``'s outputs (radii, means2d, depths, conics, compensations) from one kernel."""
    radii, means2d, depths, conics, comps = _FusedProjection.apply(
        means, quats, scales, viewmats, Ks, width, height, eps2d, near_plane, far_plane, radius_clip
    )
    return radii, means2d, depths, conics, comps if calc_compensations else None

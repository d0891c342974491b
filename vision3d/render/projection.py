"""EWA projection of 3D Gaussians to the image plane, in torch (differentiable by autograd).

The maths follows gsplat 1.4's ``fully_fused_projection`` (pinhole camera):

- covariance ``Σ = R S Sᵀ Rᵀ`` from a wxyz quaternion (normalised here) and scales;
- world → camera with the ``[C, 4, 4]`` world-to-camera ``viewmats``;
- perspective Jacobian evaluated at the mean clamped to 1.3× the field of view
  (``lim = (W − cx)/fx + 0.3·tan_fov``), the mean itself projected unclamped;
- ``eps2d`` added to the diagonal of the 2D covariance (the "blur", default 0.3 px²);
- culled (``radii == 0``) when the depth is outside ``(near_plane, far_plane)``, the
  blurred determinant is not positive, the 3σ radius ``ceil(3·sqrt(λ_max))`` is
  ``<= radius_clip``, or the radius-box misses the image.

Small matrices are kept as nested lists of per-entry tensors (``[N]`` for Gaussians,
``[C, 1]`` for cameras, broadcasting to ``[C, N]``): on a CPU this is several times
faster, forward and backward, than batched 3×3 ``matmul``/``einsum`` on ``[C, N, 3, 3]``.

Culled entries keep finite values in every output (gsplat leaves them undefined) and
receive exactly zero gradient, so a Gaussian behind the camera never produces NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

Mat = list[list[Tensor]]  # a small matrix as rows of entry tensors


def _mat(t: Tensor) -> Mat:  # [..., r, c] -> rows of [...] entries
    return [[t[..., i, j] for j in range(t.shape[-1])] for i in range(t.shape[-2])]


def _matmul(a: Mat, b: Mat) -> Mat:
    return [[sum(a[i][k] * b[k][j] for k in range(len(b))) for j in range(len(b[0]))] for i in range(len(a))]


def _transpose(a: Mat) -> Mat:
    return [list(col) for col in zip(*a, strict=True)]


def _rotmat_entries(quats: Tensor) -> Mat:  # [..., 4] wxyz -> 3×3 of [...]
    w, x, y, z = F.normalize(quats, p=2, dim=-1).unbind(-1)
    return [
        [1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
        [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
        [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)],
    ]


def quat_to_rotmat(quats: Tensor) -> Tensor:  # [..., 4] wxyz -> [..., 3, 3]
    """Rotation matrices from (not necessarily normalised) wxyz quaternions."""
    rot = _rotmat_entries(quats)
    return torch.stack([torch.stack(row, dim=-1) for row in rot], dim=-2)


def quat_scale_to_covar(
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
) -> Tensor:  # [N, 3, 3]
    """World-space covariances ``R S² Rᵀ``."""
    rot = _rotmat_entries(quats)
    m = [[rot[i][j] * scales[:, j] for j in range(3)] for i in range(3)]
    cov = _matmul(m, _transpose(m))
    return torch.stack([torch.stack(row, dim=-1) for row in cov], dim=-2)


def fully_fused_projection(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
    viewmats: Tensor,  # [C, 4, 4]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    eps2d: float = 0.3,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    calc_compensations: bool = False,
    covars: Tensor | None = None,  # [N, 3, 3], replaces quats/scales when given
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor | None]:
    """Project Gaussians into every camera (gsplat's unpacked layout).

    Returns:
        radii: ``[C, N]`` int32, 0 for culled Gaussians.
        means2d: ``[C, N, 2]`` pixel coordinates (non-leaf, differentiable).
        depths: ``[C, N]`` camera-frame z.
        conics: ``[C, N, 3]`` upper triangle ``(a, b, c)`` of the inverse blurred 2D covariance.
        compensations: ``[C, N]`` antialiasing factor ``sqrt(det Σ / det(Σ + eps2d·I))``, or None.
    """
    rot_c = _mat(viewmats[:, None, :3, :3])  # camera rotation entries [C, 1]
    t_c = [viewmats[:, None, i, 3] for i in range(3)]
    # camera-frame covariance factor: Σ_c = (W M)(W M)ᵀ with M = R S, or W Σ Wᵀ
    if covars is None:
        rot = _rotmat_entries(quats)  # [N]
        m = [[rot[i][j] * scales[:, j] for j in range(3)] for i in range(3)]
        wm = _matmul(rot_c, m)  # [C, N]
        cov_c = _matmul(wm, _transpose(wm))
    else:
        cov_c = _matmul(_matmul(rot_c, _mat(covars)), _transpose(rot_c))
    mu = [means[:, j] for j in range(3)]
    x, y, z = (sum(rot_c[i][j] * mu[j] for j in range(3)) + t_c[i] for i in range(3))  # [C, N]
    depths = z
    in_depth = (z > near_plane) & (z < far_plane)
    # Culled entries get z = 1 so that nothing downstream divides by ~0; `where` then
    # routes zero gradient to them.
    x = torch.where(in_depth, x, torch.zeros_like(x))
    y = torch.where(in_depth, y, torch.zeros_like(y))
    z = torch.where(in_depth, z, torch.ones_like(z))

    fx, fy = Ks[:, 0, 0, None], Ks[:, 1, 1, None]  # [C, 1]
    cx, cy = Ks[:, 0, 2, None], Ks[:, 1, 2, None]
    tan_fovx, tan_fovy = 0.5 * width / fx, 0.5 * height / fy
    lim_x_pos = (width - cx) / fx + 0.3 * tan_fovx
    lim_x_neg = cx / fx + 0.3 * tan_fovx
    lim_y_pos = (height - cy) / fy + 0.3 * tan_fovy
    lim_y_neg = cy / fy + 0.3 * tan_fovy
    rz = 1.0 / z
    tx = z * torch.minimum(torch.maximum(x * rz, -lim_x_neg), lim_x_pos)
    ty = z * torch.minimum(torch.maximum(y * rz, -lim_y_neg), lim_y_pos)
    # J = [[fx/z, 0, -fx·tx/z²], [0, fy/z, -fy·ty/z²]];  cov2d = J Σ_c Jᵀ
    j00, j02 = fx * rz, -fx * tx * rz * rz
    j11, j12 = fy * rz, -fy * ty * rz * rz
    s = cov_c
    a = j00 * (j00 * s[0][0] + 2 * j02 * s[0][2]) + j02 * j02 * s[2][2]
    b_ = j00 * (j11 * s[0][1] + j12 * s[0][2]) + j02 * (j11 * s[2][1] + j12 * s[2][2])
    c = j11 * (j11 * s[1][1] + 2 * j12 * s[1][2]) + j12 * j12 * s[2][2]
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)  # [C, N, 2]

    det_orig = a * c - b_ * b_
    a, c = a + eps2d, c + eps2d
    det = a * c - b_ * b_
    finite = torch.isfinite(det) & torch.isfinite(means2d).all(-1)
    valid = in_depth & (det > 0) & finite
    safe_det = torch.where(valid, det, torch.ones_like(det))
    conics = torch.stack([c / safe_det, -b_ / safe_det, a / safe_det], dim=-1)
    conics = torch.where(valid[..., None], conics, torch.zeros_like(conics))
    compensations = None
    if calc_compensations:
        compensations = torch.sqrt(torch.clamp(det_orig / safe_det, min=0.0))
        compensations = torch.where(valid, compensations, torch.zeros_like(compensations))

    with torch.no_grad():
        half_trace = 0.5 * (a + c)
        v1 = half_trace + torch.sqrt(torch.clamp(half_trace * half_trace - det, min=0.01))
        radius = torch.ceil(3.0 * torch.sqrt(v1))
        keep = valid & torch.isfinite(radius) & (radius > radius_clip)
        mx, my = means2d[..., 0], means2d[..., 1]
        keep &= (mx + radius > 0) & (mx - radius < width) & (my + radius > 0) & (my - radius < height)
        # radii above int32 range would overflow; a Gaussian that large covers any image.
        radii = torch.where(keep, radius.clamp(max=2**30), torch.zeros_like(radius)).to(torch.int32)
    return radii, means2d, depths, conics, compensations

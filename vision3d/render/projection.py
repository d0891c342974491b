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

Culled entries keep finite values in every output (gsplat leaves them undefined) and
receive exactly zero gradient, so a Gaussian behind the camera never produces NaN.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor


def _mm(a: Tensor, b: Tensor) -> Tensor:  # [..., i, j] @ [..., j, k] -> [..., i, k]
    """Product of small matrices by broadcasting; much faster than batched bmm for 3×3 on CPU."""
    return (a[..., :, :, None] * b[..., None, :, :]).sum(-2)


def quat_to_rotmat(quats: Tensor) -> Tensor:  # [..., 4] wxyz -> [..., 3, 3]
    """Rotation matrices from (not necessarily normalised) wxyz quaternions."""
    w, x, y, z = F.normalize(quats, p=2, dim=-1).unbind(-1)
    rot = torch.stack(
        [
            1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
            2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
            2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
        ],
        dim=-1,
    )  # fmt: skip
    return rot.reshape(quats.shape[:-1] + (3, 3))


def quat_scale_to_covar(
    quats: Tensor,  # [N, 4]
    scales: Tensor,  # [N, 3]
) -> Tensor:  # [N, 3, 3]
    """World-space covariances ``R S² Rᵀ``."""
    m = quat_to_rotmat(quats) * scales[..., None, :]  # [N, 3, 3]
    return _mm(m, m.transpose(-1, -2))


def world_to_cam(
    means: Tensor,  # [N, 3]
    covars: Tensor,  # [N, 3, 3]
    viewmats: Tensor,  # [C, 4, 4]
) -> tuple[Tensor, Tensor]:  # [C, N, 3], [C, N, 3, 3]
    """Means and covariances in each camera's frame."""
    rot = viewmats[:, :3, :3]  # [C, 3, 3]
    t = viewmats[:, :3, 3]  # [C, 3]
    means_c = (rot[:, None, :, :] * means[None, :, None, :]).sum(-1) + t[:, None, :]
    rot = rot[:, None]  # [C, 1, 3, 3]
    covars_c = _mm(_mm(rot, covars[None]), rot.transpose(-1, -2))
    return means_c, covars_c


def persp_proj(
    means_c: Tensor,  # [C, N, 3] camera-frame means with a usable (positive) depth
    covars_c: Tensor,  # [C, N, 3, 3]
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
) -> tuple[Tensor, Tensor]:  # means2d [C, N, 2], covars2d [C, N, 2, 2]
    """Pinhole projection with gsplat's EWA Jacobian (clamped to 1.3× the field of view)."""
    x, y, z = means_c.unbind(-1)  # [C, N]
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
    zero = torch.zeros_like(z)
    jac = torch.stack(
        [fx * rz, zero, -fx * tx * rz * rz, zero, fy * rz, -fy * ty * rz * rz], dim=-1
    ).reshape(z.shape + (2, 3))  # [C, N, 2, 3]
    covars2d = _mm(_mm(jac, covars_c), jac.transpose(-1, -2))
    means2d = torch.stack([fx * x * rz + cx, fy * y * rz + cy], dim=-1)
    return means2d, covars2d


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
    if covars is None:
        covars = quat_scale_to_covar(quats, scales)
    means_c, covars_c = world_to_cam(means, covars, viewmats)
    depths = means_c[..., 2]  # [C, N]
    in_depth = (depths > near_plane) & (depths < far_plane)
    # Culled entries get z = 1 so that nothing downstream divides by ~0; `where` then
    # routes zero gradient to them.
    safe_means_c = torch.where(in_depth[..., None], means_c, means_c.new_tensor([0.0, 0.0, 1.0]))
    means2d, covars2d = persp_proj(safe_means_c, covars_c, Ks, width, height)

    a, b_, c = covars2d[..., 0, 0], 0.5 * (covars2d[..., 0, 1] + covars2d[..., 1, 0]), covars2d[..., 1, 1]
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

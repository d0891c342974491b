"""The differential epipolar constraint (DEC) as E-MoFlow uses it, and a search over motion directions.

* :func:`dec_loss`: Huber(δ) of the residual ``e = uᵀ[v]×x − xᵀSx``
  (:func:`~vision3d.events.geometry.dec_residual`) between the flow INR and the velocity spline, at up
  to ``max_points`` distinct pixels where warped events land at ``t_ref``, in normalised coordinates
  ``x = K⁻¹[p; 1]``, ``u = [u_x/f_x, u_y/f_y, 0]`` (official ``loss/dec.py``).
* :func:`search_egomotion` (ours): ``e`` is linear in ω, so for each of a hemisphere of unit v the best
  ω is a 3×3 solve; the lowest mean squared residual wins. It jumps along the rotation/translation
  valley that Adam crawls along (narrow fields of view confuse v_x with ω_y; see docs/emoflow.md).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from vision3d.events.flow_inr import PixelFlow
from vision3d.events.geometry import dec_residual
from vision3d.events.velocity_spline import VelocitySpline
from vision3d.geometry.camera import PinholeCamera


def fibonacci_hemisphere(n: int) -> Tensor:
    """[n, 3] unit vectors spread evenly over the hemisphere z >= 0 (v and −v are the same for the DEC)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = i / n
    r = torch.sqrt(1 - z * z)
    phi = i * math.pi * (3 - math.sqrt(5))
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)


@torch.no_grad()
def search_egomotion(
    x: Tensor,  # [N, 2] normalised coordinates
    u: Tensor,  # [N, 2] normalised flow
    n_directions: int = 400,
) -> tuple[Tensor, Tensor]:  # ([3], [3])
    """Best unit v over a hemisphere grid, with ω the least-squares solution for each v.

    ``e = (v × x)·u + ω·(x × (v × x))`` is linear in ω, so for fixed v the best ω is a 3×3 solve.
    """
    x, u = x.double(), u.double()
    xh = torch.cat([x, torch.ones_like(x[:, :1])], -1)  # [N, 3]
    uh = torch.cat([u, torch.zeros_like(u[:, :1])], -1)
    vs = fibonacci_hemisphere(n_directions).to(x.device)  # [D, 3]
    vx = torch.linalg.cross(
        vs[:, None, :].expand(-1, len(x), -1), xh[None].expand(len(vs), -1, -1)
    )  # [D, N, 3]
    a = (vx * uh[None]).sum(-1)  # [D, N]
    b = torch.linalg.cross(xh[None].expand_as(vx), vx)  # [D, N, 3]
    btb = b.transpose(1, 2) @ b + 1e-9 * torch.eye(3, dtype=x.dtype, device=x.device)
    w = -torch.linalg.solve(btb, (b.transpose(1, 2) @ a[..., None]))[..., 0]  # [D, 3]
    res = a + (b @ w[..., None])[..., 0]
    cost = res.pow(2).mean(-1)
    k = int(torch.argmin(cost))
    return vs[k].float(), w[k].float()


def init_spline_by_search(
    spline: VelocitySpline, x: Tensor, u: Tensor, n: int, t_ref: float = 0.5, only_if_better: bool = False
) -> None:
    """Set the spline to the searched constant motion (keeping ‖v‖'s scale), or, with ``only_if_better``,
    only when that motion's DEC residual on (x [N, 2], u [N, 2]) is lower than the spline's at ``t_ref``."""
    v, w = search_egomotion(x, u, n)
    with torch.no_grad():
        if only_if_better:
            v_now, w_now = spline(torch.full((1,), float(t_ref), device=x.device))
            now = dec_residual(x, u, v_now[0], w_now[0]).pow(2).mean()
            if dec_residual(x, u, v, w).pow(2).mean() >= now:
                return
        scale = spline.ctrl_v.detach().norm(dim=-1).mean()
        spline.ctrl_v.copy_((v * scale).expand_as(spline.ctrl_v))
        spline.ctrl_w.copy_(w.expand_as(spline.ctrl_w))


def huber(x: Tensor, delta: float) -> Tensor:
    """Mean Huber loss of residuals x against 0."""
    return F.huber_loss(x, torch.zeros_like(x), delta=delta)


def event_pixels(xy_ref: Tensor, camera: PinholeCamera, max_points: int, generator=None) -> Tensor:
    """Distinct pixels [M, 2] where warped events land inside the image, at most ``max_points`` (random)."""
    pix = torch.round(xy_ref.detach())
    ok = (pix[:, 0] >= 0) & (pix[:, 0] < camera.width) & (pix[:, 1] >= 0) & (pix[:, 1] < camera.height)
    lin = torch.unique((pix[ok, 1] * camera.width + pix[ok, 0]).long())
    pix = torch.stack([lin % camera.width, lin // camera.width], -1).to(xy_ref.dtype)
    if pix.shape[0] > max_points:
        pix = pix[torch.randperm(pix.shape[0], generator=generator)[:max_points].to(pix.device)]
    return pix


def dec_loss(
    flow: PixelFlow,
    spline: VelocitySpline,
    camera: PinholeCamera,
    xy_ref: Tensor,  # [N, 2] warped event positions at t_ref
    t_ref: float,
    max_points: int,
    huber_delta: float,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Huber DEC residual at (≤ max_points) pixels where warped events land at ``t_ref``."""
    pix = event_pixels(xy_ref, camera, max_points, generator)
    if pix.shape[0] == 0:
        return xy_ref.new_zeros(())
    t = torch.full((pix.shape[0],), float(t_ref)).to(pix)
    u = flow(t, pix)
    f = u.new_tensor([camera.fx, camera.fy])
    v, w = spline(t[:1])
    e = dec_residual(camera.normalize_index(pix), u / f, v[0], w[0])
    return huber(e, huber_delta)

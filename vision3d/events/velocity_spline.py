"""E-MoFlow's motion model: the camera's velocities over a window as uniform cubic B-splines.

``v(t̃)`` is returned unit length (the DEC cannot see scale) and ``ω(t̃)`` in rad per window, for
``t̃ ∈ [0, 1]``. As in the official code, 4 control points per window (one cubic segment) all start
at 0.2; :class:`SplineConfig` also holds our optional start by a direction search
(:mod:`vision3d.events.dec`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from torch import Tensor, nn


@dataclass
class SplineConfig:
    n_control: int = 4
    """Control points per window for v and for ω (4 = one cubic segment, official)."""
    init_value: float = 0.2
    """Initial value of every control-point coordinate (official)."""
    init: Literal["constant", "dec_search"] = "constant"
    """``constant``: every coordinate ``init_value`` (official). ``dec_search`` (ours): when the
    DEC switches on, set v to the best of ``search_directions`` unit directions on a hemisphere
    with ω solved in closed form by least squares for each (the residual is linear in ω), then
    optimise jointly as usual. It avoids the local minimum at forward motion that a lateral
    translation falls into (narrow fields of view confuse v_x with ω_y)."""
    search_directions: int = 400
    search_every: int = 100
    """With ``dec_search``, search again every this many iterations and keep whichever of the
    current and the searched motion has the lower DEC residual (the flow keeps sharpening)."""

    def setup(self) -> VelocitySpline:
        return VelocitySpline(self)


def cubic_bspline_basis(u: Tensor) -> Tensor:
    """Uniform cubic B-spline basis at local parameter u ∈ [0, 1]: [N] -> [N, 4]."""
    u2, u3 = u * u, u * u * u
    return torch.stack([(1 - u) ** 3, 3 * u3 - 6 * u2 + 4, -3 * u3 + 3 * u2 + 3 * u + 1, u3], -1) / 6


class VelocitySpline(nn.Module):
    """Uniform cubic B-splines for ``v(t̃)`` (returned unit length) and ``ω(t̃)`` over t̃ ∈ [0, 1]."""

    def __init__(self, config: SplineConfig):
        super().__init__()
        if config.n_control < 4:
            raise ValueError(f"a cubic B-spline needs at least 4 control points, got {config.n_control}")
        self.config = config
        self.ctrl_v = nn.Parameter(torch.full((config.n_control, 3), config.init_value))
        self.ctrl_w = nn.Parameter(torch.full((config.n_control, 3), config.init_value))

    def _eval(self, ctrl: Tensor, t: Tensor) -> Tensor:
        n_seg = ctrl.shape[0] - 3
        s = t.clamp(0, 1) * n_seg
        i = torch.clamp(torch.floor(s), max=n_seg - 1).long()
        basis = cubic_bspline_basis(s - i)  # [N, 4]
        idx = i[:, None] + torch.arange(4, device=t.device)  # [N, 4]
        return (basis[..., None] * ctrl[idx]).sum(1)

    def forward(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """t [N] -> (v [N, 3] unit, ω [N, 3] rad per window)."""
        v = self._eval(self.ctrl_v, t)
        return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-9), self._eval(self.ctrl_w, t)


"""E-MoFlow's flow field: an implicit neural representation ``u_θ(t̃, x̃, ỹ)`` and the warps it drives.

The MLP follows the official code (WU-CVGL/E-MoFlow): ReLU layers with residual additions, a
NeRF-style skip that re-reads the encoded input, optional positional encoding (0 frequencies on
MVSEC, 6 on DSEC). Decisions, each a :class:`FlowINRConfig` field or argument:

* time is normalised per window (``t̃ ∈ [0, 1]``, fed as ``2t̃ − 1``), pixels mapped to [-1, 1] by
  :class:`PixelFlow`; the output is pixel displacement per window, so losses do not depend on the
  window's length;
* the last layer starts at ``out_init_scale`` times its default initialisation: fitting starts
  from (almost) unwarped events;
* events are warped to ``t_ref`` by Euler steps of ``dx/dt = u`` (the released code takes one);
  dense flow over an interval takes 10 (the official DenseFlowExtractor).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn


@dataclass
class FlowINRConfig:
    depth: int = 8
    """Hidden layers (official: 8)."""
    width: int = 256
    skip_layer: int = 4
    """Layer that re-reads the encoded input (concatenation), as NeRF."""
    residual: bool = True
    """Residual additions between equal-width hidden layers (official)."""
    pos_enc_freqs: int = 0
    """NeRF positional-encoding frequencies; 0 = raw (t, x, y) (official MVSEC), 6 for DSEC."""
    out_init_scale: float = 1e-2
    """The output layer's initial weights are scaled by this: fitting starts from near-zero flow."""

    def setup(self) -> FlowINR:
        return FlowINR(self)




def positional_encoding(x: Tensor, n_freqs: int) -> Tensor:
    """NeRF encoding ``[x, sin(2^k π x), cos(2^k π x)]_{k<n}``: [..., D] -> [..., D(1+2n)]."""
    if n_freqs == 0:
        return x
    freqs = (2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)) * math.pi
    xf = x[..., None] * freqs
    return torch.cat([x, torch.sin(xf).flatten(-2), torch.cos(xf).flatten(-2)], -1)


class FlowINR(nn.Module):
    """``u_θ(t̃, x̃, ỹ)``: an MLP with a skip connection giving pixel displacement per window."""

    def __init__(self, config: FlowINRConfig):
        super().__init__()
        self.config = config
        d_in = 3 * (1 + 2 * config.pos_enc_freqs)
        self.layers = nn.ModuleList()
        for i in range(config.depth):
            fan_in = d_in if i == 0 else config.width
            if i == config.skip_layer and i > 0:
                fan_in += d_in
            self.layers.append(nn.Linear(fan_in, config.width))
        self.out = nn.Linear(config.width, 2)
        with torch.no_grad():
            self.out.weight.mul_(config.out_init_scale)
            self.out.bias.zero_()

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """t [N] in [0, 1], x [N, 2] in [-1, 1] -> displacement per window [N, 2] in pixels."""
        enc = positional_encoding(torch.cat([t[:, None] * 2 - 1, x], -1), self.config.pos_enc_freqs)
        h = enc
        for i, layer in enumerate(self.layers):
            skip = i == self.config.skip_layer and i > 0
            z = torch.relu(layer(torch.cat([h, enc], -1) if skip else h))
            h = h + z if (self.config.residual and i > 0 and not skip) else z
        return self.out(h)


class PixelFlow(nn.Module):
    """Wraps a :class:`FlowINR` so it takes pixel coordinates; sensor size fixes the normalisation."""

    def __init__(self, inr: FlowINR, width: int, height: int):
        super().__init__()
        self.inr = inr
        self.register_buffer("scale", torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)]))

    def forward(self, t: Tensor, xy: Tensor) -> Tensor:
        return self.inr(t, xy * self.scale - 1)


def warp_events(
    flow: PixelFlow,
    xy: Tensor,  # [N, 2] pixels
    t: Tensor,  # [N] normalised time
    t_ref: float | Tensor,
    steps: int = 1,
) -> Tensor:  # [N, 2] pixels at t_ref
    """Integrate ``dx/dt = u(t, x)`` from each event's time to ``t_ref`` with Euler steps."""
    h = (t_ref - t) / steps
    for _ in range(steps):
        xy = xy + h[:, None] * flow(t, xy)
        t = t + h
    return xy


@torch.no_grad()
def dense_flow(
    flow: PixelFlow, width: int, height: int, t0: float = 0.0, t1: float = 1.0, steps: int = 10
) -> Tensor:
    """[H, W, 2] displacement of every pixel from t0 to t1 (normalised times), Euler-integrated."""
    gy, gx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    xy0 = torch.stack([gx, gy], -1).reshape(-1, 2).to(flow.scale)
    t = torch.full((xy0.shape[0],), float(t0)).to(xy0)
    xy1 = warp_events(flow, xy0, t, float(t1), steps)
    return (xy1 - xy0).reshape(height, width, 2)


def smoothness_loss(flow: PixelFlow, xy: Tensor, t: Tensor) -> Tensor:
    """Mean 1-px finite difference of u at (t, xy) in x and in y (DSEC setting)."""
    u = flow(t, xy)
    ux = flow(t, xy + xy.new_tensor([1.0, 0.0]))
    uy = flow(t, xy + xy.new_tensor([0.0, 1.0]))
    return (ux - u).abs().mean() + (uy - u).abs().mean()

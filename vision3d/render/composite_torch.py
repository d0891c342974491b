"""Front-to-back alpha compositing over tile lists, in plain torch (the readable reference).

Semantics are gsplat 1.4's ``rasterize_to_pixels`` (CUDA ``rasterize_to_pixels_fwd.cu``):
for a pixel centre ``p = (j + 0.5, i + 0.5)`` and the tile's Gaussians in depth order,

    σ = ½(a·dx² + c·dy²) + b·dx·dy,   d = mean2d − p,   (a, b, c) = conic
    α = min(0.999, o·exp(−σ));  skipped when σ < 0 or α < 1/255
    stop (exclusive) at the first Gaussian whose T·(1 − α) ≤ 1e-4
    colour = Σ α_i T_i c_i,   alpha = 1 − T_final

Here every (tile, pixel, list entry) triple of a chunk of tiles is evaluated densely with
the lists padded to the chunk's longest one; transmittance is an exclusive ``cumprod``
and the stopping rule becomes ``T_inclusive > 1e-4`` (T only decreases). Gradients come
from autograd; chunks run under activation checkpointing so memory stays bounded by one
chunk. This path is the reference that the Numba kernels are tested against.
"""

from __future__ import annotations

import functools

import torch
from torch import Tensor
from torch.utils.checkpoint import checkpoint

from .thresholds import ALPHA_MAX, ALPHA_MIN, T_MIN
from .tiles import TileBins

# Largest dense [tiles, pixels, list entries] block evaluated at once (float elements).
CHUNK_ELEMS = 1 << 22


class _AbsGradTap(torch.autograd.Function):
    """Identity on ``delta [Tc, S, K, 2]``; its backward adds ``Σ_pixels |∂L/∂delta|`` to ``sink[ids]``.

    ``delta = mean2d − pixel``, so ``∂L/∂delta`` of one (pixel, Gaussian) pair is that
    pixel's contribution to ``∂L/∂means2d`` — the quantity gsplat's absgrad sums in abs.
    """

    @staticmethod
    def forward(ctx, delta, ids, mask, sink):  # noqa: D102
        ctx.save_for_backward(ids, mask)
        ctx.sink = sink
        return delta.view_as(delta)

    @staticmethod
    def backward(ctx, grad):  # noqa: D102
        ids, mask = ctx.saved_tensors
        per_pair = grad.abs().sum(dim=1)  # [Tc, K, 2]
        ctx.sink.index_add_(0, ids[mask], per_pair[mask].to(ctx.sink.dtype))
        return grad, None, None, None


def _composite_chunk(
    means2d: Tensor,  # [P, 2]
    conics: Tensor,  # [P, 3]
    colors: Tensor,  # [P, D]
    opacities: Tensor,  # [P]
    ids: Tensor,  # [Tc, K] index into P (padding points at entry 0)
    mask: Tensor,  # [Tc, K] bool, False on padding
    pix: Tensor,  # [Tc, S, 2] pixel centres
    absgrad_sink: Tensor | None,  # [P, 2]
) -> tuple[Tensor, Tensor]:  # colours [Tc, S, D], alphas [Tc, S]
    delta = means2d[ids][:, None, :, :] - pix[:, :, None, :]  # [Tc, S, K, 2]
    if absgrad_sink is not None:
        delta = _AbsGradTap.apply(delta, ids, mask, absgrad_sink)
    conic = conics[ids][:, None, :, :]  # [Tc, 1, K, 3]
    dx, dy = delta[..., 0], delta[..., 1]
    sigma = 0.5 * (conic[..., 0] * dx * dx + conic[..., 2] * dy * dy) + conic[..., 1] * dx * dy  # [Tc, S, K]
    alpha = torch.clamp_max(opacities[ids][:, None, :] * torch.exp(-sigma), ALPHA_MAX)
    valid = mask[:, None, :] & (sigma >= 0) & (alpha >= ALPHA_MIN)
    one_minus = torch.where(valid, 1.0 - alpha, torch.ones_like(alpha))
    t_incl = torch.cumprod(one_minus, dim=-1)  # [Tc, S, K]
    alive = (t_incl > T_MIN).detach()
    t_excl = torch.cat([torch.ones_like(t_incl[..., :1]), t_incl[..., :-1]], dim=-1)
    weights = torch.where(valid & alive, alpha * t_excl, torch.zeros_like(alpha))  # [Tc, S, K]
    out = torch.einsum("tsk,tkd->tsd", weights, colors[ids])
    t_final = torch.where(alive, one_minus, torch.ones_like(one_minus)).prod(dim=-1)  # [Tc, S]
    return out, 1.0 - t_final


def rasterize_to_pixels_torch(
    means2d: Tensor,  # [P, 2]
    conics: Tensor,  # [P, 3]
    colors: Tensor,  # [P, D]
    opacities: Tensor,  # [P]
    width: int,
    height: int,
    n_cameras: int,
    bins: TileBins,
    absgrad_sink: Tensor | None = None,  # [P, 2] receives Σ|per-pixel ∂L/∂means2d| in backward
    max_elems: int | None = None,
) -> tuple[Tensor, Tensor]:  # colours [C, H, W, D], alphas [C, H, W, 1]
    """Composite every tile (no background; callers add ``(1 − alpha)·background``)."""
    ts, tw, th = bins.tile_size, bins.tile_width, bins.tile_height
    max_elems = CHUNK_ELEMS if max_elems is None else max_elems
    n_tiles, device, dtype = bins.n_tiles, means2d.device, means2d.dtype
    D = colors.shape[-1]
    S = ts * ts
    lengths = bins.offsets[1:] - bins.offsets[:-1]  # [n_tiles]
    # tile-local pixel centres
    ly, lx = torch.meshgrid(torch.arange(ts, device=device), torch.arange(ts, device=device), indexing="ij")
    local = torch.stack([lx.reshape(-1), ly.reshape(-1)], dim=-1).to(dtype) + 0.5  # [S, 2]
    tile_idx = torch.arange(n_tiles, device=device) % (tw * th)
    origin = torch.stack([tile_idx % tw, tile_idx // tw], dim=-1).to(dtype) * ts  # [n_tiles, 2]
    need_grad = torch.is_grad_enabled() and any(
        t.requires_grad for t in (means2d, conics, colors, opacities)
    )

    chunk_tiles, chunk_out, chunk_alpha = [], [], []
    nonempty = torch.nonzero(lengths > 0).flatten().tolist()
    lens = lengths.tolist()
    start = 0
    while start < len(nonempty):
        # grow the chunk while the dense [Tc, S, K] block stays under max_elems
        stop, k_max = start, 0
        while stop < len(nonempty):
            k_new = max(k_max, lens[nonempty[stop]])
            if stop > start and (stop - start + 1) * S * k_new > max_elems:
                break
            k_max, stop = k_new, stop + 1
        tiles = torch.tensor(nonempty[start:stop], device=device)
        ar = torch.arange(k_max, device=device)
        mask = ar[None, :] < lengths[tiles][:, None]  # [Tc, K]
        pos = torch.where(mask, bins.offsets[tiles][:, None] + ar[None, :], torch.zeros_like(mask, dtype=torch.long))
        ids = torch.where(mask, bins.flatten_ids[pos], torch.zeros_like(pos))  # [Tc, K]
        pix = origin[tiles][:, None, :] + local[None]  # [Tc, S, 2]
        args = (means2d, conics, colors, opacities, ids, mask, pix)
        # the sink is written in place during backward: keep it out of checkpoint's saved inputs
        chunk = functools.partial(_composite_chunk, absgrad_sink=absgrad_sink)
        if need_grad:
            o, a = checkpoint(chunk, *args, use_reentrant=False)
        else:
            o, a = chunk(*args)
        chunk_tiles.append(tiles)
        chunk_out.append(o)
        chunk_alpha.append(a)
        start = stop

    out = torch.zeros(n_tiles, S, D, device=device, dtype=dtype)
    alphas = torch.zeros(n_tiles, S, device=device, dtype=dtype)
    if chunk_tiles:
        tiles = torch.cat(chunk_tiles)
        out = out.index_copy(0, tiles, torch.cat(chunk_out))
        alphas = alphas.index_copy(0, tiles, torch.cat(chunk_alpha))
    elif need_grad:  # nothing visible: keep the outputs in the graph (zero gradients), as gsplat does
        zero = sum(t.sum() for t in (means2d, conics, colors, opacities)) * 0.0
        out, alphas = out + zero, alphas + zero

    # [C*th*tw, ts*ts, D] -> [C, H, W, D]
    out = out.reshape(n_cameras, th, tw, ts, ts, D).permute(0, 1, 3, 2, 4, 5).reshape(n_cameras, th * ts, tw * ts, D)
    alphas = alphas.reshape(n_cameras, th, tw, ts, ts).permute(0, 1, 3, 2, 4).reshape(n_cameras, th * ts, tw * ts)
    return out[:, :height, :width], alphas[:, :height, :width, None]

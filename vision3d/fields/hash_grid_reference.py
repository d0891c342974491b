"""The readable torch hash-grid encoding: tiny-cuda-nn's maths written level by level in plain torch ops.

It is the reference the Numba kernels are tested against and the backend on CUDA without tinycudann.
Autograd differentiates it with respect to the table and the positions. Positions are computed as
tiny-cuda-nn's ``fmaf(scale, x, 0.5)``: the product and sum in float64, rounded once to the input's dtype,
so a float32 input gives tinycudann's float32 positions and a float64 input (``gradcheck``) stays float64.
Corner weights multiply in tinycudann's order, ((1·w_x)·w_y)·w_z.
"""

from __future__ import annotations

import torch
from torch import Tensor

from .hash_grid_layout import PRIMES, HashGridLayout


def corner_offsets(device: torch.device) -> Tensor:
    """[8, 3] int64: corner c takes +1 along axis d when bit d of c is set (tinycudann's corner order)."""
    corners = torch.arange(8, device=device)
    return torch.stack([(corners >> d) & 1 for d in range(3)], dim=1)


def level_positions(x: Tensor, scale: float) -> tuple[Tensor, Tensor]:
    """Grid cell and in-cell fraction of x [N, 3] on a level: (cell [N, 3] int64, frac [N, 3] x.dtype)."""
    pos = (x.double() * float(scale) + 0.5).to(x.dtype)
    cell = torch.floor(pos)
    return cell.long(), pos - cell


def corner_rows(cell: Tensor, layout: HashGridLayout, level: int) -> Tensor:
    """Table rows [N, 8] int64, within the level, of the 8 corners of each cell [N, 3]."""
    vertex = cell[:, None, :] + corner_offsets(cell.device)  # [N, 8, 3]
    size = int(layout.sizes[level])
    if layout.hashed[level]:
        row = vertex[..., 0] * PRIMES[0] ^ vertex[..., 1] * PRIMES[1] ^ vertex[..., 2] * PRIMES[2]
    else:
        resolution = int(layout.resolutions[level])
        row = vertex[..., 0] + resolution * vertex[..., 1] + resolution**2 * vertex[..., 2]
    return torch.remainder(row, size)


def corner_weights(frac: Tensor) -> Tensor:
    """Trilinear weights [N, 8] of the corners from the in-cell fraction [N, 3]."""
    corners = corner_offsets(frac.device).to(frac.dtype)  # [8, 3]
    axis_weights = corners * frac[:, None, :] + (1 - corners) * (1 - frac[:, None, :])  # [N, 8, 3]
    return axis_weights[..., 0] * axis_weights[..., 1] * axis_weights[..., 2]


def encode_reference(x: Tensor, params: Tensor, layout: HashGridLayout) -> Tensor:
    """Encode positions x [N, 3] (already in [0, 1]) with the flat table params [n_params].

    Returns [N, n_levels · F] in params' dtype, level-major (level l's features at columns l·F … l·F+F−1).
    """
    n_features = layout.n_features_per_level
    table = params.view(layout.n_rows, n_features)
    x = x.to(params.dtype)
    outputs = []
    for level in range(layout.n_levels):
        cell, frac = level_positions(x, float(layout.scales[level]))
        rows = corner_rows(cell, layout, level) + int(layout.offsets[level])  # [N, 8]
        corner_features = table[rows]  # [N, 8, F]
        outputs.append((corner_weights(frac)[..., None] * corner_features).sum(dim=1))
    return torch.cat(outputs, dim=1)

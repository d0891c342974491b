"""Hash-grid encoding on CPU: Numba kernels for the forward and both backwards, in an autograd Function.

Same maths as :mod:`~vision3d.fields.hash_grid_reference` (bit-identical forward up to the order of the
8-corner sum, which here is tinycudann's corner order). The schedule follows what was measured fastest
on our 2-core machine (docs/fields.md):

- *Level at a time.* The forward sweeps one level after another, its points split across threads, so
  that level's table slice (4 MB at T = 2^19, F = 2) stays in cache.
- *Blocked, two phases.* Per block of 64 points, first all corner rows and weights (index arithmetic
  only), then the gathers or scatter-adds, so the memory accesses are independent and overlap.
- *Backward threads own whole levels.* Levels are dealt to threads in snake order (0,1,1,0,0,1,...
  balancing coarse and fine levels), so the table scatter-add never races and needs no atomics. The
  gradient into positions is summed in the same pass into one partial buffer per thread.
Kernels are generic in the float type (float32 for training, float64 for ``gradcheck``); positions are
tinycudann's ``fmaf(scale, x, 0.5)`` (float64 product and sum, one rounding).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from numba import prange
from torch import Tensor

from vision3d.render.cpu_threads import torch_single_threaded

from .hash_grid_layout import PRIMES, HashGridLayout

_BLOCK = 64  # points per two-phase block: 64 × 8 corner rows and weights stay in L1


@numba.njit(cache=True, inline="always")
def _block_corners(x, start, stop, scale, offset, size, resolution, hashed, axis_w, rows, weights):
    """Phase 1: table rows [B, 8] and trilinear weights [B, 8] of points start…stop−1 on one level.

    ``axis_w[j, d, 0 | 1]`` receives (1 − frac, frac) of point j along axis d (in the table's dtype).
    """
    for j in range(stop - start):
        p = start + j
        cx = 0
        cy = 0
        cz = 0
        for d in range(3):
            # Stored into axis_w, the float64 fma result rounds once to the working dtype.
            axis_w[j, d, 1] = scale * np.float64(x[p, d]) + 0.5
            pos = axis_w[j, d, 1]
            cell = np.floor(pos)
            axis_w[j, d, 1] = pos - cell
            axis_w[j, d, 0] = 1 - axis_w[j, d, 1]
            if d == 0:
                cx = np.int64(cell)
            elif d == 1:
                cy = np.int64(cell)
            else:
                cz = np.int64(cell)
        for c in range(8):
            bx = c & 1
            by = (c >> 1) & 1
            bz = (c >> 2) & 1
            if hashed:
                row = ((cx + bx) ^ ((cy + by) * PRIMES[1]) ^ ((cz + bz) * PRIMES[2])) & (size - 1)
            else:
                row = (cx + bx) + resolution * ((cy + by) + resolution * (cz + bz))
                if row >= size:  # a corner on the far face wraps, as tinycudann's `% size` does
                    row -= size
            rows[j, c] = offset + row
            weights[j, c] = (axis_w[j, 0, bx] * axis_w[j, 1, by]) * axis_w[j, 2, bz]


@numba.njit(parallel=True, cache=True)
def _forward_kernel(x, table, scales, offsets, sizes, resolutions, hashed, n_threads, out):
    """out[l, p, f] = Σ_c w[p, c] · table[row[p, c], f] for every level l and point p (out: [L, N, F])."""
    n_points = x.shape[0]
    n_features = table.shape[1]
    n_blocks = (n_points + _BLOCK - 1) // _BLOCK
    n_chunks = max(1, min(n_threads, n_blocks))
    for level in range(scales.shape[0]):
        scale = np.float64(scales[level])
        for chunk in prange(n_chunks):
            axis_w = np.empty((_BLOCK, 3, 2), dtype=table.dtype)
            rows = np.empty((_BLOCK, 8), dtype=np.int64)
            weights = np.empty((_BLOCK, 8), dtype=table.dtype)
            for block in range(chunk * n_blocks // n_chunks, (chunk + 1) * n_blocks // n_chunks):
                start = block * _BLOCK
                stop = min(start + _BLOCK, n_points)
                _block_corners(
                    x, start, stop, scale, offsets[level], sizes[level], resolutions[level], hashed[level],
                    axis_w, rows, weights,
                )
                for j in range(stop - start):
                    for f in range(n_features):
                        acc = weights[j, 0] * table[rows[j, 0], f]
                        for c in range(1, 8):
                            acc += weights[j, c] * table[rows[j, c], f]
                        out[level, start + j, f] = acc


@numba.njit(parallel=True, cache=True)
def _backward_kernel(
    x, table, grad_out, scales, offsets, sizes, resolutions, hashed, levels_of_thread,
    grad_table, need_table, grad_x_partial, need_x,
):
    """Backward of :func:`_forward_kernel` given grad_out [L, N, F].

    Thread t handles the levels ``levels_of_thread[t]`` (−1 pads): it adds into grad_table [rows, F]
    (when need_table; no other thread touches those rows) and into grad_x_partial[t] [N, 3] (when need_x).
    """
    n_points = x.shape[0]
    n_features = table.shape[1]
    for t in prange(levels_of_thread.shape[0]):
        axis_w = np.empty((_BLOCK, 3, 2), dtype=table.dtype)
        rows = np.empty((_BLOCK, 8), dtype=np.int64)
        weights = np.empty((_BLOCK, 8), dtype=table.dtype)
        for k in range(levels_of_thread.shape[1]):
            level = levels_of_thread[t, k]
            if level < 0:
                break
            scale = np.float64(scales[level])
            for start in range(0, n_points, _BLOCK):
                stop = min(start + _BLOCK, n_points)
                _block_corners(
                    x, start, stop, scale, offsets[level], sizes[level], resolutions[level], hashed[level],
                    axis_w, rows, weights,
                )
                if need_table:
                    for j in range(stop - start):
                        for f in range(n_features):
                            g = grad_out[level, start + j, f]
                            for c in range(8):
                                grad_table[rows[j, c], f] += weights[j, c] * g
                if need_x:
                    for j in range(stop - start):
                        d_frac_x = 0.0
                        d_frac_y = 0.0
                        d_frac_z = 0.0
                        for c in range(8):
                            value = 0.0  # dL/dw_c = Σ_f grad_out[f] · table[row_c, f]
                            for f in range(n_features):
                                value += grad_out[level, start + j, f] * table[rows[j, c], f]
                            bx = c & 1
                            by = (c >> 1) & 1
                            bz = (c >> 2) & 1
                            ax = axis_w[j, 0, bx]
                            ay = axis_w[j, 1, by]
                            az = axis_w[j, 2, bz]
                            # d(1 − frac)/dfrac = −1, d(frac)/dfrac = +1
                            d_frac_x += value * (2 * bx - 1) * ay * az
                            d_frac_y += value * (2 * by - 1) * ax * az
                            d_frac_z += value * (2 * bz - 1) * ax * ay
                        grad_x_partial[t, start + j, 0] += scale * d_frac_x
                        grad_x_partial[t, start + j, 1] += scale * d_frac_y
                        grad_x_partial[t, start + j, 2] += scale * d_frac_z


def _snake_assignment(n_levels: int, n_threads: int) -> np.ndarray:
    """[n_threads, ceil(L / n_threads)] levels per thread dealt 0,1,…,T−1,T−1,…,0,0,1,… (−1 pads)."""
    per_thread: list[list[int]] = [[] for _ in range(n_threads)]
    for level in range(n_levels):
        lap, step = divmod(level, n_threads)
        per_thread[step if lap % 2 == 0 else n_threads - 1 - step].append(level)
    width = max(len(levels) for levels in per_thread)
    return np.array([levels + [-1] * (width - len(levels)) for levels in per_thread], dtype=np.int64)


def _layout_arrays(layout: HashGridLayout) -> tuple[np.ndarray, ...]:
    return layout.scales, layout.offsets, layout.sizes, layout.resolutions, layout.hashed


class _HashGridFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: Tensor, params: Tensor, layout: HashGridLayout, inplace_grad: bool) -> Tensor:  # noqa: ANN001
        n_features = layout.n_features_per_level
        table = params.detach().view(layout.n_rows, n_features)
        out = torch.empty(layout.n_levels, x.shape[0], n_features, dtype=params.dtype)
        _forward_kernel(x.detach().numpy(), table.numpy(), *_layout_arrays(layout), numba.get_num_threads(), out.numpy())
        ctx.save_for_backward(x, params)
        ctx.layout = layout
        ctx.inplace_grad = inplace_grad
        with torch_single_threaded():
            return out.permute(1, 0, 2).reshape(x.shape[0], layout.n_levels * n_features)

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # noqa: ANN001, ANN205
        x, params = ctx.saved_tensors
        layout: HashGridLayout = ctx.layout
        need_x, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n_features = layout.n_features_per_level
        n_points = x.shape[0]
        with torch_single_threaded():
            grad_lnf = grad_output.view(n_points, layout.n_levels, n_features).permute(1, 0, 2).to(params.dtype)
            grad_lnf = grad_lnf.contiguous()
        if need_table and ctx.inplace_grad:
            if params.grad is None:
                params.grad = torch.zeros_like(params)
            grad_params = params.grad
        elif need_table:
            grad_params = torch.zeros_like(params)
        else:
            grad_params = torch.zeros(n_features, dtype=params.dtype)  # unused placeholder [1, F]
        levels_of_thread = _snake_assignment(layout.n_levels, numba.get_num_threads())
        grad_x_partial = torch.zeros(levels_of_thread.shape[0] if need_x else 1, n_points if need_x else 1, 3,
                                     dtype=params.dtype)
        _backward_kernel(
            x.detach().numpy(),
            params.detach().view(-1, n_features).numpy(),
            grad_lnf.numpy(),
            *_layout_arrays(layout),
            levels_of_thread,
            grad_params.view(-1, n_features).numpy(),
            need_table,
            grad_x_partial.numpy(),
            need_x,
        )
        grad_x = grad_x_partial.sum(dim=0).to(x.dtype) if need_x else None
        table_grad = grad_params if need_table and not ctx.inplace_grad else None
        return grad_x, table_grad, None, None


def encode_numba(x: Tensor, params: Tensor, layout: HashGridLayout, inplace_grad: bool = False) -> Tensor:
    """Hash-grid features [N, L·F] of CPU positions x [N, 3] in [0, 1] with the flat table params.

    ``inplace_grad``: add the table gradient straight into ``params.grad`` (created once) instead of
    returning it through autograd; see :class:`~vision3d.fields.HashGridConfig`'s ``grad_mode``.
    """
    x = x.to(params.dtype).contiguous()
    return _HashGridFunction.apply(x, params, layout, inplace_grad)

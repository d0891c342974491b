"""Hash-grid encoding on CPU: Numba kernels for the forward and both backwards, in an autograd Function.

Same maths as :mod:`~vision3d.fields.hash_grid_reference` (the forward is bit-identical up to the order
of the 8-corner sum, here tinycudann's). Schedule (measurements in docs/fields.md):

- *Level at a time*: each forward thread sweeps its range of points one level after another, so the
  level's table slice (4 MB at T = 2^19, F = 2) stays in its core's cache; one parallel region per call.
- *Blocked, two phases, pipelined*: per 64 points, first the corner rows and weights (short loops that
  LLVM vectorises), then the gathers or scatter-adds; the next block's rows are computed and prefetched
  (``llvm.prefetch``) before this block's memory accesses.
- *Backward threads own whole levels* (dealt in snake order 0,1,1,0,...), so the table scatter-add needs
  no atomics; the position gradient is summed in the same pass into one buffer per thread.
Kernels are generic in the float type (float32 to train, float64 for ``gradcheck``); positions are
tinycudann's ``fmaf(scale, x, 0.5)`` (float64 product and sum, one rounding).
"""

from __future__ import annotations

import numba
import numpy as np
import torch
from llvmlite import ir
from numba import prange, types
from numba.core import cgutils
from numba.extending import intrinsic
from torch import Tensor

from vision3d.render.numba_cache import use_user_cache

from .hash_grid_layout import PRIMES, HashGridLayout

use_user_cache(__file__, "the hash grid's Numba kernels", 20)  # before the first @numba.njit(cache=True)
_BLOCK = 64  # points per two-phase block: 64 × 8 corner rows and weights stay in L1


@intrinsic
def _prefetch_row(typingctx, array, row):
    """Prefetch hint (LLVM ``llvm.prefetch``, read, keep in all cache levels) for ``array[row]``.

    Only a hint: it never faults and changes no result. Numba has no prefetch of its own.
    """

    def codegen(context, builder, signature, args):
        array_value, row_value = args
        ary = context.make_array(signature.args[0])(context, builder, array_value)
        byte_offset = builder.mul(row_value, cgutils.unpack_tuple(builder, ary.strides)[0])
        address = builder.gep(builder.bitcast(ary.data, ir.IntType(8).as_pointer()), [byte_offset])
        i32 = ir.IntType(32)
        prefetch = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.VoidType(), [ir.IntType(8).as_pointer(), i32, i32, i32]),
            "llvm.prefetch.p0",
        )
        builder.call(prefetch, [address, ir.Constant(i32, 0), ir.Constant(i32, 3), ir.Constant(i32, 1)])
        return context.get_dummy_value()

    return types.void(array, types.int64), codegen


@numba.njit(cache=True, inline="always", error_model="numpy")
def _wrap(row, size):
    """``row % size`` for 0 ≤ row < 2·size: a dense corner on the far face wraps, as in tinycudann."""
    return row - size if row >= size else row


@numba.njit(cache=True, inline="always", error_model="numpy")
def _block_corners(x, start, stop, scale, offset, size, resolution, hashed, fracs, rows, weights):
    """Phase 1: table rows [8, B] and trilinear weights [8, B] of points start…stop−1 on one level.

    Also writes the in-cell fractions fracs [3, B]. Corner c is +1 along axis d when bit d of c is set.
    Three short loops with few store streams each (cells, then rows, then weights), so that LLVM
    vectorises them over the points.
    """
    n = stop - start
    for d in range(3):
        for j in range(n):
            # tinycudann's fmaf(scale, x, 0.5): exact float64 product and sum, one rounding to the dtype.
            fracs[d, j] = scale * np.float64(x[start + j, d]) + 0.5
        for j in range(n):
            pos = fracs[d, j]
            cell = np.floor(pos)
            fracs[d, j] = pos - cell
            rows[d, j] = np.int64(cell)  # rows[0:3] hold the cell until the corner rows overwrite them
    if hashed:
        mask = size - 1
        for j in range(n):
            cx = rows[0, j]
            y0 = rows[1, j] * PRIMES[1]
            y1 = y0 + PRIMES[1]
            z0 = rows[2, j] * PRIMES[2]
            z1 = z0 + PRIMES[2]
            xy0 = cx ^ y0
            xy1 = (cx + 1) ^ y0
            xy2 = cx ^ y1
            xy3 = (cx + 1) ^ y1
            rows[0, j] = offset + ((xy0 ^ z0) & mask)
            rows[1, j] = offset + ((xy1 ^ z0) & mask)
            rows[2, j] = offset + ((xy2 ^ z0) & mask)
            rows[3, j] = offset + ((xy3 ^ z0) & mask)
            rows[4, j] = offset + ((xy0 ^ z1) & mask)
            rows[5, j] = offset + ((xy1 ^ z1) & mask)
            rows[6, j] = offset + ((xy2 ^ z1) & mask)
            rows[7, j] = offset + ((xy3 ^ z1) & mask)
    else:
        plane = resolution * resolution
        for j in range(n):
            xy0 = rows[0, j] + resolution * rows[1, j]
            xy1 = xy0 + 1
            xy2 = xy0 + resolution
            xy3 = xy2 + 1
            z0 = plane * rows[2, j]
            z1 = z0 + plane
            rows[0, j] = offset + _wrap(xy0 + z0, size)
            rows[1, j] = offset + _wrap(xy1 + z0, size)
            rows[2, j] = offset + _wrap(xy2 + z0, size)
            rows[3, j] = offset + _wrap(xy3 + z0, size)
            rows[4, j] = offset + _wrap(xy0 + z1, size)
            rows[5, j] = offset + _wrap(xy1 + z1, size)
            rows[6, j] = offset + _wrap(xy2 + z1, size)
            rows[7, j] = offset + _wrap(xy3 + z1, size)
    one = weights.dtype.type(1)
    for j in range(n):
        fx = fracs[0, j]
        fy = fracs[1, j]
        fz = fracs[2, j]
        gx = one - fx
        gy = one - fy
        gz = one - fz
        w0 = gx * gy  # tinycudann's product order: (w_x · w_y) · w_z
        w1 = fx * gy
        w2 = gx * fy
        w3 = fx * fy
        weights[0, j] = w0 * gz
        weights[1, j] = w1 * gz
        weights[2, j] = w2 * gz
        weights[3, j] = w3 * gz
        weights[4, j] = w0 * fz
        weights[5, j] = w1 * fz
        weights[6, j] = w2 * fz
        weights[7, j] = w3 * fz


@numba.njit(cache=True, inline="always", error_model="numpy")
def _prefetch_block(array, rows, n):
    """Ask the CPU to bring the table rows of a block's corners into cache (see :func:`_prefetch_row`)."""
    for c in range(8):
        for j in range(n):
            _prefetch_row(array, rows[c, j])


@numba.njit(cache=True, inline="always", error_model="numpy")
def _gather_block(table, rows, weights, n, out, level, start):
    """Phase 2 of the forward: out[level, start + j] = Σ_c weights[c, j] · table[rows[c, j]]."""
    if table.shape[1] == 2:  # the common case, unrolled: one 8-byte row per corner
        for j in range(n):
            acc0 = weights[0, j] * table[rows[0, j], 0]
            acc1 = weights[0, j] * table[rows[0, j], 1]
            for c in range(1, 8):
                acc0 += weights[c, j] * table[rows[c, j], 0]
                acc1 += weights[c, j] * table[rows[c, j], 1]
            out[level, start + j, 0] = acc0
            out[level, start + j, 1] = acc1
    else:
        for j in range(n):
            for f in range(table.shape[1]):
                acc = weights[0, j] * table[rows[0, j], f]
                for c in range(1, 8):
                    acc += weights[c, j] * table[rows[c, j], f]
                out[level, start + j, f] = acc


@numba.njit(cache=True, inline="always", error_model="numpy")
def _scatter_block(table, grad_out, rows, weights, fracs, n, level, start, scale, grad_table, need_table,
                   grad_x, need_x, dl_dw):
    """Phase 2 of the backward: grad_table[rows[c, j]] += weights[c, j] · grad_out[level, start + j] and,
    when need_x, grad_x[start + j] += ∂L/∂x of the level (dl_dw: scratch [8])."""
    n_features = table.shape[1]
    if need_table and not need_x and n_features == 2:  # training's common case, unrolled
        for j in range(n):
            g0 = grad_out[level, start + j, 0]
            g1 = grad_out[level, start + j, 1]
            for c in range(8):
                grad_table[rows[c, j], 0] += weights[c, j] * g0
                grad_table[rows[c, j], 1] += weights[c, j] * g1
        return
    for j in range(n):
        for c in range(8):  # dl_dw[c] = ∂L/∂w_c = Σ_f grad_out[f] · table[row_c, f]
            row = rows[c, j]
            v = 0.0
            for f in range(n_features):
                g = grad_out[level, start + j, f]
                v += g * table[row, f]
                if need_table:
                    grad_table[row, f] += weights[c, j] * g
            dl_dw[c] = v
        if need_x:
            fx = np.float64(fracs[0, j])
            fy = np.float64(fracs[1, j])
            fz = np.float64(fracs[2, j])
            gx = 1.0 - fx
            gy = 1.0 - fy
            gz = 1.0 - fz
            # ∂w_c/∂frac_d is ±(product of the other two axis weights); ∂frac/∂x = scale.
            d_fx = ((dl_dw[1] - dl_dw[0]) * gy * gz + (dl_dw[3] - dl_dw[2]) * fy * gz
                    + (dl_dw[5] - dl_dw[4]) * gy * fz + (dl_dw[7] - dl_dw[6]) * fy * fz)
            d_fy = ((dl_dw[2] - dl_dw[0]) * gx * gz + (dl_dw[3] - dl_dw[1]) * fx * gz
                    + (dl_dw[6] - dl_dw[4]) * gx * fz + (dl_dw[7] - dl_dw[5]) * fx * fz)
            d_fz = ((dl_dw[4] - dl_dw[0]) * gx * gy + (dl_dw[5] - dl_dw[1]) * fx * gy
                    + (dl_dw[6] - dl_dw[2]) * gx * fy + (dl_dw[7] - dl_dw[3]) * fx * fy)
            grad_x[start + j, 0] += scale * d_fx
            grad_x[start + j, 1] += scale * d_fy
            grad_x[start + j, 2] += scale * d_fz


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _forward_kernel(x, table, scales, offsets, sizes, resolutions, hashed, n_threads, out):
    """out[l, p, f] = Σ_c w[p, c] · table[row[p, c], f] for every level l and point p (out: [L, N, F]).

    Each thread takes a contiguous range of points and sweeps it level by level (one parallel region:
    on a busy machine every fork-join costs up to a scheduler time slice). Software-pipelined: block
    b+1's corners are computed and its rows prefetched before block b's gathers, so the index maths of
    one block overlaps the memory accesses of the previous one.
    """
    n_points = x.shape[0]
    n_blocks = (n_points + _BLOCK - 1) // _BLOCK
    n_chunks = max(1, min(n_threads, n_blocks))
    for chunk in prange(n_chunks):  # one parallel region: no barrier between levels
        fracs = np.empty((2, 3, _BLOCK), dtype=table.dtype)  # two buffers: current and next block
        rows = np.empty((2, 8, _BLOCK), dtype=np.int64)
        weights = np.empty((2, 8, _BLOCK), dtype=table.dtype)
        first = chunk * n_blocks // n_chunks
        last = (chunk + 1) * n_blocks // n_chunks
        for level in range(scales.shape[0]):
            scale = np.float64(scales[level])
            for block in range(first - 1, last):
                if block + 1 < last:
                    nxt = (block + 1) & 1
                    start = (block + 1) * _BLOCK
                    stop = min(start + _BLOCK, n_points)
                    _block_corners(
                        x, start, stop, scale, offsets[level], sizes[level], resolutions[level], hashed[level],
                        fracs[nxt], rows[nxt], weights[nxt],
                    )
                    _prefetch_block(table, rows[nxt], stop - start)
                if block >= first:
                    cur = block & 1
                    start = block * _BLOCK
                    _gather_block(table, rows[cur], weights[cur], min(_BLOCK, n_points - start), out, level, start)


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _backward_kernel(
    x, table, grad_out, scales, offsets, sizes, resolutions, hashed, levels_of_thread,
    grad_table, need_table, grad_x_partial, need_x,
):
    """Backward of :func:`_forward_kernel` given grad_out [L, N, F], pipelined the same way.

    Thread t handles the levels ``levels_of_thread[t]`` (−1 pads): it adds into grad_table [rows, F]
    (when need_table; no other thread touches those rows) and into grad_x_partial[t] [N, 3] (when need_x).
    """
    n_points = x.shape[0]
    n_blocks = (n_points + _BLOCK - 1) // _BLOCK
    for t in prange(levels_of_thread.shape[0]):
        fracs = np.empty((2, 3, _BLOCK), dtype=table.dtype)
        rows = np.empty((2, 8, _BLOCK), dtype=np.int64)
        weights = np.empty((2, 8, _BLOCK), dtype=table.dtype)
        dl_dw = np.zeros(8)
        for k in range(levels_of_thread.shape[1]):
            level = levels_of_thread[t, k]
            if level < 0:
                break
            scale = np.float64(scales[level])
            for block in range(-1, n_blocks):
                if block + 1 < n_blocks:
                    nxt = (block + 1) & 1
                    start = (block + 1) * _BLOCK
                    stop = min(start + _BLOCK, n_points)
                    _block_corners(
                        x, start, stop, scale, offsets[level], sizes[level], resolutions[level], hashed[level],
                        fracs[nxt], rows[nxt], weights[nxt],
                    )
                    if need_table:
                        _prefetch_block(grad_table, rows[nxt], stop - start)
                    if need_x:
                        _prefetch_block(table, rows[nxt], stop - start)
                if block >= 0:
                    cur = block & 1
                    start = block * _BLOCK
                    _scatter_block(
                        table, grad_out, rows[cur], weights[cur], fracs[cur], min(_BLOCK, n_points - start),
                        level, start, scale, grad_table, need_table, grad_x_partial[t], need_x, dl_dw,
                    )


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _level_major_to_point_major(src, dst):
    """dst[p, l·F + f] = src[l, p, f]: the kernels' [L, N, F] layout to the module's [N, L·F] output.

    torch's permuted copy handles the length-F inner axis poorly (6 ms for 65k points on one core).
    """
    n_levels, n_points, n_features = src.shape
    for p in prange(n_points):
        for level in range(n_levels):
            for f in range(n_features):
                dst[p, level * n_features + f] = src[level, p, f]


@numba.njit(parallel=True, cache=True, error_model="numpy")
def _point_major_to_level_major(src, dst):
    """dst[l, p, f] = src[p, l·F + f]: the output gradient [N, L·F] to the kernels' [L, N, F]."""
    n_levels, n_points, n_features = dst.shape
    for p in prange(n_points):
        for level in range(n_levels):
            for f in range(n_features):
                dst[level, p, f] = src[p, level * n_features + f]


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
        features = torch.empty(x.shape[0], layout.n_levels * n_features, dtype=params.dtype)
        _level_major_to_point_major(out.numpy(), features.numpy())
        return features

    @staticmethod
    def backward(ctx, grad_output: Tensor):  # noqa: ANN001, ANN205
        x, params = ctx.saved_tensors
        layout: HashGridLayout = ctx.layout
        need_x, need_table = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        n_features = layout.n_features_per_level
        n_points = x.shape[0]
        grad_lnf = torch.empty(layout.n_levels, n_points, n_features, dtype=params.dtype)
        _point_major_to_level_major(grad_output.to(params.dtype).contiguous().numpy(), grad_lnf.numpy())
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

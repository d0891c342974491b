"""tiny-cuda-nn's multiresolution hash-grid geometry: per-level scale, resolution, table rows, row offsets.

Computed once on the host, in float32 as tiny-cuda-nn's ``GridEncodingTemplated`` does, so that every
backend (tinycudann, the torch reference, the Numba kernels) indexes the same rows of one flat
parameter vector. That vector is tiny-cuda-nn's own layout::

    params[(offset[l] + row) * F + f]      level l, table row ``row`` in [0, size[l]), feature f

with ``size[l] = min(next_multiple(R_l³, 8), T)`` and ``offset`` the running sum of the sizes, so a
nerfstudio/tinycudann checkpoint's ``params`` loads into :class:`~vision3d.fields.HashGrid` unchanged.
A level is *dense* (row = x + R·y + R²·z, mod size) when its grid of R³ vertices fits in T rows, and
*hashed* (row = coherent prime hash x·1 ⊕ y·2654435761 ⊕ z·805459861, mod T) otherwise.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PRIMES = (1, 2654435761, 805459861)
"""tiny-cuda-nn's coherent prime hash: the first dimension's prime is 1, so x-neighbours share a cache line."""

_MAX_PARAMS_PER_LEVEL = np.iinfo(np.uint32).max // 2


@dataclass(frozen=True)
class HashGridLayout:
    """Per-level geometry of a hash grid (all arrays have one entry per level).

    scales: float32, position scale ``base·b^l − 1`` (the input x ∈ [0, 1] maps to ``scale·x + 0.5``).
    resolutions: int64, vertices per axis ``R = ceil(scale) + 1``.
    sizes: int64, table rows of the level. offsets: int64, first row of the level in the flat table.
    hashed: bool, whether the level is hashed (else dense).
    """

    scales: np.ndarray
    resolutions: np.ndarray
    sizes: np.ndarray
    offsets: np.ndarray
    hashed: np.ndarray
    n_features_per_level: int

    @property
    def n_levels(self) -> int:
        return len(self.scales)

    @property
    def n_rows(self) -> int:
        """Rows of the whole table (all levels)."""
        return int(self.offsets[-1] + self.sizes[-1])

    @property
    def n_params(self) -> int:
        return self.n_rows * self.n_features_per_level


def _next_multiple(value: int, multiple: int) -> int:
    return (value + multiple - 1) // multiple * multiple


def compute_layout(
    n_levels: int, n_features_per_level: int, log2_hashmap_size: int, base_resolution: int, per_level_scale: float
) -> HashGridLayout:
    """tiny-cuda-nn's ``grid_scale``/``grid_resolution`` and offset table, with its float32 arithmetic.

    ``scale_l = exp2f(l · log2f(b)) · base − 1`` in float32; on a GPU tinycudann's ``exp2f`` may differ
    from ours by an ulp, which moves a resolution only when ``scale_l`` lands on an integer.
    """
    log2_scale = np.float32(np.log2(np.float32(per_level_scale)))
    table = 1 << log2_hashmap_size
    scales, resolutions, sizes, offsets, hashed = [], [], [], [], []
    offset = 0
    for level in range(n_levels):
        scale = np.float32(np.exp2(np.float32(level) * log2_scale)) * np.float32(base_resolution) - np.float32(1)
        resolution = int(np.ceil(scale)) + 1
        dense_rows = resolution**3
        size = min(_next_multiple(min(dense_rows, _MAX_PARAMS_PER_LEVEL), 8), table)
        scales.append(scale)
        resolutions.append(resolution)
        sizes.append(size)
        offsets.append(offset)
        hashed.append(dense_rows > size)
        offset += size
    return HashGridLayout(
        scales=np.array(scales, dtype=np.float32),
        resolutions=np.array(resolutions, dtype=np.int64),
        sizes=np.array(sizes, dtype=np.int64),
        offsets=np.array(offsets, dtype=np.int64),
        hashed=np.array(hashed, dtype=np.bool_),
        n_features_per_level=n_features_per_level,
    )

"""Neural fields: the multiresolution hash grid (tinycudann on CUDA, Numba kernels on CPU)."""

from .hash_grid import HashGrid, HashGridConfig, grid_config, per_level_scale_for

__all__ = ["HashGrid", "HashGridConfig", "grid_config", "per_level_scale_for"]

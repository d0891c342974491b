"""IR-NeRF's radiance field: an encoding (our hash grid or NeRF's positional encoding) and small MLPs,
volume-rendered along camera rays, with a background colour per ray direction.

Decisions (config fields): the object lives in the cube ``[-bound, bound]³`` (density is zero outside);
rays are sampled uniformly (stratified in training) between the cube's near and far hits; what the rays
leave untouched is a learned function of the ray direction (``background="mlp"``: real captures show an
environment, not a white backdrop) or a constant colour. BARF's coarse-to-fine schedule weights the
positional-encoding bands, or the hash-grid levels, by ``(1 − cos(π·clamp(α − k, 0, 1)))/2`` with
``α = (progress − start)/(end − start)·K`` (``barf_c2f``, window ``barf_c2f_start/end``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
from nerfstudio.utils.math import intersect_aabb
from torch import Tensor, nn

from vision3d.errors import ConfigError
from vision3d.fields.hash_grid import HashGrid, grid_config
from vision3d.geometry.camera import pixel_grid, unit_depth_rays


@dataclass
class CoarseFieldConfig:
    encoding: Literal["hash", "pe"] = "hash"
    """``hash``: vision3d's hash grid (Numba on CPU, tiny-cuda-nn on CUDA); ``pe``: NeRF's positional encoding."""
    bound: float = 1.5
    """Half-size of the cube that holds the scene (scene units)."""
    hash_levels: int = 8
    hash_max_resolution: int = 128
    log2_hashmap_size: int = 15
    pe_frequencies: int = 8
    hidden_dim: int = 64
    num_layers: int = 2
    num_samples: int = 32
    """Samples per ray."""
    background: Literal["mlp", "white", "black"] = "mlp"
    view_dependent: bool = True
    """Colour depends on the viewing direction (NeRF). False: colour of the point alone, so a render cannot
    change with the view except through the 3D scene (keeps an adversarially trained field from painting each
    view separately)."""
    barf_c2f: bool = False
    """BARF's coarse-to-fine schedule of the encoding's bands (False: every band from the start)."""
    barf_c2f_start: float = 0.1
    barf_c2f_end: float = 0.5
    """BARF's window (``--barf_c2f=[0.1,0.5]``) as fractions of training."""


def coarse_to_fine_weights(progress: float, n_bands: int, c2f: tuple[float, float] | None) -> Tensor:
    """BARF's band weights ``[n_bands]`` in [0, 1] at training ``progress`` in [0, 1]."""
    if c2f is None:
        return torch.ones(n_bands)
    start, end = c2f
    alpha = (progress - start) / max(end - start, 1e-9) * n_bands
    k = torch.arange(n_bands, dtype=torch.float32)
    return (1 - torch.cos(math.pi * (alpha - k).clamp(0, 1))) / 2


def camera_rays(c2w: Tensor, K: Tensor, pixels: Tensor) -> tuple[Tensor, Tensor]:
    """Rays of pixel coordinates ``pixels [B, N, 2]`` (x, y; centres at +0.5) of cameras ``c2w [B, 4, 4]``
    (OpenCV axes) with intrinsics ``K [3, 3]``: origins and unit directions ``[B, N, 3]``."""
    d = torch.nn.functional.normalize(unit_depth_rays(pixels, K[None]) @ c2w[:, :3, :3].transpose(-1, -2), dim=-1)
    return c2w[:, None, :3, 3].expand_as(d), d


def image_pixels(height: int, width: int) -> Tensor:
    """All pixel-centre coordinates ``[H·W, 2]`` (row-major)."""
    return pixel_grid(height, width).reshape(-1, 2)


class CoarseField(nn.Module):
    """Density and colour at points ``[N, 3]``; :meth:`render` composites them along rays."""

    def __init__(self, config: CoarseFieldConfig) -> None:
        super().__init__()
        self.config = config
        if config.encoding == "hash":
            self.grid = HashGrid(grid_config(config.hash_levels, 16, config.hash_max_resolution, config.log2_hashmap_size))
            self.n_bands, self.band_width = config.hash_levels, self.grid.n_output_dims // config.hash_levels
            in_dim = self.grid.n_output_dims
        elif config.encoding == "pe":
            self.n_bands, self.band_width = config.pe_frequencies, 6
            in_dim = 3 + 6 * config.pe_frequencies
        else:
            raise ConfigError(f"CoarseFieldConfig.encoding must be 'hash' or 'pe', got {config.encoding!r}")
        layers: list[nn.Module] = []
        for i in range(config.num_layers):
            layers += [nn.Linear(in_dim if i == 0 else config.hidden_dim, config.hidden_dim), nn.ReLU()]
        self.trunk = nn.Sequential(*layers)
        self.density_head = nn.Linear(config.hidden_dim, 1)
        self.color_head = nn.Sequential(nn.Linear(config.hidden_dim + 3 * config.view_dependent, config.hidden_dim // 2), nn.ReLU(),
                                        nn.Linear(config.hidden_dim // 2, 3))
        self.background_mlp = (nn.Sequential(nn.Linear(3 + 6 * 4, 32), nn.ReLU(), nn.Linear(32, 3))
                               if config.background == "mlp" else None)
        self.register_buffer("band_weights", torch.ones(self.n_bands))

    def set_progress(self, progress: float) -> None:
        """Update BARF's coarse-to-fine band weights for training ``progress`` in [0, 1]."""
        self.band_weights.copy_(coarse_to_fine_weights(
            progress, self.n_bands, (self.config.barf_c2f_start, self.config.barf_c2f_end) if self.config.barf_c2f else None))

    def encode(self, x: Tensor) -> Tensor:
        """Points ``[N, 3]`` in the cube to features ``[N, C]`` (band-weighted)."""
        bound = self.config.bound
        if self.config.encoding == "hash":
            features = self.grid(((x / bound + 1) / 2).clamp(0, 1))
            return (features.view(-1, self.n_bands, self.band_width) * self.band_weights[:, None]).flatten(1)
        xn = x / bound
        return torch.cat([xn, _positional_encoding(xn, self.n_bands, self.band_weights)], dim=-1)

    def forward(self, x: Tensor, d: Tensor) -> tuple[Tensor, Tensor]:
        """Density ``[N]`` (per scene unit) and colour ``[N, 3]`` at points ``x [N, 3]`` seen along ``d [N, 3]``."""
        h = self.trunk(self.encode(x))
        inside = (x.abs() < self.config.bound).all(dim=-1)
        density = torch.nn.functional.softplus(self.density_head(h)[..., 0] - 1.0) * inside
        rgb = torch.sigmoid(self.color_head(torch.cat([h, d], dim=-1) if self.config.view_dependent else h))
        return density, rgb

    def background(self, d: Tensor) -> Tensor:
        """Colour ``[..., 3]`` of rays ``d [..., 3]`` that leave the cube."""
        if self.background_mlp is None:
            return torch.full_like(d, 1.0 if self.config.background == "white" else 0.0)
        return torch.sigmoid(self.background_mlp(torch.cat([d, _positional_encoding(d, 4, None)], dim=-1)))

    def render(self, origins: Tensor, directions: Tensor, stratified: bool = False) -> tuple[Tensor, Tensor, Tensor]:
        """Colour ``[..., 3]``, opacity ``[...]`` and expected depth ``[...]`` (along the ray, of the opaque
        part; 0 where nothing is hit) of rays ``[..., 3]`` (unit directions)."""
        shape = origins.shape[:-1]
        o, d = origins.reshape(-1, 3), directions.reshape(-1, 3)
        near, far = _cube_hits(o, d, self.config.bound)
        n = self.config.num_samples
        steps = torch.arange(n, dtype=o.dtype, device=o.device)
        steps = steps + (torch.rand(o.shape[0], n, device=o.device) if stratified else 0.5)
        t = near[:, None] + (far - near)[:, None] * steps / n  # [R, n]
        delta = ((far - near) / n)[:, None].expand_as(t)
        points = o[:, None] + t[..., None] * d[:, None]
        density, rgb = self(points.reshape(-1, 3), d[:, None].expand_as(points).reshape(-1, 3))
        alpha = 1 - torch.exp(-density.view_as(t) * delta)
        transmittance = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1 - alpha[:, :-1] + 1e-10], dim=1), dim=1)
        weights = alpha * transmittance
        opacity = weights.sum(dim=1)
        color = (weights[..., None] * rgb.view(*t.shape, 3)).sum(dim=1) + (1 - opacity)[:, None] * self.background(d)
        depth = (weights * t).sum(dim=1) / opacity.clamp_min(1e-6)
        return color.view(*shape, 3), opacity.view(shape), depth.view(shape)


def _positional_encoding(x: Tensor, n_frequencies: int, weights: Tensor | None) -> Tensor:
    """NeRF's sin/cos encoding ``[N, 6·n_frequencies]`` of ``x [N, 3]``, band ``k`` scaled by ``weights[k]``."""
    freqs = (2.0 ** torch.arange(n_frequencies, dtype=x.dtype, device=x.device)) * math.pi
    angles = x[..., None, :] * freqs[:, None]  # [N, F, 3]
    enc = torch.cat([torch.sin(angles), torch.cos(angles)], dim=-1)  # [N, F, 6]
    if weights is not None:
        enc = enc * weights[:, None].to(enc)
    return enc.flatten(-2)


def _cube_hits(o: Tensor, d: Tensor, bound: float) -> tuple[Tensor, Tensor]:
    """Entry and exit distances ``[R]`` of rays through ``[-bound, bound]³``: nerfstudio's ``intersect_aabb``
    with misses mapped to a zero-length segment at the origin (near = far = 0: zero weight, the ray gets the
    background) instead of its 1e10, and direction components of 0 nudged to 1e-9 (0/0 there would be NaN)."""
    safe = torch.where(d.abs() < 1e-9, torch.full_like(d, 1e-9), d)
    aabb = torch.tensor([-bound] * 3 + [bound] * 3, dtype=o.dtype, device=o.device)
    return intersect_aabb(o, safe, aabb, invalid_value=0.0)

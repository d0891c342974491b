"""HelixSurf's occupancy grid: a dense grid of NeuS densities over the scene box that marks empty space.

As the official code (``models/grid.py``): a dense ``resolution``³ grid, refreshed every few steps by an
exponential moving average of the NeuS logistic density at each cell, thresholded; samples in empty cells
are not evaluated. Written in torch (nerfacc's grid needs CUDA), so it runs on every device.

Decisions:
- The update is nerfacc's/Instant-NGP's rule ``value = max(decay · value, density)`` (an EMA that lets a
  cell become occupied at once and empty only slowly), evaluated at one jittered point per cell.
- The density is taken at ``max(|f| − r, 0)`` with r the cell's half diagonal: a signed distance is
  1-Lipschitz, so no point of the cell is closer to the surface than that. Without it a cell that the surface
  crosses off-centre reads ~0 once NeuS's s is large, and the surface would be skipped.
- Before the first update every cell is occupied (plain rendering).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from vision3d.render.sdf_volume import neus_density


class OccupancyGrid(nn.Module):
    """Dense occupancy over ``aabb [2, 3]``: ``value [R, R, R]`` (EMA of density) and ``occupied [R, R, R]`` bool."""

    def __init__(self, aabb: Tensor, resolution: int = 64, decay: float = 0.9, threshold: float = 0.01) -> None:
        super().__init__()
        if resolution < 2 or not 0.0 <= decay < 1.0 or threshold <= 0:
            raise ValueError(f"OccupancyGrid: need resolution >= 2, 0 <= decay < 1, threshold > 0; "
                             f"got {resolution}, {decay}, {threshold}")
        self.resolution, self.decay, self.threshold = resolution, decay, threshold
        self.register_buffer("aabb", aabb.clone().float())
        self.register_buffer("value", torch.full((resolution,) * 3, float("inf")))
        self.register_buffer("occupied", torch.ones((resolution,) * 3, dtype=torch.bool))

    @property
    def cell_size(self) -> Tensor:
        """Edge lengths [3] of one cell, scene units."""
        return (self.aabb[1] - self.aabb[0]) / self.resolution

    def cell_index(self, points: Tensor) -> tuple[Tensor, Tensor]:
        """Integer cell coordinates [..., 3] of points [..., 3] and whether each point lies in the box [...]."""
        unit = (points - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        inside = ((unit >= 0) & (unit <= 1)).all(dim=-1)
        index = (unit * self.resolution).long().clamp(0, self.resolution - 1)
        return index, inside

    def occupied_at(self, points: Tensor) -> Tensor:
        """Bool [...] for points [..., 3]: inside the box and in an occupied cell."""
        index, inside = self.cell_index(points)
        return inside & self.occupied[index[..., 0], index[..., 1], index[..., 2]]

    @torch.no_grad()
    def update(self, sdf_fn: Callable[[Tensor], Tensor], inv_s: Tensor | float, chunk: int = 1 << 16) -> float:
        """Refresh from ``sdf_fn(points [N, 3]) -> [N, 1]`` and NeuS's s; returns the occupied fraction."""
        r = self.resolution
        device = self.value.device
        cells = torch.stack(torch.meshgrid(*(torch.arange(r, device=device),) * 3, indexing="ij"), dim=-1).reshape(-1, 3)
        points = self.aabb[0] + (cells + torch.rand(cells.shape, device=device)) * self.cell_size
        half_diagonal = 0.5 * float(self.cell_size.norm())
        density = torch.cat([
            neus_density((sdf_fn(points[i : i + chunk]).reshape(-1).abs() - half_diagonal).clamp_min(0.0), inv_s)
            for i in range(0, points.shape[0], chunk)
        ]).reshape(r, r, r)
        previous = torch.where(torch.isinf(self.value), torch.zeros_like(self.value), self.value)
        self.value.copy_(torch.maximum(previous * self.decay, density))
        self.occupied.copy_(self.value > self.threshold)
        return float(self.occupied.float().mean())

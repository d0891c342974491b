"""HelixSurf's occupancy grid: a dense grid over the scene box that marks where NeuS can put opacity.

As the official code (``models/grid.py``): a dense ``resolution``³ grid, refreshed every few steps by an
exponential moving average of a per-cell NeuS quantity, thresholded; samples in empty cells are not
evaluated. Written in torch (nerfacc's grid needs CUDA), so it runs on every device.

Decisions:
- The update is nerfacc's/Instant-NGP's rule ``value = max(decay · value, v)`` (an EMA that lets a
  cell become occupied at once and empty only slowly), evaluated at the cell centres: the SDF anywhere in the
  cell lies within f ± L·r of the centre's f, r the half diagonal, L its slope bound (Lipschitz constant). A
  true distance has L = 1, a learned SDF only near it (the eikonal loss), so L per cell is the larger of
  ``lipschitz`` and ``slope_factor`` × the largest finite-difference gradient norm of f at the centres of the
  cell and its 26 neighbours (measured in the same pass; it averages over a cell, a factor above 1 covers
  finer variation).
- ``quantity="opacity"`` (default): v is the most opacity one NeuS sample inside the cell can have, α of a
  straight approach from f + L·r to f − L·r, so the threshold bounds the opacity a skipped cell could
  have added (nerfacc's NeuS users threshold α over a step the same way). Cells inside solid matter (f < −r)
  stay occupied, as NeuS gives them opacity; early ray termination (model) skips them behind the surface.
  ``"density"``: the official rule, NeuS's logistic density at max(|f| − r, 0) (threshold 0.01 in the official
  code), symmetric: it also empties the inside, which is exact only once s·δ is large behind a surface.
- Before the first update every cell is occupied (plain rendering).
- :meth:`sample_opacity_bound` applies the opacity rule to one sample, with its own f in place of the cell's
  f ± L·r and the cell's L (kept from the last update, not saved in checkpoints): the model skips samples
  whose bound is below the threshold too (the cell rule at sample resolution, the same guarantee).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import torch
from torch import Tensor, nn

from vision3d.render.sdf_volume import neus_alpha, neus_density


class OccupancyGrid(nn.Module):
    """Dense occupancy over ``aabb [2, 3]``: ``value [R, R, R]`` (EMA of the cell's opacity or density) and
    ``occupied [R, R, R]`` bool."""

    def __init__(self, aabb: Tensor, resolution: int = 64, decay: float = 0.9, threshold: float = 1e-3,
                 quantity: Literal["opacity", "density"] = "opacity", lipschitz: float = 1.0,
                 slope_factor: float = 0.0) -> None:
        super().__init__()
        if resolution < 2 or not 0.0 <= decay < 1.0 or threshold <= 0 or quantity not in ("opacity", "density"):
            raise ValueError(f"OccupancyGrid: need resolution >= 2, 0 <= decay < 1, threshold > 0, quantity "
                             f"'opacity' or 'density'; got {resolution}, {decay}, {threshold}, {quantity!r}")
        if lipschitz <= 0 or slope_factor < 0:
            raise ValueError(f"OccupancyGrid: need lipschitz > 0 and slope_factor >= 0; got {lipschitz}, {slope_factor}")
        self.resolution, self.decay, self.threshold, self.quantity = resolution, decay, threshold, quantity
        self.lipschitz, self.slope_factor = lipschitz, slope_factor
        self.register_buffer("aabb", aabb.clone().float())
        self.register_buffer("value", torch.full((resolution,) * 3, float("inf")))
        self.register_buffer("occupied", torch.ones((resolution,) * 3, dtype=torch.bool))
        # the slope bound L per cell from the last update (NaN: not measured yet, nothing is skipped)
        self.register_buffer("slope", torch.full((resolution,) * 3, float("nan")), persistent=False)

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
        centres = self.aabb[0] + (cells + 0.5) * self.cell_size
        sdf = torch.cat([sdf_fn(centres[i : i + chunk]).reshape(-1) for i in range(0, centres.shape[0], chunk)]).reshape(r, r, r)
        self.slope.copy_(self.slope_bound(sdf))
        reach = self.slope * (0.5 * float(self.cell_size.norm()))  # [R, R, R] most |f - f(centre)| in a cell
        if self.quantity == "density":
            value = neus_density((sdf.abs() - reach).clamp_min(0.0), inv_s)
        else:
            value = neus_alpha(sdf, -torch.ones_like(sdf), 2 * reach, inv_s)
        previous = torch.where(torch.isinf(self.value), torch.zeros_like(self.value), self.value)
        self.value.copy_(torch.maximum(previous * self.decay, value))
        self.occupied.copy_(self.value > self.threshold)
        return float(self.occupied.float().mean())

    def sample_opacity_bound(self, points: Tensor, sdf: Tensor, deltas: Tensor, inv_s: Tensor | float,
                             cos_anneal_ratio: float = 1.0) -> Tensor:
        """The most NeuS opacity [...] a sample at ``points [..., 3]`` with SDF ``sdf [...]`` over an interval
        ``deltas [...]`` can have: α with cos = −L (a straight approach at the cell's slope bound; NeuS's α grows
        with |cos|, also under the cos anneal when L ≥ 1). 1 where no slope was measured yet."""
        index, _ = self.cell_index(points)
        slope = self.slope[index[..., 0], index[..., 1], index[..., 2]]
        alpha = neus_alpha(sdf[..., None], -slope[..., None], deltas[..., None], inv_s, cos_anneal_ratio)[..., 0]
        return torch.nan_to_num(alpha, nan=1.0)

    def slope_bound(self, sdf: Tensor) -> Tensor:
        """Per cell [R, R, R]: the bound L on |∇f| used for ``sdf [R, R, R]`` (values at the centres)."""
        bound = torch.full_like(sdf, self.lipschitz)
        if self.slope_factor > 0:
            slope = torch.stack(torch.gradient(sdf, spacing=[float(h) for h in self.cell_size]), dim=-1).norm(dim=-1)
            local = torch.nn.functional.max_pool3d(slope[None, None], 3, stride=1, padding=1)[0, 0]
            bound = torch.maximum(bound, self.slope_factor * local)
        return bound

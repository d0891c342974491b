"""Mesh of an SDF's zero level set: marching cubes (scikit-image) over a box, block by block, optionally coloured.

Decisions:
- The box is sampled on a regular grid of ``resolution`` points per longest side (cubic voxels). The grid is
  cut into blocks of ``block_size`` points per axis that share their boundary plane of samples, so each block
  holds all the samples its cubes need: memory is bounded by one block (``block_size**3`` values), not by the
  whole grid, and vertices on a shared plane come out the same from both blocks and are merged. Within a
  block the SDF is evaluated in chunks of ``chunk_size`` points on the callable's device (CPU or CUDA).
- Vertices are computed in grid-index units (skimage, float64) and only then scaled into the box, so a block's
  vertices equal the unchunked run's up to float rounding (1e-12 of a voxel), and merging is exact.
- The SDF is negative inside; faces are oriented so that normals point outwards (towards positive SDF).
- Colours come from an optional ``color(points [N, 3]) -> [N, 3]`` callable in [0, 1], evaluated at the vertices.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import trimesh

from vision3d.errors import Vision3DError

SDFCallable = Callable[[torch.Tensor], torch.Tensor]  # points [N, 3] -> signed distances [N]
ColorCallable = Callable[[torch.Tensor], torch.Tensor]  # points [N, 3] -> RGB [N, 3] in [0, 1]


class EmptyMeshError(Vision3DError):
    """The extraction produced no surface (no zero crossing of the SDF, or nothing integrated in the TSDF)."""


@dataclass(frozen=True)
class Grid:
    """A regular grid over ``box_min``: ``shape`` points per axis, ``spacing`` apart (cubic voxels)."""

    box_min: np.ndarray  # [3]
    spacing: float
    shape: tuple[int, int, int]

    @classmethod
    def over_box(cls, box: np.ndarray, resolution: int) -> Grid:
        """``resolution`` points along the box's longest side; the other sides get as many as fit (>= 2)."""
        box = np.asarray(box, np.float64).reshape(2, 3)
        extent = box[1] - box[0]
        if resolution < 2 or not np.all(extent > 0):
            raise ValueError(f"need resolution >= 2 and a box with positive extent, got {resolution} and {box.tolist()}")
        spacing = float(extent.max() / (resolution - 1))
        shape = tuple(int(max(2, np.floor(e / spacing + 1e-9) + 1)) for e in extent)
        return cls(box[0], spacing, shape)

    def points(self, start: tuple[int, int, int], size: tuple[int, int, int]) -> np.ndarray:
        """World points of the sub-grid ``[start, start + size)`` as [size_x, size_y, size_z, 3] (ij indexing)."""
        axes = [self.box_min[a] + (start[a] + np.arange(size[a])) * self.spacing for a in range(3)]
        return np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1)


def _module_device(fn: Callable) -> torch.device | None:
    if isinstance(fn, torch.nn.Module):
        param = next(fn.parameters(), None)
        return None if param is None else param.device
    return None


@torch.no_grad()
def evaluate_in_chunks(fn: Callable, points: np.ndarray, chunk_size: int, device: torch.device) -> np.ndarray:
    """``fn`` over ``points [N, 3]`` in chunks of ``chunk_size`` on ``device``; returns float64 numpy [N, ...]."""
    out = []
    for start in range(0, len(points), chunk_size):
        chunk = torch.as_tensor(points[start : start + chunk_size], dtype=torch.float32, device=device)
        out.append(fn(chunk).detach().double().cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0,))


def sdf_to_mesh(
    sdf: SDFCallable,
    box: np.ndarray | torch.Tensor,
    resolution: int = 256,
    block_size: int = 65,
    chunk_size: int = 1 << 18,
    color: ColorCallable | None = None,
    device: torch.device | str | None = None,
) -> trimesh.Trimesh:
    """Marching cubes of ``sdf``'s zero level set inside ``box [2, 3]`` (min, max corners).

    Args:
        sdf: points [N, 3] (float32, on ``device``) -> signed distance [N], negative inside.
        resolution: grid points along the box's longest side.
        block_size: grid points per block side (blocks share a boundary plane); memory ~ block_size**3.
        chunk_size: points per ``sdf`` call.
        color: optional points [N, 3] -> RGB [N, 3] in [0, 1], evaluated at the vertices.
        device: where the points go; default: the device of ``sdf``'s parameters if it is a module, else CPU.
    Returns:
        a trimesh mesh in the box's frame, merged across blocks, with per-vertex colours if ``color`` is given.
    Raises:
        EmptyMeshError: the SDF has no zero crossing in the box.
    """
    from skimage.measure import marching_cubes

    if block_size < 2:
        raise ValueError(f"block_size must be >= 2, got {block_size}")
    box = box.detach().cpu().numpy() if isinstance(box, torch.Tensor) else np.asarray(box)
    grid = Grid.over_box(box, resolution)
    device = torch.device(device) if device is not None else (_module_device(sdf) or torch.device("cpu"))
    step = block_size - 1  # blocks overlap by one sample plane
    verts, faces, n_verts = [], [], 0
    for bx in range(0, grid.shape[0] - 1, step):
        for by in range(0, grid.shape[1] - 1, step):
            for bz in range(0, grid.shape[2] - 1, step):
                start = (bx, by, bz)
                size = tuple(min(block_size, grid.shape[a] - start[a]) for a in range(3))
                points = grid.points(start, size)
                values = evaluate_in_chunks(sdf, points.reshape(-1, 3), chunk_size, device).reshape(size)
                if not np.isfinite(values).all():
                    raise Vision3DError(f"the SDF returned non-finite values in the block at {points[0, 0, 0].tolist()}")
                if values.min() > 0 or values.max() < 0:
                    continue
                v, f, _, _ = marching_cubes(values, level=0.0, gradient_direction="descent", allow_degenerate=False)
                verts.append(v + np.asarray(start, np.float64))
                faces.append(f + n_verts)
                n_verts += len(v)
    if not verts:
        raise EmptyMeshError(f"the SDF has no zero level set inside the box {np.round(box, 4).tolist()} "
                             f"(resolution {resolution})")
    vertices = grid.box_min + np.concatenate(verts) * grid.spacing
    mesh = trimesh.Trimesh(vertices, np.concatenate(faces), process=False)
    mesh.merge_vertices(digits_vertex=9)
    mesh.remove_unreferenced_vertices()
    if color is not None:
        rgb = evaluate_in_chunks(color, mesh.vertices, chunk_size, device)
        mesh.visual.vertex_colors = np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)
    return mesh

"""Mesh of an SDF's zero level set: marching cubes (scikit-image) over a box, block by block, optionally coloured.

Decisions:
- The box is sampled on a regular grid of ``resolution`` points along its longest side (cubic voxels), cut
  along x into slabs of ``slab_size`` sample planes. Consecutive slabs share a plane, which is evaluated once
  and reused, so both slabs make bit-identical vertices there and merging them is exact (re-evaluating it
  would not be: an MLP's float32 output changes with the batch it is in). Memory is one slab
  (``slab_size * resolution**2`` values), not the grid. The SDF is evaluated in chunks of ``chunk_size``
  points on the callable's device (CPU or CUDA); marching cubes runs on the CPU.
- Vertices are computed in grid-index units and only then scaled into the box.
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
    slab_size: int = 32,
    chunk_size: int = 1 << 18,
    color: ColorCallable | None = None,
    device: torch.device | str | None = None,
) -> trimesh.Trimesh:
    """Marching cubes of ``sdf``'s zero level set inside ``box [2, 3]`` (min, max corners).

    Args:
        sdf: points [N, 3] (float32, on ``device``) -> signed distance [N], negative inside.
        resolution: grid points along the box's longest side.
        slab_size: grid planes (along x) per slab; memory ~ slab_size * resolution**2 values.
        chunk_size: points per ``sdf`` call.
        color: optional points [N, 3] -> RGB [N, 3] in [0, 1], evaluated at the vertices.
        device: where the points go; default: the device of ``sdf``'s parameters if it is a module, else CPU.
    Returns:
        a trimesh mesh in the box's frame, merged across slabs, with per-vertex colours if ``color`` is given.
    Raises:
        EmptyMeshError: the SDF has no zero crossing in the box.
    """
    from skimage.measure import marching_cubes

    if slab_size < 2:
        raise ValueError(f"slab_size must be >= 2, got {slab_size}")
    box = box.detach().cpu().numpy() if isinstance(box, torch.Tensor) else np.asarray(box)
    grid = Grid.over_box(box, resolution)
    device = torch.device(device) if device is not None else (_module_device(sdf) or torch.device("cpu"))
    nx, ny, nz = grid.shape
    verts, faces, n_verts = [], [], 0
    shared = None  # the last sample plane of the previous slab [ny, nz], reused (not re-evaluated) by the next
    for x0 in range(0, nx - 1, slab_size - 1):
        size = min(slab_size, nx - x0)
        first_new = x0 if shared is None else x0 + 1
        points = grid.points((first_new, 0, 0), (x0 + size - first_new, ny, nz))
        new = evaluate_in_chunks(sdf, points.reshape(-1, 3), chunk_size, device).reshape(points.shape[:3])
        if not np.isfinite(new).all():
            raise Vision3DError(f"the SDF returned non-finite values between x = {points[0, 0, 0, 0]:.4g} "
                                f"and {points[-1, 0, 0, 0]:.4g}")
        values = new if shared is None else np.concatenate([shared[None], new])
        shared = values[-1]
        if values.min() > 0 or values.max() < 0:
            continue
        v, f, _, _ = marching_cubes(values, level=0.0, gradient_direction="descent", allow_degenerate=False)
        verts.append(v + np.array([x0, 0.0, 0.0]))  # grid-index units: exact integer offsets
        faces.append(f + n_verts)
        n_verts += len(v)
    if not verts:
        raise EmptyMeshError(f"the SDF has no zero level set inside the box {np.round(box, 4).tolist()} "
                             f"(resolution {resolution})")
    vertices = grid.box_min + np.concatenate(verts) * grid.spacing
    mesh = trimesh.Trimesh(vertices, np.concatenate(faces), process=False)
    mesh.merge_vertices()  # vertices on a shared plane are bit-identical in both slabs
    mesh.remove_unreferenced_vertices()
    if color is not None:
        rgb = evaluate_in_chunks(color, mesh.vertices, chunk_size, device)
        mesh.visual.vertex_colors = np.round(np.clip(rgb, 0.0, 1.0) * 255).astype(np.uint8)
    return mesh

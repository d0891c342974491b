"""Multi-view stereo over a set of views: source selection, PatchMatch per view, geometric filter, fusion.

Inputs are plain arrays, so callers need no camera class: images ``[V, H, W, 3]`` (uint8 or float in
[0, 1]), ``K [V, 3, 3]`` (pixel centres at +0.5) and ``c2w [V, 4, 4]`` camera-to-world in OpenCV axes
(nerfstudio poses go through :func:`vision3d.geometry.se3.opengl_to_opencv` first). Without explicit
sources, each view takes the ``n_sources`` others whose optical axes are closest in angle, skipping any
at the same centre (no baseline) or beyond ``max_source_angle_deg``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import torch
from kornia.color import rgb_to_grayscale
from torch import Tensor

from .consistency import Consistency, GeometricFilterConfig, geometric_consistency
from .fusion import PointCloud, fuse_points
from .patchmatch import GeometricPrior, PatchMatchConfig, Seed, patchmatch_view


@dataclass
class MVSConfig:
    """Settings of :func:`run_mvs`."""

    patchmatch: PatchMatchConfig = field(default_factory=PatchMatchConfig)
    filter: GeometricFilterConfig = field(default_factory=GeometricFilterConfig)
    n_sources: int = 4
    max_source_angle_deg: float = 60.0
    geometric_passes: int = 1
    """Passes with ACMM's geometric term after the photometric one (HelixSurf runs 2), each starting from the
    previous hypotheses and reading the other views' depth maps of the previous pass."""
    geometric_pass_iterations: int = 2
    seed: int = 0
    """Seed of the random hypotheses (one torch generator on the images' device)."""


@dataclass
class MVSResult:
    """Per view: ``depth [V, H, W]`` (raw PatchMatch z-depth), ``normal [V, H, W, 3]`` (camera frame, OpenCV
    axes), ``confidence [V, H, W]`` in [0, 1], the geometric check and the sources used."""

    depth: Tensor
    normal: Tensor
    confidence: Tensor
    consistency: Consistency
    sources: list[list[int]]

    @property
    def filtered_depth(self) -> Tensor:
        """Depth where the geometric filter kept it, 0 elsewhere ``[V, H, W]``."""
        return torch.where(self.consistency.mask, self.depth, torch.zeros_like(self.depth))


def select_sources(c2w: Tensor, n_sources: int, max_angle_deg: float = 60.0) -> list[list[int]]:
    """For each view, up to ``n_sources`` others with the smallest angle between optical axes (OpenCV +z)."""
    axes = c2w[:, :3, 2]
    centres = c2w[:, :3, 3]
    cos = (axes @ axes.T).clamp(-1, 1)
    out = []
    for r in range(c2w.shape[0]):
        baseline = (centres - centres[r]).norm(dim=-1)
        ok = (baseline > 1e-9 * baseline.max().clamp_min(1e-12)) & (cos[r] >= math.cos(math.radians(max_angle_deg)))
        ok[r] = False
        order = [int(i) for i in torch.argsort(-cos[r]) if ok[i]]
        out.append(order[:n_sources])
    return out


def to_gray(images: Tensor) -> Tensor:
    """``[V, H, W, 3]`` RGB (uint8 or float in [0, 1]) or ``[V, H, W]`` gray to float32 gray ``[V, H, W]`` in [0, 1]."""
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    if images.dim() == 3:
        return images.float()
    if images.dim() != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be [V, H, W, 3] RGB or [V, H, W] gray, got {list(images.shape)}")
    return rgb_to_grayscale(images.float().permute(0, 3, 1, 2))[:, 0]


def run_mvs(images: Tensor, K: Tensor, c2w: Tensor, depth_range: tuple[float, float] | Tensor,  # noqa: N803
            cfg: MVSConfig | None = None, sources: list[list[int]] | None = None,
            seeds: list[Seed | None] | None = None, views: list[int] | None = None) -> MVSResult:
    """PatchMatch every view in ``views`` (default all) and check them against each other.

    ``depth_range`` is one ``(d_min, d_max)`` or ``[V, 2]`` per view; ``seeds[v]`` initialises view ``v``.
    Views not in ``views`` keep depth 0: they still serve as sources for the photometric cost, but the
    geometric check of a view only asks its sources that have depth maps.
    """
    cfg = cfg or MVSConfig()
    n_views = images.shape[0]
    if K.shape != (n_views, 3, 3) or c2w.shape != (n_views, 4, 4):
        raise ValueError(f"K must be [{n_views}, 3, 3] and c2w [{n_views}, 4, 4], got {list(K.shape)}, {list(c2w.shape)}")
    gray = to_gray(images)
    K, c2w = K.to(gray), c2w.to(gray)  # noqa: N806
    ranges = torch.as_tensor(depth_range, dtype=torch.float64).reshape(-1, 2).expand(n_views, 2)
    sources = sources or select_sources(c2w, cfg.n_sources, cfg.max_source_angle_deg)
    generator = torch.Generator(device=gray.device).manual_seed(cfg.seed)
    h, w = gray.shape[1:]
    depth = torch.zeros(n_views, h, w, dtype=gray.dtype, device=gray.device)
    normal = torch.zeros(n_views, h, w, 3, dtype=gray.dtype, device=gray.device)
    cost = torch.full((n_views, h, w), 2.0, dtype=gray.dtype, device=gray.device)
    views = list(range(n_views)) if views is None else list(views)
    for v in views:
        seed = seeds[v] if seeds is not None else None
        out = patchmatch_view(gray, K, c2w, v, sources[v], tuple(ranges[v].tolist()), cfg.patchmatch, seed, generator)
        depth[v], normal[v], cost[v] = out.depth, out.normal, out.cost
    geo_cfg = replace(cfg.patchmatch, iterations=cfg.geometric_pass_iterations)
    for _ in range(cfg.geometric_passes):
        previous = depth.clone()
        for v in views:
            seed = Seed(depth[v], normal[v], depth[v] > 0)
            prior = GeometricPrior(torch.stack([previous[s] for s in sources[v]]))
            out = patchmatch_view(gray, K, c2w, v, sources[v], tuple(ranges[v].tolist()), geo_cfg, seed, generator,
                                  prior, first_iteration=cfg.patchmatch.iterations)
            depth[v], normal[v], cost[v] = out.depth, out.normal, out.cost
    checked = [[s for s in sources[v] if s in views] if v in views else [] for v in range(n_views)]
    consistency = geometric_consistency(depth, K, c2w, checked, cfg.filter)
    return MVSResult(depth, normal, (1.0 - cost).clamp(0, 1), consistency, sources)


def fuse(result: MVSResult, images: Tensor, c2w: Tensor, voxel_size: float | None = None) -> PointCloud:  # noqa: N803
    """The point cloud of :func:`run_mvs`'s kept pixels (see :func:`.fusion.fuse_points`)."""
    return fuse_points(result.consistency.points, result.normal, images, c2w.to(result.depth), result.consistency.mask,
                       voxel_size)

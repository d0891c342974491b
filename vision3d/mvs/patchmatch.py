"""PatchMatch multi-view stereo with per-pixel plane hypotheses, red-black propagation and random refinement.

A hypothesis is a z-depth and unit normal (reference camera frame, OpenCV axes), scored by :mod:`.cost`.
It starts random (depth uniform in inverse depth, normal on the camera-facing hemisphere) or from a seed
where a mask trusts it (the helix's ray-cast SDF). Each iteration visits the two checkerboard colours in
turn (Gipuma): propagation takes, in each of ACMH's 8 regions (4 long strips, 4 near V's, all at odd
Manhattan distance), the lowest-cost neighbour's plane intersected with this pixel's ray; refinement tries
ACMH's six random/perturbed candidates, perturbations ``perturbation · decay^iteration`` of the (inverse)
depth range and ``normal_perturbation · decay^iteration`` for normals. A candidate is kept only if it
lowers the cost. A :class:`GeometricPrior` (other views' depths from an earlier pass) adds ACMM's term
``λ · mean_s min(e_s, τ)``, ``e_s`` the round-trip reprojection error in pixels. Candidates are made in
torch on the images' device; the cost runs in the Numba kernel on CPU (torch held to one thread meanwhile:
its spinning OpenMP workers made two 48×64 iterations take 4.1 s instead of 0.5 s) and in torch on CUDA.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import Tensor

from vision3d.geometry.se3 import invert_pose, relative_pose, transform_points
from vision3d.render.cpu_threads import torch_single_threaded

from .consistency import round_trip, world_points
from .cost import WORST_COST, MatchingCostConfig, plane_costs_torch
from .planes import depth_on_plane, facing, pixel_rays, plane_offset, random_normals

Backend = Literal["auto", "numba", "torch"]


@dataclass
class PatchMatchConfig:
    """Settings of :func:`patchmatch_view` (defaults follow Gipuma/ACMH where they say, else ours)."""

    cost: MatchingCostConfig = field(default_factory=MatchingCostConfig)
    iterations: int = 6
    strip_length: int = 11
    """Samples per long strip (distances 1, 3, …, 2·strip_length − 1 along an axis), as ACMH."""
    v_radius: int = 4
    """Near V-shaped regions hold the odd-distance offsets with both |dr|, |dc| ≥ 1 and |dr| + |dc| ≤ v_radius + 1."""
    perturbation: float = 0.25
    """First refinement's depth perturbation, as a fraction of the (inverse) depth range."""
    normal_perturbation: float = 1.0
    """First refinement's normal perturbation: each component moves by up to this, then renormalised."""
    decay: float = 0.5
    """Both perturbations shrink by this factor every iteration."""
    inverse_depth: bool = True
    """Sample and perturb depth uniformly in inverse depth (disparity-like), else in depth."""
    max_incidence_deg: float = 85.0
    """Hypotheses whose normal is further than this from the reversed viewing ray are not considered."""
    geometric_weight: float = 0.2
    """λ of the geometric term (ACMM's 0.2), used when a :class:`GeometricPrior` is given."""
    geometric_max_error_px: float = 3.0
    """τ: the reprojection error is clamped here (ACMM's 3 px); a source without depth there counts τ."""
    backend: Backend = "auto"
    """``auto``: the Numba kernel for CPU tensors, the torch path otherwise."""
    chunk: int = 4096
    """Pixels per chunk of the torch cost path."""


@dataclass
class Seed:
    """Initial hypotheses of one view: ``depth [H, W]`` (z-depth), ``normal [H, W, 3]`` (reference camera frame,
    OpenCV axes) and ``mask [H, W]`` bool, where they are trusted (random hypotheses elsewhere)."""

    depth: Tensor
    normal: Tensor
    mask: Tensor


@dataclass
class GeometricPrior:
    """Depth maps ``[S, H, W]`` of the source views (in the order of ``sources``; 0 = none) from an earlier pass."""

    depth: Tensor


@dataclass
class ViewDepth:
    """PatchMatch output of one view: ``depth [H, W]``, ``normal [H, W, 3]`` (camera frame), the photometric
    ``cost [H, W]`` in [0, 2] and ``confidence [H, W]`` = ``clip(1 − cost, 0, 1)`` (the aggregated NCC,
    negatives at 0)."""

    depth: Tensor
    normal: Tensor
    cost: Tensor

    @property
    def confidence(self) -> Tensor:
        return (1.0 - self.cost).clamp(0.0, 1.0)


def propagation_regions(strip_length: int, v_radius: int) -> list[list[tuple[int, int]]]:
    """The 8 regions of ACMH's adaptive checkerboard sampling as ``(dr, dc)`` offsets, all at odd |dr| + |dc|."""
    strips = [[(sr * d, sc * d) for d in range(1, 2 * strip_length, 2)] for sr, sc in ((-1, 0), (1, 0), (0, -1), (0, 1))]
    vs = [[(sr * a, sc * b) for a in range(1, v_radius + 1) for b in range(1, v_radius + 1)
           if (a + b) % 2 == 1 and a + b <= v_radius + 1] for sr, sc in ((-1, -1), (-1, 1), (1, -1), (1, 1))]
    return strips + vs


def resolve_backend(backend: Backend, device: torch.device) -> str:
    """The backend that runs for ``backend`` on tensors on ``device`` (``auto``: numba on CPU, else torch)."""
    if backend == "auto":
        return "numba" if device.type == "cpu" else "torch"
    return backend


def plane_costs(ref, srcs, K_ref, K_src, R, t, rows, cols, depth, normal, cfg: PatchMatchConfig) -> Tensor:  # noqa: N803
    """:func:`.cost.plane_costs_torch`'s contract, sent to the backend ``cfg.backend`` picks."""
    backend = resolve_backend(cfg.backend, ref.device)
    if backend == "numba":
        if ref.device.type != "cpu":
            raise ValueError(f"the numba backend needs CPU tensors, got {ref.device}")
        from .cost_numba import plane_costs_numba  # noqa: PLC0415  (imports numba only when used)

        return plane_costs_numba(ref, srcs, K_ref, K_src, R, t, rows, cols, depth, normal, cfg.cost)
    if backend != "torch":
        raise ValueError(f"backend must be 'auto', 'numba' or 'torch', got {backend!r}")
    return plane_costs_torch(ref, srcs, K_ref, K_src, R, t, rows, cols, depth, normal, cfg.cost, cfg.chunk)


class _DepthSampler:
    """Depth sampling and perturbation, uniform in depth or in inverse depth within ``[d_min, d_max]``."""

    def __init__(self, d_min: float, d_max: float, inverse: bool):
        if not 0 < d_min < d_max:
            raise ValueError(f"depth_range must satisfy 0 < d_min < d_max, got ({d_min}, {d_max})")
        self.d_min, self.d_max, self.inverse = d_min, d_max, inverse
        self.lo, self.hi = (1 / d_max, 1 / d_min) if inverse else (d_min, d_max)

    def to_param(self, depth: Tensor) -> Tensor:
        return 1 / depth if self.inverse else depth

    def from_param(self, p: Tensor) -> Tensor:
        p = p.clamp(self.lo, self.hi)
        return 1 / p if self.inverse else p

    def random(self, like: Tensor, gen: torch.Generator | None) -> Tensor:
        u = torch.rand(like.shape, generator=gen, device=like.device, dtype=like.dtype)
        return self.from_param(self.lo + u * (self.hi - self.lo))

    def perturb(self, depth: Tensor, scale: float, gen: torch.Generator | None) -> Tensor:
        u = torch.rand(depth.shape, generator=gen, device=depth.device, dtype=depth.dtype) * 2 - 1
        return self.from_param(self.to_param(depth) + u * scale * (self.hi - self.lo))


class _ViewState:
    """Images, relative poses and the current hypotheses of one reference view."""

    def __init__(self, gray: Tensor, K: Tensor, c2w: Tensor, ref: int, sources: list[int],  # noqa: N803
                 sampler: _DepthSampler, cfg: PatchMatchConfig, prior: GeometricPrior | None):
        self.ref_img, self.src_imgs = gray[ref], gray[sources]
        self.K_ref, self.K_src = K[ref], K[sources]
        T = relative_pose(c2w[sources], c2w[ref].expand(len(sources), 4, 4))  # noqa: N806  src <- ref
        self.R, self.t = T[:, :3, :3], T[:, :3, 3]
        self.sampler, self.cfg = sampler, cfg
        self.h, self.w = self.ref_img.shape
        rows, cols = torch.meshgrid(torch.arange(self.h, device=gray.device), torch.arange(self.w, device=gray.device),
                                    indexing="ij")
        self.rays = pixel_rays(self.K_ref, rows.reshape(-1), cols.reshape(-1)).reshape(self.h, self.w, 3)
        self.colour_pixels = [((rows + cols) % 2 == c).nonzero(as_tuple=True) for c in (0, 1)]
        self.min_cos = math.cos(math.radians(cfg.max_incidence_deg))
        self.prior = None
        if prior is not None:
            if prior.depth.shape != (len(sources), self.h, self.w):
                raise ValueError(f"geometric prior of view {ref} must be [{len(sources)}, {self.h}, {self.w}], "
                                 f"got {list(prior.depth.shape)}")
            has = [i for i in range(len(sources)) if bool((prior.depth[i] > 0).any())]
            src_depth = prior.depth[has].to(gray)
            self.prior = (has, src_depth, world_points(src_depth, self.K_src[has], c2w[sources][has]))
            self.c2w_ref, self.w2c_ref, self.w2c_src = c2w[ref], invert_pose(c2w[ref]), invert_pose(c2w[sources])

    def photometric_costs(self, rows: Tensor, cols: Tensor, depth: Tensor, normal: Tensor) -> Tensor:
        return plane_costs(self.ref_img, self.src_imgs, self.K_ref, self.K_src, self.R, self.t, rows, cols,
                           depth, normal, self.cfg)

    def geometric_costs(self, rows: Tensor, cols: Tensor, depth: Tensor) -> Tensor:
        """``mean_s min(e_s, τ)`` ``[N, C]`` over the prior's sources (see the module docstring)."""
        has, src_depth, src_points = self.prior
        tau = self.cfg.geometric_max_error_px
        points = transform_points(self.c2w_ref, (depth[..., None] * self.rays[rows, cols][:, None]).reshape(-1, 3))
        pixels = torch.stack([cols + 0.5, rows + 0.5], dim=-1).to(depth)[:, None].expand(*depth.shape, 2).reshape(-1, 2)
        total = torch.zeros(points.shape[0], dtype=depth.dtype, device=depth.device)
        for j, i in enumerate(has):
            err, _, _, hit = round_trip(points, pixels, self.K_ref, self.w2c_ref, self.K_src[i], self.w2c_src[i],
                                        src_depth[j], src_points[j])
            total += torch.where(hit, err.clamp(max=tau), torch.full_like(err, tau))
        return (total / max(len(has), 1)).reshape(depth.shape)

    def costs(self, rows: Tensor, cols: Tensor, depth: Tensor, normal: Tensor) -> Tensor:
        cost = self.photometric_costs(rows, cols, depth, normal)
        if self.prior is None or not self.prior[0]:
            return cost
        return cost + self.cfg.geometric_weight * self.geometric_costs(rows, cols, depth)

    def valid(self, depth: Tensor, normal: Tensor, rays: Tensor) -> Tensor:
        ok = torch.isfinite(depth) & (depth >= self.sampler.d_min) & (depth <= self.sampler.d_max)
        return ok & facing(normal, rays, self.min_cos)

    def keep_best(self, rows, cols, cand_depth, cand_normal, depth, normal, cost) -> None:
        """Score candidates ``[N, C]`` at pixels ``rows, cols`` and keep any that lower the cost (in place)."""
        rays = self.rays[rows, cols][:, None].expand_as(cand_normal)
        ok = self.valid(cand_depth, cand_normal, rays)
        cand_depth = torch.where(ok, cand_depth, depth[rows, cols][:, None])
        cand_normal = torch.where(ok[..., None], cand_normal, normal[rows, cols][:, None])
        c = self.costs(rows, cols, cand_depth, cand_normal)
        c = torch.where(ok, c, torch.full_like(c, WORST_COST + 1))
        best, idx = c.min(dim=1)
        better = best < cost[rows, cols]
        r, cc, i = rows[better], cols[better], idx[better]
        n = torch.arange(rows.shape[0], device=rows.device)[better]
        depth[r, cc] = cand_depth[n, i]
        normal[r, cc] = cand_normal[n, i]
        cost[r, cc] = best[better]


def _propagation_candidates(state: _ViewState, rows, cols, depth, normal, cost, regions):
    """Per region the lowest-cost neighbour's plane, intersected with each pixel's ray: ``[N, 8]``, ``[N, 8, 3]``."""
    h, w = depth.shape
    offset = plane_offset(depth, normal, state.rays)  # [H, W]
    cand_d, cand_n = [], []
    for region in regions:
        dr = torch.tensor([o[0] for o in region], device=rows.device)
        dc = torch.tensor([o[1] for o in region], device=rows.device)
        nr, nc = rows[:, None] + dr, cols[:, None] + dc  # [N, M]
        inside = (nr >= 0) & (nr < h) & (nc >= 0) & (nc < w)
        nr, nc = nr.clamp(0, h - 1), nc.clamp(0, w - 1)
        c = torch.where(inside, cost[nr, nc], torch.full_like(cost[nr, nc], math.inf))
        best = c.argmin(dim=1)
        br, bc = nr.gather(1, best[:, None])[:, 0], nc.gather(1, best[:, None])[:, 0]
        n = normal[br, bc]
        d = depth_on_plane(offset[br, bc], n, state.rays[rows, cols])
        d = torch.where(inside.any(dim=1), d, torch.full_like(d, math.nan))
        cand_d.append(d)
        cand_n.append(n)
    return torch.stack(cand_d, dim=1), torch.stack(cand_n, dim=1)


def _refinement_candidates(state: _ViewState, rows, cols, depth, normal, iteration: int, gen):
    """ACMH's six: (random d, n), (d, random n), (random, random), (perturbed d, n), (d, perturbed n), (both perturbed)."""
    cfg = state.cfg
    d, n = depth[rows, cols], normal[rows, cols]
    rays = state.rays[rows, cols]
    scale = cfg.perturbation * cfg.decay**iteration
    d_rand = state.sampler.random(d, gen)
    n_rand = random_normals(rays, gen)
    d_pert = state.sampler.perturb(d, scale, gen)
    jitter = (torch.rand(n.shape, generator=gen, device=n.device, dtype=n.dtype) * 2 - 1)
    n_pert = n + cfg.normal_perturbation * cfg.decay**iteration * jitter
    n_pert = n_pert / n_pert.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    cand_d = torch.stack([d_rand, d, d_rand, d_pert, d, d_pert], dim=1)
    cand_n = torch.stack([n, n_rand, n_rand, n, n_pert, n_pert], dim=1)
    return cand_d, cand_n


def patchmatch_view(gray: Tensor, K: Tensor, c2w: Tensor, ref: int, sources: list[int],  # noqa: N803
                    depth_range: tuple[float, float], cfg: PatchMatchConfig | None = None,
                    seed: Seed | None = None, generator: torch.Generator | None = None,
                    prior: GeometricPrior | None = None, first_iteration: int = 0) -> ViewDepth:
    """Run PatchMatch for reference view ``ref`` against ``sources``.

    ``gray [V, H, W]`` float images in [0, 1] (all views the same size), ``K [V, 3, 3]`` (pixel centres at
    +0.5), ``c2w [V, 4, 4]`` camera-to-world (OpenCV axes), all on one device; ``depth_range`` bounds the
    z-depth of hypotheses. ``prior`` adds the geometric term; ``first_iteration`` offsets the perturbation
    schedule (a pass that refines earlier hypotheses starts with small perturbations). Returns the
    hypotheses after ``cfg.iterations`` iterations.
    """
    cfg = cfg or PatchMatchConfig()
    if resolve_backend(cfg.backend, gray.device) == "numba":
        with torch_single_threaded():
            return _patchmatch_view(gray, K, c2w, ref, sources, depth_range, cfg, seed, generator, prior,
                                    first_iteration)
    return _patchmatch_view(gray, K, c2w, ref, sources, depth_range, cfg, seed, generator, prior, first_iteration)


def _patchmatch_view(gray, K, c2w, ref, sources, depth_range, cfg, seed, generator, prior,  # noqa: N803
                     first_iteration) -> ViewDepth:
    if not sources:
        raise ValueError(f"view {ref} needs at least one source view")
    sampler = _DepthSampler(float(depth_range[0]), float(depth_range[1]), cfg.inverse_depth)
    state = _ViewState(gray, K, c2w, ref, list(sources), sampler, cfg, prior)
    h, w = state.h, state.w
    depth = sampler.random(torch.empty(h, w, device=gray.device, dtype=gray.dtype), generator)
    normal = random_normals(state.rays.reshape(-1, 3), generator).reshape(h, w, 3)
    if seed is not None:
        if seed.depth.shape != (h, w) or seed.normal.shape != (h, w, 3) or seed.mask.shape != (h, w):
            raise ValueError(f"seed of view {ref} must have depth [{h}, {w}], normal [{h}, {w}, 3] and mask [{h}, {w}]")
        trusted = seed.mask & state.valid(seed.depth.to(depth), seed.normal.to(normal), state.rays)
        depth = torch.where(trusted, seed.depth.to(depth), depth)
        normal = torch.where(trusted[..., None], seed.normal.to(normal), normal)
    rows, cols = (a.reshape(-1) for a in torch.meshgrid(torch.arange(h, device=gray.device),
                                                        torch.arange(w, device=gray.device), indexing="ij"))
    cost = state.costs(rows, cols, depth.reshape(-1, 1), normal.reshape(-1, 1, 3)).reshape(h, w)
    regions = propagation_regions(cfg.strip_length, cfg.v_radius)
    for iteration in range(first_iteration, first_iteration + cfg.iterations):
        for colour in (0, 1):
            r, c = state.colour_pixels[colour]
            cand = _propagation_candidates(state, r, c, depth, normal, cost, regions)
            state.keep_best(r, c, *cand, depth, normal, cost)
            cand = _refinement_candidates(state, r, c, depth, normal, iteration, generator)
            state.keep_best(r, c, *cand, depth, normal, cost)
    if state.prior is not None:
        cost = state.photometric_costs(rows, cols, depth.reshape(-1, 1), normal.reshape(-1, 1, 3)).reshape(h, w)
    return ViewDepth(depth, normal, cost)

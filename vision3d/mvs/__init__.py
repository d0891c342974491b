"""PatchMatch multi-view stereo (HelixSurf's MVS): plane hypotheses, NCC, propagation, geometric filter, fusion."""

from .consistency import Consistency, GeometricFilterConfig, geometric_consistency, world_points
from .cost import MatchingCostConfig, plane_costs_torch
from .fusion import PointCloud, fuse_points
from .patchmatch import GeometricPrior, PatchMatchConfig, Seed, ViewDepth, patchmatch_view, plane_costs
from .pipeline import MVSConfig, MVSResult, fuse, run_mvs, select_sources, to_gray

__all__ = ["Consistency", "GeometricFilterConfig", "GeometricPrior", "MVSConfig", "MVSResult", "MatchingCostConfig", "PatchMatchConfig",
           "PointCloud", "Seed", "ViewDepth", "fuse", "fuse_points", "geometric_consistency", "patchmatch_view",
           "plane_costs", "plane_costs_torch", "run_mvs", "select_sources", "to_gray", "world_points"]

"""HelixSurf's losses and their schedule (official ``scripts/train.py``, see docs/helixsurf.md).

Every loss takes per-ray tensors and a per-ray ``weight`` (the photometric confidence) and ``mask`` (where
its target exists), and averages over the masked rays, so a batch without targets contributes exactly 0.
The schedule is expressed in the step within the current SDF epoch (the steps since the last MVS pass), as
the official code restarts its training script for each epoch.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor


def photometric_confidence(rgb: Tensor, rgb_gt: Tensor) -> Tensor:
    """c = 1 − mean |rgb error| per ray, in [0, 1], no gradient: rgb [N, 3], rgb_gt [N, 3] -> [N]."""
    return (1.0 - (rgb.detach() - rgb_gt).abs().mean(dim=-1)).clamp(0.0, 1.0)


def _masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    return (values * mask).sum() / mask.sum().clamp_min(1)


def depth_loss(depth: Tensor, target: Tensor, weight: Tensor, mask: Tensor, clamp: float | None = None) -> Tensor:
    """mean over masked rays of ``weight · |depth − target|`` (error clamped at ``clamp``); all [N]."""
    error = (depth - target).abs()
    if clamp is not None:
        error = error.clamp(max=clamp)
    return _masked_mean(weight * error, mask.to(error.dtype))


def normal_loss(normals: Tensor, target: Tensor, weight: Tensor, mask: Tensor, min_cos: float = -1.0) -> Tensor:
    """mean over masked rays of ``weight · ‖normals − target‖₁``, counting only rays whose cos(normals, target)
    exceeds ``min_cos`` (targets that disagree too much are outliers). normals, target [N, 3] unit; weight, mask [N]."""
    cos = (normals.detach() * target).sum(dim=-1)
    use = mask & (cos > min_cos)
    return _masked_mean(weight * (normals - target).abs().sum(dim=-1), use.to(normals.dtype))


@dataclass
class LossSchedule:
    """Weights of the MVS losses against the step in the SDF epoch (the official values at 12k steps/epoch)."""

    depth_mult: float = 1.0
    normal_mult: float = 0.1
    milestones: tuple[float, float] = (5000 / 12000, 7500 / 12000)
    """Fractions of the epoch: the depth weight halves at the first and halves again at the second; the normal
    weight halves at the first; the depth error is clamped from the first."""
    depth_clamp: float = 0.5
    """Per-ray depth error clamp after the first milestone (scene units)."""
    normal_min_cos: float = 0.8
    """Normal targets count only where cos > min(normal_min_cos, fraction of the epoch done)."""

    def depth(self, fraction: float) -> tuple[float, float | None]:
        """Depth weight and clamp (None before the first milestone) at ``fraction`` of the epoch."""
        first, second = self.milestones
        factor = 0.25 if fraction >= second else 0.5 if fraction >= first else 1.0
        return self.depth_mult * factor, (self.depth_clamp if fraction >= first else None)

    def normal(self, fraction: float) -> tuple[float, float]:
        """Normal weight and the cos threshold at ``fraction`` of the epoch."""
        factor = 0.5 if fraction >= self.milestones[0] else 1.0
        return self.normal_mult * factor, min(self.normal_min_cos, fraction)

"""Pose prior of IR-NeRF (GNeRF's): cameras on a sphere patch, looking at a jittered point near the origin.

A pose is drawn as azimuth, elevation, radius (uniform in their ranges) and a look-at point
~ N(0, lookat_std²); the camera sits at that spherical position in a world with +Z up and looks at the
point with no roll. Poses are camera-to-world in OpenCV axes (DESIGN.md), ``[N, 4, 4]``.
Networks see a pose as 9 numbers: Zhou et al.'s 6D rotation (the first two rows of R, as
:func:`vision3d.geometry.so3.rotation_6d_to_matrix` reads them) and the camera centre.
Presets: ``360-object`` (GNeRF's NeRF-Synthetic prior: azimuth 0–360°, elevation 0–90°, radius 4, origin)
and ``forward-facing`` (a ±20° × ±15° patch in front of the object, radius 4, DTU-like look-at jitter).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch
import torch.nn.functional as F

from vision3d.errors import ConfigError
from vision3d.geometry.se3 import make_pose
from vision3d.geometry.so3 import rotation_6d_to_matrix


@dataclass
class PosePriorConfig:
    """Ranges (degrees, scene units) of the pose prior."""

    azimuth_min_deg: float = 0.0
    azimuth_max_deg: float = 360.0
    elevation_min_deg: float = 0.0
    elevation_max_deg: float = 90.0
    radius_min: float = 4.0
    radius_max: float = 4.0
    lookat_std: float = 0.0
    """Standard deviation of the look-at point around the origin (GNeRF's DTU prior: 0.01)."""

    def __post_init__(self) -> None:
        for name in ("azimuth", "elevation", "radius"):
            lo, hi = self.range(name)
            if hi < lo:
                raise ConfigError(f"pose prior: {name} range ({lo}, {hi}) is reversed")
        if self.radius_min <= 0:
            raise ConfigError(f"pose prior: radius must be positive, got {self.radius_min}")
        if not -90.0 <= self.elevation_min_deg <= self.elevation_max_deg <= 90.0:
            raise ConfigError(f"pose prior: elevation must lie in [-90, 90], got {self.range('elevation')}")

    def range(self, name: str) -> tuple[float, float]:
        """(min, max) of ``azimuth`` or ``elevation`` (degrees) or ``radius``."""
        if name == "radius":
            return self.radius_min, self.radius_max
        return getattr(self, f"{name}_min_deg"), getattr(self, f"{name}_max_deg")


PRESETS: dict[str, PosePriorConfig] = {
    "360-object": PosePriorConfig(),
    "forward-facing": PosePriorConfig(azimuth_min_deg=-20.0, azimuth_max_deg=20.0, elevation_min_deg=-15.0,
                                      elevation_max_deg=15.0, lookat_std=0.01),
}


def prior_preset(name: str, **overrides) -> PosePriorConfig:
    """A preset (``360-object``, ``forward-facing``) with some fields replaced."""
    if name not in PRESETS:
        raise ConfigError(f"unknown pose prior preset {name!r} (have: {', '.join(PRESETS)})")
    return replace(PRESETS[name], **overrides)


def prior_of_capture(c2w: torch.Tensor, preset: str = "360-object", azimuth_margin_deg: float = 15.0) -> PosePriorConfig:
    """The preset with the radius and elevation ranges of known cameras ``[N, 4, 4]`` (look-at at the origin):
    the prior a user who knows their capture would set (benchmarks and tests score against ground truth).
    ``forward-facing`` also takes the cameras' azimuth arc (:func:`azimuth_arc`) widened by ``azimuth_margin_deg``
    on each side; ``360-object`` keeps the whole circle."""
    az, el, r = prior_spherical(None, c2w)
    ranges = {"radius_min": float(r.min()), "radius_max": float(r.max()),
              "elevation_min_deg": float(el.min()), "elevation_max_deg": float(el.max())}
    if preset == "forward-facing":
        lo, hi = azimuth_arc(az)
        lo, hi = (lo - azimuth_margin_deg, hi + azimuth_margin_deg) if hi - lo + 2 * azimuth_margin_deg < 360.0 else (0.0, 360.0)
        ranges.update(azimuth_min_deg=lo, azimuth_max_deg=hi)
    return prior_preset(preset, **ranges)


def azimuth_arc(azimuth_deg: torch.Tensor) -> tuple[float, float]:
    """The shortest arc ``(start, end)`` (degrees, start in [0, 360), end ≥ start, possibly past 360) that holds
    all azimuths ``[N]``: the circle minus the largest gap between neighbouring azimuths."""
    a = torch.sort(azimuth_deg.double() % 360.0).values
    gaps = torch.diff(torch.cat([a, a[:1] + 360.0]))
    k = int(gaps.argmax())  # the arc starts after the largest gap
    start = float(a[(k + 1) % len(a)])
    return start, start + 360.0 - float(gaps[k])


def look_at(eye: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Camera-to-world ``[N, 4, 4]`` (OpenCV axes) at ``eye [N, 3]`` looking at ``target [N, 3]``, world +Z up, no roll."""
    forward = F.normalize(target - eye, dim=-1)
    up = torch.tensor([0.0, 0.0, 1.0], dtype=eye.dtype, device=eye.device).expand_as(forward)
    right = torch.cross(forward, up, dim=-1)
    # looking straight up or down: any right vector perpendicular to forward
    degenerate = right.norm(dim=-1, keepdim=True) < 1e-6
    right = torch.where(degenerate, torch.tensor([1.0, 0.0, 0.0], dtype=eye.dtype, device=eye.device), right)
    right = F.normalize(right, dim=-1)
    down = torch.cross(forward, right, dim=-1)
    return make_pose(torch.stack([right, down, forward], dim=-1), eye)


def spherical_to_position(azimuth: torch.Tensor, elevation: torch.Tensor, radius: torch.Tensor) -> torch.Tensor:
    """Angles in radians and radii ``[N]`` to positions ``[N, 3]`` (+Z up, azimuth from +X towards +Y)."""
    return torch.stack(
        [radius * torch.cos(elevation) * torch.cos(azimuth), radius * torch.cos(elevation) * torch.sin(azimuth),
         radius * torch.sin(elevation)], dim=-1)


def sample_poses(config: PosePriorConfig, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """``n`` camera-to-world poses ``[n, 4, 4]`` (OpenCV axes) drawn from the prior."""
    u = torch.rand(n, 3, generator=generator)
    lo = torch.tensor([config.azimuth_min_deg, config.elevation_min_deg, config.radius_min])
    hi = torch.tensor([config.azimuth_max_deg, config.elevation_max_deg, config.radius_max])
    az, el, r = (lo + u * (hi - lo)).unbind(-1)
    target = torch.randn(n, 3, generator=generator) * config.lookat_std
    eye = spherical_to_position(torch.deg2rad(az), torch.deg2rad(el), r) + target
    return look_at(eye, target)


def prior_spherical(config: PosePriorConfig, c2w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Azimuth (deg, in [0, 360)), elevation (deg) and radius ``[N]`` of camera centres (look-at point at the origin)."""
    p = c2w[..., :3, 3]
    r = p.norm(dim=-1)
    el = torch.rad2deg(torch.asin((p[..., 2] / r.clamp_min(1e-9)).clamp(-1, 1)))
    az = torch.rad2deg(torch.atan2(p[..., 1], p[..., 0])) % 360.0
    return az, el, r


def in_prior(config: PosePriorConfig, c2w: torch.Tensor, tolerance_deg: float = 1e-3) -> torch.Tensor:
    """Whether camera centres ``[N]`` lie inside the prior's azimuth, elevation and radius ranges."""
    az, el, r = prior_spherical(config, c2w)
    a0, a1 = config.range("azimuth")
    if a1 - a0 >= 360.0:
        az_ok = torch.ones_like(az, dtype=torch.bool)
    else:
        az_ok = ((az - a0) % 360.0) <= (a1 - a0) + tolerance_deg
    el_ok = (el >= config.elevation_min_deg - tolerance_deg) & (el <= config.elevation_max_deg + tolerance_deg)
    r_ok = (r >= config.radius_min * (1 - 1e-4)) & (r <= config.radius_max * (1 + 1e-4))
    return az_ok & el_ok & r_ok


def pose_to_9d(c2w: torch.Tensor) -> torch.Tensor:
    """Poses ``[..., 4, 4]`` to ``[..., 9]``: 6D rotation (rows 1–2 of R) and the camera centre."""
    return torch.cat([c2w[..., :2, :3].flatten(-2), c2w[..., :3, 3]], dim=-1)


def pose_from_9d(v: torch.Tensor) -> torch.Tensor:
    """``[..., 9]`` (6D rotation, centre) to poses ``[..., 4, 4]`` (Gram–Schmidt, differentiable)."""
    return make_pose(rotation_6d_to_matrix(v[..., :6]), v[..., 6:])

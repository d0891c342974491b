"""A scene IR-NeRF can be run on without files, rendered exactly: three coloured balls on a ground plane whose
colour changes by quadrant, under a sky gradient (50° field of view, cameras looking at the origin).

It has no mirror symmetry, so the mirror image of a camera set does not reproduce its images (the bundled
armadillo is left-right symmetric, which lets the GAN settle on mirrored cameras: docs/ir-nerf.md). The tests
train P on it and ``benchmarks/ir_nerf_phase_a.py --scene three-balls`` runs the whole method on it.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from vision3d.methods.ir_nerf.field import camera_rays, image_pixels
from vision3d.methods.ir_nerf.pose_prior import look_at, prior_preset, spherical_to_position

PRIOR = prior_preset("360-object", radius_min=3.0, radius_max=3.0, elevation_min_deg=10.0, elevation_max_deg=60.0)
"""The cameras' prior: 360° of azimuth, elevation 10–60°, radius 3 (holds :func:`orbit_cameras`)."""

FOV_DEG = 50.0


def intrinsics(size: int) -> Tensor:
    """``K [3, 3]`` (pixels) of the square ``size``² renders."""
    f = size / (2 * math.tan(math.radians(FOV_DEG / 2)))
    return torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1.0]])


def orbit_cameras(n: int, radius: float = 3.0) -> Tensor:
    """``n`` cameras ``[n, 4, 4]`` (OpenCV axes) every 360°/n of azimuth from 10°, at elevations 20° and 45°
    in turn, looking at the origin."""
    azimuth = torch.deg2rad(torch.arange(n) * 360.0 / n + 10.0)
    elevation = torch.deg2rad(torch.tensor([20.0, 45.0]).repeat(n)[:n])
    return look_at(spherical_to_position(azimuth, elevation, torch.full((n,), radius)), torch.zeros(n, 3))


def render(c2w: Tensor, size: int = 16) -> Tensor:
    """Images ``[N, 3, size, size]`` in [0, 1] of cameras ``c2w [N, 4, 4]`` (nearest hit of each ray)."""
    origins, dirs = camera_rays(c2w, intrinsics(size), image_pixels(size, size).expand(len(c2w), -1, -1))
    centres = torch.tensor([[0.6, 0.0, 0.4], [-0.3, 0.5, 0.3], [-0.2, -0.6, 0.5]])
    radii = torch.tensor([0.4, 0.3, 0.5])
    colours = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.2, 0.3, 0.9]])
    t_best = torch.full(origins.shape[:-1], float("inf"))
    colour = 0.5 + 0.5 * dirs[..., 2:3] * torch.tensor([0.2, 0.4, 0.8])  # sky
    colour = colour.expand(*origins.shape[:-1], 3).clone()
    t_ground = -origins[..., 2] / dirs[..., 2].clamp(max=-1e-6)
    hit = (dirs[..., 2] < -1e-6) & (t_ground > 0)
    p = origins + t_ground[..., None] * dirs
    ground = torch.stack([0.3 + 0.4 * (p[..., 0] > 0), 0.3 + 0.4 * (p[..., 1] > 0), 0.4 * torch.ones_like(p[..., 0])], -1)
    colour = torch.where(hit[..., None], ground, colour)
    t_best = torch.where(hit, t_ground, t_best)
    for c, r, rgb in zip(centres, radii, colours, strict=True):
        oc = origins - c
        b = (oc * dirs).sum(-1)
        disc = b**2 - (oc**2).sum(-1) + r**2
        t = -b - disc.clamp_min(0).sqrt()
        hit = (disc > 0) & (t > 0) & (t < t_best)
        shade = 0.6 + 0.4 * ((origins + t[..., None] * dirs - c) / r)[..., 2:3]
        colour = torch.where(hit[..., None], rgb * shade, colour)
        t_best = torch.where(hit, t, t_best)
    return colour.clamp(0, 1).transpose(1, 2).reshape(len(c2w), 3, size, size)

"""det-gs's sky-floater search: a Gaussian that training views see on the prior's far sky nearer than the scene."""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from vision3d.geometry.camera import unproject_points
from vision3d.geometry.se3 import invert_pose, opengl_to_opencv, transform_points
from vision3d.methods.det_gs.depth_priors import MonocularLikePriorConfig, monocular_like_prior
from vision3d.methods.det_gs.floaters import (
    SkyFloaterConfig,
    ViewRecord,
    far_pixels,
    sky_floaters,
    view_masks,
    view_record,
)
from vision3d.pose.scenes import look_at as camera_to_world_looking_at

SIZE, FOCAL = 32, 32.0
K = torch.tensor([[FOCAL, 0.0, SIZE / 2], [0.0, FOCAL, SIZE / 2], [0.0, 0.0, 1.0]], dtype=torch.float64)


def look_at(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """World-to-camera [4, 4] in OpenCV axes (x right, y down, z forward), world z up."""
    return np.linalg.inv(opengl_to_opencv(camera_to_world_looking_at(eye, target)))


def scene_depth(viewmat: np.ndarray, scale: float, shift: np.ndarray) -> np.ndarray:
    """z-depth [SIZE, SIZE] of a unit sphere on a ground disc (z = -1, radius 30), scaled and moved; 0: the sky."""
    rotation, eye = viewmat[:3, :3], -viewmat[:3, :3].T @ viewmat[:3, 3]
    eye = (eye - shift) / scale
    v, u = np.mgrid[0:SIZE, 0:SIZE] + 0.5
    rays = np.stack([(u - SIZE / 2) / FOCAL, (v - SIZE / 2) / FOCAL, np.ones_like(u)], axis=-1) @ rotation
    a, b, c = (rays**2).sum(-1), 2 * (rays @ eye), eye @ eye - 1.0  # t along a ray of camera-z 1 is the z-depth
    disc = b**2 - 4 * a * c
    sphere = np.where(disc > 0, (-b - np.sqrt(np.maximum(disc, 0))) / (2 * a), np.inf)
    t = (-1.0 - eye[2]) / np.where(rays[..., 2] < 0, rays[..., 2], -1e-12)
    hit = eye[:2] + t[..., None] * rays[..., :2]
    ground = np.where((rays[..., 2] < 0) & (np.linalg.norm(hit, axis=-1) < 30.0), t, np.inf)
    depth = np.minimum(sphere, ground)
    return np.where(np.isfinite(depth), depth * scale, 0.0)


def orbit_views(scale: float = 1.0, shift=(0.0, 0.0, 0.0), num: int = 12) -> list[ViewRecord]:
    """``num`` cameras on an orbit of radius 4 at height 1 around a unit sphere on a ground disc, sky beyond;
    everything scaled by ``scale`` and moved by ``shift``; the prior is the monocular-like one (sky farthest)."""
    shift = np.asarray(shift)
    config = SkyFloaterConfig()
    views = []
    for i in range(num):
        angle = 2 * np.pi * i / num
        eye = scale * np.array([4 * np.cos(angle), 4 * np.sin(angle), 1.0]) + shift
        viewmat = look_at(eye, shift)
        depth = scene_depth(viewmat, scale, shift)
        prior = monocular_like_prior(depth, MonocularLikePriorConfig(seed=3), index=i)
        rendered = torch.from_numpy(np.where(depth > 0, depth, 1e3 * scale))  # a far sky behind the sphere
        masks = view_masks(prior.values, prior.kind, prior.valid, config)
        record = view_record(torch.from_numpy(viewmat), K, masks, rendered, torch.ones_like(rendered), config)
        views.append(record)
    return views


def planted_gaussians(scale: float = 1.0, shift=(0.0, 0.0, 0.0)) -> torch.Tensor:
    points = np.array([
        [-4.0, 0.3, 2.0],  # a floater on the far side of the orbit, above the sphere in the views across it
        [0.0, 0.0, 1.0],  # the sphere's top: on its silhouette against the sky in every view
        [0.9, 0.3, 0.3],  # on the sphere's surface
        [-40.0, 3.0, 6.0],  # far sky, beyond the scene
    ])
    return torch.from_numpy(scale * points + np.asarray(shift))


def test_a_sky_floater_is_found_and_surfaces_and_the_far_sky_are_not():
    views = orbit_views()
    assert all(0.1 < view.far.float().mean() < 0.5 for view in views)  # the eroded sky
    assert sky_floaters(planted_gaussians(), views, SkyFloaterConfig().min_share).tolist() == [True, False, False, False]


def test_far_pixels_are_the_prior_sky_and_follow_any_affine_map():
    viewmat = look_at(np.array([4.0, 0.0, 1.0]), np.zeros(3))
    depth = scene_depth(viewmat, 1.0, np.zeros(3))
    prior = monocular_like_prior(depth, MonocularLikePriorConfig(seed=0))
    far = far_pixels(prior.values, "disparity", prior.valid, 0.15)
    sky = torch.from_numpy(depth == 0)
    near = torch.from_numpy((depth > 0) & (depth < 10))
    assert far[sky].float().mean() > 0.9 and not far[near].any()
    assert torch.equal(far, far_pixels(3.0 * prior.values - 7.0, "disparity", prior.valid, 0.15))


def test_the_search_does_not_depend_on_the_scene_units_or_placement():
    reference = sky_floaters(planted_gaussians(), orbit_views(), 0.5)
    moved = sky_floaters(planted_gaussians(100.0, (70.0, -40.0, 30.0)), orbit_views(100.0, (70.0, -40.0, 30.0)), 0.5)
    assert torch.equal(reference, moved)


def on_a_far_pixel(view: ViewRecord, depth_ratio: float) -> torch.Tensor:
    """[1, 3] world point on the ray through the view's first far pixel, at ``depth_ratio`` x its surface depth."""
    v, u = torch.nonzero(view.far)[0].tolist()
    pixel = torch.tensor([[[u + 0.5, v + 0.5]]], dtype=torch.float64)
    camera = unproject_points(pixel, torch.tensor([[depth_ratio * view.surface_depth]], dtype=torch.float64), view.K[None])
    return transform_points(invert_pose(view.viewmat), camera[0])


def test_a_sky_floater_needs_half_of_the_views_that_see_it_and_all_of_them_with_few_views():
    config = SkyFloaterConfig()
    for scale, shift in ((1.0, (0.0, 0.0, 0.0)), (100.0, (70.0, -40.0, 30.0))):
        floating = orbit_views(scale, shift)[0]
        point = on_a_far_pixel(floating, 0.5)  # on this view's sky at half its surface depth
        # the same camera with its surfaces rendered nearer than the point: there it is beyond them, not a floater
        beyond = dataclasses.replace(floating, surface_depth=0.25 * floating.surface_depth)
        many, few = config.share(24), config.share(8)
        assert sky_floaters(point, [floating], many).tolist() == [True]
        assert sky_floaters(point, [floating, beyond], many).tolist() == [True]  # one of two is half
        assert sky_floaters(point, [floating, beyond, beyond], many).tolist() == [False]  # one of three
        # with few training views every view that sees it must agree
        assert sky_floaters(point, [floating, floating, beyond], few).tolist() == [False]
        assert sky_floaters(point, [floating, beyond], few).tolist() == [False]
        assert sky_floaters(point, [floating, floating], few).tolist() == [True]

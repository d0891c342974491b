"""The one camera convention against Blender's ground truth (the bundled armadillo render, 128x128).

Pixel centres at index + 0.5: the GT mesh, hit by the ray through a pixel's centre (``PinholeCamera`` and the
scene's OpenGL ``c2w`` through ``opengl_to_opencv``), must have the z-depth Blender wrote for that pixel.
Poses: a pixel back-projected with view A's depth must land where view B's depth agrees. Both measure the
sub-pixel shift that explains Blender's depth best (least squares over the smooth pixels, to first order in
the depth's gradient) and require it below 0.1 px; the first also checks that OpenCV's centres (half a pixel
off) are seen as such, the second that poses without the OpenGL->OpenCV flip fail. Then the two places the
convention meets pixel indices of another kind: binned event pixels and OpenCV calibration files.
"""

from __future__ import annotations

import numpy as np
import pytest
from scipy.ndimage import map_coordinates, maximum_filter, minimum_filter

from vision3d.data.bundled import bundled_scene_path
from vision3d.data.scene import load_scene
from vision3d.events.geometry import load_camera, save_camera
from vision3d.geometry.camera import PIXEL_CENTRE, PinholeCamera

trimesh = pytest.importorskip("trimesh")

VIEW_A, VIEW_B = 0, 1  # neighbouring orbit views, 15 degrees apart


@pytest.fixture(scope="module")
def scene():
    return load_scene(bundled_scene_path("armadillo"))


def _smooth_pixels(depth: np.ndarray, rel: float = 0.05) -> np.ndarray:
    """Pixel indices [N, 2] as (x, y) whose 5x5 neighbourhood is all foreground within ``rel`` of the centre:
    away from silhouettes, where Blender's pixel filter mixes two surfaces into one depth."""
    lo, hi = minimum_filter(depth, 5), maximum_filter(depth, 5)
    ok = (lo > 0) & (hi - lo < rel * depth)
    ys, xs = np.nonzero(ok)
    return np.stack([xs, ys], -1).astype(np.float64)


def _best_shift(depth_at, xy: np.ndarray, z_ref: np.ndarray) -> np.ndarray:
    """Shift d [2] (px) with ``depth_at(xy + d) ≈ z_ref``, to first order, by least squares over the pixels
    where ``depth_at`` is smooth (its second difference over ±0.5 px is small) and finite."""
    h = 0.5
    ex, ey = np.array([h, 0.0]), np.array([0.0, h])
    z0 = depth_at(xy)
    zx, zxm, zy, zym = depth_at(xy + ex), depth_at(xy - ex), depth_at(xy + ey), depth_at(xy - ey)
    grad = np.stack([zx - zxm, zy - zym], -1) / (2 * h)
    curved = np.maximum(np.abs(zx + zxm - 2 * z0), np.abs(zy + zym - 2 * z0)) > 1e-3 * z0
    ok = np.isfinite(grad).all(-1) & np.isfinite(z0) & ~curved & (np.abs(z_ref - z0) < 0.02 * z_ref)
    assert ok.sum() > 500, f"only {ok.sum()} usable pixels"
    d, *_ = np.linalg.lstsq(grad[ok], (z_ref - z0)[ok], rcond=None)
    return d


def _mesh_depth(mesh, frame, xy: np.ndarray) -> np.ndarray:
    """z-depth [N] of the first mesh hit along the rays through pixel coordinates ``xy`` [N, 2]; NaN if none."""
    c2w = frame.c2w_opencv
    n = frame.camera.normalize(xy)
    dirs = np.concatenate([n, np.ones_like(n[:, :1])], -1) @ c2w[:3, :3].T
    origins = np.broadcast_to(c2w[:3, 3], dirs.shape)
    hits, ray, _ = mesh.ray.intersects_location(origins, dirs, multiple_hits=False)
    z = np.full(len(xy), np.nan)
    z[ray] = (hits - c2w[:3, 3]) @ c2w[:3, 2]
    return z


def test_pixel_centres_at_half_integers_match_blender_depth(scene):
    mesh = trimesh.load(scene.mesh_path, force="mesh", process=False)
    frame = scene.frames[VIEW_A]
    depth = scene.load_depth(VIEW_A)
    ij = _smooth_pixels(depth)
    ij = ij[np.random.default_rng(0).choice(len(ij), size=min(3000, len(ij)), replace=False)]
    z_ref = depth[ij[:, 1].astype(int), ij[:, 0].astype(int)]

    d = _best_shift(lambda xy: _mesh_depth(mesh, frame, xy), ij + PIXEL_CENTRE, z_ref)
    assert np.abs(d).max() < 0.1, f"Blender's depth sits {d} px from our pixel centres"
    # the measurement sees half a pixel: OpenCV's centres (at the index) are off by (0.5, 0.5)
    d_opencv = _best_shift(lambda xy: _mesh_depth(mesh, frame, xy), ij, z_ref)
    np.testing.assert_allclose(d_opencv, [0.5, 0.5], atol=0.1)


def _reproject(scene, c2w_a: np.ndarray, c2w_b: np.ndarray):
    """View A's smooth pixels back-projected with A's depth into view B (OpenCV-axes poses): their pixel
    coordinates [N, 2] and z-depth [N] in B, and B's depth as a function of pixel coordinates (bilinear, NaN off
    its smooth foreground)."""
    fa, fb = scene.frames[VIEW_A], scene.frames[VIEW_B]
    depth_a, depth_b = scene.load_depth(VIEW_A), scene.load_depth(VIEW_B)
    ij = _smooth_pixels(depth_a)
    z = depth_a[ij[:, 1].astype(int), ij[:, 0].astype(int)]
    n = fa.camera.normalize(ij + PIXEL_CENTRE)
    cam_a = np.concatenate([n, np.ones_like(n[:, :1])], -1) * z[:, None]
    w2c_b = np.linalg.inv(c2w_b) @ c2w_a
    in_b = cam_a @ w2c_b[:3, :3].T + w2c_b[:3, 3]
    smooth_b = np.zeros(depth_b.shape)
    smooth_b[tuple(_smooth_pixels(depth_b).astype(int).T[::-1])] = 1.0

    def depth_b_at(xy):
        rc = [xy[:, 1] - PIXEL_CENTRE, xy[:, 0] - PIXEL_CENTRE]
        inside = map_coordinates(smooth_b, rc, order=0, mode="constant") > 0
        return np.where(inside, map_coordinates(depth_b, rc, order=1, mode="nearest"), np.nan)

    with np.errstate(divide="ignore", invalid="ignore"):
        return fb.camera.project(in_b), in_b[:, 2], depth_b_at


def test_poses_reproject_depth_between_views(scene):
    fa, fb = scene.frames[VIEW_A], scene.frames[VIEW_B]
    xy_b, z_b, depth_b_at = _reproject(scene, fa.c2w_opencv, fb.c2w_opencv)
    d = _best_shift(depth_b_at, xy_b, z_b)
    assert np.abs(d).max() < 0.1, f"view A's depth lands {d} px off view B's"
    z_seen = depth_b_at(xy_b)
    seen = np.isfinite(z_seen)
    assert seen.mean() > 0.7 and (np.abs(z_seen - z_b)[seen] < 0.01 * z_b[seen]).mean() > 0.95
    # the measurement sees half a pixel: B's principal point 0.5 px off in x
    np.testing.assert_allclose(_best_shift(depth_b_at, xy_b + [0.5, 0.0], z_b), [-0.5, 0.0], atol=0.1)
    # transforms.json's OpenGL poses taken as OpenCV ones (no axes flip): nothing lands where it should
    xy_b, z_b, depth_b_at = _reproject(scene, fa.c2w, fb.c2w)
    with np.errstate(invalid="ignore"):
        assert (np.abs(depth_b_at(xy_b) - z_b) < 0.01 * z_b).mean() < 0.1


def test_binning_keeps_the_centre_of_each_block():
    cam = PinholeCamera.default_for(64, 48)
    binned = cam.scaled(2)
    block = np.array([[10.0, 6.0], [11.0, 6.0], [10.0, 7.0], [11.0, 7.0]])  # full-resolution pixels of binned (5, 3)
    np.testing.assert_allclose(binned.normalize_index(np.array([5.0, 3.0])), cam.normalize_index(block).mean(0))
    assert (binned.width, binned.height, binned.cx, binned.cy) == (32, 24, 16.0, 12.0)


def test_camera_yaml_holds_opencv_values(tmp_path):
    path = tmp_path / "camera.yaml"
    path.write_text("camera_matrix: {data: [200, 0, 319.5, 0, 210, 239.5, 0, 0, 1]}\nimage_width: 640\nimage_height: 480\n")
    cam = load_camera(path)  # an OpenCV calibration of a centred principal point
    assert (cam.cx, cam.cy) == (320.0, 240.0) and (cam.width, cam.height) == (640, 480)
    save_camera(path, cam)
    assert "cx: 319.5" in path.read_text() and load_camera(path) == cam

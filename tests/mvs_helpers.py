"""Synthetic views of a textured plane for the PatchMatch MVS tests.

The plane ``n·X = c`` (world frame) carries a random band-limited texture in 2-D plane coordinates;
each view is rendered exactly by intersecting its pixel rays with the plane, so every image is the
texture warped by a known homography, and the true depth and normal of every pixel are known.
"""

from __future__ import annotations

import numpy as np
import torch
from scipy import ndimage


def look_at_c2w(centre: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world ``[4, 4]`` (OpenCV axes) at ``centre`` looking at ``target``, world y down."""
    z = target - centre
    z = z / np.linalg.norm(z)
    x = np.cross(np.array([0.0, 1.0, 0.0]), z)
    x = x / np.linalg.norm(x)
    y = np.cross(z, x)
    c2w = np.eye(4)
    c2w[:3, :3] = np.stack([x, y, z], axis=1)
    c2w[:3, 3] = centre
    return c2w


def plane_views(normal, point, centres, target, size=(48, 64), focal=60.0, seed=0):
    """Render gray views of a textured plane (world normal ``normal`` through ``point``).

    Returns images ``[V, H, W]`` float64 in [0, 1], K ``[V, 3, 3]``, c2w ``[V, 4, 4]``, true z-depth
    ``[V, H, W]`` and true camera-frame normals ``[V, H, W, 3]`` (facing each camera), as torch tensors.
    """
    rng = np.random.default_rng(seed)
    texture = ndimage.gaussian_filter(rng.random((400, 400)), 1.5)
    texture = (texture - texture.min()) / (texture.max() - texture.min())
    n = np.asarray(normal, float) / np.linalg.norm(normal)
    p0 = np.asarray(point, float)
    e1 = np.cross(n, [0.0, 0.0, 1.0] if abs(n[2]) < 0.9 else [1.0, 0.0, 0.0])
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(n, e1)
    h, w = size
    K = np.array([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1.0]])  # noqa: N806
    ys, xs = np.mgrid[0:h, 0:w] + 0.5
    rays_cam = np.stack([(xs - K[0, 2]) / K[0, 0], (ys - K[1, 2]) / K[1, 1], np.ones_like(xs)], -1)
    images, depths, normals, c2ws = [], [], [], []
    for centre in centres:
        c2w = look_at_c2w(np.asarray(centre, float), np.asarray(target, float))
        rays = rays_cam @ c2w[:3, :3].T
        s = ((p0 - c2w[:3, 3]) @ n) / (rays @ n)  # ray parameter = z-depth since rays_cam has z = 1
        hit = c2w[:3, 3] + s[..., None] * rays - p0
        a, b = hit @ e1, hit @ e2
        scale = 12.0  # texture pixels per world unit (about one per image pixel at depth 4)
        images.append(ndimage.map_coordinates(texture, [a * scale + 200, b * scale + 200], order=3, mode="reflect"))
        depths.append(s)
        n_cam = c2w[:3, :3].T @ n
        n_cam = n_cam if n_cam[2] < 0 else -n_cam
        normals.append(np.broadcast_to(n_cam, (h, w, 3)))
        c2ws.append(c2w)
    as_t = lambda a: torch.from_numpy(np.ascontiguousarray(np.stack(a)))  # noqa: E731
    return (as_t(images).clamp(0, 1), torch.from_numpy(np.stack([K] * len(centres))), as_t(c2ws),
            as_t(depths), as_t(normals))

"""Writes small, valid nerfstudio scenes for tests (images, depth PNGs in mm, transforms.json)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image


def look_at_c2w(eye, target=(0.0, 0.0, 0.0), up=(0.0, 0.0, 1.0)) -> np.ndarray:
    """Camera-to-world [4, 4], OpenGL axes (camera looks down -Z)."""
    eye, target, up = (np.asarray(v, dtype=np.float64) for v in (eye, target, up))
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross(up, back)
    right /= np.linalg.norm(right)
    true_up = np.cross(back, right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, true_up, back, eye
    return c2w


def write_scene(root: Path, n_views: int = 6, size: int = 16, with_depth: bool = True) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    (root / "depths").mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    frames = []
    for i in range(n_views):
        angle = 2 * np.pi * i / n_views
        c2w = look_at_c2w((3 * np.cos(angle), 3 * np.sin(angle), 1.0))
        Image.fromarray(rng.integers(0, 255, (size, size, 3), dtype=np.uint8)).save(root / f"images/{i:03d}.png")
        frame = {"file_path": f"images/{i:03d}.png", "transform_matrix": c2w.tolist()}
        if with_depth:
            depth_mm = np.full((size, size), 3000, dtype=np.uint16)
            Image.fromarray(depth_mm).save(root / f"depths/{i:03d}.png")
            frame["depth_file_path"] = f"depths/{i:03d}.png"
        frames.append(frame)
    meta = {"fl_x": size, "fl_y": size, "cx": size / 2, "cy": size / 2, "w": size, "h": size,
            "camera_model": "OPENCV", "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta, indent=1))
    return root


# A COLMAP-like OPENCV barrel lens (nerfstudio's k1 k2 k3 k4 p1 p2): nerfstudio's undistortion crops its images.
BARREL_LENS = (-0.15, 0.02, 0.0, 0.0, 0.002, 0.0)


def give_scene_a_lens(root: Path, lens=BARREL_LENS) -> np.ndarray:
    """Declare ``lens`` in ``root/transforms.json`` (one camera for all frames); returns each file pixel's
    undistorted ray ``[H, W, 2]`` (normalised x, y), to write per-pixel files as functions of the ray."""
    import torch

    from vision3d.data.lens import undistorted_rays
    from vision3d.geometry.camera import pixel_grid

    meta = json.loads((root / "transforms.json").read_text())
    meta.update(k1=lens[0], k2=lens[1], k3=lens[2], p1=lens[4], p2=lens[5])
    (root / "transforms.json").write_text(json.dumps(meta))
    intrinsics = torch.tensor([meta["fl_x"], meta["fl_y"], meta["cx"], meta["cy"]])
    return undistorted_rays(pixel_grid(meta["h"], meta["w"]), intrinsics, torch.tensor(lens)).numpy()


def new_pixel_rays(camera) -> np.ndarray:  # noqa: ANN001
    """``[h, w, 2]`` normalised rays of the pixels of a pinhole nerfstudio camera (after undistortion)."""
    from vision3d.geometry.camera import normalize_pixels, pixel_grid

    height, width = int(camera.height), int(camera.width)
    pixels = pixel_grid(height, width).reshape(1, -1, 2)
    return normalize_pixels(pixels, camera.get_intrinsics_matrices().reshape(1, 3, 3)).reshape(height, width, 2).numpy()

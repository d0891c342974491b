"""A two-part Gaussian scene for the romap tests: images, part-id masks and edited targets rendered from known Gaussians."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from scene_factory import look_at_c2w

from vision3d.geometry.se3 import invert_pose, opengl_to_opencv
from vision3d.render import rasterize_gaussians

SIZE = 40
PART_COLOURS = {1: (0.9, 0.2, 0.2), 2: (0.2, 0.3, 0.9)}
EDIT_COLOUR = (0.1, 0.85, 0.2)


def two_part_gaussians(n_per: int = 150, seed: int = 0) -> dict[str, torch.Tensor]:
    """Part 1 (red) around x = -0.55, part 2 (blue) around x = +0.55, isotropic Gaussians (world frame)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.tensor([[-0.55, 0.0, 0.0], [0.55, 0.0, 0.0]])
    means = torch.cat([c + 0.22 * torch.randn(n_per, 3, generator=g) for c in centres])
    part = torch.cat([torch.full((n_per,), 1), torch.full((n_per,), 2)])
    colours = torch.tensor([PART_COLOURS[int(p)] for p in part])
    n = means.shape[0]
    return dict(means=means, scales=torch.full((n, 3), 0.09), quats=torch.tensor([1.0, 0, 0, 0]).repeat(n, 1),
                opacities=torch.full((n,), 0.95), colours=colours, part=part)  # fmt: skip


def render(gaussians: dict, c2w_gl: np.ndarray, colours: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Render ``colours [N, D]`` from an OpenGL camera-to-world; -> (image [H, W, D], alpha [H, W, 1])."""
    viewmat = invert_pose(opengl_to_opencv(torch.from_numpy(c2w_gl).float()[None]))
    K = torch.tensor([[SIZE, 0.0, SIZE / 2], [0.0, SIZE, SIZE / 2], [0.0, 0.0, 1.0]])[None]  # noqa: N806
    out, alpha, _ = rasterize_gaussians(gaussians["means"], gaussians["quats"], gaussians["scales"],
                                        gaussians["opacities"], colours, viewmat, K, SIZE, SIZE)  # fmt: skip
    return out[0], alpha[0]


def write_two_part_scene(root: Path, n_views: int = 10, seed: int = 0) -> tuple[Path, dict]:
    """Images (black background), ``part_ids/`` (16-bit ids), ``targets/`` (part 1 recoloured) and transforms.json."""
    gaussians = two_part_gaussians(seed=seed)
    for sub in ("images", "part_ids", "targets"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    onehot = torch.nn.functional.one_hot(gaussians["part"] - 1, 2).float()
    edited = gaussians["colours"].clone()
    edited[gaussians["part"] == 1] = torch.tensor(EDIT_COLOUR)
    frames = []
    for i in range(n_views):
        angle = 2 * np.pi * i / n_views * 0.5 - np.pi / 4 - np.pi / 2  # a half circle in front (-y side)
        c2w = look_at_c2w((3.0 * np.cos(angle), 3.0 * np.sin(angle), 1.2))
        with torch.no_grad():
            rgb, _ = render(gaussians, c2w, gaussians["colours"])
            labels, _ = render(gaussians, c2w, onehot)
            target, _ = render(gaussians, c2w, edited)
        ids = torch.where(labels.sum(-1) > 0.5, labels.argmax(-1) + 1, 0).numpy().astype(np.uint16)
        name = f"{i:03d}.png"
        Image.fromarray((rgb.clamp(0, 1).numpy() * 255).round().astype(np.uint8)).save(root / "images" / name)
        Image.fromarray(ids).save(root / "part_ids" / name)
        Image.fromarray((target.clamp(0, 1).numpy() * 255).round().astype(np.uint8)).save(root / "targets" / name)
        frames.append({"file_path": f"images/{name}", "transform_matrix": c2w.tolist()})
    (root / "part_ids" / "parts.json").write_text(json.dumps(["left", "right"]))
    meta = {"fl_x": SIZE, "fl_y": SIZE, "cx": SIZE / 2, "cy": SIZE / 2, "w": SIZE, "h": SIZE,
            "camera_model": "OPENCV", "frames": frames}  # fmt: skip
    (root / "transforms.json").write_text(json.dumps(meta, indent=1))
    return root, gaussians

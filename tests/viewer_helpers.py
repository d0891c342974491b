"""Helper of the viewer tests: nerfstudio camera-path files."""

from __future__ import annotations

import json
from pathlib import Path

import torch


def camera_path_json(c2ws: torch.Tensor, path: Path, width: int = 32, height: int = 24, fov: float = 60.0) -> Path:
    """nerfstudio's camera_path.json (as the viewer's Render tab writes it) through the poses ``c2ws [N, 3, 4]``."""
    frames = []
    for c2w in c2ws:
        matrix = torch.eye(4, dtype=torch.float64)
        matrix[:3] = c2w.double()
        frames.append({"camera_to_world": matrix.flatten().tolist(), "fov": fov, "aspect": width / height})
    path.write_text(json.dumps({"camera_type": "perspective", "render_width": width, "render_height": height,
                                "seconds": len(frames) / 2.0, "camera_path": frames, "crop": None}))
    return path

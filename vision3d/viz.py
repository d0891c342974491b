"""Pictures people look at: colourised depth and error maps, contact sheets, PNG writing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image


def to_uint8(image: np.ndarray) -> np.ndarray:
    """[H, W, 3] or [H, W] float in [0, 1] to uint8."""
    return (np.clip(image, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def colorize(values: np.ndarray, valid: np.ndarray | None = None, cmap: str = "turbo",
             vmin: float | None = None, vmax: float | None = None) -> np.ndarray:
    """Scalar map [H, W] to RGB [H, W, 3] in [0, 1]; invalid pixels black. Range from valid percentiles 1..99."""
    from matplotlib import colormaps

    valid = np.isfinite(values) if valid is None else (valid & np.isfinite(values))
    if not valid.any():
        return np.zeros((*values.shape, 3))
    lo = np.percentile(values[valid], 1) if vmin is None else vmin
    hi = np.percentile(values[valid], 99) if vmax is None else vmax
    normed = np.clip((values - lo) / max(hi - lo, 1e-12), 0.0, 1.0)
    rgb = colormaps[cmap](np.where(valid, normed, 0.0))[..., :3]
    rgb[~valid] = 0.0
    return rgb


def colorize_depth(depth: np.ndarray) -> np.ndarray:
    """Depth [H, W] (0 = unknown) to RGB with near = warm."""
    valid = depth > 0
    return colorize(-np.where(valid, depth, 0.0), valid)


def contact_sheet(tiles: list[np.ndarray], columns: int, pad: int = 2) -> np.ndarray:
    """Tiles [H, W, 3] float in [0, 1] (same size) laid out in a grid on white."""
    height, width = tiles[0].shape[:2]
    rows = (len(tiles) + columns - 1) // columns
    sheet = np.ones((rows * (height + pad) + pad, columns * (width + pad) + pad, 3))
    for i, tile in enumerate(tiles):
        r, c = divmod(i, columns)
        y, x = pad + r * (height + pad), pad + c * (width + pad)
        sheet[y : y + height, x : x + width] = tile[..., :3]
    return sheet


def save_png(path: str | Path, image: np.ndarray) -> Path:
    """Write a float [H, W, 3] / [H, W] image in [0, 1] as PNG, creating the folder."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(to_uint8(image)).save(path)
    return path

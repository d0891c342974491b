"""Where RoMaP's 2D part masks come from, and how the benchmark spoils them.

A part mask is an integer image ``[H, W]``: 0 background, ``p`` in 1..P part ``p``. Sources:
- a folder of images named like the training images (any extension PIL reads, or ``.npy``): either
  ids as grey values (8 or 16 bit) or, with ``part_colours``, colour-coded parts (a pixel within
  ``colour_tolerance`` of part ``p``'s colour is ``p``, anything else background). Our rendered
  scenes write such a folder, ``part_ids/`` (16-bit PNG, from Blender's object-index pass), with
  ``parts.json`` holding the part names;
- a segmentation network on disk: a TorchScript file mapping ``[1, 3, H, W]`` in [0, 1] to logits
  ``[1, P + 1, H, W]`` (channel 0 background). Nothing ships or downloads; no source is an error.
:func:`corrupt_part_masks` makes masks noisy and view-inconsistent (per-view shifts, relabelled
blobs, dropped parts) for the robustness benchmark.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import Tensor

from vision3d.data.scene import SceneError
from vision3d.errors import CheckpointError, ConfigError, InputNotFoundError

MASK_DIR_NAME = "part_ids"
PART_NAMES_FILE = "parts.json"


@dataclass
class PartMaskConfig:
    """The 2D part masks of the training views."""

    mask_dir: Path | None = None
    """folder of part masks named like the images; default: the scene's ``part_ids/`` when it exists."""
    part_colours: list[str] = field(default_factory=list)
    """hex colours (``ff0000``) of parts 1..P when the masks are colour-coded; empty: grey ids."""
    colour_tolerance: int = 8
    """largest per-channel difference (0-255) that still counts as a part's colour."""
    segmenter: Path | None = None
    """TorchScript segmentation network (see the module docstring), used when there is no mask folder."""


def find_mask_file(mask_dir: Path, image_path: Path) -> Path:
    """The mask in ``mask_dir`` whose stem is the image's; a one-line error when there is none."""
    hits = sorted(p for p in Path(mask_dir).glob(f"{Path(image_path).stem}.*") if p.suffix.lower() != ".json")
    if not hits:
        raise InputNotFoundError(f"{mask_dir}: no part mask for image {Path(image_path).name} (expected {Path(image_path).stem}.png)")
    return hits[0]


def read_part_ids(path: Path, part_colours: list[str] = (), tolerance: int = 8) -> Tensor:  # -> [H, W] int64
    """Part ids of one mask file (grey ids, or colour-coded with ``part_colours``)."""
    path = Path(path)
    try:
        array = np.load(path) if path.suffix == ".npy" else np.asarray(Image.open(path))
    except Exception as error:  # noqa: BLE001 - PIL raises many types for unreadable files
        raise SceneError(f"{path}: cannot read the part mask ({error})") from error
    if part_colours:
        if array.ndim != 3:
            raise SceneError(f"{path}: part_colours given but the mask is not a colour image (shape {array.shape})")
        palette = np.array([[int(c.lstrip("#")[i : i + 2], 16) for i in (0, 2, 4)] for c in part_colours])
        diff = np.abs(array[..., None, :3].astype(np.int32) - palette[None, None]).max(-1)  # [H, W, P]
        ids = np.where(diff.min(-1) <= tolerance, diff.argmin(-1) + 1, 0)
    else:
        if array.ndim == 3:
            if not (np.all(array[..., :3] == array[..., :1])):
                raise SceneError(f"{path}: colour mask but no part_colours given (give --part-colours, or grey ids)")
            array = array[..., 0]
        ids = array
    return torch.from_numpy(np.ascontiguousarray(ids).astype(np.int64))


def read_part_names(mask_dir: Path) -> list[str]:
    """Part names from ``mask_dir/parts.json`` (a list, name of part p at p − 1); [] when absent."""
    path = Path(mask_dir) / PART_NAMES_FILE
    if not path.is_file():
        return []
    names = json.loads(path.read_text())
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise SceneError(f"{path}: expected a JSON list of part names")
    return names


def resolve_part(part: str, names: list[str], n_parts: int) -> int:
    """Part id 1..P from an id (``"2"``) or a name in ``names``."""
    if part.isdigit():
        pid = int(part)
    elif part in names:
        pid = names.index(part) + 1
    else:
        raise ConfigError(f"part '{part}' is neither an id in 1..{n_parts} nor one of the part names {names}")
    if not 1 <= pid <= n_parts:
        raise ConfigError(f"part id {pid} is not in 1..{n_parts}")
    return pid


class Segmenter:
    """A TorchScript part-segmentation network from disk (see the module docstring)."""

    def __init__(self, path: Path | None):
        if path is None or not Path(path).is_file():
            raise InputNotFoundError(
                "romap needs 2D part masks: give --pipeline.datamanager.masks.mask-dir DIR (one id or colour image per "
                "training image) or --pipeline.datamanager.masks.segmenter FILE (a TorchScript network [1,3,H,W] -> "
                f"[1,P+1,H,W] logits){'' if path is None else f'; {path} does not exist'}"
            )
        self.path = Path(path)
        self.net = torch.jit.load(str(path), map_location="cpu").eval()

    @torch.no_grad()
    def __call__(self, image: Tensor) -> Tensor:  # [H, W, 3] in [0, 1] -> [H, W] int64
        logits = self.net(image.permute(2, 0, 1)[None].float())
        if logits.dim() != 4 or logits.shape[-2:] != image.shape[:2]:
            raise CheckpointError(f"{self.path}: expected logits [1, P+1, {image.shape[0]}, {image.shape[1]}], got {list(logits.shape)}")
        return logits[0].argmax(0).long()

    def n_parts(self, image: Tensor) -> int:
        with torch.no_grad():
            return int(self.net(image.permute(2, 0, 1)[None].float()).shape[1]) - 1


def part_palette(n_parts: int) -> Tensor:  # -> [P, 3] in [0, 1]
    """Distinct colours for parts 1..P (the viewer's ``part_labels``): evenly spaced hues."""
    import colorsys

    return torch.tensor([colorsys.hsv_to_rgb(i / max(n_parts, 1), 0.85, 0.95) for i in range(n_parts)], dtype=torch.float32)


def corrupt_part_masks(
    part_ids: Tensor,  # [C, H, W] int64
    n_parts: int,
    generator: torch.Generator,
    max_shift: int = 2,
    blobs: int = 3,
    blob_radius: float = 0.12,
    drop_prob: float = 0.15,
) -> Tensor:  # [C, H, W] int64
    """Noisy, view-inconsistent masks: per view an integer shift of up to ``max_shift`` px, ``blobs`` discs
    (radius ``blob_radius`` of the image side) relabelled to a random id in 0..P, and each part dropped
    to background with probability ``drop_prob``, all drawn independently per view."""
    c, h, w = part_ids.shape
    out = part_ids.clone()
    yy, xx = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    for i in range(c):
        dy, dx = (torch.randint(-max_shift, max_shift + 1, (2,), generator=generator)).tolist()
        view = torch.roll(part_ids[i], shifts=(dy, dx), dims=(0, 1))
        for p in range(1, n_parts + 1):
            if torch.rand((), generator=generator) < drop_prob:
                view = torch.where(view == p, 0, view)
        for _ in range(blobs):
            cy, cx = float(torch.rand((), generator=generator)) * h, float(torch.rand((), generator=generator)) * w
            disc = (yy - cy) ** 2 + (xx - cx) ** 2 < (blob_radius * min(h, w)) ** 2
            view = torch.where(disc, int(torch.randint(0, n_parts + 1, (), generator=generator)), view)
        out[i] = view
    return out

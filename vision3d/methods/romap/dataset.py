"""romap's data: nerfstudio's full-image datamanager whose training images carry part masks (and edit targets).

Each training batch gets ``part_ids`` [H, W] int64 (see :mod:`.masks` for the sources) and, when
``target_dir`` is given, ``target_image`` [H, W, 3] float in [0, 1]: the user's edited image of that
view, the anchor of the masked L1 when no SLaMP model is present. nerfstudio caches both once per
image. The number of parts and their names go to the model through the dataset metadata
(``romap_n_parts``, ``romap_part_names``). With lens distortion, both follow nerfstudio's undistortion of the
image (:mod:`vision3d.data.lens`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from nerfstudio.data.datamanagers.full_images_datamanager import (
    FullImageDatamanager,
    FullImageDatamanagerConfig,
)
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.datasets.base_dataset import InputDataset
from PIL import Image

from vision3d.data.lens import UndistortedPixelMaps

from .masks import MASK_DIR_NAME, PartMaskConfig, Segmenter, find_mask_file, read_part_ids, read_part_names


def resize_part_ids(ids: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Nearest-neighbour resize of an id image [H, W] to ``size`` (downscaled images, renders)."""
    if tuple(ids.shape) == size:
        return ids
    return F.interpolate(ids[None, None].float(), size=size, mode="nearest")[0, 0].long()


class PartMaskDataset(InputDataset):
    """Images plus their part masks and, optionally, edited target images."""

    def __init__(self, dataparser_outputs: DataparserOutputs, scale_factor: float = 1.0,
                 masks: PartMaskConfig | None = None, data_root: Path | None = None, target_dir: Path | None = None):
        super().__init__(dataparser_outputs, scale_factor)
        masks = masks or PartMaskConfig()
        self.masks = masks
        self.target_dir = target_dir
        mask_dir = masks.mask_dir
        if mask_dir is None and data_root is not None and (Path(data_root) / MASK_DIR_NAME).is_dir():
            mask_dir = Path(data_root) / MASK_DIR_NAME
        self.mask_dir = mask_dir
        self.segmenter = None if mask_dir is not None else Segmenter(masks.segmenter)
        if mask_dir is not None:
            names = read_part_names(mask_dir)
            files = [find_mask_file(mask_dir, p) for p in self.image_filenames]
            n_parts = max(int(read_part_ids(f, masks.part_colours, masks.colour_tolerance).max()) for f in files)
            n_parts = max(n_parts, len(names), len(masks.part_colours))
            self.source = f"part masks from {mask_dir}"
        else:
            names = []
            n_parts = self.segmenter.n_parts(self._image(0))
            self.source = f"part masks from the segmenter {masks.segmenter}"
        self.metadata = {**self.metadata, "romap_n_parts": n_parts, "romap_part_names": names}

    def _image(self, idx: int) -> torch.Tensor:  # [H, W, 3] float
        return torch.from_numpy(self.get_numpy_image(idx)[..., :3].astype(np.float32) / 255.0)

    def get_metadata(self, data: dict) -> dict:
        idx = data["image_idx"]
        size = tuple(data["image"].shape[:2])
        if self.mask_dir is not None:
            path = find_mask_file(self.mask_dir, self.image_filenames[idx])
            ids = read_part_ids(path, self.masks.part_colours, self.masks.colour_tolerance)
        else:
            ids = self.segmenter(self._image(idx))
        out = {"part_ids": resize_part_ids(ids, size)}
        if self.target_dir is not None:
            path = find_mask_file(self.target_dir, self.image_filenames[idx])
            target = Image.open(path).convert("RGB").resize((size[1], size[0]), Image.BILINEAR)
            out["target_image"] = torch.from_numpy(np.asarray(target).astype(np.float32) / 255.0)
        return out


@dataclass
class RomapDataManagerConfig(FullImageDatamanagerConfig):
    _target: type = field(default_factory=lambda: RomapDataManager)
    masks: PartMaskConfig = field(default_factory=PartMaskConfig)
    """where the 2D part masks come from (mask images, per-part colours, or a segmentation network)."""
    target_dir: Path | None = None
    """edited images named like the training images: the masked-L1 anchors when there is no SLaMP model."""


class RomapDataManager(UndistortedPixelMaps, FullImageDatamanager[InputDataset]):
    config: RomapDataManagerConfig
    pixel_map_keys = ("part_ids", "target_image")

    def create_train_dataset(self) -> PartMaskDataset:
        dataset = PartMaskDataset(
            self.train_dataparser_outputs, self.config.camera_res_scale_factor, self.config.masks,
            self.config.dataparser.data, self.config.target_dir,
        )  # fmt: skip
        from nerfstudio.utils.rich_utils import CONSOLE

        CONSOLE.log(f"romap: {dataset.metadata['romap_n_parts']} parts, {dataset.source}")
        return dataset

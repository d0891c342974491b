"""det-gs's data: nerfstudio's full-image datamanager whose training images carry a depth prior.

nerfstudio's own ``DepthDataset`` runs ZoeDepth from torch.hub when a dataset has no depth files, which
downloads weights at run time; ours never downloads. The prior comes from
:class:`vision3d.methods.det_gs.depth_priors.DepthPriorProvider` (dataset depth files, an on-disk
network, or the monocular-like prior made from ground-truth depth) and enters each training batch as
``depth_prior`` [H, W] float32, ``depth_prior_valid`` [H, W] bool and ``depth_prior_kind``
("depth" or "disparity"). nerfstudio caches it once per image. Held-out images carry no prior.

Cameras with lens distortion: the prior, made from the distorted file, follows nerfstudio's undistortion of the
image (:mod:`vision3d.data.lens`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nerfstudio.data.datamanagers.full_images_datamanager import (
    FullImageDatamanager,
    FullImageDatamanagerConfig,
)
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.datasets.base_dataset import InputDataset

from vision3d.data.lens import UndistortedPixelMaps
from vision3d.methods.det_gs.depth_priors import DepthPriorConfig, DepthPriorProvider


class DepthPriorDataset(InputDataset):
    """Images plus det-gs's depth prior for each."""

    exclude_batch_keys_from_device = InputDataset.exclude_batch_keys_from_device + [
        "depth_prior", "depth_prior_valid", "depth_prior_kind",
    ]

    def __init__(self, dataparser_outputs: DataparserOutputs, scale_factor: float = 1.0,
                 prior_config: DepthPriorConfig | None = None):
        super().__init__(dataparser_outputs, scale_factor)
        depth_paths = dataparser_outputs.metadata.get("depth_filenames") or [None] * len(self)
        cameras = dataparser_outputs.cameras
        sizes = [(int(h), int(w)) for h, w in zip(cameras.height.flatten(), cameras.width.flatten(), strict=True)]
        self.provider = DepthPriorProvider(
            prior_config or DepthPriorConfig(), depth_paths, sizes,
            dataparser_outputs.metadata.get("depth_unit_scale_factor", 1e-3),
        )

    def get_metadata(self, data: dict) -> dict:
        image = data["image"][..., :3]
        image = image.float() / 255.0 if not image.dtype.is_floating_point else image
        prior = self.provider(data["image_idx"], image)
        if prior is None:
            return {}
        return {"depth_prior": prior.values, "depth_prior_valid": prior.valid, "depth_prior_kind": prior.kind}


@dataclass
class DetGSDataManagerConfig(FullImageDatamanagerConfig):
    _target: type = field(default_factory=lambda: DetGSDataManager)
    depth_prior: DepthPriorConfig = field(default_factory=DepthPriorConfig)
    """Where L_depth's prior comes from: dataset depth files, an on-disk network, or monocular-like from GT."""


class DetGSDataManager(UndistortedPixelMaps, FullImageDatamanager[InputDataset]):
    config: DetGSDataManagerConfig
    pixel_map_keys = ("depth_prior", "depth_prior_valid")

    def create_train_dataset(self) -> DepthPriorDataset:
        dataset = DepthPriorDataset(
            self.train_dataparser_outputs, self.config.camera_res_scale_factor, self.config.depth_prior
        )
        from nerfstudio.utils.rich_utils import CONSOLE

        CONSOLE.log(dataset.provider.describe())
        return dataset

"""det-gs's data: nerfstudio's full-image datamanager whose training images carry a depth prior.

nerfstudio's own ``DepthDataset`` runs ZoeDepth from torch.hub when a dataset has no depth files, which
downloads weights at run time; ours never downloads. The prior comes from
:class:`vision3d.methods.det_gs.depth_priors.DepthPriorProvider` (dataset depth files, an on-disk
network, or the monocular-like prior made from ground-truth depth) and enters each training batch as
``depth_prior`` [H, W] float32, ``depth_prior_valid`` [H, W] bool and ``depth_prior_kind``
("depth" or "disparity"). nerfstudio caches it once per image. Held-out images carry no prior.

Cameras with lens distortion: nerfstudio undistorts each cached image onto a new K (cropped to its valid region)
but not the rest of the batch, so the prior, made from the distorted file, is resampled onto the same pixels
(:func:`undistort_prior`) after nerfstudio's caching.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.data.datamanagers.full_images_datamanager import (
    FullImageDatamanager,
    FullImageDatamanagerConfig,
)
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.datasets.base_dataset import InputDataset

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


class DetGSDataManager(FullImageDatamanager[InputDataset]):
    config: DetGSDataManagerConfig

    def create_train_dataset(self) -> DepthPriorDataset:
        dataset = DepthPriorDataset(
            self.train_dataparser_outputs, self.config.camera_res_scale_factor, self.config.depth_prior
        )
        from nerfstudio.utils.rich_utils import CONSOLE

        CONSOLE.log(dataset.provider.describe())
        return dataset

    def _load_images(self, split, cache_images_device):  # noqa: ANN001, ANN202
        """nerfstudio's caching and undistortion, then each depth prior onto its undistorted image's pixels."""
        dataset = self.train_dataset if split == "train" else self.eval_dataset
        distorted = copy.deepcopy(dataset.cameras)  # nerfstudio overwrites K and the size in place
        cached = super()._load_images(split, cache_images_device)
        for index, data in enumerate(cached):
            if "depth_prior" in data:
                data["depth_prior"], data["depth_prior_valid"] = undistort_prior(
                    data["depth_prior"], data["depth_prior_valid"], distorted[index], dataset.cameras[index].to("cpu"))
        return cached


def undistort_prior(values: torch.Tensor, valid: torch.Tensor, distorted: Cameras, undistorted: Cameras
                    ) -> tuple[torch.Tensor, torch.Tensor]:
    """A prior ``values [H, W]`` with ``valid [H, W]`` on the pixels of the ``distorted`` camera (a lens with
    nerfstudio's k1 k2 k3 k4 p1 p2) resampled onto those of the pinhole ``undistorted`` one (its own K and size):
    each new pixel's ray is projected through the lens; nearest pixel, so depths are not blended across edges,
    and not valid where the ray leaves the distorted image. Unchanged when the camera has no distortion."""
    params = distorted.distortion_params
    if params is None or not bool((params != 0).any()):
        return values, valid
    k1, k2, k3, _, p1, p2 = (float(v) for v in params.reshape(-1))
    height, width = int(undistorted.height), int(undistorted.width)
    K_new = undistorted.get_intrinsics_matrices().reshape(3, 3).double().numpy()  # noqa: N806
    K_old = distorted.get_intrinsics_matrices().reshape(3, 3).double().numpy().copy()  # noqa: N806
    rows, cols = np.meshgrid(np.arange(height) + 0.5, np.arange(width) + 0.5, indexing="ij")
    rays = np.stack([(cols - K_new[0, 2]) / K_new[0, 0], (rows - K_new[1, 2]) / K_new[1, 1], np.ones_like(cols)], -1)
    K_old[:2, 2] -= 0.5  # OpenCV's pixel centres are at integers  # noqa: N806
    source, _ = cv2.projectPoints(rays.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K_old, np.array([k1, k2, p1, p2, k3]))
    map_x, map_y = (source.reshape(height, width, 2)[..., i].astype(np.float32) for i in range(2))
    old_h, old_w = values.shape
    inside = (map_x > -0.5) & (map_x < old_w - 0.5) & (map_y > -0.5) & (map_y < old_h - 0.5)

    def remap(array: np.ndarray) -> np.ndarray:
        return cv2.remap(array, map_x, map_y, cv2.INTER_NEAREST, borderMode=cv2.BORDER_CONSTANT, borderValue=0)

    new_values = torch.from_numpy(remap(values.float().numpy())).to(values.dtype)
    new_valid = torch.from_numpy(remap(valid.numpy().astype(np.uint8)) > 0) & torch.from_numpy(inside)
    return new_values, new_valid

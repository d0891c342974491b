"""nerfstudio dataparser ``ir-nerf-data``: a folder of images without poses, or a nerfstudio scene whose
poses are kept only for evaluation.

The images, resized to the method's working size (:mod:`~vision3d.methods.ir_nerf.data`), travel to the
model in ``metadata`` (``ir_nerf_images``, ``ir_nerf_K``, ``ir_nerf_gt_c2w``, ...): IR-NeRF trains on whole
images and patches, not on nerfstudio's ray batches. The ``Cameras`` it returns carry the files' intrinsics
and placeholder poses (every camera at the prior's default distance on the -Y axis, looking at the
origin): nerfstudio needs poses to build its datasets, and none are known. Train and eval splits hold the
same images (pose-free training has no held-out view of known pose).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.dataparsers.base_dataparser import DataParser, DataParserConfig, DataparserOutputs
from nerfstudio.data.scene_box import SceneBox

from vision3d.geometry.se3 import opencv_to_opengl
from vision3d.methods.ir_nerf.data import load_unposed
from vision3d.methods.ir_nerf.pose_prior import look_at


@dataclass
class IRNeRFDataParserConfig(DataParserConfig):
    _target: type = field(default_factory=lambda: IRNeRFDataParser)
    data: Path = Path()
    """A folder of images (or with an ``images/`` subfolder), or a nerfstudio scene folder / its transforms.json."""
    image_size: int = 32
    """Working resolution (square, pixels): images are centre-cropped and resized to it."""
    fov_deg: float = 50.0
    """Horizontal field of view assumed for a folder of images without transforms.json."""
    views: tuple[int, ...] = ()
    """Train on these images only (indices into the scene's frames, or into the sorted image files); empty: all.
    E.g. a forward-facing arc of a 360° orbit (docs/ir-nerf.md, "A forward-facing arc of the bundled orbit")."""
    scene_bound: float = 1.5
    """Half-size of the scene box shown in the viewer (the field's own bound is ``field.bound``)."""


class IRNeRFDataParser(DataParser):
    config: IRNeRFDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train") -> DataparserOutputs:
        data = load_unposed(self.config.data, self.config.image_size, self.config.fov_deg, self.config.views)
        n = len(data.paths)
        K = data.original_K  # noqa: N806
        placeholder = look_at(torch.tensor([[0.0, -4.0, 0.0]]), torch.zeros(1, 3)).expand(n, 4, 4)
        cameras = Cameras(
            camera_to_worlds=opencv_to_opengl(placeholder)[:, :3, :4].contiguous(),
            fx=float(K[0, 0]), fy=float(K[1, 1]), cx=float(K[0, 2]), cy=float(K[1, 2]),
            width=data.original_size[0], height=data.original_size[1], camera_type=CameraType.PERSPECTIVE,
        )
        b = self.config.scene_bound
        return DataparserOutputs(
            image_filenames=list(data.paths),
            cameras=cameras,
            scene_box=SceneBox(aabb=torch.tensor([[-b, -b, -b], [b, b, b]], dtype=torch.float32)),
            metadata={"ir_nerf_images": data.images, "ir_nerf_K": data.K, "ir_nerf_gt_c2w": data.gt_c2w,
                      "ir_nerf_original_K": data.original_K, "ir_nerf_original_size": data.original_size,
                      "ir_nerf_paths": list(data.paths), "ir_nerf_lens": data.lens},
        )


def _specification():
    from nerfstudio.plugins.registry_dataparser import DataParserSpecification

    return DataParserSpecification(config=IRNeRFDataParserConfig(),
                                   description="unposed images for ir-nerf (a folder, or a scene whose poses are used only for evaluation)")


ir_nerf_data = _specification()

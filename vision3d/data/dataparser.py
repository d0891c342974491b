"""nerfstudio dataparser ``vision3d-data``: nerfstudio's own, plus validation, sparse-view splits and GT handles.

It reads the same ``transforms.json`` as nerfstudio's ``nerfstudio-data`` parser (so users' captures work
the same) and adds what evaluation on our rendered scenes needs:

- every file is validated first (:func:`vision3d.data.scene.load_scene`), so a bad scene fails with a
  message naming the file instead of a stack trace in the middle of training;
- ``num_train_views`` / ``split_seed``: a sparse-view protocol (N training views drawn with a fixed seed,
  the rest held out), the split used by det-gs's sparse presets;
- ``metadata["mesh_file_path"]`` (the ground-truth mesh, in the scene's original world frame: apply
  ``dataparser_transform`` and ``dataparser_scale`` to compare) and ``metadata["split_indices"]``
  (indices into the sorted frame list);
- seed points (``ply_file_path``, read by nerfstudio as ``points3D_xyz``/``points3D_rgb``) seen only
  through the split's own views when the scene has depth maps (``seed_points_from_split``): our rendered
  scenes' ``sparse_pc.ply`` is written from every view (:mod:`vision3d.data.sparse_points`), and a
  training split must not get points or colours that only held-out views see;
- ``metadata["camera_centre"]`` ([3], the mean camera position) and ``metadata["camera_extent"]`` (the
  largest coordinate of a centred camera position, nerfstudio's auto-scale measure) over **every** frame
  in the output frame: the splat model's length unit (1 and the origin in nerfstudio's default frame).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from nerfstudio.data.dataparsers.base_dataparser import DataparserOutputs
from nerfstudio.data.dataparsers.nerfstudio_dataparser import Nerfstudio, NerfstudioDataParserConfig

from vision3d.data.scene import load_scene, sparse_view_split
from vision3d.geometry.se3 import opengl_to_opencv


@dataclass
class Vision3DDataParserConfig(NerfstudioDataParserConfig):
    """nerfstudio-data with validation and sparse-view splits."""

    _target: type = field(default_factory=lambda: Vision3DDataParser)
    num_train_views: int | None = None
    """Train on this many views drawn with ``split_seed``; hold out the rest. None: nerfstudio's eval_mode."""
    split_seed: int = 0
    """Seed of the sparse-view draw (same seed, same views, across methods)."""
    num_test_views: int | None = None
    """With num_train_views: evaluate on at most this many of the held-out views (None: all of them)."""
    check_images: bool = True
    """Open every image header before training (catches missing, corrupt and mis-sized images early)."""
    seed_points_from_split: bool = True
    """With seed points and depth maps: keep the points that ``seed_points_min_views`` of the split's views
    see (depth test) and colour them from those views only, so held-out views leak nothing into the seeds.
    Scenes without depth maps (COLMAP captures) keep their points as they are."""
    seed_points_min_views: int = 2
    """How many of the split's views must see a seed point (2: a point two views could triangulate)."""


class Vision3DDataParser(Nerfstudio):
    config: Vision3DDataParserConfig

    def _generate_dataparser_outputs(self, split: str = "train") -> DataparserOutputs:
        scene = load_scene(self.config.data, check_images=self.config.check_images)
        # Let nerfstudio orient and scale with every pose (as it does for its own splits), then subset.
        eval_mode = self.config.eval_mode
        self.config.eval_mode = "all"
        try:
            everything = super()._generate_dataparser_outputs("train")
        finally:
            self.config.eval_mode = eval_mode
        if self.config.num_train_views is None:
            outputs = super()._generate_dataparser_outputs(split)
            outputs.metadata["mesh_file_path"] = scene.mesh_path
        else:
            train, test = sparse_view_split(
                len(everything.image_filenames), self.config.num_train_views, self.config.split_seed,
                self.config.num_test_views,
            )
            outputs = _subset(everything, train if split == "train" else test, scene.mesh_path)
        centre, extent = camera_centre_and_extent(everything.cameras.camera_to_worlds)
        outputs.metadata["camera_centre"], outputs.metadata["camera_extent"] = centre, extent
        return self._seed_points_from_split(outputs)

    def _seed_points_from_split(self, outputs: DataparserOutputs) -> DataparserOutputs:
        """Seed points that the split's views see, coloured from them (see ``seed_points_from_split``)."""
        metadata = outputs.metadata
        depth_files = metadata.get("depth_filenames")
        if not self.config.seed_points_from_split or metadata.get("points3D_xyz") is None or not depth_files:
            return outputs
        keep, rgb, _ = _points_seen_by(outputs, metadata["points3D_xyz"].numpy(), self.config.seed_points_min_views)
        metadata["points3D_xyz"] = metadata["points3D_xyz"][torch.from_numpy(keep)]
        metadata["points3D_rgb"] = torch.from_numpy(rgb[keep])
        return outputs


def camera_centre_and_extent(camera_to_worlds: torch.Tensor) -> tuple[list[float], float]:
    """Mean camera position [3] and the largest |coordinate| of a camera position about it, from c2w [N, 3, 4].

    The extent is nerfstudio's auto-scale measure (``max |centred position|``, per coordinate), so in its
    default frame it is 1 and the centre the origin; both are rounded to a millionth of the extent (6 digits), where
    float32 rounding of the parser's own centring would otherwise leave them off by ~1e-8.
    """
    positions = camera_to_worlds[:, :3, 3].double()
    centre = positions.mean(dim=0)
    extent = float(f"{float((positions - centre).abs().max()):.6g}") or 1.0  # cameras at one point: no unit
    return [round(float(c) / extent, 6) * extent for c in centre], extent


def _points_seen_by(outputs: DataparserOutputs, points: np.ndarray, min_views: int):
    """:func:`vision3d.data.sparse_points.visible_points` for the views of ``outputs`` (dataparser frame)."""
    from PIL import Image

    from vision3d.data.scene import read_depth
    from vision3d.data.sparse_points import visible_points

    unit = outputs.metadata.get("depth_unit_scale_factor", 1e-3) * outputs.dataparser_scale
    depths = np.stack([read_depth(p, unit) for p in outputs.metadata["depth_filenames"]])
    height, width = depths.shape[1:]
    images = []
    for path in outputs.image_filenames:
        with Image.open(path) as im:
            images.append(np.asarray(im.convert("RGB").resize((width, height), Image.BILINEAR)))
    cameras = outputs.cameras
    Ks = cameras.get_intrinsics_matrices().numpy().astype(np.float64)  # noqa: N806
    Ks[:, 0] *= width / cameras.width.numpy()  # to the depth maps' resolution
    Ks[:, 1] *= height / cameras.height.numpy()
    c2w = np.tile(np.eye(4), (len(cameras), 1, 1))
    c2w[:, :3, :4] = cameras.camera_to_worlds.numpy()
    world_to_cams = np.linalg.inv(opengl_to_opencv(c2w))
    return visible_points(points, world_to_cams, Ks, depths, np.stack(images), min_views=min_views)


def _subset(outputs: DataparserOutputs, indices: np.ndarray, mesh_path: Path | None) -> DataparserOutputs:
    idx = torch.as_tensor(indices, dtype=torch.long)
    metadata = dict(outputs.metadata)
    if metadata.get("depth_filenames") is not None:
        metadata["depth_filenames"] = [metadata["depth_filenames"][i] for i in indices]
    metadata["mesh_file_path"] = mesh_path
    metadata["split_indices"] = indices.tolist()
    return DataparserOutputs(
        image_filenames=[outputs.image_filenames[i] for i in indices],
        cameras=outputs.cameras[idx],
        alpha_color=outputs.alpha_color,
        scene_box=outputs.scene_box,
        mask_filenames=[outputs.mask_filenames[i] for i in indices] if outputs.mask_filenames else None,
        dataparser_transform=outputs.dataparser_transform,
        dataparser_scale=outputs.dataparser_scale,
        metadata=metadata,
    )


def _specification():
    from nerfstudio.plugins.registry_dataparser import DataParserSpecification

    return DataParserSpecification(
        config=Vision3DDataParserConfig(),
        description="nerfstudio-data plus validation, sparse-view splits (num_train_views) and GT mesh/depth handles",
    )


vision3d_data = _specification()

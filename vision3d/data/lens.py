"""Lens distortion (OpenCV's radial/tangential model, nerfstudio's k1 k2 k3 k4 p1 p2): resampling between a
distorted camera's pixels and a pinhole camera's.

nerfstudio's ``FullImageDatamanager`` undistorts each cached image of a camera with lens distortion onto a new K,
cropped to its valid region, and rewrites the dataset's K and size; the other per-pixel entries of the batch,
read from files made for the distorted image, stay on its pixels. :class:`UndistortedPixelMaps` resamples them
onto the undistorted image's pixels after nerfstudio's caching. :func:`apply_lens` goes the other way, for
benchmarks: a rendered pinhole scene as a camera with a lens would have taken it.
"""

from __future__ import annotations

import copy
import json
import shutil
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from nerfstudio.cameras.camera_utils import radial_and_tangential_undistort
from nerfstudio.cameras.cameras import Cameras, CameraType

from vision3d.errors import Vision3DError
from vision3d.geometry.camera import pixel_grid, unit_depth_rays


def without_lens(cameras: Cameras) -> Cameras:
    """The same cameras as pinhole ones (the distortion dropped; the other fields shared, not copied)."""
    pinhole = copy.copy(cameras)
    pinhole.distortion_params = None
    return pinhole


def undistorted_rays(pixels: torch.Tensor, intrinsics: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Normalised pinhole rays ``[..., 2]`` (x/z, y/z) of ``pixels [..., 2]`` (x, y; pixel centres at +0.5) of cameras
    with ``intrinsics [..., 4]`` (fx, fy, cx, cy) and ``lens [..., 6]`` (k1 k2 k3 k4 p1 p2; both may be one camera's,
    shape [4] and [6]): the lens undone by nerfstudio's iterative inversion, so that each ray is the one nerfstudio
    casts through that pixel."""
    intrinsics = intrinsics.to(pixels)
    return radial_and_tangential_undistort((pixels - intrinsics[..., 2:]) / intrinsics[..., :2], lens.to(pixels))


def resample_to_undistorted(array: torch.Tensor, distorted: Cameras, undistorted: Cameras,
                            interpolation: int = cv2.INTER_NEAREST) -> tuple[torch.Tensor, torch.Tensor]:
    """``array [H, W, ...]`` on the pixels of the ``distorted`` camera (nerfstudio's k1 k2 k3 k4 p1 p2) resampled
    onto those of the pinhole ``undistorted`` one (its own K and size): each new pixel's ray is projected through
    the lens and read there (``interpolation``: OpenCV's; nearest by default, so depths are not blended across
    edges nor part ids mixed). Returns the array (edge values where the ray leaves the distorted image) and the
    ``inside [h, w]`` mask of pixels whose ray lands in it. Unchanged without distortion; other lens models (fisheye)
    are refused."""
    params = distorted.distortion_params
    if params is None or not bool((params != 0).any()):
        return array, torch.ones(array.shape[:2], dtype=torch.bool)
    if int(distorted.camera_type.reshape(-1)[0]) != CameraType.PERSPECTIVE.value:
        raise Vision3DError(f"{CameraType(int(distorted.camera_type.reshape(-1)[0])).name.lower()} camera: per-pixel data "
                            "(depth priors, part masks, edit targets) follow only OpenCV's radial-tangential lens; "
                            "undistort the images and those files first")
    k1, k2, k3, _, p1, p2 = (float(v) for v in params.reshape(-1))
    height, width = int(undistorted.height), int(undistorted.width)
    K_new = undistorted.get_intrinsics_matrices().reshape(3, 3).double().numpy()  # noqa: N806
    K_old = distorted.get_intrinsics_matrices().reshape(3, 3).double().numpy().copy()  # noqa: N806
    K_old[:2, 2] -= 0.5  # OpenCV's pixel centres are at integers, nerfstudio's at +0.5
    pixels = pixel_grid(height, width, dtype=torch.float64).reshape(1, -1, 2)
    rays = unit_depth_rays(pixels, torch.from_numpy(K_new)[None]).numpy()
    source, _ = cv2.projectPoints(rays.reshape(-1, 1, 3), np.zeros(3), np.zeros(3), K_old, np.array([k1, k2, p1, p2, k3]))
    map_x, map_y = (source.reshape(height, width, 2)[..., i].astype(np.float32) for i in range(2))
    old_h, old_w = array.shape[:2]
    inside = (map_x > -0.5) & (map_x < old_w - 0.5) & (map_y > -0.5) & (map_y < old_h - 0.5)
    values = array.numpy()
    as_cv = values.astype(np.float32) if values.dtype in (np.int64, np.bool_) else values  # remap has no int64 / bool
    out = cv2.remap(as_cv, map_x, map_y, interpolation, borderMode=cv2.BORDER_REPLICATE)
    return torch.from_numpy(out.reshape((height, width, *values.shape[2:])).astype(values.dtype)), torch.from_numpy(inside)


class UndistortedPixelMaps:
    """Mixin for a ``FullImageDatamanager`` subclass whose datasets add per-pixel entries ``pixel_map_keys`` to the
    batch: after nerfstudio's caching and undistortion, each is resampled onto its undistorted image's pixels
    (:func:`resample_to_undistorted`; boolean entries are False where the ray leaves the distorted image)."""

    pixel_map_keys: tuple[str, ...] = ()

    def _load_images(self, split, cache_images_device):  # noqa: ANN001, ANN202
        dataset = self.train_dataset if split == "train" else self.eval_dataset
        distorted = copy.deepcopy(dataset.cameras)  # nerfstudio overwrites K and the size in place
        cached = super()._load_images(split, cache_images_device)
        for index, data in enumerate(cached):
            for key in self.pixel_map_keys:
                if key in data:
                    values, inside = resample_to_undistorted(data[key], distorted[index], dataset.cameras[index].to("cpu"))
                    data[key] = values & inside if values.dtype == torch.bool else values
        return cached


def apply_lens(scene: Path, out: Path, lens: Sequence[float]) -> Path:
    """A copy in ``out`` of the rendered pinhole ``scene`` (one camera, intrinsics at the top of transforms.json) as
    a camera with ``lens`` (k1 k2 k3 k4 p1 p2) would have taken it: each pixel takes the pinhole image's colour
    where its undistorted ray lands (linear; edge colours where that is outside), and the lens goes into
    transforms.json. The ground-truth meshes are copied; the depth, normal and flow maps and the seed points, which
    are pinhole, are left out. Returns ``out``."""
    scene, out = Path(scene), Path(out)
    meta = json.loads((scene / "transforms.json").read_text())
    fx, fy, cx, cy, width, height = (meta[k] for k in ("fl_x", "fl_y", "cx", "cy", "w", "h"))
    pixels = pixel_grid(height, width, dtype=torch.float64)
    rays = undistorted_rays(pixels, torch.tensor([fx, fy, cx, cy]), torch.tensor(list(lens))).numpy()
    map_x = (rays[..., 0] * fx + cx - 0.5).astype(np.float32)  # OpenCV's pixel centres are at integers
    map_y = (rays[..., 1] * fy + cy - 0.5).astype(np.float32)
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    for frame in meta["frames"]:
        image = cv2.imread(str(scene / frame["file_path"]), cv2.IMREAD_UNCHANGED)
        (out / frame["file_path"]).parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(out / frame["file_path"]), cv2.remap(image, map_x, map_y, cv2.INTER_LINEAR,
                                                             borderMode=cv2.BORDER_REPLICATE))
        for key in ("depth_file_path", "normal_file_path", "flow_file_path"):
            frame.pop(key, None)
    k1, k2, k3, k4, p1, p2 = (float(v) for v in lens)
    meta.update(camera_model="OPENCV", k1=k1, k2=k2, k3=k3, k4=k4, p1=p1, p2=p2)
    for key in ("ply_file_path", "sparse_points"):
        meta.pop(key, None)
    for key in ("mesh_file_path", "object_mesh_file_path"):
        if key in meta:
            shutil.copy(scene / meta[key], out / meta[key])
    (out / "transforms.json").write_text(json.dumps(meta, indent=1))
    return out

"""Real images for IR-NeRF: a folder of images (no poses), or a nerfstudio scene whose poses are kept only
for evaluation. Images are centre-cropped to a square and resized to the working size (the codebook's
token grid and P's CNN want a square power-of-two image); intrinsics follow the crop and resize.
Without ``transforms.json`` the focal length comes from an assumed horizontal field of view (GNeRF, like
IR-NeRF, assumes known intrinsics), the principal point is the image centre. A scene's lens distortion is not
modelled (at the working size of 32-64 px it moves pixels by a fraction of one) but is carried to the
``transforms.json`` that a run writes, whose images are the same files.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from vision3d.data.scene import IMAGE_SUFFIXES, load_scene, read_image
from vision3d.errors import Vision3DError


@dataclass
class UnposedImages:
    images: Tensor  # [N, 3, S, S] in [0, 1]
    K: Tensor  # [3, 3] at S×S pixels  # noqa: N815
    paths: list[Path]
    gt_c2w: Tensor | None  # [N, 4, 4] camera-to-world, OpenCV axes, the scene's own frame; None without poses
    original_size: tuple[int, int]  # (width, height) of the files
    original_K: Tensor  # [3, 3] of the files  # noqa: N815
    lens: dict = field(default_factory=dict)  # the scene's camera_model and distortion (k1 k2 k3 k4 p1 p2), if any


def image_files(folder: Path) -> list[Path]:
    """Sorted image files of ``folder`` (or of its ``images/`` subfolder when it has one)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise Vision3DError(f"{folder}: not a folder of images")
    source = folder / "images" if (folder / "images").is_dir() else folder
    files = sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    if len(files) < 3:
        raise Vision3DError(f"{source}: needs at least 3 images ({', '.join(IMAGE_SUFFIXES)}), found {len(files)}")
    return files


def square_resize(image: np.ndarray, K: np.ndarray, size: int) -> tuple[Tensor, np.ndarray]:  # noqa: N803
    """Centre-crop ``image [H, W, 3]`` to a square, resize to ``size²``; intrinsics ``K`` follow. → ``[3, S, S]``, K."""
    h, w = image.shape[:2]
    side = min(h, w)
    y0, x0 = (h - side) // 2, (w - side) // 2
    crop = torch.from_numpy(np.ascontiguousarray(image[y0:y0 + side, x0:x0 + side])).permute(2, 0, 1)[None]
    out = F.interpolate(crop.float(), size=(size, size), mode="area")[0]
    K = K.astype(np.float64).copy()  # noqa: N806
    K[0, 2] -= x0
    K[1, 2] -= y0
    K[:2] *= size / side
    return out.clamp(0, 1), K


def select_views(count: int, views: tuple[int, ...] | None, source: Path) -> list[int]:
    """Indices of the images to use: ``views`` (indices into the scene's frame order or the sorted files), all when
    None or empty; at least 3."""
    if not views:
        return list(range(count))
    bad = [i for i in views if not 0 <= i < count]
    if bad:
        raise Vision3DError(f"{source}: view indices {bad} out of range (it has {count} images)")
    if len(set(views)) < 3:
        raise Vision3DError(f"{source}: needs at least 3 distinct views, got {list(views)}")
    return list(dict.fromkeys(views))


def _check_same_camera(frame, first, transforms_path: Path) -> None:
    """IR-NeRF (like GNeRF) shares one camera across the images, and the run's ``transforms.json`` writes one:
    a frame whose size, intrinsics or lens differ from ``first``'s is an error naming both images."""
    a, b = frame.camera, first.camera
    same = ((a.width, a.height) == (b.width, b.height) and np.allclose(a.K, b.K, rtol=1e-3)
            and frame.lens == first.lens)
    if not same:
        raise Vision3DError(
            f"{transforms_path}: IR-NeRF needs one camera for all images, but {frame.image_path.name} "
            f"({a.width}x{a.height}, fx={a.fx:g}, fy={a.fy:g}, cx={a.cx:g}, cy={a.cy:g}, lens {frame.lens or 'none'}) "
            f"differs from {first.image_path.name} ({b.width}x{b.height}, fx={b.fx:g}, fy={b.fy:g}, cx={b.cx:g}, "
            f"cy={b.cy:g}, lens {first.lens or 'none'})")


def load_unposed(data: Path, image_size: int, fov_deg: float = 50.0, views: tuple[int, ...] | None = None) -> UnposedImages:
    """Read ``data``: a nerfstudio scene (``transforms.json``: intrinsics used, poses kept as ground truth)
    or a folder of images (intrinsics from ``fov_deg``); ``views`` keeps those images only (see :func:`select_views`),
    e.g. a forward-facing arc of a 360° capture."""
    data = Path(data)
    if (data / "transforms.json").is_file() or data.name == "transforms.json":
        scene = load_scene(data)
        chosen = select_views(len(scene.frames), views, scene.transforms_path)
        first = scene.frames[chosen[0]]
        camera = first.camera
        paths, images, c2w = [], [], []
        for i in chosen:
            frame = scene.frames[i]
            _check_same_camera(frame, first, scene.transforms_path)
            image, K = square_resize(scene.load_image(i), frame.camera.K, image_size)  # noqa: N806
            paths.append(frame.image_path)
            images.append(image)
            c2w.append(np.asarray(frame.c2w_opencv, np.float64))
        return UnposedImages(torch.stack(images), torch.from_numpy(K).float(), paths,
                             torch.from_numpy(np.stack(c2w)).float(), (camera.width, camera.height),
                             torch.from_numpy(camera.K).float(), first.lens)
    paths = image_files(data)
    paths = [paths[i] for i in select_views(len(paths), views, data)]
    images, K, K_file, size = [], None, None, None  # noqa: N806
    for path in paths:
        array = read_image(path)
        if size is not None and array.shape[:2] != size:
            raise Vision3DError(f"{path}: image is {array.shape[1]}x{array.shape[0]}, the others {size[1]}x{size[0]}")
        size = array.shape[:2]
        h, w = size
        f = 0.5 * w / math.tan(math.radians(fov_deg) / 2)
        K_file = np.array([[f, 0, w / 2], [0, f, h / 2], [0, 0, 1.0]])  # noqa: N806
        image, K = square_resize(array, K_file, image_size)  # noqa: N806
        images.append(image)
    return UnposedImages(torch.stack(images), torch.from_numpy(K).float(), paths, None, (size[1], size[0]),
                         torch.from_numpy(K_file).float())

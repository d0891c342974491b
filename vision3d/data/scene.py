"""Scenes in nerfstudio's ``transforms.json`` format: validation, loading, sparse-view splits.

A scene folder holds ``transforms.json`` (nerfstudio's format: intrinsics ``fl_x, fl_y, cx, cy,
w, h`` at top level or per frame, ``frames[].file_path`` and ``frames[].transform_matrix`` as
camera-to-world in OpenGL axes) plus optional per-frame ``depth_file_path`` (16-bit PNG times
``depth_unit_scale_factor``, default 1e-3 m, or ``.npy`` in metres; planar z-depth),
``normal_file_path``, ``flow_file_path``, and a top-level ``mesh_file_path`` (ground-truth mesh in
world coordinates). Our renders and importers write exactly this; users' own captures work too.

Every problem with a file is raised as :class:`SceneError` naming the file and what is wrong, before
any training starts.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from vision3d.errors import ConfigError, Vision3DError
from vision3d.geometry.camera import PinholeCamera
from vision3d.geometry.se3 import opengl_to_opencv

INTRINSIC_KEYS = ("fl_x", "fl_y", "cx", "cy", "w", "h")
DISTORTION_KEYS = ("k1", "k2", "k3", "k4", "p1", "p2")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")


class SceneError(Vision3DError, ValueError):
    """A scene file is missing, unreadable or inconsistent. The message names the file and the problem."""


@dataclass
class Frame:
    """One view. ``c2w`` is camera-to-world [4, 4] in OpenGL axes (camera looks down -Z, +Y up); ``camera``
    holds the intrinsics and size, with ``transforms.json``'s (and nerfstudio's) pixel centres at +0.5."""

    image_path: Path
    c2w: np.ndarray  # [4, 4]
    camera: PinholeCamera
    depth_path: Path | None = None
    normal_path: Path | None = None
    flow_path: Path | None = None
    lens: dict = field(default_factory=dict)  # camera_model and the distortion coefficients given (per frame or top level)

    @property
    def c2w_opencv(self) -> np.ndarray:
        """Camera-to-world [4, 4] in OpenCV axes (x right, y down, z forward)."""
        return opengl_to_opencv(self.c2w)

    @property
    def w2c_opencv(self) -> np.ndarray:
        """World-to-camera [4, 4] in OpenCV axes, as gsplat's viewmats."""
        return np.linalg.inv(self.c2w_opencv)


@dataclass
class Scene:
    """A validated scene. Images and depths load lazily, with errors that name the file."""

    root: Path
    transforms_path: Path
    frames: list[Frame]
    depth_unit_scale_factor: float = 1e-3
    mesh_path: Path | None = None
    meta: dict = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def has_depth(self) -> bool:
        return all(f.depth_path is not None for f in self.frames)

    def load_image(self, index: int) -> np.ndarray:
        """RGB image [H, W, 3] float32 in [0, 1] (alpha composited over white if present)."""
        frame = self.frames[index]
        image = read_image(frame.image_path)
        cam = frame.camera
        if image.shape[:2] != (cam.height, cam.width):
            raise SceneError(
                f"{frame.image_path}: image is {image.shape[1]}x{image.shape[0]} but "
                f"{self.transforms_path.name} says {cam.width}x{cam.height}"
            )
        return image

    def load_depth(self, index: int) -> np.ndarray:
        """Planar depth [H, W] float32 in metres (scene units); 0 where unknown."""
        frame = self.frames[index]
        if frame.depth_path is None:
            raise SceneError(f"{self.transforms_path}: frame {index} has no depth_file_path")
        depth = read_depth(frame.depth_path, self.depth_unit_scale_factor)
        cam = frame.camera
        if depth.shape != (cam.height, cam.width):
            raise SceneError(
                f"{frame.depth_path}: depth is {depth.shape[1]}x{depth.shape[0]} but the image is "
                f"{cam.width}x{cam.height}"
            )
        return depth

    def lens_summary(self) -> str:
        """The first frame's distortion coefficients that are not zero (``k1=-0.1 p1=0.002``), or "no distortion"."""
        lens = self.frames[0].lens
        coefficients = [f"{k}={lens[k]:g}" for k in DISTORTION_KEYS if lens.get(k)]
        return " ".join(coefficients) if coefficients else "no distortion"

    def summary(self) -> str:
        f0 = self.frames[0].camera
        lines = [
            f"scene {self.root}",
            f"  views       {len(self)} at {f0.width}x{f0.height}, fx={f0.fx:.1f} fy={f0.fy:.1f}",
            f"  lens        {self.frames[0].lens.get('camera_model', 'OPENCV')}, {self.lens_summary()}",
            f"  depth       {'yes' if self.has_depth else 'no'}",
            f"  normals     {'yes' if all(f.normal_path for f in self.frames) else 'no'}",
            f"  flow        {'yes' if any(f.flow_path for f in self.frames) else 'no'}",
            f"  mesh        {self.mesh_path if self.mesh_path else 'no'}",
        ]
        centres = np.stack([f.c2w[:3, 3] for f in self.frames])
        lines.append(f"  camera span {np.ptp(centres, axis=0).round(3).tolist()} (scene units)")
        if "source" in self.meta:
            lines.append(f"  source      {self.meta['source']}")
        return "\n".join(lines)


def load_scene(path: str | Path, check_images: bool = True) -> Scene:
    """Read and validate a scene folder (or its ``transforms.json``).

    Args:
        path: the scene folder or the json file.
        check_images: also open every image header (and verify PNG checksums) and compare sizes.
    Raises:
        SceneError: naming the file and the problem (missing, malformed, non-invertible pose, size mismatch).
    """
    path = Path(path)
    transforms_path = path if path.suffix == ".json" else path / "transforms.json"
    root = transforms_path.parent
    if not transforms_path.is_file():
        raise SceneError(f"{transforms_path}: no such file (a scene folder needs a nerfstudio transforms.json){_unposed_hint(root)}")
    meta = _read_json(transforms_path)
    frames_meta = meta.get("frames")
    if not isinstance(frames_meta, list) or not frames_meta:
        raise SceneError(f"{transforms_path}: needs a non-empty list 'frames'")

    frames = [_parse_frame(meta, frame, i, root, transforms_path) for i, frame in enumerate(frames_meta)]
    n_depth = sum(f.depth_path is not None for f in frames)
    if 0 < n_depth < len(frames):
        raise SceneError(
            f"{transforms_path}: depth_file_path is given for {n_depth} of {len(frames)} frames; give it for all or none"
        )
    mesh_path = None
    if "mesh_file_path" in meta:
        mesh_path = _resolve(root, meta["mesh_file_path"], transforms_path, "mesh_file_path")
    scene = Scene(
        root=root,
        transforms_path=transforms_path,
        frames=frames,
        depth_unit_scale_factor=float(meta.get("depth_unit_scale_factor", 1e-3)),
        mesh_path=mesh_path,
        meta={k: v for k, v in meta.items() if k != "frames"},
    )
    if check_images:
        for frame in frames:
            _check_image_header(frame)
    return scene


def sparse_view_split(n_frames: int, n_train: int, seed: int = 0, n_test: int | None = None):
    """Indices of ``n_train`` training views drawn with a fixed seed; the others (or ``n_test`` of them) held out.

    The training views are drawn uniformly without replacement by ``numpy.random.default_rng(seed)``
    so a protocol (3, 6, 9 views) is reproducible across methods and runs.

    Returns:
        (train [n_train], test [n_test or n_frames - n_train]) sorted int arrays.
    """
    if not 1 <= n_train < n_frames:
        raise ConfigError(f"num_train_views (n_train) must be in [1, {n_frames - 1}] for a scene of {n_frames} frames, got {n_train}")
    rng = np.random.default_rng(seed)
    train = np.sort(rng.choice(n_frames, size=n_train, replace=False))
    test = np.setdiff1d(np.arange(n_frames), train)
    if n_test is not None:
        test = np.sort(rng.choice(test, size=min(n_test, len(test)), replace=False))
    return train, test


def read_depth(path: Path, depth_unit_scale_factor: float = 1e-3) -> np.ndarray:
    """Depth [H, W] float32 in metres from a 16-bit PNG (times the unit factor) or a ``.npy`` (metres)."""
    path = Path(path)
    if not path.is_file():
        raise SceneError(f"{path}: depth file not found")
    try:
        if path.suffix == ".npy":
            depth = np.load(path).astype(np.float32)
        else:
            with Image.open(path) as im:
                depth = np.asarray(im).astype(np.float32) * depth_unit_scale_factor
    except (OSError, ValueError, UnidentifiedImageError) as err:
        raise SceneError(f"{path}: cannot read depth ({err})") from err
    if depth.ndim == 3:
        depth = depth[..., 0]
    if depth.ndim != 2:
        raise SceneError(f"{path}: depth must be a single-channel image, got shape {depth.shape}")
    if not np.isfinite(depth).all():
        raise SceneError(f"{path}: depth has NaN or infinite values")
    return depth


def read_image(path: Path) -> np.ndarray:
    """An image file as float RGB ``[H, W, 3]`` in [0, 1]; transparency is composited onto white (nerfstudio's
    default background). Raises :class:`SceneError` naming the file when it is missing or unreadable."""
    if not path.is_file():
        raise SceneError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                rgba = np.asarray(im).astype(np.float32) / 255.0
                return rgba[..., :3] * rgba[..., 3:] + (1.0 - rgba[..., 3:])
            return np.asarray(im.convert("RGB")).astype(np.float32) / 255.0
    except (OSError, ValueError, UnidentifiedImageError) as err:
        raise SceneError(f"{path}: cannot read image ({err})") from err


def _check_image_header(frame: Frame) -> None:
    path = frame.image_path
    if not path.is_file():
        raise SceneError(f"{path}: image file not found")
    try:
        with Image.open(path) as im:
            size = im.size
            im.verify()  # PNG: checks chunk checksums without decoding
    except (OSError, ValueError, UnidentifiedImageError, SyntaxError) as err:
        raise SceneError(f"{path}: corrupt or unreadable image ({err})") from err
    cam = frame.camera
    if size != (cam.width, cam.height):
        raise SceneError(f"{path}: image is {size[0]}x{size[1]} but the intrinsics say {cam.width}x{cam.height}")


def _unposed_hint(folder: Path) -> str:
    """What to do with a folder of images that has no poses (empty when it holds no images)."""
    images = [p for d in (folder, folder / "images") if d.is_dir() for p in d.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES]
    if not images:
        return ""
    return (f"; its {len(images)} images have no poses: `ns-process-data images` finds them with COLMAP, "
            "`ns-train ir-nerf` trains without them and writes them")


def _read_json(path: Path) -> dict:
    try:
        text = path.read_text()
    except OSError as err:
        raise SceneError(f"{path}: cannot read ({err})") from err
    try:
        meta = json.loads(text)
    except json.JSONDecodeError as err:
        hint = " (the file looks truncated)" if err.pos >= len(text.rstrip()) else ""
        raise SceneError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}{hint}") from err
    if not isinstance(meta, dict):
        raise SceneError(f"{path}: top level must be a JSON object, got {type(meta).__name__}")
    return meta


def _resolve(root: Path, value, transforms_path: Path, key: str) -> Path:
    if not isinstance(value, str) or not value:
        raise SceneError(f"{transforms_path}: '{key}' must be a non-empty string, got {value!r}")
    return (root / value).resolve() if not Path(value).is_absolute() else Path(value)


def _intrinsic(meta: dict, frame: dict, key: str, where: str):
    value = frame.get(key, meta.get(key))
    if value is None:
        raise SceneError(f"{where}: missing intrinsic '{key}' (needed at top level or in the frame)")
    try:
        value = float(value)
    except (TypeError, ValueError) as err:
        raise SceneError(f"{where}: intrinsic '{key}' must be a number, got {value!r}") from err
    positive = key in ("fl_x", "fl_y", "w", "h")
    if not np.isfinite(value) or (positive and value <= 0):
        raise SceneError(f"{where}: intrinsic '{key}' must be finite{' and positive' if positive else ''}, got {value}")
    return value


def _parse_frame(meta: dict, frame, index: int, root: Path, transforms_path: Path) -> Frame:
    where = f"{transforms_path}: frame {index}"
    if not isinstance(frame, dict):
        raise SceneError(f"{where}: must be an object, got {type(frame).__name__}")
    if "file_path" not in frame:
        raise SceneError(f"{where}: missing 'file_path'")
    image_path = _resolve(root, frame["file_path"], transforms_path, f"frames[{index}].file_path")
    where = f"{transforms_path}: frame {index} ({frame['file_path']})"
    c2w = _parse_pose(frame.get("transform_matrix"), where)
    fx, fy, cx, cy, w, h = (_intrinsic(meta, frame, k, where) for k in INTRINSIC_KEYS)
    if w != int(w) or h != int(h):
        raise SceneError(f"{where}: image size w, h must be whole numbers, got {w}x{h}")
    # optional; validated since nerfstudio casts rays through them, so NaN or text would poison every ray
    lens = {key: _intrinsic(meta, frame, key, where) for key in DISTORTION_KEYS if frame.get(key, meta.get(key)) is not None}
    camera_model = frame.get("camera_model", meta.get("camera_model"))
    if camera_model is not None:
        lens = {"camera_model": camera_model, **lens}

    def optional(key):
        return _resolve(root, frame[key], transforms_path, f"frames[{index}].{key}") if key in frame else None

    return Frame(
        image_path=image_path,
        c2w=c2w,
        camera=PinholeCamera(fx, fy, cx, cy, int(w), int(h)),
        depth_path=optional("depth_file_path"),
        normal_path=optional("normal_file_path"),
        flow_path=optional("flow_file_path"),
        lens=lens,
    )


def _parse_pose(value, where: str) -> np.ndarray:
    if value is None:
        raise SceneError(f"{where}: missing 'transform_matrix'")
    try:
        pose = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError) as err:
        raise SceneError(f"{where}: transform_matrix is not a numeric matrix ({err})") from err
    if pose.shape == (3, 4):
        pose = np.vstack([pose, [0.0, 0.0, 0.0, 1.0]])
    if pose.shape != (4, 4):
        raise SceneError(f"{where}: transform_matrix must be 4x4 (or 3x4), got shape {pose.shape}")
    if not np.isfinite(pose).all():
        raise SceneError(f"{where}: transform_matrix has NaN or infinite entries")
    if not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0], atol=1e-6):
        raise SceneError(f"{where}: transform_matrix's last row must be [0, 0, 0, 1], got {pose[3].tolist()}")
    rotation = pose[:3, :3]
    det = float(np.linalg.det(rotation))
    if abs(det) < 1e-6:
        raise SceneError(f"{where}: transform_matrix is not invertible (det of its 3x3 part is {det:.3g})")
    scale = abs(det) ** (1.0 / 3.0)
    if not np.allclose(rotation.T @ rotation / scale**2, np.eye(3), atol=1e-3):
        raise SceneError(f"{where}: transform_matrix's 3x3 part is not a (scaled) rotation; shear is not supported")
    return pose

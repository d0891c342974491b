"""Procedural training scenes for pose regression: textured box rooms ray-cast exactly, written as nerfstudio scenes.

Each scene is a room (an axis-aligned box seen from inside) with 3-6 boxes standing on the floor, rotated
about the vertical axis. Every surface is divided into square cells, each carrying a crop of a real
photograph or texture bundled with scikit-image (brick, gravel, grass, astronaut, coffee, moon, ...) chosen
per cell, so no pattern repeats periodically (see :func:`write_room_scene`), with a fixed directional
shading per face. Rays are intersected analytically (slab test), so depth and poses are exact. Views come in small
clusters that look at the same area, so pairs overlap with baselines of a few decimetres.

The output is exactly the layout other scenes use: ``transforms.json`` (``fl_x, fl_y, cx, cy, w, h``,
OpenGL camera-to-world ``transform_matrix``), ``images/*.png`` and ``depth/*.png`` (16-bit millimetres,
planar z-depth), so the pair loader reads these, Blender renders and users' captures the same way.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from vision3d.geometry.camera import PinholeCamera
from vision3d.geometry.se3 import opengl_to_opencv

TEXTURES = ("brick", "gravel", "grass", "astronaut", "coffee", "chelsea", "rocket", "moon", "camera", "coins",
            "hubble_deep_field", "immunohistochemistry", "retina", "cell", "clock", "page", "text")


@lru_cache(maxsize=1)
def _textures(size: int = 256) -> tuple[np.ndarray, ...]:
    import skimage.data

    out = []
    for name in TEXTURES:
        img = np.asarray(getattr(skimage.data, name)()).astype(np.float32)
        img = img / 255.0 if img.max() > 1.5 else img
        if img.ndim == 2:
            img = np.repeat(img[..., None], 3, axis=-1)
        pil = Image.fromarray((np.clip(img[..., :3], 0, 1) * 255).astype(np.uint8)).resize((size, size), Image.BILINEAR)
        out.append(np.asarray(pil).astype(np.float32) / 255.0)
    return tuple(out)


def _hash(*keys) -> np.ndarray:
    """A non-negative int64 hash of integer arrays (broadcast), for per-cell random choices without state."""
    h = np.uint64(1469598103934665603)
    for key in keys:
        k = np.asarray(key).astype(np.int64).astype(np.uint64)
        with np.errstate(over="ignore"):
            h = (h ^ (k + np.uint64(0x9E3779B97F4A7C15))) * np.uint64(1099511628211)
            h = h ^ (h >> np.uint64(29))
    return (h >> np.uint64(1)).astype(np.int64)


def _rot_z(yaw: float) -> np.ndarray:
    c, s = np.cos(yaw), np.sin(yaw)
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def look_at(eye: np.ndarray, target: np.ndarray, up=(0.0, 0.0, 1.0), roll: float = 0.0) -> np.ndarray:
    """Camera-to-world [4, 4] in OpenGL axes (looks down -Z) at ``target``, with ``roll`` radians about the view axis."""
    back = eye - target
    back = back / np.linalg.norm(back)
    right = np.cross(np.asarray(up, float), back)
    right = right / np.linalg.norm(right)
    upv = np.cross(back, right)
    c, s = np.cos(roll), np.sin(roll)
    right, upv = c * right + s * upv, -s * right + c * upv
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, upv, back, eye
    return c2w


TEXTURE_MAPPINGS = ("cells", "tiled")


class RoomScene:
    """A random room; ``render(c2w_opengl, K, h, w)`` returns ``(rgb [h, w, 3], depth [h, w])``.

    ``texture_mapping``: see :func:`write_room_scene`; it does not change the random layout or the cameras (a
    seed gives the same room geometry and views with either mapping)."""

    def __init__(self, seed: int, texture_mapping: str = "cells"):
        if texture_mapping not in TEXTURE_MAPPINGS:
            raise ValueError(f"texture_mapping must be one of {TEXTURE_MAPPINGS}, got {texture_mapping!r}")
        self.texture_mapping = texture_mapping
        rng = np.random.default_rng(seed)
        self.rng = rng
        half = np.array([rng.uniform(2.0, 3.5), rng.uniform(2.0, 3.5), 0.0])
        height = rng.uniform(2.5, 3.5)
        # objects: (centre, half-size, yaw, texture id, uv scale (metres per tile when tiled), inside?)
        self.objects = [(np.array([0.0, 0.0, height / 2]), np.array([half[0], half[1], height / 2]), 0.0,
                         rng.integers(len(TEXTURES), size=6), rng.uniform(0.8, 1.6), True)]
        for _ in range(int(rng.integers(3, 7))):
            hs = rng.uniform([0.2, 0.2, 0.2], [0.7, 0.7, 0.8])
            c = np.array([rng.uniform(-half[0] + 0.8, half[0] - 0.8), rng.uniform(-half[1] + 0.8, half[1] - 0.8), hs[2]])
            self.objects.append((c, hs, rng.uniform(0, np.pi), rng.integers(len(TEXTURES), size=6),
                                 rng.uniform(0.4, 1.0), False))
        self.half, self.height = half, height
        light = rng.normal(size=3)
        light[2] = abs(light[2]) + 0.5
        self.light = light / np.linalg.norm(light)
        self.offsets = rng.uniform(0, 1, size=(len(self.objects), 6, 2))

    def inside_object(self, p: np.ndarray, margin: float = 0.3) -> bool:
        for c, hs, yaw, *_rest, inside in self.objects:
            if inside:
                continue
            q = _rot_z(yaw).T @ (p - c)
            if np.all(np.abs(q) < hs + margin):
                return True
        return False

    def cast(self, origins: np.ndarray, dirs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Rays [N, 3] -> colour [N, 3] and ray parameter t [N] (inf for a miss)."""
        n = dirs.shape[0]
        best_t = np.full(n, np.inf)
        color = np.zeros((n, 3))
        textures = _textures()
        for k, (c, hs, yaw, tex, scale, inside) in enumerate(self.objects):
            R = _rot_z(yaw)  # noqa: N806
            o = (origins - c) @ R
            d = dirs @ R
            with np.errstate(divide="ignore", invalid="ignore"):
                inv = 1.0 / np.where(np.abs(d) < 1e-12, 1e-12, d)
                t1, t2 = (-hs - o) * inv, (hs - o) * inv
            tlo, thi = np.minimum(t1, t2), np.maximum(t1, t2)
            if inside:
                t = thi.min(1)
                axis = thi.argmin(1)
                hit = t > 1e-6
            else:
                t = tlo.max(1)
                axis = tlo.argmax(1)
                hit = (t <= thi.min(1)) & (t > 1e-6)
            closer = hit & (t < best_t)
            if not closer.any():
                continue
            idx = np.nonzero(closer)[0]
            p = o[idx] + t[idx, None] * d[idx]
            ax = axis[idx]
            side = (p[np.arange(len(idx)), ax] > 0).astype(int)
            face = ax * 2 + side
            coords = np.stack([np.where(ax == 0, p[:, 1], p[:, 0]), np.where(ax == 2, p[:, 1], p[:, 2])], -1)
            if self.texture_mapping == "tiled":
                uv = coords / scale + self.offsets[k, face]
                tex_id = tex[face]
            else:  # square cells of side `scale`, each a half-size crop of a texture, both drawn by a hash
                cell = np.floor(coords / scale).astype(np.int64)
                h = _hash(k, face, cell[:, 0], cell[:, 1])
                tex_id = h % len(TEXTURES)
                crop = np.stack([(h >> 8) % 1024, (h >> 18) % 1024], -1) / 2048.0
                uv = crop + 0.5 * (coords / scale - cell)
            normal = np.zeros((len(idx), 3))
            normal[np.arange(len(idx)), ax] = 1.0
            shade = 0.35 + 0.65 * np.abs((normal @ R.T) @ self.light)
            rgb = np.zeros((len(idx), 3))
            for f in np.unique(tex_id):
                sel = tex_id == f
                img = textures[f]
                hgt, wid = img.shape[:2]
                px = np.floor(np.mod(uv[sel, 0], 1.0) * wid).astype(int)
                py = np.floor(np.mod(uv[sel, 1], 1.0) * hgt).astype(int)
                rgb[sel] = img[py, px]
            color[idx] = rgb * shade[:, None]
            best_t[idx] = t[idx]
        return color, best_t

    def render(self, c2w: np.ndarray, camera: PinholeCamera, supersample: int = 2):
        """RGB [H, W, 3] in [0, 1] (box-filtered ``supersample``^2 rays per pixel) and planar depth [H, W]."""
        s, h, w = supersample, camera.height, camera.width
        rgb, _ = self._cast_rays(c2w, camera.rays(s))
        rgb = rgb.reshape(h, s, w, s, 3).mean((1, 3))
        _, z = self._cast_rays(c2w, camera.rays())
        return np.clip(rgb, 0, 1), z.reshape(h, w)

    def _cast_rays(self, c2w, rays):
        """Colour and z-depth along camera rays [..., 3] (OpenCV axes, unit z) from the OpenGL pose ``c2w``."""
        dirs = rays.reshape(-1, 3) @ opengl_to_opencv(c2w)[:3, :3].T
        origins = np.broadcast_to(c2w[:3, 3], dirs.shape)
        rgb, t = self.cast(origins, dirs)
        z = np.where(np.isfinite(t), t, 0.0)  # dirs have unit z-component in the camera, so t is z-depth
        return rgb, z

    def sample_views(self, n_views: int, views_per_cluster: int = 4, spread: float = 0.35) -> list[np.ndarray]:
        """Camera-to-world (OpenGL) matrices in clusters looking at a shared target."""
        rng = self.rng
        views: list[np.ndarray] = []
        while len(views) < n_views:
            target = np.array([rng.uniform(-self.half[0], self.half[0]), rng.uniform(-self.half[1], self.half[1]),
                               rng.uniform(0.2, self.height - 0.5)])
            base = np.array([rng.uniform(-0.5, 0.5) * self.half[0], rng.uniform(-0.5, 0.5) * self.half[1],
                             rng.uniform(1.0, 2.0)])
            if np.linalg.norm(target - base) < 1.2 or self.inside_object(base):
                continue
            for _ in range(views_per_cluster):
                eye = base + rng.normal(scale=spread, size=3)
                eye[2] = np.clip(eye[2], 0.4, self.height - 0.3)
                if self.inside_object(eye) or np.any(np.abs(eye[:2]) > self.half[:2] - 0.2):
                    continue
                tgt = target + rng.normal(scale=spread, size=3)
                views.append(look_at(eye, tgt, roll=rng.normal(scale=0.1)))
                if len(views) == n_views:
                    break
        return views


def write_room_scene(root: str | Path, seed: int, n_views: int = 16, width: int = 128, height: int = 96,
                     fov_deg: float = 60.0, supersample: int = 2, texture_mapping: str = "cells") -> Path:
    """Render one procedural room to ``root`` in nerfstudio format and return the folder.

    ``texture_mapping`` (decision): ``"cells"`` (default) divides every face into square cells of the face's
    ``uv scale`` (0.8-1.6 m on the room, 0.4-1 m on boxes), each showing its own half-size crop of a texture
    picked by a hash of (object, face, cell): textured everywhere, never periodic, so features do not match
    repeated copies of one texture. ``"tiled"`` repeats one texture per face every ``uv scale`` metres
    (measured against "cells" in docs/geloc3r.md).
    """
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    (root / "depth").mkdir(exist_ok=True)
    scene = RoomScene(seed, texture_mapping)
    camera = PinholeCamera.default_for(width, height, fov_deg)
    frames = []
    for i, c2w in enumerate(scene.sample_views(n_views)):
        rgb, depth = scene.render(c2w, camera, supersample)
        Image.fromarray((rgb * 255 + 0.5).astype(np.uint8)).save(root / f"images/{i:04d}.png")
        Image.fromarray(np.clip(depth * 1000.0 + 0.5, 0, 65535).astype(np.uint16)).save(root / f"depth/{i:04d}.png")
        frames.append({"file_path": f"images/{i:04d}.png", "depth_file_path": f"depth/{i:04d}.png",
                       "transform_matrix": c2w.tolist()})
    meta = {"fl_x": camera.fx, "fl_y": camera.fy, "cx": camera.cx, "cy": camera.cy, "w": width, "h": height,
            "camera_model": "OPENCV", "depth_unit_scale_factor": 1e-3, "source": f"vision3d.pose.scenes room seed {seed}",
            "texture_mapping": texture_mapping,
            "frames": frames}
    (root / "transforms.json").write_text(json.dumps(meta, indent=1))
    return root

"""A small textured room rendered exactly by ray casting, written as a nerfstudio scene (for helixsurf tests).

The room is the box [-2, 2] × [-1.5, 1.5] × [0, 2.4] seen from inside, with a cube "table" on the floor.
Each face carries a smooth random texture (sums of sines in the face's plane coordinates, Lambert-shaded
by a fixed light direction) except one wall, left plain (textureless). Cameras stand on a ring at 1.3 m
height looking outwards and slightly down (every fourth one across the room at the table). Images, z-depth (mm) and the ground-truth mesh are exact.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import trimesh
from PIL import Image

ROOM = np.array([[-2.0, -1.5, 0.0], [2.0, 1.5, 2.4]])
TABLE = np.array([[-0.4, -0.3, 0.0], [0.4, 0.3, 0.7]])
PLAIN_FACE = (0, 1)  # the room's +x wall is textureless


def look_at_opengl(eye: np.ndarray, target: np.ndarray) -> np.ndarray:
    """Camera-to-world [4, 4] in OpenGL axes (looks down -Z, +Y up; world +Z up)."""
    back = eye - target
    back /= np.linalg.norm(back)
    right = np.cross([0.0, 0.0, 1.0], back)
    right /= np.linalg.norm(right)
    c2w = np.eye(4)
    c2w[:3, 0], c2w[:3, 1], c2w[:3, 2], c2w[:3, 3] = right, np.cross(back, right), back, eye
    return c2w


def _box_hits(origins: np.ndarray, dirs: np.ndarray, box: np.ndarray, inside: bool):
    """Ray parameter and face (axis, side) of the exit (``inside``) or entry hit of an axis-aligned box."""
    with np.errstate(divide="ignore", invalid="ignore"):
        t0 = (box[0] - origins) / dirs
        t1 = (box[1] - origins) / dirs
    near, far = np.minimum(t0, t1), np.maximum(t0, t1)
    if inside:
        t = far.min(axis=-1)
        axis = far.argmin(axis=-1)
        side = (np.take_along_axis(dirs, axis[..., None], -1)[..., 0] > 0).astype(int)
        return t, axis, side
    t_in, t_out = near.max(axis=-1), far.min(axis=-1)
    axis = near.argmax(axis=-1)
    side = (np.take_along_axis(dirs, axis[..., None], -1)[..., 0] < 0).astype(int)
    t = np.where((t_in < t_out) & (t_in > 0), t_in, np.inf)
    return t, axis, side


def _texture(points: np.ndarray, axis: np.ndarray, side: np.ndarray, object_id: np.ndarray, seed: int) -> np.ndarray:
    """Smooth random colours [N, 3] of hit points on faces (different per face, one face plain)."""
    rng = np.random.default_rng(seed)
    freqs = rng.uniform(3.0, 14.0, size=(2, 3, 6, 2))  # object, axis, term, (u, v)
    phases = rng.uniform(0, 2 * np.pi, size=(2, 3, 6, 3))
    base = rng.uniform(0.3, 0.7, size=(2, 3, 2, 3))
    out = np.zeros(points.shape[:-1] + (3,))
    for obj in (0, 1):
        for a in range(3):
            sel = (object_id == obj) & (axis == a)
            uv = np.delete(points[sel], a, axis=-1)  # [M, 2] plane coordinates
            colour = base[obj, a, side[sel]]
            wave = np.zeros((uv.shape[0], 3))
            for k in range(6):
                wave += np.sin((uv @ freqs[obj, a, k])[:, None] + phases[obj, a, k]) / 6
            plain = (obj == 0) & (a == PLAIN_FACE[0]) & (side[sel] == PLAIN_FACE[1])
            out[sel] = colour + 0.35 * wave * ~plain[:, None]
    return out


def camera_poses(n_views: int, layout: str) -> list[np.ndarray]:
    """OpenGL camera-to-world poses: ``ring`` (see the module docstring) or ``clusters`` (groups of three
    side by side, 0.3 m apart, looking the same way at one wall each: short baselines that suit MVS)."""
    poses = []
    for i in range(n_views):
        if layout == "clusters":
            angle = 2 * np.pi * (i // 3) / max(n_views // 3, 1) + 0.35
            forward = np.array([np.cos(angle), np.sin(angle), -0.35])
            side = np.array([-np.sin(angle), np.cos(angle), 0.0])
            eye = np.array([0.0, 0.0, 1.3]) - 0.5 * forward * [1, 1, 0] + 0.3 * (i % 3 - 1) * side
            poses.append(look_at_opengl(eye, eye + forward))
            continue
        angle = 2 * np.pi * i / n_views
        eye = np.array([0.9 * np.cos(angle), 0.7 * np.sin(angle), 1.3 + 0.2 * np.sin(3 * angle)])
        target = eye + np.array([np.cos(angle + 0.6), np.sin(angle + 0.6), -0.45])
        if i % 4 == 3:  # every fourth camera looks across the room, over the table
            target = np.array([0.0, 0.0, 0.5])
        poses.append(look_at_opengl(eye, target))
    return poses


def write_room(root: Path, n_views: int = 16, width: int = 64, height: int = 48, focal: float = 40.0,
               seed: int = 0, layout: str = "ring") -> Path:
    """Render the room into ``root`` (images, depths, mesh.ply, transforms.json) and return ``root``."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "images").mkdir(exist_ok=True)
    (root / "depths").mkdir(exist_ok=True)
    light = np.array([0.3, 0.5, 0.8]) / np.linalg.norm([0.3, 0.5, 0.8])
    frames = []
    ys, xs = np.mgrid[0:height, 0:width] + 0.5
    rays_cam = np.stack([(xs - width / 2) / focal, -(ys - height / 2) / focal, -np.ones_like(xs)], -1)  # OpenGL
    for i, c2w in enumerate(camera_poses(n_views, layout)):
        eye = c2w[:3, 3]
        dirs = rays_cam @ c2w[:3, :3].T
        origins = np.broadcast_to(eye, dirs.shape)
        t_room, ax_room, side_room = _box_hits(origins, dirs, ROOM, inside=True)
        t_tab, ax_tab, side_tab = _box_hits(origins, dirs, TABLE, inside=False)
        on_table = t_tab < t_room
        t = np.where(on_table, t_tab, t_room)
        axis = np.where(on_table, ax_tab, ax_room)
        side = np.where(on_table, side_tab, side_room)
        points = origins + t[..., None] * dirs
        colour = _texture(points, axis, side, on_table.astype(int), seed)
        normal = np.zeros(points.shape)
        np.put_along_axis(normal, axis[..., None], np.where(on_table, 2 * side - 1, 1 - 2 * side)[..., None].astype(float), -1)
        colour = colour * (0.75 + 0.25 * np.abs(normal @ light))[..., None]
        Image.fromarray((np.clip(colour, 0, 1) * 255).astype(np.uint8)).save(root / f"images/{i:03d}.png")
        z = t * 1.0  # rays_cam has |z| = 1, so the ray parameter is the z-depth
        Image.fromarray(np.round(z * 1000).astype(np.uint16)).save(root / f"depths/{i:03d}.png")
        frames.append({"file_path": f"images/{i:03d}.png", "depth_file_path": f"depths/{i:03d}.png",
                       "transform_matrix": c2w.tolist()})
    room = trimesh.creation.box(bounds=ROOM)
    room.invert()
    mesh = trimesh.util.concatenate([room, trimesh.creation.box(bounds=TABLE)])
    mesh.export(root / "mesh.ply")
    meta = {"fl_x": focal, "fl_y": focal, "cx": width / 2, "cy": height / 2, "w": width, "h": height,
            "camera_model": "OPENCV", "frames": frames, "mesh_file_path": "mesh.ply"}
    (root / "transforms.json").write_text(json.dumps(meta, indent=1))
    return root

"""SfM-like sparse seed points for rendered scenes: what COLMAP's sparse cloud gives splatfacto on real captures.

splatfacto starts from COLMAP's ``points3D`` when a scene has them (nerfstudio's ``transforms.json`` names
them with ``ply_file_path``; ``ns-process-data`` writes ``sparse_pc.ply``) and from a random cube when it
has none. Our rendered scenes have no SfM run, but they have the ground-truth mesh, so we write the
points an SfM run would find: a few thousand points **on the surface**, each kept only where at least
``min_views`` views see it (an occlusion test against the views' depth maps, the rendered analogue of a
feature track that triangulates), coloured by the median of its pixels in those views (the way COLMAP
colours a point from its track).

Decisions (the choice is ours, the reasons are here):

- *Mesh samples, not back-projected depth.* Back-projecting every training pixel's depth would hand the
  model a dense, exact surface that no user has; surface samples that pass a multi-view visibility test
  are what sparse SfM gives (accurate, sparse, only where two views overlap), so methods seeded this way
  on our scenes are seeded as they would be on a COLMAP capture.
- *Image-uniform density*: candidates are area-uniform on the mesh, then drawn with probability ∝ the
  pixels they cover in the views that see them. SfM detects features per image, so its points spread over
  the images, not over the surface area (a large ground plane seen at grazing angles would otherwise get
  most of the points and the model almost none). COLMAP's density also follows texture; we do not run a
  feature detector.
- *Split-aware.* The file is written from every rendered view. A training split (nerfstudio's fraction
  split or our sparse-view protocol) must not see held-out views, so :class:`~vision3d.data.dataparser.
  Vision3DDataParser` calls :func:`visible_points` again with only the training views: points that fewer
  than ``min_views`` training views see are dropped, and colours come from training pixels only.

Nothing here is an image-space feature: the test needs depth maps, so it applies to rendered scenes (and
RGB-D captures); COLMAP scenes keep their own points untouched.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

SPARSE_PLY_NAME = "sparse_pc.ply"  # the name ns-process-data gives COLMAP's points


def visible_points(
    points: np.ndarray,  # [N, 3] world coordinates
    world_to_cams: np.ndarray,  # [V, 4, 4] world-to-camera, OpenCV axes (x right, y down, z forward)
    Ks: np.ndarray,  # [V, 3, 3] intrinsics in pixels (pixel centres at +0.5)  # noqa: N803
    depths: np.ndarray,  # [V, H, W] planar depth in the points' units, 0 = unknown
    images: np.ndarray,  # [V, H, W, 3] uint8 sRGB
    min_views: int = 2,
    rel_tol: float = 0.02,
    normals: np.ndarray | None = None,  # [N, 3] unit surface normals, for the footprint
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Which points at least ``min_views`` views see unoccluded, their median colour over those views, and
    their image footprint.

    A view sees a point when it projects inside the image in front of the camera and the depth map at its
    pixel (nearest) agrees with the point's depth to ``rel_tol`` (relative): 2 % passes surface samples
    on grazing ground at 128 px and rejects points behind an occluder.

    Returns:
        keep [N] bool; rgb [N, 3] uint8 (zeros where not kept); footprint [N] float: pixels per unit of
        surface area summed over the views that see the point (fx·fy/z², times |cos| of the viewing angle
        when ``normals`` are given), so that sampling with probability ∝ footprint is uniform over the
        images' pixels, as feature detection is.
    """
    points = np.asarray(points, dtype=np.float64)
    if points.ndim != 2 or points.shape[1] != 3:
        raise ValueError(f"points must be [N, 3], got {points.shape}")
    n_views, height, width = depths.shape
    if (
        world_to_cams.shape != (n_views, 4, 4)
        or Ks.shape != (n_views, 3, 3)
        or images.shape[:3] != depths.shape
    ):
        raise ValueError(
            f"shapes disagree: world_to_cams {world_to_cams.shape}, Ks {Ks.shape}, "
            f"depths {depths.shape}, images {images.shape}"
        )
    homogeneous = np.concatenate([points, np.ones_like(points[:, :1])], axis=1)
    seen = np.zeros((n_views, len(points)), dtype=bool)
    colours = np.zeros((n_views, len(points), 3), dtype=np.float32)
    footprint = np.zeros(len(points))
    for v in range(n_views):
        cam = homogeneous @ world_to_cams[v].T
        z = cam[:, 2]
        with np.errstate(divide="ignore", invalid="ignore"):
            uv = (cam[:, :3] @ Ks[v].T)[:, :2] / z[:, None]
            col, row = np.floor(uv[:, 0]), np.floor(uv[:, 1])
        inside = (z > 0) & (col >= 0) & (col < width) & (row >= 0) & (row < height)
        col, row = np.where(inside, col, 0).astype(np.int64), np.where(inside, row, 0).astype(np.int64)
        surface = depths[v][row, col]
        seen[v] = inside & (surface > 0) & (np.abs(surface - z) <= rel_tol * z)
        colours[v] = images[v][row, col]
        density = Ks[v, 0, 0] * Ks[v, 1, 1] / np.maximum(z, 1e-12) ** 2
        if normals is not None:
            ray = cam[:, :3] / np.linalg.norm(cam[:, :3], axis=1, keepdims=True).clip(1e-12)
            density *= np.abs(np.sum((normals @ world_to_cams[v, :3, :3].T) * ray, axis=1))
        footprint += np.where(seen[v], density, 0.0)
    keep = seen.sum(axis=0) >= min_views
    masked = np.where(seen[..., None], colours, np.nan)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN columns: points nobody sees
        rgb = np.nanmedian(masked, axis=0)
    rgb = np.where(keep[:, None], np.nan_to_num(rgb), 0.0)
    return keep, np.clip(np.round(rgb), 0, 255).astype(np.uint8), np.where(keep, footprint, 0.0)


def sample_sparse_points(
    scene_dir: str | Path,
    num_points: int = 4000,
    min_views: int = 2,
    oversample: int = 20,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """``num_points`` SfM-like points of a rendered scene (its ``mesh_file_path`` seen by its depth maps).

    Draws ``oversample * num_points`` area-uniform candidates on the mesh, keeps those that ``min_views``
    views see (:func:`visible_points`), and draws ``num_points`` of them without replacement with
    probability ∝ their image footprint, so the points spread over the images' pixels as detected features
    do (area-uniform points would sit mostly on a large ground plane seen at grazing angles).

    Returns:
        (xyz [M, 3] float32 world coordinates, rgb [M, 3] uint8), M = ``num_points`` or fewer if fewer pass.
    """
    import trimesh

    from vision3d.data.scene import SceneError, load_scene

    scene = load_scene(scene_dir, check_images=False)
    if scene.mesh_path is None or not scene.has_depth:
        raise SceneError(f"{scene.transforms_path}: sparse points need 'mesh_file_path' and depth maps")
    mesh = trimesh.load(scene.mesh_path, force="mesh", process=False)
    rng = np.random.default_rng(seed)
    candidates, face_index = trimesh.sample.sample_surface(mesh, oversample * num_points, seed=rng)
    keep, rgb, footprint = visible_points(
        candidates,
        np.stack([f.w2c_opencv for f in scene.frames]),
        np.stack([f.camera.K for f in scene.frames]),
        np.stack([scene.load_depth(i) for i in range(len(scene))]),
        np.stack([np.round(scene.load_image(i) * 255).astype(np.uint8) for i in range(len(scene))]),
        min_views=min_views,
        normals=mesh.face_normals[face_index],
    )
    count = min(num_points, int(keep.sum()))
    if count == 0:
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.uint8)
    index = np.sort(rng.choice(len(candidates), size=count, replace=False, p=footprint / footprint.sum()))
    return candidates[index].astype(np.float32), rgb[index]


def write_ply(path: str | Path, xyz: np.ndarray, rgb: np.ndarray) -> Path:
    """A binary point-cloud PLY (float x, y, z; uchar red, green, blue), the layout COLMAP exports."""
    path = Path(path)
    vertex = np.empty(
        len(xyz),
        dtype=[("x", "<f4"), ("y", "<f4"), ("z", "<f4"), ("red", "u1"), ("green", "u1"), ("blue", "u1")],
    )
    vertex["x"], vertex["y"], vertex["z"] = np.asarray(xyz, dtype=np.float32).T
    vertex["red"], vertex["green"], vertex["blue"] = np.asarray(rgb, dtype=np.uint8).T
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {len(xyz)}\n"
        "property float x\nproperty float y\nproperty float z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    path.write_bytes(header.encode() + vertex.tobytes())
    return path


def add_sparse_points(
    scene_dir: str | Path, num_points: int = 4000, min_views: int = 2, seed: int = 0
) -> Path:
    """Write ``sparse_pc.ply`` into a rendered scene and name it in ``transforms.json`` (``ply_file_path``).

    nerfstudio's ``nerfstudio-data`` (and our ``vision3d-data``) then hand these points to splatfacto as
    seed points, exactly as a COLMAP capture's. The settings go into ``transforms.json`` as
    ``sparse_points``. Where no point passes (no two views overlap) no file is written.
    """
    scene_dir = Path(scene_dir)
    xyz, rgb = sample_sparse_points(scene_dir, num_points=num_points, min_views=min_views, seed=seed)
    transforms = scene_dir / "transforms.json"
    meta = json.loads(transforms.read_text())
    if len(xyz):
        write_ply(scene_dir / SPARSE_PLY_NAME, xyz, rgb)
        meta["ply_file_path"] = SPARSE_PLY_NAME
    else:  # no two views overlap: leave the scene to random initialisation
        meta.pop("ply_file_path", None)
    meta["sparse_points"] = {
        "what": "SfM-like seed points: samples of mesh_file_path that at least min_views views see (depth "
        "test), drawn in proportion to their pixel footprint, median colour over those views "
        "(vision3d.data.sparse_points)",
        "requested": num_points,
        "num_points": int(len(xyz)),
        "min_views": min_views,
        "seed": seed,
    }
    transforms.write_text(json.dumps(meta, indent=1))
    return scene_dir / SPARSE_PLY_NAME

"""Real data importers (ViSP Castle-simu, Middlebury stereo) and the bundled scene's consistency."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from vision3d.data.consistency import backproject, flow_from_depth, reprojection_depth_error
from vision3d.geometry.se3 import opencv_to_opengl, opengl_to_opencv


def _intrinsics(meta):
    return np.array([[meta["fl_x"], 0, meta["cx"]], [0, meta["fl_y"], meta["cy"]], [0, 0, 1.0]])


def _depth_m(root, frame, meta):
    return np.array(Image.open(root / frame["depth_file_path"])).astype(np.float64) * meta.get(
        "depth_unit_scale_factor", 1e-3)


# ---------------------------------------------------------------------------------------------- ViSP


@pytest.fixture(scope="module")
def castle(tmp_path_factory):
    from vision3d.data.apt_data import AptUnavailableError
    from vision3d.data.visp import import_castle_simu

    try:
        return import_castle_simu(tmp_path_factory.mktemp("castle"), frames=[1, 2, 12, 30])
    except AptUnavailableError as err:
        pytest.skip(f"apt cannot fetch visp-images-data: {err}")


@pytest.mark.apt
def test_visp_castle_simu_converts_to_nerfstudio(castle):
    meta = json.loads((castle / "transforms.json").read_text())
    assert (meta["w"], meta["h"]) == (640, 480) and meta["fl_x"] == meta["fl_y"] == 700
    assert [f["visp_frame"] for f in meta["frames"]] == [1, 2, 12, 30]
    image = np.array(Image.open(castle / meta["frames"][0]["file_path"]))
    assert image.shape == (480, 640, 3)
    # the GT pose of frame 1 (cMo, world -> OpenCV camera) round-trips through the OpenGL c2w
    from vision3d.data.visp import castle_simu_dir

    c_m_o = np.loadtxt(castle_simu_dir() / "CameraPose" / "Camera_001.txt")
    c2w = np.array(meta["frames"][0]["transform_matrix"])
    assert np.allclose(np.linalg.inv(opengl_to_opencv(c2w)), c_m_o, atol=1e-6)


@pytest.mark.apt
def test_visp_depth_is_aligned_to_the_colour_camera(castle):
    meta = json.loads((castle / "transforms.json").read_text())
    K = _intrinsics(meta)  # noqa: N806
    depths = [_depth_m(castle, f, meta) for f in meta["frames"]]
    poses = [np.array(f["transform_matrix"]) for f in meta["frames"]]
    assert all(0.1 < (d > 0).mean() < 0.3 for d in depths)
    assert 0.45 < np.median(depths[0][depths[0] > 0]) < 0.8  # metres
    for a, b in [(0, 1), (0, 2), (2, 3)]:
        errors = reprojection_depth_error(depths[a], depths[b], K, poses[a], poses[b])
        assert errors.size > 10000
        assert np.median(errors) < 0.01, (a, b, np.median(errors))


@pytest.mark.apt
def test_visp_depth_offset_matters():
    """Without the -0.05 m depth-camera offset the depth would be ~58 px off and inconsistent."""
    from vision3d.data.apt_data import AptUnavailableError
    from vision3d.data.visp import castle_simu_dir, depth_to_color, read_depth_bin

    try:
        src = castle_simu_dir()
    except AptUnavailableError as err:
        pytest.skip(f"apt cannot fetch visp-images-data: {err}")
    K = np.array([[700.0, 0, 320], [0, 700.0, 240], [0, 0, 1]])  # noqa: N806
    poses = [opencv_to_opengl(np.linalg.inv(np.loadtxt(src / "CameraPose" / f"Camera_{i:03d}.txt"))) for i in (1, 12)]
    raw = [read_depth_bin(src / "Depth" / f"Depth_{i:04d}.bin") for i in (1, 12)]
    medians = {}
    for t in (-0.05, 0.0, 0.05):
        d = [depth_to_color(r, K, K, np.array([t, 0.0, 0.0])) for r in raw]
        medians[t] = np.median(reprojection_depth_error(d[0], d[1], K, poses[0], poses[1]))
    assert medians[-0.05] < 0.005 < min(medians[0.0], medians[0.05])


# -------------------------------------------------------------------------------------------- stereo


def test_stereo_motorcycle_loads_with_disparity():
    from vision3d.data.stereo import motorcycle

    pair = motorcycle()
    assert pair.left.shape == pair.right.shape == (500, 741, 3)
    assert pair.disparity.shape == (500, 741) and pair.disparity.dtype == np.float32
    assert 0.85 < pair.valid.mean() < 0.99 and np.nanmin(pair.disparity) > 0
    _check_disparity_explains_the_pair(pair)


@pytest.mark.apt
def test_stereo_aloe_loads_with_disparity():
    from vision3d.data.apt_data import AptUnavailableError
    from vision3d.data.stereo import aloe

    try:
        pair = aloe()
    except AptUnavailableError as err:
        pytest.skip(f"apt cannot fetch opencv-doc: {err}")
    assert pair.left.shape == pair.right.shape == (1110, 1282, 3)
    assert 0.9 < pair.valid.mean() and 40 <= np.nanmin(pair.disparity) and np.nanmax(pair.disparity) <= 255
    _check_disparity_explains_the_pair(pair)


def _check_disparity_explains_the_pair(pair):
    """Warping the right image with the GT disparity reproduces the left one far better than no warp."""
    left = pair.left.mean(-1)
    right = pair.right.mean(-1)
    rows, cols = np.nonzero(pair.valid)
    target = np.round(cols - pair.disparity[rows, cols]).astype(int)
    ok = (target >= 0) & (target < left.shape[1])
    warped_error = np.median(np.abs(left[rows[ok], cols[ok]] - right[rows[ok], target[ok]]))
    unwarped_error = np.median(np.abs(left[rows[ok], cols[ok]] - right[rows[ok], cols[ok]]))
    assert warped_error < 0.5 * unwarped_error, (warped_error, unwarped_error)


# ------------------------------------------------------------------------------------------- bundled


@pytest.fixture(scope="module")
def bundled():
    from vision3d.data.bundled import bundled_scene_path

    root = bundled_scene_path()
    return root, json.loads((root / "transforms.json").read_text())


def test_bundled_scene_files_are_all_present(bundled):
    root, meta = bundled
    assert meta["camera_model"] == "OPENCV" and len(meta["frames"]) == 24
    for frame in meta["frames"]:
        for key in ("file_path", "depth_file_path", "normal_file_path", "flow_file_path"):
            assert (root / frame[key]).is_file(), frame[key]
        image = np.array(Image.open(root / frame["file_path"]))
        assert image.shape == (meta["h"], meta["w"], 3)
        depth = np.array(Image.open(root / frame["depth_file_path"]))
        assert depth.shape == (meta["h"], meta["w"]) and depth.max() > 0
    assert (root / meta["mesh_file_path"]).is_file() and (root / "README.md").is_file()
    assert meta["source"]["licence"] and meta["render"]["hdri"]["licence"]
    size = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
    assert size < 10 * 2**20


def test_bundled_scene_depth_reprojects_between_views(bundled):
    root, meta = bundled
    K = _intrinsics(meta)  # noqa: N806
    for a, b in [(0, 1), (5, 7), (23, 0)]:
        fa, fb = meta["frames"][a], meta["frames"][b]
        errors = reprojection_depth_error(_depth_m(root, fa, meta), _depth_m(root, fb, meta), K,
                                          np.array(fa["transform_matrix"]), np.array(fb["transform_matrix"]))
        assert errors.size > 1000
        assert np.median(errors) < 0.01, (a, b, np.median(errors))


def test_bundled_scene_flow_and_mesh_agree_with_depth(bundled):
    import trimesh

    root, meta = bundled
    K = _intrinsics(meta)  # noqa: N806
    frames = meta["frames"]
    depth = _depth_m(root, frames[23], meta)
    expected = flow_from_depth(depth, K, np.array(frames[23]["transform_matrix"]), np.array(frames[0]["transform_matrix"]))
    flow = np.load(root / frames[23]["flow_file_path"])  # the orbit is closed: the last view flows to the first
    valid = np.isfinite(expected).all(-1)
    assert np.median(np.linalg.norm(flow - expected, axis=-1)[valid]) < 0.1

    mesh = trimesh.load(root / meta["mesh_file_path"], process=False)
    points = backproject(depth, K, np.array(frames[23]["transform_matrix"])).reshape(-1, 3)
    points = points[np.isfinite(points).all(-1)][::40]
    _, distance, _ = trimesh.proximity.closest_point(mesh, points)
    assert np.median(distance) < 5e-3  # the decimated mesh is still the rendered surface

"""Scene loading: valid scenes load; every kind of bad input fails with a message naming the file."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scene_factory import write_scene

from vision3d.data.scene import SceneError, load_scene, sparse_view_split


@pytest.fixture
def scene_dir(tmp_path):
    return write_scene(tmp_path / "scene")


def _edit(scene_dir, change):
    path = scene_dir / "transforms.json"
    meta = json.loads(path.read_text())
    change(meta)
    path.write_text(json.dumps(meta))


def test_valid_scene_loads(scene_dir):
    scene = load_scene(scene_dir)
    assert len(scene) == 6 and scene.has_depth
    image = scene.load_image(0)
    assert image.shape == (16, 16, 3) and 0.0 <= image.min() and image.max() <= 1.0
    np.testing.assert_allclose(scene.load_depth(0), 3.0)
    assert "views       6 at 16x16" in scene.summary()
    assert "lens        OPENCV, no distortion" in scene.summary()
    _edit(scene_dir, lambda meta: meta.update(k1=-0.1, p2=0.002))
    assert "lens        OPENCV, k1=-0.1 p2=0.002" in load_scene(scene_dir).summary()


def test_w2c_is_opencv_inverse(scene_dir):
    frame = load_scene(scene_dir).frames[1]
    point_world = frame.c2w[:3, 3] + 2.0 * (-frame.c2w[:3, 2])  # 2 units along the viewing direction
    cam = frame.w2c_opencv @ np.append(point_world, 1.0)
    np.testing.assert_allclose(cam[:3], [0.0, 0.0, 2.0], atol=1e-9)


def test_missing_transforms(tmp_path):
    with pytest.raises(SceneError, match=r"transforms.json: no such file \(a scene folder needs a nerfstudio transforms.json\)$"):
        load_scene(tmp_path)


def test_missing_transforms_beside_images_points_to_pose_estimation(scene_dir):
    """A folder of images without poses (the common first try) says how to get poses or train without them."""
    (scene_dir / "transforms.json").unlink()
    with pytest.raises(SceneError, match=r"no such file .*; its 6 images have no poses: `ns-process-data images` .*`ns-train ir-nerf`"):
        load_scene(scene_dir)


def test_truncated_json(scene_dir):
    path = scene_dir / "transforms.json"
    path.write_text(path.read_text()[:200])
    with pytest.raises(SceneError, match=r"transforms.json: malformed JSON .*truncated"):
        load_scene(scene_dir)


def test_missing_image(scene_dir):
    (scene_dir / "images/002.png").unlink()
    with pytest.raises(SceneError, match=r"images/002.png: image file not found"):
        load_scene(scene_dir)


def test_corrupt_image(scene_dir):
    path = scene_dir / "images/001.png"
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(SceneError, match=r"images/001.png: corrupt or unreadable image"):
        load_scene(scene_dir)


def test_mismatched_image_size(scene_dir):
    Image.fromarray(np.zeros((20, 16, 3), dtype=np.uint8)).save(scene_dir / "images/003.png")
    with pytest.raises(SceneError, match=r"images/003.png: image is 16x20 but the intrinsics say 16x16"):
        load_scene(scene_dir)


def test_non_invertible_pose(scene_dir):
    def squash(meta):
        meta["frames"][4]["transform_matrix"][2] = [0.0, 0.0, 0.0, 1.0]

    _edit(scene_dir, squash)
    with pytest.raises(SceneError, match=r"frame 4 \(images/004.png\): transform_matrix is not invertible"):
        load_scene(scene_dir)


def test_malformed_pose_shape_and_nan(scene_dir):
    _edit(scene_dir, lambda meta: meta["frames"][0].update(transform_matrix=[[1, 0], [0, 1]]))
    with pytest.raises(SceneError, match=r"frame 0 .*must be 4x4"):
        load_scene(scene_dir)
    _edit(scene_dir, lambda meta: meta["frames"][0].update(transform_matrix=np.full((4, 4), np.nan).tolist()))
    with pytest.raises(SceneError, match=r"frame 0 .*(NaN|numeric)"):
        load_scene(scene_dir)


@pytest.mark.parametrize(("where", "value", "problem"), [("top", float("nan"), "must be finite, got nan"),
                                                       ("frame", "abc", "must be a number, got 'abc'")])
def test_bad_distortion_coefficients(scene_dir, where, value, problem):
    """nerfstudio casts every ray through the lens: a NaN coefficient would poison all of them silently."""
    _edit(scene_dir, lambda meta: (meta if where == "top" else meta["frames"][2]).update(k1=value))
    with pytest.raises(SceneError, match=rf"frame {0 if where == 'top' else 2} .*intrinsic 'k1' {problem}"):
        load_scene(scene_dir)


def test_missing_intrinsics(scene_dir):
    _edit(scene_dir, lambda meta: meta.pop("fl_x"))
    with pytest.raises(SceneError, match=r"missing intrinsic 'fl_x'"):
        load_scene(scene_dir)


def test_partial_depth_is_rejected(scene_dir):
    _edit(scene_dir, lambda meta: meta["frames"][2].pop("depth_file_path"))
    with pytest.raises(SceneError, match=r"depth_file_path is given for 5 of 6 frames"):
        load_scene(scene_dir)


def test_mis_sized_depth(scene_dir):
    Image.fromarray(np.zeros((8, 8), dtype=np.uint16)).save(scene_dir / "depths/000.png")
    with pytest.raises(SceneError, match=r"depths/000.png: depth is 8x8 but the image is 16x16"):
        load_scene(scene_dir).load_depth(0)


def test_sparse_split_is_seeded_and_disjoint():
    train, test = sparse_view_split(24, 3, seed=7)
    again, _ = sparse_view_split(24, 3, seed=7)
    other, _ = sparse_view_split(24, 3, seed=8)
    assert len(train) == 3 and len(test) == 21
    assert not set(train) & set(test)
    np.testing.assert_array_equal(train, again)
    assert not np.array_equal(train, other)
    with pytest.raises(ValueError, match="n_train"):
        sparse_view_split(4, 4)

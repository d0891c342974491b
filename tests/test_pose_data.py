"""Pair data: nerfstudio scenes (procedural rooms), ViSP Castle-simu, ReLoc3r's pair lists, matching."""

import json

import numpy as np
import pytest
import torch
from pose_helpers import one_thread, small_room  # noqa: F401  (autouse fixture: importing it applies it here)

from vision3d.geometry.camera import project_points, unproject_points
from vision3d.geometry.se3 import invert_pose, transform_points
from vision3d.pose.data import (
    DataUnavailable,
    PairDataset,
    collate,
    covisibility,
    frames_from_castle_simu,
    frames_from_nerfstudio,
    megadepth1500_pairs,
    mirror_pairs,
    scannet1500_pairs,
    seen_scene_split,
    select_pairs,
)
from vision3d.pose.gcr import depth_correspondences
from vision3d.pose.matching import Matcher, xfeat_available


@pytest.fixture(scope="module")
def room(tmp_path_factory):
    return small_room(tmp_path_factory, seed=3, width=128, height=96)


def _sampson(k1, k2, K1, K2, T21):  # noqa: N803
    T12 = np.linalg.inv(T21)  # noqa: N806
    t = T12[:3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    F = np.linalg.inv(K2).T @ tx @ T12[:3, :3] @ np.linalg.inv(K1)  # noqa: N806
    x1 = np.c_[k1, np.ones(len(k1))]
    x2 = np.c_[k2, np.ones(len(k2))]
    Fx1, Ftx2 = x1 @ F.T, x2 @ F  # noqa: N806
    return np.abs((x2 * Fx1).sum(1)) / np.sqrt(Fx1[:, 0] ** 2 + Fx1[:, 1] ** 2 + Ftx2[:, 0] ** 2 + Ftx2[:, 1] ** 2)


def test_nerfstudio_room_pairs_are_geometrically_consistent(room):
    meta = json.loads((room / "transforms.json").read_text())
    assert {"fl_x", "fl_y", "cx", "cy", "w", "h"} <= set(meta) and "depth_file_path" in meta["frames"][0]
    fs = frames_from_nerfstudio(room)
    assert len(fs) == 6 and fs.load_depth(0).max() > 0.3
    # views come in clusters, so neighbours overlap
    pairs = select_pairs(fs, min_overlap=0.2)
    assert pairs
    ds = PairDataset([fs], [(0, *pairs[0])], image_size=(48, 64))
    s = ds[0]
    # the GT-depth correspondences land on the same texture in image 2 (exact rendering, same shading)
    p1, _, q2 = depth_correspondences(s["depth1"], s["depth2"], s["K1"], s["K2"], s["T21"], 200,
                                      generator=torch.Generator().manual_seed(0))
    assert len(p1) > 30
    c1 = s["img1"][:, p1[:, 1].long(), p1[:, 0].long()]
    c2 = s["img2"][:, q2[:, 1].long(), q2[:, 0].long()]
    c_rand = s["img2"][:, torch.randint(0, 48, (len(p1),)), torch.randint(0, 64, (len(p1),))]
    assert (c1 - c2).abs().mean() < 0.5 * (c1 - c_rand).abs().mean()
    i, j = pairs[0]
    T = np.linalg.inv(fs.c2w[i]) @ fs.c2w[j]  # noqa: N806
    np.testing.assert_allclose(s["T21"].numpy(), T, atol=1e-5)


def test_resizing_scales_intrinsics(room):
    fs = frames_from_nerfstudio(room)
    s = PairDataset([fs], [(0, 0, 1)], image_size=(24, 32))[0]
    np.testing.assert_allclose(s["K1"].numpy()[:2], fs.K[0][:2] / 4, rtol=1e-6)
    assert s["img1"].shape == (3, 24, 32) and s["depth1"].shape == (24, 32)


def test_matcher_runs_offline_on_a_room(room):
    fs = frames_from_nerfstudio(room)
    method = "xfeat" if xfeat_available() else "sift"
    k1, k2, score = Matcher(method, max_keypoints=256).match(fs.load_image(0), fs.load_image(1))
    assert len(k1) == len(k2) == len(score) and k1.shape[1:] == (2,)
    assert (k1 >= 0).all() and (k1[:, 0] <= 128).all() and (k1[:, 1] <= 96).all()


@pytest.fixture(scope="module")
def castle():
    try:
        return frames_from_castle_simu()
    except DataUnavailable as err:
        pytest.skip(f"Castle-simu not available: {err}")


@pytest.mark.apt
def test_castle_simu_depth_and_poses(castle):
    assert len(castle) == 40 and castle.sizes[0] == (480, 640)
    # depth re-projected into the colour camera agrees across views (it would not with the 5 cm offset ignored)
    assert covisibility(castle, 0, 5, tol=0.01) > 0.9
    methods = ["sift"] + (["xfeat"] if xfeat_available() else [])
    for method in methods:  # matches agree with the ground-truth epipolar geometry (keypoint centres at +0.5)
        k1, k2, _ = Matcher(method, max_keypoints=512).match(castle.load_image(0), castle.load_image(5))
        err = _sampson(k1, k2, castle.K[0], castle.K[5], np.linalg.inv(castle.c2w[0]) @ castle.c2w[5])
        assert len(k1) > 20 and np.median(err) < 1.0, method


def test_scannet1500_and_megadepth1500_lists(tmp_path):
    from PIL import Image

    root = tmp_path / "scannet1500"
    scene = root / "scannet_test_1500" / "scene0707_00"
    for sub in ("color", "pose", "intrinsic"):
        (scene / sub).mkdir(parents=True)
    np.savez(root / "test.npz", name=np.array([[707, 0, 15, 45]]))
    K = np.array([[577.0, 0, 319.5, 0], [0, 578.0, 239.5, 0], [0, 0, 1, 0], [0, 0, 0, 1]])  # noqa: N806
    np.savetxt(scene / "intrinsic" / "intrinsic_depth.txt", K)
    poses = {15: np.eye(4), 45: np.eye(4)}
    poses[45][:3, 3] = [0.2, 0, 0]
    for f, p in poses.items():
        np.savetxt(scene / "pose" / f"{f}.txt", p)
        Image.fromarray(np.zeros((480, 640, 3), np.uint8)).save(scene / "color" / f"{f}.jpg")
    fs, pairs = scannet1500_pairs(root)
    s = PairDataset([fs], pairs, (48, 64))[0]
    np.testing.assert_allclose(s["T21"][:3, 3].numpy(), [0.2, 0, 0], atol=1e-6)
    assert not s["has_depth"]

    md = tmp_path / "megadepth1500"
    (md / "Undistorted_SfM" / "0015" / "images").mkdir(parents=True)
    names = ["Undistorted_SfM/0015/images/a.jpg", "Undistorted_SfM/0015/images/b.jpg"]
    w2c = np.eye(4)
    w2c[:3, 3] = [0, 0, -1.0]
    meta = {names[0]: {"intrinsic": np.eye(3), "pose": np.eye(4)}, names[1]: {"intrinsic": np.eye(3), "pose": w2c}}
    np.savez(md / "megadepth_meta_test.npz", **{k: np.array(v, dtype=object) for k, v in meta.items()})
    (md / "megadepth_test_pairs.txt").write_text(" ".join(names) + "\n")
    for n in names:
        Image.fromarray(np.zeros((30, 40, 3), np.uint8)).save(md / n)
    fs, pairs = megadepth1500_pairs(md)
    assert pairs == [(0, 0, 1)] and fs.sizes[0] == (30, 40)
    np.testing.assert_allclose((np.linalg.inv(fs.c2w[0]) @ fs.c2w[1])[:3, 3], [0, 0, 1.0])
    with pytest.raises(DataUnavailable, match="test.npz"):
        scannet1500_pairs(tmp_path / "nowhere")


def test_mirrored_pairs_keep_their_geometry_exact(room):
    """A mirrored pair is a true pair: GT correspondences of the original, mirrored (x -> W - x), are the
    correspondences of the mirrored pair under its own depth, intrinsics and pose; pixels keep their colours."""
    fs = frames_from_nerfstudio(room)
    i, j = select_pairs(fs, min_overlap=0.2)[0]
    ds = PairDataset([fs], [(0, i, j), (0, j, i)], image_size=(48, 64), matcher=Matcher("sift", max_keypoints=64))
    batch = collate([ds[0], ds[1]])
    out = mirror_pairs(batch, torch.tensor([True, False]))
    w = 64
    for key in ("img1", "img2", "depth1", "depth2", "T21", "K1", "K2", "matches"):  # the unselected pair is untouched
        assert torch.equal(out[key][1], batch[key][1]), key
    R = out["T21"][0, :3, :3]  # noqa: N806
    assert torch.allclose(R @ R.T, torch.eye(3), atol=1e-5) and torch.det(R) > 0.99
    p1, X1, q2 = depth_correspondences(batch["depth1"][0], batch["depth2"][0], batch["K1"][0], batch["K2"][0],  # noqa: N806
                                       batch["T21"][0], 200, generator=torch.Generator().manual_seed(0))
    assert len(p1) > 30
    flip = torch.tensor([-1.0, 1.0])
    shift = torch.tensor([float(w), 0.0])
    p1m = p1 * flip + shift
    z = out["depth1"][0][p1m[:, 1].long(), p1m[:, 0].long()]
    torch.testing.assert_close(z, X1[:, 2])  # the mirrored depth sits under the mirrored pixel
    X1m = unproject_points(p1m[None], z[None], out["K1"][0][None])[0]  # noqa: N806
    q2m, _ = project_points(transform_points(invert_pose(out["T21"][0]), X1m)[None], out["K2"][0][None])
    torch.testing.assert_close(q2m[0], q2 * flip + shift, atol=1e-3, rtol=0)
    torch.testing.assert_close(out["img2"][0][:, q2m[0, :, 1].long(), q2m[0, :, 0].long()],
                               batch["img2"][0][:, q2[:, 1].long(), q2[:, 0].long()])
    m, mm = batch["matches"][0], batch["match_mask"][0]
    assert mm.any()
    torch.testing.assert_close(out["matches"][0][mm][:, 0::2], w - m[mm][:, 0::2])
    assert torch.equal(out["matches"][0][~mm], m[~mm])
    skewed = dict(batch, K1=batch["K1"].clone())
    skewed["K1"][:, 0, 1] = 0.5  # a skew changes sign under the mirror (x' = W - x), the rest of K stays
    K1m = mirror_pairs(skewed, torch.tensor([True, False]))["K1"]  # noqa: N806
    assert float(K1m[0, 0, 1]) == -0.5 and float(K1m[1, 0, 1]) == 0.5
    twice = mirror_pairs(out, torch.tensor([True, False]))
    for key in ("img1", "depth2", "T21", "K2", "matches"):
        torch.testing.assert_close(twice[key], batch[key])


def test_seen_scene_split_leaks_no_view(tmp_path_factory):
    """Same scenes on both sides, but no image of a test pair appears in any training pair."""
    scenes = [frames_from_nerfstudio(small_room(tmp_path_factory, seed=s, width=64, height=48, n_views=12))
              for s in (11, 12)]
    kw = dict(min_overlap=0.1, max_rotation_deg=90.0)
    train, test = seen_scene_split(scenes, test_fraction=0.4, train_pairs_per_scene=None, test_pairs_per_scene=None, **kw)
    assert train and test
    assert {s for s, _, _ in test} == {s for s, _, _ in train} == {0, 1}
    for s in (0, 1):
        train_views = {v for sc, i, j in train if sc == s for v in (i, j)}
        test_views = {v for sc, i, j in test if sc == s for v in (i, j)}
        assert test_views and not train_views & test_views
        assert len(test_views) <= 5  # round(0.4 * 12) held out
    # the pairs joining a held-out and a training view are the ones the split drops
    assert len(train) + len(test) < sum(len(select_pairs(fs, None, **kw)) for fs in scenes)
    assert seen_scene_split(scenes, 0.4, None, None, **kw) == (train, test)  # seeded
    assert seen_scene_split(scenes, 0.4, None, None, seed=1, **kw)[1] != test
    with pytest.raises(ValueError, match="test_fraction"):
        seen_scene_split(scenes, 1.0)

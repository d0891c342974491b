"""Lens distortion: a scene taken through a lens (apply_lens) and resampled back onto its pinhole camera
(resample_to_undistorted) is the scene again."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from PIL import Image

from vision3d.data.lens import apply_lens, resample_to_undistorted
from vision3d.errors import Vision3DError

LENS = (-0.12, 0.03, 0.0, 0.0, 0.004, -0.003)


def camera(size=(48, 64), focal=40.0, lens=None) -> Cameras:
    h, w = size
    return Cameras(camera_to_worlds=torch.eye(4)[None, :3], fx=focal, fy=focal, cx=w / 2, cy=h / 2, width=w, height=h,
                   distortion_params=None if lens is None else torch.tensor([lens]))


def test_a_scene_through_a_lens_resamples_back_to_its_pinhole_images(tmp_path):
    scene = tmp_path / "scene"
    (scene / "images").mkdir(parents=True)
    rows, cols = np.mgrid[0:48, 0:64].astype(np.float64)
    pinhole = np.stack([128 + 100 * np.sin(cols / 6), 128 + 100 * np.cos(rows / 7), 128 + 60 * np.sin((rows + cols) / 9)], -1)
    Image.fromarray(np.round(pinhole).astype(np.uint8)).save(scene / "images/0.png")
    meta = {"camera_model": "OPENCV", "fl_x": 40.0, "fl_y": 40.0, "cx": 32.0, "cy": 24.0, "w": 64, "h": 48,
            "frames": [{"file_path": "images/0.png", "transform_matrix": np.eye(4).tolist(), "depth_file_path": "d.png"}],
            "ply_file_path": "sparse_pc.ply"}
    (scene / "transforms.json").write_text(json.dumps(meta))
    out = apply_lens(scene, tmp_path / "lens", LENS)
    written = json.loads((out / "transforms.json").read_text())
    assert (written["k1"], written["k2"], written["p1"], written["p2"]) == (LENS[0], LENS[1], LENS[4], LENS[5])
    assert "depth_file_path" not in written["frames"][0] and "ply_file_path" not in written
    distorted = np.asarray(Image.open(out / "images/0.png")).astype(np.float32)
    assert np.abs(distorted - pinhole).mean() > 5  # the lens moved the pixels

    back, inside = resample_to_undistorted(torch.from_numpy(distorted), camera(lens=LENS), camera(), cv2.INTER_LINEAR)
    error = np.abs(back.numpy() - pinhole).max(-1)
    core = np.zeros((48, 64), bool)
    core[4:-4, 4:-4] = True  # a barrel lens's view covers the pinhole's: only the border resamples edge colours
    assert inside.numpy()[core].all() and error[core].mean() < 2.0 and np.percentile(error[core], 99) < 8.0


def test_without_distortion_the_resampling_returns_the_array_itself():
    values = torch.rand(48, 64)
    same, inside = resample_to_undistorted(values, camera(), camera())
    assert same is values and inside.all()



def test_a_fisheye_lens_is_refused_by_name():
    fisheye = Cameras(camera_to_worlds=torch.eye(4)[None, :3], fx=40.0, fy=40.0, cx=32.0, cy=24.0, width=64, height=48,
                      distortion_params=torch.tensor([LENS]), camera_type=CameraType.FISHEYE)
    with pytest.raises(Vision3DError, match="fisheye camera: per-pixel data"):
        resample_to_undistorted(torch.rand(48, 64), fisheye, camera())

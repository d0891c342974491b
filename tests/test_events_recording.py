"""``fit_recording``, the library function behind ``v3d flow fit``, called directly as a notebook would."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from pose_helpers import one_thread  # noqa: F401  (autouse fixture: importing it applies it here)

import vision3d.events.recording as recording
from vision3d.events.emoflow import EMoFlowConfig, fit_window
from vision3d.events.io import read_events, write_events
from vision3d.events.simulator import Plane, PlaneSceneConfig, simulate_plane_sequence
from vision3d.events.windows import time_windows

ITERATIONS = 20


@pytest.fixture(scope="module")
def recorded(tmp_path_factory):
    """A 32×24 rotating-camera recording (40 ms) written to disk, and its camera."""
    cfg = PlaneSceneConfig(planes=[Plane(point=(0, 0, 2.5), normal=(0, 0, -1), texture="astronaut")],
                           width=32, height=24)  # fmt: skip
    seq = simulate_plane_sequence(np.zeros(3), np.array([0.0, 3.0, 0.0]), 0.04, cfg)
    path = write_events(tmp_path_factory.mktemp("rec") / "events.npz", seq.events)
    return path, seq.camera


def cpu_config() -> EMoFlowConfig:
    cfg = EMoFlowConfig.cpu(ITERATIONS)
    cfg.device = "cpu"  # bit-exact comparisons: CUDA's scatter-adds are not deterministic
    return cfg


def test_fit_recording_writes_what_fit_window_computes(recorded, tmp_path):
    path, camera = recorded
    calls = []
    fit = recording.fit_recording(path, camera, tmp_path / "out", cpu_config(), window_ms=10, max_windows=2,
                                  progress=lambda *a: calls.append(a))  # fmt: skip
    assert fit.windows_planned == 2 and not fit.interrupted
    assert [c[:2] for c in calls] == [(0, 2)] * ITERATIONS + [(1, 2)] * ITERATIONS
    assert [c[2] for c in calls[:ITERATIONS]] == list(range(ITERATIONS))
    # the second window's flow on disk is the one fit_window gives on the same events (same seed)
    stream = read_events(path)
    win = time_windows(stream, 10_000)[1]
    xy, t, p = stream.to_torch()
    t0 = int(stream.t[0])
    direct = fit_window(xy[win.slice], t[win.slice], camera, cpu_config(),
                        ((win.t_start_us - t0) * 1e-6, (win.t_end_us - t0) * 1e-6), p[win.slice])  # fmt: skip
    assert np.array_equal(np.load(tmp_path / "out" / "flow_001.npy"), direct.flow.numpy())
    csv = np.loadtxt(tmp_path / "out" / "velocities.csv", delimiter=",", skiprows=1)
    assert csv.shape == (22, 7) and np.allclose(csv, fit.velocities, atol=1e-6)
    assert np.allclose(csv[11:, 4:], direct.w, atol=1e-5)
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary == json.loads(json.dumps(fit.summary))
    assert summary["device"] == "cpu"
    assert summary["config"]["schedule"]["iterations"] == ITERATIONS
    assert [w["events"] for w in summary["windows"]] == [len(w) for w in time_windows(stream, 10_000)[:2]]


def test_ctrl_c_in_the_first_window_writes_nothing(recorded, tmp_path, monkeypatch):
    def ctrl_c(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(recording, "fit_window", ctrl_c)
    fit = recording.fit_recording(recorded[0], recorded[1], tmp_path / "out", window_ms=10)
    assert fit.interrupted and fit.summary["windows"] == [] and fit.velocities.shape == (0, 7)
    assert not (tmp_path / "out").exists()


def test_bad_device_is_refused_before_reading(tmp_path):
    cfg = EMoFlowConfig.cpu(ITERATIONS)
    cfg.device = "gpu0"
    with pytest.raises(ValueError, match="unknown device 'gpu0'"):
        recording.fit_recording(tmp_path / "absent.npz", tmp_path / "cam.yaml", tmp_path / "out", cfg)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (E-MoFlow's device='cuda' path)")
def test_fit_window_on_cuda_agrees_with_cpu(recorded):
    stream = read_events(recorded[0])
    xy, t, p = stream.to_torch()
    fits = {}
    for device in ("cpu", "cuda"):
        cfg = EMoFlowConfig.cpu(ITERATIONS)
        cfg.device = device
        cfg.loss.dec_warmup = 5  # the DEC, the spline and the sign resolution run on the device too
        fits[device] = fit_window(xy, t, recorded[1], cfg, None, p)
    cpu, gpu = fits["cpu"], fits["cuda"]
    assert gpu.flow.device.type == "cpu" and np.isfinite(gpu.flow.numpy()).all()
    assert abs(gpu.history["loss"][0] - cpu.history["loss"][0]) < 1e-3 * abs(cpu.history["loss"][0])
    assert np.abs(gpu.flow.numpy().mean((0, 1)) - cpu.flow.numpy().mean((0, 1))).max() < 1.0
    assert np.allclose(np.linalg.norm(gpu.v, axis=1), 1, atol=1e-4)


ROS_CAMERA = """image_width: 32
image_height: 24
camera_matrix: {rows: 3, cols: 3, data: [30.0, 0.0, 15.5, 0.0, 30.0, 11.5, 0.0, 0.0, 1.0]}
distortion_model: plumb_bob
distortion_coefficients: {rows: 1, cols: 5, data: [-0.3, 0.1, 0.001, -0.002, 0.0]}
"""


def test_a_lens_in_the_camera_file_is_undone_on_the_event_coordinates(tmp_path):
    """A ROS camera_info's plumb_bob coefficients are read; an event seen through that lens moves to where the
    pinhole camera with the same K sees its ray; fisheye models and malformed coefficients are refused by name."""
    import cv2

    from vision3d.events.geometry import CameraFileError, load_camera, load_distortion, undistort_events

    path = tmp_path / "davis.yaml"
    path.write_text(ROS_CAMERA)
    camera, lens = load_camera(path), load_distortion(path)
    assert lens.tolist() == [-0.3, 0.1, 0.001, -0.002, 0.0]
    rays = np.stack(np.meshgrid(np.linspace(-0.5, 0.5, 7), np.linspace(-0.35, 0.35, 5)), -1).reshape(-1, 2)
    K = np.array([[30.0, 0, 15.5], [0, 30.0, 11.5], [0, 0, 1]])  # noqa: N806
    seen, _ = cv2.projectPoints(np.c_[rays, np.ones(len(rays))], np.zeros(3), np.zeros(3), K, lens)  # through the lens
    pinhole = rays * 30.0 + [15.5, 11.5]  # OpenCV pixel coordinates = event indices
    moved = undistort_events(torch.from_numpy(seen.reshape(-1, 2)).float(), camera, lens)
    assert np.abs(moved.numpy() - pinhole).max() < 1e-3
    assert np.abs(seen.reshape(-1, 2) - pinhole).max() > 1.0  # the lens moved the corners by pixels
    plain = tmp_path / "plain.yaml"
    plain.write_text("fx: 30\nfy: 30\ncx: 15.5\ncy: 11.5\nwidth: 32\nheight: 24\n")
    assert load_distortion(plain) is None
    for text, problem in [("distortion_model: equidistant\nD: [0.1, 0.0, 0.0, 0.0]\n", "not supported"),
                          ("D: [0.1, 0.2]\n", "4, 5 or 8 finite"), ("D: [a, b, c, d]\n", "must be numbers")]:
        path.write_text(ROS_CAMERA.split("distortion_model")[0] + text)
        with pytest.raises(CameraFileError, match=problem):
            load_distortion(path)


def test_fit_recording_fits_the_undistorted_events_of_a_camera_with_a_lens(recorded, tmp_path):
    from vision3d.events.geometry import load_camera, load_distortion, undistort_events

    path, _ = recorded
    camera_file = tmp_path / "davis.yaml"
    camera_file.write_text(ROS_CAMERA)
    notes = []
    fit = recording.fit_recording(path, camera_file, tmp_path / "out", cpu_config(), window_ms=10, max_windows=1,
                                  log=notes.append)  # fmt: skip
    assert fit.summary["distortion"] == [-0.3, 0.1, 0.001, -0.002, 0.0]
    assert any("undistorted" in note for note in notes)
    stream = read_events(path)
    win = time_windows(stream, 10_000)[0]
    xy, t, p = stream.to_torch()
    camera = load_camera(camera_file)
    xy = undistort_events(xy, camera, load_distortion(camera_file))
    direct = fit_window(xy[win.slice], t[win.slice], camera, cpu_config(), (0.0, (win.t_end_us - int(stream.t[0])) * 1e-6),
                        p[win.slice])  # fmt: skip
    assert np.array_equal(np.load(tmp_path / "out" / "flow_000.npy"), direct.flow.numpy())

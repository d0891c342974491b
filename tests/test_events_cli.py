"""``v3d flow simulate`` -> ``v3d flow fit`` end to end on a tiny sensor; ``show`` on real files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from vision3d.events.cli import app
from vision3d.events.geometry import CameraFileError, load_camera

runner = CliRunner()


def test_simulate_then_fit(tmp_path):
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    sim = tmp_path / "sim"
    r = runner.invoke(
        app,
        [
            "simulate",
            str(sim),
            "--duration",
            "0.04",
            "--width",
            "32",
            "--height",
            "24",
            "--w",
            "0,3,0",
            "--fmt",
            "h5",
        ],
    )
    assert r.exit_code == 0, r.output
    assert (sim / "events.h5").exists() and (sim / "camera.yaml").exists()
    gt = np.load(sim / "ground_truth.npz")
    assert gt["flow_px_per_s"].shape[1:] == (24, 32, 2) and np.allclose(gt["w"], [0, 3, 0])
    out = tmp_path / "fit"
    r = runner.invoke(
        app,
        [
            "fit",
            str(sim / "events.h5"),
            "--camera",
            str(sim / "camera.yaml"),
            "--output",
            str(out),
            "--window-ms",
            "20",
            "--iterations",
            "40",
            "--max-windows",
            "1",
        ],
    )
    assert r.exit_code == 0, r.output
    for name in ("flow_000.npy", "velocities.csv", "velocities.png", "window_000.png", "summary.json"):
        assert (out / name).exists(), name
    assert np.load(out / "flow_000.npy").shape == (24, 32, 2)
    summary = json.loads((out / "summary.json").read_text())
    assert summary["windows"][0]["events"] > 100 and summary["windows"][0]["var_after"] > 0
    vel = np.loadtxt(out / "velocities.csv", delimiter=",", skiprows=1)
    assert vel.shape[1] == 7 and np.allclose(np.linalg.norm(vel[:, 1:4], axis=1), 1, atol=1e-4)
    torch.set_num_threads(n)


def test_fit_interrupted_keeps_the_windows_already_fitted(tmp_path, monkeypatch):
    import vision3d.events.recording as recording

    sim = tmp_path / "sim"
    args = ["--duration", "0.04", "--width", "32", "--height", "24", "--w", "0,3,0"]
    assert runner.invoke(app, ["simulate", str(sim), *args]).exit_code == 0
    real, calls = recording.fit_window, []

    def fit_then_ctrl_c(*a, **k):
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return real(*a, **k)

    monkeypatch.setattr(recording, "fit_window", fit_then_ctrl_c)
    out = tmp_path / "fit"
    r = runner.invoke(app, ["fit", str(sim / "events.npz"), "--camera", str(sim / "camera.yaml"), "--output", str(out),
                            "--window-ms", "10", "--iterations", "20", "--max-windows", "3"])  # fmt: skip
    assert r.exit_code == 130, r.output
    assert "1 of 3 windows" in r.output
    summary = json.loads((out / "summary.json").read_text())
    assert summary["interrupted"] and [w["window"] for w in summary["windows"]] == [0]
    vel = np.loadtxt(out / "velocities.csv", delimiter=",", skiprows=1)
    assert vel.shape[1] == 7 and (out / "velocities.png").exists() and not (out / "flow_001.npy").exists()


def test_fit_reports_bad_file(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_text("0.1 1 2\n")
    cam = tmp_path / "cam.yaml"
    cam.write_text("fx: 20\nfy: 20\ncx: 8\ncy: 6\nwidth: 16\nheight: 12\n")
    r = runner.invoke(app, ["fit", str(bad), "--camera", str(cam)])
    assert r.exit_code != 0
    assert "bad.txt" in str(r.exception) and "4 columns" in str(r.exception)


@pytest.mark.parametrize(
    "args",
    [["--v", "1,x,3"], ["--v", "1,2"], ["--w", "1,2,nan"], ["--duration", "0"], ["--duration", "-1"], ["--width", "0"],
     ["--fov", "0"], ["--fov", "200"], ["--threshold", "-0.1"], ["--noise-rate", "-1"], ["--gt-step-ms", "0"]],
)  # fmt: skip
def test_simulate_rejects_nonsense_options(tmp_path, args):
    r = runner.invoke(app, ["simulate", str(tmp_path / "out"), *args])
    assert r.exit_code == 2 and "Invalid value" in r.output and args[0] in r.output, r.output
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    "args",
    [["--iterations", "0"], ["--window-ms", "-5"], ["--downscale", "0"], ["--window-events", "0"],
     ["--max-windows", "-1"], ["--start-s", "-1"], ["--preset", "foo"], ["--device", "gpu0"], ["--device", "meta"]],
)  # fmt: skip
def test_fit_rejects_nonsense_options_before_reading_events(tmp_path, args):
    r = runner.invoke(app, ["fit", str(tmp_path / "missing.npz"), "--camera", str(tmp_path / "cam.yaml"), *args])
    assert r.exit_code == 2 and "Invalid value" in r.output and args[0] in r.output, r.output


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        (None, "no such camera file"),
        ("{{{", "malformed YAML"),
        ("- 1\n- 2\n", "expected a mapping"),
        ("fx: 100\n", "has fx but not fy, cx, cy"),
        ("K: [1, 2, 3]\nwidth: 4\nheight: 3\n", "K must have 9 numbers"),
        ("fx: a\nfy: 1\ncx: 1\ncy: 1\nwidth: 4\nheight: 3\n", "intrinsics must be numbers"),
        ("fx: 10\nfy: 10\ncx: 1\ncy: 1\n", "needs width and height"),
        ("fx: -1\nfy: 10\ncx: 1\ncy: 1\nwidth: 4\nheight: 3\n", "fx, fy > 0"),
    ],
)
def test_bad_camera_file_is_named_with_its_problem(tmp_path, text, problem):
    cam = tmp_path / "cam.yaml"
    if text is not None:
        cam.write_text(text)
    with pytest.raises(CameraFileError, match=problem) as err:
        load_camera(cam)
    assert str(cam) in str(err.value)


def test_show_real_file(shared_data, tmp_path):
    r = runner.invoke(
        app, ["show", str(shared_data / "events" / "davis346.aedat4"), "--picture", str(tmp_path / "e.png")]
    )
    assert r.exit_code == 0, r.output
    assert "78,830" in r.output and "346×260" in r.output and "IMU" in r.output
    assert (tmp_path / "e.png").stat().st_size > 1000

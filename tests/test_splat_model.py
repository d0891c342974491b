"""The CPU-capable splatfacto: trains through nerfstudio's trainer, improves held-out PSNR, exports, survives Ctrl-C."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from vision3d.data.bundled import bundled_scene_path
from vision3d.methods import run
from vision3d.methods.splat.config import vision3d_splat
from vision3d.methods.splat.model import camera_to_viewmat

NS_TRAIN = Path(sys.executable).parent / "ns-train"
STEP_ROW = re.compile(r"(?m)^\s*(\d+) \(\d+\.\d+%\)")


def test_viewmat_matches_opencv_inverse():
    c2w = torch.eye(4)[:3].clone()
    c2w[:, 3] = torch.tensor([1.0, 2.0, 3.0])
    view = camera_to_viewmat(c2w[None])[0]
    # A point 2 units in front of an OpenGL camera (along -Z) has OpenCV depth +2.
    point = torch.tensor([1.0, 2.0, 1.0, 1.0])
    assert torch.allclose(view @ point, torch.tensor([0.0, 0.0, 2.0, 1.0]))


def test_ns_train_lists_our_method():
    result = subprocess.run([str(NS_TRAIN), "-h"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "vision3d-splat" in result.stdout


def test_seed_points_start_the_model(tmp_path):
    """The scene's sparse_pc.ply reaches the model: it starts from the (split-filtered) points and their
    colours (plus the optional background sphere), and renders held-out views far better than random init."""
    scene = bundled_scene_path()
    scores, models = {}, {}
    for init in ("seeded", "random", "sphere"):
        config = run.configure(vision3d_splat.config, scene, tmp_path / init, max_steps=1, num_train_views=12)
        config.pipeline.model.random_init = init == "random"
        config.pipeline.model.num_background_points = 300 if init == "sphere" else 0
        trainer = run.train(config)
        models[init] = trainer.pipeline.model
        if init != "sphere":
            scores[init] = run.mean_metrics(run.evaluate(trainer))["psnr"]
    seeds = trainer.pipeline.datamanager.train_dataparser_outputs.metadata["points3D_xyz"]
    assert 3000 < len(seeds) < 4000  # those that 2 of the 12 training views see
    assert models["seeded"].num_points == len(seeds)
    assert torch.allclose(models["seeded"].means, seeds, atol=1e-3)  # one step of Adam at lr 1.6e-4
    assert models["random"].num_points == models["random"].config.num_random
    sphere = models["sphere"]
    assert sphere.num_points == len(seeds) + 300
    radius = sphere.means[len(seeds) :].detach().norm(dim=-1)
    assert torch.allclose(radius, torch.full_like(radius, sphere.config.background_radius), rtol=1e-3)
    assert scores["seeded"] > scores["random"] + 4.0, scores  # measured: 17.0 vs 10.8 dB


def test_a_capture_without_seed_points_starts_from_random_points(tmp_path):
    """No ply_file_path (a user's capture without COLMAP points): splatfacto's random initialisation."""
    from scene_factory import write_scene

    scene = write_scene(tmp_path / "scene", n_views=6)
    config = run.configure(vision3d_splat.config, scene, tmp_path / "out", max_steps=1)
    trainer = run.train(config)
    assert trainer.pipeline.datamanager.train_dataparser_outputs.metadata.get("points3D_xyz") is None
    assert trainer.pipeline.model.num_points == config.pipeline.model.num_random


@pytest.mark.slow
def test_training_improves_held_out_psnr_and_exports(tmp_path):
    scene = bundled_scene_path()
    before = run.configure(vision3d_splat.config, scene, tmp_path / "a", max_steps=1, num_train_views=12)
    untrained = run.mean_metrics(run.evaluate(run.train(before)))
    config = run.configure(vision3d_splat.config, scene, tmp_path / "b", max_steps=300, num_train_views=12)
    config.pipeline.model.warmup_length = 100
    config.pipeline.model.refine_every = 50
    trainer = run.train(config)
    trained = run.mean_metrics(run.evaluate(trainer, picture_dir=tmp_path / "pics"))
    assert trained["psnr"] > untrained["psnr"] + 3.0, (untrained, trained)
    # The seed points start on the surface (untrained AbsRel 0.06; random init 0.65); densifying every 50
    # steps up to the end moves some of them: measured 0.12 after 300 steps with the packages installed on
    # 2026-12-04, 0.203 with those of 2026-12-05 (numba 0.68.1, same torch/gsplat/nerfstudio) for the same
    # code (61f28db), deterministically; the bound still fails for a model that lost the surface.
    assert trained["depth_abs_rel"] < 0.25
    assert (tmp_path / "pics" / "view00_error.png").is_file()
    # Densification ran on CPU (the 2D mean gradients reached gsplat's DefaultStrategy).
    seeds = trainer.pipeline.datamanager.train_dataparser_outputs.metadata["points3D_xyz"]
    assert trainer.pipeline.model.num_points != len(seeds)
    ply = run.export_splat_ply(trainer, tmp_path / "splat.ply")
    header = ply.read_bytes()[:2000].decode(errors="ignore")
    assert f"element vertex {trainer.pipeline.model.num_points}" in header and "f_dc_0" in header


@pytest.mark.slow
def test_ctrl_c_leaves_a_usable_checkpoint(tmp_path):
    cmd = [str(NS_TRAIN), "vision3d-splat", "--data", str(bundled_scene_path()), "--output-dir", str(tmp_path),
           "--vis", "tensorboard", "--max-num-iterations", "100000", "--timestamp", "run",
           "--pipeline.model.num-random", "500"]
    # A terminal delivers Ctrl-C to a run whose SIGINT is at its default. A shell that starts a job in the
    # background without job control (nohup ... &, as CI may be started) sets SIGINT to "ignored", children inherit
    # that, and Python then installs no KeyboardInterrupt handler: the run would ignore our SIGINT. Restore it.
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # noqa: PLW1509
    lines: list[str] = []
    reader = threading.Thread(target=lambda: [lines.append(line) for line in proc.stdout], daemon=True)
    reader.start()  # drains the pipe while we wait, so the run never blocks on a full stdout

    def steps_logged() -> int:  # nerfstudio's progress table: rows "20 (0.02%)  ..."
        return max((int(m) for m in STEP_ROW.findall("".join(lines))), default=-1)

    try:
        # interrupt once training is stepping (on a clean clone the first steps compile the Numba kernels)
        deadline = time.time() + 480
        while time.time() < deadline and steps_logged() < 20 and proc.poll() is None:
            time.sleep(0.5)
        assert steps_logged() >= 20, "".join(lines)[-3000:]
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=120)
        reader.join(timeout=10)
    finally:
        proc.kill()
    out = "".join(lines)
    checkpoints = list(tmp_path.rglob("step-*.ckpt"))
    assert checkpoints, out[-3000:]
    state = torch.load(checkpoints[0], map_location="cpu", weights_only=False)
    means = state["pipeline"]["_model.gauss_params.means"]
    assert means.shape[1] == 3 and np.isfinite(means.numpy()).all()
    assert "Interrupted: saved a checkpoint" in out

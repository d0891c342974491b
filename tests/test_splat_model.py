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
from vision3d.openmp import without_spin_settings

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
                            env={**without_spin_settings(os.environ), "PYTHONUNBUFFERED": "1"},
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
    if not torch.cuda.is_available():  # a CPU run under libgomp's default spin says how to avoid its slowdown
        assert "export GOMP_SPINCOUNT=3000" in out.replace("\n", " "), out[:3000]


def _moved_copy(scene: Path, folder: Path, shift: np.ndarray) -> Path:
    """``scene`` with every camera and seed point translated by ``shift`` (its images and depths shared)."""
    import json

    import open3d as o3d

    from vision3d.data.sparse_points import write_ply

    folder.mkdir()
    meta = json.loads((scene / "transforms.json").read_text())
    meta.pop("mesh_file_path", None)
    meta.pop("object_mesh_file_path", None)
    for frame in meta["frames"]:
        for row, offset in zip(frame["transform_matrix"], shift, strict=False):
            row[3] += float(offset)
    points = o3d.io.read_point_cloud(str(scene / meta["ply_file_path"]))
    write_ply(folder / meta["ply_file_path"], np.asarray(points.points) + shift, np.asarray(points.colors) * 255)
    (folder / "transforms.json").write_text(json.dumps(meta))
    for name in ("images", "depths"):
        (folder / name).symlink_to(scene / name)
    return folder


@pytest.mark.parametrize("method", ["vision3d-splat", "det-gs"])
def test_a_scene_in_other_units_and_place_trains_the_same(tmp_path, method):
    """The bundled scene in its own frame, and moved then scaled x100: a 20-step run (seed points, a background
    sphere, densifying three times) gives Gaussians that map by x -> 100 (x + shift), the same held-out renders
    and the same held-out PSNR and depth AbsRel (issue 23).
    With the splat lengths in world units (size thresholds, means' rate, near plane, a sphere about the origin)
    the x100 run ended with 5191 Gaussians against 5023."""
    from vision3d.methods.det_gs.config import det_gs

    shift = np.array([0.7, -0.4, 0.3])
    scenes = {1.0: bundled_scene_path(), 100.0: _moved_copy(bundled_scene_path(), tmp_path / "moved", shift)}
    trainers = {}
    for scale, scene in scenes.items():
        config = {"vision3d-splat": vision3d_splat, "det-gs": det_gs}[method].config
        config = run.configure(config, scene, tmp_path / str(scale), max_steps=20, num_train_views=6)
        parser = config.pipeline.datamanager.dataparser
        parser.orientation_method, parser.center_method, parser.auto_scale_poses = "none", "none", False
        parser.scale_factor, parser.num_test_views = scale, 6
        config.pipeline.datamanager.camera_res_scale_factor = 0.5
        model = config.pipeline.model
        model.warmup_length, model.refine_every, model.stop_split_at = 5, 5, 20
        model.num_background_points = 200
        if method == "det-gs":
            config.pipeline.datamanager.depth_prior.source = "monocular_like"
        trainers[scale] = run.train(config)
    models = {scale: trainer.pipeline.model for scale, trainer in trainers.items()}
    extent = models[100.0].camera_extent
    assert extent == pytest.approx(100 * models[1.0].camera_extent, rel=1e-5)
    assert models[100.0].num_points == models[1.0].num_points > 3200  # seeds, sphere and densification
    moved = (models[1.0].means.detach().double() + torch.from_numpy(shift)) * 100
    apart = (models[100.0].means.detach().double() - moved).norm(dim=-1) / extent  # in camera extents
    resized = (models[100.0].scales.detach() - models[1.0].scales.detach() - np.log(100)).abs().max(dim=-1).values
    # Float rounding flips the sign of a few near-zero gradients (of the far, faint sphere's Gaussians) and Adam
    # turns them into lr-sized steps, so a few Gaussians drift apart (measured: 0.2 %, at most 0.034 extents).
    same = (apart < 1e-4) & (resized < 1e-3)
    assert same.float().mean() > 0.99 and apart.max() < 0.05, (same.float().mean(), apart.max())

    renders = {}
    for scale, trainer in trainers.items():
        camera = trainer.pipeline.datamanager.eval_dataset.cameras[0:1]
        with torch.no_grad():
            renders[scale] = models[scale].eval().get_outputs_for_camera(camera)
    assert torch.allclose(renders[100.0]["rgb"], renders[1.0]["rgb"], atol=1e-3)
    relative = (renders[100.0]["depth"] / (100 * renders[1.0]["depth"]) - 1).abs()
    assert (relative < 1e-3).float().mean() > 0.999 and relative.max() < 0.05, relative.max()
    scores = {scale: run.mean_metrics(run.evaluate(trainer)) for scale, trainer in trainers.items()}
    assert scores[100.0]["psnr"] == pytest.approx(scores[1.0]["psnr"], abs=0.01), scores
    assert scores[100.0]["depth_abs_rel"] == pytest.approx(scores[1.0]["depth_abs_rel"], abs=1e-3), scores

"""nerfstudio's evaluation of every method: what ``ns-train METHOD --vis tensorboard`` (or wandb) runs, and ``ns-eval``.

With a tensorboard or wandb writer nerfstudio evaluates every 500 steps (an eval ray batch's losses, one eval
image's metrics, all eval images' metrics, in its train loop), a path that ``run.configure`` turns off for
the other tests. Here each method trains a few steps with all three evaluations at its last step, through
``Trainer.train`` as ``ns-train`` runs it, and the tensorboard events must hold finite results of each; then
``ns-eval`` loads the run's final checkpoint and writes its metrics.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from method_runs import helixsurf_config, ir_nerf_config, romap_config
from nerfstudio.scripts.eval import ComputePSNR
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from vision3d.data.bundled import bundled_scene_path
from vision3d.methods import run


def _det_gs(root):
    from vision3d.methods.det_gs.config import det_gs

    config = run.configure(det_gs.config, bundled_scene_path(), root, max_steps=3, num_train_views=6)
    config.pipeline.datamanager.depth_prior.source = "monocular_like"
    config.pipeline.datamanager.dataparser.num_test_views = 2
    return config


def _splat(root):
    from vision3d.methods.splat.config import vision3d_splat

    config = run.configure(vision3d_splat.config, bundled_scene_path(), root, max_steps=3, num_train_views=6)
    config.pipeline.datamanager.dataparser.num_test_views = 2
    return config


def _nerfacto(root):
    from vision3d.methods.nerfacto.config import vision3d_nerfacto

    config = run.configure(vision3d_nerfacto.config, bundled_scene_path(), root, max_steps=3)
    config.pipeline.datamanager.train_num_rays_per_batch = config.pipeline.datamanager.eval_num_rays_per_batch = 256
    model = config.pipeline.model  # a sixth of nerfacto's samples per ray: its evaluations render whole images
    model.num_proposal_samples_per_ray, model.num_nerf_samples_per_ray = (32, 16), 8
    return config


METHODS = {
    "det-gs": _det_gs,
    "vision3d-splat": _splat,
    "vision3d-nerfacto": _nerfacto,
    "helixsurf": lambda root: helixsurf_config(root, n_views=12),  # 12 views: nerfstudio holds one out
    "romap": lambda root: romap_config(root, n_views=12),
    "ir-nerf": lambda root: ir_nerf_config(root, max_steps=3),
}
"""A tiny run of each registered method whose data has held-out views (nerfstudio skips evaluation without)."""


@pytest.mark.parametrize("method", METHODS)
def test_ns_train_evaluation_runs_and_logs_finite_results(method, tmp_path):
    config = METHODS[method](tmp_path)
    start = torch.load(config.load_checkpoint)["step"] + 1 if config.load_checkpoint else 0  # as Trainer resumes
    last = start + config.max_num_iterations - 1
    config.steps_per_eval_batch = config.steps_per_eval_image = config.steps_per_eval_all_images = last
    trainer = run.train(config)
    assert trainer.pipeline.datamanager.eval_dataset, "no held-out views: nerfstudio would not evaluate"

    events = EventAccumulator(str(trainer.base_dir)).Reload()
    logged = {tag: events.Scalars(tag) for tag in events.Tags()["scalars"]}
    groups = {"Eval Loss", "Eval Loss Dict", "Eval Images Metrics", "Eval Images Metrics Dict (all images)"}
    for group in groups:
        tags = [tag for tag in logged if tag == group or tag.startswith(group + "/")]
        assert tags, f"{method}: nothing logged under {group!r} (logged: {sorted(logged)})"
        for tag in tags:
            assert {e.step for e in logged[tag]} == {last}, tag  # (twice where two trainers shared the run folder)
            assert math.isfinite(logged[tag][0].value), f"{method}: {tag} = {logged[tag][0].value}"
    assert any(tag.startswith("Eval Images Metrics Dict (all images)/psnr") for tag in logged), sorted(logged)

    ComputePSNR(load_config=trainer.base_dir / "config.yml", output_path=tmp_path / "eval.json").main()
    results = json.loads((tmp_path / "eval.json").read_text())["results"]
    assert math.isfinite(results["psnr"]) and results["psnr"] > 5.0, results

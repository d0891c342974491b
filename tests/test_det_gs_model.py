"""det-gs as an ns-train method: losses wired into nerfstudio's model, end-to-end training on the bundled scene."""

from __future__ import annotations

import pytest
import torch

from vision3d.data.bundled import bundled_scene_path
from vision3d.methods import run
from vision3d.methods.det_gs.config import det_gs
from vision3d.methods.det_gs.model import pool_to
from vision3d.methods.presets import find_preset, ns_train_command


def test_pool_to_averages_valid_pixels_only():
    values = torch.arange(16.0).reshape(4, 4)
    valid = torch.ones(4, 4, dtype=torch.bool)
    valid[0, 0] = False
    pooled, pooled_valid = pool_to(values, valid, (2, 2))
    assert pooled_valid.tolist() == [[False, True], [True, True]]
    assert pooled[0, 0] == pytest.approx((1 + 4 + 5) / 3)
    assert pooled[1, 1] == pytest.approx((10 + 11 + 14 + 15) / 4)


def test_presets_become_ns_train_commands(tmp_path):
    command = ns_train_command("det-gs", find_preset("det-gs", "sparse-3view"), tmp_path, ["--vis", "tensorboard"])
    assert command[1] == "det-gs"
    tail = command[command.index("vision3d-data"):]
    assert tail == ["vision3d-data", "--num-train-views", "3", "--split-seed", "0"]
    assert "--vis" in command[: command.index("vision3d-data")]


def _config(tmp_path, steps, **losses):
    config = run.configure(det_gs.config, bundled_scene_path(), tmp_path, max_steps=steps, num_train_views=6)
    config.pipeline.datamanager.depth_prior.source = "monocular_like"
    config.pipeline.model.num_random = 2000
    for key, value in losses.items():
        setattr(config.pipeline.model.losses, key, value)
    return config


def _one_step_losses(trainer, step):
    pipeline = trainer.pipeline
    pipeline.train()
    pipeline.model.step = step
    pipeline.model.optimizers = trainer.optimizers.optimizers
    _, loss_dict, _ = pipeline.get_train_loss_dict(step)
    return loss_dict


def test_regularizers_enter_the_loss_and_switch_off(tmp_path):
    trainer = run.train(_config(tmp_path / "on", steps=1))
    on_depth_step = _one_step_losses(trainer, step=10)
    assert {"det_gs_depth_hard", "det_gs_depth_soft", "det_gs_edge", "det_gs_tv"} <= on_depth_step.keys()
    off_depth_step = _one_step_losses(trainer, step=11)
    assert "det_gs_depth_hard" not in off_depth_step and "det_gs_edge" in off_depth_step
    loss = sum(on_depth_step.values())
    loss.backward()
    assert trainer.pipeline.model.means.grad.abs().sum() > 0

    baseline = run.train(_config(tmp_path / "off", steps=1, use_depth=False, use_edge=False, use_tv=False))
    assert not any(k.startswith("det_gs") for k in _one_step_losses(baseline, step=10))


@pytest.mark.slow
def test_det_gs_training_improves_held_out_psnr(tmp_path):
    untrained = run.mean_metrics(run.evaluate(run.train(_config(tmp_path / "a", steps=1))))
    trained = run.mean_metrics(run.evaluate(run.train(_config(tmp_path / "b", steps=300))))
    assert trained["psnr"] > untrained["psnr"] + 2.0, (untrained, trained)

"""det-gs as an ns-train method: losses wired into nerfstudio's model, end-to-end training on the bundled scene."""

from __future__ import annotations

import math

import pytest
import torch

from vision3d.data.bundled import bundled_scene_path
from vision3d.geometry.camera import unproject_points
from vision3d.geometry.se3 import invert_pose, transform_points
from vision3d.methods import run
from vision3d.methods.det_gs.config import det_gs
from vision3d.methods.det_gs.losses import canny_edges, edge_mask
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
    assert {"det_gs_depth_hard", "det_gs_edge", "det_gs_tv"} <= on_depth_step.keys()
    # the hard and soft passes take turns on L_depth's steps (depth_passes_alternate)
    assert "det_gs_depth_soft" not in on_depth_step and "det_gs_depth_soft" in _one_step_losses(trainer, step=15)
    off_depth_step = _one_step_losses(trainer, step=11)
    assert "det_gs_depth_hard" not in off_depth_step and "det_gs_edge" in off_depth_step
    loss = sum(on_depth_step.values())
    loss.backward()
    assert trainer.pipeline.model.means.grad.abs().sum() > 0

    baseline = run.train(_config(tmp_path / "off", steps=1, use_depth=False, use_edge=False, use_tv=False))
    assert not any(k.startswith("det_gs") for k in _one_step_losses(baseline, step=10))


def test_viewer_outputs_depth_and_the_edge_mask(tmp_path):
    """Issue 21's modes: a training camera shows the ground truth's Canny edges that drive L_edge there,
    a novel camera the Canny edges of its own render; both as [H, W, 1] floats next to depth."""
    trainer = run.train(_config(tmp_path, steps=1))
    trainer.pipeline.datamanager.train_unseen_cameras = [0]
    _one_step_losses(trainer, step=1)  # trains on image 0: caches its edges and pose
    model, dataset = trainer.pipeline.model, trainer.pipeline.datamanager.train_dataset
    model.eval()
    camera = dataset.cameras[0:1].to(model.device)
    outputs = model.get_outputs_for_camera(camera)
    batch = trainer.pipeline.datamanager.cached_train[0]
    gt = batch["image"][..., :3]
    gt_edges = canny_edges(gt)
    mask = edge_mask(gt, model.config.losses, batch["depth_prior"], batch["depth_prior_kind"], batch["depth_prior_valid"])
    assert outputs["depth"].shape == outputs["edge_mask"].shape == (*gt.shape[:2], 1)
    assert gt_edges.any() and (mask & ~gt_edges).any()  # the prior's depth edges and unknown pixels join Canny's
    assert torch.equal(outputs["edge_mask"][..., 0].bool().cpu(), mask.cpu())

    novel = dataset.cameras[0:1].to(model.device)
    novel.camera_to_worlds = novel.camera_to_worlds.clone()
    novel.camera_to_worlds[..., 3] += 0.05
    outputs = model.get_outputs_for_camera(novel)
    rendered_edges = canny_edges(outputs["rgb"])
    assert torch.equal(outputs["edge_mask"][..., 0].bool(), rendered_edges)
    assert not torch.equal(rendered_edges.cpu(), gt_edges.cpu())


def _metric_config(tmp_path, steps: int):
    """det-gs on the bundled scene in its own metric frame, at 64 px."""
    config = _config(tmp_path, steps)
    parser = config.pipeline.datamanager.dataparser
    parser.orientation_method, parser.center_method, parser.auto_scale_poses = "none", "none", False
    config.pipeline.datamanager.camera_res_scale_factor = 0.5
    return config


def _scale_scene_in_place(trainer, scale: float) -> None:
    """Multiply the Gaussians' positions and sizes and the training cameras' positions by ``scale``."""
    model = trainer.pipeline.model
    with torch.no_grad():
        model.gauss_params["means"].mul_(scale)
        model.gauss_params["scales"].add_(math.log(scale))
    trainer.pipeline.datamanager.train_dataset.cameras.camera_to_worlds[..., 3] *= scale


def test_det_gs_is_unchanged_by_the_scene_units(tmp_path):
    """Scaling a scene by 100 leaves every det-gs loss term of a training step as it was. (That a short run
    trains the same, held-out PSNR included, in another unit and place: test_splat_model.py.)"""
    trainer = run.train(_metric_config(tmp_path, steps=1))
    losses = {}
    for scale in (1.0, 100.0):
        if scale != 1.0:
            _scale_scene_in_place(trainer, scale)
        run.seed_everything(0)
        trainer.pipeline.datamanager.train_unseen_cameras = [0]  # the same view both times
        losses[scale] = {k: v.item() for k, v in _one_step_losses(trainer, step=10).items()}
    assert {"det_gs_depth_hard", "det_gs_edge", "det_gs_tv"} <= losses[1.0].keys()
    for key, value in losses[1.0].items():
        assert losses[100.0][key] == pytest.approx(value, rel=1e-4, abs=1e-7), key


def _densifying_config(tmp_path, steps: int):
    """det-gs on the bundled scene at half resolution, refining every 10 steps from step 10."""
    config = _config(tmp_path, steps)
    config.pipeline.datamanager.camera_res_scale_factor = 0.5
    model = config.pipeline.model
    model.warmup_length, model.refine_every, model.stop_split_at = 10, 10, steps
    return config


def test_two_identical_trainings_give_identical_gaussians(tmp_path):
    """Same config and seed in one process: bit-identical Gaussians after a run that densifies (random
    backgrounds, split samples). Before run.train seeded torch, the second run continued the first's
    torch stream and ended with another number of Gaussians."""
    params = []
    for name in ("a", "b"):
        trainer = run.train(_densifying_config(tmp_path / name, steps=20))
        params.append({k: v.detach().clone() for k, v in trainer.pipeline.model.gauss_params.items()})
    assert params[0]["means"].shape[0] > 2000  # densification ran
    for key, value in params[0].items():
        assert torch.equal(value, params[1][key]), key
    config = _densifying_config(tmp_path / "c", steps=20)
    config.machine.seed += 1
    other = run.train(config).pipeline.model.gauss_params["means"]
    assert other.shape != params[0]["means"].shape or not torch.equal(other, params[0]["means"])


def test_covered_depth_abs_rel_ignores_faintly_covered_pixels(tmp_path, monkeypatch):
    """``depth_abs_rel_covered`` is blind to the depth of pixels with accumulation < 0.5, which move the
    all-pixel ``depth_abs_rel``; it equals it when every pixel counts as covered."""
    monkeypatch.setattr(run.metrics, "image_metrics", lambda pred, gt: {})  # only depth is under test
    trainer = run.train(_densifying_config(tmp_path, steps=1))
    model = trainer.pipeline.model
    before = run.evaluate(trainer)
    everything = run.evaluate(trainer, min_accumulation=0.0)
    for row, row_all in zip(before, everything, strict=True):
        assert row_all["depth_coverage"] == 1.0
        assert row_all["depth_abs_rel_covered"] == pytest.approx(row["depth_abs_rel"])
        assert 0.0 < row["depth_coverage"] < 1.0

    render = model.get_outputs_for_camera

    def faint_pixels_far_away(camera, *args, **kwargs):
        outputs = dict(render(camera, *args, **kwargs))
        faint = outputs["accumulation"] < 0.5
        outputs["depth"] = torch.where(faint, outputs["depth"] * 10.0, outputs["depth"])
        return outputs

    monkeypatch.setattr(model, "get_outputs_for_camera", faint_pixels_far_away)
    after = run.evaluate(trainer)
    for row, row_after in zip(before, after, strict=True):
        assert row_after["depth_abs_rel_covered"] == pytest.approx(row["depth_abs_rel_covered"], rel=1e-6)
        assert row_after["depth_abs_rel"] > row["depth_abs_rel"] + 0.1


@pytest.mark.slow
def test_det_gs_training_improves_held_out_psnr(tmp_path):
    configs = {name: _config(tmp_path / name, steps) for name, steps in (("untrained", 1), ("trained", 300))}
    for config in configs.values():
        config.pipeline.datamanager.camera_res_scale_factor = 0.5  # 64 px: a quarter of the work
    untrained, trained = (run.mean_metrics(run.evaluate(run.train(config))) for config in configs.values())
    assert trained["psnr"] > untrained["psnr"] + 2.0, (untrained, trained)


def test_sky_floaters_are_pushed_to_the_background_or_pruned(tmp_path):
    """The plumbing: training steps keep each view's record; a Gaussian moved to where the records call it a
    sky floater (nearer than the surfaces, on the far background of the views that see it) is pushed onto
    the background sphere with its size scaled alike, or, with ``action="prune"``, removed with its Adam and
    densification state; training goes on. (The criterion: test_det_gs_floaters.py.)"""
    from vision3d.methods.det_gs.floaters import sky_floaters

    config = _densifying_config(tmp_path, steps=6)  # each of the 6 training views once
    config.pipeline.model.sky_floaters.min_train_views = 6  # the scene's 6 training views (default: from 8)
    config.pipeline.model.sky_floaters.unanimous_below = 6  # half the views decide, as by default from 9 views
    trainer = run.train(config)
    model = trainer.pipeline.model
    model.config.sky_floaters.min_train_views = 7
    assert not model.treats_sky_floaters
    model.config.sky_floaters.min_train_views = 6
    records = list(model._sky_views.values())
    assert len(records) == 6 and all(record.far.any() for record in records)
    # candidates: along a far pixel's ray of one view, at half that view's surface depth
    record = records[0]
    v, u = torch.nonzero(record.far, as_tuple=True)
    pixels = torch.stack([u + 0.5, v + 0.5], dim=-1).float()[None]
    depth = torch.full(pixels.shape[:2], 0.5 * record.surface_depth)
    rays = unproject_points(pixels, depth, record.K.float()[None])[0]
    candidates = transform_points(invert_pose(record.viewmat.float()), rays)
    flagged = candidates[sky_floaters(candidates, records, model.config.sky_floaters.share(6))]
    assert len(flagged) > 0
    step = model.config.warmup_length + model.config.refine_every
    centre, radius = model.camera_centre, model.config.background_radius * model.camera_extent

    with torch.no_grad():
        model.gauss_params["means"][0] = flagged[0]
    before, log_scale = model.means.shape[0], model.scales[0].detach().clone()
    model.treat_sky_floaters(step)
    assert model.sky_floaters_found >= 1 and model.means.shape[0] == before
    moved = model.means[0].detach()
    factor = radius / (flagged[0] - centre).norm()
    assert torch.allclose(moved, centre + (flagged[0] - centre) * factor, rtol=1e-5)
    assert torch.allclose(model.scales[0].detach(), log_scale + torch.log(factor), atol=1e-5)

    model.config.sky_floaters.action = "prune"
    with torch.no_grad():
        model.gauss_params["means"][0] = flagged[0]
    found = model.sky_floaters_found
    model.treat_sky_floaters(step)
    assert model.means.shape[0] == before - (model.sky_floaters_found - found)
    assert not (model.means == flagged[0]).all(dim=-1).any()
    for optimizer in model.optimizers.values():
        for state in optimizer.state.values():
            assert state["exp_avg"].shape[0] == model.means.shape[0]
    losses = _one_step_losses(trainer, step=7)
    sum(losses.values()).backward()
    assert torch.isfinite(model.means.grad).all()

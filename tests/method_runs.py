"""Tiny nerfstudio runs of helixsurf, ir-nerf and romap (a few steps at 16-40 px), as TrainerConfigs: for the
viewer and export tests and for the test of nerfstudio's periodic evaluation."""

from __future__ import annotations

import copy
from pathlib import Path

from room_factory import write_room
from scene_factory import write_scene

from vision3d.methods import run

IR_NERF_VIEWS = 6


def helixsurf_config(root: Path, n_views: int = 6, max_steps: int = 3):
    """A helixsurf run of ``max_steps`` on a 32x24 room of ``n_views`` (nerfstudio holds out 10 %)."""
    from vision3d.methods.helixsurf.config import helixsurf

    scene = write_room(root / "room", n_views=n_views, width=32, height=24, focal=20.0, layout="clusters")
    config = run.configure(helixsurf.config, scene, root / "out", max_steps=max_steps)
    config.pipeline.datamanager.train_num_rays_per_batch = 128
    model = config.pipeline.model
    model.num_samples, model.occupancy_resolution, model.mvs_max_side, model.eikonal_random_points = 16, 16, 32, 64
    model.mvs.patchmatch.iterations, model.mvs.patchmatch.cost.radius, model.mvs.patchmatch.cost.step = 1, 2, 1
    model.mvs.filter.min_consistent, model.mvs.geometric_passes = 1, 0
    model.sdf.steps_per_level, model.sdf.grid.n_levels, model.sdf.grid.log2_hashmap_size = 0, 4, 12
    model.helix_passes, model.use_planes = (0.0,), False  # one MVS pass: the fused cloud the viewer shows
    return config


def ir_nerf_config(root: Path, max_steps: int = 2):
    """An ir-nerf run of ``max_steps`` on IR_NERF_VIEWS random 16 px images (poses from the prior)."""
    from vision3d.methods.ir_nerf.config import ir_nerf_trainer_config
    from vision3d.methods.ir_nerf.pose_prior import prior_preset

    scene = write_scene(root / "scene", n_views=IR_NERF_VIEWS, size=16)
    config = run.configure(ir_nerf_trainer_config(), scene, root / "out", max_steps=max_steps)
    config.pipeline.datamanager.dataparser.image_size = 16
    config.pipeline.model.steps_per_export = 100
    system = config.pipeline.model.ir_nerf
    system.field.encoding, system.field.num_samples = "pe", 8
    system.prior = prior_preset("360-object", radius_min=2.0, radius_max=2.0, elevation_min_deg=5.0, elevation_max_deg=60.0)
    system.patch_size, system.batch_size, system.estimator_batch, system.rays_per_batch = 8, 2, 2, 128
    system.n_codes, system.code_dim = 16, 8
    system.lr_estimator = 1e-4  # at the CPU default (2e-3) this 2-step run's render from the estimated pose had
    # constant depth (background only: the camera P estimated after one step did not see the field's cube)
    return config


def romap_config(root: Path, n_views: int = 4, max_steps: int = 12):
    """A romap run of ``max_steps`` (10 label steps, then edits) on a two-part scene of ``n_views``."""
    from romap_scene import write_two_part_scene
    from test_romap_method import splat_checkpoint

    from vision3d.methods.romap.config import romap
    from vision3d.methods.romap.model import LABELS

    scene, gaussians = write_two_part_scene(root / "parts", n_views=n_views)
    config = run.configure(romap.config, scene, root / "out", max_steps=max_steps)
    config.pipeline.model.label_steps = 10  # then two edit steps towards the targets: part 1 is selected
    config.pipeline.model.background_color = "black"
    config.optimizers[LABELS]["optimizer"].lr = 0.1  # labels learn in 10 steps (60 at the method's rate)
    config.pipeline.datamanager.target_dir = scene / "targets"
    splat_checkpoint(copy.deepcopy(config), gaussians, root / "splat.ckpt")
    config.load_checkpoint = root / "splat.ckpt"
    return config

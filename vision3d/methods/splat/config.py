"""``ns-train vision3d-splat``: splatfacto that trains on CPU (our rasterizer) or GPU (gsplat), no flags needed."""

from __future__ import annotations

import copy

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from vision3d.backends import default_device_type
from vision3d.data.dataparser import Vision3DDataParserConfig
from vision3d.known_warnings import hide_in_our_commands
from vision3d.methods.splat.model import SplatModelConfig
from vision3d.methods.trainer import Vision3DTrainerConfig

hide_in_our_commands()  # ns-train loads this (and det-gs's config, which imports it) through its entry points


def gaussian_optimizers(max_steps: int) -> dict:
    """splatfacto's per-parameter Adam groups (3DGS learning rates), the means' rate decayed over ``max_steps``."""
    adam = lambda lr: AdamOptimizerConfig(lr=lr, eps=1e-15)  # noqa: E731
    return {
        "means": {"optimizer": adam(1.6e-4), "scheduler": ExponentialDecaySchedulerConfig(lr_final=1.6e-6, max_steps=max_steps)},
        "features_dc": {"optimizer": adam(0.0025), "scheduler": None},
        "features_rest": {"optimizer": adam(0.0025 / 20), "scheduler": None},
        "opacities": {"optimizer": adam(0.05), "scheduler": None},
        "scales": {"optimizer": adam(0.005), "scheduler": None},
        "quats": {"optimizer": adam(0.001), "scheduler": None},
        "camera_opt": {
            "optimizer": adam(1e-4),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=5e-7, max_steps=max_steps, warmup_steps=1000, lr_pre_warmup=0),
        },
        "bilateral_grid": {
            "optimizer": adam(2e-3),
            "scheduler": ExponentialDecaySchedulerConfig(lr_final=1e-4, max_steps=max_steps, warmup_steps=1000, lr_pre_warmup=0),
        },
    }


def splat_trainer_config(method_name: str, model: SplatModelConfig, max_steps: int = 30000) -> Vision3DTrainerConfig:
    """A splatfacto-style TrainerConfig on the ``vision3d-data`` parser, on CUDA when present else CPU.

    ``cache_images="gpu"`` means "on the training device" in nerfstudio; its "cpu" option pins memory,
    which needs CUDA.
    """
    return Vision3DTrainerConfig(
        method_name=method_name,
        steps_per_eval_image=100,
        steps_per_eval_batch=0,
        steps_per_save=2000,
        steps_per_eval_all_images=1000,
        max_num_iterations=max_steps,
        mixed_precision=False,
        machine=MachineConfig(device_type=default_device_type()),
        pipeline=VanillaPipelineConfig(
            datamanager=FullImageDatamanagerConfig(
                dataparser=Vision3DDataParserConfig(load_3D_points=True),
                cache_images="gpu",
                cache_images_type="uint8",
            ),
            model=model,
        ),
        optimizers=gaussian_optimizers(max_steps),
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


def fit_schedule(
    config: Vision3DTrainerConfig,
    max_steps: int,
    densify_from: float = 1 / 3,
    densify_until: float = 1 / 2,
    sh_full_at: float = 1 / 2,
) -> Vision3DTrainerConfig:
    """A copy of a splat TrainerConfig whose schedules fit a run of ``max_steps`` (the demo, tests, benchmarks).

    splatfacto's schedules are absolute step numbers made for 30k-step runs (densify from step 500 to
    15000, one more SH degree every 1000 steps, the means' learning rate decayed over 30000 steps). In a
    run of a few thousand steps they mean densifying until the last step (new Gaussians get no time to
    settle: blur and floaters), SH degree 1 at most, and a means learning rate that never decays. This
    keeps 3DGS's proportions instead, as fractions of ``max_steps``:

    - ``densify_from`` (``warmup_length``): refine from this fraction on (splatfacto 500/30000; seed
      points need a few hundred steps to fit their colours and scales before gradients say where to grow);
    - ``densify_until`` (``stop_split_at``): no more growth after this fraction, as 3DGS stops at 15k of
      30k, so the second half only optimises (measured on the bundled scene at 1500 steps: stopping at
      750 instead of 1500 gave +1.5 dB held-out PSNR with 8x fewer Gaussians);
    - ``sh_full_at``: the SH degree reaches ``sh_degree`` at this fraction (``sh_degree_interval``);
    - the Adam schedules (means, camera, bilateral grid) decay over ``max_steps``.

    ``refine_every`` and the screen-size rules stay splatfacto's; opacity resets (every 3000 steps) do not
    happen in runs shorter than that.
    """
    config = copy.deepcopy(config)
    config.max_num_iterations = max_steps
    config.optimizers = gaussian_optimizers(max_steps)
    model = config.pipeline.model
    model.warmup_length = round(densify_from * max_steps)
    model.stop_split_at = round(densify_until * max_steps)
    model.sh_degree_interval = max(1, round(sh_full_at * max_steps / max(model.sh_degree, 1)))
    return config


vision3d_splat = MethodSpecification(
    config=splat_trainer_config("vision3d-splat", SplatModelConfig()),
    description="splatfacto on CPU or GPU (vision3d's rasterizer on CPU, gsplat on CUDA)",
)

"""``ns-train vision3d-splat``: splatfacto that trains on CPU (our rasterizer) or GPU (gsplat), no flags needed."""

from __future__ import annotations

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.full_images_datamanager import FullImageDatamanagerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from vision3d.backends import default_device_type
from vision3d.data.dataparser import Vision3DDataParserConfig
from vision3d.methods.splat.model import SplatModelConfig
from vision3d.methods.trainer import Vision3DTrainerConfig


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


vision3d_splat = MethodSpecification(
    config=splat_trainer_config("vision3d-splat", SplatModelConfig()),
    description="splatfacto on CPU or GPU (vision3d's rasterizer on CPU, gsplat on CUDA)",
)

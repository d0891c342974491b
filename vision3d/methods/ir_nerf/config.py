"""``ns-train ir-nerf``: IR-NeRF (pose-free NeRF with implicit pose regularisation), CUDA when present else CPU.

Cheap to import: the method specification only. Presets for CPU and GPU budgets are in ``configs/ir-nerf/``.
"""

from __future__ import annotations

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.plugins.types import MethodSpecification

from vision3d.backends import default_device_type
from vision3d.methods.ir_nerf.dataparser import IRNeRFDataParserConfig
from vision3d.methods.ir_nerf.model import IRNeRFModelConfig, IRNeRFPipelineConfig
from vision3d.methods.trainer import Vision3DTrainerConfig


def ir_nerf_trainer_config(max_steps: int = 3000) -> Vision3DTrainerConfig:
    return Vision3DTrainerConfig(
        method_name="ir-nerf",
        max_num_iterations=max_steps,
        steps_per_save=1000,
        steps_per_eval_batch=500,
        steps_per_eval_image=500,
        steps_per_eval_all_images=1_000_000,
        mixed_precision=False,
        machine=MachineConfig(device_type=default_device_type()),
        pipeline=IRNeRFPipelineConfig(
            datamanager=VanillaDataManagerConfig(dataparser=IRNeRFDataParserConfig()),
            model=IRNeRFModelConfig(),
        ),
        optimizers={},
        viewer=ViewerConfig(num_rays_per_chunk=1 << 14),
        vis="viewer",
    )


ir_nerf = MethodSpecification(
    config=ir_nerf_trainer_config(),
    description="IR-NeRF: NeRF from unposed images (pose prior, GAN + pose estimator, scene codebook, joint refinement); writes transforms.json",
)

"""``ns-train helixsurf``: HelixSurf's trainer, CUDA when present else CPU, with no flags.

Official training (papers_a.md §2): Adam at 1e-3 with an 800-step warm-up, 12k steps per SDF epoch and two
epochs (an MVS pass before each), 5000 rays per batch. We decay the rate by a cosine after the warm-up
(nerfstudio's scheduler), with torch's fused Adam (one kernel over each parameter tensor: on a CPU a step over
the 3M-row hash grid takes 12 instead of 35 ms, measured on the shared 2-core machine) that keeps its gradient
buffers: the SDF's hash grid adds its table gradient into them in place (``grad_mode="inplace"``), so a step
neither allocates a table-sized gradient per grid call nor sums them. The data parser is
``vision3d-data`` with ``scene_scale=4``: nerfstudio scales the poses into [-1, 1]³, and a room's walls lie
well beyond its cameras (3.5× for cameras grouped near the middle of a room), so the box the SDF covers is
[-4, 4]³.
One process (``VanillaDataManager``); Ctrl-C saves a checkpoint (:mod:`vision3d.methods.trainer`).
"""

from __future__ import annotations

from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.engine.schedulers import CosineDecaySchedulerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from vision3d.backends import default_device_type
from vision3d.data.dataparser import Vision3DDataParserConfig
from vision3d.methods.helixsurf.model import HelixSurfModelConfig
from vision3d.methods.nerfacto.config import FusedAdamOptimizerConfig
from vision3d.methods.trainer import Vision3DTrainerConfig


def helixsurf_trainer_config(max_steps: int = 24000) -> Vision3DTrainerConfig:
    """The official schedule on our model, data parser and device default."""
    return Vision3DTrainerConfig(
        method_name="helixsurf",
        steps_per_eval_batch=500,
        steps_per_eval_image=2000,
        steps_per_save=2000,
        max_num_iterations=max_steps,
        mixed_precision=False,
        machine=MachineConfig(device_type=default_device_type()),
        pipeline=VanillaPipelineConfig(
            datamanager=VanillaDataManagerConfig(
                dataparser=Vision3DDataParserConfig(scene_scale=4.0),
                train_num_rays_per_batch=5000,
                eval_num_rays_per_batch=2048,
            ),
            model=HelixSurfModelConfig(eval_num_rays_per_chunk=4096, max_steps=max_steps),
        ),
        optimizers={
            "fields": {
                "optimizer": FusedAdamOptimizerConfig(lr=1e-3, eps=1e-15),
                "scheduler": CosineDecaySchedulerConfig(warm_up_end=800, learning_rate_alpha=0.05, max_steps=max_steps),
            },
        },
        viewer=ViewerConfig(num_rays_per_chunk=4096),
        vis="viewer",
    )


helixsurf = MethodSpecification(
    config=helixsurf_trainer_config(),
    description="HelixSurf: NeuS SDF + PatchMatch MVS in turns, occupancy grid, mesh export; CPU and CUDA, no downloads",
)

"""``ns-train vision3d-nerfacto``: nerfstudio's ``nerfacto`` method on vision3d's fields, CUDA when present else CPU.

The trainer, optimisers and schedules are nerfstudio's ``nerfacto`` method config; differences:
the ``vision3d-data`` parser (nerfstudio-data plus validation), a single-process ``VanillaDataManager``
(nerfacto's ``ParallelDataManager`` runs a sampling worker process, which on a CPU machine competes with
training for the same cores), the device chosen without flags, and Ctrl-C saves a checkpoint
(:mod:`vision3d.methods.trainer`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from nerfstudio.cameras.camera_optimizers import CameraOptimizerConfig
from nerfstudio.configs.base_config import MachineConfig, ViewerConfig
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.engine.schedulers import ExponentialDecaySchedulerConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipelineConfig
from nerfstudio.plugins.types import MethodSpecification

from vision3d.backends import default_device_type
from vision3d.data.dataparser import Vision3DDataParserConfig
from vision3d.methods.nerfacto.model import Vision3DNerfactoModelConfig
from vision3d.methods.trainer import Vision3DTrainerConfig


class KeptGradAdam(torch.optim.Adam):
    """Adam whose ``zero_grad`` zeroes the gradient buffers in place instead of freeing them.

    The hash grids add their table gradient straight into the kept ``params.grad`` on CPU
    (``grad_mode="inplace"``); freeing it (nerfstudio calls ``zero_grad()``, which sets None) would
    allocate a fresh 64 MB buffer every step.
    """

    def zero_grad(self, set_to_none: bool = False) -> None:
        super().zero_grad(set_to_none=False)


@dataclass
class FusedAdamOptimizerConfig(AdamOptimizerConfig):
    """nerfstudio's Adam config, built as :class:`KeptGradAdam` with ``fused=True``.

    Fused Adam steps all of a group's tensors in one kernel: on CPU it is what makes a 2^19-row table's
    step cheap (the per-op Adam reads and writes the 64 MB table and its moments several times).
    """

    _target: type = KeptGradAdam
    fused: bool = True


def nerfacto_trainer_config(method_name: str = "vision3d-nerfacto", max_steps: int = 30000) -> Vision3DTrainerConfig:
    """nerfstudio's ``nerfacto`` TrainerConfig on our model, data parser and device default."""
    decay = lambda final, steps: ExponentialDecaySchedulerConfig(lr_final=final, max_steps=steps)  # noqa: E731
    return Vision3DTrainerConfig(
        method_name=method_name,
        steps_per_eval_batch=500,
        steps_per_save=2000,
        max_num_iterations=max_steps,
        mixed_precision=True,  # nerfstudio turns it off on CPU
        machine=MachineConfig(device_type=default_device_type()),
        pipeline=VanillaPipelineConfig(
            datamanager=VanillaDataManagerConfig(
                dataparser=Vision3DDataParserConfig(),
                train_num_rays_per_batch=4096,
                eval_num_rays_per_batch=4096,
            ),
            model=Vision3DNerfactoModelConfig(
                eval_num_rays_per_chunk=1 << 15,
                camera_optimizer=CameraOptimizerConfig(mode="SO3xR3"),
            ),
        ),
        optimizers={
            "proposal_networks": {"optimizer": FusedAdamOptimizerConfig(lr=1e-2, eps=1e-15), "scheduler": decay(1e-4, 200000)},
            "fields": {"optimizer": FusedAdamOptimizerConfig(lr=1e-2, eps=1e-15), "scheduler": decay(1e-4, 200000)},
            "camera_opt": {"optimizer": AdamOptimizerConfig(lr=1e-3, eps=1e-15), "scheduler": decay(1e-4, 5000)},
        },
        viewer=ViewerConfig(num_rays_per_chunk=1 << 15),
        vis="viewer",
    )


vision3d_nerfacto = MethodSpecification(
    config=nerfacto_trainer_config(),
    description="nerfacto on vision3d's hash grid (Numba kernels on CPU, tiny-cuda-nn or torch on CUDA); no downloads",
)

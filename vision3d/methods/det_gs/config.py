"""``ns-train det-gs``: DET-GS's regularized Gaussian splatting, on CUDA when present else CPU.

Presets for the sparse-view and dense protocols are in ``configs/det-gs/`` (run them with
``v3d train det-gs --preset sparse-3view --data SCENE``, which prints and runs the ns-train command).
"""

from __future__ import annotations

from nerfstudio.plugins.types import MethodSpecification

from vision3d.data.dataparser import Vision3DDataParserConfig
from vision3d.methods.det_gs.dataset import DetGSDataManagerConfig
from vision3d.methods.det_gs.model import DetGSModelConfig
from vision3d.methods.splat.config import splat_trainer_config


def det_gs_trainer_config(max_steps: int = 30000):
    config = splat_trainer_config("det-gs", DetGSModelConfig(), max_steps)
    config.pipeline.datamanager = DetGSDataManagerConfig(
        dataparser=Vision3DDataParserConfig(load_3D_points=True), cache_images="gpu", cache_images_type="uint8"
    )
    return config


det_gs = MethodSpecification(
    config=det_gs_trainer_config(),
    description="DET-GS: Gaussian splatting with hierarchical depth, Canny-edge-aware depth and RGB-guided TV regularization",
)

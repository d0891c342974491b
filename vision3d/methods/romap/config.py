"""``ns-train romap --data SCENE --load-checkpoint SPLAT.ckpt``: RoMaP's part edit of a trained splat.

Phase 1 trains part labels against the scene's 2D part masks, phase 2 edits ``--pipeline.model.part``
(see :mod:`vision3d.methods.romap.model`); the saved checkpoint exports with ``ns-export gaussian-splat``.
``max_num_iterations`` counts the steps of this run (nerfstudio continues the checkpoint's step count).
"""

from __future__ import annotations

from nerfstudio.engine.optimizers import AdamOptimizerConfig
from nerfstudio.plugins.types import MethodSpecification

from vision3d.data.dataparser import Vision3DDataParserConfig
from vision3d.methods.romap.dataset import RomapDataManagerConfig
from vision3d.methods.romap.model import LABELS, RomapModelConfig
from vision3d.methods.splat.config import splat_trainer_config

LABEL_LR = 0.03
"""Adam rate of the label SH coefficients at the start of the label phase (it decays over the phase by
``label_lr_decay``). From the vote init the labels are refined, not moved from 0 to 1/C0 ≈ 3.5: on the
benchmark's seed-0 scenes (200 steps) 0.01 / 0.03 / 0.1 gave part mIoU 0.764 / 0.771 / 0.756 (bunny) and
0.886 / 0.887 / 0.876 (cow-duck). With ``galp.init = "zero"`` raise it (docs/romap.md)."""
COLOUR_LR = 0.05
"""Adam rate of the base colour in the edit: 20x splatfacto's, which is made for 30k steps; an edit of
~100 steps must move a grey Gaussian (DC 0) to a saturated colour (|DC| ≈ 1.5). On the 3-slab bunny's
100-step gold edit, 0.01 reached PSNR 17.7 dB inside the part to the target, 0.05 27.0 dB (docs/romap.md)."""


def romap_trainer_config(max_steps: int = 1300, label_steps: int = 300):
    config = splat_trainer_config("romap", RomapModelConfig(label_steps=label_steps), max_steps)
    config.pipeline.datamanager = RomapDataManagerConfig(
        dataparser=Vision3DDataParserConfig(load_3D_points=True), cache_images="gpu", cache_images_type="uint8"
    )
    config.optimizers["features_dc"]["optimizer"] = AdamOptimizerConfig(lr=COLOUR_LR, eps=1e-15)
    config.optimizers["features_rest"]["optimizer"] = AdamOptimizerConfig(lr=COLOUR_LR / 20, eps=1e-15)
    config.optimizers[LABELS] = {"optimizer": AdamOptimizerConfig(lr=LABEL_LR, eps=1e-15), "scheduler": None}
    config.load_scheduler = False
    config.steps_per_save = max_steps
    return config


romap = MethodSpecification(
    config=romap_trainer_config(),
    description="RoMaP: part labels (3D-GALP) then a masked SDS / SLaMP edit of one part of a trained splat",
)

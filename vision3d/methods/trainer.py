"""nerfstudio's Trainer, plus a checkpoint when a run is interrupted (Ctrl-C), and loadable checkpoints.

- nerfstudio's ``ns-train`` catches KeyboardInterrupt and exits without saving, so an interrupted long
  run loses everything since the last periodic save. Ours saves the current step first, so
  ``ns-train ... --load-dir`` / ``ns-export`` / ``ns-viewer`` work on what was trained.
- nerfstudio 1.1.5's ``eval_setup`` (ns-export, ns-viewer, ns-eval) loads checkpoints with torch.load's
  default ``weights_only=True`` (torch >= 2.6), which refuses the numpy float64 learning rates its own
  exponential-decay scheduler stores. Importing this module (every vision3d method config does) allows
  exactly those numpy scalar types, so our checkpoints load.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE

torch.serialization.add_safe_globals([np.core.multiarray.scalar, np.dtype, type(np.dtype(np.float64))])


@dataclass
class Vision3DTrainerConfig(TrainerConfig):
    _target: type = field(default_factory=lambda: Vision3DTrainer)


class Vision3DTrainer(Trainer):
    def train(self) -> None:
        try:
            super().train()
        except KeyboardInterrupt:
            step = getattr(self, "step", self._start_step)
            self.save_checkpoint(step)
            CONSOLE.print(f"[yellow]Interrupted: saved a checkpoint at step {step} in {self.checkpoint_dir}")
            raise

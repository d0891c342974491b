"""nerfstudio's Trainer, plus a checkpoint when a run is interrupted (Ctrl-C).

nerfstudio's ``ns-train`` catches KeyboardInterrupt and exits without saving, so an interrupted long run
loses everything since the last periodic save. Ours saves the current step first, so
``ns-train ... --load-dir`` / ``ns-export`` / ``ns-viewer`` work on what was trained.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE


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

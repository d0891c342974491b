"""nerfstudio's Trainer, plus a checkpoint when a run is interrupted (Ctrl-C), and loadable checkpoints.

- nerfstudio's ``ns-train`` catches KeyboardInterrupt and exits without saving, so an interrupted long
  run loses everything since the last periodic save. Ours saves the current step first, so
  ``ns-train ... --load-dir`` / ``ns-export`` / ``ns-viewer`` work on what was trained.
- nerfstudio 1.1.5's ``eval_setup`` (ns-export, ns-viewer, ns-eval) loads checkpoints with torch.load's
  default ``weights_only=True`` (torch >= 2.6), which refuses the numpy float64 learning rates its own
  exponential-decay scheduler stores. Importing this module (every vision3d method config does) allows
  exactly those numpy scalar types, so our checkpoints load.
- ``ns-viewer``, ``ns-render``, ``ns-export`` and ``ns-eval`` read a run's ``config.yml`` with ``yaml.load`` and
  then ask it for its checkpoint folder (``get_checkpoint_dir``). Our config read that way is built as a
  ``SavedRunConfig`` (a yaml constructor for our class's tag; a new timestamp makes it a plain config again),
  which checks first that its fields match the installed classes (fields added since, with defaults, get them)
  and that its newest checkpoint is there and whole, and fails in one line naming the file, where nerfstudio would print a traceback from deep inside
  torch or yaml.
- A model may ask for learning rates in its own units: ``model.learning_rate_scales()`` ({group: factor})
  multiplies a group's configured rates (the optimizer's, and the scheduler's ``lr_final`` / ``lr_pre_warmup``)
  before the optimizers are built, e.g. the splat means' rate in camera extents (:mod:`vision3d.methods.splat.model`).
- The live viewer re-renders during training at a rate set from measured frame times
  (:mod:`vision3d.viewer.live`), where nerfstudio's estimate refreshed a CPU run only every few hundred steps.
- A CPU run keeps freed memory for the next step's tensors (:mod:`vision3d.allocator`) and says how to avoid
  libgomp's spin-wait slowdown (:mod:`vision3d.openmp`).
"""

from __future__ import annotations

import copy
import signal
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import yaml
from nerfstudio.engine.optimizers import Optimizers
from nerfstudio.engine.trainer import Trainer, TrainerConfig
from nerfstudio.utils.rich_utils import CONSOLE
from nerfstudio.viewer.viewer import Viewer

from vision3d.allocator import keep_freed_memory
from vision3d.errors import one_line_errors_in_our_commands
from vision3d.openmp import spin_hint
from vision3d.viewer.live import LiveRefresh, update_scene

torch.serialization.add_safe_globals([np.core.multiarray.scalar, np.dtype, type(np.dtype(np.float64))])
one_line_errors_in_our_commands()


@dataclass
class Vision3DTrainerConfig(TrainerConfig):
    _target: type = field(default_factory=lambda: Vision3DTrainer)
    viewer_min_refresh_s: float = 0.5
    """Live viewer (``--vis viewer``): re-render during training at most this often (seconds); otherwise as often
    as the "Train Util" slider allows for the measured frame time (:mod:`vision3d.viewer.live`)."""


class SavedRunConfig(Vision3DTrainerConfig):
    """Our config as ``yaml.load`` reads it back from a run's ``config.yml`` (module docstring): the same fields,
    with checks before nerfstudio loads the run; a new timestamp makes it a config for a new run again."""

    def set_timestamp(self) -> None:
        """A new run (``ns-train --load-config``): no longer the saved run it was read from."""
        super().set_timestamp()
        self.__class__ = Vision3DTrainerConfig

    def get_checkpoint_dir(self) -> Path:
        """nerfstudio's checkpoint folder, after checking the config's fields and the newest checkpoint."""
        from vision3d.export.from_run import check_config_version, newest_checkpoint

        checkpoint_dir = super().get_checkpoint_dir()
        check_config_version(_config_file(self), self)
        newest_checkpoint(checkpoint_dir)
        return checkpoint_dir


def _config_file(config: TrainerConfig) -> Path:
    """The config.yml a command was given (``--load-config``), else where the run saved it."""
    argv = sys.argv[1:]
    for i, arg in enumerate(argv):
        if arg.replace("_", "-") == "--load-config" and i + 1 < len(argv):
            return Path(argv[i + 1])
        if arg.replace("_", "-").startswith("--load-config="):
            return Path(arg.split("=", 1)[1])
    return config.get_base_dir() / "config.yml"


yaml.Loader.add_constructor(  # a saved Vision3DTrainerConfig loads as a SavedRunConfig
    f"tag:yaml.org,2002:python/object:{__name__}.Vision3DTrainerConfig",
    lambda loader, node: loader.construct_python_object(f"{__name__}.SavedRunConfig", node),
)


class Vision3DTrainer(Trainer):
    config: Vision3DTrainerConfig

    def __init__(self, config: Vision3DTrainerConfig, local_rank: int = 0, world_size: int = 1) -> None:
        super().__init__(config, local_rank, world_size)
        self.live_refresh = LiveRefresh(min_interval_s=config.viewer_min_refresh_s)

    def setup_optimizers(self) -> Optimizers:
        """nerfstudio's optimizers, each group's configured rates multiplied by ``model.learning_rate_scales()``."""
        configs = dict(self.config.optimizers)
        scales = getattr(self.pipeline.model, "learning_rate_scales", dict)()
        for name, factor in scales.items():
            if name in configs and factor != 1.0:
                configs[name] = scaled = copy.deepcopy(configs[name])
                scaled["optimizer"].lr *= factor
                for key in ("lr_final", "lr_pre_warmup"):
                    if getattr(scaled.get("scheduler"), key, None) is not None:
                        setattr(scaled["scheduler"], key, getattr(scaled["scheduler"], key) * factor)
        return Optimizers(configs, self.pipeline.get_param_groups())

    def _update_viewer_state(self, step: int) -> None:
        """nerfstudio's viewer update, re-rendering at the rate of :mod:`vision3d.viewer.live` (the legacy viewer as is)."""
        if not isinstance(self.viewer_state, Viewer):
            super()._update_viewer_state(step)
            return
        try:
            update_scene(self.viewer_state, self.live_refresh, step, self.pipeline.datamanager.get_train_rays_per_batch())
        except RuntimeError:  # as nerfstudio: a failed render must not stop training
            CONSOLE.log("Viewer failed. Continuing training.")

    def train(self) -> None:
        """nerfstudio's training loop; on Ctrl-C, save a checkpoint of the current step, then raise KeyboardInterrupt.

        A Ctrl-C is known by the SIGINT itself (a handler that notes it, then does what Python's does), not by the
        exception's type: one that lands while a Numba kernel runs surfaces as the dispatcher's SystemError
        ("returned a result with an exception set"), and CI saw that form escape a check of its cause."""
        if str(self.device).startswith("cpu"):
            keep_freed_memory()  # ~1.4x faster CPU steps where page faults were a third of the time (vision3d.allocator)
            hint = spin_hint()
            if hint:
                CONSOLE.print(f"[yellow]{hint}")
        interrupted = []

        def note_sigint(signum, frame):  # noqa: ANN001
            interrupted.append(signum)
            signal.default_int_handler(signum, frame)

        ours = threading.current_thread() is threading.main_thread() and \
            signal.getsignal(signal.SIGINT) is signal.default_int_handler  # not where Ctrl-C is ignored or handled
        if ours:
            signal.signal(signal.SIGINT, note_sigint)
        try:
            super().train()
        except BaseException as err:
            if not isinstance(err, KeyboardInterrupt) and not interrupted:
                raise
            step = getattr(self, "step", self._start_step)
            self.save_checkpoint(step)
            CONSOLE.print(f"[yellow]Interrupted: saved a checkpoint at step {step} in {self.checkpoint_dir}")
            if isinstance(err, KeyboardInterrupt):
                raise
            raise KeyboardInterrupt from err
        finally:
            if ours:
                signal.signal(signal.SIGINT, signal.default_int_handler)

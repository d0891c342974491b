"""When the live viewer re-renders during ``ns-train``: from the measured wall time of its frames.

nerfstudio 1.1.5 (``Viewer.update_scene``) re-renders every ``util · t_vis / ((1 − util) · t_train)`` steps,
with ``t_vis = max_res² / (vis rays/s)`` averaged over all frames. On CPU that average is dominated by the
small moving frames, whose time is per-frame overhead, so ``t_vis`` is overestimated several-fold and the view
refreshed only every ~280 steps (minutes) for det-gs. Decision: keep nerfstudio's meaning of the "Train Util"
slider (the share of wall time left to training, 0.9 by default) but measure instead of estimate: each
full-size frame's wall time ``t_frame`` is timed in the render thread (it includes waiting for the current
training step to release the lock), and the view re-renders when ``util / (1 − util) · t_frame`` seconds have
passed since the last refresh, and not more often than ``min_interval_s`` (a config field of our trainer,
``viewer_min_refresh_s``). Everything else is nerfstudio's own ``update_scene``, called as is: the pause while
the camera moves, the "step" render action, so the resolution still drops while the camera moves.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass


@dataclass
class LiveRefresh:
    """The refresh rule (module docstring) and the measured time of the last full-size frame."""

    min_interval_s: float = 0.5
    frame_s: float = 0.0
    """Wall seconds of the last full-size (``high``) frame; 0 until one was rendered."""
    last_refresh: float = -math.inf
    """``time.monotonic()`` of the last refresh."""

    def interval_s(self, train_util: float) -> float:
        """Seconds between refreshes: training keeps ``train_util`` of the time; util 1 never refreshes."""
        if train_util >= 1:
            return math.inf
        return max(self.min_interval_s, self.frame_s * train_util / (1.0 - train_util))

    def due(self, now: float, train_util: float) -> bool:
        return now - self.last_refresh >= self.interval_s(train_util)

    def watch(self, machine) -> None:  # noqa: ANN001
        """Time the full-size frames of a nerfstudio ``RenderStateMachine`` (its ``_render_img``, wrapped once)."""
        if getattr(machine, "vision3d_timed", False):
            return
        render = machine._render_img

        def timed(camera_state):  # noqa: ANN001, ANN202
            start = time.perf_counter()
            outputs = render(camera_state)
            if machine.state == "high":
                self.frame_s = time.perf_counter() - start
            return outputs

        machine._render_img = timed
        machine.vision3d_timed = True


def update_scene(viewer, refresh: LiveRefresh, step: int, num_rays_per_batch: int) -> None:  # noqa: ANN001
    """nerfstudio's ``Viewer.update_scene`` (the pause while the camera moves, the "step" render action, the camera
    poses and step shown), with :class:`LiveRefresh` deciding whether it re-renders.

    nerfstudio re-renders when ``step > viewer.last_step + render_freq`` (its estimate) and then sets ``last_step``
    to ``step``; ``last_step`` is set to −inf when the measured rule says the view is due and +inf otherwise, and
    put back when nerfstudio did not re-render (nothing else reads it).
    """
    for machine in viewer.render_statemachines.values():
        refresh.watch(machine)
    now = time.monotonic()
    previous = viewer.last_step
    viewer.last_step = -math.inf if refresh.due(now, viewer.train_util) else math.inf
    try:
        viewer.update_scene(step, num_rays_per_batch)
    finally:
        if viewer.last_step == step:
            refresh.last_refresh = now
        else:
            viewer.last_step = previous

"""When the live viewer re-renders during ``ns-train``: from the measured wall time of its frames.

nerfstudio 1.1.5 (``Viewer.update_scene``) re-renders every ``util · t_vis / ((1 − util) · t_train)`` steps,
with ``t_vis = max_res² / (vis rays/s)`` averaged over all frames. On CPU that average is dominated by the
small moving frames, whose time is per-frame overhead, so ``t_vis`` is overestimated several-fold and the view
refreshed only every ~280 steps (minutes) for det-gs. Decision: keep nerfstudio's meaning of the "Train Util"
slider (the share of wall time left to training, 0.9 by default) but measure instead of estimate: each
full-size frame's wall time ``t_frame`` is timed in the render thread (it includes waiting for the current
training step to release the lock), and the view re-renders when ``util / (1 − util) · t_frame`` seconds have
passed since the last refresh, and not more often than ``min_interval_s`` (a config field of our trainer,
``viewer_min_refresh_s``). Everything else is nerfstudio's: the pause while the camera moves, the "step"
render action, so the resolution still drops while the camera moves.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

from nerfstudio.viewer.render_state_machine import RenderAction


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


def update_scene(viewer, refresh: LiveRefresh, step: int) -> None:  # noqa: ANN001
    """nerfstudio's ``Viewer.update_scene`` during training, with :class:`LiveRefresh` deciding when to re-render."""
    viewer.step = step
    if len(viewer.render_statemachines) == 0:
        return
    while time.time() - viewer.last_move_time < 0.1:  # nerfstudio: training pauses while the camera moves
        time.sleep(0.05)
    for machine in viewer.render_statemachines.values():
        refresh.watch(machine)
    training = viewer.trainer is not None and viewer.trainer.training_state == "training"
    now = time.monotonic()
    if not training or not refresh.due(now, viewer.train_util):
        return
    refresh.last_refresh = now
    viewer.last_step = step
    for client_id, client in viewer.viser_server.get_clients().items():
        camera_state = viewer.get_camera_state(client)
        if camera_state is not None and client_id in viewer.render_statemachines:
            viewer.render_statemachines[client_id].action(RenderAction("step", camera_state))
    viewer.update_camera_poses()
    viewer.update_step(step)

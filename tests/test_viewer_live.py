"""The live viewer's refresh rule during training (vision3d.viewer.live) on stand-ins of nerfstudio's viewer."""

from __future__ import annotations

import math
import time
from types import MethodType, SimpleNamespace

import pytest
from nerfstudio.viewer.render_state_machine import RenderStateMachine
from nerfstudio.viewer.viewer import Viewer

from vision3d.viewer.live import LiveRefresh, update_scene


def test_interval_keeps_the_train_util_share_for_the_measured_frame_time():
    refresh = LiveRefresh(min_interval_s=0.5, frame_s=1.0)
    assert refresh.interval_s(0.9) == pytest.approx(9.0)  # 9 s training per 1 s frame: 90 % training
    assert refresh.interval_s(0.5) == pytest.approx(1.0)
    assert refresh.interval_s(1.0) == math.inf  # nerfstudio: util 1 never re-renders while training
    refresh.frame_s = 0.01
    assert refresh.interval_s(0.9) == 0.5  # fast frames (GPU): at most every min_interval_s
    refresh.last_refresh = 100.0
    assert not refresh.due(100.4, 0.9) and refresh.due(100.5, 0.9)


class _Machine:
    """What update_scene and LiveRefresh.watch use of nerfstudio's RenderStateMachine."""

    def __init__(self, seconds: float):
        self.state, self.seconds, self.actions = "high", seconds, []

    def _render_img(self, camera_state):
        time.sleep(self.seconds)
        return {"rgb": camera_state}

    def action(self, action):
        self.actions.append(action)


def test_full_size_frames_are_timed_and_moving_ones_are_not():
    assert callable(RenderStateMachine._render_img)  # the method wrapped on nerfstudio's class
    refresh, machine = LiveRefresh(), _Machine(0.05)
    refresh.watch(machine)
    refresh.watch(machine)  # wrapped once
    assert machine._render_img("camera") == {"rgb": "camera"}
    assert 0.05 <= refresh.frame_s < 1.0
    machine.state, machine.seconds = "low_move", 0.0
    machine._render_img("camera")
    assert refresh.frame_s >= 0.05


@pytest.mark.parametrize("nerfstudio_estimate", [None, 1e9])
def test_update_scene_sends_step_renders_at_the_measured_rate(monkeypatch, nerfstudio_estimate):
    """nerfstudio's own update_scene runs on the stand-in; its estimate (none yet, or one refresh in 1e9 steps)
    does not change when the view re-renders."""
    from nerfstudio.utils.writer import (  # after nerfstudio.viewer: a circular import otherwise
        GLOBAL_BUFFER,
        EventName,
    )

    events = {}
    if nerfstudio_estimate is not None:  # render_freq = util · t_vis / ((1 − util) · t_train) ≈ 1e9 steps
        events = {EventName.TRAIN_RAYS_PER_SEC.value: {"avg": 4096.0},
                  EventName.VIS_RAYS_PER_SEC.value: {"avg": 512**2 / nerfstudio_estimate * 9}}
    monkeypatch.setitem(GLOBAL_BUFFER, "events", events)
    machine = _Machine(0.0)
    calls = []
    viewer = SimpleNamespace(
        step=0, last_step=0, last_move_time=0.0, train_util=0.9, render_statemachines={7: machine},
        trainer=SimpleNamespace(training_state="training"), control_panel=SimpleNamespace(max_res=512),
        viser_server=SimpleNamespace(get_clients=lambda: {7: "client"}),
        get_camera_state=lambda client: f"camera of {client}",
        update_camera_poses=lambda: calls.append("poses"), update_step=lambda step: calls.append(step),
    )
    viewer.update_scene = MethodType(Viewer.update_scene, viewer)
    refresh = LiveRefresh(min_interval_s=0.5, frame_s=2.0)  # a 2 s frame at util 0.9: every 18 s
    update_scene(viewer, refresh, step=3, num_rays_per_batch=4096)
    assert [(a.action, a.camera_state) for a in machine.actions] == [("step", "camera of client")]
    assert calls == ["poses", 3] and viewer.last_step == 3
    update_scene(viewer, refresh, step=4, num_rays_per_batch=4096)  # too soon
    assert len(machine.actions) == 1 and viewer.step == 4 and viewer.last_step == 3
    refresh.last_refresh -= 18.0
    update_scene(viewer, refresh, step=5, num_rays_per_batch=4096)
    assert len(machine.actions) == 2 and viewer.last_step == 5
    refresh.last_refresh -= 18.0
    viewer.trainer.training_state = "paused"  # nerfstudio re-renders a paused run through its own actions
    update_scene(viewer, refresh, step=6, num_rays_per_batch=4096)
    assert len(machine.actions) == 2 and viewer.last_step == 5

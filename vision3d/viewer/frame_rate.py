"""Frames of nerfstudio's viewer without a browser: its own render state machine, fed the actions a user makes.

nerfstudio's ``RenderStateMachine`` picks each frame's resolution: ``high`` (static camera) renders at the
control panel's "Max res" (512 by default); ``low_move`` / ``low_static`` at the size that the measured rays
per second allow at 30 frames/s. That rule is the same on CPU and GPU, so on a slow CPU render the image shrinks
while the camera moves. :func:`viewer_frames` drives that very class (``_render_img`` with its interrupt trace
and depth compositing, then ``_send_output_to_viewer`` with colour mapping and JPEG encoding into a real viser
scene) through a sequence of actions, and times each frame; the browser's own drawing is not included.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from types import SimpleNamespace

import numpy as np
import torch
from nerfstudio.cameras.cameras import CameraType
from nerfstudio.configs.base_config import LocalWriterConfig, LoggingConfig
from nerfstudio.utils import writer
from nerfstudio.utils.colormaps import ColormapOptions
from nerfstudio.utils.writer import EventName
from nerfstudio.viewer.render_state_machine import RenderStateMachine
from nerfstudio.viewer.utils import CameraState
from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO

DEFAULT_MAX_RES = 512
"""nerfstudio 1.1.5's "Max res" slider default: the long side of a static (``high``) frame."""


@dataclass
class ViewerFrame:
    """One frame the viewer would send: the action that caused it, the resulting state, its size and time."""

    action: str
    state: str
    width: int
    height: int
    seconds: float


@dataclass
class _ControlPanel:
    """The control-panel values ``RenderStateMachine`` reads (nerfstudio's defaults)."""

    max_res: int = DEFAULT_MAX_RES
    output_render: str = "rgb"
    background_color: tuple[int, int, int] = (38, 42, 55)
    crop_viewport: bool = False
    layer_depth: bool = True
    split: bool = False
    colormap_options: ColormapOptions = field(default_factory=ColormapOptions)
    output_options: list[str] = field(default_factory=list)

    def update_output_options(self, options: list[str]) -> None:
        """What the "Output type" dropdown would list: the keys the model returned."""
        self.output_options = list(options)


def _headless_viewer(model, panel: _ControlPanel):
    """A stand-in for nerfstudio's ``Viewer`` with what the render state machine reads from it."""
    return SimpleNamespace(
        control_panel=panel,
        render_tab_state=SimpleNamespace(preview_render=False),
        include_time=False,
        get_model=lambda: model,
        pipeline=SimpleNamespace(model=model),
        train_lock=None,
        step=0,
        update_colormap_options=lambda dimensions, dtype: None,
        config=SimpleNamespace(jpeg_quality=75, image_format="jpeg"),
        stats_markdown=SimpleNamespace(content=""),
        make_stats_markdown=lambda step, res: res,
    )


def orbit_camera_states(c2w: torch.Tensor, n: int, fov: float, aspect: float, degrees: float = 30.0) -> list[CameraState]:
    """``n`` viewer camera states turning ``c2w [3, 4]`` (nerfstudio's OpenGL axes) about the world z axis."""
    states = []
    for angle in np.radians(np.linspace(0.0, degrees, n)):
        cos, sin = float(np.cos(angle)), float(np.sin(angle))
        turn = torch.tensor([[cos, -sin, 0.0], [sin, cos, 0.0], [0.0, 0.0, 1.0]], dtype=c2w.dtype)
        states.append(CameraState(fov=fov, aspect=aspect, c2w=turn @ c2w, camera_type=CameraType.PERSPECTIVE))
    return states


@torch.no_grad()
def viewer_frames(model, scene, camera_states: list[CameraState], actions: list[str], max_res: int = DEFAULT_MAX_RES,
                  output_render: str = "rgb") -> list[ViewerFrame]:
    """Render one frame per action (``"static"``, ``"move"``, ``"step"`` or ``"rerender"``) at ``camera_states[i]``.

    ``scene``: a viser scene (``ViserServer(...).scene``) that receives the encoded images. Transitions follow
    nerfstudio's table; a ``static`` action in the ``high`` state renders nothing, as in nerfstudio.
    nerfstudio's global timing buffer is set up when absent (as ``ns-viewer`` does), so the measured rays per
    second (of this call's frames only) steer the ``low_*`` resolutions exactly as in the viewer.
    """
    if not writer.is_initialized():
        writer.setup_local_writer(LoggingConfig(local_writer=LocalWriterConfig(enable=False)), max_iter=0)
    writer.GLOBAL_BUFFER["events"].pop(EventName.VIS_RAYS_PER_SEC.value, None)  # this model's speed only
    panel = _ControlPanel(max_res=max_res, output_render=output_render)
    client = SimpleNamespace(camera=SimpleNamespace(aspect=camera_states[0].aspect), scene=scene)
    machine = RenderStateMachine(_headless_viewer(model, panel), VISER_NERFSTUDIO_SCALE_RATIO, client)
    frames = []
    for action, state in zip(actions, camera_states, strict=True):
        if machine.state == "high" and action == "static":
            continue
        machine.state = machine.transitions[machine.state][action]
        start = time.perf_counter()
        outputs = machine._render_img(state)
        machine._send_output_to_viewer(outputs, static_render=action in ("static", "step"))
        seconds = time.perf_counter() - start
        height, width = outputs["rgb"].shape[:2]
        frames.append(ViewerFrame(action, machine.state, int(width), int(height), seconds))
    return frames

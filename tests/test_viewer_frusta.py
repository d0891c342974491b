"""Camera frusta in a real viser scene: OpenCV poses land where they point, two sets in two colours."""

from __future__ import annotations

import numpy as np
import pytest
import viser
import viser.transforms as vtf

from vision3d.viewer.browser import free_port
from vision3d.viewer.frusta import (
    ESTIMATED_COLOUR,
    GROUND_TRUTH_COLOUR,
    CameraFrustaControl,
    add_estimated_and_gt_frusta,
)


class RecordingScene:
    """A viser scene that also records the arguments of each frustum it adds."""

    def __init__(self, scene):
        self.scene, self.calls = scene, []

    def add_camera_frustum(self, **kwargs):
        self.calls.append(kwargs)
        return self.scene.add_camera_frustum(**kwargs)


@pytest.fixture(scope="module")
def server():
    server = viser.ViserServer(host="127.0.0.1", port=free_port(), verbose=False)
    yield server
    server.stop()


def _orbit(n: int, radius: float) -> np.ndarray:
    """Cameras [n, 4, 4] (OpenCV axes) on a circle, each looking at the origin (+Z forward, +Y down)."""
    poses = []
    for angle in np.linspace(0, 2 * np.pi, n, endpoint=False):
        eye = np.array([radius * np.cos(angle), radius * np.sin(angle), 0.5])
        forward = -eye / np.linalg.norm(eye)
        right = np.cross(forward, [0.0, 0.0, 1.0])
        right /= np.linalg.norm(right)
        down = np.cross(forward, right)
        pose = np.eye(4)
        pose[:3, :3] = np.stack([right, down, forward], axis=1)
        pose[:3, 3] = eye
        poses.append(pose)
    return np.stack(poses)


def test_estimated_and_gt_frusta_point_where_the_poses_look(server):
    gt = _orbit(5, 2.0)
    estimated = gt.copy()
    estimated[:, :3, 3] += 0.1  # a pose error the two sets must show
    K = np.array([[40.0, 0, 32], [0, 30.0, 24], [0, 0, 1]])
    scene = RecordingScene(server.scene)
    handles = add_estimated_and_gt_frusta(scene, {"estimated": estimated, "ground_truth": gt, "K": K, "size": (64, 48)},
                                          scale_ratio=10.0)
    assert sorted(handles) == ["estimated", "ground_truth"] and all(len(h) == 5 for h in handles.values())
    for key, poses in (("estimated", estimated), ("ground_truth", gt)):
        for handle, pose in zip(handles[key], poses, strict=True):
            np.testing.assert_allclose(handle.position, pose[:3, 3] * 10.0, atol=1e-5)
            # viser frusta look along their local +Z (OpenCV), so the rotation maps +Z to the pose's viewing axis
            np.testing.assert_allclose(vtf.SO3(np.asarray(handle.wxyz)).as_matrix() @ [0, 0, 1], pose[:3, 2], atol=1e-6)
    colours = {call["name"].split("/")[1]: call["color"] for call in scene.calls}
    assert colours == {"estimated_cameras": ESTIMATED_COLOUR, "ground_truth_cameras": GROUND_TRUTH_COLOUR}
    assert ESTIMATED_COLOUR != GROUND_TRUTH_COLOUR
    call = scene.calls[0]
    assert call["fov"] == pytest.approx(2 * np.arctan(24 / 30)) and call["aspect"] == pytest.approx(64 / 48)


def test_without_ground_truth_only_the_estimate_is_drawn_and_bad_shapes_are_refused(server):
    handles = add_estimated_and_gt_frusta(server.scene, {"estimated": _orbit(3, 1.0), "ground_truth": None,
                                                         "K": np.eye(3) * 20, "size": (32, 32)})
    assert list(handles) == ["estimated"] and len(handles["estimated"]) == 3
    with pytest.raises(ValueError, match=r"estimated_cameras: camera-to-world poses must be \[N, 4, 4\]"):
        add_estimated_and_gt_frusta(server.scene, {"estimated": np.eye(4), "K": np.eye(3), "size": (8, 8)})


def test_the_viewer_control_draws_on_setup_and_redraws_on_refresh(server):
    poses = {"estimated": _orbit(4, 1.5), "ground_truth": _orbit(4, 1.5), "K": np.eye(3) * 20, "size": (32, 32)}
    control = CameraFrustaControl(lambda: poses)
    control.refresh()  # before the viewer starts: nothing to draw on, no error
    assert control.handles == {}

    class Viewer:  # what ViewerControl._setup reads from nerfstudio's Viewer
        viser_server = server

    control._setup(Viewer())
    first = control.handles["estimated"][0]
    np.testing.assert_allclose(first.position, poses["estimated"][0, :3, 3] * 10.0, atol=1e-5)
    poses["estimated"] = poses["estimated"].copy()
    poses["estimated"][:, :3, 3] *= 2.0  # the poses trained on
    control.refresh()
    np.testing.assert_allclose(control.handles["estimated"][0].position, poses["estimated"][0, :3, 3] * 10.0, atol=1e-5)
    assert control.handles["estimated"][0] is not first

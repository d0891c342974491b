"""Camera frusta in nerfstudio's viser viewer: one set per pose estimate (ir-nerf: estimated vs ground truth).

- Input poses are camera-to-world ``[N, 4, 4]`` in OpenCV axes, as :mod:`vision3d.geometry` and ir-nerf's
  ``estimated_and_gt_cameras`` give them; viser's frusta use OpenCV axes too, so no flip is made here.
- Poses are in the model's (dataparser) frame, the frame the viewer renders; positions are multiplied by
  nerfstudio's ``VISER_NERFSTUDIO_SCALE_RATIO`` (10) as nerfstudio does for its own training-camera frusta.
- The field of view is the vertical one of ``K`` and the image height (viser's convention); nerfstudio's own
  frusta use ``2 atan(cx / fx)``, which differs for non-square images.
- :class:`CameraFrustaControl` is a nerfstudio ``ViewerControl``: a model that holds one as an attribute gets
  its frusta drawn when the viewer (``ns-viewer`` or the live viewer of ``ns-train``) starts, and can
  ``refresh()`` them while its poses train.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import numpy as np
import viser.transforms as vtf
from nerfstudio.viewer.viewer import VISER_NERFSTUDIO_SCALE_RATIO
from nerfstudio.viewer.viewer_elements import ViewerControl

ESTIMATED_COLOUR = (230, 60, 40)
"""Red-orange: the poses a method estimated."""
GROUND_TRUTH_COLOUR = (40, 170, 80)
"""Green: the ground-truth poses."""


def vertical_fov(K: np.ndarray, height: int) -> float:  # noqa: N803
    """Vertical field of view in radians of a pinhole ``K [3, 3]`` for an image ``height`` pixels tall."""
    return float(2.0 * np.arctan(height / (2.0 * float(K[1, 1]))))


def add_camera_frusta(
    scene,
    name: str,
    c2w: np.ndarray,
    K: np.ndarray,  # noqa: N803
    size: tuple[int, int],
    colour: tuple[int, int, int],
    frustum_scale: float = 0.1,
    scale_ratio: float = VISER_NERFSTUDIO_SCALE_RATIO,
) -> list:
    """Add one frustum per pose ``c2w [N, 4, 4]`` (OpenCV axes) under ``/name/`` in a viser scene.

    ``scene``: a viser server's or client's ``.scene``; ``K [3, 3]`` and ``size`` (width, height) in pixels.
    Returns the frustum handles, in the order of ``c2w``.
    """
    c2w = np.asarray(c2w, dtype=np.float64)
    if c2w.ndim != 3 or c2w.shape[1:] != (4, 4):
        raise ValueError(f"{name}: camera-to-world poses must be [N, 4, 4], got {list(c2w.shape)}")
    width, height = (int(v) for v in size)
    fov = vertical_fov(np.asarray(K, dtype=np.float64), height)
    return [
        scene.add_camera_frustum(
            name=f"/{name}/camera_{i:05d}",
            fov=fov,
            aspect=width / height,
            scale=frustum_scale,
            color=colour,
            wxyz=vtf.SO3.from_matrix(pose[:3, :3]).wxyz,
            position=pose[:3, 3] * scale_ratio,
        )
        for i, pose in enumerate(c2w)
    ]


def add_estimated_and_gt_frusta(scene, cameras: Mapping, frustum_scale: float = 0.1,
                                scale_ratio: float = VISER_NERFSTUDIO_SCALE_RATIO) -> dict[str, list]:
    """Frusta of ``cameras["estimated"]`` (red-orange) and, when not None, ``cameras["ground_truth"]`` (green).

    ``cameras``: the dict of ir-nerf's ``estimated_and_gt_cameras`` — ``estimated`` / ``ground_truth``
    ``[N, 4, 4]`` (OpenCV c2w), ``K [3, 3]``, ``size`` (width, height). Returns ``{set name: handles}``.
    """
    sets = {"estimated": ESTIMATED_COLOUR, "ground_truth": GROUND_TRUTH_COLOUR}
    return {
        key: add_camera_frusta(scene, f"{key}_cameras", cameras[key], cameras["K"], cameras["size"], colour,
                               frustum_scale, scale_ratio)
        for key, colour in sets.items()
        if cameras.get(key) is not None
    }


class CameraFrustaControl(ViewerControl):
    """Draws the frusta of ``get_cameras()`` (a dict as :func:`add_estimated_and_gt_frusta` takes) in the viewer.

    Hold one as a model attribute (``self.frusta = CameraFrustaControl(lambda: estimated_and_gt_cameras(self))``);
    nerfstudio's viewer finds it and calls ``_setup`` once it runs. ``refresh()`` redraws (poses that train).
    """

    def __init__(self, get_cameras: Callable[[], Mapping], frustum_scale: float = 0.1):
        super().__init__()
        self.get_cameras = get_cameras
        self.frustum_scale = frustum_scale
        self.handles: dict[str, list] = {}

    def _setup(self, viewer) -> None:
        super()._setup(viewer)
        self.refresh()

    def refresh(self) -> None:
        """Remove the drawn frusta (if any) and draw the current cameras; a no-op before the viewer starts."""
        if not hasattr(self, "viser_server"):
            return
        for handles in self.handles.values():
            for handle in handles:
                handle.remove()
        self.handles = add_estimated_and_gt_frusta(self.viser_server.scene, self.get_cameras(), self.frustum_scale)

"""Camera YAML files and the instantaneous-motion geometry E-MoFlow needs.

Conventions (used by the simulator, E-MoFlow and the tests alike):

* Cameras are :class:`vision3d.geometry.camera.PinholeCamera` (pixel centres at index + 0.5); camera
  YAML files hold OpenCV/ROS calibration values (centres at integers), converted on load and save. A lens's
  radial/tangential distortion in the YAML (:func:`load_distortion`) is undone on the events' coordinates
  (:func:`undistort_events`) before fitting: the motion field below holds for pinhole coordinates.
* Camera frame x right, y down, z forward; normalised coordinates ``x = K⁻¹[p; 1]``.
* ``v`` and ``ω`` are the **camera's** linear and angular velocity expressed in its own
  frame. A static scene point then moves in the camera frame as ``Ẋ = −ω × X − v``, and its
  image moves with the motion field ``u = (1/Z)·A(x)·v + B(x)·ω`` (normalised units per time),
  ``A = [[−1, 0, x], [0, −1, y]]``, ``B = [[xy, −(1+x²), y], [1+y², −xy, −x]]``.
* With these conventions the differential epipolar constraint reads
  ``uᵀ[v]×x − xᵀSx = 0``, ``S = ½([v]×[ω]× + [ω]×[v]×)`` (E-MoFlow's ``loss/dec.py`` form).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vision3d.errors import Vision3DError
from vision3d.geometry.camera import PinholeCamera


class CameraFileError(Vision3DError, ValueError):
    """A camera YAML that cannot be used; the message names the file and the problem."""


def load_camera(path: str | Path) -> PinholeCamera:
    """Read intrinsics from YAML: ``fx fy cx cy width height`` keys, or ``K`` (3×3 list, or
    ``camera_matrix: {data: [9 numbers]}`` as ROS/OpenCV calibration files write it) with
    ``width``/``height`` (``image_width``/``image_height``). The values are OpenCV's (pixel centres at
    integers), as every calibration tool writes them; the camera returned has ``cx, cy`` 0.5 larger.
    Raises :class:`CameraFileError`."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise CameraFileError(f"{path}: no such camera file")
    try:
        d = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        raise CameraFileError(f"{path}: malformed YAML ({str(err).splitlines()[0]})") from err
    if not isinstance(d, dict):
        raise CameraFileError(f"{path}: expected a mapping of intrinsics, got {type(d).__name__}")
    width = d.get("width", d.get("image_width"))
    height = d.get("height", d.get("image_height"))
    try:
        if "fx" in d:
            missing = [k for k in ("fy", "cx", "cy") if k not in d]
            if missing:
                raise CameraFileError(f"{path}: has fx but not {', '.join(missing)}")
            fx, fy, cx, cy = (float(d[k]) for k in ("fx", "fy", "cx", "cy"))
        else:
            k = d.get("K", d.get("camera_matrix"))
            if isinstance(k, dict):
                k = k.get("data")
            if k is None:
                raise CameraFileError(f"{path}: no intrinsics (expected fx/fy/cx/cy, K or camera_matrix.data)")
            k = np.asarray(k, dtype=np.float64)
            if k.size != 9:
                raise CameraFileError(f"{path}: K must have 9 numbers (3×3), got {k.size}")
            k = k.reshape(3, 3)
            fx, fy, cx, cy = k[0, 0], k[1, 1], k[0, 2], k[1, 2]
        if width is None or height is None:
            raise CameraFileError(f"{path}: needs width and height (or image_width/image_height)")
        width, height = int(width), int(height)
    except CameraFileError:
        raise
    except (TypeError, ValueError) as err:
        raise CameraFileError(f"{path}: intrinsics must be numbers ({err})") from err
    if not (np.isfinite([fx, fy, cx, cy]).all() and fx > 0 and fy > 0 and width > 0 and height > 0):
        raise CameraFileError(f"{path}: needs finite fx, fy > 0 and width, height > 0, got fx={fx} fy={fy} "
                              f"{width}×{height}")  # fmt: skip
    return PinholeCamera.from_opencv(float(fx), float(fy), float(cx), float(cy), width, height)


YAML_DISTORTION_KEYS = ("distortion_coefficients", "D", "dist_coeffs", "distortion_coeffs", "distortion")
"""Where calibration files keep the coefficients: ROS camera_info (``distortion_coefficients: {data: [...]}``),
Kalibr/OpenCV lists; or ``k1 k2 p1 p2 k3`` as keys."""


def load_distortion(path: str | Path) -> np.ndarray | None:
    """The lens distortion of a camera YAML in OpenCV's order (k1 k2 p1 p2 [k3 ...]); None when it has none or
    all are zero. Fisheye (equidistant) models are refused: their undistortion is another function.
    Raises :class:`CameraFileError`."""
    import yaml

    path = Path(path)
    d = yaml.safe_load(path.read_text()) or {}
    model = str(d.get("distortion_model", d.get("camera_model", "plumb_bob"))).lower()
    if model in ("equidistant", "fisheye", "kannala_brandt", "opencv_fisheye"):
        raise CameraFileError(f"{path}: distortion model {model!r} is not supported (radial-tangential "
                              "plumb_bob/radtan only); undistort the events with your calibration tool first")
    values = next((d[k] for k in YAML_DISTORTION_KEYS if k in d), None)
    if isinstance(values, dict):
        values = values.get("data")
    if values is None and any(k in d for k in ("k1", "k2", "p1", "p2", "k3")):
        values = [d.get(k, 0.0) for k in ("k1", "k2", "p1", "p2", "k3")]
    if values is None:
        return None
    try:
        coefficients = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise CameraFileError(f"{path}: distortion coefficients must be numbers ({err})") from err
    if coefficients.size not in (4, 5, 8) or not np.isfinite(coefficients).all():
        raise CameraFileError(f"{path}: expected 4, 5 or 8 finite distortion coefficients (k1 k2 p1 p2 [k3 ...]), "
                              f"got {coefficients.tolist()}")
    return coefficients if np.any(coefficients) else None


def undistort_events(xy: Tensor, camera: PinholeCamera, coefficients: np.ndarray | None) -> Tensor:
    """Event pixel indices ``xy [N, 2]`` of a camera with lens ``coefficients`` (OpenCV's order) moved to where a
    pinhole camera with the same K would have seen them (float indices, as ``xy`` in; unchanged without a lens)."""
    if coefficients is None or len(xy) == 0:
        return xy
    import cv2

    fx, fy, cx, cy = camera.to_opencv()  # an event's index is its OpenCV pixel coordinate
    K = np.array([[fx, 0.0, cx], [0.0, fy, cy], [0.0, 0.0, 1.0]])  # noqa: N806
    points = xy.detach().cpu().double().numpy().reshape(-1, 1, 2)
    moved = cv2.undistortPoints(points, K, coefficients, P=K).reshape(-1, 2)
    return torch.from_numpy(moved).to(xy)


def save_camera(path: str | Path, camera: PinholeCamera) -> None:
    """Write ``camera`` as :func:`load_camera` reads it (OpenCV's ``cx, cy``: 0.5 smaller than ours)."""
    import yaml

    fx, fy, cx, cy = (float(v) for v in camera.to_opencv())
    with open(path, "w") as f:
        yaml.safe_dump({"fx": fx, "fy": fy, "cx": cx, "cy": cy, "width": int(camera.width),
                        "height": int(camera.height)}, f)


def motion_field(
    x: Tensor,  # [N, 2] normalised coordinates
    inv_depth: Tensor,  # [N]
    v: Tensor,  # [3] or [N, 3] camera linear velocity
    w: Tensor,  # [3] or [N, 3] camera angular velocity
) -> Tensor:  # [N, 2] normalised image velocity
    """``u = (1/Z)·A(x)·v + B(x)·ω`` for a camera moving with (v, ω) through a static scene."""
    v = v.expand(x.shape[0], 3)
    w = w.expand(x.shape[0], 3)
    px, py = x[:, 0], x[:, 1]
    ux = inv_depth * (-v[:, 0] + px * v[:, 2]) + px * py * w[:, 0] - (1 + px**2) * w[:, 1] + py * w[:, 2]
    uy = inv_depth * (-v[:, 1] + py * v[:, 2]) + (1 + py**2) * w[:, 0] - px * py * w[:, 1] - px * w[:, 2]
    return torch.stack([ux, uy], -1)


def dec_residual(
    x: Tensor,  # [N, 2] normalised coordinates
    u: Tensor,  # [N, 2] normalised image velocity
    v: Tensor,  # [3] or [N, 3] linear velocity (its scale only scales e)
    w: Tensor,  # [3] or [N, 3] angular velocity
) -> Tensor:  # [N]
    """Differential epipolar residual ``e = uᵀ[v]×x − xᵀSx``, ``S = ½([v]×[ω]× + [ω]×[v]×)``.

    Computed as ``e = (v × x)·(u + ω × x)`` with ``x = [x, y, 1]``, ``u = [u_x, u_y, 0]``: since
    ``[v]×ᵀ = −[v]×``, ``xᵀ[v]×[ω]×x = xᵀ[ω]×[v]×x = −(v × x)·(ω × x)``. The tests hold this
    against the matrix form.
    """
    if x.shape[-1] != 2 or u.shape != x.shape:
        raise ValueError(f"x and u must both be [N, 2], got {tuple(x.shape)} and {tuple(u.shape)}")
    xh = torch.cat([x, torch.ones_like(x[:, :1])], -1)
    uh = torch.cat([u, torch.zeros_like(u[:, :1])], -1)
    v = v.expand(x.shape[0], 3)
    w = w.expand(x.shape[0], 3)
    return (torch.linalg.cross(v, xh) * (uh + torch.linalg.cross(w, xh))).sum(-1)


def resolve_translation_sign(
    x: Tensor,  # [N, 2]
    u: Tensor,  # [N, 2]
    v: Tensor,  # [3]
    w: Tensor,  # [3]
) -> Tensor:  # [3]
    """Pick the sign of ``v`` that puts the scene in front of the camera (positive depth).

    The DEC residual is odd in ``v``, so it cannot tell ``v`` from ``−v``. Given ω, the
    translational flow ``u − B(x)ω = (1/Z)A(x)v`` gives ``1/Z`` per pixel by least squares;
    we flip ``v`` when the median of these inverse depths is negative (cheirality).
    """
    u_t = u - motion_field(x, torch.zeros_like(x[:, 0]), torch.zeros(3, dtype=x.dtype), w)
    a_v = motion_field(x, torch.ones_like(x[:, 0]), v, torch.zeros(3, dtype=x.dtype))
    inv_z = (u_t * a_v).sum(-1) / a_v.pow(2).sum(-1).clamp_min(1e-12)
    return v if torch.median(inv_z) >= 0 else -v

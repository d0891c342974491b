"""IMU axes to camera axes: the rotation that maps a DAVIS gyroscope's readings into the camera frame.

The DAVIS346's IMU (InvenSense MPU-6x50 family) sits on the sensor board with its axes along the
pixel array's, up to signs and order; which signs and order depends on the board revision and on
how the driver rotates the readings, and AEDAT 4 files do not record it. So we choose the mapping
from the data, among the 24 proper signed axis permutations (rotations by multiples of 90°):

* :func:`fit_axis_map` — when the camera rotates: the permutation whose mapped gyro best agrees
  with an egomotion estimate ω (the largest sum over axes of ``ω_i · (R g)_i``, i.e. the
  correlation of the two signals after removing each one's mean).
* :func:`gravity_axis_map` — when it does not (the gyro is then bias plus noise and no correlation
  can choose): the accelerometer of a camera at rest reads the reaction to gravity, "up", which in
  our camera frame (x right, y down, z forward, see :mod:`vision3d.events.geometry`) is −y for an
  upright camera. This fixes the axis and sign of y only; among the permutations that agree we
  keep the one closest to identity (x→x, z→z), and say so.
"""

from __future__ import annotations

import itertools

import numpy as np


def signed_axis_permutations() -> np.ndarray:
    """[24, 3, 3] rotation matrices whose entries are 0 and ±1 (det +1)."""
    out = []
    for perm in itertools.permutations(range(3)):
        for signs in itertools.product((1, -1), repeat=3):
            m = np.zeros((3, 3))
            m[range(3), perm] = signs
            if np.linalg.det(m) > 0:
                out.append(m)
    return np.stack(out)


def fit_axis_map(
    w_cam: np.ndarray,  # [N, 3] angular velocity estimates in the camera frame
    gyro: np.ndarray,  # [N, 3] gyroscope readings at the same times, IMU axes
) -> tuple[np.ndarray, float]:
    """(R [3, 3], correlation) of the signed permutation maximising the correlation of ω and R·gyro.

    The correlation is Pearson's over all samples and axes after removing each signal's mean
    (the gyro's mean holds its bias); it is in [-1, 1], and near 0 when neither signal varies.
    """
    a = np.asarray(w_cam, np.float64)
    b = np.asarray(gyro, np.float64)
    if a.shape != b.shape or a.ndim != 2 or a.shape[1] != 3:
        raise ValueError(f"w_cam and gyro must both be [N, 3], got {a.shape} and {b.shape}")
    a = a - a.mean(0)
    b = b - b.mean(0)
    best, best_r = None, -np.inf
    for m in signed_axis_permutations():
        mb = b @ m.T
        den = np.sqrt((a**2).sum() * (mb**2).sum())
        r = float((a * mb).sum() / den) if den > 0 else 0.0
        if r > best_r:
            best, best_r = m, r
    return best, best_r


def gravity_axis_map(accel: np.ndarray) -> tuple[np.ndarray, str]:
    """(R [3, 3], note) from the accelerometer of a camera at rest: the IMU axis reading "up" maps to −y.

    ``accel`` [N, 3] in g. Among the signed permutations sending the mean reading closest to
    (0, −1, 0), the one nearest identity is returned.
    """
    g = np.asarray(accel, np.float64).reshape(-1, 3).mean(0)
    g = g / max(np.linalg.norm(g), 1e-12)
    perms = signed_axis_permutations()
    up = np.array([0.0, -1.0, 0.0])
    scores = np.array([(m @ g) @ up for m in perms])
    ok = perms[scores >= scores.max() - 1e-9]
    m = ok[np.argmax([np.trace(p) for p in ok])]
    axis = int(np.argmax(np.abs(g)))
    note = (
        f"mean accel {np.round(g, 3)} g: IMU {'xyz'[axis]} reads up, mapped to camera −y "
        f"(tilt {np.degrees(np.arccos(np.clip(scores.max(), -1, 1))):.0f}°); x and z signs assumed as recorded"
    )
    return m, note

"""Scores for event egomotion (ω RMS, E-MoFlow's v scoring); the v direction error is
:func:`vision3d.geometry.metrics.direction_error_deg`, flow scores :func:`vision3d.metrics.flow_metrics`."""

from __future__ import annotations

import numpy as np

from vision3d.geometry.metrics import direction_error_deg


def rms(err: np.ndarray) -> float:
    """Root mean square over samples of the per-sample vector norm of ``err`` [..., 3]."""
    err = np.asarray(err, np.float64)
    return float(np.sqrt((err**2).sum(-1).mean()))


def velocity_error_as_emoflow_scores(v_est: np.ndarray, v_gt: np.ndarray) -> tuple[float, float]:
    """v scored as E-MoFlow's own validation does (``train_on_mvsec.py``), for comparison with the paper.

    The estimate's unit direction [..., 3] keeps only its components' magnitudes: each takes the sign of
    ``v_gt``'s component and the vector is scaled by ``‖v_gt‖``; then RMSE = √(mean over samples of ‖Δ‖² / 3)
    (units of ``v_gt``). A sign error in any component therefore costs nothing. Returns (that RMSE, the mean
    angle in degrees between ``|v̂|`` and ``|v_gt|``, the direction error this scoring leaves).
    """
    a = np.asarray(v_est, np.float64)
    b = np.asarray(v_gt, np.float64)
    unit = np.abs(a) / np.linalg.norm(a, axis=-1, keepdims=True).clip(1e-12)
    scored = unit * np.sign(b) * np.linalg.norm(b, axis=-1, keepdims=True)
    rmse = float(np.sqrt(((scored - b) ** 2).sum(-1).mean() / 3))
    return rmse, float(direction_error_deg(unit, np.abs(b)).mean())

"""Scores for event flow and egomotion: flow EPE / %>3 px / angular error, ω RMS, v direction error."""

from __future__ import annotations

import numpy as np


def flow_metrics(est: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict:
    """EPE (px), % of pixels with EPE > 3 px, and angular error (deg, Barron's (u, v, 1) form) on ``mask``."""
    est, gt = np.asarray(est, np.float64), np.asarray(gt, np.float64)
    mask = np.ones(gt.shape[:2], bool) if mask is None else np.asarray(mask, bool)
    e, g = est[mask], gt[mask]
    epe = np.linalg.norm(e - g, axis=-1)
    cos = (1 + (e * g).sum(-1)) / np.sqrt((1 + (e**2).sum(-1)) * (1 + (g**2).sum(-1)))
    ae = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    return {"epe": float(epe.mean()), "pct3": float((epe > 3).mean() * 100), "ae": float(ae.mean())}


def direction_error_deg(v_est: np.ndarray, v_gt: np.ndarray, up_to_sign: bool = False) -> np.ndarray:
    """Angle (deg) between unit directions [..., 3]; ``up_to_sign`` takes the smaller of v and −v."""
    a = np.asarray(v_est, np.float64)
    b = np.asarray(v_gt, np.float64)
    a = a / np.linalg.norm(a, axis=-1, keepdims=True).clip(1e-12)
    b = b / np.linalg.norm(b, axis=-1, keepdims=True).clip(1e-12)
    c = (a * b).sum(-1)
    if up_to_sign:
        c = np.abs(c)
    return np.degrees(np.arccos(np.clip(c, -1, 1)))


def rms(err: np.ndarray) -> float:
    """Root mean square over samples of the per-sample vector norm of ``err`` [..., 3]."""
    err = np.asarray(err, np.float64)
    return float(np.sqrt((err**2).sum(-1).mean()))

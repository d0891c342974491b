"""Relative pose errors and AUC exactly as ReLoc3r's ``eval_relpose.py`` / ``reloc3r/utils/metric.py``.

- rotation error: the norm of ``cv2.Rodrigues(R_pred^T R_gt)`` in degrees;
- translation error: the angle between the unit translation vectors in degrees, with the cosine clipped
  to [-1, 1] and **no** ``min(e, 180 - e)`` folding;
- per pair ``max(rotation, translation)`` (ReLoc3r issue #31: "max" is right, "min" in the paper a typo);
- ``error_auc``: trapezoid area under the recall curve up to each threshold, divided by the threshold.

One deliberate addition: a zero-length or non-finite translation (where ReLoc3r would produce NaN) is
counted as an error of 180 degrees so it ranks as a failure instead of silently disturbing the sort.
"""

from __future__ import annotations

import cv2
import numpy as np
import torch

from vision3d.geometry.so3 import vector_angle

_trapezoid = getattr(np, "trapezoid", None) or np.trapz  # numpy < 2 has only trapz

__all__ = ["rotation_error_deg", "direction_error_deg", "translation_angle_error_deg", "relative_pose_errors", "error_auc"]


def rotation_error_deg(R_pred: np.ndarray, R_gt: np.ndarray) -> np.ndarray:  # noqa: N803
    """``[..., 3, 3]`` pairs to ``[...]`` errors in degrees (Rodrigues of ``R_pred^T R_gt``)."""
    R_pred, R_gt = np.asarray(R_pred, np.float64), np.asarray(R_gt, np.float64)  # noqa: N806
    if R_pred.shape[-2:] != (3, 3) or R_pred.shape != R_gt.shape:
        raise ValueError(f"R_pred and R_gt must both be [..., 3, 3], got {R_pred.shape} and {R_gt.shape}")
    rel = np.swapaxes(R_pred, -1, -2) @ R_gt
    flat = rel.reshape(-1, 3, 3)
    out = np.array([np.linalg.norm(cv2.Rodrigues(m)[0]) for m in flat]) / np.pi * 180.0
    return out.reshape(R_pred.shape[:-2])


def direction_error_deg(a: np.ndarray, b: np.ndarray, up_to_sign: bool = False) -> np.ndarray:
    """Angle in degrees ``[...]`` between directions ``[..., D]`` (scale-free, cosine clipped to [-1, 1]);
    ``up_to_sign`` takes the smaller of ``b`` and ``-b``. A zero-length or non-finite vector scores 180."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if a.shape[-1] != b.shape[-1]:
        raise ValueError(f"directions must have the same length, got shapes {a.shape} and {b.shape}")
    a, b = np.broadcast_arrays(a, b)
    err = np.degrees(vector_angle(torch.from_numpy(a), torch.from_numpy(b), eps=0.0, up_to_sign=up_to_sign).numpy())
    degenerate = (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1) == 0) | ~np.isfinite(err)
    return np.where(degenerate, 180.0, err)


def translation_angle_error_deg(t_pred: np.ndarray, t_gt: np.ndarray) -> np.ndarray:
    """``[..., 3]`` pairs to ``[...]`` angles in degrees, unfolded (a reversed direction is 180)."""
    t_pred, t_gt = np.asarray(t_pred, np.float64), np.asarray(t_gt, np.float64)
    if t_pred.shape[-1] != 3 or t_pred.shape != t_gt.shape:
        raise ValueError(f"t_pred and t_gt must both be [..., 3], got {t_pred.shape} and {t_gt.shape}")
    return direction_error_deg(t_pred, t_gt)


def relative_pose_errors(T_pred: np.ndarray, T_gt: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # noqa: N803
    """Rotation and translation-direction errors ``([N], [N])`` in degrees of relative poses ``[N, 4, 4]``."""
    T_pred, T_gt = np.asarray(T_pred), np.asarray(T_gt)  # noqa: N806
    return (rotation_error_deg(T_pred[..., :3, :3], T_gt[..., :3, :3]),
            translation_angle_error_deg(T_pred[..., :3, 3], T_gt[..., :3, 3]))


def error_auc(rot_errors, trans_errors, thresholds=(5, 10, 20)) -> dict[str, float]:
    """ReLoc3r's ``error_auc``: AUC of the recall of ``max(rot, trans)`` at each threshold (in [0, 1])."""
    rot_errors = np.asarray(rot_errors, np.float64).reshape(-1)
    trans_errors = np.asarray(trans_errors, np.float64).reshape(-1)
    if rot_errors.shape != trans_errors.shape:
        raise ValueError(f"need as many rotation as translation errors, got {rot_errors.size} and {trans_errors.size}")
    if rot_errors.size == 0:
        raise ValueError("error_auc needs at least one pair")
    max_errors = np.max(np.stack([rot_errors, trans_errors], axis=1), axis=1)
    errors = [0.0] + sorted(max_errors.tolist())
    recall = list(np.linspace(0, 1, len(errors)))
    aucs = {}
    for thr in thresholds:
        last = int(np.searchsorted(errors, thr))
        y = recall[:last] + [recall[last - 1]]
        x = errors[:last] + [thr]
        aucs[f"auc@{thr:g}"] = float(_trapezoid(y, x) / thr)
    return aucs

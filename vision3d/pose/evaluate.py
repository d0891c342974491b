"""Evaluation exactly as ReLoc3r's: per-pair rotation / translation-direction errors, AUC@5/10/20 by
``error_auc``; the classical baseline (feature matching + OpenCV essential matrix); timings; pictures.
"""

from __future__ import annotations

import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vision3d.geometry.metrics import error_auc, relative_pose_errors
from vision3d.pose.data import PairDataset, collate


@torch.no_grad()
def predict_poses(model, dataset: PairDataset, batch_size: int = 8) -> tuple[np.ndarray, np.ndarray, float]:
    """Predicted and true ``T21 [N, 4, 4]`` and the seconds per pair (median of 10 batch-1 calls on a warm model,
    robust to other processes on a shared machine), on the device the model's weights are on."""
    model.eval()
    device = next(model.parameters()).device
    preds, gts = [], []
    for start in range(0, len(dataset), batch_size):
        batch = collate([dataset[k] for k in range(start, min(start + batch_size, len(dataset)))])
        preds.append(model(batch["img1"].to(device), batch["img2"].to(device))["pose2to1"].double().cpu().numpy())
        gts.append(batch["T21"].double().numpy())
    sample = dataset[0]
    img1, img2 = sample["img1"][None].to(device), sample["img2"][None].to(device)
    model(img1, img2)
    times = []
    for _ in range(10):
        t0 = time.perf_counter()
        model(img1, img2)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t0)
    return np.concatenate(preds), np.concatenate(gts), float(np.median(times))


def summarize(T_pred: np.ndarray, T_gt: np.ndarray) -> dict:  # noqa: N803
    rot, trans = relative_pose_errors(T_pred, T_gt)
    out = error_auc(rot, trans, [5, 10, 20])
    out.update(pairs=len(rot), median_rot=float(np.median(rot)), median_trans=float(np.median(trans)))
    return out


def essential_pose(k1: np.ndarray, k2: np.ndarray, K1: np.ndarray, K2: np.ndarray,  # noqa: N803
                   threshold_px: float = 1.0) -> np.ndarray | None:
    """OpenCV 5-point RANSAC + ``recoverPose`` on matches (pixel centres at +0.5); returns ``T21`` or None."""
    if len(k1) < 5:
        return None
    # normalised coordinates (p - c) / f do not depend on where pixel centres sit, as long as the keypoints
    # and K share the convention: OpenCV needs no shift of either
    n1 = cv2.undistortPoints(k1.reshape(-1, 1, 2).astype(np.float64), np.asarray(K1, np.float64), None).reshape(-1, 2)
    n2 = cv2.undistortPoints(k2.reshape(-1, 1, 2).astype(np.float64), np.asarray(K2, np.float64), None).reshape(-1, 2)
    f = (K1[0, 0] + K1[1, 1] + K2[0, 0] + K2[1, 1]) / 4
    E, mask = cv2.findEssentialMat(n1, n2, np.eye(3), method=cv2.RANSAC, prob=0.999, threshold=threshold_px / f)  # noqa: N806
    if E is None or E.shape != (3, 3):
        return None
    _, R, t, _ = cv2.recoverPose(E, n1, n2, np.eye(3), mask=mask)  # noqa: N806
    T12 = np.eye(4)  # noqa: N806
    T12[:3, :3], T12[:3, 3] = R, t[:, 0]
    return np.linalg.inv(T12)


def evaluate_essential(dataset: PairDataset, matcher) -> tuple[np.ndarray, np.ndarray, float, int]:
    """The classical baseline at each pair's source resolution; failures get a 180-degree error."""
    preds, gts, seconds, failed = [], [], 0.0, 0
    for k in range(len(dataset)):
        img1, img2, K1, K2, T21 = dataset.raw_pair(k)  # noqa: N806
        t0 = time.perf_counter()
        k1, k2, _ = matcher.match(img1, img2)
        T = essential_pose(k1, k2, K1, K2)  # noqa: N806
        seconds += time.perf_counter() - t0
        if T is None:
            failed += 1
            T = np.eye(4)  # noqa: N806
            T[:3, 3] = -T21[:3, 3]
        preds.append(T)
        gts.append(T21)
    return np.stack(preds), np.stack(gts), seconds / max(len(dataset), 1), failed


def epipolar_picture(img1: np.ndarray, img2: np.ndarray, K1, K2, T_pred, T_gt=None, points=None, n_lines: int = 12,  # noqa: N803
                     seed: int = 0) -> np.ndarray:
    """Side-by-side picture: points in image 1, their epipolar lines in image 2 under the predicted pose (red)
    and, when given, the true pose (green). Float RGB [H, 2W, 3]."""
    h, w = img1.shape[:2]
    a = (np.clip(img1[..., :3], 0, 1) * 255).astype(np.uint8).copy()
    b = (np.clip(img2[..., :3], 0, 1) * 255).astype(np.uint8).copy()
    rng = np.random.default_rng(seed)
    if points is None or len(points) == 0:
        points = np.stack([rng.uniform(0.1 * w, 0.9 * w, n_lines), rng.uniform(0.1 * h, 0.9 * h, n_lines)], -1)
    points = np.asarray(points)[:n_lines]
    colors = [tuple(int(c) for c in rng.integers(64, 256, 3)) for _ in points]
    thick = max(1, w // 200)
    for T, col in ((T_gt, (40, 220, 40)), (T_pred, (235, 40, 40))):  # noqa: N806
        if T is None:
            continue
        Fm = _fundamental(K1, K2, T)  # noqa: N806
        for p in points:
            line = Fm @ np.array([p[0], p[1], 1.0])
            if abs(line[1]) > 1e-9:
                x0, x1 = 0, w
                y0, y1 = -(line[2] + line[0] * x0) / line[1], -(line[2] + line[0] * x1) / line[1]
            else:
                x0 = x1 = -line[2] / line[0]
                y0, y1 = 0, h
            cv2.line(b, (int(x0), int(np.clip(y0, -1e5, 1e5))), (int(x1), int(np.clip(y1, -1e5, 1e5))), col, thick,
                     cv2.LINE_AA)
    for p, c in zip(points, colors, strict=True):
        cv2.circle(a, (int(p[0]), int(p[1])), 2 * thick + 1, c, -1, cv2.LINE_AA)
    return np.concatenate([a, b], axis=1).astype(np.float32) / 255.0


def _fundamental(K1, K2, T21):  # noqa: N803
    T12 = np.linalg.inv(np.asarray(T21, np.float64))  # noqa: N806
    t = T12[:3, 3]
    tx = np.array([[0, -t[2], t[1]], [t[2], 0, -t[0]], [-t[1], t[0], 0]])
    return np.linalg.inv(K2).T @ tx @ T12[:3, :3] @ np.linalg.inv(K1)


def results_table(rows: list[dict], title: str = "relative pose (ReLoc3r protocol)"):
    from rich.table import Table

    table = Table(title=title)
    for col in ("method", "pairs", "AUC@5", "AUC@10", "AUC@20", "med rot°", "med trans°", "ms/pair"):
        table.add_column(col, justify="right" if col != "method" else "left")
    for r in rows:
        table.add_row(r["method"], str(r["pairs"]), f"{100 * r['auc@5']:.2f}", f"{100 * r['auc@10']:.2f}",
                      f"{100 * r['auc@20']:.2f}", f"{r['median_rot']:.2f}", f"{r['median_trans']:.2f}",
                      f"{1000 * r['seconds']:.1f}")
    return table


def save_pictures(model, dataset: PairDataset, T_pred: np.ndarray, folder: str | Path, count: int = 4) -> list[Path]:
    from vision3d.viz import save_png

    folder = Path(folder)
    paths = []
    step = max(1, len(dataset) // count)
    for k in list(range(0, len(dataset), step))[:count]:
        img1, img2, K1, K2, T21 = dataset.raw_pair(k)  # noqa: N806
        sample = dataset[k]
        points = None
        if sample["has_depth"]:  # draw lines for points on the surface, not on the background
            ys, xs = np.nonzero(sample["depth1"].numpy() > 0)
            if len(xs):
                pick = np.random.default_rng(k).choice(len(xs), min(12, len(xs)), replace=False)
                sx, sy = img1.shape[1] / sample["depth1"].shape[1], img1.shape[0] / sample["depth1"].shape[0]
                points = np.stack([(xs[pick] + 0.5) * sx, (ys[pick] + 0.5) * sy], -1)
        pic = epipolar_picture(img1, img2, K1, K2, T_pred[k], T21, points=points)
        name = sample["name"].replace("/", "_")
        paths.append(save_png(folder / f"pair_{k:03d}_{name}.png", pic))
    return paths

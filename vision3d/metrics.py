"""Image, depth and geometry metrics used by the demo, the methods' evaluation and the benchmarks.

PSNR and SSIM are always available. LPIPS needs torchvision's AlexNet weights, which nerfstudio would
download at model init; here it is computed only when those weights are already on disk
(``torch.hub.get_dir()/checkpoints``) and otherwise omitted with a one-line notice.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import torch
from rich.console import Console

CONSOLE = Console(stderr=True)


def psnr(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> float:
    """Peak signal-to-noise ratio in dB of images in [0, 1]; ``pred, target`` [..., H, W, 3]."""
    err = (pred - target) ** 2
    if mask is not None:
        err = err[mask.expand_as(err).bool()]
    mse = float(err.mean())
    return float("inf") if mse == 0 else -10.0 * np.log10(mse)


def ssim(pred: torch.Tensor, target: torch.Tensor) -> float:
    """Structural similarity (11x11 Gaussian window, as 3DGS and nerfstudio) of [H, W, 3] images in [0, 1]."""
    from pytorch_msssim import ssim as _ssim

    to_nchw = lambda im: im.permute(2, 0, 1)[None].float()  # noqa: E731
    return float(_ssim(to_nchw(pred), to_nchw(target), data_range=1.0, size_average=True))


def _alexnet_weights_path() -> Path:
    from torchvision.models import AlexNet_Weights

    return Path(torch.hub.get_dir()) / "checkpoints" / Path(AlexNet_Weights.DEFAULT.url).name


@functools.cache
def lpips_model():
    """torchmetrics' LPIPS (AlexNet) when its backbone weights are on disk, else None (with a notice once)."""
    weights = _alexnet_weights_path()
    if not weights.is_file():
        CONSOLE.print(f"[yellow]LPIPS omitted: AlexNet weights not found at {weights} (nothing is downloaded).")
        return None
    from torchmetrics.image.lpip import LearnedPerceptualImagePatchSimilarity

    return LearnedPerceptualImagePatchSimilarity(net_type="alex", normalize=True).eval()


def lpips(pred: torch.Tensor, target: torch.Tensor) -> float | None:
    """LPIPS of [H, W, 3] images in [0, 1], or None when its weights are not on disk."""
    model = lpips_model()
    if model is None:
        return None
    to_nchw = lambda im: im.permute(2, 0, 1)[None].float().cpu().clamp(0, 1)  # noqa: E731
    with torch.no_grad():
        return float(model(to_nchw(pred), to_nchw(target)))


def image_metrics(pred: torch.Tensor, target: torch.Tensor) -> dict[str, float]:
    """PSNR, SSIM and (when available) LPIPS of [H, W, 3] images in [0, 1]."""
    out = {"psnr": psnr(pred, target), "ssim": ssim(pred, target)}
    value = lpips(pred, target)
    if value is not None:
        out["lpips"] = value
    return out


def depth_abs_rel(pred: torch.Tensor, target: torch.Tensor, valid: torch.Tensor | None = None) -> float:
    """Mean |pred − gt| / gt over pixels with gt > 0 (and ``valid``); depths [H, W] in the same units."""
    mask = target > 0
    if valid is not None:
        mask &= valid.bool()
    if not mask.any():
        raise ValueError("depth_abs_rel: no pixel has a valid ground-truth depth")
    return float(((pred[mask] - target[mask]).abs() / target[mask]).mean())


def chamfer_fscore(
    pred_points: np.ndarray, gt_points: np.ndarray, threshold: float
) -> dict[str, float]:
    """Accuracy, completeness, Chamfer-L1 and precision/recall/F-score at ``threshold`` of two point sets [N, 3].

    Accuracy is the mean distance from predicted to GT points, completeness from GT to predicted, as
    in the ScanNet/ManhattanSDF evaluation that HelixSurf reports.
    """
    from scipy.spatial import cKDTree

    if len(pred_points) == 0 or len(gt_points) == 0:
        raise ValueError("chamfer_fscore: both point sets must be non-empty")
    acc = cKDTree(gt_points).query(pred_points)[0]
    comp = cKDTree(pred_points).query(gt_points)[0]
    precision = float((acc < threshold).mean())
    recall = float((comp < threshold).mean())
    fscore = 0.0 if precision + recall == 0 else 2 * precision * recall / (precision + recall)
    return {
        "accuracy": float(acc.mean()),
        "completeness": float(comp.mean()),
        "chamfer_l1": float(0.5 * (acc.mean() + comp.mean())),
        "precision": precision,
        "recall": recall,
        "fscore": fscore,
    }


def mesh_chamfer_fscore(
    pred_mesh, gt_mesh, threshold: float, n_points: int = 100_000, seed: int = 0, gt_keep=None
) -> dict[str, float]:
    """:func:`chamfer_fscore` of two trimesh meshes, each sampled uniformly by area with ``n_points`` points.

    ``gt_keep`` (points [N, 3] -> bool [N]) drops ground-truth samples outside the region a reconstruction
    can cover (e.g. outside the scene box), so an unbounded ground plane does not count as missing.
    """
    import trimesh

    if len(pred_mesh.faces) == 0 or len(gt_mesh.faces) == 0:
        raise ValueError("mesh_chamfer_fscore: both meshes need faces")
    pred = np.asarray(trimesh.sample.sample_surface(pred_mesh, n_points, seed=seed)[0])
    gt = np.asarray(trimesh.sample.sample_surface(gt_mesh, n_points, seed=seed + 1)[0])
    if gt_keep is not None:
        gt = gt[np.asarray(gt_keep(gt), bool)]
    return chamfer_fscore(pred, gt, threshold)


def flow_metrics(est: np.ndarray, gt: np.ndarray, mask: np.ndarray | None = None) -> dict[str, float]:
    """Optical-flow errors of flows [H, W, 2] in pixels on ``mask``: mean end-point error ``epe``, the share of
    pixels with EPE > 3 px ``pct3`` (%), and the mean angular error ``ae`` (degrees, Barron's (u, v, 1) form)."""
    est, gt = np.asarray(est, np.float64), np.asarray(gt, np.float64)
    mask = np.ones(gt.shape[:2], bool) if mask is None else np.asarray(mask, bool)
    if not mask.any():
        raise ValueError("flow_metrics: no valid pixel")
    e, g = est[mask], gt[mask]
    epe = np.linalg.norm(e - g, axis=-1)
    cos = (1 + (e * g).sum(-1)) / np.sqrt((1 + (e**2).sum(-1)) * (1 + (g**2).sum(-1)))
    ae = np.degrees(np.arccos(np.clip(cos, -1, 1)))
    return {"epe": float(epe.mean()), "pct3": float((epe > 3).mean() * 100), "ae": float(ae.mean())}

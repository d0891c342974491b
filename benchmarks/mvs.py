"""PatchMatch MVS (vision3d.mvs) on Middlebury stereo pairs with ground-truth disparity, beside OpenCV's SGBM.

    nice -n 10 .venv/bin/python benchmarks/mvs.py [--quick] [--iterations 6] [--figures DIR]

Pairs: Middlebury 2014 Motorcycle (scikit-image's copy, 741×500) and Middlebury 2006 Aloe (Debian's
opencv-doc via ``apt-get download``, at half size 641×555 by default; skipped with the reason when apt
cannot fetch it). Each rectified pair becomes two cameras with one K (focal f, centre of the image) and
a baseline b along +x, so a disparity d is the z-depth f·b/d; our depth maps are turned back into
disparities of the left image. Both methods search the same disparity range [1, n] (n = SGBM's
``numDisparities``). PatchMatch runs on both views (left against right, right against left) and the
geometric filter with one source is the left-right check. Scores on pixels with known ground truth:
density (share of those pixels with an estimate), bad-2px (share off by more than 2 px) and EPE (mean
absolute error, px), both on the pixels each method estimates; "raw" is PatchMatch before the filter
(every pixel has an estimate). Wall time of each method on this machine. A picture per pair shows left
image, GT, ours (filtered), SGBM and both error maps (0–4 px).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vision3d.data.apt_data import AptUnavailableError
from vision3d.data.stereo import StereoPair, aloe, motorcycle
from vision3d.mvs import MVSConfig, run_mvs
from vision3d.mvs.consistency import GeometricFilterConfig
from vision3d.mvs.cost import MatchingCostConfig
from vision3d.mvs.patchmatch import PatchMatchConfig
from vision3d.viz import colorize, contact_sheet, save_png

BASELINE = 1.0  # any baseline works: depth and disparity convert through f·b


def resize_pair(pair: StereoPair, scale: float) -> StereoPair:
    if scale == 1.0:
        return pair
    size = (round(pair.left.shape[1] * scale), round(pair.left.shape[0] * scale))
    left, right = (cv2.resize(im, size, interpolation=cv2.INTER_AREA) for im in (pair.left, pair.right))
    disp = cv2.resize(pair.disparity, size, interpolation=cv2.INTER_NEAREST) * scale
    return StereoPair(left, right, disp, pair.name, pair.source)


def stereo_cameras(h: int, w: int, focal: float) -> tuple[torch.Tensor, torch.Tensor]:
    """K [2, 3, 3] and c2w [2, 4, 4] of a rectified pair: right camera at +BASELINE along the left camera's x."""
    K = torch.tensor([[focal, 0, w / 2], [0, focal, h / 2], [0, 0, 1]], dtype=torch.float64)  # noqa: N806
    c2w = torch.eye(4, dtype=torch.float64).repeat(2, 1, 1)
    c2w[1, 0, 3] = BASELINE
    return K.expand(2, 3, 3).clone(), c2w


def scores(disp: np.ndarray, gt: np.ndarray, estimated: np.ndarray) -> dict[str, float]:
    known = np.isfinite(gt)
    both = known & estimated
    err = np.abs(disp[both] - gt[both])
    return {"density": 100 * both.sum() / known.sum(), "bad2": 100 * float((err > 2).mean()), "epe": float(err.mean())}


def run_sgbm(pair: StereoPair, n_disp: int) -> tuple[np.ndarray, np.ndarray, float]:
    """OpenCV's SGBM with the settings of its stereo_match sample (block 5, P1/P2 = 8/32·3·5², 3-way)."""
    block = 5
    sgbm = cv2.StereoSGBM_create(minDisparity=0, numDisparities=n_disp, blockSize=block, P1=8 * 3 * block**2,
                                 P2=32 * 3 * block**2, disp12MaxDiff=1, uniquenessRatio=10, speckleWindowSize=100,
                                 speckleRange=2, mode=cv2.STEREO_SGBM_MODE_SGBM_3WAY)
    t0 = time.perf_counter()
    raw = sgbm.compute(cv2.cvtColor(pair.left, cv2.COLOR_RGB2GRAY), cv2.cvtColor(pair.right, cv2.COLOR_RGB2GRAY))
    seconds = time.perf_counter() - t0
    disp = raw.astype(np.float32) / 16.0
    return disp, disp >= 1.0, seconds


def run_patchmatch(pair: StereoPair, n_disp: int, iterations: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """Our disparities of the left image: raw, and the left-right-checked mask; wall seconds."""
    h, w = pair.left.shape[:2]
    focal = float(w)  # any focal works too; this one keeps normals of slanted surfaces moderate
    K, c2w = stereo_cameras(h, w, focal)  # noqa: N806
    images = torch.from_numpy(np.stack([pair.left, pair.right]))
    cfg = MVSConfig(patchmatch=PatchMatchConfig(iterations=iterations, cost=MatchingCostConfig(top_k=1)),
                    filter=GeometricFilterConfig(max_reprojection_px=1.0, max_relative_depth=0.02, min_consistent=1))
    t0 = time.perf_counter()
    result = run_mvs(images, K, c2w, (focal * BASELINE / n_disp, focal * BASELINE / 1.0), cfg, sources=[[1], [0]])
    seconds = time.perf_counter() - t0
    disp = (focal * BASELINE / result.depth[0].clamp_min(1e-9)).numpy()
    return disp, np.ones_like(disp, dtype=bool), result.consistency.mask[0].numpy(), seconds


def picture(path: Path, pair: StereoPair, ours: np.ndarray, ours_ok: np.ndarray, sgbm: np.ndarray,
            sgbm_ok: np.ndarray) -> None:
    gt = pair.disparity
    known = np.isfinite(gt)
    lo, hi = np.nanpercentile(gt, 1), np.nanpercentile(gt, 99)
    tiles = [pair.left / 255.0, colorize(gt, known, vmin=lo, vmax=hi),
             colorize(ours, ours_ok, vmin=lo, vmax=hi), colorize(sgbm, sgbm_ok, vmin=lo, vmax=hi),
             np.ones_like(pair.left, dtype=float),
             colorize(np.abs(ours - gt), ours_ok & known, cmap="magma", vmin=0, vmax=4),
             colorize(np.abs(sgbm - gt), sgbm_ok & known, cmap="magma", vmin=0, vmax=4),
             np.ones_like(pair.left, dtype=float)]
    save_png(path, contact_sheet(tiles, columns=4))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=6, help="PatchMatch iterations")
    ap.add_argument("--quick", action="store_true", help="half-size motorcycle, quarter-size aloe, 3 iterations")
    ap.add_argument("--no-aloe", action="store_true")
    ap.add_argument("--figures", type=Path, default=Path("outputs/benchmarks/mvs"))
    args = ap.parse_args()
    iterations = 3 if args.quick else args.iterations
    loaders = [("motorcycle", motorcycle, 0.5 if args.quick else 1.0, 64)]
    if not args.no_aloe:
        loaders.append(("aloe", aloe, 0.25 if args.quick else 0.5, 224))
    rows = []
    for name, load, scale, n_disp_full in loaders:
        try:
            pair = resize_pair(load(), scale)
        except AptUnavailableError as exc:
            print(f"skipping {name}: {exc}")
            continue
        n_disp = max(16, int(np.ceil(n_disp_full * scale / 16)) * 16)
        h, w = pair.left.shape[:2]
        sgbm, sgbm_ok, sgbm_s = run_sgbm(pair, n_disp)
        ours, raw_ok, ours_ok, ours_s = run_patchmatch(pair, n_disp, iterations)
        label = f"{name} {w}×{h}"
        rows.append((label, f"PatchMatch raw ({iterations} it.)", scores(ours, pair.disparity, raw_ok), ours_s))
        rows.append((label, "PatchMatch, left-right checked", scores(ours, pair.disparity, ours_ok), ours_s))
        rows.append((label, f"OpenCV SGBM (0..{n_disp})", scores(sgbm, pair.disparity, sgbm_ok), sgbm_s))
        picture(args.figures / f"{name}.png", pair, ours, ours_ok, sgbm, sgbm_ok)
        print(f"wrote {args.figures / f'{name}.png'}")
    print("\n| pair | method | density % | bad-2px % | EPE px | wall s |")
    print("|---|---|---|---|---|---|")
    for label, method, s, seconds in rows:
        print(f"| {label} | {method} | {s['density']:.1f} | {s['bad2']:.1f} | {s['epe']:.2f} | {seconds:.1f} |")


if __name__ == "__main__":
    main()

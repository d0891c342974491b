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

Multi-view: the bundled ``armadillo`` scene (24 Blender views at 128×128 of a textured armadillo on a brick
ground, exact depth, normals and mesh); every ``--view-step``-th view is a reference (all by default) and
any view a source (``--sources`` per view, chosen by :func:`vision3d.mvs.select_sources`); the geometric
filter checks each reference against its sources that are references too. Each view's depth range is
the scene's SfM-like sparse points' (``sparse_pc.ply``) 1–99 % depth quantiles widened by 0.8/1.25, as
COLMAP takes it from its sparse model. Scores on pixels with
ground-truth depth (the HDRI background has none): density after the geometric filter, share within 1 %
relative depth, median normal error, and the fused cloud's distance to the ground-truth mesh (median and
share within 1 cm; the armadillo is about 1 unit tall).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import cv2
import numpy as np
import torch

from vision3d.data.apt_data import AptUnavailableError
from vision3d.data.bundled import bundled_scene_path
from vision3d.data.scene import load_scene
from vision3d.data.stereo import StereoPair, aloe, motorcycle
from vision3d.geometry.se3 import invert_pose, opengl_to_opencv, transform_points
from vision3d.mvs import MVSConfig, fuse, run_mvs
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


def run_armadillo(n_sources: int, iterations: int, view_step: int, geometric_passes: int, figures: Path) -> list[str]:
    """Multi-view PatchMatch on the bundled armadillo; returns markdown table rows."""
    import open3d as o3d  # noqa: PLC0415
    from PIL import Image  # noqa: PLC0415

    scene = load_scene(bundled_scene_path("armadillo"))
    images = torch.from_numpy(np.stack([scene.load_image(i) for i in range(len(scene))]))
    K = torch.from_numpy(np.stack([f.K for f in scene.frames]))  # noqa: N806
    c2w = opengl_to_opencv(torch.from_numpy(np.stack([f.c2w for f in scene.frames])))
    gt_depth = torch.from_numpy(np.stack([scene.load_depth(i) for i in range(len(scene))])).double()
    gt_normal = torch.from_numpy(np.stack([np.asarray(Image.open(f.normal_path), dtype=np.float64)[..., :3] / 255 * 2 - 1
                                           for f in scene.frames])) * torch.tensor([1.0, -1.0, -1.0], dtype=torch.float64)
    sparse = torch.from_numpy(np.asarray(o3d.io.read_point_cloud(str(scene.root / scene.meta["ply_file_path"])).points))
    z = transform_points(invert_pose(c2w), sparse.expand(len(scene), -1, -1))[..., 2]  # [V, P]
    depth_range = torch.stack([0.8 * z.quantile(0.01, dim=1), 1.25 * z.quantile(0.99, dim=1)], dim=1)
    views = list(range(0, len(scene), view_step))
    cfg = MVSConfig(patchmatch=PatchMatchConfig(iterations=iterations), n_sources=n_sources,
                    geometric_passes=geometric_passes)
    t0 = time.perf_counter()
    result = run_mvs(images, K, c2w, depth_range, cfg, views=views)
    seconds = time.perf_counter() - t0
    known = gt_depth[views] > 0
    kept = result.consistency.mask[views] & known
    rel = ((result.depth[views] - gt_depth[views]).abs() / gt_depth[views].clamp_min(1e-9))[kept]
    normal = result.normal[views].double()
    angle = torch.rad2deg(torch.acos((normal * gt_normal[views] / gt_normal[views].norm(dim=-1, keepdim=True)
                                      .clamp_min(1e-9)).sum(-1).clamp(-1, 1)))[kept]
    cloud = fuse(result, images, c2w)
    mesh = o3d.t.geometry.TriangleMesh.from_legacy(o3d.io.read_triangle_mesh(str(scene.mesh_path)))
    raycast = o3d.t.geometry.RaycastingScene()
    raycast.add_triangles(mesh)
    dist = raycast.compute_distance(o3d.core.Tensor(cloud.points.astype(np.float32))).numpy()
    stem = f"armadillo_geometric{geometric_passes}"
    cloud.save(figures / f"{stem}_fused.ply")
    tiles = []
    for v in views[:4]:
        gt = gt_depth[v].numpy()
        lo, hi = np.percentile(gt[gt > 0], 1), np.percentile(gt[gt > 0], 99)
        ours = result.filtered_depth[v].double().numpy()
        tiles += [images[v].numpy(), colorize(gt, gt > 0, vmin=lo, vmax=hi), colorize(ours, ours > 0, vmin=lo, vmax=hi),
                  colorize(np.abs(ours - gt) / np.maximum(gt, 1e-9), (ours > 0) & (gt > 0), cmap="magma", vmin=0,
                           vmax=0.03)]
    save_png(figures / f"{stem}.png", contact_sheet(tiles, columns=4))
    print(f"wrote {figures / stem}.png (views, GT, ours filtered, relative error 0–3 %) and {stem}_fused.ply "
          f"({len(cloud.points)} points)")
    label = f"armadillo {len(views)} refs × {n_sources} sources, {iterations} it. + {geometric_passes} geometric passes"
    return [f"| {label} | {100 * kept.sum() / known.sum():.1f} | {100 * (rel < 0.01).double().mean():.1f} | "
            f"{rel.median():.4f} | {angle.median():.1f} | {np.median(dist):.4f} | {100 * (dist < 0.01).mean():.1f} | "
            f"{seconds:.1f} |"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--iterations", type=int, default=6, help="PatchMatch iterations")
    ap.add_argument("--quick", action="store_true", help="half-size motorcycle, quarter-size aloe, 3 iterations")
    ap.add_argument("--no-aloe", action="store_true")
    ap.add_argument("--no-stereo", action="store_true", help="skip both stereo pairs")
    ap.add_argument("--no-armadillo", action="store_true")
    ap.add_argument("--sources", type=int, default=4, help="source views per reference (armadillo)")
    ap.add_argument("--geometric-passes", type=int, nargs="+", default=[0, 1],
                    help="armadillo: one run per value (passes with the geometric term after the photometric one)")
    ap.add_argument("--view-step", type=int, default=1, help="every n-th armadillo view is a reference")
    ap.add_argument("--figures", type=Path, default=Path("outputs/benchmarks/mvs"))
    args = ap.parse_args()
    iterations = 3 if args.quick else args.iterations
    loaders = [] if args.no_stereo else [("motorcycle", motorcycle, 0.5 if args.quick else 1.0, 64)]
    if not (args.no_aloe or args.no_stereo):
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
        passes = MVSConfig().geometric_passes
        rows.append((label, f"PatchMatch raw ({iterations} it. + {passes} geometric pass)",
                     scores(ours, pair.disparity, raw_ok), ours_s))
        rows.append((label, "PatchMatch, left-right checked", scores(ours, pair.disparity, ours_ok), ours_s))
        rows.append((label, f"OpenCV SGBM (0..{n_disp})", scores(sgbm, pair.disparity, sgbm_ok), sgbm_s))
        picture(args.figures / f"{name}.png", pair, ours, ours_ok, sgbm, sgbm_ok)
        print(f"wrote {args.figures / f'{name}.png'}")
    if rows:
        print("\n| pair | method | density % | bad-2px % | EPE px | wall s |")
        print("|---|---|---|---|---|---|")
    for label, method, s, seconds in rows:
        print(f"| {label} | {method} | {s['density']:.1f} | {s['bad2']:.1f} | {s['epe']:.2f} | {seconds:.1f} |")
    if not args.no_armadillo:
        mv_rows = []
        for passes in args.geometric_passes:
            mv_rows += run_armadillo(args.sources, iterations, args.view_step * (2 if args.quick else 1), passes,
                                     args.figures)
        print("\n| scene | density % | depth within 1 % | median rel. depth err | median normal err ° "
              "| fused: median dist to mesh | fused: % within 0.01 | wall s |")
        print("|---|---|---|---|---|---|---|---|")
        print("\n".join(mv_rows))


if __name__ == "__main__":
    main()

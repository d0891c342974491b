"""Mesh quality of our splat methods on the bundled scene: train briefly, ``v3d export mesh --gt``, print a table.

Each method trains on the same sparse split of the bundled scene (``--train-views`` views, seed 0) with the
demo's schedule (:func:`vision3d.demo.demo_config`; det-gs against its monocular-like depth prior, as the
demo), then its mesh is fused from the training views (TSDF, defaults) and scored against the scene's
ground-truth mesh (armadillo + ground plane, samples outside the scene box left out): accuracy,
completeness, Chamfer-L1 and F-score at ``--threshold`` (scene units; the armadillo is 1 unit tall).

    nice python benchmarks/export_mesh.py --steps 800 --train-views 8
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

from vision3d.data.bundled import bundled_scene_path
from vision3d.demo import demo_config
from vision3d.export.from_run import export_run_mesh
from vision3d.methods import run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["vision3d-splat", "det-gs"])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--train-views", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--output", type=Path, default=Path("outputs/bench_export_mesh"))
    args = parser.parse_args()

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    gt = bundled_scene_path() / "mesh.ply"
    rows = []
    for method in args.methods:
        config = demo_config(method, args.steps, args.output / "runs", train_views=args.train_views)
        if method == "det-gs":
            config.pipeline.datamanager.depth_prior.source = "monocular_like"
        start = time.perf_counter()
        trainer = run.train(config)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        result = export_run_mesh(trainer.base_dir, args.output / f"{method}.ply", gt_mesh=gt, threshold=args.threshold)
        export_s = time.perf_counter() - start
        rows.append((method, trainer.pipeline.model.num_points, result.summary, result.scores, train_s, export_s))

    print(f"\n{args.train_views} training views, {args.steps} steps, commit {commit}, "
          f"{time.strftime('%Y-%m-%d', time.gmtime())}\n")
    print(f"| method | Gaussians | mesh faces | accuracy | completeness | Chamfer-L1 | precision | recall | "
          f"F@{args.threshold:g} | train s | export s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for method, n, summary, s, train_s, export_s in rows:
        print(f"| {method} | {n} | {summary['faces']} | {s['accuracy']:.4f} | {s['completeness']:.4f} | "
              f"{s['chamfer_l1']:.4f} | {s['precision']:.3f} | {s['recall']:.3f} | {s['fscore']:.3f} | "
              f"{train_s:.0f} | {export_s:.0f} |")


if __name__ == "__main__":
    main()

"""Mesh quality of our methods on the bundled scene: train briefly, ``v3d export mesh --gt``, print a table.

Each method trains on the same sparse split of the bundled scene (``--train-views`` views, seed 0) with the
demo's schedule (:func:`vision3d.demo.demo_config`; det-gs against its monocular-like depth prior, as the
demo), then its mesh is fused from the training views (TSDF, defaults) and scored against the scene's
ground-truth mesh (armadillo + ground plane, samples outside the scene box left out): accuracy,
completeness, Chamfer-L1 and F-score at ``--threshold`` (scene units; the armadillo is 1 unit tall).

helixsurf and ir-nerf run with their CPU presets (``configs/<method>/cpu.yaml``), the schedules fit to
``--steps``; ir-nerf, pose-free, sees all views and its mesh is aligned onto the ground-truth poses (Sim(3)).

    nice python benchmarks/export_mesh.py --steps 800 --train-views 8
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import time
from pathlib import Path

import torch

from vision3d.data.bundled import bundled_scene_path
from vision3d.demo import demo_config
from vision3d.export.from_run import export_run_mesh
from vision3d.methods import run
from vision3d.methods.presets import apply_preset, find_preset

CPU_PRESETS = {"helixsurf": "vision3d.methods.helixsurf.config:helixsurf", "ir-nerf": "vision3d.methods.ir_nerf.config:ir_nerf"}
"""Methods run with their ``configs/<method>/cpu.yaml`` preset, the schedule fit to ``--steps``."""


def method_config(method: str, steps: int, output: Path, train_views: int):
    """The demo's config (splat methods), or the CPU preset's (helixsurf on the sparse split; ir-nerf, pose-free,
    on all views) on the bundled scene."""
    if method not in CPU_PRESETS:
        config = demo_config(method, steps, output, train_views=train_views)
        if method == "det-gs":
            config.pipeline.datamanager.depth_prior.source = "monocular_like"
        return config
    module, name = CPU_PRESETS[method].split(":")
    spec = getattr(importlib.import_module(module), name)
    config = apply_preset(spec.config, find_preset(method, "cpu"))
    views = train_views if method == "helixsurf" else None
    config = run.configure(config, bundled_scene_path(), output, max_steps=steps, num_train_views=views,
                           experiment_name=method)
    if method == "helixsurf":
        config.pipeline.model.max_steps = steps
        config.optimizers["fields"]["scheduler"].max_steps = steps
    return config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["vision3d-splat", "det-gs"])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--train-views", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--output", type=Path, default=Path("outputs/bench_export_mesh"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True).stdout.strip()
    gt = bundled_scene_path() / "mesh.ply"
    rows = []
    for method in args.methods:
        config = method_config(method, args.steps, args.output / "runs", args.train_views)
        start = time.perf_counter()
        trainer = run.train(config)
        train_s = time.perf_counter() - start
        start = time.perf_counter()
        result = export_run_mesh(trainer.base_dir, args.output / f"{method}.ply", gt_mesh=gt, threshold=args.threshold)
        export_s = time.perf_counter() - start
        rows.append((method, getattr(trainer.pipeline.model, "num_points", "-"), result.summary, result.scores, train_s, export_s))

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

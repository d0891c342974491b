"""Mesh quality of our methods on the bundled scene: train briefly, ``v3d export mesh --gt``, print a table.

Each method trains on the same sparse split of the bundled scene (``--train-views`` views, seed 0) with the
demo's schedule (:func:`vision3d.demo.demo_config`; det-gs against its monocular-like depth prior, as the
demo), then its mesh is fused from the training views (TSDF, defaults) and scored against the scene's
ground-truth mesh (armadillo + ground plane, samples outside the scene box left out): accuracy,
completeness, Chamfer-L1 and F-score at ``--threshold`` (scene units; the armadillo is 1 unit tall).

romap continues the vision3d-splat of the same split and steps (trained first, also scored): the armadillo is its
part 1 (part masks from the scene's depth and ``object.ply``), ``--romap-steps`` label steps then as many edit
steps towards the training images with the armadillo tinted gold (benchmarks/romap.py's target edit); its
geometry is the splat's with only the part's Gaussians free.

helixsurf and ir-nerf run with their CPU presets (``configs/<method>/cpu.yaml``), the schedules fit to
``--steps``; ir-nerf, pose-free, sees all views, its pose prior set to the capture (:func:`capture_prior`), and its
mesh is aligned onto the ground-truth poses (Sim(3)).

    nice python benchmarks/export_mesh.py --steps 800 --train-views 8
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from provenance import git_commit  # this folder is on sys.path when a benchmark runs as a script
from scipy.spatial import cKDTree

from vision3d.data.bundled import bundled_scene_path
from vision3d.data.consistency import backproject
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
    if method == "ir-nerf":
        config.pipeline.model.ir_nerf.prior = capture_prior(bundled_scene_path())
    return config


def capture_prior(scene: Path):
    """ir-nerf's pose prior set to the capture (``prior_of_capture``: the orbit's camera distance) with the
    elevation range 5–60° that docs/export.md's ir-nerf row was measured with (``benchmarks/ir_nerf.py
    --elevation 5 60``). The preset's radius 4 is twice the bundled orbit's (1.99): with it, P's estimates of the
    real images faced away from the object and every ray missed the field's cube."""
    from vision3d.methods.ir_nerf.data import load_unposed
    from vision3d.methods.ir_nerf.pose_prior import prior_of_capture

    return replace(prior_of_capture(load_unposed(scene, 32).gt_c2w), elevation_min_deg=5.0, elevation_max_deg=60.0)


def scene_with_parts(out: Path, tolerance: float = 0.02) -> Path:
    """A copy of the bundled scene with romap's part masks (``part_ids/``: 1 where a pixel's depth lands within
    ``tolerance`` scene units of the armadillo, ``object.ply``, else 0) and gold-tinted targets (``targets/``)."""
    import trimesh
    from romap import tint  # benchmarks/romap.py, beside this script

    from vision3d.data.scene import load_scene

    scene_dir = out / "armadillo-parts"
    if scene_dir.exists():
        shutil.rmtree(scene_dir)
    shutil.copytree(bundled_scene_path(), scene_dir)
    scene = load_scene(scene_dir)
    armadillo = cKDTree(trimesh.load(scene_dir / "object.ply", force="mesh").sample(200_000, seed=0))
    (scene_dir / "part_ids").mkdir()
    (scene_dir / "targets").mkdir()
    (scene_dir / "part_ids" / "parts.json").write_text(json.dumps(["armadillo"]))
    for index, frame in enumerate(scene.frames):
        depth = scene.load_depth(index)
        valid = depth > 0
        near = np.zeros(depth.shape, dtype=bool)
        near[valid] = armadillo.query(backproject(depth, frame.camera.K, frame.c2w)[valid])[0] < tolerance
        Image.fromarray(near.astype(np.uint8)).save(scene_dir / "part_ids" / f"{frame.image_path.stem}.png")
        image = torch.from_numpy(scene.load_image(index))
        target = tint(image, torch.from_numpy(near))
        Image.fromarray((target * 255).round().byte().numpy()).save(scene_dir / "targets" / f"{frame.image_path.stem}.png")
    return scene_dir


def romap_configs(steps: int, romap_steps: int, output: Path, train_views: int):
    """The splat romap starts from (demo schedule) and romap's config: ``romap_steps`` label then edit steps."""
    from vision3d.methods.romap.config import romap

    scene = scene_with_parts(output)
    splat = demo_config("vision3d-splat", steps, output, train_views=train_views)
    splat.pipeline.datamanager.data = splat.pipeline.datamanager.dataparser.data = scene
    splat.experiment_name = "romap-splat"
    config = run.configure(romap.config, scene, output, max_steps=2 * romap_steps, num_train_views=train_views,
                           experiment_name="romap")
    config.pipeline.model.label_steps = romap_steps
    config.pipeline.model.part = "armadillo"
    config.pipeline.model.background_color = "black"
    config.pipeline.datamanager.target_dir = scene / "targets"
    return splat, config


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=["vision3d-splat", "det-gs"])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--train-views", type=int, default=8)
    parser.add_argument("--threshold", type=float, default=0.05)
    parser.add_argument("--output", type=Path, default=Path("outputs/bench_export_mesh"))
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument("--romap-steps", type=int, default=60, help="romap: label steps, then as many edit steps")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    commit = git_commit()
    gt = bundled_scene_path() / "mesh.ply"
    rows = []

    def timed(train) -> tuple:
        start = time.perf_counter()
        return train(), time.perf_counter() - start

    for method in args.methods:
        if method == "romap":  # its splat first, then romap from its checkpoint
            splat, config = romap_configs(args.steps, args.romap_steps, args.output / "runs", args.train_views)
            splat_run = timed(lambda c=splat: run.train(c))
            config.load_checkpoint = sorted(splat_run[0].checkpoint_dir.glob("*.ckpt"))[-1]
            trained = [("romap's splat", *splat_run), ("romap", *timed(lambda c=config: run.train(c)))]
        else:
            config = method_config(method, args.steps, args.output / "runs", args.train_views)
            trained = [(method, *timed(lambda c=config: run.train(c)))]
        for name, trainer, train_s in trained:
            start = time.perf_counter()
            result = export_run_mesh(trainer.base_dir, args.output / f"{name.replace(' ', '_')}.ply", gt_mesh=gt,
                                     threshold=args.threshold)
            export_s = time.perf_counter() - start
            rows.append((name, getattr(trainer.pipeline.model, "num_points", "-"), result.summary, result.scores, train_s,
                         export_s))

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

"""det-gs vs base splats vs each regularizer alone, on rendered real scenes; and a det-gs step's cost.

Scenes are real meshes (Debian's libcgal-demo) rendered with Blender; none is the bundled test scene.
Two families: forward-facing paths (the LLFF-like sparse-view protocol) and 360° orbits of 32 views
whose background is a textured ground and an HDRI (far content). Each run trains one variant for
``--steps`` on a seeded split of ``--views`` training views and reports held-out PSNR / SSIM (LPIPS when
its weights are on disk), depth AbsRel against ground-truth depth over all pixels and over the pixels the
render covers (accumulation >= 0.5; ``run.evaluate``) and of the worst held-out view, the opaque Gaussians
near a held-out camera (the floaters of 360° orbits), wall seconds and the final number of Gaussians;
the tables give mean ± std over seeds with each variant's PSNR against base, then each seed's run.
A run is bit-reproducible on CPU for its seed (``run.train`` seeds every generator), so differences
between seeds are the seed spread, not run-to-run noise. The depth prior
is the monocular-like prior (ground truth with per-region affine distortion, blur and noise): no
monocular network can be downloaded here.

Frames (``--frames``): ``metric`` keeps the render's own frame (orientation, centring, auto-scale off)
with its units multiplied by each ``--scales`` value (the dataparser's ``scale_factor``: the same images
in other units); ``default`` is what ``ns-train det-gs --data X`` does (nerfstudio orients, centres and
scales the cameras into [-1, 1], which divides any unit out exactly, so it runs at scale 1 only).

    python benchmarks/det_gs.py                                      # forward-facing, 3 and 6 views
    python benchmarks/det_gs.py --scenes dragon-360 --views 8 24 --frames metric default --scales 1 100
    python benchmarks/det_gs.py --step-cost dragon-360               # base vs det-gs step time only

Results are cached in ``--cache``/results.json under a key that holds the run's settings and a hash of
the code that produced it (vision3d's sources), so rows of older code are never printed as new; an
interrupted benchmark resumes, several processes can fill the same cache, and ``--print-only`` prints
what the cache holds for the current code without training.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import json
import time
from pathlib import Path

import numpy as np
from provenance import REPO, git_commit  # this folder is on sys.path when a benchmark runs as a script

VARIANTS = {
    "base": {"use_depth": False, "use_edge": False, "use_tv": False},
    "depth only": {"use_depth": True, "use_edge": False, "use_tv": False},
    "edge only": {"use_depth": False, "use_edge": True, "use_tv": False},
    "tv only": {"use_depth": False, "use_edge": False, "use_tv": True},
    "det-gs": {"use_depth": True, "use_edge": True, "use_tv": True},
    "depth+edge": {"use_depth": True, "use_edge": True, "use_tv": False},
    "depth+tv": {"use_depth": True, "use_edge": False, "use_tv": True},  # det-gs without L_edge
    # the paper's constant weights and both depth passes every L_depth step (det-gs before issue 23's fix)
    "det-gs constant": {"use_depth": True, "use_edge": True, "use_tv": True, "support_reference_views": 0,
                        "depth_passes_alternate": False},
    "det-gs edge-in-depth": {"use_depth": True, "use_edge": True, "use_tv": True, "edge_space": "depth"},
    # L_edge masked by Canny edges only, as the paper (det-gs before session 12: smooths across the sky and silhouettes)
    # det-gs without looking for sky floaters (det-gs before session 15), and pruning them instead of pushing
    "det-gs no-sky-floaters": {"use_depth": True, "use_edge": True, "use_tv": True, "sky_floaters": False},
    "det-gs prune": {"use_depth": True, "use_edge": True, "use_tv": True, "sky_floaters": "prune"},
    "det-gs canny-only": {"use_depth": True, "use_edge": True, "use_tv": True, "edge_skip_unknown_depth": False,
                          "edge_prior_jump": 0.0},
}
# name -> (model, render overrides, views rendered). Forward-facing paths as LLFF (with 3 views of an orbit
# most held-out content is never seen); 360° orbits for the dense-view direction of the paper.
SCENES = {
    "bunny": ("bunny", {"hdri": "courtyard", "ground": "brick", "path": "forward"}, 24),
    "dragon": ("dragon", {"hdri": "sunset", "ground": "brick", "path": "forward"}, 24),
    "elephant": ("elephant", {"hdri": "city", "ground": "brick", "path": "forward"}, 24),
    "dragon-360": ("dragon", {"hdri": "sunset", "ground": "brick", "path": "orbit"}, 32),
    "elephant-360": ("elephant", {"hdri": "forest", "ground": "grass", "path": "orbit"}, 32),
}


def code_version() -> str:
    """Hash of every vision3d source file: a cached row is reused only by the same code (what this script
    sets up for a run is in the row's config hash)."""
    digest = hashlib.sha256()
    for path in sorted((REPO / "vision3d").rglob("*.py")):
        digest.update(str(path.relative_to(REPO)).encode() + path.read_bytes())
    return digest.hexdigest()[:12]


def scene_folder(name: str, cache: Path, resolution: int) -> Path:
    model, overrides, views = SCENES[name]
    if views == 24:  # the forward scenes' folders from before the 360° ones, so their renders are reused
        return cache / "scenes" / f"{name}-{overrides['path']}-{resolution}"
    return cache / "scenes" / f"{model}-{overrides['path']}-{views}v-{resolution}"


def scene_path(name: str, cache: Path, resolution: int) -> Path:
    """The scene ``name`` rendered into ``cache`` (Blender runs only when it is not there yet)."""
    from vision3d.data.render import render_scene

    model, overrides, views = SCENES[name]
    return render_scene(model, scene_folder(name, cache, resolution), views=views, width=resolution,
                        height=resolution, spp=32, **overrides)


def configure(scene: Path, variant: str, views: int, seed: int, steps: int, out: Path, frame: str, scale: float):
    """The det-gs TrainerConfig of one run (regularizers switched as ``variant`` says)."""
    from vision3d.methods import run
    from vision3d.methods.det_gs.config import det_gs

    config = run.configure(det_gs.config, scene, out, max_steps=steps, num_train_views=views, split_seed=seed,
                           seed=seed, experiment_name=f"{variant}-{views}v-s{seed}-{frame}-x{scale:g}".replace(" ", "_"))
    parser = config.pipeline.datamanager.dataparser
    if frame == "metric":
        parser.orientation_method, parser.center_method, parser.auto_scale_poses = "none", "none", False
        parser.scale_factor = scale
    elif scale != 1:
        raise ValueError("the default frame divides the scene's units out; use scale 1")
    config.pipeline.datamanager.depth_prior.source = "monocular_like"
    config.pipeline.datamanager.depth_prior.monocular_like.seed = seed
    model = config.pipeline.model
    model.warmup_length, model.refine_every, model.stop_split_at = steps // 10, max(steps // 20, 50), int(steps * 0.8)
    model.resolution_schedule = max(steps // 3, 1)
    settings = dict(VARIANTS[variant])
    # the sky-floater treatment is part of det-gs, not of a single regularizer's ablation
    sky_floaters = settings.pop("sky_floaters", variant.startswith("det-gs"))
    model.sky_floaters.enabled = bool(sky_floaters)
    if isinstance(sky_floaters, str):
        model.sky_floaters.action = sky_floaters
    for key, value in settings.items():
        setattr(model.losses, key, value)
    model.output_depth_during_training = variant != "base"  # base renders what vision3d-splat renders
    return config


def near_camera_gaussians(trainer, max_distance: float = 0.3, min_opacity: float = 0.2) -> int:
    """Opaque Gaussians (opacity > ``min_opacity``) closer than ``max_distance`` orbit radii to a held-out
    camera: the floaters that fill a held-out view (the orbit radius is the cameras' mean distance to their centroid)."""
    import torch

    model, datamanager = trainer.pipeline.model, trainer.pipeline.datamanager
    held_out = datamanager.eval_dataset.cameras.camera_to_worlds[:, :3, 3]
    centres = torch.cat([datamanager.train_dataset.cameras.camera_to_worlds[:, :3, 3], held_out])
    radius = (centres - centres.mean(0)).norm(dim=-1).mean()
    with torch.no_grad():
        distance = torch.cdist(model.means.cpu(), held_out.cpu()).min(dim=1).values
        opaque = torch.sigmoid(model.opacities.cpu()).squeeze(-1) > min_opacity
    return int((opaque & (distance < max_distance * radius)).sum())


def train_and_evaluate(config, eval_at: tuple[int, ...] = (), pictures: bool = False) -> dict:
    """Train ``config`` and evaluate its held-out views. With ``eval_at``, also after those numbers of steps
    (``row["curve"]``: steps -> metrics and Gaussians; the generators' states are restored after each, so
    the run stays the one it is without). With ``pictures``, the final held-out renders, GT, depths and
    errors go to the run's ``heldout/`` folder as PNGs. ``row["per_view"]``: PSNR and depth AbsRel per
    held-out view (a mean can be one view's floater)."""
    import random

    import torch
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    from vision3d.methods import run

    curve = {}

    def evaluation_callbacks(trainer) -> list:
        def evaluate_now(step: int) -> None:
            states = random.getstate(), np.random.get_state(), torch.get_rng_state()
            curve[step + 1] = run.mean_metrics(run.evaluate(trainer))
            curve[step + 1]["gaussians"] = int(trainer.pipeline.model.means.shape[0])
            trainer.pipeline.train()
            random.setstate(states[0])
            np.random.set_state(states[1])
            torch.set_rng_state(states[2])

        steps = tuple(s - 1 for s in eval_at if s < config.max_num_iterations)  # the trainer's steps count from 0
        return [TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], evaluate_now, iters=steps)]

    start = time.perf_counter()
    trainer = run.train(config, callbacks=evaluation_callbacks)
    seconds = time.perf_counter() - start  # includes the intermediate evaluations (a few seconds each)
    picture_dir = config.get_base_dir() / "heldout" if pictures else None
    views = run.evaluate(trainer, picture_dir=picture_dir)
    row = run.mean_metrics(views)
    row.update(seconds=seconds, gaussians=int(trainer.pipeline.model.means.shape[0]),
               near_camera=near_camera_gaussians(trainer),
               sky_floaters=getattr(trainer.pipeline.model, "sky_floaters_found", 0),
               per_view={m: [view.get(m, float("nan")) for view in views] for m in ("psnr", "depth_abs_rel")})
    if all("depth_abs_rel" in view for view in views):
        row["worst_view_abs_rel"] = max(view["depth_abs_rel"] for view in views)
    if curve:
        row["curve"] = {str(step): metrics for step, metrics in sorted(curve.items())}
    return row


def config_hash(config) -> str:
    import re

    text = re.sub(r" at 0x[0-9a-f]+", "", repr(config))
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def step_cost(scene: Path, views: int, frame: str, repeats: int = 3, steps: int = 20) -> dict[str, float]:
    """Seconds per training step (forward, losses, backward) of base, det-gs constant and det-gs on the same Gaussians.

    One model is set up; each repeat times ``steps`` consecutive steps (so L_depth's every-5th-step passes
    are included in proportion) of base and then det-gs, without optimizer steps or densification, so
    both see the same Gaussians. Returns the best repeat of each.
    """
    from vision3d.methods.det_gs.losses import DetGSLossConfig

    config = configure(scene, "det-gs", views, 0, 1, scene.parent.parent / "runs" / "step-cost", frame, 1.0)
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    pipeline, model = trainer.pipeline, trainer.pipeline.model
    pipeline.train()
    model.optimizers = trainer.optimizers.optimizers
    best = {"base": float("inf"), "det-gs constant": float("inf"), "det-gs": float("inf")}
    for repeat in range(repeats + 1):  # round 0 warms up (Numba, caches) and is not counted
        for variant in best:
            model.config.losses = DetGSLossConfig(**VARIANTS[variant])
            model.config.output_depth_during_training = variant != "base"
            model.config.sky_floaters.enabled = variant == "det-gs"  # its records are part of a step's cost
            start = time.perf_counter()
            for step in range(steps):
                model.step = step
                _, losses, _ = pipeline.get_train_loss_dict(step)
                sum(losses.values()).backward()
                for parameter in model.parameters():
                    parameter.grad = None
            if repeat:
                best[variant] = min(best[variant], (time.perf_counter() - start) / steps)
    return {**best, "gaussians": int(model.means.shape[0])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scenes", nargs="+", default=["bunny", "dragon", "elephant"], choices=list(SCENES))
    parser.add_argument("--views", nargs="+", type=int, default=[3, 6])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS)[:5], choices=list(VARIANTS))
    parser.add_argument("--frames", nargs="+", default=["metric"], choices=["metric", "default"])
    parser.add_argument("--scales", nargs="+", type=float, default=[1.0],
                        help="multiply the scene's units (metric frame only)")
    parser.add_argument("--steps", type=int, default=1500, help="iteration budget of every run")
    parser.add_argument("--resolution", type=int, default=96)
    parser.add_argument("--cache", type=Path, default=Path("outputs/bench_det_gs"))
    parser.add_argument("--step-cost", metavar="SCENE", choices=list(SCENES),
                        help="only time base and det-gs steps on SCENE (first --views value, first frame)")
    parser.add_argument("--eval-at", nargs="+", type=int, default=[],
                        help="also evaluate after these numbers of steps (a learning curve; same final row)")
    parser.add_argument("--pictures", action="store_true", help="write each run's held-out PNGs (heldout/)")
    parser.add_argument("--print-only", action="store_true", help="print the cached rows; train nothing")
    parser.add_argument("--threads", type=int, default=2,
                        help="torch and Numba threads (1 on a machine shared with other jobs: torch's OpenMP "
                             "barriers stall when its threads lose their cores)")  # fmt: skip
    args = parser.parse_args()

    import numba
    import torch

    from vision3d.data.render import BlenderNotFoundError

    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    if args.step_cost:
        cost = step_cost(scene_path(args.step_cost, args.cache, args.resolution), args.views[0], args.frames[0])
        print(f"\nstep cost on {args.step_cost}, {args.views[0]} views, {args.resolution}px, {cost['gaussians']} Gaussians "
              f"(same Gaussians for both; best of 3 x 20 steps)\n"
              + "   ".join(f"{name} {1000 * cost[name]:.1f} ms/step (x{cost[name] / cost['base']:.2f})"
                         for name in ("base", "det-gs constant", "det-gs")))
        return
    version = code_version()
    results_file = args.cache / "results.json"
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    wanted = {}  # key -> (scene, frame, scale, views, variant) of every run asked for
    for name in args.scenes:
        try:
            scene = scene_folder(name, args.cache, args.resolution) if args.print_only else scene_path(
                name, args.cache, args.resolution)
        except BlenderNotFoundError as err:
            print(f"skipping {name}: {err}")
            continue
        for frame in args.frames:
            for scale in args.scales if frame == "metric" else [1.0]:
                for views in args.views:
                    if views >= SCENES[name][2]:
                        continue
                    for seed in args.seeds:
                        for variant in args.variants:
                            config = configure(scene, variant, views, seed, args.steps, args.cache / "runs" / name,
                                               frame, scale)
                            key = "|".join(map(str, (name, frame, scale, views, seed, variant, args.steps,
                                                     args.resolution, config_hash(config), version)))
                            wanted[key] = (name, frame, scale, views, variant)
                            if key in results or args.print_only:
                                continue
                            print(f"-- {key}", flush=True)
                            row = train_and_evaluate(config, tuple(args.eval_at), args.pictures)
                            row.update(commit=git_commit(), date=datetime.date.today().isoformat())
                            # Re-read before writing: several processes may fill the same cache (one per seed).
                            results = json.loads(results_file.read_text()) if results_file.exists() else {}
                            results[key] = row
                            results_file.parent.mkdir(parents=True, exist_ok=True)
                            results_file.write_text(json.dumps(results, indent=1))
    results = json.loads(results_file.read_text()) if results_file.exists() else {}
    print_table({key: results[key] for key in wanted if key in results}, wanted, args, version)


def print_table(results: dict, wanted: dict, args, version: str) -> None:
    """One line per (scene, frame, scale, views, variant): mean ± std over the seeds found in ``results``."""
    metrics = ["psnr", "ssim", "lpips", "depth_abs_rel", "depth_abs_rel_covered", "depth_coverage",
               "worst_view_abs_rel", "near_camera", "seconds", "gaussians"]
    print(f"\ndet-gs benchmark: {args.steps} steps per run, {args.resolution}px, seeds {args.seeds}, code {version}, "
          f"held-out views of each scene; mean ± std over seeds")
    header = f"{'scene':12s} {'frame':>7s} {'scale':>5s} {'views':>5s} {'variant':20s} " + " ".join(f"{m:>16s}" for m in metrics)
    print(header)
    print("-" * len(header))
    for name in args.scenes:
        for frame in args.frames:
            for scale in args.scales if frame == "metric" else [1.0]:
                for views in args.views:
                    base_psnr = None
                    for variant in args.variants:
                        rows = [r for k, r in results.items() if wanted[k] == (name, frame, scale, views, variant)]
                        if not rows:
                            continue
                        cells = []
                        for m in metrics:
                            values = [r[m] for r in rows if m in r]
                            cells.append(f"{np.mean(values):8.3f} ± {np.std(values):5.3f}" if values else f"{'n/a':>16s}")
                        psnr = float(np.mean([r["psnr"] for r in rows]))
                        base_psnr = psnr if variant == "base" else base_psnr
                        delta = f"  ({psnr - base_psnr:+.2f} dB)" if base_psnr is not None and variant != "base" else ""
                        print(f"{name:12s} {frame:>7s} {scale:5g} {views:5d} {variant:20s} " + " ".join(cells) + delta)
    print(f"\nper seed: {'scene':12s} {'frame':>7s} {'scale':>5s} {'views':>5s} {'seed':>4s} {'variant':20s} "
          f"{'psnr':>7s} {'ssim':>6s} {'absrel':>7s} {'covered':>7s} {'coverage':>8s} {'worst':>6s} {'near':>5s} {'seconds':>7s}")
    for key, row in sorted(results.items(), key=lambda item: (wanted[item[0]][:4], int(item[0].split("|")[4]))):
        name, frame, scale, views, variant = wanted[key]
        seed = key.split("|")[4]
        print(f"          {name:12s} {frame:>7s} {scale:5g} {views:5d} {seed:>4s} {variant:20s} {row['psnr']:7.2f} "
              f"{row['ssim']:6.3f} {row.get('depth_abs_rel', float('nan')):7.3f} "
              f"{row.get('depth_abs_rel_covered', float('nan')):7.3f} {row.get('depth_coverage', float('nan')):8.3f} "
              f"{row.get('worst_view_abs_rel', float('nan')):6.3f} {row.get('near_camera', -1):5d} {row['seconds']:7.0f}")
    curves = [(key, row) for key, row in results.items() if "curve" in row]
    if curves:
        print(f"\nlearning curves (--eval-at): {'scene':12s} {'views':>5s} {'seed':>4s} {'variant':20s} "
              f"{'steps':>5s} {'psnr':>7s} {'ssim':>6s} {'absrel':>7s} {'gaussians':>9s}")
    for key, row in sorted(curves, key=lambda item: (wanted[item[0]][:4], int(item[0].split("|")[4]))):
        name, frame, scale, views, variant = wanted[key]
        points = {**row["curve"], str(args.steps): row}
        for steps, point in sorted(points.items(), key=lambda item: int(item[0])):
            print(f"{'':29s}{name:12s} {views:5d} {key.split('|')[4]:>4s} {variant:20s} {int(steps):5d} "
                  f"{point['psnr']:7.2f} {point['ssim']:6.3f} {point.get('depth_abs_rel', float('nan')):7.3f} "
                  f"{point['gaussians']:9d}")


if __name__ == "__main__":
    main()

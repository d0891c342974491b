"""IR-NeRF against its baselines on 360° scenes: pose errors, novel-view PSNR and time under one budget.

Scenes are real meshes (Debian's libcgal-demo) rendered with Blender by ``v3d data render`` as 360° orbits
(none is the bundled test scene); ``--scene-dir`` takes an already rendered scene instead. Every 8th view is
held out for novel-view metrics; the others are the unposed training images. Variants, all from the same
pose prior (azimuth 0–360°, the orbit's elevation range or ``--elevation``, the orbit's radius, look-at at the
origin: ``prior_of_capture``; the field's cube ``--bound`` holds the object and keeps the cameras outside) and the
same wall-time budget (``--budget`` seconds; the schedule runs on elapsed time, see IRNeRF.train_step):

- (a) BARF-style: per-image poses start at prior samples, photometric refinement with coarse-to-fine;
- (b) GNeRF-style: adversarial phase + pose estimator + refinement, without the codebook;
- (c) IR-NeRF: (b) with the scene codebook and L_c.

Reported: Sim(3)-aligned rotation error (deg) and translation error (scene units, mean over training views),
the same for the poses refinement started from, held-out PSNR / SSIM after test-time pose optimisation
(``--tto-steps``) from the aligned true poses, steps done and seconds; ``--pictures DIR`` also draws each variant's
estimated and true camera frusta. With ``--set phase_a_restarts=R`` (b) and (c) split the budget between their
restarts (IRNeRF.budget_position) and a line under the table gives each restart's score, P's rotation error when it
was scored (with ``restart_choice=agreement`` also its median disagreement) and the restart that went on.

    python benchmarks/ir_nerf.py --budget 600 --size 32
    python benchmarks/ir_nerf.py --scene-dir SCENE --budget 60       # a quick look
    python benchmarks/ir_nerf.py --size 16 --set patch_size=16 patch_scale_min=1.0 batch_size=8   # D on whole images
"""

from __future__ import annotations

import argparse
import datetime
import time
from dataclasses import replace
from pathlib import Path

import torch
from ir_nerf_phase_a import apply_overrides  # this folder is on sys.path when a benchmark runs as a script
from provenance import REPO, git_commit  # this folder is on sys.path when a benchmark runs as a script

from vision3d.allocator import keep_freed_memory
from vision3d.methods.ir_nerf.field import CoarseFieldConfig
from vision3d.methods.ir_nerf.training import IRNeRFConfig

VARIANTS = {
    "(a) BARF-style": {"adversarial": False, "use_codebook": False},
    "(b) GNeRF-style": {"adversarial": True, "use_codebook": False},
    "(c) IR-NeRF": {"adversarial": True, "use_codebook": True},
}
SCENES = {  # name -> (model, render overrides): det_gs.py's 360° orbits, and the bunny (no mirror symmetry)
    "dragon-360": ("dragon", {"hdri": "sunset", "ground": "brick", "path": "orbit"}),
    "elephant-360": ("elephant", {"hdri": "forest", "ground": "grass", "path": "orbit"}),
    "bunny-360": ("bunny", {"hdri": "courtyard", "ground": "brick", "path": "orbit"}),
}


def scene_path(name: str, cache: Path, views: int, resolution: int) -> Path:
    """The scene rendered into ``cache`` (Blender runs only when it is not there yet)."""
    from vision3d.data.render import render_scene

    model, overrides = SCENES[name]
    return render_scene(model, cache / "scenes" / f"{model}-orbit-{views}v-{resolution}", views=views,
                        width=resolution, height=resolution, spp=32, **overrides)


def run_variant(name: str, data, train_idx, test_idx, args) -> dict[str, float]:
    from vision3d.methods.ir_nerf.evaluation import align_poses, novel_view_metrics, plot_frusta, pose_errors
    from vision3d.methods.ir_nerf.pose_prior import prior_of_capture
    from vision3d.methods.ir_nerf.training import IRNeRF

    prior = prior_of_capture(data.gt_c2w)
    if args.elevation is not None:
        prior = replace(prior, elevation_min_deg=args.elevation[0], elevation_max_deg=args.elevation[1])
    field = CoarseFieldConfig(encoding=args.encoding, barf_c2f=name.startswith("(a)"), bound=args.bound)
    config = IRNeRFConfig(prior=prior, field=field, seed=args.seed, lr_poses=args.lr_poses, **VARIANTS[name])
    apply_overrides(config, args.set)
    torch.manual_seed(args.seed)
    system = IRNeRF(config, data.images[train_idx], data.K)
    gt_train, restart_errors, score = data.gt_c2w[train_idx], [], system.restart_score

    def score_and_measure() -> float:  # each restart's pose error where it is scored, to judge the choice
        restart_errors.append(pose_errors(system.predicted_poses(), gt_train)["rot_err_deg"])
        return score()

    system.restart_score = score_and_measure
    start, step = time.perf_counter(), 0
    while (elapsed := time.perf_counter() - start) < args.budget:
        system.train_step(step, progress=elapsed / args.budget)
        step += 1
    system.end_budget()
    seconds = time.perf_counter() - start
    estimated = system.estimated_poses()
    row = pose_errors(estimated, gt_train)
    started = pose_errors(system.initial_poses, gt_train)
    if args.pictures:
        slug = name.split(" ", 1)[1].lower().replace(" ", "-")
        plot_frusta(args.pictures / f"seed{args.seed}-{slug}-frusta.png", estimated, gt_train, data.K)
    views = novel_view_metrics(system, data.images[test_idx], data.gt_c2w[test_idx], align_poses(estimated, gt_train),
                               steps=args.tto_steps)
    return {**row, "start_rot_err_deg": started["rot_err_deg"], "start_trans_err": started["trans_err"], **views,
            "steps": step, "seconds": seconds, "restart_scores": system.restart_scores,
            "restart_errors": restart_errors, "chosen": system.chosen_restart,
            "disagreement": system.restart_disagreement() if config.restart_choice == "agreement" else []}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", default="dragon-360", choices=sorted(SCENES))
    parser.add_argument("--scene-dir", type=Path, help="an already rendered scene (transforms.json) instead of --scene")
    parser.add_argument("--views", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=96, help="render resolution (pixels)")
    parser.add_argument("--size", type=int, default=32, help="working resolution of the method")
    parser.add_argument("--budget", type=float, default=600.0, help="wall seconds per variant")
    parser.add_argument("--elevation", type=float, nargs=2, help="prior's elevation range (default: the orbit's)")
    parser.add_argument("--encoding", default="hash", choices=["hash", "pe"])
    parser.add_argument("--bound", type=float, default=1.0, help="half-size of the field's cube (1.0: the object and "
                        "the ground near it, cameras at radius ~2 outside)")
    parser.add_argument("--lr-poses", type=float, default=IRNeRFConfig.lr_poses, help="learning rate of the per-image poses")
    parser.add_argument("--tto-steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--set", nargs="*", default=[], help="NAME=VALUE overrides of IRNeRFConfig for every variant "
                        "(field.NAME, prior.NAME for the nested ones), as in ir_nerf_phase_a.py")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--pictures", type=Path, help="folder for each variant's estimated (orange, aligned) and true "
                        "(blue) camera frusta, SEED-VARIANT-frusta.png")
    parser.add_argument("--cache", type=Path, default=REPO / "outputs" / "bench_ir_nerf")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()  # as ns-train and v3d run on CPU since session 27 (~1.4x the steps per budget before it)

    from vision3d.methods.ir_nerf.data import load_unposed

    if args.pictures:
        args.pictures.mkdir(parents=True, exist_ok=True)
    scene = args.scene_dir or scene_path(args.scene, args.cache, args.views, args.resolution)
    data = load_unposed(scene, args.size)
    n = len(data.paths)
    test_idx = torch.arange(0, n, 8)
    train_idx = torch.tensor([i for i in range(n) if i % 8 != 0])
    commit = git_commit()
    print(f"# ir-nerf benchmark, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}")
    print(f"# scene {scene} ({len(train_idx)} training / {len(test_idx)} held-out views), working size {args.size}, "
          f"budget {args.budget:.0f} s per variant, {args.threads} thread(s), encoding {args.encoding}, seed {args.seed}, "
          f"bound {args.bound}, pose lr {args.lr_poses}, prior elevation {args.elevation or 'of the orbit'}, set {args.set}")
    print("| variant | rot err (deg) | trans err | start rot err | start trans err | PSNR | SSIM | steps | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    restarts = []
    for name in args.variants:
        r = run_variant(name, data, train_idx, test_idx, args)
        print(f"| {name} | {r['rot_err_deg']:.1f} | {r['trans_err']:.3f} | {r['start_rot_err_deg']:.1f} | "
              f"{r['start_trans_err']:.3f} | {r['psnr']:.2f} | {r['ssim']:.3f} | {r['steps']} | {r['seconds']:.0f} |", flush=True)
        if r["restart_scores"]:
            scores = ", ".join(f"{s:.4f} ({e:.1f} deg)" for s, e in zip(r["restart_scores"], r["restart_errors"], strict=True))
            agreement = (f"; median disagreements {', '.join(f'{d:.1f}' for d in r['disagreement'])} deg"
                         if r["disagreement"] else "")
            restarts.append(f"# {name}: restart scores (P's rotation error then) {scores}{agreement}; "
                            f"restart {r['chosen'] + 1} went on")
    print("\n".join(restarts))


if __name__ == "__main__":
    main()

"""Which restart of phase A should go on? The render score against the candidates' agreement, on rendered scenes.

Trains ``--seeds`` independent runs of the benchmark's recipe (``benchmarks/ir_nerf.py`` variant (b), or (c) with
``--codebook``; ``--steps`` schedule steps, no restarts) on a 360° scene, and records at ``--score-at`` (fraction of
the schedule; restarts are compared there) P's estimates of the training views, the render score
(:meth:`IRNeRF.restart_score`) and P's Sim(3)-aligned rotation error, and at the end the run's rotation error.
Every subset of k runs then stands for a run with k restarts, and the table gives the mean end error of the run each
rule lets go on: ``render`` (lowest render score, ``restart_choice="render"``), ``agreement`` (lowest
:func:`~vision3d.methods.ir_nerf.evaluation.median_disagreement`, ``restart_choice="agreement"``), ``random``
(the subset's mean) and ``best`` (the lowest end error: what a perfect rule would reach). Neither rule sees the
ground truth. Runs are cached in ``--cache`` by scene, settings and seed, so adding seeds trains only the new ones;
``--processes`` trains that many at a time (one torch thread each). ``--plot`` draws the table.

    python benchmarks/ir_nerf_restart_choice.py --scene bunny-360 --seeds 0 1 2 3 4 5 --processes 2
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import itertools
import json
import math
import statistics
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import numpy as np
import torch
from ir_nerf import SCENES, scene_path  # this folder is on sys.path when a benchmark runs as a script
from provenance import REPO, git_commit  # this folder is on sys.path when a benchmark runs as a script

RULES = ("render", "agreement", "random", "best")


def recipe(args: argparse.Namespace, seed: int):
    """IRNeRFConfig of one run: session 24's recipe at 32² (``benchmarks/ir_nerf.py`` (b)/(c), hash field)."""
    from vision3d.methods.ir_nerf.field import CoarseFieldConfig
    from vision3d.methods.ir_nerf.training import IRNeRFConfig

    return IRNeRFConfig(field=CoarseFieldConfig(encoding="hash", bound=args.bound), use_codebook=args.codebook,
                        seed=seed, max_steps=args.steps, patch_size=args.size, patch_scale_min=1.0, batch_size=8,
                        phase_a_until=0.9, alternate_until=0.9, lr_final_factor=0.1)


def run_key(args: argparse.Namespace) -> str:
    settings = {k: getattr(args, k) for k in ("scene", "views", "resolution", "size", "steps", "score_at", "bound", "codebook")}
    return hashlib.sha1(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:10]


def train_run(args: argparse.Namespace, seed: int) -> dict:
    """One run from images alone; P's estimates, render score and rotation error at the scoring step, end error."""
    from vision3d.allocator import keep_freed_memory
    from vision3d.methods.ir_nerf.data import load_unposed
    from vision3d.methods.ir_nerf.evaluation import pose_errors
    from vision3d.methods.ir_nerf.pose_prior import prior_of_capture
    from vision3d.methods.ir_nerf.training import IRNeRF

    torch.set_num_threads(1)
    keep_freed_memory()
    data = load_unposed(scene_path(args.scene, args.cache, args.views, args.resolution), args.size)
    train = torch.tensor([i for i in range(len(data.paths)) if i % 8 != 0])  # as benchmarks/ir_nerf.py
    config = recipe(args, seed)
    config.prior = prior_of_capture(data.gt_c2w)
    torch.manual_seed(seed)
    system, gt = IRNeRF(config, data.images[train], data.K), data.gt_c2w[train]
    scored_after, start = round(args.score_at * args.steps), time.perf_counter()  # where IRNeRF scores restarts
    out = {"seed": seed, "scored_after": scored_after}
    for step in range(args.steps):
        system.train_step(step)
        if step + 1 == scored_after:
            estimates = system.predicted_poses()
            out.update(estimates=estimates, render_score=system.restart_score(),
                       scored_rot_err=pose_errors(estimates, gt)["rot_err_deg"])
    out.update(end_rot_err=pose_errors(system.estimated_poses(), gt)["rot_err_deg"], seconds=time.perf_counter() - start)
    return out


def cached_runs(args: argparse.Namespace) -> list[dict]:
    """The runs of ``--seeds``, trained where the cache does not hold them yet."""
    folder = args.cache / "restart_choice" / f"{args.scene}-{run_key(args)}"
    folder.mkdir(parents=True, exist_ok=True)
    missing = [s for s in args.seeds if not (folder / f"seed{s}.pt").exists()]
    if missing:
        print(f"# training seeds {missing} into {folder} ({args.processes} at a time)", flush=True)
        with ProcessPoolExecutor(args.processes, mp_context=get_context("spawn")) as pool:
            for run in pool.map(train_run, itertools.repeat(args), missing):
                torch.save(run, folder / f"seed{run['seed']}.pt")
                print(f"# seed {run['seed']}: {run['scored_rot_err']:.1f} deg when scored, {run['end_rot_err']:.1f} deg "
                      f"at the end, {run['seconds']:.0f} s", flush=True)
    return [torch.load(folder / f"seed{s}.pt") for s in args.seeds]


def choices(runs: list[dict], pairwise: np.ndarray, k: int) -> dict[str, float]:
    """Mean end error (deg) of the run each rule picks, over every subset of ``k`` runs (``pairwise``: the runs'
    :func:`~vision3d.methods.ir_nerf.evaluation.pairwise_disagreement`, aligned once, not once per subset)."""
    from vision3d.methods.ir_nerf.evaluation import disagreement_medians

    picked = {rule: [] for rule in RULES}
    for subset in itertools.combinations(range(len(runs)), k):
        ends = [runs[i]["end_rot_err"] for i in subset]
        disagreement = disagreement_medians(pairwise[np.ix_(subset, subset)])
        renders = [runs[i]["render_score"] for i in subset]
        picked["render"].append(ends[renders.index(min(renders))])
        picked["agreement"].append(ends[disagreement.index(min(disagreement))])
        picked["random"].append(statistics.mean(ends))
        picked["best"].append(min(ends))
    return {rule: statistics.mean(values) for rule, values in picked.items()}


def plot(path: Path, table: dict[int, dict[str, float]], title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    ks = sorted(table)
    for rule in RULES:
        ax.plot(ks, [table[k][rule] for k in ks], marker="o", label=rule)
    ax.set_xticks(ks)
    ax.set_xlabel("restarts k (every subset of the runs)")
    ax.set_ylabel("end rotation error of the chosen run (deg)")
    ax.set_title(title, fontsize=9)
    ax.legend(ncol=len(RULES), fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.18))  # below: clear of the lines
    fig.savefig(path, dpi=120, bbox_inches="tight")
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--scene", default="bunny-360", choices=sorted(SCENES))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(range(6)))
    parser.add_argument("--views", type=int, default=32)
    parser.add_argument("--resolution", type=int, default=96, help="render resolution (pixels)")
    parser.add_argument("--size", type=int, default=32, help="working resolution of the method")
    parser.add_argument("--steps", type=int, default=1500, help="schedule steps of each run")
    parser.add_argument("--score-at", type=float, default=2 / 3, help="fraction of the schedule where runs are compared")
    parser.add_argument("--bound", type=float, default=1.0, help="half-size of the field's cube")
    parser.add_argument("--codebook", action="store_true", help="variant (c), IR-NeRF, instead of (b), GNeRF-style")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--cache", type=Path, default=REPO / "outputs" / "bench_ir_nerf")
    parser.add_argument("--plot", type=Path, help="PNG of the table")
    args = parser.parse_args()
    if len(args.seeds) < 3:
        parser.error("--seeds needs at least 3 runs: agreement compares each run with the others")

    commit = git_commit()
    print(f"# ir-nerf restart choice, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit}")
    print(f"# scene {args.scene}, {args.size}², {args.steps} steps, scored at {args.score_at:.3f} of the schedule, "
          f"variant {'(c) IR-NeRF' if args.codebook else '(b) GNeRF-style'}, seeds {args.seeds}")
    runs = cached_runs(args)
    from vision3d.methods.ir_nerf.evaluation import disagreement_medians, pairwise_disagreement

    pairwise = pairwise_disagreement([r["estimates"] for r in runs])
    disagreement = disagreement_medians(pairwise)
    print("| seed | scored after (steps) | rot err then (deg) | render score | median disagreement, all runs (deg) | "
          "end rot err (deg) |")
    print("|---:|---:|---:|---:|---:|---:|")
    for run, d in zip(runs, disagreement, strict=True):
        print(f"| {run['seed']} | {run['scored_after']} | {run['scored_rot_err']:.1f} | {run['render_score']:.4f} | {d:.1f} | "
              f"{run['end_rot_err']:.1f} |")
    table = {k: choices(runs, pairwise, k) for k in range(3, len(runs) + 1)}
    print("\n| restarts k | subsets | " + " | ".join(RULES) + " |")
    print("|---:|---:|" + "---:|" * len(RULES))
    for k, row in table.items():
        print(f"| {k} | {math.comb(len(runs), k)} | " + " | ".join(f"{row[rule]:.1f}" for rule in RULES) + " |")
    print("# cells: mean end rotation error (deg) of the run the rule lets go on, over every subset of k runs")
    if args.plot:
        plot(args.plot, table, f"{args.scene}, seeds {min(args.seeds)}–{max(args.seeds)}, commit {commit}")
        print(f"# plot: {args.plot}")


if __name__ == "__main__":
    main()

"""GeLoc3r benchmark: plain ReLoc3r-style regression vs regression + GCR, and the classical baseline.

Same architecture, data, steps and batch size, 3 seeds each; AUC@5/10/20 by ReLoc3r's ``error_auc`` on
``rooms-heldout`` (procedural rooms with seeds disjoint from training), ``train-seen`` (a diagnostic of
fitting, not a result) and ``castle-simu`` (ViSP's frames, fetched with ``apt-get download
visp-images-data``; skipped with the reason when apt cannot reach it). The baseline matches features
(SIFT by default, ``--matcher xfeat``) at each pair's source resolution (rooms at 256x192; the network
sees 48x64) and runs OpenCV's 5-point RANSAC + ``recoverPose``. The ``prior`` row ignores the images
(identity rotation, mean training translation direction). Matches are cached in ``--cache``.

    python benchmarks/geloc3r.py                 # default: preset tiny, 300 steps, 6 rooms (4 min on 2 cores)
    python benchmarks/geloc3r.py --steps 60 --seeds 0   # a quick look
    python benchmarks/geloc3r.py --protocol seen-scenes # same scenes, held-out camera positions
    python benchmarks/geloc3r.py --protocol unseen-scenes --device cuda --preset gpu-small   # GPU scale
    python benchmarks/geloc3r.py --profile-steps 10     # only the training step time of each arm

Measured tables (128 and 1620 training rooms, up to 24000 steps), each with its command, date and commit,
and what they show: docs/geloc3r.md.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--protocol", default="unseen-scenes", choices=["unseen-scenes", "seen-scenes"],
                    help="unseen-scenes: train on rooms 0 ..., test on other rooms (and Castle-simu); seen-scenes: "
                         "train and test on the same scenes, test pairs made of held-out camera positions "
                         "(vision3d.pose.data.seen_scene_split)")
    ap.add_argument("--scenes", nargs="*", default=[],
                    help="nerfstudio scene folders (e.g. from 'v3d data render') added to the training scenes")
    ap.add_argument("--room-views", type=int, default=16, help="views rendered per procedural room")
    ap.add_argument("--test-fraction", type=float, default=0.25,
                    help="seen-scenes: share of each scene's views held out for the test pairs")
    ap.add_argument("--no-castle", action="store_true", help="leave ViSP's Castle-simu out")
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--train-rooms", type=int, default=6)
    ap.add_argument("--test-rooms", type=int, default=3)
    ap.add_argument("--test-pairs", type=int, default=20, help="pairs per held-out scene")
    ap.add_argument("--test-room-seed", type=int, default=500,
                    help="seed of the first held-out room; training rooms are seeds 0 ... train-rooms - 1, so runs "
                         "with more than 500 training rooms move it (the data-scale runs below use 100000)")
    ap.add_argument("--train-render-size", type=int, nargs=2, default=(192, 256), metavar=("H", "W"),
                    help="resolution the training rooms are rendered at (held-out rooms: always 192 256)")
    ap.add_argument("--mirror-prob", type=float, default=0.0, help="TrainConfig.mirror_prob (left-right mirroring)")
    ap.add_argument("--pairs-per-room", type=int, default=40, help="training pairs per room (at most)")
    ap.add_argument("--preset", default="tiny", help="model preset (vision3d.pose.network.PRESETS)")
    ap.add_argument("--patch-embed", default="conv", choices=["conv", "xfeat"],
                    help="conv: learned from scratch; xfeat: frozen XFeat features + a learned projection")
    ap.add_argument("--image-size", type=int, nargs=2, default=None, metavar=("H", "W"),
                    help="network input size (default: the preset's)")
    ap.add_argument("--patch-size", type=int, default=None, help="default: the preset's")
    ap.add_argument("--abs-pos-embed", action="store_true", help="PoseRegressorConfig.abs_pos_embed (besides RoPE)")
    ap.add_argument("--lr", type=float, default=3e-4)
    ap.add_argument("--init", default=None, help="a local ReLoc3r / DUSt3R checkpoint to start both arms from")
    ap.add_argument("--arms", nargs="+", default=["regression", "regression + GCR"],
                    choices=["regression", "regression + GCR"], help="which models to train (both for the table)")
    ap.add_argument("--matcher", default="sift", choices=["sift", "xfeat", "auto"])
    ap.add_argument("--lambda-gcr", type=float, default=0.5)
    ap.add_argument("--gcr-depth-corr", type=int, default=48, metavar="N",
                    help="GCRConfig.num_depth_corr: exact correspondences from GT depth per pair besides the matches; "
                         "0: matches only (use_depth off), so the PnP target carries the matcher's noise")
    ap.add_argument("--cache", default=None, help="folder for rendered rooms and matches")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--from-json", nargs="+", default=None, metavar="JSON",
                    help="only print the table of earlier --json files; several (e.g. the arms or seeds run as "
                         "separate processes with the same data and budget) are merged into one table")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared 2-core machine more threads oversubscribe and run slower)")
    ap.add_argument("--profile-steps", type=int, default=0, metavar="N",
                    help="only time training steps: N steps of each arm, 3 interleaved rounds, print the median "
                         "ms/step of each arm (the first 2 steps of a round are warm-up and not counted), then exit")
    ap.add_argument("--device", default="auto",
                    help="auto | cpu | cuda[:N] for training and the regressor's inference (the tables here: cpu)")
    args = ap.parse_args(argv)
    if args.protocol == "unseen-scenes" and args.test_room_seed < args.train_rooms:
        ap.error(f"--test-room-seed {args.test_room_seed} is a training room (training seeds are 0 ... {args.train_rooms - 1})")
    return args


def model_config(args: argparse.Namespace):
    """The regressor's config from ``--preset`` and its overrides."""
    from vision3d.pose.network import PoseRegressorConfig

    overrides = {"patch_embed": args.patch_embed, "abs_pos_embed": args.abs_pos_embed}
    if args.image_size:
        overrides["image_size"] = tuple(args.image_size)
    if args.patch_size:
        overrides["patch_size"] = args.patch_size
    return PoseRegressorConfig.preset(args.preset, **overrides)


def train_config(args: argparse.Namespace, model_cfg, arm: str, seed: int, steps: int | None = None,
                 log_every: int | None = None):
    """The :class:`~vision3d.pose.train.TrainConfig` of one arm and seed: only ``gcr.enabled`` differs between arms."""
    from vision3d.pose.gcr import GCRConfig
    from vision3d.pose.train import TrainConfig

    steps = args.steps if steps is None else steps
    return TrainConfig(model=model_cfg, gcr=GCRConfig(enabled=arm != "regression", lambda_gcr=args.lambda_gcr,
                                                        num_depth_corr=args.gcr_depth_corr,
                                                        use_depth=args.gcr_depth_corr > 0),
                       steps=steps, batch_size=args.batch_size, lr=args.lr, seed=seed, mirror_prob=args.mirror_prob,
                       device=args.device, init=args.init, log_every=log_every or max(steps // 10, 1))


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.from_json:
        results = merge_results([json.loads(Path(f).read_text()) for f in args.from_json], args.from_json)
        names = [k for k, v in results["runs"][0].items() if isinstance(v, dict) and k != "gcr_diagnostics"]
        print_table(results, sorted(names, reverse=True), results["budget"]["matcher"])
        return results
    from vision3d.cache import cache_root
    from vision3d.pose.evaluate import evaluate_essential, predict_poses, summarize
    from vision3d.pose.matching import Matcher
    from vision3d.pose.train import train

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    from vision3d.backends import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as err:
        sys.exit(f"geloc3r.py: --device: {err}")
    cache = Path(args.cache) if args.cache else cache_root() / "bench-geloc3r"
    model_cfg = model_config(args)
    matcher = Matcher(args.matcher)
    train_ds, tests, notes = datasets(args, model_cfg.image_size, matcher, cache)
    if args.profile_steps:
        return profile_steps(args, model_cfg, train_ds)
    print(f"[geloc3r] {len(train_ds)} training pairs; " + ", ".join(f"{k}: {len(v)} pairs" for k, v in tests.items())
          + f" ({time.perf_counter() - t_start:.0f} s)", flush=True)

    results: dict = {"budget": {"steps": args.steps, "batch_size": args.batch_size, "seeds": args.seeds,
                                "model": model_cfg.to_dict(), "preset": args.preset, "lr": args.lr, "train_rooms": args.train_rooms,
                                "train_render_size": list(args.train_render_size), "mirror_prob": args.mirror_prob,
                                "test_room_seed": args.test_room_seed, "device": str(device),
                                "protocol": args.protocol, "init": args.init,
                                "train_pairs": len(train_ds), "matcher": matcher.method, "lambda_gcr": args.lambda_gcr,
                                "gcr_depth_corr": args.gcr_depth_corr},
                     "runs": [], "baseline": {}, "notes": notes, "threads": args.threads}
    for name, ds in tests.items():
        P, G, sec, failed = evaluate_essential(ds, matcher)  # noqa: N806
        results["baseline"][name] = {**summarize(P, G), "seconds": sec, "failed": failed}
    # what a model that ignores the images scores: the identity rotation and the mean training translation direction
    t = gt_poses(train_ds)[:, :3, 3]
    prior = np.eye(4)[None]
    prior[0, :3, 3] = (t / np.linalg.norm(t, axis=1, keepdims=True)).mean(0)
    results["prior"] = {name: summarize(np.repeat(prior, len(ds), 0), gt_poses(ds)) for name, ds in tests.items()}

    def save() -> None:  # after every run, so a long measurement cut short keeps its finished runs
        results["total_seconds"] = time.perf_counter() - t_start
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=1))

    for seed in args.seeds:
        for arm in args.arms:
            cfg = train_config(args, model_cfg, arm, seed)
            t0 = time.perf_counter()
            model, history = train(cfg, train_ds, progress=False, save=False)
            seconds = time.perf_counter() - t0
            run = {"arm": arm, "seed": seed, "train_seconds": seconds, "final_pose_loss": history[-1].get("pose", float("nan")),
                   "pose_loss_history": [round(h.get("pose", float("nan")), 4) for h in history],
                   "skipped_steps": history[-1]["skipped"], "gcr_diagnostics": gcr_diagnostics(history)}
            for name, ds in tests.items():
                T_pred, T_gt, sec = predict_poses(model, ds)  # noqa: N806
                run[name] = {**summarize(T_pred, T_gt), "seconds": sec, "per_scene": per_scene(ds, T_pred, T_gt)}
            results["runs"].append(run)
            print(f"[geloc3r] seed {seed} {arm:17s} {seconds:6.1f} s  " + "  ".join(
                f"{n}: AUC@5/10/20 {100 * run[n]['auc@5']:.2f}/{100 * run[n]['auc@10']:.2f}/{100 * run[n]['auc@20']:.2f}"
                for n in tests), flush=True)
            save()
    print_table(results, list(tests), matcher.method)
    save()
    return results


def datasets(args: argparse.Namespace, size: tuple[int, int], matcher, cache: Path):
    """``(training PairDataset, {test name: PairDataset}, notes)`` of ``--protocol``; matches for GCR only."""
    from vision3d.pose.data import (
        DataUnavailable,
        PairDataset,
        build_pair_dataset,
        frames_from_castle_simu,
        frames_from_nerfstudio,
        seen_scene_split,
    )
    from vision3d.pose.train import DataConfig

    def rooms(first: int, n: int, render_size=(192, 256)):
        return DataConfig(procedural_rooms=n, room_seed=first, room_views=args.room_views,
                          render_size=tuple(render_size), cache_dir=str(cache / "rooms")).framesets()

    notes: list[str] = []
    castle = None
    if not args.no_castle:
        try:
            castle = frames_from_castle_simu()
        except DataUnavailable as err:
            notes.append(f"castle-simu skipped: {err}")
    scenes = rooms(0, args.train_rooms, args.train_render_size) + [frames_from_nerfstudio(s) for s in args.scenes]
    train_matcher = matcher if "regression + GCR" in args.arms else None
    print(f"[geloc3r] protocol {args.protocol}: {len(scenes)} training scenes ({args.train_rooms} rooms)"
          + (f", {args.test_rooms} held-out rooms" if args.protocol == "unseen-scenes" else "")
          + f", matcher {matcher.method}", flush=True)
    if args.protocol == "seen-scenes":
        scenes += [castle] if castle is not None else []
        train_pairs, test_pairs = seen_scene_split(scenes, args.test_fraction, args.pairs_per_room, args.test_pairs,
                                                   max_rotation_deg=45.0)
        train_ds = PairDataset(scenes, train_pairs, size, train_matcher, match_cache=cache / "matches")
        tests = {"held-out-views": PairDataset(scenes, test_pairs, size)}
    else:
        train_ds = build_pair_dataset(scenes, size, args.pairs_per_room, train_matcher, match_cache=cache / "matches",
                                      max_rotation_deg=45.0)
        if args.profile_steps:  # timing only: no test set needed
            return train_ds, {}, notes
        tests = {"rooms-heldout": build_pair_dataset(rooms(args.test_room_seed, args.test_rooms), size, args.test_pairs,
                                                     None, seed=777, max_rotation_deg=45.0)}
        if castle is not None:
            tests["castle-simu"] = build_pair_dataset([castle], size, 40, None, seed=777, max_rotation_deg=60.0)
    for k in range(len(train_ds)):
        train_ds[k]
    # diagnostic, not a result: how well each model fits pairs it was trained on
    tests["train-seen"] = PairDataset(train_ds.framesets, train_ds.pairs[:: max(1, len(train_ds) // 60)], size)
    return train_ds, tests, notes


STEP_MS_BEFORE = {"regression": 225.1, "regression + GCR": 529.6}  # ms/step before batching GCR (b14d376)


def profile_steps(args, model_cfg, train_ds) -> dict:
    """Median wall time of one training step (batch, forward, losses, backward, optimiser) per arm, the arms
    interleaved over 3 rounds so a changing machine load hits both alike."""
    from vision3d.pose.train import train

    warmup = 2
    times: dict[str, list[float]] = {arm: [] for arm in args.arms}
    for _ in range(3):
        for arm in args.arms:
            cfg = train_config(args, model_cfg, arm, args.seeds[0], args.profile_steps + warmup, log_every=1)
            _, history = train(cfg, train_ds, progress=False, save=False)
            ends = [h["seconds"] for h in history]
            times[arm] += list(np.diff(ends)[warmup - 1:])
    result = {arm: {"median_ms": 1000 * float(np.median(t)), "steps": len(t)} for arm, t in times.items()}
    print(f"\nstep time, batch {args.batch_size}, model {args.preset} {tuple(model_cfg.image_size)}, device {args.device}, "
          f"{args.threads} torch thread(s):")
    print(f"  {'arm':18s} {'before (recorded)':>18s} {'now (measured)':>15s}")
    for arm, r in result.items():
        print(f"  {arm:18s} {STEP_MS_BEFORE[arm]:18.1f} {r['median_ms']:15.1f} ms/step (median of {r['steps']})")
    print("  before: the per-pair GCR loop, commit b14d376, measured 2026-12-05 on this shared CPU with the same "
          "flags and --train-rooms 2 (docs/geloc3r.md); machine load changes both columns")
    if args.json:
        Path(args.json).write_text(json.dumps({"step_time": result}, indent=1))
    return {"step_time": result}


def per_scene(ds, T_pred: np.ndarray, T_gt: np.ndarray) -> dict:  # noqa: N803
    """``summarize`` of each scene's pairs of a test set, by scene name: which scenes a score comes from."""
    from vision3d.pose.evaluate import summarize

    scenes = np.array([s for s, _, _ in ds.pairs])
    return {ds.framesets[s].name: summarize(T_pred[scenes == s], T_gt[scenes == s]) for s in np.unique(scenes)}


def gcr_diagnostics(history: list[dict]) -> dict:
    """GCR's solver diagnostics of a training run (empty without GCR): each one's mean over the log rows of the
    whole run (``all``) and its last log row (``last``, the last ``log_every`` steps)."""
    from vision3d.pose.gcr import GCR_DIAGNOSTICS

    keys = [k for k in GCR_DIAGNOSTICS if any(k in h for h in history)]
    return {"all": {k: float(np.mean([h[k] for h in history if k in h])) for k in keys},
            "last": {k: history[-1].get(k, float("nan")) for k in keys}} if keys else {}


def merge_results(parts: list[dict], names: list[str]) -> dict:
    """One result from several ``--json`` files of the same data and budget (their runs joined; the prior and
    baseline rows, which do not depend on the arm or seed, from the first file)."""
    same = ("steps", "batch_size", "model", "train_pairs", "protocol", "matcher", "lr")
    for part, name in zip(parts[1:], names[1:], strict=True):
        diff = [k for k in same if part["budget"].get(k) != parts[0]["budget"].get(k)]
        if diff:
            sys.exit(f"geloc3r.py: {name}: its {', '.join(diff)} differ from {names[0]}'s; only runs of the same "
                     "data and budget go in one table")
    merged = dict(parts[0])
    merged["runs"] = [r for part in parts for r in part["runs"]]
    merged["budget"] = {**parts[0]["budget"], "seeds": sorted({r["seed"] for r in merged["runs"]})}
    merged["total_seconds"] = sum(p["total_seconds"] for p in parts)
    return merged


def gt_poses(ds) -> np.ndarray:
    """``T21`` of every pair of a :class:`~vision3d.pose.data.PairDataset` ``[N, 4, 4]``, without loading images."""
    return np.stack([ds.pose21(k) for k in range(len(ds))])


def print_table(results: dict, test_names: list[str], matcher: str) -> None:
    b = results["budget"]
    m = b["model"]
    print(f"\nGeLoc3r benchmark ({b.get('protocol', 'unseen-scenes')}): {b['steps']} steps x batch {b['batch_size']}, seeds {b['seeds']}, "
          f"{b['train_pairs']} training pairs ({b.get('train_rooms', '?')} rooms), model {b.get('preset', 'tiny')} "
          f"{tuple(m['image_size'])} patch {m['patch_size']} embed {m.get('patch_embed', 'conv')}"
          f"{' + abs pos' if m.get('abs_pos_embed') else ''}; "
          f"total {results['total_seconds']:.0f} s with {results['threads']} torch thread(s)")
    header = (f"{'test set':14s} {'method':28s} {'AUC@5':>13s} {'AUC@10':>13s} {'AUC@20':>13s} {'med rot°':>13s} "
              f"{'med trans°':>13s} {'ms/pair':>8s} {'train s':>8s} {'ms/step':>8s}")
    print(header)
    print("-" * len(header))
    for name in test_names:
        auc5 = {}
        for arm in ("regression", "regression + GCR"):
            runs = [r for r in results["runs"] if r["arm"] == arm]
            if not runs:
                continue
            cells = []
            for key in ("auc@5", "auc@10", "auc@20", "median_rot", "median_trans"):
                vals = np.array([r[name][key] for r in runs]) * (100 if key.startswith("auc") else 1)
                cells.append(f"{vals.mean():6.2f}±{vals.std():5.2f}")
            auc5[arm] = np.mean([r[name]["auc@5"] for r in runs])
            ms = 1000 * np.mean([r[name]["seconds"] for r in runs])
            ts = np.mean([r["train_seconds"] for r in runs])
            print(f"{name:14s} {arm:28s} " + " ".join(f"{c:>13s}" for c in cells)
                  + f" {ms:8.1f} {ts:8.1f} {1000 * ts / b['steps']:8.1f}")
        if name in results.get("prior", {}):
            pr = results["prior"][name]
            print(f"{name:14s} {'prior (identity R, mean t)':28s} " + " ".join(
                f"{100 * pr[k]:13.2f}" for k in ("auc@5", "auc@10", "auc@20"))
                + f" {pr['median_rot']:13.2f} {pr['median_trans']:13.2f} {'-':>8s} {'-':>8s} {'-':>8s}")
        base = results["baseline"][name]
        print(f"{name:14s} {matcher + ' + essential (OpenCV)':28s} {100 * base['auc@5']:13.2f} {100 * base['auc@10']:13.2f} "
              f"{100 * base['auc@20']:13.2f} {base['median_rot']:13.2f} {base['median_trans']:13.2f} "
              f"{1000 * base['seconds']:8.1f} {'-':>8s} {'-':>8s}")
        if len(auc5) == 2:
            plain, ours = auc5["regression"], auc5["regression + GCR"]
            rel = f"{100 * (ours - plain) / plain:+.1f}%" if plain > 0 else "n/a (plain AUC@5 is 0)"
            print(f"{'':14s} relative AUC@5 change with GCR: {rel} (paper: +16% on CO3Dv2)")
    print_per_scene(results, test_names)
    print_gcr_diagnostics(results["runs"])
    for note in results["notes"]:
        print("note:", note)


def print_per_scene(results: dict, test_names: list[str]) -> None:
    """AUC@5 and median rotation / translation error of each arm per scene (mean over seeds) and the prior's."""
    for name in test_names:
        runs = [r for r in results["runs"] if "per_scene" in r.get(name, {})]
        if not runs:
            continue
        arms = list(dict.fromkeys(r["arm"] for r in runs))
        print(f"\n{name} by scene: pairs, then AUC@5 / median rot° / median trans° of " + ", ".join(arms)
              + " (mean over seeds)")
        for scene, first in runs[0][name]["per_scene"].items():
            cells = []
            for arm in arms:
                rows = [r[name]["per_scene"][scene] for r in runs if r["arm"] == arm]
                cells.append(f"{100 * np.mean([x['auc@5'] for x in rows]):6.2f} / {np.mean([x['median_rot'] for x in rows]):5.1f}"
                             f" / {np.mean([x['median_trans'] for x in rows]):5.1f}")
            print(f"  {scene[:34]:34s} {first['pairs']:4d}   " + "   ".join(cells))


def print_gcr_diagnostics(runs: list[dict]) -> None:
    """Per arm, GCR's solver diagnostics on its training pairs (mean ± std over seeds; the whole run, then its
    last log window): why GCR does or does not change the regression."""
    rows = [("solved %", "solved", 100), ("inlier ratio %", "inlier_ratio", 100),
            ("match share of inliers %", "match_inlier_share", 100), ("PnP rot err °", "pnp_rot_deg", 1),
            ("PnP trans err °", "pnp_trans_deg", 1), ("regression rot err °", "reg_rot_deg", 1),
            ("regression trans err °", "reg_trans_deg", 1)]
    print("\nGCR diagnostics on the training pairs GCR sees (mean ± std over seeds; the regression's error is on "
          "the same pairs):")
    print(f"{'arm':18s} {'diagnostic':26s} {'whole run':>15s} {'last window':>15s}")
    for arm in dict.fromkeys(r["arm"] for r in runs):
        diags = [r.get("gcr_diagnostics") or {} for r in runs if r["arm"] == arm]
        if not all(diags):
            print(f"{arm:18s} {'(no GCR branch: nothing to report)':26s}")
            continue
        for label, key, scale in rows:
            cells = []
            for when in ("all", "last"):
                v = scale * np.array([d[when].get(key, np.nan) for d in diags])
                cells.append(f"{np.nanmean(v):7.2f}±{np.nanstd(v):6.2f}" if np.isfinite(v).any() else "-")
            print(f"{arm:18s} {label:26s} {cells[0]:>15s} {cells[1]:>15s}")


if __name__ == "__main__":
    main(sys.argv[1:])

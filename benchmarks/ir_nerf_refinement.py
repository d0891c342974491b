"""IR-NeRF's phase B alone on the bundled armadillo scene: can photometric refinement bring back true poses
rotated by a known angle? (the check behind tests/test_ir_nerf.py's refinement test, on a real render).

Per-image poses start at the true poses (OpenCV c2w, the scene's frame) rotated by ``--noise-deg`` about
random axes; the field is either fitted first at the true poses for ``--prefit`` steps (poses frozen) or
trained jointly from scratch (``--prefit 0``). Then ``--steps`` steps of :meth:`IRNeRF.train_step` (phase B
only: ``adversarial=False``). Prints the Sim(3)-aligned mean rotation error every 60 steps.

    python benchmarks/ir_nerf_refinement.py --encoding pe --lr-poses 1e-2 --lr-field 5e-3 --prefit 300
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from provenance import git_commit  # this folder is on sys.path when a benchmark runs as a script

from vision3d.data.bundled import bundled_scene_path
from vision3d.geometry.so3 import so3_exp
from vision3d.methods.ir_nerf.data import load_unposed
from vision3d.methods.ir_nerf.evaluation import pose_errors
from vision3d.methods.ir_nerf.field import CoarseFieldConfig
from vision3d.methods.ir_nerf.training import IRNeRF, IRNeRFConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--encoding", choices=("pe", "hash"), default="pe")
    parser.add_argument("--lr-poses", type=float, default=1e-3)
    parser.add_argument("--lr-field", type=float, default=5e-4)
    parser.add_argument("--prefit", type=int, default=300, help="field steps at the true poses first (0: joint from scratch)")
    parser.add_argument("--c2f", action="store_true", help="BARF's coarse-to-fine schedule")
    parser.add_argument("--bound", type=float, default=1.5, help="half-size of the field's cube")
    parser.add_argument("--noise-deg", type=float, default=8.0)
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_unposed(bundled_scene_path(), args.size)
    gt = data.gt_c2w
    config = IRNeRFConfig(adversarial=False, use_codebook=False, rays_per_batch=512, max_steps=args.steps,
                          field=CoarseFieldConfig(encoding=args.encoding, num_samples=32, barf_c2f=args.c2f, bound=args.bound),
                          lr_field=args.lr_field, lr_poses=args.lr_poses)
    system = IRNeRF(config, data.images, data.K)
    system.start_from(gt)
    system.pose_params.requires_grad_(False)
    system.field.set_progress(1.0)
    for _ in range(args.prefit):
        system.refinement_step()
    system.pose_params.requires_grad_(True)
    g = torch.Generator().manual_seed(0)
    axes = torch.nn.functional.normalize(torch.randn(len(gt), 3, generator=g), dim=-1)
    start = gt.clone()
    start[:, :3, :3] = gt[:, :3, :3] @ so3_exp(axes * math.radians(args.noise_deg))
    system.start_from(start)
    commit = git_commit()
    print(f"# {vars(args)} commit {commit}")
    print("| step | photometric | rot err (deg) | seconds |\n|---:|---:|---:|---:|")
    print(f"| 0 | - | {pose_errors(system.estimated_poses(), gt)['rot_err_deg']:.2f} | 0 |")
    t0 = time.perf_counter()
    for step in range(args.steps):
        out = system.train_step(step)
        if step % 60 == 59 or step == args.steps - 1:
            error = pose_errors(system.estimated_poses(), gt)["rot_err_deg"]
            print(f"| {step + 1} | {out['photometric']:.4f} | {error:.2f} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()

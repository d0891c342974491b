"""IR-NeRF from P onwards, given a field that explains the images: does the pose estimator, trained on renders
at prior poses, recover the poses of the *real* images, and does phase B refine them further?

This isolates the part of the pipeline after the coarse (GAN) field. On the bundled armadillo scene the field
is first fitted photometrically at the true poses (``--prefit`` steps, poses frozen) — an oracle stand-in for
a converged adversarial phase, in the true frame (the prior's +Z up, look-at origin). Then P trains on renders
at prior samples (``IRNeRF.estimator_step``; with ``--codebook`` P's loss also has L_c on the real images and
``codebook_step`` trains L_rec), and phase B refines per-image poses from P's estimates (``start_refinement``, photometric loss +
GNeRF's pose regulariser). Prints the Sim(3)-aligned mean rotation error of the prior samples, of P's estimates
on the real images as P trains, and of the refined poses.

    python benchmarks/ir_nerf_estimator.py --size 16 --prefit 300 --estimator-steps 150 --refine-steps 150
"""

from __future__ import annotations

import argparse
import time

import torch
from provenance import git_commit  # this folder is on sys.path when a benchmark runs as a script

from vision3d.data.bundled import bundled_scene_path
from vision3d.methods.ir_nerf.data import load_unposed
from vision3d.methods.ir_nerf.evaluation import pose_errors
from vision3d.methods.ir_nerf.field import CoarseFieldConfig
from vision3d.methods.ir_nerf.pose_prior import prior_preset
from vision3d.methods.ir_nerf.training import IRNeRF, IRNeRFConfig


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=16)
    parser.add_argument("--prefit", type=int, default=300, help="field steps at the true poses (the oracle field)")
    parser.add_argument("--estimator-steps", type=int, default=150)
    parser.add_argument("--refine-steps", type=int, default=150)
    parser.add_argument("--lr-estimator", type=float, default=2e-3)
    parser.add_argument("--estimator-batch", type=int, default=16)
    parser.add_argument("--lr-poses", type=float, default=5e-3)
    parser.add_argument("--codebook", action="store_true", help="L_rec and L_c steps alongside P's (IR-NeRF)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(1)
    data = load_unposed(bundled_scene_path(), args.size)
    prior = prior_preset("360-object", radius_min=2.0, radius_max=2.0, elevation_min_deg=5.0, elevation_max_deg=60.0)
    config = IRNeRFConfig(prior=prior, field=CoarseFieldConfig(encoding="pe", num_samples=16, pe_frequencies=6),
                          use_codebook=args.codebook, estimator_batch=args.estimator_batch, lr_estimator=args.lr_estimator,
                          lr_field=5e-3, lr_poses=args.lr_poses, rays_per_batch=512, n_codes=64, code_dim=32,
                          lr_final_factor=1.0, seed=args.seed)
    system = IRNeRF(config, data.images, data.K)
    gt = data.gt_c2w
    commit = git_commit()
    print(f"# {vars(args)} commit {commit}")
    print("| stage | step | rot err (deg) | seconds |\n|---|---:|---:|---:|")
    print(f"| prior samples | 0 | {pose_errors(system.prior_poses, gt)['rot_err_deg']:.1f} | 0 |")
    t0 = time.perf_counter()
    system.start_from(gt)
    system.pose_params.requires_grad_(False)
    for _ in range(args.prefit):
        system.refinement_step()
    system.pose_params.requires_grad_(True)
    for step in range(args.estimator_steps):
        system.estimator_step()
        if args.codebook:
            system.codebook_step()
        if step % 25 == 24 or step == args.estimator_steps - 1:
            error = pose_errors(system.predicted_poses(), gt)["rot_err_deg"]
            print(f"| P on the real images | {step + 1} | {error:.1f} | {time.perf_counter() - t0:.0f} |", flush=True)
    system.start_refinement()
    for step in range(args.refine_steps):
        system.refinement_step()
        if step % 50 == 49 or step == args.refine_steps - 1:
            error = pose_errors(system.estimated_poses(), gt)["rot_err_deg"]
            print(f"| phase B from P's estimates | {step + 1} | {error:.1f} | {time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()

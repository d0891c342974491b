"""IR-NeRF's phase A (GAN + pose estimator) alone on the bundled armadillo scene: does the discriminator learn,
and does P learn poses on renders and on the real images while the field trains adversarially?

Runs ``--steps`` phase-A steps (:meth:`IRNeRF.adversarial_step`, :meth:`IRNeRF.estimator_step`; with
``--codebook`` P's loss has L_c and :meth:`IRNeRF.codebook_step` trains L_rec) and every ``--every`` steps prints D's mean loss over the window
(chance: 2 ln 2 = 1.386), P's mean rotation error on renders at 32 held-out prior samples (their own frame, no
alignment) and P's Sim(3)-aligned mean rotation error on the real images, as they are and mirrored
(:func:`~vision3d.methods.ir_nerf.evaluation.mirrored_cameras`: a patch discriminator cannot tell a scene from its mirror image, so P's estimates may be a
mirror image of the cameras, which no rotation aligns; the mirrored column is a diagnostic, not a metric). ``--set NAME=VALUE`` overrides a field
of IRNeRFConfig (``field.NAME`` / ``prior.NAME`` for the nested ones); ``--montage PNG`` writes renders at 8
azimuths (elevation 30°) at the end. ``--mirror-scan`` adds, at each reading, whether the field is the scene or its mirror
image (:func:`best_rotation_match`: the field's photometric match of the real images at the true cameras turned about
the vertical axis, best over turns, against the same for the mirrored true cameras with the renders flipped back;
a field fitted at the true cameras tells them apart, 0.039 against 0.058) and which of P's estimate set and its mirror
set the field matches better (a selection that uses no ground truth; "pick" is the chosen set's rotation error).
``--schedule`` runs the whole method instead (:meth:`IRNeRF.train_step`,
``max_steps=--steps``: phase A, A/B alternating, phase B) and prints the Sim(3)-aligned rotation error of the
current poses (P's estimates, then the refined poses) against that of the prior samples the run started from, and
the mean squared error of the field's renders at those poses against the real images (a score without ground truth).
With ``--set phase_a_restarts=R`` each restart ends in a row with P's rotation error a step before it is scored and
its score (:meth:`IRNeRF.restart_score`, in the MSE column); the best one goes on.
``--prior capture`` (default) sets the prior to the capture's radius and elevation range (``prior_of_capture``),
``--prior wide`` to session 11–12's (radius 2, elevation 5–60°); ``--bound`` is the field's half-size (1.0: the
object, half-size 0.5, and the ground near it; the cameras, at radius 1.99, outside the cube). ``--views`` keeps
some of the 24 views (e.g. ``3 4 5 6 7 8 9``, a forward-facing arc); ``--prior arc`` is then
``prior_of_capture(preset="forward-facing")``, the views' azimuth arc ± ``--margin``, and ``--prior forward-facing``
the preset's own angles at the capture's radius. ``--scene three-balls`` runs on
:mod:`vision3d.methods.ir_nerf.analytic_scene` instead (``--cameras`` on its orbit, rendered at ``--size``, its own
prior; no mirror symmetry). The header prints the prior and the rotation error of prior samples
(as many as views; mean, 1st / 5th percentile over 4000 draws): the bar a pose estimate has to beat. ``--scene-dir``
takes another rendered scene in place of the bundled one (``--views``, ``--prior`` and ``--bound`` as there).

    python benchmarks/ir_nerf_phase_a.py --steps 300 --set lr_discriminator=1e-3
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path

import torch
from provenance import git_commit  # this folder is on sys.path when a benchmark runs as a script

from vision3d.data.bundled import bundled_scene_path
from vision3d.geometry.metrics import rotation_error_deg
from vision3d.geometry.so3 import so3_exp
from vision3d.methods.ir_nerf import analytic_scene
from vision3d.methods.ir_nerf.data import UnposedImages, load_unposed
from vision3d.methods.ir_nerf.evaluation import Sim3, mirrored_cameras, pose_errors, prior_sample_errors
from vision3d.methods.ir_nerf.field import CoarseFieldConfig
from vision3d.methods.ir_nerf.pose_prior import (
    PosePriorConfig,
    look_at,
    pose_from_9d,
    prior_of_capture,
    prior_preset,
    sample_poses,
    spherical_to_position,
)
from vision3d.methods.ir_nerf.training import IRNeRF, IRNeRFConfig


def apply_overrides(config: IRNeRFConfig, pairs: list[str]) -> None:
    """``NAME=VALUE`` (``field.NAME``, ``prior.NAME``) onto the config, VALUE parsed as the field's type (a float or
    a string for fields that default to None)."""
    for pair in pairs:
        name, value = pair.split("=", 1)
        target = config
        *parents, leaf = name.split(".")
        for parent in parents:
            target = getattr(target, parent)
        current = getattr(target, leaf)
        if current is None:  # an optional field: a number when it reads as one, else the string (a path)
            parsed = float(value) if value.replace(".", "", 1).isdigit() else value
        else:
            parsed = value.lower() in ("1", "true") if isinstance(current, bool) else type(current)(value)
        setattr(target, leaf, parsed)


@torch.no_grad()
def estimator_error_on_renders(system: IRNeRF, poses: torch.Tensor) -> float:
    system.estimator.eval()
    predicted = pose_from_9d(system.estimator(system.render_image(poses)))
    system.estimator.train()
    return float(rotation_error_deg(predicted[:, :3, :3].double().numpy(), poses[:, :3, :3].double().numpy()).mean())


@torch.no_grad()
def best_rotation_match(system: IRNeRF, c2w: torch.Tensor, flip: bool = False, step_deg: float = 10.0) -> tuple[float, float]:
    """Mean absolute colour error of the field's renders at cameras ``[N, 4, 4]`` (``flip``: renders flipped
    left-right, as a mirrored camera sees) against the real images, for the cameras turned about the world's
    vertical axis by every ``step_deg``: (best, mean over turns). The GAN places the scene at any azimuth."""
    errors = []
    for angle in torch.arange(0.0, 360.0, step_deg):
        turn = Sim3(so3_exp(torch.tensor([0.0, 0.0, math.radians(float(angle))])), torch.zeros(3), 1.0)
        renders = system.render_image(turn.apply_to_poses(c2w))
        errors.append(float(((renders.flip(-1) if flip else renders) - system.images).abs().mean()))
    return min(errors), sum(errors) / len(errors)


def mirror_scan(system: IRNeRF, predicted: torch.Tensor, gt: torch.Tensor) -> str:
    """Table cells: the field at the true cameras (best / mirrored best / mean over turns), then P's estimates
    (best turn) against their mirror set (best turn) and the rotation error of the one that matches better."""
    as_is, mean = best_rotation_match(system, gt)
    mirror, _ = best_rotation_match(system, mirrored_cameras(gt), flip=True)
    estimates, mirrored_estimates = best_rotation_match(system, predicted)[0], best_rotation_match(system, mirrored_cameras(predicted))[0]
    pick = mirrored_cameras(predicted) if mirrored_estimates < estimates else predicted
    return (f" {as_is:.4f} / {mirror:.4f} / {mean:.4f} | {estimates:.4f} / {mirrored_estimates:.4f} | "
            f"{pose_errors(pick, gt)['rot_err_deg']:.1f} |")


def montage(system: IRNeRF, path: str) -> None:
    from PIL import Image

    az = torch.arange(8) * (2 * math.pi / 8)
    eye = spherical_to_position(az, torch.full((8,), math.radians(30.0)), torch.full((8,), system.config.prior.radius_max))
    renders = system.render_image(look_at(eye, torch.zeros(8, 3)))
    row = renders.clamp(0, 1).permute(2, 0, 3, 1).reshape(renders.shape[-2], -1, 3)
    Image.fromarray((row.numpy() * 255).astype("uint8")).resize((row.shape[1] * 4, row.shape[0] * 4), Image.NEAREST).save(path)


def prior_percentiles(prior, gt: torch.Tensor) -> str:
    """Mean and 1st / 5th percentile of the Sim(3)-aligned rotation error of prior samples (as many as cameras)."""
    errors = prior_sample_errors(prior, gt)
    return (f"prior samples over {len(errors)} draws: mean {errors.mean():.1f}, 1st / 5th percentile "
            f"{errors.quantile(0.01):.1f} / {errors.quantile(0.05):.1f} deg")


def run_schedule(system: IRNeRF, gt: torch.Tensor, every: int) -> None:
    """The whole method; prints the rotation and translation errors of the current poses every ``every`` steps
    (and the rotation error of their mirror set, the diagnostic of the phase-A table)."""
    def cells(poses: torch.Tensor) -> str:
        errors = pose_errors(poses, gt)
        return (f"{errors['rot_err_deg']:.1f} | {errors['trans_err']:.3f} | {pose_errors(mirrored_cameras(poses), gt)['rot_err_deg']:.1f} | "
                f"{system.render_error(poses):.4f}")

    print(f"| step | phase | rot err (deg) | trans err | mirrored rot err | MSE of renders | seconds |\n|---:|---|---:|---:|---:|---:|---:|\n"
          f"| 0 | prior samples | "
          f"{cells(system.prior_poses)} | 0 |")
    start = time.perf_counter()
    while system.step_count < system.total_steps:  # total_steps drops when a restart is accepted early
        step = system.step_count
        candidate, schedule_step = system.schedule_position(step)
        phase = system.phase(schedule_step)
        if phase == "B" and not bool(system.refining):
            print(f"| {step} | P's estimates | {cells(system.predicted_poses())} | "
                  f"{time.perf_counter() - start:.0f} |", flush=True)
        if system.ends_restart(step):
            before = pose_errors(system.predicted_poses(), gt)["rot_err_deg"]  # its networks are gone after the step
            system.train_step()
            print(f"| {step + 1} | restart {candidate} ends | {before:.1f} (P, a step before) | | | "
                  f"{system.restart_scores[-1]:.4f} | {time.perf_counter() - start:.0f} |", flush=True)
            continue
        system.train_step()
        if (step + 1) % every == 0 or step + 1 == system.total_steps:
            print(f"| {step + 1} | {phase} | {cells(system.estimated_poses())} | "
                  f"{time.perf_counter() - start:.0f} |", flush=True)


def scene_and_prior(args: argparse.Namespace) -> tuple[UnposedImages, PosePriorConfig, str]:
    """The real images (``--scene``), the pose prior of the run (``--prior``; the analytic scene has its own) and
    the prior's name for the header."""
    if args.scene == "three-balls":
        gt = analytic_scene.orbit_cameras(args.cameras)
        K = analytic_scene.intrinsics(args.size)  # noqa: N806
        return UnposedImages(analytic_scene.render(gt, args.size), K, [], gt, (args.size, args.size), K), analytic_scene.PRIOR, "three-balls"
    data = load_unposed(args.scene_dir or bundled_scene_path(), args.size, views=args.views)
    radius = float(data.gt_c2w[:, :3, 3].norm(dim=-1).mean())
    prior = {"capture": lambda: prior_of_capture(data.gt_c2w),
             "wide": lambda: prior_preset("360-object", radius_min=2.0, radius_max=2.0, elevation_min_deg=5.0,
                                          elevation_max_deg=60.0),
             "arc": lambda: prior_of_capture(data.gt_c2w, "forward-facing", args.margin),
             "forward-facing": lambda: prior_preset("forward-facing", radius_min=radius, radius_max=radius)}[args.prior]()
    return data, prior, args.prior


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=300)
    parser.add_argument("--every", type=int, default=50)
    parser.add_argument("--codebook", action="store_true")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scene", choices=["bundled", "three-balls"], default="bundled")
    parser.add_argument("--scene-dir", type=Path, help="a rendered scene (transforms.json) instead of the bundled one, "
                        "e.g. benchmarks/ir_nerf.py's dragon orbit")
    parser.add_argument("--cameras", type=int, default=8, help="cameras on the orbit of --scene three-balls")
    parser.add_argument("--views", type=int, nargs="*", help="indices of the scene's views to use (default: all; the bundled scene has 24)")
    parser.add_argument("--prior", choices=["capture", "wide", "arc", "forward-facing"], default="capture",
                        help="arc: prior_of_capture(preset='forward-facing'), the views' azimuth arc +- --margin; "
                             "forward-facing: the preset's own angles (+-20 deg, +-15 deg), the capture's radius")
    parser.add_argument("--margin", type=float, default=15.0, help="azimuth margin of --prior arc (deg)")
    parser.add_argument("--bound", type=float, default=1.0, help="half-size of the field's cube")
    parser.add_argument("--set", nargs="*", default=[], help="NAME=VALUE overrides of IRNeRFConfig")
    parser.add_argument("--montage", help="PNG of renders at 8 azimuths at the end")
    parser.add_argument("--mirror-scan", action="store_true", help="is the field the scene or its mirror image?")
    parser.add_argument("--schedule", action="store_true", help="the whole method (both phases), not phase A alone")
    args = parser.parse_args()
    torch.set_num_threads(1)
    data, prior, prior_name = scene_and_prior(args)
    field = CoarseFieldConfig(encoding="pe", num_samples=16, pe_frequencies=6, bound=args.bound)
    config = IRNeRFConfig(prior=prior, field=field,
                          use_codebook=args.codebook, n_codes=64, code_dim=32, lr_final_factor=1.0, seed=args.seed,
                          max_steps=args.steps)
    apply_overrides(config, args.set)
    system = IRNeRF(config, data.images, data.K)
    held_out = sample_poses(prior, 32, torch.Generator().manual_seed(1234))
    commit = git_commit()
    print(f"# scene {args.scene_dir or args.scene} size {args.size} seed {args.seed} views {args.views or 'all'} prior {prior_name} bound {args.bound} set {args.set} "
          f"codebook {args.codebook} commit {commit}\n# {prior}\n# {prior_percentiles(prior, data.gt_c2w)}")
    if args.schedule:
        run_schedule(system, data.gt_c2w, args.every)
        return
    scan_head = (" field at true cameras: as is / mirrored / mean over turns | field at P's set / at its mirror | pick (deg) |"
                 if args.mirror_scan else "")
    print("| step | D loss | G loss | P on renders (deg) | P on real (deg, aligned) | P on real, mirrored | seconds |" + scan_head +
          "\n|---:|---:|---:|---:|---:|---:|---:|" + ("---|---|---:|" if args.mirror_scan else ""))
    start, d_losses, g_losses = time.perf_counter(), [], []
    for step in range(args.steps):
        out = system.adversarial_step()
        system.estimator_step()
        if args.codebook:
            system.codebook_step()
        d_losses.append(out["d_loss"])
        g_losses.append(out["g_loss"])
        if (step + 1) % args.every == 0:
            predicted = system.predicted_poses()
            on_real = pose_errors(predicted, data.gt_c2w)["rot_err_deg"]
            on_real_mirrored = pose_errors(mirrored_cameras(predicted), data.gt_c2w)["rot_err_deg"]
            print(f"| {step + 1} | {sum(d_losses) / len(d_losses):.3f} | {sum(g_losses) / len(g_losses):.3f} | "
                  f"{estimator_error_on_renders(system, held_out):.1f} | {on_real:.1f} | {on_real_mirrored:.1f} | {time.perf_counter() - start:.0f} |"
                  + (mirror_scan(system, predicted, data.gt_c2w) if args.mirror_scan else ""), flush=True)
            d_losses, g_losses = [], []
    if args.montage:
        montage(system, args.montage)


if __name__ == "__main__":
    main()

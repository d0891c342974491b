"""Evaluation as the pose-free literature reports it: Sim(3) alignment of the estimated cameras to the
ground truth, rotation (deg) and translation errors, PSNR/SSIM of held-out views after test-time pose
optimisation, and a picture of both frusta sets.

Alignment: the Umeyama/Procrustes Sim(3) (:func:`vision3d.geometry.weighted_procrustes`, with scale) of the
estimated camera centres onto the true ones, applied to the whole poses; errors are measured in the
ground truth's frame and units. Poses are camera-to-world in OpenCV axes ``[N, 4, 4]``.
"""

from __future__ import annotations

import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

from vision3d import metrics
from vision3d.geometry.metrics import rotation_error_deg
from vision3d.geometry.procrustes import weighted_procrustes
from vision3d.geometry.se3 import make_pose
from vision3d.methods.ir_nerf.pose_prior import PosePriorConfig, sample_poses


@dataclass
class Sim3:
    """``x ↦ s R x + t``."""

    R: Tensor  # [3, 3]  # noqa: N815
    t: Tensor  # [3]
    s: float

    def apply_to_poses(self, c2w: Tensor) -> Tensor:
        """Camera-to-world ``[N, 4, 4]`` moved by the similarity (rotation of the axes, scaled centre)."""
        R, t = self.R.to(c2w), self.t.to(c2w)  # noqa: N806
        return make_pose(R @ c2w[:, :3, :3], self.s * c2w[:, :3, 3] @ R.T + t)

    def inverse(self) -> Sim3:
        return Sim3(self.R.T, -(self.R.T @ self.t) / self.s, 1.0 / self.s)


def align_poses(estimated: Tensor, ground_truth: Tensor) -> Sim3:
    """Sim(3) that best maps estimated camera centres ``[N, 4, 4]`` onto the ground truth's (N ≥ 3)."""
    R, t, s = weighted_procrustes(estimated[None, :, :3, 3].double(), ground_truth[None, :, :3, 3].double(), with_scale=True)  # noqa: N806
    return Sim3(R[0].float(), t[0].float(), float(s[0]))


def pose_errors(estimated: Tensor, ground_truth: Tensor) -> dict[str, float]:
    """Mean and median rotation error (deg) and translation error (GT units) after Sim(3) alignment."""
    aligned = align_poses(estimated, ground_truth).apply_to_poses(estimated.float())
    rot = rotation_error_deg(aligned[:, :3, :3].double().numpy(), ground_truth[:, :3, :3].double().numpy())
    trans = (aligned[:, :3, 3] - ground_truth[:, :3, 3].float()).norm(dim=-1).numpy()
    return {"rot_err_deg": float(rot.mean()), "trans_err": float(trans.mean()),
            "rot_err_deg_median": float(np.median(rot)), "trans_err_median": float(np.median(trans))}


def pairwise_disagreement(estimates: Sequence[Tensor]) -> np.ndarray:
    """``[S, S]`` mean rotation difference (deg) between camera sets ``[N, 4, 4]`` (the same N images) after Sim(3)
    alignment, averaged both ways (the alignment is a least-squares fit, not symmetric); 0 on the diagonal. Rows
    and columns of a set that is not finite (a diverged run) are NaN, its diagonal included."""
    finite = [i for i, c2w in enumerate(estimates) if torch.isfinite(c2w).all()]
    diff = np.full((len(estimates), len(estimates)), np.nan)
    for i in finite:
        diff[i, i] = 0.0
    for i, j in itertools.combinations(finite, 2):
        diff[i, j] = diff[j, i] = (pose_errors(estimates[i], estimates[j])["rot_err_deg"] +
                                   pose_errors(estimates[j], estimates[i])["rot_err_deg"]) / 2
    return diff


def disagreement_medians(pairwise: np.ndarray) -> list[float]:
    """For each set of a :func:`pairwise_disagreement` matrix (or a sub-matrix of it: a subset of the sets), the
    median of its differences to the other finite sets; inf for a non-finite set, or when no other set is finite."""
    finite = [i for i in range(len(pairwise)) if not np.isnan(pairwise[i, i])]
    values = [math.inf] * len(pairwise)
    for i in finite:
        if len(finite) > 1:
            values[i] = statistics.median(float(pairwise[i, j]) for j in finite if j != i)
    return values


def median_disagreement(estimates: Sequence[Tensor]) -> list[float]:
    """For each camera set ``[N, 4, 4]``, the median over the other sets of its :func:`pairwise_disagreement`
    (deg). Sets that recover the cameras agree up to a similarity; mirrored or scrambled sets differ from them and
    each their own way, so the lowest median marks the largest group that agrees. A set that is not finite (a
    diverged run) gets inf and is left out of the others' medians."""
    return disagreement_medians(pairwise_disagreement(estimates))


def mirrored_cameras(c2w: Tensor, plane_azimuth_deg: float = 0.0) -> Tensor:
    """Cameras ``[N, 4, 4]`` (OpenCV axes) of the scene mirrored in the vertical plane through the origin at
    ``plane_azimuth_deg`` (0: the world's y = 0 plane): centres reflected, and the reflected axes with the camera's
    x axis flipped, which keeps them a rotation (their images are the originals flipped left-right when the scene
    is its own mirror image). No rotation aligns a mirrored set with the original, so P's estimates, when they are
    the mirror image of the cameras, score ~180° (docs/ir-nerf.md)."""
    c, s = math.cos(math.radians(2 * plane_azimuth_deg)), math.sin(math.radians(2 * plane_azimuth_deg))
    world = torch.tensor([[c, s, 0.0], [s, -c, 0.0], [0.0, 0.0, 1.0]], dtype=c2w.dtype)
    camera = torch.diag(torch.tensor([-1.0, 1.0, 1.0], dtype=c2w.dtype))
    out = c2w.clone()
    out[:, :3, :3] = world @ c2w[:, :3, :3] @ camera
    out[:, :3, 3] = c2w[:, :3, 3] @ world.T
    return out


def prior_sample_errors(prior: PosePriorConfig, ground_truth: Tensor, draws: int = 4000, seed: int = 4321) -> Tensor:
    """Rotation errors (deg, ``[draws]``) of ``draws`` sets of prior samples, as many as cameras ``ground_truth
    [N, 4, 4]``, each scored by :func:`pose_errors`: what a pose estimate has to beat to be more than a lucky
    draw from the prior (its 5th percentile is the bar of the phase-A benchmark). 4000 draws (~10 s for 7
    cameras), because fewer leave that percentile degrees off (docs/ir-nerf.md, session 18)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.tensor([pose_errors(sample_poses(prior, len(ground_truth), generator), ground_truth)["rot_err_deg"]
                         for _ in range(draws)])


def test_time_pose_optimisation(system, images: Tensor, initial_c2w: Tensor, steps: int = 100, lr: float = 2e-3,
                                rays: int = 1024) -> Tensor:
    """Poses ``[N, 4, 4]`` of ``images [N, 3, H, W]`` refined photometrically on the frozen field of an
    :class:`~vision3d.methods.ir_nerf.training.IRNeRF`, from ``initial_c2w`` (in its frame)."""
    from vision3d.methods.ir_nerf.field import camera_rays
    from vision3d.methods.ir_nerf.pose_prior import pose_from_9d, pose_to_9d
    from vision3d.methods.ir_nerf.training import sample_image_at

    params = torch.nn.Parameter(pose_to_9d(initial_c2w.float()))
    opt = torch.optim.Adam([params], lr=lr)
    generator = torch.Generator().manual_seed(0)
    n, _, h, w = images.shape
    for p in system.field.parameters():
        p.requires_grad_(False)
    try:
        for _ in range(steps):
            idx = torch.randint(n, (rays,), generator=generator)
            pixels = (torch.rand(rays, 1, 2, generator=generator) * torch.tensor([w, h])).to(images)
            origins, directions = camera_rays(pose_from_9d(params[idx]), system.K, pixels)
            rgb = system.field.render(origins, directions)[0][:, 0]
            loss = torch.nn.functional.mse_loss(rgb, sample_image_at(images[idx], pixels)[:, 0])
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        for p in system.field.parameters():
            p.requires_grad_(True)
    return pose_from_9d(params.detach())


def novel_view_metrics(system, images: Tensor, gt_c2w: Tensor, alignment: Sim3, steps: int = 100) -> dict[str, float]:
    """Mean PSNR/SSIM (and LPIPS when its weights are on disk) of held-out ``images [N, 3, H, W]`` whose true
    poses ``gt_c2w`` are brought into the field's frame by the inverse alignment, then refined (test-time
    pose optimisation, ``steps``; 0: none)."""
    start = alignment.inverse().apply_to_poses(gt_c2w.float())
    poses = test_time_pose_optimisation(system, images, start, steps) if steps > 0 else start
    renders = system.render_image(poses)
    rows = [metrics.image_metrics(r.permute(1, 2, 0).clamp(0, 1), i.permute(1, 2, 0)) for r, i in zip(renders, images, strict=True)]
    return {k: float(np.mean([row[k] for row in rows])) for k in rows[0]}


def plot_frusta(path: str | Path, estimated: Tensor, ground_truth: Tensor | None, K: Tensor, size: float | None = None) -> Path:
    """Write a matplotlib picture of camera frusta: estimated (aligned to the ground truth when given) in
    orange, ground truth in blue. Returns the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if ground_truth is not None:
        estimated = align_poses(estimated, ground_truth).apply_to_poses(estimated.float())
    everything = estimated if ground_truth is None else torch.cat([estimated, ground_truth.float()])
    extent = float((everything[:, :3, 3].amax(0) - everything[:, :3, 3].amin(0)).max())
    size = size or 0.08 * max(extent, 1e-6)
    fig = plt.figure(figsize=(6, 6))
    ax = fig.add_subplot(projection="3d")
    for poses, colour, label in ((ground_truth, "tab:blue", "ground truth"), (estimated, "tab:orange", "estimated")):
        if poses is None:
            continue
        label_given = False
        for segments in _frustum_segments(poses.float(), K.float(), size):
            for a, b in segments:
                ax.plot(*np.stack([a, b]).T, color=colour, linewidth=0.8, label=None if label_given else label)
                label_given = True
    centre = everything[:, :3, 3].mean(0).numpy()
    half = 0.6 * max(extent, 1e-6)
    ax.set_xlim(centre[0] - half, centre[0] + half)
    ax.set_ylim(centre[1] - half, centre[1] + half)
    ax.set_zlim(centre[2] - half, centre[2] + half)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
    ax.set_zlabel("z")
    ax.legend(loc="upper right")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _frustum_segments(c2w: Tensor, K: Tensor, size: float) -> list[list[tuple[np.ndarray, np.ndarray]]]:
    """Per camera, line segments of a pyramid of depth ``size`` (apex at the centre, OpenCV axes)."""
    w, h = 2 * float(K[0, 2]), 2 * float(K[1, 2])
    corners = torch.tensor([[0, 0], [w, 0], [w, h], [0, h]], dtype=torch.float32)
    cam = torch.cat([(corners - K[:2, 2]) / torch.stack([K[0, 0], K[1, 1]]), torch.ones(4, 1)], dim=-1) * size
    out = []
    for pose in c2w:
        world = (cam @ pose[:3, :3].T + pose[:3, 3]).numpy()
        centre = pose[:3, 3].numpy()
        segs = [(centre, world[i]) for i in range(4)] + [(world[i], world[(i + 1) % 4]) for i in range(4)]
        out.append(segs)
    return out

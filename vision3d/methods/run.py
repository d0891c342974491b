"""Train and evaluate a nerfstudio method in-process: what ``ns-train`` does, for the demo and benchmarks.

The demo and the benchmarks go through the same TrainerConfig, pipeline and checkpoints as ``ns-train``
so that what they measure is what users run. Like ``ns-train``, :func:`train` seeds Python's, NumPy's and
torch's global generators from ``config.machine.seed`` first: nerfstudio's Trainer does not, torch (>= 2.x
here) starts each process from a random seed, and several runs in one process would otherwise continue
one another's torch stream (splat initialisation, random backgrounds, densification's split samples).
With that, a CPU run is bit-reproducible for a given seed (the CPU rasterizer's kernels sum in a fixed
order at any thread count); CUDA runs are not (gsplat's backward accumulates with atomics).
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from nerfstudio.engine.callbacks import TrainingCallback
from nerfstudio.engine.trainer import Trainer, TrainerConfig

from vision3d import metrics, viz
from vision3d.data.scene import read_depth
from vision3d.errors import ConfigError


def configure(
    config: TrainerConfig,
    data: Path,
    output_dir: Path,
    max_steps: int,
    num_train_views: int | None = None,
    split_seed: int = 0,
    seed: int = 42,
    experiment_name: str | None = None,
) -> TrainerConfig:
    """A copy of a method's TrainerConfig pointed at ``data``, with no viewer and no periodic evaluation."""
    config = copy.deepcopy(config)
    config.pipeline.datamanager.data = Path(data)
    dataparser = config.pipeline.datamanager.dataparser
    dataparser.data = Path(data)
    if num_train_views is not None:
        if not hasattr(dataparser, "num_train_views"):
            raise ConfigError(f"{type(dataparser).__name__} has no sparse-view split; use vision3d-data")
        dataparser.num_train_views, dataparser.split_seed = num_train_views, split_seed
    config.output_dir = Path(output_dir)
    config.experiment_name = experiment_name or Path(data).name
    config.timestamp = "run"
    config.max_num_iterations = max_steps
    config.steps_per_save = max_steps
    config.save_only_latest_checkpoint = True
    config.steps_per_eval_image = config.steps_per_eval_batch = config.steps_per_eval_all_images = max_steps + 1
    config.vis = "tensorboard"
    config.machine.seed = seed
    config.logging.local_writer.enable = False
    return config


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's (CPU and CUDA) global generators, as ``ns-train`` does."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def train(config: TrainerConfig, callbacks: Callable[[Trainer], list[TrainingCallback]] | None = None) -> Trainer:
    """Seed from ``config.machine.seed``, set up and run nerfstudio's trainer (saves ``config.yml`` and the
    final checkpoint). ``callbacks(trainer)``, given the set-up trainer, returns callbacks that run beside
    the pipeline's own (e.g. an evaluation after given numbers of steps)."""
    seed_everything(config.machine.seed)
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    if callbacks is not None:
        trainer.callbacks.extend(callbacks(trainer))
    trainer.train()
    return trainer


@torch.no_grad()
def evaluate(
    trainer: Trainer, picture_dir: Path | None = None, depth_gt: bool = True, min_accumulation: float = 0.5
) -> list[dict[str, float]]:
    """Per held-out view: PSNR, SSIM, LPIPS (when available) and depth AbsRel (when GT depth exists).

    ``depth_abs_rel`` is over every pixel with GT depth. Where a render covers a pixel only faintly, its
    expected depth is ill-conditioned (a ratio of two small sums) and a few such pixels can decide the
    mean, so with an ``accumulation`` output there are also ``depth_abs_rel_covered``, over the pixels
    with GT depth and accumulation >= ``min_accumulation`` (NaN when there are none), and
    ``depth_coverage``, the share of GT-depth pixels that passes. With ``picture_dir``, writes for each
    view ``render``, ``gt``, ``depth`` and ``error`` PNGs. Depths are compared in the dataparser's scaled
    units on both sides, GT depth resized (nearest) to the render's size when the cameras were downscaled.
    """
    pipeline = trainer.pipeline
    pipeline.eval()
    datamanager = pipeline.datamanager
    eval_outputs = datamanager.eval_dataset._dataparser_outputs
    scale = eval_outputs.dataparser_scale
    depth_files = eval_outputs.metadata.get("depth_filenames")
    depth_unit = eval_outputs.metadata.get("depth_unit_scale_factor", 1e-3)
    rows = []
    for i, (camera, batch) in enumerate(datamanager.fixed_indices_eval_dataloader):
        outputs = pipeline.model.get_outputs_for_camera(camera)
        gt = batch["image"].float()
        gt = gt / 255.0 if batch["image"].dtype == torch.uint8 else gt
        gt = gt.to(outputs["rgb"].device)
        if "background" in outputs:  # splat models composite over the background they rendered
            gt = pipeline.model.composite_with_background(gt, outputs["background"])
        else:  # nerfacto-style models blend RGBA ground truth in their RGB renderer
            gt = pipeline.model.renderer_rgb.blend_background(gt)
        pred = outputs["rgb"].cpu()
        row = metrics.image_metrics(pred, gt.cpu())
        depth = outputs["depth"][..., 0].cpu().numpy()
        if depth_gt and depth_files is not None:
            gt_depth = read_depth(depth_files[batch["image_idx"]], depth_unit) * scale
            depth_t, gt_depth_t = torch.from_numpy(depth), torch.from_numpy(gt_depth)
            if gt_depth_t.shape != depth_t.shape:  # cameras downscaled (camera_res_scale_factor): nearest, no mixing
                gt_depth_t = torch.nn.functional.interpolate(gt_depth_t[None, None], size=depth_t.shape, mode="nearest")[0, 0]
            row["depth_abs_rel"] = metrics.depth_abs_rel(depth_t, gt_depth_t)
            if "accumulation" in outputs:
                covered = outputs["accumulation"][..., 0].cpu() >= min_accumulation
                has_gt = gt_depth_t > 0
                row["depth_coverage"] = float((covered & has_gt).sum() / has_gt.sum())
                row["depth_abs_rel_covered"] = (
                    metrics.depth_abs_rel(depth_t, gt_depth_t, valid=covered) if (covered & has_gt).any() else math.nan
                )
        rows.append(row)
        if picture_dir is not None:
            error = np.abs(pred.numpy() - gt.cpu().numpy()).mean(-1)
            viz.save_png(picture_dir / f"view{i:02d}_render.png", pred.numpy())
            viz.save_png(picture_dir / f"view{i:02d}_gt.png", gt.cpu().numpy())
            viz.save_png(picture_dir / f"view{i:02d}_depth.png", viz.colorize_depth(depth))
            viz.save_png(picture_dir / f"view{i:02d}_error.png", viz.colorize(error, vmin=0.0, vmax=0.25, cmap="magma"))
    return rows


def mean_metrics(rows: list[dict[str, float]]) -> dict[str, float]:
    """Average of per-view metric dicts over the keys all views have."""
    keys = set.intersection(*(set(r) for r in rows))
    return {k: float(np.mean([r[k] for r in rows])) for k in sorted(keys)}


def export_splat_ply(trainer: Trainer, path: Path) -> Path:
    """Write the trained Gaussians as the standard 3DGS .ply (what ``ns-export gaussian-splat`` writes)."""
    from nerfstudio.scripts.exporter import ExportGaussianSplat

    config_path = trainer.base_dir / "config.yml"
    exporter = ExportGaussianSplat(load_config=config_path, output_dir=Path(path).parent, output_filename=Path(path).name)
    exporter.main()
    return Path(path)

"""Train and evaluate a nerfstudio method in-process: what ``ns-train`` does, for the demo and benchmarks.

The demo and the benchmarks go through the same TrainerConfig, pipeline and checkpoints as ``ns-train``
so that what they measure is what users run.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import torch
from nerfstudio.engine.trainer import Trainer, TrainerConfig

from vision3d import metrics, viz
from vision3d.data.scene import read_depth


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
            raise ValueError(f"{type(dataparser).__name__} has no sparse-view split; use vision3d-data")
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


def train(config: TrainerConfig) -> Trainer:
    """Set up and run nerfstudio's trainer (saves ``config.yml`` and the final checkpoint)."""
    config.save_config()
    trainer = config.setup(local_rank=0, world_size=1)
    trainer.setup()
    trainer.train()
    return trainer


@torch.no_grad()
def evaluate(trainer: Trainer, picture_dir: Path | None = None, depth_gt: bool = True) -> list[dict[str, float]]:
    """Per held-out view: PSNR, SSIM, LPIPS (when available) and depth AbsRel (when GT depth exists).

    With ``picture_dir``, writes for each view ``render``, ``gt``, ``depth`` and ``error`` PNGs.
    Depths are compared in the dataparser's scaled units on both sides.
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
            row["depth_abs_rel"] = metrics.depth_abs_rel(torch.from_numpy(depth), torch.from_numpy(gt_depth))
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

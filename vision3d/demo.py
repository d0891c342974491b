"""``v3d demo``: the main job on the bundled scene, on CPU or GPU, with nothing to download.

1. Load and validate the bundled scene (rendered with Blender from a real mesh; see its README), print
   its summary and write a contact sheet of its views and depths.
2. Train our Gaussian-splatting model through nerfstudio's trainer (the same pipeline as ``ns-train``),
   from the scene's SfM-like seed points (``sparse_pc.ply``) with its schedules fit to the step budget
   (:func:`demo_config`), hold out every view not used for training, and evaluate PSNR, SSIM (LPIPS when its weights are on
   disk) and depth AbsRel.
3. Write renders, depth maps and error maps as PNGs next to ``metrics.json``, and the trained splats as
   a standard 3DGS ``.ply``.

``v3d demo --method det-gs`` is the sparse-view part (:func:`run_sparse_demo`): the same splats trained on
``--train-views`` views (8 of the 24 by default, drawn with a fixed seed) with and without DET-GS's
regularizers, against the monocular-like depth prior (the scene's ground-truth depth would be an oracle),
and a side-by-side picture of both on the held-out views. 8, not 3: the bundled scene is a 360° orbit, and
3 views of it leave most of what the held-out views show unseen (both variants then score ~18 dB and the
comparison measures hallucination; ``benchmarks/det_gs.py`` runs 3 and 6 views on forward-facing renders).
``make demo`` runs both parts.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from vision3d import viz
from vision3d.data.bundled import bundled_scene_path
from vision3d.data.scene import load_scene
from vision3d.errors import Vision3DError

CONSOLE = Console()


def write_contact_sheet(scene_dir: Path, path: Path, max_views: int = 12) -> Path:
    """Views (top rows) and their colourised depths (bottom rows) of a scene, as one PNG."""
    scene = load_scene(scene_dir)
    indices = list(range(0, len(scene), max(1, len(scene) // max_views)))[:max_views]
    tiles = [scene.load_image(i) for i in indices]
    if scene.has_depth:
        tiles += [viz.colorize_depth(scene.load_depth(i)) for i in indices]
    return viz.save_png(path, viz.contact_sheet(tiles, columns=len(indices)))


def run_demo(output: str | Path, steps: int = 1500, method: str = "vision3d-splat") -> dict:
    """Run the demo; returns the mean held-out metrics."""
    from vision3d.methods import run

    output = Path(output)
    scene_dir = bundled_scene_path()
    scene = load_scene(scene_dir)
    CONSOLE.print(scene.summary())
    sheet = write_contact_sheet(scene_dir, output / "contact_sheet.png")
    CONSOLE.print(f"contact sheet: {sheet}")

    config = demo_config(method, steps, output / "runs")
    CONSOLE.rule(f"training {method} for {steps} steps on {config.machine.device_type}")
    start = time.perf_counter()
    trainer = run.train(config)
    train_seconds = time.perf_counter() - start
    rows = run.evaluate(trainer, picture_dir=output / "renders")
    summary = {"method": method, "steps": steps, "train_seconds": round(train_seconds, 1),
               "gaussians": int(trainer.pipeline.model.num_points), **run.mean_metrics(rows)}
    ply = run.export_splat_ply(trainer, output / "splat.ply")
    (output / "metrics.json").write_text(json.dumps({"mean": summary, "per_view": rows}, indent=2))

    table = Table(title=f"held-out views of {scene_dir.name} ({len(rows)} views)")
    for key in summary:
        table.add_column(key)
    table.add_row(*(f"{v:.4f}" if isinstance(v, float) else str(v) for v in summary.values()))
    CONSOLE.print(table)
    CONSOLE.print(f"pictures: {output / 'renders'}  splats: {ply}  numbers: {output / 'metrics.json'}")
    return summary


def run_sparse_demo(output: str | Path, steps: int = 800, train_views: int = 8) -> dict:
    """Base splats vs det-gs on ``train_views`` views of the bundled scene, same steps; returns both means."""
    from vision3d.methods import run

    output = Path(output)
    means, renders = {}, {}
    for variant in ("base", "det-gs"):
        config = demo_config("det-gs", steps, output / "runs", train_views=train_views)
        config.experiment_name = f"{variant}-{train_views}views"
        config.pipeline.datamanager.depth_prior.source = "monocular_like"
        losses = config.pipeline.model.losses
        losses.use_depth = losses.use_edge = losses.use_tv = variant == "det-gs"
        config.pipeline.model.sky_floaters.enabled = variant == "det-gs"
        CONSOLE.rule(f"{variant}: {train_views} training views, {steps} steps on {config.machine.device_type}")
        start = time.perf_counter()
        trainer = run.train(config)
        seconds = time.perf_counter() - start
        rows = run.evaluate(trainer, picture_dir=output / "renders" / variant)
        means[variant] = {"train_seconds": round(seconds, 1), **run.mean_metrics(rows)}
        renders[variant] = sorted((output / "renders" / variant).glob("view*_render.png"))
    sheet = _side_by_side(output / "renders", renders, output / "base_vs_det-gs.png")
    (output / "metrics.json").write_text(json.dumps({"train_views": train_views, "steps": steps, **means}, indent=2))

    table = Table(title=f"{train_views}-view training, held-out views of the bundled scene")
    keys = list(means["det-gs"])
    table.add_column("variant")
    for key in keys:
        table.add_column(key)
    for variant, row in means.items():
        table.add_row(variant, *(f"{row[k]:.4f}" if k in row else "n/a" for k in keys))
    CONSOLE.print(table)
    CONSOLE.print(f"pictures: {sheet} (rows: ground truth, base, det-gs, base depth, det-gs depth)  numbers: {output / 'metrics.json'}")
    return means


def _side_by_side(render_dir: Path, renders: dict[str, list[Path]], path: Path, max_views: int = 6) -> Path:
    """Held-out views as columns; rows: ground truth, each variant's render, each variant's depth."""
    from PIL import Image

    def read(path: Path) -> np.ndarray:
        return np.asarray(Image.open(path).convert("RGB"), dtype=np.float64) / 255.0

    names = [p.name for p in renders["base"][:max_views]]
    gts = [read(render_dir / "base" / n.replace("_render", "_gt")) for n in names]
    rows = [gts] + [[read(render_dir / v / n) for n in names] for v in renders]
    rows += [[read(render_dir / v / n.replace("_render", "_depth")) for n in names] for v in renders]
    tiles = [img for row in rows for img in row]
    return viz.save_png(path, viz.contact_sheet(tiles, columns=len(names)))


def demo_config(method: str, steps: int, output_dir: Path, train_views: int | None = None):
    """The method's ``ns-train`` config on the bundled scene, its schedules fit to ``steps`` (splat methods:
    :func:`vision3d.methods.splat.config.fit_schedule`, i.e. densify over the middle of the run, then
    optimise; the same config is ``ns-train vision3d-splat --data <scene>`` with the flags printed in
    docs/splat.md)."""
    from vision3d.methods import run
    from vision3d.methods.splat.config import fit_schedule
    from vision3d.methods.splat.model import SplatModelConfig

    config = run.configure(_method_config(method), bundled_scene_path(), output_dir, max_steps=steps,
                           num_train_views=train_views, experiment_name=method)
    if isinstance(config.pipeline.model, SplatModelConfig):
        config = fit_schedule(config, steps)
    return config


def _method_config(name: str):
    """The TrainerConfig of one of vision3d's registered ns-train methods."""
    from importlib.metadata import entry_points

    ours = {ep.name: ep for ep in entry_points(group="nerfstudio.method_configs") if ep.value.startswith("vision3d.")}
    if name not in ours:
        raise Vision3DError(f"unknown method {name!r}; vision3d registers: {', '.join(sorted(ours))}")
    return ours[name].load().config

"""``v3d demo``: the main job on the bundled scene, on CPU or GPU, with nothing to download.

1. Load and validate the bundled scene (rendered with Blender from a real mesh; see its README), print
   its summary and write a contact sheet of its views and depths.
2. Train our Gaussian-splatting model through nerfstudio's trainer (the same pipeline as ``ns-train``),
   from the scene's SfM-like seed points (``sparse_pc.ply``) with its schedules fit to the step budget
   (:func:`demo_config`), hold out every view not used for training, and evaluate PSNR, SSIM (LPIPS when its weights are on
   disk) and depth AbsRel.
3. Write renders, depth maps and error maps as PNGs next to ``metrics.json``, and the trained splats as
   a standard 3DGS ``.ply``.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

from vision3d import viz
from vision3d.data.bundled import bundled_scene_path
from vision3d.data.scene import load_scene

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


def demo_config(method: str, steps: int, output_dir: Path):
    """The method's ``ns-train`` config on the bundled scene, its schedules fit to ``steps`` (splat methods:
    :func:`vision3d.methods.splat.config.fit_schedule`, i.e. densify over the middle of the run, then
    optimise; the same config is ``ns-train vision3d-splat --data <scene>`` with the flags printed in the
    README)."""
    from vision3d.methods import run
    from vision3d.methods.splat.config import fit_schedule
    from vision3d.methods.splat.model import SplatModelConfig

    config = run.configure(_method_config(method), bundled_scene_path(), output_dir, max_steps=steps,
                           experiment_name=method)
    if isinstance(config.pipeline.model, SplatModelConfig):
        config = fit_schedule(config, steps)
    return config


def _method_config(name: str):
    """The TrainerConfig of one of vision3d's registered ns-train methods."""
    from importlib.metadata import entry_points

    ours = {ep.name: ep for ep in entry_points(group="nerfstudio.method_configs") if ep.value.startswith("vision3d.")}
    if name not in ours:
        raise KeyError(f"unknown method {name!r}; vision3d registers: {sorted(ours)}")
    return ours[name].load().config

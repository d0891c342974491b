"""HelixSurf's occupancy grid at a trained state: training iterations and renders timed with the grid on and off.

The issue's ablation trains the whole run twice (``benchmarks/helixsurf.py --methods helixsurf
helixsurf-no-grid``); on the shared CPU that does not fit, so this measures the same speed-up on one trained
run: it loads the run (its grid is in the checkpoint), then, alternating grid on / off, times ``--iterations``
training iterations (forward and backward of ``--rays`` random training rays: colour, depth and eikonal terms;
no optimiser step, so every repeat sees the same model) and a render of ``--views`` training views. Quality
is equal by construction (same weights); the renders' depth and colour differences between on and off are
printed to show the grid skips nothing that matters. Also printed: the fraction of samples the grid keeps.

    nice -n 15 python benchmarks/helixsurf_grid_timing.py RUN_DIR --iterations 10 --rays 512 --views 3
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path

import torch

from vision3d.export.from_run import load_run


def random_rays(cameras, n: int, generator: torch.Generator):  # noqa: ANN001, ANN201
    """A RayBundle [n] through uniformly random pixels of random training ``cameras``."""
    index = torch.randint(len(cameras), (n,), generator=generator)
    ys = torch.rand(n, generator=generator) * cameras.height[index, 0]
    xs = torch.rand(n, generator=generator) * cameras.width[index, 0]
    return cameras.generate_rays(camera_indices=index[:, None], coords=torch.stack([ys, xs], dim=-1))


def training_iteration(model, rays) -> float:  # noqa: ANN001
    """Forward and backward of one batch (a surrogate loss over colour, depth and the eikonal gradients);
    returns the fraction of samples evaluated."""
    model.field.zero_grad(set_to_none=True)
    outputs = model(rays)
    loss = outputs["rgb"].sum() + outputs["depth"].sum() + ((outputs["eikonal_gradients"].norm(dim=-1) - 1) ** 2).sum()
    loss.backward()
    return float(outputs["occupied_fraction"].mean())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="A helixsurf run folder (config.yml and nerfstudio_models/).")
    parser.add_argument("--iterations", type=int, default=10)
    parser.add_argument("--rays", type=int, default=512)
    parser.add_argument("--views", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=2, help="Alternating on/off rounds; the fastest is kept.")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("NERFSTUDIO_METHOD_CONFIGS", "helixsurf=vision3d.methods.helixsurf.config:helixsurf")
    pipeline = load_run(args.run).pipeline
    model, cameras = pipeline.model, pipeline.datamanager.train_dataparser_outputs.cameras.to(pipeline.model.device)
    generator = torch.Generator().manual_seed(0)
    batches = [random_rays(cameras, args.rays, generator).to(model.device) for _ in range(args.iterations)]
    views = torch.linspace(0, len(cameras) - 1, args.views).round().long().tolist()
    best = {True: {"train": float("inf"), "render": float("inf")}, False: {"train": float("inf"), "render": float("inf")}}
    kept, renders = {}, {}
    for _ in range(args.repeats):
        for grid in (True, False):
            model.config.use_occupancy_grid = grid
            model.train()
            start = time.perf_counter()
            kept[grid] = sum(training_iteration(model, rays) for rays in batches) / len(batches)
            best[grid]["train"] = min(best[grid]["train"], (time.perf_counter() - start) / len(batches))
            model.eval()
            start = time.perf_counter()
            with torch.no_grad():
                renders[grid] = [model.get_outputs_for_camera(cameras[i : i + 1]) for i in views]
            best[grid]["render"] = min(best[grid]["render"], (time.perf_counter() - start) / len(views))
    depth = torch.cat([(a["depth"] - b["depth"]).abs().flatten() / b["depth"].flatten().clamp_min(1e-6)
                       for a, b in zip(renders[True], renders[False], strict=True)])
    colour = torch.cat([(a["rgb"] - b["rgb"]).abs().flatten() for a, b in zip(renders[True], renders[False], strict=True)])
    print(f"run {args.run}: grid {model.occupancy.resolution}^3, {float(model.occupancy.occupied.float().mean()):.1%} of "
          f"cells occupied, {kept[True]:.1%} of training samples kept; render with vs without grid: median relative "
          f"depth difference {float(depth.median()):.4f}, mean colour difference {float(colour.mean()):.4f}")
    print("\n| grid | training iteration s | render of one view s | samples evaluated |")
    print("|---|---|---|---|")
    for grid in (True, False):
        print(f"| {'on' if grid else 'off'} | {best[grid]['train']:.3f} | {best[grid]['render']:.2f} | "
              f"{kept[grid] if grid else 1.0:.1%} |")
    print(f"\nspeed-up: training iteration {best[False]['train'] / best[True]['train']:.2f}x, "
          f"render {best[False]['render'] / best[True]['render']:.2f}x")


if __name__ == "__main__":
    main()

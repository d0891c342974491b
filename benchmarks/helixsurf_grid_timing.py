"""HelixSurf's occupancy grid at a trained state: training iterations and renders timed with and without it.

The issue's ablation trains the whole run twice (``benchmarks/helixsurf.py --methods helixsurf
helixsurf-no-grid``); this measures the per-step speed-up on one trained run at equal weights: it loads the
run, then for each variant — no grid (plain), the official density grid, the opacity grid, the opacity grid
with early ray termination with the old cell bound (slope 1; one gradient-free pass, or marched in segments)
and with the slope margin (the default) — refreshes the grid at the loaded SDF and s, and times
``--iterations`` training iterations (forward and backward of ``--rays`` random training rays: colour, depth
and eikonal terms; no optimiser step, so every variant sees the same model) and a render of ``--views``
training views. Quality is equal by construction (same weights); each variant's render is compared with the
plain one (depth and colour differences). Also printed: the fraction of samples evaluated with gradients.

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
    parser.add_argument("--repeats", type=int, default=1, help="Rounds over the variants; the fastest of each is kept.")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("NERFSTUDIO_METHOD_CONFIGS", "helixsurf=vision3d.methods.helixsurf.config:helixsurf")
    pipeline = load_run(args.run).pipeline
    model, cameras = pipeline.model, pipeline.datamanager.train_dataparser_outputs.cameras.to(pipeline.model.device)
    generator = torch.Generator().manual_seed(0)
    batches = [random_rays(cameras, args.rays, generator).to(model.device) for _ in range(args.iterations)]
    views = torch.linspace(0, len(cameras) - 1, args.views).round().long().tolist()
    one_pass = model.config.num_samples
    variants = {  # name: (use_occupancy_grid, quantity, threshold, early_stop_transmittance, slope factor, segment)
        "off (plain)": (False, "opacity", 1e-3, 0.0, 1.5, 8),
        "density grid (official, 0.01)": (True, "density", 0.01, 0.0, 0.0, 8),
        "opacity grid (1e-3)": (True, "opacity", 1e-3, 0.0, 1.5, 8),
        "opacity grid + termination (1e-3), old bound L = 1, one pass": (True, "opacity", 1e-3, 1e-3, 0.0, one_pass),
        "opacity grid + termination (1e-3), old bound L = 1": (True, "opacity", 1e-3, 1e-3, 0.0, 8),
        "opacity grid + termination (1e-3), default (L >= measured slope, marched)": (True, "opacity", 1e-3, 1e-3, 1.0, 8),
        "opacity grid + termination (1e-3), L >= 1.5 x measured slope": (True, "opacity", 1e-3, 1e-3, 1.5, 8),
        "density grid (0.01) + termination (1e-3)": (True, "density", 0.01, 1e-3, 1.5, 8),
    }
    model.train()
    training_iteration(model, batches[0])  # warm-up (allocations), untimed
    best = {name: {"train": float("inf"), "render": float("inf")} for name in variants}
    kept, renders, occupied = {}, {}, {}
    for _ in range(args.repeats):
        for name, (grid, quantity, threshold, early_stop, slope_factor, segment) in variants.items():
            model.config.use_occupancy_grid, model.config.early_stop_transmittance = grid, early_stop
            model.config.early_stop_segment = segment
            model.occupancy.quantity, model.occupancy.threshold = quantity, threshold
            model.occupancy.lipschitz, model.occupancy.slope_factor = 1.0, slope_factor
            model.occupancy.value.fill_(float("inf"))
            occupied[name] = model.update_occupancy() if grid else 1.0
            model.train()
            start = time.perf_counter()
            kept[name] = sum(training_iteration(model, rays) for rays in batches) / len(batches)
            best[name]["train"] = min(best[name]["train"], (time.perf_counter() - start) / len(batches))
            model.eval()
            start = time.perf_counter()
            with torch.no_grad():
                renders[name] = [model.get_outputs_for_camera(cameras[i : i + 1]) for i in views]
            best[name]["render"] = min(best[name]["render"], (time.perf_counter() - start) / len(views))
    plain = next(iter(variants))
    print(f"run {args.run}: grid {model.occupancy.resolution}^3, NeuS s = {float(model.field.sharpness.inv_s()):.1f}, "
          f"{args.rays} rays x {model.config.num_samples} samples, {len(views)} view(s) rendered")
    print("\n| variant | cells occupied | samples evaluated | training iteration s | speed-up | render of one view s "
          "| speed-up | median rel. depth diff | mean colour diff | max colour diff |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name in variants:
        depth = torch.cat([(a["depth"] - b["depth"]).abs().flatten() / b["depth"].flatten().clamp_min(1e-6)
                           for a, b in zip(renders[name], renders[plain], strict=True)])
        colour = torch.cat([(a["rgb"] - b["rgb"]).abs().flatten() for a, b in zip(renders[name], renders[plain], strict=True)])
        print(f"| {name} | {occupied[name]:.1%} | {kept[name]:.1%} | {best[name]['train']:.3f} | "
              f"{best[plain]['train'] / best[name]['train']:.2f}x | {best[name]['render']:.2f} | "
              f"{best[plain]['render'] / best[name]['render']:.2f}x | {float(depth.median()):.4f} | "
              f"{float(colour.mean()):.4f} | {float(colour.max()):.4f} |")

if __name__ == "__main__":
    main()

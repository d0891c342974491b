"""Where a HelixSurf training step's milliseconds go, grid on against grid off, interleaved in one process.

Loads a trained run, sets NeuS's s and the step (which fixes the active hash-grid levels and the cos anneal),
refreshes the occupancy grid at that state, and then takes ``--iterations`` training steps of each variant in
turn (``--variants``: on, off, on, off, …, so all see the same machine load). A step is the trainer's:
``zero_grad``, the datamanager's batch, forward, metrics and losses, backward, Adam (learning rate 0, so the
weights stay the ones loaded and every variant computes on the same model), with this checkout's optimiser and
hash-grid gradient mode. MVS and plane targets are random stand-ins of the real shapes (the losses' cost, not
their values, matters here).

Timing: wrappers around the model's parts record exclusive wall time per call path (``forward/termination
pass/sdf``: the SDF evaluated inside the gradient-free pass), so the parts add up to the step. Backward is
split into the hash grid's kernel and the rest.

    nice -n 15 python benchmarks/helixsurf_step_profile.py RUN_DIR --state 120:50 --state 700:200 --iterations 20 \\
        --variants grid-on no-sample-bound:sample_opacity_threshold=0 grid-off:use_occupancy_grid=False
"""

from __future__ import annotations

import argparse
import ast
import functools
import math
import os
import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from nerfstudio.engine.optimizers import Optimizers

from vision3d.export.from_run import load_run
from vision3d.fields import hash_grid_numba
from vision3d.methods.helixsurf import helix
from vision3d.methods.helixsurf.config import helixsurf_trainer_config
from vision3d.methods.helixsurf.model import HelixSurfModelConfig


class PathTimer:
    """Exclusive wall seconds per call path (names joined by '/'), summed over calls."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.stack: list[list] = []  # [name, start, children's seconds]

    def wrap(self, name: str, fn):  # noqa: ANN001, ANN201
        @functools.wraps(fn)
        def timed(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202
            with self.part(name):
                return fn(*args, **kwargs)
        return timed

    @contextmanager
    def part(self, name: str) -> Iterator[None]:
        """Add the ``with`` body's wall time, less its timed children's, to its call path."""
        self.stack.append([name, time.perf_counter(), 0.0])
        try:
            yield
        finally:
            frame_name, start, children = self.stack.pop()
            inclusive = time.perf_counter() - start
            path = "/".join([f[0] for f in self.stack] + [frame_name])
            self.seconds[path] += inclusive - children
            if self.stack:
                self.stack[-1][2] += inclusive


def instrument(model, timer: PathTimer) -> None:  # noqa: ANN001
    """Wrap the model's parts in ``timer`` (instance attributes shadow the methods)."""
    field = model.field
    model.sampler.forward = timer.wrap("sampler", model.sampler.forward)
    model.samples_to_evaluate = timer.wrap("termination pass", model.samples_to_evaluate)
    model.occupancy.occupied_at = timer.wrap("grid lookup", model.occupancy.occupied_at)
    field.sdf_and_features = timer.wrap("sdf", field.sdf_and_features)
    field.gradient = timer.wrap("finite differences", field.gradient)
    field.color = timer.wrap("colour MLP", field.color)
    field.grid.forward = timer.wrap("hash grid", field.grid.forward)
    backward = hash_grid_numba._HashGridFunction.backward
    hash_grid_numba._HashGridFunction.backward = staticmethod(timer.wrap("hash grid backward", backward))


def fake_targets(model, cameras) -> None:  # noqa: ANN001
    """Random MVS and plane targets of the real shapes, so that every loss term runs."""
    views, h, w = len(cameras), 48, 64
    model.training_pixels = helix.TrainingPixels.of(cameras)
    normals = [torch.nn.functional.normalize(torch.randn(views, h, w, 3), dim=-1) for _ in range(3)]
    model.targets = helix.MVSTargets(torch.rand(views, h, w) + 1, normals[0], torch.rand(views, h, w),
                                     torch.rand(views, h, w) > 0.7, torch.zeros(0, 3), torch.zeros(0))
    model.planes = {"plane_normal": normals[1], "plane_mask": torch.rand(views, h, w) > 0.5,
                    "manhattan_normal": normals[2], "manhattan_mask": torch.rand(views, h, w) > 0.9}


def parse_variant(spec: str) -> dict:
    """``NAME:field=value,field=value`` -> {field: value} (values as Python literals); the grid's default is on."""
    overrides = {"use_occupancy_grid": True}
    if ":" in spec:
        for item in spec.split(":", 1)[1].split(","):
            key, value = item.split("=")
            overrides[key] = ast.literal_eval(value)
    return overrides


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run", type=Path, help="A helixsurf run folder (config.yml and nerfstudio_models/).")
    parser.add_argument("--state", action="append", default=None, metavar="STEP:S",
                        help="Training step (active levels, anneal) and NeuS s to profile at (repeatable).")
    parser.add_argument("--iterations", type=int, default=20, help="Timed steps per variant and state.")
    parser.add_argument("--rays", type=int, default=512)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--variants", nargs="+", default=["grid-on", "grid-off:use_occupancy_grid=False"],
                        help="NAME[:FIELD=VALUE,...] model-config overrides per variant; the last is the ratios' baseline.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    os.environ.setdefault("NERFSTUDIO_METHOD_CONFIGS", "helixsurf=vision3d.methods.helixsurf.config:helixsurf")
    loaded = load_run(args.run)  # inference mode: no training batches; build the pipeline again for training
    config = loaded.config
    config.pipeline.datamanager.train_num_rays_per_batch = args.rays
    pipeline = config.pipeline.setup(device="cpu", test_mode="val")
    pipeline.model.load_state_dict(loaded.pipeline.model.state_dict())
    model, datamanager = pipeline.model, pipeline.datamanager
    fake_targets(model, datamanager.train_dataparser_outputs.cameras)
    # this checkout's optimiser and hash-grid gradient mode, whatever the run was trained with
    model.field.grid.config.grad_mode = HelixSurfModelConfig().sdf.grid.grad_mode
    optimizers = Optimizers(helixsurf_trainer_config().optimizers, pipeline.get_param_groups())
    for optimizer in optimizers.optimizers.values():
        for group in optimizer.param_groups:
            group["lr"] = 0.0
    timer = PathTimer()
    instrument(model, timer)
    model.train()

    def step(iteration: int) -> float:
        with timer.part("zero_grad"):
            optimizers.zero_grad_all()
        with timer.part("batch (datamanager)"):
            rays, batch = datamanager.next_train(iteration)
        with timer.part("forward"):
            outputs = model(rays)
        with timer.part("losses and metrics"):
            metrics = model.get_metrics_dict(outputs, batch)
            loss = sum(model.get_loss_dict(outputs, batch, metrics).values())
        with timer.part("backward"):
            loss.backward()
        with timer.part("Adam"):
            optimizers.optimizer_step_all()
        return float(outputs["occupied_fraction"].mean())

    variants = {name.split(":")[0]: parse_variant(name) for name in args.variants}
    defaults = {key: getattr(model.config, key) for overrides in variants.values() for key in overrides}
    for state in args.state or ["120:50", "700:200"]:
        step_index, s = (float(v) for v in state.split(":"))
        model.step = int(step_index)
        model.field.set_step(model.step)
        with torch.no_grad():
            model.field.sharpness.value.fill_(math.log(s) / 10.0)
        model.occupancy.value.fill_(float("inf"))
        occupied = model.update_occupancy()
        totals, kept = defaultdict(list), defaultdict(list)
        tables = {name: defaultdict(float) for name in variants}
        for i in range(-1, args.iterations):  # iteration -1: warm-up, untimed
            for name, overrides in variants.items():
                for key, value in {**defaults, **overrides}.items():
                    setattr(model.config, key, value)
                timer.seconds.clear()
                start = time.perf_counter()
                fraction = step(max(i, 0))
                if i >= 0:
                    totals[name].append(time.perf_counter() - start)
                    kept[name].append(fraction)
                    for path, seconds in timer.seconds.items():
                        tables[name][path] += seconds / args.iterations
        print(f"\nstate: step {model.step} ({model.field.active_levels} active levels), s = "
              f"{float(model.field.sharpness.inv_s()):.0f}, fresh grid {occupied:.1%} of cells occupied; "
              f"{args.rays} rays x {model.config.num_samples} samples; {args.iterations} steps per variant, interleaved")
        names = list(variants)
        median = {name: sorted(totals[name])[len(totals[name]) // 2] for name in names}
        print("\n| part (exclusive ms per step, mean) | " + " | ".join(names) + " |")
        print("|---|" + "---|" * len(names))
        paths = sorted(set().union(*tables.values()), key=lambda p: -max(t.get(p, 0.0) for t in tables.values()))
        for path in paths:
            print(f"| {path} | " + " | ".join(f"{tables[n].get(path, 0.0) * 1e3:.1f}" for n in names) + " |")
        print("| **sum** | " + " | ".join(f"{sum(tables[n].values()) * 1e3:.1f}" for n in names) + " |")
        print("| median step ms | " + " | ".join(f"{median[n] * 1e3:.1f}" for n in names) + " |")
        print(f"| {names[-1]} / variant (median) | " + " | ".join(f"{median[names[-1]] / median[n]:.2f}x" for n in names) + " |")
        print("| samples evaluated | " + " | ".join(f"{sum(kept[n]) / len(kept[n]):.1%}" for n in names) + " |")

if __name__ == "__main__":
    main()

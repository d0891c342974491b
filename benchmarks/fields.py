"""Training rays/s and held-out PSNR at equal time: ``vision3d-nerfacto`` vs nerfstudio's ``nerfacto`` (torch), CPU.

    nice -n 10 .venv/bin/python benchmarks/fields.py [--rays 4096] [--steps 3] [--budget 300] [--threads 1]

Both methods are measured in the same run, on the same scene (the bundled armadillo unless ``--data``),
with the same ``vision3d-data`` split, the same single-process ``VanillaDataManager`` and batch size, and
the same number of torch / Numba threads. nerfstudio's is its ``nerfacto`` method config with
``--pipeline.model.implementation torch`` and its defaults otherwise (256/96/48 samples per ray, the
same optimisers); nerfacto's ``ParallelDataManager`` is swapped for the single-process one that ours uses,
so that a sampling worker does not compete with training for the cores.

nerfstudio's nerfacto builds LPIPS at init, whose AlexNet download crashes offline; here it is built with
torchmetrics' ``LearnedPerceptualImagePatchSimilarity`` replaced by an empty module during ``setup`` (LPIPS
is only an evaluation metric; the held-out PSNR below comes from :mod:`vision3d.metrics` for both).

Rays/s: ``--steps`` timed training iterations (forward, backward, optimiser step, nerfacto's training
callbacks) after ``--warmup`` untimed ones (Numba compilation), alternating between the methods each
round so that both see the same load on a shared machine. Wall and process-CPU time are both printed:
``cpu / threads`` is the better estimate of the time on idle cores. PSNR: fresh models trained for
``--budget`` seconds of process CPU time each (on a shared machine wall time mostly measures the other
jobs; with idle cores and one thread the two agree), then rendered on the held-out views.
"""

from __future__ import annotations

import argparse
import copy
import datetime
import os
import tempfile
import time
from pathlib import Path
from unittest import mock

import numba
import torch
from nerfstudio.configs.method_configs import method_configs
from nerfstudio.data.datamanagers.base_datamanager import VanillaDataManagerConfig
from nerfstudio.engine.callbacks import TrainingCallbackLocation
from provenance import git_commit  # this folder is on sys.path when a benchmark runs as a script

from vision3d.data.bundled import bundled_scene_path
from vision3d.data.dataparser import Vision3DDataParserConfig
from vision3d.methods import run
from vision3d.methods.nerfacto.config import nerfacto_trainer_config


class _NoLPIPS(torch.nn.Module):
    """Stands in for torchmetrics' LPIPS while nerfstudio's nerfacto is built (no AlexNet download)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__()


def nerfstudio_nerfacto_config(rays: int):
    config = copy.deepcopy(method_configs["nerfacto"])
    config.pipeline.model.implementation = "torch"
    config.pipeline.datamanager = VanillaDataManagerConfig(
        dataparser=Vision3DDataParserConfig(), train_num_rays_per_batch=rays, eval_num_rays_per_batch=rays
    )
    return config


def ours_config(rays: int):
    config = nerfacto_trainer_config()
    config.pipeline.datamanager.train_num_rays_per_batch = rays
    return config


def build(name: str, config, data: Path, out: Path, max_steps: int):
    config = run.configure(config, data, out / name, max_steps=max_steps, experiment_name=name)
    config.machine.device_type = "cpu"
    with mock.patch("torchmetrics.image.lpip.LearnedPerceptualImagePatchSimilarity", _NoLPIPS):
        trainer = config.setup(local_rank=0, world_size=1)
        trainer.setup()
    trainer.pipeline.train()
    return trainer


def train_step(trainer, step: int) -> None:
    """One training iteration as nerfstudio's ``Trainer.train`` runs it (callbacks, forward, backward, step)."""
    for callback in trainer.callbacks:
        callback.run_callback_at_location(step, location=TrainingCallbackLocation.BEFORE_TRAIN_ITERATION)
    trainer.train_iteration(step)
    for callback in trainer.callbacks:
        callback.run_callback_at_location(step, location=TrainingCallbackLocation.AFTER_TRAIN_ITERATION)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data", type=Path, default=None, help="nerfstudio scene (default: the bundled armadillo)")
    parser.add_argument("--rays", type=int, default=4096, help="rays per batch (nerfacto's default 4096)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per method and round")
    parser.add_argument("--rounds", type=int, default=2, help="alternations between the methods")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--budget", type=float, default=300.0, help="CPU seconds of training for the PSNR comparison (0: skip)")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    data = args.data or bundled_scene_path()
    out = Path(tempfile.mkdtemp(prefix="v3d-bench-fields-"))
    commit = git_commit()
    print(f"# benchmarks/fields.py --rays {args.rays} --steps {args.steps} --rounds {args.rounds} --budget {args.budget:g} "
          f"--threads {args.threads}; {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC; commit {commit}; "
          f"scene {data.name}; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores", flush=True)

    methods = {"nerfstudio nerfacto (torch)": nerfstudio_nerfacto_config, "vision3d-nerfacto": ours_config}
    max_steps = args.warmup + args.steps * args.rounds
    trainers = {name: build(name.split()[0], make(args.rays), data, out, max_steps) for name, make in methods.items()}
    wall = dict.fromkeys(methods, 0.0)
    cpu = dict.fromkeys(methods, 0.0)
    for trainer in trainers.values():
        for step in range(args.warmup):
            train_step(trainer, step)
    for round_ in range(args.rounds):
        for name, trainer in trainers.items():
            t0, c0 = time.perf_counter(), time.process_time()
            for i in range(args.steps):
                train_step(trainer, args.warmup + round_ * args.steps + i)
            wall[name] += time.perf_counter() - t0
            cpu[name] += time.process_time() - c0
            print(f"  round {round_}: {name}: {(time.perf_counter() - t0) / args.steps:.2f} s/step", flush=True)
    del trainers

    n_rays = args.rays * args.steps * args.rounds
    base = next(iter(methods))
    print("\n| method | rays/s (wall) | rays/s (cpu / threads) | × nerfstudio (wall) | × nerfstudio (cpu) |")
    print("|---|---|---|---|---|")
    for name in methods:
        rw, rc = n_rays / wall[name], n_rays * args.threads / cpu[name]
        print(f"| {name} | {rw:.0f} | {rc:.0f} | {wall[base] / wall[name]:.1f} | {cpu[base] / cpu[name]:.1f} |", flush=True)

    if args.budget <= 0:
        return
    print(f"\n| method | steps in {args.budget:g} CPU s | held-out PSNR (dB) | SSIM |")
    print("|---|---|---|---|")
    for name, make in methods.items():
        trainer = build(name.split()[0] + "-psnr", make(args.rays), data, out, max_steps=10**6)
        start, step = time.process_time(), 0
        while time.process_time() - start < args.budget:
            train_step(trainer, step)
            step += 1
        scores = run.mean_metrics(run.evaluate(trainer, depth_gt=False))
        print(f"| {name} | {step} | {scores['psnr']:.2f} | {scores['ssim']:.3f} |", flush=True)
        del trainer


if __name__ == "__main__":
    main()

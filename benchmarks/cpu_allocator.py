"""CPU training steps with glibc's malloc as it is, and with freed memory kept for reuse (:mod:`vision3d.allocator`).

Each row trains one method on the bundled scene for ``--steps`` steps in a fresh process, once with
``VISION3D_MALLOC=system`` (glibc returns large freed blocks to the OS, so every step faults their pages in again)
and once as our trainer runs on CPU (freed memory kept), and prints per step after ``--warm-up`` steps: the
median wall seconds, kernel (sys) seconds, minor page faults, and the process's peak RSS. helixsurf and ir-nerf
run their ``cpu`` presets, their schedules scaled to the steps; the splat methods run the demo's settings.
Children get v3d's OpenMP spin (``GOMP_SPINCOUNT=3000``) unless it is set. Run it on an otherwise idle machine.

    python benchmarks/cpu_allocator.py                           # all methods, ~10 min on 2 cores
    python benchmarks/cpu_allocator.py --methods ir-nerf --steps 60
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import git_commit  # this folder is on sys.path when a benchmark runs as a script

from vision3d.allocator import OPT_OUT, without_malloc_settings
from vision3d.openmp import SPIN_COUNT

METHODS = {"vision3d-splat": 200, "det-gs": 200, "vision3d-nerfacto": 100, "helixsurf": 60, "ir-nerf": 60}
"""Each method and its default number of steps."""
SETTINGS = {"glibc as it is": {OPT_OUT: "system"}, "freed memory kept": {}}


def measure(method: str, steps: int, warm_up: int) -> dict[str, float]:
    """In this process: train ``method`` for ``steps`` and measure the steps after ``warm_up`` (see the docstring)."""
    from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

    from vision3d.demo import demo_config
    from vision3d.methods import run
    from vision3d.methods.presets import apply_preset, presets_dir

    records: list[tuple[float, float, int]] = []

    def record(step: int) -> None:
        usage = resource.getrusage(resource.RUSAGE_SELF)
        records.append((time.perf_counter(), usage.ru_stime, usage.ru_minflt))

    with tempfile.TemporaryDirectory() as out:
        config = demo_config(method, steps, Path(out), train_views=8 if method == "det-gs" else None)
        preset = presets_dir() / method / "cpu.yaml"
        if preset.is_file():
            config = apply_preset(config, preset)
            config = run.configure(config, config.pipeline.datamanager.data, Path(out), max_steps=steps)
            for owner in (config.pipeline.model, getattr(config.pipeline.model, "ir_nerf", None)):
                if hasattr(owner, "max_steps"):  # schedules in steps (helixsurf's; ir-nerf's are fractions of it)
                    owner.max_steps = steps
        callback = TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], record)
        run.train(config, callbacks=lambda trainer: [callback])
    measured = records[warm_up:]
    seconds = [b[0] - a[0] for a, b in zip(measured[:-1], measured[1:], strict=True)]
    n = len(measured) - 1
    return {"seconds": statistics.median(seconds), "sys": (measured[-1][1] - measured[0][1]) / n,
            "faults": (measured[-1][2] - measured[0][2]) / n,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def measure_in_child(method: str, steps: int, warm_up: int, setting: dict[str, str]) -> dict[str, float]:
    environment = without_malloc_settings(os.environ)
    environment.setdefault("GOMP_SPINCOUNT", SPIN_COUNT)  # as v3d runs (vision3d.openmp)
    result = subprocess.run([sys.executable, __file__, "--child", method, "--steps", str(steps), "--warm-up",
                             str(warm_up)], env={**environment, **setting}, capture_output=True, text=True)
    if result.returncode:
        raise SystemExit(f"{method} failed:\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    parser.add_argument("--steps", type=int, default=None, help="steps per run (default: the method's, see METHODS)")
    parser.add_argument("--warm-up", type=int, default=10, help="steps left out of the measurement")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        import torch

        torch.set_num_threads(os.cpu_count() or 1)
        print(json.dumps(measure(args.child, args.steps, args.warm_up)))
        return
    commit = git_commit()
    print(f"commit {commit} | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | {os.cpu_count()} cores | "
          f"bundled scene | per step after {args.warm_up} warm-up steps")
    print("| method | steps | malloc | s/step (median) | sys s/step | minor faults/step | peak RSS MiB | speed-up |")
    print("|---|---:|---|---:|---:|---:|---:|---:|")
    for method in args.methods:
        steps = args.steps or METHODS[method]
        rows = {name: measure_in_child(method, steps, args.warm_up, env) for name, env in SETTINGS.items()}
        base = rows["glibc as it is"]["seconds"]
        for name, row in rows.items():
            print(f"| {method} | {steps} | {name} | {row['seconds']:.3f} | {row['sys']:.3f} | {row['faults']:.0f} | "
                  f"{row['peak_rss_mib']:.0f} | {base / row['seconds']:.2f}× |", flush=True)


if __name__ == "__main__":
    main()

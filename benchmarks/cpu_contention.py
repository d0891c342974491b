"""CPU training beside other work: the det-gs demo alone and beside busy processes, per OpenMP spin setting.

Runs ``v3d demo --method det-gs --steps STEPS`` (base splats, then det-gs, on 8 views of the bundled scene) in a
fresh process per row, alone and while ``--competitors`` pure-Python busy loops hold cores, and prints each
variant's training seconds (the range over ``--repeats`` runs) and the slowdown of the medians beside the busy
loops. Settings: libgomp's default spin
(``GOMP_SPINCOUNT=300000``, what ``ns-train`` gets unless told otherwise), ours (``GOMP_SPINCOUNT=3000``, what
``v3d`` sets: :mod:`vision3d.openmp`) and no spinning (``OMP_WAIT_POLICY=PASSIVE``).

    python benchmarks/cpu_contention.py                    # 200 steps, one busy process, ~9 min on 2 cores
    python benchmarks/cpu_contention.py --repeats 2
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from provenance import git_commit  # this folder is on sys.path when a benchmark runs as a script

from vision3d.openmp import without_spin_settings

SETTINGS = {
    "libgomp default (GOMP_SPINCOUNT=300000)": {"GOMP_SPINCOUNT": "300000"},
    "v3d's (GOMP_SPINCOUNT=3000)": {"GOMP_SPINCOUNT": "3000"},
    "no spinning (OMP_WAIT_POLICY=PASSIVE)": {"OMP_WAIT_POLICY": "PASSIVE"},
}


def demo_seconds(env: dict[str, str], steps: int, competitors: int) -> tuple[float, float]:
    """Training seconds of base and det-gs in one demo run, with ``competitors`` busy loops running meanwhile."""
    busy = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(competitors)]
    try:
        with tempfile.TemporaryDirectory() as out:
            subprocess.run([sys.executable, "-m", "vision3d.cli", "demo", "--method", "det-gs", "--steps", str(steps),
                            "--output", out], env={**without_spin_settings(os.environ), **env}, check=True,
                           capture_output=True)
            metrics = json.loads((Path(out) / "metrics.json").read_text())
    finally:
        for process in busy:
            process.kill()
            process.wait()
    return metrics["base"]["train_seconds"], metrics["det-gs"]["train_seconds"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=200, help="training steps of each demo variant")
    parser.add_argument("--competitors", type=int, default=1, help="busy processes beside the contended runs")
    parser.add_argument("--repeats", type=int, default=1, help="runs of each setting and condition")
    args = parser.parse_args()
    commit = git_commit()
    print(f"commit {commit} | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | {os.cpu_count()} cores | "
          f"det-gs demo, {args.steps} steps a variant | {args.competitors} busy process(es) beside | "
          f"{args.repeats} run(s) each")
    print("| setting | base alone s | base beside s | slowdown | det-gs alone s | det-gs beside s | slowdown |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, env in SETTINGS.items():
        alone = [demo_seconds(env, args.steps, 0) for _ in range(args.repeats)]
        beside = [demo_seconds(env, args.steps, args.competitors) for _ in range(args.repeats)]
        cells = []
        for variant in (0, 1):
            a, b = [run[variant] for run in alone], [run[variant] for run in beside]
            cells += [span(a), span(b), f"{statistics.median(b) / statistics.median(a):.1f}×"]
        print(f"| {name} | " + " | ".join(cells) + " |", flush=True)


def span(values: list[float]) -> str:
    return f"{min(values):.1f}" if min(values) == max(values) else f"{min(values):.1f}–{max(values):.1f}"


if __name__ == "__main__":
    main()

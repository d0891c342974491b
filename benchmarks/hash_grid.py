"""CPU hash-grid speed: our HashGrid (Numba kernels) vs nerfstudio's torch HashEncoding, same run.

    .venv/bin/python benchmarks/hash_grid.py [--sizes 16384 65536 262144] [--repeats 3] [--threads 2] [--xgrad]

Equal configuration: 16 levels, F = 2, T = 2^19, base resolution 16, per-level scale 2^(7/15)
(nerfacto's 16 → 2048). nerfstudio hashes every level (a 64 MB table); ours, as tinycudann, indexes the
5 coarse levels densely (49 MB). x is uniform in [0, 1]³ and dL/dy is a fixed random tensor.

- forward: under ``torch.no_grad()``.
- forward+backward: ``y = enc(x); y.backward(g)``, including the table gradient's reset. nerfstudio
  runs as nerfstudio trains (``.grad = None``, a fresh gradient each step); ours runs as our trainers
  do (``grad_mode="inplace"``, ``.grad.zero_()`` on the kept buffer), and once more with
  ``grad_mode="autograd"`` and ``.grad = None`` for comparison.
- ``--xgrad``: x.requires_grad as well (e.g. a camera optimiser).
Each timing is the median over ``--repeats`` rounds after a warm-up; the implementations alternate within
a round so that changes in machine load hit all of them. Wall clock, ms; points/s = N / time.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numba
import torch
from provenance import git_commit  # this folder is on sys.path when a benchmark runs as a script

from vision3d.fields import HashGrid, grid_config

LEVELS, FEATURES, LOG2_T, BASE, MAX_RES = 16, 2, 19, 16, 2048


def nerfstudio_encoding() -> torch.nn.Module:
    from nerfstudio.field_components.encodings import HashEncoding  # noqa: PLC0415

    return HashEncoding(
        num_levels=LEVELS, min_res=BASE, max_res=MAX_RES, log2_hashmap_size=LOG2_T, features_per_level=FEATURES,
        implementation="torch",
    )


def ours(grad_mode: str) -> HashGrid:
    return HashGrid(grid_config(LEVELS, BASE, MAX_RES, LOG2_T, FEATURES, grad_mode))


def step_functions(encoder: torch.nn.Module, x: torch.Tensor, grad: torch.Tensor, inplace: bool):
    """(forward, forward+backward) closures for one encoder."""
    table = next(encoder.parameters())

    def forward() -> None:
        with torch.no_grad():
            encoder(x)

    def forward_backward() -> None:
        if inplace and table.grad is not None:
            table.grad.zero_()
        else:
            table.grad = None
        if x.grad is not None:
            x.grad = None
        encoder(x).backward(grad)

    return forward, forward_backward


def timed(fn: Callable[[], None]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[16_384, 65_536, 262_144])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--xgrad", action="store_true", help="positions require grad too")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    numba.set_num_threads(min(args.threads, numba.config.NUMBA_NUM_THREADS))
    commit = git_commit()
    print(f"commit {commit} | {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} | torch threads "
          f"{args.threads} | load average at start {os.getloadavg()[0]:.1f} | x.requires_grad={args.xgrad}")
    encoders = {
        "nerfstudio torch": (nerfstudio_encoding(), False),
        "ours inplace": (ours("inplace"), True),
        "ours autograd": (ours("autograd"), False),
    }
    rows = []
    for n in args.sizes:
        gen = torch.Generator().manual_seed(n)
        x = torch.rand(n, 3, generator=gen).requires_grad_(args.xgrad)
        grad = torch.randn(n, LEVELS * FEATURES, generator=gen)
        steps = {name: step_functions(enc, x, grad, inplace) for name, (enc, inplace) in encoders.items()}
        for forward, forward_backward in steps.values():  # warm-up (and Numba compilation)
            forward()
            forward_backward()
        times: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in steps}
        for _ in range(args.repeats):
            for name, (forward, forward_backward) in steps.items():
                times[name][0].append(timed(forward))
                times[name][1].append(timed(forward_backward))
        base_f, base_fb = (statistics.median(t) for t in times["nerfstudio torch"])
        for name, (tf, tfb) in times.items():
            f, fb = statistics.median(tf), statistics.median(tfb)
            rows.append((n, name, f, fb, base_f / f, base_fb / fb, min(tfb), max(tfb)))
    print(f"numba threading layer {numba.threading_layer()}, {numba.get_num_threads()} threads | "
          f"load average at end {os.getloadavg()[0]:.1f}")
    print("\n| N | implementation | fwd ms | fwd+bwd ms | fwd Mpt/s | fwd+bwd Mpt/s | speed-up fwd | speed-up fwd+bwd "
          "| fwd+bwd range ms |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|---|")
    for n, name, f, fb, sf, sfb, lo, hi in rows:
        print(f"| {n:,} | {name} | {1e3 * f:.1f} | {1e3 * fb:.1f} | {n / f / 1e6:.3f} | {n / fb / 1e6:.3f} | "
              f"{sf:.1f}× | {sfb:.1f}× | {1e3 * lo:.0f}–{1e3 * hi:.0f} |")


if __name__ == "__main__":
    main()

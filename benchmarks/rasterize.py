"""CPU rasterizer speed: Numba kernels vs the chunked plain-torch reference, per image.

    .venv/bin/python benchmarks/rasterize.py [--quick] [--threads 2]

Scene: N random Gaussians uniformly inside the view frustum at depth 2–4, scales
U(0.01, 0.09), random rotations, opacities U(0, 1), RGB colours; one pinhole camera with
focal length = image width (≈53° field of view). Each timing is the full
``rasterize_gaussians`` call (projection, binning, compositing; splatfacto's settings:
``packed=False``, ``absgrad=True``), forward alone and forward + backward to every
Gaussian parameter, median over repetitions after a warm-up call (which also triggers
Numba compilation). The torch reference is skipped where its predicted time exceeds the
budget; the table says so. OpenSplat's CPU rasterizer (libtorch, 2 threads) figures are
the published ones quoted in our issue, not measured here.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

import numba
import torch

from vision3d.render import rasterize_gaussians

SIZES = (64, 128, 256)
COUNTS = (5_000, 20_000, 50_000)
# OpenSplat CPU rasterizer, 2 threads, ms per image: (forward, forward+backward)
OPENSPLAT = {(128, 20_000): (38.0, 68.0), (256, 50_000): (172.0, 285.0)}


def make_scene(n: int, size: int, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    f = float(size)
    z = torch.rand(n, generator=g) * 2 + 2
    xy = (torch.rand(n, 2, generator=g) - 0.5) * z[:, None] * (size / f)
    means = torch.cat([xy, z[:, None]], dim=1)
    quats = torch.randn(n, 4, generator=g)
    scales = torch.rand(n, 3, generator=g) * 0.08 + 0.01
    opacities = torch.rand(n, generator=g)
    colors = torch.rand(n, 3, generator=g)
    viewmats = torch.eye(4)[None]
    Ks = torch.tensor([[f, 0, size / 2], [0, f, size / 2], [0, 0, 1]])[None]
    return (means, quats, scales, opacities, colors), viewmats, Ks


def time_backend(backend: str, size: int, n: int, reps: int) -> tuple[float, float, int]:
    """Median ms of forward and of forward+backward; also the number of tile intersections."""
    params, viewmats, Ks = make_scene(n, size)
    params = [p.requires_grad_(True) for p in params]

    def forward():
        return rasterize_gaussians(*params, viewmats, Ks, size, size, packed=False, absgrad=True,
                                   backend=backend)  # fmt: skip

    def forward_backward():
        colors, alphas, info = forward()
        info["means2d"].retain_grad()
        (colors.sum() + alphas.sum()).backward()
        for p in params:
            p.grad = None
        return info

    info = forward_backward()  # warm-up (and Numba compile / cache load)
    fwd, fwdbwd = [], []
    for _ in range(reps):
        t0 = time.perf_counter()
        with torch.no_grad():
            forward()
        t1 = time.perf_counter()
        forward_backward()
        t2 = time.perf_counter()
        fwd.append((t1 - t0) * 1e3)
        fwdbwd.append((t2 - t1) * 1e3)
    return statistics.median(fwd), statistics.median(fwdbwd), int(info["flatten_ids"].numel())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--torch-budget-s", type=float, default=12.0,
                    help="skip the torch reference where one forward+backward is predicted to take longer")  # fmt: skip
    ap.add_argument("--quick", action="store_true", help="64² and 128² only")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    numba.set_num_threads(args.threads)
    print(f"threads={args.threads} (torch and numba), numba threading layer: ", end="")
    load = os.getloadavg()
    sizes = SIZES[:2] if args.quick else SIZES

    rows = []
    torch_ns_per_isect = None  # calibrated on the first config, used to predict the rest
    for size in sizes:
        for n in COUNTS:
            nb_f, nb_fb, n_isects = time_backend("numba", size, n, args.reps)
            if rows == []:
                print(numba.threading_layer(), f"| load average at start {load[0]:.1f}")
            predicted = None if torch_ns_per_isect is None else torch_ns_per_isect * n_isects * 1e-9
            if predicted is not None and predicted > args.torch_budget_s:
                th_f = th_fb = None
                note = f"torch skipped (predicted {predicted:.0f} s per fwd+bwd)"
            else:
                th_f, th_fb, _ = time_backend("torch", size, n, reps=1 if n_isects > 50_000 else 2)
                torch_ns_per_isect = max(torch_ns_per_isect or 0.0, th_fb * 1e6 / max(n_isects, 1))
                note = ""
            rows.append((size, n, n_isects, nb_f, nb_fb, th_f, th_fb, OPENSPLAT.get((size, n)), note))

    head = (f"{'image':>7} {'N':>6} {'isects':>8} | {'numba fwd':>9} {'fwd+bwd':>8} | {'torch fwd':>9} "
            f"{'fwd+bwd':>8} | {'speedup':>7} {'':>7} | {'OpenSplat fwd':>13} {'fwd+bwd':>8} | {'vs OS':>6} {'':>6}")  # fmt: skip
    print(head)
    print(f"{'':>7} {'':>6} {'':>8} | {'ms':>9} {'ms':>8} | {'ms':>9} {'ms':>8} | {'fwd':>7} {'f+b':>7} | "
          f"{'ms':>13} {'ms':>8} | {'fwd':>6} {'f+b':>6}")  # fmt: skip
    print("-" * len(head))
    for size, n, n_isects, nb_f, nb_fb, th_f, th_fb, os_ms, note in rows:
        tf = f"{th_f:9.1f} {th_fb:8.1f}" if th_f is not None else f"{'-':>9} {'-':>8}"
        sp = f"{th_f / nb_f:6.1f}x {th_fb / nb_fb:6.1f}x" if th_f is not None else f"{'-':>7} {'-':>7}"
        if os_ms is not None:
            osf = f"{os_ms[0]:13.0f} {os_ms[1]:8.0f} | {os_ms[0] / nb_f:5.1f}x {os_ms[1] / nb_fb:5.1f}x"
        else:
            osf = f"{'-':>13} {'-':>8} | {'-':>6} {'-':>6}"
        print(f"{size:>4}²   {n:>6} {n_isects:>8} | {nb_f:9.1f} {nb_fb:8.1f} | {tf} | {sp} | {osf} {note}")
    print("speedup = torch reference / numba; vs OS = OpenSplat published / numba (>1 means we are faster).")
    print(f"load average at end {os.getloadavg()[0]:.1f} (the machine may be shared; timings are wall clock)")


if __name__ == "__main__":
    main()

"""CPU rasterizer vs gsplat on CUDA: outputs, gradients and timings on the same scene.

    .venv/bin/python benchmarks/rasterize_gpu_parity.py [--size 128] [--n 20000]

Prints "no GPU" and exits 0 when CUDA or gsplat's compiled kernels are unavailable.
Renders one random scene (see benchmarks/rasterize.py) with SH degree 3, RGB+ED and a
background, through ``rasterize_gaussians`` on CPU (Numba) and on CUDA (gsplat), and
reports the largest differences of colours, depth, alphas, radii and of every gradient
(relative to the gradient's largest magnitude), plus forward / forward+backward times.
"""

from __future__ import annotations

import argparse
import sys
import time

import torch

from vision3d import backends
from vision3d.render import rasterize_gaussians

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from rasterize import make_scene  # noqa: E402


def run(device: str, params, viewmats, Ks, size: int, reps: int = 5):
    params = [p.detach().to(device).requires_grad_(True) for p in params]
    viewmats, Ks = viewmats.to(device), Ks.to(device)
    bg = torch.tensor([[0.1, 0.2, 0.3]], device=device)

    def forward():
        return rasterize_gaussians(*params, viewmats, Ks, size, size, sh_degree=3, packed=False, absgrad=True,
                                   render_mode="RGB+ED", backgrounds=bg)  # fmt: skip

    def sync():
        if device == "cuda":
            torch.cuda.synchronize()

    colors, alphas, info = forward()
    info["means2d"].retain_grad()
    weights = torch.linspace(0.5, 1.5, 4, device=device)
    ((colors * weights).sum() + alphas.sum()).backward()
    out = {
        "colors": colors[..., :3].detach().cpu(),
        "depth": colors[..., 3:].detach().cpu(),
        "alphas": alphas.detach().cpu(),
        "radii": info["radii"].cpu(),
        "means2d.grad": info["means2d"].grad.cpu(),
        "means2d.absgrad": info["means2d"].absgrad.cpu(),
    }
    for name, p in zip(("means", "quats", "scales", "opacities", "sh"), params, strict=True):
        out[name + ".grad"] = p.grad.cpu()
    t_f, t_fb = [], []
    for _ in range(reps):
        sync()
        t0 = time.perf_counter()
        with torch.no_grad():
            forward()
        sync()
        t1 = time.perf_counter()
        colors, alphas, _ = forward()
        (colors.sum() + alphas.sum()).backward()
        sync()
        t_f.append(t1 - t0)
        t_fb.append(time.perf_counter() - t1)
    return out, min(t_f) * 1e3, min(t_fb) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--n", type=int, default=20_000)
    args = ap.parse_args()
    if not backends.gsplat_available():
        print("no GPU (or gsplat's CUDA kernels do not load): nothing to compare")
        return
    torch.set_num_threads(2)
    (means, quats, scales, opacities, _), viewmats, Ks = make_scene(args.n, args.size)
    sh = torch.randn(args.n, 16, 3, generator=torch.Generator().manual_seed(1)) * 0.2
    params = (means, quats, scales, opacities, sh)
    cpu, cpu_f, cpu_fb = run("cpu", params, viewmats, Ks, args.size)
    gpu, gpu_f, gpu_fb = run("cuda", params, viewmats, Ks, args.size)
    print(f"{args.size}² image, {args.n} Gaussians, SH degree 3, RGB+ED")
    print(f"{'quantity':<18} {'max |cpu - gpu|':>16} {'relative':>10}")
    for k in cpu:
        a, b = cpu[k].double(), gpu[k].double()
        diff = (a - b).abs().max().item()
        rel = diff / max(b.abs().max().item(), 1e-12)
        print(f"{k:<18} {diff:16.3e} {rel:10.2e}")
    print(f"radii equal: {(cpu['radii'] == gpu['radii']).float().mean().item() * 100:.2f}% of entries")
    print(f"timings ms: CPU fwd {cpu_f:.1f}, fwd+bwd {cpu_fb:.1f} | gsplat fwd {gpu_f:.2f}, fwd+bwd {gpu_fb:.2f}")


if __name__ == "__main__":
    main()

"""Why E-MoFlow misses v on the mixed rotation+translation scene: flow error, not the DEC. Prints the numbers.

    python benchmarks/emoflow_mixed.py [--size 64 48] [--window-ms 120] [--iterations 400]
        [--dec-weight 2.5] [--euler-steps 1] [--blur-sigma 0.5] [--density-over events]
        [--inits constant dec_search] [--preset cpu]

Scene: ``benchmarks/emoflow.py``'s "mixed" row (room corner 2 m ahead, v = (1.5, 0.3, 1.5) m/s,
ω = (0.5, 1, −0.5) rad/s). Steps:

1. the direction search (:func:`~vision3d.events.dec.search_egomotion`, 2000 directions) on the
   exact flow at event pixels (the simulator's instantaneous motion field at mid-window);
2. E-MoFlow's CPU preset (with the options above) fits the window; its flow at t̃ = 0.5 is compared
   with the exact flow (mean error, least-squares scale per component);
3. the same search on the *fitted* flow, and the DEC cost of the true and of the searched motion on it.

If (1) is right and the true motion costs more than the searched one in (3), the fitted flow itself is
consistent with the wrong motion. Results: docs/emoflow.md.
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from vision3d.events.dec import search_egomotion
from vision3d.events.emoflow import EMoFlowConfig, fit_window
from vision3d.events.geometry import dec_residual
from vision3d.events.simulator import corner_scene, simulate_plane_sequence
from vision3d.geometry.metrics import direction_error_deg
from vision3d.metrics import flow_metrics

V_TRUE, W_TRUE = np.array([1.5, 0.3, 1.5]), np.array([0.5, 1.0, -0.5])


def motion_error(v, w_rad_s) -> str:
    v = np.asarray(v, float)
    err = float(direction_error_deg(v[None], V_TRUE[None], up_to_sign=True)[0])
    return f"v {err:.1f}° off (up to sign), ω {np.round(w_rad_s, 2)} rad/s (true {W_TRUE})"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, nargs=2, default=(64, 48))
    ap.add_argument("--window-ms", type=float, default=120.0)
    ap.add_argument("--iterations", type=int, default=400)
    ap.add_argument("--dec-weight", type=float, default=None, help="default: the CPU preset's")
    ap.add_argument("--euler-steps", type=int, default=1)
    ap.add_argument("--blur-sigma", type=float, default=None, help="default: the CPU preset's")
    ap.add_argument("--density-over", choices=("events", "inside"), default=None,
                    help="LossConfig.iwe_density_over; default: the preset's")  # fmt: skip
    ap.add_argument("--inits", nargs="+", default=["constant", "dec_search"])
    ap.add_argument("--preset", choices=("cpu", "paper"), default="cpu",
                    help="cpu: EMoFlowConfig.cpu (4×64 MLP, --iterations); paper: the paper's MVSEC defaults "
                         "(8×256 MLP, 1000 iterations, bilinear voting, σ=1 blur; slow on CPU)")  # fmt: skip
    args = ap.parse_args()
    torch.set_num_threads(1)
    width, height = args.size
    window = args.window_ms * 1e-3
    scene = corner_scene(2.0, textures=("astronaut", "camera"), width=width, height=height)
    seq = simulate_plane_sequence(V_TRUE, W_TRUE, window, scene)
    cam = seq.camera
    xy, t, p = seq.events.to_torch()
    pix = torch.unique(xy.round().long(), dim=0).float()
    f = torch.tensor([cam.fx, cam.fy])
    motion_field = torch.from_numpy(seq.instantaneous_flow(window / 2)).float()  # px/s
    u_true = motion_field[pix[:, 1].long(), pix[:, 0].long()] * window / f  # normalised, per window
    x = cam.normalize_index(pix)
    print(f"{width}×{height}, {args.window_ms:.0f} ms, {len(seq.events)} events, {len(pix)} event pixels")
    v, w = search_egomotion(x, u_true, 2000)
    print(f"search on the exact flow: {motion_error(v, w.numpy() / window)}")
    gt = seq.flow(0.0, window)
    mask = np.zeros(gt.shape[:2], bool)
    mask[seq.events.y, seq.events.x] = True
    v_true = torch.tensor(V_TRUE / np.linalg.norm(V_TRUE)).double()
    w_true = torch.tensor(W_TRUE * window).double()
    for init in args.inits:
        cfg = EMoFlowConfig.cpu(args.iterations) if args.preset == "cpu" else EMoFlowConfig()
        cfg.spline.init = init
        cfg.schedule.euler_steps = args.euler_steps
        if args.dec_weight is not None:
            cfg.loss.dec_weight = args.dec_weight
        if args.blur_sigma is not None:
            cfg.loss.blur_sigma = args.blur_sigma
        if args.density_over is not None:
            cfg.loss.iwe_density_over = args.density_over
        res = fit_window(xy, t, cam, cfg, (0.0, window), p, keep_model=True)
        epe = flow_metrics(res.flow.numpy(), gt, mask)["epe"]
        mid = len(res.v) // 2
        print(
            f"[{init}] {res.seconds:.0f} s, window EPE {epe:.2f} px, fitted motion: {motion_error(res.v[mid], res.w[mid])}"
        )
        with torch.no_grad():
            u_fit = res.model(torch.full((len(pix),), 0.5), pix) / f
        err_px = ((u_fit - u_true) * f).norm(dim=-1).mean()
        scale = [float((u_fit[:, c] * u_true[:, c]).sum() / u_true[:, c].pow(2).sum()) for c in range(2)]
        print(f"  fitted flow at t̃=0.5: mean error {float(err_px):.2f} px of {float((u_true * f).norm(dim=-1).mean()):.1f}, "
              f"scale fitted/exact x {scale[0]:.2f}, y {scale[1]:.2f}")  # fmt: skip
        v2, w2 = search_egomotion(x, u_fit, 2000)
        print(f"  search on the fitted flow: {motion_error(v2, w2.numpy() / window)}")
        cost_true = dec_residual(x.double(), u_fit.double(), v_true, w_true).pow(2).mean()
        cost_found = dec_residual(x.double(), u_fit.double(), v2.double(), w2.double()).pow(2).mean()
        print(
            f"  DEC cost on the fitted flow: true motion {float(cost_true):.2e}, searched {float(cost_found):.2e}"
        )


if __name__ == "__main__":
    main()

"""E-MoFlow vs contrast maximization (CMax) on simulated and real events; prints measured tables.

Simulated (exact flow and motion; none of these sequences is used by the tests):
  rotation            one textured plane (skimage ``astronaut``), ω = (1.5, −2, 1) rad/s, v = 0, 60 ms
  translation         room corner 2 m ahead (walls ``astronaut`` and ``camera``), v = (3, 0.8, 2) m/s, 120 ms
  translation 60 ms   the same over 60 ms: the vertical flow is only ≈ 1.5 px there, below what contrast
                      maximization resolves on 64×48 (see docs/emoflow.md); kept to show it
  mixed               room corner, v = (1.5, 0.3, 1.5) m/s, ω = (0.5, 1, −0.5) rad/s, 120 ms
  Blender walk        a real scene: Debian's Stanford bunny in a textured room, rendered by ``v3d data render``
                      (walk path of 480 views, of which views 200-224 are rendered, 64×48, 256 spp; ~3 min
                      once, cached under outputs/benchmarks/), shown 1 ms apart (24 ms, ≈ 5.7 px flow; the
                      path is a 1.5π turn in 0.48 s, hence ‖ω‖ ≈ 7.8 rad/s), events by ESIM from the sRGB
                      images; flow from Blender's Vector pass, v and ω from the poses (v in scene units).
                      256 spp, not 16: path-tracing noise changes from view to view and at 16 spp 60 % of
                      the events were noise, so no method beat zero flow (see
                      ``simulate_rendered_sequence``). Skipped with a note when Blender is missing and
                      nothing is cached; ``--only-blender`` runs this row alone.
  64×48 sensor, 70° horizontal field of view, ESIM thresholds C = 0.2 ± 0.03. Longer windows for the
  translating scenes: MVSEC's dt=4 gives displacements of this size in pixels.
  E-MoFlow runs twice: the official constant spline start, and "+search" (``SplineConfig.init="dec_search"``).

Flow is scored as MVSEC is: displacement over the window at pixels with at least one event;
EPE (px), % of those pixels with EPE > 3 px, angular error (deg, Barron). Motion: RMS over the
window of ‖ω − ω_gt‖ (rad/s), angle between v and v_gt (deg; v's sign from positive depth, and
in brackets up to the sign of the whole vector). For comparison with the paper's motion numbers, v
also as E-MoFlow's own validation scores it (``train_on_mvsec.py``; :func:`velocity_error_as_emoflow_scores`):
the unit estimate's components take v_gt's signs and are scaled by ‖v_gt‖, RMSE over components,
and the angle between |v̂| and |v_gt| that this scoring leaves; a wrong sign in any component
costs nothing there. CMax estimates flow only.

Real recordings (../shared/data/events, no ground truth): IWE variance before/after for one
window each, and for the DAVIS346 file the estimated ω beside the IMU gyroscope over that window, the
gyro mapped into camera axes by :mod:`vision3d.events.imu` (chosen from the data: the best-correlating
signed axis permutation when the camera rotates; this recording is static, so gravity decides).
These files come without calibration: we assume a pinhole with a 70° horizontal field of view
and the principal point at the centre, and bin pixels (DAVIS ×2, DVS ×2, Prophesee EVT3 ×8).

Pictures (``--figures``, default outputs/benchmarks/emoflow/): per simulated scene and method, the IWE
before and after the warp with the fitted and the exact flow, and E-MoFlow's velocities against the truth.

CPU scale (say so when quoting): E-MoFlow's CPU preset (4×64 MLP, ``--iterations`` per window,
default 400 simulated / 250 real; the paper uses an 8×256 MLP and 1000), CMax 4×4 patches,
one torch thread. Run: ``python benchmarks/emoflow.py`` (``--quick`` for fewer iterations). Measured
tables: docs/emoflow.md.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import torch

from vision3d.events.cmax import CMaxConfig, fit_cmax
from vision3d.events.contrast import contrast_terms
from vision3d.events.emoflow import EMoFlowConfig, fit_window
from vision3d.events.imu import fit_axis_map, gravity_axis_map
from vision3d.events.io import read_events, read_imu
from vision3d.events.metrics import rms, velocity_error_as_emoflow_scores
from vision3d.events.plots import save_velocity_plot, save_window_figure
from vision3d.events.simulator import (
    Plane,
    PlaneSceneConfig,
    corner_scene,
    simulate_plane_sequence,
    simulate_rendered_sequence,
)
from vision3d.events.windows import count_windows
from vision3d.geometry.camera import PinholeCamera
from vision3d.geometry.metrics import direction_error_deg
from vision3d.metrics import flow_metrics

WINDOW_S = 0.06
LONG_WINDOW_S = 0.12
SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "events"
RENDER_DIR = Path(__file__).resolve().parents[1] / "outputs" / "benchmarks" / "emoflow_walk_bunny_64x48_v200-225_256spp"
RENDER = dict(path="walk", views=480, width=64, height=48, spp=256, view_range=(200, 225))
RENDER_FIRST, RENDER_FRAMES, RENDER_FPS = 0, 25, 1000.0  # first: index among the rendered views


def sequences():
    """(name, window seconds, sequence) of the analytic scenes."""
    plane = PlaneSceneConfig(planes=[Plane(point=(0, 0, 2.5), normal=(0, 0, -1), texture="astronaut")])
    corner = corner_scene(2.0, textures=("astronaut", "camera"))
    v_t, v_m, w_m = np.array([3.0, 0.8, 2.0]), np.array([1.5, 0.3, 1.5]), np.array([0.5, 1.0, -0.5])
    yield (
        "rotation",
        WINDOW_S,
        simulate_plane_sequence(np.zeros(3), np.array([1.5, -2.0, 1.0]), WINDOW_S, plane),
    )
    yield "translation 60 ms", WINDOW_S, simulate_plane_sequence(v_t, np.zeros(3), WINDOW_S, corner)
    yield "translation", LONG_WINDOW_S, simulate_plane_sequence(v_t, np.zeros(3), LONG_WINDOW_S, corner)
    yield "mixed", LONG_WINDOW_S, simulate_plane_sequence(v_m, w_m, LONG_WINDOW_S, corner)


def rendered_sequence():
    """The Blender walk-through (bunny in a textured room), rendered once and cached under outputs/; None if
    Blender is missing and nothing is cached."""
    from vision3d.data.render import RenderConfig, render_scene

    if not (RENDER_DIR / "transforms.json").exists() and shutil.which("blender") is None:
        print("  Blender walk-through: skipped (blender not installed and no cached render)", file=sys.stderr)
        return None
    render_scene("bunny", RENDER_DIR, RenderConfig(**RENDER), progress=False, sparse_points=0)
    seq = simulate_rendered_sequence(RENDER_DIR, RENDER_FIRST, RENDER_FRAMES, RENDER_FPS)
    print(
        f"  Blender walk: median |Δ log I| between views {seq.change_log:.3f}, {seq.residual_log:.3f} left after "
        "warping with the GT flow (render noise; threshold C = 0.2)",
        file=sys.stderr,
    )
    return "Blender walk", seq.t1_s, seq


METHODS = [("E-MoFlow", "constant"), ("E-MoFlow +search", "dec_search")]


def run_simulated(iterations: int, figures: Path, blender: bool = True, analytic: bool = True,
                  density_over: str | None = None) -> list[dict]:
    rows = []
    seqs = list(sequences()) if analytic else []
    if blender:
        r = rendered_sequence()
        if r is not None:
            seqs.append(r)
    for name, window, seq in seqs:
        xy, t, p = seq.events.to_torch()
        gt = seq.flow(0.0, window)
        mask = np.zeros(gt.shape[:2], bool)
        mask[seq.events.y, seq.events.x] = True
        stem = name.replace(" ", "_")  # of this scene's pictures
        for label, init in METHODS:
            cfg = EMoFlowConfig.cpu(iterations)
            cfg.spline.init = init
            if density_over is not None:
                cfg.loss.iwe_density_over = density_over
            res = fit_window(xy, t, seq.camera, cfg, (0.0, window), p)
            v_gt, w_gt = seq.velocities(res.times_s)
            has_v = np.linalg.norm(v_gt, axis=1).min() > 0
            em = flow_metrics(res.flow.numpy(), gt, mask)
            em.update(
                method=label,
                seq=name,
                window_ms=window * 1e3,
                events=len(seq.events),
                seconds=res.seconds,
                w_rms=rms(res.w - w_gt),
                w_norm=float(np.linalg.norm(w_gt, axis=1).mean()),
                v_err=float(direction_error_deg(res.v, v_gt).mean()) if has_v else None,
                v_err_sign=float(direction_error_deg(res.v, v_gt, up_to_sign=True).mean()) if has_v else None,
                v_paper=velocity_error_as_emoflow_scores(res.v, v_gt) if has_v else None,
                v_norm=float(np.linalg.norm(v_gt, axis=1).mean()),
            )
            rows.append(em)
            save_figures(figures / f"{stem}_{init}", res, gt, v_gt, w_gt, f"{label}, EPE {em['epe']:.2f} px", name)
        cm = fit_cmax(xy, t, seq.camera.width, seq.camera.height, CMaxConfig(), (0.0, window))
        cmm = flow_metrics(cm.flow.numpy(), gt, mask)
        save_window_figure(figures / f"{stem}_cmax.png", cm.iwe_before, cm.iwe_after, cm.flow.numpy(), gt,
                           title=f"{name}: CMax 4×4, EPE {cmm['epe']:.2f} px")  # fmt: skip
        cmm.update(
            method="CMax 4×4",
            seq=name,
            window_ms=window * 1e3,
            events=len(seq.events),
            seconds=cm.seconds,
            w_rms=None,
            w_norm=None,
            v_err=None,
            v_err_sign=None,
        )
        rows.append(cmm)
        zero = flow_metrics(np.zeros_like(gt), gt, mask)
        zero.update(
            method="zero flow",
            seq=name,
            window_ms=window * 1e3,
            events=len(seq.events),
            seconds=0.0,
            w_rms=None,
            w_norm=None,
            v_err=None,
            v_err_sign=None,
        )
        rows.append(zero)
        print(f"  {name}: done", file=sys.stderr, flush=True)
    return rows


def save_figures(stem: Path, res, gt, v_gt, w_gt, label: str, name: str) -> None:
    """IWE before/after with fitted and exact flow, and the velocities over the window against the truth."""
    save_window_figure(f"{stem}.png", res.iwe_before, res.iwe_after, res.flow.numpy(), gt,
                       title=f"{name}: {label}")  # fmt: skip
    v_unit = v_gt / np.linalg.norm(v_gt, axis=1, keepdims=True).clip(1e-12)
    save_velocity_plot(f"{stem}_velocities.png", res.times_s, res.v, res.w, v_gt=v_unit, w_gt=w_gt)


REAL = [("davis346.aedat4", 2, 20_000), ("dvs.es", 2, 20_000), ("evt3.raw", 8, 30_000)]


def run_real(iterations: int) -> list[dict]:
    rows = []
    for name, factor, n_events in REAL:
        path = SHARED / name
        if not path.exists():
            print(f"  {name}: skipped ({path} not found)", file=sys.stderr)
            continue
        full = read_events(path)
        s = full.downscale(factor)
        cam = PinholeCamera.default_for(*full.sensor_size).scaled(factor)
        wins = count_windows(s, n_events)
        win = wins[len(wins) // 2]  # a window from the middle of the recording
        xy, t, p = s.to_torch()
        sl = win.slice
        t0 = int(s.t[0])
        ta, tb = (win.t_start_us - t0) * 1e-6, (win.t_end_us - t0) * 1e-6
        res = fit_window(xy[sl], t[sl], cam, EMoFlowConfig.cpu(iterations), (ta, tb), p[sl])
        cm = fit_cmax(xy[sl], t[sl], cam.width, cam.height, CMaxConfig(), (ta, tb))
        row = dict(
            file=name,
            size=f"{s.width}×{s.height}",
            events=len(win),
            ms=(tb - ta) * 1e3,
            var_before=res.sharpness()["var_before"],
            var_emoflow=res.sharpness()["var_after"],
            var_cmax=float(contrast_terms(cm.iwe_after)[0]),
            seconds=res.seconds,
            w_est=res.w[len(res.w) // 2],
            w_imu=None,
            static=False,
        )
        if name.endswith(".aedat4"):
            row.update(imu_comparison(path, win, res))
        rows.append(row)
        print(f"  {name}: done", file=sys.stderr, flush=True)
    return rows


GYRO_STATIC_RAD_S = 0.02
"""Below this standard deviation over the recording (≈1°/s, a few times MEMS gyro noise) the camera is static."""


def imu_comparison(path: Path, win, res) -> dict:
    """E-MoFlow's ω beside the DAVIS gyro over one window, with the gyro mapped into camera axes.

    The mapping is chosen from the data (:mod:`vision3d.events.imu`): by the best-correlating signed axis
    permutation of ω and gyro over time when the camera rotates, else from gravity (accelerometer).
    """
    imu = read_imu(path)
    keep = (imu["t"] >= win.t_start_us) & (imu["t"] < win.t_end_us)
    static = float(imu["gyro"].std(0).max()) < GYRO_STATIC_RAD_S
    if static:
        m, how = gravity_axis_map(imu["accel"])
        how = (
            f"static camera (gyro std {imu['gyro'].std(0).max():.4f} rad/s): no rotation to correlate; {how}"
        )
    else:
        g = np.stack([imu["gyro"][np.abs(imu["t"] - t * 1e6).argmin()] for t in res.times_s])
        m, r = fit_axis_map(res.w, g)
        how = f"best-correlating signed permutation over the window (r = {r:.2f})"
    return dict(w_imu=m @ imu["gyro"][keep].mean(0), axis_map=m, axis_how=how, static=static)


def fmt(x, spec=".2f"):
    return "—" if x is None else format(x, spec)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=400, help="E-MoFlow iterations per simulated window")
    ap.add_argument("--real-iterations", type=int, default=250, help="E-MoFlow iterations per real window")
    ap.add_argument("--quick", action="store_true", help="150 / 100 iterations")
    ap.add_argument("--no-real", action="store_true")
    ap.add_argument("--no-blender", action="store_true", help="skip the Blender-rendered sequence")
    ap.add_argument("--only-blender", action="store_true", help="only the Blender-rendered sequence (no analytic, no real)")
    ap.add_argument("--figures", type=Path, default=Path("outputs/benchmarks/emoflow"),
                    help="folder for per-scene pictures (IWE before/after, flow vs ground truth, velocities)")  # fmt: skip
    ap.add_argument("--density-over", choices=("events", "inside"), default=None,
                    help="LossConfig.iwe_density_over for the simulated scenes; default: the CPU preset's")  # fmt: skip
    args = ap.parse_args()
    if args.only_blender:
        args.no_real = True
    if args.quick:
        args.iterations, args.real_iterations = 150, 100
    torch.set_num_threads(1)
    start = time.time()
    print(
        f"Simulated (64×48, E-MoFlow CPU preset {args.iterations} it; +search = SplineConfig.init='dec_search'"
        f"{'' if args.density_over is None else '; iwe_density_over=' + args.density_over}):"
    )
    args.figures.mkdir(parents=True, exist_ok=True)
    rows = run_simulated(args.iterations, args.figures, not args.no_blender, not args.only_blender, args.density_over)
    print(
        "| sequence | ms | method | events | EPE px | %>3px | AE deg | ω RMS rad/s (‖ω_gt‖) | v dir err deg (±) "
        "| v as E-MoFlow scores it: RMSE (‖v_gt‖), deg | s/window |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        v = "—" if r["v_err"] is None else f"{r['v_err']:.1f} ({r['v_err_sign']:.1f})"
        w = "—" if r["w_rms"] is None else f"{r['w_rms']:.2f} ({r['w_norm']:.2f})"
        vp = "—" if r.get("v_paper") is None else f"{r['v_paper'][0]:.2f} ({r['v_norm']:.2f}), {r['v_paper'][1]:.1f}"
        print(
            f"| {r['seq']} | {r['window_ms']:.0f} | {r['method']} | {r['events']} | {r['epe']:.2f} | {r['pct3']:.1f} | "
            f"{r['ae']:.1f} | {w} | {v} | {vp} | {r['seconds']:.1f} |"
        )
    if not args.no_real:
        print(
            f"\nReal recordings (one window each, E-MoFlow CPU preset {args.real_iterations} it, assumed 70° FOV):"
        )
        print("| file | binned size | events | ms | IWE var before | E-MoFlow | CMax 4×4 | E-MoFlow s |")
        print("|---|---|---|---|---|---|---|---|")
        real = run_real(args.real_iterations)
        for r in real:
            print(
                f"| {r['file']} | {r['size']} | {r['events']} | {r['ms']:.0f} | {r['var_before']:.3f} | "
                f"{r['var_emoflow']:.3f} | {r['var_cmax']:.3f} | {r['seconds']:.1f} |"
            )
        for r in real:
            if r["w_imu"] is not None:
                rows_m = "; ".join(
                    f"cam {'xyz'[i]} = {'+' if r['axis_map'][i].sum() > 0 else '−'}IMU "
                    f"{'xyz'[int(np.abs(r['axis_map'][i]).argmax())]}"
                    for i in range(3)
                )
                print(f"\nDAVIS346 window: IMU→camera axes {rows_m} ({r['axis_how']}).")
                print(
                    f"E-MoFlow ω (mid-window) = {np.round(r['w_est'], 3)} rad/s, |ω| = {np.linalg.norm(r['w_est']):.3f}; "
                    f"gyro mean in camera axes = {np.round(r['w_imu'], 4)} rad/s."
                )
                if r["static"]:
                    print(
                        "The camera does not move (the gyro mean is its bias): the truth is ω = 0, so |ω| above is "
                        "the error; moving objects fill the view and break the rigid-scene assumption."
                    )
    print(f"\npictures in {args.figures}/; total {time.time() - start:.0f} s, torch threads 1")


if __name__ == "__main__":
    main()

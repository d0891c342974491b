"""``v3d flow``: E-MoFlow egomotion and optical flow from events; the event simulator; file summaries.

Heavy imports (torch, matplotlib, faery) happen inside the commands so ``v3d --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(no_args_is_help=True)


@app.command()
def show(
    events: Path = typer.Argument(..., help="An event file (.txt .npy .npz .h5 .aedat4 .raw .dat .es .csv)."),
    picture: Path | None = typer.Option(None, help="Also save an accumulated event picture here (.png)."),
    max_events: int = typer.Option(100_000, help="Events in the picture (from the start)."),
) -> None:
    """Print a summary of an event file (sensor, count, duration, rate, polarity balance, IMU)."""
    import numpy as np
    from rich.console import Console
    from rich.table import Table

    from vision3d.events.io import read_events, read_imu

    s = read_events(events)
    table = Table(title=str(events))
    table.add_column("field")
    table.add_column("value")
    dur = s.duration_us * 1e-6
    table.add_row("format", s.meta.get("format", "?"))
    table.add_row("sensor", f"{s.width}×{s.height}")
    table.add_row("events", f"{len(s):,}")
    table.add_row("duration", f"{dur:.3f} s")
    table.add_row("rate", f"{len(s) / max(dur, 1e-9) / 1e6:.3f} Mev/s")
    table.add_row("ON fraction", f"{float((s.p > 0).mean()):.3f}")
    if events.suffix.lower() == ".aedat4":
        try:
            imu = read_imu(events)
            g = np.rad2deg(imu["gyro"]).mean(0)
            table.add_row("IMU", f"{len(imu['t'])} samples, mean gyro {np.round(g, 2)} deg/s")
        except Exception as err:  # no IMU stream is not an error for show
            table.add_row("IMU", str(err))
    Console().print(table)
    if picture is not None:
        from vision3d.events.plots import save_event_frame

        save_event_frame(picture, s, max_events)
        Console().print(f"saved {picture}")


@app.command()
def simulate(
    output: Path = typer.Argument(
        ..., help="Folder for events.<fmt>, camera.yaml, ground_truth.npz, pictures."
    ),
    v: str = typer.Option(
        "0,0,0", help="Camera linear velocity vx,vy,vz in m/s (camera frame, x right, y down, z forward)."
    ),
    w: str = typer.Option("1.5,-2,1", help="Camera angular velocity wx,wy,wz in rad/s."),
    duration: float = typer.Option(0.1, help="Seconds to simulate."),
    scene: str = typer.Option("plane", help="'plane' (one textured plane) or 'corner' (two walls)."),
    texture: str = typer.Option("astronaut", help="skimage.data photograph for the plane."),
    width: int = typer.Option(64, min=2),
    height: int = typer.Option(48, min=2),
    fov: float = typer.Option(70.0, help="Horizontal field of view, degrees."),
    threshold: float = typer.Option(0.2, help="Contrast threshold C (log intensity)."),
    noise_rate: float = typer.Option(0.1, min=0.0, help="Background-activity events per pixel per second."),
    fmt: str = typer.Option("npz", help="Events file format: txt, npy, npz, h5 (DSEC), mvsec, aedat4, es."),
    gt_step_ms: float = typer.Option(10.0, help="Ground-truth flow every this many ms."),
    seed: int = typer.Option(0),
) -> None:
    """Simulate events (ESIM-style) of a camera moving past textured planes, with ground-truth flow and motion."""
    import numpy as np
    from rich.console import Console

    from vision3d.events.geometry import save_camera
    from vision3d.events.io import write_events
    from vision3d.events.plots import save_event_frame
    from vision3d.events.simulator import (
        Plane,
        PlaneSceneConfig,
        SimulatorConfig,
        corner_scene,
        simulate_plane_sequence,
    )

    for option, value, ok, need in (("--duration", duration, duration > 0, "positive"),
                                    ("--fov", fov, 0 < fov < 180, "between 0 and 180 degrees"),
                                    ("--threshold", threshold, threshold > 0, "positive"),
                                    ("--gt-step-ms", gt_step_ms, gt_step_ms > 0, "positive")):  # fmt: skip
        if not ok:
            raise typer.BadParameter(f"{value} must be {need}", param_hint=option)
    sim = SimulatorConfig(threshold=threshold, noise_rate_hz=noise_rate, seed=seed)
    common = dict(width=width, height=height, fov_deg=fov, simulator=sim)
    if scene == "plane":
        cfg = PlaneSceneConfig(
            planes=[Plane(point=(0, 0, 2.5), normal=(0, 0, -1), texture=texture)], **common
        )
    elif scene == "corner":
        cfg = corner_scene(**common)
    else:
        raise typer.BadParameter(f"unknown scene {scene!r} (plane or corner)")
    vv, ww = _vector3("--v", v), _vector3("--w", w)
    seq = simulate_plane_sequence(vv, ww, duration, cfg)
    output.mkdir(parents=True, exist_ok=True)
    ext = {"h5": "h5", "mvsec": "h5"}.get(fmt, fmt)
    path = write_events(
        output / f"events.{ext}", seq.events, "mvsec" if fmt == "mvsec" else ("dsec" if fmt == "h5" else None)
    )
    save_camera(output / "camera.yaml", seq.camera)
    times = np.arange(0.0, duration + 1e-9, gt_step_ms * 1e-3)
    vt, wt = seq.velocities(times)
    np.savez_compressed(
        output / "ground_truth.npz",
        times_s=times,
        v=vt,
        w=wt,
        flow_px_per_s=np.stack([seq.instantaneous_flow(t) for t in times]).astype(np.float32),
        flow_whole=seq.flow(0.0, duration).astype(np.float32),
        K=seq.camera.K,
    )
    save_event_frame(output / "events.png", seq.events)
    Console().print(f"{len(seq.events):,} events on {width}×{height} over {duration} s -> {path}")


def _vector3(option: str, text: str):
    """``"x,y,z"`` -> float array [3]; anything else is a usage error naming the option."""
    import numpy as np

    try:
        vec = np.array([float(a) for a in text.split(",")])
    except ValueError:
        vec = np.zeros(0)
    if vec.shape != (3,) or not np.isfinite(vec).all():
        raise typer.BadParameter(f"{text!r} is not three finite numbers x,y,z", param_hint=option)
    return vec


@app.command()
def fit(
    events: Path = typer.Argument(..., help="An event file (any format `v3d flow show` reads)."),
    camera: Path = typer.Option(
        ..., "--camera", help="Intrinsics YAML as calibration tools write it (OpenCV pixel centres): fx fy cx cy width "
        "height (or K / camera_matrix)."
    ),
    output: Path = typer.Option(Path("outputs/flow"), help="Folder for flow, velocities and pictures."),
    window_ms: float = typer.Option(0.0, min=0.0, help="Window length in ms (0: use --window-events)."),
    window_events: int = typer.Option(
        30_000, min=1, help="Events per window when --window-ms is 0 (official MVSEC: 30k)."
    ),
    max_windows: int = typer.Option(3, min=0, help="Fit at most this many windows (0: all)."),
    start_s: float = typer.Option(0.0, min=0.0, help="Skip this many seconds from the start of the file."),
    iterations: int = typer.Option(400, min=1, help="Iterations per window (paper: 1000)."),
    preset: str = typer.Option(
        "cpu", help="'cpu' (4×64 MLP, faster schedule) or 'paper' (8×256, paper's schedule)."
    ),
    downscale: int = typer.Option(
        1, min=1, help="Bin pixels by this factor first (faster; intrinsics scaled to match)."
    ),
    search: bool = typer.Option(
        False,
        help="Start the velocity spline by a search over v directions (recovers translation; see E-MoFlow docs).",
    ),
    cmax: bool = typer.Option(False, help="Also run the CMax baseline per window and report its sharpness."),
    imu: bool = typer.Option(True, help="For AEDAT 4 files, plot the IMU gyroscope beside the estimated ω."),
    threads: int = typer.Option(0, min=0, help="torch threads (0: leave torch's default)."),
) -> None:
    """Fit E-MoFlow per window: dense flow (.npy), velocities (.csv), pictures, summary.json."""
    import json

    import numpy as np
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from vision3d.events.cmax import CMaxConfig, fit_cmax
    from vision3d.events.emoflow import EMoFlowConfig, contrast_terms, fit_window
    from vision3d.events.geometry import load_camera
    from vision3d.events.io import read_events, read_imu
    from vision3d.events.plots import save_velocity_plot, save_window_figure
    from vision3d.events.windows import count_windows, time_windows

    if preset not in ("cpu", "paper"):
        raise typer.BadParameter(f"unknown preset {preset!r} (cpu or paper)", param_hint="--preset")
    if threads:
        torch.set_num_threads(threads)
    console = Console()
    stream = read_events(events)
    cam = load_camera(camera)
    if (cam.width, cam.height) != stream.sensor_size:
        console.print(
            f"[yellow]note: camera.yaml says {cam.width}×{cam.height}, the file {stream.width}×{stream.height}"
        )
    if downscale > 1:
        stream = stream.downscale(downscale)
        cam = cam.scaled(downscale)
    if start_s > 0:
        stream = stream[int(np.searchsorted(stream.t, stream.t[0] + int(start_s * 1e6))) :]
    if window_ms > 0:
        wins = time_windows(stream, int(window_ms * 1000))
    else:
        wins = count_windows(stream, window_events)
    if max_windows:
        wins = wins[:max_windows]
    if preset == "cpu":
        cfg = EMoFlowConfig.cpu(iterations)
    else:
        cfg = EMoFlowConfig()
        cfg.schedule.iterations = iterations
    if search:
        cfg.spline.init = "dec_search"
    output.mkdir(parents=True, exist_ok=True)
    xy_all, t_all, p_all = stream.to_torch()
    t0 = int(stream.t[0])
    rows, summary = [], {"file": str(events), "camera": cam.to_dict(), "preset": preset, "windows": []}
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total}"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("E-MoFlow", total=len(wins) * cfg.schedule.iterations)
        try:  # Ctrl-C keeps the windows already fitted: their outputs are written below
            for k, win in enumerate(wins):
                progress.update(task, description=f"window {k + 1}/{len(wins)}")
                ta, tb = (win.t_start_us - t0) * 1e-6, (win.t_end_us - t0) * 1e-6
                sl = win.slice
                res = fit_window(
                    xy_all[sl],
                    t_all[sl],
                    cam,
                    cfg,
                    (ta, tb),
                    p_all[sl],
                    progress=lambda _i: progress.advance(task),
                )
                abs_times = res.times_s + t0 * 1e-6
                np.save(output / f"flow_{k:03d}.npy", res.flow.numpy())
                sharp = res.sharpness()
                entry = {
                    "window": k,
                    "t_start_s": win.t_start_us * 1e-6,
                    "t_end_s": win.t_end_us * 1e-6,
                    "events": len(win),
                    "seconds": res.seconds,
                    **sharp,
                    "v_mid": res.v[len(res.v) // 2].tolist(),
                    "w_mid_rad_s": res.w[len(res.w) // 2].tolist(),
                }
                if cmax:
                    cm = fit_cmax(xy_all[sl], t_all[sl], cam.width, cam.height, CMaxConfig(), (ta, tb))
                    entry["cmax_var_after"] = float(contrast_terms(cm.iwe_after)[0])
                    entry["cmax_seconds"] = cm.seconds
                save_window_figure(
                    output / f"window_{k:03d}.png",
                    res.iwe_before,
                    res.iwe_after,
                    res.flow.numpy(),
                    title=f"window {k}: {len(win)} events, IWE variance {sharp['var_before']:.2f} -> "
                    f"{sharp['var_after']:.2f}",
                )
                for ti, vi, wi in zip(abs_times, res.v, res.w, strict=True):
                    rows.append([ti, *vi, *wi])
                summary["windows"].append(entry)  # last: the summary lists only windows whose outputs are whole
        except KeyboardInterrupt:
            summary["interrupted"] = True
    if not rows:
        console.print("[yellow]interrupted before the first window was fitted: nothing written")
        raise typer.Exit(130)
    rows = np.array(rows)
    np.savetxt(
        output / "velocities.csv",
        rows,
        delimiter=",",
        fmt="%.6f",
        header="t_s,vx_unit,vy_unit,vz_unit,wx_rad_s,wy_rad_s,wz_rad_s",
        comments="",
    )
    w_ref = None
    if imu and events.suffix.lower() == ".aedat4":
        try:
            m = read_imu(events)
            keep = (m["t"] >= rows[0, 0] * 1e6) & (m["t"] <= rows[-1, 0] * 1e6)
            w_ref = (m["t"][keep] * 1e-6, m["gyro"][keep])
            summary["imu_gyro_mean_rad_s"] = m["gyro"][keep].mean(0).tolist()
        except Exception as err:
            console.print(f"[yellow]no IMU: {err}")
    save_velocity_plot(output / "velocities.png", rows[:, 0], rows[:, 1:4], rows[:, 4:7], w_ref=w_ref)
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    for e in summary["windows"]:
        console.print(
            f"window {e['window']}: {e['events']} events, IWE variance {e['var_before']:.3f} -> "
            f"{e['var_after']:.3f}, ω {np.round(e['w_mid_rad_s'], 3)} rad/s, {e['seconds']:.1f} s"
        )
    console.print(f"wrote {output}/ (flow_*.npy, velocities.csv, window_*.png, velocities.png, summary.json)")
    if summary.get("interrupted"):
        console.print(f"[yellow]interrupted: {len(summary['windows'])} of {len(wins)} windows fitted and written")
        raise typer.Exit(130)

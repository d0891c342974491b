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
    device: str = typer.Option("auto", help="auto (CUDA when torch sees a GPU, else CPU) | cpu | cuda[:N]."),
) -> None:
    """Fit E-MoFlow per window: dense flow (.npy), velocities (.csv), pictures, summary.json.

    The same as :func:`vision3d.events.recording.fit_recording` in Python.
    """
    import numpy as np
    import torch
    from rich.console import Console
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    from vision3d.backends import resolve_device
    from vision3d.events.emoflow import EMoFlowConfig
    from vision3d.events.recording import fit_recording

    if preset not in ("cpu", "paper"):
        raise typer.BadParameter(f"unknown preset {preset!r} (cpu or paper)", param_hint="--preset")
    try:
        resolve_device(device)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--device") from None
    if threads:
        torch.set_num_threads(threads)
    cfg = EMoFlowConfig.cpu(iterations) if preset == "cpu" else EMoFlowConfig()
    cfg.schedule.iterations = iterations
    cfg.device = device
    if search:
        cfg.spline.init = "dec_search"
    console = Console()
    columns = (TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
               TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console) as bar:
        task = bar.add_task("E-MoFlow", total=None)

        def progress(window: int, n_windows: int, _iteration: int) -> None:
            bar.update(task, total=n_windows * iterations, description=f"window {window + 1}/{n_windows}", advance=1)

        fit = fit_recording(events, camera, output, cfg, window_ms=window_ms, window_events=window_events,
                            max_windows=max_windows, start_s=start_s, downscale=downscale, cmax=cmax, imu=imu,
                            progress=progress, log=lambda note: console.print(f"[yellow]{note}"))  # fmt: skip
    if not fit.summary["windows"]:
        console.print("[yellow]interrupted before the first window was fitted: nothing written")
        raise typer.Exit(130)
    for e in fit.summary["windows"]:
        console.print(
            f"window {e['window']}: {e['events']} events, IWE variance {e['var_before']:.3f} -> "
            f"{e['var_after']:.3f}, ω {np.round(e['w_mid_rad_s'], 3)} rad/s, {e['seconds']:.1f} s"
        )
    console.print(f"wrote {output}/ (flow_*.npy, velocities.csv, window_*.png, velocities.png, summary.json)")
    if fit.interrupted:
        console.print(f"[yellow]interrupted: {len(fit.summary['windows'])} of {fit.windows_planned} windows fitted "
                      "and written")  # fmt: skip
        raise typer.Exit(130)

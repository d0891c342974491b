"""E-MoFlow over an event recording: read, cut into windows, fit each, write flow, velocities and pictures.

:func:`fit_recording` is what ``v3d flow fit`` runs; a notebook calls it the same way. Decisions:

* windows hold a fixed number of events (official MVSEC: 30k) unless a length in ms is given;
* every window is fitted afresh (no warm start), as in the paper;
* Ctrl-C keeps the windows already fitted: their outputs are written and the result says
  ``interrupted``, so an hour of fitting is never lost to one keystroke;
* for AEDAT 4 files the DAVIS gyroscope, when present, is plotted beside the estimated ω (raw IMU
  axes: no camera-IMU calibration is assumed).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vision3d.backends import resolve_device
from vision3d.events.cmax import CMaxConfig, fit_cmax
from vision3d.events.contrast import contrast_terms
from vision3d.events.emoflow import EMoFlowConfig, fit_window
from vision3d.events.geometry import load_camera, load_distortion, undistort_events
from vision3d.events.io import read_events, read_imu
from vision3d.events.plots import save_velocity_plot, save_window_figure
from vision3d.events.windows import count_windows, time_windows
from vision3d.geometry.camera import PinholeCamera

VELOCITY_HEADER = "t_s,vx_unit,vy_unit,vz_unit,wx_rad_s,wy_rad_s,wz_rad_s"


@dataclass
class RecordingFit:
    output: Path
    """Folder holding flow_NNN.npy ([H, W, 2] px over the window), window_NNN.png, velocities.csv/.png,
    summary.json."""
    summary: dict
    """What summary.json holds: file, camera, config, device, one entry per fitted window."""
    velocities: np.ndarray
    """[K, 7] rows of velocities.csv: absolute time (s), unit v (3), ω (3, rad/s)."""
    windows_planned: int
    interrupted: bool = False


def fit_recording(
    events: str | Path,
    camera: str | Path | PinholeCamera,
    output: str | Path,
    config: EMoFlowConfig | None = None,
    *,
    window_ms: float = 0.0,
    window_events: int = 30_000,
    max_windows: int = 3,
    start_s: float = 0.0,
    downscale: int = 1,
    cmax: bool = False,
    imu: bool = True,
    progress: Callable[[int, int, int], None] | None = None,
    log: Callable[[str], None] = print,
) -> RecordingFit:
    """Fit E-MoFlow to windows of an event file and write the outputs to ``output``.

    ``camera`` is a PinholeCamera (pinhole) or an intrinsics YAML, whose lens distortion, if any, is undone on
    the events' coordinates before fitting (flow is then in the pinhole image); ``config`` defaults to the CPU preset
    (``EMoFlowConfig.cpu()``). Windows: ``window_ms`` long when > 0, else ``window_events`` events
    each; at most ``max_windows`` (0: all), starting ``start_s`` seconds into the file. ``downscale``
    bins pixels (intrinsics scaled to match). ``cmax`` also runs the CMax baseline per window.
    ``progress(window, n_windows, iteration)`` is called after every iteration; ``log`` gets notes.
    Nothing is written when no window was fitted (Ctrl-C during the first one).
    """
    config = config or EMoFlowConfig.cpu()
    device = resolve_device(config.device)
    events, output = Path(events), Path(output)
    stream = read_events(events)
    cam = camera if isinstance(camera, PinholeCamera) else load_camera(camera)
    lens = None if isinstance(camera, PinholeCamera) else load_distortion(camera)
    if (cam.width, cam.height) != stream.sensor_size:
        log(f"note: the camera says {cam.width}×{cam.height}, {events.name} {stream.width}×{stream.height}")
    if downscale > 1:
        stream = stream.downscale(downscale)
        cam = cam.scaled(downscale)
    if start_s > 0:
        stream = stream[int(np.searchsorted(stream.t, stream.t[0] + int(start_s * 1e6))) :]
    wins = time_windows(stream, int(window_ms * 1000)) if window_ms > 0 else count_windows(stream, window_events)
    if max_windows:
        wins = wins[:max_windows]
    xy_all, t_all, p_all = stream.to_torch()
    if lens is not None:
        xy_all = undistort_events(xy_all, cam, lens)
        log(f"events undistorted with the lens of {camera} (k1 k2 p1 p2 ... = {lens.tolist()})")
    t0 = int(stream.t[0])
    summary = {"file": str(events), "camera": cam.to_dict(), "config": dataclasses.asdict(config),
               "distortion": None if lens is None else lens.tolist(), "device": str(device), "windows": []}  # fmt: skip
    rows, interrupted = [], False
    try:
        for k, win in enumerate(wins):
            ta, tb = (win.t_start_us - t0) * 1e-6, (win.t_end_us - t0) * 1e-6
            sl = win.slice
            step = None if progress is None else (lambda it, k=k: progress(k, len(wins), it))
            res = fit_window(xy_all[sl], t_all[sl], cam, config, (ta, tb), p_all[sl], progress=step)
            if k == 0:
                output.mkdir(parents=True, exist_ok=True)
            np.save(output / f"flow_{k:03d}.npy", res.flow.numpy())
            sharp = res.sharpness()
            entry = {"window": k, "t_start_s": win.t_start_us * 1e-6, "t_end_s": win.t_end_us * 1e-6,
                     "events": len(win), "seconds": res.seconds, **sharp,
                     "v_mid": res.v[len(res.v) // 2].tolist(), "w_mid_rad_s": res.w[len(res.w) // 2].tolist()}  # fmt: skip
            if cmax:
                cm = fit_cmax(xy_all[sl], t_all[sl], cam.width, cam.height, CMaxConfig(), (ta, tb))
                entry["cmax_var_after"] = float(contrast_terms(cm.iwe_after)[0])
                entry["cmax_seconds"] = cm.seconds
            save_window_figure(output / f"window_{k:03d}.png", res.iwe_before, res.iwe_after, res.flow.numpy(),
                               title=f"window {k}: {len(win)} events, IWE variance {sharp['var_before']:.2f} -> "
                               f"{sharp['var_after']:.2f}")  # fmt: skip
            rows.extend([ti, *vi, *wi] for ti, vi, wi in zip(res.times_s + t0 * 1e-6, res.v, res.w, strict=True))
            summary["windows"].append(entry)  # last: the summary lists only windows whose outputs are whole
    except KeyboardInterrupt:
        interrupted = summary["interrupted"] = True
    velocities = np.array(rows).reshape(-1, 7)
    result = RecordingFit(output, summary, velocities, len(wins), interrupted)
    if not rows:
        return result
    np.savetxt(output / "velocities.csv", velocities, delimiter=",", fmt="%.6f", header=VELOCITY_HEADER, comments="")
    w_ref = None
    if imu and events.suffix.lower() == ".aedat4":
        try:
            m = read_imu(events)
            keep = (m["t"] >= velocities[0, 0] * 1e6) & (m["t"] <= velocities[-1, 0] * 1e6)
            w_ref = (m["t"][keep] * 1e-6, m["gyro"][keep])
            summary["imu_gyro_mean_rad_s"] = m["gyro"][keep].mean(0).tolist()
        except Exception as err:  # noqa: BLE001  (a recording without IMU is still fitted; say why once)
            log(f"no IMU: {err}")
    save_velocity_plot(output / "velocities.png", velocities[:, 0], velocities[:, 1:4], velocities[:, 4:7],
                       w_ref=w_ref)  # fmt: skip
    (output / "summary.json").write_text(json.dumps(summary, indent=2))
    return result

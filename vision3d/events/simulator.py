"""An ESIM-style event simulator and an analytic textured-plane scene with exact flow and motion.

:func:`events_from_frames` turns any rendered sequence (frames + timestamps) into events:
per pixel it keeps the log intensity at its last event, linearly interpolates the log
intensity between frames (ESIM, Rebecq et al. 2018) and fires one event at every crossing
of a per-pixel contrast threshold. Blender sequences from ``vision3d.data`` can be fed
straight in, and :func:`simulate_rendered_sequence` does so for a scene rendered by
``v3d data render`` (ground truth from Blender's Vector pass and the camera poses).

:func:`simulate_plane_sequence` renders the scene itself: a camera moving with given body
velocities ``v(t)``, ``ω(t)`` (see :mod:`vision3d.events.geometry` for the conventions) in
front of one or two textured planes, textured with a real photograph from
``skimage.data``. It returns the events plus the ground truth: instantaneous flow,
flow between two times, ``v`` and ``ω``.

Decisions (each a :class:`SimulatorConfig` field):

* Contrast thresholds ``C± ~ N(C, σ_C)`` drawn once per pixel (fixed-pattern mismatch),
  clipped below at ``min_threshold``.
* Refractory period: a crossing less than ``refractory_s`` after the pixel's last emitted
  event is dropped, and the reference level still moves past it (the pixel "misses" it),
  which is what a pixel that is still resetting does.
* Noise: background-activity events, Poisson in time with ``noise_rate_hz`` per pixel,
  random polarity.
* Intensity to log: ``log(I + log_eps)`` with ``I`` in [0, 1].
* Timestamps are rounded to the microsecond, as sensors report them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.spatial.transform import Rotation

from vision3d.events.geometry import motion_field
from vision3d.events.stream import EventStream, make_events
from vision3d.geometry.camera import PinholeCamera
from vision3d.geometry.se3 import opengl_to_opencv


@dataclass
class SimulatorConfig:
    threshold: float = 0.2
    """Mean contrast threshold C (log intensity), both polarities (ESIM's default range 0.15–0.5)."""
    threshold_sigma: float = 0.03
    """Per-pixel standard deviation of C (fixed-pattern mismatch)."""
    min_threshold: float = 0.01
    refractory_s: float = 1e-4
    """Refractory period in seconds (100 µs)."""
    noise_rate_hz: float = 0.1
    """Background-activity noise events per pixel per second."""
    log_eps: float = 1e-2
    seed: int = 0

    def __post_init__(self):
        for name in ("threshold", "min_threshold", "log_eps"):
            if not getattr(self, name) > 0:
                raise ValueError(f"SimulatorConfig.{name} must be positive, got {getattr(self, name)}")
        for name in ("threshold_sigma", "refractory_s", "noise_rate_hz"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"SimulatorConfig.{name} must be non-negative, got {getattr(self, name)}")


def events_from_frames(
    frames: np.ndarray,  # [N, H, W] linear intensity in [0, 1] (or [N, H, W, 3], converted to gray)
    timestamps_s: np.ndarray,  # [N] increasing seconds
    config: SimulatorConfig | None = None,
    source: str = "<simulated>",
) -> EventStream:
    """Threshold crossings of the log intensity between consecutive frames, ESIM-style."""
    config = config or SimulatorConfig()
    frames = np.asarray(frames, dtype=np.float64)
    if frames.ndim == 4:
        frames = frames[..., :3] @ np.array([0.299, 0.587, 0.114])
    timestamps_s = np.asarray(timestamps_s, dtype=np.float64)
    if frames.ndim != 3 or len(frames) != len(timestamps_s) or len(frames) < 2:
        raise ValueError(
            f"need [N>=2, H, W] frames and N timestamps, got {frames.shape} and {timestamps_s.shape}"
        )
    if np.any(np.diff(timestamps_s) <= 0):
        raise ValueError("frame timestamps must increase strictly")
    rng = np.random.default_rng(config.seed)
    _, h, w = frames.shape
    log = np.log(frames + config.log_eps)
    c_pos = np.maximum(rng.normal(config.threshold, config.threshold_sigma, (h, w)), config.min_threshold)
    c_neg = np.maximum(rng.normal(config.threshold, config.threshold_sigma, (h, w)), config.min_threshold)
    ref = log[0].copy()
    last_t = np.full((h, w), -np.inf)
    out_t, out_idx, out_p = [], [], []
    for k in range(len(frames) - 1):
        l0, l1 = log[k], log[k + 1]
        t0, dt = timestamps_s[k], timestamps_s[k + 1] - timestamps_s[k]
        slope = l1 - l0
        for sign, c in ((1, c_pos), (-1, c_neg)):
            n = np.floor(sign * (l1 - ref) / c).astype(np.int64)
            n[n < 0] = 0
            if not n.any():
                continue
            for j in range(1, int(n.max()) + 1):
                idx = np.flatnonzero(n >= j)
                level = ref.flat[idx] + sign * j * c.flat[idx]
                frac = np.clip((level - l0.flat[idx]) / slope.flat[idx], 0.0, 1.0)
                t = t0 + frac * dt
                ok = t - last_t.flat[idx] >= config.refractory_s
                idx, t = idx[ok], t[ok]
                last_t.flat[idx] = t
                out_t.append(t)
                out_idx.append(idx)
                out_p.append(np.full(len(idx), sign, np.int8))
            ref += sign * n * c
    t = np.concatenate(out_t) if out_t else np.zeros(0)
    idx = np.concatenate(out_idx) if out_idx else np.zeros(0, np.int64)
    p = np.concatenate(out_p) if out_p else np.zeros(0, np.int8)
    if config.noise_rate_hz > 0:
        duration = timestamps_s[-1] - timestamps_s[0]
        n_noise = rng.poisson(config.noise_rate_hz * h * w * duration)
        t = np.concatenate([t, timestamps_s[0] + rng.uniform(0, duration, n_noise)])
        idx = np.concatenate([idx, rng.integers(0, h * w, n_noise)])
        p = np.concatenate([p, rng.choice(np.array([-1, 1], np.int8), n_noise)])
    t_us = np.round(t * 1e6).astype(np.int64)
    order = np.argsort(t_us, kind="stable")
    events = make_events(t_us[order], idx[order] % w, idx[order] // w, p[order])
    return EventStream(events, (w, h), source, {"simulator": config})


# --- analytic scene ---------------------------------------------------------------------
@dataclass
class Plane:
    """A textured plane (or rectangle when ``half_extent`` is set) in world coordinates."""

    point: tuple[float, float, float] = (0.0, 0.0, 2.0)
    normal: tuple[float, float, float] = (0.0, 0.0, -1.0)
    texture: str = "camera"
    """Name of a bundled ``skimage.data`` photograph."""
    texture_size_m: float = 4.0
    """Width in metres the texture spans (it repeats mirrored beyond)."""
    half_extent: tuple[float, float] | None = None
    """Half width/height of a finite rectangle; ``None`` is an infinite plane."""


def _texture(name: str, blur_px: float) -> np.ndarray:
    import skimage.data
    from skimage.color import rgb2gray
    from skimage.filters import gaussian

    img = getattr(skimage.data, name)()
    img = rgb2gray(img) if img.ndim == 3 else img / 255.0
    return gaussian(img.astype(np.float64), blur_px)


@dataclass
class PlaneSceneConfig:
    width: int = 64
    height: int = 48
    fov_deg: float = 70.0
    planes: list[Plane] = field(default_factory=lambda: [Plane()])
    fps: float = 2000.0
    """Render rate; ESIM interpolates linearly between frames, so keep per-frame motion well below a pixel."""
    supersample: int = 2
    """Render at this factor and average, an anti-aliased pixel footprint."""
    texture_blur_px: float = 1.0
    simulator: SimulatorConfig = field(default_factory=SimulatorConfig)

    def __post_init__(self):
        if self.width < 2 or self.height < 2:
            raise ValueError(f"the sensor needs at least 2×2 pixels, got {self.width}×{self.height}")
        if not 0 < self.fov_deg < 180:
            raise ValueError(f"fov_deg must be between 0 and 180 degrees, got {self.fov_deg}")
        if not (self.fps > 0 and self.supersample >= 1):
            raise ValueError(f"fps must be positive and supersample at least 1, got {self.fps} and {self.supersample}")


def constant(vec) -> Callable[[float], np.ndarray]:
    vec = np.asarray(vec, dtype=np.float64)
    return lambda t: vec


@dataclass
class SimulatedSequence:
    events: EventStream
    camera: PinholeCamera
    t0_s: float
    t1_s: float
    v: Callable[[float], np.ndarray]
    """Camera linear velocity (m/s, camera frame) at time t (s)."""
    w: Callable[[float], np.ndarray]
    """Camera angular velocity (rad/s, camera frame) at time t (s)."""
    scene: _PlaneScene

    def flow(self, t0_s: float, t1_s: float) -> np.ndarray:
        """[H, W, 2] pixel displacement from ``t0_s`` to ``t1_s`` of the scene point seen at each pixel at ``t0_s``."""
        return self.scene.displacement(t0_s, t1_s)

    def instantaneous_flow(self, t_s: float) -> np.ndarray:
        """[H, W, 2] motion field in pixels per second at ``t_s``."""
        return self.scene.instantaneous_flow(t_s)

    def velocities(self, times_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        return np.stack([self.v(t) for t in times_s]), np.stack([self.w(t) for t in times_s])


class _PlaneScene:
    """Ray-casts textured planes from a camera whose pose is integrated from body velocities."""

    def __init__(self, config: PlaneSceneConfig, v, w, t0: float, t1: float, substeps: int = 4):
        self.config = config
        self.camera = PinholeCamera.default_for(config.width, config.height, config.fov_deg)
        self.textures = [
            _texture(p.texture, config.texture_blur_px * max(1.0, 512 / 256)) for p in config.planes
        ]
        self.v, self.w = v, w
        # Camera-to-world pose at times self.times: exact rotation exponential per sub-step, midpoint translation.
        n = int(np.ceil((t1 - t0) * config.fps * substeps)) + 1
        self.times = np.linspace(t0, t1 + 1e-3, n + int(1e-3 * config.fps * substeps) + 2)
        r, c = np.eye(3), np.zeros(3)
        self.rot, self.pos = [r], [c]
        for a, b in zip(self.times[:-1], self.times[1:], strict=True):
            dt, mid = b - a, 0.5 * (a + b)
            half = Rotation.from_rotvec(self.w(mid) * dt / 2).as_matrix()
            c = c + r @ half @ self.v(mid) * dt
            r = r @ Rotation.from_rotvec(self.w(mid) * dt).as_matrix()
            self.rot.append(r)
            self.pos.append(c)
        self.rot, self.pos = np.stack(self.rot), np.stack(self.pos)

    def pose(self, t: float) -> tuple[np.ndarray, np.ndarray]:
        i = int(np.clip(np.searchsorted(self.times, t) - 1, 0, len(self.times) - 2))
        a = (t - self.times[i]) / (self.times[i + 1] - self.times[i])
        rel = Rotation.from_matrix(self.rot[i].T @ self.rot[i + 1]).as_rotvec()
        return self.rot[i] @ Rotation.from_rotvec(a * rel).as_matrix(), (1 - a) * self.pos[i] + a * self.pos[
            i + 1
        ]

    def cast(self, t: float, rays_cam: np.ndarray):
        """World hit point, camera depth and plane index of each ray (nearest plane in front)."""
        r, c = self.pose(t)
        d = rays_cam @ r.T
        best = np.full(d.shape[:-1], np.inf)
        which = np.full(d.shape[:-1], -1)
        for k, pl in enumerate(self.config.planes):
            n, p0 = np.asarray(pl.normal, float), np.asarray(pl.point, float)
            n = n / np.linalg.norm(n)
            denom = d @ n
            with np.errstate(divide="ignore", invalid="ignore"):
                lam = ((p0 - c) @ n) / denom
            hit = c + lam[..., None] * d
            ok = np.isfinite(lam) & (lam > 1e-6)
            if pl.half_extent is not None:
                e1, e2 = _plane_basis(n)
                ok &= (np.abs((hit - p0) @ e1) <= pl.half_extent[0]) & (
                    np.abs((hit - p0) @ e2) <= pl.half_extent[1]
                )
            closer = ok & (lam < best)
            best[closer], which[closer] = lam[closer], k
        if np.any(which < 0):
            raise ValueError("some pixels see no plane; move the planes or the camera")
        return c + best[..., None] * d, best, which

    def render(self, t: float) -> np.ndarray:
        ss = self.config.supersample
        hit, _, which = self.cast(t, self.camera.rays(ss))
        img = np.zeros(which.shape)
        for k, pl in enumerate(self.config.planes):
            m = which == k
            if m.any():
                img[m] = _sample_texture(self.textures[k], pl, hit[m])
        h, w = self.camera.height, self.camera.width
        return img.reshape(h, ss, w, ss).mean(axis=(1, 3))

    def instantaneous_flow(self, t: float) -> np.ndarray:
        rays = self.camera.rays()
        _, depth, _ = self.cast(t, rays)
        x = torch.from_numpy(rays[..., :2].reshape(-1, 2))
        u = motion_field(
            x,
            torch.from_numpy(1.0 / depth.reshape(-1)),
            torch.from_numpy(self.v(t)),
            torch.from_numpy(self.w(t)),
        ).numpy()
        cam = self.camera
        return (u * np.array([cam.fx, cam.fy])).reshape(cam.height, cam.width, 2)

    def displacement(self, t0: float, t1: float) -> np.ndarray:
        hit, _, _ = self.cast(t0, self.camera.rays())
        r, c = self.pose(t1)
        xc = (hit - c) @ r  # world -> camera at t1
        return self.camera.project(xc) - self.camera.pixel_centres()


def _plane_basis(n: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    a = np.array([0.0, 1.0, 0.0]) if abs(n[1]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(a, n)
    e1 /= np.linalg.norm(e1)
    return e1, np.cross(n, e1)


def _sample_texture(tex: np.ndarray, plane: Plane, hit: np.ndarray) -> np.ndarray:
    from scipy.ndimage import map_coordinates

    n = np.asarray(plane.normal, float)
    e1, e2 = _plane_basis(n / np.linalg.norm(n))
    rel = hit - np.asarray(plane.point, float)
    scale = tex.shape[1] / plane.texture_size_m
    col = rel @ e1 * scale + tex.shape[1] / 2
    row = rel @ e2 * scale + tex.shape[0] / 2
    return map_coordinates(tex, [row, col], order=1, mode="mirror")


def simulate_plane_sequence(
    v: Callable[[float], np.ndarray] | np.ndarray,
    w: Callable[[float], np.ndarray] | np.ndarray,
    duration_s: float,
    config: PlaneSceneConfig | None = None,
    t0_s: float = 0.0,
) -> SimulatedSequence:
    """Render the plane scene under body velocities (v, ω) for ``duration_s`` and simulate its events."""
    config = config or PlaneSceneConfig()
    v = v if callable(v) else constant(v)
    w = w if callable(w) else constant(w)
    if not duration_s > 0:
        raise ValueError(f"duration must be positive, got {duration_s} s")
    scene = _PlaneScene(config, v, w, t0_s, t0_s + duration_s)
    n = max(int(round(duration_s * config.fps)) + 1, 2)  # at least the first and the last frame
    times = np.linspace(t0_s, t0_s + duration_s, n)
    frames = np.stack([scene.render(t) for t in times])
    events = events_from_frames(frames, times, config.simulator, source="<simulated plane>")
    return SimulatedSequence(events, scene.camera, t0_s, t0_s + duration_s, v, w, scene)


def corner_scene(
    depth: float = 2.5, textures: tuple[str, str] = ("brick", "gravel"), **kwargs
) -> PlaneSceneConfig:
    """Looking into a room corner: two walls at ±45° meeting on a vertical line ``depth`` metres ahead.

    A single plane admits a second (v, ω, plane) explaining the same motion field (the planar
    ambiguity of the differential epipolar constraint, the second v being along the plane's
    normal); two walls that each fill half the view remove it.
    """
    planes = [
        Plane(point=(0.0, 0.0, depth), normal=(1.0, 0.0, -1.0), texture=textures[0], texture_size_m=4.0),
        Plane(point=(0.0, 0.0, depth), normal=(-1.0, 0.0, -1.0), texture=textures[1], texture_size_m=4.0),
    ]
    return PlaneSceneConfig(planes=planes, **kwargs)


# --- scenes rendered by Blender (``v3d data render``) -------------------------------------


@dataclass
class RenderedSequence:
    """Events simulated from consecutive views of a scene rendered by :func:`vision3d.data.render.render_scene`.

    Ground truth comes from the renderer: flow from Blender's Vector pass (per-frame forward flow,
    chained), velocities from the exact camera poses. View ``first + k`` is shown at ``t = k / fps``.
    ``residual_log`` / ``change_log`` say whether the events follow the motion (see
    :func:`photometric_residual`).
    """

    events: EventStream
    camera: PinholeCamera
    t0_s: float
    t1_s: float
    flows: np.ndarray
    """[n_frames - 1, H, W, 2] forward flow in pixels from each view to the next."""
    v_frames: np.ndarray
    """[n_frames - 1, 3] camera linear velocity (scene units per second, camera frame) between views."""
    w_frames: np.ndarray
    """[n_frames - 1, 3] camera angular velocity (rad/s, camera frame) between views."""
    fps: float
    residual_log: float = float("nan")
    """Median |Δ log I| between consecutive views left after warping with the GT flow: render noise plus
    interpolation. Compare it with the contrast threshold C: near C, most events are noise."""
    change_log: float = float("nan")
    """Median |Δ log I| between consecutive views without warping (motion plus noise)."""

    def flow(self, t0_s: float, t1_s: float) -> np.ndarray:
        """[H, W, 2] displacement from ``t0_s`` to ``t1_s`` (whole views), chaining per-view flows bilinearly."""
        from scipy.ndimage import map_coordinates

        a, b = int(round(t0_s * self.fps)), int(round(t1_s * self.fps))
        h, w = self.flows.shape[1:3]
        gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
        px, py = gx.copy(), gy.copy()
        for k in range(a, b):
            f = self.flows[k]
            px, py = (
                px + map_coordinates(f[..., 0], [py, px], order=1, mode="nearest"),
                py + map_coordinates(f[..., 1], [py, px], order=1, mode="nearest"),
            )
        return np.stack([px - gx, py - gy], -1)

    def velocities(self, times_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k = np.clip(np.floor(np.asarray(times_s) * self.fps).astype(int), 0, len(self.v_frames) - 1)
        return self.v_frames[k], self.w_frames[k]


def photometric_residual(log_frames: np.ndarray, flows: np.ndarray, border: int = 2) -> tuple[float, float]:
    """(median |log I_k+1(x + f_k(x)) − log I_k(x)|, median |log I_k+1(x) − log I_k(x)|) over views and pixels.

    ``log_frames`` [N, H, W], ``flows`` [N − 1, H, W, 2] forward pixel flow. The first is what the GT flow
    leaves unexplained (noise, interpolation, occlusion), the second the whole frame-to-frame change: when
    they are about equal the flow explains nothing and the frames' changes, hence the events, are noise.
    """
    from scipy.ndimage import map_coordinates

    h, w = log_frames.shape[1:]
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
    inner = (slice(border, h - border), slice(border, w - border))
    res, change = [], []
    for k in range(len(flows)):
        warped = map_coordinates(
            log_frames[k + 1], [gy + flows[k, ..., 1], gx + flows[k, ..., 0]], order=1, mode="nearest"
        )
        res.append(np.abs(warped - log_frames[k])[inner].ravel())
        change.append(np.abs(log_frames[k + 1] - log_frames[k])[inner].ravel())
    return float(np.median(np.concatenate(res))), float(np.median(np.concatenate(change)))


def simulate_rendered_sequence(
    scene_dir,
    first: int,
    n_frames: int,
    fps: float = 1000.0,
    config: SimulatorConfig | None = None,
) -> RenderedSequence:
    """ESIM events from views ``first .. first + n_frames − 1`` of a rendered scene (``transforms.json``).

    Images are 8-bit sRGB; we undo the sRGB curve to get linear intensity before the log. Keep the
    motion between views below about a pixel (render with many ``views``): ESIM interpolates the log
    intensity linearly between them.

    Render with many samples per pixel (e.g. 256 at 64×48; ``RenderConfig.view_range`` renders just the
    views needed). Path-tracing noise differs from view to view, and a real sensor sees none of it: at
    16 spp the walk-through room's log intensity carries noise of std ≈ 0.15 (against 256 spp), the median
    change between views is 0.084 of which the GT flow explains 5 % (0.080 left), and 60 % of the events
    (19.8k vs 7.5k from noise-free frames warped with the GT) were noise: no method beat zero flow. A
    ``UserWarning`` says so when the residual left by the GT flow exceeds a quarter of the threshold C.
    """
    import warnings

    from PIL import Image

    from vision3d.data.scene import load_scene

    scene = load_scene(scene_dir, check_images=False)
    frames = scene.frames[first : first + n_frames]
    if len(frames) < n_frames or any(f.flow_path is None for f in frames[:-1]):
        raise ValueError(f"{scene.transforms_path}: needs {n_frames} views with flow from view {first}")
    cam = frames[0].camera
    imgs = []
    for f in frames:
        s = np.asarray(Image.open(f.image_path).convert("RGB"), np.float64) / 255.0
        lin = np.where(s <= 0.04045, s / 12.92, ((s + 0.055) / 1.055) ** 2.4)
        imgs.append(lin @ np.array([0.2126, 0.7152, 0.0722]))
    config = config or SimulatorConfig()
    times = np.arange(n_frames) / fps
    imgs = np.stack(imgs)
    events = events_from_frames(imgs, times, config, source=str(scene_dir))
    flows = np.stack([np.load(f.flow_path) for f in frames[:-1]]).astype(np.float64)
    residual, change = photometric_residual(np.log(imgs + config.log_eps), flows)
    if residual > config.threshold / 4:
        warnings.warn(
            f"{scene_dir}: consecutive views differ by a median |Δ log I| of {residual:.3f} after warping with "
            f"the GT flow ({change:.3f} without), against a contrast threshold of {config.threshold}: many events "
            "will be render noise or interpolation, not motion (render more spp, or views closer together)",
            stacklevel=2,
        )
    poses = [opengl_to_opencv(f.c2w) for f in frames]
    vs, ws = [], []
    for p0, p1 in zip(poses[:-1], poses[1:], strict=True):
        r0, r1 = p0[:3, :3], p1[:3, :3]
        vs.append(r0.T @ (p1[:3, 3] - p0[:3, 3]) * fps)
        ws.append(Rotation.from_matrix(r0.T @ r1).as_rotvec() * fps)
    return RenderedSequence(
        events, cam, 0.0, times[-1], flows, np.stack(vs), np.stack(ws), fps, residual, change
    )

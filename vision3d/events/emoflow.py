"""E-MoFlow (NeurIPS 2025): unsupervised egomotion and optical flow from events, fitted per window.

Per window, with no pretrained weights, a flow INR (:mod:`~vision3d.events.flow_inr`) sharpens the image
of warped events by contrast maximization (:mod:`~vision3d.events.contrast`), and a cubic B-spline of the
camera's velocities (:mod:`~vision3d.events.velocity_spline`) is tied to it by the differential epipolar
constraint (:mod:`~vision3d.events.dec`): ``L = −(L_grad + L_var) + λ·Huber_δ(e)``, the DEC on after
``dec_warmup`` iterations. This module holds the configs and the fit loop; it follows the official code
(WU-CVGL/E-MoFlow, MVSEC setting) unless a config field says "ours". Decisions:

* ``t_ref`` is drawn from 100 evenly spaced values, each used equally often, shuffled (official);
* v's sign, which the DEC cannot see, is chosen for positive depth (``resolve_v_sign``; the paper's
  evaluation copies the ground truth's signs instead); ω is reported in rad/s;
* :meth:`EMoFlowConfig.cpu`: a 4×64 MLP, 400 iterations, higher learning rates, quadratic IWE voting and
  σ = 0.5 blur, because a 64×48 sensor traps bilinear voting at zero flow; the paper's values are the
  defaults. The device is ``"auto"`` (:func:`vision3d.backends.resolve_device`).
Measurements and the experiments behind these choices: docs/emoflow.md.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from torch import Tensor

from vision3d.backends import resolve_device
from vision3d.events.contrast import ContrastConfig, blur, contrast_terms, focus_loss, image_of_warped_events
from vision3d.events.dec import dec_loss, event_pixels, huber, init_spline_by_search
from vision3d.events.flow_inr import FlowINRConfig, PixelFlow, dense_flow, smoothness_loss, warp_events
from vision3d.events.geometry import dec_residual, resolve_translation_sign
from vision3d.events.velocity_spline import SplineConfig, VelocitySpline
from vision3d.events.windows import check_window
from vision3d.geometry.camera import PinholeCamera


@dataclass
class LossConfig(ContrastConfig):
    """The contrast terms' settings (:class:`~vision3d.events.contrast.ContrastConfig`) and the DEC's."""

    use_polarity: bool = False
    dec_weight: float = 2.5
    """λ for the DEC term (official MVSEC 2.5)."""
    dec_warmup: int = 200
    """Iterations of contrast maximization alone before the DEC switches on (MVSEC 200; DSEC 0)."""
    huber_delta: float = 0.1
    max_dec_points: int = 10_000
    smooth_weight: float = 0.0
    """Sparse smoothness (1-px finite differences of u) weight: 0 for MVSEC, 0.15 for DSEC."""
    vote_jitter: float = 0.0
    """Width (pixels) of a uniform random offset added to every warped event before voting, drawn afresh
    each iteration (ours; 0 = official). Events sit at pixel centres, so with bilinear voting the
    contrast has a kink (a sharp local optimum) at zero displacement of each axis; see docs/emoflow.md."""


@dataclass
class ScheduleConfig:
    iterations: int = 1000
    n_tref: int = 100
    euler_steps: int = 1
    """Euler steps warping each event to t_ref (released code: a single step)."""
    eval_euler_steps: int = 10
    """Euler steps for the dense flow of every pixel over an interval (official DenseFlowExtractor)."""
    optimizer: Literal["adam_exp", "adamw_cosine"] = "adam_exp"
    """MVSEC: Adam, exponential decay; DSEC: AdamW, linear warm-up then cosine."""
    lr_net: float = 1e-4
    lr_net_final: float = 6.3e-5
    lr_spline: float = 1e-3
    weight_decay: float = 1e-5
    warmup_steps: int = 100
    early_stop_burn_in: int = 0
    """0 = off; the official option uses 300."""
    early_stop_patience: int = 45


@dataclass
class EMoFlowConfig:
    inr: FlowINRConfig = field(default_factory=FlowINRConfig)
    spline: SplineConfig = field(default_factory=SplineConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    schedule: ScheduleConfig = field(default_factory=ScheduleConfig)
    resolve_v_sign: bool = True
    seed: int = 0
    device: str = "auto"
    """``auto`` (CUDA when torch sees a GPU, else CPU), ``cpu`` or ``cuda[:N]``."""

    @classmethod
    def cpu(cls, iterations: int = 400) -> EMoFlowConfig:
        """Small network and short schedule for CPU (see docs/emoflow.md)."""
        return cls(
            inr=FlowINRConfig(depth=4, width=64, skip_layer=2),
            loss=LossConfig(
                dec_warmup=iterations // 4, max_dec_points=2000, iwe_kernel="quadratic", blur_sigma=0.5
            ),
            schedule=ScheduleConfig(iterations=iterations, lr_net=3e-3, lr_net_final=1e-3, lr_spline=1e-2),
        )

    @classmethod
    def dsec(cls) -> EMoFlowConfig:
        """The official DSEC setting: positional encoding, DEC from the start, smoothness, AdamW+cosine."""
        return cls(
            inr=FlowINRConfig(pos_enc_freqs=6),
            loss=LossConfig(dec_warmup=0, smooth_weight=0.15),
            schedule=ScheduleConfig(optimizer="adamw_cosine", lr_net=2e-3, lr_net_final=1e-7, lr_spline=1e-3),
        )


@dataclass
class WindowResult:
    t_start_s: float
    t_end_s: float
    flow: Tensor
    """[H, W, 2] pixel displacement over the whole window, from every pixel at its start."""
    times_s: np.ndarray
    """[K] sample times (absolute seconds) of the velocities."""
    v: np.ndarray
    """[K, 3] unit linear velocity direction (camera frame)."""
    w: np.ndarray
    """[K, 3] angular velocity in rad/s (camera frame)."""
    iwe_before: Tensor
    iwe_after: Tensor
    history: dict
    seconds: float
    model: PixelFlow | None = None
    spline: VelocitySpline | None = None

    def sharpness(self) -> dict:
        """IWE variance before and after the warp."""
        vb, _ = contrast_terms(self.iwe_before)
        va, _ = contrast_terms(self.iwe_after)
        return {"var_before": float(vb), "var_after": float(va)}


def tref_schedule(iterations: int, n_tref: int, generator: torch.Generator) -> Tensor:
    """[iterations] reference times: ``n_tref`` evenly spaced values in [0, 1], repeated and shuffled."""
    values = torch.linspace(0, 1, n_tref).repeat(math.ceil(iterations / n_tref))
    return values[torch.randperm(len(values), generator=generator)][:iterations]


def _optimizers(flow: PixelFlow, spline: VelocitySpline, s: ScheduleConfig):
    if s.optimizer == "adam_exp":
        opt_net = torch.optim.Adam(flow.parameters(), lr=s.lr_net)
        gamma = (s.lr_net_final / s.lr_net) ** (1.0 / max(s.iterations, 1))
        sched = torch.optim.lr_scheduler.ExponentialLR(opt_net, gamma)
    elif s.optimizer == "adamw_cosine":
        opt_net = torch.optim.AdamW(flow.parameters(), lr=s.lr_net, weight_decay=s.weight_decay)

        def factor(i: int) -> float:
            if i < s.warmup_steps:
                return (i + 1) / s.warmup_steps
            p = (i - s.warmup_steps) / max(s.iterations - s.warmup_steps, 1)
            lo = s.lr_net_final / s.lr_net
            return lo + (1 - lo) * 0.5 * (1 + math.cos(math.pi * min(p, 1.0)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt_net, factor)
    else:
        raise ValueError(f"unknown optimizer {s.optimizer!r}")
    opt_spline = torch.optim.Adam(spline.parameters(), lr=s.lr_spline)
    return opt_net, sched, opt_spline


def fit_window(
    xy: Tensor,  # [N, 2] event pixels
    t_s: Tensor,  # [N] event times in seconds
    camera: PinholeCamera,
    config: EMoFlowConfig | None = None,
    t_window: tuple[float, float] | None = None,
    weights: Tensor | None = None,  # [N] polarities, used when loss.use_polarity
    progress=None,
    n_velocity_samples: int = 11,
    keep_model: bool = False,
) -> WindowResult:
    """Fit a fresh flow INR and velocity spline to one window of events (E-MoFlow)."""
    config = config or EMoFlowConfig()
    check_window(xy, t_s, weights)
    start = time.perf_counter()
    gen = torch.Generator().manual_seed(config.seed)
    torch.manual_seed(config.seed)
    dev = resolve_device(config.device)
    ta, tb = (float(t_s.min()), float(t_s.max())) if t_window is None else t_window
    span = max(tb - ta, 1e-9)
    xy = xy.to(dev, torch.float32)
    tn = ((t_s.double() - ta) / span).float().to(dev)
    wts = weights.to(dev, torch.float32) if (weights is not None and config.loss.use_polarity) else None
    h, w = camera.height, camera.width
    flow = PixelFlow(config.inr.setup(), w, h).to(dev)
    spline = config.spline.setup().to(dev)
    s, lc = config.schedule, config.loss
    opt_net, sched, opt_spline = _optimizers(flow, spline, s)
    trefs = tref_schedule(s.iterations, s.n_tref, gen)
    hist = {"loss": [], "focus": [], "dec": []}
    best, since_best = float("inf"), 0
    for it in range(s.iterations):
        t_ref = float(trefs[it])
        xy_ref = warp_events(flow, xy, tn, t_ref, s.euler_steps)
        xy_vote = xy_ref
        if lc.vote_jitter > 0:
            xy_vote = xy_ref + lc.vote_jitter * (torch.rand(xy_ref.shape, generator=gen).to(xy_ref) - 0.5)
        focus, _ = focus_loss(xy_vote, h, w, lc, wts)
        total = focus
        dec = torch.zeros((), device=dev)
        use_dec = it >= lc.dec_warmup and lc.dec_weight > 0
        if (
            use_dec
            and config.spline.init == "dec_search"
            and (it - lc.dec_warmup) % config.spline.search_every == 0
        ):
            with torch.no_grad():
                pix = event_pixels(xy_ref, camera, lc.max_dec_points, gen)
                u = flow(torch.full((pix.shape[0],), t_ref).to(pix), pix) / pix.new_tensor(
                    [camera.fx, camera.fy]
                )
                init_spline_by_search(
                    spline,
                    camera.normalize_index(pix),
                    u,
                    config.spline.search_directions,
                    t_ref=t_ref,
                    only_if_better=it > lc.dec_warmup,
                )
        if use_dec:
            dec = dec_loss(flow, spline, camera, xy_ref, t_ref, lc.max_dec_points, lc.huber_delta, gen)
            total = total + lc.dec_weight * dec
        if lc.smooth_weight > 0:
            idx = torch.randint(0, xy.shape[0], (min(xy.shape[0], lc.max_dec_points),), generator=gen).to(dev)
            total = total + lc.smooth_weight * smoothness_loss(flow, xy[idx], tn[idx])
        opt_net.zero_grad()
        opt_spline.zero_grad()
        total.backward()
        opt_net.step()
        sched.step()
        if use_dec:
            opt_spline.step()
        hist["loss"].append(float(total.detach()))
        hist["focus"].append(float(focus.detach()))
        hist["dec"].append(float(dec.detach()))
        if progress is not None:
            progress(it)
        if s.early_stop_burn_in and it >= s.early_stop_burn_in:
            if float(total) < best - 1e-6:
                best, since_best = float(total), 0
            else:
                since_best += 1
                if since_best > s.early_stop_patience:
                    break
    with torch.no_grad():
        iwe_before = blur(image_of_warped_events(xy, h, w, wts), lc.blur_kernel, lc.blur_sigma)
        iwe_after = blur(
            image_of_warped_events(warp_events(flow, xy, tn, 0.5, s.euler_steps), h, w, wts),
            lc.blur_kernel,
            lc.blur_sigma,
        )
        disp = dense_flow(flow, w, h, 0.0, 1.0, s.eval_euler_steps)
        ts = torch.linspace(0, 1, n_velocity_samples)
        v, om = spline(ts.to(dev))
        if config.resolve_v_sign:
            v = _resolve_sign(flow, camera, v, om, xy, tn)
    return WindowResult(
        t_start_s=ta,
        t_end_s=tb,
        flow=disp.cpu(),
        times_s=ta + ts.double().numpy() * span,
        v=v.cpu().numpy().astype(np.float64),
        w=(om / span).cpu().numpy().astype(np.float64),
        iwe_before=iwe_before.cpu(),
        iwe_after=iwe_after.cpu(),
        history=hist,
        seconds=time.perf_counter() - start,
        model=flow if keep_model else None,
        spline=spline if keep_model else None,
    )


def _resolve_sign(
    flow: PixelFlow, camera: PinholeCamera, v: Tensor, w: Tensor, xy: Tensor, tn: Tensor
) -> Tensor:
    """Flip every sample of v [K, 3] when the fitted flow at mid-window puts the scene behind the camera
    for the middle sample (decided on the CPU, where :func:`resolve_translation_sign` runs)."""
    mid = len(v) // 2
    t = torch.full((xy.shape[0],), 0.5).to(xy)
    u = flow(t, xy) / xy.new_tensor([camera.fx, camera.fy])
    fixed = resolve_translation_sign(
        camera.normalize_index(xy).double().cpu(), u.double().cpu(), v[mid].double().cpu(), w[mid].double().cpu()
    )
    return v if torch.dot(fixed.float(), v[mid].cpu()) > 0 else -v


def fit_egomotion(
    xy: Tensor,  # [N, 2] pixels
    flow_px: Tensor,  # [N, 2] pixel displacement per window at those pixels (instantaneous)
    camera: PinholeCamera,
    config: EMoFlowConfig | None = None,
    iterations: int = 500,
    lr: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """The egomotion half of E-MoFlow alone: fit a constant-in-time spline to a given flow by the DEC.

    Returns (unit v [3], ω [3] in rad per window). Useful to check the DEC/spline stage on an
    exact flow, and to score a flow field's rigid consistency.
    """
    config = config or EMoFlowConfig()
    torch.manual_seed(config.seed)
    spline = config.spline.setup()
    opt = torch.optim.Adam(spline.parameters(), lr=lr or config.schedule.lr_spline)
    x = camera.normalize_index(xy.float())
    u = flow_px.float() / flow_px.new_tensor([camera.fx, camera.fy]).float()
    t = torch.full((1,), 0.5)
    if config.spline.init == "dec_search":
        init_spline_by_search(spline, x, u, config.spline.search_directions)
    for _ in range(iterations):
        opt.zero_grad()
        v, w = spline(t)
        loss = huber(dec_residual(x, u, v[0], w[0]), config.loss.huber_delta)
        loss.backward()
        opt.step()
    with torch.no_grad():
        v, w = spline(t)
        v = v[0]
        if config.resolve_v_sign:
            v = resolve_translation_sign(x.double(), u.double(), v.double(), w[0].double()).float()
    return v.numpy().astype(np.float64), w[0].numpy().astype(np.float64)

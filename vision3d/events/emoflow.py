"""E-MoFlow: unsupervised egomotion and optical flow from events (NeurIPS 2025).

Per time window, and with no pretrained weights, it fits

* a flow field ``u_θ(t, x, y)`` as an implicit neural representation (:class:`FlowINR`),
  sharpening the image of warped events (IWE) by contrast maximization, and
* the camera's velocities ``v(t)`` (unit length: scale is unobservable) and ``ω(t)`` as a
  uniform cubic B-spline in velocity space (:class:`VelocitySpline`),

tied together by the differential epipolar constraint (DEC) ``e = uᵀ[v]×x − xᵀSx``:

    L = −(L_grad + L_var) + λ·Huber_δ(e)        (DEC on after ``dec_warmup`` iterations)

Everything here follows the official code (WU-CVGL/E-MoFlow, MVSEC setting) unless a line
below says otherwise; every constant is a config field.

Units and decisions (the paper is silent on these):

* **Time is normalised per window** to ``t̃ ∈ [0, 1]``. The INR takes ``(t̃, x̃, ỹ)`` with
  pixel coordinates mapped to [-1, 1] and returns pixel displacement per window; the spline's
  ``ω`` is in rad per window. Reported velocities are divided by the window length (rad/s).
  This keeps the DEC residual's magnitude (hence Huber's δ=0.1) independent of the window
  length.
* **DEC coordinates**: ``x = K⁻¹[p; 1]``, ``u = [u_x/f_x, u_y/f_y, 0]`` as in ``loss/dec.py``,
  evaluated at up to ``max_dec_points`` pixels where warped events land at ``t_ref``.
* **IWE** sums events regardless of polarity (``use_polarity=False``), bilinear voting,
  then a 3×3 Gaussian blur with σ=1 (kornia). ``L_var`` is the IWE's variance and
  ``L_grad`` the mean of ``|∂x| + |∂y|`` of an unnormalised Sobel filter (kornia
  ``spatial_gradient(normalized=False)``). Counts are rescaled to MVSEC's event density
  (``iwe_density_ref``) so that λ = 2.5 weighs the DEC as it does in the paper.
* **Initial flow ≈ 0**: the INR's last layer starts at ``out_init_scale`` times its default
  initialisation, so fitting starts from the unwarped events.
* **Sign of v**: the DEC is odd in ``v``. After fitting we pick the sign that gives positive
  depth (``resolve_v_sign``, :func:`~vision3d.events.geometry.resolve_translation_sign`); the
  paper's evaluation instead copies the ground truth's signs.
* The official schedule draws ``t_ref`` from 100 evenly spaced values, each used 10 times,
  shuffled; with ``iterations != 1000`` we keep 100 values and repeat them as needed.
* **CPU preset** (:meth:`EMoFlowConfig.cpu`): a 4×64 MLP, 400 iterations, DEC after 100,
  higher learning rates (3e-3 network, 1e-2 spline) so the shorter schedule converges, and the IWE
  voted with the quadratic B-spline and blurred with σ=0.5 (below). The paper's values are the
  defaults.
* **IWE voting on small sensors** (``LossConfig.iwe_kernel``, ``blur_sigma``). Events sit at pixel
  centres, so with bilinear voting the contrast of a warp has a kink at zero displacement of each
  axis: moving events by a fraction of a pixel splits each vote over two pixels, and the contrast
  drops linearly in |d| on top of any real gain. On the Blender walk (64×48, 24 ms, GT flow ≈ (3,
  1.5) px mean, up to 9 px vertically on the floor) this kept the INR's vertical flow at exactly 0
  (|u_y| < 0.1 px everywhere after 400 iterations) and the horizontal flow near 0 for the first 100;
  to sharpen the floor without vertical flow, the INR then compressed it horizontally (u_x down to
  −38 px where the truth is −6 to +2: event collapse). 430 of 2205 pixels had EPE > 10 px and made
  73 % of the total, which is why the mean EPE (6.16) exceeded zero flow's (6.09) while the median
  was 1.9 px. ω and v followed the wrong flow (v 79° off). Quadratic B-spline voting (bilinear
  averaged over a uniform sub-pixel offset, a deterministic version of ``vote_jitter``) is C¹ there
  and removes the trap. The 3×3 σ=1 blur on top smooths too much at 64×48: with it the fitted flow
  was 25 % short of the truth (mean (2.3, 1.25) px); σ=0.5 gives (2.84, 1.55). Measured at 400
  iterations, constant start, old → new: walk EPE 6.16 → 1.20, ω RMS 4.75 → 2.14 rad/s, v 79° → 6°;
  rotation EPE 0.73 → 0.55, ω 0.47 → 0.31; translation 1.51 → 1.35; mixed 3.46 → 1.87. The paper's
  sensor is 5× wider with similar displacements per window, so the official bilinear/σ=1 stay the
  defaults.
* **Optional direction search** (``SplineConfig.init="dec_search"``, ours, off by default):
  when the DEC switches on, start the spline at the best of a hemisphere of v directions (ω in
  closed form), and search again every ``search_every`` iterations keeping the better motion.

Why v's direction was 45-55° off, and what fixes it (measured on the simulated room corner,
``benchmarks/emoflow.py``; the geometry itself is right: at the exact flow the DEC residual of the
true (v, ω) is 1e-17 and the direction search returns v within 0.4°):

1. **Too little vertical flow for contrast maximization.** With v = (3, 0.8, 2) m/s over a 60 ms
   window the flow is ≈ 6 px horizontally but only ≈ 1.5 px vertically on 64×48 pixels, and the
   contrast objective prefers *zero* vertical flow (−(L_grad + L_var) is 3e-4 lower at u_y = 0 than at
   the true flow, with or without the blur). The fitted flow is then exactly rigid for a lateral
   translation (the DEC residual of the wrong motion is 5e-7, of the truth 1e-4), so no weight λ or
   Huber δ can pull it back. With 120 ms (≈ 3 px vertically, as MVSEC's dt=4 displacements), the
   true flow wins by 0.07 and the fitted flow's angular error falls from 14.6° to 2.5°.
2. **Adam crawls along the rotation/translation valley.** Even on the exact flow, from the official
   constant start (v ∝ (1, 1, 1), ω = 0.2 rad per window) Adam on the control points is still 63°
   off after 300 steps and 43° after 3000: with a 70° field of view, lateral translation and
   rotation about the perpendicular axis differ only at second order, so the cost is nearly flat
   along that valley. The direction search jumps there directly: 2.1° on the 120 ms window.
3. **But the search prefers translation.** On a pure rotation or a rotation+translation, the
   search's best direction explains the fitted flow as translation with ω ≈ 0 (the same second-order
   ambiguity, now decided by flow noise), so ω is lost; the official start, drifting towards
   forward v, keeps ω right there. So ``init`` stays "constant" by default: choose ``dec_search``
   when the motion is mostly translational. Neither start recovers the mixed motion at this scale.
4. **Mixed motion: the contrast-maximized flow, not the DEC, is wrong.** Room corner, v = (1.5, 0.3,
   1.5) m/s, ω = (0.5, 1, −0.5) rad/s, 120 ms, 64×48, CPU preset (``benchmarks/emoflow_mixed.py``):
   the direction search on the *exact* flow returns v within 0.6° and ω within 0.01 rad/s. The fitted
   flow at t̃ = 0.5 is 1.06 px off on average (of 12.4 px): its horizontal component is 5 % short,
   its vertical one (2.4 px on average) 25 % short, and flows above 16 px 14 % short. That error is
   itself nearly rigid: on the fitted flow the DEC cost of the true motion is 2.3e-4, of the searched
   one (v 35° off, ω ≈ (0, 0.15, −0.34) rad/s) 1.3e-5, so the joint fit follows the flow. The same
   holds with the DEC off (flow error 1.06 px, search 35° off: the DEC does not bias the flow), with
   4 Euler steps (1.05 px), without the IWE blur (0.96 px, vertical still 25 % short), and on a 128×96
   sensor (1.48 px of 24.7, search 33° off). A 240 ms window lands the official constant start 7.9°
   from v (ω (0.35, 0.91, −0.31)), but the search on that flow is still 28° off: luck of the path,
   not a recovered optimum. What is needed is a flow that resolves the weak vertical component;
   doubling the resolution did not give it, and neither does the paper's own configuration
   (``--preset paper``: 8×256 MLP, 1000 iterations, bilinear voting, σ=1 blur; 20 CPU-minutes): its
   vertical flow stays at zero (scale 0.01, the bilinear kink above), flow error 2.87 px, v 28.9° off,
   the search on its flow 48° off.
5. **Why the flow is short vertically: contrast prefers keeping events in the image.** The mixed motion
   expands the image (v_z = 1.5 m/s at 2 m), so warping to late t_ref carries events out of the 64×48
   frame (24.5 % of them at t_ref = 1, 2 % at t_ref = 0). With the IWE rescaled by *all* events, each
   event that leaves costs contrast, so the objective itself is biased: along the exact warp (per-event
   trajectories from the scene) with its vertical displacement scaled by s, −(L_grad + L_var) averaged
   over 11 t_ref is lowest at s = 0.88 (x: 0.99); at t_ref = 1 alone at s = 0.55, at t_ref = 0 at 1.04;
   the paper's bilinear/σ=1 IWE: 0.85; no blur 0.89; 128×96: 0.95. The fitted INR's warp scores better
   than the exact warp (−1.756 vs −1.741), so no optimiser or network fixes this. Rescaling by the vote
   mass that lands inside the image (``LossConfig.iwe_density_over="inside"``, differentiable) moves the
   optimum to s = 1.01 (x 1.00), the exact warp now beats the fitted one (−1.982 vs −1.980), and the fit
   improves: window EPE 1.87 → 1.28 px, flow at t̃ = 0.5 off by 1.06 → 0.80 px, scale fitted/exact
   x 0.95 → 0.98, y 0.75 → 0.95. **v is still not recovered**: the search on that flow is 28° off
   (31° with the DEC off: same flow), the joint fit 46° (constant start) / 30° (search). What remains is
   not a uniform scale (the exact flow with u_y × 0.95 gives v 2.8° off, × 0.85 13°) but a flattened
   vertical gradient where events are sparse: in the top-left eighth (30 events in 2 blocks of 8×8 px)
   the truth is −4.5 px upwards, the fit ≈ −0.3; excluding a 12-px border the search is still 22° off.
   Not fixed by 4 Euler steps (flow 0.70 px, search 28°), 800 iterations (worse: 1.67 px, 69°) or a
   128×96 sensor (1.30 px of 24.7, search 31°).
   Separately, the single-Euler-step INR can only represent straight trajectories: the DEC on the
   exact window displacement (the benchmark's GT flow, 0 → 1) gives v 6° off, on half-window secants 3°.
   ``"inside"`` is not the default (official raw counts lose events at the border too, negligibly on
   MVSEC's 346×260 with a few pixels of flow), nor in the CPU preset: over ``benchmarks/emoflow.py``'s
   table (``--density-over inside`` vs ``events``, window EPE, constant start / search) it helps where
   the image expands or rotates and hurts elsewhere: rotation 0.55 → 0.46 px (ω RMS 0.31 → 0.19 rad/s),
   translation 120 ms 1.35 → 0.88 px (v with the search 4.5° → 7.3°), mixed 1.87 → 1.28 px (v 44°/35° →
   46°/31°), but translation 60 ms 0.47 → 0.77 px and the Blender walk 1.20 → 1.43 px (v 6.0° → 13.7°).
   Scoring v as the paper does (per-component signs from v_gt, ``metrics.velocity_error_as_emoflow_scores``)
   does not hide the mixed-motion miss either: 30–44° between |v̂| and |v_gt|. Nor does trusting only
   well-observed pixels: the fitted flow is 0.65 px off even where 16+ events fall, and the search on it
   returns the same v (28°) with pixels weighted by their events or restricted to ≥ 8 events. The error
   is an under-estimated expansion towards the borders: by 8-px column band the horizontal error runs
   from +1.4 px (left edge, where the flow is 19 px) to −0.7 px (right edge), by row band the vertical
   one from +1.0 px (top) to −0.6 px (bottom), and within 8 px of the centre it is below 0.3 px; events
   near the border leave the frame under late t_ref, so fewer warps constrain the flow there. NeRF
   positional encoding (4 or 6 frequencies, as the DSEC preset, without its smoothness term) makes it
   worse: window EPE 3.1–3.2 px, v 49–50° off. Voting into a canvas padded by 8 or 16 px, so that
   events leaving the frame still count (tried, not kept), does not help either: vertical scale
   0.78–0.81, window EPE 1.42–1.74 px, search 35–38° off. Nor does keeping warps short of the late
   t_ref that carry events out (t_ref drawn from [0, 0.5]: with "inside" EPE 1.26 px, vertical scale
   1.04, search 22° off, the joint fit still 45°; [0.25, 0.75] or t_ref = 0.5 alone are worse).

Measured at CPU scale (64×48, 400 iterations; see the benchmark's table): ω of a pure rotation
(RMS 0.47 rad/s of 2.7, constant start); v of a pure translation within a few degrees with the
search and a window long enough for ≈ 3 px of the weaker flow component; mixed motion not recovered.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision3d.events.geometry import dec_residual, resolve_translation_sign
from vision3d.events.stream import EventFileError
from vision3d.geometry.camera import PinholeCamera

# --- configs ----------------------------------------------------------------------------


@dataclass
class FlowINRConfig:
    depth: int = 8
    """Hidden layers (official: 8)."""
    width: int = 256
    skip_layer: int = 4
    """Layer that re-reads the encoded input (concatenation), as NeRF."""
    residual: bool = True
    """Residual additions between equal-width hidden layers (official)."""
    pos_enc_freqs: int = 0
    """NeRF positional-encoding frequencies; 0 = raw (t, x, y) (official MVSEC), 6 for DSEC."""
    out_init_scale: float = 1e-2

    def setup(self) -> FlowINR:
        return FlowINR(self)


@dataclass
class SplineConfig:
    n_control: int = 4
    """Control points per window for v and for ω (4 = one cubic segment, official)."""
    init_value: float = 0.2
    """Initial value of every control-point coordinate (official)."""
    init: Literal["constant", "dec_search"] = "constant"
    """``constant``: every coordinate ``init_value`` (official). ``dec_search`` (ours): when the
    DEC switches on, set v to the best of ``search_directions`` unit directions on a hemisphere
    with ω solved in closed form by least squares for each (the residual is linear in ω), then
    optimise jointly as usual. It avoids the local minimum at forward motion that a lateral
    translation falls into (narrow fields of view confuse v_x with ω_y)."""
    search_directions: int = 400
    search_every: int = 100
    """With ``dec_search``, search again every this many iterations and keep whichever of the
    current and the searched motion has the lower DEC residual (the flow keeps sharpening)."""

    def setup(self) -> VelocitySpline:
        return VelocitySpline(self)


@dataclass
class LossConfig:
    blur_kernel: int = 3
    blur_sigma: float = 1.0
    use_polarity: bool = False
    dec_weight: float = 2.5
    """λ for the DEC term (official MVSEC 2.5)."""
    dec_warmup: int = 200
    """Iterations of contrast maximization alone before the DEC switches on (MVSEC 200; DSEC 0)."""
    huber_delta: float = 0.1
    max_dec_points: int = 10_000
    iwe_density_ref: float | None = 30_000 / (346 * 260)
    """Scale the IWE so its mean is this many events per pixel before the contrast terms (ours).
    λ and δ were tuned on MVSEC (30k events on 346×260, 0.33 events/pixel); variance grows with
    the square of the density, so without this a dense small sensor makes the DEC term
    negligible. ``None`` uses raw counts as the official code does."""
    iwe_density_over: Literal["events", "inside"] = "events"
    """What the ``iwe_density_ref`` rescaling divides by (ours). ``events``: every event of the window, so
    the rescaled IWE (like the official raw counts) loses contrast as warped events leave the image, and
    contrast maximization prefers warps that keep them in. ``inside``: the vote mass that lands inside the
    image (differentiable in the warp), so the IWE's mean is ``iwe_density_ref`` whatever the warp. See the
    module docstring (mixed motion) for what it changes."""
    smooth_weight: float = 0.0
    """Sparse smoothness (1-px finite differences of u) weight: 0 for MVSEC, 0.15 for DSEC."""
    iwe_kernel: Literal["bilinear", "quadratic"] = "bilinear"
    """How warped events vote into the IWE (see :func:`image_of_warped_events`). ``bilinear`` is official."""
    vote_jitter: float = 0.0
    """Width (pixels) of a uniform random offset added to every warped event before voting, drawn afresh
    each iteration (ours; 0 = official). Events sit at pixel centres, so with bilinear voting the
    contrast has a kink (a sharp local optimum) at zero displacement of each axis; see the module
    docstring."""


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
    device: str = "cpu"

    @classmethod
    def cpu(cls, iterations: int = 400) -> EMoFlowConfig:
        """Small network and short schedule for CPU (see the module docstring)."""
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


# --- flow INR ---------------------------------------------------------------------------


def positional_encoding(x: Tensor, n_freqs: int) -> Tensor:
    """NeRF encoding ``[x, sin(2^k π x), cos(2^k π x)]_{k<n}``: [..., D] -> [..., D(1+2n)]."""
    if n_freqs == 0:
        return x
    freqs = (2.0 ** torch.arange(n_freqs, dtype=x.dtype, device=x.device)) * math.pi
    xf = x[..., None] * freqs
    return torch.cat([x, torch.sin(xf).flatten(-2), torch.cos(xf).flatten(-2)], -1)


class FlowINR(nn.Module):
    """``u_θ(t̃, x̃, ỹ)``: an MLP with a skip connection giving pixel displacement per window."""

    def __init__(self, config: FlowINRConfig):
        super().__init__()
        self.config = config
        d_in = 3 * (1 + 2 * config.pos_enc_freqs)
        self.layers = nn.ModuleList()
        for i in range(config.depth):
            fan_in = d_in if i == 0 else config.width
            if i == config.skip_layer and i > 0:
                fan_in += d_in
            self.layers.append(nn.Linear(fan_in, config.width))
        self.out = nn.Linear(config.width, 2)
        with torch.no_grad():
            self.out.weight.mul_(config.out_init_scale)
            self.out.bias.zero_()

    def forward(self, t: Tensor, x: Tensor) -> Tensor:
        """t [N] in [0, 1], x [N, 2] in [-1, 1] -> displacement per window [N, 2] in pixels."""
        enc = positional_encoding(torch.cat([t[:, None] * 2 - 1, x], -1), self.config.pos_enc_freqs)
        h = enc
        for i, layer in enumerate(self.layers):
            skip = i == self.config.skip_layer and i > 0
            z = torch.relu(layer(torch.cat([h, enc], -1) if skip else h))
            h = h + z if (self.config.residual and i > 0 and not skip) else z
        return self.out(h)


class PixelFlow(nn.Module):
    """Wraps a :class:`FlowINR` so it takes pixel coordinates; sensor size fixes the normalisation."""

    def __init__(self, inr: FlowINR, width: int, height: int):
        super().__init__()
        self.inr = inr
        self.register_buffer("scale", torch.tensor([2.0 / max(width - 1, 1), 2.0 / max(height - 1, 1)]))

    def forward(self, t: Tensor, xy: Tensor) -> Tensor:
        return self.inr(t, xy * self.scale - 1)


def warp_events(
    flow: PixelFlow,
    xy: Tensor,  # [N, 2] pixels
    t: Tensor,  # [N] normalised time
    t_ref: float | Tensor,
    steps: int = 1,
) -> Tensor:  # [N, 2] pixels at t_ref
    """Integrate ``dx/dt = u(t, x)`` from each event's time to ``t_ref`` with Euler steps."""
    h = (t_ref - t) / steps
    for _ in range(steps):
        xy = xy + h[:, None] * flow(t, xy)
        t = t + h
    return xy


@torch.no_grad()
def dense_flow(
    flow: PixelFlow, width: int, height: int, t0: float = 0.0, t1: float = 1.0, steps: int = 10
) -> Tensor:
    """[H, W, 2] displacement of every pixel from t0 to t1 (normalised times), Euler-integrated."""
    gy, gx = torch.meshgrid(torch.arange(height), torch.arange(width), indexing="ij")
    xy0 = torch.stack([gx, gy], -1).reshape(-1, 2).to(flow.scale)
    t = torch.full((xy0.shape[0],), float(t0)).to(xy0)
    xy1 = warp_events(flow, xy0, t, float(t1), steps)
    return (xy1 - xy0).reshape(height, width, 2)


# --- image of warped events and contrast ------------------------------------------------


def image_of_warped_events(
    xy: Tensor,  # [N, 2] pixel positions
    height: int,
    width: int,
    weights: Tensor | None = None,  # [N], or [N, K] for K images voted in one pass
    kernel: Literal["bilinear", "quadratic"] = "bilinear",
) -> Tensor:  # [H, W], or [K, H, W]
    """Voting of events into an image; differentiable in ``xy``; outside votes dropped.

    ``bilinear`` (official) spreads each event over its 4 neighbouring pixels. ``quadratic`` uses the
    separable quadratic B-spline (3×3 pixels), which is bilinear voting averaged over a uniform
    sub-pixel offset: it is smooth (C¹) in ``xy``, so an event at a pixel centre has no kink there.
    """
    w = torch.ones_like(xy[:, :1]) if weights is None else weights.reshape(xy.shape[0], -1)  # [N, K]
    if kernel == "bilinear":
        x0, y0 = torch.floor(xy[:, 0]), torch.floor(xy[:, 1])
        fx, fy = xy[:, 0] - x0, xy[:, 1] - y0
        taps_x = ((0, 1 - fx), (1, fx))
        taps_y = ((0, 1 - fy), (1, fy))
    elif kernel == "quadratic":
        x0, y0 = torch.round(xy[:, 0]), torch.round(xy[:, 1])
        fx, fy = xy[:, 0] - x0, xy[:, 1] - y0  # in [-0.5, 0.5]
        taps_x = ((-1, 0.5 * (0.5 - fx) ** 2), (0, 0.75 - fx * fx), (1, 0.5 * (0.5 + fx) ** 2))
        taps_y = ((-1, 0.5 * (0.5 - fy) ** 2), (0, 0.75 - fy * fy), (1, 0.5 * (0.5 + fy) ** 2))
    else:
        raise ValueError(f"unknown voting kernel {kernel!r}")
    img = xy.new_zeros(height * width, w.shape[1])
    for dy, wy in taps_y:
        yi = y0.long() + dy
        for dx, wx in taps_x:
            xi = x0.long() + dx
            ok = (xi >= 0) & (xi < width) & (yi >= 0) & (yi < height)
            img = img.index_add(0, (yi * width + xi)[ok], ((wx * wy)[:, None] * w)[ok])
    img = img.T.reshape(-1, height, width)
    return img if weights is not None and weights.dim() == 2 else img[0]


def blur(img: Tensor, kernel: int = 3, sigma: float = 1.0) -> Tensor:
    import kornia

    if sigma <= 0:
        return img
    return kornia.filters.gaussian_blur2d(img[None, None], (kernel, kernel), (sigma, sigma))[0, 0]


def contrast_terms(iwe: Tensor) -> tuple[Tensor, Tensor]:  # ([], [])
    """(variance, mean |Sobel| gradient magnitude) of an IWE [H, W]."""
    import kornia

    grad = kornia.filters.spatial_gradient(iwe[None, None], mode="sobel", normalized=False)[0, 0]
    return iwe.var(), grad.abs().sum(0).mean()


def focus_loss(xy_warped: Tensor, height: int, width: int, loss: LossConfig, weights: Tensor | None = None):
    """``−(L_grad + L_var)`` of the blurred IWE (density-rescaled), and the blurred IWE in event counts."""
    if loss.iwe_density_over not in ("events", "inside"):
        raise ValueError(f"unknown iwe_density_over {loss.iwe_density_over!r}")
    mass_inside = loss.iwe_density_ref is not None and loss.iwe_density_over == "inside"
    if mass_inside and weights is not None:  # signed weights: their IWE and the |w| mass in one vote
        votes, mass = image_of_warped_events(xy_warped, height, width, torch.stack([weights, weights.abs()], -1),
                                             loss.iwe_kernel)  # fmt: skip
    else:
        votes = mass = image_of_warped_events(xy_warped, height, width, weights, loss.iwe_kernel)
    iwe = blur(votes, loss.blur_kernel, loss.blur_sigma)
    scaled = iwe
    if loss.iwe_density_ref is not None:
        n = mass.sum().clamp_min(1.0) if mass_inside else max(xy_warped.shape[0], 1)
        scaled = iwe * (loss.iwe_density_ref * height * width / n)
    var, grad = contrast_terms(scaled)
    return -(grad + var), iwe


# --- velocity spline --------------------------------------------------------------------


def cubic_bspline_basis(u: Tensor) -> Tensor:
    """Uniform cubic B-spline basis at local parameter u ∈ [0, 1]: [N] -> [N, 4]."""
    u2, u3 = u * u, u * u * u
    return torch.stack([(1 - u) ** 3, 3 * u3 - 6 * u2 + 4, -3 * u3 + 3 * u2 + 3 * u + 1, u3], -1) / 6


class VelocitySpline(nn.Module):
    """Uniform cubic B-splines for ``v(t̃)`` (returned unit length) and ``ω(t̃)`` over t̃ ∈ [0, 1]."""

    def __init__(self, config: SplineConfig):
        super().__init__()
        if config.n_control < 4:
            raise ValueError(f"a cubic B-spline needs at least 4 control points, got {config.n_control}")
        self.config = config
        self.ctrl_v = nn.Parameter(torch.full((config.n_control, 3), config.init_value))
        self.ctrl_w = nn.Parameter(torch.full((config.n_control, 3), config.init_value))

    def _eval(self, ctrl: Tensor, t: Tensor) -> Tensor:
        n_seg = ctrl.shape[0] - 3
        s = t.clamp(0, 1) * n_seg
        i = torch.clamp(torch.floor(s), max=n_seg - 1).long()
        basis = cubic_bspline_basis(s - i)  # [N, 4]
        idx = i[:, None] + torch.arange(4)  # [N, 4]
        return (basis[..., None] * ctrl[idx]).sum(1)

    def forward(self, t: Tensor) -> tuple[Tensor, Tensor]:
        """t [N] -> (v [N, 3] unit, ω [N, 3] rad per window)."""
        v = self._eval(self.ctrl_v, t)
        return v / v.norm(dim=-1, keepdim=True).clamp_min(1e-9), self._eval(self.ctrl_w, t)


def fibonacci_hemisphere(n: int) -> Tensor:
    """[n, 3] unit vectors spread evenly over the hemisphere z >= 0 (v and −v are the same for the DEC)."""
    i = torch.arange(n, dtype=torch.float64) + 0.5
    z = i / n
    r = torch.sqrt(1 - z * z)
    phi = i * math.pi * (3 - math.sqrt(5))
    return torch.stack([r * torch.cos(phi), r * torch.sin(phi), z], -1)


@torch.no_grad()
def search_egomotion(
    x: Tensor,  # [N, 2] normalised coordinates
    u: Tensor,  # [N, 2] normalised flow
    n_directions: int = 400,
) -> tuple[Tensor, Tensor]:  # ([3], [3])
    """Best unit v over a hemisphere grid, with ω the least-squares solution for each v.

    ``e = (v × x)·u + ω·(x × (v × x))`` is linear in ω, so for fixed v the best ω is a 3×3 solve.
    """
    x, u = x.double(), u.double()
    xh = torch.cat([x, torch.ones_like(x[:, :1])], -1)  # [N, 3]
    uh = torch.cat([u, torch.zeros_like(u[:, :1])], -1)
    vs = fibonacci_hemisphere(n_directions)  # [D, 3]
    vx = torch.linalg.cross(
        vs[:, None, :].expand(-1, len(x), -1), xh[None].expand(len(vs), -1, -1)
    )  # [D, N, 3]
    a = (vx * uh[None]).sum(-1)  # [D, N]
    b = torch.linalg.cross(xh[None].expand_as(vx), vx)  # [D, N, 3]
    btb = b.transpose(1, 2) @ b + 1e-9 * torch.eye(3, dtype=x.dtype)
    w = -torch.linalg.solve(btb, (b.transpose(1, 2) @ a[..., None]))[..., 0]  # [D, 3]
    res = a + (b @ w[..., None])[..., 0]
    cost = res.pow(2).mean(-1)
    k = int(torch.argmin(cost))
    return vs[k].float(), w[k].float()


def _init_spline_by_search(
    spline: VelocitySpline, x: Tensor, u: Tensor, n: int, t_ref: float = 0.5, only_if_better: bool = False
) -> None:
    v, w = search_egomotion(x, u, n)
    with torch.no_grad():
        if only_if_better:
            v_now, w_now = spline(torch.full((1,), float(t_ref)))
            now = dec_residual(x, u, v_now[0], w_now[0]).pow(2).mean()
            if dec_residual(x, u, v, w).pow(2).mean() >= now:
                return
        scale = spline.ctrl_v.detach().norm(dim=-1).mean()
        spline.ctrl_v.copy_((v * scale).expand_as(spline.ctrl_v))
        spline.ctrl_w.copy_(w.expand_as(spline.ctrl_w))


def huber(x: Tensor, delta: float) -> Tensor:
    return F.huber_loss(x, torch.zeros_like(x), delta=delta)


def _event_pixels(xy_ref: Tensor, camera: PinholeCamera, max_points: int, generator=None) -> Tensor:
    """Distinct pixels [M, 2] where warped events land inside the image, at most ``max_points`` (random)."""
    pix = torch.round(xy_ref.detach())
    ok = (pix[:, 0] >= 0) & (pix[:, 0] < camera.width) & (pix[:, 1] >= 0) & (pix[:, 1] < camera.height)
    lin = torch.unique((pix[ok, 1] * camera.width + pix[ok, 0]).long())
    pix = torch.stack([lin % camera.width, lin // camera.width], -1).to(xy_ref.dtype)
    if pix.shape[0] > max_points:
        pix = pix[torch.randperm(pix.shape[0], generator=generator)[:max_points]]
    return pix


def dec_loss(
    flow: PixelFlow,
    spline: VelocitySpline,
    camera: PinholeCamera,
    xy_ref: Tensor,  # [N, 2] warped event positions at t_ref
    t_ref: float,
    loss: LossConfig,
    generator: torch.Generator | None = None,
) -> Tensor:
    """Huber DEC residual at (≤ max_dec_points) pixels where warped events land at ``t_ref``."""
    pix = _event_pixels(xy_ref, camera, loss.max_dec_points, generator)
    if pix.shape[0] == 0:
        return xy_ref.new_zeros(())
    t = torch.full((pix.shape[0],), float(t_ref)).to(pix)
    u = flow(t, pix)
    f = u.new_tensor([camera.fx, camera.fy])
    v, w = spline(t[:1])
    e = dec_residual(camera.normalize_index(pix), u / f, v[0], w[0])
    return huber(e, loss.huber_delta)


def smoothness_loss(flow: PixelFlow, xy: Tensor, t: Tensor) -> Tensor:
    """Mean 1-px finite difference of u at (t, xy) in x and in y (DSEC setting)."""
    u = flow(t, xy)
    ux = flow(t, xy + xy.new_tensor([1.0, 0.0]))
    uy = flow(t, xy + xy.new_tensor([0.0, 1.0]))
    return (ux - u).abs().mean() + (uy - u).abs().mean()


# --- fitting ----------------------------------------------------------------------------


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
        vb, _ = contrast_terms(self.iwe_before)
        va, _ = contrast_terms(self.iwe_after)
        return {"var_before": float(vb), "var_after": float(va)}


def check_window(xy: Tensor, t_s: Tensor, weights: Tensor | None = None) -> None:
    """Refuse a window that cannot be fitted (:class:`EventFileError`): wrong shapes, no events, non-finite values.

    NaN coordinates would otherwise give NaN flow silently, or index out of bounds in CMax's patch grid.
    """
    if xy.ndim != 2 or xy.shape[1] != 2 or t_s.shape != xy.shape[:1]:
        raise EventFileError(None, f"xy must be [N, 2] and t_s [N], got {tuple(xy.shape)} and {tuple(t_s.shape)}")
    if xy.shape[0] == 0:
        raise EventFileError(None, "cannot fit an empty window")
    for name, values in (("coordinates", xy), ("timestamps", t_s), ("weights", weights)):
        if values is not None and not bool(torch.isfinite(values).all()):
            bad = int((~torch.isfinite(values)).reshape(len(values), -1).any(-1).sum())
            raise EventFileError(None, f"{bad} of {len(values)} events have NaN or infinite {name}")


def tref_schedule(iterations: int, n_tref: int, generator: torch.Generator) -> Tensor:
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
    dev = torch.device(config.device)
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
        dec = torch.zeros(())
        use_dec = it >= lc.dec_warmup and lc.dec_weight > 0
        if (
            use_dec
            and config.spline.init == "dec_search"
            and (it - lc.dec_warmup) % config.spline.search_every == 0
        ):
            with torch.no_grad():
                pix = _event_pixels(xy_ref, camera, lc.max_dec_points, gen)
                u = flow(torch.full((pix.shape[0],), t_ref).to(pix), pix) / pix.new_tensor(
                    [camera.fx, camera.fy]
                )
                _init_spline_by_search(
                    spline,
                    camera.normalize_index(pix),
                    u,
                    config.spline.search_directions,
                    t_ref=t_ref,
                    only_if_better=it > lc.dec_warmup,
                )
        if use_dec:
            dec = dec_loss(flow, spline, camera, xy_ref, t_ref, lc, gen)
            total = total + lc.dec_weight * dec
        if lc.smooth_weight > 0:
            idx = torch.randint(0, xy.shape[0], (min(xy.shape[0], lc.max_dec_points),), generator=gen)
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
    """Per velocity sample, flip v where the fitted flow says the scene would lie behind the camera."""
    mid = len(v) // 2
    t = torch.full((xy.shape[0],), 0.5).to(xy)
    u = flow(t, xy) / xy.new_tensor([camera.fx, camera.fy])
    fixed = resolve_translation_sign(
        camera.normalize_index(xy).double(), u.double(), v[mid].double(), w[mid].double()
    )
    return v if torch.dot(fixed.float(), v[mid]) > 0 else -v


def fit_egomotion(
    xy: Tensor,  # [N, 2] pixel indices (event x, y; centres at +0.5)
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
        _init_spline_by_search(spline, x, u, config.spline.search_directions)
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


def fit_stream(stream, camera: PinholeCamera, windows, config: EMoFlowConfig | None = None, progress=None):
    """Fit every window (a list of :class:`~vision3d.events.windows.Window`) afresh; yields WindowResult."""
    config = config or EMoFlowConfig()
    xy_all, t_all, p_all = stream.to_torch()
    t0 = float(stream.t[0]) * 1e-6
    for win in windows:
        sl = win.slice
        ta = win.t_start_us * 1e-6 - t0
        tb = win.t_end_us * 1e-6 - t0
        res = fit_window(xy_all[sl], t_all[sl], camera, config, (ta, tb), p_all[sl], progress=progress)
        res.t_start_s += t0
        res.t_end_s += t0
        res.times_s = res.times_s + t0
        yield res

"""Pictures for ``v3d flow``: IWE before/after, flow colour wheel, velocities over time (matplotlib, Agg)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def flow_to_rgb(flow: np.ndarray, max_norm: float | None = None) -> np.ndarray:
    """[H, W, 2] flow -> [H, W, 3] uint8 through the Middlebury colour wheel (torchvision's ``flow_to_image``)."""
    import torch
    from torchvision.utils import flow_to_image

    f = torch.as_tensor(np.asarray(flow, dtype=np.float32)).permute(2, 0, 1)
    if max_norm is not None:  # flow_to_image normalises by the max; pin the scale for side-by-side pictures
        f = f / max(max_norm, 1e-9) * f.norm(dim=0).max().clamp_min(1e-9)
    return flow_to_image(f).permute(1, 2, 0).numpy()


def save_window_figure(path: str | Path, iwe_before, iwe_after, flow, gt_flow=None, title: str = "") -> Path:
    plt = _plt()
    panels = [
        ("IWE before (no warp)", np.asarray(iwe_before), "gray"),
        ("IWE after (E-MoFlow warp)", np.asarray(iwe_after), "gray"),
    ]
    vmax = float(np.linalg.norm(gt_flow if gt_flow is not None else flow, axis=-1).max())
    panels.append(("flow (colour wheel)", flow_to_rgb(flow, vmax), None))
    if gt_flow is not None:
        panels.append(("ground-truth flow", flow_to_rgb(gt_flow, vmax), None))
    fig, axes = plt.subplots(1, len(panels), figsize=(3.2 * len(panels), 3))
    top = max(float(np.percentile(panels[0][1], 99.5)), float(np.percentile(panels[1][1], 99.5)), 1e-6)
    for ax, (name, img, cmap) in zip(axes, panels, strict=True):
        ax.imshow(img, cmap=cmap, vmin=0 if cmap else None, vmax=top if cmap else None)
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def save_velocity_plot(
    path: str | Path, times_s, v, w, v_gt=None, w_gt=None, w_ref=None, w_ref_label="IMU gyro"
) -> Path:
    """Two panels: unit linear velocity and angular velocity (rad/s) over time, with references if given."""
    plt = _plt()
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
    colors = ["tab:red", "tab:green", "tab:blue"]
    for k, name in enumerate("xyz"):
        a1.plot(times_s, v[:, k], color=colors[k], label=f"v_{name}")
        a2.plot(times_s, w[:, k], color=colors[k], label=f"ω_{name}")
        if v_gt is not None:
            a1.plot(times_s, v_gt[:, k], "--", color=colors[k], alpha=0.6)
        if w_gt is not None:
            a2.plot(times_s, w_gt[:, k], "--", color=colors[k], alpha=0.6)
        if w_ref is not None:
            a2.plot(w_ref[0], w_ref[1][:, k], ":", color=colors[k], alpha=0.6)
    a1.set_ylabel("v / |v|")
    a2.set_ylabel("ω (rad/s)")
    a2.set_xlabel("time (s)")
    extra = " (dashed: ground truth)" if v_gt is not None or w_gt is not None else ""
    extra += f" (dotted: {w_ref_label})" if w_ref is not None else ""
    a1.set_title("estimated egomotion" + extra, fontsize=9)
    a1.legend(fontsize=7, ncol=3)
    a2.legend(fontsize=7, ncol=3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return Path(path)


def save_event_frame(path: str | Path, stream, max_events: int | None = None) -> Path:
    """Events accumulated with polarity colour (red on, blue off)."""
    plt = _plt()
    ev = stream.events if max_events is None else stream.events[:max_events]
    img = np.zeros((stream.height, stream.width, 3))
    np.add.at(img[..., 0], (ev["y"][ev["p"] > 0], ev["x"][ev["p"] > 0]), 1)
    np.add.at(img[..., 2], (ev["y"][ev["p"] < 0], ev["x"][ev["p"] < 0]), 1)
    img = np.clip(img / max(np.percentile(img[img > 0], 95), 1) if img.any() else img, 0, 1)
    plt.imsave(path, img)
    return Path(path)

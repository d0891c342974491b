"""Events from a rendered scene (``simulate_rendered_sequence``), checked without Blender on the bundled scene.

The ground truth (chained Vector-pass flow, ω from the poses) must agree with flow computed independently from
depth and poses, and a render whose views change by noise rather than motion (too few samples per pixel:
the Blender walk benchmark at 16 spp, where no method beat zero flow) must be reported, not silently simulated.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image
from scipy.spatial.transform import Rotation

from vision3d.data.bundled import bundled_scene_path
from vision3d.data.consistency import flow_at_infinity, flow_from_depth
from vision3d.events.simulator import photometric_residual, simulate_rendered_sequence
from vision3d.geometry.se3 import opengl_to_opencv


@pytest.fixture(scope="module")
def bundled():
    root = bundled_scene_path()
    return root, json.loads((root / "transforms.json").read_text())


def _k(meta):
    return np.array([[meta["fl_x"], 0, meta["cx"]], [0, meta["fl_y"], meta["cy"]], [0, 0, 1.0]])


def test_chained_flow_and_rotation_match_depth_and_poses(bundled):
    root, meta = bundled
    fps = 1000.0
    with pytest.warns(UserWarning, match="GT flow"):  # 15° between views: far too coarse for events
        seq = simulate_rendered_sequence(root, 0, 3, fps)
    frames, K = meta["frames"], _k(meta)  # noqa: N806
    poses = [np.array(f["transform_matrix"]) for f in frames[:3]]
    depth = np.array(Image.open(root / frames[0]["depth_file_path"]), np.float64) * meta.get("depth_unit_scale_factor", 1e-3)

    # two views chained = flow from view 0's depth straight into view 2 (same sign, axes, units)
    expected = flow_from_depth(depth, K, poses[0], poses[2])
    chained = seq.flow(0.0, 2 / fps)
    valid = np.isfinite(expected).all(-1)
    assert np.linalg.norm(expected, axis=-1)[valid].mean() > 10  # the camera did move
    epe = np.linalg.norm(chained - expected, axis=-1)[valid]
    assert np.median(epe) < 0.3, np.median(epe)

    # ω (rad/s, camera axes x right, y down, z forward) over one view moves points at infinity as the poses do
    rot = Rotation.from_rotvec(seq.w_frames[0] / fps).as_matrix()  # camera 1 in camera 0's axes
    h, w = depth.shape
    gy, gx = np.mgrid[0:h, 0:w] + 0.5
    rays = np.stack([(gx - K[0, 2]) / K[0, 0], (gy - K[1, 2]) / K[1, 1], np.ones_like(gx)], -1)
    in1 = rays @ rot  # R^T d
    uv = np.stack([K[0, 0] * in1[..., 0] / in1[..., 2] + K[0, 2], K[1, 1] * in1[..., 1] / in1[..., 2] + K[1, 2]], -1)
    far = flow_at_infinity(K, poses[0], poses[1], h, w)
    assert np.nanmax(np.abs(uv - np.stack([gx, gy], -1) - far)) < 1e-3
    # v (scene units/s, camera axes) is the camera centre's displacement
    c0, c1 = poses[0][:3, 3], poses[1][:3, 3]
    r0 = opengl_to_opencv(np.asarray(poses[0]))[:3, :3]
    assert np.allclose(r0 @ seq.v_frames[0] / fps, c1 - c0, atol=1e-9)


def _shifted_scene(root, meta, out, noise: float, shift_px: float = 0.3, n: int = 6):
    """A scene of ``n`` views that slide the bundled view 0 right by ``shift_px`` each (flow exactly known),
    with independent Gaussian noise of std ``noise`` on the 8-bit values of each view (render noise)."""
    from scipy.ndimage import gaussian_filter, shift

    out.mkdir()
    (out / "images").mkdir()
    (out / "flows").mkdir()
    base = gaussian_filter(np.asarray(Image.open(root / meta["frames"][0]["file_path"]).convert("RGB"), np.float64),
                           (1.0, 1.0, 0))
    rng = np.random.default_rng(0)
    frames = []
    for k in range(n):
        img = shift(base, (0, k * shift_px, 0), order=3, mode="nearest") + rng.normal(0, noise, base.shape)
        Image.fromarray(np.clip(np.round(img), 0, 255).astype(np.uint8)).save(out / "images" / f"{k}.png")
        flow = np.zeros(base.shape[:2] + (2,), np.float32)
        flow[..., 0] = shift_px
        np.save(out / "flows" / f"{k}.npy", flow)
        frames.append({"file_path": f"images/{k}.png", "flow_file_path": f"flows/{k}.npy",
                       "transform_matrix": np.eye(4).tolist()})
    (out / "transforms.json").write_text(json.dumps({**{k: meta[k] for k in ("fl_x", "fl_y", "cx", "cy", "w", "h")},
                                                     "frames": frames}))
    return out


def test_render_noise_is_reported(bundled, tmp_path, recwarn):
    root, meta = bundled
    clean = simulate_rendered_sequence(_shifted_scene(root, meta, tmp_path / "clean", 0.0), 0, 6)
    assert not [w for w in recwarn if "GT flow" in str(w.message)]
    assert clean.residual_log < 0.5 * clean.change_log  # the flow explains the change
    with pytest.warns(UserWarning, match="render noise"):
        noisy = simulate_rendered_sequence(_shifted_scene(root, meta, tmp_path / "noisy", 12.0), 0, 6)
    assert noisy.residual_log > 0.8 * noisy.change_log  # the flow explains almost nothing
    assert len(noisy.events) > 2 * len(clean.events)  # and most events are noise


def test_photometric_residual_prefers_the_true_flow():
    rng = np.random.default_rng(1)
    from scipy.ndimage import gaussian_filter, shift

    img = gaussian_filter(rng.random((40, 50)), 2.0)
    frames = np.stack([img, shift(img, (-0.5, 0.7), order=3, mode="nearest")])  # content moves (+0.7, −0.5) px
    flow = np.zeros((1, 40, 50, 2))
    flow[..., 0], flow[..., 1] = 0.7, -0.5
    res, change = photometric_residual(frames, flow)
    for wrong in (-flow, flow * [1, -1]):
        assert photometric_residual(frames, wrong)[0] > 3 * res
    assert change > 3 * res


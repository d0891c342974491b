"""DET-GS depth priors: dataset files, an on-disk network, the seeded monocular-like prior, source choice."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from vision3d.errors import Vision3DError
from vision3d.methods.det_gs.depth_priors import (
    DepthPriorConfig,
    DepthPriorError,
    DepthPriorProvider,
    MonocularDepthNetwork,
    MonocularDepthNetworkConfig,
    MonocularLikePriorConfig,
    load_depth_prior_file,
    monocular_like_prior,
    region_weights,
)
from vision3d.methods.det_gs.losses import DetGSLossConfig, depth_loss, hierarchical_depth_loss

H, W = 48, 64


def scene_depth() -> np.ndarray:
    """A floor-like ramp with a box and a ball in front and an unknown (0) corner, metres [H, W]."""
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    depth = 4.0 - 2.0 * yy / H + 0.3 * np.sin(xx / 9.0)
    depth[10:25, 8:28] = 1.5 + 0.01 * xx[10:25, 8:28]
    ball = (yy - 30) ** 2 + (xx - 45) ** 2 < 81
    depth[ball] = 2.0 - 0.5 * np.sqrt(np.clip(1 - ((yy[ball] - 30) ** 2 + (xx[ball] - 45) ** 2) / 81, 0, 1))
    depth[:4, -6:] = 0.0
    return depth


def write_png_depth(path, depth_m: np.ndarray) -> None:
    Image.fromarray(np.round(depth_m * 1000).astype(np.uint16)).save(path)


# ----------------------------------------------------------------------------- dataset files
def test_png_and_npy_priors_load_in_metres(tmp_path):
    depth = scene_depth()
    write_png_depth(tmp_path / "d.png", depth)
    np.save(tmp_path / "d.npy", depth.astype(np.float32))
    png = load_depth_prior_file(tmp_path / "d.png", (H, W))
    npy = load_depth_prior_file(tmp_path / "d.npy", (H, W))
    assert png.kind == npy.kind == "depth"
    assert np.allclose(png.values.numpy(), depth, atol=6e-4)
    assert np.allclose(npy.values.numpy(), depth, atol=1e-6)
    assert png.valid.sum().item() == (depth > 0).sum()


def test_missing_prior_file_names_the_file(tmp_path):
    path = tmp_path / "depths" / "frame_00007.png"
    with pytest.raises(DepthPriorError, match="frame_00007.png.*not found"):
        load_depth_prior_file(path, (H, W))


def test_wrong_size_prior_names_the_file_and_both_sizes(tmp_path):
    write_png_depth(tmp_path / "small.png", scene_depth()[:40, :50])
    with pytest.raises(DepthPriorError, match=r"small\.png.*50x40.*64x48"):
        load_depth_prior_file(tmp_path / "small.png", (H, W))


def test_unreadable_prior_names_the_file(tmp_path):
    (tmp_path / "broken.png").write_bytes(b"not a png")
    with pytest.raises(Vision3DError, match="broken.png"):
        load_depth_prior_file(tmp_path / "broken.png", (H, W))


# ----------------------------------------------------------------------------- network on disk
class TinyDisparityNet(torch.nn.Module):
    """Stands in for a monocular network: disparity from the mean of the (normalized) input channels."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # [B, 3, h, w] -> [B, h, w]
        return x.mean(dim=1) + 3.0


def test_network_prior_from_an_exported_program(tmp_path):
    path = tmp_path / "mono.pt2"
    # the image is 48x64 and input_long_side 56 with multiple 14: the network sees 42x56
    torch.export.save(torch.export.export(TinyDisparityNet(), (torch.rand(1, 3, 42, 56),)), str(path))
    net = MonocularDepthNetwork(MonocularDepthNetworkConfig(path=path, input_long_side=56))
    image = torch.rand(H, W, 3)
    prior = net(image)
    assert prior.kind == "disparity" and prior.values.shape == (H, W) and prior.valid.all()
    assert prior.values.mean().item() == pytest.approx(3.0 + ((image - 0.45) / 0.226).mean().item(), abs=0.1)


@pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")
def test_network_prior_from_a_torchscript_file(tmp_path):
    path = tmp_path / "mono.pt"
    torch.jit.save(torch.jit.script(TinyDisparityNet()), str(path))
    net = MonocularDepthNetwork(MonocularDepthNetworkConfig(path=path, input_long_side=56))
    prior = net(torch.rand(H, W, 3))
    assert prior.kind == "disparity" and prior.values.shape == (H, W) and prior.valid.all()
    assert str(path) in prior.source


def test_missing_network_says_what_to_do(tmp_path):
    with pytest.raises(DepthPriorError, match=r"absent\.pt: not found; vision3d never downloads"):
        MonocularDepthNetwork(MonocularDepthNetworkConfig(path=tmp_path / "absent.pt"))
    with pytest.raises(DepthPriorError, match="no path set"):
        MonocularDepthNetwork(MonocularDepthNetworkConfig())


@pytest.mark.filterwarnings("ignore:.*torch.jit.*:FutureWarning")
def test_corrupt_network_file_names_the_file(tmp_path):
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(DepthPriorError, match=r"bad\.pt: cannot load"):
        MonocularDepthNetwork(MonocularDepthNetworkConfig(path=tmp_path / "bad.pt"))


def test_hub_directory_that_downloads_is_refused(tmp_path):
    (tmp_path / "hubconf.py").write_text(
        "import socket\n"
        "def model():\n"
        "    socket.create_connection(('203.0.113.1', 80), timeout=1)\n"
    )
    with pytest.raises(DepthPriorError, match="from disk only"):
        MonocularDepthNetwork(MonocularDepthNetworkConfig(path=tmp_path, hub_entrypoint="model"))


# ----------------------------------------------------------------------------- monocular-like prior
def affine_fit_residual(x: np.ndarray, y: np.ndarray) -> float:
    """RMS residual of the least-squares fit y ≈ a x + b, relative to std(y)."""
    a = np.stack([x, np.ones_like(x)], axis=1)
    coef, *_ = np.linalg.lstsq(a, y, rcond=None)
    return float(np.sqrt(np.mean((a @ coef - y) ** 2)) / y.std())


def test_monocular_like_prior_correlates_but_is_not_affine():
    depth = scene_depth()
    valid = depth > 0
    gt_disparity = 1.0 / depth[valid]

    def residual(**knobs):
        prior = monocular_like_prior(depth, MonocularLikePriorConfig(seed=3, **knobs))
        return affine_fit_residual(gt_disparity, prior.values.numpy()[valid].astype(np.float64))

    prior = monocular_like_prior(depth, MonocularLikePriorConfig(seed=3, background_as_far=False), index=0)
    assert prior.kind == "disparity"
    assert torch.equal(prior.valid, torch.from_numpy(valid))
    assert np.corrcoef(prior.values.numpy()[valid], gt_disparity)[0, 1] > 0.9
    # the per-region affine distortion alone is far from one affine map; without it the prior is affine in GT
    no_blur_noise = dict(blur_sigma=0.0, noise_std=0.0)
    assert residual(**no_blur_noise) > 0.1
    assert residual(**no_blur_noise, region_log_scale_std=0.0, region_shift_std=0.0) < 1e-5
    # with blur and noise on, the distortion still adds measurably to what they do
    assert residual() > 1.2 * residual(region_log_scale_std=0.0, region_shift_std=0.0)


def test_region_distortion_is_affine_within_each_region():
    """With hard cells, no blur and no noise, each Voronoi cell is exactly an affine map of GT disparity."""
    depth = scene_depth()
    cfg = MonocularLikePriorConfig(seed=1, num_regions=6, region_softness=0.0, blur_sigma=0.0, noise_std=0.0)
    prior = monocular_like_prior(depth, cfg).values.numpy().astype(np.float64)
    rng = np.random.default_rng([cfg.seed, 0])
    centres = rng.uniform([0.0, 0.0], [H, W], size=(cfg.num_regions, 2))
    cells = region_weights(H, W, centres, 0.0).argmax(axis=0)
    valid = depth > 0
    residuals = [
        affine_fit_residual(1.0 / depth[(cells == k) & valid], prior[(cells == k) & valid])
        for k in range(cfg.num_regions)
        if ((cells == k) & valid).sum() > 20
    ]
    assert max(residuals) < 1e-5
    assert affine_fit_residual(1.0 / depth[valid], prior[valid]) > 0.05


def test_monocular_like_prior_is_deterministic_per_seed_and_view():
    depth = scene_depth()
    cfg = MonocularLikePriorConfig(seed=7)
    a = monocular_like_prior(depth, cfg, index=2).values
    assert torch.equal(a, monocular_like_prior(depth, cfg, index=2).values)
    assert not torch.allclose(a, monocular_like_prior(depth, cfg, index=3).values)
    assert not torch.allclose(a, monocular_like_prior(depth, MonocularLikePriorConfig(seed=8), index=2).values)


def test_monocular_like_prior_does_not_depend_on_the_scene_units():
    """Its noise, shifts and blur are relative to the view's disparity range, and the result is rescaled."""
    depth = scene_depth()
    metres = monocular_like_prior(depth, MonocularLikePriorConfig(seed=2), index=1)
    centimetres = monocular_like_prior(100.0 * depth, MonocularLikePriorConfig(seed=2), index=1)
    assert torch.equal(metres.valid, centimetres.valid)
    assert torch.allclose(metres.values, centimetres.values, atol=1e-5)


def test_depth_loss_sees_the_distortion_but_not_the_global_affine_map():
    depth = torch.from_numpy(scene_depth())
    cfg = DetGSLossConfig(depth_margin=0.0)
    only_affine = monocular_like_prior(
        depth, MonocularLikePriorConfig(region_log_scale_std=0.0, region_shift_std=0.0, blur_sigma=0.0, noise_std=0.0)
    )
    distorted = monocular_like_prior(depth, MonocularLikePriorConfig(blur_sigma=0.0, noise_std=0.0))
    exact = hierarchical_depth_loss(depth, only_affine.values, cfg, 0, "disparity", only_affine.valid)
    off = hierarchical_depth_loss(depth, distorted.values, cfg, 0, "disparity", distorted.valid)
    assert exact["global"].item() < 1e-10
    assert off["global"].item() > 1e-3


def test_background_is_farthest_in_the_prior_and_l_depth_pushes_a_sky_floater_away():
    H = W = 48
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float64)
    depth = 6.0 - 4.0 * (yy - 16) / (H - 16)  # ground receding up to a horizon at row 16
    depth[20:36, 18:30] = 2.0  # an object on it
    depth[:16] = 0.0  # sky: no ground-truth depth (at infinity)
    sky = torch.from_numpy(depth == 0)
    new = monocular_like_prior(depth, MonocularLikePriorConfig(seed=1))
    old = monocular_like_prior(depth, MonocularLikePriorConfig(seed=1, background_as_far=False))
    assert new.valid.all() and not old.valid[sky].any()
    assert new.values[sky].median() < np.percentile(new.values[~sky].numpy(), 2)  # the sky is the farthest
    # a floater renders the sky nearer than the ground (depth 1): L_depth pushes it away only with the new prior
    cfg = DetGSLossConfig()
    grads = {}
    for name, prior in (("new", new), ("old", old)):
        rendered = torch.from_numpy(np.where(depth > 0, depth, 1.0)).float().requires_grad_(True)
        depth_loss(rendered, prior.values, cfg, 0, "disparity", prior.valid).backward()
        grads[name] = rendered.grad[sky]
    assert torch.all(grads["old"] == 0)
    # descent moves the sky farther where a patch sees the horizon (a patch of uniform sky has no contrast to fit)
    assert (grads["new"] < 0).float().mean() > 0.2 and (grads["new"] > 0).float().mean() < 0.05
    far_sky = torch.from_numpy(np.where(depth > 0, depth, 1e3)).float()
    near_sky = torch.from_numpy(np.where(depth > 0, depth, 1.0)).float()
    assert depth_loss(far_sky, new.values, cfg, 0, "disparity", new.valid) < 0.5 * depth_loss(
        near_sky, new.values, cfg, 0, "disparity", new.valid)


# ----------------------------------------------------------------------------- choosing the source
def test_provider_picks_sources_in_order(tmp_path):
    paths = []
    for i in range(3):
        write_png_depth(tmp_path / f"{i}.png", scene_depth())
        paths.append(tmp_path / f"{i}.png")
    sizes = [(H, W)] * 3
    auto = DepthPriorProvider(DepthPriorConfig(), paths, sizes)
    assert auto.source == "dataset" and auto(1).kind == "depth" and auto(1) is auto(1)

    none = DepthPriorProvider(DepthPriorConfig(), [None] * 3, sizes)
    assert none.source == "none" and none(0) is None and "L_depth is off" in none.describe()

    mono = DepthPriorProvider(DepthPriorConfig(source="monocular_like"), paths, sizes)
    assert mono(0).kind == "disparity" and not torch.equal(mono(0).values, mono(1).values)

    with pytest.raises(DepthPriorError, match="needs depth_file_path"):
        DepthPriorProvider(DepthPriorConfig(source="monocular_like"), [paths[0], None, None], sizes)
    with pytest.raises(DepthPriorError, match="not found"):
        DepthPriorProvider(DepthPriorConfig(source="network"), paths, sizes)


# ----------------------------------------------------------------------------- lens distortion
def test_a_distorted_captures_prior_lands_on_the_undistorted_images_pixels(tmp_path):
    """nerfstudio undistorts (and crops) each cached image onto a new K; the prior, read from the distorted depth
    file, must follow it pixel for pixel. The depth file holds a ramp in the ray's undistorted x, so on the
    undistorted image it is a known function of the new K's pixel."""
    from scene_factory import give_scene_a_lens, new_pixel_rays, write_scene

    from vision3d.methods import run
    from vision3d.methods.det_gs.config import det_gs

    size = 32
    root = write_scene(tmp_path / "scene", n_views=6, size=size)
    rays = give_scene_a_lens(root)
    ramp = lambda x: 3.0 + 1.5 * x  # noqa: E731  metres
    for depth_file in sorted((root / "depths").glob("*.png")):
        write_png_depth(depth_file, ramp(rays[..., 0]))

    config = run.configure(det_gs.config, root, tmp_path / "out", max_steps=1)
    config.pipeline.datamanager.depth_prior.source = "dataset"
    manager = config.pipeline.datamanager.setup(device="cpu")
    data, camera = manager.cached_train[0], manager.train_dataset.cameras[0]
    assert data["image"].shape[:2] == data["depth_prior"].shape == (int(camera.height), int(camera.width))
    assert int(camera.width) < size  # cropped: without the resampling, the prior would be squeezed onto it
    expected = ramp(new_pixel_rays(camera)[..., 0])
    valid = data["depth_prior_valid"].numpy()
    assert valid.mean() > 0.9
    error = np.abs(data["depth_prior"].numpy() - expected)[valid]
    step = 1.5 / float(camera.fx)  # the ramp's change over one pixel: nearest-pixel sampling is off by at most ~half of it
    assert error.max() < step, (error.max(), step)

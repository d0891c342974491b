"""helixsurf: losses and their weighting, the occupancy grid, superpixel planes, and a tiny ns-train run with mesh export."""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.engine.callbacks import TrainingCallbackAttributes
from torch import Tensor

from vision3d.fields.hash_grid import grid_config
from vision3d.methods.helixsurf import helix, textureless
from vision3d.methods.helixsurf.losses import LossSchedule, depth_loss, normal_loss, photometric_confidence
from vision3d.methods.helixsurf.model import HelixSurfModel, HelixSurfModelConfig
from vision3d.methods.helixsurf.occupancy import OccupancyGrid
from vision3d.render.sdf_volume import neus_alpha

sys.path.insert(0, str(Path(__file__).resolve().parent))
from room_factory import write_room  # noqa: E402

BIN = Path(sys.executable).parent
ENTRY = "vision3d.methods.helixsurf.config:helixsurf"


def small_model(use_grid: bool = True, inv_s_variance: float = 0.3) -> HelixSurfModel:
    config = HelixSurfModelConfig(num_samples=48, occupancy_resolution=24, use_occupancy_grid=use_grid,
                                  eval_num_rays_per_chunk=1 << 14, sphere_radius_fraction=0.6)
    config.sdf.grid = grid_config(4, 8, 64, 12)
    config.sdf.steps_per_level = 0
    model = HelixSurfModel(config, SceneBox(torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])), num_train_data=2)
    model.field.sharpness.value.data.fill_(inv_s_variance)
    return model.eval()


def camera(eye=(0.1, -0.2, 0.05), size=(24, 32)) -> Cameras:
    c2w = torch.eye(4)[:3]
    c2w[:, 3] = torch.tensor(eye)
    h, w = size
    return Cameras(camera_to_worlds=c2w[None], fx=torch.tensor([[20.0]]), fy=torch.tensor([[20.0]]),
                   cx=torch.tensor([[w / 2]]), cy=torch.tensor([[h / 2]]), width=torch.tensor([[w]]), height=torch.tensor([[h]]))


# ---------------------------------------------------------------- losses
def test_losses_vanish_on_their_targets_and_grow_off_them():
    g = torch.Generator().manual_seed(0)
    depth = torch.rand(100, generator=g) + 1.0
    normals = torch.nn.functional.normalize(torch.randn(100, 3, generator=g), dim=-1)
    ones, mask = torch.ones(100), torch.ones(100, dtype=torch.bool)
    assert depth_loss(depth, depth, ones, mask) == 0.0
    assert normal_loss(normals, normals, ones, mask, 0.8) == 0.0
    assert depth_loss(depth + 0.1, depth, ones, mask) == pytest.approx(0.1, abs=1e-6)
    assert depth_loss(depth + 2.0, depth, ones, mask, clamp=0.5) == pytest.approx(0.5)
    tilted = torch.nn.functional.normalize(normals + 0.1 * torch.randn(100, 3, generator=g), dim=-1)
    assert normal_loss(tilted, normals, ones, mask, -1.0) > 0.01
    # no target anywhere: exactly zero, not NaN
    assert depth_loss(depth + 1, depth, ones, torch.zeros(100, dtype=torch.bool)) == 0.0


def test_confidence_weighting_and_outlier_rejection():
    depth, target = torch.ones(4), torch.tensor([1.0, 1.0, 1.0, 3.0])
    mask = torch.ones(4, dtype=torch.bool)
    # an outlier with zero confidence does not count; with confidence 0.5 it counts half
    assert depth_loss(depth, target, torch.tensor([1.0, 1, 1, 0]), mask) == 0.0
    assert depth_loss(depth, target, torch.tensor([1.0, 1, 1, 0.5]), mask) == pytest.approx(0.25)
    rgb, gt = torch.tensor([[0.5, 0.5, 0.5], [0.0, 0.0, 0.0]]), torch.tensor([[0.5, 0.5, 0.5], [1.0, 0.4, 0.7]])
    assert torch.allclose(photometric_confidence(rgb, gt), torch.tensor([1.0, 1 - 0.7]))
    # normals: targets more than acos(min_cos) away are ignored
    n = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    t = torch.tensor([[0.0, 0.6, 0.8], [0.0, 1.0, 0.0]])
    assert normal_loss(n, t, torch.ones(2), torch.ones(2, dtype=torch.bool), 0.7) == pytest.approx(0.6 + 0.2)


def test_schedule_follows_the_official_milestones():
    s = LossSchedule()
    assert s.depth(0.0) == (1.0, None) and s.depth(0.5) == (0.5, 0.5) and s.depth(0.7) == (0.25, 0.5)
    assert s.normal(0.1) == (0.1, 0.1) and s.normal(0.9) == (0.05, 0.8)


def test_mvs_losses_vanish_when_the_sdf_renders_its_targets():
    """Targets made from the model's own renders (z-depth, world normals) give zero depth and normal losses
    through the model's lookup of training rays; shifting the targets makes them positive."""
    model = small_model(inv_s_variance=0.5)
    cams = Cameras(camera_to_worlds=torch.cat([camera().camera_to_worlds, camera((0.0, 0.1, 0.2)).camera_to_worlds]),
                   fx=torch.full((2, 1), 20.0), fy=torch.full((2, 1), 20.0), cx=torch.full((2, 1), 16.0),
                   cy=torch.full((2, 1), 12.0), width=torch.full((2, 1), 32), height=torch.full((2, 1), 24))
    views = helix.mvs_views([torch.rand(24, 32, 3), torch.rand(24, 32, 3)], cams, 32)
    renders = helix.render_sdf_views(model, views)
    mask = renders.accumulation > 0.5
    assert mask.float().mean() > 0.9
    model.targets = helix.MVSTargets(renders.depth, renders.normal, torch.ones_like(renders.depth), mask,
                                     torch.zeros(0, 3), torch.zeros(0))
    model.training_pixels = helix.TrainingPixels.of(cams)
    rows, cols = torch.meshgrid(torch.arange(24), torch.arange(32), indexing="ij")
    indices = torch.stack([torch.ones(24 * 32, dtype=torch.long), rows.reshape(-1), cols.reshape(-1)], dim=1)
    bundle = cams[1:2].generate_rays(0).flatten()
    with torch.no_grad():
        outputs = model(bundle)
        batch = {"image": outputs["rgb"].clone(), "indices": indices}
        outputs["eikonal_gradients"] = torch.ones(1, 3)
        model.train()  # a training step's losses, on outputs rendered in eval mode (an eval batch has no MVS terms)
        losses = model.get_loss_dict(outputs, batch)
        assert losses["mvs_depth_loss"] < 1e-5 and losses["mvs_normal_loss"] < 1e-4, losses
        model.targets.depth += 0.05
        assert model.get_loss_dict(outputs, batch)["mvs_depth_loss"] > 0.04


# k1 k2 k3 k4 p1 p2 (nerfstudio's order): a COLMAP-like OPENCV lens (barrel, some decentring), and a pincushion one
LENSES = {"pinhole": None, "barrel": [-0.12, 0.03, 0.0, 0.0, 0.004, -0.003], "pincushion": [0.1, 0.02, 0.0, 0.0, 0.0, 0.0]}


def lens_cameras(lens: str, size=(48, 64), focal=40.0, camera_type=CameraType.PERSPECTIVE) -> Cameras:
    distortion = None if LENSES[lens] is None else torch.tensor(LENSES[lens]).repeat(2, 1)
    h, w = size
    c2w = torch.cat([camera().camera_to_worlds, camera((0.0, 0.1, 0.2)).camera_to_worlds])
    return Cameras(camera_to_worlds=c2w, fx=torch.full((2, 1), focal), fy=torch.full((2, 1), focal),
                   cx=torch.full((2, 1), w / 2), cy=torch.full((2, 1), h / 2), width=torch.full((2, 1), w),
                   height=torch.full((2, 1), h), distortion_params=distortion, camera_type=camera_type)


@pytest.mark.parametrize("lens", LENSES)
def test_a_training_ray_reads_the_mvs_pixel_its_ray_passes_through(lens):
    """MVS runs on pinhole views at a lower resolution; each training ray, as nerfstudio casts it (undistorting its
    pixel for a distorted lens), must read its targets at the MVS pixel its direction projects into. Ignoring the
    lens would read a third of the rays' targets at another MVS pixel."""
    cams = lens_cameras(lens)
    views = helix.mvs_views([torch.rand(48, 64, 3), torch.rand(48, 64, 3)], cams, 32)
    h, w = views.images.shape[1:3]
    grid_r, grid_c = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    maps = {"row": grid_r.expand(2, h, w), "col": grid_c.expand(2, h, w), "mask": torch.ones(2, h, w, dtype=torch.bool)}
    rows, cols = torch.meshgrid(torch.arange(48), torch.arange(64), indexing="ij")
    indices = torch.stack([torch.ones(48 * 64, dtype=torch.long), rows.reshape(-1), cols.reshape(-1)], dim=1)
    direction = cams[1:2].generate_rays(0).flatten().directions @ cams.camera_to_worlds[1, :3, :3]  # OpenGL camera axes
    K = views.K[1]  # noqa: N806
    col = K[0, 0] * direction[:, 0] / -direction[:, 2] + K[0, 2]
    row = K[1, 1] * -direction[:, 1] / -direction[:, 2] + K[1, 2]
    inside = (row > 0.01) & (row < h - 0.01) & (col > 0.01) & (col < w - 0.01)
    assert inside.float().mean() > 0.85
    read = helix.lookup_pixels(indices, helix.TrainingPixels.of(cams), (h, w), **maps)
    assert torch.equal(read["row"][inside], row.floor().long()[inside])
    assert torch.equal(read["col"][inside], col.floor().long()[inside])
    outside = (row < -0.01) | (row > h + 0.01) | (col < -0.01) | (col > w + 0.01)
    assert not read["mask"][outside].any() and read["mask"][inside].all()
    assert outside.any() == (lens == "barrel")  # a barrel lens sees past the pinhole view's corners
    if lens != "pinhole":
        ignored = helix.lookup_pixels(indices, helix.TrainingPixels((48, 64)), (h, w), **maps)
        misplaced = (ignored["row"] != read["row"]) | (ignored["col"] != read["col"])
        assert misplaced.float().mean() > 0.3  # 0.39-0.41 of the rays at half resolution


@pytest.mark.parametrize("lens", ["barrel", "pincushion"])
def test_mvs_views_of_a_distorted_lens_are_the_pinhole_images_and_mark_pixels_without_a_source(lens):
    """An image distorted through nerfstudio's lens model (each pixel's colour taken where its undistorted ray
    meets a pinhole image) comes back as that pinhole image; pixels whose source lies outside the distorted image
    (the corners, for a pincushion lens) are not valid, and MVS keeps none of them."""
    cams = lens_cameras(lens)[:1]
    rows, cols = torch.meshgrid(torch.arange(48.0) + 0.5, torch.arange(64.0) + 0.5, indexing="ij")

    def pattern(row: Tensor, col: Tensor) -> Tensor:  # smooth, so that bilinear resampling is near exact
        return torch.stack([0.5 + 0.4 * torch.sin(col / 5.0), 0.5 + 0.4 * torch.cos(row / 6.0),
                            0.5 + 0.2 * torch.sin((row + col) / 8.0)], dim=-1)

    pinhole = pattern(rows, cols)
    indices = torch.stack([torch.zeros(48 * 64, dtype=torch.long), (rows - 0.5).reshape(-1).long(),
                           (cols - 0.5).reshape(-1).long()], dim=1)
    source_row, source_col = helix.TrainingPixels.of(cams).positions(indices)  # each distorted pixel's pinhole pixel
    distorted = pattern(source_row, source_col).reshape(48, 64, 3)
    views = helix.mvs_views([distorted], cams, 64)
    valid = views.valid[0]
    if lens == "barrel":
        assert valid.all()  # undistorted onto the same K, a barrel lens's image covers the whole pinhole view
    else:
        assert 0.7 < valid.float().mean() < 0.99
        assert not valid[0, 0] and not valid[-1, -1] and valid[24, 32]
    error = (views.images[0] - pinhole).abs().amax(dim=-1)
    assert error[valid].mean() < 0.01 and error[valid].quantile(0.99) < 0.05, error[valid].max()
    assert (distorted - pinhole).abs().amax(dim=-1)[valid].mean() > 5 * error[valid].mean()


def test_fisheye_cameras_and_k4_are_refused_in_one_line():
    from vision3d.errors import Vision3DError

    fisheye = lens_cameras("barrel", camera_type=CameraType.FISHEYE)
    with pytest.raises(Vision3DError, match="MVS needs pinhole cameras"):
        helix.mvs_views([torch.rand(48, 64, 3)] * 2, fisheye, 32)
    k4 = lens_cameras("barrel")
    k4.distortion_params[:, 3] = 0.01
    with pytest.raises(Vision3DError, match="k4 is not supported"):
        helix.mvs_views([torch.rand(48, 64, 3)] * 2, k4, 32)


def test_sharpness_floor_raises_s_geometrically_and_leaves_a_higher_s_alone():
    model = small_model(True, 0.3)  # s = e^3 ≈ 20
    model.config.sharpness_floor_start, model.config.sharpness_floor_end, model.max_steps = 20.0, 200.0, 100
    before_step = model.get_training_callbacks(TrainingCallbackAttributes(None, None, None, None))[0].func
    before_step(50)
    assert float(model.field.sharpness.inv_s()) == pytest.approx(20.0 * 10 ** 0.5, rel=1e-4)
    model.config.sharpness_floor_ramp = 0.25  # the floor reaches its end at step 25 and stays there
    model.field.sharpness.value.data.fill_(0.3)
    before_step(10)
    assert float(model.field.sharpness.inv_s()) == pytest.approx(20.0 * 10 ** 0.4, rel=1e-4)
    model.field.sharpness.value.data.fill_(0.3)
    before_step(60)
    assert float(model.field.sharpness.inv_s()) == pytest.approx(200.0, rel=1e-4)
    model.field.sharpness.value.data.fill_(0.6)  # s ≈ 403, above the floor
    before_step(100)
    assert float(model.field.sharpness.inv_s()) == pytest.approx(float(torch.exp(torch.tensor(6.0))), rel=1e-5)
    model.config.sharpness_floor_start = model.config.sharpness_floor_end = 0.0
    model.field.sharpness.value.data.fill_(0.1)
    before_step(100)
    assert float(model.field.sharpness.value) == pytest.approx(0.1)  # off: s is learned alone


def test_wall_time_is_split_into_steps_grid_updates_and_the_time_between(monkeypatch):
    """The training callbacks put a step's time (BEFORE → AFTER the trainer's iteration) into ``sdf_steps``, the
    grid refresh into ``grid_updates`` and the time from one step's end to the next one's start into
    ``between_steps``; the summary names each part."""
    model = small_model(True, 0.3)
    before, after, end = (c.func for c in model.get_training_callbacks(TrainingCallbackAttributes(None, None, None, None)))
    before(0)  # step 0 refreshes the grid
    time.sleep(0.2)  # the trainer's iteration
    after(0)
    time.sleep(0.02)  # evaluation, checkpoints
    before(1)
    after(1)
    wall = model.wall
    assert len(wall.step_seconds) == 2 and wall.step_seconds[0] >= 0.2 > wall.step_seconds[1]
    assert wall.seconds["sdf_steps"] == pytest.approx(sum(wall.step_seconds))
    assert 0.02 <= wall.seconds["between_steps"] < 0.15  # the step's 0.2 s not counted here
    assert wall.seconds["grid_updates"] > 0 and wall.seconds["mvs"] == 0
    monkeypatch.setattr(model.config, "use_occupancy_grid", False)
    grid_seconds = wall.seconds["grid_updates"]
    before(16)
    assert wall.seconds["grid_updates"] == grid_seconds  # no grid: no update
    assert all(part in wall.summary() for part in wall.seconds)


# ---------------------------------------------------------------- occupancy grid
@pytest.mark.parametrize(("quantity", "threshold"), [("opacity", 1e-3), ("density", 0.01)])
def test_occupancy_grid_marks_a_spheres_surface_and_empties_free_space(quantity, threshold):
    """Surface cells occupied and free space (outside the sphere) empty with either quantity; the solid inside
    stays occupied by the cell's opacity (NeuS gives it opacity) and is emptied by the official density."""
    grid = OccupancyGrid(torch.tensor([[-1.0] * 3, [1.0] * 3]), resolution=32, decay=0.9, threshold=threshold,
                         quantity=quantity)

    def sphere(points):
        return points.norm(dim=-1, keepdim=True) - 0.5

    grid.update(sphere, inv_s=400.0)
    centres = grid.aabb[0] + (torch.stack(torch.meshgrid(*(torch.arange(32),) * 3, indexing="ij"), -1) + 0.5) * grid.cell_size
    distance = (centres.norm(dim=-1) - 0.5).abs()
    half_diagonal = 0.5 * float(grid.cell_size.norm())
    crossed = distance < half_diagonal  # the surface passes through these cells
    far_inside = centres.norm(dim=-1) < 0.5 - 3 * half_diagonal
    far_outside = centres.norm(dim=-1) > 0.5 + 3 * half_diagonal
    assert far_inside.any() and far_outside.any()
    assert grid.occupied[crossed].all()
    assert not grid.occupied[far_outside].any()
    assert grid.occupied[far_inside].all() if quantity == "opacity" else not grid.occupied[far_inside].any()


@pytest.mark.parametrize("anneal", [1.0, 0.3])
def test_sample_opacity_bound_is_at_least_neus_alpha_and_one_before_an_update(anneal):
    """The per-sample bound (α with cos = −L, L the cell's measured slope) is never below NeuS's α of the same
    sample along any direction, for an SDF of slope 2, also under the cos anneal; before the first update
    (no slope measured) it is 1, so nothing is skipped."""
    grid = OccupancyGrid(torch.tensor([[-1.0] * 3, [1.0] * 3]), resolution=16, slope_factor=1.0)

    def sdf(points):
        return 2.0 * (points.norm(dim=-1, keepdim=True) - 0.5)

    generator = torch.Generator().manual_seed(0)
    points = torch.rand(4000, 3, generator=generator) * 1.8 - 0.9
    directions = torch.nn.functional.normalize(torch.randn(4000, 3, generator=generator), dim=-1)
    deltas = torch.rand(4000, generator=generator) * 0.05
    f = sdf(points)[:, 0]
    assert torch.equal(grid.sample_opacity_bound(points, f, deltas, 200.0, anneal), torch.ones(4000))
    grid.update(sdf, inv_s=200.0)
    cos = (directions * 2.0 * torch.nn.functional.normalize(points, dim=-1)).sum(-1)
    alpha = neus_alpha(f[:, None], cos[:, None], deltas[:, None], 200.0, anneal)[:, 0]
    bound = grid.sample_opacity_bound(points, f, deltas, 200.0, anneal)
    assert (bound >= alpha - 1e-6).all()
    assert (bound < 1e-3).float().mean() > 0.5  # most random samples lie far from the surface


def test_skipping_empty_cells_and_terminated_rays_leaves_the_render_unchanged_and_evaluates_less():
    """The initial SDF (a sphere seen from inside) rendered with and without the grid (empty cells skipped, rays
    terminated at transmittance 1e-3): same image and depth, and the field is evaluated at fewer points — the
    gradient-free pass at the occupied samples plus, with gradients, only the kept samples (7 SDF evaluations
    each: the value and 6 finite differences). The pass marches in segments and stops at terminated rays: the
    same samples as one pass over every occupied sample, at fewer evaluations. Samples whose own opacity bound
    is below 1e-3 are skipped too: fewer than with the cells' bound alone, the same image."""
    with_grid, plain, one_pass, cells_only = (small_model(use_grid, 0.45) for use_grid in (True, False, True, True))
    for model in (plain, one_pass, cells_only):
        model.load_state_dict(with_grid.state_dict())
    one_pass.config.early_stop_segment = 48  # the gradient-free pass over every occupied sample at once
    cells_only.config.sample_opacity_threshold = 0.0  # the cells' bound alone
    for model in (with_grid, one_pass, cells_only):
        model.update_occupancy()
    cam = camera()
    evaluated = {}
    for name, model in (("grid", with_grid), ("plain", plain), ("one pass", one_pass)):
        evaluate, evaluated[name] = model.field.sdf_and_features, []
        model.field.sdf_and_features = lambda x, evaluate=evaluate, log=evaluated[name]: log.append(len(x)) or evaluate(x)
    a, b, c = with_grid.get_outputs_for_camera(cam), plain.get_outputs_for_camera(cam), one_pass.get_outputs_for_camera(cam)
    d = cells_only.get_outputs_for_camera(cam)
    assert float(a["occupied_fraction"].mean()) < 0.8 * float(d["occupied_fraction"].mean())  # measured: 0.17 against 0.24
    assert (d["rgb"] - b["rgb"]).abs().max() < 2e-3 and (d["accumulation"] - b["accumulation"]).abs().max() < 2e-3
    n_samples = 24 * 32 * 48
    kept = round(float(a["occupied_fraction"].sum()) * 48)
    assert float(a["occupied_fraction"].mean()) < 0.35  # measured: 0.21-0.26 over random inits
    assert float(b["occupied_fraction"].mean()) == 1.0
    assert sum(evaluated["plain"]) == 7 * n_samples
    # the marching pass keeps exactly the samples one pass keeps, evaluating fewer (not past terminated rays)
    assert torch.equal(a["occupied_fraction"], c["occupied_fraction"]) and torch.equal(a["rgb"], c["rgb"])
    prepass, occupied = sum(evaluated["grid"]) - 7 * kept, sum(evaluated["one pass"]) - 7 * kept
    assert kept <= prepass < 0.8 * occupied <= n_samples  # measured: 13203 against 21603 points
    assert sum(evaluated["grid"]) < 0.45 * sum(evaluated["plain"])
    assert torch.allclose(a["depth"], b["depth"], rtol=2e-3)  # measured: 2.6e-4 at most (1.2e-4 with the cells' bound alone)
    assert (a["rgb"] - b["rgb"]).abs().max() < 2e-3  # measured: 5.4e-4; termination bounds it by 1e-3
    assert (a["accumulation"] - b["accumulation"]).abs().max() < 2e-3
    # the zero level set is found where the volume-rendered surface is (the random init may leave a few
    # rays without a sign change inside the box)
    for key, channels in {"normals": 3, "mvs_depth": 1, "mvs_confidence": 1, "sdf_level_set": 1}.items():
        assert a[key].shape == (24, 32, channels), key  # the viewer's render modes (issue 21)
    found = a["sdf_level_set"] > 0
    assert found.float().mean() > 0.9
    assert torch.allclose(a["sdf_level_set"][found], b["depth"][found], rtol=0.02)


def steep_sphere_model(lipschitz: float, slope_factor: float) -> HelixSurfModel:
    """A model whose field is the analytic f = 2·(|x| − 0.3) (slope 2: a sphere's distance, doubled) with a
    colour that varies over the surface, at NeuS s = 400, the grid's bound set by ``lipschitz``/``slope_factor``."""
    model = small_model(True)
    model.config.occupancy_lipschitz, model.config.occupancy_slope_factor = lipschitz, slope_factor
    model.occupancy.lipschitz, model.occupancy.slope_factor = lipschitz, slope_factor
    model.field.sharpness.value.data.fill_(math.log(400.0) / 10.0)  # s = exp(10 v)
    field = model.field
    field.sdf = lambda x: 2.0 * (x.norm(dim=-1, keepdim=True) - 0.3)
    field.sdf_and_features = lambda x: (field.sdf(x), x)
    field.gradient = lambda x: 2.0 * torch.nn.functional.normalize(x, dim=-1)
    field.color = lambda x, normals, directions, features, camera_indices: torch.sigmoid(8.0 * features)
    return model


@pytest.mark.parametrize(("lipschitz", "slope_factor"), [(2.0, 0.0), (1.0, 1.0)])
def test_grid_bound_with_a_lipschitz_margin_keeps_an_sdf_of_slope_2_exact(lipschitz, slope_factor):
    """An SDF whose slope is 2 rendered with the grid on and off: the same within termination's 1e-3 when the
    cell bound uses L = 2 (fixed, or measured from the grid pass's finite differences); with the old bound
    (L = 1, no measured slope) surface cells are skipped and the render loses opacity."""
    cam = camera(eye=(0.05, -0.02, 0.9))
    plain = steep_sphere_model(1.0, 0.0)
    plain.config.use_occupancy_grid = False
    reference = plain.get_outputs_for_camera(cam)
    assert float(reference["accumulation"].mean()) > 0.2  # the sphere fills part of the view
    errors = {}
    for name, (lip, factor) in {"margin": (lipschitz, slope_factor), "old": (1.0, 0.0)}.items():
        model = steep_sphere_model(lip, factor)
        model.update_occupancy()
        out = model.get_outputs_for_camera(cam)
        errors[name] = max(float((out[k] - reference[k]).abs().max()) for k in ("rgb", "accumulation"))
    assert errors["margin"] < 2e-3  # measured: 7.7e-4 (both bounds)
    assert errors["old"] > 0.03  # measured: 0.066 (a surface cell skipped)


def test_mvs_cloud_splatted_into_a_camera_keeps_the_nearest_point():
    model = small_model()
    cam = camera(eye=(0.0, 0.0, 0.0))  # OpenGL: looks down -z; the centre ray passes between pixels 15/16, 11/12
    model.mvs_points = torch.tensor([[0.01, 0.01, -2.0, 0.7], [0.015, 0.015, -3.0, 0.2], [0.0, 0.0, 5.0, 1.0]])
    depth, confidence = model.splat_mvs_points(cam)
    # x right, y up in OpenGL -> column 16, row 11 (image y down)
    assert depth[11, 16, 0] == pytest.approx(float(torch.tensor([0.01, 0.01, 2.0]).norm()), rel=1e-5)
    assert confidence[11, 16, 0] == pytest.approx(0.7)
    assert int((depth > 0).sum()) == 1  # the point behind the camera is not drawn


# ---------------------------------------------------------------- textureless regions
def test_superpixel_plane_normals_of_a_synthetic_plane_and_manhattan_seeds():
    g = torch.Generator().manual_seed(0)
    h, w = 40, 60
    image = np.zeros((h, w, 3))
    image[:, : w // 2] = [0.8, 0.2, 0.2]  # two flat-coloured halves: two superpixels
    image[:, w // 2 :] = [0.2, 0.3, 0.9]
    labels = torch.from_numpy(textureless.superpixels(image, textureless.TexturelessConfig()))
    assert 2 <= labels.unique().numel() <= 4  # the halves, maybe a sliver at the border (Felzenszwalb's smoothing)
    on_left = (torch.arange(w) < w // 2)[None, :, None].expand(h, w, 1)
    inner_left, inner_right = on_left[..., 0].clone(), ~on_left[..., 0]
    inner_left[:, w // 2 - 3 :] = False
    inner_right[:, : w // 2 + 3] = False
    left = torch.nn.functional.normalize(torch.tensor([0.3, -0.2, 0.93]), dim=0)  # a slanted plane
    right = torch.tensor([0.05, 0.99, 0.0])  # almost the y axis, and MVS has nothing there
    normals = torch.zeros(h, w, 3)
    normals = torch.where(on_left, left, right)
    normals = torch.nn.functional.normalize(normals + 0.15 * torch.randn(h, w, 3, generator=g), dim=-1)
    mvs_mask = torch.zeros(h, w, dtype=torch.bool)
    mvs_mask[on_left[..., 0]] = True
    targets = textureless.plane_targets(labels, normals, torch.ones(h, w, dtype=torch.bool), mvs_mask, torch.eye(3),
                                        textureless.TexturelessConfig())
    assert targets.plane_mask[inner_left].all() and targets.plane_mask[inner_right].all()
    angle = torch.rad2deg(torch.acos((targets.plane_normal[inner_left] @ left).clamp(-1, 1)))
    assert angle.max() < 2.0  # one normal for the superpixel, the noise averaged out
    assert not targets.manhattan_mask[on_left[..., 0]].any()  # supported by MVS and not on an axis
    assert targets.manhattan_mask[inner_right].all()
    assert torch.equal(targets.manhattan_normal[0, -1], torch.tensor([0.0, 1.0, 0.0]))
    # noise beyond coherence: no plane
    noisy = torch.nn.functional.normalize(torch.randn(h, w, 3, generator=g), dim=-1)
    assert not textureless.plane_targets(labels, noisy, torch.ones(h, w, dtype=torch.bool), mvs_mask, torch.eye(3),
                                         textureless.TexturelessConfig()).plane_mask.any()


def test_blend_normals_weights_mvs_where_it_exists():
    sdf_n = torch.tensor([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    mvs_n = torch.tensor([[1.0, 0.0, 0.0], [1.0, 0.0, 0.0]])
    out = textureless.blend_normals(sdf_n, mvs_n, torch.tensor([True, False]), 1.0)
    assert torch.equal(out, torch.tensor([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0]]))
    half = textureless.blend_normals(sdf_n, mvs_n, torch.tensor([True, True]), 0.5)
    assert torch.allclose(half[0], torch.tensor([2**-0.5, 0.0, 2**-0.5]))


# ---------------------------------------------------------------- end to end
def test_first_plane_refresh_uses_mvs_normals_alone_without_rendering(monkeypatch):
    """After the random first MVS pass the SDF is its initial sphere: planes come from MVS's normals where it kept
    pixels, nothing is rendered, and no Manhattan seed is made (they need pixels without MVS support)."""
    model = small_model()
    h, w = 12, 16
    labels = torch.zeros(h, w, dtype=torch.long)
    labels[:, w // 2 :] = 1  # two superpixels: the left one kept by MVS, the right one not
    mask = torch.zeros(1, h, w, dtype=torch.bool)
    mask[0, :, : w // 2] = True
    normal = torch.tensor([0.0, 0.0, 1.0]).expand(1, h, w, 3).clone()
    model.targets = helix.MVSTargets(torch.ones(1, h, w), normal, torch.ones(1, h, w), mask, torch.zeros(0, 3), torch.zeros(0))
    model.labels = [labels]

    def no_render(*args):  # noqa: ANN002, ANN202
        raise AssertionError("rendered the untrained SDF")

    monkeypatch.setattr(model, "_render_views", no_render)
    monkeypatch.setattr(model, "_views", no_render)
    model.refresh_planes(None, mvs_only=True)
    assert torch.equal(model.planes["plane_mask"], mask)
    assert torch.allclose(model.planes["plane_normal"][mask], normal[mask])
    assert not model.planes["manhattan_mask"].any()
    with pytest.raises(AssertionError, match="rendered"):
        model.refresh_planes(None)  # later refreshes blend in the SDF's normals


def depth_error(model, dataset, gt_dir: Path) -> float:  # noqa: ANN001
    """Median |z-depth − GT| / GT over the training views."""
    from PIL import Image

    errors = []
    for i in range(len(dataset)):
        out = model.get_outputs_for_camera(dataset.cameras[i : i + 1].to(model.device))
        name = Path(dataset._dataparser_outputs.image_filenames[i]).stem
        gt = torch.from_numpy(np.array(Image.open(gt_dir / f"{name}.png")).astype(np.float32) / 1000.0)
        scale = float(dataset._dataparser_outputs.dataparser_scale)
        errors.append(((out["depth_z"][..., 0].cpu() / scale - gt).abs() / gt).reshape(-1))
    return float(torch.cat(errors).median())


def test_ns_train_helixsurf_lowers_depth_error_and_exports_a_mesh(tmp_path):
    scene = write_room(tmp_path / "room", n_views=12, width=48, height=36, focal=30.0, layout="clusters")
    env = {**os.environ, "NERFSTUDIO_METHOD_CONFIGS": f"helixsurf={ENTRY}"}
    flags = ["--max-num-iterations", "40", "--output-dir", str(tmp_path / "out"), "--timestamp", "run", "--vis", "tensorboard",
             "--steps-per-save", "40", "--machine.device-type", "cpu",
             "--pipeline.datamanager.train-num-rays-per-batch", "256",
             "--pipeline.model.num-samples", "32", "--pipeline.model.occupancy-resolution", "24",
             "--pipeline.model.mvs-max-side", "48", "--pipeline.model.mvs.patchmatch.iterations", "3",
             "--pipeline.model.mvs.patchmatch.cost.radius", "3", "--pipeline.model.mvs.patchmatch.cost.step", "1",
             "--pipeline.model.mvs.filter.min-consistent", "1",
             "--pipeline.model.mvs.geometric-passes", "0", "--pipeline.model.plane-refresh-every", "20",
             "--pipeline.model.eikonal-random-points", "128", "--pipeline.model.sdf.steps-per-level", "0",
             "--pipeline.model.sdf.grid.n-levels", "6", "--pipeline.model.sdf.grid.log2-hashmap-size", "14",
             "--optimizers.fields.optimizer.lr", "5e-3", "--optimizers.fields.scheduler.warm-up-end", "5",
             "--optimizers.fields.scheduler.max-steps", "40",
             "--pipeline.datamanager.data", str(scene), "vision3d-data", "--eval-mode", "all"]
    result = subprocess.run([str(BIN / "ns-train"), "helixsurf", *flags], capture_output=True, text=True, env=env, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = result.stdout + result.stderr
    assert "MVS pass 0 at step 0 (random)" in log and "MVS pass 1 at step 20 (seeded by the SDF)" in log
    run_dir = tmp_path / "out" / "room" / "helixsurf" / "run"

    from vision3d.export.from_run import load_run

    os.environ["NERFSTUDIO_METHOD_CONFIGS"] = env["NERFSTUDIO_METHOD_CONFIGS"]
    try:
        loaded = load_run(run_dir)
        trained = depth_error(loaded.pipeline.model, loaded.pipeline.datamanager.train_dataset, scene / "depths")
        untrained = loaded.config.pipeline.setup(device="cpu", test_mode="inference")
        before = depth_error(untrained.model.eval(), untrained.datamanager.train_dataset, scene / "depths")
    finally:
        del os.environ["NERFSTUDIO_METHOD_CONFIGS"]
    assert loaded.pipeline.model.mvs_points.shape[0] > 0  # the fused cloud is saved for the viewer
    print(f"median relative depth error: untrained {before:.3f}, trained {trained:.3f}")
    assert trained < 0.7 * before, (before, trained)  # measured 0.180 -> 0.091 (6 views: 0.141 -> 0.111, too close)

    mesh_path = tmp_path / "mesh.ply"
    result = subprocess.run([str(BIN / "v3d"), "export", "mesh", str(run_dir), "--output", str(mesh_path),
                             "--resolution", "40"], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    mesh = trimesh.load(mesh_path, process=False)
    assert len(mesh.faces) > 100
    assert "vertices" in result.stdout


@pytest.mark.parametrize("name", ["cpu", "paper"])
def test_presets_name_real_config_fields(name):
    from vision3d.methods import presets
    from vision3d.methods.helixsurf.config import helixsurf

    config = presets.apply_preset(helixsurf.config, presets.find_preset("helixsurf", name))
    assert config.max_num_iterations == config.pipeline.model.max_steps
    assert config.optimizers["fields"]["scheduler"].max_steps == config.max_num_iterations
    assert config.pipeline.datamanager.dataparser.scene_scale == {"cpu": 1.5, "paper": 4.0}[name]


def test_entry_point_is_in_pyproject():
    import tomllib

    entry_points = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())["project"]["entry-points"]
    assert entry_points["nerfstudio.method_configs"]["helixsurf"] == ENTRY

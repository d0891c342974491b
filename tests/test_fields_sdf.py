"""SDF field: geometric initialisation, finite-difference gradients, eikonal term, NeuS/VolSDF rendering helpers."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from nerfstudio.cameras.rays import Frustums, RaySamples
from nerfstudio.field_components.field_heads import FieldHeadNames

from vision3d.fields.sdf import SDFField, SDFFieldConfig, central_difference_gradient, eikonal_loss
from vision3d.render.sdf_volume import laplace_cdf, neus_alpha, neus_alpha_along_rays, volsdf_density

AABB = torch.tensor([[-1.5, -1.5, -1.5], [1.5, 1.5, 1.5]])


def small_grid_config(**overrides) -> SDFFieldConfig:
    config = SDFFieldConfig(**overrides)
    config.grid = dataclasses.replace(config.grid, log2_hashmap_size=14)
    return config


def points_in_ball(n: int, radius: float, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, generator=g)
    return x / x.norm(dim=-1, keepdim=True) * torch.rand(n, 1, generator=g) * radius


def test_geometric_init_is_the_signed_distance_to_the_sphere():
    # NeuS's init is a sphere in expectation over the random weights: wide (and with softplus close to
    # ReLU, whose smoothing adds ln2/β per unit) it is one
    torch.manual_seed(0)
    wide = SDFField(small_grid_config(hidden_dim=2048, sphere_radius=0.6, softplus_beta=1e4), AABB)
    x = points_in_ball(2000, 1.4)
    with torch.no_grad():
        error = wide.sdf(x)[:, 0] - (x.norm(dim=-1) - 0.6)
    assert error.abs().mean() < 0.05 and error.abs().max() < 0.2
    # the default width: right sign away from the surface, and flipped for scenes seen from inside
    for inside_outside in (False, True):
        torch.manual_seed(1)
        field = SDFField(small_grid_config(inside_outside=inside_outside), AABB)
        with torch.no_grad():
            near, far = field.sdf(points_in_ball(500, 0.3))[:, 0], field.sdf(points_in_ball(500, 1.4) * 0 + 1.3)[:, 0]
        sign = -1.0 if inside_outside else 1.0
        assert (sign * near < 0).all() and (sign * far > 0).all()


def test_central_differences_match_the_analytic_gradient_of_a_known_sdf():
    x = points_in_ball(300, 1.0, seed=2).double()
    x = x / x.norm(dim=-1, keepdim=True) * (0.3 + x.norm(dim=-1, keepdim=True))  # 0.3 to 1.3 from the centre
    radius = 0.7
    sphere = lambda p: p.norm(dim=-1, keepdim=True) - radius  # noqa: E731
    numeric = central_difference_gradient(sphere, x, step=1e-3)
    analytic = x / x.norm(dim=-1, keepdim=True)
    assert torch.allclose(numeric, analytic, atol=1e-5 / 0.3**2)
    # the error is second order in the step
    coarse = (central_difference_gradient(sphere, x, 0.02) - analytic).abs().max()
    fine = (central_difference_gradient(sphere, x, 0.01) - analytic).abs().max()
    assert 3.0 < coarse / fine < 5.0


def test_eikonal_vanishes_for_a_true_sdf_only():
    x = points_in_ball(500, 1.2, seed=3) + 0.05
    sphere = lambda p: p.norm(dim=-1, keepdim=True) - 0.5  # noqa: E731
    scaled = lambda p: 2.0 * sphere(p)  # noqa: E731  same surface, not a distance
    assert eikonal_loss(central_difference_gradient(sphere, x, 1e-3)) < 1e-6
    assert eikonal_loss(central_difference_gradient(scaled, x, 1e-3)) == pytest.approx(1.0, abs=1e-3)


def test_field_finite_difference_gradient_agrees_with_autograd_and_trains_the_grid():
    torch.manual_seed(0)
    config = small_grid_config(steps_per_level=0)
    fd_field = SDFField(config, AABB)
    analytic_field = SDFField(dataclasses.replace(config, gradient_mode="analytic"), AABB)
    analytic_field.load_state_dict(fd_field.state_dict())
    x = points_in_ball(200, 1.2, seed=4) + 0.05
    # at init the grid has no say in the SDF: both are gradients of the same smooth MLP
    fd, analytic = fd_field.gradient(x), analytic_field.gradient(x)
    assert torch.allclose(fd, analytic, atol=2e-3)
    # the eikonal term reaches the hash table through first-order backward only
    eikonal_loss(fd_field.gradient(x)).backward()
    assert fd_field.geometry_layers[0].weight.grad is not None
    fd_field.geometry_layers[0].weight.data[:, 3:] = 0.1  # let the grid speak
    fd_field.grid.params.grad = None
    eikonal_loss(fd_field.gradient(x)).backward()
    assert fd_field.grid.params.grad.abs().sum() > 0


def test_coarse_to_fine_shrinks_the_difference_step_with_the_active_levels():
    field = SDFField(small_grid_config(init_active_levels=4, steps_per_level=100), AABB)
    steps = []
    for step in (0, 100, 550, 10_000):
        field.set_step(step)
        steps.append(field.finite_difference_step())
    assert field.active_levels == field.config.grid.n_levels
    assert steps[0] > steps[1] > steps[2] > steps[3]
    # one cell of the finest active level, in scene units
    field.set_step(0)
    assert steps[0] == pytest.approx(3.0 / float(field.grid.layout.scales[3]))
    # inactive levels contribute nothing
    x = points_in_ball(50, 1.0)
    features = field._grid_features((x - AABB[0]) / (AABB[1] - AABB[0]))
    assert (features[:, 4 * 2 :] == 0).all() and (features[:, : 4 * 2] != 0).any()


def test_neus_alpha_puts_opacity_at_the_zero_crossing():
    t = torch.linspace(0.0, 2.0, 201)
    mid = (t[1:] + t[:-1]) / 2
    deltas = (t[1:] - t[:-1])[:, None]
    sdf = (1.0 - mid)[:, None]  # a plane at t = 1 crossed head-on
    cos = -torch.ones_like(sdf)
    alpha = neus_alpha(sdf, cos, deltas, inv_s=200.0)
    weights = alpha[:, 0] * torch.cumprod(torch.cat([torch.ones(1), 1 - alpha[:-1, 0]]), 0)
    assert abs(float((weights * mid).sum() / weights.sum()) - 1.0) < 0.01
    assert weights.sum() > 0.99
    # behind the surface, on a ray leaving it (sdf growing, cos > 0), no opacity once annealing is over
    leaving = mid > 1.05
    assert neus_alpha(-sdf[leaving], -cos[leaving], deltas[leaving], inv_s=200.0).max() < 1e-3


def test_neus_alpha_along_rays_matches_the_gradient_formula_on_a_plane():
    """A slanted plane (linear SDF): the along-ray difference quotient is the exact directional derivative, so α
    matches NeuS's α with the true cos; unevaluated samples (NaN) get 0 and their neighbours one-sided quotients."""
    t = torch.linspace(0.1, 2.1, 41).expand(3, 41)
    deltas = torch.full_like(t, 0.05)
    cos = torch.tensor([[-1.0], [-0.6], [-0.2]])  # ray direction · plane normal
    sdf = 0.7 + cos * t  # crossing at t = 0.7, 1.17 and 3.5
    expected = neus_alpha(sdf[..., None], cos.expand(3, 41)[..., None], deltas[..., None], 60.0, 0.5)[..., 0]
    assert torch.allclose(neus_alpha_along_rays(sdf, t, deltas, 60.0, 0.5), expected, atol=1e-5)
    holes = sdf.clone()
    holes[:, ::3] = float("nan")
    alpha = neus_alpha_along_rays(holes, t, deltas, 60.0, 0.5)
    assert (alpha[:, ::3] == 0).all()
    evaluated = ~torch.isnan(holes)
    assert torch.allclose(alpha[evaluated], expected[evaluated], atol=1e-5)
    # a lone evaluated sample has no neighbour: treated as heading straight at the surface (cos = −1)
    lone = torch.full_like(sdf, float("nan"))
    lone[:, 10] = sdf[:, 10]
    straight = neus_alpha(sdf[:, 10:11, None], -torch.ones(3, 1, 1), deltas[:, 10:11, None], 60.0, 0.5)[:, 0, 0]
    assert torch.allclose(neus_alpha_along_rays(lone, t, deltas, 60.0, 0.5)[:, 10], straight)


def test_volsdf_density_is_the_scaled_laplace_cdf():
    beta = 0.1
    sdf = torch.tensor([-10.0, 0.0, 10.0])
    density = volsdf_density(sdf, beta)
    assert torch.allclose(density, torch.tensor([1 / beta, 0.5 / beta, 0.0]), atol=1e-3)
    x = torch.linspace(-1, 1, 101, dtype=torch.float64)
    exact = torch.where(x <= 0, 0.5 * torch.exp(x / beta), 1 - 0.5 * torch.exp(-x / beta))
    assert torch.allclose(laplace_cdf(x, beta), exact)


def test_field_outputs_at_ray_samples():
    field = SDFField(small_grid_config(deviation="volsdf", appearance_embedding_dim=4), AABB, num_images=3)
    n_rays, n_samples = 8, 5
    origins = torch.zeros(n_rays, n_samples, 3)
    directions = torch.nn.functional.normalize(torch.randn(n_rays, 1, 3), dim=-1).expand(n_rays, n_samples, 3)
    starts = torch.linspace(0.1, 1.2, n_samples)[None, :, None].expand(n_rays, n_samples, 1)
    samples = RaySamples(
        frustums=Frustums(origins, directions, starts, starts + 0.05, torch.ones(n_rays, n_samples, 1)),
        camera_indices=torch.randint(0, 3, (n_rays, n_samples, 1)),
    )
    out = field(samples)
    assert out[FieldHeadNames.RGB].shape == (n_rays, n_samples, 3)
    assert ((out[FieldHeadNames.RGB] >= 0) & (out[FieldHeadNames.RGB] <= 1)).all()
    assert out[FieldHeadNames.SDF].shape == out[FieldHeadNames.DENSITY].shape == (n_rays, n_samples, 1)
    assert torch.allclose(out[FieldHeadNames.NORMALS].norm(dim=-1), torch.ones(n_rays, n_samples), atol=1e-5)
    assert (out[FieldHeadNames.DENSITY] >= 0).all()
    neus = SDFField(small_grid_config(), AABB)
    alpha = neus.alpha(samples, out[FieldHeadNames.SDF], out[FieldHeadNames.GRADIENT])
    assert alpha.shape == (n_rays, n_samples, 1) and ((alpha >= 0) & (alpha <= 1)).all()


def test_unknown_deviation_is_refused():
    with pytest.raises(ValueError, match="deviation"):
        SDFField(small_grid_config(deviation="gaussian"), AABB)

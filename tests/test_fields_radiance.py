"""Radiance and proposal density fields: shapes, ranges, contraction, gradients, config round trip."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import yaml
from nerfstudio.cameras.rays import Frustums, RaySamples
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.field_components.spatial_distortions import SceneContraction

from vision3d.fields.radiance import (
    DensityField,
    DensityFieldConfig,
    LinfContraction,
    RadianceField,
    RadianceFieldConfig,
    grid_config,
)
from vision3d.fields.sdf import SDFFieldConfig

AABB = torch.tensor([[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]])


def ray_samples(n_rays: int = 16, n_samples: int = 8, far: float = 1.5, n_images: int = 3) -> RaySamples:
    g = torch.Generator().manual_seed(0)
    origins = (torch.rand(n_rays, 1, 3, generator=g) - 0.5).expand(n_rays, n_samples, 3)
    directions = torch.nn.functional.normalize(torch.randn(n_rays, 1, 3, generator=g), dim=-1).expand(n_rays, n_samples, 3)
    starts = torch.linspace(0.0, far, n_samples)[None, :, None].expand(n_rays, n_samples, 1)
    return RaySamples(
        frustums=Frustums(origins, directions, starts, starts + far / n_samples, torch.ones(n_rays, n_samples, 1)),
        camera_indices=torch.randint(0, n_images, (n_rays, n_samples, 1), generator=g),
    )


def small_radiance_field(**overrides) -> RadianceField:
    config = RadianceFieldConfig(grid=grid_config(8, 16, 256, 14), **overrides)
    return RadianceField(config, AABB, num_images=3, spatial_distortion=LinfContraction())


def test_radiance_field_outputs_and_ranges():
    field = small_radiance_field()
    samples = ray_samples()
    out = field(samples)
    assert out[FieldHeadNames.RGB].shape == (16, 8, 3) and out[FieldHeadNames.DENSITY].shape == (16, 8, 1)
    rgb, density = out[FieldHeadNames.RGB], out[FieldHeadNames.DENSITY]
    assert ((rgb >= 0) & (rgb <= 1)).all() and (density >= 0).all() and torch.isfinite(density).all()
    # the loss reaches the table, the MLPs and the appearance codes, and not the sample positions
    (rgb.sum() + density.sum()).backward()
    assert field.grid.params.grad.abs().sum() > 0
    assert field.mlp_base.layers[0].weight.grad is not None and field.embedding_appearance.weight.grad is not None
    assert field._sample_locations.grad is None and not field._sample_locations.requires_grad


def test_view_dependence_and_evaluation_appearance():
    field = small_radiance_field(appearance_embedding_dim=4)
    samples = ray_samples()
    flipped = dataclasses.replace(samples, frustums=dataclasses.replace(samples.frustums, directions=-samples.frustums.directions))
    with torch.no_grad():
        field.mlp_head.layers[0].weight.normal_()  # make colour depend visibly on the direction
        a, b = field(samples)[FieldHeadNames.RGB], field(flipped)[FieldHeadNames.RGB]
        assert not torch.allclose(a, b)
        field.eval()  # every sample gets the mean code, whatever its camera
        other = dataclasses.replace(samples, camera_indices=torch.zeros_like(samples.camera_indices))
        assert torch.allclose(field(samples)[FieldHeadNames.RGB], field(other)[FieldHeadNames.RGB])


def test_linf_contraction_matches_nerfstudios():
    x = torch.randn(1000, 3) * 3
    assert torch.allclose(LinfContraction()(x), SceneContraction(order=float("inf"))(x), atol=1e-6)
    assert LinfContraction()(x).abs().max() <= 2.0


def test_density_is_zero_outside_the_box_without_contraction():
    config = DensityFieldConfig(grid=grid_config(4, 16, 64, 12), average_init_density=1.0)
    field = DensityField(config, AABB)
    inside = torch.rand(100, 3) * 1.8 - 0.9
    outside = inside + torch.tensor([3.0, 0.0, 0.0])
    assert (field.density_fn(inside) > 0).all()
    assert (field.density_fn(outside) == 0).all()
    assert field.density_fn(inside[None]).shape == (1, 100, 1)


def test_normals_on_request_use_position_gradients():
    field = small_radiance_field()
    out = field(ray_samples(), compute_normals=True)
    normals = out[FieldHeadNames.NORMALS]
    assert normals.shape == (16, 8, 3)
    assert torch.allclose(normals.norm(dim=-1), torch.ones(16, 8), atol=1e-4)


@pytest.mark.parametrize("config", [RadianceFieldConfig(), DensityFieldConfig(), SDFFieldConfig(deviation="volsdf")])
def test_config_round_trip_through_yaml(config):
    """nerfstudio saves config.yml with yaml.dump and loads it with yaml.Loader (ns-export, ns-viewer)."""
    loaded = yaml.load(yaml.dump(config), Loader=yaml.Loader)
    assert loaded == config
    assert type(loaded.setup(**({"aabb": AABB} if not isinstance(config, RadianceFieldConfig) else {"aabb": AABB, "num_images": 2})))

"""Radiance fields on :class:`vision3d.fields.HashGrid`: nerfacto's field and its proposal density field.

They implement nerfstudio's ``Field`` interface (``get_density`` / ``get_outputs``), so nerfstudio's
samplers, renderers and losses use them unchanged. Decisions, each a config field where it matters:

- positions are contracted (nerfacto's L∞ ``SceneContraction``, [-2, 2] → [0, 1]; :class:`LinfContraction`
  computes the same with a max of absolute values, as torch's ``linalg.norm(ord=inf)`` took 6 % of a
  CPU training step) or normalised by the scene box; density is zero outside [0, 1]³ (as nerfacto);
- density = ``average_init_density · trunc_exp(raw)`` (nerfacto's activation);
- view directions are encoded with real spherical harmonics of the *unit* direction (nerfstudio's torch
  ``SHEncoding`` is given tcnn's [0, 1]-shifted directions by nerfacto, which is not a unit vector);
- sample positions need no gradient unless normals are asked for, so the grid's backward into the
  positions (a second scatter per sample) runs only then; nerfacto always asks for it;
- the MLPs are torch ``Linear`` layers on every device: the grid dominates the cost on CPU.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from nerfstudio.cameras.rays import RaySamples
from nerfstudio.data.scene_box import SceneBox
from nerfstudio.field_components.activations import trunc_exp
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.field_components.mlp import MLP
from nerfstudio.field_components.spatial_distortions import SceneContraction, SpatialDistortion
from nerfstudio.fields.base_field import Field, FieldConfig
from nerfstudio.utils.math import components_from_spherical_harmonics
from torch import Tensor, nn

from vision3d.fields.hash_grid import HashGrid, HashGridConfig, grid_config


class LinfContraction(SceneContraction):
    """nerfstudio's ``SceneContraction(order=inf)`` (MERF's contraction), with the L∞ norm as max |x_i|.

    x ↦ x inside the unit cube, (2 − 1/‖x‖∞)·x/‖x‖∞ outside; positions [..., 3] → [-2, 2]³.
    """

    def __init__(self) -> None:
        super().__init__(order=float("inf"))

    def forward(self, positions):  # noqa: ANN001, ANN201  (Tensor, or nerfstudio's Gaussians)
        if not isinstance(positions, Tensor):
            return super().forward(positions)
        magnitude = positions.abs().amax(dim=-1, keepdim=True)
        return torch.where(magnitude < 1, positions, (2 - 1 / magnitude) * (positions / magnitude))


def unit_cube_positions(
    positions: Tensor, aabb: Tensor, spatial_distortion: SpatialDistortion | None
) -> tuple[Tensor, Tensor]:
    """World positions [..., 3] to the grid's [0, 1]³ and a mask [...] of those strictly inside it.

    With a spatial distortion (nerfacto's contraction maps to [-2, 2]) the contracted cube is used,
    otherwise the scene box ``aabb`` [2, 3].
    """
    if spatial_distortion is not None:
        unit = (spatial_distortion(positions) + 2.0) / 4.0
    else:
        unit = SceneBox.get_normalized_positions(positions, aabb)
    inside = ((unit > 0.0) & (unit < 1.0)).all(dim=-1)
    return unit, inside


@dataclass
class DensityFieldConfig(FieldConfig):
    """A proposal density field: hash grid and a small MLP, as nerfacto's ``HashMLPDensityField``."""

    _target: type = field(default_factory=lambda: DensityField)
    grid: HashGridConfig = field(default_factory=lambda: grid_config(5, 16, 128, 17))
    """The hash grid (nerfacto's first proposal network: 5 levels, 16 → 128, 2^17 entries)."""
    num_layers: int = 2
    """Linear layers of the MLP (2: one hidden layer)."""
    hidden_dim: int = 16
    average_init_density: float = 1.0
    """Density scale (nerfacto's ``average_init_density``)."""


class DensityField(Field):
    """Density only: ``get_density`` of positions; nerfstudio's proposal sampler calls ``density_fn``."""

    def __init__(
        self, config: DensityFieldConfig, aabb: Tensor, spatial_distortion: SpatialDistortion | None = None
    ) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("aabb", aabb.clone())
        self.spatial_distortion = spatial_distortion
        self.grid = HashGrid(config.grid)
        self.mlp = MLP(
            in_dim=self.grid.n_output_dims,
            num_layers=config.num_layers,
            layer_width=config.hidden_dim,
            out_dim=1,
            activation=nn.ReLU(),
            implementation="torch",
        )

    def density_at(self, positions: Tensor) -> Tensor:
        """Density [..., 1] at world positions [..., 3]."""
        unit, inside = unit_cube_positions(positions, self.aabb, self.spatial_distortion)
        raw = self.mlp(self.grid(unit.reshape(-1, 3))).view(*positions.shape[:-1], 1)
        return self.config.average_init_density * trunc_exp(raw) * inside[..., None]

    def density_fn(self, positions: Tensor, times: Tensor | None = None) -> Tensor:
        del times
        return self.density_at(positions)

    def get_density(self, ray_samples: RaySamples) -> tuple[Tensor, None]:
        return self.density_at(ray_samples.frustums.get_positions()), None

    def get_outputs(self, ray_samples: RaySamples, density_embedding: Tensor | None = None) -> dict:
        return {}


@dataclass
class RadianceFieldConfig(FieldConfig):
    """nerfacto's field: hash grid → density MLP (density + geometry features) → colour MLP."""

    _target: type = field(default_factory=lambda: RadianceField)
    grid: HashGridConfig = field(default_factory=lambda: grid_config(16, 16, 2048, 19))
    """The hash grid (nerfacto: 16 levels, 16 → 2048, 2^19 entries, 2 features per level)."""
    num_layers: int = 2
    hidden_dim: int = 64
    geo_feat_dim: int = 15
    """Geometry features passed from the density MLP to the colour MLP."""
    num_layers_color: int = 3
    hidden_dim_color: int = 64
    sh_levels: int = 4
    """Spherical-harmonic levels of the view-direction encoding (4: 16 coefficients, as nerfacto)."""
    appearance_embedding_dim: int = 32
    """Per-image appearance code (NeRF-W); 0 disables it."""
    use_average_appearance_embedding: bool = True
    """At evaluation, use the mean of the training codes (else zeros)."""
    average_init_density: float = 1.0


class RadianceField(Field):
    """Density and view-dependent colour at ray samples (nerfstudio ``Field``)."""

    def __init__(
        self,
        config: RadianceFieldConfig,
        aabb: Tensor,
        num_images: int,
        spatial_distortion: SpatialDistortion | None = None,
    ) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("aabb", aabb.clone())
        self.spatial_distortion = spatial_distortion
        self.grid = HashGrid(config.grid)
        self.mlp_base = MLP(
            in_dim=self.grid.n_output_dims,
            num_layers=config.num_layers,
            layer_width=config.hidden_dim,
            out_dim=1 + config.geo_feat_dim,
            activation=nn.ReLU(),
            implementation="torch",
        )
        self.embedding_appearance = (
            nn.Embedding(num_images, config.appearance_embedding_dim) if config.appearance_embedding_dim > 0 else None
        )
        self.mlp_head = MLP(
            in_dim=config.sh_levels**2 + config.geo_feat_dim + config.appearance_embedding_dim,
            num_layers=config.num_layers_color,
            layer_width=config.hidden_dim_color,
            out_dim=3,
            activation=nn.ReLU(),
            out_activation=nn.Sigmoid(),
            implementation="torch",
        )
        self._positions_need_grad = False

    def forward(self, ray_samples: RaySamples, compute_normals: bool = False) -> dict[FieldHeadNames, Tensor]:
        self._positions_need_grad = compute_normals
        return super().forward(ray_samples, compute_normals=compute_normals)

    def get_density(self, ray_samples: RaySamples) -> tuple[Tensor, Tensor]:
        """Density [..., 1] and geometry features [..., geo_feat_dim] at the samples."""
        unit, inside = unit_cube_positions(ray_samples.frustums.get_positions(), self.aabb, self.spatial_distortion)
        if self._positions_need_grad:
            unit = unit.detach().requires_grad_(True)
        self._sample_locations = unit
        h = self.mlp_base(self.grid(unit.reshape(-1, 3))).view(*unit.shape[:-1], -1)
        raw, geo = torch.split(h, [1, self.config.geo_feat_dim], dim=-1)
        self._density_before_activation = raw
        density = self.config.average_init_density * trunc_exp(raw) * inside[..., None]
        return density, geo

    def appearance_codes(self, camera_indices: Tensor, n: int) -> Tensor | None:
        """Appearance codes [n, dim] of the samples' images (training) or their mean / zeros (evaluation)."""
        if self.embedding_appearance is None:
            return None
        if self.training:
            return self.embedding_appearance(camera_indices.reshape(-1))
        weight = self.embedding_appearance.weight
        code = weight.mean(dim=0) if self.config.use_average_appearance_embedding else torch.zeros_like(weight[0])
        return code.expand(n, -1)

    def get_outputs(self, ray_samples: RaySamples, density_embedding: Tensor | None = None) -> dict[FieldHeadNames, Tensor]:
        """Colour [..., 3] in [0, 1] from the geometry features, the view direction and the appearance code."""
        if density_embedding is None:
            raise ValueError("RadianceField.get_outputs needs the geometry features from get_density")
        shape = ray_samples.frustums.directions.shape[:-1]
        directions = torch.nn.functional.normalize(ray_samples.frustums.directions.reshape(-1, 3), dim=-1)
        inputs = [
            components_from_spherical_harmonics(levels=self.config.sh_levels, directions=directions),
            density_embedding.reshape(-1, self.config.geo_feat_dim),
        ]
        if self.embedding_appearance is not None:
            if ray_samples.camera_indices is None:
                raise ValueError("RadianceField with an appearance embedding needs ray_samples.camera_indices")
            inputs.append(self.appearance_codes(ray_samples.camera_indices, directions.shape[0]))
        rgb = self.mlp_head(torch.cat(inputs, dim=-1)).view(*shape, 3)
        return {FieldHeadNames.RGB: rgb}

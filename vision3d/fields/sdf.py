"""Signed-distance field on :class:`~vision3d.fields.HashGrid` for NeuS / VolSDF rendering (HelixSurf builds on it).

- Geometry MLP on ``[x, grid(x)]`` (x in scene units, the grid sees x normalised by the scene box), with
  softplus (β = 100) and NeuS/SAL geometric initialisation: at init f(x) ≈ |x| − r, a sphere of radius
  ``sphere_radius`` (``inside_outside`` flips the sign, for scenes seen from inside, such as rooms).
- A learned sharpness: NeuS's s = exp(10·v) or VolSDF's β = |β| + β_min (``deviation``).
- Normals and the eikonal term from central finite differences (Neuralangelo): six more SDF evaluations
  per point, first-order backward only, so no double backward through the grid. Coarse to fine: only the
  first ``active_levels`` grid levels contribute (one more every ``steps_per_level`` steps) and the
  difference step is the cell size of the finest active level, so it shrinks as levels switch on.
- ``gradient_mode="analytic"``: autograd gradients with ``create_graph``; these need a backend with a
  double backward, so the grid is then evaluated with its torch reference (on every device).
- Colour as NeuS ("idr" mode): MLP on [x, normal, view direction, geometry features, appearance code].
"""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field
from typing import Literal

import torch
from nerfstudio.cameras.rays import RaySamples
from nerfstudio.field_components.field_heads import FieldHeadNames
from nerfstudio.fields.base_field import Field, FieldConfig
from torch import Tensor, nn

from vision3d.fields.hash_grid import HashGrid, HashGridConfig, grid_config
from vision3d.fields.hash_grid_reference import encode_reference
from vision3d.render.sdf_volume import neus_alpha, volsdf_density


def central_difference_gradient(fn, x: Tensor, step: float) -> Tensor:  # noqa: ANN001
    """∇fn at x [N, 3] by central differences with ``step`` (same units as x): [N, 3].

    ``fn`` maps [M, 3] to [M, 1]; it is called once, on the 6N offset points.
    """
    offsets = torch.eye(3, dtype=x.dtype, device=x.device) * step  # [3, 3]
    probes = torch.cat([x[:, None, :] + offsets, x[:, None, :] - offsets], dim=1)  # [N, 6, 3]
    values = fn(probes.reshape(-1, 3)).reshape(-1, 6)
    return (values[:, :3] - values[:, 3:]) / (2.0 * step)


def eikonal_loss(gradients: Tensor) -> Tensor:
    """Mean of (‖∇f‖ − 1)² over gradients [..., 3]: zero exactly for a true signed distance."""
    return ((gradients.norm(dim=-1) - 1.0) ** 2).mean()


@dataclass
class SDFFieldConfig(FieldConfig):
    """Hash-grid SDF with geometric initialisation, a learned sharpness and finite-difference normals."""

    _target: type = field(default_factory=lambda: SDFField)
    grid: HashGridConfig = field(default_factory=lambda: grid_config(16, 16, 2048, 19))
    """The hash grid (16 levels, 16 → 2048, 2^19 entries, 2 features per level)."""
    num_layers: int = 2
    """Linear layers of the geometry MLP (2: one hidden layer, as Neuralangelo)."""
    hidden_dim: int = 128
    """Width of the hidden layers. The geometric initialisation is a sphere only on average over random
    weights: measured, its error at init has a standard deviation of about 0.1 at width 128 (0.15 at 64,
    0.07 at 256) for radius 0.8; wider is rounder and slower."""
    geo_feat_dim: int = 15
    """Geometry features passed to the colour MLP."""
    sphere_radius: float = 0.8
    """Radius of the geometric-initialisation sphere, in scene units (nerfstudio's scenes fit in [-1, 1])."""
    inside_outside: bool = False
    """True for scenes seen from inside the sphere (rooms): the SDF is then positive inside it at init."""
    softplus_beta: float = 100.0
    deviation: Literal["neus", "volsdf"] = "neus"
    """Learned sharpness: NeuS's s = exp(10·v) (rendering with NeuS's α) or VolSDF's β (Laplace density)."""
    init_variance: float = 0.3
    """NeuS's initial v (s = exp(3) ≈ 20)."""
    init_beta: float = 0.1
    beta_min: float = 1e-4
    gradient_mode: Literal["finite_difference", "analytic"] = "finite_difference"
    init_active_levels: int = 4
    """Grid levels active at step 0 (Neuralangelo's coarse-to-fine); the finer ones contribute zeros."""
    steps_per_level: int = 2000
    """Steps between switching on the next level (0: all levels from the start)."""
    num_layers_color: int = 3
    hidden_dim_color: int = 64
    appearance_embedding_dim: int = 0
    """Per-image appearance code (0: none)."""


class LearnedSharpness(nn.Module):
    """NeuS's ``inv_s`` = exp(10·v) and VolSDF's ``beta`` = |β| + β_min, one scalar parameter each."""

    def __init__(self, mode: Literal["neus", "volsdf"], init_variance: float, init_beta: float, beta_min: float) -> None:
        super().__init__()
        if mode not in ("neus", "volsdf"):
            raise ValueError(f"SDFFieldConfig.deviation: {mode!r}, use 'neus' or 'volsdf'")
        self.mode, self.beta_min = mode, beta_min
        self.value = nn.Parameter(torch.tensor(init_variance if mode == "neus" else init_beta, dtype=torch.float32))

    def inv_s(self) -> Tensor:
        """NeuS's s (1 / standard deviation of the logistic density), clamped to [1e-6, 1e6]."""
        return torch.exp(self.value * 10.0).clamp(1e-6, 1e6)

    def beta(self) -> Tensor:
        """VolSDF's β (scale of the Laplace CDF), at least ``beta_min``."""
        return self.value.abs() + self.beta_min


def geometric_init_(layers: list[nn.Linear], n_position_inputs: int, radius: float, inside_outside: bool) -> None:
    """SAL / NeuS geometric initialisation of a softplus MLP so that output 0 ≈ |x| − radius (sign flipped inside).

    Only the first ``n_position_inputs`` inputs (x) of the first layer get weights; the encoding's get zero,
    so the grid starts with no influence. Hidden layers are He-initialised; the last layer's weights have
    mean √π/√width, which makes the network's output the norm of x.
    """
    for i, layer in enumerate(layers):
        nn.init.zeros_(layer.bias)
        if i == len(layers) - 1:
            mean = math.sqrt(math.pi) / math.sqrt(layer.in_features)
            nn.init.normal_(layer.weight, mean=-mean if inside_outside else mean, std=1e-4)
            layer.bias.data[0] = radius if inside_outside else -radius
        else:
            nn.init.normal_(layer.weight, 0.0, math.sqrt(2.0) / math.sqrt(layer.out_features))
            if i == 0:
                layer.weight.data[:, n_position_inputs:] = 0.0


class SDFField(Field):
    """Signed distance, normals, geometry features and colour at ray samples (nerfstudio ``Field``).

    ``aabb`` [2, 3]: the scene box the grid covers (positions outside are clamped onto it).
    """

    def __init__(self, config: SDFFieldConfig, aabb: Tensor, num_images: int = 1) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("aabb", aabb.clone().float())
        self.grid = HashGrid(config.grid)
        n_in = 3 + self.grid.n_output_dims
        widths = [n_in] + [config.hidden_dim] * (config.num_layers - 1) + [1 + config.geo_feat_dim]
        self.geometry_layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(widths))
        geometric_init_(list(self.geometry_layers), 3, config.sphere_radius, config.inside_outside)
        self.softplus = nn.Softplus(beta=config.softplus_beta)
        self.sharpness = LearnedSharpness(config.deviation, config.init_variance, config.init_beta, config.beta_min)
        self.embedding_appearance = (
            nn.Embedding(num_images, config.appearance_embedding_dim) if config.appearance_embedding_dim > 0 else None
        )
        color_in = 9 + config.geo_feat_dim + config.appearance_embedding_dim
        color_widths = [color_in] + [config.hidden_dim_color] * (config.num_layers_color - 1) + [3]
        self.color_layers = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(color_widths))
        n_levels, n_features = config.grid.n_levels, config.grid.n_features_per_level
        self.register_buffer("level_of_column", torch.arange(n_levels).repeat_interleave(n_features), persistent=False)
        self.active_levels = n_levels if config.steps_per_level == 0 else min(config.init_active_levels, n_levels)

    # ------------------------------------------------------------------ coarse to fine
    def set_step(self, step: int) -> None:
        """Switch on levels as training proceeds: ``init_active_levels`` + step // ``steps_per_level``."""
        if self.config.steps_per_level > 0:
            grown = self.config.init_active_levels + step // self.config.steps_per_level
            self.active_levels = int(min(grown, self.config.grid.n_levels))

    def finite_difference_step(self) -> float:
        """Central-difference step in scene units: one cell of the finest active level."""
        scale = float(self.grid.layout.scales[self.active_levels - 1])
        return float((self.aabb[1] - self.aabb[0]).min()) / scale

    # ------------------------------------------------------------------ geometry
    def _grid_features(self, unit: Tensor) -> Tensor:
        if self.config.gradient_mode == "analytic":
            features = encode_reference(unit.clamp(0.0, 1.0), self.grid.params, self.grid.layout).float()
        else:
            features = self.grid(unit)
        if self.active_levels < self.config.grid.n_levels:
            features = features * (self.level_of_column < self.active_levels).to(features.dtype)
        return features

    def sdf_and_features(self, positions: Tensor) -> tuple[Tensor, Tensor]:
        """Signed distance [N, 1] and geometry features [N, geo_feat_dim] at positions [N, 3] (scene units)."""
        unit = (positions - self.aabb[0]) / (self.aabb[1] - self.aabb[0])
        h = torch.cat([positions, self._grid_features(unit)], dim=-1)
        for i, layer in enumerate(self.geometry_layers):
            h = layer(h)
            if i < len(self.geometry_layers) - 1:
                h = self.softplus(h)
        return h[:, :1], h[:, 1:]

    def sdf(self, positions: Tensor) -> Tensor:
        """Signed distance [N, 1] at positions [N, 3]."""
        return self.sdf_and_features(positions)[0]

    def gradient(self, positions: Tensor) -> Tensor:
        """∇f [N, 3] at positions [N, 3]: central differences (default) or autograd (``gradient_mode``)."""
        if self.config.gradient_mode == "finite_difference":
            return central_difference_gradient(self.sdf, positions, self.finite_difference_step())
        with torch.enable_grad():
            x = positions if positions.requires_grad else positions.detach().requires_grad_(True)
            sdf = self.sdf(x)
            return torch.autograd.grad(sdf, x, torch.ones_like(sdf), create_graph=True)[0]

    def density(self, sdf: Tensor) -> Tensor:
        """VolSDF density of signed distances (with ``deviation="volsdf"``)."""
        return volsdf_density(sdf, self.sharpness.beta())

    def alpha(self, ray_samples: RaySamples, sdf: Tensor, gradients: Tensor, cos_anneal_ratio: float = 1.0) -> Tensor:
        """NeuS's opacity [..., S, 1] of the samples from their SDF [..., S, 1] and gradients [..., S, 3]."""
        directions = ray_samples.frustums.directions
        cos = (directions * gradients).sum(dim=-1, keepdim=True)
        deltas = ray_samples.deltas if ray_samples.deltas is not None else ray_samples.frustums.ends - ray_samples.frustums.starts
        return neus_alpha(sdf, cos, deltas, self.sharpness.inv_s(), cos_anneal_ratio)

    # ------------------------------------------------------------------ nerfstudio Field
    def get_density(self, ray_samples: RaySamples) -> tuple[Tensor, Tensor]:
        """VolSDF density [..., 1] (for samplers and VolSDF rendering) and the geometry features."""
        positions = ray_samples.frustums.get_positions()
        sdf, features = self.sdf_and_features(positions.reshape(-1, 3))
        shape = positions.shape[:-1]
        return self.density(sdf).view(*shape, 1), features.view(*shape, -1)

    def color(self, positions: Tensor, normals: Tensor, directions: Tensor, features: Tensor, camera_indices: Tensor | None) -> Tensor:
        """RGB [N, 3] in [0, 1] from NeuS's "idr" inputs (all [N, ·])."""
        inputs = [positions, normals, directions, features]
        if self.embedding_appearance is not None:
            if self.training and camera_indices is not None:
                inputs.append(self.embedding_appearance(camera_indices.reshape(-1)))
            else:
                inputs.append(self.embedding_appearance.weight.mean(dim=0).expand(positions.shape[0], -1))
        h = torch.cat(inputs, dim=-1)
        for i, layer in enumerate(self.color_layers):
            h = layer(h)
            if i < len(self.color_layers) - 1:
                h = torch.relu(h)
        return torch.sigmoid(h)

    def get_outputs(self, ray_samples: RaySamples, density_embedding: Tensor | None = None) -> dict[FieldHeadNames, Tensor]:
        """SDF, gradient, unit normals and colour at the samples, each [..., C]."""
        positions = ray_samples.frustums.get_positions()
        shape = positions.shape[:-1]
        flat = positions.reshape(-1, 3)
        sdf, features = self.sdf_and_features(flat)
        gradients = self.gradient(flat)
        normals = torch.nn.functional.normalize(gradients, dim=-1)
        directions = torch.nn.functional.normalize(ray_samples.frustums.directions.reshape(-1, 3), dim=-1)
        rgb = self.color(flat, normals, directions, features, ray_samples.camera_indices)
        return {
            FieldHeadNames.RGB: rgb.view(*shape, 3),
            FieldHeadNames.SDF: sdf.view(*shape, 1),
            FieldHeadNames.GRADIENT: gradients.view(*shape, 3),
            FieldHeadNames.NORMALS: normals.view(*shape, 3),
        }

    def forward(self, ray_samples: RaySamples, compute_normals: bool = False) -> dict[FieldHeadNames, Tensor]:
        """:meth:`get_outputs`, plus VolSDF's density when ``deviation="volsdf"`` (NeuS renders with
        :func:`vision3d.render.sdf_volume.neus_alpha` of the SDF and gradient instead)."""
        del compute_normals  # normals are always computed
        outputs = self.get_outputs(ray_samples)
        if self.config.deviation == "volsdf":
            outputs[FieldHeadNames.DENSITY] = self.density(outputs[FieldHeadNames.SDF])
        return outputs

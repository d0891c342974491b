"""nerfstudio's nerfacto on vision3d's fields: same sampler, renderers, losses and options, our hash grid.

``NerfactoModel.populate_modules`` builds nerfstudio's ``NerfactoField`` and ``HashMLPDensityField`` (torch
``HashEncoding`` on CPU, 0.03–0.08 M points/s) and LPIPS, whose AlexNet download crashes offline. This
subclass builds :class:`~vision3d.fields.radiance.RadianceField` and
:class:`~vision3d.fields.radiance.DensityField` from the same nerfacto options (``num_levels``, ``max_res``,
``proposal_net_args_list``, ... keep their meaning) and computes LPIPS only when its weights are on disk
(:mod:`vision3d.metrics`). Everything else (proposal sampling and its schedules, interlevel and distortion
losses, camera optimisation, outputs) is nerfacto's own code. ``implementation`` is ignored: the hash-grid
backend follows the tensors' device (:mod:`vision3d.backends`). ``predict_normals`` is not supported.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from nerfstudio.model_components.losses import MSELoss
from nerfstudio.model_components.ray_samplers import ProposalNetworkSampler, UniformSampler
from nerfstudio.model_components.renderers import (
    AccumulationRenderer,
    DepthRenderer,
    NormalsRenderer,
    RGBRenderer,
)
from nerfstudio.model_components.scene_colliders import NearFarCollider
from nerfstudio.model_components.shaders import NormalsShader
from nerfstudio.models.base_model import Model
from nerfstudio.models.nerfacto import NerfactoModel, NerfactoModelConfig
from torchmetrics.image import PeakSignalNoiseRatio

from vision3d import metrics
from vision3d.errors import ConfigError
from vision3d.fields.radiance import (
    DensityField,
    DensityFieldConfig,
    LinfContraction,
    RadianceField,
    RadianceFieldConfig,
    grid_config,
)


@dataclass
class Vision3DNerfactoModelConfig(NerfactoModelConfig):
    """nerfacto's options, with nerfstudio's ``nerfacto`` method defaults (``average_init_density=0.01``)."""

    _target: type = field(default_factory=lambda: Vision3DNerfactoModel)
    average_init_density: float = 0.01


def radiance_field_config(config: NerfactoModelConfig) -> RadianceFieldConfig:
    """The main field's config from nerfacto's options."""
    grid = grid_config(
        config.num_levels, config.base_res, config.max_res, config.log2_hashmap_size, config.features_per_level, "inplace"
    )
    return RadianceFieldConfig(
        grid=grid,
        hidden_dim=config.hidden_dim,
        hidden_dim_color=config.hidden_dim_color,
        appearance_embedding_dim=config.appearance_embed_dim if config.use_appearance_embedding else 0,
        use_average_appearance_embedding=config.use_average_appearance_embedding,
        average_init_density=config.average_init_density,
    )


def density_field_config(args: dict, average_init_density: float) -> DensityFieldConfig:
    """A proposal field's config from one of nerfacto's ``proposal_net_args_list`` dicts."""
    known = {"hidden_dim", "log2_hashmap_size", "num_levels", "max_res", "base_res", "use_linear", "num_layers", "features_per_level"}
    unknown = set(args) - known
    if unknown:
        raise ConfigError(f"proposal_net_args_list: unsupported keys {sorted(unknown)} (known: {sorted(known)})")
    grid = grid_config(
        args.get("num_levels", 8), args.get("base_res", 16), args.get("max_res", 1024),
        args.get("log2_hashmap_size", 18), args.get("features_per_level", 2), "inplace",
    )
    return DensityFieldConfig(
        grid=grid,
        num_layers=1 if args.get("use_linear", False) else args.get("num_layers", 2),
        hidden_dim=args.get("hidden_dim", 64),
        average_init_density=average_init_density,
    )


class Vision3DNerfactoModel(NerfactoModel):
    """nerfacto with :mod:`vision3d.fields`; see the module docstring for what differs."""

    config: Vision3DNerfactoModelConfig

    def populate_modules(self) -> None:
        Model.populate_modules(self)
        config = self.config
        if config.predict_normals:
            raise ConfigError("vision3d-nerfacto: predict_normals is not supported (its normal MLP is not built)")
        contraction = None if config.disable_scene_contraction else LinfContraction()
        aabb = self.scene_box.aabb
        self.field = RadianceField(radiance_field_config(config), aabb, self.num_train_data, contraction)
        self.camera_optimizer = config.camera_optimizer.setup(num_cameras=self.num_train_data, device="cpu")

        n_prop = config.num_proposal_iterations
        args_list = config.proposal_net_args_list
        if config.use_same_proposal_network:
            if len(args_list) != 1:
                raise ConfigError("use_same_proposal_network needs exactly one entry in proposal_net_args_list")
            network = DensityField(density_field_config(args_list[0], config.average_init_density), aabb, contraction)
            self.proposal_networks = torch.nn.ModuleList([network])
            self.density_fns = [network.density_fn] * n_prop
        else:
            self.proposal_networks = torch.nn.ModuleList(
                DensityField(density_field_config(args_list[min(i, len(args_list) - 1)], config.average_init_density), aabb, contraction)
                for i in range(n_prop)
            )
            self.density_fns = [network.density_fn for network in self.proposal_networks]

        def update_schedule(step: int) -> float:
            return np.clip(np.interp(step, [0, config.proposal_warmup], [0, config.proposal_update_every]), 1, config.proposal_update_every)

        self.proposal_sampler = ProposalNetworkSampler(
            num_nerf_samples_per_ray=config.num_nerf_samples_per_ray,
            num_proposal_samples_per_ray=config.num_proposal_samples_per_ray,
            num_proposal_network_iterations=n_prop,
            single_jitter=config.use_single_jitter,
            update_sched=update_schedule,
            initial_sampler=UniformSampler(single_jitter=config.use_single_jitter) if config.proposal_initial_sampler == "uniform" else None,
        )
        self.collider = NearFarCollider(near_plane=config.near_plane, far_plane=config.far_plane)
        self.renderer_rgb = RGBRenderer(background_color=config.background_color)
        self.renderer_accumulation = AccumulationRenderer()
        self.renderer_depth = DepthRenderer(method="median")
        self.renderer_expected_depth = DepthRenderer(method="expected")
        self.renderer_normals = NormalsRenderer()
        self.normals_shader = NormalsShader()
        self.rgb_loss = MSELoss()
        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.step = 0

    def get_image_metrics_and_images(self, outputs, batch):
        """nerfacto's images; PSNR, SSIM and (when its weights are on disk) LPIPS from :mod:`vision3d.metrics`."""
        from nerfstudio.utils import colormaps

        gt = self.renderer_rgb.blend_background(batch["image"].to(self.device))
        pred = outputs["rgb"]
        scores = metrics.image_metrics(pred.detach().cpu(), gt.detach().cpu())
        images = {
            "img": torch.cat([gt, pred], dim=1),
            "accumulation": colormaps.apply_colormap(outputs["accumulation"]),
            "depth": colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"]),
        }
        for i in range(self.config.num_proposal_iterations):
            images[f"prop_depth_{i}"] = colormaps.apply_depth_colormap(outputs[f"prop_depth_{i}"], accumulation=outputs["accumulation"])
        return scores, images

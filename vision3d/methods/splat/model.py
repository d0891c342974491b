"""A CPU-capable splatfacto: nerfstudio's ``SplatfactoModel`` on our rasterizer.

nerfstudio's splatfacto cannot run without CUDA: ``populate_modules`` and ``get_outputs`` call
``.cuda()``, gsplat's rasterizer has no CPU path, and LPIPS is built at init by downloading AlexNet.
This subclass keeps everything else of splatfacto (parameters, optimizers, gsplat's
``DefaultStrategy`` densification, checkpoints, ``ns-export gaussian-splat``, the viewer) and changes
only these things:

- tensors stay on the model's device; ``vision3d.render.rasterize_gaussians`` sends CUDA tensors to
  gsplat and CPU tensors to our kernels, with one contract;
- LPIPS comes from :mod:`vision3d.metrics` (only when its weights are on disk);
- :meth:`render` is one entry point for every pass a method needs (RGB, depth, extra channels such as
  RoMaP's labels, replaced opacities such as det-gs's constant-opacity depth), so subclasses do not
  copy ``get_outputs``;
- splatfacto's lengths (densify / cull size thresholds, the random-init cube, the means' learning rate,
  the near plane) are in units of the cameras' extent, about the cameras' centre (``camera_extent``),
  not of the world: they are splatfacto's values in nerfstudio's default frame (extent 1) and scale
  with any other frame (a metric one), so a scene trains the same in any unit and placement.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from gsplat.strategy import DefaultStrategy
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.models.splatfacto import (
    RGB2SH,
    SplatfactoModel,
    SplatfactoModelConfig,
    num_sh_bases,
    random_quat_tensor,
)
from nerfstudio.utils.colors import get_color
from pytorch_msssim import SSIM
from torchmetrics.image import PeakSignalNoiseRatio

from vision3d import backends, metrics
from vision3d.geometry.se3 import invert_pose, make_pose, opengl_to_opencv
from vision3d.render import rasterize_gaussians


@dataclass
class SplatModelConfig(SplatfactoModelConfig):
    """splatfacto's config with CPU-friendly defaults for random initialisation.

    Like splatfacto, the model starts from the scene's seed points when the dataparser gives them
    (``ply_file_path`` in ``transforms.json``: COLMAP's sparse cloud, or the SfM-like ``sparse_pc.ply`` of
    our rendered scenes, see :mod:`vision3d.data.sparse_points`) and from a random cube otherwise (or with
    ``random_init``). On the bundled scene the seeds are worth +3.5 dB held-out PSNR at 1500 steps.

    ``num_random`` and ``random_scale`` are smaller than splatfacto's (50k points in a cube of side
    10): the cameras reach 1 camera extent from their centre, so a cube of side 3 covers the scene, and
    5k starting points keep a CPU step in the tens of milliseconds; densification adds what is needed.

    Lengths are in **camera extents** (``camera_extent``): ``random_scale``, ``background_radius``,
    ``densify_size_thresh`` and ``cull_scale_thresh`` (through gsplat's ``scene_scale``), the near plane
    and the means' learning rate (``learning_rate_scales``, applied by our trainer) are multiplied by it,
    and the random cube and background sphere are centred on the cameras' centre. nerfstudio's
    splatfacto leaves them in world units (``scene_scale=1``), right only in its default frame.

    ``num_downscales=0`` (splatfacto: 2, i.e. start at 1/4 resolution): gsplat's DefaultStrategy splits
    every Gaussian whose screen radius exceeds ``split_screen_size`` (0.05) of the image side, which at a
    quarter of a 128-px image is 1.6 px, so nearly every Gaussian split at every refinement and the count
    doubled each 100 steps (5k to 900k by step 1800 on the bundled scene). At full resolution it stays in
    the tens of thousands.
    """

    _target: type = field(default_factory=lambda: SplatModel)
    num_random: int = 5000
    random_scale: float = 3.0
    background_color: str = "random"
    num_downscales: int = 0
    num_background_points: int = 0
    """With seed points: this many extra Gaussians (random colours) on a sphere of radius
    ``background_radius`` around the origin, for what lies beyond the seeded surfaces (sky, an HDRI
    environment). Seed points sit on surfaces two views triangulate, so nothing starts where the far
    background is and densification must drag clones out there. Off by default, measured on the bundled
    scene (1500 steps, fit_schedule): 2000 points gave +1.2 dB held-out PSNR (22.1 -> 23.3) but depth
    AbsRel 0.035 -> 0.20, because the expected depth averages the far sphere in through the foreground's
    residual transparency (and det-gs supervises that depth). Not used with random initialisation."""
    background_radius: float = 10.0
    """Radius of the background sphere about the cameras' centre, in camera extents (ten times the camera
    rig's extent: far enough to show little parallax)."""
    camera_extent: float | None = None
    """The length unit of the settings above, in world units. None: the dataparser's
    ``metadata["camera_extent"]`` (``vision3d-data``: the largest |coordinate| of a camera position about
    the cameras' mean, over every frame of the capture, nerfstudio's auto-scale measure; so 1 in
    nerfstudio's default frame, and train-only cameras of a sparse split do not shrink it), or 1 when the
    dataparser gives none (nerfstudio's own parsers: their default frame)."""
    camera_centre: tuple[float, float, float] | None = None
    """Centre of the random-init cube and the background sphere, in world units. None: the dataparser's
    ``metadata["camera_centre"]`` (the cameras' mean position), or the origin when it gives none."""
    near_plane: float = 0.01
    """Gaussians nearer than this many camera extents to a camera are not drawn (splatfacto's 0.01)."""


def camera_to_viewmat(camera_to_world: torch.Tensor) -> torch.Tensor:
    """World-to-camera [C, 4, 4] in OpenCV axes (gsplat's ``viewmats``) from nerfstudio's c2w [C, 3, 4] (OpenGL)."""
    c2w = make_pose(camera_to_world[:, :3, :3], camera_to_world[:, :3, 3])
    return invert_pose(opengl_to_opencv(c2w))


class SplatModel(SplatfactoModel):
    """splatfacto on CPU or GPU. See the module docstring for what differs from nerfstudio's."""

    config: SplatModelConfig

    @property
    def camera_extent(self) -> float:
        """The world length of one camera extent (see ``SplatModelConfig.camera_extent``)."""
        if self.config.camera_extent is not None:
            return float(self.config.camera_extent)
        return float(self.kwargs.get("metadata", {}).get("camera_extent", 1.0))

    @property
    def camera_centre(self) -> torch.Tensor:
        """The cameras' centre [3] in world units (see ``SplatModelConfig.camera_centre``)."""
        centre = self.config.camera_centre
        if centre is None:
            centre = self.kwargs.get("metadata", {}).get("camera_centre", (0.0, 0.0, 0.0))
        return torch.tensor(centre, dtype=torch.float32)

    def learning_rate_scales(self) -> dict[str, float]:
        """Factors for configured learning rates of parameter groups in world units (``Vision3DTrainer``):
        the means move in camera extents, as 3DGS scales their rate by the scene's extent."""
        return {"means": self.camera_extent}

    def populate_modules(self) -> None:
        """splatfacto's parameters and strategy, built on the CPU (nerfstudio moves the model later)."""
        if torch.device(self.kwargs.get("device", "cpu")).type == "cpu":
            backends.prefer_aten_cpu_convolutions()
        extent, centre = self.camera_extent, self.camera_centre
        seeded = self.seed_points is not None and not self.config.random_init and len(self.seed_points[0]) > 0
        if seeded:
            means = self.seed_points[0].float().clone()
            rgb = self.seed_points[1].float() / 255.0 if len(self.seed_points[1]) == len(means) else torch.rand_like(means)
            if self.config.num_background_points > 0:
                direction = torch.nn.functional.normalize(torch.randn(self.config.num_background_points, 3), dim=-1)
                means = torch.cat([means, centre + direction * (self.config.background_radius * extent)])
                rgb = torch.cat([rgb, torch.rand(self.config.num_background_points, 3)])
        else:
            means = centre + (torch.rand(self.config.num_random, 3) - 0.5) * (self.config.random_scale * extent)
        distances, _ = self.k_nearest_sklearn(means, 3)
        avg_dist = torch.from_numpy(distances).float().mean(dim=-1, keepdim=True).clamp_min(1e-7)
        num_points = means.shape[0]
        dim_sh = num_sh_bases(self.config.sh_degree)
        if seeded:
            shs = torch.zeros(num_points, dim_sh, 3)
            shs[:, 0] = RGB2SH(rgb) if self.config.sh_degree > 0 else torch.logit(rgb, eps=1e-10)
            features_dc, features_rest = shs[:, 0], shs[:, 1:]
        else:
            features_dc, features_rest = torch.rand(num_points, 3), torch.zeros(num_points, dim_sh - 1, 3)

        self.gauss_params = torch.nn.ParameterDict(
            {
                "means": torch.nn.Parameter(means),
                "scales": torch.nn.Parameter(torch.log(avg_dist.repeat(1, 3))),
                "quats": torch.nn.Parameter(random_quat_tensor(num_points)),
                "features_dc": torch.nn.Parameter(features_dc.contiguous()),
                "features_rest": torch.nn.Parameter(features_rest.contiguous()),
                "opacities": torch.nn.Parameter(torch.logit(0.1 * torch.ones(num_points, 1))),
            }
        )
        self.camera_optimizer = self.config.camera_optimizer.setup(num_cameras=self.num_train_data, device="cpu")
        self.psnr = PeakSignalNoiseRatio(data_range=1.0)
        self.ssim = SSIM(data_range=1.0, size_average=True, channel=3)
        self.step = 0
        self.crop_box = None
        if self.config.background_color == "random":
            self.background_color = torch.tensor([0.1490, 0.1647, 0.2157])  # viser's background, for eval
        else:
            self.background_color = get_color(self.config.background_color)
        if self.config.use_bilateral_grid:
            from nerfstudio.model_components.lib_bilagrid import BilateralGrid

            self.bil_grids = BilateralGrid(
                num=self.num_train_data,
                grid_X=self.config.grid_shape[0],
                grid_Y=self.config.grid_shape[1],
                grid_W=self.config.grid_shape[2],
            )
        self.strategy = DefaultStrategy(
            prune_opa=self.config.cull_alpha_thresh,
            grow_grad2d=self.config.densify_grad_thresh,
            grow_scale3d=self.config.densify_size_thresh,
            grow_scale2d=self.config.split_screen_size,
            prune_scale3d=self.config.cull_scale_thresh,
            prune_scale2d=self.config.cull_screen_size,
            refine_scale2d_stop_iter=self.config.stop_screen_size_at,
            refine_start_iter=self.config.warmup_length,
            refine_stop_iter=self.config.stop_split_at,
            reset_every=self.config.reset_alpha_every * self.config.refine_every,
            refine_every=self.config.refine_every,
            pause_refine_after_reset=self.num_train_data + self.config.refine_every,
            absgrad=self.config.use_absgrad,
            revised_opacity=False,
            verbose=False,
        )
        self.strategy_state = self.strategy.initialize_state(scene_scale=extent)

    # ------------------------------------------------------------------ rendering
    def render(
        self,
        camera: Cameras,
        render_mode: str = "RGB",
        colors: torch.Tensor | None = None,
        opacities: torch.Tensor | None = None,
        means: torch.Tensor | None = None,
        scales: torch.Tensor | None = None,
        quats: torch.Tensor | None = None,
        sh_degree: int | None = -1,
    ):
        """Rasterize the Gaussians for one camera at the current training resolution.

        Any of ``colors`` [N, D] (or SH [N, K, 3]), ``opacities`` [N] (activated), ``means`` [N, 3],
        ``scales`` [N, 3] (activated) and ``quats`` [N, 4] may replace the model's own, e.g. a detached or
        constant copy for a regularization pass. ``sh_degree=-1`` means the model's current degree (when
        ``colors`` is None); pass None with plain per-Gaussian channels.

        Returns:
            (render [1, H, W, D(+1)], alpha [1, H, W, 1], info) as ``vision3d.render.rasterize_gaussians``.
        """
        if self.training:
            if camera.shape[0] != 1:
                raise ValueError("training renders one camera at a time")
            camera_to_world = self.camera_optimizer.apply_to_camera(camera)
        else:
            camera_to_world = camera.camera_to_worlds
        scale_factor = self._get_downscale_factor()
        camera.rescale_output_resolution(1 / scale_factor)
        Ks = camera.get_intrinsics_matrices().to(self.device)
        width, height = int(camera.width.item()), int(camera.height.item())
        camera.rescale_output_resolution(scale_factor)
        viewmats = camera_to_viewmat(camera_to_world.to(self.device))
        self.last_size = (height, width)
        self.last_view = (viewmats[0].detach(), Ks[0])  # world-to-camera [4, 4] and K [3, 3] it rendered

        if colors is None:
            colors = torch.cat((self.features_dc[:, None, :], self.features_rest), dim=1)
            if self.config.sh_degree > 0:
                if sh_degree == -1:
                    sh_degree = min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
            else:
                colors, sh_degree = torch.sigmoid(colors).squeeze(1), None
        elif sh_degree == -1:
            sh_degree = None
        return rasterize_gaussians(
            means=self.means if means is None else means,
            quats=self.quats if quats is None else quats,
            scales=torch.exp(self.scales) if scales is None else scales,
            opacities=torch.sigmoid(self.opacities).squeeze(-1) if opacities is None else opacities,
            colors=colors,
            viewmats=viewmats,
            Ks=Ks,
            width=width,
            height=height,
            packed=False,
            near_plane=self.config.near_plane * self.camera_extent,
            far_plane=1e10,
            render_mode=render_mode,
            sh_degree=sh_degree,
            absgrad=self.strategy.absgrad,
            rasterize_mode=self.config.rasterize_mode,
        )

    def get_outputs(self, camera: Cameras) -> dict[str, torch.Tensor]:
        """RGB over the background, expected depth and accumulation, as splatfacto returns them."""
        if not isinstance(camera, Cameras):
            raise TypeError(f"SplatModel renders nerfstudio Cameras, got {type(camera).__name__}")
        if self.crop_box is not None and not self.training and self.crop_box.within(self.means).sum() == 0:
            return self.get_empty_outputs(int(camera.width.item()), int(camera.height.item()), self.background_color)
        with_depth = self.config.output_depth_during_training or not self.training
        render, alpha, self.info = self.render(camera, render_mode="RGB+ED" if with_depth else "RGB")
        if self.training:
            self.strategy.step_pre_backward(self.gauss_params, self.optimizers, self.strategy_state, self.step, self.info)
        background = self._get_background_color()
        rgb = torch.clamp(render[..., :3] + (1 - alpha) * background, 0.0, 1.0)
        depth = None
        if with_depth:
            depth = render[..., 3:4]
            depth = torch.where(alpha > 0, depth, depth.detach().max()).squeeze(0)
        height, width = self.last_size
        if not self.training:
            background = background.expand(height, width, 3)
        return {"rgb": rgb.squeeze(0), "depth": depth, "accumulation": alpha.squeeze(0), "background": background}

    # ------------------------------------------------------------------ evaluation
    def get_image_metrics_and_images(self, outputs, batch):
        """PSNR, SSIM and (when its weights are on disk) LPIPS; GT|render, depth and error images."""
        from nerfstudio.utils import colormaps

        gt = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])
        pred = outputs["rgb"]
        scores = metrics.image_metrics(pred.detach().cpu(), gt.detach().cpu())
        error = (pred - gt).abs().mean(dim=-1, keepdim=True)
        images = {
            "img": torch.cat([gt, pred], dim=1),
            "accumulation": colormaps.apply_colormap(outputs["accumulation"]),
            "error": colormaps.apply_colormap(error / error.max().clamp_min(1e-6)),
        }
        if outputs.get("depth") is not None:
            images["depth"] = colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"])
        return scores, images

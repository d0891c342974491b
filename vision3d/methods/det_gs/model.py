"""det-gs: Gaussian splatting with DET-GS's depth- and edge-aware regularizers, on CPU or GPU.

``L = (1-λ)L1 + λ D-SSIM + L_depth + 0.1 L_edge + 0.8 L_tv`` (all terms in :mod:`.losses`). The
photometric part is splatfacto's own (``ssim_lambda`` of the model config); the regularizers are added
by :meth:`DetGSModel.get_loss_dict`.

Rendering decisions (each documented here, each a config field where it is a choice):

- L_edge and L_tv act on the ordinary colour pass; its depth is the expected depth (``RGB+ED``) so
  that a partially covered pixel's depth is not pulled towards 0.
- L_depth is applied every ``losses.depth_every`` steps to the passes named in ``losses.depth_passes``:
  ``hard`` (constant opacity ω, scales and rotations detached: only the means learn) and ``soft`` (means,
  scales, rotations detached: only the opacities learn), rendered as expected depth (``ED``) with the
  camera's current training resolution; with ``losses.depth_passes_alternate`` one pass per L_depth step,
  in turn (half the extra renders: a det-gs step then costs <= 1.3x a base step at 96 px).
- Every regularizer weight is scaled by ``losses.view_support_factor(num_train_data)`` (see
  :mod:`.losses`): the size of the training set is what nerfstudio gives the model. The prior is average-pooled to that resolution; a pixel of the
  pooled prior is valid only where all its source pixels were.
- What does not change during training is computed once per training image and resolution and kept on
  the training device: the Canny edges of the ground truth and the prior pooled to the render's size
  (on CUDA this also saves a host-to-device copy per step).
- Viewer modes (issue 21): ``depth`` and ``edge_mask`` ([H, W, 1], 1 where L_edge lets depth jump). For a
  training camera (same pose and size as one trained on) it is the mask that drives L_edge there (the ground
  truth's Canny edges, the prior's unknown pixels and depth edges); a novel view has no ground truth, so it shows the
  Canny edges of the *rendered* RGB, where L_edge would let depth jump if that render were the target.
- Sky floaters (``sky_floaters``, :mod:`.floaters`): each training step keeps its view's pose, intrinsics,
  the prior's far pixels and the rendered depth of its surfaces; at densification's cadence, from its
  warm-up to the end, Gaussians that most views seeing them (all, with few views) see on the far background nearer than the
  view's surfaces are pushed onto the background sphere (or removed, with their optimizer and strategy state).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from gsplat.strategy.ops import remove
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackLocation

from vision3d.methods.det_gs.floaters import (
    SkyFloaterConfig,
    ViewRecord,
    push_to_background,
    sky_floaters,
    view_masks,
    view_record,
)
from vision3d.methods.det_gs.losses import (
    DetGSLossConfig,
    canny_edges,
    depth_pass_parameters,
    edge_mask,
    regularizer_losses,
)
from vision3d.methods.splat.model import SplatModel, SplatModelConfig


@dataclass
class DetGSModelConfig(SplatModelConfig):
    """det-gs = the splat model plus DET-GS's regularizers (``losses``; switch each off for the ablation)."""

    _target: type = field(default_factory=lambda: DetGSModel)
    losses: DetGSLossConfig = field(default_factory=DetGSLossConfig)
    sky_floaters: SkyFloaterConfig = field(default_factory=SkyFloaterConfig)
    """Gaussians the prior's far background contradicts, pushed onto the background sphere or pruned (needs a depth
    prior; see :mod:`.floaters`)."""
    output_depth_during_training: bool = True


def pool_to(values: torch.Tensor, valid: torch.Tensor, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Average-pool a prior [H, W] and its validity [H, W] to ``size`` (an integer downscale); valid only if all were."""
    if tuple(values.shape) == tuple(size):
        return values, valid
    factor = values.shape[0] // size[0]
    if factor * size[0] != values.shape[0] or factor * size[1] != values.shape[1]:
        values = F.interpolate(values[None, None], size=size, mode="nearest")[0, 0]
        return values, F.interpolate(valid[None, None].float(), size=size, mode="nearest")[0, 0] > 0.5
    v = valid.float()[None, None]
    total = F.avg_pool2d(values[None, None] * v, factor)[0, 0]
    share = F.avg_pool2d(v, factor)[0, 0]
    return total / share.clamp_min(1e-8), share > 1.0 - 1e-6


class DetGSModel(SplatModel):
    config: DetGSModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        self._edge_cache: dict[tuple[int, int, int], torch.Tensor] = {}
        self._prior_cache: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}
        self._train_poses: dict[int, torch.Tensor] = {}  # image_idx -> camera-to-world [3, 4] it was trained with
        self._sky_views: dict[int, ViewRecord] = {}  # image_idx -> its last training step's record
        self._sky_masks: dict[tuple[int, int, int], tuple[torch.Tensor, torch.Tensor]] = {}  # view_masks per image, size
        self.sky_floaters_found = 0  # over the run, counted each time one is found

    @property
    def treats_sky_floaters(self) -> bool:
        """Whether sky floaters are looked for: switched on, and enough training views (``SkyFloaterConfig``)."""
        config = self.config.sky_floaters
        return config.enabled and (self.num_train_data or 0) >= config.min_train_views

    def get_training_callbacks(self, training_callback_attributes) -> list[TrainingCallback]:
        callbacks = super().get_training_callbacks(training_callback_attributes)
        if self.treats_sky_floaters:
            callbacks.append(TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], self.treat_sky_floaters))
        return callbacks

    def treat_sky_floaters(self, step: int) -> None:
        """Push or prune the sky floaters (:func:`.floaters.sky_floaters`) at densification's cadence after its warm-up."""
        if step <= self.config.warmup_length or step % self.config.refine_every or not self._sky_views:
            return
        share = self.config.sky_floaters.share(self.num_train_data or 0)
        mask = sky_floaters(self.means.detach(), list(self._sky_views.values()), share)
        if not mask.any():
            return
        self.sky_floaters_found += int(mask.sum())
        if self.config.sky_floaters.action == "prune":
            remove(self.gauss_params, self.optimizers, self.strategy_state, mask)
            return
        radius = self.config.background_radius * self.camera_extent
        with torch.no_grad():
            means, scales = push_to_background(self.means[mask], self.scales[mask], self.camera_centre.to(self.device), radius)
            self.gauss_params["means"][mask] = means
            self.gauss_params["scales"][mask] = scales
            for name in ("means", "scales"):  # their Adam moments were for the old place
                for state in self.optimizers[name].state.values():
                    state["exp_avg"][mask] = 0.0
                    state["exp_avg_sq"][mask] = 0.0

    def get_outputs(self, camera):
        outputs = super().get_outputs(camera)
        if self.training:
            if camera.metadata and "cam_idx" in camera.metadata:
                self._train_poses[int(camera.metadata["cam_idx"])] = camera.camera_to_worlds[0].detach().clone()
            if self.config.losses.use_depth and self.config.losses.depth_active(self.step):
                outputs["depth_passes"] = self._render_depth_passes(camera)
        elif outputs.get("rgb") is not None:
            outputs["edge_mask"] = self.edge_mask(camera, outputs["rgb"])
        return outputs

    def edge_mask(self, camera, rgb: torch.Tensor) -> torch.Tensor:
        """[H, W, 1] float, 1 on edges: the training image's cached Canny edges for a training camera, else
        Canny of the rendered ``rgb`` [H, W, 3] (see the module docstring)."""
        size = tuple(rgb.shape[:2])
        for image_idx, pose in self._train_poses.items():
            edges = self._edge_cache.get((image_idx, *size))
            if edges is not None and torch.allclose(camera.camera_to_worlds[0].to(pose), pose, atol=1e-5):
                return edges.float()[..., None].to(rgb.device)
        cfg = self.config.losses
        edges = canny_edges(rgb.detach().cpu(), cfg.canny_low, cfg.canny_high, cfg.canny_l2_gradient, cfg.canny_input)
        return edges.float()[..., None].to(rgb.device)

    def _render_depth_passes(self, camera) -> dict[str, torch.Tensor]:
        """The hard / soft depth renders [H, W] for L_depth at this step (see the module docstring)."""
        passes = {}
        for name in self.config.losses.depth_passes_at(self.step):
            params = depth_pass_parameters(
                name, self.means, torch.exp(self.scales), self.quats,
                torch.sigmoid(self.opacities).squeeze(-1), self.config.losses.constant_opacity,
            )
            render, _, _ = self.render(
                camera, render_mode="ED", colors=self.means.new_zeros(self.means.shape[0], 1), sh_degree=None, **params
            )
            passes[name] = render[0, ..., 0]
        return passes

    def _edges(self, image_idx: int, gt_rgb: torch.Tensor, prior=None, kind="disparity", valid=None) -> torch.Tensor:
        """L_edge's mask [H, W] (:func:`edge_mask`: Canny edges of a ground-truth image, the prior's unknown
        pixels and depth edges) at the current resolution, cached on its device."""
        key = (int(image_idx), gt_rgb.shape[0], gt_rgb.shape[1])
        if key not in self._edge_cache:
            prior, valid = (None, None) if prior is None else (prior.detach().cpu(), valid.detach().cpu())
            edges = edge_mask(gt_rgb.detach().cpu(), self.config.losses, prior, kind, valid)
            self._edge_cache[key] = edges.to(gt_rgb.device)
        return self._edge_cache[key]

    def _prior(self, batch: dict, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch's depth prior and validity pooled to ``size`` (see :func:`pool_to`), cached on the device."""
        key = (int(batch["image_idx"]), *size)
        if key not in self._prior_cache:
            prior, valid = pool_to(batch["depth_prior"].float(), batch["depth_prior_valid"].bool(), size)
            self._prior_cache[key] = (prior.to(self.device), valid.to(self.device))
        return self._prior_cache[key]

    def get_loss_dict(self, outputs, batch, metrics_dict=None):
        loss_dict = super().get_loss_dict(outputs, batch, metrics_dict)
        if not self.training:
            return loss_dict
        gt_rgb = self.composite_with_background(self.get_gt_img(batch["image"]), outputs["background"])[..., :3]
        prior = valid = None
        kind = "disparity"
        if "depth_prior" in batch:
            prior, valid = self._prior(batch, tuple(gt_rgb.shape[:2]))
            kind = batch["depth_prior_kind"]
        terms = regularizer_losses(
            self.config.losses,
            self.step,
            rgb=outputs["rgb"],
            gt_rgb=gt_rgb,
            depth=outputs["depth"],
            prior=prior,
            prior_kind=kind,
            prior_valid=valid,
            depth_passes=outputs.get("depth_passes"),
            edges=self._edges(batch["image_idx"], gt_rgb, prior, kind, valid) if self.config.losses.use_edge else None,
            accumulation=outputs["accumulation"],
            num_train_views=self.num_train_data,
        )
        loss_dict.update({f"det_gs_{name}": value for name, value in terms.items()})
        if self.treats_sky_floaters and prior is not None and outputs["depth"] is not None:
            self._record_view(int(batch["image_idx"]), prior, kind, valid, outputs)
        return loss_dict

    def _record_view(self, image_idx: int, prior, kind, valid, outputs) -> None:
        """Keep this training view's :class:`ViewRecord` for the sky floaters (its masks cached)."""
        key = (image_idx, *prior.shape)
        if key not in self._sky_masks:
            self._sky_masks[key] = view_masks(prior, kind, valid, self.config.sky_floaters)
        depth, accumulation = outputs["depth"][..., 0], outputs["accumulation"][..., 0]
        record = view_record(*self.last_view, self._sky_masks[key], depth, accumulation, self.config.sky_floaters)
        if record is not None:
            self._sky_views[image_idx] = record

"""romap: RoMaP's part-level edit of a trained splat, as a nerfstudio model on our splat model.

A run continues a splat checkpoint (``--load-checkpoint``) in two phases, counted from its first step:
1. ``label_steps`` steps train only the 3D-GALP labels (:mod:`.galp`) against the 2D part masks; the
   geometry and colours are detached, the labels ride as extra channels of the one colour pass;
2. the edit: the 3D mask of ``part`` (:func:`.selection.select_part`) is fixed, every other Gaussian's
   gradient is zeroed, the selected Gaussians lose their colour prior (base colour grey, higher SH 0),
   and ``L = sds_weight · masked SDS + anchor_weight · masked L1(render, anchor)`` drives them. The 2D
   mask M2D is where the rendered label is largest for the part and at least ``mask2d_threshold``.
   The anchor is the user's edited image of the view (``target_dir``) or else, with a rectified-flow
   guidance backend, a SLaMP image (:mod:`.slamp`) made from the first prior-removed render of the view.
No densification (the 3D mask needs a fixed set of Gaussians). Adam restarts at each phase: the
scene's moments belong to another objective, and nerfstudio's splat loader replaces the Parameter
objects the optimisers were built on. The viewer shows ``part_labels`` (labels coloured by a part
palette) and ``mask_3d`` (the opacity of the selected Gaussians).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from nerfstudio.cameras.cameras import Cameras
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.utils.rich_utils import CONSOLE

from vision3d.errors import ConfigError, Vision3DError
from vision3d.methods.splat.model import SplatModel, SplatModelConfig
from vision3d.render.sh import spherical_harmonics

from .dataset import resize_part_ids
from .galp import (
    GalpConfig,
    GalpLoss,
    eval_labels,
    init_label_coeffs,
    init_labels_from_votes,
    mask_votes,
    part_masks_to_onehot,
)
from .guidance import GuidanceConfig
from .masks import part_palette, resolve_part
from .selection import mask_gradients, part_membership, select_part
from .slamp import SlampConfig, slamp_image

LABELS = "label_coeffs"


@dataclass
class RomapModelConfig(SplatModelConfig):
    """romap = the splat model plus part labels and a masked, guided edit of one part."""

    _target: type = field(default_factory=lambda: RomapModel)
    galp: GalpConfig = field(default_factory=GalpConfig)
    n_parts: int | None = None
    """number of parts; default: from the part masks (largest id, or the length of ``parts.json``)."""
    part: str = "1"
    """the part to edit: an id 1..P or a name from the masks' ``parts.json``."""
    label_steps: int = 300
    """phase 1 length (label training), from the run's first step; the edit follows."""
    label_lr_decay: float = 0.05
    """the labels' Adam rate decays exponentially to this fraction of its start over the label phase. Ours:
    at a constant rate the labels kept following the last views' mask noise (docs/romap.md)."""
    prompt: str = ""
    """the edit prompt of the SDS and of SLaMP."""
    guidance: GuidanceConfig = field(default_factory=GuidanceConfig)
    slamp: SlampConfig = field(default_factory=SlampConfig)
    sds_weight: float = 1.0
    """λ1. Ours: with ``anchor_weight`` 1000, the SDS (sum over latents) and the L1 (mean over mask
    pixels) give gradients of similar total size at 512 px for a part covering ~10 % of the image."""
    anchor_weight: float = 1000.0
    """λ2 of the masked L1 to the anchor image (see ``sds_weight``)."""
    prior_removal: bool = True
    """grey base colour (and zero higher SH bands) for the selected Gaussians at the edit's start."""
    grey_input: float = 0.5
    """β: the guidance input is ``(1 − β M) rgb + β M · 0.5`` (grey inside the mask), β → 0 over ``grey_input_steps``."""
    grey_input_steps: int = 100
    mask2d_threshold: float = 0.5
    """M2D: the rendered label is largest for the part and at least this."""
    confine: bool = True
    """False: the same edit unconfined (every Gaussian selected, M2D the whole image), the ablation baseline."""


class RomapModel(SplatModel):
    config: RomapModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        metadata = self.kwargs.get("metadata") or {}
        self.n_parts = self.config.n_parts or metadata.get("romap_n_parts")
        if not self.n_parts:
            raise ConfigError("romap: the number of parts is unknown: give part masks or --pipeline.model.n-parts")
        self.part_names = metadata.get("romap_part_names", [])
        self.part_id = resolve_part(self.config.part, self.part_names, self.n_parts)
        if self.config.galp.init not in ("zero", "vote", "soft-vote"):
            raise ConfigError(f"romap: galp.init must be 'zero', 'vote' or 'soft-vote', got {self.config.galp.init!r}")
        n = self.gauss_params["means"].shape[0]
        self.gauss_params[LABELS] = torch.nn.Parameter(init_label_coeffs(n, self.n_parts, self.config.galp.sh_degree))
        self.register_buffer("selected", torch.zeros(n, dtype=torch.bool))
        self.register_buffer("train_centres", torch.zeros(0, 3))
        self.register_buffer("editing", torch.zeros((), dtype=torch.bool))
        self.galp_loss = GalpLoss(self.config.galp)
        self.palette = part_palette(self.n_parts)
        self.guidance = None
        self.first_step: int | None = None
        self._hooks: list = []
        self._anchors: dict[int, torch.Tensor] = {}
        self._loaded = False

    # ------------------------------------------------------------------ checkpoints and optimisers
    def load_state_dict(self, state, **kwargs):
        """Loads romap checkpoints and plain splat checkpoints (labels start at zero, nothing selected)."""
        state = dict(state)
        n = (state.get("gauss_params.means") if "gauss_params.means" in state else state["means"]).shape[0]
        coeffs = self.gauss_params[LABELS]
        state.setdefault(f"gauss_params.{LABELS}", coeffs.new_zeros(n, *coeffs.shape[1:]))
        state.setdefault("selected", torch.zeros(n, dtype=torch.bool))
        state.setdefault("train_centres", self.train_centres)
        state.setdefault("editing", torch.zeros((), dtype=torch.bool))
        self.selected = torch.zeros_like(state["selected"], device=self.selected.device)
        self.train_centres = torch.zeros_like(state["train_centres"], device=self.train_centres.device)
        self._loaded = True
        return super().load_state_dict(state, **kwargs)

    def label_coeffs(self) -> torch.Tensor:  # [N, K, P]
        """The label SH coefficients: the stored ones, the higher bands times ``galp.rest_lr_ratio`` (a slower rate)."""
        stored = self.gauss_params[LABELS]
        scale = torch.full((stored.shape[1], 1), self.config.galp.rest_lr_ratio, device=stored.device)
        scale[0] = 1.0
        return stored * scale

    def get_param_groups(self):
        groups = super().get_param_groups()
        groups[LABELS] = [self.gauss_params[LABELS]]
        return groups

    def get_training_callbacks(self, attributes: TrainingCallbackAttributes) -> list[TrainingCallback]:
        """Only the step counter and the phase switch: no densification."""
        self.optimizers = attributes.optimizers.optimizers
        self._optimizer_configs = attributes.optimizers.config
        self._datamanager = attributes.pipeline.datamanager
        cameras = attributes.pipeline.datamanager.train_dataset.cameras
        self.train_centres = cameras.camera_to_worlds[:, :3, 3].float().to(self.device)
        return [TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], self.before_step)]

    def local_step(self) -> int:
        return self.step - (self.first_step if self.first_step is not None else self.step)

    def before_step(self, step: int) -> None:
        self.step = step
        if self.first_step is None:
            if not self._loaded:
                raise ConfigError("romap edits a trained splat: give --load-checkpoint SPLAT.ckpt (a vision3d-splat or romap checkpoint)")
            self.first_step = step
            self.restart_optimizers()
            if bool(self.editing):  # a romap checkpoint continues its edit
                self.arm_edit()
            elif self.config.galp.init != "zero" and not self.gauss_params[LABELS].any():
                self.init_labels(soft=self.config.galp.init == "soft-vote")
        if not bool(self.editing) and self.local_step() >= self.config.label_steps:
            self.start_edit()
        elif not bool(self.editing) and LABELS in self.optimizers:
            progress = self.local_step() / max(self.config.label_steps, 1)
            self.optimizers[LABELS].param_groups[0]["lr"] = self.configured_lr(LABELS) * self.config.label_lr_decay**progress

    def init_labels(self, soft: bool = False) -> None:
        """Labels from the blend-weighted votes of the training views' part masks (their shares when ``soft``)."""
        cameras = self._datamanager.train_dataset.cameras
        ids = [data["part_ids"] for data in self._datamanager.cached_train]

        def render_view(view: int, feats: torch.Tensor) -> torch.Tensor:
            render, _, _ = self.render(cameras[view : view + 1].to(self.device), colors=feats, sh_degree=None,
                                       means=self.means.detach(), scales=torch.exp(self.scales).detach(),
                                       quats=self.quats.detach(), opacities=torch.sigmoid(self.opacities).squeeze(-1).detach())  # fmt: skip
            return render[0]

        size = tuple(render_view(0, torch.zeros(self.num_points, 1, device=self.device)).shape[:2])
        ids = [resize_part_ids(i, size) for i in ids]
        votes = mask_votes(render_view, ids, self.num_points, self.n_parts, self.device)
        with torch.no_grad():
            self.gauss_params[LABELS].copy_(init_labels_from_votes(votes, self.config.galp.sh_degree, soft))
        CONSOLE.log(f"romap: labels start from the masks' votes ({int((votes[:, 1:].sum(-1) > votes[:, 0]).sum())} "
                    f"of {self.num_points} Gaussians mostly on a part)")

    def configured_lr(self, name: str) -> float:
        return self._optimizer_configs[name]["optimizer"].lr

    def restart_optimizers(self) -> None:
        """Point each optimiser at the current Parameter of its group, clear its state (fresh Adam) and set its
        configured rate: nerfstudio's checkpoint loading restores the saved run's rates (a splat's colour rate
        would otherwise replace romap's ``COLOUR_LR``; scheduled groups are reset by their scheduler)."""
        for name, params in self.get_param_groups().items():
            if name in self.optimizers:
                optimizer = self.optimizers[name]
                optimizer.param_groups[0]["params"] = list(params)
                optimizer.param_groups[0]["lr"] = self.configured_lr(name)
                optimizer.state.clear()

    # ------------------------------------------------------------------ the edit
    def start_edit(self) -> None:
        """Fix the 3D mask, remove the selected Gaussians' colour prior, mask gradients, load the guidance."""
        cfg = self.config
        self.selected = select_part(self.label_coeffs(), self.means.detach(), self.train_centres, self.part_id,
                                    cfg.galp.sh_degree, cfg.galp.mask_threshold)  # fmt: skip
        if not cfg.confine:
            self.selected = torch.ones_like(self.selected)
        count = int(self.selected.sum())
        if count == 0:
            raise Vision3DError(f"romap: no Gaussian carries part {self.part_id}'s label after the label phase "
                               "(check the part masks, or raise --pipeline.model.label-steps)")  # fmt: skip
        if cfg.prior_removal:
            with torch.no_grad():
                self.gauss_params["features_dc"][self.selected] = 0.0  # SH DC 0 renders grey 0.5
                self.gauss_params["features_rest"][self.selected] = 0.0
        self.editing = torch.ones((), dtype=torch.bool, device=self.device)
        self.arm_edit()
        CONSOLE.log(f"romap: editing part {self.part_id} ({count} of {self.selected.numel()} Gaussians selected)")

    def arm_edit(self) -> None:
        """Gradient masks on every per-Gaussian parameter but the labels (frozen), fresh Adam, the guidance."""
        params = [p for name, p in self.gauss_params.items() if name != LABELS]
        self._hooks = mask_gradients(params, self.selected)
        self.gauss_params[LABELS].requires_grad_(False)
        self.restart_optimizers()
        self.guidance = self.config.guidance.setup(self.device)

    # ------------------------------------------------------------------ rendering
    def _features(self, camera: Cameras) -> torch.Tensor:  # -> [N, 3 + P (+1)]
        """RGB (gsplat's ``SH + 0.5``, clamped at 0), the labels, and in eval the 3D-mask indicator, at one view."""
        centre = camera.camera_to_worlds[0, :3, 3].to(self.device)
        dirs = self.means - centre
        degree = min(self.step // self.config.sh_degree_interval, self.config.sh_degree)
        shs = torch.cat((self.features_dc[:, None, :], self.features_rest), dim=1)
        rgb = torch.clamp_min(spherical_harmonics(degree, dirs, shs) + 0.5, 0.0)
        labels = eval_labels(self.label_coeffs(), self.means.detach(), centre[None], self.config.galp.sh_degree)[0]
        editing = bool(self.editing)
        feats = [rgb.detach() if self.training and not editing else rgb, labels.detach() if editing else labels]
        if not self.training:
            feats.append(self.selected.float()[:, None])
        return torch.cat(feats, dim=-1)

    def get_outputs(self, camera: Cameras) -> dict[str, torch.Tensor]:
        """splat's outputs plus ``labels`` [H, W, P]; in eval also ``part_labels`` [H, W, 3] and ``mask_3d`` [H, W, 1]."""
        if not isinstance(camera, Cameras):
            raise TypeError(f"RomapModel renders nerfstudio Cameras, got {type(camera).__name__}")
        frozen = self.training and not bool(self.editing)  # phase 1: only the labels learn
        geometry = {}
        if frozen:
            geometry = dict(means=self.means.detach(), scales=torch.exp(self.scales).detach(), quats=self.quats.detach(),
                            opacities=torch.sigmoid(self.opacities).squeeze(-1).detach())  # fmt: skip
        with_depth = not self.training
        render, alpha, self.info = self.render(camera, "RGB+ED" if with_depth else "RGB", colors=self._features(camera),
                                               sh_degree=None, **geometry)  # fmt: skip
        p = self.n_parts
        background = self._get_background_color()
        rgb = torch.clamp(render[0, ..., :3] + (1 - alpha[0]) * background, 0.0, 1.0)
        labels = render[0, ..., 3 : 3 + p]
        out = {"rgb": rgb, "accumulation": alpha[0], "background": background, "labels": labels, "depth": None}
        if not self.training:
            depth = render[0, ..., -1:]
            out["depth"] = torch.where(alpha[0] > 0, depth, depth.max())
            out["part_labels"] = (labels.clamp(0, 1) @ self.palette.to(labels.device)).clamp(0, 1)
            out["mask_3d"] = render[0, ..., 3 + p : 4 + p].clamp(0, 1)
            out["background"] = background.expand(*rgb.shape[:2], 3)
        return out

    @torch.no_grad()
    def get_outputs_for_camera(self, camera: Cameras, obb_box=None) -> dict[str, torch.Tensor]:  # noqa: ANN001
        """The viewer's and ns-render's outputs: ``get_outputs`` without the raw ``labels`` [H, W, P], which the
        viewer cannot colour-map (it shows 1 or 3 channels); ``part_labels`` shows them."""
        outputs = super().get_outputs_for_camera(camera, obb_box)
        outputs.pop("labels", None)
        return outputs

    def part_mask2d(self, labels: torch.Tensor) -> torch.Tensor:  # [H, W, P] -> [H, W, 1] float
        """M2D: pixels whose rendered label belongs to the part (:func:`.selection.part_membership` at
        ``mask2d_threshold``); all pixels when unconfined."""
        if not self.config.confine:
            return torch.ones_like(labels[..., :1])
        return part_membership(labels.detach(), self.part_id, self.config.mask2d_threshold)[..., None].float()

    # ------------------------------------------------------------------ losses
    def get_loss_dict(self, outputs, batch, metrics_dict=None):
        if not self.training:
            return super().get_loss_dict(outputs, batch, metrics_dict)
        labels = outputs["labels"]
        if not bool(self.editing):
            ids = resize_part_ids(batch["part_ids"].to(self.device), tuple(labels.shape[:2]))
            masks = part_masks_to_onehot(ids[None], self.n_parts)
            return self.galp_loss(self.local_step(), labels[None], masks, self.label_coeffs(), self.means.detach(),
                                  self.train_centres)  # fmt: skip
        return self.edit_losses(outputs["rgb"], labels, batch)

    def anchor_image(self, rgb: torch.Tensor, mask2d: torch.Tensor, batch: dict) -> torch.Tensor | None:
        """The masked L1's anchor of this view: the user's edited image, else a cached SLaMP image, else None."""
        if "target_image" in batch:
            target = batch["target_image"].to(self.device)
            if tuple(target.shape[:2]) != tuple(rgb.shape[:2]):
                target = torch.nn.functional.interpolate(target.permute(2, 0, 1)[None], size=rgb.shape[:2],
                                                         mode="bilinear", align_corners=False)[0].permute(1, 2, 0)  # fmt: skip
            return target
        if self.guidance is None or self.guidance.parts.kind != "sd3":
            return None
        idx = int(batch["image_idx"])
        if idx not in self._anchors:
            generator = torch.Generator().manual_seed(self.config.guidance.seed + idx)
            self._anchors[idx] = slamp_image(self.guidance, rgb.detach()[None], self.config.prompt, mask2d[None],
                                             self.config.slamp, generator)[0]  # fmt: skip
        return self._anchors[idx]

    def edit_losses(self, rgb: torch.Tensor, labels: torch.Tensor, batch: dict) -> dict[str, torch.Tensor]:
        """``romap_sds`` (λ1, masked SDS) and ``romap_anchor`` (λ2, masked L1), each when it has a source."""
        cfg = self.config
        mask2d = self.part_mask2d(labels)
        losses = {}
        anchor = self.anchor_image(rgb, mask2d, batch)
        if anchor is not None:
            diff = (rgb - anchor).abs() * mask2d
            losses["romap_anchor"] = cfg.anchor_weight * diff.sum() / (3 * mask2d.sum()).clamp_min(1.0)
        if self.guidance is not None:
            edit_step = max(self.local_step() - cfg.label_steps, 0)
            self.guidance.update_step(edit_step)
            beta = cfg.grey_input * max(0.0, 1.0 - edit_step / max(cfg.grey_input_steps, 1))
            guided = rgb * (1 - beta * mask2d) + 0.5 * beta * mask2d
            sds, _ = self.guidance(guided[None], cfg.prompt, None, mask2d[None])
            losses["romap_sds"] = cfg.sds_weight * sds
        if not losses:
            raise ConfigError("romap: the edit has no objective: give --pipeline.model.guidance.backend or "
                             "--pipeline.datamanager.target-dir")  # fmt: skip
        return losses

"""IR-NeRF as a nerfstudio model and pipeline.

The model holds the whole method (:class:`~vision3d.methods.ir_nerf.training.IRNeRF`) built from the
images the ``ir-nerf-data`` parser put in ``metadata``. IR-NeRF alternates updates of different networks
against each other (discriminator and field, P and the codebook), so it steps its own optimisers: the
pipeline's ``get_train_loss_dict`` runs one step of the schedule and hands nerfstudio's trainer a constant
loss and no parameter groups; the optimisers' moments travel in the checkpoint as the system's extra state
(``IRNeRF.get_extra_state``), so ``--load-dir`` resumes the run where it stopped. The schedule's length
follows the trainer's ``max_num_iterations`` (restarts included: ``IRNeRF.fit_schedule``). Every ``steps_per_export`` steps and at the end, the run folder gets ``transforms.json`` (the estimated poses), ``cameras.npz`` and
``frusta.png`` (:mod:`~vision3d.methods.ir_nerf.cameras`). The viewer renders the field in the prior's frame
and draws the estimated and (aligned) ground-truth frusta there (``self.frusta``, redrawn at each export).
``v3d export mesh`` fuses renders at the estimated poses (``mesh_cameras``) and writes the mesh aligned onto
the ground-truth poses when there are any (``scene_frame``), so it can be scored against a ground-truth mesh.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.pipelines.base_pipeline import VanillaPipeline, VanillaPipelineConfig
from nerfstudio.utils.rich_utils import CONSOLE

from vision3d import metrics
from vision3d.errors import ConfigError
from vision3d.geometry.se3 import opencv_to_opengl
from vision3d.methods.ir_nerf.cameras import estimated_and_gt_cameras, write_cameras, write_transforms
from vision3d.methods.ir_nerf.evaluation import align_poses, plot_frusta, pose_errors
from vision3d.methods.ir_nerf.training import IRNeRF, IRNeRFConfig
from vision3d.viewer.frusta import CameraFrustaControl


@dataclass
class IRNeRFModelConfig(ModelConfig):
    _target: type = field(default_factory=lambda: IRNeRFModel)
    ir_nerf: IRNeRFConfig = field(default_factory=IRNeRFConfig)
    """The method's settings (prior, field, schedule, networks, loss weights)."""
    steps_per_export: int = 500
    """Write transforms.json, cameras.npz and frusta.png into the run folder this often (and at the end)."""


class IRNeRFModel(Model):
    config: IRNeRFModelConfig

    def populate_modules(self) -> None:
        super().populate_modules()
        metadata = self.kwargs["metadata"]
        if "ir_nerf_images" not in metadata:
            raise ConfigError("ir-nerf needs the ir-nerf-data dataparser (its images travel in metadata)")
        self.system = IRNeRF(self.config.ir_nerf, metadata["ir_nerf_images"], metadata["ir_nerf_K"])
        self.gt_c2w = metadata["ir_nerf_gt_c2w"]
        self.original_K = metadata["ir_nerf_original_K"]
        self.original_size = metadata["ir_nerf_original_size"]
        self.image_paths = metadata["ir_nerf_paths"]
        self.lens = metadata.get("ir_nerf_lens", {})
        self.frusta = CameraFrustaControl(lambda: estimated_and_gt_cameras(self, frame="model"))

    def get_param_groups(self) -> dict[str, list]:
        return {}

    def train_step(self, step: int) -> dict[str, float]:
        out = self.system.train_step(step)
        if "restart_score" in out:  # a restart of phase A just ended: say how it scored and which one goes on
            scores, total = self.system.restart_scores, self.system.config.phase_a_restarts
            chosen = f"; restart {self.system.chosen_restart + 1} goes on" if self.system.restarts_decided else ""
            if self.system.restarts_decided and self.system.config.restart_choice == "agreement":
                degrees = ", ".join(f"{d:.1f}" for d in self.system.restart_disagreement())
                chosen += f", the one whose poses agree best with the others' (median differences {degrees} deg)"
            CONSOLE.log(f"ir-nerf: restart {len(scores)} of {total} scored {scores[-1]:.4f} (MSE of renders at P's poses){chosen}")
        return out

    def get_outputs(self, ray_bundle: RayBundle) -> dict[str, torch.Tensor]:
        rgb, accumulation, depth = self.system.field.render(ray_bundle.origins, ray_bundle.directions)
        return {"rgb": rgb, "accumulation": accumulation[..., None], "depth": depth[..., None]}

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> dict[str, torch.Tensor]:
        return {}

    def get_image_metrics_and_images(self, outputs, batch):
        gt = batch["image"][..., :3].to(outputs["rgb"])
        return metrics.image_metrics(outputs["rgb"].cpu(), gt.cpu()), {"img": torch.cat([gt, outputs["rgb"]], dim=1)}

    def pose_metrics(self) -> dict[str, float]:
        """Sim(3)-aligned pose errors of the estimated poses and of the poses refinement started from."""
        if self.gt_c2w is None:
            return {}
        out = pose_errors(self.system.estimated_poses().cpu(), self.gt_c2w)
        start = pose_errors(self.system.initial_poses.cpu(), self.gt_c2w)
        return {**out, "start_rot_err_deg": start["rot_err_deg"], "start_trans_err": start["trans_err"]}

    @torch.no_grad()
    def view_metrics(self) -> dict[str, float]:
        """Mean PSNR/SSIM of the training images rendered at their estimated poses (working resolution)."""
        renders = self.system.render_image(self.system.estimated_poses())
        rows = [metrics.image_metrics(r.permute(1, 2, 0).clamp(0, 1).cpu(), i.permute(1, 2, 0).cpu())
                for r, i in zip(renders, self.system.images, strict=True)]
        return {k: sum(row[k] for row in rows) / len(rows) for k in rows[0]}

    def mesh_cameras(self) -> Cameras:
        """What ``v3d export mesh`` fuses: every image at its estimated pose and the working resolution (OpenGL
        axes, the model's frame); the dataparser's cameras hold placeholder poses."""
        c2w = opencv_to_opengl(self.system.estimated_poses().detach().float().cpu())[:, :3, :4].contiguous()
        K = self.system.K.cpu()  # noqa: N806
        height, width = self.system.images.shape[-2:]
        return Cameras(camera_to_worlds=c2w, fx=float(K[0, 0]), fy=float(K[1, 1]), cx=float(K[0, 2]),
                       cy=float(K[1, 2]), width=width, height=height, camera_type=CameraType.PERSPECTIVE)

    def scene_frame(self) -> tuple[np.ndarray, np.ndarray] | None:
        """The model's frame to the ground truth's ``(A [3, 3], b [3])``, ``p_scene = A p + b``: the Sim(3) that
        aligns the estimated camera centres onto the ground-truth ones (None without ground-truth poses)."""
        if self.gt_c2w is None:
            return None
        sim = align_poses(self.system.estimated_poses().detach().cpu(), self.gt_c2w)
        return sim.s * sim.R.double().numpy(), sim.t.double().numpy()

    def export(self, folder) -> None:
        """Write transforms.json, cameras.npz and frusta.png into ``folder``; redraw the viewer's frusta."""
        estimated = self.system.estimated_poses().cpu()
        write_transforms(folder / "transforms.json", estimated, self.original_K, self.original_size, self.image_paths,
                         self.lens)
        write_cameras(folder / "cameras.npz", estimated, self.gt_c2w, self.original_K, self.original_size)
        plot_frusta(folder / "frusta.png", estimated, self.gt_c2w, self.original_K)
        self.frusta.refresh()


@dataclass
class IRNeRFPipelineConfig(VanillaPipelineConfig):
    _target: type = field(default_factory=lambda: IRNeRFPipeline)


class IRNeRFPipeline(VanillaPipeline):
    """nerfstudio's pipeline with IR-NeRF's own training step (see the module docstring)."""

    model: IRNeRFModel

    def get_train_loss_dict(self, step: int):
        metrics_dict = self.model.train_step(step)
        constant = torch.zeros((), device=self.device, requires_grad=True)
        return {}, {"loss": constant}, metrics_dict

    @torch.no_grad()
    def _eval_view(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Training image ``step mod N`` and the field's render at its estimated pose, ``[H, W, 3]`` each: the
        views are the poses being estimated, so evaluation cycles through them (there is no held-out split)."""
        index = step % self.model.system.images.shape[0]
        pose = self.model.system.estimated_poses()[index:index + 1]
        render = self.model.system.render_image(pose)[0].permute(1, 2, 0).clamp(0, 1).cpu()
        return self.model.system.images[index].permute(1, 2, 0).cpu(), render

    def get_eval_loss_dict(self, step: int):
        """nerfstudio's eval batch: the photometric error of one view at its estimated pose, and the pose errors."""
        image, render = self._eval_view(step)
        return {}, {"photometric": torch.nn.functional.mse_loss(render, image)}, self.model.pose_metrics()

    def get_eval_image_metrics_and_images(self, step: int):
        image, render = self._eval_view(step)
        num_rays = image.shape[0] * image.shape[1]  # the trainer reports rays per second from it
        scores = {**metrics.image_metrics(render, image), **self.model.pose_metrics(), "num_rays": num_rays}
        return scores, {"img": torch.cat([image, render], dim=1)}

    @torch.no_grad()
    def get_average_eval_image_metrics(self, step=None, output_path=None, get_std=False):
        return {**self.model.view_metrics(), **self.model.pose_metrics()}

    def get_training_callbacks(self, training_callback_attributes: TrainingCallbackAttributes) -> list[TrainingCallback]:
        trainer = training_callback_attributes.trainer
        callbacks = super().get_training_callbacks(training_callback_attributes)
        if trainer is None:
            return callbacks
        max_steps = trainer.config.max_num_iterations
        self.model.system.fit_schedule(max_steps)

        def export(step: int) -> None:
            self.model.export(trainer.base_dir)

        where = [TrainingCallbackLocation.AFTER_TRAIN_ITERATION]
        callbacks.append(TrainingCallback(where, export, update_every_num_iters=self.model.config.steps_per_export))
        callbacks.append(TrainingCallback(where, export, iters=(max_steps - 1,)))
        return callbacks

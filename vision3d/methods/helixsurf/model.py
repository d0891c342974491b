"""HelixSurf (Liang et al., CVPR 2023) as a nerfstudio model: a NeuS SDF and PatchMatch MVS regularising each other.

Training, as the official code runs it (details and measurements in docs/helixsurf.md):
- at the steps in ``helix_passes`` (fractions of training) PatchMatch MVS runs over the training views —
  from random hypotheses first, then seeded with the SDF's rendered depth and normals — and its filtered
  depth, normals and confidence become the SDF's targets for the next epoch (:mod:`.helix`);
- losses: SmoothL1 colour, eikonal, MVS depth and normals weighted by photometric confidence with the
  official schedule and clamps (:mod:`.losses`), superpixel plane normals and Manhattan seeds refreshed every
  ``plane_refresh_every`` steps (:mod:`.textureless`);
- rendering: NeuS's α on uniform samples between the scene box's entry and exit (the official code marches at
  a fixed step, without importance sampling); an occupancy grid of NeuS opacities (:mod:`.occupancy`) skips
  samples in empty cells, and, like a grid marcher's early ray termination, samples behind the point where a
  ray's transmittance falls below ``early_stop_transmittance`` (from a gradient-free pass of the SDF alone at
  the occupied samples) — their opacity is 0 and the field is not evaluated there (with gradients, colour and
  the normals' finite differences: the costly part). ``use_occupancy_grid=False`` is plain SDF rendering (the
  ablation).
Decisions: the SDF starts as a sphere filling the scene box seen from inside (rooms), of radius
``sphere_radius_fraction`` of the box's half extent; rays carry no background model (closed rooms), and
training composites on a random background so that opacity is driven to 1.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Literal

import torch
from nerfstudio.cameras.rays import RayBundle
from nerfstudio.engine.callbacks import TrainingCallback, TrainingCallbackAttributes, TrainingCallbackLocation
from nerfstudio.model_components.ray_samplers import UniformSampler
from nerfstudio.model_components.renderers import (
    AccumulationRenderer,
    DepthRenderer,
    NormalsRenderer,
    RGBRenderer,
)
from nerfstudio.model_components.scene_colliders import AABBBoxCollider
from nerfstudio.models.base_model import Model, ModelConfig
from nerfstudio.utils import colormaps, writer
from nerfstudio.utils.rich_utils import CONSOLE
from torch import Tensor

from vision3d import metrics
from vision3d.errors import ConfigError
from vision3d.fields.hash_grid import grid_config
from vision3d.fields.sdf import SDFField, SDFFieldConfig, eikonal_loss
from vision3d.geometry.camera import project_points
from vision3d.geometry.se3 import invert_pose, opengl_to_opencv, transform_points
from vision3d.mvs import MVSConfig
from vision3d.render.sdf_volume import neus_alpha, neus_alpha_along_rays

from . import helix, textureless
from .losses import LossSchedule, depth_loss, normal_loss, photometric_confidence
from .occupancy import OccupancyGrid
from .wall_time import PartTimes


@dataclass
class HelixSurfModelConfig(ModelConfig):
    """HelixSurf's model, losses, helix schedule and occupancy grid (official values unless said)."""

    _target: type = field(default_factory=lambda: HelixSurfModel)
    sdf: SDFFieldConfig = field(default_factory=lambda: SDFFieldConfig(
        grid=grid_config(16, 16, 2048, 19, grad_mode="inplace"), inside_outside=True, steps_per_level=1000))
    """The SDF field (hash grid + MLP; rooms are seen from inside). On CPU the grid adds its table gradient into
    the kept ``params.grad`` (one buffer for the three grid calls a step makes; the trainer's Adam keeps it)."""
    sphere_radius_fraction: float = 0.9
    """Initial sphere radius as a fraction of the scene box's smallest half extent."""
    num_samples: int = 128
    """Uniform samples per ray between the scene box's entry and exit."""
    near_plane: float = 0.02
    cos_anneal_fraction: float = 0.1
    """NeuS's cos annealing ends at this fraction of training."""
    rgb_beta: float = 0.1
    """SmoothL1 β of the colour loss."""
    eikonal_mult: float = 0.03
    eikonal_random_points: int = 1024
    """Extra eikonal points drawn uniformly in the scene box each step (keeps the SDF a distance where no ray
    samples, so marching cubes makes no spurious surfaces there)."""
    schedule: LossSchedule = field(default_factory=LossSchedule)
    depth_confidence: Literal["render", "mvs", "both"] = "render"
    """Photometric confidence of the MVS losses: 1 − |rendered colour error| (official), MVS's NCC, or their product."""
    use_mvs: bool = True
    """False: the SDF alone (colour and eikonal only), the benchmark's baseline."""
    mvs: MVSConfig = field(default_factory=MVSConfig)
    mvs_max_side: int = 160
    """MVS runs on the training images resized so the long side is at most this (px)."""
    helix_passes: tuple[float, ...] = (0.0, 0.5)
    """Fractions of training at which an MVS pass runs (the first from random hypotheses, later ones seeded by the SDF)."""
    seed_min_accumulation: float = 0.5
    use_planes: bool = True
    textureless: textureless.TexturelessConfig = field(default_factory=textureless.TexturelessConfig)
    plane_refresh_every: int = 2500
    plane_normal_mult: float = 0.01
    plane_min_cos: float = 0.8
    """Plane normals count only where the rendered normal is within this cos of them."""
    manhattan_mult: float = 0.03
    sharpness_floor_start: float = 0.0
    sharpness_floor_end: float = 0.0
    """Before each step NeuS's learned s is raised to at least start·(end/start)^(step/(ramp·max_steps)), geometric
    until ``sharpness_floor_ramp`` of training, then end; 0: off, s learned alone as in NeuS and the official code.
    The grid's speed-up lives on s: the band around a surface that must be sampled is ~ln(1/threshold)/s wide, and
    at CPU lengths (400 steps) the learned s stays at 20-30 where the official run has 24k steps to raise it
    (docs/helixsurf.md: room B, floor 20 → 200, same F-score, 9× faster training iterations)."""
    sharpness_floor_ramp: float = 1.0
    """Fraction of training over which the floor rises from start to end (1: the whole run). The official run
    spends nearly all of its 24k steps at a trained s (its 12× grid speed-up is over those); a short run with the
    floor rising over all of it spends most steps at low s, where the grid skips little (docs/helixsurf.md)."""
    use_occupancy_grid: bool = True
    """False: every sample is evaluated (plain SDF rendering, the grid's ablation; no early termination either)."""
    occupancy_resolution: int = 64
    occupancy_decay: float = 0.9
    occupancy_quantity: Literal["opacity", "density"] = "opacity"
    """What a cell holds (:mod:`.occupancy`): the opacity a ray can gain across it at the current s, or the
    official NeuS density (use threshold 0.01 with it)."""
    occupancy_threshold: float = 1e-3
    """A cell is empty below this: the opacity a skipped cell could have added to a ray."""
    occupancy_update_every: int = 16
    occupancy_lipschitz: float = 1.0
    """Least slope bound L assumed for the SDF: a cell holds what f ± L·(half diagonal) allows (1: a true distance)."""
    occupancy_slope_factor: float = 1.0
    """Also at least this × the SDF's largest finite-difference gradient norm at the centres of the cell and its
    neighbours, measured in the update (0: off; a learned SDF's slope exceeds 1 in places, where the bound with
    L = 1 skipped opacity). Above 1 it covers variation finer than the cells, at a cost (docs/helixsurf.md, room
    B at s = 199.5: 11.2 % of samples evaluated with 1, 14.5 % with 1.5, 10.4 % with the old bound)."""
    early_stop_transmittance: float = 1e-3
    """With the grid: samples after a ray's transmittance (estimated without gradients from the SDF at the occupied
    samples, :func:`~vision3d.render.sdf_volume.neus_alpha_along_rays`) falls below this are not evaluated; they
    could have added at most this much to the ray's colour (nerfacc's early_stop_eps; 0: off)."""
    sample_opacity_threshold: float = 1e-3
    """With the grid: samples left by the grid and termination whose opacity bound (NeuS's α at the sample's SDF
    from the gradient-free pass with cos = −L, the cell's slope bound: :meth:`.OccupancyGrid.sample_opacity_bound`)
    is below this are not evaluated either — the grid's own rule at sample resolution (a 48³ cell spans ~1.5
    samples, so occupied cells keep samples well in front of a surface). 0: off. Room B at s = 200 it leaves
    2/3 of the samples the grid keeps (docs/helixsurf.md)."""
    early_stop_segment: int = 8
    """Samples per segment of the gradient-free pass: each is evaluated only on the rays not yet terminated (a
    grid marcher's early stop; ``num_samples`` or more: one pass over every occupied sample)."""
    wall_time_log_every: int = 50
    """Steps between tensorboard scalars ``helix_wall_seconds/*``: accumulated seconds per part of the run
    (:mod:`.wall_time`; the summary line is logged after each MVS pass, plane refresh and at the end)."""
    max_steps: int = 24000
    """Training length used by the schedules when no trainer tells it (the trainer's max_num_iterations wins)."""


class HelixSurfModel(Model):
    """See the module docstring."""

    config: HelixSurfModelConfig

    # ------------------------------------------------------------------ set-up
    def populate_modules(self) -> None:
        super().populate_modules()
        config = self.config
        if not 0.0 < config.sharpness_floor_ramp <= 1.0:
            raise ConfigError(f"helixsurf: sharpness_floor_ramp must be in (0, 1], got {config.sharpness_floor_ramp}")
        aabb = self.scene_box.aabb.float()
        sdf_config = config.sdf
        sdf_config.sphere_radius = config.sphere_radius_fraction * float((aabb[1] - aabb[0]).min()) / 2
        self.field = SDFField(sdf_config, aabb, self.num_train_data)
        self.occupancy = OccupancyGrid(aabb, config.occupancy_resolution, config.occupancy_decay, config.occupancy_threshold,
                                       config.occupancy_quantity, config.occupancy_lipschitz, config.occupancy_slope_factor)
        self.collider = AABBBoxCollider(self.scene_box, near_plane=config.near_plane)
        self.sampler = UniformSampler(num_samples=config.num_samples, single_jitter=False)
        self.renderer_rgb = RGBRenderer(background_color="random")
        self.renderer_accumulation = AccumulationRenderer()
        self.renderer_depth = DepthRenderer(method="expected")
        self.renderer_normals = NormalsRenderer()
        self.register_buffer("mvs_points", torch.zeros(0, 4))  # fused MVS cloud: xyz + confidence (viewer)
        self.targets: helix.MVSTargets | None = None
        self.planes: dict[str, Tensor] | None = None
        self.labels: list[Tensor] | None = None
        self.training_pixels: helix.TrainingPixels | None = None
        self.helix_pass = 0
        self.plane_refreshes = 0
        self.epoch_start = 0
        self.step = 0
        self.max_steps = config.max_steps
        self.dataparser_transform: Tensor | None = None
        self.wall = PartTimes()
        self._step_started: float | None = None
        self._step_ended: float | None = None

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):  # noqa: ANN001, ANN002, ANN003
        """The fused MVS cloud's size varies: take the checkpoint's."""
        key = prefix + "mvs_points"
        if key in state_dict:
            self.mvs_points = state_dict[key].clone().to(self.mvs_points)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def get_param_groups(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"fields": list(self.field.parameters())}

    # ------------------------------------------------------------------ schedule
    def helix_steps(self) -> list[int]:
        return sorted({int(round(f * self.max_steps)) for f in self.config.helix_passes})

    def epoch_fraction(self) -> float:
        """Progress through the current SDF epoch (steps since the last MVS pass / epoch length), in [0, 1]."""
        later = [s for s in self.helix_steps() if s > self.epoch_start]
        end = later[0] if later else self.max_steps
        return min(1.0, (self.step - self.epoch_start) / max(end - self.epoch_start, 1))

    def get_training_callbacks(self, attrs: TrainingCallbackAttributes) -> list[TrainingCallback]:
        if attrs.trainer is not None:
            self.max_steps = attrs.trainer.config.max_num_iterations
        pipeline = attrs.pipeline
        if pipeline is not None:
            self.dataparser_transform = pipeline.datamanager.train_dataparser_outputs.dataparser_transform

        def before_step(step: int) -> None:
            if self._step_ended is not None:
                self.wall.seconds["between_steps"] += time.perf_counter() - self._step_ended
            self.step = step
            self.field.set_step(step)
            self.raise_sharpness_to_floor()
            if self.config.use_occupancy_grid and step % self.config.occupancy_update_every == 0:
                with self.wall.part("grid_updates"):
                    self.update_occupancy()
            if self.config.use_mvs and pipeline is not None:
                if step in self.helix_steps() or self.targets is None:
                    self.run_helix_pass(pipeline.datamanager.train_dataset, step)
                elif self.config.use_planes and step % self.config.plane_refresh_every == 0:
                    self.refresh_planes(pipeline.datamanager.train_dataset)
            self._step_started = time.perf_counter()

        def after_step(step: int) -> None:
            self._step_ended = time.perf_counter()
            if self._step_started is not None:
                self.wall.add_step(self._step_ended - self._step_started)
            if step % self.config.wall_time_log_every == 0:
                writer.put_dict("helix_wall_seconds", self.wall.seconds, step)

        def after_train(step: int) -> None:
            CONSOLE.log(f"helixsurf: wall time at step {step}: {self.wall.summary()}")

        return [TrainingCallback([TrainingCallbackLocation.BEFORE_TRAIN_ITERATION], before_step),
                TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN_ITERATION], after_step),
                TrainingCallback([TrainingCallbackLocation.AFTER_TRAIN], after_train)]

    def sharpness_floor(self) -> float:
        """The least NeuS s allowed at the current step (``sharpness_floor_start``/``_end``/``_ramp``; 0: none)."""
        start, end = self.config.sharpness_floor_start, self.config.sharpness_floor_end
        if start <= 0 or end <= 0:
            return 0.0
        ramp_steps = max(self.config.sharpness_floor_ramp * self.max_steps, 1.0)
        return start * (end / start) ** min(1.0, self.step / ramp_steps)

    @torch.no_grad()
    def raise_sharpness_to_floor(self) -> None:
        floor = self.sharpness_floor()
        if floor > 0:
            self.field.sharpness.value.clamp_(min=math.log(floor) / 10.0)  # s = exp(10 v)

    def update_occupancy(self) -> float:
        return self.occupancy.update(self.field.sdf, self.field.sharpness.inv_s().detach())

    # ------------------------------------------------------------------ helix
    def _views(self, dataset) -> helix.MVSViews:  # noqa: ANN001
        with self.wall.part("mvs"):  # loading and resizing the views is MVS's work
            images = [dataset.get_image_float32(i) for i in range(len(dataset))]
            cameras = dataset.cameras
            self.training_pixels = helix.TrainingPixels.of(cameras)
            return helix.mvs_views(images, cameras, self.config.mvs_max_side)

    def _render_views(self, views: helix.MVSViews) -> helix.SDFRenders:
        was_training = self.training
        self.eval()
        try:
            with self.wall.part("sdf_renders"):
                return helix.render_sdf_views(self, views)
        finally:
            self.train(was_training)

    def run_helix_pass(self, dataset, step: int) -> None:  # noqa: ANN001
        """MVS over the training views (seeded from the SDF after the first pass), new targets, new planes."""
        start = time.perf_counter()
        views = self._views(dataset)
        renders = seeds = None
        if self.helix_pass > 0 or self.targets is not None:
            renders = self._render_views(views)
            seeds = helix.seeds_from_renders(renders, views.c2w, self.config.seed_min_accumulation)
        with self.wall.part("mvs"):
            targets = helix.mvs_pass(views, self.field.aabb, self.config.mvs, seeds)
        self.targets = helix.MVSTargets(*(t.to(self.device) for t in (targets.depth, targets.normal, targets.confidence,
                                                                      targets.mask, targets.points, targets.point_confidence)))
        self.mvs_points = torch.cat([targets.points, targets.point_confidence[:, None]], dim=1).to(self.mvs_points)
        self.epoch_start = step
        kept = float(targets.mask.float().mean())
        elapsed = time.perf_counter() - start
        CONSOLE.log(f"helixsurf: MVS pass {self.helix_pass} at step {step} ({'seeded by the SDF' if seeds else 'random'}): "
                    f"{kept:.1%} of pixels kept, {len(targets.points)} fused points, {elapsed:.1f} s")
        writer.put_scalar("helix/mvs_kept_fraction", kept, step)
        writer.put_scalar("helix/mvs_seconds", elapsed, step)
        self.helix_pass += 1
        if self.config.use_planes:
            if self.labels is None:
                with self.wall.part("planes"):
                    self.labels = [torch.from_numpy(textureless.superpixels(img.numpy(), self.config.textureless))
                                   for img in views.images]
            self.refresh_planes(dataset, views, renders, mvs_only=renders is None)

    def refresh_planes(self, dataset, views: helix.MVSViews | None = None,  # noqa: ANN001
                       renders: helix.SDFRenders | None = None, mvs_only: bool = False) -> None:
        """Superpixel plane normals and Manhattan seeds from the blended MVS/SDF normals (MVS weight 4^-k).

        ``mvs_only``: MVS's normals alone where it kept pixels (after the random first pass, when the SDF is still
        its initial sphere and its normals would make planes and Manhattan seeds of the sphere; no render).
        """
        if self.targets is None or self.labels is None:
            return
        targets = self.targets
        if not mvs_only:
            views = views or self._views(dataset)
            renders = renders or self._render_views(views)
        with self.wall.part("planes"):
            self._set_planes(targets, renders, mvs_only)
        CONSOLE.log(f"helixsurf: wall time at step {self.step}: {self.wall.summary()}")

    def _set_planes(self, targets: helix.MVSTargets, renders: helix.SDFRenders | None, mvs_only: bool) -> None:
        """``self.planes`` from MVS's normals blended with the SDF's ``renders`` (see :meth:`refresh_planes`)."""
        weight = 0.25 ** self.plane_refreshes
        axes = self.scene_axes()
        planes = []
        for v in range(len(self.labels)):
            mvs_mask = targets.mask[v].cpu()
            if mvs_only:
                normals, valid = targets.normal[v].cpu(), mvs_mask
            else:
                normals = textureless.blend_normals(renders.normal[v], targets.normal[v].cpu(), mvs_mask, weight)
                valid = (renders.accumulation[v] >= self.config.seed_min_accumulation) | mvs_mask
            planes.append(textureless.plane_targets(self.labels[v], normals, valid, mvs_mask, axes,
                                                    self.config.textureless))
        self.planes = {name: torch.stack([getattr(p, name) for p in planes]).to(self.device)
                       for name in ("plane_normal", "plane_mask", "manhattan_normal", "manhattan_mask")}
        self.plane_refreshes += 1
        CONSOLE.log(f"helixsurf: planes refreshed at step {self.step} (MVS normal weight {weight:.3g}): "
                    f"{float(self.planes['plane_mask'].float().mean()):.1%} of pixels on planes, "
                    f"{float(self.planes['manhattan_mask'].float().mean()):.1%} Manhattan seeds")

    def scene_axes(self) -> Tensor:
        """The scene's own axes (transforms.json's world) as rows [3, 3] in the model's frame: the Manhattan
        directions (the dataparser's rotation R maps axis i to R's column i; identity without a dataparser)."""
        if self.dataparser_transform is None:
            return torch.eye(3)
        return torch.nn.functional.normalize(self.dataparser_transform[:3, :3].T.float().cpu(), dim=-1)

    # ------------------------------------------------------------------ rendering
    def get_outputs(self, ray_bundle: RayBundle) -> dict[str, Tensor]:
        samples = self.sampler(ray_bundle)
        positions = samples.frustums.get_positions()  # [R, S, 3]
        n_rays, n_samples = positions.shape[:2]
        anneal = min(1.0, self.step / max(self.config.cos_anneal_fraction * self.max_steps, 1)) if self.training else 1.0
        keep = self.samples_to_evaluate(samples, positions, anneal)
        flat = positions[keep]
        directions = samples.frustums.directions[keep]
        sdf, features = self.field.sdf_and_features(flat)
        gradients = self.field.gradient(flat)
        normals = torch.nn.functional.normalize(gradients, dim=-1)
        camera_indices = samples.camera_indices[keep] if samples.camera_indices is not None else None
        rgb = self.field.color(flat, normals, directions, features, camera_indices)
        cos = (directions * gradients).sum(dim=-1, keepdim=True)
        alpha = neus_alpha(sdf, cos, samples.deltas[keep], self.field.sharpness.inv_s(), anneal)

        def dense(values: Tensor, fill: float = 0.0) -> Tensor:
            out = torch.full((n_rays, n_samples, values.shape[-1]), fill, dtype=values.dtype, device=values.device)
            out[keep] = values
            return out

        weights = samples.get_weights_and_transmittance_from_alphas(dense(alpha), weights_only=True)
        depth = self.renderer_depth(weights, samples)
        normals_world = torch.nn.functional.normalize(self.renderer_normals(dense(normals), weights, normalize=False), dim=-1)
        outputs = {
            "rgb": self.renderer_rgb(dense(rgb), weights),
            "accumulation": self.renderer_accumulation(weights),
            "depth": depth,
            "normals_world": normals_world,
            "normals": (normals_world + 1.0) / 2.0,
            "sdf_level_set": self.first_zero_crossing(dense(sdf.detach(), float("nan"))[..., 0], samples),
            "occupied_fraction": keep.float().mean(dim=1, keepdim=True),
        }
        directions_norm = ray_bundle.metadata.get("directions_norm") if ray_bundle.metadata else None
        outputs["depth_z"] = depth / directions_norm if directions_norm is not None else depth
        if self.training:
            box = self.field.aabb
            random_points = box[0] + torch.rand(self.config.eikonal_random_points, 3, device=box.device) * (box[1] - box[0])
            outputs["eikonal_gradients"] = torch.cat([gradients, self.field.gradient(random_points)])
        return outputs

    def samples_to_evaluate(self, samples, positions: Tensor, anneal: float) -> Tensor:  # noqa: ANN001
        """Bool [R, S]: the samples whose field is evaluated — all without the grid; with it, those in occupied
        cells up to where the ray's transmittance, estimated from the SDF alone, falls below
        ``early_stop_transmittance``, less those whose opacity bound is below ``sample_opacity_threshold``.

        The gradient-free pass marches like a grid marcher: segments of ``early_stop_segment`` samples, each
        evaluated (plus one sample ahead, for the difference quotient) only on the rays still alive, so the
        solid space behind a wall, occupied in the grid, is not evaluated once a ray has terminated. The kept
        samples are the same as those of one pass over all occupied samples.
        """
        if not self.config.use_occupancy_grid:
            return torch.ones(positions.shape[:2], dtype=torch.bool, device=positions.device)
        keep = self.occupancy.occupied_at(positions)
        if self.config.early_stop_transmittance <= 0:
            return keep
        n_samples = keep.shape[1]
        segment = max(1, self.config.early_stop_segment)
        inv_s = self.field.sharpness.inv_s()
        t = ((samples.frustums.starts + samples.frustums.ends) / 2)[..., 0]
        deltas = samples.deltas[..., 0]
        with torch.no_grad():
            sdf = torch.full(keep.shape, float("nan"), device=positions.device)
            evaluated = torch.zeros_like(keep)
            transmittance = torch.ones(keep.shape, device=positions.device)  # before each sample
            alive = torch.ones(keep.shape[0], dtype=torch.bool, device=positions.device)
            before = torch.ones(keep.shape[0], device=positions.device)  # transmittance before the segment
            for start in range(0, n_samples, segment):
                end, ahead = min(start + segment, n_samples), min(start + segment + 1, n_samples)
                todo = keep[:, start:ahead] & ~evaluated[:, start:ahead] & alive[:, None]
                if todo.any():
                    rows, cols = todo.nonzero(as_tuple=True)
                    sdf[rows, cols + start] = self.field.sdf(positions[rows, cols + start])[:, 0]
                    evaluated[rows, cols + start] = True
                lo = max(start - 1, 0)  # the neighbour behind, for the difference quotient
                alpha = neus_alpha_along_rays(sdf[:, lo:ahead], t[:, lo:ahead], deltas[:, lo:ahead], inv_s,
                                              anneal)[:, start - lo : start - lo + end - start]
                inside = torch.cumprod(torch.cat([torch.ones_like(alpha[:, :1]), 1.0 - alpha], dim=1), dim=1)
                transmittance[:, start:end] = before[:, None] * inside[:, :-1]
                before = before * inside[:, -1]
                alive = before > self.config.early_stop_transmittance
                if not alive.any():
                    transmittance[:, end:] = 0.0
                    break
            keep = keep & (transmittance > self.config.early_stop_transmittance)
            if self.config.sample_opacity_threshold > 0:  # every kept sample was evaluated in the pass
                bound = self.occupancy.sample_opacity_bound(positions[keep], sdf[keep], deltas[keep], inv_s, anneal)
                keep[keep.clone()] = bound >= self.config.sample_opacity_threshold
        return keep

    @staticmethod
    def first_zero_crossing(sdf: Tensor, samples) -> Tensor:  # noqa: ANN001
        """Ray distance [R, 1] of the first + → − sign change of the SDF [R, S] (NaN: not evaluated), 0 if none."""
        t = (samples.frustums.starts + samples.frustums.ends)[..., 0] / 2
        f0, f1 = sdf[:, :-1], sdf[:, 1:]
        crossing = (f0 > 0) & (f1 <= 0)
        first = crossing.float().argmax(dim=1, keepdim=True)
        a, b = f0.gather(1, first), f1.gather(1, first)
        t0, t1 = t[:, :-1].gather(1, first), t[:, 1:].gather(1, first)
        hit = t0 + (t1 - t0) * a / (a - b).clamp_min(1e-12)
        return torch.where(crossing.any(dim=1, keepdim=True), hit, torch.zeros_like(hit))

    def get_outputs_for_camera(self, camera, obb_box=None) -> dict[str, Tensor]:  # noqa: ANN001
        """The rendered outputs plus ``mvs_depth`` and ``mvs_confidence``: the fused MVS cloud seen from the camera."""
        outputs = super().get_outputs_for_camera(camera, obb_box)
        depth, confidence = self.splat_mvs_points(camera)
        outputs["mvs_depth"], outputs["mvs_confidence"] = depth.to(outputs["depth"]), confidence.to(outputs["depth"])
        return outputs

    @torch.no_grad()
    def splat_mvs_points(self, camera) -> tuple[Tensor, Tensor]:  # noqa: ANN001
        """Ray distance [H, W, 1] of the nearest fused MVS point per pixel (0: none) and its confidence [H, W, 1]."""
        h, w = int(camera.height[0]), int(camera.width[0])
        depth, confidence = torch.zeros(h * w), torch.zeros(h * w)
        if self.mvs_points.shape[0] == 0:
            return depth.view(h, w, 1), confidence.view(h, w, 1)
        c2w = torch.eye(4)
        c2w[:3] = camera.camera_to_worlds[0].cpu().float()
        cam = transform_points(invert_pose(opengl_to_opencv(c2w)), self.mvs_points[:, :3].cpu())
        K = camera.get_intrinsics_matrices()[0].cpu().float()  # noqa: N806
        uv, z = project_points(cam[None], K[None], eps=1e-9)
        u, v = uv[0].floor().long().unbind(-1)
        z = z[0]
        seen = (z > 0) & (u >= 0) & (u < w) & (v >= 0) & (v < h)
        pixel, distance = v[seen] * w + u[seen], cam[seen].norm(dim=-1)
        nearest = torch.full((h * w,), float("inf")).scatter_reduce(0, pixel, distance, "amin")
        winner = seen.nonzero()[:, 0][distance == nearest[pixel]]
        hit = torch.isfinite(nearest)
        depth[hit] = nearest[hit]
        confidence[pixel[distance == nearest[pixel]]] = self.mvs_points[winner, 3].cpu()
        return depth.view(h, w, 1), confidence.view(h, w, 1)

    # ------------------------------------------------------------------ losses
    def get_metrics_dict(self, outputs, batch) -> dict[str, Tensor]:  # noqa: ANN001
        gt = self._gt_rgb(batch, outputs["rgb"])
        return {"psnr": -10.0 * torch.log10(((outputs["rgb"].detach() - gt) ** 2).mean()),
                "inv_s": self.field.sharpness.inv_s().detach(),
                "occupied_fraction": outputs["occupied_fraction"].mean()}

    def _gt_rgb(self, batch, like: Tensor) -> Tensor:  # noqa: ANN001
        image = batch["image"].to(like.device)
        image = image.float() / 255.0 if image.dtype == torch.uint8 else image
        return self.renderer_rgb.blend_background(image[..., :4] if image.shape[-1] == 4 else image[..., :3])

    def get_loss_dict(self, outputs, batch, metrics_dict=None) -> dict[str, Tensor]:  # noqa: ANN001
        gt = self._gt_rgb(batch, outputs["rgb"])
        rgb = outputs["rgb"]
        losses = {"rgb_loss": torch.nn.functional.smooth_l1_loss(rgb, gt, beta=self.config.rgb_beta)}
        if not self.training:  # nerfstudio's eval batch: held-out rays, whose indices are not the MVS targets' views
            return losses
        losses["eikonal_loss"] = self.config.eikonal_mult * eikonal_loss(outputs["eikonal_gradients"])
        if not self.config.use_mvs or self.targets is None or "indices" not in batch:
            return losses
        target = self.targets.lookup(batch["indices"].to(self.device), self.training_pixels)
        render_conf = photometric_confidence(rgb, gt)
        confidence = {"render": render_conf, "mvs": target["confidence"], "both": render_conf * target["confidence"]}
        weight = confidence[self.config.depth_confidence]
        fraction = self.epoch_fraction()
        w_depth, clamp = self.config.schedule.depth(fraction)
        w_normal, min_cos = self.config.schedule.normal(fraction)
        normals = outputs["normals_world"]
        losses["mvs_depth_loss"] = w_depth * depth_loss(outputs["depth_z"][:, 0], target["depth"], weight, target["mask"], clamp)
        losses["mvs_normal_loss"] = w_normal * normal_loss(normals, target["normal"], weight, target["mask"], min_cos)
        if self.config.use_planes and self.planes is not None:
            plane = helix.lookup_pixels(batch["indices"].to(self.device), self.training_pixels, self.planes["plane_mask"].shape[1:],
                                        **self.planes)
            ones = torch.ones_like(weight)
            losses["plane_normal_loss"] = self.config.plane_normal_mult * normal_loss(
                normals, plane["plane_normal"], ones, plane["plane_mask"], self.config.plane_min_cos)
            losses["manhattan_loss"] = self.config.manhattan_mult * normal_loss(
                normals, plane["manhattan_normal"], ones, plane["manhattan_mask"])
        return losses

    # ------------------------------------------------------------------ evaluation and export
    def get_image_metrics_and_images(self, outputs, batch):  # noqa: ANN001
        gt = self._gt_rgb(batch, outputs["rgb"])
        scores = metrics.image_metrics(outputs["rgb"].detach().cpu(), gt.detach().cpu())
        images = {
            "img": torch.cat([gt, outputs["rgb"]], dim=1),
            "depth": colormaps.apply_depth_colormap(outputs["depth"], accumulation=outputs["accumulation"]),
            "normals": outputs["normals"],
        }
        return scores, images

    def mesh_sdf(self):  # noqa: ANN201
        """``(sdf, colour)`` callables for :func:`vision3d.export.marching_cubes.sdf_to_mesh` (model frame)."""
        field_ = self.field

        @torch.no_grad()
        def sdf(points: Tensor) -> Tensor:
            return field_.sdf(points.to(self.device).float())[:, 0]

        @torch.no_grad()
        def colour(points: Tensor) -> Tensor:
            x = points.to(self.device).float()
            _, features = field_.sdf_and_features(x)
            n = torch.nn.functional.normalize(field_.gradient(x), dim=-1)
            return field_.color(x, n, -n, features, None)

        return sdf, colour

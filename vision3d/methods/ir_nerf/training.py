"""IR-NeRF's training: GNeRF's two phases with the codebook regulariser, on a tensor of real images.

Phase A (adversarial + inversion): the field renders patches at prior poses and learns against real
patches through the discriminator; P regresses the poses of full renders at prior poses; the codebook
learns L_rec on the real images and L_c regularises P on them. Phase B (refinement): per-image poses,
initialised from P's estimates, and the field learn from the photometric loss, with GNeRF's regulariser
pulling the poses and P together. Interleaving as GNeRF: A only until ``phase_a_until``, A and B
alternating until ``alternate_until``, then B (fractions of ``max_steps``).
Restarts (``phase_a_restarts`` R > 1): the GAN settles on the scene's mirror image or a scrambled camera set in
a fraction of runs (docs/ir-nerf.md), so phase A runs R times, each with a fresh field, D, P and codebook, to
``restart_until``; the run whose field renders the real images best at P's estimates (mean squared error, no
ground truth) goes on with the schedule, or with ``restart_choice = "agreement"`` the run whose P estimates agree
best with the other runs' (runs that recover the cameras agree with each other; failed ones fail each their own
way). The steps run one candidate after the other (``total_steps``; under a time budget each gets its share of it,
``budget_position``); a candidate scoring at most ``restart_accept_score`` goes on at once (as RANSAC stops once a
model is good enough).
Variants for the benchmark (config fields): ``adversarial=False`` skips phase A and starts the poses from
prior samples (BARF-style refinement); ``use_codebook=False`` drops L_rec/L_c (GNeRF).
Patches (GNeRF's dynamic patch sampler): ``patch_size²`` pixels on a grid spanning a random fraction
``scale`` of the image at a random offset; real patches are read bilinearly at the same pixel coordinates.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from vision3d.errors import ConfigError
from vision3d.methods.ir_nerf import losses
from vision3d.methods.ir_nerf.codebook_init import initial_codes
from vision3d.methods.ir_nerf.evaluation import median_disagreement
from vision3d.methods.ir_nerf.field import CoarseField, CoarseFieldConfig, camera_rays, image_pixels
from vision3d.methods.ir_nerf.networks import PatchDiscriminator, PoseEstimator, SceneCodebook
from vision3d.methods.ir_nerf.pose_prior import PosePriorConfig, pose_from_9d, pose_to_9d, sample_poses


@dataclass
class IRNeRFConfig:
    prior: PosePriorConfig = field(default_factory=PosePriorConfig)
    field: CoarseFieldConfig = field(default_factory=CoarseFieldConfig)
    max_steps: int = 2000
    phase_a_until: float = 0.4
    alternate_until: float = 0.7
    adversarial: bool = True
    """Phase A (GAN + P). False: BARF-style refinement from prior samples only."""
    use_codebook: bool = True
    """The scene codebook and L_c (IR-NeRF). False: GNeRF."""
    patch_size: int = 8
    patch_scale_min: float = 0.5
    patch_scale_max: float = 1.0
    """Patches span this fraction of the image (GNeRF's dynamic patch sampling)."""
    batch_size: int = 16
    """Fake and real patches per adversarial step."""
    estimator_batch: int = 4
    """Renders at prior poses per P step."""
    rays_per_batch: int = 1024
    """Rays per photometric step."""
    lr_field: float = 5e-4
    """The field's lr in the photometric (phase-B) updates."""
    lr_field_adversarial: float = 2e-3
    lr_discriminator: float = 2e-3
    lr_estimator: float = 2e-3
    """Phase-A defaults are the CPU-budget ones measured in docs/ir-nerf.md (GNeRF: 5e-4 / 1e-4 / 1e-4, the
    ``gpu`` preset): at GNeRF's rates and a spectrally normalised D, D stays at chance for hundreds of steps.
    The field's adversarial updates have their own lr and Adam moments (GNeRF: one optimiser, lr 5e-4): the
    GAN's gradients are on another scale than the photometric ones, and phase B keeps the lr it was measured at."""
    lr_codebook: float = 1e-3
    lr_poses: float = 1e-3
    lr_final_factor: float = 0.1
    """Learning rates decay exponentially to this fraction of their start over training."""
    r1_weight: float = 0.1
    discriminator_spectral_norm: bool = False
    """Spectral normalisation of D's layers (GNeRF/GRAF-style, the ``gpu`` preset). Off by default: with it a
    32-px D cannot separate featureless renders from real patches within CPU step counts (docs/ir-nerf.md)."""
    discriminator_width: int = 32
    discriminator_steps: int = 2
    """D updates per field update in phase A (fresh real patches each, the same fake ones)."""
    codebook_weight: float = 1.0
    """λ of L_c in P's loss."""
    pose_reg_weight: float = 0.1
    """GNeRF's regulariser between refined poses and P's estimates in phase B."""
    n_codes: int = 256
    code_dim: int = 64
    tokens: int = 4
    codebook_init: str = "patch-kmeans"
    """``patch-kmeans`` (default; see codebook_init), ``random``."""
    codebook_vgg19_weights: str | None = None
    """Path to torchvision VGG19 weights on disk: the paper's VGG19-feature init of C."""
    phase_a_restarts: int = 1
    """Independent phase-A runs (networks seeded ``seed``, ``seed + 1``, ...); the best by
    :meth:`IRNeRF.restart_score` goes on. 1: none."""
    restart_until: float | None = None
    """Fraction of ``max_steps`` at which the restarts are compared and the best goes on (at most
    ``phase_a_until``; None: at ``phase_a_until``). Each restart costs this many steps again."""
    restart_accept_score: float | None = None
    """A restart whose score is at most this goes on at once and the remaining restarts are skipped (None: all
    run). The score is an MSE of colours in [0, 1], so the value depends on the scene (docs/ir-nerf.md: 0.035 on
    the analytic scene at 16²). Under ns-train the iterations a skip frees refine at the final learning rate."""
    restart_choice: str = "render"
    """Which restart goes on: ``render``, the lowest :meth:`IRNeRF.restart_score`; ``agreement``, the lowest
    :meth:`IRNeRF.restart_disagreement` (needs at least 3 restarts, all run: ``restart_accept_score`` None).
    docs/ir-nerf.md compares the two on rendered real models (session 28)."""
    seed: int = 0


def patch_pixels(batch: int, patch: int, width: int, height: int, scale_range: tuple[float, float],
                 generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """Pixel coordinates ``[B, patch², 2]`` of random patches and their scales ``[B]`` (fraction of the image)."""
    lo, hi = scale_range
    scale = lo + (hi - lo) * torch.rand(batch, generator=generator)
    grid = (torch.arange(patch, dtype=torch.float32) + 0.5) / patch  # [patch] in (0, 1)
    gy, gx = torch.meshgrid(grid, grid, indexing="ij")
    unit = torch.stack([gx, gy], dim=-1).reshape(1, -1, 2)  # [1, P², 2]
    offset = torch.rand(batch, 1, 2, generator=generator) * (1 - scale[:, None, None])
    size = torch.tensor([width, height], dtype=torch.float32)
    return (offset + unit * scale[:, None, None]) * size, scale


def sample_image_at(images: Tensor, pixels: Tensor) -> Tensor:
    """Bilinear colours ``[B, N, 3]`` of images ``[B, 3, H, W]`` at pixel coordinates ``[B, N, 2]``."""
    size = torch.tensor([images.shape[-1], images.shape[-2]], dtype=pixels.dtype, device=pixels.device)
    grid = (pixels / size * 2 - 1)[:, None]  # align_corners=False: pixel centres at +0.5
    return F.grid_sample(images, grid, mode="bilinear", align_corners=False)[:, :, 0].transpose(1, 2)


class IRNeRF(nn.Module):
    """The whole method on real images ``[N, 3, H, W]`` in [0, 1] with intrinsics ``K [3, 3]`` (pixels).

    :meth:`train_step` runs one step of the schedule; :meth:`estimated_poses` are the current per-image
    camera-to-world poses ``[N, 4, 4]`` (OpenCV axes, in the prior's frame).
    """

    def __init__(self, config: IRNeRFConfig, images: Tensor, K: Tensor) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("images", images.float())
        self.register_buffer("K", K.float())
        self.generator = torch.Generator().manual_seed(config.seed)
        if config.phase_a_restarts < 1:
            raise ConfigError(f"phase_a_restarts must be at least 1, got {config.phase_a_restarts}")
        if config.restart_choice not in ("render", "agreement"):
            raise ConfigError(f"restart_choice must be 'render' or 'agreement', got {config.restart_choice!r}")
        if config.restart_choice == "agreement" and config.phase_a_restarts > 1 and (
                config.phase_a_restarts < 3 or config.restart_accept_score is not None):
            raise ConfigError("restart_choice 'agreement' compares every restart with the others: it needs "
                              f"phase_a_restarts >= 3 (got {config.phase_a_restarts}) and restart_accept_score None "
                              f"(got {config.restart_accept_score})")
        if config.restart_until is not None and not 0 < config.restart_until <= config.phase_a_until:
            raise ConfigError(f"restart_until must lie in (0, phase_a_until = {config.phase_a_until}], got {config.restart_until}")
        self._build_networks(config.seed)
        self.prior_poses = sample_poses(config.prior, images.shape[0], self.generator)  # what BARF-style refinement starts from
        self.pose_params = nn.Parameter(pose_to_9d(self.prior_poses))
        self.register_buffer("initial_poses", self.prior_poses.clone())
        self.register_buffer("refining", torch.tensor(False))
        self.step_count = 0
        self.optimizers = self._make_optimizers()
        self.seconds = 0.0
        self.restart_scores: list[float] = []
        self.restart_estimates: list[Tensor] = []  # P's estimates of each scored restart
        self.kept_restarts: dict[int, dict] = {}  # networks and optimiser moments of the restarts that may go on
        self._disagreement: tuple[int, list[float]] = (0, [])  # restart_disagreement of that many estimates

    def _build_networks(self, seed: int) -> None:
        """Fresh field, D, P and codebook (parameters drawn after ``torch.manual_seed(seed)``)."""
        c, (_, _, h, _) = self.config, self.images.shape
        torch.manual_seed(seed)
        self.field = CoarseField(c.field)
        self.discriminator = PatchDiscriminator(c.discriminator_width, spectral=c.discriminator_spectral_norm)
        self.estimator = PoseEstimator(position_scale=c.prior.radius_max)
        self.codebook = SceneCodebook(h, c.n_codes, c.code_dim, c.tokens) if c.use_codebook else None
        if self.codebook is not None and c.codebook_init != "random":
            if c.codebook_init != "patch-kmeans":
                raise ConfigError(f"codebook_init must be 'patch-kmeans' or 'random', got {c.codebook_init!r}")
            codes = initial_codes(self.images, c.n_codes, c.code_dim, c.tokens, c.codebook_vgg19_weights, seed)
            self.codebook.codes.data.copy_(codes)
        self.to(self.K.device)

    def _make_optimizers(self) -> dict[str, torch.optim.Optimizer]:
        c = self.config
        opts = {
            "field": torch.optim.Adam(self.field.parameters(), lr=c.lr_field, betas=(0.5, 0.99)),
            "field_adversarial": torch.optim.Adam(self.field.parameters(), lr=c.lr_field_adversarial, betas=(0.5, 0.99)),
            "discriminator": torch.optim.Adam(self.discriminator.parameters(), lr=c.lr_discriminator, betas=(0.5, 0.99)),
            "estimator": torch.optim.Adam(self.estimator.parameters(), lr=c.lr_estimator),
            "poses": torch.optim.Adam([self.pose_params], lr=c.lr_poses),
        }
        if self.codebook is not None:
            opts["codebook"] = torch.optim.Adam(
                [p for name, p in self.codebook.named_parameters() if not name.startswith("pose_encoder")], lr=c.lr_codebook)
            opts["pose_encoder"] = torch.optim.Adam(self.codebook.pose_encoder.parameters(), lr=c.lr_codebook)
        return opts

    def get_extra_state(self) -> dict:
        """What a checkpoint holds besides the parameters, so that a resumed run continues this one: the
        optimisers' moments, the sampling generator's state, the step count and the restarts' scores, estimates and
        kept candidates (see :meth:`set_extra_state`)."""
        return {"optimizers": self._optimizer_states(), "generator": self.generator.get_state(),
                "step_count": self.step_count, "seconds": self.seconds, "restart_scores": list(self.restart_scores),
                "restart_estimates": list(self.restart_estimates), "kept_restarts": dict(self.kept_restarts)}

    def set_extra_state(self, state: dict) -> None:
        self._load_optimizer_states(state["optimizers"])
        self.generator.set_state(state["generator"])
        self.step_count, self.seconds = state["step_count"], state["seconds"]
        self.restart_scores = list(state.get("restart_scores", []))
        self.restart_estimates = list(state.get("restart_estimates", []))
        self.kept_restarts = dict(state.get("kept_restarts", {}))
        if state.get("best_restart") is not None:  # written before session 28: the best candidate by the render score
            self.kept_restarts = {self.restart_scores.index(min(self.restart_scores)): state["best_restart"]}
        self._disagreement = (0, [])

    def _optimizer_states(self) -> dict:
        return {name: copy.deepcopy(opt.state_dict()) for name, opt in self.optimizers.items()}

    def _load_optimizer_states(self, states: dict) -> None:
        for name, opt in self.optimizers.items():
            opt.load_state_dict(states[name])

    # -- schedule -----------------------------------------------------------------------------------------
    @property
    def restart_fraction(self) -> float:
        """Fraction of the schedule each restart runs before the candidates are compared (0 without restarts)."""
        c = self.config
        if c.phase_a_restarts == 1 or not c.adversarial:
            return 0.0
        return c.phase_a_until if c.restart_until is None else c.restart_until

    @property
    def restart_steps(self) -> int:
        """Steps of each restart before the candidates are compared (0 without restarts)."""
        return max(round(self.restart_fraction * self.config.max_steps), 1) if self.restart_fraction else 0

    @property
    def restarts_decided(self) -> bool:
        """Whether the restarts are over: all scored, or one scored at most ``restart_accept_score``."""
        scores, accept = self.restart_scores, self.config.restart_accept_score
        return len(scores) == self.config.phase_a_restarts or (accept is not None and min(scores, default=math.inf) <= accept)

    @property
    def candidates(self) -> int:
        """Restarts the run holds: those run once they are decided, else all ``phase_a_restarts``."""
        return len(self.restart_scores) if self.restarts_decided else self.config.phase_a_restarts

    @property
    def total_steps(self) -> int:
        """Steps of the whole run: the schedule's ``max_steps`` plus the extra phase-A steps of the restarts (all of
        them until an early one is accepted)."""
        return self.config.max_steps + (self.candidates - 1) * self.restart_steps

    @property
    def schedules_per_run(self) -> float:
        """Length of the whole run in schedules when every restart runs: 1 + (R − 1) · :attr:`restart_fraction`."""
        return 1 + (self.config.phase_a_restarts - 1) * self.restart_fraction

    def fit_schedule(self, total_steps: int) -> None:
        """Set ``max_steps`` to the longest schedule whose :attr:`total_steps` fit in ``total_steps``."""
        c = self.config
        c.max_steps = max(int(total_steps / self.schedules_per_run), 1)
        while self.total_steps > total_steps and c.max_steps > 1:
            c.max_steps -= 1

    def schedule_position(self, step: int) -> tuple[int, int]:
        """``(candidate, schedule step)`` of a step of the run: which restart runs it (the chosen one's index
        once they are compared) and where it lies in that candidate's schedule."""
        n = self.restart_steps
        if n == 0:
            return 0, step
        if step < self.candidates * n:
            return step // n, step % n
        return self.chosen_restart, step - (self.candidates - 1) * n

    @property
    def chosen_restart(self) -> int:
        """Index of the restart that goes on, by ``restart_choice``, among those scored so far (0 before any is
        scored; by the render score while fewer than 3 are scored)."""
        if self.config.restart_choice == "agreement" and len(self.restart_estimates) >= 3:
            disagreement = self.restart_disagreement()
            return disagreement.index(min(disagreement))
        return self.restart_scores.index(min(self.restart_scores)) if self.restart_scores else 0

    def budget_position(self, progress: float) -> tuple[int, float]:
        """``(candidate, schedule progress)`` at fraction ``progress`` of a run's time budget. The budget holds
        the schedule once plus the restarts' extra shares of it, as :attr:`total_steps` holds steps; once the
        restarts are decided the chosen one's remaining schedule fills the rest of the budget, so time a skipped
        restart frees goes to it. A candidate index above the restarts scored means that restart's time is up."""
        f = self.restart_fraction
        if not f:
            return 0, progress
        share = f / self.schedules_per_run  # of the budget, one restart's phase A
        if not self.restarts_decided:
            candidate = int(progress / share)
            return candidate, f * (progress / share - candidate)
        start = len(self.restart_scores) * share
        return self.chosen_restart, min(f + (1 - f) * (progress - start) / (1 - start), 1.0)

    def ends_restart(self, step: int) -> bool:
        """Whether step ``step`` of the run is the last of a restart not yet scored (its candidate is scored, and
        replaced, at the end of that step)."""
        candidate, schedule_step = self.schedule_position(step)
        return bool(self.restart_steps) and schedule_step == self.restart_steps - 1 and len(self.restart_scores) == candidate

    def progress(self, step: int) -> float:
        """Fraction of the schedule done at schedule step ``step`` (of ``max_steps``)."""
        return min(step / max(self.config.max_steps, 1), 1.0)

    def phase(self, step: int, progress: float | None = None) -> str:
        """``"A"`` or ``"B"`` for a schedule step (GNeRF's interleaving; see the module docstring)."""
        c = self.config
        if not c.adversarial:
            return "B"
        progress = self.progress(step) if progress is None else progress
        if progress < c.phase_a_until:
            return "A"
        if progress < c.alternate_until:
            return "A" if step % 2 == 0 else "B"
        return "B"

    def _set_learning_rates(self, progress: float) -> None:
        factor = self.config.lr_final_factor ** progress
        for name, opt in self.optimizers.items():
            base = {"field": self.config.lr_field, "field_adversarial": self.config.lr_field_adversarial,
                    "discriminator": self.config.lr_discriminator,
                    "estimator": self.config.lr_estimator, "poses": self.config.lr_poses}.get(name, self.config.lr_codebook)
            for group in opt.param_groups:
                group["lr"] = base * factor

    def train_step(self, step: int | None = None, progress: float | None = None) -> dict[str, float]:
        """Step ``step`` of the run (default: the next); returns its losses. By default the step count places
        the step in the schedule (``max_steps``, restarts cut by :attr:`restart_steps`). ``progress`` in [0, 1],
        the fraction of a time budget used, places it instead (:meth:`budget_position`): a restart then ends at
        the first step past its share of the budget. Give ``progress`` to every step of a run or to none, and call
        :meth:`end_budget` after a budget's last step."""
        start, step = time.perf_counter(), self.step_count if step is None else step
        score, ends_by_step = None, progress is None and self.ends_restart(step)
        if progress is None:
            candidate, schedule_step = self.schedule_position(step)
            progress = self.progress(schedule_step)
        else:
            while not self.restarts_decided and self.budget_position(progress)[0] > len(self.restart_scores):
                score = self._end_restart(len(self.restart_scores))
            candidate, progress = self.budget_position(progress)
            schedule_step = step
        self.train()
        self._set_learning_rates(progress)
        self.field.set_progress(progress)
        if self.phase(schedule_step, progress) == "A":
            out = self.adversarial_step()
            out.update(self.estimator_step())
            if self.codebook is not None:
                out.update(self.codebook_step())
        else:
            if not bool(self.refining):
                self.start_refinement()
            out = self.refinement_step()
        if ends_by_step:
            score = self._end_restart(candidate)
        if score is not None:
            out["restart_score"] = score
        self.step_count = step + 1
        self.seconds += time.perf_counter() - start
        return out

    def end_budget(self) -> None:
        """Call once a time budget is spent. With ``restart_until = phase_a_until = 1`` the last restart's share ends
        with the budget, so no step past it has scored it: score it now and go on with the best candidate, as a step
        count's run does at its last step. Does nothing when the restarts are decided, or when the budget ended before
        the last restart began (the run then ends on an unfinished candidate: the budget was too short)."""
        if not self.restarts_decided and len(self.restart_scores) == self.config.phase_a_restarts - 1:
            self._end_restart(len(self.restart_scores))

    # -- restarts -------------------------------------------------------------------------------------------
    @torch.no_grad()
    def restart_score(self) -> float:
        """Mean squared error of the field's renders at P's estimates against the real images: low when field
        and P explain the images together, which needs no ground truth (docs/ir-nerf.md: on the three-ball scene
        it separates runs that recover the cameras from mirrored or scrambled ones)."""
        return self.render_error(self.predicted_poses())

    @torch.no_grad()
    def render_error(self, c2w: Tensor) -> float:
        """Mean squared error of the field's renders at cameras ``[N, 4, 4]`` (one per real image) against the
        real images."""
        return float(((self.render_image(c2w) - self.images) ** 2).mean())

    def restart_disagreement(self) -> list[float]:
        """:func:`~vision3d.methods.ir_nerf.evaluation.median_disagreement` of the scored restarts' P estimates
        (deg, one per restart; the lowest goes on with ``restart_choice = "agreement"``)."""
        if self._disagreement[0] != len(self.restart_estimates):
            self._disagreement = (len(self.restart_estimates), median_disagreement(self.restart_estimates))
        return list(self._disagreement[1])

    def _networks(self) -> dict[str, nn.Module]:
        nets = {"field": self.field, "discriminator": self.discriminator, "estimator": self.estimator}
        return nets if self.codebook is None else {**nets, "codebook": self.codebook}

    def _end_restart(self, candidate: int) -> float:
        """Score the candidate that just reached ``restart_until`` and keep it while it may still go on (by the
        render score: if it is the best so far; by agreement: every one), then start the next one from fresh
        networks, or once they are decided (the last one, or one accepted by ``restart_accept_score``) go on with
        :attr:`chosen_restart`. A diverged candidate (NaN score or estimates) counts as the worst."""
        score = self.restart_score()
        score = score if math.isfinite(score) else math.inf
        self.restart_scores.append(score)
        self.restart_estimates.append(self.predicted_poses().cpu())
        if self.config.restart_choice == "agreement" or self.chosen_restart == candidate:  # copied only when kept
            state = {"networks": {k: copy.deepcopy(m.state_dict()) for k, m in self._networks().items()},
                     "optimizers": self._optimizer_states()}
            if self.config.restart_choice == "render":
                self.kept_restarts = {}  # the best so far only
            self.kept_restarts[candidate] = state
        if not self.restarts_decided:
            self._build_networks(self.config.seed + candidate + 1)
            self.optimizers = self._make_optimizers()
        else:
            chosen = self.kept_restarts[self.chosen_restart]
            for name, module in self._networks().items():
                module.load_state_dict(chosen["networks"][name])
            self._load_optimizer_states(chosen["optimizers"])
            self.kept_restarts = {}  # the checkpoint no longer needs them
        return score

    # -- phase A --------------------------------------------------------------------------------------------
    def render_pixels(self, c2w: Tensor, pixels: Tensor, stratified: bool = True) -> Tensor:
        """Colours ``[B, N, 3]`` at pixel coordinates ``[B, N, 2]`` of cameras ``[B, 4, 4]``."""
        origins, directions = camera_rays(c2w, self.K, pixels)
        return self.field.render(origins, directions, stratified=stratified)[0]

    def render_image(self, c2w: Tensor, chunk: int = 8192) -> Tensor:
        """Full images ``[B, 3, H, W]`` at the training resolution (no gradient)."""
        h, w = self.images.shape[-2:]
        pixels = image_pixels(h, w).to(self.K)
        out = []
        with torch.no_grad():
            for pose in c2w:
                rows = [self.render_pixels(pose[None], pixels[None, i:i + chunk], stratified=False) for i in range(0, h * w, chunk)]
                out.append(torch.cat(rows, dim=1)[0].T.reshape(3, h, w))
        return torch.stack(out)

    def adversarial_step(self) -> dict[str, float]:
        c, (n, _, h, w) = self.config, self.images.shape
        poses = sample_poses(c.prior, c.batch_size, self.generator).to(self.K)
        pixels, scales = patch_pixels(c.batch_size, c.patch_size, w, h, (c.patch_scale_min, c.patch_scale_max), self.generator)
        fake = self.render_pixels(poses, pixels.to(self.K))  # [B, P², 3]
        fake = fake.transpose(1, 2).reshape(-1, 3, c.patch_size, c.patch_size)
        scales = scales.to(self.K)
        for _ in range(c.discriminator_steps):  # fresh real patches each D step, the same fake ones
            real_idx = torch.randint(n, (c.batch_size,), generator=self.generator)
            real_pixels, real_scales = patch_pixels(c.batch_size, c.patch_size, w, h, (c.patch_scale_min, c.patch_scale_max), self.generator)
            real = sample_image_at(self.images[real_idx], real_pixels.to(self.K)).transpose(1, 2)
            real = real.reshape(-1, 3, c.patch_size, c.patch_size).requires_grad_(True)
            real_logits = self.discriminator(real, real_scales.to(self.K))
            d_loss = losses.discriminator_loss(real_logits, self.discriminator(fake.detach(), scales))
            r1 = losses.r1_penalty(real_logits, real)
            self.optimizers["discriminator"].zero_grad()
            (d_loss + c.r1_weight * r1).backward()
            self.optimizers["discriminator"].step()

        g_loss = losses.generator_loss(self.discriminator(fake, scales))
        self.optimizers["field_adversarial"].zero_grad()
        g_loss.backward()
        self.optimizers["field_adversarial"].step()
        self.discriminator.zero_grad(set_to_none=True)
        return {"d_loss": d_loss.item(), "g_loss": g_loss.item(), "r1": r1.item()}

    def estimator_step(self) -> dict[str, float]:
        """One step of P on its loss: the poses of renders at prior samples (their poses are known), plus, with
        the codebook, λ·L_c on real images (G and C held; E_P learns in the same step). One Adam step on the sum,
        so that λ weighs the two terms (separate Adam steps would be equal-sized whatever λ is)."""
        c = self.config
        poses = sample_poses(c.prior, c.estimator_batch, self.generator).to(self.K)
        loss = losses.pose_regression_loss(self.estimator(self.render_image(poses)), pose_to_9d(poses))
        out, total, names = {"pose_loss": loss.item()}, loss, ["estimator"]
        if self.codebook is not None:
            real = self.images[torch.randint(self.images.shape[0], (c.batch_size,), generator=self.generator)]
            l_c = losses.pose_consistency_loss(self.codebook, self.estimator(real), real)
            total, out["l_c"] = total + c.codebook_weight * l_c, l_c.item()
            names.append("pose_encoder")
        for name in names:
            self.optimizers[name].zero_grad()
        total.backward()
        for name in names:
            self.optimizers[name].step()
        return out

    def codebook_step(self) -> dict[str, float]:
        """L_rec trains E_I, C, G on real images (L_c is part of P's loss: :meth:`estimator_step`)."""
        real = self.images[torch.randint(self.images.shape[0], (self.config.batch_size,), generator=self.generator)]
        rec = losses.reconstruction_loss(self.codebook, real)
        self.optimizers["codebook"].zero_grad()
        rec.backward()
        self.optimizers["codebook"].step()
        return {"l_rec": rec.item()}

    # -- phase B --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def predicted_poses(self) -> Tensor:
        """P's poses ``[N, 4, 4]`` of the real images."""
        self.estimator.eval()
        out = torch.cat([self.estimator(chunk) for chunk in self.images.split(64)])
        self.estimator.train()
        return pose_from_9d(out)

    @torch.no_grad()
    def start_refinement(self) -> None:
        """Per-image poses start from P's estimates (from the prior samples without phase A)."""
        if self.config.adversarial:
            self.pose_params.copy_(pose_to_9d(self.predicted_poses()))
        self.initial_poses.copy_(pose_from_9d(self.pose_params))
        self.refining.fill_(True)

    @torch.no_grad()
    def start_from(self, c2w: Tensor) -> None:
        """Refine from given poses ``[N, 4, 4]`` (OpenCV axes) from now on (skips P's estimates)."""
        self.pose_params.copy_(pose_to_9d(c2w.to(self.pose_params)))
        self.initial_poses.copy_(pose_from_9d(self.pose_params))
        self.refining.fill_(True)

    def refinement_step(self) -> dict[str, float]:
        c, (n, _, h, w) = self.config, self.images.shape
        idx = torch.randint(n, (c.rays_per_batch,), generator=self.generator)
        pixels = torch.rand(c.rays_per_batch, 2, generator=self.generator) * torch.tensor([w, h])
        poses = pose_from_9d(self.pose_params[idx])
        origins, directions = camera_rays(poses, self.K, pixels[:, None].to(self.K))
        rgb = self.field.render(origins, directions, stratified=True)[0][:, 0]
        target = sample_image_at(self.images[idx], pixels[:, None].to(self.K))[:, 0]
        loss = losses.photometric_loss(rgb, target)
        total = loss
        out = {"photometric": loss.item()}
        if c.adversarial and c.pose_reg_weight > 0:  # GNeRF's regulariser: refined poses and P agree
            k = torch.randint(n, (c.batch_size,), generator=self.generator)
            reg = F.mse_loss(self.estimator(self.images[k]), self.pose_params[k].detach()) + \
                F.mse_loss(self.pose_params[k], self.estimator(self.images[k]).detach())
            total = total + c.pose_reg_weight * reg
            out["pose_reg"] = reg.item()
        for name in ("field", "poses", "estimator"):
            self.optimizers[name].zero_grad()
        total.backward()
        for name in ("field", "poses", "estimator"):
            self.optimizers[name].step()
        return out

    @torch.no_grad()
    def estimated_poses(self) -> Tensor:
        """Current camera-to-world poses ``[N, 4, 4]`` (OpenCV axes): refined ones, or P's before refinement."""
        if bool(self.refining) or not self.config.adversarial:
            return pose_from_9d(self.pose_params)
        return self.predicted_poses()

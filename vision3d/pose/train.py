"""Training: ReLoc3r's symmetric angular loss, plus GeLoc3r's GCR when enabled; checkpoints with their config.

``TrainConfig`` nests the model (:class:`~vision3d.pose.network.PoseRegressorConfig`), the GCR
(:class:`~vision3d.pose.gcr.GCRConfig`) and the data (:class:`DataConfig`); the saved checkpoint holds all
three as plain dicts, so ``v3d pose eval`` rebuilds exactly the trained model. AdamW with linear warm-up and
cosine decay (ReLoc3r's schedule shape, shorter).
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from vision3d.backends import resolve_device
from vision3d.cache import cache_root
from vision3d.errors import CheckpointError
from vision3d.pose.data import (
    FrameSet,
    PairDataset,
    build_pair_dataset,
    collate,
    frames_from_nerfstudio,
    mirror_pairs,
)
from vision3d.pose.gcr import GCR, GCR_DIAGNOSTICS, GCRConfig, symmetric_pose_loss
from vision3d.pose.network import PoseRegressor, PoseRegressorConfig, load_pretrained, read_checkpoint


@dataclass
class DataConfig:
    """Training scenes: nerfstudio scene folders (``scenes``) and/or ``procedural_rooms`` generated rooms
    (seeds ``room_seed ...``), rendered once at ``render_size`` into ``cache_dir`` (matching runs there).
    ``room_texture_mapping``: ``"cells"`` (non-periodic, the default) or ``"tiled"`` (the old periodic textures,
    on which feature matches are mostly wrong); see :func:`vision3d.pose.scenes.write_room_scene`."""

    scenes: tuple[str, ...] = ()
    procedural_rooms: int = 8
    room_seed: int = 0
    room_views: int = 16
    render_size: tuple[int, int] = (192, 256)
    room_texture_mapping: str = "cells"
    pairs_per_scene: int = 40
    min_overlap: float = 0.3
    max_rotation_deg: float = 45.0
    matcher: str = "auto"
    max_matches: int = 256
    cache_dir: str = ""

    def framesets(self) -> list[FrameSet]:
        from vision3d.pose.scenes import write_room_scene

        sets = [frames_from_nerfstudio(s) for s in self.scenes]
        cache = Path(self.cache_dir) if self.cache_dir else cache_root() / "pose-rooms"
        h, w = self.render_size
        for k in range(self.procedural_rooms):
            seed = self.room_seed + k
            root = cache / f"room{seed:04d}_{w}x{h}_{self.room_views}_{self.room_texture_mapping}"
            if not (root / "transforms.json").is_file():
                print(f"rendering procedural room {seed} ({self.room_views} views, {w}x{h}) into {root} (once)", flush=True)
                write_room_scene(root, seed, self.room_views, w, h, texture_mapping=self.room_texture_mapping)
            sets.append(frames_from_nerfstudio(root))
        if not sets:
            raise ValueError("no training data: give --scenes or procedural_rooms > 0")
        return sets

    def dataset(self, image_size: tuple[int, int], seed: int = 0) -> PairDataset:
        from vision3d.pose.matching import Matcher

        matcher = Matcher(self.matcher) if self.matcher != "none" else None
        return build_pair_dataset(self.framesets(), image_size, self.pairs_per_scene, matcher, self.max_matches,
                                  seed=seed, min_overlap=self.min_overlap, max_rotation_deg=self.max_rotation_deg)


@dataclass
class TrainConfig:
    """Steps, optimiser and augmentation of :func:`train`, with the model, GCR and data configs it nests.

    ``mirror_prob`` (not in ReLoc3r, which only jitters colour; off by default): each training pair is mirrored
    left-right with this probability, images, depth, intrinsics, matches and pose together
    (:func:`~vision3d.pose.data.mirror_pairs`), so the pair stays geometrically exact while its pixels change.

    Randomness: ``seed`` seeds the model's initialisation and three separate generators: the batch order, the
    mirroring draws and GCR's sampling (correspondences, RANSAC). So the same seed gives the same
    initialisation and the same sequence of batches with or without GCR or mirroring, and an A/B comparison
    differs only in what it switches on. GCR's generator lives on the training device (CUDA sampling needs a
    CUDA generator), so GCR runs on a GPU and on the CPU draw different samples for the same seed.

    ``device``: ``"auto"`` trains on CUDA when torch sees a GPU, else on the CPU; ``"cpu"`` or ``"cuda[:N]"``
    force one. Batches are built (and mirrored) on the CPU and moved; checkpoints are saved from the CPU."""

    model: PoseRegressorConfig = field(default_factory=PoseRegressorConfig)
    gcr: GCRConfig = field(default_factory=GCRConfig)
    data: DataConfig = field(default_factory=DataConfig)
    steps: int = 500
    batch_size: int = 8
    lr: float = 3e-4
    min_lr: float = 1e-6
    warmup_steps: int = 25
    weight_decay: float = 0.05
    seed: int = 0
    init: str | None = None  # a local ReLoc3r / DUSt3R checkpoint
    freeze_encoder: bool = False
    mirror_prob: float = 0.0
    device: str = "auto"
    output: str = "outputs/pose"
    log_every: int = 25

    def to_dict(self) -> dict:
        return asdict(self)


MIRROR_SEED_OFFSET = 1_000_003  # the mirroring and GCR generators are seeded apart from the batch order's
GCR_SEED_OFFSET = 2_000_003


def lr_at(step: int, cfg: TrainConfig) -> float:
    if step < cfg.warmup_steps:
        return cfg.lr * (step + 1) / cfg.warmup_steps
    progress = (step - cfg.warmup_steps) / max(cfg.steps - cfg.warmup_steps, 1)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * min(progress, 1.0)))


def train(cfg: TrainConfig, dataset: PairDataset | None = None, progress: bool = True,
          save: bool = True) -> tuple[PoseRegressor, list[dict]]:
    """Train and return the model and the per-log-step history (loss terms, seconds)."""
    if not 0.0 <= cfg.mirror_prob <= 1.0:
        raise ValueError(f"mirror_prob must lie in [0, 1], got {cfg.mirror_prob}")
    device = resolve_device(cfg.device)
    torch.manual_seed(cfg.seed)
    model = cfg.model.setup()
    if cfg.init:
        report = load_pretrained(model, cfg.init)
        print(f"loaded {cfg.init}: {len(report['missing'])} parameters not in the checkpoint (trained from init)")
    if cfg.freeze_encoder:
        for p in list(model.patch_embed.parameters()) + list(model.enc_blocks.parameters()):
            p.requires_grad_(False)
    if dataset is None:
        dataset = cfg.data.dataset(cfg.model.image_size, seed=cfg.seed)
    if len(dataset) == 0:
        raise ValueError("the training set has no pairs (check overlap/rotation limits and depth)")
    gcr = GCR(cfg.gcr, cfg.model.enc_dim).to(device) if cfg.gcr.enabled else None
    model.to(device)
    params = [p for p in model.parameters() if p.requires_grad] + (list(gcr.parameters()) if gcr else [])
    opt = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    order_gen = torch.Generator().manual_seed(cfg.seed)
    mirror_gen = torch.Generator().manual_seed(cfg.seed + MIRROR_SEED_OFFSET)
    gcr_gen = torch.Generator(device=device).manual_seed(cfg.seed + GCR_SEED_OFFSET)
    loader = torch.utils.data.DataLoader(dataset, batch_size=min(cfg.batch_size, len(dataset)), shuffle=True,
                                         generator=order_gen, collate_fn=collate, drop_last=True)
    history: list[dict] = []
    model.train()
    start = time.perf_counter()
    it = iter(loader)
    bar = _progress(progress, cfg.steps)
    running: dict[str, float] = {}  # sums of the finite values of each term since the last log row, and their counts
    counts: dict[str, int] = {}
    skipped = 0
    step = 0
    try:  # Ctrl-C saves the current weights (and history) before it propagates
        for step in range(cfg.steps):
            try:
                batch = next(it)
            except StopIteration:
                it = iter(loader)
                batch = next(it)
            if cfg.mirror_prob > 0:
                batch = mirror_pairs(batch, torch.rand(len(batch["T21"]), generator=mirror_gen) < cfg.mirror_prob)
            batch = {k: v.to(device) if isinstance(v, torch.Tensor) else v for k, v in batch.items()}
            for group in opt.param_groups:
                group["lr"] = lr_at(step, cfg)
            out = model(batch["img1"], batch["img2"])
            loss_pose = symmetric_pose_loss(out, batch["T21"])
            loss = loss_pose
            terms = {"pose": float(loss_pose.detach())}
            if gcr is not None and step >= cfg.gcr.start_step:
                g = gcr(batch, out, gcr_gen)
                loss = loss + cfg.gcr.lambda_gcr * g["consistency"] + cfg.gcr.lambda_weights * g["weights"]
                terms.update(gcr=float(g["consistency"].detach()), geo=float(g["weights"].detach()),
                             **{k: float(g[k]) for k in GCR_DIAGNOSTICS})
            opt.zero_grad(set_to_none=True)
            ok = bool(torch.isfinite(loss))
            if ok:
                loss.backward()
                norm = torch.nn.utils.clip_grad_norm_(params, 1.0)
                ok = bool(torch.isfinite(norm))  # a degenerate solver step is skipped rather than poison the weights
            if ok:
                opt.step()
                for k, v in terms.items():
                    if math.isfinite(v):  # a diagnostic is NaN on a step where GCR solved no pair
                        running[k] = running.get(k, 0.0) + v
                        counts[k] = counts.get(k, 0) + 1
            else:
                skipped += 1
                opt.zero_grad(set_to_none=True)
            if (step + 1) % cfg.log_every == 0 or step + 1 == cfg.steps:
                row = {"step": step + 1, "seconds": time.perf_counter() - start, "skipped": skipped,
                       **{k: v / counts[k] for k, v in running.items()}}
                history.append(row)
                running, counts = {}, {}
                if bar is not None:
                    bar[0].update(bar[1], completed=step + 1,
                                  description=" ".join(f"{k} {v:.3f}" for k, v in row.items() if k not in ("step", "seconds", "skipped")))
    except KeyboardInterrupt:
        if save:
            path = save_checkpoint(Path(cfg.output) / "model.pt", model, cfg, history)
            print(f"interrupted after {step} of {cfg.steps} steps: saved {path}")
        raise
    finally:
        if bar is not None:
            bar[0].stop()
    if save:
        save_checkpoint(Path(cfg.output) / "model.pt", model, cfg, history)
    return model, history


def _progress(enabled: bool, total: int):
    if not enabled:
        return None
    from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

    prog = Progress(TextColumn("[bold]pose train"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                    TimeRemainingColumn(), TextColumn("{task.description}"))
    prog.start()
    return prog, prog.add_task("", total=total)


def save_checkpoint(path: Path, model: PoseRegressor, cfg: TrainConfig, history: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    torch.save({"model": weights, "model_config": cfg.model.to_dict(), "train_config": cfg.to_dict(),
                "history": history}, path)
    return path


def load_checkpoint(path: str | Path) -> PoseRegressor:
    """A model saved by :func:`save_checkpoint` (our format; for ReLoc3r's own use ``load_pretrained``).

    Raises :class:`~vision3d.errors.CheckpointNotFoundError` or :class:`~vision3d.errors.CheckpointError` naming
    the file and the problem.
    """
    path = Path(path)
    ckpt = read_checkpoint(path, f"{path}: no such checkpoint (train one with 'v3d pose train')")
    if not isinstance(ckpt, dict) or "model_config" not in ckpt or "model" not in ckpt:
        raise CheckpointError(f"{path}: not a vision3d pose checkpoint (no model_config); a ReLoc3r file goes to "
                              "--init")  # fmt: skip
    try:
        mc = dict(ckpt["model_config"])
        mc["image_size"] = tuple(mc["image_size"])
        model = PoseRegressorConfig(**mc).setup()
        model.load_state_dict(ckpt["model"])
    except (TypeError, ValueError, RuntimeError, KeyError) as err:
        raise CheckpointError(f"{path}: its model_config and weights do not make a model of this vision3d version "
                              f"({type(err).__name__}: {str(err).splitlines()[0]})") from err  # fmt: skip
    return model.eval()

"""Mesh a trained nerfstudio run: load it as ``ns-export`` does (``eval_setup``), then pick what the model offers.

- A model that offers an SDF — a ``mesh_sdf()`` method returning ``(sdf, colour or None)``, the callables of
  :func:`vision3d.export.marching_cubes.sdf_to_mesh` — is meshed by marching cubes inside the scene box.
- Otherwise every training camera is rendered and its depth and colour are fused in a TSDF
  (:mod:`vision3d.export.tsdf`). Splat models render planar (z) depth; nerfstudio's ray-marched models render
  distance along unit rays, which is divided by each pixel's ``directions_norm`` to make it planar. Pixels whose
  accumulation is below ``min_accumulation`` are background and not fused.
- Voxel size, truncation and the SDF grid are in the run's scene-box units (the dataparser frame the model
  sees). The written mesh is mapped back to the scene's own frame (``transforms.json``'s, undoing
  ``dataparser_transform`` and ``dataparser_scale``) so it overlays the input and its ground-truth mesh;
  ``frame="dataparser"`` keeps the model's frame, as ``ns-export`` does.
- A model whose cameras are not the dataparser's (ir-nerf estimates them) offers ``mesh_cameras()`` (nerfstudio
  Cameras to fuse) and ``scene_frame()`` (its frame to the scene's, ``(A, b)``); both are optional.
- Bad input fails in one line naming the file: no config, a config written by another version (a field without
  default missing, unknown fields, classes that no longer exist, a method not installed), no or a corrupt
  checkpoint, a model that renders no depth and offers no SDF, an empty TSDF or level set. A field added since
  the config was saved, with a default, gets the default (logged): old runs keep loading.
"""

from __future__ import annotations

import dataclasses
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import trimesh

from vision3d.data.lens import without_lens
from vision3d.errors import CheckpointError, CheckpointNotFoundError, Vision3DError
from vision3d.export.marching_cubes import EmptyMeshError, sdf_to_mesh
from vision3d.export.tsdf import RenderedView, default_voxel_size, fuse_tsdf, inside_box
from vision3d.geometry.camera import PinholeCamera
from vision3d.geometry.se3 import make_pose


class RunError(Vision3DError):
    """A run folder or config.yml that cannot be loaded or meshed."""


@dataclass
class MeshExportConfig:
    """Options of :func:`export_run_mesh` (``v3d export mesh``)."""

    resolution: int | None = None
    """Along the scene box's longest side: marching-cubes grid points (SDF runs, default 256), or TSDF voxels
    when ``voxel_size`` is not given (default 512)."""
    voxel_size: float | None = None
    """TSDF voxel edge in scene-box units (overrides ``resolution``)."""
    truncation: float | None = None
    """TSDF truncation distance in scene-box units (default: 4 voxels)."""
    min_accumulation: float = 0.5
    """TSDF: pixels whose rendered opacity is below this are background, not fused."""
    slab_size: int = 32
    """SDF: grid planes per marching-cubes slab (memory ~ slab_size * resolution**2 values)."""
    frame: Literal["world", "dataparser"] = "world"
    """Frame of the written mesh: the scene's own (transforms.json) or the model's (dataparser, as ns-export)."""


@dataclass
class LoadedRun:
    """A run loaded for export: its config path, nerfstudio config, pipeline and checkpoint."""

    config_path: Path
    config: object
    pipeline: object
    checkpoint: Path

    @property
    def scene_box(self) -> np.ndarray:
        """The scene box [2, 3] in the model's (dataparser) frame."""
        return self.pipeline.datamanager.train_dataparser_outputs.scene_box.aabb.cpu().numpy().astype(np.float64)

    def _model_to_scene(self) -> tuple[np.ndarray, np.ndarray]:
        """``(A [3, 3], b [3])`` with ``p_scene = A p_model + b``: the model's own ``scene_frame()`` when it offers
        one (ir-nerf: its estimated frame aligned onto the ground truth), else the dataparser's transform undone."""
        offer = getattr(self.pipeline.model, "scene_frame", None)
        mapping = offer() if callable(offer) else None
        if mapping is not None:
            return mapping
        outputs = self.pipeline.datamanager.train_dataparser_outputs
        transform = outputs.dataparser_transform.double().cpu().numpy()  # [3, 4]: p_model = s (R p + t)
        rotation = transform[:, :3]
        return rotation.T / float(outputs.dataparser_scale), -rotation.T @ transform[:, 3]

    def to_scene_frame(self, points: np.ndarray) -> np.ndarray:
        """Points [N, 3] from the model's frame to the scene's own frame."""
        a, b = self._model_to_scene()
        return np.asarray(points, np.float64) @ a.T + b

    def to_model_frame(self, points: np.ndarray) -> np.ndarray:
        """Points [N, 3] from the scene's own frame to the model's frame."""
        a, b = self._model_to_scene()
        return (np.asarray(points, np.float64) - b) @ np.linalg.inv(a).T


def resolve_config_path(run: Path | str) -> Path:
    """A run folder (holding ``config.yml``) or the ``config.yml`` itself."""
    path = Path(run)
    if path.is_dir():
        path = path / "config.yml"
    if not path.is_file():
        raise RunError(f"{path}: no such run config (give a run folder with a config.yml, or the config.yml)")
    return path


def _first_line(err: Exception) -> str:
    """The first line of an exception's message, or its type name when the message is empty."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _field_default(spec: dataclasses.Field):
    """A field's default value (a fresh one from its factory), or ``dataclasses.MISSING`` when it has none."""
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:
        return spec.default_factory()
    return dataclasses.MISSING


def _version_mismatches(obj, filled: list[str], prefix: str = "", seen: set | None = None) -> list[str]:
    """Fields that the current classes have and the loaded config lacks (or the other way), recursively.

    A missing field that has a default is set to it in place and its dotted name appended to ``filled`` rather than
    reported: a config saved before the field was added still means what it meant.
    """
    seen = set() if seen is None else seen
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type) or id(obj) in seen:
        return []
    seen.add(id(obj))
    specs = {f.name: f for f in dataclasses.fields(obj)}
    present = set(vars(obj))
    problems = []
    for name in sorted(set(specs) - present):
        default = _field_default(specs[name])
        if default is dataclasses.MISSING:
            problems.append(f"{prefix}{name} missing")
        else:
            setattr(obj, name, default)
            filled.append(f"{prefix}{name}")
    problems += [f"{prefix}{n} unknown" for n in sorted(present - set(specs))]
    for name in sorted(set(specs) & present):
        value = getattr(obj, name)
        children = value.items() if isinstance(value, dict) else [(name, value)]
        for key, child in children:
            label = f"{prefix}{name}.{key}." if isinstance(value, dict) else f"{prefix}{key}."
            problems += _version_mismatches(child, filled, label, seen)
    return problems


def read_run_config(config_path: Path, log: bool = True):
    """The TrainerConfig saved in ``config.yml``, checked against the installed classes (fields added since
    filled in with their defaults, logged when ``log``)."""
    import yaml
    from nerfstudio.configs.method_configs import all_methods
    from nerfstudio.engine.trainer import TrainerConfig

    try:
        config = yaml.load(config_path.read_text(), Loader=yaml.Loader)
    except (yaml.YAMLError, ImportError, AttributeError, TypeError) as err:
        raise RunError(f"{config_path}: not a config this version can read ({_first_line(err)})") from None
    if not isinstance(config, TrainerConfig):
        raise RunError(f"{config_path}: not a nerfstudio run config (holds {type(config).__name__})")
    check_config_version(config_path, config, log)
    if config.method_name not in all_methods:
        raise RunError(f"{config_path}: method {config.method_name!r} is not installed here")
    return config


def check_config_version(config_path: Path, config, log: bool = True) -> list[str]:
    """Fill in the fields the installed classes added since ``config`` was saved, with their defaults, and
    return their dotted names (logged when ``log``); raise (naming ``config_path``) when a field without a default is
    missing or a saved field is unknown to the installed classes."""
    from nerfstudio.utils.rich_utils import CONSOLE

    filled: list[str] = []
    mismatches = _version_mismatches(config, filled)
    if mismatches:
        shown = ", ".join(mismatches[:4]) + (f" and {len(mismatches) - 4} more" if len(mismatches) > 4 else "")
        raise RunError(f"{config_path}: written by another version of nerfstudio/vision3d (fields {shown})")
    if filled and log:
        CONSOLE.log(f"{config_path}: saved before these fields existed, set to their defaults: {', '.join(filled)}")
    return filled


def latest_checkpoint(config_path: Path, config) -> Path:
    """The newest ``step-*.ckpt`` of the run, checked to be a whole torch archive (not truncated or corrupt)."""
    return newest_checkpoint(config_path.parent / config.relative_model_dir)


def newest_checkpoint(checkpoint_dir: Path) -> Path:
    """The newest ``step-*.ckpt`` in ``checkpoint_dir``, checked to be a whole torch archive."""
    checkpoints = sorted(checkpoint_dir.glob("step-*.ckpt")) if checkpoint_dir.is_dir() else []
    if not checkpoints:
        raise CheckpointNotFoundError(f"{checkpoint_dir}: no checkpoint (step-*.ckpt) in the run")
    checkpoint = checkpoints[-1]
    try:
        with zipfile.ZipFile(checkpoint) as archive:
            broken = archive.testzip()
    except (zipfile.BadZipFile, OSError) as err:
        raise CheckpointError(f"{checkpoint}: corrupt checkpoint ({err})") from None
    if broken is not None:
        raise CheckpointError(f"{checkpoint}: corrupt checkpoint (bad data in {broken})")
    return checkpoint


def load_run(run: Path | str) -> LoadedRun:
    """Load a trained run for export as ``ns-export`` does (nerfstudio's ``eval_setup``, inference mode).

    The checkpoint is read from the run folder itself (not from the ``output_dir`` recorded at training time),
    so a run that was moved, or is loaded from another working directory, still loads.
    """
    from nerfstudio.utils.eval_utils import eval_setup

    import vision3d.methods.trainer  # noqa: F401  (lets torch.load read nerfstudio's numpy scheduler state)

    config_path = resolve_config_path(run)
    config = read_run_config(config_path, log=False)  # logged once, on the config eval_setup reads
    checkpoint = latest_checkpoint(config_path, config)

    def from_run_folder(cfg):
        check_config_version(config_path, cfg)
        cfg.relative_model_dir = checkpoint.parent.resolve()  # absolute: get_checkpoint_dir() returns it as is
        cfg.load_step = int(checkpoint.stem.split("-")[1])
        return cfg

    try:
        config, pipeline, _, _ = eval_setup(config_path, test_mode="inference", update_config_callback=from_run_folder)
    except Exception as err:  # noqa: BLE001 - anything nerfstudio raises while building and loading is bad input here
        raise RunError(f"{checkpoint}: cannot be loaded into {config.method_name} ({type(err).__name__}: {_first_line(err)})") from None
    return LoadedRun(config_path, config, pipeline, checkpoint)


def model_sdf(model):
    """``(sdf, colour or None)`` when the model offers an SDF (a ``mesh_sdf()`` method), else None."""
    offer = getattr(model, "mesh_sdf", None)
    return offer() if callable(offer) else None


def directions_norm(camera: PinholeCamera) -> np.ndarray:
    """[H, W] length of each pixel-centre ray with unit z (nerfstudio's ``directions_norm``): ray distance / it = z."""
    return np.linalg.norm(camera.rays(), axis=-1)


@torch.no_grad()
def render_training_views(loaded: LoadedRun, min_accumulation: float = 0.5, seen: dict | None = None
                          ) -> Iterator[RenderedView]:
    """Render each training camera of the run (or the model's ``mesh_cameras()``, when it offers them) as a pinhole
    camera (a lens's distortion dropped: nerfacto would cast distorted rays, which K does not describe): colour,
    planar depth (0 where background), K and c2w. ``seen["max_accumulation"]`` (when given) gets the highest
    rendered accumulation, for the error when no pixel reaches ``min_accumulation``."""
    from nerfstudio.models.splatfacto import SplatfactoModel

    model = loaded.pipeline.model
    offer = getattr(model, "mesh_cameras", None)
    cameras = offer() if callable(offer) else loaded.pipeline.datamanager.train_dataparser_outputs.cameras
    planar = isinstance(model, SplatfactoModel)
    for index in range(len(cameras)):
        camera = cameras[index : index + 1].to(model.device)
        camera = without_lens(camera)  # fusion reads the render as a pinhole image of K: render it as one
        outputs = model.get_outputs_for_camera(camera)
        if outputs.get("depth") is None:
            raise RunError(f"{loaded.config_path}: {loaded.config.method_name} renders no depth and offers no SDF "
                           "(mesh_sdf): nothing to mesh")
        depth = outputs["depth"][..., 0].float()
        intrinsics = PinholeCamera.from_K(camera.get_intrinsics_matrices()[0].cpu().numpy(), depth.shape[1], depth.shape[0])
        if not planar:
            depth = depth / torch.as_tensor(directions_norm(intrinsics), dtype=depth.dtype, device=depth.device)
        if outputs.get("accumulation") is not None:
            if seen is not None:
                seen["max_accumulation"] = max(seen.get("max_accumulation", 0.0), float(outputs["accumulation"].max()))
            depth = torch.where(outputs["accumulation"][..., 0] >= min_accumulation, depth, torch.zeros_like(depth))
        c2w = camera.camera_to_worlds[0].double().cpu()  # [3, 4]; RenderedView holds [4, 4]
        yield RenderedView(
            rgb=outputs["rgb"].float().cpu().numpy(), depth=depth.cpu().numpy(),
            camera=intrinsics, c2w=make_pose(c2w[:, :3], c2w[:, 3]).numpy(),
        )


def mesh_run(loaded: LoadedRun, options: MeshExportConfig | None = None) -> trimesh.Trimesh:
    """The run's mesh in the frame ``options.frame``: marching cubes of its SDF, else TSDF of its renders."""
    options = options or MeshExportConfig()
    box = loaded.scene_box
    offer = model_sdf(loaded.pipeline.model)
    seen: dict = {}
    try:
        if offer is not None:
            sdf, color = offer
            mesh = sdf_to_mesh(sdf, box, resolution=options.resolution or 256, slab_size=options.slab_size,
                               color=color)
        else:
            voxel = options.voxel_size
            if voxel is None and options.resolution is not None:
                voxel = default_voxel_size(box, options.resolution)
            views = render_training_views(loaded, options.min_accumulation, seen)
            mesh = fuse_tsdf(views, box, voxel_size=voxel, truncation=options.truncation)
    except EmptyMeshError as err:
        found = seen.get("max_accumulation")
        hint = (f"; no rendered pixel reached --min-accumulation {options.min_accumulation:g} (highest {found:.3g})"
                if found is not None and found < options.min_accumulation else "")
        raise EmptyMeshError(f"{loaded.config_path}: {err}{hint}") from None
    if options.frame == "world":
        mesh.vertices = loaded.to_scene_frame(mesh.vertices)
    return mesh


@dataclass
class MeshExportResult:
    """What :func:`export_run_mesh` wrote and measured."""

    path: Path
    summary: dict
    scores: dict | None = None


def export_run_mesh(
    run: Path | str,
    output: Path | str | None = None,
    options: MeshExportConfig | None = None,
    gt_mesh: Path | str | None = None,
    threshold: float = 0.05,
    n_points: int = 100_000,
) -> MeshExportResult:
    """Load ``run``, mesh it, write ``output`` (default ``RUN/mesh.ply``) and, with ``gt_mesh``, score it.

    The scores (:func:`vision3d.metrics.mesh_chamfer_fscore`, ``threshold`` in the ground truth's units) are
    measured in the scene's own frame, with ground-truth samples outside the scene box left out: the model
    cannot reconstruct what lies outside it.
    """
    from vision3d.export.mesh_io import mesh_summary, write_mesh
    from vision3d.metrics import mesh_chamfer_fscore

    options = options or MeshExportConfig()
    loaded = load_run(run)
    output = Path(output) if output is not None else loaded.config_path.parent / "mesh.ply"
    gt = None
    if gt_mesh is not None:
        gt = trimesh.load(gt_mesh, force="mesh", process=False)
        if not isinstance(gt, trimesh.Trimesh) or len(gt.faces) == 0:
            raise RunError(f"{gt_mesh}: not a mesh with faces")
    mesh = mesh_run(loaded, options)
    path = write_mesh(mesh, output)
    scores = None
    if gt is not None:
        pred = mesh.copy()
        if options.frame == "dataparser":
            pred.vertices = loaded.to_scene_frame(pred.vertices)
        box = loaded.scene_box

        def inside_scene_box(points: np.ndarray) -> np.ndarray:
            return inside_box(loaded.to_model_frame(points), box)

        scores = mesh_chamfer_fscore(pred, gt, threshold, n_points=n_points, gt_keep=inside_scene_box)
        scores["threshold"] = threshold
    return MeshExportResult(path, mesh_summary(mesh), scores)

"""Depth priors for DET-GS's L_depth, all offline.

Sources, in order of preference (``DepthPriorConfig.source="auto"`` tries them in this order):

1. ``"dataset"``: depth maps named in the dataset (``frames[].depth_file_path`` in ``transforms.json``,
   nerfstudio's convention: 16-bit PNG times ``depth_unit_scale_factor`` (1e-3 m), or ``.npy`` in metres),
   read by :func:`vision3d.data.scene.read_depth`. Kind ``"depth"``; 0 marks unknown pixels.
2. ``"network"``: a monocular depth network the user has on disk (:class:`MonocularDepthNetwork`): a
   ``torch.export`` (``.pt2``) or TorchScript file, or a local torch.hub directory (``hubconf.py``) with an
   entry point (and optionally a state dict). Nothing is ever
   downloaded; a missing path is a :class:`DepthPriorError` that says what to put there.
3. ``"monocular_like"``: for our rendered scenes, whose dataset depth is the *ground truth*, a prior made
   from it with the kind of error real monocular estimators make (:func:`monocular_like_prior`): per-region
   affine distortion in disparity, blur and noise, then an arbitrary global affine map; the render's
   background (sky, HDRI) is farthest, as a network predicts it, not unknown. It is never chosen
   by ``"auto"`` (that would silently train on ground truth); presets for rendered scenes name it.

Sparse-view protocols (3, 6, 9 training views, fixed seed) use :func:`vision3d.data.scene.sparse_view_split`.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from vision3d.data.scene import SceneError, read_depth
from vision3d.offline import refuse_network

DepthKind = Literal["depth", "disparity"]


class DepthPriorError(SceneError):
    """A depth prior is missing, unreadable or the wrong size; the message names the file."""


@dataclass
class DepthPrior:
    """One view's depth prior."""

    values: torch.Tensor  # [H, W] float32: depth (scene units / metres) or disparity (affine-ambiguous)
    kind: DepthKind
    valid: torch.Tensor  # [H, W] bool, where the prior is known
    source: str  # where it came from, for logs and errors


# ----------------------------------------------------------------------------- 1. files named in the dataset
def load_depth_prior_file(
    path: str | Path, image_size: tuple[int, int], depth_unit_scale_factor: float = 1e-3
) -> DepthPrior:
    """Read a dataset depth map as a prior.

    Args:
        path: 16-bit PNG (values times ``depth_unit_scale_factor`` are metres) or ``.npy`` (metres).
        image_size: (H, W) of the image it belongs to.
    Raises:
        DepthPriorError: naming the file when it is missing, unreadable, not single-channel, has NaN/inf,
            or its size differs from the image's.
    """
    path = Path(path)
    try:
        depth = read_depth(path, depth_unit_scale_factor)
    except SceneError as err:
        raise DepthPriorError(f"depth prior {err}") from err
    height, width = image_size
    if depth.shape != (height, width):
        raise DepthPriorError(
            f"depth prior {path}: is {depth.shape[1]}x{depth.shape[0]} but its image is {width}x{height} "
            "(depth maps must have the image's resolution)"
        )
    values = torch.from_numpy(depth)
    return DepthPrior(values=values, kind="depth", valid=values > 0, source=str(path))


# ----------------------------------------------------------------------------- 2. a network on disk
@dataclass
class MonocularDepthNetworkConfig:
    """A monocular depth network loaded from the local disk (never downloaded)."""

    path: Path | None = None
    """``.pt2`` (``torch.export.save``; exported for the input size used here), a TorchScript file
    (``torch.jit.save``), or a directory with a ``hubconf.py`` (torch.hub, ``source="local"``)."""
    hub_entrypoint: str | None = None
    """entry point in ``hubconf.py`` when ``path`` is a directory."""
    hub_kwargs: dict = field(default_factory=dict)
    """keyword arguments of the hub entry point."""
    weights: Path | None = None
    """optional state dict loaded into the hub model (weights_only)."""
    output_kind: DepthKind = "disparity"
    """what the network predicts: relative disparity (Depth Anything, MiDaS, DPT) or depth."""
    input_long_side: int = 518
    """the image's long side is resized to about this before the network (Depth Anything V2's 518)."""
    input_multiple: int = 14
    """network input sides are rounded to a multiple of this (ViT patch size 14)."""
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    """input normalization mean (ImageNet)."""
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    """input normalization std (ImageNet)."""
    device: str = "cpu"
    """where the network runs."""


class MonocularDepthNetwork:
    """A monocular depth estimator on disk, called on RGB images.

    Raises:
        DepthPriorError: when ``config.path`` is unset or absent (one line saying what to provide), or the
            file cannot be loaded.
    """

    def __init__(self, config: MonocularDepthNetworkConfig):
        self.config = config
        path = Path(config.path) if config.path is not None else None
        if path is None or not path.exists():
            raise DepthPriorError(
                f"monocular depth network {path if path else '(no path set)'}: not found; vision3d never downloads "
                "weights: give a .pt2 / TorchScript file or a local torch.hub directory, or use depth_file_path priors"
            )
        try:
            with refuse_network(f"monocular depth network {path}", DepthPriorError,
                                "vision3d loads depth networks from disk only"):
                if path.is_dir():
                    if not (path / "hubconf.py").is_file() or not config.hub_entrypoint:
                        raise DepthPriorError(
                            f"monocular depth network {path}: a directory needs a hubconf.py and hub_entrypoint"
                        )
                    model = torch.hub.load(str(path), config.hub_entrypoint, source="local", **config.hub_kwargs)
                    if config.weights is not None:
                        state = torch.load(Path(config.weights), map_location="cpu", weights_only=True)
                        model.load_state_dict(state)
                elif path.suffix == ".pt2":
                    model = torch.export.load(str(path)).module()
                else:
                    with warnings.catch_warnings():  # TorchScript is deprecated in torch 2.14 but still loads
                        warnings.simplefilter("ignore", FutureWarning)
                        model = torch.jit.load(str(path), map_location="cpu")
        except DepthPriorError:
            raise
        except Exception as err:  # noqa: BLE001  (any loader failure becomes one clear line)
            raise DepthPriorError(f"monocular depth network {path}: cannot load ({type(err).__name__}: {err})") from err
        self.model = model.to(config.device)
        if hasattr(self.model, "eval") and not path.suffix == ".pt2":  # exported programs have no train mode
            self.model.eval()
        self.path = path

    @torch.no_grad()
    def __call__(self, image: torch.Tensor) -> DepthPrior:
        """Predict a prior for ``image`` [H, W, 3] in [0, 1]; the output is resized back to H x W."""
        if image.ndim != 3 or image.shape[-1] != 3:
            raise ValueError(f"image must be [H, W, 3], got shape {tuple(image.shape)}")
        cfg = self.config
        height, width = image.shape[:2]
        scale = cfg.input_long_side / max(height, width)
        size = [max(cfg.input_multiple, int(round(s * scale / cfg.input_multiple)) * cfg.input_multiple) for s in (height, width)]
        x = image.float().permute(2, 0, 1)[None].to(cfg.device)
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False)
        x = (x - torch.tensor(cfg.mean, device=x.device)[:, None, None]) / torch.tensor(cfg.std, device=x.device)[:, None, None]
        out = self.model(x)
        if isinstance(out, (tuple, list)):
            out = out[0]
        if isinstance(out, dict):
            out = next(iter(out.values()))
        out = out.float().reshape(1, 1, *out.shape[-2:])
        out = F.interpolate(out, size=(height, width), mode="bilinear", align_corners=False)[0, 0].cpu()
        valid = torch.isfinite(out) & ((out > 0) if cfg.output_kind == "depth" else torch.ones_like(out, dtype=torch.bool))
        return DepthPrior(values=out, kind=cfg.output_kind, valid=valid, source=f"network {self.path}")


# ----------------------------------------------------------------------------- 3. monocular-like from GT
@dataclass
class MonocularLikePriorConfig:
    """Knobs of the synthetic "monocular-like" prior made from ground-truth depth (all seeded).

    Real monocular estimators are right about local shape and wrong about the relative scale and offset
    of objects and regions, blur depth edges, and are affine-ambiguous. The prior reproduces that:
    disparity 1/depth gets a scale and shift per Voronoi region (soft borders, so the error is smooth like
    a network's, not a new depth edge), is blurred, gets noise, and is mapped by a random global affine map.
    """

    seed: int = 0
    """combined with the view index, so every view's distortion differs and is reproducible."""
    num_regions: int = 12
    """Voronoi cells with their own affine distortion."""
    region_log_scale_std: float = 0.1
    """per-region disparity scale is exp(N(0, this))."""
    region_shift_std: float = 0.05
    """per-region disparity shift is N(0, this) times the valid disparity range."""
    region_softness: float = 0.03
    """width of the blend between cells, as a fraction of the image diagonal (0: hard cell borders)."""
    blur_sigma: float = 1.0
    """Gaussian blur of the result, pixels (0: none); unknown pixels do not bleed in."""
    noise_std: float = 0.01
    """additive Gaussian noise, as a fraction of the valid disparity range."""
    random_global_affine: bool = True
    """finally map to [0, 1] and apply a random positive scale and shift, as networks' outputs are relative."""
    background_as_far: bool = True
    """pixels without ground-truth depth (0 or +inf: a render's background, the sky or an HDRI at infinity) get
    disparity 0 before the distortion and are valid, as a monocular network predicts the sky farthest; False:
    they are unknown (no L_depth there). See :func:`monocular_like_prior`; measured (docs/det-gs.md) better in
    nerfstudio's default frame, worse in a metric frame 100x our units."""


def region_weights(height: int, width: int, centres: np.ndarray, softness: float) -> np.ndarray:
    """Soft Voronoi assignment of each pixel to ``centres`` [K, 2] (y, x in pixels): [K, H, W] summing to 1.

    ``softness`` is the blend width in pixels (0: hard Voronoi cells).
    """
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float64) + 0.5
    dist = np.sqrt((yy[None] - centres[:, 0, None, None]) ** 2 + (xx[None] - centres[:, 1, None, None]) ** 2)
    if softness <= 0:
        weights = np.zeros_like(dist)
        np.put_along_axis(weights, dist.argmin(axis=0)[None], 1.0, axis=0)
        return weights
    logits = -(dist - dist.min(axis=0, keepdims=True)) / softness
    weights = np.exp(logits)
    return weights / weights.sum(axis=0, keepdims=True)


def monocular_like_prior(
    depth: torch.Tensor | np.ndarray, config: MonocularLikePriorConfig | None = None, index: int = 0
) -> DepthPrior:
    """A monocular-like disparity prior made from ground-truth depth [H, W] (0 or +inf: background).

    Deterministic for (``config.seed``, ``index``). The ground truth of a rendered scene has no depth where
    the background (sky, HDRI) is seen: it is at infinity. A monocular network sees that sky and predicts it
    farthest (disparity near its minimum), so with ``config.background_as_far`` those pixels get the true
    disparity 0 and go through the same distortion, and the prior is valid there. Why it matters
    (docs/det-gs.md, 360° orbits): Gaussians that render the sky of a training view can otherwise sit at any
    depth, and on a 360° orbit they gather on the far side of the orbit, in front of held-out cameras.
    The regional shifts and the noise stay relative to the disparity range of the surfaces.

    Returns:
        DepthPrior of kind ``"disparity"``, values on an arbitrary affine scale, valid where depth > 0
        (and on the background with ``background_as_far``).
    """
    config = config or MonocularLikePriorConfig()
    depth = depth.detach().cpu().numpy() if isinstance(depth, torch.Tensor) else np.asarray(depth)
    depth = depth.astype(np.float64)
    if depth.ndim != 2:
        raise ValueError(f"depth must be [H, W], got shape {depth.shape}")
    surface = np.isfinite(depth) & (depth > 0)
    if surface.sum() < 2:
        raise DepthPriorError("depth has fewer than two valid (positive) pixels; cannot make a prior")
    background = (depth == 0) | (depth == np.inf)
    valid = surface | background if config.background_as_far else surface
    rng = np.random.default_rng([config.seed, index])
    height, width = depth.shape
    disparity = np.where(surface, 1.0 / np.where(surface, depth, 1.0), 0.0)
    span = float(np.ptp(disparity[surface])) or 1.0

    k = max(1, config.num_regions)
    centres = rng.uniform([0.0, 0.0], [height, width], size=(k, 2))
    weights = region_weights(height, width, centres, config.region_softness * float(np.hypot(height, width)))
    scales = np.exp(rng.normal(0.0, config.region_log_scale_std, size=k))
    shifts = rng.normal(0.0, config.region_shift_std, size=k) * span
    scale_map = np.tensordot(scales, weights, axes=1)
    shift_map = np.tensordot(shifts, weights, axes=1)
    out = scale_map * disparity + shift_map

    if config.blur_sigma > 0:
        v = valid.astype(np.float64)
        num = cv2.GaussianBlur(out * v, (0, 0), config.blur_sigma, borderType=cv2.BORDER_REFLECT)
        den = cv2.GaussianBlur(v, (0, 0), config.blur_sigma, borderType=cv2.BORDER_REFLECT)
        out = np.where(valid, num / np.maximum(den, 1e-12), 0.0)
    out = out + rng.normal(0.0, config.noise_std * span, size=out.shape)
    if config.random_global_affine:
        lo, hi = out[valid].min(), out[valid].max()
        out = (out - lo) / max(hi - lo, 1e-12)
        out = out * rng.uniform(0.5, 2.0) + rng.uniform(-0.5, 0.5)
    out = np.where(valid, out, 0.0).astype(np.float32)
    return DepthPrior(
        values=torch.from_numpy(out),
        kind="disparity",
        valid=torch.from_numpy(valid),
        source=f"monocular-like(seed={config.seed}, view={index})",
    )


# ----------------------------------------------------------------------------- choosing and caching
@dataclass
class DepthPriorConfig:
    """Where L_depth's prior comes from (see the module docstring for the order of preference)."""

    source: Literal["auto", "dataset", "network", "monocular_like", "none"] = "auto"
    """'auto': dataset depth files if every frame names one, else the network if its path is set, else none."""
    network: MonocularDepthNetworkConfig = field(default_factory=MonocularDepthNetworkConfig)
    """the on-disk network (source 'network')."""
    monocular_like: MonocularLikePriorConfig = field(default_factory=MonocularLikePriorConfig)
    """the synthetic prior's knobs (source 'monocular_like'; needs ground-truth depth files)."""


def resolve_source(config: DepthPriorConfig, has_dataset_depth: bool) -> str:
    """The concrete source for ``config.source`` given whether every frame names a depth file.

    Returns 'dataset', 'network', 'monocular_like' or 'none'.
    Raises:
        DepthPriorError: an explicit source that cannot work (no depth files for 'dataset' or 'monocular_like').
    """
    source = config.source
    if source == "auto":
        if has_dataset_depth:
            return "dataset"
        return "network" if config.network.path is not None else "none"
    if source in ("dataset", "monocular_like") and not has_dataset_depth:
        raise DepthPriorError(
            f"depth prior source '{source}' needs depth_file_path on every frame of the dataset, and some have none"
        )
    if source not in ("dataset", "network", "monocular_like", "none"):
        raise DepthPriorError(f"unknown depth prior source {source!r}")
    return source


class DepthPriorProvider:
    """One prior per training view, made on first use and cached.

    Args:
        config: the prior configuration.
        depth_paths: per view, the dataset depth file or None (nerfstudio's ``depth_filenames``).
        image_sizes: per view, (H, W).
        depth_unit_scale_factor: PNG depth units to metres.
    """

    def __init__(
        self,
        config: DepthPriorConfig,
        depth_paths: Sequence[str | Path | None],
        image_sizes: Sequence[tuple[int, int]],
        depth_unit_scale_factor: float = 1e-3,
    ):
        if len(depth_paths) != len(image_sizes):
            raise ValueError(f"{len(depth_paths)} depth paths for {len(image_sizes)} images")
        self.config = config
        self.depth_paths = list(depth_paths)
        self.image_sizes = list(image_sizes)
        self.depth_unit_scale_factor = depth_unit_scale_factor
        has_depth = bool(self.depth_paths) and all(p is not None for p in self.depth_paths)
        self.source = resolve_source(config, has_depth)
        self.network = MonocularDepthNetwork(config.network) if self.source == "network" else None
        self._cache: dict[int, DepthPrior] = {}

    @property
    def available(self) -> bool:
        return self.source != "none"

    def describe(self) -> str:
        """One line for the log."""
        if self.source == "none":
            return "det-gs: no depth prior (no depth_file_path in the dataset, no network path): L_depth is off"
        return f"det-gs: depth prior from {self.source}"

    def __call__(self, index: int, image: torch.Tensor | None = None) -> DepthPrior | None:
        """The prior of view ``index`` (``image`` [H, W, 3] in [0, 1] is needed for the network)."""
        if self.source == "none":
            return None
        if index not in self._cache:
            if self.source == "network":
                if image is None:
                    raise ValueError("the network prior needs the view's image")
                prior = self.network(image)
            else:
                prior = load_depth_prior_file(self.depth_paths[index], self.image_sizes[index], self.depth_unit_scale_factor)
                if self.source == "monocular_like":
                    prior = monocular_like_prior(prior.values, self.config.monocular_like, index)
            self._cache[index] = prior
        return self._cache[index]

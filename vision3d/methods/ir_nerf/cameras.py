"""The cameras IR-NeRF estimates, out of a run: ``transforms.json`` for other methods, ``cameras.npz`` and
:func:`estimated_and_gt_cameras` for the viewer (estimated and ground-truth frusta).

``transforms.json`` holds the estimated poses (OpenGL axes, as nerfstudio reads them) in the prior's frame
(+Z up, object at the origin, scene units of the prior's radius), the files' own intrinsics and absolute
image paths, so ``ns-train <method> --data RUN/transforms.json`` trains on them. ``cameras.npz``: ``estimated``
and (when the data had poses) ``ground_truth`` camera-to-world ``[N, 4, 4]`` in OpenCV axes, the estimated
set Sim(3)-aligned onto the ground truth; ``K`` ``[3, 3]`` and ``size`` (width, height) of the files.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from torch import Tensor

from vision3d.errors import Vision3DError
from vision3d.geometry.se3 import opencv_to_opengl
from vision3d.methods.ir_nerf.evaluation import align_poses


def write_transforms(path: str | Path, c2w: Tensor, K: Tensor, size: tuple[int, int], image_paths: list[Path],  # noqa: N803
                     lens: dict | None = None) -> Path:
    """nerfstudio ``transforms.json`` of camera-to-world poses ``c2w [N, 4, 4]`` (OpenCV axes), intrinsics ``K``
    and ``lens`` (the input's ``camera_model`` and distortion coefficients; none: OPENCV without distortion)."""
    path = Path(path)
    frames = [{"file_path": str(Path(p).resolve()), "transform_matrix": opencv_to_opengl(pose.double().numpy()).tolist()}
              for p, pose in zip(image_paths, c2w, strict=True)]
    meta = {"camera_model": "OPENCV", "fl_x": float(K[0, 0]), "fl_y": float(K[1, 1]), "cx": float(K[0, 2]),
            "cy": float(K[1, 2]), "w": int(size[0]), "h": int(size[1]), "k1": 0.0, "k2": 0.0, "p1": 0.0, "p2": 0.0,
            **(lens or {}),
            "ir_nerf": "poses estimated by vision3d ir-nerf, in its pose prior's frame (+Z up, object at the origin)",
            "frames": frames}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(meta, indent=2))
    return path


def write_cameras(path: str | Path, estimated: Tensor, ground_truth: Tensor | None, K: Tensor, size: tuple[int, int]) -> Path:  # noqa: N803
    """``cameras.npz`` (see the module docstring)."""
    arrays = {"K": K.numpy().astype(np.float64), "size": np.asarray(size)}
    if ground_truth is not None:
        estimated = align_poses(estimated, ground_truth).apply_to_poses(estimated.float())
        arrays["ground_truth"] = ground_truth.double().numpy()
    arrays["estimated"] = estimated.double().numpy()
    path = Path(path)
    np.savez(path, **arrays)
    return path


def estimated_and_gt_cameras(model_or_run, frame: str = "ground_truth") -> dict[str, np.ndarray | None]:
    """Both camera sets for drawing frusta: ``{"estimated": [N, 4, 4], "ground_truth": [N, 4, 4] or None,
    "K": [3, 3], "size": (width, height)}``; camera-to-world in OpenCV axes, in one frame: with
    ``frame="ground_truth"`` the estimated set is aligned (Sim(3)) onto the ground truth when there is one;
    with ``frame="model"`` (a model only) the estimated set stays in the model's (prior's) frame, where the
    viewer renders the field, and the ground truth is brought there by the inverse alignment.

    ``model_or_run``: an ``IRNeRFModel`` (nerfstudio model), or a run folder (holding ``cameras.npz``,
    written during training) or the ``cameras.npz`` / ``config.yml`` path in it.
    """
    if frame not in ("ground_truth", "model"):
        raise ValueError(f"frame must be 'ground_truth' or 'model', got {frame!r}")
    system = getattr(model_or_run, "system", None)
    if system is not None:
        gt = model_or_run.gt_c2w
        estimated = system.estimated_poses().cpu()
        if gt is not None and frame == "ground_truth":
            estimated = align_poses(estimated, gt).apply_to_poses(estimated)
        elif gt is not None:
            gt = align_poses(estimated, gt).inverse().apply_to_poses(gt.float())
        return {"estimated": estimated.double().numpy(), "ground_truth": None if gt is None else gt.double().numpy(),
                "K": model_or_run.original_K.double().numpy(), "size": tuple(model_or_run.original_size)}
    if frame != "ground_truth":
        raise ValueError(f"{model_or_run}: a run's cameras.npz holds the ground truth's frame only (frame='model' needs a model)")
    path = Path(model_or_run)
    if path.is_dir():
        candidates = [path / "cameras.npz", *sorted(path.glob("**/cameras.npz"))]
        path = next((p for p in candidates if p.is_file()), path / "cameras.npz")
    elif path.name != "cameras.npz":
        path = path.with_name("cameras.npz")
    if not path.is_file():
        raise Vision3DError(f"{path}: no cameras.npz (an ir-nerf run writes it during training)")
    with np.load(path) as data:
        return {"estimated": data["estimated"], "ground_truth": data["ground_truth"] if "ground_truth" in data else None,
                "K": data["K"], "size": tuple(int(v) for v in data["size"])}

"""The helix: PatchMatch MVS over the training views, seeded from the SDF's renders, turned into SDF targets.

One pass (:func:`mvs_pass`) takes the training images at MVS resolution (the long side at most
``max_side`` px; nerfstudio's ``rescale_output_resolution`` of the cameras, so K and the rendered views
agree), runs :func:`vision3d.mvs.run_mvs` (random hypotheses on the first pass; from the second on,
seeded with the SDF's rendered z-depth and normals where its opacity is ≥ ``seed_min_accumulation``) and
keeps what the geometric filter keeps. Targets live at MVS resolution and are looked up per training ray
by its pixel. Each view's depth range is the z extent of the scene box in front of it.

Cameras with OpenCV radial/tangential distortion (``camera_model: OPENCV`` with non-zero ``k1 k2 k3 p1 p2``,
what ``ns-process-data`` writes from COLMAP): MVS runs on the images undistorted onto the cameras' own K (the
views are pinhole cameras with that K), and a training ray's target is read where its undistorted pixel lands
(:class:`TrainingPixels`), the same undistortion nerfstudio applies when it casts the ray.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import cv2
import torch
from nerfstudio.cameras.cameras import Cameras, CameraType
from torch import Tensor

from vision3d.data.lens import resample_to_undistorted, undistorted_rays, without_lens
from vision3d.data.scene import SceneError
from vision3d.errors import Vision3DError
from vision3d.geometry.camera import normalize_pixels, pixel_grid
from vision3d.geometry.se3 import opengl_to_opencv
from vision3d.mvs import MVSConfig, Seed, run_mvs


@dataclass
class MVSViews:
    """Training views at MVS resolution: ``images [V, h, w, 3]`` in [0, 1] (undistorted), ``K [V, 3, 3]`` (pixel
    centres at +0.5), ``c2w [V, 4, 4]`` camera-to-world in OpenCV axes, ``cameras`` (nerfstudio, rescaled,
    pinhole), ``valid [V, h, w]`` (False where undistortion found no source pixel; None: no distortion)."""

    images: Tensor
    K: Tensor  # noqa: N815
    c2w: Tensor
    cameras: Cameras
    valid: Tensor | None = None


@dataclass
class TrainingPixels:
    """The training images' pixel grid, ``size (H, W)``, and for cameras with distortion their full-resolution
    ``intrinsics [V, 4]`` (fx, fy, cx, cy) and ``distortion [V, 6]`` (nerfstudio's k1, k2, k3, k4, p1, p2; None
    without distortion): where a training ray's pixel lands in the (undistorted) MVS views."""

    size: tuple[int, int]
    intrinsics: Tensor | None = None
    distortion: Tensor | None = None

    @classmethod
    def of(cls, cameras: Cameras) -> TrainingPixels:
        distortion = distortion_of(cameras)
        if distortion is None:
            return cls((int(cameras.height[0]), int(cameras.width[0])))
        intrinsics = torch.cat([cameras.fx, cameras.fy, cameras.cx, cameras.cy], dim=-1).float().cpu()
        return cls((int(cameras.height[0]), int(cameras.width[0])), intrinsics, distortion)

    def positions(self, indices: Tensor) -> tuple[Tensor, Tensor]:
        """Rows and columns ``[N]`` (continuous, pixel centres at +0.5, full resolution) in the undistorted image
        of the rays' pixels ``indices [N, 3]`` (camera, row, column)."""
        row, col = indices[:, 1].float() + 0.5, indices[:, 2].float() + 0.5
        if self.distortion is None:
            return row, col
        cam = indices[:, 0].long().cpu()
        intrinsics = self.intrinsics[cam].to(row)
        rays = undistorted_rays(torch.stack([col, row], dim=-1), intrinsics, self.distortion[cam])
        fx, fy, cx, cy = intrinsics.unbind(-1)
        return rays[:, 1] * fy + cy, rays[:, 0] * fx + cx


def distortion_of(cameras: Cameras) -> Tensor | None:
    """``[V, 6]`` distortion of pinhole ``cameras`` (None when all are zero); other camera models are refused."""
    if (cameras.camera_type != CameraType.PERSPECTIVE.value).any():
        raise Vision3DError("helixsurf: MVS needs pinhole cameras (camera_model OPENCV or PINHOLE); undistort "
                            "fisheye or equirectangular images first (COLMAP's image_undistorter)")
    params = cameras.distortion_params
    if params is None or not bool((params != 0).any()):
        return None
    params = params.float().cpu().reshape(len(cameras), 6)
    if bool((params[:, 3] != 0).any()):
        raise Vision3DError("helixsurf: distortion coefficient k4 is not supported (OpenCV's model has k1 k2 k3 p1 p2)")
    return params


@dataclass
class MVSTargets:
    """Per view at MVS resolution: z-``depth [V, h, w]``, world ``normal [V, h, w, 3]``, ``confidence [V, h, w]``
    and ``mask [V, h, w]`` (kept by the geometric filter); the fused cloud ``points [N, 3]`` with its
    ``point_confidence [N]``."""

    depth: Tensor
    normal: Tensor
    confidence: Tensor
    mask: Tensor
    points: Tensor
    point_confidence: Tensor

    def lookup(self, indices: Tensor, pixels: TrainingPixels) -> dict[str, Tensor]:
        """Targets of training rays ``indices [N, 3]`` (camera, row, column at full resolution)."""
        return lookup_pixels(indices, pixels, self.depth.shape[1:],
                             depth=self.depth, normal=self.normal, confidence=self.confidence, mask=self.mask)


def lookup_pixels(indices: Tensor, pixels: TrainingPixels, size: tuple[int, int], **maps: Tensor) -> dict[str, Tensor]:
    """Per-view maps ``[V, h, w, ...]`` read at the low-resolution pixel holding each full-resolution ray. Boolean
    maps (masks) read False for rays outside the views (a barrel lens sees past the corners of its pinhole view)."""
    cam = indices[:, 0].long()
    row, col = pixels.positions(indices)
    h, w = size
    r, c = (row * h / pixels.size[0]).floor().long(), (col * w / pixels.size[1]).floor().long()
    inside = (r >= 0) & (r < h) & (c >= 0) & (c < w)
    r, c = r.clamp(0, h - 1), c.clamp(0, w - 1)
    out = {name: value[cam.to(value.device), r.to(value.device), c.to(value.device)] for name, value in maps.items()}
    return {name: value & inside.to(value.device) if value.dtype == torch.bool else value for name, value in out.items()}


def mvs_views(images: list[Tensor], cameras: Cameras, max_side: int) -> MVSViews:
    """Resize ``images`` (each ``[H, W, C]`` float in [0, 1]) and ``cameras`` so the long side is ≤ ``max_side``,
    undistorting the images first when the cameras have distortion (the views are pinhole, with the same K)."""
    height, width = int(cameras.height[0]), int(cameras.width[0])
    sizes = sorted({(int(w), int(h)) for h, w in zip(cameras.height, cameras.width, strict=True)})
    if len(sizes) > 1:
        raise SceneError(f"helixsurf: MVS needs all training images the same size, got {' and '.join(f'{w}x{h}' for w, h in sizes)}")
    cameras = cameras.to("cpu")
    pinhole = without_lens(cameras)
    valid = None
    if distortion_of(cameras) is not None:  # undistorted onto the cameras' own K: the views are those pinhole cameras
        pairs = [resample_to_undistorted(img[..., :3].float(), cameras[v], pinhole[v], cv2.INTER_LINEAR)
                 for v, img in enumerate(images)]
        images = [image for image, _ in pairs]
        valid = torch.stack([inside for _, inside in pairs]).float()[:, None]
    scale = min(1.0, max_side / max(height, width))
    small = copy.deepcopy(pinhole)
    small.rescale_output_resolution(scale)
    h, w = int(small.height[0]), int(small.width[0])
    stack = torch.stack([img[..., :3].float() for img in images]).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(stack, size=(h, w), mode="area").permute(0, 2, 3, 1).contiguous()
    if valid is not None:  # an MVS pixel is valid when all of its source pixels are
        valid = torch.nn.functional.interpolate(valid, size=(h, w), mode="area")[:, 0] > 0.999
    K = small.get_intrinsics_matrices().float()  # noqa: N806
    c2w = torch.eye(4).repeat(len(small), 1, 1)
    c2w[:, :3, :] = small.camera_to_worlds.float()
    return MVSViews(resized.clamp(0, 1), K, opengl_to_opencv(c2w), small, valid)


def depth_ranges(c2w: Tensor, aabb: Tensor, min_fraction: float = 0.02) -> Tensor:
    """``[V, 2]`` z-depth ranges: up to the farthest scene-box corner in front of each camera (OpenCV ``c2w``)."""
    corners = torch.stack(torch.meshgrid(*[aabb[:, i] for i in range(3)], indexing="ij"), dim=-1).reshape(-1, 3)
    z = (corners[None] - c2w[:, None, :3, 3]) @ c2w[:, :3, 2][:, :, None]  # [V, 8, 1]
    far = z[..., 0].amax(dim=1).clamp_min(1e-3)
    return torch.stack([far * min_fraction, far], dim=-1)


def pixel_ray_norms(K: Tensor, h: int, w: int) -> Tensor:  # noqa: N803
    """``[V, h, w]`` length of each pixel-centre ray with unit z: ray distance / it = z-depth."""
    pixels = pixel_grid(h, w, dtype=K.dtype).reshape(1, -1, 2).expand(len(K), -1, -1)
    xy = normalize_pixels(pixels, K)
    return torch.sqrt((xy * xy).sum(dim=-1) + 1.0).view(len(K), h, w)


@dataclass
class SDFRenders:
    """The SDF rendered at MVS resolution: z-``depth [V, h, w]``, world ``normal [V, h, w, 3]``, ``accumulation [V, h, w]``."""

    depth: Tensor
    normal: Tensor
    accumulation: Tensor


@torch.no_grad()
def render_sdf_views(model, views: MVSViews) -> SDFRenders:  # noqa: ANN001
    """Render every view's expected depth, normals and opacity with ``model`` (a :class:`HelixSurfModel`)."""
    depth, normal, acc = [], [], []
    norms = pixel_ray_norms(views.K, *views.images.shape[1:3])
    for i in range(len(views.cameras)):
        out = model.get_outputs_for_camera(views.cameras[i : i + 1].to(model.device))
        depth.append(out["depth"][..., 0].cpu() / norms[i])
        normal.append(torch.nn.functional.normalize(out["normals_world"].cpu(), dim=-1))
        acc.append(out["accumulation"][..., 0].cpu())
    return SDFRenders(torch.stack(depth), torch.stack(normal), torch.stack(acc))


def seeds_from_renders(renders: SDFRenders, c2w: Tensor, min_accumulation: float) -> list[Seed]:
    """PatchMatch seeds: rendered z-depth and camera-frame normals where the SDF's opacity is high enough."""
    normal_cam = torch.einsum("vji,vhwj->vhwi", c2w[:, :3, :3], renders.normal)
    mask = (renders.accumulation >= min_accumulation) & (renders.depth > 0)
    return [Seed(renders.depth[v], normal_cam[v], mask[v]) for v in range(renders.depth.shape[0])]


def mvs_pass(views: MVSViews, aabb: Tensor, cfg: MVSConfig, seeds: list[Seed] | None = None) -> MVSTargets:
    """One MVS pass over all views; returns the geometrically consistent depths, normals and confidences."""
    ranges = depth_ranges(views.c2w.double(), aabb.double().cpu())
    result = run_mvs(views.images, views.K, views.c2w, ranges, cfg, seeds=seeds)
    mask = result.consistency.mask if views.valid is None else result.consistency.mask & views.valid.to(result.depth.device)
    normal_world = torch.einsum("vij,vhwj->vhwi", views.c2w[:, :3, :3].to(result.normal), result.normal)
    depth = torch.where(mask, result.depth, torch.zeros_like(result.depth))
    return MVSTargets(depth.float(), normal_world.float(), result.confidence.float(), mask,
                      result.consistency.points[mask].float(), result.confidence[mask].float())

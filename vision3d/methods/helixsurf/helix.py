"""The helix: PatchMatch MVS over the training views, seeded from the SDF's renders, turned into SDF targets.

One pass (:func:`mvs_pass`) takes the training images at MVS resolution (the long side at most
``max_side`` px; nerfstudio's ``rescale_output_resolution`` of the cameras, so K and the rendered views
agree), runs :func:`vision3d.mvs.run_mvs` (random hypotheses on the first pass; from the second on,
seeded with the SDF's rendered z-depth and normals where its opacity is ≥ ``seed_min_accumulation``) and
keeps what the geometric filter keeps. Targets live at MVS resolution and are looked up per training ray
by its pixel. Each view's depth range is the z extent of the scene box in front of it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from nerfstudio.cameras.cameras import Cameras
from torch import Tensor

from vision3d.geometry.camera import normalize_pixels, pixel_grid
from vision3d.geometry.se3 import opengl_to_opencv
from vision3d.mvs import MVSConfig, Seed, run_mvs


@dataclass
class MVSViews:
    """Training views at MVS resolution: ``images [V, h, w, 3]`` in [0, 1], ``K [V, 3, 3]`` (pixel centres at
    +0.5), ``c2w [V, 4, 4]`` camera-to-world in OpenCV axes, ``cameras`` (nerfstudio, rescaled)."""

    images: Tensor
    K: Tensor  # noqa: N815
    c2w: Tensor
    cameras: Cameras


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

    def lookup(self, indices: Tensor, full_size: tuple[int, int]) -> dict[str, Tensor]:
        """Targets of training rays ``indices [N, 3]`` (camera, row, column at full resolution ``(H, W)``)."""
        return lookup_pixels(indices, full_size, self.depth.shape[1:],
                             depth=self.depth, normal=self.normal, confidence=self.confidence, mask=self.mask)


def lookup_pixels(indices: Tensor, full_size: tuple[int, int], size: tuple[int, int], **maps: Tensor) -> dict[str, Tensor]:
    """Per-view maps ``[V, h, w, ...]`` read at the low-resolution pixel holding each full-resolution ray."""
    cam, row, col = (indices[:, i].long() for i in range(3))
    h, w = size
    r = ((row.float() + 0.5) * h / full_size[0]).long().clamp(0, h - 1)
    c = ((col.float() + 0.5) * w / full_size[1]).long().clamp(0, w - 1)
    return {name: value[cam.to(value.device), r.to(value.device), c.to(value.device)] for name, value in maps.items()}


def mvs_views(images: list[Tensor], cameras: Cameras, max_side: int) -> MVSViews:
    """Resize ``images`` (each ``[H, W, C]`` float in [0, 1]) and ``cameras`` so the long side is ≤ ``max_side``."""
    height, width = int(cameras.height[0]), int(cameras.width[0])
    if any(int(h) != height or int(w) != width for h, w in zip(cameras.height, cameras.width, strict=True)):
        raise ValueError("helixsurf: MVS needs all training images the same size")
    scale = min(1.0, max_side / max(height, width))
    small = cameras.to("cpu")
    small = Cameras(camera_to_worlds=small.camera_to_worlds.clone(), fx=small.fx.clone(), fy=small.fy.clone(),
                    cx=small.cx.clone(), cy=small.cy.clone(), width=small.width.clone(), height=small.height.clone(),
                    camera_type=small.camera_type.clone())
    small.rescale_output_resolution(scale)
    h, w = int(small.height[0]), int(small.width[0])
    stack = torch.stack([img[..., :3].float() for img in images]).permute(0, 3, 1, 2)
    resized = torch.nn.functional.interpolate(stack, size=(h, w), mode="area").permute(0, 2, 3, 1).contiguous()
    K = small.get_intrinsics_matrices().float()  # noqa: N806
    c2w = torch.eye(4).repeat(len(small), 1, 1)
    c2w[:, :3, :] = small.camera_to_worlds.float()
    return MVSViews(resized.clamp(0, 1), K, opengl_to_opencv(c2w), small)


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
    mask = result.consistency.mask
    normal_world = torch.einsum("vij,vhwj->vhwi", views.c2w[:, :3, :3].to(result.normal), result.normal)
    depth = torch.where(mask, result.depth, torch.zeros_like(result.depth))
    return MVSTargets(depth.float(), normal_world.float(), result.confidence.float(), mask,
                      result.consistency.points[mask].float(), result.confidence[mask].float())

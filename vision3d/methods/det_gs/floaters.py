"""Sky floaters: Gaussians that training views see on the depth prior's far background, nearer than the scene.

On 360° captures, Gaussians that render training views' sky gather on the camera orbit and fill held-out
views (docs/det-gs.md); L_depth cannot see one that covers a whole patch. A depth prior's far end (a
monocular network's sky) is farther than every surface its view sees; a Gaussian that most training views
seeing it see there, nearer than their far surfaces, contradicts the prior (DET-GS is silent; SparseGS
prunes floaters by another criterion). Decisions (``SkyFloaterConfig``):

- **Far pixels** of a view: prior disparity within ``far_fraction`` of the view's disparity range (2nd to
  98th percentile) above its 2nd percentile. Relative to the prior's own range: any affine disparity prior
  works. Both the far and the other (surface) pixels are eroded by ``erode_px``: the prior blurs a
  silhouette against the sky, and neither side of that band is trusted.
- **Nearer than the scene**: the Gaussian's z-depth below the ``surface_quantile`` of the view's rendered
  expected depth over its surface pixels covered by the render. Only ratios of one view's depths enter, so the
  criterion has no length: a scene in other units or placement finds the same Gaussians.
- **Half of the views that see it; all of them with few views** (``min_share=0.5``; ``unanimous_below=9``):
  with sparse views a candidate is seen by one to three training views, and a dissenting view is evidence: at
  8 views on dragon-360 split votes pushed far ground (below the cameras, 0.7-1.0 of the surface depth) and
  raised AbsRel in nerfstudio's frame. At 24 views an orbit floater is on the sky in 73-78 % of its
  sightings, so all views agreeing lets it back, and a strict majority (0.6) cost dragon-360 0.2 dB against
  half (docs/det-gs.md). From 8 views (``min_train_views``): at 3 views far ground rendered too near falls on
  the far pixels of views that do not triangulate it, and was pushed away with the sky.
- **Push, not prune** (``action``): these Gaussians render the sky of training views, and held-out views
  need that sky too; removed, it was empty there (dragon-360, 24 views: −0.3 to −0.9 dB per seed). Pushed out from the cameras' centre onto the background sphere, scaled alike, a
  Gaussian keeps its direction and angular size as seen from that centre, at a distance where the sky has
  little parallax, and the photometric loss refines it from there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

from vision3d.geometry.camera import project_points
from vision3d.geometry.se3 import transform_points


@dataclass
class SkyFloaterConfig:
    """When and how det-gs pushes away (or prunes) sky floaters (see the module docstring)."""

    enabled: bool = True
    """look for them at densification's cadence, from its warm-up to the end of training."""
    min_train_views: int = 8
    """only with at least this many training views (see the module docstring)."""
    action: Literal["push", "prune"] = "push"
    """'push': move each out from the cameras' centre onto the background sphere (the splat model's
    ``background_radius``), its size scaled alike; 'prune': remove it (see the module docstring)."""
    far_fraction: float = 0.15
    """a pixel is far when its prior disparity is within this fraction of the view's disparity range of the lowest."""
    erode_px: int = 2
    """far and surface pixels within this many pixels of each other are neither (the prior's blur at silhouettes)."""
    surface_quantile: float = 0.98
    """'nearer than the scene': below this quantile (a robust maximum) of the view's rendered depth on its surfaces."""
    min_share: float = 0.5
    """treated when at least this share of the training views that see the Gaussian's centre see it as a sky floater
    (from ``unanimous_below`` training views on)."""
    unanimous_below: int = 9
    """with fewer training views than this, every view that sees the Gaussian must agree (the share is 1)."""

    def share(self, num_train_views: int) -> float:
        """The share of the views seeing a Gaussian that must see it as a sky floater, given the training set's size."""
        return 1.0 if num_train_views < self.unanimous_below else self.min_share


@dataclass
class ViewRecord:
    """What the pruning needs of one training view, kept from its last training step."""

    viewmat: torch.Tensor  # [4, 4] world-to-camera, OpenCV axes
    K: torch.Tensor  # [3, 3] intrinsics at the render's size
    far: torch.Tensor  # [H, W] bool, far pixels of the prior, eroded by erode_px
    surface_depth: float  # the surface_quantile of the rendered depth over non-far covered pixels (world units)


def far_pixels(prior: torch.Tensor, kind: str, valid: torch.Tensor, far_fraction: float) -> torch.Tensor:
    """The prior's far background [H, W] bool, not eroded (see the module docstring). prior, valid: [H, W]."""
    valid = valid.bool()
    if valid.sum() < 2:
        return torch.zeros_like(valid)
    prior = prior.float()
    disparity = prior if kind == "disparity" else 1.0 / torch.where(valid, prior, torch.ones_like(prior)).clamp_min(1e-12)
    lo, hi = torch.quantile(disparity[valid], torch.tensor([0.02, 0.98], device=prior.device)).tolist()
    return valid & (disparity <= lo + far_fraction * max(hi - lo, 1e-12))


def erode(mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """[H, W] bool: pixels of ``mask`` whose (2·pixels+1)² square lies in ``mask`` (outside the image counts as in)."""
    if pixels <= 0:
        return mask
    size = 2 * pixels + 1
    return -F.max_pool2d(-mask[None, None].float(), size, stride=1, padding=pixels)[0, 0] > 0.5


def surface_depth(depth: torch.Tensor, accumulation: torch.Tensor, surface: torch.Tensor, quantile: float) -> float | None:
    """The ``quantile`` of rendered depth [H, W] over the ``surface`` [H, W] pixels covered with accumulation >= 0.5
    (world units; None when fewer than two)."""
    chosen = surface.bool() & (accumulation.detach() >= 0.5) & torch.isfinite(depth.detach()) & (depth.detach() > 0)
    if chosen.sum() < 2:
        return None
    return float(torch.quantile(depth.detach()[chosen].float(), quantile))


def view_masks(prior: torch.Tensor, kind: str, valid: torch.Tensor, config: SkyFloaterConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """A training view's (far, surface) pixels [H, W] bool, both eroded, from its prior [H, W] (``kind``, ``valid``);
    they do not change during training."""
    valid = valid.bool()
    far = far_pixels(prior, kind, valid, config.far_fraction)
    return erode(far, config.erode_px), erode(valid & ~far, config.erode_px)


def view_record(viewmat: torch.Tensor, K: torch.Tensor, masks: tuple[torch.Tensor, torch.Tensor], depth: torch.Tensor,
                accumulation: torch.Tensor, config: SkyFloaterConfig) -> ViewRecord | None:
    """One training view's :class:`ViewRecord` from its :func:`view_masks` and its rendered expected depth and
    accumulation [H, W] (None when it shows too few surface pixels)."""
    far, surface = masks
    level = surface_depth(depth, accumulation, surface, config.surface_quantile)
    return None if level is None else ViewRecord(viewmat, K, far, level)


def sky_floaters(means: torch.Tensor, views: list[ViewRecord], min_share: float) -> torch.Tensor:
    """[N] bool: Gaussians (centres ``means`` [N, 3], world units) seen as sky floaters by at least ``min_share``
    of the views (:class:`ViewRecord`) whose image contains their centre in front of the camera."""
    seen = torch.zeros(means.shape[0], device=means.device)
    floating = torch.zeros_like(seen)
    with torch.no_grad():
        for view in views:
            pixels, z = project_points(transform_points(view.viewmat.to(means), means)[None], view.K.to(means)[None])
            pixels, z = pixels[0], z[0]
            u, v = torch.floor(pixels[:, 0]).long(), torch.floor(pixels[:, 1]).long()
            height, width = view.far.shape
            inside = (z > 0) & (u >= 0) & (u < width) & (v >= 0) & (v < height)
            on_far = torch.zeros_like(inside)
            on_far[inside] = view.far.to(means.device)[v[inside], u[inside]]
            seen += inside.float()
            floating += (on_far & (z < view.surface_depth)).float()
    return (seen > 0) & (floating >= min_share * seen)


def push_to_background(means: torch.Tensor, log_scales: torch.Tensor, centre: torch.Tensor,
                       radius: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Move Gaussians ``means`` [M, 3] nearer than ``radius`` to ``centre`` [3] out along the ray from the centre onto
    the sphere of that radius, adding the log of the same factor to their ``log_scales`` [M, 3] (world units)."""
    offset = means - centre
    distance = offset.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    factor = (radius / distance).clamp_min(1.0)
    return centre + offset * factor, log_scales + torch.log(factor)

"""Initial scene codes C ``[K, D]`` from the real images: k-means of per-token descriptors.

The paper fills C from VGG19 features of the real images. VGG19's weights cannot be downloaded here, so by
default (``init="patch-kmeans"``) a token's descriptor is its image cell's pixels, projected to D
dimensions by PCA over all cells of all images; C is the k-means centres of those descriptors (a code per
recurring appearance, the role VGG features play in the paper). This is a deviation from the paper. A
user who has torchvision's VGG19 ``state_dict`` on disk passes it as ``vgg19_weights``: descriptors are
then VGG19 ``relu3_4`` features pooled to the token grid, projected by PCA to D, and clustered the same way.
``init="random"`` keeps the N(0, 0.1²) codes.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor

from vision3d.errors import Vision3DError


def token_descriptors(images: Tensor, tokens: int, vgg19_weights: Path | None = None) -> Tensor:
    """Descriptors ``[B·h·w, C]`` of the ``tokens × tokens`` cells of images ``[B, 3, H, W]`` in [0, 1]."""
    if vgg19_weights is None:
        cell = images.shape[-1] // tokens
        return F.unfold(images, kernel_size=cell, stride=cell).transpose(1, 2).reshape(-1, 3 * cell * cell)
    import torchvision

    path = Path(vgg19_weights)
    if not path.is_file():
        raise Vision3DError(f"{path}: VGG19 weights file not found (codebook_vgg19_weights)")
    vgg = torchvision.models.vgg19(weights=None)
    try:
        vgg.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    except (RuntimeError, KeyError) as err:
        raise Vision3DError(f"{path}: not a torchvision VGG19 state_dict ({str(err).splitlines()[0]})") from err
    mean = torch.tensor([0.485, 0.456, 0.406])[:, None, None]
    std = torch.tensor([0.229, 0.224, 0.225])[:, None, None]
    with torch.no_grad():
        feats = vgg.features[:18].eval()((F.interpolate(images.cpu(), size=224, mode="bilinear") - mean) / std)
        feats = F.adaptive_avg_pool2d(feats, tokens)
    return feats.permute(0, 2, 3, 1).reshape(-1, feats.shape[1])


def kmeans(x: Tensor, k: int, iterations: int = 25, generator: torch.Generator | None = None) -> Tensor:
    """Lloyd's k-means: centres ``[k, C]`` of ``x [N, C]`` (k-means++ seeding; empty clusters re-seeded)."""
    n = x.shape[0]
    centres = x[torch.randint(n, (1,), generator=generator)]
    for _ in range(1, k):  # k-means++
        d2 = torch.cdist(x, centres).pow(2).amin(dim=1)
        probs = d2 / d2.sum() if d2.sum() > 0 else torch.full_like(d2, 1.0 / n)
        centres = torch.cat([centres, x[torch.multinomial(probs, 1, generator=generator)]])
    for _ in range(iterations):
        assign = torch.cdist(x, centres).argmin(dim=1)
        counts = torch.bincount(assign, minlength=k)
        sums = torch.zeros_like(centres).index_add_(0, assign, x)
        empty = counts == 0
        centres = torch.where(empty[:, None], x[torch.randint(n, (k,), generator=generator)], sums / counts.clamp_min(1)[:, None])
    return centres


def initial_codes(images: Tensor, n_codes: int, code_dim: int, tokens: int, vgg19_weights: Path | None = None,
                  seed: int = 0) -> Tensor:
    """C ``[n_codes, code_dim]``: k-means centres of PCA-projected token descriptors, scaled to unit RMS."""
    x = token_descriptors(images.detach().float().cpu(), tokens, vgg19_weights)
    x = x - x.mean(dim=0)
    q = min(code_dim, *x.shape)
    _, _, v = torch.pca_lowrank(x, q=q, center=False)
    z = x @ v[:, :q]
    if q < code_dim:
        z = F.pad(z, (0, code_dim - q))
    generator = torch.Generator().manual_seed(seed)
    if z.shape[0] < n_codes:  # fewer cells than codes: resample cells with a little noise
        z = z[torch.randint(z.shape[0], (n_codes,), generator=generator)]
        z = z + 1e-3 * z.std() * torch.randn(z.shape, generator=generator)
    centres = kmeans(z, n_codes, generator=generator)
    return centres / centres.pow(2).mean().sqrt().clamp_min(1e-9)

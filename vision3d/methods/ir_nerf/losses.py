"""IR-NeRF's losses, in one place: adversarial (GNeRF), pose regression of P, codebook L_rec and L_c,
photometric refinement and GNeRF's pose-consistency regulariser.

The GAN uses the non-saturating logistic loss with an R1 penalty on real patches (GNeRF's choice of
loss is its ``gan_loss``; R1 keeps a CPU-sized discriminator from overpowering the field early).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from vision3d.methods.ir_nerf.networks import SceneCodebook


def discriminator_loss(real_logits: Tensor, fake_logits: Tensor) -> Tensor:
    """Non-saturating logistic loss of D: real ``[B]`` → 1, fake ``[B]`` → 0."""
    return F.softplus(-real_logits).mean() + F.softplus(fake_logits).mean()


def generator_loss(fake_logits: Tensor) -> Tensor:
    """Non-saturating loss of the field (generator): make D call its patches real."""
    return F.softplus(-fake_logits).mean()


def r1_penalty(real_logits: Tensor, real_patches: Tensor) -> Tensor:
    """Mesheder et al.'s R1: mean squared gradient norm of D at real patches (needs ``requires_grad``)."""
    (grad,) = torch.autograd.grad(real_logits.sum(), real_patches, create_graph=True)
    return grad.pow(2).flatten(1).sum(1).mean()


def pose_regression_loss(predicted: Tensor, target: Tensor, position_weight: float = 1.0) -> Tensor:
    """MSE of P's 9D output against the poses ``[B, 9]`` the images were rendered at (GNeRF's inversion loss)."""
    return F.mse_loss(predicted[:, :6], target[:, :6]) + position_weight * F.mse_loss(predicted[:, 6:], target[:, 6:])


def reconstruction_loss(codebook: SceneCodebook, images: Tensor) -> Tensor:
    """L_rec = ‖I − G(Σ softmax(E_I(I))_n c_n)‖² on real images ``[B, 3, H, W]`` (trains E_I, C, G)."""
    return F.mse_loss(codebook.reconstruct(images), images)


def pose_consistency_loss(codebook: SceneCodebook, poses: Tensor, images: Tensor, reduce: bool = True) -> Tensor:
    """L_c = mean ‖I' − Î‖²: the view rebuilt from the pose, I' = G(Σ softmax(E_P(pose))_n c_n) with G frozen,
    against the codebook's reconstruction Î of the real image (held fixed). Gradients reach E_P and ``poses``
    (so P, when they are its output). ``reduce=False`` returns one value per image ``[B]``."""
    with torch.no_grad():
        target = codebook.reconstruct(images)
    per_image = (codebook.reconstruct_from_pose(poses) - target).pow(2).flatten(1).mean(1)
    return per_image.mean() if reduce else per_image


def photometric_loss(rendered: Tensor, target: Tensor) -> Tensor:
    """MSE between rendered and real colours ``[..., 3]``."""
    return F.mse_loss(rendered, target)

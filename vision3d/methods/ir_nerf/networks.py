"""The networks of IR-NeRF besides the field: patch discriminator, pose estimator P, scene codebook.

Decisions (the paper leaves the architectures open; sizes are config fields):
- P is a small CNN (conv stride-2 blocks, global pooling, a linear head to 9 numbers: 6D rotation and camera
  centre), not GNeRF's ViT: a CNN of this size trains in minutes on a CPU;
- the discriminator is a PatchGAN-style conv net on (patch, patch scale) with spectral normalisation;
- the codebook works on a grid of tokens: E_I maps an image to logits ``[K, h, w]``, the features are
  ``f = Σ_n softmax(logits)_n c_n`` per token, G decodes ``[D, h, w]`` back to the image; E_P maps a 9D pose
  to the same ``[K, h, w]`` logits. C is ``[K, D]``.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from vision3d.errors import ConfigError


def _conv_block(c_in: int, c_out: int, stride: int = 2, norm: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(c_in, c_out, 3, stride, 1)]
    if norm:
        layers.append(nn.GroupNorm(min(8, c_out), c_out))
    return layers + [nn.LeakyReLU(0.2)]


class PatchDiscriminator(nn.Module):
    """Realness logits ``[B]`` of patches ``[B, 3, S, S]`` in [0, 1] with their scales ``[B]`` (GNeRF's D)."""

    def __init__(self, width: int = 32, n_blocks: int = 3, spectral: bool = True) -> None:
        super().__init__()
        norm = spectral_norm if spectral else (lambda layer: layer)
        layers: list[nn.Module] = []
        c = 4
        for i in range(n_blocks):
            layers += [norm(nn.Conv2d(c, width * 2**i, 4, 2, 1)), nn.LeakyReLU(0.2)]
            c = width * 2**i
        layers.append(norm(nn.Conv2d(c, 1, 3, 1, 1)))
        self.net = nn.Sequential(*layers)

    def forward(self, patches: Tensor, scales: Tensor) -> Tensor:
        scale_plane = scales[:, None, None, None].expand(-1, 1, *patches.shape[-2:])
        return self.net(torch.cat([patches * 2 - 1, scale_plane], dim=1)).mean(dim=(1, 2, 3))


class PoseEstimator(nn.Module):
    """P: images ``[B, 3, H, W]`` in [0, 1] to poses ``[B, 9]`` (6D rotation, camera centre)."""

    def __init__(self, width: int = 32, n_blocks: int = 4, position_scale: float = 1.0) -> None:
        super().__init__()
        layers: list[nn.Module] = _conv_block(3, width, stride=1)
        c = width
        for i in range(n_blocks):
            layers += _conv_block(c, width * 2 ** min(i + 1, 3))
            c = width * 2 ** min(i + 1, 3)
        self.features = nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Sequential(nn.Linear(c, 128), nn.LeakyReLU(0.2), nn.Linear(128, 9))
        self.position_scale = position_scale
        with torch.no_grad():  # start at a valid rotation: rows e1, e2
            self.head[-1].bias.copy_(torch.tensor([1.0, 0, 0, 0, 1.0, 0, 0, 0, 0]))

    def forward(self, images: Tensor) -> Tensor:
        out = self.head(self.features(images * 2 - 1))
        return torch.cat([out[:, :6], out[:, 6:] * self.position_scale], dim=-1)


class SceneCodebook(nn.Module):
    """C ``[K, D]``, the image encoder E_I, the decoder G and the pose encoder E_P (see the module docstring)."""

    def __init__(self, image_size: int, n_codes: int = 256, code_dim: int = 64, tokens: int = 4, width: int = 32) -> None:
        super().__init__()
        if image_size % tokens != 0 or (image_size // tokens) & (image_size // tokens - 1):
            raise ConfigError(f"codebook: image_size {image_size} must be tokens ({tokens}) times a power of two")
        n_down = (image_size // tokens).bit_length() - 1
        self.tokens, self.n_codes = tokens, n_codes
        self.codes = nn.Parameter(torch.randn(n_codes, code_dim) * 0.1)
        enc: list[nn.Module] = _conv_block(3, width, stride=1)
        for _ in range(n_down):
            enc += _conv_block(width, width)
        self.image_encoder = nn.Sequential(*enc, nn.Conv2d(width, n_codes, 1))
        dec: list[nn.Module] = [nn.Conv2d(code_dim, width, 3, 1, 1), nn.LeakyReLU(0.2)]
        for _ in range(n_down):
            dec += [nn.Upsample(scale_factor=2, mode="nearest"), *_conv_block(width, width, stride=1)]
        self.decoder = nn.Sequential(*dec, nn.Conv2d(width, 3, 3, 1, 1), nn.Sigmoid())
        self.pose_encoder = nn.Sequential(nn.Linear(9, 256), nn.LeakyReLU(0.2), nn.Linear(256, 256), nn.LeakyReLU(0.2),
                                          nn.Linear(256, n_codes * tokens * tokens))

    def features(self, logits: Tensor) -> Tensor:
        """Code mixture ``[B, D, h, w]`` of token logits ``[B, K, h, w]`` (softmax over K)."""
        return torch.einsum("bkhw,kd->bdhw", logits.softmax(dim=1), self.codes)

    def reconstruct(self, images: Tensor) -> Tensor:
        """Î = G(Σ softmax(E_I(I))_n c_n): images ``[B, 3, H, W]`` rebuilt through the codebook."""
        return self.decoder(self.features(self.image_encoder(images * 2 - 1)))

    def pose_logits(self, poses: Tensor) -> Tensor:
        """E_P: poses ``[B, 9]`` to token logits ``[B, K, h, w]``."""
        return self.pose_encoder(poses).view(-1, self.n_codes, self.tokens, self.tokens)

    def reconstruct_from_pose(self, poses: Tensor) -> Tensor:
        """I' = G(Σ softmax(E_P(pose))_n c_n) ``[B, 3, H, W]``; gradients reach E_P and the pose, not G or C
        (G is frozen in the paper; C is held too, so L_c cannot move the scene's codes)."""
        weights = self.pose_logits(poses).softmax(dim=1)
        features = torch.einsum("bkhw,kd->bdhw", weights, self.codes.detach())
        return torch.func.functional_call(self.decoder, {k: v.detach() for k, v in self.decoder.named_parameters()}, (features,))

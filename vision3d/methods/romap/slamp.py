"""SLaMP (RoMaP Alg. 2): scheduled latent mixing, the edited anchor image of the regularized SDS.

On a rectified-flow model (our ``sd3`` / ``tiny-sd3`` guidance backends), with ``z_σ = σ ε + (1 − σ) z``:
1. controlled inversion of the render to depth ``start``: ``v = v_∅ + γ ((y₁ − z)/(1 − σ) − v_∅)``
   toward a fixed noise ``y₁``, keeping the trajectory ``z_src(σ)``;
2. denoising with the prompt, ``v = v̂ + η_i ((z − z_src(0))/σ − v̂)``, ``η_i = η`` for the first
   ``eta_fraction`` of the steps, then 0 (the structure is fixed early, the appearance late);
3. after each step the latents outside the 2D mask are mixed back, ``z ← z (1 − F(1−M)) + z_src F(1−M)``
   with ``F = alpha_base`` before the last ``t_s`` steps and ``alpha_last`` in them.
The paper publishes none of γ, η, α_base, α_last, t_s; ours (config fields) are documented there.
ε-prediction SD has no SLaMP here: give edited images per view instead (``target_dir``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from vision3d.errors import ConfigError

from .guidance import Guidance


@dataclass
class SlampConfig:
    steps: int = 20
    """denoising steps (each one inversion step and one denoising step)."""
    start: float = 0.8
    """inversion depth σ (0 = the render, 1 = pure noise)."""
    guidance_scale: float = 7.0
    """CFG scale while sampling (the SDS scale of 100 would oversaturate a sample)."""
    gamma: float = 0.5
    """γ: pull of the inversion toward the target noise (RoMaP's segmentation inversion uses 0.5)."""
    eta: float = 0.9
    """η: pull of the early denoising steps toward the source image's structure."""
    eta_fraction: float = 0.25
    """share of the denoising steps (the first ones) that use η."""
    alpha_base: float = 0.5
    """F before the last ``t_s`` steps: a soft mix outside the mask lets the boundary harmonise."""
    alpha_last: float = 1.0
    """F in the last ``t_s`` steps: 1 restores the source exactly outside the mask."""
    t_s: int = 4
    """the last steps that use ``alpha_last``."""


@torch.no_grad()
def slamp_image(
    guidance: Guidance,
    image: Tensor,  # [1, H, W, 3] in [0, 1]
    prompt: str,
    mask2d: Tensor,  # [1, H, W, 1] in [0, 1]
    config: SlampConfig,
    generator: torch.Generator | None = None,
) -> Tensor:  # [1, H, W, 3] in [0, 1], at the input's size
    """The SLaMP-edited image of ``image`` for ``prompt`` inside ``mask2d``."""
    z, _ = slamp_latents(guidance, image, prompt, mask2d, config, generator)
    out = guidance.decode_latents(z)
    return torch.nn.functional.interpolate(out.permute(0, 3, 1, 2), size=image.shape[1:3], mode="bilinear",
                                           align_corners=False).permute(0, 2, 3, 1).to(image.device)  # fmt: skip


@torch.no_grad()
def slamp_latents(
    guidance: Guidance, image: Tensor, prompt: str, mask2d: Tensor, config: SlampConfig,
    generator: torch.Generator | None = None,
) -> tuple[Tensor, Tensor]:  # edited and source latents [1, c, h, w]
    """The latent side of :func:`slamp_image`: the edited latents and the render's own."""
    if guidance.parts.kind != "sd3":
        raise ConfigError("SLaMP needs a rectified-flow guidance backend (sd3 or tiny-sd3); with sd, give target images")
    parts = guidance.parts
    z0 = guidance.encode_image(image.to(guidance.device))
    keep = 1 - guidance.latent_mask(mask2d.to(guidance.device), z0)  # 1 outside the mask
    cond, uncond = guidance.embed(prompt), guidance.embed(guidance.config.negative_prompt)
    sigmas = torch.linspace(0.0, config.start, config.steps + 1).tolist()
    y1 = torch.randn(z0.shape, generator=generator).to(z0)
    ts = lambda s: torch.full((z0.shape[0],), s * 1000.0, device=z0.device)  # noqa: E731
    z, trajectory = z0, [z0]
    for s, s_next in zip(sigmas[:-1], sigmas[1:], strict=True):
        v = parts.denoiser(z, ts(s), uncond)
        v = v + config.gamma * ((y1 - z) / (1 - s) - v)
        z = z + (s_next - s) * v
        trajectory.append(z)
    n_eta = round(config.eta_fraction * config.steps)
    for k, i in enumerate(range(config.steps, 0, -1)):
        s, s_prev = sigmas[i], sigmas[i - 1]
        v = guidance.cfg(z, ts(s), cond, uncond, config.guidance_scale)
        if k < n_eta:
            v = v + config.eta * ((z - z0) / s - v)
        z = z + (s_prev - s) * v
        f = config.alpha_last if i <= config.t_s else config.alpha_base
        z = z * (1 - f * keep) + trajectory[i - 1] * f * keep
    return z, z0

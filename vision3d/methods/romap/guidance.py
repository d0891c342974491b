"""Score-distillation guidance for RoMaP's edit: ``guidance(rgb, prompt, cameras, mask2d) -> (loss, t)``.

Two backends, both through diffusers and loaded only from a local folder (``local_files_only``):
- ``sd``: Stable Diffusion, ε-prediction SDS as threestudio (``w(t) = 1 − ᾱ_t``, CFG scale 100,
  ``loss = 0.5 ||z − sg(z − w (ε̂ − ε) M)||² / B``);
- ``sd3``: Stable Diffusion 3, RoMaP's rectified-flow SDS (RFDS-Rev): the noise is refined by one
  unconditional velocity step, ``ε' = ε + (1 − σ)(v_∅(z_σ) + z − ε)``, and
  ``loss = ||M ⊙ ((ε' − z) − sg(v̂))||² / 2B`` with ``v̂`` the CFG velocity at ``σ ε' + (1 − σ) z``.
``tiny-sd`` / ``tiny-sd3`` build the same two from small configs with random weights (tests, CI).
Decisions: the mask acts twice, in latent space (the paper's M2D) and in pixel space (the encoder
sees ``sg(rgb)`` outside the mask), so not one gradient reaches a pixel outside it through the VAE's
receptive field. Timesteps are annealed: ``t ~ U[t_min, t_max(step)]`` with ``t_max`` linear from
``t_max`` to ``t_max_end`` over ``anneal_steps`` (ProlificDreamer-style). ``cameras`` is accepted for
view-dependent prompting but not used: RoMaP edits with one prompt for all views.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

from vision3d.errors import CheckpointNotFoundError, ConfigError

BACKENDS = ("sd", "sd3", "tiny-sd", "tiny-sd3")


@dataclass
class GuidanceConfig:
    """Which diffusion model guides the edit and how. ``none`` trains the SLaMP / target-image L1 only."""

    backend: Literal["none", "sd", "sd3", "tiny-sd", "tiny-sd3"] = "none"
    model_path: Path | None = None
    """local diffusers folder (``model_index.json`` inside) of the ``sd`` / ``sd3`` backends."""
    guidance_scale: float = 100.0
    """classifier-free guidance scale (threestudio's SDS and RoMaP's RFDS use 100)."""
    t_min: float = 0.02
    """lower end of the timestep fraction (RoMaP's sd3 uses 0.3)."""
    t_max: float = 0.98
    """upper end of the timestep fraction at the first edit step."""
    t_max_end: float = 0.5
    """upper end after annealing (ours: halfway, so late steps refine instead of re-imagining)."""
    anneal_steps: int = 500
    """edit steps over which ``t_max`` goes linearly from ``t_max`` to ``t_max_end``."""
    resolution: int = 512
    """renders are resized to this square size before the VAE (SD and SD3 are trained at 512+)."""
    negative_prompt: str = ""
    seed: int = 0

    def setup(self, device: torch.device | str = "cpu") -> Guidance | None:
        if self.backend == "none":
            return None
        return Guidance(self, device)


def t_range(config: GuidanceConfig, step: int) -> tuple[float, float]:
    """``(t_min, t_max)`` of edit step ``step`` (0-based), with ``t_max`` annealed linearly."""
    frac = min(max(step, 0) / max(config.anneal_steps, 1), 1.0)
    return config.t_min, config.t_max + frac * (config.t_max_end - config.t_max)


class ByteTextEncoder(torch.nn.Module):
    """A tiny CLIP text encoder with random weights that tokenizes UTF-8 bytes (no vocabulary files)."""

    def __init__(self, hidden: int = 32, projection: int = 32, max_tokens: int = 16):
        super().__init__()
        from transformers import CLIPTextConfig, CLIPTextModelWithProjection

        self.max_tokens = max_tokens
        config = CLIPTextConfig(
            vocab_size=258, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=1,
            num_attention_heads=2, max_position_embeddings=max_tokens, projection_dim=projection,
            bos_token_id=256, eos_token_id=257, pad_token_id=0,
        )  # fmt: skip
        self.model = CLIPTextModelWithProjection(config)

    @torch.no_grad()
    def forward(self, prompt: str) -> tuple[Tensor, Tensor]:  # -> hidden [1, L, hidden], pooled [1, projection]
        ids = [256, *list(prompt.encode("utf-8"))[: self.max_tokens - 2], 257]
        ids = ids + [0] * (self.max_tokens - len(ids))
        out = self.model(input_ids=torch.tensor([ids], device=self.model.device))
        return out.last_hidden_state, out.text_embeds


def _tiny_vae(latent_channels: int):
    from diffusers import AutoencoderKL

    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=latent_channels, block_out_channels=(8, 16),
        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
        layers_per_block=1, norm_num_groups=4, sample_size=32,
    )  # fmt: skip


class DiffusionParts:
    """What a backend needs: ``vae``, ``denoiser(z, t, cond) -> ε or v``, ``scheduler``, ``encode(prompt)``."""

    def __init__(self, kind: str, vae, denoiser, scheduler, encode):
        self.kind, self.vae, self.denoiser, self.scheduler, self.encode = kind, vae, denoiser, scheduler, encode
        self.scaling = float(vae.config.scaling_factor)
        self.shift = float(getattr(vae.config, "shift_factor", None) or 0.0)


def tiny_parts(kind: Literal["sd", "sd3"], seed: int = 0) -> DiffusionParts:
    """A random-weight Stable Diffusion (UNet, DDPM) or SD3 (MMDiT, flow matching) built from small configs."""
    from diffusers import (
        DDPMScheduler,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        UNet2DConditionModel,
    )

    torch.manual_seed(seed)
    text = ByteTextEncoder().eval()
    if kind == "sd":
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=4, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
            down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
            cross_attention_dim=32, attention_head_dim=2, norm_num_groups=4,
        ).eval()  # fmt: skip
        denoise = lambda z, t, cond: unet(z, t, encoder_hidden_states=cond["hidden"]).sample  # noqa: E731
        encode = lambda prompt: {"hidden": text(prompt)[0]}  # noqa: E731
        return DiffusionParts("sd", _tiny_vae(4).eval(), _Denoiser(denoise, unet, text), DDPMScheduler(), encode)
    mmdit = SD3Transformer2DModel(
        sample_size=16, patch_size=2, in_channels=4, out_channels=4, num_layers=1, attention_head_dim=8,
        num_attention_heads=2, joint_attention_dim=32, caption_projection_dim=16, pooled_projection_dim=32,
    ).eval()  # fmt: skip

    def encode3(prompt):
        hidden, pooled = text(prompt)
        return {"hidden": hidden, "pooled": pooled}

    denoise3 = lambda z, t, cond: mmdit(  # noqa: E731
        hidden_states=z, timestep=t, encoder_hidden_states=cond["hidden"], pooled_projections=cond["pooled"]
    ).sample
    vae = _tiny_vae(4).eval()
    vae.config.shift_factor = 0.0
    return DiffusionParts("sd3", vae, _Denoiser(denoise3, mmdit, text), FlowMatchEulerDiscreteScheduler(), encode3)


class _Denoiser(torch.nn.Module):
    """Holds the networks (so ``.to(device)`` moves them) and calls ``fn(z, t, cond)``."""

    def __init__(self, fn, *modules):
        super().__init__()
        self.fn = fn
        self.nets = torch.nn.ModuleList(modules)

    def forward(self, z, t, cond):
        return self.fn(z, t, cond)


def load_parts(kind: Literal["sd", "sd3"], model_path: Path | None, device) -> DiffusionParts:
    """SD / SD3 from a local diffusers folder; a one-line error names what is missing and where it goes."""
    repo = {"sd": "stable-diffusion-v1-5/stable-diffusion-v1-5", "sd3": "stabilityai/stable-diffusion-3-medium-diffusers"}
    if model_path is None or not (Path(model_path) / "model_index.json").is_file():
        raise CheckpointNotFoundError(
            f"guidance backend '{kind}' needs the diffusers weights of {repo[kind]} on disk: "
            f"{'no --pipeline.model.guidance.model-path given' if model_path is None else f'{model_path}/model_index.json not found'}"
            f" (download the repo on a connected machine, e.g. `hf download {repo[kind]} --local-dir DIR`, copy DIR here"
            " and pass it as --pipeline.model.guidance.model-path DIR)"
        )
    dtype = torch.float16 if torch.device(device).type == "cuda" else torch.float32
    if kind == "sd":
        from diffusers import DDPMScheduler, StableDiffusionPipeline

        pipe = StableDiffusionPipeline.from_pretrained(model_path, local_files_only=True, torch_dtype=dtype,
                                                       safety_checker=None, requires_safety_checker=False)  # fmt: skip
        pipe.to(device)

        def encode(prompt):
            cond, _ = pipe.encode_prompt(prompt, device, 1, False)
            return {"hidden": cond}

        unet = pipe.unet
        denoise = lambda z, t, cond: unet(z, t, encoder_hidden_states=cond["hidden"]).sample  # noqa: E731
        scheduler = DDPMScheduler.from_pretrained(model_path, subfolder="scheduler", local_files_only=True)
        return DiffusionParts("sd", pipe.vae, _Denoiser(denoise, unet), scheduler, encode)
    from diffusers import StableDiffusion3Pipeline

    pipe = StableDiffusion3Pipeline.from_pretrained(model_path, local_files_only=True, torch_dtype=dtype)
    pipe.to(device)

    def encode3(prompt):
        cond, _, pooled, _ = pipe.encode_prompt(prompt, None, None, device=device, do_classifier_free_guidance=False)
        return {"hidden": cond, "pooled": pooled}

    mmdit = pipe.transformer
    denoise3 = lambda z, t, cond: mmdit(  # noqa: E731
        hidden_states=z, timestep=t, encoder_hidden_states=cond["hidden"], pooled_projections=cond["pooled"]
    ).sample
    return DiffusionParts("sd3", pipe.vae, _Denoiser(denoise3, mmdit), pipe.scheduler, encode3)


class Guidance:
    """Masked SDS from one backend; call it as ``(rgb [B, H, W, 3], prompt, cameras, mask2d [B, H, W, 1]) -> (loss, t)``.

    ``t`` is the timestep fraction in [0, 1] of each batch item, ``[B]``. Call :meth:`update_step`
    with the edit step to anneal the timestep range.
    """

    def __init__(self, config: GuidanceConfig, device: torch.device | str = "cpu", parts: DiffusionParts | None = None):
        if config.backend not in BACKENDS:
            raise ConfigError(f"guidance backend must be one of {BACKENDS}, got '{config.backend}'")
        self.config = config
        self.device = torch.device(device)
        kind = config.backend.removeprefix("tiny-")
        if parts is None:
            parts = tiny_parts(kind, config.seed) if config.backend.startswith("tiny-") else load_parts(kind, config.model_path, device)
        parts.vae.to(self.device)
        parts.denoiser.to(self.device)
        for p in [*parts.vae.parameters(), *parts.denoiser.parameters()]:
            p.requires_grad_(False)
        self.parts = parts
        self.dtype = next(parts.vae.parameters()).dtype
        self.generator = torch.Generator(device="cpu").manual_seed(config.seed)
        self.step = 0
        self._prompts: dict[str, dict[str, Tensor]] = {}

    def update_step(self, step: int) -> None:
        self.step = step

    def embed(self, prompt: str) -> dict[str, Tensor]:
        """Prompt embeddings, cached per prompt."""
        if prompt not in self._prompts:
            with torch.no_grad():
                self._prompts[prompt] = {k: v.to(self.device, self.dtype) for k, v in self.parts.encode(prompt).items()}
        return self._prompts[prompt]

    def encode_image(self, rgb: Tensor) -> Tensor:  # [B, H, W, 3] in [0, 1] -> latents [B, c, h, w]
        x = F.interpolate(rgb.permute(0, 3, 1, 2), size=(self.config.resolution,) * 2, mode="bilinear", align_corners=False)
        z = self.parts.vae.encode((x * 2 - 1).to(self.dtype)).latent_dist.mean
        return (z - self.parts.shift) * self.parts.scaling

    def decode_latents(self, z: Tensor) -> Tensor:  # [B, c, h, w] -> [B, H, W, 3] in [0, 1]
        x = self.parts.vae.decode(z / self.parts.scaling + self.parts.shift).sample
        return ((x.float() + 1) / 2).clamp(0, 1).permute(0, 2, 3, 1)

    def latent_mask(self, mask2d: Tensor, z: Tensor) -> Tensor:  # [B, H, W, 1] -> [B, 1, h, w]
        return F.interpolate(mask2d.permute(0, 3, 1, 2).float(), size=z.shape[-2:], mode="area").to(z.dtype)

    def cfg(self, z: Tensor, t: Tensor, cond: dict, uncond: dict, scale: float | None = None) -> Tensor:
        """Classifier-free guided prediction ``p_∅ + s (p_text − p_∅)`` in one batched call (s: config's)."""
        both = {k: torch.cat([uncond[k].expand(z.shape[0], *uncond[k].shape[1:]),
                              cond[k].expand(z.shape[0], *cond[k].shape[1:])]) for k in cond}  # fmt: skip
        pred_uncond, pred_text = self.parts.denoiser(torch.cat([z, z]), torch.cat([t, t]), both).chunk(2)
        scale = self.config.guidance_scale if scale is None else scale
        return pred_uncond + scale * (pred_text - pred_uncond)

    def __call__(self, rgb: Tensor, prompt: str, cameras=None, mask2d: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if rgb.dim() != 4 or rgb.shape[-1] != 3:
            raise ValueError(f"guidance expects rgb [B, H, W, 3], got {list(rgb.shape)}")
        mask2d = torch.ones_like(rgb[..., :1]) if mask2d is None else mask2d.to(rgb.dtype)
        x = rgb * mask2d + rgb.detach() * (1 - mask2d)  # no gradient outside the mask through the encoder
        z = self.encode_image(x)
        m = self.latent_mask(mask2d, z)
        lo, hi = t_range(self.config, self.step)
        b = z.shape[0]
        frac = lo + (hi - lo) * torch.rand(b, generator=self.generator)
        noise = torch.randn(z.shape, generator=self.generator).to(z.device, z.dtype)
        cond, uncond = self.embed(prompt), self.embed(self.config.negative_prompt)
        if self.parts.kind == "sd":
            n_train = self.parts.scheduler.config.num_train_timesteps
            t = (frac * (n_train - 1)).round().long().to(z.device)
            alphas = self.parts.scheduler.alphas_cumprod.to(z.device)
            with torch.no_grad():
                z_t = self.parts.scheduler.add_noise(z.detach(), noise, t)
                eps_hat = self.cfg(z_t, t, cond, uncond)
            w = (1 - alphas[t]).view(-1, 1, 1, 1).to(z.dtype)
            grad = torch.nan_to_num(w * (eps_hat - noise)) * m
            loss = 0.5 * F.mse_loss(z, (z - grad).detach(), reduction="sum") / b
        else:
            sigma = frac.to(z.device, z.dtype).view(-1, 1, 1, 1)
            t = frac.to(z.device)
            with torch.no_grad():
                z0 = z.detach()
                z_t = sigma * noise + (1 - sigma) * z0
                v_null = self.parts.denoiser(z_t, t * 1000, {k: v.expand(b, *v.shape[1:]) for k, v in uncond.items()})
                eps_ref = noise + (1 - sigma) * (v_null + z0 - noise)
                v_hat = self.cfg(sigma * eps_ref + (1 - sigma) * z0, t * 1000, cond, uncond)
            loss = 0.5 * (((eps_ref - z) - torch.nan_to_num(v_hat)) ** 2 * m).sum() / b
        return loss.float(), frac.to(rgb.device)

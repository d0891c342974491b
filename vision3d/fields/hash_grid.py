"""Multiresolution hash-grid encoding (Instant-NGP) with tiny-cuda-nn's maths and parameter layout.

One module, three backends chosen per call from the input's device (:mod:`vision3d.backends`):
tinycudann on CUDA when it is installed, the readable torch reference on CUDA without it, and Numba
kernels on CPU. All read the same flat ``params`` (tinycudann's layout, see
:mod:`~vision3d.fields.hash_grid_layout`), so a checkpoint moves between backends, and a nerfstudio
``tcnn`` field's encoding params load unchanged.

Decisions: ``per_level_scale`` defaults to Instant-NGP's NeRF value 1.4473 = 2^(8/15) (16 levels from
resolution 16 to 4096), not tinycudann's bare default of 2; nerfacto's field (16 → 2048) is
``per_level_scale_for(16, 2048, 16)`` ≈ 1.3819. Positions outside [0, 1]³ are clamped (the coordinates outside
get zero gradient) or refused, per ``out_of_bounds``; tinycudann itself would wrap them through the
hash. Training on CPU: ``grad_mode="inplace"`` lets the kernels add the table gradient straight into a
kept ``params.grad`` (zero it with ``zero_grad(set_to_none=False)``), and ``Adam(fused=True)`` steps the
table 4–8× faster than the default Adam on CPU (measurements in docs/fields.md).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any, Literal

import torch
from torch import Tensor

from vision3d.backends import use_tcnn
from vision3d.errors import CheckpointError
from vision3d.render.cpu_threads import torch_single_threaded

from .hash_grid_layout import HashGridLayout, compute_layout
from .hash_grid_reference import encode_reference

INSTANT_NGP_PER_LEVEL_SCALE = 1.447269237440378
"""2^(8/15): Instant-NGP's NeRF setting, 16 levels from resolution 16 to 4096."""


def per_level_scale_for(base_resolution: int, max_resolution: int, n_levels: int) -> float:
    """The growth b that takes ``base_resolution`` to ``max_resolution`` over ``n_levels`` (nerfstudio's rule)."""
    return math.exp((math.log(max_resolution) - math.log(base_resolution)) / max(n_levels - 1, 1))


@dataclass
class HashGridConfig:
    """Hash-grid hyper-parameters, tinycudann's ``HashGrid`` encoding fields.

    n_levels: resolution levels L. n_features_per_level: features F per level (output is L·F).
    log2_hashmap_size: log2 of the rows T per hashed level (T must be a power of two).
    base_resolution: coarsest level's resolution. per_level_scale: growth b of the resolution per level.
    out_of_bounds: ``"clamp"`` positions into [0, 1] or raise (``"error"``) on any outside.
    grad_mode: ``"autograd"`` returns the table gradient through autograd (works with
    ``torch.autograd.grad``); ``"inplace"`` (CPU kernels only) adds it straight into ``params.grad``,
    which saves allocating a ~50 MB gradient a step but is invisible to ``torch.autograd.grad`` and hooks.
    """

    n_levels: int = 16
    n_features_per_level: int = 2
    log2_hashmap_size: int = 19
    base_resolution: int = 16
    per_level_scale: float = INSTANT_NGP_PER_LEVEL_SCALE
    out_of_bounds: Literal["clamp", "error"] = "clamp"
    grad_mode: Literal["autograd", "inplace"] = "autograd"

    def __post_init__(self) -> None:
        if not float(self.log2_hashmap_size).is_integer() or not 3 <= self.log2_hashmap_size <= 30:
            raise ValueError(
                f"HashGridConfig: table size 2**{self.log2_hashmap_size} is not a power of two from 2**3 to 2**30"
            )
        self.log2_hashmap_size = int(self.log2_hashmap_size)
        if self.n_levels < 1 or self.n_features_per_level not in (1, 2, 4, 8) or self.base_resolution < 1:
            raise ValueError(
                f"HashGridConfig: need n_levels >= 1, n_features_per_level in 1/2/4/8 (tinycudann's), "
                f"base_resolution >= 1; got {self.n_levels}, {self.n_features_per_level}, {self.base_resolution}"
            )
        if self.out_of_bounds not in ("clamp", "error"):
            raise ValueError(f"HashGridConfig: out_of_bounds={self.out_of_bounds!r}, use 'clamp' or 'error'")
        if self.grad_mode not in ("autograd", "inplace"):
            raise ValueError(f"HashGridConfig: grad_mode={self.grad_mode!r}, use 'autograd' or 'inplace'")

    def layout(self) -> HashGridLayout:
        return compute_layout(
            self.n_levels, self.n_features_per_level, self.log2_hashmap_size, self.base_resolution, self.per_level_scale
        )

    def tcnn_encoding_config(self) -> dict[str, Any]:
        """The same encoding as a tinycudann ``encoding_config``."""
        return {
            "otype": "HashGrid",
            "n_levels": self.n_levels,
            "n_features_per_level": self.n_features_per_level,
            "log2_hashmap_size": self.log2_hashmap_size,
            "base_resolution": self.base_resolution,
            "per_level_scale": self.per_level_scale,
        }


def grid_config(
    n_levels: int,
    base_resolution: int,
    max_resolution: int,
    log2_hashmap_size: int,
    n_features_per_level: int = 2,
    grad_mode: Literal["autograd", "inplace"] = "autograd",
) -> HashGridConfig:
    """A :class:`HashGridConfig` whose levels span ``base_resolution`` to ``max_resolution`` (nerfacto's terms)."""
    return HashGridConfig(
        n_levels=n_levels,
        n_features_per_level=n_features_per_level,
        log2_hashmap_size=log2_hashmap_size,
        base_resolution=base_resolution,
        per_level_scale=per_level_scale_for(base_resolution, max_resolution, n_levels),
        grad_mode=grad_mode,
    )


# Fields that change which table row a position reads; a checkpoint must agree on all of them.
_GEOMETRY_FIELDS = ("n_levels", "n_features_per_level", "log2_hashmap_size", "base_resolution", "per_level_scale")


class HashGrid(torch.nn.Module):
    """Hash-grid encoding of positions x [N, 3] in [0, 1]³ into features [N, n_levels · F] (float32).

    ``params`` is the flat float32 table [n_params] in tinycudann's layout, initialised as tinycudann
    does (uniform in ±1e-4). The output is differentiable with respect to ``params`` and to ``x`` when
    ``x.requires_grad``. Column l·F + f holds feature f of level l (coarse to fine).
    """

    def __init__(self, config: HashGridConfig | None = None, **overrides: Any) -> None:
        super().__init__()
        self.config = replace(config or HashGridConfig(), **overrides)
        self.layout = self.config.layout()
        self.n_output_dims = self.config.n_levels * self.config.n_features_per_level
        self.params = torch.nn.Parameter(torch.empty(self.layout.n_params, dtype=torch.float32).uniform_(-1e-4, 1e-4))
        self._tcnn_encoding: list[Any] = []  # created on first CUDA call, kept out of the module tree

    def extra_repr(self) -> str:
        c = self.config
        return (
            f"levels={c.n_levels}, features={c.n_features_per_level}, table=2**{c.log2_hashmap_size}, "
            f"resolution {c.base_resolution}..{int(self.layout.resolutions[-1])}, params={self.layout.n_params}"
        )

    def forward(self, x: Tensor) -> Tensor:
        if x.device.type == "cpu":
            from .hash_grid_numba import encode_numba  # noqa: PLC0415  (compiles kernels on first use)

            with torch_single_threaded():  # small checks; keeps torch's spinning workers off the kernels' cores
                x = self._checked_positions(x)
            return encode_numba(x, self.params, self.layout, inplace_grad=self.config.grad_mode == "inplace")
        x = self._checked_positions(x)
        if x.device.type == "cuda" and use_tcnn(x):
            return self._forward_tcnn(x)
        return encode_reference(x, self.params, self.layout).float()

    def _checked_positions(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != 3:
            raise ValueError(f"HashGrid: positions must have shape [N, 3], got {list(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"HashGrid: positions must be floating point, got {x.dtype}")
        nan = torch.isnan(x).any(dim=1)
        if bool(nan.any()):
            first = int(nan.nonzero()[0, 0])
            raise ValueError(f"HashGrid: {int(nan.sum())} of {x.shape[0]} positions are NaN (first at row {first})")
        outside = (x < 0) | (x > 1)
        if not bool(outside.any()):
            return x
        if self.config.out_of_bounds == "clamp":
            # Only coordinates outside are replaced (zero gradient); those on the boundary keep theirs.
            return torch.where(outside, x.detach().clamp(0.0, 1.0), x)
        rows = outside.any(dim=1)
        first = int(rows.nonzero()[0, 0])
        raise ValueError(
            f"HashGrid: {int(rows.sum())} of {x.shape[0]} positions lie outside [0, 1]^3 "
            f"(first at row {first}: {x[first].tolist()}); out_of_bounds='error' refuses them"
        )

    def _forward_tcnn(self, x: Tensor) -> Tensor:
        if not self._tcnn_encoding:
            import tinycudann  # noqa: PLC0415  (only importable with a GPU)

            encoding = tinycudann.Encoding(3, self.config.tcnn_encoding_config(), dtype=torch.float32)
            if encoding.params.numel() != self.layout.n_params:
                raise RuntimeError(
                    f"HashGrid: tinycudann sizes this table at {encoding.params.numel()} params, our layout at "
                    f"{self.layout.n_params}; the two layouts disagree"
                )
            self._tcnn_encoding.append(encoding)
        encoding = self._tcnn_encoding[0]
        encoding.params = self.params  # the same Parameter: tinycudann reads and differentiates our table
        return encoding(x.contiguous()).float()

    def get_extra_state(self) -> dict[str, Any]:
        return {"hash_grid_config": {name: getattr(self.config, name) for name in _GEOMETRY_FIELDS}}

    def set_extra_state(self, state: dict[str, Any]) -> None:
        saved = state.get("hash_grid_config", {})
        differ = [
            f"{name} {saved[name]} vs {getattr(self.config, name)}"
            for name in _GEOMETRY_FIELDS
            if name in saved and saved[name] != getattr(self.config, name)
        ]
        if differ:
            raise CheckpointError(f"HashGrid checkpoint was saved with another config: {', '.join(differ)}")

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):  # noqa: ANN001
        extra = state_dict.get(prefix + "_extra_state")
        if extra is not None:
            self.set_extra_state(extra)
        params = state_dict.get(prefix + "params")
        if params is not None and params.shape != self.params.shape:
            raise CheckpointError(
                f"HashGrid checkpoint has {params.numel()} table params, this grid "
                f"({self.extra_repr()}) has {self.params.numel()}: the hash-grid configs differ"
            )
        super()._load_from_state_dict(
            state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs
        )


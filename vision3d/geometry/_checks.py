"""Argument checks shared by the geometry functions: one clear message naming the argument and its shape."""

from __future__ import annotations

import torch


def check_shape(name: str, tensor: torch.Tensor, *shape: int | str) -> None:
    """Raise ``ValueError`` unless ``tensor`` ends with ``shape``; ``"*"`` matches any size, a leading ``"..."``
    any batch dimensions (the default is exactly ``len(shape)`` dimensions)."""
    if not isinstance(tensor, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(tensor).__name__}")
    batched = len(shape) > 0 and shape[0] == "..."
    dims = shape[1:] if batched else shape
    ok = tensor.dim() >= len(dims) if batched else tensor.dim() == len(dims)
    if ok:
        tail = tensor.shape[tensor.dim() - len(dims):]
        ok = all(d == "*" or d == s for d, s in zip(dims, tail, strict=True))
    if not ok:
        want = "[" + ", ".join(str(d) for d in shape) + "]"
        raise ValueError(f"{name} must have shape {want}, got {list(tensor.shape)}")

"""The 3D mask of a part (RoMaP's M3D) and the gradient masking that confines an edit to it.

A Gaussian is selected when the L1 distance of its label averaged over the training views
(:func:`.galp.mean_labels`) to the part's one-hot vector is below a threshold. During editing the gradients of every other
Gaussian are zeroed by hooks on the per-Gaussian parameters (the official code zeroes them before
the optimiser step). Adam keeps moving a row whose moments are non-zero even with a zero gradient,
so :func:`zero_optimizer_rows` clears the unselected rows' state when an optimiser that was
already stepping (scene training) continues into the edit.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from .galp import mean_labels


def select_part(
    label_coeffs: Tensor,  # [N, K, P]
    means: Tensor,  # [N, 3]
    centres: Tensor,  # [V, 3] the views the label is averaged over (the training cameras)
    part_id: int,
    sh_degree: int = 3,
    threshold: float = 0.5,
) -> Tensor:  # [N] bool
    """Gaussians whose mean label is within L1 ``threshold`` of part ``part_id`` (1..P, as in the masks)."""
    n_parts = label_coeffs.shape[-1]
    if not 1 <= part_id <= n_parts:
        raise ValueError(f"part_id must be in 1..{n_parts} (0 is background), got {part_id}")
    target = torch.zeros(n_parts, dtype=label_coeffs.dtype, device=label_coeffs.device)
    target[part_id - 1] = 1.0
    with torch.no_grad():
        return (mean_labels(label_coeffs, means, centres, sh_degree) - target).abs().sum(-1) < threshold


def mask_gradients(params: Iterable[Tensor], selected: Tensor) -> list[torch.utils.hooks.RemovableHandle]:
    """Hooks that zero the gradient rows of unselected Gaussians on each ``[N, ...]`` parameter.

    Returns the hook handles; call ``.remove()`` on each to stop masking.
    """
    handles = []
    for p in params:
        if p.shape[0] != selected.shape[0]:
            raise ValueError(f"parameter of shape {list(p.shape)} has no row per Gaussian (N={selected.shape[0]})")
        keep = selected.to(device=p.device, dtype=p.dtype).reshape(-1, *([1] * (p.dim() - 1)))
        handles.append(p.register_hook(lambda g, keep=keep: g * keep))
    return handles


@torch.no_grad()
def zero_optimizer_rows(optimizer: torch.optim.Optimizer, params: Iterable[Tensor], selected: Tensor) -> None:
    """Zero the optimiser state (e.g. Adam moments) in the rows of unselected Gaussians."""
    drop = ~selected
    for p in params:
        for value in optimizer.state.get(p, {}).values():
            if isinstance(value, Tensor) and value.shape == p.shape:
                value[drop.to(value.device)] = 0

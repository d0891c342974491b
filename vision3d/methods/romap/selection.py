"""The 3D mask of a part (RoMaP's M3D) and the gradient masking that confines an edit to it.

A Gaussian is selected when its label averaged over the training views (:func:`.galp.mean_labels`)
is largest for the part and at least a threshold (:func:`part_membership`, also the 2D mask's rule). During editing the gradients of every other
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


def part_membership(labels: Tensor, part_id: int, threshold: float = 0.5) -> Tensor:  # [..., P] -> [...] bool
    """Where the label of part ``part_id`` (1..P) is the largest and at least ``threshold``.

    Ours, not the official code's L1 distance to the one-hot: labels trained on alpha-composited
    masks overshoot 1 (a Gaussian at a silhouette carries > 1 to make its pixels reach 1), and an L1
    ball of 0.5 around the one-hot dropped such Gaussians (48 of a part's ~300 on the 3-slab bunny).
    """
    n_parts = labels.shape[-1]
    if not 1 <= part_id <= n_parts:
        raise ValueError(f"part_id must be in 1..{n_parts} (0 is background), got {part_id}")
    return (labels.argmax(-1) == part_id - 1) & (labels[..., part_id - 1] >= threshold)


def select_part(
    label_coeffs: Tensor,  # [N, K, P]
    means: Tensor,  # [N, 3]
    centres: Tensor,  # [V, 3] the views the label is averaged over (the training cameras)
    part_id: int,
    sh_degree: int = 3,
    threshold: float = 0.5,
) -> Tensor:  # [N] bool
    """Gaussians whose mean label belongs to part ``part_id`` (1..P, as in the masks) by :func:`part_membership`."""
    with torch.no_grad():
        return part_membership(mean_labels(label_coeffs, means, centres, sh_degree), part_id, threshold)


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

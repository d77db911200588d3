"""Small tensor helpers the analyses share."""

from __future__ import annotations

import torch


def _per_layer(attentions) -> list[torch.Tensor]:
    """L tensors (B, H, T, T) from a list of them or from one stacked (B, L, H, T, T) tensor."""
    if isinstance(attentions, torch.Tensor):
        if attentions.dim() != 5:
            raise ValueError(f"expected (B, L, heads, T, T), got {tuple(attentions.shape)}")
        return list(attentions.unbind(1))
    return list(attentions)


def _normalise_rows(a: torch.Tensor) -> torch.Tensor:
    # keepdim so each row is divided by its own sum; a row that is all zeros stays zeros.
    return a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)


def _check_grid(num_patches: int, grid: tuple[int, int]):
    if grid[0] * grid[1] != num_patches:
        raise ValueError(f"grid {tuple(grid)} has {grid[0] * grid[1]} cells but there are {num_patches} patch tokens")

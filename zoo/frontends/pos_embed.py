"""Learned absolute position embeddings and their resampling to a new token grid."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def resample_pos_embed(pos_embed: torch.Tensor, new_grid: tuple[int, int],
                       old_grid: tuple[int, int], *, num_prefix_tokens: int = 0,
                       mode: str = "bicubic", antialias: bool = True) -> torch.Tensor:
    """Resample a (1, P + gh*gw, D) position table from ``old_grid`` to ``new_grid``.

    The first ``num_prefix_tokens`` rows (class / distillation tokens) are kept as they are;
    the grid part is interpolated as a (D, gh, gw) image in float32 (bicubic with antialias,
    as timm does, so resampled weights give the same logits) and cast back.
    """
    if tuple(new_grid) == tuple(old_grid):
        return pos_embed
    expected = num_prefix_tokens + old_grid[0] * old_grid[1]
    if pos_embed.shape[1] != expected:
        raise ValueError(
            f"position table has {pos_embed.shape[1]} rows; a {old_grid[0]}x{old_grid[1]} grid "
            f"with {num_prefix_tokens} prefix tokens needs {expected}"
        )
    prefix, grid = pos_embed[:, :num_prefix_tokens], pos_embed[:, num_prefix_tokens:]
    dim = grid.shape[-1]
    grid = grid.float().reshape(1, old_grid[0], old_grid[1], dim).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=tuple(new_grid), mode=mode, antialias=antialias,
                         align_corners=False if mode in ("bilinear", "bicubic") else None)
    grid = grid.permute(0, 2, 3, 1).reshape(1, new_grid[0] * new_grid[1], dim)
    return torch.cat([prefix, grid.to(pos_embed.dtype)], dim=1)

"""Image front end: normalised images (B, C, H, W) -> tokens (B, N, D).

A strided convolution cuts the image into non-overlapping P x P patches and projects each to D
channels; a learned class token is prepended (optional) and learned absolute position
embeddings are added. An input whose size differs from ``img_size`` gets its position table
resampled on the fly (bicubic), so a model trained at 224 runs at 384 without retraining.
"""

from __future__ import annotations

from typing import Union

import torch
from torch import nn

from zoo.encoder import Dropout
from zoo.frontends.pos_embed import resample_pos_embed

Size = Union[int, tuple[int, int]]


def _pair(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class ImageFrontEnd(nn.Module):
    """(B, C, H, W) -> (B, num_prefix_tokens + H/P * W/P, D).

    Attributes ``grid_size`` (trained patch grid) and ``num_prefix_tokens`` (1 with a class
    token, else 0) form the front-end contract that heads and checkpoints rely on.
    """

    def __init__(self, *, img_size: Size = 224, patch_size: Size = 16, in_chans: int = 3,
                 embed_dim: int = 768, class_token: bool = True, pos_drop: float = 0.0) -> None:
        super().__init__()
        self.img_size = _pair(img_size)
        self.patch_size = _pair(patch_size)
        self.in_chans = in_chans
        self.grid_size = self._grid_for(*self.img_size)
        self.num_prefix_tokens = 1 if class_token else 0
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size,
                              stride=self.patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        num_positions = self.num_prefix_tokens + self.grid_size[0] * self.grid_size[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, embed_dim))
        self.pos_drop = Dropout(pos_drop)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        if self.cls_token is not None:
            nn.init.normal_(self.cls_token, std=1e-6)

    def _grid_for(self, height: int, width: int) -> tuple[int, int]:
        ph, pw = self.patch_size
        if height % ph or width % pw:
            raise ValueError(
                f"image size {height}x{width} is not divisible by the patch size {ph}x{pw}; "
                f"resize or crop to a multiple of {ph}x{pw} (trained size: "
                f"{self.img_size[0]}x{self.img_size[1]})"
            )
        return height // ph, width // pw

    def position_table(self, grid: tuple[int, int]) -> torch.Tensor:
        """The (1, prefix + gh*gw, D) position table for a ``grid`` of patches."""
        return resample_pos_embed(self.pos_embed, grid, self.grid_size,
                                  num_prefix_tokens=self.num_prefix_tokens)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim != 4:
            raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected {self.in_chans}-channel images (B, {self.in_chans}, H, W), got "
                f"{x.shape[1]} channels in {tuple(x.shape)}; convert grayscale/RGBA to RGB first"
            )
        grid = self._grid_for(x.shape[2], x.shape[3])
        x = self.proj(x).flatten(2).transpose(1, 2)  # (B, gh*gw, D)
        if self.cls_token is not None:
            x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.pos_drop(x + self.position_table(grid))

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor], prefix: str) -> None:
        """Resample a checkpoint's position table (in place) to this front end's grid."""
        key = prefix + "pos_embed"
        table = state_dict.get(key)
        if table is None or table.shape == self.pos_embed.shape:
            return
        old_tokens = table.shape[1] - self.num_prefix_tokens
        side = int(round(old_tokens ** 0.5))
        if side * side != old_tokens:
            # Not a square grid given this model's prefix tokens: a non-square img_size, or a
            # checkpoint built with another class_token setting. Leave the table as it is; the
            # strict load then names the mismatching keys (pos_embed, cls_token).
            return
        state_dict[key] = resample_pos_embed(table, self.grid_size, (side, side),
                                             num_prefix_tokens=self.num_prefix_tokens)

"""Image front end: normalised images (B, C, H, W) -> tokens (B, N, D).

A strided convolution cuts the image into non-overlapping P x P patches and projects each to D
channels. Prefix tokens come first: an optional learned class token and ``reg_tokens``
register tokens (Darcet et al. 2024, "Vision Transformers Need Registers"). Positions are a
learned absolute table (``pos_embed="learned"``), covering the prefix tokens or, with
``no_embed_class`` (DeiT III, DINOv2 with registers, SigLIP 2), the patches only; and/or
rotary positions from a ``rope`` module (:mod:`zoo.layers.pos_embed`) that the encoder's
attention applies. An input whose size differs from ``img_size`` gets its position table
resampled on the fly (bicubic) and its rotary table computed for its own grid, so a model
trained at 224 runs at 384 without retraining.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.frontends.base import FrontEnd, PatchAxis
from zoo.layers.drop import Dropout
from zoo.layers.pos_embed import AxialRotary2d, MixedRotary2d, Rope, resample_pos_embed

Size = int | tuple[int, int]
POS_EMBEDS = ("learned", "none")


def _pair(size: Size) -> tuple[int, int]:
    return (size, size) if isinstance(size, int) else (int(size[0]), int(size[1]))


class ImageFrontEnd(FrontEnd):
    """(B, C, H, W) -> (B, num_prefix_tokens + H/P * W/P, D)."""

    no_weight_decay_names = ("pos_embed", "cls_token", "reg_token", "rope.freqs")
    grid_size: tuple[int, int]

    def __init__(self, *, img_size: Size = 224, patch_size: Size = 16, in_chans: int = 3,
                 embed_dim: int = 768, class_token: bool = True, reg_tokens: int = 0,
                 pos_embed: str = "learned", no_embed_class: bool = False,
                 patch_bias: bool = True, rope: AxialRotary2d | MixedRotary2d | None = None,
                 pos_drop: float = 0.0) -> None:
        super().__init__()
        if pos_embed not in POS_EMBEDS:
            raise ValueError(f"pos_embed must be one of {POS_EMBEDS}, got {pos_embed!r}")
        if reg_tokens < 0:
            raise ValueError(f"reg_tokens must be >= 0, got {reg_tokens}")
        self.img_size = _pair(img_size)
        self.patch_size = _pair(patch_size)
        self.in_chans = in_chans
        self.grid_size = self._grid_for(*self.img_size)
        self.num_prefix_tokens = int(class_token) + reg_tokens
        self.no_embed_class = no_embed_class
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=self.patch_size,
                              stride=self.patch_size, bias=patch_bias)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if class_token else None
        self.reg_token = nn.Parameter(torch.zeros(1, reg_tokens, embed_dim)) if reg_tokens else None
        self.pos_embed = None
        if pos_embed == "learned":
            rows = self._table_prefix + self.grid_size[0] * self.grid_size[1]
            self.pos_embed = nn.Parameter(torch.zeros(1, rows, embed_dim))
            nn.init.trunc_normal_(self.pos_embed, std=0.02)
        self.rope = rope
        self.pos_drop = Dropout(pos_drop)
        for token in (self.cls_token, self.reg_token):
            if token is not None:
                nn.init.normal_(token, std=1e-6)

    @property
    def _table_prefix(self) -> int:
        """Rows of the position table that belong to prefix tokens."""
        return 0 if self.no_embed_class else self.num_prefix_tokens

    def _grid_for(self, height: int, width: int) -> tuple[int, int]:
        """The patch grid of an input; its size must be a multiple of the patch size, except
        the trained size itself (SigLIP's 384 px with 14 px patches: the convolution drops
        the last 6 pixels, as in training)."""
        ph, pw = self.patch_size
        if (height % ph or width % pw) and (height, width) != self.img_size:
            raise ValueError(
                f"image size {height}x{width} is not divisible by the patch size {ph}x{pw}; "
                f"resize or crop to a multiple of {ph}x{pw} (trained size: "
                f"{self.img_size[0]}x{self.img_size[1]})"
            )
        return height // ph, width // pw

    def position_table(self, grid: tuple[int, int]) -> torch.Tensor:
        """The learned (1, rows, D) position table resampled to a ``grid`` of patches."""
        if self.pos_embed is None:
            raise ValueError("this front end has no learned position table (pos_embed='none')")
        return resample_pos_embed(self.pos_embed, grid, self.grid_size,
                                  num_prefix_tokens=self._table_prefix)

    def _check(self, x: torch.Tensor) -> tuple[int, int]:
        if x.ndim != 4:
            raise ValueError(f"expected images of shape (B, C, H, W), got {tuple(x.shape)}")
        if x.shape[1] != self.in_chans:
            raise ValueError(
                f"expected {self.in_chans}-channel images (B, {self.in_chans}, H, W), got "
                f"{x.shape[1]} channels in {tuple(x.shape)}; convert grayscale/RGBA to RGB first"
            )
        return self._grid_for(x.shape[2], x.shape[3])

    def patch_axes(self, shape: tuple[int, ...]) -> tuple[PatchAxis, ...]:
        """Images (B, C, H, W): patch rows over H, patch columns over W."""
        _, _, height, width = shape
        (rows, cols), (ph, pw) = self._grid_for(height, width), self.patch_size
        return PatchAxis(2, 0, ph, ph, height, rows), PatchAxis(3, 0, pw, pw, width, cols)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        grid = self._check(x)
        x = self.proj(x).flatten(2).transpose(1, 2)  # (B, gh*gw, D)
        table = self.position_table(grid) if self.pos_embed is not None else None
        if table is not None and self.no_embed_class:
            x = x + table
        prefix = [t.expand(x.shape[0], -1, -1) for t in (self.cls_token, self.reg_token)
                  if t is not None]
        x = torch.cat([*prefix, x], dim=1) if prefix else x
        if table is not None and not self.no_embed_class:
            x = x + table
        return self.pos_drop(x)

    def rope_table(self, x: torch.Tensor) -> Rope:
        """The rotary table(s) for images ``x`` (their own grid), or None without rope."""
        if self.rope is None:
            return None
        return self.rope.table(self._check(x), num_prefix_tokens=self.num_prefix_tokens,
                               device=x.device)

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor], prefix: str) -> None:
        """Resample a checkpoint's position table (in place) to this front end's grid."""
        key = prefix + "pos_embed"
        table = state_dict.get(key)
        if table is None or self.pos_embed is None or table.shape == self.pos_embed.shape:
            return
        old_tokens = table.shape[1] - self._table_prefix
        side = round(max(old_tokens, 0) ** 0.5)
        if side * side != old_tokens:
            # Not a square grid given this model's prefix tokens: a non-square img_size, or a
            # checkpoint built with another class_token setting. Leave the table as it is; the
            # strict load then names the mismatching keys (pos_embed, cls_token).
            return
        state_dict[key] = resample_pos_embed(table, self.grid_size, (side, side),
                                             num_prefix_tokens=self._table_prefix)

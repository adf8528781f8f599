"""Position information: learned tables (and their resampling), fixed sine-cosine tables, and
rotary position embeddings (RoPE, Su et al. 2021) for sequences and image grids.

Rotary embeddings rotate each query / key head vector by angles that depend on the token's
position; the attention then depends on relative positions. A :class:`RotaryTable` holds the
sine and cosine of those angles for every token, (N, head_dim) or (heads, N, head_dim), in one
of two channel layouts: ``interleaved`` (pairs (0, 1), (2, 3), ... rotate together: RoFormer,
EVA, RoPE-ViT) or ``half`` (pairs (i, i + head_dim / 2): GPT-NeoX, LLaMA, DINOv3). The layout
is fixed by the weights, since it decides which query channels pair up. Prefix tokens (class,
register) take angle 0 (sin 0, cos 1): they are not rotated.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

ROTARY_LAYOUTS = ("interleaved", "half")
ROTARY_COORDS = ("index", "centered")
GRID_AXES = ("ij", "xy")


# --- learned absolute positions -------------------------------------------------------------------

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


def sincos_table(num_positions: int, dim: int) -> torch.Tensor:
    """Fixed sine-cosine positions (N, D), centred and scaled to std 0.1 as PatchTST does."""
    position = torch.arange(num_positions, dtype=torch.float32).unsqueeze(1)
    freq = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))
    table = torch.zeros(num_positions, dim)
    table[:, 0::2] = torch.sin(position * freq)
    table[:, 1::2] = torch.cos(position * freq[: dim // 2])
    table = table - table.mean()
    return table / (table.std() * 10)


# --- rotary ---------------------------------------------------------------------------------------

class RotaryTable(NamedTuple):
    """sin / cos of every token's rotation angles, (N, head_dim) or (heads, N, head_dim)."""

    sin: torch.Tensor
    cos: torch.Tensor
    interleaved: bool


# what a front end hands the encoder: no rotary positions, one table for every block, or a
# list of one table per block (learned per-block frequencies)
Rope = RotaryTable | list[RotaryTable] | None


def _check_choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def rotary_table(angles: torch.Tensor, *, layout: str, num_prefix_tokens: int = 0) -> RotaryTable:
    """A table from per-frequency angles (..., N, head_dim / 2) in radians; ``num_prefix_tokens``
    unrotated rows are put in front."""
    _check_choice("rotary layout", layout, ROTARY_LAYOUTS)
    if num_prefix_tokens:
        angles = F.pad(angles, (0, 0, num_prefix_tokens, 0))   # angle 0: sin 0, cos 1
    sin, cos = angles.sin(), angles.cos()
    if layout == "interleaved":
        sin, cos = sin.repeat_interleave(2, -1), cos.repeat_interleave(2, -1)
    else:
        sin, cos = torch.cat([sin, sin], -1), torch.cat([cos, cos], -1)
    return RotaryTable(sin, cos, layout == "interleaved")


def apply_rotary(x: torch.Tensor, table: RotaryTable) -> torch.Tensor:
    """Rotate head vectors x (B, H, N, head_dim) by the table's angles; returns x's dtype."""
    if table.interleaved:   # [x0, x1, x2, x3] -> [-x1, x0, -x3, x2]
        turned = torch.stack([-x[..., 1::2], x[..., ::2]], dim=-1).reshape(x.shape)
    else:                   # [x0, x1, x2, x3] -> [-x2, -x3, x0, x1]
        first, second = x.chunk(2, dim=-1)
        turned = torch.cat([-second, first], dim=-1)
    return (x * table.cos + turned * table.sin).to(x.dtype)


def inverse_frequencies(num_bands: int, temperature: float) -> torch.Tensor:
    """(num_bands,) rotation speeds ``1 / temperature ** (j / num_bands)``, j < num_bands."""
    return 1.0 / temperature ** (torch.arange(num_bands, dtype=torch.float32) / num_bands)


class Rotary1d(nn.Module):
    """Rotary positions for a sequence: token t rotates band j by ``t * theta ** (-2j / hd)``
    (RoFormer / LLaMA). ``table(num_tokens)`` -> a (N, head_dim) :class:`RotaryTable`."""

    def __init__(self, head_dim: int, *, theta: float = 10000.0, layout: str = "half") -> None:
        super().__init__()
        if head_dim % 2:
            raise ValueError(f"rotary positions need an even head_dim, got {head_dim}")
        _check_choice("rotary layout", layout, ROTARY_LAYOUTS)
        self.head_dim, self.theta, self.layout = head_dim, theta, layout

    def table(self, num_tokens: int, *, num_prefix_tokens: int = 0,
              device: torch.device | None = None) -> RotaryTable:
        bands = inverse_frequencies(self.head_dim // 2, self.theta).to(device)
        steps = torch.arange(num_tokens, dtype=torch.float32, device=device)
        return rotary_table(steps[:, None] * bands, layout=self.layout,
                            num_prefix_tokens=num_prefix_tokens)

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, theta={self.theta}, layout={self.layout}"


def grid_coordinates(grid: Sequence[int], *, coords: str = "index", offset: float = 0.0,
                     reference: Sequence[int] | None = None, axes: str = "ij",
                     device: torch.device | None = None) -> torch.Tensor:
    """(gh * gw, 2) coordinates of a patch grid, rows in raster order (row by row).

    ``coords="index"``: patch indices (+ ``offset``), rescaled to a ``reference`` grid when
    given (EVA: a model trained on 16x16 patches sees a 24x24 grid on the same 0..16 scale);
    ``"centered"``: patch centres ``(i + 0.5 + offset) / size`` mapped to [-1, 1] (DINOv3).
    ``axes="ij"`` puts the row coordinate first, ``"xy"`` the column coordinate first.
    """
    _check_choice("rotary coords", coords, ROTARY_COORDS)
    _check_choice("grid axes", axes, GRID_AXES)
    sizes = list(grid)
    ref = list(reference) if reference is not None else None
    if coords == "index":
        per_axis = [torch.arange(s, device=device, dtype=torch.float32) + offset for s in sizes]
        if ref is not None:
            per_axis = [t / s * r for t, s, r in zip(per_axis, sizes, ref, strict=True)]
    else:
        per_axis = [(torch.arange(0.5, s, device=device, dtype=torch.float32) + offset) / s
                    for s in sizes]
    rows, cols = torch.meshgrid(per_axis[0], per_axis[1], indexing="ij")       # (gh, gw) each
    first, second = (rows, cols) if axes == "ij" else (cols, rows)
    points = torch.stack([first, second], dim=-1).reshape(-1, 2)
    return 2.0 * points - 1.0 if coords == "centered" else points


class AxialRotary2d(nn.Module):
    """Fixed 2-D rotary positions for an image grid: half of each head's frequency bands
    follow the first coordinate, half the second (axial RoPE: EVA-02, RoPE-ViT "axial", DINOv3).

    Band speeds are ``temperature ** (-j / B)`` for j < B = head_dim / 4; with
    ``coords="centered"`` (DINOv3) coordinates lie in [-1, 1] and angles are ``2 pi c / period``
    with the same periods. See :func:`grid_coordinates` for ``offset``, ``reference`` and
    ``axes``. ``table(grid)`` -> a (N, head_dim) :class:`RotaryTable`.
    """

    def __init__(self, head_dim: int, *, temperature: float = 10000.0, coords: str = "index",
                 offset: float = 0.0, reference: Sequence[int] | None = None,
                 axes: str = "ij", layout: str = "interleaved") -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"2-D rotary positions need head_dim divisible by 4, got {head_dim}")
        _check_choice("rotary coords", coords, ROTARY_COORDS)
        _check_choice("grid axes", axes, GRID_AXES)
        _check_choice("rotary layout", layout, ROTARY_LAYOUTS)
        self.head_dim, self.temperature, self.coords = head_dim, temperature, coords
        self.offset, self.axes, self.layout = offset, axes, layout
        self.reference = tuple(reference) if reference is not None else None

    def table(self, grid: Sequence[int], *, num_prefix_tokens: int = 0,
              device: torch.device | None = None) -> RotaryTable:
        points = grid_coordinates(grid, coords=self.coords, offset=self.offset,
                                  reference=self.reference, axes=self.axes, device=device)
        num_bands = self.head_dim // 4
        if self.coords == "centered":   # DINOv3 writes it with periods: 2 pi c / period
            periods = self.temperature ** (torch.arange(num_bands, dtype=torch.float32) / num_bands)
            angles = 2 * math.pi * points[:, :, None] / periods.to(device)
        else:
            angles = points[:, :, None] * inverse_frequencies(num_bands, self.temperature).to(device)
        return rotary_table(angles.flatten(1), layout=self.layout,
                            num_prefix_tokens=num_prefix_tokens)

    def extra_repr(self) -> str:
        return (f"head_dim={self.head_dim}, temperature={self.temperature}, "
                f"coords={self.coords}, axes={self.axes}, layout={self.layout}")


class MixedRotary2d(nn.Module):
    """Learned 2-D rotary positions (RoPE-Mixed, Heo et al. 2024): every block and head has its
    own frequency vectors ``freqs`` (2, depth, heads, head_dim / 2), initialised as axial bands
    rotated by a random angle; a token at column x, row y rotates by ``x * fx + y * fy``.

    ``table(grid)`` -> a list of ``depth`` (heads, N, head_dim) tables, one per block.
    """

    def __init__(self, head_dim: int, *, depth: int, num_heads: int, temperature: float = 10.0,
                 axes: str = "xy") -> None:
        super().__init__()
        if head_dim % 4:
            raise ValueError(f"2-D rotary positions need head_dim divisible by 4, got {head_dim}")
        _check_choice("grid axes", axes, GRID_AXES)
        self.head_dim, self.axes = head_dim, axes
        magnitude = 1.0 / temperature ** (torch.arange(0, head_dim, 4, dtype=torch.float32) / head_dim)
        angle = torch.rand(depth, num_heads, 1) * 2 * math.pi
        fx = torch.cat([magnitude * torch.cos(angle), magnitude * torch.cos(angle + math.pi / 2)], -1)
        fy = torch.cat([magnitude * torch.sin(angle), magnitude * torch.sin(angle + math.pi / 2)], -1)
        self.freqs = nn.Parameter(torch.stack([fx, fy]))   # (2, depth, heads, head_dim / 2)

    def table(self, grid: Sequence[int], *, num_prefix_tokens: int = 0,
              device: torch.device | None = None) -> list[RotaryTable]:
        points = grid_coordinates(grid, axes=self.axes, device=device)              # (N, 2)
        freqs = self.freqs.float()
        angles = (points[:, 0, None] * freqs[0][..., None, :]
                  + points[:, 1, None] * freqs[1][..., None, :])       # (depth, heads, N, hd/2)
        table = rotary_table(angles, layout="interleaved", num_prefix_tokens=num_prefix_tokens)
        return [RotaryTable(s, c, table.interleaved)
                for s, c in zip(table.sin, table.cos, strict=True)]

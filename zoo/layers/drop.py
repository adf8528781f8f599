"""Regularisers of residual streams: element dropout and stochastic depth."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class Dropout(nn.Dropout):
    """``nn.Dropout`` with a faster mask on the CPU: the keep mask compares 16-bit random
    integers (``p`` rounded to 1/65536), drawn four at a time as 64-bit words, with a
    threshold, instead of ``bernoulli_``: about 2.5x faster for a forward + backward on two
    cores. Elsewhere it is ``F.dropout``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.p == 0.0:
            return x
        if x.device.type != "cpu" or self.p >= 1.0:
            return F.dropout(x, self.p, True, self.inplace)
        n = x.numel()
        words = torch.empty((n + 3) // 4, dtype=torch.int64).random_(-2 ** 63, 2 ** 63 - 1)
        keep = words.view(torch.int16)[:n].view(x.shape) >= round(self.p * 65536) - 32768
        return x * (keep * (1.0 / (1.0 - self.p))).to(x.dtype)


class DropPath(nn.Module):
    """Stochastic depth: drops a whole residual branch per sample while training."""

    def __init__(self, p: float = 0.0) -> None:
        super().__init__()
        self.p = p

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.p == 0.0 or not self.training:
            return x
        keep = 1.0 - self.p
        mask = x.new_empty((x.shape[0],) + (1,) * (x.ndim - 1)).bernoulli_(keep)
        return x * mask / keep

    def extra_repr(self) -> str:
        return f"p={self.p}"


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch (Touvron et al., CaiT): (..., D)."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma

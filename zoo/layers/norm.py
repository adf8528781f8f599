"""Normalisation layers over the last (feature) dimension of tokens (..., D)."""

from __future__ import annotations

import torch
from torch import nn

NORMS = ("layernorm", "rmsnorm", "batchnorm")


class TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm over tokens: (B, N, D) normalised per feature with statistics over B and N
    (PatchTST's norm)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view_as(x)


def make_norm(kind: str, dim: int, eps: float) -> nn.LayerNorm | nn.RMSNorm | TokenBatchNorm:
    """A norm over the last dimension: ``layernorm``, ``rmsnorm`` (``x / rms(x) * w``, no
    centring, no bias) or ``batchnorm`` (statistics over every other dimension)."""
    if kind == "layernorm":
        return nn.LayerNorm(dim, eps=eps)
    if kind == "rmsnorm":
        return nn.RMSNorm(dim, eps=eps)
    if kind == "batchnorm":
        return TokenBatchNorm(dim, eps=eps)
    raise ValueError(f"norm must be one of {NORMS}, got {kind!r}")

"""Heads: encoder tokens (B, N, D) -> task outputs."""

from __future__ import annotations

import torch
from torch import nn

POOLS = ("token", "avg", "prefix_avg")


class ClassifierHead(nn.Module):
    """Pool tokens (B, N, D) -> (B, D), then an optional LayerNorm, dropout and a linear layer.

    Pools: ``token`` takes the first (class) token; ``avg`` averages the patch tokens (prefix
    tokens excluded); ``prefix_avg`` averages the prefix tokens (AST's class + distillation).
    ``num_classes=0`` leaves the pooled features (B, D) as output.
    """

    def __init__(self, embed_dim: int, num_classes: int, *, pool: str = "token",
                 num_prefix_tokens: int = 1, fc_norm: bool = False, norm_eps: float = 1e-6,
                 drop: float = 0.0) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if pool in ("token", "prefix_avg") and num_prefix_tokens == 0:
            raise ValueError(f"pool={pool!r} needs a class token; use pool='avg' without one")
        self.embed_dim = embed_dim
        self.pool = pool
        self.num_prefix_tokens = num_prefix_tokens
        self.fc_norm = nn.LayerNorm(embed_dim, eps=norm_eps) if fc_norm else nn.Identity()
        self.drop = nn.Dropout(drop)
        self.fc = self._make_fc(num_classes)

    @property
    def num_classes(self) -> int:
        return self.fc.out_features if isinstance(self.fc, nn.Linear) else 0

    def _make_fc(self, num_classes: int) -> nn.Module:
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if num_classes == 0:
            return nn.Identity()
        fc = nn.Linear(self.embed_dim, num_classes)
        nn.init.trunc_normal_(fc.weight, std=0.02)
        nn.init.zeros_(fc.bias)
        return fc

    def reset(self, num_classes: int) -> None:
        """Replace the final layer with a freshly initialised one for ``num_classes`` outputs."""
        self.fc = self._make_fc(num_classes)

    def pool_tokens(self, tokens: torch.Tensor) -> torch.Tensor:
        """(B, N, D) -> (B, D)."""
        if self.pool == "token":
            return tokens[:, 0]
        if self.pool == "prefix_avg":
            return tokens[:, : self.num_prefix_tokens].mean(dim=1)
        return tokens[:, self.num_prefix_tokens:].mean(dim=1)

    def forward(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, N, D) -> logits (B, K), or the normalised pooled features (B, D) if pre_logits."""
        x = self.drop(self.fc_norm(self.pool_tokens(tokens)))
        return x if pre_logits else self.fc(x)

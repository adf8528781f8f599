"""Heads: encoder tokens (B, N, D) -> task outputs."""

from __future__ import annotations

import torch
from torch import nn

from zoo.layers.attention import AttentionPool
from zoo.layers.drop import Dropout
from zoo.layers.norm import make_norm

POOLS = ("token", "avg", "prefix_avg", "map")


class ClassifierHead(nn.Module):
    """Pool tokens (B, N, D) -> (B, D), then an optional norm, dropout and a linear layer.

    Pools: ``token`` takes the first (class) token; ``avg`` averages the patch tokens (prefix
    tokens excluded unless ``include_prefix``); ``prefix_avg`` averages the prefix tokens
    (AST's class + distillation); ``map`` attends over the tokens with ``attn_pool``
    (:class:`zoo.layers.AttentionPool`, SigLIP; prefix tokens excluded unless
    ``include_prefix``). ``fc_norm`` adds a ``norm`` (``layernorm`` / ``rmsnorm``) after
    pooling. ``num_classes=0`` leaves the pooled features (B, D) as output.
    """

    def __init__(self, embed_dim: int, num_classes: int, *, pool: str = "token",
                 num_prefix_tokens: int = 1, include_prefix: bool = False,
                 attn_pool: AttentionPool | None = None, fc_norm: bool = False,
                 norm: str = "layernorm", norm_eps: float = 1e-6, drop: float = 0.0) -> None:
        super().__init__()
        if pool not in POOLS:
            raise ValueError(f"pool must be one of {POOLS}, got {pool!r}")
        if pool in ("token", "prefix_avg") and num_prefix_tokens == 0:
            raise ValueError(f"pool={pool!r} needs a class token; use pool='avg' without one")
        if (pool == "map") != (attn_pool is not None):
            raise ValueError("pool='map' needs an attn_pool module, and only it takes one")
        self.embed_dim = embed_dim
        self.pool = pool
        self.num_prefix_tokens = num_prefix_tokens
        self.include_prefix = include_prefix
        self.attn_pool = attn_pool
        self.fc_norm = make_norm(norm, embed_dim, norm_eps) if fc_norm else nn.Identity()
        self.drop = Dropout(drop)
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
        if not self.include_prefix:
            tokens = tokens[:, self.num_prefix_tokens:]
        return self.attn_pool(tokens) if self.attn_pool is not None else tokens.mean(dim=1)

    def readout_weights(self, tokens: torch.Tensor) -> torch.Tensor:
        """How the pooled feature weighs each token: (B, N, D) -> (B, N), summing to 1.

        ``token``: the class token alone; ``prefix_avg``: the prefix tokens equally; ``avg``:
        the pooled tokens equally; ``map``: the attention pool's weights, mean over its heads.
        Explanations read the encoder's relevance from these rows (:mod:`zoo.explanations`).
        """
        B, N, _ = tokens.shape
        weights = tokens.new_zeros(B, N)
        first = 0 if self.include_prefix else self.num_prefix_tokens
        if self.pool == "token":
            weights[:, 0] = 1.0
        elif self.pool == "prefix_avg":
            weights[:, :self.num_prefix_tokens] = 1.0 / self.num_prefix_tokens
        elif self.pool == "avg":
            weights[:, first:] = 1.0 / (N - first)
        elif self.attn_pool is not None:   # "map" (the only pool with an attn_pool)
            weights[:, first:] = self.attn_pool.attention_weights(tokens[:, first:]).mean(dim=1)
        return weights

    def forward(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, N, D) -> logits (B, K), or the normalised pooled features (B, D) if pre_logits."""
        x = self.drop(self.fc_norm(self.pool_tokens(tokens)))
        return x if pre_logits else self.fc(x)


FORECAST_POOLS = ("flatten", "mean", "max")


class ForecastHead(nn.Module):
    """Each channel's tokens -> its forecast: tokens (B * C, N, D) -> (B, H, C), or
    (B, H, C, Q) with ``num_quantiles`` Q > 0 (one value per quantile level and step).

    ``pool="flatten"`` concatenates the N tokens (PatchTST's head: N * D features); ``mean`` /
    ``max`` pool them to D features (transformers' ``pooling_type``). One linear layer maps the
    features to the H * max(Q, 1) outputs (step-major: output ``h * Q + q`` is step h, level
    q); ``shared=False`` gives every channel its own (and fixes the number of channels).
    """

    def __init__(self, num_patches: int, embed_dim: int, horizon: int, *, num_channels: int,
                 pool: str = "flatten", shared: bool = True, drop: float = 0.0,
                 num_quantiles: int = 0) -> None:
        super().__init__()
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if pool not in FORECAST_POOLS:
            raise ValueError(f"pool must be one of {FORECAST_POOLS}, got {pool!r}")
        if isinstance(num_quantiles, bool) or not isinstance(num_quantiles, int) or num_quantiles < 0:
            raise ValueError(f"num_quantiles must be an int >= 0 (0: point forecasts), "
                             f"got {num_quantiles!r}")
        self.num_patches, self.embed_dim, self.horizon = num_patches, embed_dim, horizon
        self.pool, self.shared, self.num_quantiles = pool, shared, num_quantiles
        self.drop = Dropout(drop)
        features = num_patches * embed_dim if pool == "flatten" else embed_dim
        outputs = horizon * max(num_quantiles, 1)
        if shared:
            self.proj = nn.Linear(features, outputs)
        else:  # one projection per channel, applied in one einsum
            bound = 1 / features ** 0.5
            self.proj_weight = nn.Parameter(torch.empty(num_channels, outputs, features)
                                            .uniform_(-bound, bound))
            self.proj_bias = nn.Parameter(torch.empty(num_channels, outputs).uniform_(-bound, bound))

    def forward(self, tokens: torch.Tensor, num_channels: int) -> torch.Tensor:
        """tokens (B * C, N, D) -> (B, H, C), or (B, H, C, Q) with quantiles."""
        if self.pool == "mean":
            tokens = tokens.mean(dim=1)
        elif self.pool == "max":
            tokens = tokens.amax(dim=1)
        x = self.drop(tokens.reshape(tokens.shape[0] // num_channels, num_channels, -1))
        y = (self.proj(x) if self.shared
             else torch.einsum("bcf,chf->bch", x, self.proj_weight) + self.proj_bias)  # (B, C, H*Q)
        if self.num_quantiles == 0:
            return y.transpose(1, 2).contiguous()                                    # (B, H, C)
        y = y.unflatten(-1, (self.horizon, self.num_quantiles))                     # (B, C, H, Q)
        return y.transpose(1, 2).contiguous()                                        # (B, H, C, Q)


class CTCHead(nn.Module):
    """Tokens (B, N, D) -> per-token log-probabilities (B, N, V + 1) over a vocabulary of V
    tokens and the CTC blank (index 0)."""

    def __init__(self, embed_dim: int, vocab_size: int, *, drop: float = 0.0) -> None:
        super().__init__()
        if vocab_size < 1:
            raise ValueError(f"a CTC head needs at least one token, got {vocab_size}")
        self.drop = Dropout(drop)
        self.fc = nn.Linear(embed_dim, vocab_size + 1)
        nn.init.trunc_normal_(self.fc.weight, std=0.02)
        nn.init.zeros_(self.fc.bias)

    @property
    def vocab_size(self) -> int:
        return self.fc.out_features - 1

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.fc(self.drop(tokens)).float().log_softmax(-1)

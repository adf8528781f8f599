"""Multi-head self-attention: tokens (B, N, D) -> (B, N, D), and attention pooling.

One :class:`Attention` serves every model; its options are parts chosen when it is built:
a fused QKV projection, a head size that may differ from ``D / heads``, per-head q/k norms
(ViT-22B, DINOv3-style qk-norm), rotary positions (a table passed in per call), a causal
mask, block-local attention for long sequences, a learned per-dimension query scale
(TimesFM's ``PerDimScale``) and residual attention (RealFormer, as the reference PatchTST).
It runs on ``F.scaled_dot_product_attention``; an explicit softmax path gives the same
numbers, is what :func:`record_attention` uses to read the weights, and what tests compare
against. Residual attention without autograd over short sequences (eager inference, at most
:data:`SCORES_MAX_TOKENS` tokens) carries the summed (N, N) scores from block to block instead
of the concatenated queries and keys: the reference PatchTST's own arithmetic, which beats
SDPA's kernel there (ETTh1-size PatchTST, 42 patches, 16 heads of 8: SDPA was 55% of a
forward; measured in benchmarks/profile_patchtst.py).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers.drop import Dropout
from zoo.layers.inplace import may_overwrite
from zoo.layers.mlp import Mlp
from zoo.layers.norm import make_norm
from zoo.layers.pos_embed import RotaryTable, apply_rotary

# What residual attention passes from block to block: the queries and keys of the m blocks so
# far concatenated along the head dimension ((B, H, N, m * hd) each), or, in eager inference
# over short sequences, their summed pre-softmax scores (B, H, N, N), scaled
QK = tuple[torch.Tensor, torch.Tensor] | torch.Tensor
SCORES_MAX_TOKENS = 128   # (B, H, N, N) scores stay small: 64 x 16 x 128^2 floats = 64 MiB


def local_attention_mask(num_tokens: int, window: int, device: torch.device | None = None
                         ) -> torch.Tensor:
    """(N, N) bool, True = attend: token i sees the tokens of its own block of ``window``
    tokens and of the block before (the pattern :func:`local_attention` computes)."""
    block = torch.arange(num_tokens, device=device) // window
    return (block[None, :] == block[:, None]) | (block[None, :] == block[:, None] - 1)


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int,
                    dropout_p: float = 0.0, scale: float | None = None) -> torch.Tensor:
    """Block-local attention: q, k (B, H, N, dk), v (B, H, N, dv) -> (B, H, N, dv).

    The sequence is cut into blocks of ``window`` tokens (the last one padded); each block's
    queries attend to the keys of their own block and of the block before, so every token sees
    between ``window`` and ``2 * window`` tokens and information travels ``window`` tokens per
    layer. Time and memory grow as N * window, not N^2. With ``window >= N`` it is full
    attention.
    """
    B, H, N, _ = q.shape
    blocks = -(-N // window)
    pad = blocks * window - N
    if pad:
        q, k, v = (F.pad(t, (0, 0, 0, pad)) for t in (q, k, v))
    q, k, v = (t.reshape(B, H, blocks, window, t.shape[-1]) for t in (q, k, v))  # (B,H,nb,W,d)
    positions = torch.arange(blocks * window, device=q.device).view(blocks, window)
    if blocks > 1:   # prepend the previous block's keys (zeros before the first, masked out)
        k = torch.cat([F.pad(k, (0, 0, 0, 0, 1, 0))[:, :, :-1], k], dim=3)       # (B,H,nb,2W,d)
        v = torch.cat([F.pad(v, (0, 0, 0, 0, 1, 0))[:, :, :-1], v], dim=3)
        positions = torch.cat([positions - window, positions], dim=1)          # (nb, 2W)
    visible = (positions >= 0) & (positions < N)                                # (nb, keys)
    # 4-D (batch x heads, blocks, W, d): the layout SDPA's fused kernels take
    q, k, v = (t.flatten(0, 1) for t in (q, k, v))
    mask = None if bool(visible.all()) else visible[:, None, :]
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                         scale=scale)
    return out.reshape(B, H, blocks * window, -1)[:, :, :N]


def _softmax_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                       mask: torch.Tensor | None, scale: float, dropout_p: float
                       ) -> tuple[torch.Tensor, torch.Tensor]:
    """The explicit path: (output (B, H, N, dv), weights (B, H, N, N))."""
    return _attend((q * scale) @ k.transpose(-2, -1), v, mask, dropout_p)


def _attend(scores: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
            dropout_p: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Scores (B, H, N, N) (left as they are), masked, softmaxed and applied to v (B, H, N, dv):
    (output (B, H, N, dv), weights (B, H, N, N))."""
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf")) if mask.dtype == torch.bool \
            else scores + mask
    weights = scores.softmax(dim=-1)
    return F.dropout(weights, p=dropout_p, training=dropout_p > 0) @ v, weights


class Attention(nn.Module):
    """Multi-head self-attention with one fused QKV projection: (B, N, D) -> (B, N, D).

    ``head_dim`` defaults to ``dim // num_heads``; the projections map D <-> heads * head_dim.
    ``qk_norm`` names a norm (``layernorm`` / ``rmsnorm``) applied to each query and key head.
    ``query_scale`` learns one factor per head dimension, ``softplus(w) / softplus(0)`` (1 at
    init), on the queries. ``qk_norm_after_rope`` normalises queries and keys after the rotary
    positions (TimesFM 2.5) instead of before (the usual order); the two differ wherever the
    norm's per-dimension weights differ within a rotated pair. ``causal`` lets token i see
    tokens <= i only. ``window`` makes attention block-local (:func:`local_attention`).
    ``residual`` (RealFormer) adds the
    pre-softmax scores of the earlier blocks to this block's: since every block has the same
    head size, the summed scores ``scale * sum_m q_m k_m^T`` are one product of the queries and
    keys of those blocks concatenated along the head dimension, which ``prev_qk`` carries, so
    residual attention runs in SDPA too (no (N, N) scores kept for backward).
    """

    def __init__(self, dim: int, *, num_heads: int, head_dim: int | None = None,
                 qkv_bias: bool = True, proj_bias: bool = True, qk_norm: str | None = None,
                 norm_eps: float = 1e-6, attn_drop: float = 0.0, proj_drop: float = 0.0,
                 causal: bool = False, window: int | None = None, query_scale: bool = False,
                 residual: bool = False, qk_norm_after_rope: bool = False) -> None:
        super().__init__()
        if head_dim is None:
            if dim % num_heads:
                raise ValueError(f"dim ({dim}) must be divisible by num_heads ({num_heads}), "
                                 "or head_dim given")
            head_dim = dim // num_heads
        if window is not None and window < 1:
            raise ValueError(f"attention window must be >= 1 token, got {window}")
        if window is not None and causal:
            raise ValueError("causal attention cannot be combined with a window")
        self.num_heads, self.head_dim = num_heads, head_dim
        self.scale = head_dim ** -0.5
        self.causal, self.window, self.residual = causal, window, residual
        self.qk_norm_after_rope = qk_norm_after_rope
        self.fused = True
        self.recorder: list[torch.Tensor] | None = None   # set by record_attention
        inner = num_heads * head_dim
        self.qkv = nn.Linear(dim, 3 * inner, bias=qkv_bias)
        self.q_norm = make_norm(qk_norm, head_dim, norm_eps) if qk_norm else nn.Identity()
        self.k_norm = make_norm(qk_norm, head_dim, norm_eps) if qk_norm else nn.Identity()
        self.query_scale = nn.Parameter(torch.zeros(head_dim)) if query_scale else None
        self.attn_drop = attn_drop
        self.proj = nn.Linear(inner, dim, bias=proj_bias)
        self.proj_drop = Dropout(proj_drop)

    def _mask(self, mask: torch.Tensor | None, n: int, device: torch.device
              ) -> torch.Tensor | None:
        """The (N, N) bool pattern (causal, window) combined with a caller's mask."""
        pattern = None
        if self.causal:
            pattern = torch.ones(n, n, dtype=torch.bool, device=device).tril()
        elif self.window is not None:
            pattern = local_attention_mask(n, self.window, device)
        if pattern is None or mask is None:
            return pattern if mask is None else mask
        return mask & pattern if mask.dtype == torch.bool else \
            mask.masked_fill(~pattern, float("-inf"))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                rope: RotaryTable | None = None, prev_qk: QK | None = None
                ) -> tuple[torch.Tensor, QK | None]:
        """x (B, N, D); mask: bool (B or 1, 1 or H, N, N), True = attend, or additive float;
        rope: the tokens' rotary table; prev_qk: earlier blocks' residual state (:data:`QK`).

        Returns the output (B, N, D) and, for residual attention, the state for the next
        block (the queries and keys this block attended with, ``prev_qk``'s and its own, or
        the summed scores), else None.
        """
        B, N, _ = x.shape
        if self.window is not None and mask is not None:
            raise ValueError("attn_mask cannot be combined with windowed attention")
        q, k, v = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim) \
            .permute(2, 0, 3, 1, 4).unbind(0)                       # each (B, H, N, hd)
        if not self.qk_norm_after_rope:
            q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = apply_rotary(q, rope), apply_rotary(k, rope)
        if self.qk_norm_after_rope:
            q, k = self.q_norm(q), self.k_norm(k)
        if self.query_scale is not None:
            q = q * (F.softplus(self.query_scale) / math.log(2.0))
        if self.residual and (isinstance(prev_qk, torch.Tensor)
                              or (may_overwrite() and N <= SCORES_MAX_TOKENS)):
            x, scores = self._carried_scores(q, k, v, mask, prev_qk)
            return self.proj_drop(self.proj(x.transpose(1, 2).reshape(B, N, -1))), scores
        if prev_qk is not None:   # residual attention: scores of earlier blocks add up
            q, k = torch.cat([prev_qk[0], q], dim=-1), torch.cat([prev_qk[1], k], dim=-1)
        dropout_p = self.attn_drop if self.training else 0.0
        if self.fused and self.recorder is None:
            x = self._fused(q, k, v, mask, dropout_p)
        else:
            x, weights = _softmax_attention(q, k, v, self._mask(mask, N, x.device), self.scale,
                                            dropout_p)
            if self.recorder is not None:
                self.recorder.append(weights)   # in the graph when gradients are on
        x = x.transpose(1, 2).reshape(B, N, -1)
        return self.proj_drop(self.proj(x)), ((q, k) if self.residual else None)

    def _carried_scores(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
                        mask: torch.Tensor | None, prev: QK | None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
        """Residual attention from explicit scores: (output (B, H, N, hd), the summed scaled
        scores (B, H, N, N) so far, before masking, for the next block)."""
        if isinstance(prev, tuple):          # queries and keys of earlier blocks: their scores
            prev = (prev[0] * self.scale) @ prev[1].transpose(-2, -1)
        scores = (q * self.scale) @ k.transpose(-2, -1)
        if prev is not None:
            scores += prev
        out, weights = _attend(scores, v, self._mask(mask, q.shape[2], q.device),
                               self.attn_drop if self.training else 0.0)
        if self.recorder is not None:
            self.recorder.append(weights)
        return out, scores

    def _fused(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               mask: torch.Tensor | None, dropout_p: float) -> torch.Tensor:
        # SDPA's fused kernels need one head size for q, k and v: under residual attention
        # v is padded with zeros (the extra output columns are zero, and dropped); that
        # beats SDPA's unfused fallback in time and memory (no (N, N) scores are kept)
        head_dim = v.shape[-1]
        if q.shape[-1] != head_dim:
            v = F.pad(v, (0, q.shape[-1] - head_dim))
        if self.window is not None:
            out = local_attention(q, k, v, window=self.window, dropout_p=dropout_p,
                                  scale=self.scale)
        else:
            if self.causal and mask is not None:   # SDPA takes a mask or is_causal, not both
                mask = self._mask(mask, q.shape[2], q.device)
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p,
                                                 scale=self.scale,
                                                 is_causal=self.causal and mask is None)
        return out[..., :head_dim]

    def extra_repr(self) -> str:
        options = [f"heads={self.num_heads}", f"head_dim={self.head_dim}"]
        options += [name for name in ("causal", "residual") if getattr(self, name)]
        if self.window is not None:
            options.append(f"window={self.window}")
        return ", ".join(options)


@contextlib.contextmanager
def record_attention(module: nn.Module) -> Iterator[list[torch.Tensor]]:
    """Record the attention weights of every :class:`Attention` inside ``module``.

    ``with record_attention(model) as maps: model(x)`` fills ``maps`` with one (B, H, N, N)
    tensor per attention call, in call order (first block first); with gradients on they stay
    in the autograd graph (``torch.autograd.grad(out, maps)`` gives gradient x attention
    relevance). While recording, attention
    runs on the explicit softmax path (SDPA does not return weights); outside the block it is
    untouched, so normal inference keeps the fused kernels.
    """
    maps: list[torch.Tensor] = []
    layers = [m for m in module.modules() if isinstance(m, Attention)]
    for layer in layers:
        layer.recorder = maps
    try:
        yield maps
    finally:
        for layer in layers:
            layer.recorder = None


class AttentionPool(nn.Module):
    """Attention pooling with one learned query (SigLIP's "map" head): (B, N, D) -> (B, D).

    A latent query attends over the tokens (``q``, ``kv`` and ``proj`` projections, ``num_heads``
    heads), then a pre-norm MLP refines the result: ``y = a + mlp(norm(a))``.
    """

    def __init__(self, dim: int, *, num_heads: int, mlp_ratio: float = 4.0,
                 act: str = "gelu", norm: str = "layernorm", norm_eps: float = 1e-6) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"dim ({dim}) must be divisible by the pool's num_heads ({num_heads})")
        self.num_heads = num_heads
        self.latent = nn.Parameter(torch.zeros(1, 1, dim))
        self.q = nn.Linear(dim, dim)
        self.kv = nn.Linear(dim, 2 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm = make_norm(norm, dim, norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), act=act)
        nn.init.trunc_normal_(self.latent, std=dim ** -0.5)

    def _query_key_value(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The latent query (B, H, 1, hd) and the tokens' keys and values (B, H, N, hd)."""
        B, N, D = x.shape
        heads = self.num_heads
        q = self.q(self.latent).reshape(1, 1, heads, D // heads).transpose(1, 2)   # (1, H, 1, hd)
        k, v = self.kv(x).reshape(B, N, 2, heads, D // heads).permute(2, 0, 3, 1, 4).unbind(0)
        return q.expand(B, -1, -1, -1), k, v

    def attention_weights(self, x: torch.Tensor) -> torch.Tensor:
        """How the latent query weighs each token: (B, N, D) -> (B, heads, N), rows sum to 1."""
        q, k, _ = self._query_key_value(x)
        return _softmax_attention(q, k, k, None, q.shape[-1] ** -0.5, 0.0)[1][:, :, 0]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, _, D = x.shape
        q, k, v = self._query_key_value(x)
        out = F.scaled_dot_product_attention(q, k, v)                            # (B, H, 1, hd)
        out = self.proj(out.transpose(1, 2).reshape(B, 1, D))
        return (out + self.mlp(self.norm(out)))[:, 0]

"""The shared Transformer encoder: tokens (B, N, D) -> tokens (B, N, D).

One class serves every modality. Blocks are pre-norm by default (``x + attn(norm(x))``, then
``x + mlp(norm(x))``); post-norm blocks (``norm(x + attn(x))``) and BatchNorm over tokens are
options, for PatchTST. Attention runs through ``F.scaled_dot_product_attention`` with a
fused QKV projection, and falls back to an explicit softmax path when attention maps are
asked for (SDPA does not return them).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint


NORMS = ("layernorm", "batchnorm")


class TokenBatchNorm(nn.BatchNorm1d):
    """BatchNorm over tokens: (B, N, D) normalised per feature with statistics over B and N."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x.reshape(-1, x.shape[-1])).view_as(x)


def make_norm(kind: str, dim: int, eps: float) -> nn.Module:
    """A ``layernorm`` or ``batchnorm`` over the last dimension of (B, N, D) tokens."""
    if kind == "batchnorm":
        return TokenBatchNorm(dim, eps=eps)
    return nn.LayerNorm(dim, eps=eps)


@dataclass(frozen=True)
class EncoderConfig:
    """Hyper-parameters of :class:`Encoder`.

    ``layer_scale_init`` enables per-channel residual scaling (CaiT / DeiT-III) when set.
    ``norm_eps`` is 1e-6 as in timm's ViT (PyTorch's default is 1e-5). ``norm`` is
    ``layernorm`` or ``batchnorm`` (statistics over batch and tokens, as PatchTST);
    ``pre_norm=False`` puts the norm after each residual sum (the original Transformer).
    ``residual_attention`` adds each block's attention scores to the next block's (RealFormer,
    as the reference PatchTST). ``attn_window`` makes attention block-local (each token sees
    its block of that many tokens and the block before): linear, not quadratic, in the number
    of tokens, for long sequences; None is full attention.
    """

    embed_dim: int = 768
    depth: int = 12
    num_heads: int = 12
    mlp_ratio: float = 4.0
    qkv_bias: bool = True
    proj_drop: float = 0.0
    attn_drop: float = 0.0
    drop_path: float = 0.0
    layer_scale_init: Optional[float] = None
    norm_eps: float = 1e-6
    final_norm: bool = True
    norm: str = "layernorm"
    pre_norm: bool = True
    residual_attention: bool = False
    attn_window: Optional[int] = None

    def __post_init__(self) -> None:
        if self.norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS}, got {self.norm!r}")
        if self.embed_dim % self.num_heads != 0:
            raise ValueError(
                f"embed_dim ({self.embed_dim}) must be divisible by num_heads ({self.num_heads})"
            )
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")
        if self.attn_window is not None and self.attn_window < 1:
            raise ValueError(f"attn_window must be >= 1 token, got {self.attn_window}")

    def to_dict(self) -> dict:
        return asdict(self)


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


QK = tuple[torch.Tensor, torch.Tensor]   # queries and keys (B, H, N, m * hd) of m blocks


def local_attention_mask(num_tokens: int, window: int, device: Optional[torch.device] = None
                         ) -> torch.Tensor:
    """(N, N) bool, True = attend: token i sees the tokens of its own block of ``window``
    tokens and of the block before (the pattern :func:`local_attention` computes)."""
    block = torch.arange(num_tokens, device=device) // window
    return (block[None, :] == block[:, None]) | (block[None, :] == block[:, None] - 1)


def local_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, *, window: int,
                    dropout_p: float = 0.0, scale: Optional[float] = None) -> torch.Tensor:
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


class Attention(nn.Module):
    """Multi-head self-attention with one fused QKV projection.

    ``fused=True`` uses ``F.scaled_dot_product_attention`` (flash / memory-efficient kernels
    where available); ``fused=False`` is the explicit reference path, kept for attention maps
    and for testing that both agree.

    Residual attention (RealFormer; the reference PatchTST) adds the pre-softmax scores of the
    earlier blocks to this block's. Since every block has the same head size, the summed scores
    ``scale * sum_m q_m k_m^T`` are one product of the queries and keys of all those blocks
    concatenated along the head dimension: ``prev_qk`` carries them, so residual attention runs
    in SDPA too (no (N, N) scores kept for backward). The cost of the q.k product grows with the
    number of blocks that feed it, fine for PatchTST's 3 layers.

    ``window`` switches to block-local attention (:func:`local_attention`) for long sequences.
    """

    def __init__(self, dim: int, *, num_heads: int, qkv_bias: bool = True,
                 attn_drop: float = 0.0, proj_drop: float = 0.0,
                 window: Optional[int] = None) -> None:
        super().__init__()
        if window is not None and window < 1:
            raise ValueError(f"attention window must be >= 1 token, got {window}")
        self.window = window
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.scale = self.head_dim ** -0.5
        self.fused = True
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.attn_drop = attn_drop
        self.proj = nn.Linear(dim, dim)
        self.proj_drop = Dropout(proj_drop)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                return_attention: bool = False, prev_qk: Optional[QK] = None,
                return_qk: bool = False
                ) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[QK]]:
        """x: (B, N, D); attn_mask: bool (B or 1, 1 or H, N, N), True = attend, or additive float.

        Returns the output (B, N, D), the attention weights (B, H, N, N) if
        ``return_attention`` (else None), and with ``return_qk`` the queries and keys this
        block attended with (``prev_qk``'s and its own, concatenated) for the next block's
        residual attention (else None).
        """
        B, N, D = x.shape
        qkv = self.qkv(x).reshape(B, N, 3, self.num_heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)  # each (B, H, N, hd)
        if prev_qk is not None:   # residual attention: scores of earlier blocks add up
            q, k = torch.cat([prev_qk[0], q], dim=-1), torch.cat([prev_qk[1], k], dim=-1)
        dropout_p = self.attn_drop if self.training else 0.0
        weights = None
        if self.window is not None and attn_mask is not None:
            raise ValueError("attn_mask cannot be combined with windowed attention")
        if self.fused and not return_attention:
            # SDPA's fused kernels need one head size for q, k and v: under residual attention
            # v is padded with zeros (the extra output columns are zero, and dropped); that
            # beats SDPA's unfused fallback in time and memory (no (N, N) scores are kept)
            head_dim = v.shape[-1]
            if q.shape[-1] != head_dim:
                v = F.pad(v, (0, q.shape[-1] - head_dim))
            if self.window is not None:
                x = local_attention(q, k, v, window=self.window, dropout_p=dropout_p,
                                    scale=self.scale)
            else:
                x = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask,
                                                   dropout_p=dropout_p, scale=self.scale)
            x = x[..., :head_dim]
        else:
            if self.window is not None:   # the same pattern, as an (N, N) mask
                attn_mask = local_attention_mask(N, self.window, x.device)
            scores = (q * self.scale) @ k.transpose(-2, -1)  # (B, H, N, N)
            if attn_mask is not None:
                if attn_mask.dtype == torch.bool:
                    scores = scores.masked_fill(~attn_mask, float("-inf"))
                else:
                    scores = scores + attn_mask
            weights = scores.softmax(dim=-1)
            x = F.dropout(weights, p=dropout_p, training=self.training) @ v
        x = x.transpose(1, 2).reshape(B, N, D)
        return self.proj_drop(self.proj(x)), weights, ((q, k) if return_qk else None)


class Mlp(nn.Module):
    """Two-layer feed-forward network: D -> hidden -> D with GELU."""

    def __init__(self, dim: int, hidden_dim: int, drop: float = 0.0) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden_dim)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_dim, dim)
        self.drop = Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.drop(self.fc2(self.drop(self.act(self.fc1(x)))))


class LayerScale(nn.Module):
    """Per-channel learnable scale of a residual branch (Touvron et al., CaiT)."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), float(init_value)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


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


class Block(nn.Module):
    """Transformer block. Pre-norm: x + attn(norm1(x)), then x + mlp(norm2(x)); post-norm
    (``pre_norm=False``): norm1(x + attn(x)), then norm2(x + mlp(x))."""

    def __init__(self, dim: int, *, num_heads: int, mlp_ratio: float = 4.0, qkv_bias: bool = True,
                 proj_drop: float = 0.0, attn_drop: float = 0.0, drop_path: float = 0.0,
                 layer_scale_init: Optional[float] = None, norm_eps: float = 1e-6,
                 norm: str = "layernorm", pre_norm: bool = True,
                 attn_window: Optional[int] = None) -> None:
        super().__init__()
        self.pre_norm = pre_norm
        self.norm1 = make_norm(norm, dim, norm_eps)
        self.attn = Attention(dim, num_heads=num_heads, qkv_bias=qkv_bias,
                              attn_drop=attn_drop, proj_drop=proj_drop, window=attn_window)
        self.ls1 = LayerScale(dim, layer_scale_init) if layer_scale_init else nn.Identity()
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = make_norm(norm, dim, norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio), drop=proj_drop)
        self.ls2 = LayerScale(dim, layer_scale_init) if layer_scale_init else nn.Identity()
        self.drop_path2 = DropPath(drop_path)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                return_attention: bool = False, prev_qk: Optional[QK] = None,
                return_qk: bool = False
                ) -> tuple[torch.Tensor, Optional[torch.Tensor], Optional[QK]]:
        """x (B, N, D) -> (B, N, D), the attention weights if asked, and the queries and keys
        for residual attention if asked (see :class:`Attention`)."""
        if not self.pre_norm:
            y, weights, qk = self.attn(x, attn_mask, return_attention, prev_qk, return_qk)
            x = self.norm1(x + self.drop_path1(self.ls1(y)))
            x = self.norm2(x + self.drop_path2(self.ls2(self.mlp(x))))
            return x, weights, qk
        y, weights, qk = self.attn(self.norm1(x), attn_mask, return_attention, prev_qk, return_qk)
        x = x + self.drop_path1(self.ls1(y))
        x = x + self.drop_path2(self.ls2(self.mlp(self.norm2(x))))
        return x, weights, qk


class Encoder(nn.Module):
    """A stack of blocks and an optional final norm: (B, N, D) -> (B, N, D).

    The encoder knows nothing of modalities: front ends make the tokens, heads read them.
    Drop-path rates rise linearly from 0 to ``config.drop_path`` over the depth.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.grad_checkpointing = False
        rates = [config.drop_path * i / max(1, config.depth - 1) for i in range(config.depth)]
        self.blocks = nn.ModuleList(
            Block(config.embed_dim, num_heads=config.num_heads, mlp_ratio=config.mlp_ratio,
                  qkv_bias=config.qkv_bias, proj_drop=config.proj_drop,
                  attn_drop=config.attn_drop, drop_path=rate,
                  layer_scale_init=config.layer_scale_init, norm_eps=config.norm_eps,
                  norm=config.norm, pre_norm=config.pre_norm, attn_window=config.attn_window)
            for rate in rates
        )
        self.norm = (make_norm(config.norm, config.embed_dim, config.norm_eps)
                     if config.final_norm else nn.Identity())
        self.apply(_init_weights)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward: less memory, about 30% more compute."""
        self.grad_checkpointing = enable

    def set_fused_attention(self, enable: bool = True) -> None:
        for block in self.blocks:
            block.attn.fused = enable

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, N, D) -> (B, N, D)."""
        return self.forward_with_attention(x, attn_mask, return_maps=False)[0]

    def forward_with_attention(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None,
                               return_maps: bool = True) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """As :meth:`forward`, also returning each block's attention weights (B, H, N, N).

        With ``residual_attention`` each block's pre-softmax scores are added to the next
        block's (He et al. 2020, RealFormer; the reference PatchTST does this).
        """
        residual = self.config.residual_attention
        maps, qk = [], None
        last = len(self.blocks) - 1
        for i, block in enumerate(self.blocks):
            pass_on = residual and i < last
            if self.grad_checkpointing and torch.is_grad_enabled():
                x, weights, qk = checkpoint(block, x, attn_mask, return_maps, qk, pass_on,
                                            use_reentrant=False)
            else:
                x, weights, qk = block(x, attn_mask, return_maps, qk, pass_on)
            if return_maps:
                maps.append(weights)
        return self.norm(x), maps


def _init_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear weights and zero biases, as ViT / timm do."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)
    elif isinstance(module, nn.LayerNorm):
        nn.init.ones_(module.weight)
        nn.init.zeros_(module.bias)

"""The shared Transformer encoder: tokens (B, N, D) -> tokens (B, N, D).

One encoder serves every modality and every flagship model. A block is built from parts of
:mod:`zoo.layers` chosen by one :class:`BlockConfig`: the norm kind, where the norms sit
(``placement``), the attention options, the MLP kind and activation, layer scale. Placements:

- ``pre``       ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``: ViT, CLIP, DINOv2, AST.
- ``post``      ``norm1(x + attn(x))``, then ``norm2(x + mlp(x))``: the original Transformer,
                PatchTST (with ``norm="batchnorm"``).
- ``sandwich``  ``x + norm1_post(attn(norm1(x)))``, likewise for the MLP: norms before and after
                each branch (TimesFM 2.5).
- ``res_post``  ``x + norm1(attn(x))``, likewise for the MLP: the norm closes the branch
                (Swin v2's res-post-norm; timm's ``ResPostBlock``).
- ``parallel``  ``x + attn(norm(x)) + mlp(norm(x))``: one norm, both branches side by side
                (ViT-22B; timm's ``ParallelScalingBlock``).

``branches > 1`` (pre-norm only) runs that many attention branches side by side, then that
many MLP branches (Touvron et al. 2022, "Three things everyone should know about ViTs").

The encoder optionally normalises its input (CLIP's ``ln_pre``) and output. Attention maps
come from :func:`zoo.layers.record_attention`, not from return values.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass, field, replace
from typing import cast

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

from zoo.layers.attention import QK, Attention
from zoo.layers.drop import DropPath, LayerScale
from zoo.layers.inplace import may_overwrite
from zoo.layers.mlp import ACTIVATIONS, MLPS, make_mlp
from zoo.layers.norm import NORMS, TokenBatchNorm, make_norm
from zoo.layers.pos_embed import Rope, RotaryTable

PLACEMENTS = ("pre", "post", "sandwich", "res_post", "parallel")


@dataclass(frozen=True)
class BlockConfig:
    """Every choice of one Transformer block.

    Widths: ``embed_dim`` D, ``num_heads``, ``head_dim`` (default D / heads; attention's inner
    width heads * head_dim may differ from D), MLP hidden width ``mlp_hidden`` (default
    ``int(D * mlp_ratio)``; for ``mlp="gated"`` the width of each of gate and value).
    ``act``: one of :data:`zoo.layers.ACTIVATIONS`. ``norm``: ``layernorm`` / ``rmsnorm`` /
    ``batchnorm``, ``norm_eps`` (1e-6 as timm's ViT; PyTorch's default is 1e-5).
    ``qk_norm`` normalises query and key heads with the block's norm kind.
    ``layer_scale_init`` enables per-channel residual scaling (CaiT / DeiT III) when set.
    ``attn_window`` makes attention block-local (each token sees its block of that many tokens
    and the block before: linear, not quadratic, in the number of tokens). ``causal`` lets
    token i see tokens <= i. ``query_scale``: a learned per-dimension query scale.
    ``qk_norm_after_rope``: the q/k norms act after the rotary positions (TimesFM 2.5).
    ``residual_attention`` adds each block's attention scores to the next block's (RealFormer).
    """

    embed_dim: int = 768
    num_heads: int = 12
    head_dim: int | None = None
    mlp_ratio: float = 4.0
    mlp_hidden: int | None = None
    mlp: str = "mlp"
    act: str = "gelu"
    qkv_bias: bool = True
    proj_bias: bool = True
    mlp_bias: bool = True
    qk_norm: bool = False
    norm: str = "layernorm"
    norm_eps: float = 1e-6
    placement: str = "pre"
    branches: int = 1
    layer_scale_init: float | None = None
    proj_drop: float = 0.0
    attn_drop: float = 0.0
    attn_window: int | None = None
    causal: bool = False
    query_scale: bool = False
    residual_attention: bool = False
    qk_norm_after_rope: bool = False

    def __post_init__(self) -> None:
        for name, value, choices in (("norm", self.norm, NORMS), ("mlp", self.mlp, MLPS),
                                     ("act", self.act, tuple(ACTIVATIONS)),
                                     ("placement", self.placement, PLACEMENTS)):
            if value not in choices:
                raise ValueError(f"{name} must be one of {choices}, got {value!r}")
        if self.head_dim is None and self.embed_dim % self.num_heads != 0:
            raise ValueError(f"embed_dim ({self.embed_dim}) must be divisible by num_heads "
                             f"({self.num_heads}), or head_dim given")
        if self.attn_window is not None and self.attn_window < 1:
            raise ValueError(f"attn_window must be >= 1 token, got {self.attn_window}")
        if self.branches < 1 or (self.branches > 1 and self.placement != "pre"):
            raise ValueError(f"branches must be >= 1, and > 1 only with placement 'pre'; got "
                             f"{self.branches} with {self.placement!r}")
        if self.branches > 1 and self.residual_attention:
            raise ValueError("residual_attention needs branches=1")
        if self.qk_norm and self.norm == "batchnorm":
            raise ValueError("qk_norm needs norm='layernorm' or 'rmsnorm'")

    @property
    def hidden_dim(self) -> int:
        return self.mlp_hidden if self.mlp_hidden is not None else int(self.embed_dim * self.mlp_ratio)


@dataclass(frozen=True)
class EncoderConfig:
    """``depth`` blocks of ``block``; drop-path rates rise linearly from 0 to ``drop_path``.
    ``input_norm`` normalises the tokens before the first block (CLIP's ``ln_pre``),
    ``final_norm`` after the last."""

    block: BlockConfig = field(default_factory=BlockConfig)
    depth: int = 12
    drop_path: float = 0.0
    input_norm: bool = False
    final_norm: bool = True

    def __post_init__(self) -> None:
        if self.depth < 1:
            raise ValueError(f"depth must be >= 1, got {self.depth}")

    @property
    def embed_dim(self) -> int:
        return self.block.embed_dim

    def to_dict(self) -> dict:
        return asdict(self)


# --- parts -----------------------------------------------------------------------------------------

def _norm(c: BlockConfig) -> nn.LayerNorm | nn.RMSNorm | TokenBatchNorm:
    return make_norm(c.norm, c.embed_dim, c.norm_eps)


def _attention(c: BlockConfig) -> Attention:
    return Attention(c.embed_dim, num_heads=c.num_heads, head_dim=c.head_dim, qkv_bias=c.qkv_bias,
                     proj_bias=c.proj_bias, qk_norm=c.norm if c.qk_norm else None,
                     norm_eps=c.norm_eps, attn_drop=c.attn_drop, proj_drop=c.proj_drop,
                     causal=c.causal, window=c.attn_window, query_scale=c.query_scale,
                     residual=c.residual_attention, qk_norm_after_rope=c.qk_norm_after_rope)


def _mlp(c: BlockConfig) -> nn.Module:
    return make_mlp(c.mlp, c.embed_dim, c.hidden_dim, act=c.act, bias=c.mlp_bias, drop=c.proj_drop)


def _scale(c: BlockConfig) -> nn.Module:
    return LayerScale(c.embed_dim, c.layer_scale_init) if c.layer_scale_init else nn.Identity()


def _residual(x: torch.Tensor, branch: torch.Tensor) -> torch.Tensor:
    """``x + branch``. Without autograd (:func:`may_overwrite`) the sum goes into the branch's
    fresh buffer (the same numbers: addition commutes exactly): one (B, N, D) tensor fewer.
    Branches of another shape or dtype (autocast) get ``x + branch``'s promotion as before."""
    if (not may_overwrite() or branch is x or branch.shape != x.shape
            or branch.dtype != x.dtype):
        return x + branch
    return branch.add_(x)


# --- blocks: (B, N, D) -> (B, N, D), plus the queries and keys of residual attention ------------

class TwoBranchBlock(nn.Module):
    """The parts of a block with an attention branch and an MLP branch, each with its own norm
    (``norm1``, ``norm2``), layer scale (``ls1``, ``ls2``) and drop path; subclasses place them."""

    def __init__(self, config: BlockConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm1 = _norm(config)
        self.attn = _attention(config)
        self.ls1 = _scale(config)
        self.drop_path1 = DropPath(drop_path)
        self.norm2 = _norm(config)
        self.mlp = _mlp(config)
        self.ls2 = _scale(config)
        self.drop_path2 = DropPath(drop_path)


class PreNormBlock(TwoBranchBlock):
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                rope: RotaryTable | None = None, prev_qk: QK | None = None
                ) -> tuple[torch.Tensor, QK | None]:
        y, qk = self.attn(self.norm1(x), mask, rope, prev_qk)
        x = _residual(x, self.drop_path1(self.ls1(y)))
        return _residual(x, self.drop_path2(self.ls2(self.mlp(self.norm2(x))))), qk


class PostNormBlock(TwoBranchBlock):
    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                rope: RotaryTable | None = None, prev_qk: QK | None = None
                ) -> tuple[torch.Tensor, QK | None]:
        y, qk = self.attn(x, mask, rope, prev_qk)
        x = self.norm1(_residual(x, self.drop_path1(self.ls1(y))))
        return self.norm2(_residual(x, self.drop_path2(self.ls2(self.mlp(x))))), qk


class ResPostNormBlock(TwoBranchBlock):
    """``layer_scale_init`` here starts the branch norms' scales at that value (each norm's
    scale already scales its branch) instead of adding a LayerScale."""

    def __init__(self, config: BlockConfig, drop_path: float = 0.0) -> None:
        super().__init__(replace(config, layer_scale_init=None), drop_path)
        if config.layer_scale_init:
            for norm in (self.norm1, self.norm2):
                nn.init.constant_(norm.weight, config.layer_scale_init)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                rope: RotaryTable | None = None, prev_qk: QK | None = None
                ) -> tuple[torch.Tensor, QK | None]:
        y, qk = self.attn(x, mask, rope, prev_qk)
        x = _residual(x, self.drop_path1(self.ls1(self.norm1(y))))
        return _residual(x, self.drop_path2(self.ls2(self.norm2(self.mlp(x))))), qk


class SandwichBlock(TwoBranchBlock):
    """Pre-norm with a second norm on each branch's output (``norm1_post``, ``norm2_post``)."""

    def __init__(self, config: BlockConfig, drop_path: float = 0.0) -> None:
        super().__init__(config, drop_path)
        self.norm1_post = _norm(config)
        self.norm2_post = _norm(config)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                rope: RotaryTable | None = None, prev_qk: QK | None = None
                ) -> tuple[torch.Tensor, QK | None]:
        y, qk = self.attn(self.norm1(x), mask, rope, prev_qk)
        x = _residual(x, self.drop_path1(self.ls1(self.norm1_post(y))))
        y = self.norm2_post(self.mlp(self.norm2(x)))
        return _residual(x, self.drop_path2(self.ls2(y))), qk


class ParallelBlock(nn.Module):
    """``x + ls(attn(norm(x)) + mlp(norm(x)))``: one norm, one layer scale, one drop path."""

    def __init__(self, config: BlockConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        self.norm = _norm(config)
        self.attn = _attention(config)
        self.mlp = _mlp(config)
        self.ls = _scale(config)
        self.drop_path = DropPath(drop_path)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                rope: RotaryTable | None = None, prev_qk: QK | None = None
                ) -> tuple[torch.Tensor, QK | None]:
        h = self.norm(x)
        y, qk = self.attn(h, mask, rope, prev_qk)
        return _residual(x, self.drop_path(self.ls(y + self.mlp(h)))), qk


class _Branch(nn.Module):
    """One pre-norm branch of a :class:`BranchesBlock`: ``drop_path(ls(layer(norm(x))))``."""

    def __init__(self, config: BlockConfig, layer: nn.Module, drop_path: float) -> None:
        super().__init__()
        self.norm = _norm(config)
        self.layer = layer
        self.ls = _scale(config)
        self.drop_path = DropPath(drop_path)


class BranchesBlock(nn.Module):
    """``config.branches`` attention branches side by side, then as many MLP branches:
    ``x + sum_i attn_i(norm_i(x))``, then ``x + sum_i mlp_i(norm_i(x))``."""

    def __init__(self, config: BlockConfig, drop_path: float = 0.0) -> None:
        super().__init__()
        self.attns = nn.ModuleList(_Branch(config, _attention(config), drop_path)
                                   for _ in range(config.branches))
        self.ffns = nn.ModuleList(_Branch(config, _mlp(config), drop_path)
                                  for _ in range(config.branches))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                rope: RotaryTable | None = None, prev_qk: QK | None = None
                ) -> tuple[torch.Tensor, QK | None]:
        attns, ffns = cast(Iterable[_Branch], self.attns), cast(Iterable[_Branch], self.ffns)
        x = x + sum(b.drop_path(b.ls(b.layer(b.norm(x), mask, rope)[0])) for b in attns)
        return x + sum(b.drop_path(b.ls(b.layer(b.norm(x)))) for b in ffns), None


BLOCKS = {"pre": PreNormBlock, "post": PostNormBlock, "sandwich": SandwichBlock,
          "res_post": ResPostNormBlock, "parallel": ParallelBlock}


def make_block(config: BlockConfig, drop_path: float = 0.0) -> nn.Module:
    """The block class that ``config.placement`` (and ``branches``) names."""
    if config.branches > 1:
        return BranchesBlock(config, drop_path)
    return BLOCKS[config.placement](config, drop_path)


class Encoder(nn.Module):
    """Optional input norm, ``depth`` blocks, optional final norm: (B, N, D) -> (B, N, D).

    The encoder knows nothing of modalities: front ends make the tokens (and rotary tables),
    heads read them.
    """

    def __init__(self, config: EncoderConfig) -> None:
        super().__init__()
        self.config = config
        self.grad_checkpointing = False
        depth, block = config.depth, config.block
        rates = [config.drop_path * i / max(1, depth - 1) for i in range(depth)]
        self.norm_pre = _norm(block) if config.input_norm else nn.Identity()
        self.blocks = nn.ModuleList(make_block(block, rate) for rate in rates)
        self.norm = _norm(block) if config.final_norm else nn.Identity()
        self.apply(_init_weights)

    @property
    def embed_dim(self) -> int:
        return self.config.embed_dim

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute block activations in backward: less memory, about 30% more compute."""
        self.grad_checkpointing = enable

    def set_fused_attention(self, enable: bool = True) -> None:
        """SDPA kernels (True) or the explicit softmax path (False), for tests and debugging."""
        for module in self.modules():
            if isinstance(module, Attention):
                module.fused = enable

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None,
                rope: Rope = None) -> torch.Tensor:
        """x (B, N, D) -> (B, N, D). ``mask``: bool (B or 1, 1 or H, N, N), True = attend, or
        additive float. ``rope``: a rotary table for every block, or a list of one per block."""
        tables = list(rope) if isinstance(rope, list) else [rope] * len(self.blocks)
        if len(tables) != len(self.blocks):
            raise ValueError(f"{len(tables)} rotary tables for {len(self.blocks)} blocks")
        x = self.norm_pre(x)
        qk: QK | None = None
        for block, table in zip(self.blocks, tables, strict=True):
            if self.grad_checkpointing and torch.is_grad_enabled():
                x, qk = checkpoint(block, x, mask, table, qk, use_reentrant=False)
            else:
                x, qk = block(x, mask, table, qk)
        return self.norm(x)


def _init_weights(module: nn.Module) -> None:
    """Truncated-normal (std 0.02) linear weights and zero biases, as ViT / timm do (norms keep
    their own init: scale 1, or a block's ``layer_scale_init``)."""
    if isinstance(module, nn.Linear):
        nn.init.trunc_normal_(module.weight, std=0.02)
        if module.bias is not None:
            nn.init.zeros_(module.bias)

"""Feed-forward networks of a Transformer block: (B, N, D) -> (B, N, D).

``Mlp`` is the classic D -> hidden -> D with an activation in between; ``GatedMlp`` is a
gated linear unit (Shazeer 2020: SwiGLU with ``act="silu"``, GeGLU with ``"gelu"``):
``fc2(act(gate) * value)``, where gate and value come from one packed projection ``fc1`` of
width 2 * hidden, gate first. Checkpoints with the two projections stored apart (timm's
``SwiGLU``: ``fc1_g``, ``fc1_x``) are packed on conversion: one layout, one matmul.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from zoo.layers.drop import Dropout
from zoo.layers.inplace import may_overwrite


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    """OpenAI CLIP's sigmoid approximation of GELU: ``x * sigmoid(1.702 x)``."""
    return x * torch.sigmoid(1.702 * x)


def gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    """GELU with the tanh approximation (BERT, SigLIP 2's larger towers)."""
    return F.gelu(x, approximate="tanh")


ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": F.gelu, "gelu_tanh": gelu_tanh, "quick_gelu": quick_gelu, "relu": F.relu,
    "silu": F.silu,
}
# The same functions overwriting their input (the same numbers, bit for bit), for when no
# autograd graph needs the input kept
INPLACE_ACTIVATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "gelu": torch.ops.aten.gelu_,
    "gelu_tanh": lambda x: torch.ops.aten.gelu_(x, approximate="tanh"),
    "quick_gelu": lambda x: x.mul_(torch.sigmoid(1.702 * x)),
    "relu": torch.relu_,
    "silu": lambda x: F.silu(x, inplace=True),
}
MLPS = ("mlp", "gated")


def activation(name: str) -> Callable[[torch.Tensor], torch.Tensor]:
    if name not in ACTIVATIONS:
        raise ValueError(f"act must be one of {tuple(ACTIVATIONS)}, got {name!r}")
    return ACTIVATIONS[name]


def activate(name: str, x: torch.Tensor) -> torch.Tensor:
    """``ACTIVATIONS[name](x)``; without autograd (:func:`may_overwrite`) it overwrites ``x``,
    which must be a fresh buffer of the caller's own."""
    return (INPLACE_ACTIVATIONS if may_overwrite() else ACTIVATIONS)[name](x)


# Eval without autograd, an MLP this narrow (input width <= CHUNK_MAX_DIM) runs its rows in
# chunks of CHUNK_ELEMENTS hidden activations (4 MiB in float32) instead of making one hidden
# tensor 4-8x the block's width (PatchTST/ETTh1 at batch 128 x 7: 18 MiB per block). A buffer
# that large comes from freshly mapped pages on every call (glibc returns it to the OS on
# free): about 20 thousand page faults per forward, a third of the time spent in the kernel.
# Chunks are reused from the heap and stay in cache between fc1, the activation and fc2. A
# narrow MLP is bound by that memory traffic, not by its few multiply-adds per hidden value;
# in benchmarks/profile_patchtst.py (1 thread, loaded machine) a 16 -> 128 MLP over 36,736
# tokens took about half the time of the plain path, a 192 -> 768 one (ViT-Tiny) gained
# nothing from chunks, so wide MLPs run whole (with the activation in place).
CHUNK_MAX_DIM = 128
CHUNK_ELEMENTS = 2 ** 20


class Mlp(nn.Module):
    """D -> hidden -> D: ``fc2(drop(act(fc1(x))))``, then dropout."""

    def __init__(self, dim: int, hidden_dim: int, *, act: str = "gelu", bias: bool = True,
                 drop: float = 0.0) -> None:
        super().__init__()
        self.act_name = act
        self.act = activation(act)
        self.dim, self.hidden_dim = dim, hidden_dim
        self.fc1 = nn.Linear(dim, hidden_dim, bias=bias)
        self.fc2 = nn.Linear(hidden_dim, dim, bias=bias)
        self.drop = Dropout(drop)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = max(1, CHUNK_ELEMENTS // self.hidden_dim)
        # may_overwrite first: while exporting, a test on the (symbolic) size would add a guard
        if (not self.training and self.dim <= CHUNK_MAX_DIM and may_overwrite()
                and x.numel() > 2 * rows * x.shape[-1]):
            return self._forward_chunks(x, rows)
        return self.drop(self.fc2(self.drop(activate(self.act_name, self.fc1(x)))))

    def _forward_chunks(self, x: torch.Tensor, rows: int) -> torch.Tensor:
        """Eval, no autograd: (..., D) -> (..., D), ``rows`` tokens at a time (dropout is off)."""
        flat = x.reshape(-1, x.shape[-1])
        out = [self.fc2(activate(self.act_name, self.fc1(part))) for part in flat.split(rows)]
        return torch.cat(out).view(*x.shape[:-1], -1)

    def extra_repr(self) -> str:
        return f"act={self.act_name}"


class GatedMlp(Mlp):
    """D -> (gate, value) of width ``hidden_dim`` each -> ``act(gate) * value`` -> D."""

    def __init__(self, dim: int, hidden_dim: int, *, act: str = "silu", bias: bool = True,
                 drop: float = 0.0) -> None:
        super().__init__(dim, hidden_dim, act=act, bias=bias, drop=drop)
        self.fc1 = nn.Linear(dim, 2 * hidden_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, value = self.fc1(x).chunk(2, dim=-1)
        return self.drop(self.fc2(self.drop(self.act(gate) * value)))


class ResidualMlp(nn.Module):
    """``fc2(act(fc1(x))) + skip(x)``: in_dim -> hidden -> out_dim with a linear skip
    connection (TimesFM's residual block, its patch tokenizer and output heads)."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, *, act: str = "silu",
                 bias: bool = True) -> None:
        super().__init__()
        self.act_name = act
        self.act = activation(act)
        self.fc1 = nn.Linear(in_dim, hidden_dim, bias=bias)
        self.fc2 = nn.Linear(hidden_dim, out_dim, bias=bias)
        self.skip = nn.Linear(in_dim, out_dim, bias=bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(..., in_dim) -> (..., out_dim)."""
        return self.fc2(self.act(self.fc1(x))) + self.skip(x)

    def extra_repr(self) -> str:
        return f"act={self.act_name}"


def make_mlp(kind: str, dim: int, hidden_dim: int, *, act: str, bias: bool = True,
             drop: float = 0.0) -> Mlp:
    """``mlp`` (:class:`Mlp`) or ``gated`` (:class:`GatedMlp`)."""
    if kind == "mlp":
        return Mlp(dim, hidden_dim, act=act, bias=bias, drop=drop)
    if kind == "gated":
        return GatedMlp(dim, hidden_dim, act=act, bias=bias, drop=drop)
    raise ValueError(f"mlp must be one of {MLPS}, got {kind!r}")

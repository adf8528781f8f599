"""Composable parts of the shared encoder, front ends and heads.

Norms (:mod:`~zoo.layers.norm`), feed-forward networks (:mod:`~zoo.layers.mlp`), attention
and attention pooling (:mod:`~zoo.layers.attention`), position embeddings learned, fixed and
rotary (:mod:`~zoo.layers.pos_embed`), dropout, stochastic depth and layer scale
(:mod:`~zoo.layers.drop`). Nothing here knows a modality or a model.
"""

from zoo.layers.attention import (
    Attention,
    AttentionPool,
    local_attention,
    local_attention_mask,
    record_attention,
)
from zoo.layers.drop import Dropout, DropPath, LayerScale
from zoo.layers.mlp import ACTIVATIONS, MLPS, GatedMlp, Mlp, ResidualMlp, make_mlp
from zoo.layers.norm import NORMS, TokenBatchNorm, make_norm
from zoo.layers.pos_embed import (
    AxialRotary2d,
    MixedRotary2d,
    Rotary1d,
    RotaryTable,
    apply_rotary,
    resample_pos_embed,
    sincos_table,
)

__all__ = [
    "ACTIVATIONS",
    "MLPS",
    "NORMS",
    "Attention",
    "AttentionPool",
    "AxialRotary2d",
    "DropPath",
    "Dropout",
    "GatedMlp",
    "LayerScale",
    "MixedRotary2d",
    "Mlp",
    "ResidualMlp",
    "Rotary1d",
    "RotaryTable",
    "TokenBatchNorm",
    "apply_rotary",
    "local_attention",
    "local_attention_mask",
    "make_mlp",
    "make_norm",
    "record_attention",
    "resample_pos_embed",
    "sincos_table",
]

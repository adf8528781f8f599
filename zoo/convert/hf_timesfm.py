"""Hugging Face TimesFM 2.5 checkpoints (``TimesFm2_5ModelForPrediction``, model_type
``timesfm2_5``, e.g. ``google/timesfm-2.5-200m-transformers``) -> zoo ``TimesFM`` state dicts.

Keys (``model.`` prefix optional; ``N`` a layer), transformers -> zoo:

- ``input_ff_layer.{input,output,residual}_layer`` -> ``front_end.tokenizer.{fc1,fc2,skip}``
- ``layers.N.self_attn.{q,k,v}_proj`` (concatenated) -> ``encoder.blocks.N.attn.qkv``
- ``layers.N.self_attn.o_proj`` -> ``encoder.blocks.N.attn.proj``
- ``layers.N.self_attn.{q,k}_norm`` -> ``encoder.blocks.N.attn.{q,k}_norm``
- ``layers.N.self_attn.scaling`` -> ``encoder.blocks.N.attn.query_scale``
- ``layers.N.mlp.ff0`` / ``ff1`` (the files' names; ``fc1`` / ``fc2`` in transformers' memory)
  -> ``encoder.blocks.N.mlp.fc1`` / ``fc2``
- ``layers.N.input_layernorm`` -> ``norm1``, ``post_attention_layernorm`` -> ``norm1_post``,
  ``pre_feedforward_layernorm`` -> ``norm2``, ``post_feedforward_layernorm`` -> ``norm2_post``
  (of ``encoder.blocks.N``: :class:`zoo.encoder.SandwichBlock`)
- ``output_projection_point.*`` / ``output_projection_quantiles.*`` -> ``head.point.*`` /
  ``head.quantile.*`` (``input_layer`` / ``output_layer`` / ``residual_layer`` -> ``fc1`` /
  ``fc2`` / ``skip``)

The query scale needs no rescaling: transformers multiplies the queries by
``softplus(w) * 1.442695041 / sqrt(head_dim)`` and attends with scale 1, zoo by
``softplus(w) / ln 2`` and attends with SDPA's ``head_dim ** -0.5``: the same numbers.
:func:`timesfm_args_from_hf_config` gives the matching model arguments, and refuses what zoo
does not build.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from zoo.convert.blocks import BlockLayout, convert_block_keys

_PREFIX = "model."
_RESIDUAL = {"input_layer": "fc1", "output_layer": "fc2", "residual_layer": "skip"}
_RESIDUAL_MLPS = {"input_ff_layer": "front_end.tokenizer",
                  "output_projection_point": "head.point",
                  "output_projection_quantiles": "head.quantile"}
_FIXED = {f"{hf}.{part}.{kind}": f"{ours}.{_RESIDUAL[part]}.{kind}"
          for hf, ours in _RESIDUAL_MLPS.items() for part in _RESIDUAL for kind in ("weight", "bias")}
# Per-layer sub-keys (after ``layers.N.``) -> zoo block sub-keys (zoo.encoder.SandwichBlock).
_BLOCK = {
    "input_layernorm": "norm1", "post_attention_layernorm": "norm1_post",
    "pre_feedforward_layernorm": "norm2", "post_feedforward_layernorm": "norm2_post",
    "self_attn.o_proj": "attn.proj", "self_attn.q_norm": "attn.q_norm",
    "self_attn.k_norm": "attn.k_norm", "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
    # the layout of checkpoint files (the hub's, save_pretrained's): transformers renames
    # ff0 / ff1 to fc1 / fc2 when it loads them (its conversion_mapping.py)
    "mlp.ff0": "mlp.fc1", "mlp.ff1": "mlp.fc2",
}
_QKV = {"self_attn.q_proj": 0, "self_attn.k_proj": 1, "self_attn.v_proj": 2}   # zoo: q, k, v
_LAYOUT = BlockLayout(source="HF TimesFM 2.5", fixed=_FIXED, block=_BLOCK, qkv=_QKV,
                      block_key=re.compile(r"^layers\.(\d+)\.(.+)\.(weight|bias)$"),
                      prefix=_PREFIX)
# the per-dimension query scale is a bare parameter (no .weight), outside BlockLayout's pattern
_QUERY_SCALE = re.compile(r"^(?:model\.)?layers\.(\d+)\.self_attn\.scaling$")
_ACTIVATIONS = ("swish", "silu")


def is_hf_timesfm(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for an HF TimesFM 2.5 state dict (``TimesFm2_5ModelForPrediction`` or the bare
    ``TimesFm2_5Model``); TimesFM 1.x / 2.0 (no sandwich norms) is not this format."""
    return any(k.endswith("input_ff_layer.residual_layer.weight") for k in state_dict) and \
        any(k.endswith("post_feedforward_layernorm.weight") for k in state_dict)


def convert_hf_timesfm(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename (and fuse QKV of) an HF TimesFM 2.5 state dict; raise on keys zoo does not know.

    ``output_projection_quantiles`` is always converted (to ``head.quantile``); a model built
    without the continuous quantile head (``use_continuous_quantile_head=False``) leaves it
    out when it loads (:meth:`zoo.models.timesfm.TimesFM.adapt_state_dict`).
    """
    scales, rest = {}, {}
    for key, value in state_dict.items():
        match = _QUERY_SCALE.match(key)
        if match is None:
            rest[key] = value
        else:
            scales[f"encoder.blocks.{int(match[1])}.attn.query_scale"] = value
    return {**convert_block_keys(rest, _LAYOUT), **scales}


def _refuse(what: str, value: Any, why: str) -> ValueError:
    return ValueError(f"HF TimesFM 2.5 with {what}={value!r} is not supported by zoo: {why}")


def timesfm_args_from_hf_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """zoo ``TimesFM`` arguments from an HF ``TimesFm2_5Config`` (as a dict); defaults are
    transformers' (the 200M model's).

    Refused with a clear error: grouped-query attention (``num_key_value_heads`` !=
    ``num_attention_heads``), a rotary type other than ``default``, MLP biases (``use_bias``),
    a ``decode_index`` that is not the median's, an activation other than swish / SiLU.
    Training-only ``attention_dropout`` and ``initializer_range`` are not carried; nor is
    ``max_position_embeddings`` (default rotary positions need no table).
    """
    heads = config.get("num_attention_heads", 16)
    kv_heads = config.get("num_key_value_heads", 16)
    if kv_heads != heads:
        raise _refuse("num_key_value_heads", kv_heads,
                      f"zoo's attention has as many key / value heads as query heads ({heads})")
    rope = config.get("rope_parameters") or {}
    if rope.get("rope_type", "default") != "default":
        raise _refuse("rope_type", rope["rope_type"], "zoo builds default rotary positions only")
    if config.get("use_bias", False):
        raise _refuse("use_bias", True, "zoo's TimesFM MLPs have no biases")
    act = config.get("activation", "swish")
    if act not in _ACTIVATIONS:
        raise _refuse("activation", act, "zoo's TimesFM uses swish (SiLU)")
    quantiles = [float(q) for q in config.get("quantiles",
                                              (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9))]
    decode_index = config.get("decode_index", 5)
    if 0.5 not in quantiles or decode_index != 1 + quantiles.index(0.5):
        raise _refuse("decode_index", decode_index,
                      f"zoo's point forecast is the median, output 1 + quantiles.index(0.5) of "
                      f"the mean and the quantiles {quantiles}")
    continuous = config.get("use_continuous_quantile_head", True)
    theta = rope.get("rope_theta", config.get("rope_theta", 10000.0))   # older configs: top level
    return dict(
        context_length=config.get("context_length", 16384),
        patch_len=config.get("patch_length", 32), horizon=config.get("horizon_length", 128),
        embed_dim=config.get("hidden_size", 1280), depth=config.get("num_hidden_layers", 20),
        num_heads=heads, head_dim=config.get("head_dim", 80),
        mlp_hidden=config.get("intermediate_size", 1280), quantiles=quantiles,
        quantile_horizon=config.get("output_quantile_len", 1024) if continuous else 0,
        flip_invariance=config.get("force_flip_invariance", True),
        infer_is_positive=config.get("infer_is_positive", True),
        norm_eps=config.get("rms_norm_eps", 1e-6), rope_theta=theta,
        attn_bias=config.get("attention_bias", False))

"""Hugging Face ``ASTForAudioClassification`` / ``ASTModel`` checkpoints -> zoo AST state dicts.

Two key layouts exist: transformers 4.x (``encoder.layer.N.attention.attention.query``, the
layout of the checkpoints on the hub, e.g. ``MIT/ast-finetuned-audioset-10-10-0.4593``) and
transformers 5.x (``layers.N.attention.q_proj``). Both map to the same zoo keys; separate
query / key / value projections are concatenated into zoo's fused QKV.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from zoo.convert.blocks import BlockLayout, convert_block_keys

_ROOT = "audio_spectrogram_transformer."

_EMBEDDINGS = {
    "embeddings.cls_token": "front_end.cls_token",
    "embeddings.distillation_token": "front_end.dist_token",
    "embeddings.position_embeddings": "front_end.pos_embed",
    "embeddings.patch_embeddings.projection.weight": "front_end.proj.weight",
    "embeddings.patch_embeddings.projection.bias": "front_end.proj.bias",
    "layernorm.weight": "encoder.norm.weight",
    "layernorm.bias": "encoder.norm.bias",
    "classifier.layernorm.weight": "head.fc_norm.weight",
    "classifier.layernorm.bias": "head.fc_norm.bias",
    "classifier.dense.weight": "head.fc.weight",
    "classifier.dense.bias": "head.fc.bias",
}

# Per-block sub-keys (after ``layers.N.`` / ``encoder.layer.N.``) -> zoo block sub-keys.
_BLOCK = {
    "layernorm_before": "norm1", "layernorm_after": "norm2",
    "attention.o_proj": "attn.proj", "attention.output.dense": "attn.proj",
    "mlp.fc1": "mlp.fc1", "intermediate.dense": "mlp.fc1",
    "mlp.fc2": "mlp.fc2", "output.dense": "mlp.fc2",
}
_QKV = {  # zoo's fused order is q, k, v
    "attention.q_proj": 0, "attention.k_proj": 1, "attention.v_proj": 2,
    "attention.attention.query": 0, "attention.attention.key": 1, "attention.attention.value": 2,
}
_LAYOUT = BlockLayout(
    source="HF AST", fixed=_EMBEDDINGS, block=_BLOCK, qkv=_QKV, prefix=_ROOT,
    block_key=re.compile(r"^(?:layers|encoder\.layer)\.(\d+)\.(.+)\.(weight|bias)$"))


def is_hf_ast(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for an HF AST state dict (with or without the classification wrapper)."""
    return any(k.endswith("embeddings.distillation_token") for k in state_dict) and \
        any("patch_embeddings.projection" in k for k in state_dict)


def convert_hf_ast(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename (and fuse QKV of) an HF AST state dict; raise on keys zoo does not know."""
    return convert_block_keys(state_dict, _LAYOUT)


def ast_args_from_hf_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """zoo ``AudioSpectrogramTransformer`` arguments from an HF ``ASTConfig`` (as a dict).

    The filterbank statistics live in HF's feature-extractor config, not here: pass ``mean`` /
    ``std`` yourself when they differ from AudioSet's.
    """
    if config.get("hidden_act", "gelu") != "gelu":
        raise ValueError(f"zoo's encoder uses GELU; this checkpoint uses {config['hidden_act']!r}")
    hidden = config.get("hidden_size", 768)
    args = dict(embed_dim=hidden, depth=config.get("num_hidden_layers", 12),
                num_heads=config.get("num_attention_heads", 12),
                mlp_ratio=config.get("intermediate_size", 3072) / hidden,
                qkv_bias=config.get("qkv_bias", True), patch_size=config.get("patch_size", 16),
                fstride=config.get("frequency_stride", 10), tstride=config.get("time_stride", 10),
                num_mel_bins=config.get("num_mel_bins", 128),
                target_frames=config.get("max_length", 1024),
                norm_eps=config.get("layer_norm_eps", 1e-12),
                proj_drop_rate=config.get("hidden_dropout_prob", 0.0),
                attn_drop_rate=config.get("attention_probs_dropout_prob", 0.0))
    if "id2label" in config:
        args["num_classes"] = len(config["id2label"])
    return args

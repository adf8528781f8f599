"""Hugging Face Whisper checkpoints -> zoo ``WhisperEncoderClassifier`` state dicts.

Three layouts share the encoder keys: ``WhisperForAudioClassification`` (``encoder.*``,
``projector.*``, ``classifier.*``), ``WhisperModel`` (``encoder.*``, ``decoder.*``) and
``WhisperForConditionalGeneration`` (``model.encoder.*``, ``model.decoder.*``, ``proj_out.*``:
OpenAI's hub checkpoints). The text decoder is dropped; separate query / key / value
projections are concatenated into zoo's fused QKV, with a zero key bias (Whisper's key
projection has none, and a key bias is inert under softmax: see
:class:`zoo.models.whisper.WhisperEncoderClassifier`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from zoo.convert.blocks import BlockLayout, convert_block_keys

_PREFIX = "model."
_DROPPED = ("decoder.", "proj_out.")   # the text decoder and its output projection

_FIXED = {
    "encoder.conv1.weight": "front_end.conv1.weight",
    "encoder.conv1.bias": "front_end.conv1.bias",
    "encoder.conv2.weight": "front_end.conv2.weight",
    "encoder.conv2.bias": "front_end.conv2.bias",
    "encoder.embed_positions.weight": "front_end.pos_embed",
    "encoder.layer_norm.weight": "encoder.norm.weight",
    "encoder.layer_norm.bias": "encoder.norm.bias",
    "projector.weight": "head.proj.weight",
    "projector.bias": "head.proj.bias",
    "classifier.weight": "head.fc.weight",
    "classifier.bias": "head.fc.bias",
}
# Per-layer sub-keys (after ``encoder.layers.N.``) -> zoo block sub-keys.
_BLOCK = {
    "self_attn_layer_norm": "norm1", "final_layer_norm": "norm2",
    "self_attn.out_proj": "attn.proj", "fc1": "mlp.fc1", "fc2": "mlp.fc2",
}
_QKV = {"self_attn.q_proj": 0, "self_attn.k_proj": 1, "self_attn.v_proj": 2}  # zoo: q, k, v
_LAYOUT = BlockLayout(source="HF Whisper", fixed=_FIXED, block=_BLOCK, qkv=_QKV,
                      block_key=re.compile(r"^encoder\.layers\.(\d+)\.(.+)\.(weight|bias)$"),
                      zero_key_bias=True, prefix=_PREFIX, dropped=_DROPPED)

# transformers' activation names -> zoo's (zoo.layers.ACTIVATIONS)
_ACTIVATIONS = {"gelu": "gelu", "gelu_new": "gelu_tanh", "gelu_pytorch_tanh": "gelu_tanh",
                "quick_gelu": "quick_gelu", "relu": "relu", "silu": "silu", "swish": "silu"}
_WEIGHTED_SUM = ("zoo's Whisper classifier reads the last encoder layer; checkpoints with "
                 "use_weighted_layer_sum (a learned mix of every layer) are not supported")


def is_hf_whisper(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for an HF Whisper state dict with its encoder (any of the three layouts)."""
    return any(k.endswith("encoder.conv1.weight") for k in state_dict) and \
        any(k.endswith("encoder.embed_positions.weight") for k in state_dict)


def convert_hf_whisper(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename (and fuse QKV of) an HF Whisper state dict, dropping the decoder; raise on keys
    zoo does not know."""
    if "layer_weights" in state_dict:
        raise ValueError(_WEIGHTED_SUM)
    return convert_block_keys(state_dict, _LAYOUT)


def whisper_args_from_hf_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """zoo ``WhisperEncoderClassifier`` arguments from an HF ``WhisperConfig`` (as a dict).

    The class count comes from ``id2label`` only for ``WhisperForAudioClassification`` (every
    HF config has an ``id2label``; a speech-recognition checkpoint has no classifier). The
    log-mel settings other than ``num_mel_bins`` live in HF's feature-extractor config.
    Training-only settings zoo does not carry: ``activation_dropout`` (zoo's MLP drops with
    ``dropout`` after its activation too), ``encoder_layerdrop`` and SpecAugment's masks.
    """
    if config.get("use_weighted_layer_sum"):
        raise ValueError(_WEIGHTED_SUM)
    act = config.get("activation_function", "gelu")
    if act not in _ACTIVATIONS:
        raise ValueError(f"HF Whisper activation_function {act!r} has no zoo equivalent; "
                         f"known: {sorted(_ACTIVATIONS)}")
    d_model = config.get("d_model", 384)
    positions = config.get("max_source_positions", 1500)
    dropout = config.get("dropout", 0.0)
    args: dict[str, Any] = dict(
        embed_dim=d_model, depth=config.get("encoder_layers", 4),
        num_heads=config.get("encoder_attention_heads", 6),
        mlp_hidden=config.get("encoder_ffn_dim", 1536), act=_ACTIVATIONS[act],
        num_mel_bins=config.get("num_mel_bins", 80), max_positions=positions,
        target_frames=2 * positions, proj_dim=config.get("classifier_proj_size", 256),
        pos_drop_rate=dropout, proj_drop_rate=dropout,
        attn_drop_rate=config.get("attention_dropout", 0.0))
    architectures = config.get("architectures") or ["WhisperForAudioClassification"]
    if "WhisperForAudioClassification" in architectures and config.get("id2label"):
        args["num_classes"] = len(config["id2label"])
    return args

"""Hugging Face ``PatchTSTForPrediction`` checkpoints -> zoo ``PatchTST`` state dicts.

Separate query / key / value projections are concatenated into zoo's fused QKV; per-channel
embeddings and projections (``share_embedding`` / ``share_projection`` False) are stacked
into zoo's per-channel tensors. :func:`patchtst_args_from_hf_config` gives the matching
model arguments. Not supported (refused with a clear error): ``use_cls_token``,
``channel_attention``, distribution heads (``loss="nll"``), ``bias=False``, non-GELU
activations.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch

from zoo.convert.blocks import fuse_qkv

_ENCODER = "model.encoder."
_LAYER_KEY = re.compile(r"^layers\.(\d+)\.(.+)$")
_LAYER = {
    "self_attn.out_proj": "attn.proj", "ff.0": "mlp.fc1", "ff.3": "mlp.fc2",
    "norm_sublayer1.batchnorm": "norm1", "norm_sublayer3.batchnorm": "norm2",
    "norm_sublayer1": "norm1", "norm_sublayer3": "norm2",
}
_QKV = {"self_attn.q_proj": 0, "self_attn.k_proj": 1, "self_attn.v_proj": 2}
_NORM_PARTS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def is_hf_patchtst(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for an HF ``PatchTSTForPrediction`` / ``PatchTSTModel`` state dict."""
    return any("encoder.positional_encoder.position_enc" in k for k in state_dict) and \
        any("encoder.embedder.input_embedding" in k for k in state_dict)


def _unknown(key: str) -> ValueError:
    return ValueError(f"HF PatchTST checkpoint has a key zoo does not know: {key!r}")


def _stack(parts: dict[int, torch.Tensor], what: str) -> torch.Tensor:
    if sorted(parts) != list(range(len(parts))):
        raise ValueError(f"HF PatchTST checkpoint: {what} has channels {sorted(parts)}")
    return torch.stack([parts[i] for i in range(len(parts))])


def convert_hf_patchtst(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename, fuse and stack an HF PatchTST state dict; raise on keys zoo does not know."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[int, torch.Tensor]] = {}
    per_channel: dict[str, dict[int, torch.Tensor]] = {}
    for key, value in state_dict.items():
        name = key[len("model."):] if key.startswith("model.") else key
        if name.startswith("encoder."):
            name = name[len("encoder."):]
        if name == "positional_encoder.position_enc":
            out["front_end.pos_embed"] = value
        elif name == "positional_encoder.cls_token":
            raise ValueError("HF PatchTST with use_cls_token=True is not supported by zoo")
        elif name.startswith("embedder.input_embedding."):
            rest = name[len("embedder.input_embedding."):]
            if rest in ("weight", "bias"):
                out[f"front_end.proj.{rest}"] = value
            else:
                channel, kind = rest.split(".")
                per_channel.setdefault(f"front_end.proj_{kind}", {})[int(channel)] = value
        elif name.startswith("head.projection."):
            out[f"head.proj.{name.rsplit('.', 1)[1]}"] = value
        elif name.startswith("head.projections."):
            channel, kind = name[len("head.projections."):].split(".")
            per_channel.setdefault(f"head.proj_{kind}", {})[int(channel)] = value
        elif (match := _LAYER_KEY.match(name)) is not None:
            index, sub = int(match[1]), match[2]
            module, _, kind = sub.rpartition(".")
            if module in _QKV:
                qkv.setdefault((index, kind), {})[_QKV[module]] = value
            elif module in _LAYER and kind in _NORM_PARTS:
                out[f"encoder.blocks.{index}.{_LAYER[module]}.{kind}"] = value
            elif "norm_sublayer2" in module:
                raise ValueError("HF PatchTST with channel_attention=True is not supported by zoo")
            else:
                raise _unknown(key)
        else:
            raise _unknown(key)
    out.update(fuse_qkv(qkv, "HF PatchTST"))
    for name, parts in per_channel.items():
        out[name] = _stack(parts, name)
    return out


def patchtst_args_from_hf_config(config: Mapping[str, Any]) -> dict[str, Any]:
    """zoo ``PatchTST`` arguments from an HF ``PatchTSTConfig`` (as a dict).

    Dropout maps approximately (transformers has four kinds, zoo's encoder two): the
    forecasts match in eval mode, training noise differs slightly.
    """
    for key, bad, why in (("use_cls_token", True, "a class token"),
                          ("channel_attention", True, "channel attention"),
                          ("do_mask_input", True, "input masking (pre-training)"),
                          ("bias", False, "bias-free feed-forward layers")):
        if config.get(key) == bad:
            raise ValueError(f"HF PatchTST with {key}={bad} ({why}) is not supported by zoo")
    if config.get("loss", "mse") != "mse":
        raise ValueError("zoo's PatchTST forecasts points or quantiles, not parametric "
                         "distributions; this checkpoint has a "
                         f"{config.get('distribution_output')!r} distribution head")
    if config.get("activation_function", "gelu") != "gelu":
        raise ValueError(f"zoo's encoder uses GELU; this checkpoint uses "
                         f"{config['activation_function']!r}")
    scaling = config.get("scaling", "std")
    scaling = "std" if scaling in ("std", True) else "mean" if scaling == "mean" else "none"
    d_model = config.get("d_model", 128)
    pooling = config.get("pooling_type", "mean")
    return dict(
        context_length=config.get("context_length", 32),
        horizon=config.get("prediction_length", 24),
        num_channels=config.get("num_input_channels", 1),
        patch_len=config.get("patch_length", 1), stride=config.get("patch_stride", 1),
        padding="none", scaling=scaling,
        shared_embedding=config.get("share_embedding", True),
        shared_head=config.get("share_projection", True),
        head_pool=pooling if pooling in ("mean", "max") else "flatten",
        pos_embed="sincos" if config.get("positional_encoding_type", "sincos") == "sincos"
        else "learned",
        embed_dim=d_model, depth=config.get("num_hidden_layers", 3),
        num_heads=config.get("num_attention_heads", 4),
        mlp_ratio=config.get("ffn_dim", 512) / d_model,
        norm=config.get("norm_type", "batchnorm"), pre_norm=config.get("pre_norm", True),
        norm_eps=config.get("norm_eps", 1e-5),
        drop_rate=max(config.get("path_dropout", 0.0), config.get("ff_dropout", 0.0),
                      config.get("positional_dropout", 0.0)),
        attn_drop_rate=config.get("attention_dropout", 0.0),
        head_drop_rate=config.get("head_dropout", 0.0),
    )

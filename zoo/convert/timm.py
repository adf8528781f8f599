"""timm Vision Transformer checkpoints -> zoo ``VisionTransformer`` state dicts.

A pure ``state_dict -> state_dict`` key map: the tensors are the same objects, only renamed.
Features of timm's ViT that zoo's does not build (register tokens, pre-norm, QK-norm,
attention pooling, distillation heads) are refused by name rather than silently dropped.
"""

from __future__ import annotations

from typing import Mapping

import torch

# (timm prefix, zoo prefix), matched in order; the first hit wins.
_PREFIXES = (
    ("patch_embed.proj.", "front_end.proj."),
    ("cls_token", "front_end.cls_token"),
    ("pos_embed", "front_end.pos_embed"),
    ("blocks.", "encoder.blocks."),
    ("norm.", "encoder.norm."),
    ("fc_norm.", "head.fc_norm."),
    ("head.", "head.fc."),
)

_UNSUPPORTED = ("reg_token", "norm_pre.", "dist_token", "head_dist.", "attn_pool.", "pre_logits.",
                ".q_norm.", ".k_norm.")


def is_timm_vit(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for a timm ``VisionTransformer`` state dict (keys ``patch_embed.proj.*``, ``blocks.*``)."""
    return "patch_embed.proj.weight" in state_dict and any(k.startswith("blocks.") for k in state_dict)


def convert_timm_vit(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename a timm ViT state dict's keys to zoo's; raise on keys zoo cannot represent."""
    unsupported = sorted(k for k in state_dict if any(tag in k for tag in _UNSUPPORTED))
    if unsupported:
        raise ValueError(
            "timm ViT checkpoint uses features zoo's VisionTransformer does not build: "
            + ", ".join(unsupported[:6]) + (" ..." if len(unsupported) > 6 else "")
        )
    out = {}
    for key, value in state_dict.items():
        for old, new in _PREFIXES:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            raise ValueError(f"timm ViT checkpoint has a key zoo does not know: {key!r}")
    return out

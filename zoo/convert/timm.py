"""timm Vision Transformer checkpoints -> zoo ``VisionTransformer`` state dicts.

A pure ``state_dict -> state_dict`` function. It reads both of timm's ViT layouts: the
``VisionTransformer`` family (ViT, DeiT III, DINOv2, CLIP, SigLIP, ...: blocks ``Block``,
``ResPostBlock``, ``ParallelScalingBlock``, ``ParallelThingsBlock``) and the ``Eva`` family
(rotary ViTs, DINOv3: ``gamma_1`` layer scales, split q / v biases, split q / k / v
projections, unpacked SwiGLU). Most tensors are only renamed; split projections are
concatenated into zoo's fused QKV (a missing key bias is zero, which attention cannot see:
it shifts every score of a query alike) and packed SwiGLU, and ViT-22B-style fused input
projections are split into attention and MLP parts. Features zoo does not build are refused
by name, never dropped.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

import torch

# (timm prefix, zoo prefix), matched in order; the first hit wins.
_PREFIXES = (
    ("patch_embed.proj.", "front_end.proj."),
    ("cls_token", "front_end.cls_token"),
    ("reg_token", "front_end.reg_token"),
    ("pos_embed", "front_end.pos_embed"),
    ("rope.freqs", "front_end.rope.freqs"),
    ("norm_pre.", "encoder.norm_pre."),
    ("blocks.", "encoder.blocks."),
    ("norm.", "encoder.norm."),
    ("fc_norm.", "head.fc_norm."),
    ("attn_pool.", "head.attn_pool."),
    ("head.", "head.fc."),
)

# key fragment -> the feature zoo does not build
UNSUPPORTED = {
    "dist_token": "a distillation token (DeiT distilled)",
    "head_dist.": "a distillation head (DeiT distilled)",
    "relative_position": "relative position bias",
    ".rel_pos": "relative position bias",
    "patch_embed.backbone": "a CNN stem (hybrid ViT)",
    "attn.lambda_": "differential attention",
    "attn.sub_norm": "differential attention",
    "attn.gate": "gated attention",
    "attn.norm.": "a norm on the attention output (scale_attn_inner)",
    "mlp.norm.": "a norm inside the MLP (scale_mlp)",
    "attn_pool.pos_embed": "positions inside the attention pool",
    "pre_logits.": "a pre-logits layer",
}

# Eva and block-type specific names inside one block -> zoo's
_BLOCK_RENAMES = (
    (re.compile(r"^gamma_1$"), "ls1.gamma"),
    (re.compile(r"^gamma_2$"), "ls2.gamma"),
    (re.compile(r"^in_norm\."), "norm."),                      # ParallelScalingBlock
    (re.compile(r"^q_norm\."), "attn.q_norm."),
    (re.compile(r"^k_norm\."), "attn.k_norm."),
    (re.compile(r"^attn_out_proj\."), "attn.proj."),
    (re.compile(r"^mlp_out_proj\."), "mlp.fc2."),
    (re.compile(r"^mlp_bias$"), "mlp.fc1.bias"),
    (re.compile(r"^(attns\.\d+)\.attn\."), r"\1.layer."),      # ParallelThingsBlock
    (re.compile(r"^(ffns\.\d+)\.mlp\."), r"\1.layer."),
)
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


def is_timm_vit(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for a timm ViT / Eva state dict (keys ``patch_embed.proj.*``, ``blocks.*``)."""
    return "patch_embed.proj.weight" in state_dict and any(k.startswith("blocks.") for k in state_dict)


def unsupported_features(state_dict: Mapping[str, torch.Tensor]) -> dict[str, list[str]]:
    """Feature -> the keys that show it, for every feature zoo's ViT does not build."""
    found: dict[str, list[str]] = {}
    for key in state_dict:
        for fragment, feature in UNSUPPORTED.items():
            if fragment in key:
                found.setdefault(feature, []).append(key)
    return found


def _fuse_blocks(state: dict[str, torch.Tensor]) -> None:
    """Within ``blocks.N.``: split q/k/v (weights or biases) -> ``attn.qkv``; SwiGLU
    ``fc1_g`` / ``fc1_x`` -> packed ``fc1``; fused ``in_proj`` -> ``mlp.fc1`` + ``attn.qkv``."""
    for key in [k for k in state if k.endswith("attn.q_bias")]:
        stem = key[: -len("q_bias")]
        q, v = state.pop(key), state.pop(stem + "v_bias")
        state[stem + "qkv.bias"] = torch.cat([q, torch.zeros_like(q), v])
    for key in [k for k in state if ".attn.q_proj." in k]:
        stem, kind = key.split(".attn.q_proj.")
        q_part = state.pop(key)
        k_part, v_part = (state.pop(f"{stem}.attn.{p}_proj.{kind}", None) for p in "kv")
        if k_part is None and kind == "bias":   # no key bias: zeros in the fused one
            k_part = torch.zeros_like(q_part)
        if k_part is None or v_part is None:
            raise ValueError(f"{stem}.attn has q_proj.{kind} but lacks k_proj or v_proj")
        state[f"{stem}.attn.qkv.{kind}"] = torch.cat([q_part, k_part, v_part])
    for key in [k for k in state if ".mlp.fc1_g." in k]:
        stem, kind = key.split(".mlp.fc1_g.")
        state[f"{stem}.mlp.fc1.{kind}"] = torch.cat([state.pop(key),
                                                     state.pop(f"{stem}.mlp.fc1_x.{kind}")])
    for key in [k for k in state if k.endswith(".in_proj.weight")]:
        stem = key[: -len("in_proj.weight")]
        weight = state.pop(key)
        dim = weight.shape[1]
        hidden = weight.shape[0] - 3 * dim
        state[stem + "mlp.fc1.weight"], state[stem + "attn.qkv.weight"] = weight.split([hidden, 3 * dim])
        if stem + "in_proj.bias" in state:
            state[stem + "mlp.fc1.bias"], state[stem + "attn.qkv.bias"] = \
                state.pop(stem + "in_proj.bias").split([hidden, 3 * dim])


def _rename_block_key(rest: str) -> str:
    for pattern, replacement in _BLOCK_RENAMES:
        if pattern.search(rest):
            return pattern.sub(replacement, rest)
    return rest


def convert_timm_vit(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename (and fuse) a timm ViT state dict's keys to zoo's; raise on features zoo
    cannot represent, naming them."""
    found = unsupported_features(state_dict)
    if found:
        raise ValueError("timm ViT checkpoint uses features zoo's VisionTransformer does not "
                         "build: " + "; ".join(f"{feature} ({', '.join(keys[:3])})"
                                               for feature, keys in found.items()))
    state = dict(state_dict)
    _fuse_blocks(state)
    out = {}
    for source_key, value in state.items():
        match = _BLOCK_KEY.match(source_key)
        key = (source_key if match is None
               else f"blocks.{match[1]}.{_rename_block_key(match[2])}")
        for old, new in _PREFIXES:
            if key.startswith(old):
                out[new + key[len(old):]] = value
                break
        else:
            raise ValueError(f"timm ViT checkpoint has a key zoo does not know: {key!r}")
    return out

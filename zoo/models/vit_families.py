"""timm's Vision Transformer families, by timm's names, as configurations of one
:class:`~zoo.models.vit.VisionTransformer`.

Each family is a few shared arguments and a table of (name, width, depth, heads[, extras]);
input size and patch size come from the name (``..._patch14_..._378``) unless given. The
weights of every name are timm's own (hub id ``timm/<name>.<tag>``), listed with their
preprocessing, and each name's default classes and preprocessing, in ``timm_vit_weights.json``
(written by ``tools/timm_vit_weights.py`` from timm's pretrained cfgs; the first tag is the
default). timm names zoo does not build are
recorded with the reason (:func:`zoo.registry.refused_models`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from zoo.models.vit import VisionTransformer
from zoo.registry import refuse_models, register_model

_WEIGHTS_FILE = Path(__file__).with_name("timm_vit_weights.json")
_TIMM: dict[str, dict[str, Any]] = json.loads(_WEIGHTS_FILE.read_text())

# timm's published ImageNet-1k validation top-1 for the weights zoo documented first
# (timm's results/results-imagenet.csv), shown in the cards and `zoo info`.
_TOP1 = {
    "vit_tiny_patch16_224.augreg_in21k_ft_in1k": 75.454,
    "vit_tiny_patch16_384.augreg_in21k_ft_in1k": 78.424,
    "vit_small_patch32_224.augreg_in21k_ft_in1k": 75.994,
    "vit_small_patch16_224.augreg_in21k_ft_in1k": 81.384,
    "vit_small_patch16_384.augreg_in21k_ft_in1k": 83.802,
    "vit_base_patch32_224.augreg_in21k_ft_in1k": 80.716,
    "vit_base_patch16_224.augreg2_in21k_ft_in1k": 85.096,
    "vit_base_patch16_224.augreg_in21k_ft_in1k": 84.532,
    "vit_base_patch16_384.augreg_in21k_ft_in1k": 85.996,
    "vit_large_patch16_224.augreg_in21k_ft_in1k": 85.834,
}
_REGISTERED: set[str] = set()
_LABELS = {1000: "imagenet-1k", 21843: "imagenet-21k", 11821: "imagenet-12k"}
_DEFAULT_PREPROCESS = dict(mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5), interpolation="bicubic",
                           crop_pct=0.9, crop_mode="center")


def _size_from_name(name: str) -> int | None:
    sizes = re.findall(r"_(\d{3})(?=_|$)", name)
    return int(sizes[-1]) if sizes else None


def _tuples(preprocess: dict[str, Any]) -> dict[str, Any]:
    return {k: tuple(v) if isinstance(v, list) else v for k, v in preprocess.items()}


def _weights(name: str) -> list[dict[str, Any]]:
    out = []
    for entry in _TIMM[name]["weights"]:
        w = dict(entry, preprocess=_tuples(entry["preprocess"]))
        full = f"{name}.{w['tag']}"
        w["labels"] = _LABELS.get(w.get("num_classes", 1000))
        w["description"] = w.get("description") or f"timm's {full}"
        if full in _TOP1:
            w["metrics"] = {"imagenet-1k top-1 (timm)": _TOP1[full]}
        out.append(w)
    return out


def _register(name: str, width: int, depth: int, heads: int, *, img: int | None = None,
              **args: Any) -> None:
    img = img or _size_from_name(name) or 224
    found = re.search(r"patch(\d+)", name)
    patch = int(found[1]) if found else 16
    timm_defaults = _TIMM.get(name, {"num_classes": 1000, "preprocess": {}, "weights": []})
    preprocess = {**_DEFAULT_PREPROCESS, **_tuples(timm_defaults["preprocess"]),
                  "input_size": (3, img, img)}
    _REGISTERED.add(name)
    register_model(name, modality="image", builder=VisionTransformer,
                   args=dict(img_size=img, patch_size=patch, embed_dim=width, depth=depth,
                             num_heads=heads, **args),
                   preprocess=preprocess, num_classes=timm_defaults["num_classes"],
                   weights=_weights(name) if name in _TIMM else [])


def _family(rows: Sequence[tuple], **shared: Any) -> None:
    """Register (name, width, depth, heads[, extra args]) rows with the family's ``shared``."""
    for name, width, depth, heads, *extra in rows:
        _register(name, width, depth, heads, **{**shared, **(extra[0] if extra else {})})


GIANT = dict(mlp_ratio=48 / 11)          # ViT-g/14: 1408 wide, MLP 6144
GIGANTIC = dict(mlp_ratio=64 / 13)       # ViT-G/14: 1664 wide, MLP 8192
SO400M = dict(mlp_ratio=3.7362)          # SigLIP shape-optimised 400M: MLP 4304
TANH = dict(act="gelu_tanh")

# The original ViT (Dosovitskiy et al. 2021) and its AugReg / in21k / SAM / DINO / MAE weights;
# DeiT (Touvron et al. 2021, without distillation) has the same shape.
_family([
    ("vit_tiny_patch16_224", 192, 12, 3), ("vit_tiny_patch16_384", 192, 12, 3),
    ("vit_small_patch32_224", 384, 12, 6), ("vit_small_patch32_384", 384, 12, 6),
    ("vit_small_patch16_224", 384, 12, 6), ("vit_small_patch16_384", 384, 12, 6),
    ("vit_small_patch8_224", 384, 12, 6),
    ("vit_base_patch32_224", 768, 12, 12), ("vit_base_patch32_384", 768, 12, 12),
    ("vit_base_patch16_224", 768, 12, 12), ("vit_base_patch16_384", 768, 12, 12),
    ("vit_base_patch8_224", 768, 12, 12),
    ("vit_large_patch32_224", 1024, 24, 16), ("vit_large_patch32_384", 1024, 24, 16),
    ("vit_large_patch16_224", 1024, 24, 16), ("vit_large_patch16_384", 1024, 24, 16),
    ("vit_large_patch14_224", 1024, 24, 16), ("vit_huge_patch14_224", 1280, 32, 16),
    ("vit_giant_patch14_224", 1408, 40, 16, GIANT),
    ("vit_gigantic_patch14_224", 1664, 48, 16, GIGANTIC),
    ("vit_base_patch16_224_miil", 768, 12, 12, dict(qkv_bias=False)),
    ("deit_tiny_patch16_224", 192, 12, 3), ("deit_small_patch16_224", 384, 12, 6),
    ("deit_base_patch16_224", 768, 12, 12), ("deit_base_patch16_384", 768, 12, 12),
])

# Layer scale (CaiT / DeiT III): ViT-B+ (896 wide), a 36-deep ViT-S, DeiT III (positions for
# patches only); two attention and two MLP branches per block (Touvron et al. 2022, 18x2);
# the intern300m ViT (InternVL) without a final norm.
_family([
    ("vit_base_patch16_plus_240", 896, 12, 14), ("vit_base_patch32_plus_256", 896, 12, 14),
    ("vit_small_patch16_36x1_224", 384, 36, 6),
    ("vit_small_patch16_18x2_224", 384, 18, 6, dict(branches=2)),
    ("vit_base_patch16_18x2_224", 768, 18, 12, dict(branches=2)),
    ("vit_intern300m_patch14_448", 1024, 24, 16, dict(layer_scale_init=0.1, final_norm=False)),
], layer_scale_init=1e-5)
_family([
    ("deit3_small_patch16_224", 384, 12, 6), ("deit3_small_patch16_384", 384, 12, 6),
    ("deit3_medium_patch16_224", 512, 12, 8), ("deit3_base_patch16_224", 768, 12, 12),
    ("deit3_base_patch16_384", 768, 12, 12), ("deit3_large_patch16_224", 1024, 24, 16),
    ("deit3_large_patch16_384", 1024, 24, 16), ("deit3_huge_patch14_224", 1280, 32, 16),
], no_embed_class=True, layer_scale_init=1e-6)

# Global average pooling without a class token (timm's "gap" ViTs; Beyer et al. 2022).
_GAP = dict(class_token=False, global_pool="avg", fc_norm=False)
_family([
    ("vit_medium_patch16_gap_240", 512, 12, 8), ("vit_medium_patch16_gap_256", 512, 12, 8),
    ("vit_medium_patch16_gap_384", 512, 12, 8), ("vit_betwixt_patch16_gap_256", 640, 12, 10),
], **_GAP, qkv_bias=False, layer_scale_init=1e-6)
_family([
    ("vit_base_patch16_gap_224", 768, 12, 16), ("vit_huge_patch14_gap_224", 1280, 32, 16),
    ("vit_huge_patch16_gap_448", 1280, 32, 16),
    ("vit_giant_patch16_gap_224", 1408, 40, 16, GIANT),
], **_GAP)

# Register tokens (Darcet et al. 2024) with average pooling: timm's small-to-medium ImageNet
# models; "wee"/"little" are narrow and deep, "pwee" uses ViT-22B's parallel blocks.
_REG_GAP = dict(class_token=False, no_embed_class=True, global_pool="avg", layer_scale_init=1e-5)
_family([
    ("vit_wee_patch16_reg1_gap_256", 256, 14, 4, dict(mlp_ratio=5, reg_tokens=1)),
    ("vit_pwee_patch16_reg1_gap_256", 256, 16, 4, dict(mlp_ratio=5, reg_tokens=1,
                                                       placement="parallel")),
    ("vit_little_patch16_reg1_gap_256", 320, 14, 5, dict(mlp_ratio=5.6, reg_tokens=1)),
    ("vit_little_patch16_reg4_gap_256", 320, 14, 5, dict(mlp_ratio=5.6, reg_tokens=4)),
    ("vit_medium_patch16_reg1_gap_256", 512, 12, 8, dict(reg_tokens=1)),
    ("vit_medium_patch16_reg4_gap_256", 512, 12, 8, dict(reg_tokens=4)),
    ("vit_mediumd_patch16_reg4_gap_256", 512, 20, 8, dict(reg_tokens=4)),
    ("vit_mediumd_patch16_reg4_gap_384", 512, 20, 8, dict(reg_tokens=4)),
    ("vit_betwixt_patch16_reg1_gap_256", 640, 12, 10, dict(reg_tokens=1)),
    ("vit_betwixt_patch16_reg4_gap_256", 640, 12, 10, dict(reg_tokens=4)),
    ("vit_betwixt_patch16_reg4_gap_384", 640, 12, 10, dict(reg_tokens=4)),
    ("vit_base_patch16_reg4_gap_256", 768, 12, 12, dict(reg_tokens=4, layer_scale_init=None)),
], **_REG_GAP)
# SigLIP-style shape-optimised 150M towers with registers (positions cover the registers).
_SO150M = dict(mlp_ratio=2.572, class_token=False, reg_tokens=4)
_family([
    ("vit_so150m_patch16_reg4_gap_256", 896, 18, 14, dict(global_pool="avg", fc_norm=False)),
    ("vit_so150m_patch16_reg4_gap_384", 896, 18, 14, dict(global_pool="avg", fc_norm=False)),
    ("vit_so150m_patch16_reg4_map_256", 896, 18, 14, dict(global_pool="map")),
], **_SO150M)
_family([
    ("vit_so150m2_patch16_reg1_gap_256", 832, 21, 13), ("vit_so150m2_patch16_reg1_gap_384", 832, 21, 13),
    ("vit_so150m2_patch16_reg1_gap_448", 832, 21, 13),
], mlp_ratio=34 / 13, layer_scale_init=1e-5, qkv_bias=False, class_token=False, reg_tokens=1,
   global_pool="avg")

# ViT-22B-style blocks (Dehghani et al. 2023): attention and MLP in parallel from one RMSNorm,
# q/k norms, no QKV bias, a norm before the first block.
_family([
    ("vit_base_patch16_xp_224", 768, 12, 12), ("vit_large_patch14_xp_224", 1024, 24, 16),
    ("vit_huge_patch14_xp_224", 1280, 32, 16),
], placement="parallel", norm="rmsnorm", qk_norm=True, qkv_bias=False, norm_pre=True,
   patch_bias=False, no_embed_class=True)

# Res-post-norm blocks (the norm closes each branch; Swin v2), average pooling.
_family([("vit_base_patch16_rpn_224", 768, 12, 12)], placement="res_post", qkv_bias=False,
        layer_scale_init=1e-5, class_token=False, global_pool="avg")

# CLIP / OpenCLIP image towers (Radford et al. 2021; Cherti et al. 2023): a norm before the
# first block (ln_pre, so no patch bias), LayerNorm eps 1e-5; OpenAI's weights use QuickGELU.
_CLIP = dict(norm_pre=True, patch_bias=False, norm_eps=1e-5)
_QUICK = dict(act="quick_gelu")
_family([
    ("vit_xsmall_patch16_clip_224", 256, 10, 4), ("vit_medium_patch32_clip_224", 512, 12, 8),
    ("vit_medium_patch16_clip_224", 512, 12, 8), ("vit_betwixt_patch32_clip_224", 640, 12, 10),
    ("vit_base_patch32_clip_224", 768, 12, 12), ("vit_base_patch32_clip_256", 768, 12, 12),
    ("vit_base_patch32_clip_384", 768, 12, 12), ("vit_base_patch32_clip_448", 768, 12, 12),
    ("vit_base_patch16_clip_224", 768, 12, 12), ("vit_base_patch16_clip_384", 768, 12, 12),
    ("vit_base_patch16_plus_clip_240", 896, 12, 14),
    ("vit_large_patch14_clip_224", 1024, 24, 16), ("vit_large_patch14_clip_336", 1024, 24, 16),
    ("vit_huge_patch14_clip_224", 1280, 32, 16), ("vit_huge_patch14_clip_336", 1280, 32, 16),
    ("vit_huge_patch14_clip_378", 1280, 32, 16),
    ("vit_giant_patch14_clip_224", 1408, 40, 16, GIANT),
    ("vit_gigantic_patch14_clip_224", 1664, 48, 16, GIGANTIC),
    ("vit_gigantic_patch14_clip_378", 1664, 48, 16, GIGANTIC),
    ("vit_base_patch32_clip_quickgelu_224", 768, 12, 12, _QUICK),
    ("vit_base_patch16_clip_quickgelu_224", 768, 12, 12, _QUICK),
    ("vit_large_patch14_clip_quickgelu_224", 1024, 24, 16, _QUICK),
    ("vit_large_patch14_clip_quickgelu_336", 1024, 24, 16, _QUICK),
    ("vit_huge_patch14_clip_quickgelu_224", 1280, 32, 16, _QUICK),
    ("vit_huge_patch14_clip_quickgelu_378", 1280, 32, 16, _QUICK),
    ("vit_gigantic_patch14_clip_quickgelu_224", 1664, 48, 16, {**GIGANTIC, **_QUICK}),
], **_CLIP)

# SigLIP and SigLIP 2 image towers (Zhai et al. 2023; Tschannen et al. 2025): no class token,
# attention-pool ("map") head; the "gap" variants average instead (no head norm). Some of
# SigLIP 2's towers use tanh-approximated GELU.
_MAP = dict(class_token=False, global_pool="map")
_SIGLIP_GAP = dict(class_token=False, global_pool="avg", fc_norm=False)
for _pool, _suffix in ((_MAP, "siglip"), (_SIGLIP_GAP, "siglip_gap")):
    _family([
        (f"vit_base_patch16_{_suffix}_224", 768, 12, 12), (f"vit_base_patch16_{_suffix}_256", 768, 12, 12),
        (f"vit_base_patch16_{_suffix}_384", 768, 12, 12), (f"vit_base_patch16_{_suffix}_512", 768, 12, 12),
        (f"vit_base_patch32_{_suffix}_256", 768, 12, 12, TANH),
        (f"vit_large_patch16_{_suffix}_256", 1024, 24, 16),
        (f"vit_large_patch16_{_suffix}_384", 1024, 24, 16),
        (f"vit_large_patch16_{_suffix}_512", 1024, 24, 16, TANH),
        (f"vit_so400m_patch14_{_suffix}_224", 1152, 27, 16, SO400M),
        (f"vit_so400m_patch14_{_suffix}_378", 1152, 27, 16, SO400M),
        (f"vit_so400m_patch14_{_suffix}_384", 1152, 27, 16, SO400M),
        (f"vit_so400m_patch16_{_suffix}_256", 1152, 27, 16, {**SO400M, **TANH}),
        (f"vit_so400m_patch16_{_suffix}_384", 1152, 27, 16, {**SO400M, **TANH}),
        (f"vit_so400m_patch16_{_suffix}_512", 1152, 27, 16, {**SO400M, **TANH}),
        (f"vit_giantopt_patch16_{_suffix}_256", 1536, 40, 16, TANH),
        (f"vit_giantopt_patch16_{_suffix}_384", 1536, 40, 16, TANH),
    ], **_pool)
_family([(f"vit_so400m_patch14_siglip_gap_{s}", 1152, 27, 16) for s in (448, 896)],
        **SO400M, **_SIGLIP_GAP)

# DINOv2 (Oquab et al. 2024) and with registers (Darcet et al. 2024): layer scale, 518 px
# (37 x 37 patches of 14); ViT-g uses a SwiGLU MLP (gate and value 4096 wide each).
_DINOV2_G = dict(mlp="gated", act="silu", mlp_hidden=4096)
_REG4 = dict(reg_tokens=4, no_embed_class=True)
_family([
    ("vit_small_patch14_dinov2", 384, 12, 6), ("vit_base_patch14_dinov2", 768, 12, 12),
    ("vit_large_patch14_dinov2", 1024, 24, 16), ("vit_giant_patch14_dinov2", 1536, 40, 24, _DINOV2_G),
    ("vit_small_patch14_reg4_dinov2", 384, 12, 6, _REG4),
    ("vit_base_patch14_reg4_dinov2", 768, 12, 12, _REG4),
    ("vit_large_patch14_reg4_dinov2", 1024, 24, 16, _REG4),
    ("vit_giant_patch14_reg4_dinov2", 1536, 40, 24, {**_DINOV2_G, **_REG4}),
], img=518, layer_scale_init=1e-5)
# TIPSv2 (Google): DINOv2-like towers with one register and unit layer scale, 448 px.
_family([
    ("vit_base_patch14_reg1_tipsv2", 768, 12, 12), ("vit_large_patch14_reg1_tipsv2", 1024, 24, 16),
    ("vit_so400m_patch14_reg1_tipsv2", 1152, 27, 16, dict(mlp_ratio=3.736111111111111)),
    ("vit_giant_patch14_reg1_tipsv2", 1536, 40, 24, _DINOV2_G),
], img=448, layer_scale_init=1.0, reg_tokens=1, no_embed_class=True)
# RADIO v3 / v4 (NVIDIA): registers, no final norm, 512 px.
_RADIO = dict(img=512, no_embed_class=True, final_norm=False)
_family([
    ("vit_base_patch16_radio_v3", 768, 12, 12, dict(layer_scale_init=1e-5, reg_tokens=7)),
    ("vit_large_patch16_radio_v3", 1024, 24, 16, dict(layer_scale_init=1e-5, reg_tokens=7)),
    ("vit_huge_patch16_radio_v3", 1280, 32, 16, dict(reg_tokens=7)),
    ("vit_giant_patch16_radio_v3", 1536, 40, 24, dict(reg_tokens=7)),
    ("vit_huge_patch16_radio_v4", 1280, 32, 16, dict(reg_tokens=9)),
    ("vit_so400m_patch16_radio_v4", 1152, 27, 16, dict(reg_tokens=9, mlp_ratio=3.736111111111111)),
], **_RADIO)

# --- timm's Eva-class rotary ViTs ---------------------------------------------------------------
# RoPE-ViT (Heo et al. 2024): 2-D axial rotary positions (temperature 100) or learned "mixed"
# frequencies per block and head (temperature 10), with ("ape") or without absolute positions.
_AXIAL_100 = dict(kind="axial", temperature=100.0, axes="xy")
_MIXED_10 = dict(kind="mixed", temperature=10.0, axes="xy")
for _rope, _kind in ((_AXIAL_100, "rope"), (_MIXED_10, "rope_mixed")):
    for _ape, _suffix in ((dict(pos_embed="none"), ""), (dict(no_embed_class=True), "_ape")):
        _family([
            (f"vit_small_patch16_{_kind}{_suffix}_224", 384, 12, 6),
            (f"vit_base_patch16_{_kind}{_suffix}_224", 768, 12, 12),
            (f"vit_large_patch16_{_kind}{_suffix}_224", 1024, 24, 16),
        ], rope=_rope, layer_scale_init=1e-5, **_ape)
# timm's own rotary ViTs with registers: axial rotary positions rescaled to a 16 x 16 grid,
# no absolute positions, average pooling with a head norm.
_family([
    ("vit_medium_patch16_rope_reg1_gap_256", 512, 12, 8, dict(reg_tokens=1)),
    ("vit_mediumd_patch16_rope_reg1_gap_256", 512, 20, 8, dict(reg_tokens=1, qkv_bias=False)),
    ("vit_betwixt_patch16_rope_reg4_gap_256", 640, 12, 10, dict(reg_tokens=4)),
    ("vit_base_patch16_rope_reg1_gap_256", 768, 12, 12, dict(reg_tokens=1)),
], rope=dict(kind="axial", reference=(16, 16)), pos_embed="none", class_token=False,
   layer_scale_init=1e-5, global_pool="avg")

# DINOv3 (Siméoni et al. 2025): centred, [-1, 1]-normalised axial rotary positions in the
# "half" layout (periods 100^(j/B)), a class token and 4 registers, no absolute positions,
# LayerNorm eps 1e-5, layer scale; ViT-S+/H+ use SwiGLU. LingBot's towers share the shape.
_DINOV3 = dict(rope=dict(kind="axial", coords="centered", temperature=100.0, layout="half"),
               pos_embed="none", reg_tokens=4, norm_eps=1e-5, layer_scale_init=1e-5,
               global_pool="avg", fc_norm=False)
_family([
    ("vit_small_patch16_dinov3", 384, 12, 6), ("vit_base_patch16_dinov3", 768, 12, 12),
    ("vit_large_patch16_dinov3", 1024, 24, 16),
    ("vit_small_plus_patch16_dinov3", 384, 12, 6, dict(mlp="gated", act="silu", mlp_hidden=1536)),
    ("vit_huge_plus_patch16_dinov3", 1280, 32, 20, dict(mlp="gated", act="silu", mlp_hidden=5120)),
    ("vit_7b_patch16_dinov3", 4096, 40, 32, dict(mlp="gated", act="silu", mlp_hidden=8192)),
], img=256, qkv_bias=False, **_DINOV3)
_family([
    ("vit_tiny_patch16_dinov3_qkvb", 192, 12, 3), ("vit_small_patch16_dinov3_qkvb", 384, 12, 6),
    ("vit_base_patch16_dinov3_qkvb", 768, 12, 12), ("vit_large_patch16_dinov3_qkvb", 1024, 24, 16),
    ("vit_small_plus_patch16_dinov3_qkvb", 384, 12, 6,
     dict(mlp="gated", act="silu", mlp_hidden=1536)),
    ("vit_huge_plus_patch16_dinov3_qkvb", 1280, 32, 20,
     dict(mlp="gated", act="silu", mlp_hidden=5120)),
], img=256, **_DINOV3)
_family([
    ("vit_small_patch16_lingbot", 384, 12, 6), ("vit_base_patch16_lingbot", 768, 12, 12),
    ("vit_large_patch16_lingbot", 1024, 24, 16),
    ("vit_giant_patch16_lingbot", 1536, 40, 24,
     dict(qkv_bias=False, mlp="gated", act="silu", mlp_hidden=4096)),
], img=512, **{**_DINOV3, "global_pool": "token"})

# Perception Encoder (Bolya et al. 2025): axial rotary positions on a fixed reference grid,
# learned absolute positions, a norm before the first block; "core" towers pool with an
# attention pool (8 heads) over every token, "lang" / "spatial" towers end without a norm.
_PE = dict(norm_pre=True, patch_bias=False, norm_eps=1e-5)
_PE_ROPE = dict(kind="axial", axes="xy")
_PE_MAP = dict(global_pool="map", pool_include_prefix=True, attn_pool_heads=8, attn_pool_mlp_ratio=4.0)
_PE_G = dict(mlp_ratio=35 / 6, class_token=False)
_family([
    ("vit_pe_core_tiny_patch16_384", 192, 12, 3, dict(rope={**_PE_ROPE, "reference": (24, 24), "offset": 1.0})),
    ("vit_pe_core_small_patch16_384", 384, 12, 6, dict(rope={**_PE_ROPE, "reference": (24, 24), "offset": 1.0})),
    ("vit_pe_core_base_patch16_224", 768, 12, 12, dict(rope={**_PE_ROPE, "reference": (14, 14), "offset": 1.0})),
    ("vit_pe_core_large_patch14_336", 1024, 24, 16, dict(rope={**_PE_ROPE, "reference": (24, 24), "offset": 1.0})),
    ("vit_pe_core_gigantic_patch14_448", 1536, 50, 16, dict(rope={**_PE_ROPE, "reference": (32, 32)}, **_PE_G)),
], **_PE, **_PE_MAP)
_PE_FEATURES = dict(global_pool="avg", fc_norm=False, final_norm=False)
_PE_32 = dict(rope={**_PE_ROPE, "reference": (32, 32), "offset": 1.0})
_family([
    ("vit_pe_spatial_tiny_patch16_512", 192, 12, 3, _PE_32),
    ("vit_pe_spatial_small_patch16_512", 384, 12, 6, _PE_32),
    ("vit_pe_spatial_base_patch16_512", 768, 12, 12, _PE_32),
    ("vit_pe_spatial_large_patch14_448", 1024, 24, 16, _PE_32),
    ("vit_pe_spatial_gigantic_patch14_448", 1536, 50, 16,
     dict(rope={**_PE_ROPE, "reference": (32, 32)}, layer_scale_init=0.1, **_PE_G)),
    ("vit_pe_lang_large_patch14_448", 1024, 23, 16, dict(layer_scale_init=0.1, **_PE_32)),
    ("vit_pe_lang_gigantic_patch14_448", 1536, 47, 16,
     dict(rope={**_PE_ROPE, "reference": (32, 32)}, layer_scale_init=0.1, **_PE_G)),
], **_PE, **_PE_FEATURES)

# --- timm ViT names zoo does not build, and why --------------------------------------------------
refuse_models([
    "vit_relpos_base_patch16_224", "vit_relpos_base_patch16_cls_224",
    "vit_relpos_base_patch16_clsgap_224", "vit_relpos_base_patch16_plus_240",
    "vit_relpos_base_patch16_rpn_224", "vit_relpos_base_patch32_plus_rpn_256",
    "vit_relpos_medium_patch16_224", "vit_relpos_medium_patch16_cls_224",
    "vit_relpos_medium_patch16_rpn_224", "vit_relpos_small_patch16_224",
    "vit_relpos_small_patch16_rpn_224", "vit_srelpos_medium_patch16_224",
    "vit_srelpos_small_patch16_224",
], "relative position bias is not supported (zoo's positions are absolute tables or rotary)")
refuse_models([
    "vit_base_mci_224", "vit_base_r26_s32_224", "vit_base_r50_s16_224", "vit_base_r50_s16_384",
    "vit_base_resnet26d_224", "vit_base_resnet50d_224", "vit_large_r50_s32_224",
    "vit_large_r50_s32_384", "vit_small_r26_s32_224", "vit_small_r26_s32_384",
    "vit_small_resnet26d_224", "vit_small_resnet50d_s16_224", "vit_tiny_r_s16_p8_224",
    "vit_tiny_r_s16_p8_384",
], "hybrid ViTs with a CNN (ResNet / MobileCLIP) stem are not supported; zoo's image front "
   "end is a patch embedding")
refuse_models(["vit_dlittle_patch16_reg1_gap_256", "vit_dwee_patch16_reg1_gap_256",
               "vit_dpwee_patch16_reg1_gap_256"],
              "differential attention (Ye et al. 2024) is not supported")
refuse_models(["vit_base_patch16_sapiens2", "vit_large_patch16_sapiens2",
               "vit_huge_patch16_sapiens2", "vit_giant_patch16_sapiens2", "vit_5b_patch16_sapiens2"],
              "grouped-query attention with per-block key/value heads is not supported")
refuse_models(["deit_tiny_distilled_patch16_224", "deit_small_distilled_patch16_224",
               "deit_base_distilled_patch16_224", "deit_base_distilled_patch16_384"],
              "distillation tokens and heads (DeiT distilled) are not supported; use "
              "deit_*_patch16_* or deit3_*")


def timm_names() -> list[str]:
    """The timm architecture names this module registers (for tools/timm_vit_weights.py)."""
    return sorted(_REGISTERED)

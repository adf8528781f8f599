"""Vision Transformer classifiers: image front end + shared encoder + classification head.

One class builds every ViT family timm names (see :mod:`zoo.models.vit_families`): the
original / AugReg ViT, DeiT III, DINOv2 (with registers), CLIP, SigLIP, EVA-style rotary
ViTs, DINOv3, ... differ only in the arguments below, which choose the parts. timm
checkpoints load into them unchanged (see ``zoo.convert.timm``). Dosovitskiy et al., "An Image
is Worth 16x16 Words", ICLR 2021.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from zoo.encoder import BlockConfig, Encoder, EncoderConfig
from zoo.frontends.image import ImageFrontEnd
from zoo.heads import ClassifierHead
from zoo.layers.attention import AttentionPool
from zoo.layers.pos_embed import AxialRotary2d, MixedRotary2d
from zoo.models.base import Classifier
from zoo.registry import register_model

ROPE_KINDS = ("axial", "mixed")


def make_rope(rope: Mapping[str, Any] | None, *, head_dim: int, depth: int,
              num_heads: int) -> AxialRotary2d | MixedRotary2d | None:
    """The rotary-position part named by ``rope``: ``{"kind": "axial", **AxialRotary2d
    options}`` or ``{"kind": "mixed", **MixedRotary2d options}``; None for no rope."""
    if rope is None:
        return None
    options = dict(rope)
    kind = options.pop("kind", "axial")
    if kind == "axial":
        return AxialRotary2d(head_dim, **options)
    if kind == "mixed":
        return MixedRotary2d(head_dim, depth=depth, num_heads=num_heads, **options)
    raise ValueError(f"rope kind must be one of {ROPE_KINDS}, got {kind!r}")


class VisionTransformer(Classifier):
    """Images (B, C, H, W), normalised with the cfg's mean/std -> logits (B, num_classes).

    Front end: ``class_token``, ``reg_tokens`` register tokens, ``pos_embed`` (``learned`` /
    ``none``), ``no_embed_class`` (positions for patches only), ``patch_bias``, ``rope`` (see
    :func:`make_rope`). Blocks: the :class:`~zoo.encoder.BlockConfig` fields (``norm``,
    ``norm_eps``, ``act``, ``mlp``, ``mlp_ratio`` / ``mlp_hidden``, ``qkv_bias``, ``qk_norm``,
    ``placement``, ``branches``, ``layer_scale_init``, ``attn_window``); ``norm_pre`` adds a
    norm before the first block (CLIP), ``final_norm=False`` drops the one after the last.
    Head: ``global_pool`` ``token`` (class token), ``avg`` (mean of patch tokens) or ``map``
    (attention pooling, ``attn_pool_heads`` / ``attn_pool_mlp_ratio``, default the encoder's);
    as in timm, ``fc_norm=None`` means a norm after pooling for ``avg`` and a norm on all tokens
    at the end of the encoder otherwise. ``pool_include_prefix`` pools over the prefix tokens
    too.
    """

    front_end: ImageFrontEnd

    modality = "image"

    def __init__(self, *, img_size: int | tuple[int, int] = 224, patch_size: int = 16,
                 in_chans: int = 3, num_classes: int = 1000, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 mlp_hidden: int | None = None, mlp: str = "mlp", act: str = "gelu",
                 qkv_bias: bool = True, qk_norm: bool = False, norm: str = "layernorm",
                 norm_eps: float = 1e-6, placement: str = "pre", branches: int = 1,
                 class_token: bool = True, reg_tokens: int = 0, pos_embed: str = "learned",
                 no_embed_class: bool = False, patch_bias: bool = True,
                 rope: Mapping[str, Any] | None = None, norm_pre: bool = False,
                 final_norm: bool = True, global_pool: str = "token",
                 fc_norm: bool | None = None, pool_include_prefix: bool = False,
                 attn_pool_heads: int | None = None,
                 attn_pool_mlp_ratio: float | None = None,
                 layer_scale_init: float | None = None, drop_rate: float = 0.0,
                 pos_drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 attn_window: int | None = None) -> None:
        args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if fc_norm is None:
            fc_norm = global_pool == "avg"
        block = BlockConfig(
            embed_dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio, mlp_hidden=mlp_hidden,
            mlp=mlp, act=act, qkv_bias=qkv_bias, qk_norm=qk_norm, norm=norm, norm_eps=norm_eps,
            placement=placement, branches=branches, layer_scale_init=layer_scale_init,
            proj_drop=proj_drop_rate, attn_drop=attn_drop_rate, attn_window=attn_window)
        front_end = ImageFrontEnd(
            img_size=img_size, patch_size=patch_size, in_chans=in_chans, embed_dim=embed_dim,
            class_token=class_token, reg_tokens=reg_tokens, pos_embed=pos_embed,
            no_embed_class=no_embed_class, patch_bias=patch_bias, pos_drop=pos_drop_rate,
            rope=make_rope(rope, head_dim=embed_dim // num_heads, depth=depth,
                           num_heads=num_heads))
        encoder = Encoder(EncoderConfig(block=block, depth=depth, drop_path=drop_path_rate,
                                        input_norm=norm_pre, final_norm=final_norm and not fc_norm))
        attn_pool = None
        if global_pool == "map":
            attn_pool = AttentionPool(embed_dim, num_heads=attn_pool_heads or num_heads,
                                      mlp_ratio=attn_pool_mlp_ratio or mlp_ratio, act=act,
                                      norm=norm, norm_eps=norm_eps)
        head = ClassifierHead(embed_dim, num_classes, pool=global_pool,
                              num_prefix_tokens=front_end.num_prefix_tokens,
                              include_prefix=pool_include_prefix, attn_pool=attn_pool,
                              fc_norm=fc_norm and final_norm, norm=norm, norm_eps=norm_eps,
                              drop=drop_rate)
        super().__init__(front_end, encoder, head, model_args=args)

    def input_spec(self) -> dict[str, Any]:
        return {"input_size": (self.front_end.in_chans, *self.front_end.img_size)}


# --- zoo's own small-image variants ------------------------------------------------------------

_SIZES = {
    "nano": dict(embed_dim=128, depth=6, num_heads=4),
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
}

# Small-image variants: CIFAR-sized 32x32 inputs (4x4 patches -> 64 tokens), and 16x16 inputs
# (16 tokens) for tiny images such as scikit-learn's 8x8 digits upsampled 2x.
_SMALL_IMAGE = dict(input_size=(3, 32, 32), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                    interpolation="bilinear", crop_pct=1.0)
for _size in ("nano", "tiny", "small"):
    register_model(
        f"vit_{_size}_patch4_32", modality="image", builder=VisionTransformer,
        args=dict(img_size=32, patch_size=4, **_SIZES[_size]),
        preprocess=_SMALL_IMAGE, num_classes=10,
    )
register_model(  # average pooling: +1.7 points over the class token on digits (98.6 vs 96.9, 2026-11-21)
    "vit_nano_patch4_16", modality="image", builder=VisionTransformer,
    args=dict(img_size=16, patch_size=4, global_pool="avg", **_SIZES["nano"]),
    preprocess={**_SMALL_IMAGE, "input_size": (3, 16, 16)}, num_classes=10,
    weights=[dict(  # trained by configs/image/vit_nano_digits.yaml on 2026-12-01; see model_cards/
        tag="digits", file="vit_nano_patch4_16.digits.safetensors",
        sha256="0b5949046c694d4c316916bc8cbfcf000d825833716b55ad7a7ec26a305a11c9",
        labels=tuple(str(i) for i in range(10)), license="apache-2.0",
        metrics={"digits test top-1": 98.3333, "digits test top-5": 100.0},
        description="From scratch on scikit-learn's 8x8 digits (upsampled to 16x16).",
    )],
)

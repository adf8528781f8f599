"""Vision Transformer classifiers: image front end + shared encoder + classification head.

Variants follow timm's names and shapes, so timm checkpoints load into them unchanged
(see ``zoo.convert.timm``). Dosovitskiy et al., "An Image is Worth 16x16 Words", ICLR 2021;
AugReg weights from Steiner et al., "How to train your ViT?", TMLR 2022.
"""

from __future__ import annotations

from typing import Any, Optional, Union

from zoo.encoder import Encoder, EncoderConfig
from zoo.frontends.image import ImageFrontEnd
from zoo.heads import ClassifierHead
from zoo.models.base import TokenModel
from zoo.registry import register_model


class VisionTransformer(TokenModel):
    """Images (B, C, H, W), normalised with the cfg's mean/std -> logits (B, num_classes).

    ``global_pool`` is ``"token"`` (class token) or ``"avg"`` (mean of patch tokens). As in
    timm, ``fc_norm=None`` means: a LayerNorm after pooling for ``avg``, a LayerNorm on all
    tokens at the end of the encoder for ``token``.
    """

    modality = "image"

    def __init__(self, *, img_size: Union[int, tuple[int, int]] = 224, patch_size: int = 16,
                 in_chans: int = 3, num_classes: int = 1000, embed_dim: int = 768,
                 depth: int = 12, num_heads: int = 12, mlp_ratio: float = 4.0,
                 qkv_bias: bool = True, class_token: bool = True, global_pool: str = "token",
                 fc_norm: Optional[bool] = None, layer_scale_init: Optional[float] = None,
                 drop_rate: float = 0.0, pos_drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 attn_window: Optional[int] = None) -> None:
        args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        if fc_norm is None:
            fc_norm = global_pool == "avg"
        front_end = ImageFrontEnd(img_size=img_size, patch_size=patch_size, in_chans=in_chans,
                                  embed_dim=embed_dim, class_token=class_token,
                                  pos_drop=pos_drop_rate)
        encoder = Encoder(EncoderConfig(
            embed_dim=embed_dim, depth=depth, num_heads=num_heads, mlp_ratio=mlp_ratio,
            qkv_bias=qkv_bias, proj_drop=proj_drop_rate, attn_drop=attn_drop_rate,
            drop_path=drop_path_rate, layer_scale_init=layer_scale_init, final_norm=not fc_norm,
            attn_window=attn_window,
        ))
        head = ClassifierHead(embed_dim, num_classes, pool=global_pool,
                              num_prefix_tokens=front_end.num_prefix_tokens, fc_norm=fc_norm,
                              drop=drop_rate)
        super().__init__(front_end, encoder, head, model_args=args)

    def input_spec(self) -> dict[str, Any]:
        return {"input_size": (self.front_end.in_chans, *self.front_end.img_size)}


# --- named variants --------------------------------------------------------------------------

_SIZES = {
    "nano": dict(embed_dim=128, depth=6, num_heads=4),
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
    "large": dict(embed_dim=1024, depth=24, num_heads=16),
}

# Google's AugReg weights as published by timm on the Hugging Face hub (Apache-2.0): ImageNet-21k
# pre-training, ImageNet-1k fine-tuning, inputs normalised to [-1, 1]. sha256 is left unset:
# the hub serves them by content address; files we publish ourselves carry a sha256.
_AUGREG = dict(license="apache-2.0", labels="imagenet-1k",
               description="AugReg: ImageNet-21k pre-training, ImageNet-1k fine-tuning (timm)")


def _imagenet_preprocess(size: int) -> dict[str, Any]:
    return dict(input_size=(3, size, size), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
                interpolation="bicubic", crop_pct=0.9 if size == 224 else 1.0)


def _timm_weights(name: str, tag: str, top1: float) -> dict[str, Any]:
    return dict(tag=tag, hf_hub_id=f"timm/{name}.{tag}",
                metrics={"imagenet-1k top-1 (timm)": top1}, **_AUGREG)


def _register_imagenet(size_name: str, patch: int, img: int, weights: list[tuple[str, float]]):
    name = f"vit_{size_name}_patch{patch}_{img}"
    register_model(
        name, modality="image", builder=VisionTransformer,
        args=dict(img_size=img, patch_size=patch, **_SIZES[size_name]),
        preprocess=_imagenet_preprocess(img), num_classes=1000,
        weights=[_timm_weights(name, tag, top1) for tag, top1 in weights],
    )


# top-1: timm's published ImageNet-1k validation figure for each weight (results/results-imagenet.csv).
_register_imagenet("tiny", 16, 224, [("augreg_in21k_ft_in1k", 75.454)])
_register_imagenet("tiny", 16, 384, [("augreg_in21k_ft_in1k", 78.424)])
_register_imagenet("small", 32, 224, [("augreg_in21k_ft_in1k", 75.994)])
_register_imagenet("small", 16, 224, [("augreg_in21k_ft_in1k", 81.384)])
_register_imagenet("small", 16, 384, [("augreg_in21k_ft_in1k", 83.802)])
_register_imagenet("base", 32, 224, [("augreg_in21k_ft_in1k", 80.716)])
_register_imagenet("base", 16, 224, [("augreg2_in21k_ft_in1k", 85.096),
                                      ("augreg_in21k_ft_in1k", 84.532)])
_register_imagenet("base", 16, 384, [("augreg_in21k_ft_in1k", 85.996)])
_register_imagenet("large", 16, 224, [("augreg_in21k_ft_in1k", 85.834)])

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
register_model(  # average pooling: +1.7 points over the class token on digits (98.6 vs 96.9)
    "vit_nano_patch4_16", modality="image", builder=VisionTransformer,
    args=dict(img_size=16, patch_size=4, global_pool="avg", **_SIZES["nano"]),
    preprocess={**_SMALL_IMAGE, "input_size": (3, 16, 16)}, num_classes=10,
    weights=[dict(  # trained by configs/image/vit_nano_digits.yaml; see model_cards/
        tag="digits", file="vit_nano_patch4_16.digits.safetensors",
        sha256="71d8ab573f47f7d062fec777b88f114f575428b18668b2323dddd436dee65718",
        labels=tuple(str(i) for i in range(10)), license="apache-2.0",
        metrics={"digits test top-1": 98.6111, "digits test top-5": 100.0},
        description="From scratch on scikit-learn's 8x8 digits (upsampled to 16x16).",
    )],
)

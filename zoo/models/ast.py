"""Audio Spectrogram Transformer classifiers: audio front end + shared encoder + classifier head.

Gong, Chung, Glass, "AST: Audio Spectrogram Transformer", Interspeech 2021. The encoder is the
same class as the Vision Transformer's, so an image-pretrained ViT initialises an AST directly
(``create_model("ast_tiny", encoder_from="vit_tiny_patch16_224")``): patch-embedding weights are
summed over RGB and position embeddings resampled to the frequency x time grid.
HF ``ASTForAudioClassification`` checkpoints load unchanged (see ``zoo.convert.hf_ast``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from zoo.encoder import BlockConfig, Encoder, EncoderConfig
from zoo.frontends.audio import AUDIOSET_MEAN, AUDIOSET_STD, AudioFrontEnd, FbankConfig
from zoo.heads import ClassifierHead
from zoo.layers.pos_embed import resample_pos_embed
from zoo.models.base import Classifier
from zoo.registry import register_model

logger = logging.getLogger(__name__)

class AudioSpectrogramTransformer(Classifier):
    """Waveforms (B, S) at ``sample_rate`` Hz, or normalised filterbanks (B, T, num_mel_bins)
    (what ``ASTFeatureExtractor`` returns) -> logits (B, num_classes).

    ``global_pool``: ``prefix_avg`` averages the class and distillation tokens (AST),
    ``token`` takes the class token, ``avg`` averages the patch tokens. As in AST, the encoder
    ends in a LayerNorm and the head applies another one before its linear layer.
    """

    front_end: AudioFrontEnd

    modality = "audio"

    def __init__(self, *, sample_rate: int = 16000, num_mel_bins: int = 128,
                 target_frames: int = 1024, mean: float = AUDIOSET_MEAN, std: float = AUDIOSET_STD,
                 frame_length_ms: float = 25.0, frame_shift_ms: float = 10.0,
                 patch_size: int = 16, fstride: int = 10, tstride: int = 10,
                 num_classes: int = 527, embed_dim: int = 768, depth: int = 12, num_heads: int = 12,
                 mlp_ratio: float = 4.0, qkv_bias: bool = True, num_prefix_tokens: int = 2,
                 global_pool: str = "prefix_avg", norm_eps: float = 1e-12, drop_rate: float = 0.0,
                 pos_drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 attn_window: int | None = None) -> None:
        args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        fbank = FbankConfig(sample_rate=sample_rate, num_mel_bins=num_mel_bins,
                            target_frames=target_frames, mean=mean, std=std,
                            frame_length_ms=frame_length_ms, frame_shift_ms=frame_shift_ms)
        front_end = AudioFrontEnd(fbank=fbank, patch_size=patch_size, fstride=fstride,
                                  tstride=tstride, embed_dim=embed_dim,
                                  num_prefix_tokens=num_prefix_tokens, pos_drop=pos_drop_rate)
        block = BlockConfig(embed_dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio,
                            qkv_bias=qkv_bias, norm_eps=norm_eps, proj_drop=proj_drop_rate,
                            attn_drop=attn_drop_rate, attn_window=attn_window)
        encoder = Encoder(EncoderConfig(block=block, depth=depth, drop_path=drop_path_rate))
        head = ClassifierHead(embed_dim, num_classes, pool=global_pool,
                              num_prefix_tokens=num_prefix_tokens, fc_norm=True,
                              norm_eps=norm_eps, drop=drop_rate)
        super().__init__(front_end, encoder, head, model_args=args)

    @property
    def fbank_config(self) -> FbankConfig:
        return self.front_end.fbank_config

    def filterbank(self, waveform: torch.Tensor, sample_rate: int | None = None,
                   lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The model's input features: waveforms (B, S) -> normalised filterbanks (B, T, F)."""
        return self.front_end.filterbank(waveform, sample_rate=sample_rate, lengths=lengths)

    def forward_features(self, x: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Waveform (B, S) or filterbank (B, T, F) -> encoder tokens (B, prefix + f*t, D).

        A waveform recorded at another ``sample_rate`` (Hz) is resampled to the model's.
        """
        return self.encoder(self.front_end(x, sample_rate))

    def forward(self, x: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, sample_rate))

    def input_spec(self) -> dict[str, Any]:
        c = self.fbank_config
        return {"sample_rate": c.sample_rate, "num_mel_bins": c.num_mel_bins,
                "target_frames": c.target_frames, "frame_length_ms": c.frame_length_ms,
                "frame_shift_ms": c.frame_shift_ms, "mean": c.mean, "std": c.std,
                "window": c.window}

    def init_encoder_from(self, state_dict: Mapping[str, torch.Tensor]) -> list[str]:
        """Initialise from an image model's zoo state dict (the AST recipe); returns the keys set.

        Encoder blocks and the final norm are copied; the patch projection is summed over the
        input channels (RGB -> one mel "channel"); the position grid is resampled (bicubic) to
        this model's frequency x time grid; a class token also seeds the distillation token.
        The classifier stays freshly initialised.
        """
        fe = self.front_end
        adapted = {k: v for k, v in state_dict.items() if k.startswith("encoder.")}
        proj = state_dict.get("front_end.proj.weight")
        if proj is not None:
            if proj.shape[-2:] != fe.proj.weight.shape[-2:]:
                raise ValueError(f"image patch size {tuple(proj.shape[-2:])} differs from the "
                                 f"audio patch size {tuple(fe.proj.weight.shape[-2:])}")
            adapted["front_end.proj.weight"] = proj.sum(dim=1, keepdim=True)
            adapted["front_end.proj.bias"] = state_dict["front_end.proj.bias"]
        cls = state_dict.get("front_end.cls_token")
        image_prefix = 0 if cls is None else 1
        if cls is not None and fe.cls_token is not None:
            adapted["front_end.cls_token"] = cls
            if fe.dist_token is not None:
                adapted["front_end.dist_token"] = cls.clone()
        table = state_dict.get("front_end.pos_embed")
        if table is not None:
            side = round((table.shape[1] - image_prefix) ** 0.5)
            grid = resample_pos_embed(table[:, image_prefix:], fe.grid_size, (side, side))
            prefix = table[:, :image_prefix].expand(-1, fe.num_prefix_tokens, -1) if image_prefix \
                else fe.pos_embed[:, :fe.num_prefix_tokens].detach()
            adapted["front_end.pos_embed"] = torch.cat([prefix[:, :fe.num_prefix_tokens], grid], 1)
        own = self.state_dict()
        bad = [f"{k}: {tuple(v.shape)} vs {tuple(own[k].shape)}" for k, v in adapted.items()
               if k not in own or own[k].shape != v.shape]
        if bad:
            raise ValueError("image encoder does not fit this audio model: " + "; ".join(bad[:6]))
        missing_blocks = [k for k in own if k.startswith("encoder.") and k not in adapted]
        if missing_blocks:
            raise ValueError(f"image encoder lacks {len(missing_blocks)} encoder tensors, e.g. "
                             f"{missing_blocks[0]} (different depth?)")
        self.load_state_dict(adapted, strict=False)
        return sorted(adapted)


# --- named variants --------------------------------------------------------------------------

_SIZES = {
    "tiny": dict(embed_dim=192, depth=12, num_heads=3),
    "small": dict(embed_dim=384, depth=12, num_heads=6),
    "base": dict(embed_dim=768, depth=12, num_heads=12),
}


def _preprocess(**fbank: Any) -> dict[str, Any]:
    c = FbankConfig(**fbank)
    return {"sample_rate": c.sample_rate, "num_mel_bins": c.num_mel_bins,
            "target_frames": c.target_frames, "frame_length_ms": c.frame_length_ms,
            "frame_shift_ms": c.frame_shift_ms, "mean": c.mean, "std": c.std, "window": c.window}


# The architecture as its arguments set it (HF AST folders load into it with their config).
register_model("ast", modality="audio", builder=AudioSpectrogramTransformer, args={},
               preprocess=_preprocess(), num_classes=527)

# AST's AudioSet shape: 16 kHz, 128 mel bins, 1,024 frames (10.24 s), 16x16 patches at stride 10
# (12 x 101 = 1,212 patches), class + distillation tokens, 527 AudioSet classes.
for _size, _dims in _SIZES.items():
    register_model(
        f"ast_{_size}", modality="audio", builder=AudioSpectrogramTransformer,
        args=dict(**_dims), preprocess=_preprocess(), num_classes=527,
        weights=[dict(  # MIT's AudioSet weights in HF format (BSD-3-Clause), converted on load
            tag="audioset_10_10", hf_hub_id="MIT/ast-finetuned-audioset-10-10-0.4593",
            license="bsd-3-clause", labels="audioset-527",
            metrics={"audioset eval mAP (AST paper)": 45.93},
            description="AST-Base, ImageNet-pretrained DeiT, fine-tuned on full AudioSet "
                        "(MIT, transformers hub)")] if _size == "base" else [],
    )

# Speech Commands V2 shape: 1 s clips -> 128 frames (12 x 12 = 144 patches), 35 keywords.
register_model(
    "ast_base_speech_commands", modality="audio", builder=AudioSpectrogramTransformer,
    args=dict(target_frames=128, num_classes=35, mean=-6.845978, std=5.5654526, **_SIZES["base"]),
    preprocess=_preprocess(target_frames=128, mean=-6.845978, std=5.5654526), num_classes=35,
    weights=[dict(
        tag="v2", hf_hub_id="MIT/ast-finetuned-speech-commands-v2", license="bsd-3-clause",
        metrics={"speech commands v2 test accuracy (AST paper)": 98.11},
        description="AST-Base fine-tuned on Speech Commands V2 (MIT, transformers hub)")],
)

# Small from-scratch models for short, narrow-band speech such as FSDD's 8 kHz spoken digits:
# 8 kHz, 64 mel bins, 100 frames (1.0 s); 6 blocks ("d6"). Patches tile frequency without
# overlap (stride 16: 4 rows ending exactly at the top bin, so the 3.3-4 kHz fricatives that
# tell "six" from "eight" are seen) and overlap more in time (stride 6 frames, 60 ms: 15
# columns), because spoken digits are short (0.4 s on average, some 0.2 s) and a coarser time
# grid gave a fast "three" only two columns. 4 x 15 = 60 patches. On FSDD this grid reached
# 99.3% where strides 12 (frequency) / 10 (time), 5 x 9 patches, reached 98.3%, both in about
# 20 minutes of training. Average pooling over patches learns faster here than the prefix tokens.
# mean / std: the log-mel statistics of FSDD's training clips (valid frames only).
_SPEECH_8K = dict(sample_rate=8000, num_mel_bins=64, target_frames=100, mean=-6.7716, std=3.9049)
register_model(
    "ast_tiny_d6_8k", modality="audio", builder=AudioSpectrogramTransformer,
    args=dict(embed_dim=192, depth=6, num_heads=3, norm_eps=1e-6, fstride=16, tstride=6,
              global_pool="avg", **_SPEECH_8K),
    preprocess=_preprocess(**_SPEECH_8K), num_classes=10,
    weights=[dict(  # configs/audio/ast_tiny_d6_fsdd.yaml, stored as float16 (5.5 MB); model_cards/
        tag="fsdd", file="ast_tiny_d6_8k.fsdd.safetensors",
        sha256="08718c996f7d0d6ee1af7909652f5f73fcff45a678a508ee028730e00a00e46a",
        labels=tuple(str(i) for i in range(10)), license="apache-2.0",
        metrics={"fsdd test top-1": 99.3333, "fsdd test top-5": 100.0},
        description="From scratch on the Free Spoken Digit Dataset (standard split), trained "
                    "with additive noise (robust to white and babble noise; see the card).",
    )],
)

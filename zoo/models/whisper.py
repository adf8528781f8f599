"""Whisper's audio encoder as a classifier and as a CTC encoder: log-mel front end + conv stem
+ shared encoder + transformers' ``WhisperForAudioClassification`` head.

Radford et al., "Robust Speech Recognition via Large-Scale Weak Supervision", 2022. The encoder
is zoo's shared one with pre-norm blocks (LayerNorm eps 1e-5, exact GELU, a final LayerNorm);
the front end is :class:`zoo.frontends.whisper.WhisperFrontEnd` (30 s of 16 kHz audio -> 3,000
log-mel frames -> 1,500 tokens). ``forward_features`` gives the tokens (B, N, D) a CTC head
reads; ``front_end.num_tokens(lengths)`` how many of them each clip fills.

Weights: HF ``WhisperForAudioClassification`` folders load with ``zoo.load(folder)``; the
``whisper_*`` names point at OpenAI's speech-recognition checkpoints on the hub
(``openai/whisper-*``), whose encoder is converted and whose text decoder is dropped (see
:mod:`zoo.convert.hf_whisper`). Those carry no classifier: ``pretrained=True`` alone gives the
mean-pooled encoder features (``num_classes=0``); pass ``num_classes=`` for a new classifier.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zoo.encoder import BlockConfig, Encoder, EncoderConfig
from zoo.frontends.whisper import WhisperFrontEnd, WhisperMelConfig
from zoo.heads import ClassifierHead, CTCHead
from zoo.models.base import Classifier
from zoo.models.ctc import DIGIT_TOKENS, CTCModel, check_vocabulary
from zoo.registry import register_model

logger = logging.getLogger(__name__)


class WhisperClassifierHead(ClassifierHead):
    """Tokens (B, N, D) -> mean over tokens -> projector ``proj`` (D -> ``proj_dim``) ->
    classifier ``fc`` (``proj_dim`` -> K): transformers' ``WhisperForAudioClassification``
    head. It projects every token and then averages; the average of a linear map is the map
    of the average, so zoo averages first (one projection, not N). No mask: padding frames
    count, as in transformers.

    ``num_classes=0`` drops both layers: the output is the mean-pooled tokens (B, D).
    ``pre_logits`` gives the projected mean (B, proj_dim) that the classifier reads.
    """

    def __init__(self, embed_dim: int, num_classes: int, *, proj_dim: int = 256,
                 drop: float = 0.0) -> None:
        if proj_dim < 1:
            raise ValueError(f"proj_dim must be >= 1, got {proj_dim}")
        self.proj_dim = proj_dim   # set first: ClassifierHead.__init__ builds fc from it
        super().__init__(embed_dim, num_classes, pool="avg", num_prefix_tokens=0, drop=drop)
        self.proj: nn.Module = self._make_proj() if num_classes else nn.Identity()

    def _make_proj(self) -> nn.Linear:
        proj = nn.Linear(self.embed_dim, self.proj_dim)
        nn.init.trunc_normal_(proj.weight, std=0.02)
        nn.init.zeros_(proj.bias)
        return proj

    def _make_fc(self, num_classes: int) -> nn.Module:
        if num_classes < 0:
            raise ValueError(f"num_classes must be >= 0, got {num_classes}")
        if num_classes == 0:
            return nn.Identity()
        fc = nn.Linear(self.proj_dim, num_classes)
        nn.init.trunc_normal_(fc.weight, std=0.02)
        nn.init.zeros_(fc.bias)
        return fc

    def reset(self, num_classes: int) -> None:
        """A new classifier for ``num_classes`` outputs; the projector is kept (made if there
        was none; dropped for ``num_classes=0``)."""
        self.fc = self._make_fc(num_classes)
        if num_classes == 0:
            self.proj = nn.Identity()
        elif not isinstance(self.proj, nn.Linear):
            self.proj = self._make_proj()

    def forward(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """(B, N, D) -> logits (B, K), or the projected mean (B, proj_dim) if ``pre_logits``."""
        x = self.drop(self.proj(self.pool_tokens(tokens)))
        return x if pre_logits else self.fc(x)


def whisper_encoder(*, sample_rate: int, num_mel_bins: int, target_frames: int, n_fft: int,
                    hop_length: int, max_positions: int, embed_dim: int, depth: int,
                    num_heads: int, mlp_ratio: float, mlp_hidden: int | None, act: str,
                    norm_eps: float, pos_drop_rate: float, proj_drop_rate: float,
                    attn_drop_rate: float, drop_path_rate: float, attn_window: int | None
                    ) -> tuple[WhisperFrontEnd, Encoder]:
    """Whisper's front end (log-mel, conv stem, sinusoid positions) and its encoder, built from
    the shared blocks (pre-norm, LayerNorm, final norm)."""
    mel = WhisperMelConfig(sample_rate=sample_rate, n_fft=n_fft, hop_length=hop_length,
                           num_mel_bins=num_mel_bins, target_frames=target_frames)
    front_end = WhisperFrontEnd(mel=mel, embed_dim=embed_dim, max_positions=max_positions,
                                pos_drop=pos_drop_rate)
    # Whisper's key projection has no bias; zoo's fused QKV has one bias for q, k and v.
    # A key bias b adds q . b to every score of a query, the same for all its keys, and
    # softmax ignores a constant shift: k's bias is inert, so checkpoints convert exactly
    # with it set to 0 (and its gradient is 0: it stays there).
    block = BlockConfig(embed_dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio,
                        mlp_hidden=mlp_hidden, act=act, qkv_bias=True, norm_eps=norm_eps,
                        placement="pre", proj_drop=proj_drop_rate, attn_drop=attn_drop_rate,
                        attn_window=attn_window)
    encoder = Encoder(EncoderConfig(block=block, depth=depth, drop_path=drop_path_rate,
                                    final_norm=True))
    return front_end, encoder


class WhisperEncoderClassifier(Classifier):
    """Waveforms (B, S) at ``sample_rate`` Hz, or Whisper log-mels (B, T, num_mel_bins) (what
    ``WhisperFeatureExtractor`` returns, transposed) -> logits (B, num_classes).

    ``target_frames`` (3,000: 30 s) is the chunk every waveform is padded or cut to; fewer
    frames (e.g. 1,000 for 10 s clips) fine-tune on short clips with the first positions of
    the ``max_positions`` (1,500) table. ``mlp_hidden`` overrides ``mlp_ratio`` (Whisper: 4 D).
    """

    front_end: WhisperFrontEnd
    head: WhisperClassifierHead

    modality = "audio"

    def __init__(self, *, sample_rate: int = 16000, num_mel_bins: int = 80,
                 target_frames: int = 3000, n_fft: int = 400, hop_length: int = 160,
                 max_positions: int = 1500, num_classes: int = 2, proj_dim: int = 256,
                 embed_dim: int = 512, depth: int = 6, num_heads: int = 8, mlp_ratio: float = 4.0,
                 mlp_hidden: int | None = None, act: str = "gelu", norm_eps: float = 1e-5,
                 drop_rate: float = 0.0, pos_drop_rate: float = 0.0, proj_drop_rate: float = 0.0,
                 attn_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 attn_window: int | None = None) -> None:
        args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        front_end, encoder = whisper_encoder(**{k: v for k, v in args.items()
                                                if k not in ("num_classes", "proj_dim", "drop_rate")})
        head = WhisperClassifierHead(embed_dim, num_classes, proj_dim=proj_dim, drop=drop_rate)
        super().__init__(front_end, encoder, head, model_args=args)

    @property
    def fbank_config(self) -> WhisperMelConfig:
        """The log-mel settings (named as AST's, so audio tools read either model)."""
        return self.front_end.mel_config

    def filterbank(self, waveform: torch.Tensor, sample_rate: int | None = None,
                   lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The model's input features: waveforms (B, S) -> Whisper log-mel (B, T, F)."""
        return self.front_end.log_mel(waveform, sample_rate=sample_rate, lengths=lengths)

    def forward_features(self, x: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """Waveform (B, S) or log-mel (B, T, F) -> encoder tokens (B, ceil(T / 2), D), one per
        20 ms. A waveform recorded at another ``sample_rate`` (Hz) is resampled."""
        return self.encoder(self.front_end(x, sample_rate))

    def forward(self, x: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        return self.forward_head(self.forward_features(x, sample_rate))

    def input_spec(self) -> dict[str, Any]:
        c = self.fbank_config
        return {"sample_rate": c.sample_rate, "num_mel_bins": c.num_mel_bins, "n_fft": c.n_fft,
                "hop_length": c.hop_length, "target_frames": c.target_frames}

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fit a checkpoint's head to this one: an encoder-only checkpoint (OpenAI's speech
        recognisers) gets a freshly initialised projector when this model classifies; a
        projector is left out when this model has none (``num_classes=0``)."""
        state_dict = super().adapt_state_dict(state_dict)
        has_proj = any(k.startswith("head.proj.") for k in state_dict)
        if isinstance(self.head.proj, nn.Linear) and not has_proj:
            logger.info("the checkpoint has no classification head: new projector and classifier")
            fresh = self.head._make_proj()
            state_dict.update({f"head.proj.{k}": v for k, v in fresh.state_dict().items()})
        elif not isinstance(self.head.proj, nn.Linear) and has_proj:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("head.proj.")}
        return state_dict


# --- named variants ----------------------------------------------------------------------------


class WhisperCTC(CTCModel):
    """Whisper's encoder as a CTC speech recogniser: waveforms (B, S) at 16 kHz [+ samples per
    clip], or log-mels (B, T, num_mel_bins) [+ frames per clip] -> (log-probabilities
    (B, N, V + 1), tokens per clip (B,)), one token per 20 ms, blank at index 0.

    The encoder reads the whole chunk (``target_frames``; 30 s by default) as Whisper was
    trained, padding included (no mask, so pretrained encoders see what they saw in training);
    each clip's tokens are the first ``ceil(frames / 2)``. :meth:`transcribe` cuts longer
    recordings into ``chunk_seconds`` windows (at most the chunk).
    """

    front_end: WhisperFrontEnd

    def __init__(self, *, tokens: Sequence[str] = DIGIT_TOKENS, separator: str = " ",
                 sample_rate: int = 16000, num_mel_bins: int = 80, target_frames: int = 3000,
                 n_fft: int = 400, hop_length: int = 160, max_positions: int = 1500,
                 embed_dim: int = 512, depth: int = 6, num_heads: int = 8,
                 mlp_ratio: float = 4.0, mlp_hidden: int | None = None, act: str = "gelu",
                 norm_eps: float = 1e-5, drop_rate: float = 0.0, pos_drop_rate: float = 0.0,
                 proj_drop_rate: float = 0.0, attn_drop_rate: float = 0.0,
                 drop_path_rate: float = 0.0, attn_window: int | None = None,
                 chunk_seconds: float = 30.0, chunk_overlap_seconds: float = 2.0) -> None:
        args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        args["tokens"] = list(tokens)
        vocabulary, separator = check_vocabulary(tokens, separator)
        front_end, encoder = whisper_encoder(**{
            k: v for k, v in args.items() if k not in ("tokens", "separator", "drop_rate",
                                                       "chunk_seconds", "chunk_overlap_seconds")})
        chunk = front_end.mel_config.chunk_seconds
        if chunk_seconds > chunk:
            raise ValueError(f"chunk_seconds ({chunk_seconds:g}) must fit the model's "
                             f"{chunk:g} s chunk (target_frames {target_frames})")
        head = CTCHead(embed_dim, len(vocabulary), drop=drop_rate)
        super().__init__(front_end, encoder, head, args, tokens=vocabulary, separator=separator)

    @property
    def fbank_config(self) -> WhisperMelConfig:
        return self.front_end.mel_config

    @property
    def token_samples(self) -> int:
        """Samples per token: 2 hops (320 at 16 kHz, 20 ms)."""
        return 2 * self.fbank_config.hop_length

    def forward_tokens(self, x: torch.Tensor, lengths: torch.Tensor | None = None,
                       sample_rate: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms (B, S) or log-mels (B, T, F) -> encoder tokens (B, N, D) and tokens per
        clip (B,). ``lengths``: valid samples (waveforms) or frames (log-mels) per clip."""
        c = self.fbank_config
        if x.ndim == 2:
            if lengths is None:
                lengths = torch.full((x.shape[0],), x.shape[1], dtype=torch.long)
            rate = sample_rate or c.sample_rate
            frames = c.num_frames(torch.div(lengths.cpu() * c.sample_rate, rate,
                                            rounding_mode="floor"))
            x = self.front_end.features(x, sample_rate, lengths)
        else:
            frames = torch.full((x.shape[0],), x.shape[1]) if lengths is None else lengths.cpu()
        tokens = self.encoder(self.front_end(x))
        counts = torch.div(frames.clamp(max=x.shape[1]) + 1, 2, rounding_mode="floor")
        return tokens, counts

    def input_spec(self) -> dict[str, Any]:
        c = self.fbank_config
        return {"sample_rate": c.sample_rate, "num_mel_bins": c.num_mel_bins, "n_fft": c.n_fft,
                "hop_length": c.hop_length, "target_frames": c.target_frames,
                "tokens": list(self.tokens), "separator": repr(self.separator)}

# Encoder sizes of OpenAI's checkpoints (the decoders, dropped here, match them).
_SIZES = {
    "tiny": dict(embed_dim=384, depth=4, num_heads=6),
    "base": dict(embed_dim=512, depth=6, num_heads=8),
    "small": dict(embed_dim=768, depth=12, num_heads=12),
    "medium": dict(embed_dim=1024, depth=24, num_heads=16),
    "large": dict(embed_dim=1280, depth=32, num_heads=20),
}
_PARAMS = {"tiny": "39M", "base": "74M", "small": "244M", "medium": "769M", "large": "1550M"}


def _preprocess(num_mel_bins: int = 80) -> dict[str, Any]:
    c = WhisperMelConfig(num_mel_bins=num_mel_bins)
    return {"sample_rate": c.sample_rate, "num_mel_bins": c.num_mel_bins, "n_fft": c.n_fft,
            "hop_length": c.hop_length, "target_frames": c.target_frames}


def _openai(tag: str, repo: str, size: str, what: str) -> dict[str, Any]:
    return dict(tag=tag, hf_hub_id=f"openai/{repo}", license="apache-2.0", num_classes=0,
                description=f"OpenAI Whisper {what} ({_PARAMS[size]} parameters with the decoder), "
                            "trained for speech recognition on 680,000 h of web audio; encoder "
                            "only: the text decoder is dropped, pass num_classes= for a new "
                            "classifier (transformers hub)")


# The architecture as its arguments set it (HF Whisper folders load into it with their config).
register_model("whisper", modality="audio", builder=WhisperEncoderClassifier, args={},
               preprocess=_preprocess(), num_classes=2)

# 30 s chunks of 16 kHz audio, 80 mel bins (128 from large-v3 on), 1,500 tokens.
_VARIANTS = [  # (name, size, hub repo, mel bins, English-only repo or None)
    ("whisper_tiny", "tiny", "whisper-tiny", 80, "whisper-tiny.en"),
    ("whisper_base", "base", "whisper-base", 80, "whisper-base.en"),
    ("whisper_small", "small", "whisper-small", 80, "whisper-small.en"),
    ("whisper_medium", "medium", "whisper-medium", 80, "whisper-medium.en"),
    ("whisper_large", "large", "whisper-large", 80, None),
    ("whisper_large_v2", "large", "whisper-large-v2", 80, None),
    ("whisper_large_v3", "large", "whisper-large-v3", 128, None),
    # turbo prunes the decoder to 4 layers; its encoder is large-v3's shape
    ("whisper_large_v3_turbo", "large", "whisper-large-v3-turbo", 128, None),
]
for _name, _size, _repo, _bins, _en_repo in _VARIANTS:
    _label = _repo.removeprefix("whisper-")
    _weights = [_openai("openai", _repo, _size, f"{_label}, multilingual")]
    if _en_repo is not None:
        _weights.append(_openai("openai_en", _en_repo, _size, f"{_label}, English only"))
    register_model(_name, modality="audio", builder=WhisperEncoderClassifier,
                   args=dict(num_mel_bins=_bins, **_SIZES[_size]),
                   preprocess=_preprocess(_bins), num_classes=2, weights=_weights)
    # the same encoder under a CTC head (fresh: OpenAI's checkpoints carry none), for speech
    # recognition; the default vocabulary is the digits: pass tokens= for another
    register_model(f"{_name}_ctc", modality="speech", builder=WhisperCTC,
                   args=dict(num_mel_bins=_bins, **_SIZES[_size]),
                   preprocess=_preprocess(_bins), num_classes=0,
                   weights=[{**w, "description": w["description"].split("; encoder only")[0]
                             + "; encoder only, under a new CTC head (train it before use)"}
                            for w in _weights])

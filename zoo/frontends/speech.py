"""Speech front end for recognition: waveform (B, S) -> log-mel (B, T, F) -> 4x subsampled
tokens (B, T / 4, D), any length.

The filterbank is zoo's batched Kaldi fbank (:class:`zoo.frontends.audio.Filterbank`: 25 ms
frames every 10 ms), normalised as ``(x - mean) / (2 * std)`` with the training data's
statistics, but not padded or cut to a fixed length: recognition reads the whole utterance.
A convolutional stem (two 3x3 convolutions with stride 2 over time and frequency, GELU after
each, as the Conformer / ESPnet ``Conv2dSubsampling``) turns every 4 frames into one token
(40 ms); a linear layer maps its channels x frequencies to the encoder width. Positions are
rotary (:class:`zoo.layers.pos_embed.Rotary1d`), so the encoder takes any number of tokens.

Padding never leaks into the valid tokens: frames past a clip's end are zeroed before the stem
and the stem's intermediate time steps past the clip's end before its second convolution, so
a clip gives the same tokens alone as inside a padded batch.
"""

from __future__ import annotations

import logging

import torch
import torch.nn.functional as F
from torch import nn

from zoo.frontends.audio import FbankConfig, Filterbank, prepare_waveforms
from zoo.frontends.base import FrontEnd
from zoo.layers.pos_embed import Rotary1d, RotaryTable

logger = logging.getLogger(__name__)

SUBSAMPLING = 4   # frames per token
# Filterbanks are zero-padded to a multiple of this many frames before the stem: the CPU
# convolution kernels keep buffers per input shape, and utterances of every length would
# otherwise grow memory without bound (measured: +2 GB over 300 lengths of one conv layer).
FRAME_BUCKET = 32


def _halve(length: torch.Tensor) -> torch.Tensor:
    """Output steps of a kernel-3, stride-2, padding-1 convolution over ``length`` steps."""
    return torch.div(length - 1, 2, rounding_mode="floor") + 1


def _zero_past(x: torch.Tensor, lengths: torch.Tensor, dim: int) -> torch.Tensor:
    """``x`` with the steps at or past each row's length along ``dim`` set to zero."""
    steps = torch.arange(x.shape[dim], device=x.device)
    keep = steps[None, :] < lengths.to(x.device)[:, None]                      # (B, T)
    shape = [x.shape[0]] + [1] * (x.ndim - 1)
    shape[dim] = x.shape[dim]
    return x * keep.view(shape).to(x.dtype)


def normalised_log_mel(filterbank: Filterbank, waveform: torch.Tensor,
                       lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Waveforms (B, S) at the filterbank's rate -> log-mel (B, T, F) normalised as
    ``(x - mean) / (2 * std)``, zero past each clip's frames, and frames per clip (B,)."""
    c = filterbank.config
    log_mel, frames = filterbank.log_mel(waveform, lengths)
    log_mel = log_mel.sub_(c.mean).div_(2 * c.std)
    return _zero_past(log_mel, frames, 1), frames


class SpeechFrontEnd(FrontEnd):
    """Waveforms (B, S) [+ samples per clip] or normalised filterbanks (B, T, F) [+ frames per
    clip] -> tokens (B, N, D) and tokens per clip (B,), N = ceil(T / 4).

    ``stem_channels``: the convolutional stem's width. ``head_dim``: the encoder's head size
    (for the rotary table, ``rope_theta`` its base).
    """

    def __init__(self, *, fbank: FbankConfig, embed_dim: int, head_dim: int,
                 stem_channels: int = 64, rope_theta: float = 10000.0,
                 conv_pos_kernel: int = 0, conv_pos_groups: int = 16) -> None:
        super().__init__()
        self.fbank_config = fbank
        self.filterbank = Filterbank(fbank)
        self.stem1 = nn.Conv2d(1, stem_channels, kernel_size=3, stride=2, padding=1)
        self.stem2 = nn.Conv2d(stem_channels, stem_channels, kernel_size=3, stride=2, padding=1)
        bins = ((fbank.num_mel_bins - 1) // 2 - 1) // 2 + 1      # after the two stride-2 convs
        self.proj = nn.Linear(stem_channels * bins, embed_dim)
        self.rotary = Rotary1d(head_dim, theta=rope_theta)
        # wav2vec 2.0's convolutional positions: a grouped convolution over the tokens, added
        # to them; it hands the encoder local context from the start
        self.conv_pos = nn.Conv1d(embed_dim, embed_dim, conv_pos_kernel,
                                  padding=conv_pos_kernel // 2, groups=conv_pos_groups) \
            if conv_pos_kernel else None
        if conv_pos_kernel and conv_pos_kernel % 2 == 0:
            raise ValueError(f"conv_pos_kernel must be odd (centred), got {conv_pos_kernel}")
        self.grid_size = (0,)   # any number of tokens

    no_weight_decay_names = ()

    @staticmethod
    def token_lengths(frames: torch.Tensor) -> torch.Tensor:
        """Tokens (B,) the stem makes from ``frames`` (B,) frames."""
        return _halve(_halve(frames)).clamp(min=0)

    def features(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None, *,
                 sample_rate: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Waveforms (B, S) in [-1, 1] -> normalised log-mel (B, T, F) (zero past each clip's
        frames) and frames per clip (B,). ``lengths``: valid samples per clip (at
        ``sample_rate``, the model's rate if None; other rates are resampled)."""
        waveform, lengths = prepare_waveforms(waveform, lengths, sample_rate,
                                              self.fbank_config.sample_rate)
        return normalised_log_mel(self.filterbank, waveform, lengths)

    def forward(self, fbank: torch.Tensor, frames: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Normalised filterbanks (B, T, F) and frames per clip (B,) -> tokens (B, N, D) and
        tokens per clip (B,); N covers T padded to a multiple of :data:`FRAME_BUCKET`."""
        bins = self.fbank_config.num_mel_bins
        if fbank.ndim != 3 or fbank.shape[-1] != bins:
            raise ValueError(f"expected filterbanks (B, T, {bins}), got shape {tuple(fbank.shape)}")
        batch, num_frames, _ = fbank.shape
        if frames is None:
            frames = torch.full((batch,), num_frames, dtype=torch.long)
        frames = frames.to(torch.long).cpu()
        if num_frames % FRAME_BUCKET:
            fbank = F.pad(fbank, (0, 0, 0, FRAME_BUCKET - num_frames % FRAME_BUCKET))
        x = F.gelu(self.stem1(fbank.unsqueeze(1)))                 # (B, C, T/2, F/2)
        middle = _halve(frames)
        if bool((middle < x.shape[2]).any()):
            x = _zero_past(x, middle, 2)
        x = F.gelu(self.stem2(x))                                   # (B, C, T/4, F/4)
        tokens = self.proj(x.permute(0, 2, 1, 3).flatten(2))        # (B, N, D)
        lengths = self.token_lengths(frames)
        if self.conv_pos is not None:
            if bool((lengths < tokens.shape[1]).any()):
                tokens = _zero_past(tokens, lengths, 1)
            tokens = tokens + F.gelu(self.conv_pos(tokens.transpose(1, 2))).transpose(1, 2)
        return tokens, lengths

    def rope_for(self, num_tokens: int, device: torch.device) -> RotaryTable:
        """The rotary table for ``num_tokens`` tokens."""
        return self.rotary.table(num_tokens, device=device)

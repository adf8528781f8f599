"""Whisper's front end: waveform (B, S) -> log-mel (B, T, F) -> conv stem -> tokens (B, T / 2, D).

The log-mel spectrogram is Whisper's (Radford et al., "Robust Speech Recognition via Large-Scale
Weak Supervision", 2022), as transformers' ``WhisperFeatureExtractor`` computes it: each clip is
zero-padded or cut to a 30 s chunk (480,000 samples at 16 kHz), framed by a centred STFT
(``n_fft`` 400 = 25 ms, hop 160 = 10 ms, reflect padding of ``n_fft / 2`` at both ends, periodic
Hann window), turned into a power spectrum, projected onto Slaney-normalised triangular filters
on the Slaney mel scale (0-8 kHz; 80 bins, 128 for large-v3), and the last of the 3,001 frames is
dropped. Then ``log10(max(mel, 1e-10))``, floored per clip at its maximum - 8, and scaled as
``(x + 4) / 4``.

It runs batched in torch and only where it has to: a frame whose whole 25 ms window lies in a
clip's zero padding has power 0 everywhere, so its log-mel is the constant ``log10(1e-10)`` = -10
before the floor. Only the frames that touch a clip's samples (about ``length / hop + 2``) go
through the FFT; the rest of the 3,000 are filled with the floored constant. A batch of 1-10 s
clips thus costs a fraction of the 30 s the extractor transforms for each.
"""

from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass
from typing import Any, overload

import torch
import torch.nn.functional as F
from torch import nn

from zoo.frontends.audio import prepare_waveforms
from zoo.frontends.base import FrontEnd, PatchAxis
from zoo.layers.drop import Dropout

logger = logging.getLogger(__name__)

_POWER_FLOOR = 1e-10       # mel power is clamped here before log10
_DYNAMIC_RANGE = 8.0       # log10 units kept below each clip's maximum (80 dB)


@dataclass(frozen=True)
class WhisperMelConfig:
    """Settings of :class:`WhisperLogMel`; defaults are Whisper's (16 kHz, 80 bins, 30 s).

    ``target_frames`` frames of ``hop_length`` samples make the chunk every clip is padded or
    cut to (3,000 x 160 = 480,000 samples, 30 s). The mel filters span ``f_min``-``f_max`` Hz
    (Whisper: 0-8,000 Hz at any rate).
    """

    sample_rate: int = 16000
    n_fft: int = 400
    hop_length: int = 160
    num_mel_bins: int = 80
    target_frames: int = 3000
    f_min: float = 0.0
    f_max: float = 8000.0

    def __post_init__(self) -> None:
        if min(self.sample_rate, self.n_fft, self.hop_length, self.num_mel_bins,
               self.target_frames) <= 0:
            raise ValueError("sample_rate, n_fft, hop_length, num_mel_bins and target_frames "
                             "must be positive")
        if not 0 <= self.f_min < self.f_max <= self.sample_rate / 2:
            raise ValueError(f"need 0 <= f_min < f_max <= Nyquist ({self.sample_rate / 2:g} Hz), "
                             f"got {self.f_min:g} and {self.f_max:g} Hz")
        if self.chunk_samples <= self.n_fft // 2:
            raise ValueError(f"a {self.target_frames}-frame chunk ({self.chunk_samples} samples) "
                             f"is shorter than half an FFT window ({self.n_fft // 2} samples)")

    @property
    def chunk_samples(self) -> int:
        """Samples every clip is padded or cut to (480,000: 30 s at 16 kHz)."""
        return self.target_frames * self.hop_length

    @property
    def chunk_seconds(self) -> float:
        return self.chunk_samples / self.sample_rate

    @property
    def min_samples(self) -> int:
        """The shortest clip with a frame centred on it: one sample."""
        return 1

    @property
    def window_samples(self) -> int:
        """Samples the model sees at once: the chunk (480,000 at 16 kHz)."""
        return self.chunk_samples

    @property
    def frame_shift_ms(self) -> float:
        """Time between frames in ms (10 at 16 kHz)."""
        return 1000 * self.hop_length / self.sample_rate

    @property
    def frame_length_ms(self) -> float:
        """The FFT window in ms (25 at 16 kHz)."""
        return 1000 * self.n_fft / self.sample_rate

    @overload
    def num_frames(self, num_samples: int) -> int: ...
    @overload
    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor: ...
    def num_frames(self, num_samples: int | torch.Tensor) -> int | torch.Tensor:
        """Frames centred on a clip's samples (an int, or a tensor of clip lengths): the frames
        ``WhisperFeatureExtractor``'s attention mask marks, ``ceil(length / hop)``, at most
        ``target_frames``; the rest show the padding."""
        if isinstance(num_samples, torch.Tensor):
            frames = torch.div(num_samples + self.hop_length - 1, self.hop_length,
                               rounding_mode="floor")
            return frames.clamp(0, self.target_frames)
        return max(0, min(self.target_frames, -(-num_samples // self.hop_length)))

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _hz_to_mel(freq: float) -> float:
    """Slaney's mel scale: linear below 1 kHz (3 mel per 200 Hz), logarithmic above."""
    if freq < 1000.0:
        return 3.0 * freq / 200.0
    return 15.0 + math.log(freq / 1000.0) * (27.0 / math.log(6.4))


def _mel_to_hz(mel: torch.Tensor) -> torch.Tensor:
    log_part = 1000.0 * torch.exp((mel - 15.0) * (math.log(6.4) / 27.0))
    return torch.where(mel >= 15.0, log_part, 200.0 * mel / 3.0)


def slaney_mel_filters(config: WhisperMelConfig) -> torch.Tensor:
    """Triangular filters (n_fft // 2 + 1, num_mel_bins), equally spaced on Slaney's mel scale
    between ``f_min`` and ``f_max``, each scaled by 2 / its width in Hz (Slaney's equal-area
    normalisation), as librosa's ``filters.mel(norm="slaney")``. Computed in float64."""
    f64 = torch.float64
    bins = config.n_fft // 2 + 1
    fft_hz = torch.linspace(0, config.sample_rate // 2, bins, dtype=f64)[:, None]       # (K, 1)
    mels = torch.linspace(_hz_to_mel(config.f_min), _hz_to_mel(config.f_max),
                          config.num_mel_bins + 2, dtype=f64)
    edges = _mel_to_hz(mels)
    lower, centre, upper = edges[:-2], edges[1:-1], edges[2:]                           # (M,)
    rising = (fft_hz - lower) / (centre - lower)
    falling = (upper - fft_hz) / (upper - centre)
    filters = torch.clamp(torch.minimum(rising, falling), min=0.0)                      # (K, M)
    return (filters * (2.0 / (upper - lower))).float()


def _silent_log_mel() -> float:
    """log10 of the power floor as float32 arithmetic gives it (-10 up to rounding)."""
    return float(torch.full((8,), _POWER_FLOOR, device="cpu").log10()[0])


class WhisperLogMel(nn.Module):
    """Waveforms (B, S) in [-1, 1] at ``config.sample_rate`` Hz -> Whisper log-mel
    (B, target_frames, num_mel_bins), time-major (``WhisperFeatureExtractor`` returns the
    transpose, (B, bins, frames)).

    ``lengths`` (B,) gives each clip's samples when a batch of different lengths was
    right-padded: samples past a clip's length are read as silence, as the extractor pads each
    clip. No parameters: the window and filters are non-persistent buffers.
    """

    window: torch.Tensor
    mel_filters: torch.Tensor

    def __init__(self, config: WhisperMelConfig | None = None) -> None:
        super().__init__()
        self.config = config or WhisperMelConfig()
        self.silent = _silent_log_mel()
        self.register_buffer("window", self._window(), persistent=False)
        self.register_buffer("mel_filters", slaney_mel_filters(self.config), persistent=False)

    def _window(self) -> torch.Tensor:
        return torch.hann_window(self.config.n_fft, periodic=True)

    def init_non_persistent_buffers(self) -> None:
        """Compute the window and filters again (a model built on the meta device has none)."""
        self.window, self.mel_filters = self._window(), slaney_mel_filters(self.config)

    @overload
    def num_frames(self, num_samples: int) -> int: ...
    @overload
    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor: ...
    def num_frames(self, num_samples: int | torch.Tensor) -> int | torch.Tensor:
        """Frames that show a clip of ``num_samples`` samples (see
        :meth:`WhisperMelConfig.num_frames`)."""
        return self.config.num_frames(num_samples)

    def forward(self, waveform: torch.Tensor, *, sample_rate: int | None = None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) -> (B, target_frames, num_mel_bins); resamples if ``sample_rate`` (Hz)
        differs from the config's."""
        waveform, lengths = prepare_waveforms(waveform, lengths, sample_rate,
                                              self.config.sample_rate)
        return self._log_mel(waveform.float(), self._lengths(waveform, lengths))

    def _lengths(self, waveform: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor:
        batch, num_samples = waveform.shape
        if lengths is None:
            return torch.full((batch,), num_samples, dtype=torch.long)
        lengths = torch.as_tensor(lengths).to(torch.long).cpu()
        if lengths.shape != (batch,):
            raise ValueError(f"lengths must have shape ({batch},), one per clip; got "
                             f"{tuple(lengths.shape)}")
        if bool((lengths < 0).any()) or bool((lengths > num_samples).any()):
            raise ValueError(f"lengths must lie in 0..{num_samples}, the samples of the batch; "
                             f"got {lengths.tolist()}")
        return lengths

    def _padded(self, x: torch.Tensor, valid: torch.Tensor, end: int) -> torch.Tensor:
        """Each clip silent past its length and reflected at the chunk's edges, as the centred
        STFT reads it: (B, pad + end) samples from position -pad, one copy of ``x``."""
        c = self.config
        chunk, pad = c.chunk_samples, c.n_fft // 2
        n = min(x.shape[1], end, chunk)
        padded = x.new_empty(x.shape[0], pad + end)
        padded[:, pad:pad + n] = x[:, :n]
        padded[:, pad + n:] = 0.0
        if bool((valid < n).any()):
            past = torch.arange(n, device=x.device)[None] >= valid.to(x.device)[:, None]
            padded[:, pad:pad + n].masked_fill_(past, 0.0)
        padded[:, :pad] = padded[:, pad + 1:2 * pad + 1].flip(1)   # sample -k is sample k
        if end > chunk:                                             # chunk + k is chunk - 2 - k
            tail = end - chunk
            padded[:, pad + chunk:] = padded[:, pad + chunk - 1 - tail:pad + chunk - 1].flip(1)
        return padded

    def _log_mel(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        c = self.config
        batch, target, bins = x.shape[0], c.target_frames, c.num_mel_bins
        chunk, hop, n_fft, pad = c.chunk_samples, c.hop_length, c.n_fft, c.n_fft // 2
        valid = lengths.clamp(max=chunk)                                         # (B,) samples
        # frame t reads samples t * hop - pad ... t * hop - pad + n_fft - 1: it touches the clip
        # while t * hop - pad < length; later frames read only padding (power 0, log-mel known)
        needed = torch.div(valid + pad + hop - 1, hop, rounding_mode="floor").clamp(max=target)
        frames_n, total = int(needed.max()), int(needed.sum())
        # samples those frames read, exclusive (at least pad + 1: the start's reflection)
        end = max((frames_n - 1) * hop + n_fft - pad, pad + 1)
        frames = self._padded(x, valid, end).unfold(1, n_fft, hop)               # (B, n, W) view
        dense = total == batch * frames_n
        # few large operations, no per-clip loop: each is one parallel region
        if dense:
            windowed = (frames * self.window).view(-1, n_fft)                    # (N, W)
        else:                     # each clip's own frames only
            touched = (torch.arange(frames_n)[None] < needed[:, None]).to(x.device)
            windowed = frames[touched].mul_(self.window)
        spectrum = torch.fft.rfft(windowed)                                      # (N, K)
        grad = torch.is_grad_enabled() and spectrum.requires_grad
        re_im = torch.view_as_real(spectrum)
        squares = re_im.square() if grad else re_im.square_()
        mel = (squares[..., 0] + squares[..., 1]) @ self.mel_filters            # (N, M)
        log_mel = mel.clamp(min=_POWER_FLOOR).log10() if grad else \
            mel.clamp_(min=_POWER_FLOOR).log10_()
        clip = torch.arange(batch, device=x.device).repeat_interleave(needed.to(x.device))
        peak = log_mel.new_full((batch,), -math.inf).scatter_reduce(
            0, clip, log_mel.amax(dim=1), reduce="amax")                         # (B,)
        # Whisper's dynamic range and scaling: max(x, peak - 8), then (x + 4) / 4
        floor = (peak - _DYNAMIC_RANGE)[clip, None]
        values = (torch.maximum(log_mel, floor) + 4.0) / 4.0 if grad else \
            log_mel.clamp_(min=floor).add_(4.0).mul_(0.25)
        if total == batch * target:
            return values.view(batch, target, bins)
        silent = ((peak - _DYNAMIC_RANGE).clamp(min=self.silent) + 4.0) / 4.0    # (B,)
        out = values.new_empty(batch, target, bins)
        if dense:
            out[:, :frames_n] = values.view(batch, frames_n, bins)
            out[:, frames_n:] = silent[:, None, None]
            return out
        out.copy_(silent[:, None, None].expand_as(out))
        rows = torch.arange(batch)[:, None] * target + torch.arange(frames_n)[None]   # (B, n)
        return out.view(-1, bins).index_copy_(0, rows[touched.cpu()].to(x.device), values) \
            .view_as(out)


class WhisperFrontEnd(FrontEnd):
    """Waveform (B, S) or Whisper log-mel (B, T, F) -> tokens (B, ceil(T / 2), D).

    Whisper's stem: ``gelu(conv1)`` (kernel 3, padding 1, F -> D), ``gelu(conv2)`` (kernel 3,
    stride 2, padding 1: one token per 20 ms), plus fixed sinusoidal positions. The position
    table ``pos_embed`` (``max_positions``, D) is a buffer saved with the weights (transformers
    stores it as ``embed_positions.weight``), so converted checkpoints carry it exactly; a
    shorter log-mel (fewer than ``target_frames`` frames, for short-clip fine-tuning) uses its
    first rows. No prefix tokens.
    """

    grid_size: tuple[int]
    pos_embed: torch.Tensor

    def __init__(self, *, mel: WhisperMelConfig, embed_dim: int = 512, max_positions: int = 1500,
                 pos_drop: float = 0.0) -> None:
        super().__init__()
        tokens = self.tokens_for(mel.target_frames)
        if tokens > max_positions:
            raise ValueError(f"{mel.target_frames} frames make {tokens} tokens, more than the "
                             f"{max_positions} positions (max_positions)")
        self.mel_config = mel
        self.log_mel = WhisperLogMel(mel)
        self.max_positions = max_positions
        self.grid_size = (tokens,)
        self.conv1 = nn.Conv1d(mel.num_mel_bins, embed_dim, kernel_size=3, padding=1)
        self.conv2 = nn.Conv1d(embed_dim, embed_dim, kernel_size=3, stride=2, padding=1)
        self.register_buffer("pos_embed", whisper_sinusoids(max_positions, embed_dim))
        self.pos_drop = Dropout(pos_drop)

    no_weight_decay_names = ()

    @staticmethod
    def tokens_for(frames: int) -> int:
        """Tokens the stride-2 convolution makes from ``frames`` frames: ceil(frames / 2)."""
        return (frames - 1) // 2 + 1 if frames > 0 else 0

    def num_tokens(self, num_samples: torch.Tensor) -> torch.Tensor:
        """Tokens that show each clip of ``num_samples`` (B,) samples (for CTC lengths)."""
        frames = self.mel_config.num_frames(num_samples)
        return torch.div(frames + 1, 2, rounding_mode="floor")

    def features(self, x: torch.Tensor, sample_rate: int | None = None,
                 lengths: torch.Tensor | None = None) -> torch.Tensor:
        """The log-mel (B, T, F) of a waveform (B, S), or ``x`` if it is one already.

        Outside training, a waveform longer than the chunk is cut with a warning that says how
        much the model sees.
        """
        c = self.mel_config
        if x.ndim == 2:
            rate = sample_rate or c.sample_rate
            if not self.training and x.shape[-1] * c.sample_rate // rate > c.chunk_samples:
                logger.warning("a %.2f s waveform: the model sees its first %.2f s (%d frames)",
                               x.shape[-1] / rate, c.chunk_seconds, c.target_frames)
            return self.log_mel(x, sample_rate=sample_rate, lengths=lengths)
        bins = c.num_mel_bins
        if x.ndim != 3 or x.shape[-1] != bins:
            raise ValueError(
                f"expected a waveform (B, S) or a log-mel (B, T, {bins}), got shape "
                f"{tuple(x.shape)}; mix multi-channel audio (B, C, S) down with x.mean(dim=1)"
            )
        if sample_rate is not None and sample_rate != c.sample_rate:
            raise ValueError("sample_rate applies to waveforms; a log-mel cannot be resampled")
        return x

    def patch_axes(self, shape: tuple[int, ...]) -> tuple[PatchAxis, ...]:
        """Log-mel (B, T, F): token i covers frames 2i and 2i + 1. Waveform (B, S): token i
        covers the samples of those frames' hops, ``2 * hop`` samples from ``2 * i * hop``."""
        if len(shape) == 2:
            hop = self.mel_config.hop_length
            return (PatchAxis(1, 0, 2 * hop, 2 * hop, shape[1], self.grid_size[0]),)
        frames = shape[1]
        return (PatchAxis(1, 0, 2, 2, frames, self.tokens_for(frames)),)

    def forward(self, x: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        mel = self.features(x, sample_rate)                                       # (B, T, F)
        tokens = self.tokens_for(mel.shape[1])
        if tokens > self.max_positions:
            raise ValueError(f"a {mel.shape[1]}-frame log-mel makes {tokens} tokens, more than "
                             f"the model's {self.max_positions} positions")
        h = F.gelu(self.conv1(mel.transpose(1, 2).to(self.conv1.weight.dtype)))
        h = F.gelu(self.conv2(h)).transpose(1, 2)                                 # (B, N, D)
        return self.pos_drop(h + self.pos_embed[:tokens].to(h.dtype))


def whisper_sinusoids(length: int, dim: int, max_timescale: float = 10000.0) -> torch.Tensor:
    """Whisper's fixed positions (length, dim): sines in the first half of the channels, cosines
    in the second, at ``dim / 2`` timescales geometric from 1 to ``max_timescale``."""
    if dim % 2 or dim < 4:
        raise ValueError(f"sinusoidal positions need an even width of at least 4, got {dim}")
    half = dim // 2
    inv_timescales = torch.exp(-(math.log(max_timescale) / (half - 1)) * torch.arange(half))
    angles = torch.arange(length)[:, None] * inv_timescales[None]
    return torch.cat([angles.sin(), angles.cos()], dim=1)

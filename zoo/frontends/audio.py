"""Audio front end: waveform (B, S) -> log-mel filterbank (B, T, F) -> overlapping patches -> tokens.

The filterbank is Kaldi's ``compute-fbank-feats`` as AST uses it (Gong et al., "AST: Audio
Spectrogram Transformer", Interspeech 2021, through ``torchaudio.compliance.kaldi.fbank``):
25 ms frames every 10 ms (``snip_edges``), per-frame DC removal, pre-emphasis 0.97, a symmetric
Hann ("hanning") window, a power spectrum zero-padded to the next power of two, triangular
filters on Kaldi's mel scale (``htk_compat`` ordering, no energy term), natural log floored at
float32 epsilon, no dither. Unlike Kaldi's per-clip routine it runs a whole batch at once.
Frames are then padded (zeros, in the log domain, as ``ASTFeatureExtractor`` does) or cut to
``target_frames`` and normalised as ``(x - mean) / (2 * std)`` with the dataset's statistics.

Per-frame DC removal makes AST's waveform mean subtraction (``waveform - waveform.mean()``) a
no-op, so it is not repeated here.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass
from typing import Any, overload

import torch
import torch.nn.functional as F
from torch import nn

from zoo.frontends.base import FrontEnd, PatchAxis
from zoo.layers.drop import Dropout
from zoo.layers.pos_embed import resample_pos_embed

logger = logging.getLogger(__name__)

# AudioSet statistics of the log-mel filterbank, from the AST repository (also HF's
# ASTFeatureExtractor defaults): inputs are normalised as (x - mean) / (2 * std).
AUDIOSET_MEAN = -4.2677393
AUDIOSET_STD = 4.5689974
_LOG_FLOOR = torch.finfo(torch.float32).eps  # Kaldi floors energies at float epsilon
WINDOWS = ("hanning", "hamming", "povey", "rectangular")


@dataclass(frozen=True)
class FbankConfig:
    """Settings of :class:`Filterbank`; defaults are AST's AudioSet front end (16 kHz, 128 bins).

    ``high_freq`` <= 0 is an offset from the Nyquist frequency (Kaldi's convention).
    ``mean`` / ``std`` are the dataset's log-mel statistics; ``normalize=False`` skips them.
    """

    sample_rate: int = 16000
    num_mel_bins: int = 128
    frame_length_ms: float = 25.0
    frame_shift_ms: float = 10.0
    low_freq: float = 20.0
    high_freq: float = 0.0
    preemphasis: float = 0.97
    window: str = "hanning"
    target_frames: int = 1024
    mean: float = AUDIOSET_MEAN
    std: float = AUDIOSET_STD
    normalize: bool = True

    def __post_init__(self) -> None:
        if self.window not in WINDOWS:
            raise ValueError(f"window must be one of {WINDOWS}, got {self.window!r}")
        if self.sample_rate <= 0 or self.num_mel_bins <= 0 or self.target_frames <= 0:
            raise ValueError("sample_rate, num_mel_bins and target_frames must be positive")
        if self.std <= 0:
            raise ValueError(f"std must be positive, got {self.std}")

    @property
    def frame_length(self) -> int:
        """Samples per frame (400 at 16 kHz)."""
        return int(self.sample_rate * self.frame_length_ms / 1000)

    @property
    def frame_shift(self) -> int:
        """Samples between frame starts (160 at 16 kHz)."""
        return int(self.sample_rate * self.frame_shift_ms / 1000)

    @property
    def n_fft(self) -> int:
        return 1 << (self.frame_length - 1).bit_length()

    @property
    def min_samples(self) -> int:
        """The shortest clip with a frame: one frame (200 samples at 8 kHz)."""
        return self.frame_length

    @property
    def window_samples(self) -> int:
        """Samples the ``target_frames`` frames cover (8,120 at 8 kHz and 100 frames)."""
        return self.frame_length + (self.target_frames - 1) * self.frame_shift

    @overload
    def num_frames(self, num_samples: int) -> int: ...
    @overload
    def num_frames(self, num_samples: torch.Tensor) -> torch.Tensor: ...
    def num_frames(self, num_samples: int | torch.Tensor) -> int | torch.Tensor:
        """Frames Kaldi makes from ``num_samples`` (an int, or a tensor of clip lengths);
        ``snip_edges``: whole frames only."""
        frames = (num_samples - self.frame_length) // self.frame_shift + 1
        return frames.clamp(min=0) if isinstance(frames, torch.Tensor) else max(0, frames)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _mel(freq: torch.Tensor) -> torch.Tensor:
    return 1127.0 * torch.log1p(freq / 700.0)


def kaldi_mel_banks(config: FbankConfig) -> torch.Tensor:
    """Triangular filters (n_fft // 2 + 1, num_mel_bins), equally spaced on Kaldi's mel scale.

    The Nyquist bin gets no weight, as in Kaldi.
    """
    nyquist = config.sample_rate / 2
    high = config.high_freq if config.high_freq > 0 else nyquist + config.high_freq
    if not 0 <= config.low_freq < high <= nyquist:
        raise ValueError(f"need 0 <= low_freq < high_freq <= Nyquist ({nyquist} Hz), got "
                         f"{config.low_freq} and {high} Hz")
    num_fft_bins = config.n_fft // 2
    mel_low, mel_high = _mel(torch.tensor(config.low_freq, dtype=torch.float64)), \
        _mel(torch.tensor(high, dtype=torch.float64))
    delta = (mel_high - mel_low) / (config.num_mel_bins + 1)
    edges = mel_low + delta * torch.arange(config.num_mel_bins + 2, dtype=torch.float64)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]  # (M, 1)
    fft_mel = _mel(torch.arange(num_fft_bins, dtype=torch.float64)
                   * config.sample_rate / config.n_fft)[None]                     # (1, K)
    up, down = (fft_mel - left) / (center - left), (right - fft_mel) / (right - center)
    banks = torch.clamp(torch.minimum(up, down), min=0.0)                         # (M, K)
    return F.pad(banks, (0, 1)).T.float()                                         # (K + 1, M)


def _window(config: FbankConfig) -> torch.Tensor:
    n = config.frame_length
    if config.window == "hanning":
        return torch.hann_window(n, periodic=False, dtype=torch.float64).float()
    if config.window == "hamming":
        return torch.hamming_window(n, periodic=False, alpha=0.54, beta=0.46,
                                    dtype=torch.float64).float()
    if config.window == "povey":
        return torch.hann_window(n, periodic=False, dtype=torch.float64).pow(0.85).float()
    return torch.ones(n)


class Filterbank(nn.Module):
    """Waveforms (B, S) in [-1, 1] at ``config.sample_rate`` -> normalised log-mel (B, T, F).

    ``T`` is ``config.target_frames``: shorter clips are zero-padded in the log domain, longer
    ones cut at the end. ``lengths`` (B,) gives each clip's valid samples when a batch of
    different-length clips was right-padded; frames past a clip's end are treated as padding.
    No parameters: the window and mel matrix are non-persistent buffers (they follow
    ``.to(device)`` but stay out of state dicts).
    """

    def __init__(self, config: FbankConfig) -> None:
        super().__init__()
        self.config = config
        self.register_buffer("window", _window(config), persistent=False)
        self.register_buffer("mel_banks", kaldi_mel_banks(config), persistent=False)

    def init_non_persistent_buffers(self) -> None:
        """Compute the window and mel matrix again (a model built on the meta device has no
        values in them)."""
        self.window, self.mel_banks = _window(self.config), kaldi_mel_banks(self.config)

    def log_mel(self, waveform: torch.Tensor, lengths: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, S) -> un-normalised log-mel (B, T_all, F) and valid frames per clip (B,)."""
        c = self.config
        batch, num_samples = waveform.shape
        if lengths is None:
            lengths = torch.full((batch,), num_samples, dtype=torch.long)
        lengths = lengths.to(torch.long).cpu()
        if (lengths > num_samples).any():
            raise ValueError(f"lengths exceed the {num_samples} samples of the batch")
        short = (lengths < c.frame_length).nonzero().flatten().tolist()
        if short:
            raise ValueError(
                f"clip(s) {short} have {lengths[short].tolist()} samples, shorter than one "
                f"{c.frame_length_ms:g} ms frame ({c.frame_length} samples at {c.sample_rate} Hz); "
                "pad them with silence or drop them"
            )
        waveform = waveform.float()
        W = c.frame_length
        raw = waveform.unfold(1, W, c.frame_shift)                         # (B, T, W), a view
        mean = raw.mean(dim=-1, keepdim=True)                              # (B, T, 1)
        # frames are written straight into the zero-padded FFT input (B, T, n_fft); out= cannot
        # record gradients, so a waveform that needs them takes a copy instead
        padded = raw.new_empty(batch, raw.shape[1], c.n_fft)
        padded[..., W:] = 0.0
        frames = padded[..., :W]
        p = c.preemphasis
        if p:
            # Kaldi: per frame, DC removal then y[n] = x[n] - p * x[n - 1] (x[-1] = x[0]). For
            # n >= 1 that is (w[n] - p * w[n - 1]) - (1 - p) * mean: the filter runs once over
            # the waveform, not over every (overlapping) frame; column 0 is set apart.
            emphasised = torch.cat([waveform[:, :1], waveform[:, 1:] - p * waveform[:, :-1]], 1)
            centred = emphasised.unfold(1, W, c.frame_shift), (1.0 - p) * mean
        else:
            centred = raw, mean
        if waveform.requires_grad:
            frames.copy_(centred[0] - centred[1])
        else:
            torch.sub(*centred, out=frames)
        if p:
            frames[..., 0] = (1.0 - p) * (raw[..., 0] - mean[..., 0])
        frames.mul_(self.window)
        spectrum = torch.fft.rfft(padded)                                   # (B, T, K + 1)
        power = spectrum.real.square() + spectrum.imag.square()
        log_mel = (power @ self.mel_banks).clamp_min_(_LOG_FLOOR).log_()   # (B, T, F)
        return log_mel, c.num_frames(lengths)

    def forward(self, waveform: torch.Tensor, *, sample_rate: int | None = None,
                lengths: torch.Tensor | None = None) -> torch.Tensor:
        """(B, S) -> (B, target_frames, num_mel_bins); resamples if ``sample_rate`` differs."""
        c = self.config
        waveform, lengths = prepare_waveforms(waveform, lengths, sample_rate, c.sample_rate)
        log_mel, valid = self.log_mel(waveform, lengths)
        log_mel = log_mel[:, :c.target_frames]          # cut first: padding is written once, below
        if bool((valid < log_mel.shape[1]).any()):      # frames past a clip's end are padding
            frames = torch.arange(log_mel.shape[1])[None, :]
            log_mel = log_mel.masked_fill((frames >= valid[:, None]).to(log_mel.device)[..., None],
                                          0.0)
        if not c.normalize:
            return fit_frames(log_mel, c.target_frames)
        # AST's normalisation (x - mean) / (2 * std), in place on this fresh tensor; padding
        # frames are 0 in the log domain, i.e. -mean / (2 * std) once normalised
        log_mel = log_mel.sub_(c.mean).div_(2 * c.std)
        return fit_frames(log_mel, c.target_frames, value=-c.mean / (2 * c.std))


def prepare_waveforms(waveform: torch.Tensor, lengths: torch.Tensor | None,
                      sample_rate: int | None, model_rate: int
                      ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Check a batch of mono waveforms (B, S) (clear errors for other shapes and for NaN / Inf
    samples) and resample it from ``sample_rate`` to ``model_rate`` (Hz) when they differ,
    scaling ``lengths`` (valid samples per clip) with it."""
    if waveform.ndim != 2:
        raise ValueError(
            f"expected mono waveforms (B, S), got shape {tuple(waveform.shape)}; add a batch "
            "dimension with x[None] for one clip, and mix stereo down with x.mean(dim=1)"
        )
    # one cheap sum first: NaN / Inf anywhere makes it non-finite
    if not torch.isfinite(waveform.sum()) and not torch.isfinite(waveform).all():
        raise ValueError("waveform holds NaN or Inf samples")
    if sample_rate is not None and sample_rate != model_rate:
        import torchaudio.functional as AF

        logger.info("resampling audio from %d Hz to the model's %d Hz", sample_rate, model_rate)
        waveform = AF.resample(waveform.float(), sample_rate, model_rate)
        if lengths is not None:
            lengths = torch.div(lengths * model_rate, sample_rate, rounding_mode="floor")
    return waveform, lengths


def fit_frames(fbank: torch.Tensor, target_frames: int, value: float = 0.0) -> torch.Tensor:
    """Pad (at the end, with ``value``) or cut (B, T, F) to (B, target_frames, F)."""
    frames = fbank.shape[1]
    if frames >= target_frames:
        return fbank[:, :target_frames]
    out = fbank.new_empty(fbank.shape[0], target_frames, fbank.shape[2])
    out[:, :frames] = fbank          # each element written once: no fill of the whole output
    out[:, frames:] = value
    return out


class AudioFrontEnd(FrontEnd):
    """Waveform (B, S) or normalised filterbank (B, T, F) -> tokens (B, prefix + f * t, D).

    The filterbank, seen as a one-channel (F, T) image, is cut into ``patch_size`` squares that
    overlap: ``fstride`` / ``tstride`` apart in frequency / time (AST: 16x16 patches, stride 10,
    an overlap of 6). Prefix tokens are a class token and, with ``num_prefix_tokens=2``, AST's
    distillation token. Position embeddings cover the frequency x time grid ``grid_size``; a
    filterbank of another length resamples them on the fly.
    """

    grid_size: tuple[int, int]

    def __init__(self, *, fbank: FbankConfig, patch_size: int = 16, fstride: int = 10,
                 tstride: int = 10, embed_dim: int = 768, num_prefix_tokens: int = 2,
                 pos_drop: float = 0.0) -> None:
        super().__init__()
        if num_prefix_tokens not in (0, 1, 2):
            raise ValueError(f"num_prefix_tokens must be 0, 1 or 2, got {num_prefix_tokens}")
        self.fbank_config = fbank
        self.filterbank = Filterbank(fbank)
        self.patch_size, self.fstride, self.tstride = patch_size, fstride, tstride
        self.grid_size = self._grid_for(fbank.target_frames)
        self.num_prefix_tokens = num_prefix_tokens
        self.proj = nn.Conv2d(1, embed_dim, kernel_size=patch_size, stride=(fstride, tstride))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if num_prefix_tokens else None
        self.dist_token = nn.Parameter(torch.zeros(1, 1, embed_dim)) if num_prefix_tokens == 2 else None
        num_positions = num_prefix_tokens + self.grid_size[0] * self.grid_size[1]
        self.pos_embed = nn.Parameter(torch.zeros(1, num_positions, embed_dim))
        self.pos_drop = Dropout(pos_drop)
        nn.init.trunc_normal_(self.pos_embed, std=0.02)
        for token in (self.cls_token, self.dist_token):
            if token is not None:
                nn.init.trunc_normal_(token, std=0.02)

    no_weight_decay_names = ("pos_embed", "cls_token", "dist_token")

    def _grid_for(self, frames: int) -> tuple[int, int]:
        p, bins = self.patch_size, self.fbank_config.num_mel_bins
        if frames < p or bins < p:
            raise ValueError(f"a {frames}-frame x {bins}-bin filterbank is smaller than one "
                             f"{p}x{p} patch")
        return (bins - p) // self.fstride + 1, (frames - p) // self.tstride + 1

    def position_table(self, grid: tuple[int, int]) -> torch.Tensor:
        """The (1, prefix + f*t, D) position table for a frequency x time ``grid``."""
        return resample_pos_embed(self.pos_embed, grid, self.grid_size,
                                  num_prefix_tokens=self.num_prefix_tokens)

    def features(self, x: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        """The normalised filterbank (B, T, F) for a waveform (B, S), or ``x`` if already one.

        The model sees ``target_frames`` frames: outside training, a longer waveform is cut with
        a warning that says how much is used (``zoo.predict.predict_files`` classifies long
        clips by sliding windows instead).
        """
        if x.ndim == 2:
            c = self.fbank_config
            rate = sample_rate or c.sample_rate
            if not self.training and c.num_frames(x.shape[-1] * c.sample_rate // rate) > c.target_frames:
                used = (c.frame_length + (c.target_frames - 1) * c.frame_shift) / c.sample_rate
                logger.warning("a %.2f s waveform: the model sees its first %.3f s (%d frames); "
                               "zoo.predict.predict_files classifies long clips by sliding "
                               "windows", x.shape[-1] / rate, used, c.target_frames)
            return self.filterbank(x, sample_rate=sample_rate)
        bins = self.fbank_config.num_mel_bins
        if x.ndim != 3 or x.shape[-1] != bins:
            raise ValueError(
                f"expected a waveform (B, S) or a filterbank (B, T, {bins}), got shape "
                f"{tuple(x.shape)}; mix multi-channel audio (B, C, S) down with x.mean(dim=1)"
            )
        if sample_rate is not None and sample_rate != self.fbank_config.sample_rate:
            raise ValueError("sample_rate applies to waveforms; a filterbank cannot be resampled")
        return x

    def patch_axes(self, shape: tuple[int, ...]) -> tuple[PatchAxis, ...]:
        """Filterbanks (B, T, F): patch rows over the mel bins F, patch columns over frames T."""
        _, frames, bins = shape
        f, t = self._grid_for(frames)
        p = self.patch_size
        return PatchAxis(2, 0, self.fstride, p, bins, f), PatchAxis(1, 0, self.tstride, p, frames, t)

    def forward(self, x: torch.Tensor, sample_rate: int | None = None) -> torch.Tensor:
        fbank = self.features(x, sample_rate)                               # (B, T, F)
        grid = self._grid_for(fbank.shape[1])
        tokens = self.proj(fbank.unsqueeze(1).transpose(2, 3))             # (B, D, f, t)
        tokens = tokens.flatten(2).transpose(1, 2)                          # (B, f*t, D)
        prefix = [t.expand(tokens.shape[0], -1, -1) for t in (self.cls_token, self.dist_token)
                  if t is not None]
        tokens = torch.cat([*prefix, tokens], dim=1)
        return self.pos_drop(tokens + self.position_table(grid))

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor], prefix: str) -> None:
        """Resample a checkpoint's position table (in place) when its time length differs.

        The checkpoint's grid is inferred from its table size, with the frequency bins fixed.
        """
        key = prefix + "pos_embed"
        table = state_dict.get(key)
        if table is None or table.shape == self.pos_embed.shape:
            return
        old_tokens = table.shape[1] - self.num_prefix_tokens
        f_dim = self.grid_size[0]
        if old_tokens <= 0 or old_tokens % f_dim:
            return  # leave it; the strict load names the mismatch
        state_dict[key] = resample_pos_embed(table, self.grid_size, (f_dim, old_tokens // f_dim),
                                             num_prefix_tokens=self.num_prefix_tokens)


"""Additive noise for waveforms: white, coloured (pink, brown) and babble noise, mixed at a
chosen signal-to-noise ratio; :class:`NoiseAugment` draws kind and SNR per clip for training.

SNR. For a clean clip x and noise n over the clip's valid samples V (its first ``length``
samples; the padding after them is not part of the clip),

    SNR_dB = 10 * log10(P_x / P_n),   P_x = mean_{s in V} x[s]^2,   P_n = mean_{s in V} n[s]^2,

so :func:`mix_at_snr` scales the noise by sqrt(P_x / (P_n * 10^(SNR_dB / 10))) and adds it
over V only: padding stays as it was (0). The signal power is the mean over the whole clip,
pauses included (not an active-speech level), which is what a user who adds noise to a file
gets. A silent clip (P_x = 0) or silent noise (P_n = 0) has no defined SNR: the clip is
returned unchanged.

Noise. Every generator returns (B, S) float32 with unit RMS per row (mean square 1 over S
samples); only the ratio of powers matters once mixed. ``white`` is i.i.d. Gaussian. Coloured
noise has a power spectrum ~ 1 / f^exponent (0 white, 1 pink: -3 dB per octave, 2 brown:
-6 dB per octave), made by shaping Gaussian noise's spectrum in the FFT domain (amplitude
~ f^(-exponent / 2), the DC bin set to 0); it is circular over S samples.

Babble. Each row sums ``talkers`` clips drawn without replacement from a pool (P, S_pool) of
waveforms with valid lengths (P,) (e.g. other speakers' recordings). Each drawn clip is scaled to
unit RMS over its valid samples (every talker equally loud), looped (clip, clip, clip, ...) and
read from a random offset in [0, length) so it covers all S samples, then the talkers are
summed and the sum scaled to unit RMS. ``allowed`` (B, P) restricts which pool clips a row may
use (for a batch used as its own pool: not the clip itself).

Random numbers are drawn on the CPU (from ``generator`` when given, so a seeded generator gives
the same noise on any device) and moved to ``device``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal, get_args

import torch

NoiseKind = Literal["white", "pink", "brown", "babble"]
NOISE_KINDS: tuple[str, ...] = get_args(NoiseKind)
COLOUR_EXPONENTS = {"white": 0.0, "pink": 1.0, "brown": 2.0}   # power spectrum ~ 1 / f^exponent
_EPS = 1e-12


def _check_size(batch: int, samples: int) -> None:
    if batch < 0 or samples <= 0:
        raise ValueError(f"noise needs batch >= 0 and samples > 0, got {batch} and {samples}")


def _unit_rms(x: torch.Tensor) -> torch.Tensor:
    """Rows (B, S) scaled to a mean square of 1 (all-zero rows stay 0)."""
    rms = x.square().mean(dim=-1, keepdim=True).sqrt()
    return x / rms.clamp_min(_EPS) * (rms > 0)


def white_noise(batch: int, samples: int, *, generator: torch.Generator | None = None,
                device: torch.device | str | None = None) -> torch.Tensor:
    """Gaussian white noise (B, S), unit RMS per row."""
    _check_size(batch, samples)
    noise = torch.randn(batch, samples, generator=generator)
    return _unit_rms(noise).to(device)


def coloured_noise(batch: int, samples: int, *, exponent: float,
                   generator: torch.Generator | None = None,
                   device: torch.device | str | None = None) -> torch.Tensor:
    """Noise (B, S) with power spectrum ~ 1 / f^``exponent`` (0 white, 1 pink, 2 brown), unit RMS.

    Gaussian noise's spectrum times f^(-exponent / 2) (DC set to 0 when exponent != 0), back
    to the time domain: the noise is periodic over S samples.
    """
    _check_size(batch, samples)
    if not math.isfinite(exponent):
        raise ValueError(f"exponent must be finite, got {exponent}")
    white = torch.randn(batch, samples, generator=generator)
    if exponent == 0:
        return _unit_rms(white).to(device)
    freqs = torch.fft.rfftfreq(samples)                                         # (S // 2 + 1,)
    gain = torch.zeros_like(freqs)
    gain[1:] = freqs[1:].pow(-exponent / 2)
    shaped = torch.fft.irfft(torch.fft.rfft(white) * gain, n=samples)
    return _unit_rms(shaped).to(device)


def _valid_mask(lengths: torch.Tensor | None, batch: int, samples: int,
                device: torch.device) -> torch.Tensor:
    """(B, S) bool: True over each row's first ``lengths`` samples (all True without lengths)."""
    if lengths is None:
        return torch.ones(batch, samples, dtype=torch.bool, device=device)
    lengths = torch.as_tensor(lengths)
    if lengths.shape != (batch,):
        raise ValueError(f"lengths must have shape ({batch},), got {tuple(lengths.shape)}")
    if lengths.is_floating_point() or bool((lengths < 0).any()) or bool((lengths > samples).any()):
        raise ValueError(f"lengths must be integers in [0, {samples}], got {lengths.tolist()}")
    return torch.arange(samples, device=device)[None] < lengths.to(device)[:, None]


def babble(pool: torch.Tensor, pool_lengths: torch.Tensor, batch: int, samples: int, *,
           talkers: int | torch.Tensor, allowed: torch.Tensor | None = None,
           generator: torch.Generator | None = None) -> torch.Tensor:
    """Babble (B, S) on ``pool``'s device: per row the sum of ``talkers`` (an int or (B,) counts
    >= 1) distinct clips of ``pool`` (P, S_pool), each at unit RMS over its valid samples
    (``pool_lengths`` (P,)), looped from a random offset to cover S samples; unit RMS per row.

    ``allowed`` (B, P) bool: the pool clips each row may use (default: all); every row needs
    at least its ``talkers`` allowed clips of non-zero length.
    """
    _check_size(batch, samples)
    if pool.ndim != 2 or pool.shape[0] == 0 or pool.shape[1] == 0:
        raise ValueError(f"pool must be waveforms (P, S_pool) with P, S_pool > 0, got {tuple(pool.shape)}")
    size, pool_samples = pool.shape
    pool_lengths = torch.as_tensor(pool_lengths).cpu()
    _valid_mask(pool_lengths, size, pool_samples, torch.device("cpu"))   # checks the lengths
    counts = torch.as_tensor(talkers).cpu()
    if counts.is_floating_point() or counts.shape not in ((), (batch,)):
        raise ValueError(f"talkers must be an int or ({batch},) integer counts, got {talkers!r}")
    counts = counts.long().expand(batch)
    if batch and int(counts.min()) < 1:
        raise ValueError(f"talkers must be >= 1, got {torch.as_tensor(talkers).tolist()}")
    usable = (pool_lengths > 0)[None].expand(batch, size)
    if allowed is not None:
        if allowed.shape != (batch, size) or allowed.dtype != torch.bool:
            raise ValueError(f"allowed must be a bool mask ({batch}, {size}), got "
                             f"{allowed.dtype} {tuple(allowed.shape)}")
        usable = usable & allowed.cpu()
    short = (usable.sum(dim=1) < counts).nonzero().flatten()[:5].tolist()   # the first five
    if short:
        raise ValueError(f"row(s) {short} need {counts[short].tolist()} talkers but have only "
                         f"{usable[short].sum(dim=1).tolist()} allowed non-empty pool clips")
    most = int(counts.max()) if batch else 1
    # distinct clips per row: the top-k of random keys over the allowed clips is a uniform draw
    keys = torch.rand(batch, size, generator=generator).masked_fill(~usable, -1.0)
    picks = keys.topk(most, dim=1).indices                                        # (B, K)
    length = pool_lengths[picks]                                                  # (B, K)
    offset = (torch.rand(batch, most, generator=generator) * length).long()
    offset = torch.minimum(offset, length - 1)
    position = (torch.arange(samples)[None, None] + offset[..., None]) % length[..., None]
    flat = (picks[..., None] * pool_samples + position).to(pool.device)          # (B, K, S)
    voices = pool.reshape(-1)[flat].float()
    # each talker at unit RMS over its own clip (its valid samples)
    inside = _valid_mask(pool_lengths, size, pool_samples, pool.device)
    power = (pool.float().square() * inside).sum(dim=1) / pool_lengths.clamp_min(1).to(pool.device)
    scale = power.clamp_min(_EPS).rsqrt() * (power > 0)                           # (P,)
    active = (torch.arange(most)[None] < counts[:, None]).to(pool.device)          # (B, K)
    voices = voices * (scale[picks.to(pool.device)] * active)[..., None]
    return _unit_rms(voices.sum(dim=1))


def mix_at_snr(clean: torch.Tensor, noise: torch.Tensor, snr_db: torch.Tensor | float,
               lengths: torch.Tensor | None = None) -> torch.Tensor:
    """Clean waveforms (B, S) plus ``noise`` (B, S) scaled to ``snr_db`` dB ((B,) or one value).

    Powers are measured over each clip's first ``lengths`` samples (all S without lengths) and
    the noise is added there only: the padding after a clip is left as it is. A silent clip or
    silent noise returns the clip unchanged. Returns a new tensor of ``clean``'s dtype.
    """
    if clean.ndim != 2 or clean.shape != noise.shape:
        raise ValueError(f"clean and noise must be waveforms of one shape (B, S), got "
                         f"{tuple(clean.shape)} and {tuple(noise.shape)}")
    batch, samples = clean.shape
    snr = torch.as_tensor(snr_db, dtype=torch.float64).cpu()
    if snr.ndim == 0:
        snr = snr.expand(batch)
    if snr.shape != (batch,):
        raise ValueError(f"snr_db must be one value or ({batch},) values, got {tuple(snr.shape)}")
    if not bool(torch.isfinite(snr).all()):
        raise ValueError(f"snr_db must be finite, got {snr.tolist()}")
    inside = _valid_mask(lengths, batch, samples, clean.device)
    noise = noise.to(clean.dtype) * inside                   # noise over the valid samples only
    # energies over the valid samples: same count of samples, so their ratio is P_x / P_n
    p_clean = (clean * inside).square().sum(dim=1, dtype=torch.float64)             # (B,)
    p_noise = noise.square().sum(dim=1, dtype=torch.float64)
    ratio = 10.0 ** (snr.to(clean.device) / 10.0)
    scale = (p_clean / (p_noise.clamp_min(1e-300) * ratio)).sqrt() * ((p_clean > 0) & (p_noise > 0))
    return clean + noise * scale.to(clean.dtype)[:, None]


@dataclass(frozen=True)
class NoiseAugment:
    """Additive-noise augmentation of waveform batches: each clip, with probability ``p``, gets
    one noise kind drawn uniformly from ``kinds`` at an SNR drawn uniformly in ``snr_db``
    (min, max) dB (see the module docstring for the SNR and babble definitions).

    ``babble`` draws U{``babble_talkers``} talkers per clip from ``pool`` (default: the batch
    itself, never the clip's own recording); a row with fewer candidates uses as many as there
    are, and a one-clip batch without a pool gets no babble (there is no other talker).
    """

    kinds: tuple[str, ...] = ("white", "pink", "brown", "babble")   # NoiseKind values
    snr_db: tuple[float, float] = (0.0, 30.0)
    p: float = 1.0
    babble_talkers: tuple[int, int] = (1, 3)

    def __post_init__(self) -> None:
        kinds = tuple(self.kinds)
        if not kinds or any(k not in NOISE_KINDS for k in kinds) or len(set(kinds)) != len(kinds):
            raise ValueError(f"noise kinds must be distinct values from {NOISE_KINDS}, got {list(kinds)}")
        object.__setattr__(self, "kinds", kinds)
        low, high = _pair(self.snr_db, "snr_db")
        if not (math.isfinite(low) and math.isfinite(high) and low <= high):
            raise ValueError(f"snr_db must be finite (min, max) dB with min <= max, got {self.snr_db}")
        object.__setattr__(self, "snr_db", (float(low), float(high)))
        if not 0.0 <= self.p <= 1.0:
            raise ValueError(f"p must be a probability in [0, 1], got {self.p}")
        fewest, most = _pair(self.babble_talkers, "babble_talkers")
        if int(fewest) != fewest or int(most) != most or not 1 <= fewest <= most:
            raise ValueError(f"babble_talkers must be integers (min, max) with 1 <= min <= max, "
                             f"got {self.babble_talkers}")
        object.__setattr__(self, "babble_talkers", (int(fewest), int(most)))

    def __call__(self, waveforms: torch.Tensor, lengths: torch.Tensor | None = None, *,
                 pool: torch.Tensor | None = None, pool_lengths: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
        """Waveforms (B, S) with valid ``lengths`` (B,) -> noisy waveforms (B, S), same dtype;
        padding past each length stays as it was."""
        if waveforms.ndim != 2:
            raise ValueError(f"expected waveforms (B, S), got {tuple(waveforms.shape)}")
        batch, samples = waveforms.shape
        if lengths is None:
            lengths = torch.full((batch,), samples, dtype=torch.long)
        if (pool is None) != (pool_lengths is None):
            raise ValueError("give pool and pool_lengths together (or neither: the batch is the pool)")
        # draws in a fixed order (per clip, then per kind): a seeded generator gives one result
        apply = torch.rand(batch, generator=generator) < self.p
        kind = torch.randint(len(self.kinds), (batch,), generator=generator)
        low, high = self.snr_db
        snr = low + (high - low) * torch.rand(batch, generator=generator, dtype=torch.float64)
        noise = torch.zeros(batch, samples, device=waveforms.device)
        for index, name in enumerate(self.kinds):
            rows = (apply & (kind == index)).nonzero().flatten()
            if not len(rows):
                continue
            if name == "babble":
                part, rows = self._babble(waveforms, lengths, rows, pool, pool_lengths, generator)
            else:
                part = coloured_noise(len(rows), samples, exponent=COLOUR_EXPONENTS[name],
                                      generator=generator, device=waveforms.device)
            noise[rows.to(waveforms.device)] = part
        return mix_at_snr(waveforms, noise.to(waveforms.dtype), snr, lengths)

    def _babble(self, waveforms: torch.Tensor, lengths: torch.Tensor, rows: torch.Tensor,
                pool: torch.Tensor | None, pool_lengths: torch.Tensor | None,
                generator: torch.Generator | None) -> tuple[torch.Tensor, torch.Tensor]:
        """Babble for batch ``rows``: (noise (R', S), the rows R' that could get babble)."""
        batch, samples = waveforms.shape
        fewest, most = self.babble_talkers
        talkers = torch.randint(fewest, most + 1, (len(rows),), generator=generator)
        if pool is None or pool_lengths is None:
            pool, pool_lengths = waveforms, torch.as_tensor(lengths)
            allowed = torch.ones(len(rows), batch, dtype=torch.bool)
            allowed[torch.arange(len(rows)), rows] = False         # not the clip's own recording
        else:
            allowed = torch.ones(len(rows), pool.shape[0], dtype=torch.bool)
        allowed &= (torch.as_tensor(pool_lengths).cpu() > 0)[None]
        available = allowed.sum(dim=1)
        talkers = torch.minimum(talkers, available)
        keep = talkers > 0
        if not bool(keep.all()):
            rows, talkers, allowed = rows[keep], talkers[keep], allowed[keep]
        if not len(rows):
            return torch.zeros(0, samples, device=waveforms.device), rows
        part = babble(pool, pool_lengths, len(rows), samples, talkers=talkers, allowed=allowed,
                      generator=generator)
        return part.to(waveforms.device), rows


def _pair(value: Sequence[float], name: str) -> tuple[float, float]:
    values = tuple(value) if isinstance(value, Sequence) and not isinstance(value, str) else ()
    if len(values) != 2 or not all(isinstance(v, (int, float)) for v in values):
        raise ValueError(f"{name} must be a (min, max) pair, got {value!r}")
    return values[0], values[1]

"""Batched training augmentation: SpecAugment masks, time shifts and stretches, gain, mixup.

Every function draws independently per example and works on a whole batch on its device, with
no Python loop over examples.
"""

from __future__ import annotations

import math

import torch


def _band_mask(batch: int, size: int, max_width: int, count: int,
               generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    """(B, size) bool: ``count`` bands per row, each of width U{0..max_width} at a random start."""
    mask = torch.zeros(batch, size, dtype=torch.bool, device=device)
    if max_width <= 0 or count <= 0:
        return mask
    positions = torch.arange(size, device=device)[None]                        # (1, size)
    for _ in range(count):
        width = torch.randint(0, max_width + 1, (batch, 1), generator=generator)
        start = (torch.rand(batch, 1, generator=generator) * (size - width + 1)).long()
        width, start = width.to(device), start.to(device)
        mask |= (positions >= start) & (positions < start + width)
    return mask


def spec_augment(fbank: torch.Tensor, *, freq_mask: int = 0, time_mask: int = 0,
                 num_freq_masks: int = 1, num_time_masks: int = 1, value: float = 0.0,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """SpecAugment masking (Park et al., 2019) of filterbanks (B, T, F).

    Each example gets ``num_freq_masks`` bands of up to ``freq_mask`` bins and
    ``num_time_masks`` bands of up to ``time_mask`` frames set to ``value`` (0, the mean of a
    normalised filterbank). Returns a new tensor.
    """
    if fbank.ndim != 3:
        raise ValueError(f"expected filterbanks (B, T, F), got {tuple(fbank.shape)}")
    batch, frames, bins = fbank.shape
    freq = _band_mask(batch, bins, min(freq_mask, bins), num_freq_masks, generator, fbank.device)
    time = _band_mask(batch, frames, min(time_mask, frames), num_time_masks, generator, fbank.device)
    mask = freq[:, None, :] | time[:, :, None]                                 # (B, T, F)
    return fbank.masked_fill(mask, value)


def random_time_shift(fbank: torch.Tensor, valid_frames: torch.Tensor,
                      generator: torch.Generator | None = None) -> torch.Tensor:
    """Move each clip's valid frames (B, T, F) to a random start in [0, T - valid].

    Clips are left-aligned with padding after them (as :class:`~zoo.frontends.audio.Filterbank`
    makes them); the shift rotates padding from the end to the front, so content is never cut.
    """
    batch, frames, _ = fbank.shape
    room = (frames - valid_frames.to(torch.long).cpu()).clamp(min=0)            # (B,)
    shift = (torch.rand(batch, generator=generator) * (room + 1)).long().clamp(max=room)
    index = (torch.arange(frames)[None] - shift[:, None]) % frames             # (B, T)
    index = index.to(fbank.device)[..., None].expand_as(fbank)
    return fbank.gather(1, index)


def random_time_stretch(fbank: torch.Tensor, valid_frames: torch.Tensor, *, max_stretch: float,
                        pad_value: float, generator: torch.Generator | None = None
                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """Play each clip's valid frames (B, T, F) faster or slower by a factor drawn log-uniformly
    in [1 / max_stretch, max_stretch] (linear interpolation along time; pitch is unchanged).

    Speakers say the same word at different paces; this makes the model see that. Frames past
    the stretched clip are ``pad_value`` (a stretched clip longer than T is cut). Returns the
    stretched filterbanks and their valid frames.
    """
    batch, frames, _ = fbank.shape
    if max_stretch < 1:
        raise ValueError(f"max_stretch must be >= 1, got {max_stretch}")
    valid = valid_frames.to(torch.long).cpu().clamp(min=1)
    rate = torch.exp((torch.rand(batch, generator=generator) * 2 - 1) * math.log(max_stretch))
    new_valid = (valid.float() * rate).round().long().clamp(1, frames)           # (B,)
    src = torch.arange(frames)[None].float() / rate[:, None]                      # (B, T)
    low = src.floor().long().clamp(max=(valid - 1)[:, None].expand(-1, frames))
    high = (low + 1).clamp(max=(valid - 1)[:, None].expand(-1, frames))
    weight = (src - src.floor()).clamp(0, 1)[..., None].to(fbank)
    gather = lambda idx: fbank.gather(1, idx.to(fbank.device)[..., None].expand_as(fbank))  # noqa: E731
    out = gather(low) * (1 - weight.to(fbank.device)) + gather(high) * weight.to(fbank.device)
    beyond = (torch.arange(frames)[None] >= new_valid[:, None]).to(fbank.device)[..., None]
    return out.masked_fill(beyond, pad_value), new_valid


def random_gain(fbank: torch.Tensor, valid_frames: torch.Tensor, *, max_db: float, std: float,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """Scale each clip's loudness by U(-max_db, max_db) dB: a constant added to its valid frames
    of a normalised log-mel (B, T, F) (``std``: the normalisation's std; padding is kept)."""
    batch, frames, _ = fbank.shape
    db = (torch.rand(batch, generator=generator) * 2 - 1) * max_db
    shift = db * math.log(10) / 10 / (2 * std)             # power dB -> natural log, normalised
    inside = torch.arange(frames)[None] < valid_frames.to(torch.long).cpu()[:, None]   # (B, T)
    return fbank + (shift[:, None] * inside).to(fbank)[..., None]


def mixup(inputs: torch.Tensor, targets: torch.Tensor, *, alpha: float
          ) -> tuple[torch.Tensor, torch.Tensor]:
    """Mix each example with another of the batch: x' = l x + (1 - l) x[perm], same for the
    (B, K) soft ``targets``; one weight l ~ Beta(alpha, alpha) per example."""
    if alpha <= 0:
        return inputs, targets
    batch = inputs.shape[0]
    beta = torch.distributions.Beta(torch.tensor(float(alpha)), torch.tensor(float(alpha)))
    lam = beta.sample((batch,))
    perm = torch.randperm(batch)
    lam = lam.to(inputs.device, inputs.dtype)
    shape = (batch,) + (1,) * (inputs.ndim - 1)
    mixed = lam.view(shape) * inputs + (1 - lam.view(shape)) * inputs[perm.to(inputs.device)]
    soft = lam[:, None] * targets + (1 - lam[:, None]) * targets[perm.to(targets.device)]
    return mixed, soft

"""Additive noise (zoo.data.noise): SNR as defined, noise spectra, babble, padding, determinism
and argument checks."""

from __future__ import annotations

import itertools
import json
import math
import os
from pathlib import Path

import pytest
import torch

from zoo.data.noise import (
    COLOUR_EXPONENTS,
    NoiseAugment,
    babble,
    coloured_noise,
    mix_at_snr,
    white_noise,
)


def clips(lengths: list[int], samples: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-padded clips (B, S) of decaying tones plus a little noise, and their lengths (B,)."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / 8000
    waves = torch.zeros(len(lengths), samples)
    for i, n in enumerate(lengths):
        tone = (0.3 / (i + 1)) * torch.sin(2 * math.pi * (200 + 150 * i) * t[:n]) * torch.exp(-t[:n])
        waves[i, :n] = tone + 0.01 * torch.randn(n, generator=gen)
    return waves, torch.tensor(lengths)


def measured_snr(clean: torch.Tensor, noisy: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    inside = torch.arange(clean.shape[1])[None] < lengths[:, None]
    signal = (clean.double().square() * inside).sum(1)
    noise = ((noisy - clean).double().square() * inside).sum(1)
    return 10 * torch.log10(signal / noise)


def spectral_slope(noise: torch.Tensor) -> float:
    """The slope of log10(power) against log10(frequency), averaged over rows, between 1/100
    and 1/4 of the sample rate (in log-spaced bands)."""
    power = torch.fft.rfft(noise.double()).abs().square().mean(0)
    freqs = torch.fft.rfftfreq(noise.shape[1], dtype=torch.float64)
    edges = torch.logspace(math.log10(0.01), math.log10(0.25), 12, dtype=torch.float64)
    x, y = [], []
    for lo, hi in itertools.pairwise(edges):
        band = (freqs >= lo) & (freqs < hi)
        x.append(math.log10(float(freqs[band].mean())))
        y.append(math.log10(float(power[band].mean())))
    xs, ys = torch.tensor(x), torch.tensor(y)
    return float(((xs - xs.mean()) * (ys - ys.mean())).sum() / (xs - xs.mean()).square().sum())


@pytest.mark.parametrize("kind", ["white", "pink", "brown"])
def test_noise_has_unit_rms_and_the_spectral_slope_of_its_colour(kind):
    noise = coloured_noise(64, 4096, exponent=COLOUR_EXPONENTS[kind],
                           generator=torch.Generator().manual_seed(0))
    assert noise.shape == (64, 4096) and noise.dtype == torch.float32
    assert torch.allclose(noise.square().mean(1), torch.ones(64), atol=1e-5)
    assert spectral_slope(noise) == pytest.approx(-COLOUR_EXPONENTS[kind], abs=0.1)
    if kind != "white":
        assert noise.mean(1).abs().max() < 1e-5          # the DC bin is removed
    white = white_noise(8, 1000, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(white.square().mean(1), torch.ones(8), atol=1e-5)


@pytest.mark.parametrize("snr", [30.0, 20.0, 10.0, 5.0, 0.0, -5.0])
def test_mix_at_snr_hits_the_requested_snr_over_valid_samples_only(snr):
    clean, lengths = clips([8000, 5000, 2400, 300], 8000)
    noise = coloured_noise(4, 8000, exponent=1.0, generator=torch.Generator().manual_seed(1))
    noisy = mix_at_snr(clean, noise, snr, lengths)
    assert torch.allclose(measured_snr(clean, noisy, lengths), torch.full((4,), snr,
                                                                          dtype=torch.float64), atol=0.01)
    padding = torch.arange(8000)[None] >= lengths[:, None]
    assert torch.equal(noisy[padding], clean[padding]) and not noisy[padding].any()
    assert noisy.dtype == clean.dtype


def test_mix_at_snr_takes_one_snr_per_clip_and_no_lengths():
    clean, _ = clips([4000, 4000, 4000], 4000)
    snr = torch.tensor([20.0, 10.0, 5.0])
    noisy = mix_at_snr(clean, white_noise(3, 4000), snr)
    assert torch.allclose(measured_snr(clean, noisy, torch.full((3,), 4000)), snr.double(), atol=0.01)


def test_silent_clips_and_silent_noise_come_back_unchanged():
    clean, lengths = clips([3000, 3000], 3000)
    clean[1] = 0.0
    noise = white_noise(2, 3000)
    noisy = mix_at_snr(clean, noise, 10.0, lengths)
    assert torch.isfinite(noisy).all() and torch.equal(noisy[1], clean[1])
    quiet = mix_at_snr(clean, torch.zeros_like(noise), 10.0, lengths)
    assert torch.equal(quiet, clean)


def test_babble_sums_distinct_allowed_talkers_looped_over_the_batch_length():
    pool = torch.zeros(3, 10)
    pool[0, :2] = torch.tensor([1.0, -1.0])          # a 2-sample clip, looped: +1 -1 +1 -1 ...
    pool[1, :4] = 2.0
    pool[2, :5] = torch.arange(1.0, 6.0)
    lengths = torch.tensor([2, 4, 5])
    only_first = torch.tensor([[True, False, False]])
    out = babble(pool, lengths, 1, 9, talkers=1, allowed=only_first,
                 generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 9) and torch.allclose(out.abs(), torch.ones(1, 9))
    assert torch.allclose(out[0, 1:], -out[0, :-1])                           # the loop alternates
    # two talkers from {1, 2}: both, each at unit RMS over its clip, looped from some offset
    both = babble(pool, lengths, 1, 20, talkers=2, allowed=torch.tensor([[False, True, True]]),
                  generator=torch.Generator().manual_seed(3))
    ramp = pool[2, :5] / pool[2, :5].square().mean().sqrt()
    candidates = []
    for offset in range(5):
        mix = 1.0 + ramp.roll(-offset).repeat(4)                  # clip 1 is 1.0 at unit RMS
        candidates.append(mix / mix.square().mean().sqrt())
    assert any(torch.allclose(both[0], c, atol=1e-5) for c in candidates)


def test_babble_checks_its_pool_and_talkers():
    pool, lengths = torch.randn(3, 100), torch.tensor([100, 50, 0])
    with pytest.raises(ValueError, match=r"row\(s\) \[0\] need \[3\] talkers but have only \[2\] "
                                         r"allowed non-empty pool clips"):
        babble(pool, lengths, 1, 100, talkers=3)
    with pytest.raises(ValueError, match="talkers must be >= 1"):
        babble(pool, lengths, 2, 100, talkers=0)
    with pytest.raises(ValueError, match=r"pool must be waveforms \(P, S_pool\)"):
        babble(torch.randn(100), lengths, 1, 100, talkers=1)
    with pytest.raises(ValueError, match=r"lengths must be integers in \[0, 100\]"):
        babble(pool, torch.tensor([100, 101, 0]), 1, 100, talkers=1)
    with pytest.raises(ValueError, match=r"allowed must be a bool mask \(1, 3\)"):
        babble(pool, lengths, 1, 100, talkers=1, allowed=torch.ones(1, 2, dtype=torch.bool))


def test_noise_augment_adds_each_kind_at_a_drawn_snr_and_keeps_padding():
    clean, lengths = clips([8000, 6000, 4000, 2000] * 4, 8000)
    for kind in ("white", "pink", "brown", "babble"):
        aug = NoiseAugment(kinds=(kind,), snr_db=(5.0, 15.0), p=1.0)
        noisy = aug(clean, lengths, generator=torch.Generator().manual_seed(0))
        snr = measured_snr(clean, noisy, lengths)
        assert ((snr > 5.0 - 1e-3) & (snr < 15.0 + 1e-3)).all(), kind
        assert snr.std() > 1.0, kind                                   # one SNR per clip
        padding = torch.arange(8000)[None] >= lengths[:, None]
        assert not noisy[padding].any(), kind


def test_noise_augment_p_and_determinism():
    clean, lengths = clips([4000] * 64, 4000)
    aug = NoiseAugment(kinds=("white", "pink", "babble"), snr_db=(0.0, 30.0), p=0.5)
    first = aug(clean, lengths, generator=torch.Generator().manual_seed(7))
    again = aug(clean, lengths, generator=torch.Generator().manual_seed(7))
    other = aug(clean, lengths, generator=torch.Generator().manual_seed(8))
    assert torch.equal(first, again) and not torch.equal(first, other)
    touched = (first != clean).any(dim=1).sum()
    assert 16 <= touched <= 48                                       # about half of 64
    assert torch.equal(NoiseAugment(p=0.0)(clean, lengths), clean)


def test_noise_augment_babble_from_the_batch_never_uses_the_clip_itself():
    # each clip is a constant of its own level: babble from the others cannot contain its own sign
    levels = torch.tensor([1.0, -1.0])
    clean = levels[:, None].expand(2, 500).clone()
    aug = NoiseAugment(kinds=("babble",), snr_db=(0.0, 0.0), babble_talkers=(1, 3))
    noisy = aug(clean, torch.tensor([500, 500]), generator=torch.Generator().manual_seed(0))
    assert torch.allclose(noisy, torch.zeros(2, 500))            # the other clip, at equal power
    alone = aug(clean[:1], torch.tensor([500]))
    assert torch.equal(alone, clean[:1])                         # one clip: no other talker
    pool = torch.full((1, 100), 0.5)
    pooled = aug(clean, torch.tensor([500, 500]), pool=pool, pool_lengths=torch.tensor([100]))
    assert torch.allclose(pooled, clean + levels.abs()[:, None])


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kinds": ()}, r"noise kinds must be distinct values from \('white', 'pink', 'brown', 'babble'\)"),
    ({"kinds": ("white", "violet")}, "noise kinds must be distinct values"),
    ({"kinds": ("white", "white")}, "noise kinds must be distinct values"),
    ({"snr_db": (10.0, 0.0)}, r"snr_db must be finite \(min, max\) dB with min <= max"),
    ({"snr_db": (0.0, math.inf)}, "snr_db must be finite"),
    ({"snr_db": 10.0}, r"snr_db must be a \(min, max\) pair, got 10.0"),
    ({"p": 1.5}, r"p must be a probability in \[0, 1\], got 1.5"),
    ({"babble_talkers": (0, 2)}, r"babble_talkers must be integers \(min, max\) with 1 <= min <= max"),
    ({"babble_talkers": (3, 2)}, "babble_talkers must be integers"),
])
def test_noise_augment_refuses_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        NoiseAugment(**kwargs)


def test_bad_shapes_and_values_raise():
    clean = torch.zeros(2, 100)
    with pytest.raises(ValueError, match=r"clean and noise must be waveforms of one shape \(B, S\)"):
        mix_at_snr(clean, torch.zeros(2, 99), 10.0)
    with pytest.raises(ValueError, match=r"snr_db must be one value or \(2,\) values"):
        mix_at_snr(clean, clean, torch.tensor([1.0, 2.0, 3.0]))
    with pytest.raises(ValueError, match="snr_db must be finite"):
        mix_at_snr(clean, clean, math.nan)
    with pytest.raises(ValueError, match=r"lengths must be integers in \[0, 100\]"):
        mix_at_snr(clean, clean, 10.0, torch.tensor([50, 150]))
    with pytest.raises(ValueError, match=r"lengths must have shape \(2,\)"):
        mix_at_snr(clean, clean, 10.0, torch.tensor([50]))
    with pytest.raises(ValueError, match="noise needs batch >= 0 and samples > 0"):
        white_noise(2, 0)
    with pytest.raises(ValueError, match="exponent must be finite"):
        coloured_noise(2, 10, exponent=math.nan)
    with pytest.raises(ValueError, match=r"expected waveforms \(B, S\)"):
        NoiseAugment()(torch.zeros(100), torch.tensor([100]))
    with pytest.raises(ValueError, match="give pool and pool_lengths together"):
        NoiseAugment()(clean, torch.tensor([100, 100]), pool=clean)


# --- benchmarks/noise_robustness.py --------------------------------------------------------------

def _benchmark():
    import importlib.util
    import sys

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "noise_robustness.py"
    spec = importlib.util.spec_from_file_location("noise_robustness", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["noise_robustness"] = module
    spec.loader.exec_module(module)
    return module


def test_benchmark_babble_comes_from_other_speakers_and_is_reproducible():
    bench = _benchmark()
    # speaker 0's clips are +1, speaker 1's -1: babble for a clip holds the other sign only
    waves = torch.tensor([[1.0] * 50, [1.0] * 50, [-1.0] * 50, [-1.0] * 50])
    lengths, speaker = torch.full((4,), 50), torch.tensor([0, 0, 1, 1])
    noise = bench.draw_noise("babble", waves, lengths, speaker, talkers=2,
                             generator=torch.Generator().manual_seed(0))
    assert torch.allclose(noise, -waves)
    with pytest.raises(ValueError, match=r"row\(s\) \[0, 1, 2, 3\] need \[3, 3, 3, 3\] talkers but "
                                         r"have only \[2, 2, 2, 2\] allowed"):
        bench.draw_noise("babble", waves, lengths, speaker, talkers=3,
                         generator=torch.Generator().manual_seed(0))
    white = [bench.draw_noise("white", waves, lengths, speaker, talkers=2,
                              generator=torch.Generator().manual_seed(5)) for _ in range(2)]
    assert torch.equal(*white)
    result = {"clean": 99.0, "noisy": {"white": {"20": 90.0, "10": 60.5}}}
    assert bench.table(result).splitlines() == ["| noise | clean | 20 dB | 10 dB |", "|---|---|---|---|",
                                                "| white | 99.00 | 90.00 | 60.50 |"]


@pytest.mark.skipif(
    not (Path(os.environ.get("ZOO_DATA", "/nonexistent")) / "fsdd" / "recordings").is_dir(),
    reason="FSDD not found: set ZOO_DATA to a folder holding fsdd/recordings (CI does)")
def test_benchmark_on_the_bundled_fsdd_model(capsys):
    bench = _benchmark()
    assert bench.main(["ast_tiny_d6_8k.fsdd", "--kinds", "white", "--snr", "10", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["clips"] == 300 and result["clean"] == pytest.approx(99.33, abs=0.01)  # its card
    assert 30.0 < result["noisy"]["white"]["10"] < 95.0            # noise costs accuracy
    with pytest.raises(ValueError, match="noise kinds must be among"):
        bench.evaluate("ast_tiny_d6_8k.fsdd", kinds=("violet",))

"""The audio front end: Kaldi filterbank parity (torchaudio, HF ASTFeatureExtractor), batching,
resampling, bad input, and the batched augmentations."""

from __future__ import annotations

import math

import pytest
import torch

from zoo.data.augment import (
    mixup,
    random_gain,
    random_time_shift,
    random_time_stretch,
    spec_augment,
)
from zoo.frontends.audio import (
    AUDIOSET_MEAN,
    AUDIOSET_STD,
    AudioFrontEnd,
    FbankConfig,
    Filterbank,
    kaldi_mel_banks,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _speechlike(num: int, samples: int, sample_rate: int = 16000, seed: int = 0) -> torch.Tensor:
    """Noise plus a few harmonics with random pitch: energy spread over many mel bins."""
    gen = torch.Generator().manual_seed(seed)
    t = torch.arange(samples) / sample_rate
    f0 = 100 + 200 * torch.rand(num, 1, generator=gen)
    wave = sum(torch.sin(2 * math.pi * k * f0 * t) / k for k in range(1, 6))
    return 0.3 * wave + 0.05 * torch.randn(num, samples, generator=gen)


def _kaldi(wave: torch.Tensor, config: FbankConfig) -> torch.Tensor:
    import torchaudio.compliance.kaldi as kaldi

    return kaldi.fbank(wave[None], sample_frequency=config.sample_rate, htk_compat=True,
                       window_type="hanning", num_mel_bins=config.num_mel_bins, dither=0.0,
                       frame_shift=config.frame_shift_ms, frame_length=config.frame_length_ms,
                       low_freq=config.low_freq, use_energy=False)


@pytest.mark.parametrize("sample_rate,bins", [(16000, 128), (8000, 64), (22050, 80)])
def test_log_mel_matches_torchaudio_kaldi_per_clip(sample_rate, bins):
    config = FbankConfig(sample_rate=sample_rate, num_mel_bins=bins, target_frames=120,
                         normalize=False)
    waves = _speechlike(3, int(1.1 * sample_rate), sample_rate)
    ours = Filterbank(config)(waves)
    for i in range(3):
        ref = _kaldi(waves[i], config)
        assert ref.shape[0] == config.num_frames(waves.shape[1])
        # float32 FFTs differ in the last bits; log energies of ~[-15, 10] agree to 5e-4
        torch.testing.assert_close(ours[i, :ref.shape[0]], ref, atol=5e-4, rtol=0)
        assert (ours[i, ref.shape[0]:] == 0).all()   # padding, in the log domain


def test_mel_banks_match_torchaudio():
    from torchaudio.compliance.kaldi import get_mel_banks

    config = FbankConfig()
    ref, _ = get_mel_banks(128, 512, 16000.0, 20.0, 0.0, 100.0, -500.0, 1.0)
    ours = kaldi_mel_banks(config)
    assert ours.shape == (257, 128)
    # ours are computed in float64, torchaudio's in float32: weights in [0, 1] agree to 2e-5
    torch.testing.assert_close(ours[:256].T, ref, atol=2e-5, rtol=0)
    assert (ours[256] == 0).all()


def test_filterbank_matches_hf_feature_extractor():
    """Same waveforms -> the normalised, padded input_values of ASTFeatureExtractor."""
    transformers = pytest.importorskip("transformers")
    extractor = transformers.ASTFeatureExtractor(max_length=200)
    lengths = [16000, 12345, 40000]                     # shorter and longer than 200 frames
    waves = [w[:n] for w, n in zip(_speechlike(3, 40000), lengths, strict=True)]
    ref = extractor([w.numpy() for w in waves], sampling_rate=16000,
                    return_tensors="pt").input_values
    config = FbankConfig(target_frames=200)
    batch = torch.nn.utils.rnn.pad_sequence(waves, batch_first=True)
    ours = Filterbank(config)(batch, lengths=torch.tensor(lengths))
    assert ours.shape == ref.shape == (3, 200, 128)
    # 5e-4 in the log domain / (2 * std = 9.14) -> about 6e-5 after normalisation
    torch.testing.assert_close(ours, ref, atol=1e-4, rtol=0)


def test_batched_equals_one_by_one_and_lengths_mask_padding():
    config = FbankConfig(sample_rate=8000, num_mel_bins=64, target_frames=100)
    fb = Filterbank(config)
    waves = _speechlike(2, 8000, 8000)
    short = waves[1, :3000]
    batch = torch.stack([waves[0], torch.cat([short, torch.randn(5000)])])  # junk after the end
    out = fb(batch, lengths=torch.tensor([8000, 3000]))
    torch.testing.assert_close(out[0], fb(waves[:1])[0])
    torch.testing.assert_close(out[1], fb(short[None])[0])
    pad_value = (0 - config.mean) / (2 * config.std)
    assert torch.allclose(out[1, config.num_frames(3000):], torch.tensor(pad_value))


def test_dc_offset_is_removed_per_frame():
    fb = Filterbank(FbankConfig(target_frames=50))
    wave = _speechlike(1, 8000)
    torch.testing.assert_close(fb(wave + 0.2), fb(wave), atol=2e-4, rtol=0)


def test_resamples_when_the_rate_differs(caplog):
    config = FbankConfig(target_frames=100)
    fb = Filterbank(config)
    wave16 = _speechlike(1, 16000)
    import torchaudio.functional as AF
    wave8 = AF.resample(wave16, 16000, 8000)
    with caplog.at_level("INFO", logger="zoo.frontends.audio"):
        out = fb(wave8, sample_rate=8000)
    assert "resampling audio from 8000 Hz to the model's 16000 Hz" in caplog.text
    assert out.shape == (1, 100, 128)
    # band-limited to 4 kHz, but the low mel bins agree with the 16 kHz original
    low = slice(5, 60)
    assert (out[0, 5:90, low] - fb(wave16)[0, 5:90, low]).abs().mean() < 0.05


def test_silence_is_finite_and_normalised_to_the_floor():
    config = FbankConfig(target_frames=20)
    out = Filterbank(config)(torch.zeros(1, 4000))
    floor = (math.log(torch.finfo(torch.float32).eps) - AUDIOSET_MEAN) / (2 * AUDIOSET_STD)
    assert torch.isfinite(out).all()
    assert torch.allclose(out[0, :config.num_frames(4000)], torch.tensor(floor))


@pytest.mark.parametrize("shape,match", [
    ((16000,), r"expected mono waveforms \(B, S\), got shape \(16000,\); add a batch"),
    ((1, 2, 16000), r"expected mono waveforms \(B, S\), got shape \(1, 2, 16000\).*x.mean\(dim=1\)"),
])
def test_filterbank_refuses_wrong_shapes(shape, match):
    with pytest.raises(ValueError, match=match):
        Filterbank(FbankConfig())(torch.zeros(shape))


def test_clip_shorter_than_one_frame_is_refused():
    with pytest.raises(ValueError, match=r"clip\(s\) \[1\] have \[300\] samples, shorter than one "
                                         r"25 ms frame \(400 samples at 16000 Hz\)"):
        Filterbank(FbankConfig())(torch.zeros(2, 1000), lengths=torch.tensor([1000, 300]))


def test_non_finite_waveform_is_refused():
    wave = torch.zeros(1, 1000)
    wave[0, 10] = float("nan")
    with pytest.raises(ValueError, match="NaN or Inf"):
        Filterbank(FbankConfig())(wave)


def test_front_end_grid_and_filterbank_input_checks():
    fe = AudioFrontEnd(fbank=FbankConfig(target_frames=1024), embed_dim=32)
    assert fe.grid_size == (12, 101)                       # AST AudioSet: 1,212 patches
    assert fe(torch.randn(1, 1024, 128)).shape == (1, 2 + 1212, 32)
    assert fe(torch.randn(1, 512, 128)).shape == (1, 2 + 12 * 50, 32)   # positions resampled
    with pytest.raises(ValueError, match=r"filterbank \(B, T, 128\), got shape \(1, 100, 64\)"):
        fe(torch.randn(1, 100, 64))
    with pytest.raises(ValueError, match="smaller than one 16x16 patch"):
        fe(torch.randn(1, 8, 128))


# --- augmentation -----------------------------------------------------------------------------

def test_spec_augment_masks_bands_per_example():
    x = torch.ones(64, 100, 64)
    gen = torch.Generator().manual_seed(0)
    out = spec_augment(x, freq_mask=10, time_mask=20, generator=gen)
    masked_bins = (out == 0).all(dim=1).sum(dim=1)          # (B,) fully masked frequency bins
    masked_frames = (out == 0).all(dim=2).sum(dim=1)        # (B,) fully masked frames
    assert masked_bins.max() <= 10 and masked_frames.max() <= 20
    assert masked_bins.float().std() > 0 and masked_frames.float().std() > 0  # per example
    # masked bins form one contiguous band
    for row in (out[:, 0] == 0):
        idx = row.nonzero().flatten()
        if len(idx) > 1 and len(idx) < 64:
            assert (idx[-1] - idx[0] + 1) == len(idx) or (out[0] == 0).all()
    assert torch.equal(spec_augment(x), x)                 # no masks -> unchanged


def test_random_time_shift_keeps_content():
    fbank = torch.zeros(8, 50, 4)
    valid = torch.tensor([10, 20, 50, 1, 30, 5, 49, 25])
    for i, v in enumerate(valid):
        fbank[i, :v] = torch.arange(1, v + 1, dtype=torch.float)[:, None]
    out = random_time_shift(fbank, valid, generator=torch.Generator().manual_seed(0))
    for i, v in enumerate(valid):
        nz = out[i, :, 0].nonzero().flatten()
        assert len(nz) == v and torch.equal(out[i, nz, 0], torch.arange(1, v + 1, dtype=torch.float))
    assert torch.equal(out[2], fbank[2])                   # a full window cannot move


def test_mixup_mixes_inputs_and_targets_with_the_same_weight():
    torch.manual_seed(0)
    x = torch.arange(6, dtype=torch.float).view(6, 1, 1).expand(6, 3, 2).clone()
    y = torch.eye(6)
    mx, my = mixup(x, y, alpha=0.4)
    # each mixed input is sum_j my[i, j] * x[j]: targets carry exactly the input's weights
    torch.testing.assert_close(mx[:, 0, 0], my @ torch.arange(6, dtype=torch.float))
    torch.testing.assert_close(my.sum(dim=1), torch.ones(6))
    assert torch.equal(mixup(x, y, alpha=0)[0], x)


def test_random_time_stretch_resamples_valid_frames_and_pads():
    fbank = torch.full((3, 40, 2), -1.0)
    valid = torch.tensor([10, 40, 20])
    for i, v in enumerate(valid):
        fbank[i, :v] = torch.arange(v, dtype=torch.float)[:, None]   # a ramp: 0, 1, 2, ...
    out, new_valid = random_time_stretch(fbank, valid, max_stretch=1.5, pad_value=-1.0,
                                         generator=torch.Generator().manual_seed(0))
    for i, v in enumerate(valid):
        n = int(new_valid[i])
        rate = n / int(v)
        assert 1 / 1.5 - 0.1 <= rate <= 1.5 + 0.1 or n == 40
        ramp = out[i, :n, 0]
        assert ramp[0] == 0 and (ramp.diff() > 0).all()                 # still a rising ramp
        assert ramp.max() <= v - 1 + 1e-5                                # from the clip only
        assert (out[i, n:] == -1.0).all()                                # then padding
    with pytest.raises(ValueError, match="max_stretch must be >= 1"):
        random_time_stretch(fbank, valid, max_stretch=0.5, pad_value=0.0)


def test_random_gain_shifts_valid_frames_only():
    fbank = torch.zeros(16, 30, 4)
    valid = torch.full((16,), 12)
    out = random_gain(fbank, valid, max_db=6.0, std=4.0, generator=torch.Generator().manual_seed(0))
    shift = out[:, 0, 0]
    assert (out[:, :12] == shift[:, None, None]).all() and (out[:, 12:] == 0).all()
    bound = 6.0 * math.log(10) / 10 / 8.0                    # 6 dB of power in normalised units
    assert shift.abs().max() <= bound + 1e-6 and shift.std() > 0

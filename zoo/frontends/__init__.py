"""Front ends: raw input of one modality -> tokens (B, N, D) (see :class:`FrontEnd`)."""

from torch import nn

from zoo.frontends.audio import FbankConfig, Filterbank
from zoo.frontends.base import FrontEnd
from zoo.frontends.image import ImageFrontEnd
from zoo.frontends.whisper import WhisperLogMel, WhisperMelConfig

# What an audio classifier's ``fbank_config`` is: Kaldi filterbanks (AST) or Whisper's log-mel.
AudioFeatureConfig = FbankConfig | WhisperMelConfig


def audio_features(config: AudioFeatureConfig) -> nn.Module:
    """The module that turns waveforms (B, S) (``lengths=`` valid samples) into a model's input
    features (B, target_frames, num_mel_bins) for its ``fbank_config``."""
    return WhisperLogMel(config) if isinstance(config, WhisperMelConfig) else Filterbank(config)


__all__ = ["AudioFeatureConfig", "FrontEnd", "ImageFrontEnd", "audio_features"]

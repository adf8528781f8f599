"""Composed models and their registered variants (importing this registers them)."""

from zoo.models import vit_families  # noqa: F401  (registers timm's ViT families)
from zoo.models.ast import AudioSpectrogramTransformer
from zoo.models.base import Classifier, Forecaster, TokenModel
from zoo.models.ctc import SpeechRecognizer
from zoo.models.patchtst import PatchTST
from zoo.models.timesfm import TimesFM
from zoo.models.vit import VisionTransformer
from zoo.models.whisper import WhisperEncoderClassifier

__all__ = ["AudioSpectrogramTransformer", "Classifier", "Forecaster", "PatchTST",
           "SpeechRecognizer", "TimesFM", "TokenModel", "VisionTransformer",
           "WhisperEncoderClassifier"]

"""Composed models and their registered variants (importing this registers them)."""

from zoo.models import vit_families  # noqa: F401  (registers timm's ViT families)
from zoo.models.ast import AudioSpectrogramTransformer
from zoo.models.base import Classifier, Forecaster, TokenModel
from zoo.models.patchtst import PatchTST
from zoo.models.vit import VisionTransformer

__all__ = ["AudioSpectrogramTransformer", "Classifier", "Forecaster", "PatchTST", "TokenModel",
           "VisionTransformer"]

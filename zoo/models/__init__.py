"""Composed models and their registered variants (importing this registers them)."""

from zoo.models.ast import AudioSpectrogramTransformer
from zoo.models.base import TokenModel
from zoo.models.patchtst import PatchTST
from zoo.models.vit import VisionTransformer

__all__ = ["AudioSpectrogramTransformer", "PatchTST", "TokenModel", "VisionTransformer"]

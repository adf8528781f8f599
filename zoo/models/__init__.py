"""Composed models and their registered variants (importing this registers them)."""

from zoo.models.base import TokenModel
from zoo.models.vit import VisionTransformer

__all__ = ["TokenModel", "VisionTransformer"]

"""Front ends: raw input of one modality -> tokens (B, N, D)."""

from zoo.frontends.image import ImageFrontEnd

__all__ = ["ImageFrontEnd"]

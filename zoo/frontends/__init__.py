"""Front ends: raw input of one modality -> tokens (B, N, D) (see :class:`FrontEnd`)."""

from zoo.frontends.base import FrontEnd
from zoo.frontends.image import ImageFrontEnd

__all__ = ["FrontEnd", "ImageFrontEnd"]

"""Packages that only some features need, imported when used, with the install command in the error.

``pip install zoo`` is the library (models, loading, inference, packages); extras add the rest:
``zoo[train]`` (Lightning recipes), ``zoo[export]`` (ONNX), ``zoo[plot]`` (pictures), ``zoo[convert]``
(timm / transformers objects), ``zoo[all]``.
"""

from __future__ import annotations

import importlib
from types import ModuleType


def require(module: str, purpose: str, extra: str) -> ModuleType:
    """Import ``module`` or raise an ImportError naming ``purpose`` and ``pip install 'zoo[extra]'``."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise ImportError(f"{purpose} needs the '{module.split('.')[0]}' package: "
                          f"pip install 'zoo[{extra}]'") from err


def pyplot(purpose: str) -> ModuleType:
    """matplotlib's pyplot on the file-only Agg backend (no window, works on servers)."""
    matplotlib = require("matplotlib", purpose, "plot")
    matplotlib.use("Agg")
    return require("matplotlib.pyplot", purpose, "plot")

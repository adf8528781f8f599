"""Datasets and transforms per modality. Nothing here downloads at import time."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal, get_args

from zoo.hub import zoo_home

OnError = Literal["raise", "skip"]   # an unreadable file or value: stop naming it, or leave it out
ON_ERROR = get_args(OnError)


def data_root(configured: str | Path | None = None) -> Path:
    """Where datasets live: the config's value, else ``$ZOO_DATA``, else ``~/.cache/zoo/data``."""
    if configured:
        return Path(configured).expanduser()
    if os.environ.get("ZOO_DATA"):
        return Path(os.environ["ZOO_DATA"]).expanduser()
    return zoo_home() / "data"

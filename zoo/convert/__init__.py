"""Checkpoint formats from peer libraries -> zoo state dicts.

:func:`to_zoo_state_dict` unwraps training checkpoints (Lightning ``state_dict``, DDP
``module.`` prefixes, zoo recipes' ``model.`` prefix), recognises the format by its keys and
converts it. One pure converter per peer format lives in this package.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from zoo.convert.hf_ast import convert_hf_ast, is_hf_ast
from zoo.convert.hf_patchtst import convert_hf_patchtst, is_hf_patchtst
from zoo.convert.hf_timesfm import convert_hf_timesfm, is_hf_timesfm
from zoo.convert.hf_whisper import convert_hf_whisper, is_hf_whisper
from zoo.convert.nf_patchtst import convert_nf_patchtst, is_nf_patchtst
from zoo.convert.timm import convert_timm_vit, is_timm_vit

# (name, detector, converter); extended as modalities add peer formats.
CONVERTERS = [
    ("timm ViT", is_timm_vit, convert_timm_vit),
    ("HF AST", is_hf_ast, convert_hf_ast),
    ("HF PatchTST", is_hf_patchtst, convert_hf_patchtst),
    ("HF Whisper", is_hf_whisper, convert_hf_whisper),
    ("HF TimesFM 2.5", is_hf_timesfm, convert_hf_timesfm),
    ("NeuralForecast PatchTST", is_nf_patchtst, convert_nf_patchtst),
]

_ZOO_ROOTS = ("front_end.", "encoder.", "head.")


class UnknownCheckpointError(ValueError):
    """A state dict in no format zoo knows."""


def unwrap_checkpoint(obj: Any) -> dict[str, torch.Tensor]:
    """The tensor mapping inside a checkpoint, with wrapper prefixes removed."""
    if isinstance(obj, Mapping):
        for key in ("state_dict", "model", "model_state_dict"):
            inner = obj.get(key)
            if isinstance(inner, Mapping) and inner and all(isinstance(k, str) for k in inner):
                obj = inner
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise UnknownCheckpointError("checkpoint does not hold a mapping of names to tensors")
    state = dict(obj)
    for prefix in ("module.", "model."):
        if state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    return state


def to_zoo_state_dict(obj: Any) -> dict[str, torch.Tensor]:
    """Unwrap ``obj`` and convert it to zoo keys if it comes from a known peer library."""
    state = unwrap_checkpoint(obj)
    if all(k.startswith(_ZOO_ROOTS) for k in state):
        return state
    for _, detect, convert in CONVERTERS:
        if detect(state):
            return convert(state)
    sample = ", ".join(sorted(state)[:5])
    known = ", ".join(name for name, _, _ in CONVERTERS)
    raise UnknownCheckpointError(
        f"checkpoint keys ({sample}, ...) are neither zoo's nor a known format ({known})"
    )

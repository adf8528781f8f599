"""zoo: one Transformer encoder, front ends for images, speech and time series, named weights.

    import zoo
    zoo.list_models("vit_*")
    model = zoo.create_model("vit_tiny_patch16_224", pretrained=True)
    relevance = zoo.explain(model, images)   # (B, 14, 14): which patches the prediction rests on
"""

from zoo.checkpoint import CheckpointMismatchError
from zoo.explanations import explain
from zoo.factory import create_model
from zoo.package import __version__, load, save
from zoo.registry import (
    ModelNotFoundError,
    PretrainedCfg,
    UnsupportedModelError,
    list_models,
    register_model,
)

__all__ = ["CheckpointMismatchError", "ModelNotFoundError", "PretrainedCfg",
           "UnsupportedModelError", "__version__", "create_model", "explain", "list_models", "load",
           "register_model", "save"]

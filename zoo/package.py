"""Model packages: a directory with ``model.safetensors``, ``config.json`` and a model card.

``config.json`` holds everything needed to rebuild the model: the registered architecture, the
arguments it was built with and its pretrained cfg (preprocessing, labels, metrics).
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any, Mapping, Optional, Union

from safetensors.torch import save_file
from torch import nn

from zoo.checkpoint import PACKAGE_FORMAT, is_zoo_package, peer_model_spec, read_config
from zoo.factory import create_model
from zoo.hub import CONFIG_FILE

__version__ = "0.1.0"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def model_card(model: nn.Module) -> str:
    """A Markdown card from the model's pretrained cfg: what it is, how to feed it, metrics."""
    cfg = model.pretrained_cfg
    labels = cfg.labels if isinstance(cfg.labels, str) or cfg.labels is None else ", ".join(cfg.labels)
    lines = [f"# {cfg.name}", "", cfg.description or "A zoo model.", "",
             "| field | value |", "| --- | --- |",
             f"| architecture | `{cfg.architecture}` |", f"| modality | {cfg.modality} |",
             f"| parameters | {sum(p.numel() for p in model.parameters()):,} |",
             f"| classes | {cfg.num_classes} |", f"| labels | {labels} |",
             f"| license | {cfg.license or 'not stated'} |"]
    lines += [f"| {k} | {v} |" for k, v in cfg.preprocess.items()]
    if cfg.metrics:
        lines += ["", "## Metrics", "", "| metric | value |", "| --- | --- |"]
        lines += [f"| {k} | {v} |" for k, v in cfg.metrics.items()]
    lines += ["", "## Use", "", "```python", "import zoo",
              "model = zoo.load('path/to/this/directory')", "```", ""]
    return "\n".join(lines)


def save(model: nn.Module, directory: Union[str, Path], *, card: Optional[str] = None) -> Path:
    """Write ``model`` as a package (weights, config, card) into ``directory``."""
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None:
        raise ValueError("zoo.save needs a model made by zoo.create_model (it has no pretrained_cfg)")
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / "model.safetensors"))
    config = {"format": PACKAGE_FORMAT, "zoo_version": __version__,
              "architecture": cfg.architecture, "model_args": _jsonable(model.model_args),
              "pretrained_cfg": _jsonable(cfg.to_dict())}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (directory / "README.md").write_text(card if card is not None else model_card(model))
    return directory


def load(source: Union[str, Path], **kwargs: Any) -> nn.Module:
    """Rebuild a model from a folder or ``hf-hub:org/repo``: a zoo package (:func:`save`), or
    a peer's own layout recognised from its ``config.json``: a timm hub folder
    (``architecture`` + ``model.safetensors``), or an HF ``save_pretrained`` folder of
    ``ASTForAudioClassification`` or ``PatchTSTForPrediction``. ``kwargs`` override the
    architecture's arguments as in :func:`zoo.create_model`."""
    config = read_config(source)
    if config is None:
        raise FileNotFoundError(f"{source} has no {CONFIG_FILE}: not a zoo package or a peer's "
                                "model folder (for a bare weights file use zoo.create_model("
                                "NAME, pretrained=FILE))")
    if is_zoo_package(config):
        return create_model(config["architecture"], pretrained=source, **kwargs)
    arch, args, labels = peer_model_spec(config, source)
    model = create_model(arch, pretrained=source, **{**args, **kwargs})
    if labels is not None and len(labels) == model.num_classes:
        model.pretrained_cfg = replace(model.pretrained_cfg, labels=labels)
    return model

"""``create_model``: a registered name (and maybe weights) -> a model ready to use."""

from __future__ import annotations

import difflib
import inspect
import logging
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

import zoo.models  # noqa: F401  (registers the built-in variants)
from zoo.checkpoint import (
    CheckpointMismatchError,
    build_with_weights,
    is_timm_config,
    is_zoo_package,
    load_weights,
)
from zoo.models.base import Forecaster, TokenModel
from zoo.registry import ModelEntry, ModelNotFoundError, PretrainedCfg, get_entry, list_models

logger = logging.getLogger(__name__)


def create_model(name: str, pretrained: bool | str | Path = False, *,
                 num_classes: int | None = None,
                 encoder_from: str | Path | nn.Module | None = None, **kwargs: Any) -> TokenModel:
    """Build a registered model, optionally with weights.

    Args:
        name: ``arch`` or ``arch.tag`` (see :func:`zoo.list_models`).
        pretrained: False (random init), True (the registry's weights for the tag), or a
            source: a file (.safetensors, or .pth/.bin/.pt read with ``weights_only=True``), a
            directory written by :func:`zoo.save` or a peer's folder (timm hub layout, HF
            ``save_pretrained``), an ``http(s)://`` / ``file://`` URL, or ``hf-hub:org/repo``.
            timm, HF AST, PatchTST, Whisper and TimesFM 2.5 checkpoints are converted
            automatically.
        num_classes: classifier size. Defaults to the checkpoint's; a different value keeps
            the backbone and re-initialises the classifier.
        encoder_from: initialise the shared encoder (and what fits of the front end) from
            another model, e.g. an image-pretrained ViT for an audio model (the AST recipe):
            a registered name (its default weights), a weights source as for ``pretrained``,
            or a zoo model. The head stays freshly initialised.
        **kwargs: overrides of the variant's arguments, e.g. ``img_size=384``.
    """
    if encoder_from is not None and pretrained:
        raise ValueError("pass either pretrained= or encoder_from=, not both")
    entry, tag = get_entry(name)
    cfg = entry.cfg(tag)
    state_dict, config = None, None
    if pretrained is True:
        if not cfg.has_weights:
            have = list_models(entry.name, pretrained=True)
            raise ModelNotFoundError(
                f"model {name!r} has no pretrained weights registered"
                + (f"; weights exist for: {', '.join(have)}" if have else "")
                + ". Pass pretrained=<path, URL or hf-hub:org/repo> to load your own."
            )
        state_dict, config = load_weights(cfg)
    elif pretrained:
        state_dict, config = load_weights(pretrained)
    package_args: dict[str, Any] = {}
    # a folder's own architecture must be the one asked for (registered timm weights may be
    # shared between names: the QuickGELU CLIP names read the plain CLIP repos)
    if is_zoo_package(config) or (is_timm_config(config) and pretrained is not True):
        kind = "zoo package" if is_zoo_package(config) else "timm checkpoint"
        if config["architecture"] != entry.name:
            raise CheckpointMismatchError(
                f"{pretrained} holds a {config['architecture']!r} model ({kind}), not "
                f"{entry.name!r}; use zoo.load({str(pretrained)!r}) or "
                f"create_model({config['architecture']!r}, ...)"
            )
    if is_zoo_package(config):   # a directory written by zoo.save: its own config wins
        cfg = PretrainedCfg.from_dict(config["pretrained_cfg"])
        package_args = dict(config["model_args"])
    _check_arguments(entry, kwargs)
    args = {**entry.args, **package_args, **kwargs}
    if entry.modality in ("series", "speech"):
        if num_classes:
            takes = "horizon=" if entry.modality == "series" else "tokens="
            raise ValueError(f"{name} is a {_KIND[entry.modality]}: it takes {takes}, not "
                             "num_classes=")
        return _create_with_head(name, entry, cfg, args, state_dict, pretrained)
    ckpt_classes = _checkpoint_num_classes(state_dict)
    if num_classes is not None:
        args["num_classes"] = num_classes
    elif ckpt_classes is not None:
        args["num_classes"] = ckpt_classes
    else:
        args.setdefault("num_classes", cfg.num_classes)
    if state_dict is None:
        model = entry.builder(**args)
    else:
        model, kept = build_with_weights(entry.builder, args, state_dict, source=str(pretrained),
                                         head="head.fc.",
                                         reset_head=lambda m: m.head.reset(args["num_classes"]))
        if not kept:
            logger.info("%s: new %d-class classifier replaces the checkpoint's %d classes",
                        name, model.num_classes, ckpt_classes)

    if encoder_from is not None:
        source = _encoder_state_dict(encoder_from)
        model.init_encoder_from(source)
        origin = str(encoder_from) if not isinstance(encoder_from, nn.Module) else \
            getattr(getattr(encoder_from, "pretrained_cfg", None), "name", "a model")
        logger.info("%s: encoder initialised from %s", name, origin)
        cfg = replace(cfg, tag="", metrics={}, description=f"encoder initialised from {origin}")

    if model.num_classes != cfg.num_classes:
        cfg = replace(cfg, num_classes=model.num_classes, labels=None, metrics={})
    if state_dict is None:   # figures belong to weights: random ones claim none
        cfg = replace(cfg, metrics={})
    model.pretrained_cfg = replace(cfg, preprocess={**cfg.preprocess, **model.input_spec()})
    return model


def _check_arguments(entry: ModelEntry, kwargs: Mapping[str, Any]) -> None:
    """Unknown overrides are named with the valid ones (not a TypeError from deep inside)."""
    valid = [n for n, p in inspect.signature(entry.builder).parameters.items()
             if p.kind is inspect.Parameter.KEYWORD_ONLY]
    unknown = sorted(set(kwargs) - set(valid))
    if unknown:
        close = difflib.get_close_matches(unknown[0], valid, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"unknown argument(s) {', '.join(map(repr, unknown))} for {entry.name} "
                         f"({entry.builder.__name__}){hint} Valid: {', '.join(valid)}")


_KIND = {"series": "forecaster", "speech": "speech recogniser"}


def _create_with_head(name: str, entry: ModelEntry, cfg: PretrainedCfg, args: dict[str, Any],
                      state_dict: dict[str, Any] | None, source: Any) -> TokenModel:
    """Build a forecaster or a speech recogniser; a checkpoint for another horizon (or
    vocabulary) keeps all but the head."""
    if state_dict is None:   # figures belong to weights: random ones claim none
        model = entry.builder(**args)
        cfg = replace(cfg, metrics={})
    else:
        model, kept = build_with_weights(entry.builder, args, state_dict, source=str(source),
                                         head="head.")
        if not kept:
            what = f"horizon-{model.horizon}" if isinstance(model, Forecaster) else "vocabulary"
            logger.info("%s: new %s head replaces the checkpoint's", name, what)
            cfg = replace(cfg, metrics={})
    model.pretrained_cfg = replace(cfg, num_classes=0, preprocess={**cfg.preprocess,
                                                                   **model.input_spec()})
    return model


def _encoder_state_dict(source: str | Path | nn.Module) -> dict[str, Any]:
    """A zoo-keyed state dict for ``encoder_from``: a model, a registered name, or a source."""
    if isinstance(source, nn.Module):
        return dict(source.state_dict())
    text = str(source)
    try:
        get_entry(text)
    except ModelNotFoundError:
        if not (Path(text).expanduser().exists() or "://" in text or text.startswith("hf-hub:")):
            raise
        return load_weights(text)[0]
    return dict(create_model(text, pretrained=True).state_dict())


def _checkpoint_num_classes(state_dict: Mapping[str, torch.Tensor] | None) -> int | None:
    if state_dict is None:
        return None
    weight = state_dict.get("head.fc.weight")
    return int(weight.shape[0]) if weight is not None else 0


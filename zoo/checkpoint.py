"""Checkpoints: reading weights from any source into zoo keys, strict loading with errors that
name every mismatched key, and recognising peers' own folders from their ``config.json``.

A source is a :class:`~zoo.registry.PretrainedCfg` (registered weights), a file, a directory
(a zoo package, a timm hub folder, an HF ``save_pretrained`` folder), a URL or an
``hf-hub:org/repo`` id; :mod:`zoo.hub` turns it into local files, :mod:`zoo.convert` turns a
peer's keys into zoo's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import torch
from torch import nn

from zoo import hub
from zoo.convert import UnknownCheckpointError, to_zoo_state_dict
from zoo.convert.hf_ast import ast_args_from_hf_config
from zoo.convert.hf_patchtst import patchtst_args_from_hf_config
from zoo.convert.hf_timesfm import timesfm_args_from_hf_config
from zoo.convert.hf_whisper import whisper_args_from_hf_config
from zoo.registry import ModelNotFoundError, PretrainedCfg, get_entry

PACKAGE_FORMAT = "zoo"
PREPROCESSOR_FILE = "preprocessor_config.json"   # HF feature-extractor settings
Source = PretrainedCfg | str | Path


class CheckpointMismatchError(ValueError):
    """A checkpoint whose keys or shapes do not fit the model."""


def load_weights(source: Source) -> tuple[dict[str, torch.Tensor], dict[str, Any] | None]:
    """(zoo-keyed state dict, the ``config.json`` beside the weights or None) for ``source``.

    Peer checkpoints (timm ViT, HF AST, HF PatchTST, HF Whisper, HF TimesFM 2.5) are converted
    to zoo's keys; a format zoo does not know is an error, never a partial load.
    """
    if isinstance(source, PretrainedCfg):
        if source.file:
            path, config = hub.bundled_file(source.file, source.sha256), None
        elif source.hf_hub_id:
            path, config = hub.fetch(f"hf-hub:{source.hf_hub_id}", sha256=source.sha256)
        elif source.url:
            path, config = hub.download(source.url, sha256=source.sha256), None
        else:
            raise ValueError(f"{source.name} names no weights (no file, hf_hub_id or url)")
    else:
        path, config = hub.fetch(source)
    try:
        state_dict = to_zoo_state_dict(hub.load_state_dict_file(path))
    except UnknownCheckpointError as err:
        raise UnknownCheckpointError(f"{path}: {err}") from err
    return state_dict, hub.read_json(config) if config is not None else None


def read_config(source: str | Path) -> dict[str, Any] | None:
    """The ``config.json`` of a directory or ``hf-hub:`` repo, or None."""
    path = hub.optional_file(source, hub.CONFIG_FILE)
    return hub.read_json(path) if path is not None else None


def is_zoo_package(config: Mapping[str, Any] | None) -> TypeGuard[Mapping[str, Any]]:
    return config is not None and config.get("format") == PACKAGE_FORMAT


def is_timm_config(config: Mapping[str, Any] | None) -> TypeGuard[Mapping[str, Any]]:
    """timm's hub layout: ``config.json`` with ``architecture`` (and no zoo ``format``)."""
    return config is not None and "architecture" in config and not is_zoo_package(config)


# timm hub configs may carry the arguments a weight was built with (``model_args``): these
# mean the same in zoo's VisionTransformer, or map to another name, or do not apply (zoo's image
# front end always accepts other input sizes)
_TIMM_SAME_ARGS = ("img_size", "patch_size", "in_chans", "num_classes", "global_pool", "embed_dim",
                   "depth", "num_heads", "mlp_ratio", "qkv_bias", "qk_norm", "class_token",
                   "reg_tokens", "no_embed_class", "final_norm", "fc_norm", "drop_rate",
                   "pos_drop_rate", "proj_drop_rate", "attn_drop_rate", "drop_path_rate")
_TIMM_RENAMED_ARGS = {"init_values": "layer_scale_init"}
_TIMM_IGNORED_ARGS = ("dynamic_img_size", "dynamic_img_pad")


def _timm_model_args(model_args: Mapping[str, Any], source: str | Path) -> dict[str, Any]:
    args = {}
    for key, value in model_args.items():
        if key in _TIMM_IGNORED_ARGS:
            continue
        if key not in _TIMM_SAME_ARGS and key not in _TIMM_RENAMED_ARGS:
            raise UnknownCheckpointError(
                f"{source}: timm model_args {key!r} has no zoo equivalent; known: "
                f"{sorted(_TIMM_SAME_ARGS + tuple(_TIMM_RENAMED_ARGS))}")
        args[_TIMM_RENAMED_ARGS.get(key, key)] = tuple(value) if isinstance(value, list) else value
    return args


def peer_model_spec(config: Mapping[str, Any], source: str | Path
                    ) -> tuple[str, dict[str, Any], tuple[str, ...] | None]:
    """(zoo architecture, its arguments, class labels or None) for a peer's ``config.json``:
    timm's hub layout, or transformers' ``ASTForAudioClassification`` /
    ``PatchTSTForPrediction`` / Whisper (``WhisperForAudioClassification``, or the encoder of
    ``WhisperModel`` / ``WhisperForConditionalGeneration``) / ``TimesFm2_5ModelForPrediction``."""
    if is_timm_config(config):
        arch = str(config["architecture"])
        get_entry(arch)   # an architecture zoo does not build is refused first, with the reason
        args = {"num_classes": int(config["num_classes"])} if "num_classes" in config else {}
        args.update(_timm_model_args(config.get("model_args") or {}, source))
        labels = config.get("label_names")
        tag = (config.get("pretrained_cfg") or {}).get("tag")
        try:   # the registered weights' cfg (preprocessing, labels, license) when zoo has it
            name = f"{arch}.{tag}" if tag and get_entry(f"{arch}.{tag}") else arch
        except ModelNotFoundError:
            name = arch
        return name, args, tuple(labels) if labels else None
    model_type = config.get("model_type")
    id2label = config.get("id2label") or {}
    labels = tuple(id2label[k] for k in sorted(id2label, key=int)) if id2label else None
    if model_type == "audio-spectrogram-transformer":
        args = ast_args_from_hf_config(config)
        args.update(_ast_feature_extractor_args(source))
        return "ast", args, labels
    if model_type == "patchtst":
        return "patchtst", patchtst_args_from_hf_config(config), None
    if model_type == "timesfm2_5":
        return "timesfm_2p5", timesfm_args_from_hf_config(config), None
    if model_type == "whisper":
        args = whisper_args_from_hf_config(config)
        args.update(_whisper_feature_extractor_args(source, args["num_mel_bins"]))
        return "whisper", args, labels
    raise UnknownCheckpointError(
        f"{source}: config.json is neither a zoo package's nor one zoo knows (timm's hub "
        f"layout, transformers' AST, PatchTST, Whisper or TimesFM 2.5); "
        f"model_type={model_type!r}")


def _ast_feature_extractor_args(source: str | Path) -> dict[str, Any]:
    """Filterbank settings from an HF folder's ``preprocessor_config.json`` when it has one."""
    path = hub.optional_file(source, PREPROCESSOR_FILE)
    if path is None:
        return {}
    pre = hub.read_json(path)
    mapping = {"mean": "mean", "std": "std", "sampling_rate": "sample_rate",
               "num_mel_bins": "num_mel_bins", "max_length": "target_frames"}
    return {zoo_key: pre[hf_key] for hf_key, zoo_key in mapping.items() if hf_key in pre}


def _whisper_feature_extractor_args(source: str | Path, num_mel_bins: int) -> dict[str, Any]:
    """Log-mel settings from an HF Whisper folder's ``preprocessor_config.json`` when it has
    one; its ``feature_size`` must be the model's ``num_mel_bins``."""
    path = hub.optional_file(source, PREPROCESSOR_FILE)
    if path is None:
        return {}
    pre = hub.read_json(path)
    if pre.get("feature_size", num_mel_bins) != num_mel_bins:
        raise ValueError(f"{source}: {PREPROCESSOR_FILE} makes {pre['feature_size']} mel bins, "
                         f"but config.json's model reads {num_mel_bins} (num_mel_bins)")
    return {zoo_key: pre[hf_key] for hf_key, zoo_key in (
        ("sampling_rate", "sample_rate"), ("n_fft", "n_fft"), ("hop_length", "hop_length"),
        ("nb_max_frames", "target_frames")) if hf_key in pre}


def load_state_dict(model: nn.Module, state_dict: Mapping[str, Any], *, source: str = "checkpoint",
                    allow_missing: Sequence[str] = (), assign: bool = False) -> None:
    """Strict load that names every missing key, unexpected key and shape mismatch.

    ``assign``: the model was built on the meta device; the checkpoint's tensors (cast to the
    model's dtypes) become its weights, so no initialisation was paid for.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not k.startswith(tuple(allow_missing))]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    integers = [f"{k} ({state_dict[k].dtype})" for k in own if k in state_dict
                and own[k].is_floating_point() and not state_dict[k].is_floating_point()]
    if integers:
        raise CheckpointMismatchError(
            f"{source} holds integer tensors where {type(model).__name__} has floating-point "
            f"weights: {', '.join(integers[:4])}{' ...' if len(integers) > 4 else ''}; it is not "
            "a set of model weights (a quantised or index file?)")
    if missing or unexpected or shapes:
        parts = []
        for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", shapes)):
            if items:
                shown = ", ".join(items[:8]) + (f" (+{len(items) - 8} more)" if len(items) > 8 else "")
                parts.append(f"{label}: {shown}")
        raise CheckpointMismatchError(
            f"{source} does not fit {type(model).__name__}: " + "; ".join(parts)
        )
    if not assign:
        model.load_state_dict(state_dict, strict=not allow_missing)
        return
    model.load_state_dict({k: v.to(own[k].dtype) for k, v in state_dict.items()},
                          strict=not allow_missing, assign=True)


def _materialise(model: nn.Module) -> nn.Module:
    """Fill what no checkpoint holds (non-persistent buffers such as a filterbank's mel matrix)
    through the owning module's ``init_non_persistent_buffers``; nothing may stay on meta."""
    for module in model.modules():
        init = getattr(module, "init_non_persistent_buffers", None)
        if init is not None and any(b.is_meta for b in module.buffers(recurse=False)):
            init()
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise RuntimeError(f"{type(model).__name__} keeps tensors no checkpoint holds: {left[:4]}")
    return model


def build_with_weights(builder: Any, args: Mapping[str, Any], state_dict: Mapping[str, Any], *,
                       source: str, head: str,
                       reset_head: Any | None = None) -> tuple[nn.Module, bool]:
    """Build ``builder(**args)`` holding ``state_dict``'s weights; returns (model, whether the
    checkpoint's head was kept).

    The model is built on the meta device and takes the checkpoint's tensors directly: no
    initialisation is paid for (seconds on the larger models). When the tensors under ``head``
    do not fit (another class count or horizon), everything else is loaded and the head is
    freshly initialised: by ``reset_head(model)`` when given, else by building the model again
    with its initialisation.
    """
    with torch.device("meta"):
        model = builder(**args)
    state_dict = model.adapt_state_dict(dict(state_dict))
    own = {k: tuple(v.shape) for k, v in model.state_dict().items() if k.startswith(head)}
    theirs = {k: tuple(v.shape) for k, v in state_dict.items() if k.startswith(head)}
    if own == theirs:
        load_state_dict(model, state_dict, source=source, assign=True)
        return _materialise(model), True
    body = {k: v for k, v in state_dict.items() if not k.startswith(head)}
    if reset_head is None:
        model = builder(**args)
        load_state_dict(model, model.adapt_state_dict(body), source=source, allow_missing=(head,))
        return model, False
    load_state_dict(model, body, source=source, allow_missing=(head,), assign=True)
    reset_head(model)
    return _materialise(model), False

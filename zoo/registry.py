"""Named model variants and their pretrained weights.

A variant is a builder plus a few keyword arguments, registered under a name such as
``vit_tiny_patch16_224``. Each may carry pretrained weight entries, named ``arch.tag`` as timm
names them (``vit_tiny_patch16_224.augreg_in21k_ft_in1k``); the first entry is the default.
"""

from __future__ import annotations

import difflib
import fnmatch
import logging
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence, Union

from torch import nn

logger = logging.getLogger(__name__)

MODALITIES = ("image", "audio", "series")


class ModelNotFoundError(ValueError):
    """An unknown model name or pretrained tag."""


class CheckpointMismatchError(ValueError):
    """A checkpoint whose keys or shapes do not fit the model."""


@dataclass(frozen=True)
class PretrainedCfg:
    """What a set of weights is and how to feed it.

    ``preprocess`` holds the modality's input settings, e.g. for images ``input_size``
    (C, H, W), ``mean``, ``std``, ``interpolation`` and ``crop_pct``. ``labels`` is a tuple of
    class names or the name of a known label set (``"imagenet-1k"``). The weights come from the
    first of ``file`` (shipped inside the package), ``hf_hub_id`` or ``url``; ``sha256`` is
    checked whenever it is given.
    """

    architecture: str
    tag: str = ""
    modality: str = "image"
    num_classes: int = 1000
    labels: Union[str, tuple[str, ...], None] = None
    preprocess: Mapping[str, Any] = field(default_factory=dict)
    file: Optional[str] = None
    hf_hub_id: Optional[str] = None
    url: Optional[str] = None
    sha256: Optional[str] = None
    license: Optional[str] = None
    metrics: Mapping[str, Any] = field(default_factory=dict)
    description: str = ""

    @property
    def name(self) -> str:
        return f"{self.architecture}.{self.tag}" if self.tag else self.architecture

    @property
    def has_weights(self) -> bool:
        return bool(self.file or self.hf_hub_id or self.url)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["preprocess"] = dict(self.preprocess)
        d["metrics"] = dict(self.metrics)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "PretrainedCfg":
        d = dict(d)
        if isinstance(d.get("labels"), list):
            d["labels"] = tuple(d["labels"])
        pre = dict(d.get("preprocess") or {})
        for key, value in pre.items():
            if isinstance(value, list):
                pre[key] = tuple(value)
        d["preprocess"] = pre
        known = set(cls.__dataclass_fields__)
        return cls(**{k: v for k, v in d.items() if k in known})


@dataclass(frozen=True)
class ModelEntry:
    """A registered variant: ``builder(**args)`` makes it; ``weights`` are its pretrained cfgs."""

    name: str
    modality: str
    builder: Callable[..., nn.Module]
    args: Mapping[str, Any]
    default_cfg: PretrainedCfg
    weights: tuple[PretrainedCfg, ...] = ()

    def cfg(self, tag: str = "") -> PretrainedCfg:
        """The cfg for ``tag`` (the default weights if empty, or the bare cfg if none)."""
        if not tag:
            return self.weights[0] if self.weights else self.default_cfg
        for cfg in self.weights:
            if cfg.tag == tag:
                return cfg
        tags = [c.tag for c in self.weights]
        raise ModelNotFoundError(
            f"model {self.name!r} has no pretrained tag {tag!r}; "
            f"available: {', '.join(tags) if tags else 'none'}"
        )


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(name: str, *, modality: str, builder: Callable[..., nn.Module],
                   args: Mapping[str, Any], preprocess: Mapping[str, Any],
                   num_classes: int, weights: Sequence[Mapping[str, Any]] = ()) -> ModelEntry:
    """Register variant ``name``. ``weights`` are dicts of :class:`PretrainedCfg` fields
    (``tag`` required) that default to this variant's ``preprocess`` and ``num_classes``."""
    if name in _REGISTRY:
        raise ValueError(f"model {name!r} is already registered")
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    default = PretrainedCfg(architecture=name, modality=modality, num_classes=num_classes,
                            preprocess=dict(preprocess))
    cfgs = []
    for w in weights:
        w = dict(w)
        w["preprocess"] = {**default.preprocess, **w.get("preprocess", {})}
        cfgs.append(replace(default, **w))
    tags = [c.tag for c in cfgs]
    if len(set(tags)) != len(tags) or "" in tags:
        raise ValueError(f"model {name!r}: pretrained tags must be unique and non-empty: {tags}")
    entry = ModelEntry(name=name, modality=modality, builder=builder, args=dict(args),
                       default_cfg=default, weights=tuple(cfgs))
    _REGISTRY[name] = entry
    return entry


def _ensure_registered() -> None:
    import zoo.models  # noqa: F401  (registers the built-in variants)


def get_entry(name: str) -> tuple[ModelEntry, str]:
    """Split ``arch.tag`` and look the architecture up; unknown names suggest close ones."""
    _ensure_registered()
    arch, _, tag = name.partition(".")
    entry = _REGISTRY.get(arch)
    if entry is None:
        candidates = list(_REGISTRY) + [c.name for e in _REGISTRY.values() for c in e.weights]
        close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ModelNotFoundError(
            f"unknown model {name!r}.{hint} `zoo list` or zoo.list_models() shows all names."
        )
    entry.cfg(tag)  # validates the tag
    return entry, tag


def list_models(pattern: str = "*", *, modality: Optional[str] = None,
                pretrained: bool = False) -> list[str]:
    """Registered names matching a shell-style ``pattern``.

    ``pretrained=True`` lists weight names (``arch.tag``) instead of architectures.
    """
    _ensure_registered()
    if modality is not None and modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    names = []
    for entry in _REGISTRY.values():
        if modality and entry.modality != modality:
            continue
        if pretrained:
            names += [c.name for c in entry.weights if fnmatch.fnmatch(c.name, pattern)
                      or fnmatch.fnmatch(entry.name, pattern)]
        elif fnmatch.fnmatch(entry.name, pattern):
            names.append(entry.name)
    return sorted(names)


def create_model(name: str, pretrained: Union[bool, str, Path] = False, *,
                 num_classes: Optional[int] = None,
                 encoder_from: Union[str, Path, nn.Module, None] = None, **kwargs: Any) -> nn.Module:
    """Build a registered model, optionally with weights.

    Args:
        name: ``arch`` or ``arch.tag`` (see :func:`list_models`).
        pretrained: False (random init), True (the registry's weights for the tag), or a
            source: a file (.safetensors, or .pth/.bin/.pt read with ``weights_only=True``), a
            directory written by :func:`zoo.save`, an ``http(s)://`` / ``file://`` URL, or
            ``hf-hub:org/repo``. timm checkpoints are converted automatically.
        num_classes: classifier size. Defaults to the checkpoint's; a different value keeps
            the backbone and re-initialises the classifier.
        encoder_from: initialise the shared encoder (and what fits of the front end) from
            another model, e.g. an image-pretrained ViT for an audio model (the AST recipe):
            a registered name (its default weights), a weights source as for ``pretrained``,
            or a zoo model. The head stays freshly initialised.
        **kwargs: overrides of the variant's arguments, e.g. ``img_size=384``.
    """
    from zoo import hub
    from zoo.convert import to_zoo_state_dict

    if encoder_from is not None and pretrained:
        raise ValueError("pass either pretrained= or encoder_from=, not both")
    entry, tag = get_entry(name)
    cfg = entry.cfg(tag)
    state_dict, package = None, None
    if pretrained is True:
        if not cfg.has_weights:
            have = list_models(entry.name, pretrained=True)
            raise ModelNotFoundError(
                f"model {name!r} has no pretrained weights registered"
                + (f"; weights exist for: {', '.join(have)}" if have else "")
                + ". Pass pretrained=<path, URL or hf-hub:org/repo> to load your own."
            )
        state_dict, package = hub.load_pretrained(cfg)
    elif pretrained:
        state_dict, package = hub.load_pretrained(pretrained)
    package_args = {}
    if package is not None:  # a directory written by zoo.save: its own config wins
        if package["architecture"] != entry.name:
            raise CheckpointMismatchError(
                f"{pretrained} holds a {package['architecture']!r} model, not {entry.name!r}; "
                f"use zoo.load({str(pretrained)!r}) or create_model({package['architecture']!r}, ...)"
            )
        cfg = PretrainedCfg.from_dict(package["pretrained_cfg"])
        package_args = dict(package["model_args"])
    if state_dict is not None:
        state_dict = to_zoo_state_dict(state_dict)
    args = {**entry.args, **package_args, **kwargs}
    if entry.modality == "series":
        if num_classes:
            raise ValueError(f"{name} is a forecaster: it takes horizon=, not num_classes=")
        return _create_forecaster(name, entry, cfg, args, state_dict, pretrained)
    ckpt_classes = _checkpoint_num_classes(state_dict)
    if num_classes is not None:
        args["num_classes"] = num_classes
    elif ckpt_classes is not None:
        args["num_classes"] = ckpt_classes
    else:
        args.setdefault("num_classes", cfg.num_classes)
    model = entry.builder(**args)

    if state_dict is not None:
        state_dict = model.adapt_state_dict(state_dict)
        if ckpt_classes is not None and ckpt_classes != model.num_classes:
            logger.info("%s: new %d-class classifier replaces the checkpoint's %d classes",
                        name, model.num_classes, ckpt_classes)
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("head.fc.")}
            load_state_dict(model, state_dict, source=str(pretrained), allow_missing=("head.fc.",))
        else:
            load_state_dict(model, state_dict, source=str(pretrained))

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


def _create_forecaster(name: str, entry: ModelEntry, cfg: PretrainedCfg, args: dict[str, Any],
                       state_dict: Optional[dict[str, Any]], source: Any) -> nn.Module:
    """Build a forecaster; a checkpoint for another horizon keeps all but the head."""
    model = entry.builder(**args)
    if state_dict is None:   # figures belong to weights: random ones claim none
        cfg = replace(cfg, metrics={})
    else:
        head = model.head.state_dict()
        if any(tuple(state_dict.get(f"head.{k}", v).shape) != tuple(v.shape) for k, v in head.items()):
            logger.info("%s: new horizon-%d head replaces the checkpoint's", name, model.horizon)
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("head.")}
            load_state_dict(model, state_dict, source=str(source), allow_missing=("head.",))
            cfg = replace(cfg, metrics={})
        else:
            load_state_dict(model, state_dict, source=str(source))
    model.pretrained_cfg = replace(cfg, num_classes=0, preprocess={**cfg.preprocess,
                                                                   **model.input_spec()})
    return model


def _encoder_state_dict(source: Union[str, Path, nn.Module]) -> dict[str, Any]:
    """A zoo-keyed state dict for ``encoder_from``: a model, a registered name, or a source."""
    from zoo import hub
    from zoo.convert import to_zoo_state_dict

    if isinstance(source, nn.Module):
        return dict(source.state_dict())
    text = str(source)
    try:
        get_entry(text)
    except ModelNotFoundError:
        if not (Path(text).expanduser().exists() or "://" in text or text.startswith("hf-hub:")):
            raise
        return to_zoo_state_dict(hub.load_pretrained(text)[0])
    return dict(create_model(text, pretrained=True).state_dict())


def _checkpoint_num_classes(state_dict: Optional[Mapping[str, Any]]) -> Optional[int]:
    if state_dict is None:
        return None
    weight = state_dict.get("head.fc.weight")
    return int(weight.shape[0]) if weight is not None else 0


def load_state_dict(model: nn.Module, state_dict: Mapping[str, Any], *, source: str = "checkpoint",
                    allow_missing: Sequence[str] = ()) -> None:
    """Strict load that names every missing key, unexpected key and shape mismatch."""
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict and not k.startswith(tuple(allow_missing))]
    unexpected = [k for k in state_dict if k not in own]
    shapes = [f"{k}: checkpoint {tuple(state_dict[k].shape)} vs model {tuple(own[k].shape)}"
              for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
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
    model.load_state_dict(state_dict, strict=not allow_missing)

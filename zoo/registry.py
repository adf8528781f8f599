"""Named model variants and their pretrained weights: names and data, nothing else.

A variant is a builder plus a few keyword arguments, registered under a name such as
``vit_tiny_patch16_224``. Each may carry pretrained weight entries, named ``arch.tag`` as timm
names them (``vit_tiny_patch16_224.augreg_in21k_ft_in1k``); the first entry is the default.
Names zoo deliberately does not build (e.g. timm architectures with relative position bias)
are recorded with the reason, so asking for one says why.

This module imports nothing of zoo: the models register themselves into it when
:mod:`zoo.models` is imported (``import zoo`` does that), :mod:`zoo.factory` builds them.
"""

from __future__ import annotations

import difflib
import fnmatch
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

MODALITIES = ("image", "audio", "series", "speech")   # speech: recognition (text out)


class ModelNotFoundError(ValueError):
    """An unknown model name or pretrained tag."""


class UnsupportedModelError(ModelNotFoundError):
    """A known architecture (e.g. one of timm's) that zoo does not build, with the reason."""


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
    labels: str | tuple[str, ...] | None = None
    preprocess: Mapping[str, Any] = field(default_factory=dict)
    file: str | None = None
    hf_hub_id: str | None = None
    url: str | None = None
    sha256: str | None = None
    license: str | None = None
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
    def from_dict(cls, d: Mapping[str, Any]) -> PretrainedCfg:
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
    builder: Callable[..., Any]
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
_REFUSED: dict[str, str] = {}   # architecture name -> why zoo does not build it


def register_model(name: str, *, modality: str, builder: Callable[..., Any],
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
        preprocess = {**default.preprocess, **w.get("preprocess", {})}
        cfgs.append(replace(default, **{**w, "preprocess": preprocess}))
    tags = [c.tag for c in cfgs]
    if len(set(tags)) != len(tags) or "" in tags:
        raise ValueError(f"model {name!r}: pretrained tags must be unique and non-empty: {tags}")
    entry = ModelEntry(name=name, modality=modality, builder=builder, args=dict(args),
                       default_cfg=default, weights=tuple(cfgs))
    _REGISTRY[name] = entry
    return entry


def refuse_models(names: Sequence[str], reason: str) -> None:
    """Record architectures zoo does not build (peers' names), and ``reason`` why."""
    for name in names:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is registered; it cannot also be refused")
        _REFUSED[name] = reason


def refused_models() -> dict[str, str]:
    """Architectures zoo knows by name but does not build -> the reason."""
    return dict(_REFUSED)


def get_entry(name: str) -> tuple[ModelEntry, str]:
    """Split ``arch.tag`` and look the architecture up; unknown names suggest close ones."""
    arch, _, tag = name.partition(".")
    entry = _REGISTRY.get(arch)
    if entry is None and arch in _REFUSED:
        raise UnsupportedModelError(f"{arch!r} is not built by zoo: {_REFUSED[arch]}")
    if entry is None:
        candidates = list(_REGISTRY) + [c.name for e in _REGISTRY.values() for c in e.weights]
        close = difflib.get_close_matches(name, candidates, n=5, cutoff=0.6)
        hint = f" Did you mean: {', '.join(close)}?" if close else ""
        raise ModelNotFoundError(
            f"unknown model {name!r}.{hint} `zoo list` or zoo.list_models() shows all names."
        )
    entry.cfg(tag)  # validates the tag
    return entry, tag


def list_models(pattern: str = "*", *, modality: str | None = None,
                pretrained: bool = False) -> list[str]:
    """Registered names matching a shell-style ``pattern``.

    ``pretrained=True`` lists weight names (``arch.tag``) instead of architectures.
    """
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

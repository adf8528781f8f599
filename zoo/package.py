"""Model packages: a directory with ``model.safetensors``, ``config.json`` and a model card.

``config.json`` holds everything needed to rebuild the model: the registered architecture, the
arguments it was built with and its pretrained cfg (preprocessing, labels, metrics).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

from safetensors.torch import save_file

from zoo.checkpoint import PACKAGE_FORMAT, is_zoo_package, peer_model_spec, read_config
from zoo.factory import create_model
from zoo.hub import CONFIG_FILE
from zoo.models.base import Classifier, TokenModel, require_pretrained_cfg

__version__ = "0.1.0"


def _jsonable(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def model_card(model: TokenModel) -> str:
    """A Markdown card from the model's pretrained cfg: what it is, how to feed it, metrics."""
    cfg = require_pretrained_cfg(model, "a model card")
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


PACKAGE_FILES = ("model.safetensors", CONFIG_FILE, "README.md", "model.onnx", "model.int8.onnx")


def _check_target(directory: Path) -> None:
    """A package goes into a new or empty folder, or replaces a zoo package that holds nothing
    else; anything else is the user's and is never written over."""
    try:
        entries = sorted(p.name for p in directory.iterdir())
    except FileNotFoundError:
        return                                  # nothing there (any more)
    except NotADirectoryError:
        raise FileExistsError(f"{directory} is a file, not a folder for a package") from None
    if not entries:
        return
    others = [name for name in entries if name not in PACKAGE_FILES]
    config = directory / CONFIG_FILE
    is_package = config.is_file() and is_zoo_package(_read_json_or_none(config))
    if others or not is_package:
        shown = ", ".join((others or entries)[:5]) + (" ..." if len(others or entries) > 5 else "")
        what = "holds files a zoo package does not" if is_package else \
            "is a non-empty folder that is not a zoo package"
        raise FileExistsError(f"{directory} {what} ({shown}); zoo never writes over files it did "
                              "not make: choose a new or empty folder")


def _read_json_or_none(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@contextlib.contextmanager
def package_writer(directory: str | Path) -> Iterator[Path]:
    """A temporary folder to write a package into; when the block ends without error it
    replaces ``directory`` whole, by renames, so a reader never sees half a package and two
    writers to one folder never mix (the last one wins whole). On error nothing changes.

    ``directory`` must be new, empty, or a zoo package holding only package files.
    """
    directory = Path(directory)
    _check_target(directory)
    directory.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.", suffix=".new"))
    try:
        yield staging
        _publish(staging, directory)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _publish(staging: Path, directory: Path, attempts: int = 10) -> None:
    """Rename ``staging`` to ``directory``, moving a package already there aside first (and
    deleting it after). Another writer may publish between our renames: then we try again, and
    whoever renames last wins whole."""
    for _ in range(attempts):
        old, moved = None, False
        if directory.exists():
            try:
                _check_target(directory)
            except FileExistsError:   # the user's files, or a folder seen mid-swap: look again
                time.sleep(0.05)
                _check_target(directory)
            old = Path(tempfile.mkdtemp(dir=directory.parent, prefix=f".{directory.name}.",
                                        suffix=".old"))
            try:
                os.replace(directory, old)            # onto the empty folder mkdtemp made
                moved = True
            except FileNotFoundError:                 # another writer moved it first
                pass
        try:
            os.rename(staging, directory)
        except OSError:                               # another writer published in between
            if moved and old is not None:
                try:
                    os.rename(old, directory)         # put it back if the place is still free
                except OSError:
                    shutil.rmtree(old, ignore_errors=True)   # a newer package took it
            elif old is not None:
                old.rmdir()
            continue
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        return
    raise FileExistsError(f"{directory} kept changing while the package was written; nothing "
                          "was replaced")


def write_package(model: TokenModel, directory: Path, *, card: str | None = None) -> None:
    """The package files (weights, config, card) of ``model`` into an existing ``directory``."""
    cfg = getattr(model, "pretrained_cfg", None)
    if cfg is None:
        raise ValueError("zoo.save needs a model made by zoo.create_model (it has no pretrained_cfg)")
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(directory / "model.safetensors"))
    config = {"format": PACKAGE_FORMAT, "zoo_version": __version__,
              "architecture": cfg.architecture, "model_args": _jsonable(model.model_args),
              "pretrained_cfg": _jsonable(cfg.to_dict())}
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n")
    (directory / "README.md").write_text(card if card is not None else model_card(model))


def save(model: TokenModel, directory: str | Path, *, card: str | None = None) -> Path:
    """Write ``model`` as a package (weights, config, card) into ``directory``, atomically
    (see :func:`package_writer`: a new or empty folder, or a zoo package it replaces whole)."""
    if getattr(model, "pretrained_cfg", None) is None:
        raise ValueError("zoo.save needs a model made by zoo.create_model (it has no pretrained_cfg)")
    with package_writer(directory) as staging:
        write_package(model, staging, card=card)
    return Path(directory)


def load(source: str | Path, **kwargs: Any) -> TokenModel:
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
    if (isinstance(model, Classifier) and model.pretrained_cfg is not None
            and labels is not None and len(labels) == model.num_classes):
        model.pretrained_cfg = replace(model.pretrained_cfg, labels=labels)
    return model

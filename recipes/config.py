"""Recipe configs: YAML files read into typed dataclasses, with ``key.sub=value`` overrides.

Unknown keys and wrong types are errors that name the key (and suggest the closest known one),
never silent defaults.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import yaml


class ConfigError(ValueError):
    """A config key that does not exist or a value of the wrong type."""


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``3e-4`` as a string; read scientific notation as a float, as YAML 1.2 does."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


@dataclass
class ModelSection:
    name: str = "vit_nano_patch4_32"
    pretrained: Union[bool, str] = False     # true, a path, a URL or hf-hub:org/repo
    kwargs: dict = field(default_factory=dict)  # variant overrides, e.g. {drop_path_rate: 0.1}
    encoder_from: Optional[str] = None      # init the encoder from another model (e.g. an image ViT)
    grad_checkpointing: bool = False


@dataclass
class DataSection:
    dataset: str = "digits"                 # digits | imagefolder (image); fsdd | audiofolder
                                            # (audio); etth1 | csv (series)
    root: Optional[str] = None              # imagefolder / audiofolder: the folder of class
                                            # sub-folders; fsdd: its folder (default $ZOO_DATA/fsdd);
                                            # csv: the CSV file; etth1: default $ZOO_DATA
    img_size: Optional[int] = None          # default: the model's input size
    batch_size: int = 64
    num_workers: int = 0
    val_fraction: float = 0.2               # imagefolder without train/ val/ sub-folders
    augment: bool = True
    # audio only
    time_shift: bool = True                 # move each clip to a random start in its window
    freq_mask: int = 0                      # SpecAugment: widest frequency mask (bins)
    time_mask: int = 0                      # SpecAugment: widest time mask (frames)
    num_masks: int = 1                      # SpecAugment: masks of each kind per clip
    time_stretch: float = 1.0               # speed each clip up / down by up to this factor
    gain_db: float = 0.0                    # louder / quieter by up to this many dB
    mixup: float = 0.0                      # Beta(a, a) mixup of inputs and targets; 0 = off
    on_error: str = "raise"                 # unreadable image / audio file, non-numeric CSV value: raise | skip (logged)
    holdout: bool = True                    # fsdd: hold takes 5-9 out to validate; false trains on
                                            # all 2,700 training clips and keeps the last checkpoint
    # series only (the model's context_length and horizon set the window)
    time_column: Optional[str] = "date"     # csv: the timestamp column (null: rows in file order)
    target_columns: Optional[list] = None   # csv: columns to forecast (default: all but time)
    fractions: tuple = (0.7, 0.1, 0.2)      # csv: chronological train / val / test shares of rows
    val_start: Optional[str] = None         # csv: split by date instead (both or neither)
    test_start: Optional[str] = None
    missing: str = "error"                  # csv: NaN / empty cells: error | interpolate
    irregular: str = "error"                # csv: gaps in the time grid: error | reindex


@dataclass
class OptimSection:
    lr: float = 1e-3                        # peak learning rate, after warm-up
    min_lr: float = 1e-5                    # cosine floor
    weight_decay: float = 0.05              # on matrices only (not norms, biases, positions)
    betas: tuple = (0.9, 0.999)
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    layer_decay: Optional[float] = None     # e.g. 0.75: lr x decay^(depth - layer) per layer
    schedule: str = "cosine"                # cosine | exponential (hold, then x gamma per epoch)
    hold_epochs: int = 3                    # exponential: epochs at the peak lr
    gamma: float = 0.9                      # exponential: per-epoch decay after the hold
    loss: str = "mse"                       # forecasting: mse | mae | huber


@dataclass
class FinetuneSection:
    mode: str = "full"                      # full | freeze_backbone | linear_probe
    trainable_blocks: int = 0               # freeze_backbone: last N blocks stay trainable


@dataclass
class TrainerSection:
    max_epochs: int = 30
    accelerator: str = "auto"
    devices: Union[int, str] = "auto"
    precision: str = "auto"                 # auto: bf16-mixed on a GPU that has it, else 32-true
    log_every_n_steps: int = 10
    limit_train_batches: Optional[Union[int, float]] = None
    limit_val_batches: Optional[Union[int, float]] = None
    enable_progress_bar: bool = True
    deterministic: bool = False
    early_stopping_patience: Optional[int] = None  # stop after this many epochs without a
                                                   # better validation metric (null: never)
    num_nodes: int = 1                      # machines (Lightning's own launch; see README)
    strategy: str = "auto"                  # auto | ddp | ddp_spawn | fsdp
    accumulate_grad_batches: int = 1        # global batch = batch_size x devices x nodes x this
    checkpoint_every_n_steps: Optional[int] = None  # also write last.ckpt every N optimizer
                                                    # steps (null: at each epoch's end only)
    nonfinite_loss: str = "raise"           # NaN / Inf training loss: raise (naming the step) |
                                            # skip (the batch, logged)


@dataclass
class RecipeConfig:
    task: str = "image_classification"
    seed: int = 0
    output_dir: str = "runs/default"
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    optim: OptimSection = field(default_factory=OptimSection)
    finetune: FinetuneSection = field(default_factory=FinetuneSection)
    trainer: TrainerSection = field(default_factory=TrainerSection)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["optim"]["betas"] = list(self.optim.betas)
        d["data"]["fractions"] = list(self.data.fractions)
        return d


TASKS = ("image_classification", "audio_classification", "forecasting")
CHOICES = {
    "task": TASKS,
    "data.dataset": ("digits", "imagefolder", "fsdd", "audiofolder", "etth1", "csv"),
    "data.missing": ("error", "interpolate"),
    "data.irregular": ("error", "reindex"),
    "optim.schedule": ("cosine", "exponential"),
    "optim.loss": ("mse", "mae", "huber"),
    "data.on_error": ("raise", "skip"),
    "finetune.mode": ("full", "freeze_backbone", "linear_probe"),
    "trainer.strategy": ("auto", "ddp", "ddp_spawn", "fsdp"),
    "trainer.nonfinite_loss": ("raise", "skip"),
}


def _type_ok(value: Any, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if hint is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_type_ok(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is tuple:
        return isinstance(value, (list, tuple))
    return isinstance(value, origin or hint)


def _type_name(hint: Any) -> str:
    if typing.get_origin(hint) in (Union, types.UnionType):
        return " or ".join(_type_name(a) for a in typing.get_args(hint))
    return "null" if hint is type(None) else getattr(hint, "__name__", str(hint))


def _build(cls: type, values: Any, where: str) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"{where or 'config'}: expected a mapping, got {type(values).__name__}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        path = f"{where}.{key}" if where else str(key)
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1, cutoff=0.5)
            hint = f"; did you mean '{(where + '.') if where else ''}{close[0]}'?" if close else ""
            raise ConfigError(f"unknown config key '{path}'{hint} (known: {', '.join(names)})")
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            kwargs[key] = _build(hint, value, path)
            continue
        if not _type_ok(value, hint):
            raise ConfigError(f"config key '{path}' must be {_type_name(hint)}, got {value!r}")
        if hint is float and isinstance(value, int):
            value = float(value)
        if hint is tuple:
            value = tuple(value)
        if path in CHOICES and value not in CHOICES[path]:
            raise ConfigError(f"config key '{path}' must be one of {CHOICES[path]}, got {value!r}")
        kwargs[key] = value
    return cls(**kwargs)


def _set_dotted(tree: dict, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{dotted}': '{part}' is not a section")
    node[parts[-1]] = value


def parse_overrides(overrides: Sequence[str]) -> dict[str, Any]:
    """``["optim.lr=3e-4", "trainer.max_epochs=5"]`` -> nested dict (values parsed as YAML)."""
    tree: dict[str, Any] = {}
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} is not of the form key.sub=value")
        _set_dotted(tree, key.strip(), _yaml(raw) if raw.strip() else None)
    return tree


def _merge(base: dict, extra: dict) -> dict:
    out = dict(base)
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "kwargs":
            out[key] = _merge(out[key], value)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        else:
            out[key] = value
    return out


def load_config(path: Optional[Union[str, Path]] = None, overrides: Sequence[str] = (),
                **sections: Any) -> RecipeConfig:
    """Read a YAML config (or the defaults), then apply ``sections`` and dotted ``overrides``."""
    values: dict[str, Any] = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file {path} does not exist")
        values = _yaml(path.read_text()) or {}
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: the top level must be a mapping")
    values = _merge(values, sections)
    values = _merge(values, parse_overrides(overrides))
    return _build(RecipeConfig, values, "")


def save_config(config: RecipeConfig, path: Union[str, Path]) -> None:
    Path(path).write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))

"""The recipes on LightningCLI: ``zoo fit|validate|test|predict --config CFG --trainer.max_epochs=3``.

The LightningModules (:class:`recipes.classification.Classifier`,
:class:`recipes.forecasting.Forecaster`) and DataModules (:mod:`recipes.image`,
:mod:`recipes.audio`, :mod:`recipes.series`) are the config schema: a config names them by
``class_path`` and sets their typed constructor arguments under ``init_args``; LightningCLI
checks every key and type against those signatures. Values flow between them by
``link_arguments``: the model's name and variant arguments go to the data module (which takes
its input size and normalisation, filterbank or look-back and horizon from them), and once the
data is read its classes, channels, columns and scaler go to the model.

:class:`RecipeTrainer` is Lightning's Trainer with the recipes' run directory
(``trainer.default_root_dir``): ``config.yaml``, ``checkpoints/`` (``best.ckpt`` by the
model's validation metric, ``last.ckpt`` written atomically), ``logs/`` (CSV),
``tensorboard/`` and, from ``zoo train``, ``metrics.json``. :class:`RunConfig` saves the
resolved config there and refuses to start a second run in the same folder, or to resume with
a config that differs from the run's in anything but :data:`RESUMABLE_CHANGES`.
"""

from __future__ import annotations

import csv
import difflib
import json
import logging
import os
import re
import sys
import time
import warnings
from argparse import ArgumentError
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
import yaml
from lightning.pytorch.callbacks import (
    BasePredictionWriter,
    Callback,
    EarlyStopping,
    LearningRateMonitor,
    ModelCheckpoint,
)
from lightning.pytorch.cli import LightningArgumentParser, LightningCLI, SaveConfigCallback
from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

from recipes.audio import AudioDataModule  # noqa: F401  (class_path targets, registered here)
from recipes.classification import Classifier  # noqa: F401
from recipes.fault_tolerance import AtomicCheckpointIO, TrainingState
from recipes.forecasting import Forecaster  # noqa: F401
from recipes.image import ImageDataModule  # noqa: F401
from recipes.series import SeriesDataModule  # noqa: F401

logger = logging.getLogger("zoo.recipes")


class ConfigError(ValueError):
    """A config that cannot run: unknown keys, wrong types, a run directory in the way."""


def auto_precision(name: str | None) -> str | None:
    """``auto``: bf16-mixed on a GPU that has it, else 32-true; anything else as given."""
    if name != "auto":
        return name
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


def monitor_mode(metric: str) -> str:
    """``min`` for losses and errors (``val/mse``), ``max`` for scores (``val/acc``)."""
    return "min" if re.search(r"(loss|mse|mae|rmse|wql|mase|wer|cer|ser)$", metric) else "max"


def _as_list(value: Any) -> list[Any]:
    """A Trainer argument that takes one item or several (callbacks, plugins) as a list."""
    return list(value) if isinstance(value, (list, tuple)) else [] if value is None else [value]


class RecipeTrainer(L.Trainer):
    """Lightning's Trainer, writing everything of a run into ``default_root_dir``.

    Besides the Trainer's own arguments: ``monitor`` is the validation metric that picks
    ``checkpoints/best.ckpt`` and stops early (the CLI sets the model's own: ``val/acc`` for
    classifiers, ``val/mse`` for forecasters; None keeps ``last.ckpt`` only);
    ``early_stopping_patience`` stops after that many validations without a better ``monitor``;
    ``last.ckpt`` is rewritten at every epoch's end, and with ``checkpoint_every_n_steps``
    every N optimizer steps too;
    ``precision="auto"`` is bf16-mixed on a GPU that has it, else 32-true. Without a
    ``logger``, a CSV and a TensorBoard logger write to ``logs/`` and ``tensorboard/``.
    The data modules shard their own loaders by rank (``use_distributed_sampler`` is off).
    """

    def __init__(self, *, default_root_dir: str = "runs/default", monitor: str | None = None,
                 early_stopping_patience: int | None = None,
                 checkpoint_every_n_steps: int | None = None,
                 precision: str | None = "auto", logger: Any | None = None,
                 callbacks: list[Callback] | Callback | None = None,
                 plugins: Any | None = None, limit_val_batches: int | float | None = None,
                 log_every_n_steps: int = 10, **kwargs: Any) -> None:
        for key, value in (("early_stopping_patience", early_stopping_patience),
                           ("checkpoint_every_n_steps", checkpoint_every_n_steps),
                           ("accumulate_grad_batches", kwargs.get("accumulate_grad_batches")),
                           ("num_nodes", kwargs.get("num_nodes"))):
            if value is not None and value < 1:
                raise ConfigError(f"trainer.{key} must be >= 1 (or null), got {value}")
        validates = limit_val_batches != 0
        if early_stopping_patience is not None and not (validates and monitor):
            raise ConfigError("trainer.early_stopping_patience needs validation, but "
                              "trainer.limit_val_batches is 0" if not validates else
                              "trainer.early_stopping_patience needs trainer.monitor")
        run_dir = Path(default_root_dir)
        self.fit_ckpt_path: str | None = None
        callbacks = _as_list(callbacks)
        checkpoints = run_dir / "checkpoints"
        # last.ckpt at every epoch's end (and every N steps), not Lightning's save_last: since
        # Lightning 2.6 that writes last.ckpt only when a top-k checkpoint is saved in the same
        # step, so a crashed run would resume from its best epoch instead of its latest
        latest = dict(dirpath=checkpoints, filename="last", monitor=None, save_top_k=1,
                      enable_version_counter=False)
        callbacks += [ModelCheckpoint(**latest, every_n_epochs=1, save_on_train_epoch_end=True),
                      TrainingState(), PredictionFile()]
        if validates and monitor:
            callbacks.append(ModelCheckpoint(dirpath=checkpoints, filename="best", monitor=monitor,
                                             mode=monitor_mode(monitor), save_top_k=1,
                                             enable_version_counter=False))
        if checkpoint_every_n_steps:
            callbacks.append(ModelCheckpoint(**latest, every_n_train_steps=checkpoint_every_n_steps))
        if early_stopping_patience is not None:
            callbacks.append(EarlyStopping(monitor=monitor, mode=monitor_mode(monitor),
                                           patience=early_stopping_patience))
        if logger is None or logger is True:
            logger = [CSVLogger(run_dir, name="logs", version=""),
                      TensorBoardLogger(run_dir, name="tensorboard", version="")]
        if logger:
            callbacks.append(LearningRateMonitor(logging_interval="epoch"))
        super().__init__(default_root_dir=run_dir, precision=auto_precision(precision),
                         logger=logger, callbacks=callbacks,
                         plugins=[*_as_list(plugins), AtomicCheckpointIO()],
                         limit_val_batches=limit_val_batches,
                         log_every_n_steps=log_every_n_steps,
                         use_distributed_sampler=False, **kwargs)

    def fit(self, model: L.LightningModule, train_dataloaders: Any = None,
            val_dataloaders: Any = None, datamodule: L.LightningDataModule | None = None,
            ckpt_path: str | Path | None = None, **kwargs: Any) -> None:
        """Trainer.fit, remembering ``ckpt_path`` so :class:`RunConfig` knows a resumption."""
        self.fit_ckpt_path = None if ckpt_path is None else str(ckpt_path)
        super().fit(model, train_dataloaders, val_dataloaders, datamodule, ckpt_path, **kwargs)


class PredictionFile(BasePredictionWriter):
    """``zoo predict --config CFG --ckpt_path CKPT``: the predictions over the data module's
    test split, written once into the run folder under a new name (never over a file):
    ``predictions-TIME.csv`` for a classifier (index, true label, predicted label, its
    probability), ``predictions-TIME.safetensors`` for a forecaster (``forecast`` and
    ``target`` (N, H, C) in standardised units; the columns in its metadata). Under DDP each
    process writes its own share (``-rankR``)."""

    def __init__(self) -> None:
        super().__init__(write_interval="epoch")
        self.written: list[Path] = []

    def write_on_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule,
                           predictions: Sequence[Any], batch_indices: Sequence[Any]) -> None:
        from safetensors.torch import save_file

        batches = predictions[0] if predictions and isinstance(predictions[0], list) else predictions
        if not batches:
            return
        joined = {k: torch.cat([b[k].detach().cpu() for b in batches]) for k in batches[0]}
        rank = f"-rank{trainer.global_rank}" if trainer.world_size > 1 else ""
        stem = Path(trainer.default_root_dir) / f"predictions-{time.strftime('%Y%m%d-%H%M%S')}{rank}"
        stem.parent.mkdir(parents=True, exist_ok=True)
        if "probabilities" in joined:
            labels = list(pl_module.hparams.get("labels") or range(joined["probabilities"].shape[1]))
            best, index = joined["probabilities"].max(-1)
            path = _new_file(stem.with_suffix(".csv"))
            with path.open("x", newline="") as f:
                rows = csv.writer(f)
                rows.writerow(["index", "label", "predicted", "probability"])
                for i, (truth, guess, p) in enumerate(zip(joined["target"].tolist(),
                                                         index.tolist(), best.tolist(), strict=True)):
                    rows.writerow([i, labels[truth], labels[guess], f"{p:.6f}"])
        else:
            path = _new_file(stem.with_suffix(".safetensors"))
            columns = list(pl_module.hparams.get("columns") or ())
            save_file({k: v.contiguous() for k, v in joined.items()}, str(path),
                      metadata={"columns": json.dumps(columns)})
        self.written.append(path)
        logger.info("predictions -> %s", path)


def _new_file(path: Path) -> Path:
    """``path``, or ``path`` with ``-2``, ``-3``, ... before its suffix if that exists."""
    candidate, n = path, 1
    while candidate.exists():
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")
    return candidate


# Keys that may differ between a run and its resumption; anything else must match.
RESUMABLE_CHANGES = ("trainer.max_epochs", "trainer.enable_progress_bar",
                     "trainer.log_every_n_steps", "trainer.early_stopping_patience",
                     "trainer.checkpoint_every_n_steps", "trainer.default_root_dir",
                     "ckpt_path", "config")
RUN_FILES = ("config.yaml", "metrics.json", "checkpoints", "logs", "tensorboard")


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}``; mappings under ``*kwargs`` stay whole values."""
    flat: dict[str, Any] = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value and not str(key).endswith("kwargs"):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def config_changes(before: dict, now: dict) -> list[str]:
    """The keys (outside :data:`RESUMABLE_CHANGES`) where two configs differ, as
    ``'key' (old -> new)``."""
    old, new = flatten(before), flatten(now)
    return [f"'{k}' ({old.get(k)!r} -> {new.get(k)!r})" for k in sorted(old.keys() | new.keys())
            if old.get(k) != new.get(k) and k not in RESUMABLE_CHANGES]


def _first_process() -> bool:
    """True unless this is a further process of a distributed run (Lightning, torchrun and
    SLURM set these), which must not judge the run directory its first process has begun."""
    return all(int(os.environ.get(var, "0") or 0) == 0
               for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def claim_run_dir(run_dir: Path, *, resume: bool, overwrite: bool = False) -> Path | None:
    """Make sure a new run may write into ``run_dir``; a run's config, checkpoints, metrics and
    logs always belong together, and nothing the user made is written over.

    A new or empty folder is fine; so is an earlier run with ``resume``. An earlier run without
    it is refused, or with ``overwrite`` moved aside whole to ``<run_dir>.replaced-<time>``
    (returned). A non-empty folder that is not a zoo run is always refused.
    """
    if not run_dir.is_dir() or not any(run_dir.iterdir()) or not _first_process():
        return None
    entries = sorted(p.name for p in run_dir.iterdir())
    if not any(name in RUN_FILES for name in entries):
        raise ConfigError(f"trainer.default_root_dir {run_dir} is a non-empty folder that is not "
                          f"a zoo run (it holds {', '.join(entries[:5])}); choose another folder")
    if resume:
        return None
    if overwrite:
        moved = run_dir.with_name(f"{run_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        os.rename(run_dir, moved)
        logger.warning("--overwrite: the earlier run in %s was moved to %s", run_dir, moved)
        return moved
    state = "finished" if (run_dir / "metrics.json").is_file() else "started"
    raise ConfigError(
        f"trainer.default_root_dir {run_dir} already holds a {state} run; nothing was changed. "
        f"`zoo train CONFIG --resume` (or `zoo fit ... --ckpt_path last`) continues it, "
        f"`zoo train CONFIG --overwrite` moves it to {run_dir.name}.replaced-<time> and starts "
        "afresh, or --trainer.default_root_dir=<another folder> starts a new run beside it")


class RunConfig(SaveConfigCallback):
    """Saves the resolved config as ``<run dir>/config.yaml`` when fitting starts; a
    resumption (``ckpt_path`` given) must keep the run's config but for
    :data:`RESUMABLE_CHANGES`. (Whether a run may start in the folder at all is judged
    before anything is made: :meth:`ZooCLI.before_instantiate_classes`.)"""

    def __init__(self, parser: LightningArgumentParser, config: Any,
                 config_filename: str = "config.yaml", overwrite: bool = True,
                 multifile: bool = False) -> None:
        super().__init__(parser, config, config_filename, overwrite=True, multifile=multifile,
                         save_to_log_dir=False)

    def setup(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        if stage == "fit":       # validate / test read a run; they write no config
            super().setup(trainer, pl_module, stage)

    def save_config(self, trainer: L.Trainer, pl_module: L.LightningModule, stage: str) -> None:
        run_dir = Path(trainer.default_root_dir)
        resuming = getattr(trainer, "fit_ckpt_path", None) is not None
        path = run_dir / self.config_filename
        now = yaml.safe_load(self.parser.dump(self.config, skip_none=False))
        if resuming and path.is_file():
            changed = config_changes(yaml.safe_load(path.read_text()) or {}, now)
            if changed:
                raise ConfigError(f"cannot resume {run_dir}: the config differs from the run's "
                                  f"in {', '.join(changed)}; only "
                                  f"{', '.join(RESUMABLE_CHANGES[:-2])} may change")
        run_dir.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(now, sort_keys=False))


def _init_arg_names(class_path: str) -> list[str]:
    """The constructor arguments of ``package.module.Class``."""
    import importlib
    import inspect

    module, _, name = class_path.rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError, ValueError):
        return []
    return [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "kwargs")]


def _type_names(text: str) -> str:
    """``<class 'int'>, <class 'NoneType'>`` -> ``int or null``; a Literal -> its choices."""
    literal = re.search(r"typing.Literal\[(.*?)\]", text)
    if literal:
        return f"one of {literal[1]}"
    names = [n.replace("NoneType", "null") for n in re.findall(r"<class '([\w.]+)'>", text)]
    return " or ".join(names) or text


def concise_error(message: str, known_flags: Sequence[str] = ()) -> str:
    """jsonargparse's account of a bad config (nested union attempts, usage) as one sentence
    that names the key, what it takes, and the closest known key where one was misspelt."""
    unknown_init_arg = re.search(r"Parser key \"(\w+)\".*?class_path '([\w.]+)'.*?"
                                 r"Option '(\w+)' is not accepted", message, re.S)
    if unknown_init_arg:
        section, class_path, key = unknown_init_arg.groups()
        names = _init_arg_names(class_path)
        close = difflib.get_close_matches(key, names, n=1, cutoff=0.5)
        hint = f"; did you mean '{section}.init_args.{close[0]}'?" if close else ""
        return (f"unknown config key '{section}.init_args.{key}' ({class_path} takes "
                f"{', '.join(names)}){hint}")
    raised = re.search(r"Does not validate against any of the Union subtypes.*?Errors:\s*- (.*?)"
                       r"\n\s*- Expected a <class 'NoneType'>", message, re.S)
    if raised and not raised[1].startswith(("Problem with given class_path", "Expected a")):
        return " ".join(raised[1].split())     # the class's own error, raised while made
    bad_init_arg = re.search(r"Parser key \"(\w+)\".*?class_path '[\w.]+'.*?"
                             r"Parser key \"(\w+)\":\s*(Expected .*?)\. Got value: (.*?)\n",
                             message, re.S)
    if bad_init_arg:
        section, key, expected, value = bad_init_arg.groups()
        return (f"config key '{section}.init_args.{key}' must be {_type_names(expected)}, "
                f"got {value!r}")
    bad_value = re.search(r"Parser key \"([\w.]+)\":.*?Subtypes: \[(.*?)\].*Given value: (.*)",
                          message, re.S)
    if bad_value:
        key, types, value = bad_value.groups()
        return f"config key '{key}' must be {_type_names(types)}, got {value.strip()!r}"
    unknown_flag = re.search(r"[Uu]nrecognized arguments: -{0,2}([\w.]+)", message)
    if unknown_flag and "did you mean" not in message:
        close = difflib.get_close_matches(unknown_flag[1], known_flags, n=1, cutoff=0.5)
        return message + (f"; did you mean '{close[0]}'?" if close else "")
    return message


class RecipeParser(LightningArgumentParser):
    """LightningCLI's parser, whose errors about a bad or unknown key are one sentence naming
    it (and the closest known key): :func:`concise_error`."""

    def error(self, message: str, ex: Exception | None = None) -> Any:
        flags = sorted({s.lstrip("-") for a in self._actions for s in a.option_strings})
        return super().error(concise_error(message, flags), ex)


# (data module attribute, model argument), linked once the data module is made
DATA_TO_MODEL = (("num_classes", "num_classes"), ("classes", "labels"),
                 ("num_channels", "num_channels"), ("columns", "columns"),
                 ("scaler_state", "scaler"))


def _seed(value: bool | int) -> int:
    return 0 if isinstance(value, bool) else int(value)


class ZooCLI(LightningCLI):
    """LightningCLI for the recipes: any model / data module class by ``class_path``,
    :class:`RecipeTrainer`, :class:`RunConfig`, and the links between model and data."""

    def __init__(self, args: Sequence[str] | None = None, run: bool = True,
                 prepare_run: Callable[[Path], None] | None = None, **kwargs: Any) -> None:
        self.prepare_run = prepare_run
        with warnings.catch_warnings():   # args handed on by zoo's command line or from Python
            warnings.filterwarnings("ignore", message="LightningCLI's args parameter")
            super().__init__(model_class=L.LightningModule,
                             datamodule_class=L.LightningDataModule, subclass_mode_model=True,
                             subclass_mode_data=True, trainer_class=RecipeTrainer,
                             save_config_callback=RunConfig, parser_class=RecipeParser,
                             auto_configure_optimizers=False, load_from_checkpoint_support=False,
                             args=args, run=run, **kwargs)

    def add_arguments_to_parser(self, parser: LightningArgumentParser) -> None:
        for key in ("model_name", "model_kwargs"):
            parser.link_arguments(f"model.init_args.{key}", f"data.init_args.{key}")
        parser.link_arguments("seed_everything", "data.init_args.seed", compute_fn=_seed)
        for source, target in DATA_TO_MODEL:   # a class without the attribute / argument skips it
            parser.link_arguments(f"data.{source}", f"model.init_args.{target}",
                                  apply_on="instantiate")

    def _parse_ckpt_path(self) -> None:
        """``validate`` / ``test --ckpt_path CKPT``: the checkpoint's hyperparameters override
        the config's model arguments (as in LightningCLI), so the model is built as it was
        trained. Lightning's own merge expects ``_class_path`` in them; ours name the
        configured class's arguments, less what the data links in (classes, scaler) and the
        weights' sources (the checkpoint holds the weights)."""
        subcommand = self.config.get("subcommand")
        ckpt_path = subcommand and self.config[subcommand].get("ckpt_path")
        if subcommand == "fit" or not ckpt_path or not Path(ckpt_path).is_file():
            return       # fit resumes its own config (RunConfig checks it)
        from recipes.classification import read_recipe_checkpoint

        linked = {target for _, target in DATA_TO_MODEL}
        hparams = read_recipe_checkpoint(ckpt_path)["hyper_parameters"]
        init_args = {k: v for k, v in hparams.items() if k not in linked and not k.startswith("_")}
        init_args.update({k: None if k == "encoder_from" else False
                          for k in ("pretrained", "encoder_from") if k in init_args})
        model = {"class_path": self.config[subcommand].model.class_path, "init_args": init_args}
        self.config = self.parser.parse_object({subcommand: {"model": model}}, self.config)

    def before_instantiate_classes(self) -> None:
        """The run folder is judged before anything is made (loggers make their folders):
        ``fit`` may start only in a new folder, or resume (``--ckpt_path``) in its own run;
        without a subcommand, ``prepare_run`` (the presets' own policy) decides."""
        config = self.config[self.subcommand] if self.subcommand else self.config
        run_dir = Path(config.trainer.default_root_dir)
        if self.subcommand == "fit":
            claim_run_dir(run_dir, resume=config.get("ckpt_path") is not None)
        elif self.subcommand is None and self.prepare_run is not None:
            self.prepare_run(run_dir)

    def instantiate_trainer(self, **kwargs: Any) -> L.Trainer:
        config = self._get(self.config_init, "trainer", default={})
        if config.get("monitor") is None and "monitor" not in kwargs:
            kwargs["monitor"] = getattr(self.model, "monitor", None)
        if self.subcommand in ("validate", "test", "predict") and config.get("logger") is None:
            kwargs["logger"] = False     # reading a run: its training logs stay as they are
        return super().instantiate_trainer(**kwargs)


def build(args: Sequence[str], prepare_run: Callable[[Path], None] | None = None) -> ZooCLI:
    """Parse LightningCLI arguments (``["--config", CFG, "--trainer.max_epochs=3"]``) and make
    the data module, model and trainer without running anything (``cli.datamodule``,
    ``cli.model``, ``cli.trainer``; ``cli.config`` the resolved config). ``prepare_run`` is
    called with the run folder before anything is made."""
    try:
        return ZooCLI(args=list(args), run=False, prepare_run=prepare_run,
                      parser_kwargs={"exit_on_error": False})
    except ArgumentError as err:   # from Python: an exception, not an exit
        raise ConfigError(str(err).removeprefix("error: ")) from err


def main(argv: Sequence[str] | None = None) -> None:
    """``zoo fit|validate|test|predict --config ...`` (also ``python -m recipes.cli fit ...``)."""
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    ZooCLI(args=None if argv is None or list(argv) == sys.argv[1:] else list(argv))


if __name__ == "__main__":
    main()

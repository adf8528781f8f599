"""The training entry point: config -> data module + Lightning module + Trainer -> run directory.

A run directory holds ``config.yaml`` (the resolved config), ``checkpoints/`` (best and last),
CSV and TensorBoard logs, and ``metrics.json`` (test metrics, run time, the command).
``last.ckpt`` is rewritten atomically at every epoch's end (and every
``trainer.checkpoint_every_n_steps`` steps); ``resume=True`` continues from it.

    python -m recipes.train configs/image/vit_nano_digits.yaml trainer.max_epochs=5
    python -m recipes.train configs/image/vit_nano_digits.yaml --resume
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import lightning as L
import torch

import zoo
from recipes.audio import AudioDataModule
from recipes.classification import Classifier, read_recipe_checkpoint
from recipes.config import ConfigError, RecipeConfig, load_config, save_config
from recipes.fault_tolerance import AtomicCheckpointIO, TrainingState
from recipes.forecasting import Forecaster
from recipes.image import ImageDataModule
from recipes.series import SeriesDataModule

logger = logging.getLogger("zoo.recipes")


def _precision(name: str) -> str:
    if name != "auto":
        return name
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


DATASETS = {"image_classification": ("digits", "imagefolder"),
            "audio_classification": ("fsdd", "audiofolder"),
            "forecasting": ("etth1", "csv")}
MONITOR = {"forecasting": ("val/mse", "min")}   # others: ("val/acc", "max")


def _meta_model(config: RecipeConfig) -> torch.nn.Module:
    """The configured architecture built on the meta device (shapes and settings, no weights)."""
    with torch.device("meta"):
        return zoo.create_model(config.model.name, **config.model.kwargs)


def build_datamodule(config: RecipeConfig) -> L.LightningDataModule:
    if config.data.dataset not in DATASETS[config.task]:
        raise ConfigError(f"data.dataset={config.data.dataset!r} does not fit task={config.task!r}; "
                          f"use one of {DATASETS[config.task]}")
    d = config.data
    if config.task == "forecasting":
        model = _meta_model(config)
        dm = SeriesDataModule(dataset=d.dataset, lookback=model.context_length,
                              horizon=model.horizon, root=d.root, time_column=d.time_column,
                              target_columns=d.target_columns, fractions=d.fractions,
                              val_start=d.val_start, test_start=d.test_start, missing=d.missing,
                              irregular=d.irregular, on_error=d.on_error, batch_size=d.batch_size,
                              num_workers=d.num_workers, seed=config.seed)
        dm.setup("fit")
        return dm
    if config.task == "audio_classification":
        dm = AudioDataModule(dataset=d.dataset, fbank=_meta_model(config).fbank_config, root=d.root,
                             batch_size=d.batch_size, num_workers=d.num_workers,
                             val_fraction=d.val_fraction, augment=d.augment,
                             time_shift=d.time_shift, freq_mask=d.freq_mask,
                             time_mask=d.time_mask, num_masks=d.num_masks,
                             time_stretch=d.time_stretch, gain_db=d.gain_db, on_error=d.on_error,
                             holdout=d.holdout,
                             seed=config.seed)
        dm.setup("fit")
        return dm
    entry, tag = zoo.registry.get_entry(config.model.name)
    preprocess = dict(entry.cfg(tag).preprocess)
    img_size = d.img_size or config.model.kwargs.get("img_size") or preprocess["input_size"][-1]
    dm = ImageDataModule(dataset=d.dataset, img_size=int(img_size), preprocess=preprocess,
                         root=d.root, batch_size=d.batch_size, num_workers=d.num_workers,
                         val_fraction=d.val_fraction, augment=d.augment, on_error=d.on_error,
                         seed=config.seed)
    dm.setup("fit")
    return dm


def build_module(config: RecipeConfig, dm: L.LightningDataModule) -> L.LightningModule:
    kwargs = dict(config.model.kwargs)
    if isinstance(dm, ImageDataModule):
        kwargs["img_size"] = dm.img_size
    o = config.optim
    if isinstance(dm, SeriesDataModule):
        return Forecaster(
            model_name=config.model.name, num_channels=dm.num_channels,
            columns=list(dm.splits.columns), scaler=dm.splits.scaler.to_dict(),
            pretrained=config.model.pretrained, model_kwargs=kwargs,
            grad_checkpointing=config.model.grad_checkpointing, lr=o.lr, min_lr=o.min_lr,
            weight_decay=o.weight_decay, betas=list(o.betas), warmup_epochs=o.warmup_epochs,
            schedule=o.schedule, hold_epochs=o.hold_epochs, gamma=o.gamma, loss=o.loss,
            nonfinite_loss=config.trainer.nonfinite_loss)
    return Classifier(
        model_name=config.model.name, num_classes=dm.num_classes, labels=dm.classes,
        pretrained=config.model.pretrained, model_kwargs=kwargs,
        grad_checkpointing=config.model.grad_checkpointing, lr=o.lr, min_lr=o.min_lr,
        weight_decay=o.weight_decay, betas=list(o.betas), warmup_epochs=o.warmup_epochs,
        label_smoothing=o.label_smoothing, layer_decay=o.layer_decay,
        finetune_mode=config.finetune.mode, trainable_blocks=config.finetune.trainable_blocks,
        mixup=config.data.mixup, encoder_from=config.model.encoder_from,
        nonfinite_loss=config.trainer.nonfinite_loss,
    )


def _check_trainer_section(config: RecipeConfig) -> None:
    t = config.trainer
    for key in ("num_nodes", "accumulate_grad_batches", "checkpoint_every_n_steps"):
        value = getattr(t, key)
        if value is not None and value < 1:
            raise ConfigError(f"config key 'trainer.{key}' must be >= 1, got {value}")
    if not validates(config) and t.early_stopping_patience is not None:
        raise ConfigError("config key 'trainer.early_stopping_patience' needs validation, but "
                          "'trainer.limit_val_batches' is 0")


def validates(config: RecipeConfig) -> bool:
    """Whether the run validates at all (``trainer.limit_val_batches: 0`` switches it off)."""
    return config.trainer.limit_val_batches != 0


def build_trainer(config: RecipeConfig, run_dir: Path, *, for_eval: bool = False) -> L.Trainer:
    """The Trainer for ``config``: checkpoints (best by the validation metric, and
    ``last.ckpt``, written atomically), logs, early stopping, and the distributed settings."""
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    _check_trainer_section(config)
    t = config.trainer
    callbacks: list[L.Callback] = []
    loggers: Any = False
    monitor, mode = MONITOR.get(config.task, ("val/acc", "max"))
    if not for_eval:
        checkpoints = run_dir / "checkpoints"
        keep = (dict(filename="best", monitor=monitor, mode=mode) if validates(config)
                else dict(save_top_k=0))     # nothing to select by: last.ckpt only
        callbacks = [ModelCheckpoint(dirpath=checkpoints, save_last=True, **keep),
                     LearningRateMonitor(logging_interval="epoch"), TrainingState()]
        if t.checkpoint_every_n_steps:
            callbacks.append(ModelCheckpoint(dirpath=checkpoints, save_top_k=0, save_last=True,
                                             every_n_train_steps=t.checkpoint_every_n_steps))
        if t.early_stopping_patience is not None:
            callbacks.append(EarlyStopping(monitor=monitor, mode=mode,
                                           patience=t.early_stopping_patience))
        loggers = [CSVLogger(run_dir, name="logs", version=""),
                   TensorBoardLogger(run_dir, name="tensorboard", version="")]
    return L.Trainer(
        default_root_dir=run_dir, max_epochs=t.max_epochs, accelerator=t.accelerator,
        devices=t.devices, num_nodes=t.num_nodes, strategy=t.strategy,
        precision=_precision(t.precision), logger=loggers, callbacks=callbacks,
        accumulate_grad_batches=t.accumulate_grad_batches,
        log_every_n_steps=t.log_every_n_steps, limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches, enable_progress_bar=t.enable_progress_bar,
        deterministic=t.deterministic, enable_model_summary=not for_eval,
        plugins=[AtomicCheckpointIO()],
        use_distributed_sampler=False,   # our loaders shard by rank themselves (recipes/data.py)
    )


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in metrics.items()}


# Keys that may differ between a run and its resumption; anything else must match.
RESUMABLE_CHANGES = ("trainer.max_epochs", "trainer.enable_progress_bar",
                     "trainer.log_every_n_steps", "trainer.early_stopping_patience",
                     "trainer.checkpoint_every_n_steps", "data.num_workers")


def _flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in tree.items():
        if isinstance(value, dict) and key != "kwargs":
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def resume_checkpoint(config: RecipeConfig, resume: Union[bool, str, Path]) -> Optional[Path]:
    """The checkpoint to resume from: ``resume=True`` takes the run directory's ``last.ckpt``
    (None if there is none yet: a fresh start); a path takes that file. The run's saved
    config must agree with ``config`` except in :data:`RESUMABLE_CHANGES`."""
    if not resume:
        return None
    run_dir = Path(config.output_dir)
    path = run_dir / "checkpoints" / "last.ckpt" if resume is True else Path(resume)
    if not path.is_file():
        if resume is True:
            logger.warning("--resume: no checkpoint in %s to resume from, starting afresh",
                           path.parent)
            return None
        raise FileNotFoundError(f"no checkpoint at {path} to resume from")
    saved = run_dir / "config.yaml"
    if saved.is_file():
        before = _flatten(load_config(saved).to_dict())
        now = _flatten(config.to_dict())
        changed = sorted(k for k in before.keys() | now.keys()
                         if before.get(k) != now.get(k) and k not in RESUMABLE_CHANGES)
        if changed:
            raise ConfigError(
                f"cannot resume {run_dir}: the config differs from the run's in "
                + ", ".join(f"'{k}' ({before.get(k)!r} -> {now.get(k)!r})" for k in changed)
                + f"; only {', '.join(RESUMABLE_CHANGES)} may change")
    return path


RUN_FILES = ("config.yaml", "metrics.json", "checkpoints", "logs", "tensorboard")


def _first_process() -> bool:
    """True unless this is a further process of a distributed run (Lightning, torchrun and
    SLURM set these), which must not judge the run directory its first process has begun."""
    return all(int(os.environ.get(var, "0") or 0) == 0
               for var in ("RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID"))


def claim_run_dir(run_dir: Path, *, resume: bool, overwrite: bool) -> Optional[Path]:
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
        raise ConfigError(f"output_dir {run_dir} is a non-empty folder that is not a zoo run "
                          f"(it holds {', '.join(entries[:5])}); choose another output_dir")
    if resume:
        return None
    if overwrite:
        moved = run_dir.with_name(f"{run_dir.name}.replaced-{time.strftime('%Y%m%d-%H%M%S')}")
        os.rename(run_dir, moved)
        logger.warning("--overwrite: the earlier run in %s was moved to %s", run_dir, moved)
        return moved
    state = "finished" if (run_dir / "metrics.json").is_file() else "started"
    raise ConfigError(
        f"output_dir {run_dir} already holds a {state} run; nothing was changed. --resume "
        f"continues it, --overwrite moves it to {run_dir.name}.replaced-<time> and starts "
        "afresh, or output_dir=<another folder> starts a new run beside it")


def train(config: RecipeConfig, command: Optional[str] = None,
          resume: Union[bool, str, Path] = False, overwrite: bool = False) -> dict[str, Any]:
    """Fit, then test the best checkpoint; returns (and writes) the run's metrics.

    ``resume``: True continues from the run directory's ``last.ckpt`` if there is one, a path
    from that checkpoint (see :func:`resume_checkpoint`). A run directory that holds an earlier
    run is refused unless ``resume`` or ``overwrite`` (see :func:`claim_run_dir`).
    """
    if resume and overwrite:
        raise ConfigError("--resume continues the run in output_dir, --overwrite replaces it: "
                          "pass one of them")
    L.seed_everything(config.seed, workers=True)
    run_dir = Path(config.output_dir)
    claim_run_dir(run_dir, resume=bool(resume), overwrite=overwrite)
    ckpt_path = resume_checkpoint(config, resume)
    dm = build_datamodule(config)
    module = build_module(config, dm)
    trainer = build_trainer(config, run_dir)
    if trainer.is_global_zero:
        run_dir.mkdir(parents=True, exist_ok=True)
        save_config(config, run_dir / "config.yaml")
    if ckpt_path is not None:
        logger.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    state = next(c for c in trainer.callbacks if isinstance(c, TrainingState))
    train_time = state.elapsed()
    callback = trainer.checkpoint_callback
    if config.data.holdout and validates(config):
        best = callback.best_model_path or None
    else:  # no validation, or validation data was trained on: test the last weights
        best = callback.last_model_path or None
    tested = trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False)[0]
    result = {"metrics": _scalars(tested), "train_time_s": round(train_time, 1),
              "epochs": trainer.current_epoch, "best_checkpoint": best,
              "test_split": "test" if dm.test_set is not None else "val",
              "num_train": len(dm.train_set), "num_test": len(dm.test_set or dm.val_set),
              "command": command or " ".join(sys.argv), "device": str(trainer.strategy.root_device),
              "torch_threads": torch.get_num_threads(), "world_size": trainer.world_size,
              "resumed_from": str(ckpt_path) if ckpt_path else None,
              "skipped_files": list(getattr(dm, "skipped", [])),
              "date": time.strftime("%Y-%m-%d")}
    if trainer.is_global_zero:
        (run_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def checkpoint_task(ckpt: Union[str, Path]) -> tuple[str, str]:
    """(task, model name) a recipe checkpoint was trained for."""
    hparams = read_recipe_checkpoint(ckpt)["hyper_parameters"]
    name = hparams.get("model_name", "?")
    if "num_channels" in hparams:
        return "forecasting", name
    modality = zoo.registry.get_entry(name)[0].modality
    return f"{modality}_classification", name


def check_checkpoint_task(ckpt: Union[str, Path], config: RecipeConfig) -> None:
    """A checkpoint of another task than the config's is named as such, before any data loads."""
    task, name = checkpoint_task(ckpt)
    if task != config.task:
        raise ConfigError(f"{ckpt} holds a model for {task.replace('_', ' ')} ({name}), but the "
                          f"config is for {config.task.replace('_', ' ')}: evaluate it with a "
                          f"config of its own task")


def evaluate(config: RecipeConfig, ckpt: Optional[str] = None, *,
             module: Optional[L.LightningModule] = None) -> dict[str, Any]:
    """Test a model on the config's test split (its validation split if none): a recipe
    checkpoint ``ckpt``, a ready ``module``, or else the config's model as it is built (e.g.
    ``model.pretrained=true`` for registered weights)."""
    if module is None and ckpt is not None:
        check_checkpoint_task(ckpt, config)
    dm = build_datamodule(config)
    if module is None and ckpt is not None:
        module = (Forecaster if config.task == "forecasting" else Classifier).from_checkpoint(ckpt)
    elif module is None:
        module = build_module(config, dm)
    what = ckpt or config.model.name
    if config.task == "forecasting":
        if module.hparams.num_channels != dm.num_channels:
            raise ValueError(f"{what} forecasts {module.hparams.num_channels} channels; "
                             f"the config's data has {dm.num_channels}")
    elif module.hparams.num_classes != dm.num_classes:
        raise ValueError(f"{what} has {module.hparams.num_classes} classes; "
                         f"the config's data has {dm.num_classes}")
    trainer = build_trainer(config, Path(config.output_dir), for_eval=True)
    tested = trainer.test(module, datamodule=dm, verbose=False)[0]
    return {"metrics": _scalars(tested), "checkpoint": str(what),
            "test_split": "test" if dm.test_set is not None else "val",
            "num_test": len(dm.test_set or dm.val_set)}


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    flags = {flag: flag in argv for flag in ("--resume", "--overwrite")}
    argv = [a for a in argv if a not in flags]
    if not argv or argv[0].startswith("-"):
        raise SystemExit("usage: python -m recipes.train CONFIG [key.sub=value ...] "
                         "[--resume | --overwrite]")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = train(load_config(argv[0], argv[1:]), resume=flags["--resume"],
                   overwrite=flags["--overwrite"])
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

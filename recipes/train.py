"""The training entry point: config -> data module + Lightning module + Trainer -> run directory.

A run directory holds ``config.yaml`` (the resolved config), ``checkpoints/`` (best and last),
CSV and TensorBoard logs, and ``metrics.json`` (test metrics, run time, the command).

    python -m recipes.train configs/image/vit_nano_digits.yaml trainer.max_epochs=5
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path
from typing import Any, Optional, Sequence

import lightning as L
import torch

import zoo
from recipes.audio import AudioDataModule
from recipes.classification import Classifier
from recipes.config import ConfigError, RecipeConfig, load_config, save_config
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
                              irregular=d.irregular, batch_size=d.batch_size,
                              num_workers=d.num_workers)
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
                         val_fraction=d.val_fraction, augment=d.augment, seed=config.seed)
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
            schedule=o.schedule, hold_epochs=o.hold_epochs, gamma=o.gamma, loss=o.loss)
    return Classifier(
        model_name=config.model.name, num_classes=dm.num_classes, labels=dm.classes,
        pretrained=config.model.pretrained, model_kwargs=kwargs,
        grad_checkpointing=config.model.grad_checkpointing, lr=o.lr, min_lr=o.min_lr,
        weight_decay=o.weight_decay, betas=list(o.betas), warmup_epochs=o.warmup_epochs,
        label_smoothing=o.label_smoothing, layer_decay=o.layer_decay,
        finetune_mode=config.finetune.mode, trainable_blocks=config.finetune.trainable_blocks,
        mixup=config.data.mixup, encoder_from=config.model.encoder_from,
    )


def build_trainer(config: RecipeConfig, run_dir: Path, *, for_eval: bool = False) -> L.Trainer:
    from lightning.pytorch.callbacks import EarlyStopping, LearningRateMonitor, ModelCheckpoint
    from lightning.pytorch.loggers import CSVLogger, TensorBoardLogger

    t = config.trainer
    callbacks = []
    loggers: Any = False
    monitor, mode = MONITOR.get(config.task, ("val/acc", "max"))
    if not for_eval:
        callbacks = [ModelCheckpoint(dirpath=run_dir / "checkpoints", filename="best",
                                     monitor=monitor, mode=mode, save_last=True),
                     LearningRateMonitor(logging_interval="epoch")]
        if t.early_stopping_patience is not None:
            callbacks.append(EarlyStopping(monitor=monitor, mode=mode,
                                           patience=t.early_stopping_patience))
        loggers = [CSVLogger(run_dir, name="logs", version=""),
                   TensorBoardLogger(run_dir, name="tensorboard", version="")]
    return L.Trainer(
        default_root_dir=run_dir, max_epochs=t.max_epochs, accelerator=t.accelerator,
        devices=t.devices, precision=_precision(t.precision), logger=loggers, callbacks=callbacks,
        log_every_n_steps=t.log_every_n_steps, limit_train_batches=t.limit_train_batches,
        limit_val_batches=t.limit_val_batches, enable_progress_bar=t.enable_progress_bar,
        deterministic=t.deterministic, enable_model_summary=not for_eval,
    )


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in metrics.items()}


def train(config: RecipeConfig, command: Optional[str] = None) -> dict[str, Any]:
    """Fit, then test the best checkpoint; returns (and writes) the run's metrics."""
    L.seed_everything(config.seed, workers=True)
    run_dir = Path(config.output_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    save_config(config, run_dir / "config.yaml")
    dm = build_datamodule(config)
    module = build_module(config, dm)
    trainer = build_trainer(config, run_dir)
    start = time.perf_counter()
    trainer.fit(module, datamodule=dm)
    train_time = time.perf_counter() - start
    callback = trainer.checkpoint_callback
    if config.data.holdout:
        best = callback.best_model_path or None
    else:  # validation data was trained on: selecting by it would be selecting by noise
        best = callback.last_model_path or None
    tested = trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False)[0]
    result = {"metrics": _scalars(tested), "train_time_s": round(train_time, 1),
              "epochs": trainer.current_epoch, "best_checkpoint": best,
              "test_split": "test" if dm.test_set is not None else "val",
              "num_train": len(dm.train_set), "num_test": len(dm.test_set or dm.val_set),
              "command": command or " ".join(sys.argv), "device": str(trainer.strategy.root_device),
              "torch_threads": torch.get_num_threads(),
              "date": time.strftime("%Y-%m-%d")}
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def evaluate(config: RecipeConfig, ckpt: str) -> dict[str, Any]:
    """Test a recipe checkpoint on the config's test split (its validation split if none)."""
    dm = build_datamodule(config)
    if config.task == "forecasting":
        module = Forecaster.from_checkpoint(ckpt)
        if module.hparams.num_channels != dm.num_channels:
            raise ValueError(f"{ckpt} forecasts {module.hparams.num_channels} channels; "
                             f"the config's data has {dm.num_channels}")
    else:
        module = Classifier.from_checkpoint(ckpt)
    if config.task != "forecasting" and module.hparams.num_classes != dm.num_classes:
        raise ValueError(f"{ckpt} has {module.hparams.num_classes} classes; "
                         f"the config's data has {dm.num_classes}")
    trainer = build_trainer(config, Path(config.output_dir), for_eval=True)
    tested = trainer.test(module, datamodule=dm, verbose=False)[0]
    return {"metrics": _scalars(tested), "checkpoint": str(ckpt),
            "test_split": "test" if dm.test_set is not None else "val",
            "num_test": len(dm.test_set or dm.val_set)}


def main(argv: Optional[Sequence[str]] = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0].startswith("-"):
        raise SystemExit("usage: python -m recipes.train CONFIG [key.sub=value ...]")
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    result = train(load_config(argv[0], argv[1:]))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

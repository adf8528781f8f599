"""The short presets over the LightningCLI recipes (:mod:`recipes.cli`).

    zoo train CONFIG [--trainer.max_epochs=5 ...] [--resume | --overwrite]
        fit, then test the best checkpoint; writes metrics.json beside config.yaml
    zoo eval CONFIG --ckpt CKPT
        test a recipe checkpoint on the config's test split
    zoo finetune NAME --data DIR
        zoo/cli.py turns its flags into LightningCLI arguments for :func:`train`

A run directory (``trainer.default_root_dir``) holds ``config.yaml`` (the resolved config),
``checkpoints/`` (best and last), CSV and TensorBoard logs, and ``metrics.json`` (test metrics,
run time, the command). ``last.ckpt`` is rewritten atomically at every epoch's end (and every
``trainer.checkpoint_every_n_steps`` steps); ``resume=True`` continues from it.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch.callbacks import ModelCheckpoint

from recipes.cli import ConfigError, auto_precision, build, claim_run_dir
from recipes.export import module_from_checkpoint
from recipes.fault_tolerance import TrainingState
from recipes.forecasting import Forecaster

logger = logging.getLogger("zoo.recipes")


def _scalars(metrics: dict) -> dict[str, float]:
    return {k: round(float(v), 6) for k, v in metrics.items()}


def resume_checkpoint(run_dir: Path, resume: bool | str | Path) -> Path | None:
    """The checkpoint to resume from: ``resume=True`` takes the run directory's ``last.ckpt``
    (None if there is none yet: a fresh start); a path takes that file. (Whether the config
    still fits the run is checked when fitting starts: :class:`recipes.cli.RunConfig`.)"""
    if not resume:
        return None
    path = run_dir / "checkpoints" / "last.ckpt" if resume is True else Path(resume)
    if path.is_file():
        return path
    if resume is True:
        logger.warning("--resume: no checkpoint in %s to resume from, starting afresh",
                       path.parent)
        return None
    raise FileNotFoundError(f"no checkpoint at {path} to resume from")


def _test_split(dm: L.LightningDataModule) -> tuple[str, int]:
    return ("test" if dm.test_set is not None else "val"), len(dm.test_set or dm.val_set)


def train(args: Sequence[str], *, command: str | None = None,
          resume: bool | str | Path = False, overwrite: bool = False) -> dict[str, Any]:
    """Fit from LightningCLI arguments (``["--config", CFG, "--trainer.max_epochs=5"]``), then
    test the best checkpoint; returns (and writes) the run's metrics.

    ``resume``: True continues from the run directory's ``last.ckpt`` if there is one, a path
    from that checkpoint (see :func:`resume_checkpoint`). A run directory that holds an earlier
    run is refused unless ``resume`` or ``overwrite`` (see :func:`recipes.cli.claim_run_dir`).
    """
    if resume and overwrite:
        raise ConfigError("--resume continues the run in its folder, --overwrite replaces it: "
                          "pass one of them")
    cli = build(args, prepare_run=lambda folder: claim_run_dir(folder, resume=bool(resume),
                                                               overwrite=overwrite))
    trainer, module, dm = cli.trainer, cli.model, cli.datamodule
    run_dir = Path(trainer.default_root_dir)
    ckpt_path = resume_checkpoint(run_dir, resume)
    if ckpt_path is not None:
        logger.info("resuming from %s", ckpt_path)
    trainer.fit(module, datamodule=dm, ckpt_path=ckpt_path)
    state = next(c for c in trainer.callbacks if isinstance(c, TrainingState))
    selected = [c.best_model_path for c in trainer.checkpoint_callbacks
                if isinstance(c, ModelCheckpoint) and c.monitor and c.best_model_path]
    validates = trainer.limit_val_batches != 0
    last = run_dir / "checkpoints" / "last.ckpt"
    if getattr(dm, "holdout", True) and validates and selected:
        best: str | None = selected[0]
    else:  # no validation, or validation data was trained on: test the last weights
        best = str(last) if last.is_file() else None
    tested = trainer.test(module, datamodule=dm, ckpt_path=best, verbose=False)[0]
    split, num_test = _test_split(dm)
    result = {"metrics": _scalars(tested), "train_time_s": round(state.elapsed(), 1),
              "epochs": trainer.current_epoch, "best_checkpoint": best, "test_split": split,
              "num_train": len(dm.train_set), "num_test": num_test,
              "command": command or " ".join(sys.argv), "device": str(trainer.strategy.root_device),
              "torch_threads": torch.get_num_threads(), "world_size": trainer.world_size,
              "resumed_from": str(ckpt_path) if ckpt_path else None,
              "skipped_files": list(getattr(dm, "skipped", [])),
              "date": time.strftime("%Y-%m-%d")}
    if trainer.is_global_zero:
        (run_dir / "metrics.json").write_text(json.dumps(result, indent=2) + "\n")
    return result


def _task(module: L.LightningModule) -> str:
    if isinstance(module, Forecaster):
        return "forecasting"
    if module.model.modality == "speech":
        return "speech recognition"
    return f"{module.model.modality} classification"


def evaluate(args: Sequence[str], ckpt: str | Path | None = None, *,
             module: L.LightningModule | None = None) -> dict[str, Any]:
    """Test a model on the config's test split (its validation split if none): a recipe
    checkpoint ``ckpt``, a ready ``module``, or else the config's model as it is built (e.g.
    ``--model.pretrained=true`` for registered weights)."""
    if module is None and ckpt is not None:
        module = module_from_checkpoint(ckpt)
    # the config's own model is not needed beside a checkpoint: skip its pretrained weights
    cli = build([*args, "--model.pretrained=false"] if module is not None else args)
    dm = cli.datamodule
    what = str(ckpt or cli.model.hparams.model_name)
    if module is not None and _task(module) != _task(cli.model):
        raise ConfigError(f"{what} holds a model for {_task(module)} "
                          f"({module.hparams.model_name}), but the config is for "
                          f"{_task(cli.model)}: evaluate it with a config of its own task")
    module = module or cli.model
    if isinstance(module, Forecaster):
        if module.hparams.num_channels != dm.num_channels:
            raise ValueError(f"{what} forecasts {module.hparams.num_channels} channels; "
                             f"the config's data has {dm.num_channels}")
    elif "num_classes" in module.hparams and module.hparams.num_classes != dm.num_classes:
        raise ValueError(f"{what} has {module.hparams.num_classes} classes; "
                         f"the config's data has {dm.num_classes}")
    t = cli.trainer
    trainer = L.Trainer(accelerator=t.accelerator, devices=1, logger=False,
                        enable_checkpointing=False, enable_model_summary=False,
                        enable_progress_bar=t.progress_bar_callback is not None,
                        precision=auto_precision(cli.config.trainer.precision),
                        use_distributed_sampler=False)
    tested = trainer.test(module, datamodule=dm, verbose=False)[0]
    split, num_test = _test_split(dm)
    return {"metrics": _scalars(tested), "checkpoint": what, "test_split": split,
            "num_test": num_test}

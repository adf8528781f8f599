"""Forecasting for any zoo forecaster: the LightningModule behind `zoo train` / `zoo finetune`
for series. Inputs and targets are the data module's standardised values; MSE and MAE are
accumulated over every window of a split (sums of errors over all values), never averaged
per batch, so a last partial batch counts exactly as much as its windows.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanAbsoluteError, MeanSquaredError

import zoo
from recipes.data import ModelKwargs
from recipes.fault_tolerance import NONFINITE_POLICIES, NonfinitePolicy, checked_loss
from recipes.optim import param_groups, warmup_cosine

Loss = Literal["mse", "mae", "huber"]
Schedule = Literal["cosine", "exponential"]   # exponential: hold, then x gamma per epoch
LOSSES, SCHEDULES = get_args(Loss), get_args(Schedule)


def hold_then_decay(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, hold_epochs: int,
                    gamma: float) -> torch.optim.lr_scheduler.LambdaLR:
    """PatchTST's schedule ('type3'): the peak lr for ``hold_epochs`` epochs, then x ``gamma``
    per epoch. Stepped once per optimiser step."""
    def factor(step: int) -> float:
        epoch = step // max(1, steps_per_epoch)
        return 1.0 if epoch < hold_epochs else gamma ** (epoch - hold_epochs + 1)

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


class Forecaster(L.LightningModule):
    """A zoo forecaster trained on windows (x (B, L, C), y (B, H, C)) with MSE (or MAE /
    Huber), AdamW and a cosine or hold-then-decay schedule.

    ``columns`` and ``scaler`` (the training data's standardisation, as a dict) are kept with
    the checkpoint as a record of what it was trained on; forecasting raw data needs neither,
    since the model normalises each window itself (RevIN).
    """

    monitor = "val/mse"   # the validation metric that picks the best checkpoint

    def __init__(self, *, model_name: str, num_channels: int, pretrained: Any = False,
                 model_kwargs: ModelKwargs | None = None, columns: Sequence[str] = (),
                 scaler: dict | None = None, grad_checkpointing: bool = False,
                 lr: float = 1e-4, min_lr: float = 1e-6, weight_decay: float = 0.0,
                 betas: Sequence[float] = (0.9, 0.999), warmup_epochs: float = 0.0,
                 schedule: Schedule = "cosine", hold_epochs: int = 3, gamma: float = 0.9,
                 loss: Loss = "mse", nonfinite_loss: NonfinitePolicy = "raise") -> None:
        super().__init__()
        if nonfinite_loss not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite_loss must be one of {NONFINITE_POLICIES}, got {nonfinite_loss!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        self.save_hyperparameters()
        kwargs = {**(model_kwargs or {}), "num_channels": num_channels}
        self.model = zoo.create_model(model_name, pretrained=pretrained, **kwargs)
        self.model.set_grad_checkpointing(grad_checkpointing)
        self.metrics = torch.nn.ModuleDict({
            f"{stage}_{name}": metric() for stage in ("val", "test")
            for name, metric in (("mse", MeanSquaredError), ("mae", MeanAbsoluteError))})

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        return self.model(history)

    def _loss(self, forecast: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.hparams.loss == "mae":
            return F.l1_loss(forecast, target)
        if self.hparams.loss == "huber":
            return F.huber_loss(forecast, target)
        return F.mse_loss(forecast, target)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        history, target = batch
        loss = checked_loss(self, self._loss(self(history), target), batch_idx,
                            self.hparams.nonfinite_loss)
        if loss is not None:
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        history, target = batch
        forecast = self(history)
        for name in ("mse", "mae"):
            metric = self.metrics[f"{stage}_{name}"]
            metric.update(forecast, target)
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True, prog_bar=True)

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """The forecast (B, H, C) and the true future (B, H, C), in the data's standardised
        units (``zoo fit|test``'s scale; the checkpoint keeps the scaler)."""
        history, target = batch
        return {"forecast": self(history), "target": target}

    def configure_optimizers(self):
        hp = self.hparams
        groups = param_groups(self.model, lr=hp.lr, weight_decay=hp.weight_decay)
        fused = torch.cuda.is_available() and next(self.parameters()).is_cuda
        optimizer = torch.optim.AdamW(groups, lr=hp.lr, betas=tuple(hp.betas), fused=fused or None)
        total = max(1, int(self.trainer.estimated_stepping_batches))
        steps_per_epoch = max(1, round(total / max(1, self.trainer.max_epochs or 1)))
        if hp.schedule == "exponential":
            scheduler = hold_then_decay(optimizer, steps_per_epoch=steps_per_epoch,
                                        hold_epochs=hp.hold_epochs, gamma=hp.gamma)
        else:
            scheduler = warmup_cosine(optimizer, total_steps=total, min_lr_ratio=hp.min_lr / hp.lr,
                                      warmup_steps=int(hp.warmup_epochs * steps_per_epoch))
        return {"optimizer": optimizer,
                "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str = "cpu") -> Forecaster:
        """Rebuild from a recipe checkpoint without re-reading the original pretrained source."""
        from recipes.classification import rebuild_from_checkpoint

        return rebuild_from_checkpoint(cls, path, map_location)

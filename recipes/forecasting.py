"""Forecasting for any zoo forecaster: the LightningModule behind `zoo train` / `zoo finetune`
for series. Inputs and targets are the data module's standardised values; every metric is
accumulated over every window of a split (sums, never per-batch averages), so a last partial
batch counts exactly as much as its windows:

- ``mse``, ``mae``: over all values (of the median, for a quantile model);
- ``mase``: per window and channel, the forecast's mean absolute error scaled by the seasonal
  naive error of that window's own look-back (:func:`zoo.metrics.mase`), then the mean over
  windows and channels. Scale- and shift-free, so standardising changes nothing. Windows whose
  look-back is constant (zero seasonal error: inf or nan) are left out, as GluonTS's Evaluator
  and :func:`zoo.forecasting.backtest` leave them out;
- ``wql`` (quantile models): GluonTS's mean weighted quantile loss over the whole split,
  ``mean_q 2 sum |(y - yhat_q)(1{y <= yhat_q} - q)| / sum |y|`` with the sums over every
  window, step and channel (:func:`zoo.metrics.weighted_quantile_loss` of the split at once).
  It is computed on the standardised values: a ratio, so the per-channel scale cancels, but
  not the shift (sum |y| of centred values is smaller), so it is not the WQL of the raw units
  that GluonTS / Chronos tables report.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanAbsoluteError, MeanSquaredError, Metric

import zoo
from recipes.data import ModelKwargs
from recipes.fault_tolerance import NONFINITE_POLICIES, NonfinitePolicy, checked_loss
from recipes.optim import param_groups, warmup_cosine
from zoo.metrics import mase, pinball_loss, quantile_loss

Loss = Literal["mse", "mae", "huber", "quantile"]
Schedule = Literal["cosine", "exponential"]   # exponential: hold, then x gamma per epoch
LOSSES, SCHEDULES = get_args(Loss), get_args(Schedule)

logger = logging.getLogger("zoo.recipes")


def hold_then_decay_factor(*, steps_per_epoch: int, hold_epochs: int,
                           gamma: float) -> Callable[[int], float]:
    """PatchTST's schedule ('type3') as a multiplier of the peak lr per optimiser step: 1 for
    ``hold_epochs`` epochs, then x ``gamma`` per epoch (a ``LambdaLR`` ``lr_lambda``; the
    time-to-accuracy benchmark hands the same function to NeuralForecast)."""
    def factor(step: int) -> float:
        epoch = step // max(1, steps_per_epoch)
        return 1.0 if epoch < hold_epochs else gamma ** (epoch - hold_epochs + 1)

    return factor


def hold_then_decay(optimizer: torch.optim.Optimizer, *, steps_per_epoch: int, hold_epochs: int,
                    gamma: float) -> torch.optim.lr_scheduler.LambdaLR:
    """PatchTST's schedule ('type3'): the peak lr for ``hold_epochs`` epochs, then x ``gamma``
    per epoch. Stepped once per optimiser step."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, hold_then_decay_factor(
        steps_per_epoch=steps_per_epoch, hold_epochs=hold_epochs, gamma=gamma))


class MeanAbsoluteScaledError(Metric):
    """MASE accumulated over windows: the sum and count of the finite per-(window, channel)
    values of :func:`zoo.metrics.mase`; ``compute`` gives their mean (float64)."""

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("total", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, forecast: torch.Tensor, target: torch.Tensor, history: torch.Tensor,
               season: int) -> None:
        """forecast, target (B, H, C); history (B, L, C): each window's own look-back."""
        values = mase(forecast, target, history, season)                     # (B, C)
        finite = torch.isfinite(values)
        self.total += values[finite].sum()
        self.count += finite.sum()

    def compute(self) -> torch.Tensor:
        return self.total / self.count


class WeightedQuantileLoss(Metric):
    """GluonTS's mean weighted quantile loss over every window seen: the per-level quantile
    losses (Q,) and ``sum |y|`` are summed over batches (:func:`zoo.metrics.quantile_loss`), so
    ``compute`` equals :func:`zoo.metrics.weighted_quantile_loss` of the whole split at once."""

    full_state_update = False

    def __init__(self, quantiles: Sequence[float]) -> None:
        super().__init__()
        self.quantiles = tuple(float(q) for q in quantiles)
        self.add_state("losses", torch.zeros(len(self.quantiles), dtype=torch.float64),
                       dist_reduce_fx="sum")
        self.add_state("scale", torch.zeros((), dtype=torch.float64), dist_reduce_fx="sum")

    def update(self, quantile_forecasts: torch.Tensor, target: torch.Tensor) -> None:
        """quantile_forecasts (B, H, C, Q) at ``quantiles``; target (B, H, C)."""
        self.losses += quantile_loss(quantile_forecasts, target, self.quantiles)
        self.scale += target.double().abs().nansum()

    def compute(self) -> torch.Tensor:
        return (self.losses / self.scale).mean()


class Forecaster(L.LightningModule):
    """A zoo forecaster trained on windows (x (B, L, C), y (B, H, C)) with MSE (or MAE /
    Huber), AdamW and a cosine or hold-then-decay schedule.

    ``loss="quantile"`` trains a model built with quantiles (``model_kwargs.quantiles``) with
    the pinball loss, averaged over levels, steps, channels and windows, and picks the best
    checkpoint by ``val/wql`` (other losses: ``val/mse``); it needs a model with quantiles. A
    quantile model under a point loss trains its point forecast alone (with a warning); it is
    still scored by ``wql``, e.g. zero-shot.

    ``season``: the season length m of MASE's seasonal-naive scale; None takes the data
    module's ``season`` (:class:`recipes.series.SeriesDataModule`: from the data's time step,
    e.g. 24 for hourly ETTh1).

    ``columns`` and ``scaler`` (the training data's standardisation, as a dict) are kept with
    the checkpoint as a record of what it was trained on; forecasting raw data needs neither,
    since the model normalises each window itself (RevIN).
    """

    monitor = "val/mse"   # the validation metric that picks the best checkpoint (see __init__)

    def __init__(self, *, model_name: str, num_channels: int, pretrained: Any = False,
                 model_kwargs: ModelKwargs | None = None, columns: Sequence[str] = (),
                 scaler: dict | None = None, grad_checkpointing: bool = False,
                 lr: float = 1e-4, min_lr: float = 1e-6, weight_decay: float = 0.0,
                 betas: Sequence[float] = (0.9, 0.999), warmup_epochs: float = 0.0,
                 schedule: Schedule = "cosine", hold_epochs: int = 3, gamma: float = 0.9,
                 loss: Loss = "mse", season: int | None = None,
                 nonfinite_loss: NonfinitePolicy = "raise") -> None:
        super().__init__()
        if nonfinite_loss not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite_loss must be one of {NONFINITE_POLICIES}, got {nonfinite_loss!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {SCHEDULES}, got {schedule!r}")
        if season is not None and (isinstance(season, bool) or not isinstance(season, int)
                                   or season < 1):
            raise ValueError(f"season must be an int >= 1 (or None: the data's), got {season!r}")
        self.save_hyperparameters()
        kwargs = {**(model_kwargs or {}), "num_channels": num_channels}
        self.model = zoo.create_model(model_name, pretrained=pretrained, **kwargs)
        self.model.set_grad_checkpointing(grad_checkpointing)
        self.quantiles: tuple[float, ...] = tuple(self.model.quantiles)
        if loss == "quantile" and not self.quantiles:
            raise ValueError(f"loss='quantile' needs a model with quantiles; {model_name} "
                             "gives point forecasts: set model_kwargs.quantiles, e.g. "
                             "[0.1, 0.5, 0.9]")
        if self.quantiles and loss != "quantile":   # fine to evaluate (e.g. zero-shot)
            logger.warning("the model forecasts quantiles %s, but loss=%r trains its point "
                           "forecast alone; loss='quantile' trains every level",
                           self.quantiles, loss)
        self.monitor = "val/wql" if loss == "quantile" else "val/mse"
        self.season: int | None = season
        metrics: dict[str, Metric] = {}
        for stage in ("val", "test"):
            metrics.update({f"{stage}_mse": MeanSquaredError(), f"{stage}_mae": MeanAbsoluteError(),
                            f"{stage}_mase": MeanAbsoluteScaledError()})
            if self.quantiles:
                metrics[f"{stage}_wql"] = WeightedQuantileLoss(self.quantiles)
        self.metrics = torch.nn.ModuleDict(metrics)

    def setup(self, stage: str) -> None:
        """Take MASE's season from the data module unless ``season`` was given (needed to
        fit, validate or test; predicting goes without)."""
        if self.hparams.season is not None:
            self.season = self.hparams.season
            return
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer else None
        season = getattr(datamodule, "season", None)
        if season is None and stage != "predict":
            raise ValueError("MASE needs a season length: set model.season (e.g. 24 for hourly "
                             "data with a daily cycle, 1 for the naive forecast), or use a data "
                             "module with a season (recipes.series.SeriesDataModule)")
        self.season = None if season is None else int(season)

    def forward(self, history: torch.Tensor, horizon: int | None = None) -> torch.Tensor:
        return self.model(history, horizon)

    def _loss(self, history: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        if self.hparams.loss == "quantile":   # the pinball loss, mean over levels and values
            return pinball_loss(self.model.forecast_quantiles(history, target.shape[1]), target,
                                self.quantiles).mean()
        forecast = self(history, target.shape[1])
        if self.hparams.loss == "mae":
            return F.l1_loss(forecast, target)
        if self.hparams.loss == "huber":
            return F.huber_loss(forecast, target)
        return F.mse_loss(forecast, target)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor | None:
        history, target = batch
        loss = checked_loss(self, self._loss(history, target), batch_idx,
                            self.hparams.nonfinite_loss)
        if loss is not None:
            self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True)
        return loss

    def _evaluate(self, batch, stage: str) -> None:
        history, target = batch
        forecast, quantiles = self.model.forecast_with_quantiles(history, target.shape[1])
        if self.season is None:
            raise ValueError("MASE needs a season length: set model.season (see setup)")
        updates = {"mse": (forecast, target), "mae": (forecast, target),
                   "mase": (forecast, target, history, self.season)}
        if quantiles is not None:
            updates["wql"] = (quantiles, target)
        for name, args in updates.items():
            metric = self.metrics[f"{stage}_{name}"]
            metric.update(*args)
            self.log(f"{stage}/{name}", metric, on_step=False, on_epoch=True,
                     prog_bar=name in ("mse", "mae", "wql"))

    def validation_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def predict_step(self, batch, batch_idx: int) -> dict[str, torch.Tensor]:
        """The forecast (B, H, C) and the true future (B, H, C), in the data's standardised
        units (``zoo fit|test``'s scale; the checkpoint keeps the scaler); a quantile model
        adds ``quantiles`` (B, H, C, Q) at the levels of its ``model_kwargs.quantiles``."""
        history, target = batch
        forecast, quantiles = self.model.forecast_with_quantiles(history, target.shape[1])
        out = {"forecast": forecast, "target": target}
        if quantiles is not None:
            out["quantiles"] = quantiles
        return out

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

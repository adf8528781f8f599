"""Pre-training a patch decoder (:class:`zoo.models.timesfm.TimesFM`) on synthetic series only:
the recipe behind the bundled zero-shot forecaster (``configs/series/timesfm_tiny_synthetic.yaml``).

Data (:class:`SyntheticDataModule`): every item is a whole batch of series from
:class:`zoo.data.synthetic.SyntheticSeries` (``DEFAULT_MIXTURE``: 70% the default mix, 30%
trend-dominated series), rebuilt from (seed, index) alone, so runs resume
exactly; validation and test are synthetic series from other seeds. No real series is read:
the model is scored zero-shot on real data by ``benchmarks/zero_shot.py``.

Training (:class:`PatchDecoderPretraining`): the decoder is causal, so one pass trains every
patch position at once: position i reads patches 0..i and forecasts the next ``horizon`` steps,
in its own running-statistics units (as at inference). Loss: MSE of the mean output plus the
pinball loss of every quantile output, over the observed target steps. Augmentations: random
sign (the model is flip-invariant at inference), masked random prefixes (short histories and
partly padded first patches) and masked random spans (missing values).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import lightning as L
import torch
import torch.nn.functional as F
from torchmetrics import MeanMetric

import zoo
from recipes.data import ModelKwargs, SplitDataModule
from recipes.fault_tolerance import NONFINITE_POLICIES, NonfinitePolicy, checked_loss
from recipes.optim import adamw_warmup_cosine
from zoo.data.synthetic import DEFAULT_MIXTURE, SyntheticSeries
from zoo.models.timesfm import TimesFM

# Normalised targets are clipped to this: a position whose past is flat can see steps of
# thousands of its (tiny) standard deviations, which would swamp the batch's loss.
TARGET_CLIP = 20.0


def first_item(items: list[torch.Tensor]) -> torch.Tensor:
    """Collate for datasets whose items are whole batches (a loader batch of one item)."""
    return items[0]


class SyntheticDataModule(SplitDataModule):
    """Synthetic series (B, length) for pre-training: ``train_batches`` batches of
    ``series_per_batch`` series per epoch, ``val_batches`` / ``test_batches`` from other
    seeds. ``length`` should be the model's context plus its horizon."""

    def __init__(self, *, dataset: Literal["synthetic"] = "synthetic", train_batches: int = 1000,
                 val_batches: int = 20, test_batches: int = 20, series_per_batch: int = 128,
                 length: int = 640, seed: int = 0, num_workers: int = 1) -> None:
        super().__init__(batch_size=1, num_workers=num_workers, seed=seed)
        if dataset != "synthetic":
            raise ValueError(f"dataset must be 'synthetic', got {dataset!r}")
        if min(train_batches, val_batches, test_batches, series_per_batch, length) < 1:
            raise ValueError("train_batches, val_batches, test_batches, series_per_batch and "
                             "length must all be >= 1")
        self.series_per_batch, self.length = series_per_batch, length
        self.counts = (train_batches, val_batches, test_batches)
        self.collate_fn = first_item
        self.holdout = True

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        seed = self.seed
        self.train_set, self.val_set, self.test_set = (
            SyntheticSeries(n, self.series_per_batch, self.length, seed=seed + 1_000_003 * k,
                            config=DEFAULT_MIXTURE)
            for k, n in enumerate(self.counts))
        self._classes = []


def pinball_loss(forecast: torch.Tensor, target: torch.Tensor, quantiles: torch.Tensor
                 ) -> torch.Tensor:
    """Per-value pinball loss averaged over levels: forecast (..., Q), target (...) -> (...)."""
    error = target[..., None] - forecast
    return torch.maximum(quantiles * error, (quantiles - 1) * error).mean(dim=-1)


def position_targets(values: torch.Tensor, observed: torch.Tensor, patch_len: int,
                     horizon: int, num_positions: int) -> tuple[torch.Tensor, torch.Tensor]:
    """What each patch position forecasts: values and observed flags (S, T) -> targets and
    weights (S, N, H). Position n has read patches 0..n (steps < (n + 1) * patch_len) and
    forecasts steps (n + 1) * patch_len + h, h < H; steps past T, or missing, weigh 0."""
    future = F.pad(values[:, patch_len:], (0, horizon))
    seen = F.pad(observed[:, patch_len:], (0, horizon))
    targets = future.unfold(1, horizon, patch_len)[:, :num_positions]
    weights = seen.unfold(1, horizon, patch_len)[:, :num_positions].to(values.dtype)
    return targets, weights


class PatchDecoderPretraining(L.LightningModule):
    """A :class:`zoo.models.timesfm.TimesFM` trained from every position of each synthetic
    series (see the module docstring). ``prefix_mask_prob`` / ``span_mask_prob``: the share of
    series given a masked prefix / masked spans."""

    monitor = "val/loss"

    def __init__(self, *, model_name: str = "timesfm_2p5_tiny",
                 model_kwargs: ModelKwargs | None = None, pretrained: Any = False,
                 lr: float = 1e-3, min_lr: float = 1e-5, weight_decay: float = 0.05,
                 betas: Sequence[float] = (0.9, 0.95), warmup_epochs: float = 0.05,
                 layer_decay: float | None = None, prefix_mask_prob: float = 0.3,
                 span_mask_prob: float = 0.1, nonfinite_loss: NonfinitePolicy = "raise") -> None:
        super().__init__()
        if nonfinite_loss not in NONFINITE_POLICIES:
            raise ValueError(f"nonfinite_loss must be one of {NONFINITE_POLICIES}, got "
                             f"{nonfinite_loss!r}")
        self.save_hyperparameters()
        model = zoo.create_model(model_name, pretrained=pretrained, **(model_kwargs or {}))
        if not isinstance(model, TimesFM):
            raise ValueError(f"{model_name} is not a patch decoder (TimesFM); this recipe "
                             "pre-trains those only")
        self.model = model
        self.register_buffer("levels", torch.tensor(model.quantiles), persistent=False)
        self.mean_loss = torch.nn.ModuleDict({s: MeanMetric() for s in ("val", "test")})

    def _masks(self, series: torch.Tensor) -> torch.Tensor:
        """Random missing flags (S, T): masked prefixes and spans (training only)."""
        S, T = series.shape
        steps = torch.arange(T, device=series.device)
        context = self.model.context_length
        prefix = (torch.rand(S, device=series.device) * (context - self.model.front_end.patch_len)
                  ).long()
        prefix = torch.where(torch.rand(S, device=series.device) < self.hparams.prefix_mask_prob,
                             prefix, 0)
        missing = steps[None] < prefix[:, None]
        start = torch.randint(0, T, (S, 1), device=series.device)
        width = torch.randint(1, max(2, T // 10), (S, 1), device=series.device)
        spans = (steps[None] >= start) & (steps[None] < start + width)
        spans &= torch.rand(S, 1, device=series.device) < self.hparams.span_mask_prob
        # the last patch of the history stays observed: a forecast needs something to start from
        last = (steps >= context - self.model.front_end.patch_len) & (steps < context)
        return (missing | spans) & ~last

    def _losses(self, series: torch.Tensor, missing: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        """Series (S, context + horizon) and flags -> (loss per target value (S, N, H),
        the targets' weights (S, N, H): 1 where observed and inside the series)."""
        model, context, horizon = self.model, self.model.context_length, self.model.horizon
        patch = model.front_end.patch_len
        history = torch.where(missing[:, :context], torch.nan, series[:, :context])
        prepared = model.front_end.prepare(history[..., None])
        point, _, stats = model.decode(prepared.values, prepared.missing)   # (S, N, H, K)
        # the future in the same global units, then in each position's own units
        safe = torch.where(prepared.scale > 0, prepared.scale, 1.0)
        future = ((series.double() - prepared.loc[:, None]) / safe[:, None]).to(series.dtype)
        targets, weights = position_targets(future, ~missing, patch, horizon, point.shape[1])
        std = torch.where(stats.std < 1e-6, torch.ones_like(stats.std), stats.std)
        targets = ((targets - stats.mean[..., None]) / std[..., None]).clamp(-TARGET_CLIP,
                                                                             TARGET_CLIP)
        weights = weights * (~stats.padding)[..., None].to(weights.dtype)
        loss = F.mse_loss(point[..., 0], targets, reduction="none") + \
            pinball_loss(point[..., 1:], targets, self.levels)
        return loss, weights

    def training_step(self, batch: torch.Tensor, batch_idx: int) -> torch.Tensor | None:
        sign = torch.where(torch.rand(batch.shape[0], 1, device=batch.device) < 0.5, -1.0, 1.0)
        series = batch * sign
        loss, weights = self._losses(series, self._masks(series))
        value = checked_loss(self, (loss * weights).sum() / weights.sum().clamp_min(1.0),
                             batch_idx, self.hparams.nonfinite_loss)
        if value is not None:
            self.log("train/loss", value, on_step=True, on_epoch=True, prog_bar=True)
        return value

    def _evaluate(self, batch: torch.Tensor, stage: str) -> None:
        missing = torch.zeros_like(batch, dtype=torch.bool)
        loss, weights = self._losses(batch, missing)
        self.mean_loss[stage].update(loss, weights)
        self.log(f"{stage}/loss", self.mean_loss[stage], on_step=False, on_epoch=True,
                 prog_bar=True)

    def validation_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._evaluate(batch, "val")

    def test_step(self, batch: torch.Tensor, batch_idx: int) -> None:
        self._evaluate(batch, "test")

    def configure_optimizers(self) -> dict[str, Any]:
        return adamw_warmup_cosine(self)

    @classmethod
    def from_checkpoint(cls, path: str | Path, map_location: str = "cpu"
                        ) -> PatchDecoderPretraining:
        """Rebuild from a recipe checkpoint without re-reading the original pretrained source."""
        from recipes.classification import rebuild_from_checkpoint

        return rebuild_from_checkpoint(cls, path, map_location)

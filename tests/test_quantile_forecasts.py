"""Probabilistic forecasts: PatchTST's quantile head, the pinball loss, and the forecasting
recipe's MASE and WQL accumulated over a split (against sums written out by hand)."""

from __future__ import annotations

import json

import lightning as L
import pandas as pd
import pytest
import torch
from torch.utils.data import DataLoader, TensorDataset

import zoo
from recipes.forecasting import Forecaster as ForecastingModule
from recipes.series import SeriesDataModule, season_from_timestamps
from zoo.heads import ForecastHead
from zoo.models.patchtst import PatchTST

TINY = dict(context_length=48, horizon=12, num_channels=3, patch_len=8, stride=4, embed_dim=16,
            depth=2, num_heads=2, mlp_ratio=2.0, drop_rate=0.0)
LEVELS = (0.1, 0.5, 0.9)


def _series(batch: int = 4, length: int = 48, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Random walks with a different level and scale per channel: (B, L, C)."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.randn(batch, length, channels, generator=g)
    scale, level = torch.tensor([1.0, 10.0, 0.1]), torch.tensor([0.0, 50.0, -3.0])
    return steps.cumsum(1) * scale[:channels] + level[:channels]


def _noisy(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Noise in every parameter (wide enough in the head that raw quantiles cross)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            param.copy_((torch.rand(param.shape, generator=g) - 0.5) * (1.0 if "head" in name else 0.2))
            if "norm" in name and name.endswith("weight"):
                param.add_(1.0)
    return model.eval()


# --- the head -----------------------------------------------------------------------------------

@pytest.mark.parametrize("shared", [True, False])
def test_forecast_head_gives_every_level_of_every_step_from_one_projection(shared):
    head = ForecastHead(5, 4, 6, num_channels=3, shared=shared, num_quantiles=2)
    tokens = torch.randn(2 * 3, 5, 4)
    out = head(tokens, 3)
    assert out.shape == (2, 6, 3, 2)
    if shared:
        assert head.proj.weight.shape == (6 * 2, 5 * 4)
        weight, bias = [head.proj.weight] * 3, [head.proj.bias] * 3
    else:
        assert head.proj_weight.shape == (3, 6 * 2, 5 * 4)
        weight, bias = head.proj_weight, head.proj_bias
    features = tokens.reshape(2, 3, 20)
    for c in range(3):          # output h * Q + q is step h, level q
        expected = (features[:, c] @ weight[c].T + bias[c]).reshape(2, 6, 2)
        torch.testing.assert_close(out[:, :, c], expected)
    point = ForecastHead(5, 4, 6, num_channels=3, shared=shared)
    assert point(tokens, 3).shape == (2, 6, 3)
    with pytest.raises(ValueError, match="num_quantiles"):
        ForecastHead(5, 4, 6, num_channels=3, num_quantiles=-1)


# --- the model ----------------------------------------------------------------------------------

def test_quantile_model_shapes_median_and_horizon():
    model = _noisy(PatchTST(**TINY, quantiles=LEVELS))
    x = _series()
    with torch.no_grad():
        quantiles, point = model.forecast_quantiles(x), model(x)
        short = model.forecast_quantiles(x, horizon=5)
    assert model.quantiles == LEVELS and model.model_args["quantiles"] == list(LEVELS)
    assert quantiles.shape == (4, 12, 3, 3) and point.shape == (4, 12, 3)
    torch.testing.assert_close(point, quantiles[..., 1])          # forward is the median
    torch.testing.assert_close(short, quantiles[:, :5])
    assert (quantiles.diff(dim=-1) >= 0).all()                   # never crossing
    assert (quantiles[..., 2] - quantiles[..., 0]).mean() > 0


def test_quantiles_are_denormalised_and_sorted_after_the_head():
    """forecast_quantiles == sort(head output * RevIN scale + RevIN loc), written out."""
    model = _noisy(PatchTST(**TINY, quantiles=LEVELS), seed=1)
    x = _series()
    with torch.no_grad():
        got = model.forecast_quantiles(x)
        mean = x.mean(1, keepdim=True)                                      # (B, 1, C)
        std = torch.sqrt(x.var(1, unbiased=False, keepdim=True) + 1e-5)
        tokens = model.encoder(model.front_end.embed((x - mean) / std))
        raw = model.head(tokens, 3)                                         # (B, H, C, Q)
        assert (raw.diff(dim=-1) < 0).any(), "the noise should make some raw levels cross"
        expected = (raw * std[..., None] + mean[..., None]).sort(dim=-1).values
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-4)
    # scale and shift each channel: every level follows (RevIN)
    a, b = torch.tensor([2.0, 0.5, 30.0]), torch.tensor([-4.0, 100.0, 7.0])
    with torch.no_grad():
        moved = model.forecast_quantiles(x * a + b)
    torch.testing.assert_close(moved, got * a[:, None] + b[:, None], rtol=1e-4, atol=1e-3)


def test_sorting_never_raises_the_pinball_loss():
    """Swapping crossed levels lowers the summed pinball loss by (q_j - q_i)(a - b) > 0."""
    from zoo.metrics import pinball_loss

    g = torch.Generator().manual_seed(0)
    raw = torch.randn(64, 4, 2, 3, generator=g)                          # many cross
    target = torch.randn(64, 4, 2, generator=g)
    unsorted = pinball_loss(raw, target, LEVELS).sum(-1)
    sorted_ = pinball_loss(raw.sort(-1).values, target, LEVELS).sum(-1)
    assert (sorted_ <= unsorted + 1e-6).all() and (sorted_ < unsorted - 1e-6).any()


def test_a_point_model_is_unchanged_and_has_no_quantiles():
    torch.manual_seed(0)
    default = PatchTST(**TINY).eval()
    torch.manual_seed(0)
    explicit = PatchTST(**TINY, quantiles=()).eval()
    assert default.quantiles == () and default.head.num_quantiles == 0
    assert default.head.proj.weight.shape == (12, 12 * 16)
    x = _series()
    torch.testing.assert_close(default(x), explicit(x))
    with pytest.raises(ValueError, match="point forecasts only"):
        default.forecast_quantiles(x)


@pytest.mark.parametrize("levels,match", [
    ((0.9, 0.5, 0.1), "sorted and unique"), ((0.1, 0.5, 0.5), "sorted and unique"),
    ((0.1, 0.9), "include the median 0.5"), ((0.0, 0.5), "strictly between 0 and 1"),
    ((0.5, 1.0), "strictly between 0 and 1"), ((-0.1, 0.5), "strictly between 0 and 1"),
    ((float("nan"), 0.5), "strictly between 0 and 1"), ((True, 0.5), "strictly between 0 and 1"),
    ("0.5", "a sequence of levels"), (0.5, "a sequence of levels"),
])
def test_bad_quantiles_are_refused(levels, match):
    with pytest.raises(ValueError, match=match):
        PatchTST(**TINY, quantiles=levels)


def test_a_quantile_head_starts_from_point_weights(tmp_path):
    from safetensors.torch import save_file

    if "test_patchtst_quantile_tiny" not in zoo.list_models():
        zoo.register_model("test_patchtst_quantile_tiny", modality="series", builder=PatchTST,
                           args=TINY, preprocess={}, num_classes=0)
    source = PatchTST(**TINY)
    save_file(source.state_dict(), tmp_path / "w.safetensors")
    model = zoo.create_model("test_patchtst_quantile_tiny", pretrained=tmp_path / "w.safetensors",
                             quantiles=LEVELS)
    assert model.quantiles == LEVELS and model.head.proj.weight.shape == (12 * 3, 12 * 16)
    torch.testing.assert_close(model.encoder.state_dict(), source.encoder.state_dict())


# --- the recipe ---------------------------------------------------------------------------------

RECIPE_MODEL = dict(context_length=24, horizon=4, embed_dim=8, num_heads=2, depth=1,
                    drop_rate=0.0, patch_len=8, stride=4)


def _module(quantiles=LEVELS, loss="quantile", season: int | None = 4) -> ForecastingModule:
    torch.manual_seed(0)
    kwargs = {**RECIPE_MODEL, "quantiles": list(quantiles)}
    return ForecastingModule(model_name="patchtst_tiny_l336", num_channels=2, model_kwargs=kwargs,
                             loss=loss, season=season)


def _windows(n: int = 7) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(3)
    series = torch.randn(n, 28, 2, generator=g).cumsum(1) + torch.tensor([0.5, -2.0])
    return series[:, :24], series[:, 24:]                             # (N, 24, 2), (N, 4, 2)


def _hand_mase(forecast, target, history, season) -> float:
    values = []
    for b in range(target.shape[0]):
        for c in range(target.shape[2]):
            x = history[b, :, c].tolist()
            scale = sum(abs(x[t] - x[t - season]) for t in range(season, len(x))) / (len(x) - season)
            error = sum(abs(float(target[b, h, c] - forecast[b, h, c]))
                        for h in range(target.shape[1])) / target.shape[1]
            values.append(error / scale)
    return sum(values) / len(values)


def _hand_wql(quantiles, target, levels) -> float:
    total = sum(abs(float(v)) for v in target.flatten())
    losses = []
    for i, q in enumerate(levels):
        loss = 0.0
        for y, f in zip(target.flatten().tolist(), quantiles[..., i].flatten().tolist(), strict=True):
            loss += 2 * abs((y - f) * ((1.0 if y <= f else 0.0) - q))
        losses.append(loss / total)
    return sum(losses) / len(losses)


def test_test_metrics_are_sums_over_every_window_not_batch_means(one_thread):
    """7 windows in batches of 3 (the last one partial): MSE, MAE, MASE and WQL of the whole
    split, against the formulas written out over the model's own forecasts."""
    module = _module()
    history, target = _windows()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    tested = trainer.test(module, dataloaders=DataLoader(TensorDataset(history, target),
                                                         batch_size=3), verbose=False)[0]
    assert set(tested) == {"test/mse", "test/mae", "test/mase", "test/wql"}
    with torch.no_grad():
        quantiles = module.model.eval().forecast_quantiles(history).double()
    median, y = quantiles[..., 1], target.double()
    assert tested["test/mse"] == pytest.approx(((median - y) ** 2).mean().item(), rel=1e-5)
    assert tested["test/mae"] == pytest.approx((median - y).abs().mean().item(), rel=1e-5)
    assert tested["test/mase"] == pytest.approx(_hand_mase(median, y, history.double(), 4), rel=1e-6)
    assert tested["test/wql"] == pytest.approx(_hand_wql(quantiles, y, LEVELS), rel=1e-6)


def test_mase_leaves_out_windows_with_a_constant_look_back():
    from recipes.forecasting import MeanAbsoluteScaledError

    metric = MeanAbsoluteScaledError()
    history, target = _windows(3)
    history[1, :, 0] = 5.0                                   # seasonal error 0: inf, left out
    forecast = target + 0.5
    metric.update(forecast, target, history, 4)
    kept = [_hand_mase(forecast[b:b + 1, :, c:c + 1], target[b:b + 1, :, c:c + 1],
                       history[b:b + 1, :, c:c + 1], 4) for b in range(3) for c in range(2)
            if (b, c) != (1, 0)]
    assert metric.compute().item() == pytest.approx(sum(kept) / 5, rel=1e-9)


def test_the_quantile_loss_is_the_pinball_loss_averaged_over_levels():
    module = _module()
    history, target = _windows(3)
    module.train()
    loss = module._loss(history, target)
    with torch.no_grad():
        quantiles = module.model.forecast_quantiles(history)
    terms = [max(q * (y - f), (q - 1) * (y - f))
             for i, q in enumerate(LEVELS)
             for y, f in zip(target.flatten().tolist(), quantiles[..., i].flatten().tolist(),
                             strict=True)]
    assert loss.item() == pytest.approx(sum(terms) / len(terms), rel=1e-5)
    loss.backward()
    assert module.model.head.proj.weight.grad.abs().sum() > 0


def test_quantile_loss_and_quantile_models_go_together(caplog):
    with pytest.raises(ValueError, match="loss='quantile' needs a model with quantiles"):
        _module(quantiles=(), loss="quantile")
    with caplog.at_level("WARNING", logger="zoo.recipes"):   # evaluating one is fine
        assert _module(quantiles=LEVELS, loss="mse").monitor == "val/mse"
    assert "trains its point forecast alone" in caplog.text
    with pytest.raises(ValueError, match="loss must be one of"):
        _module(loss="pinball")
    with pytest.raises(ValueError, match="season must be an int >= 1"):
        _module(season=0)
    assert _module().monitor == "val/wql" and _module(quantiles=(), loss="mse").monitor == "val/mse"


def test_a_point_model_reports_mase_but_no_wql(one_thread):
    module = _module(quantiles=(), loss="mse")
    history, target = _windows()
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    tested = trainer.test(module, dataloaders=DataLoader(TensorDataset(history, target),
                                                         batch_size=4), verbose=False)[0]
    assert set(tested) == {"test/mse", "test/mae", "test/mase"}
    with torch.no_grad():
        forecast = module.model.eval()(history).double()
    assert tested["test/mase"] == pytest.approx(
        _hand_mase(forecast, target.double(), history.double(), 4), rel=1e-6)


def test_the_season_comes_from_the_data_unless_given(tmp_path):
    frame = pd.DataFrame({"date": pd.date_range("2024-01-01", periods=200, freq="D"),
                          "y": torch.randn(200).cumsum(0).numpy()})
    frame.to_csv(tmp_path / "daily.csv", index=False)
    daily = SeriesDataModule(dataset="csv", root=str(tmp_path / "daily.csv"), lookback=24, horizon=4)
    assert daily.season == 7
    given = SeriesDataModule(dataset="csv", root=str(tmp_path / "daily.csv"), lookback=24,
                             horizon=4, season=2)
    assert given.season == 2
    assert season_from_timestamps(pd.date_range("2024-01-01", periods=10, freq="h")) == 24
    assert season_from_timestamps(pd.date_range("2024-01-01", periods=10, freq="15min")) == 96
    assert season_from_timestamps(pd.date_range("2024-01-31", periods=10, freq="ME")) == 12
    assert season_from_timestamps(None) == 1
    module = _module(season=None)        # neither given nor a data module to ask: a clear error
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                        enable_progress_bar=False, enable_model_summary=False)
    with pytest.raises(ValueError, match=r"MASE needs a season length: set model\.season"):
        trainer.test(module, dataloaders=DataLoader(TensorDataset(*_windows()), batch_size=4))


# --- the ETTh1 quantile config ------------------------------------------------------------------

QUANTILE_CONFIG = "configs/series/patchtst_tiny_etth1_quantile.yaml"


def test_the_etth1_quantile_config_trains_and_reports_every_metric(tmp_path, capsys, one_thread):
    from zoo.cli import main as cli
    from zoo.data.series import etth1_path

    try:
        etth1_path()
    except FileNotFoundError as err:
        pytest.skip(f"ETTh1 not available: {err}")
    run = tmp_path / "run"
    code = cli(["train", QUANTILE_CONFIG, f"--trainer.default_root_dir={run}",
                "--trainer.max_epochs=1", "--trainer.limit_train_batches=5",
                "--trainer.limit_val_batches=2", "--trainer.enable_progress_bar=false",
                "--model.model_kwargs.context_length=48", "--model.model_kwargs.horizon=24",
                "--model.model_kwargs.depth=1", "--data.batch_size=256"])
    assert code == 0
    result = json.loads((run / "metrics.json").read_text())
    assert set(result["metrics"]) == {"test/mse", "test/mae", "test/mase", "test/wql"}
    assert result["num_test"] == 2880 - 24 + 1                 # every test window
    assert all(0 < v < 10 for v in result["metrics"].values()), result
    capsys.readouterr()
    assert cli(["eval", str(run / "config.yaml"), "--ckpt", str(run / "checkpoints" / "best.ckpt")]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for key, value in result["metrics"].items():
        assert evaluated["metrics"][key] == pytest.approx(value, abs=1e-6)

"""Forecasting recipe end to end: a user's CSV -> `zoo finetune` -> `zoo forecast` (CSV + PNG),
config validation, long look-backs (the published weights: tests/test_model_cards.py)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import zoo
from recipes.cli import ConfigError
from zoo.cli import main as cli

ETTH1_CONFIG = "configs/series/patchtst_tiny_etth1.yaml"
TINY_OVERRIDES = ["--model.model_kwargs.context_length=48", "--model.model_kwargs.embed_dim=16",
                  "--model.model_kwargs.num_heads=2", "--model.model_kwargs.depth=1",
                  "--model.model_kwargs.drop_rate=0.0", "--trainer.enable_progress_bar=false",
                  "--trainer.log_every_n_steps=1"]


def _write_csv(path: Path, rows: int = 600) -> pd.DataFrame:
    """Two hourly series: a daily sine with noise and a slower, shifted one."""
    rng = np.random.default_rng(0)
    t = np.arange(rows)
    frame = pd.DataFrame({
        "timestamp": pd.date_range("2024-01-01", periods=rows, freq="h"),
        "load": 10 + 3 * np.sin(2 * np.pi * t / 24) + 0.1 * rng.standard_normal(rows),
        "temp": -2 + np.cos(2 * np.pi * t / 48) + 0.05 * rng.standard_normal(rows),
        "site": "a",
    })
    frame.to_csv(path, index=False)
    return frame


def test_finetune_on_a_csv_then_forecast_writes_csv_and_plot(tmp_path, capsys):
    data = tmp_path / "load.csv"
    frame = _write_csv(data)
    run = tmp_path / "run"
    code = cli(["finetune", "patchtst_tiny_l336", "--data", str(data), "--no-pretrained",
                "--horizon", "12", "--columns", "load,temp", "--time-column", "timestamp",
                "--epochs", "4", "--lr", "3e-3", "--batch-size", "32", "--num-workers", "0",
                "--output", str(run), *TINY_OVERRIDES])
    assert code == 0
    result = json.loads((run / "metrics.json").read_text())
    # 600 rows, 70/10/20: test = last 120 rows + 48 look-back rows -> 120 - 12 + 1 windows
    assert result["num_test"] == 109 and result["num_train"] == 420 - 48 - 12 + 1
    # a daily sine is easy: far below predicting the window mean (about the series' variance)
    assert result["metrics"]["test/mse"] < 0.15, result

    out = tmp_path / "forecast.csv"
    ckpt = run / "checkpoints" / "best.ckpt"
    capsys.readouterr()
    assert cli(["eval", str(run / "config.yaml"), "--ckpt", str(ckpt)]) == 0   # zoo eval agrees
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["num_test"] == 109
    assert abs(evaluated["metrics"]["test/mse"] - result["metrics"]["test/mse"]) < 1e-6
    # LightningCLI's predict: every test window's forecast and truth, in standardised units
    assert cli(["predict", "--config", str(run / "config.yaml"), "--ckpt_path", str(ckpt)]) == 0
    from safetensors import safe_open

    (written,) = run.glob("predictions-*.safetensors")
    with safe_open(str(written), "pt") as f:
        forecast, target = f.get_tensor("forecast"), f.get_tensor("target")
        assert json.loads(f.metadata()["columns"]) == ["load", "temp"]
    assert forecast.shape == target.shape == (109, 12, 2)
    mse = torch.nn.functional.mse_loss(forecast, target).item()
    assert mse == pytest.approx(result["metrics"]["test/mse"], rel=1e-4)
    code = cli(["forecast", str(ckpt), str(data), "--horizon", "12", "--time-column", "timestamp",
                "--columns", "load,temp", "--output", str(out), "--plot-columns", "load"])
    assert code == 0, capsys.readouterr().err
    forecast = pd.read_csv(out, parse_dates=["timestamp"])
    assert list(forecast.columns) == ["timestamp", "load", "temp"] and len(forecast) == 12
    expected_times = pd.date_range(frame["timestamp"].iloc[-1], periods=13, freq="h")[1:]
    assert (forecast["timestamp"] == expected_times).all()
    truth = 10 + 3 * np.sin(2 * np.pi * (600 + np.arange(12)) / 24)   # the next 12 hours
    assert np.abs(forecast["load"].to_numpy() - truth).mean() < 0.6   # in the data's own units
    assert out.with_suffix(".png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    code = cli(["forecast", str(ckpt), str(data), "--horizon", "24", "--time-column", "timestamp",
                "--columns", "load,temp", "--output", str(out)])
    assert code == 2 and "forecasts 12 steps; --horizon 24 is longer" in capsys.readouterr().err
    code = cli(["forecast", str(ckpt), str(data), "--time-column", "timestamp",
                "--output", str(out)])   # "site" is text: a clear error naming it
    assert code == 2 and "non-numeric column(s) 'site'" in capsys.readouterr().err


def test_forecast_frame_needs_enough_history_and_continues_the_time_index(tmp_path):
    from zoo.forecasting import forecast_frame
    from zoo.models.patchtst import PatchTST

    model = PatchTST(context_length=48, horizon=6, num_channels=1, embed_dim=8, num_heads=2, depth=1)
    frame = pd.DataFrame({"x": np.arange(30.0)},
                         index=pd.date_range("2024-03-01", periods=30, freq="15min", name="t"))
    with pytest.raises(ValueError, match="needs 48 rows of history; the data has 30"):
        forecast_frame(model, frame)
    frame = pd.DataFrame({"x": np.sin(np.arange(60.0))},
                         index=pd.date_range("2024-03-01", periods=60, freq="15min", name="t"))
    forecast = forecast_frame(model, frame, horizon=4)
    assert list(forecast.index) == list(pd.date_range(frame.index[-1], periods=5, freq="15min")[1:])
    rows = forecast_frame(model, frame.reset_index(drop=True))
    assert list(rows.index) == list(range(60, 66))
    unscaled = PatchTST(context_length=48, horizon=6, num_channels=1, embed_dim=8, num_heads=2,
                        depth=1, scaling="none")
    with pytest.raises(ValueError, match="does not normalise its input"):
        forecast_frame(unscaled, frame)


def test_forecasting_config_is_validated():
    from recipes.cli import build

    with pytest.raises(ConfigError, match=r"config key 'data.init_args.missing' must be one of "
                                          r"'error', 'interpolate', 'keep', got 'drop'"):
        build(["--config", ETTH1_CONFIG, "--data.missing=drop"])
    with pytest.raises(ConfigError, match=r"did you mean 'trainer\.early_stopping_patience'"):
        build(["--config", ETTH1_CONFIG, "--trainer.early_stoping_patience=3"])
    with pytest.raises(ValueError, match=r"ast_tiny_d6_8k is an audio model; this series data "
                                         r"module feeds series models only"):
        build(["--config", ETTH1_CONFIG, "--model.model_name=ast_tiny_d6_8k"])


def test_a_2048_step_look_back_trains_and_checkpointing_gives_the_same_gradients(one_thread):
    """256 patch tokens per channel: one training step, with and without gradient checkpointing."""
    torch.manual_seed(0)
    model = zoo.create_model("patchtst_tiny_l336", context_length=2048, drop_rate=0.0)
    assert model.front_end.num_patches == 256
    x, y = torch.randn(4, 2048, 7).cumsum(1), torch.randn(4, 96, 7)
    grads = []
    for checkpointing in (False, True):
        model.zero_grad()
        model.set_grad_checkpointing(checkpointing)
        loss = torch.nn.functional.mse_loss(model(x), y)
        loss.backward()
        assert math.isfinite(loss.item())
        grads.append(model.front_end.proj.weight.grad.clone())
    torch.testing.assert_close(grads[0], grads[1])


# --- ETTh1 --------------------------------------------------------------------------------------

def _etth1_or_skip() -> None:
    from zoo.data.series import etth1_path
    try:
        etth1_path()
    except FileNotFoundError as err:
        pytest.skip(f"ETTh1 not available: {err}")


def test_the_readme_time_series_example_runs(one_thread):
    text = Path("README.md").read_text()
    section = text[text.index("### PatchTST"):]
    code = section[section.index("```python") + len("```python"):]
    code = code[: code.index("```")]
    namespace: dict = {}
    exec(compile(code, "README.md (Time series)", "exec"), namespace)
    assert namespace["forecast"].shape == (8, 24, 3)
    assert namespace["tokens"].shape == (8 * 3, 42, 16)
    x = torch.randn(2, 64, 3)
    with torch.no_grad():
        expected = namespace["hf"].eval()(past_values=x).prediction_outputs
        assert (namespace["ours"].eval()(x) - expected).abs().max() < 1e-4

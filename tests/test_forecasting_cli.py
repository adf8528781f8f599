"""Forecasting tables (zoo.forecasting) and `zoo forecast`: the forecaster contract from a
table's side (history length, horizon, NaN, quantile bands), backtests, the long format, the CLI.

``NoisyForecaster`` stands in for a zero-shot forecaster: it accepts any history length, masks
NaN, forecasts any horizon and gives quantiles, from random weights (fixed seed)."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from zoo import cli
from zoo.forecasting import (
    backtest,
    backtest_long,
    forecast_frame,
    forecast_long,
    format_backtest,
    plot_forecast,
)
from zoo.models.base import Forecaster
from zoo.models.patchtst import PatchTST

Z90 = 1.2815515655446004            # the standard normal's 0.9 quantile


class NoisyForecaster(Forecaster):
    """Any L >= ``min_context`` (the last ``context_length`` rows read), NaN masked, any H.

    Point: the observed mean plus a random-weight mix of the last normalised steps, in float64
    statistics; quantiles: point +- z_q * std (0.1, 0.5, 0.9)."""

    modality = "series"

    def __init__(self, *, context_length: int = 64, horizon: int = 8, min_context: int = 1,
                 quantiles: tuple[float, ...] = (0.1, 0.5, 0.9), seed: int = 0) -> None:
        super().__init__(nn.Identity(), nn.Identity(), nn.Identity(), {})
        torch.manual_seed(seed)
        self.mix = nn.Linear(4, 1)
        self._context, self._horizon, self._min = context_length, horizon, min_context
        self._quantiles = quantiles
        self.calls: list[tuple[int, ...]] = []

    context_length = property(lambda self: self._context)
    min_context = property(lambda self: self._min)
    horizon = property(lambda self: self._horizon)
    max_horizon = property(lambda self: None)
    quantiles = property(lambda self: self._quantiles)
    supports_missing = property(lambda self: True)

    def _forecast(self, x: torch.Tensor, horizon: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(B, L, C) -> point (B, H, C) and std (B, 1, C); records the input shape."""
        assert 1 <= x.shape[1] <= self.context_length and not torch.isinf(x).any()
        self.calls.append(tuple(x.shape))
        horizon = self.check_horizon(horizon)
        obs = ~torch.isnan(x)
        mean = torch.where(obs, x, 0).sum(1, keepdim=True) / obs.sum(1, keepdim=True)
        var = torch.where(obs, (x - mean) ** 2, 0).sum(1, keepdim=True) / obs.sum(1, keepdim=True)
        std = (var + 1e-10).sqrt()
        z = torch.where(obs, (x - mean) / std, 0)
        last = nn.functional.pad(z, (0, 0, max(0, 4 - z.shape[1]), 0))[:, -4:]    # (B, 4, C)
        mix = self.mix(last.transpose(1, 2)).transpose(1, 2)                       # (B, 1, C)
        return (mean + std * torch.tanh(mix)).expand(-1, horizon, -1), std

    def forward(self, history: torch.Tensor, horizon: int | None = None) -> torch.Tensor:
        return self._forecast(history, horizon)[0]

    def forecast_quantiles(self, history: torch.Tensor, horizon: int | None = None) -> torch.Tensor:
        point, std = self._forecast(history, horizon)
        z = torch.tensor([Z90 * (2 * q - 1) / 0.8 for q in self.quantiles])       # 0.1 -> -Z90
        return point[..., None] + std[..., None] * z


def hourly(n: int, **columns: np.ndarray) -> pd.DataFrame:
    return pd.DataFrame(columns, index=pd.date_range("2024-01-01", periods=n, freq="h", name="date"))


def daily_sine(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return 10 + np.sin(2 * np.pi * np.arange(n) / 24) + 0.1 * rng.standard_normal(n)


# ---- forecast_frame ------------------------------------------------------------------------

def test_history_is_the_last_context_rows_and_bands_are_named_like_neuralforecast():
    model = NoisyForecaster(context_length=32)
    frame = hourly(50, OT=daily_sine(50), load=daily_sine(50, 1))
    out = forecast_frame(model, frame, 5)
    assert model.calls[0] == (1, 32, 2)
    assert list(out.columns) == ["OT", "OT-lo-80", "OT-hi-80", "load", "load-lo-80", "load-hi-80"]
    assert list(out.index) == list(pd.date_range("2024-01-03 02:00", periods=5, freq="h"))
    assert (out["OT-lo-80"] < out["OT"]).all() and (out["OT"] < out["OT-hi-80"]).all()
    # the point column is the model's forward; the bands its 0.1 and 0.9 quantiles
    x = torch.tensor(frame.to_numpy()[-32:], dtype=torch.float32)[None]
    assert np.allclose(out["OT"], model(x, 5)[0, :, 0].detach().numpy(), atol=1e-5)
    assert np.allclose(out["load-hi-80"], model.forecast_quantiles(x, 5)[0, :, 1, 2].detach().numpy(),
                       atol=1e-5)
    # a short history is used whole
    forecast_frame(model, frame.iloc[:3], 5)
    assert model.calls[-1] == (1, 3, 2)


def test_levels_are_checked_against_the_models_quantiles():
    model = NoisyForecaster(quantiles=(0.025, 0.1, 0.5, 0.9, 0.975))
    frame = hourly(40, y=daily_sine(40))
    out = forecast_frame(model, frame, 3, levels=[95, 80])
    assert list(out.columns) == ["y", "y-lo-95", "y-lo-80", "y-hi-80", "y-hi-95"]
    assert list(forecast_frame(model, frame, 3, levels=()).columns) == ["y"]
    with pytest.raises(ValueError, match=r"a 90% interval needs the 0.05 and 0.95 quantiles.*"
                                         r"bound levels 80, 95"):
        forecast_frame(model, frame, 3, levels=[90])
    point = PatchTST(context_length=16, horizon=4, patch_len=4, stride=4, embed_dim=8,
                     num_heads=2, depth=1)
    assert list(forecast_frame(point, frame, 2).columns) == ["y"]           # no bands, no error
    with pytest.raises(ValueError, match="point forecasts only, no 80% interval"):
        forecast_frame(point, frame, 2, levels=[80])


def test_too_short_too_long_and_missing_values_are_clear_errors():
    model = NoisyForecaster(context_length=32, min_context=10)
    with pytest.raises(ValueError, match=r"needs 10 rows of history; the data has 6 \(it reads at "
                                         r"most 32\)"):
        forecast_frame(model, hourly(6, y=daily_sine(6)))
    patch = PatchTST(context_length=16, horizon=4, patch_len=4, stride=4, embed_dim=8,
                     num_heads=2, depth=1)
    frame = hourly(40, y=daily_sine(40), z=daily_sine(40, 3))
    with pytest.raises(ValueError, match="forecasts 4 steps; horizon=5 is longer"):
        forecast_frame(patch, frame, 5)
    frame.iloc[30, 1] = np.nan
    with pytest.raises(ValueError, match=r"column 'z' has a missing value at 2024-01-02 06:00:00.*"
                                         r"does not mask missing values"):
        forecast_frame(patch, frame)
    out = forecast_frame(model, frame, 4)           # a masking model keeps the NaN
    assert np.isfinite(out.to_numpy()).all()
    frame.iloc[-32:, 1] = np.nan
    with pytest.raises(ValueError, match="column 'z' has no observed value in the last 32 rows"):
        forecast_frame(model, frame)
    with pytest.raises(ValueError, match=r"non-numeric column\(s\) \['name'\]"):
        forecast_frame(model, hourly(20, y=daily_sine(20), name=np.array(["a"] * 20)))


@pytest.mark.parametrize("factory", [
    NoisyForecaster,
    lambda: PatchTST(context_length=16, horizon=4, patch_len=4, stride=4, embed_dim=8,
                     num_heads=2, depth=1)])
def test_constant_and_huge_columns_forecast_in_their_units(factory):
    model = factory()
    n = 40
    frame = hourly(n, flat=np.full(n, 1e9), huge=1e30 * (2 + np.sin(np.arange(n) / 3)),
                   tiny=1e-30 * (2 + np.cos(np.arange(n) / 3)))
    out = forecast_frame(model, frame, 4, levels=())
    assert np.isfinite(out.to_numpy()).all()
    assert np.allclose(out["flat"], 1e9, rtol=1e-6)
    assert (out["huge"].between(0.5e30, 4e30)).all(), out["huge"]
    assert (out["tiny"].between(0.5e-30, 4e-30)).all(), out["tiny"]


def test_plot_draws_the_bands(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.axes

    filled = []
    original = matplotlib.axes.Axes.fill_between
    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between",
                        lambda self, *a, **k: filled.append(k.get("label")) or original(self, *a, **k))
    model = NoisyForecaster(quantiles=(0.025, 0.1, 0.5, 0.9, 0.975))
    frame = hourly(60, a=daily_sine(60), b=daily_sine(60, 2))
    out = forecast_frame(model, frame, 6, levels=(80, 95))
    path = plot_forecast(frame, out, tmp_path / "f.png")
    assert path.read_bytes()[:4] == b"\x89PNG"
    assert filled == ["95% interval", "80% interval"] * 2
    with pytest.raises(ValueError, match=r"cannot plot \['a-lo-80'\]"):
        plot_forecast(frame, out, tmp_path / "g.png", columns=["a-lo-80"])


# ---- backtest ------------------------------------------------------------------------------

def test_backtest_windows_metrics_and_summary():
    model = NoisyForecaster(context_length=48)
    frame = hourly(200, OT=daily_sine(200))
    per_window, summary = backtest(model, frame, windows=3, horizon=24)
    # three windows of 24 ending at the last row, each forecast from all rows before it (<= 48)
    assert model.calls == [(3, 48, 1)]             # point and quantiles from one batched call
    assert list(per_window["cutoff"]) == list(frame.index[[127, 151, 175]])
    assert list(per_window.columns) == ["window", "cutoff", "column", "mase",
                                        "seasonal_naive_mase", "coverage_80"]
    assert summary.attrs == {"horizon": 24, "season": 24, "level": 80}
    row = summary.loc["OT"]
    assert row["windows"] == row["scored_windows"] == 3
    assert row["mase"] == pytest.approx(per_window["mase"].mean())
    assert row["ratio"] == pytest.approx(per_window["mase"].mean()
                                         / per_window["seasonal_naive_mase"].mean())
    # seasonal naive on a noisy daily sine: MASE near 1 by construction (its own in-sample error)
    assert 0.5 < row["seasonal_naive_mase"] < 2
    assert "coverage_80" not in backtest(model, frame, windows=1, horizon=24, level=None)[0]
    line = format_backtest(summary)
    assert line.startswith(f"OT: MASE {row['mase']:.2f} vs seasonal naive "
                           f"{row['seasonal_naive_mase']:.2f} (ratio {row['ratio']:.2f}), 80% "
                           f"interval covers {100 * row['coverage_80']:.0f}% (3 windows of 24)")


def test_backtest_by_hand_on_a_known_forecast():
    class Last(NoisyForecaster):
        """Forecasts the last value; quantiles last +- 1."""

        def forward(self, history, horizon=None):
            return history[:, -1:].expand(-1, self.check_horizon(horizon), -1)

        def forecast_quantiles(self, history, horizon=None):
            point = self(history, horizon)
            return torch.stack([point - 1, point, point + 1], -1)

    values = np.array([0, 2, 1, 2, 0, 2, 0, 2, 5, 2], dtype=float)
    frame = pd.DataFrame({"y": values})                              # row numbers: season 1
    per_window, summary = backtest(Last(), frame, windows=2, horizon=2, season=2)
    # window 0: past 0 2 1 2 0 2, seasonal error (|1-0| + 0 + |0-1| + 0) / 4 = 0.5; target 0 2
    #   last value 2: (2 + 0) / 2 = 1 -> MASE 2; seasonal naive 0 2: exact -> 0
    #   interval [1, 3]: 0 out, 2 in -> 0.5
    # window 1: past 0 2 1 2 0 2 0 2, seasonal error (1 + 0 + 1 + 0 + 0 + 0) / 6 = 1/3; target 5 2
    #   last value 2: (3 + 0) / 2 = 1.5 -> MASE 4.5; seasonal naive 0 2: 2.5 -> 7.5; 0.5 covered
    assert per_window["mase"].tolist() == pytest.approx([2.0, 4.5])
    assert per_window["seasonal_naive_mase"].tolist() == pytest.approx([0.0, 7.5])
    assert per_window["coverage_80"].tolist() == pytest.approx([0.5, 0.5])
    row = summary.loc["y"]
    assert (row["mase"], row["seasonal_naive_mase"]) == pytest.approx((3.25, 3.75))
    assert row["ratio"] == pytest.approx(3.25 / 3.75) and row["coverage_80"] == pytest.approx(0.5)
    assert backtest(Last(), frame, windows=1, horizon=2)[1].attrs["season"] == 1


def test_backtest_leaves_out_constant_histories_and_says_what_is_needed():
    model = NoisyForecaster(min_context=10)
    frame = hourly(40, flat=np.full(40, 3.0), y=daily_sine(40))
    per_window, summary = backtest(model, frame, windows=2, horizon=5, season=1)
    assert np.isnan(per_window.loc[per_window["column"] == "flat", "seasonal_naive_mase"]).all()
    assert summary.loc["flat", "scored_windows"] == 0 and math.isnan(summary.loc["flat", "mase"])
    assert "2 with a constant history left out" in format_backtest(summary)
    with pytest.raises(ValueError, match=r"a backtest of 7 window\(s\) of 5 steps needs 45 rows "
                                         r"\(10 of history before the first window \+ 7 x 5\); "
                                         r"the data has 40 \(at most 6 window\(s\) fit\)"):
        backtest(model, frame, windows=7, horizon=5)


# ---- long format ---------------------------------------------------------------------------

def long_table() -> pd.DataFrame:
    """Three series: different lengths and starts, rows shuffled."""
    parts = [pd.DataFrame({"unique_id": uid, "ds": pd.date_range(start, periods=n, freq="h"),
                           "y": daily_sine(n, seed)})
             for seed, (uid, start, n) in enumerate([("b", "2024-01-01", 60),
                                                      ("a", "2024-02-01", 30),
                                                      ("c", "2024-01-03", 60)])]
    return pd.concat(parts).sample(frac=1, random_state=0).reset_index(drop=True)


def test_forecast_long_batches_equal_lengths_and_names_columns_like_nixtla():
    model = NoisyForecaster(context_length=48)
    df = long_table()
    out = forecast_long(model, df, 4)
    assert sorted(model.calls) == [(1, 30, 1), (2, 48, 1)]   # b and c together, one call each
    assert list(out.columns) == ["unique_id", "ds", "zoo", "zoo-lo-80", "zoo-hi-80"]
    assert list(out["unique_id"]) == ["a"] * 4 + ["b"] * 4 + ["c"] * 4
    assert out["ds"].iloc[0] == pd.Timestamp("2024-02-02 06:00")           # after a's last row
    # each series alone gives the same forecast
    alone = forecast_frame(model, df[df.unique_id == "c"].set_index("ds")[["y"]].sort_index(), 4)
    assert np.allclose(out.loc[out.unique_id == "c", "zoo"], alone["y"])
    renamed = df.rename(columns={"unique_id": "store", "ds": "day", "y": "sales"})
    out = forecast_long(model, renamed, 2, id_col="store", time_col="day", target_col="sales",
                        alias="tfm", levels=())
    assert list(out.columns) == ["store", "day", "tfm"]


def test_forecast_long_errors_name_the_series():
    model = NoisyForecaster(min_context=40)
    df = long_table()
    with pytest.raises(ValueError, match=r"series 'a': the model needs 40 rows of history; the "
                                         r"data has 30.*on_error='skip'"):
        forecast_long(model, df, 3)
    out = forecast_long(model, df, 3, on_error="skip")
    assert sorted(set(out["unique_id"])) == ["b", "c"]
    dup = pd.concat([df, df[df.unique_id == "c"].iloc[:1]])
    with pytest.raises(ValueError, match=r"series 'c': 1 row\(s\) repeat a timestamp"):
        forecast_long(NoisyForecaster(), dup, 3)
    with pytest.raises(ValueError, match=r"no column\(s\) \['y'\]"):
        forecast_long(model, df.rename(columns={"y": "value"}), 3)


def test_gaps_in_a_long_series_are_missing_values():
    df = long_table()
    gappy = df.drop(df.index[(df.unique_id == "b") & (df.ds == "2024-01-02 10:00")])
    masking = NoisyForecaster(context_length=64)
    out = forecast_long(masking, gappy, 2)
    assert np.isfinite(out["zoo"]).all()
    assert sorted(masking.calls)[-1] == (2, 60, 1)                   # b is back on its grid
    patch = PatchTST(context_length=16, horizon=4, patch_len=4, stride=4, embed_dim=8,
                     num_heads=2, depth=1)
    gappy = df.drop(df.index[(df.unique_id == "b") & (df.ds == "2024-01-03 10:00")])
    with pytest.raises(ValueError, match="series 'b': column 'y' has a missing value at "
                                         "2024-01-03 10:00:00"):
        forecast_long(patch, gappy, 2)
    filled = forecast_long(patch, gappy, 2, missing="interpolate")
    assert list(filled.columns) == ["unique_id", "ds", "zoo"]          # no pretrained_cfg


def test_integer_timestamps_step_by_their_difference():
    df = pd.DataFrame({"unique_id": ["s"] * 30, "ds": np.arange(0, 300, 10), "y": daily_sine(30)})
    out = forecast_long(NoisyForecaster(), df, 3)
    assert out["ds"].tolist() == [300, 310, 320]


def test_backtest_long_is_a_cross_validation_table():
    model = NoisyForecaster(context_length=48)
    cv, summary = backtest_long(model, long_table(), windows=2, horizon=5, season=24)
    assert list(cv.columns) == ["unique_id", "ds", "cutoff", "y", "zoo", "zoo-lo-80",
                                "zoo-hi-80", "seasonal_naive"]
    assert len(cv) == 3 * 2 * 5
    a = cv[cv.unique_id == "a"]
    assert list(a["cutoff"].unique()) == [pd.Timestamp("2024-02-01 19:00"),
                                          pd.Timestamp("2024-02-02 00:00")]
    assert list(summary.index) == ["a", "b", "c"] and summary.index.name == "unique_id"
    assert (summary["windows"] == 2).all()
    assert format_backtest(summary).splitlines()[0].startswith("a: MASE ")
    with pytest.raises(ValueError, match=r"series 'a': a backtest of 5 window\(s\) of 6 steps "
                                         r"needs 32 rows"):
        backtest_long(model, long_table(), windows=5, horizon=6)


# ---- the CLI -------------------------------------------------------------------------------

@pytest.fixture
def stand_in(monkeypatch):
    """`zoo forecast stand-in ...` runs a NoisyForecaster."""
    model = NoisyForecaster(context_length=96, quantiles=(0.025, 0.1, 0.5, 0.9, 0.975))
    monkeypatch.setattr(cli, "_load_for_predict", lambda spec, pretrained: model)
    return model


def write_wide(path, n: int = 300):
    frame = hourly(n, OT=daily_sine(n), HUFL=daily_sine(n, 1))
    frame.to_csv(path)
    return frame


def test_cli_writes_bands_and_prints_the_backtest(tmp_path, capsys, stand_in):
    data = tmp_path / "ett.csv"
    write_wide(data)
    code = cli.main(["forecast", "stand-in", str(data), "--horizon", "12", "--levels", "80,95",
                     "--backtest", "3"])
    out = capsys.readouterr().out
    assert code == 0, out
    table = pd.read_csv(tmp_path / "ett_forecast.csv", parse_dates=["date"])
    assert list(table.columns) == ["date", "OT", "OT-lo-95", "OT-lo-80", "OT-hi-80", "OT-hi-95",
                                   "HUFL", "HUFL-lo-95", "HUFL-lo-80", "HUFL-hi-80", "HUFL-hi-95"]
    assert len(table) == 12 and (tmp_path / "ett_forecast.png").is_file()
    assert "backtest, the last 3 windows of 12 steps (season 24):" in out
    lines = [line for line in out.splitlines() if line.startswith(("OT:", "HUFL:"))]
    assert len(lines) == 2 and lines[0].endswith("(3 windows of 12)")
    assert "vs seasonal naive" in lines[0] and "80% interval covers" in lines[0]
    # never replaces a file, unless asked
    before = (tmp_path / "ett_forecast.csv").read_bytes()
    assert cli.main(["forecast", "stand-in", str(data), "--horizon", "6"]) == 2
    assert "ett_forecast.csv exists; zoo never writes over a file" in capsys.readouterr().err
    assert (tmp_path / "ett_forecast.csv").read_bytes() == before
    assert cli.main(["forecast", "stand-in", str(data), "--horizon", "6", "--overwrite"]) == 0
    assert len(pd.read_csv(tmp_path / "ett_forecast.csv")) == 6


def test_cli_reads_long_tables(tmp_path, capsys, stand_in):
    data = tmp_path / "stores.csv"
    long_table().to_csv(data, index=False)
    assert cli.main(["forecast", "stand-in", str(data), "--horizon", "4", "--backtest", "2",
                     "--season", "24", "--plot-columns", "c,a"]) == 0
    out = capsys.readouterr().out
    assert "has exactly the columns unique_id, ds, y: reading it as a long table" in out
    table = pd.read_csv(tmp_path / "stores_forecast.csv")
    assert list(table.columns) == ["unique_id", "ds", "zoo", "zoo-lo-80", "zoo-hi-80"]
    assert len(table) == 12 and (tmp_path / "stores_forecast.png").is_file()
    assert [line[:2] for line in out.splitlines() if "MASE" in line] == ["a:", "b:", "c:"]
    renamed = tmp_path / "sales.csv"
    long_table().rename(columns={"unique_id": "store", "ds": "day"}).assign(
        extra=1).to_csv(renamed, index=False)
    capsys.readouterr()
    assert cli.main(["forecast", "stand-in", str(renamed), "--long", "--id-column", "store",
                     "--time-column", "day", "--levels", "95", "--backtest", "1",
                     "--horizon", "8"]) == 0
    table = pd.read_csv(tmp_path / "sales_forecast.csv")
    assert list(table.columns) == ["store", "day", "zoo", "zoo-lo-95", "zoo-hi-95"]
    out = capsys.readouterr().out
    assert "reading it as a long table" not in out and "95% interval covers" in out


def test_cli_errors_name_the_flags(tmp_path, capsys, stand_in):
    data = tmp_path / "short.csv"
    write_wide(data, n=30)
    assert cli.main(["forecast", "stand-in", str(data), "--horizon", "12", "--backtest", "3"]) == 2
    assert "a backtest of 3 window(s) of 12 steps needs 38 rows" in capsys.readouterr().err
    assert cli.main(["forecast", "stand-in", str(data), "--levels", "80,fifty"]) == 2
    assert "--levels takes percentages separated by commas" in capsys.readouterr().err
    assert cli.main(["forecast", "stand-in", str(data), "--levels", "90"]) == 2
    assert "a 90% interval needs the 0.05 and 0.95 quantiles" in capsys.readouterr().err
    long = tmp_path / "long.csv"
    long_table().to_csv(long, index=False)
    assert cli.main(["forecast", "stand-in", str(long), "--columns", "y"]) == 2
    assert "--columns picks the columns of a wide table" in capsys.readouterr().err


def test_cli_with_the_bundled_point_forecaster(tmp_path, capsys):
    data = tmp_path / "etth.csv"
    n = 500
    frame = hourly(n, **{c: daily_sine(n, i) for i, c in enumerate(
        ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"))})
    frame.to_csv(data)
    code = cli.main(["forecast", "patchtst_tiny_l336.etth1_h96", str(data), "--columns", "OT,HUFL",
                     "--plot-columns", "OT", "--horizon", "24", "--backtest", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    table = pd.read_csv(tmp_path / "etth_forecast.csv")
    assert list(table.columns) == ["date", "OT", "HUFL"] and len(table) == 24
    (line,) = [line for line in out.splitlines() if line.startswith("OT:")]
    assert "interval" not in line and line.endswith("(2 windows of 24)")
    assert cli.main(["forecast", "patchtst_tiny_l336.etth1_h96", str(data), "--levels", "80",
                     "--output", str(tmp_path / "b.csv")]) == 2
    assert "point forecasts only" in capsys.readouterr().err


def test_cli_with_a_tiny_timesfm(tmp_path, capsys, monkeypatch):
    import zoo

    if "timesfm_2p5" not in zoo.list_models("timesfm*"):
        pytest.skip("TimesFM is not registered")
    model = zoo.create_model("timesfm_2p5", context_length=64, patch_len=8, horizon=16,
                             embed_dim=16, depth=1, num_heads=2, head_dim=8, mlp_hidden=16,
                             quantile_horizon=0)
    monkeypatch.setattr(cli, "_load_for_predict", lambda spec, pretrained: model)
    data = tmp_path / "s.csv"
    frame = write_wide(data, n=120)
    frame.iloc[100:103, 0] = np.nan                      # masked, not refused
    frame.to_csv(data)
    assert cli.main(["forecast", "timesfm", str(data), "--horizon", "40", "--missing", "error",
                     "--backtest", "2"]) == 2           # read_series refuses NaN by default
    assert "--missing keep" in capsys.readouterr().err
    assert cli.main(["forecast", "timesfm", str(data), "--missing", "keep",
                     "--output", str(tmp_path / "kept.csv")]) == 0
    kept = pd.read_csv(tmp_path / "kept.csv")
    assert len(kept) == 48 and np.isfinite(kept.drop(columns="date").to_numpy()).all()  # hourly: 48
    out = forecast_frame(model, frame, 40, levels=(80, 60))
    assert list(out.columns)[:5] == ["OT", "OT-lo-80", "OT-lo-60", "OT-hi-60", "OT-hi-80"]
    assert np.isfinite(out.to_numpy()).all() and len(out) == 40
    _, summary = backtest(model, frame, windows=2, horizon=20)
    assert (summary["windows"] == 2).all()


def test_default_horizon_follows_the_frequency_for_any_horizon_models():
    import zoo
    from zoo.forecasting import check_horizon
    from zoo.metrics import default_horizon

    assert [default_horizon(f) for f in ("h", "D", "W-SUN", "MS", "QS", "YS", "15min", "2h")] \
        == [48, 14, 13, 18, 8, 6, None, None]
    decoder = zoo.create_model("timesfm_2p5", context_length=64, patch_len=8, horizon=16,
                               embed_dim=16, depth=1, num_heads=2, head_dim=8, mlp_hidden=16,
                               quantile_horizon=0)
    weekly = pd.date_range("2024-01-07", periods=100, freq="W-SUN")
    assert check_horizon(decoder, None, weekly) == 13
    assert check_horizon(decoder, None, pd.RangeIndex(100)) == 16     # no frequency: its own
    assert check_horizon(decoder, 200, weekly) == 200
    point = zoo.create_model("patchtst_tiny_l336", horizon=24)
    assert check_horizon(point, None, weekly) == 24                    # a fixed horizon stays


def test_finetune_gives_an_any_horizon_model_the_datas_horizon(tmp_path):
    data = tmp_path / "d.csv"
    data.write_text("date,y\n2024-01-01,1\n")
    args = cli.build_parser().parse_args(["finetune", "timesfm_2p5_tiny", "--data", str(data),
                                          "--horizon", "14"])
    out = cli.finetune_arguments(args)
    assert "--data.horizon=14" in out and "--data.lookback=512" in out
    assert not any(a.startswith("--model.model_kwargs.horizon") for a in out)
    args = cli.build_parser().parse_args(["finetune", "patchtst_tiny_l336", "--data", str(data),
                                          "--horizon", "14"])
    assert "--model.model_kwargs.horizon=14" in cli.finetune_arguments(args)

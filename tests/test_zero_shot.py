"""Zero-shot evaluation: the real-series registry (zoo.data.benchmark_series), the evaluation
(seasonal naive scores exactly 1, an oracle 0, no window sees its future) and
benchmarks/zero_shot.py (table, JSON, the model card's section written once)."""

from __future__ import annotations

import importlib.util
import json
import logging
import math
import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

import zoo
from zoo.data import data_root
from zoo.data.benchmark_series import (
    Baseline,
    BenchmarkSeries,
    SeriesScore,
    ZeroShotResult,
    benchmark_series,
    evaluate_zero_shot,
    geometric_mean,
    list_benchmark_series,
    window_starts,
)
from zoo.metrics import season_length

STATSMODELS_GROUPS = ["co2", "macrodata", "elnino", "sunspots", "nile", "interest_inflation",
                      "danish"]
# name -> (length, first timestamp, last timestamp), as the module's table documents
STATSMODELS_SERIES = {
    "co2": (2284, "1958-03-29", "2001-12-29"),
    **{f"macrodata_{c}": (203, "1959-01-01", "2009-07-01") for c in (
        "realgdp", "realcons", "realinv", "realgovt", "realdpi", "cpi", "m1", "tbilrate", "unemp",
        "pop")},
    "macrodata_infl": (202, "1959-04-01", "2009-07-01"),
    "macrodata_realint": (202, "1959-04-01", "2009-07-01"),
    "elnino": (732, "1950-01-01", "2010-12-01"),
    "sunspots": (309, "1700-01-01", "2008-01-01"),
    "nile": (100, "1871-01-01", "1970-01-01"),
    "interest_inflation_Dp": (107, "1972-04-01", "1998-10-01"),
    "interest_inflation_R": (107, "1972-04-01", "1998-10-01"),
    **{f"danish_{c}": (55, "1974-01-01", "1987-07-01")
       for c in ("lrm", "lry", "lpy", "ibo", "ide")},
}
HORIZONS = {"h": 24, "W-SAT": 13, "MS": 12, "QS": 8, "YS": 6}    # per frequency, as documented
WINDOWS = {"co2": 35, "elnino": 12, "sunspots": 10, "nile": 3, "interest_inflation": 2,
           "danish": 1, "macrodata": 5, "etth1": 120}             # the last 20% of each series
ETTH1_CSV = data_root() / "ett" / "ETTh1.csv"


def synthetic(values: np.ndarray, *, season: int = 12, horizon: int = 12, freq: str = "MS",
              name: str = "synthetic", windows: int = 0) -> BenchmarkSeries:
    return BenchmarkSeries(name=name, source="test", freq=freq, season=season, horizon=horizon,
                           values=values, license="-", citation="-", windows=windows)


def seasonal_series(n: int = 240, seed: int = 0) -> np.ndarray:
    """A strong monthly season (amplitude 10) on a slow trend, with noise of std 0.5."""
    t = np.arange(n)
    noise = np.random.default_rng(seed).normal(0, 0.5, n)
    return 50 + 0.05 * t + 10 * np.sin(2 * np.pi * t / 12) + noise


@pytest.fixture(scope="module")
def statsmodels_series() -> list[BenchmarkSeries]:
    pytest.importorskip("statsmodels")
    return benchmark_series(STATSMODELS_GROUPS)


# --- the registry ------------------------------------------------------------------------------

def test_registry_names_are_the_documented_ones() -> None:
    etth1 = [f"etth1_{c}" for c in ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")]
    assert list_benchmark_series() == etth1 + list(STATSMODELS_SERIES)


def test_statsmodels_series(statsmodels_series: list[BenchmarkSeries]) -> None:
    assert [s.name for s in statsmodels_series] == list(STATSMODELS_SERIES)
    for s in statsmodels_series:
        length, first, last = STATSMODELS_SERIES[s.name]
        assert len(s) == len(s.values) == len(s.timestamps) == length, s.name
        assert s.values.dtype == np.float64 and s.values.ndim == 1
        assert not np.isnan(s.values).any(), s.name
        assert (s.timestamps[0], s.timestamps[-1]) == (pd.Timestamp(first), pd.Timestamp(last))
        assert s.timestamps.equals(pd.date_range(first, periods=length, freq=s.freq)), s.name
        assert s.season == season_length(s.freq), s.name
        assert s.horizon == HORIZONS[s.freq], s.name
        assert s.windows == next(w for g, w in WINDOWS.items()
                                 if s.name == g or s.name.startswith(g + "_")), s.name
        # every window's history keeps at least 80% of the series, and two seasons
        history = len(s) - s.windows * s.horizon
        assert history >= 0.8 * len(s) and history >= 2 * s.season, s.name
        assert s.license and s.citation and s.source.startswith("statsmodels.datasets.")


def test_co2_gaps_are_interpolated_linearly(statsmodels_series: list[BenchmarkSeries]) -> None:
    import statsmodels.api as sm
    raw = sm.datasets.co2.load_pandas().data["co2"].to_numpy()
    co2 = next(s for s in statsmodels_series if s.name == "co2")
    assert np.isnan(raw).sum() == 59 and np.isnan(raw[-len(raw) // 5:]).sum() == 0
    observed = ~np.isnan(raw)
    np.testing.assert_array_equal(co2.values[observed], raw[observed])
    # row 6 is a single missing week between two observed ones; rows 9-13 a run of five
    assert co2.values[6] == pytest.approx((raw[5] + raw[7]) / 2)
    np.testing.assert_allclose(co2.values[9:14], raw[8] + (raw[14] - raw[8]) * np.arange(1, 6) / 6)
    assert "interpolated" in co2.notes


def test_elnino_is_read_year_by_year(statsmodels_series: list[BenchmarkSeries]) -> None:
    import statsmodels.api as sm
    table = sm.datasets.elnino.load_pandas().data
    elnino = next(s for s in statsmodels_series if s.name == "elnino")
    assert elnino.values[12 * 3 + 4] == table.loc[3, "MAY"]                # 1953-05
    assert elnino.timestamps[12 * 3 + 4] == pd.Timestamp("1953-05-01")


@pytest.mark.skipif(not ETTH1_CSV.is_file(), reason="no ETTh1 under $ZOO_DATA")
def test_etth1_channels() -> None:
    series = benchmark_series(["etth1"])
    csv = pd.read_csv(ETTH1_CSV)
    assert [s.name for s in series] == [f"etth1_{c}" for c in csv.columns[1:]]
    for s in series:
        assert (len(s), s.freq, s.season, s.horizon, s.windows) == (14400, "h", 24, 24, 120)
        np.testing.assert_array_equal(s.values, csv[s.name[len("etth1_"):]].to_numpy()[:14400])
        assert s.timestamps[0] == pd.Timestamp("2016-07-01 00:00")
        assert s.timestamps[-1] == pd.Timestamp("2016-07-01") + pd.Timedelta(hours=14399)
        assert s.license == "CC BY-ND 4.0"


def test_missing_data_raise_or_are_skipped(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                           caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(FileNotFoundError, match="ETTh1"):
        benchmark_series(["etth1_OT"], root=tmp_path)
    monkeypatch.setitem(sys.modules, "statsmodels.datasets.nile", None)   # import fails
    with pytest.raises(ImportError, match="pip install statsmodels"):
        benchmark_series(["nile"])
    with caplog.at_level(logging.WARNING, logger="zoo.data.benchmark_series"):
        assert benchmark_series(["etth1_OT", "nile"], root=tmp_path, skip_missing=True) == []
    assert "etth1_OT" in caplog.text and "nile" in caplog.text


def test_unknown_names_suggest_close_ones() -> None:
    with pytest.raises(ValueError, match="did you mean 'sunspots'"):
        benchmark_series(["sunspot"])


def test_series_record_is_checked() -> None:
    with pytest.raises(ValueError, match="finite"):
        synthetic(np.array([1.0, np.nan, 3.0]))
    with pytest.raises(ValueError, match="horizon"):
        synthetic(np.ones(50), horizon=0)
    s = synthetic(np.arange(100.0))
    assert s.windows == 1 and not s.values.flags.writeable                 # floor(20 / 12) = 1


def test_window_starts() -> None:
    assert window_starts(100, 6, 3) == [82, 88, 94]                        # the last ends at 99
    with pytest.raises(ValueError, match="no history"):
        window_starts(12, 6, 2)


# --- the evaluation ----------------------------------------------------------------------------

def test_seasonal_naive_scores_exactly_one(statsmodels_series: list[BenchmarkSeries]) -> None:
    series = [*statsmodels_series, synthetic(seasonal_series())]
    result = evaluate_zero_shot(Baseline("seasonal_naive"), series)
    assert [s.ratio for s in result.scores] == [1.0] * len(series)
    assert result.geomean_ratio == 1.0 and result.mean("ratio") == 1.0
    assert not result.skipped

    def by_hand(history: torch.Tensor, horizon: int) -> torch.Tensor:   # season 12, H = 12
        return history[:, -12:]
    result = evaluate_zero_shot(by_hand, [synthetic(seasonal_series())])
    assert result.scores[0].ratio == 1.0


def test_naive_loses_to_seasonal_naive_on_a_strong_season(
        statsmodels_series: list[BenchmarkSeries]) -> None:
    elnino = next(s for s in statsmodels_series if s.name == "elnino")
    result = evaluate_zero_shot(Baseline("naive"), [synthetic(seasonal_series()), elnino])
    assert all(s.ratio > 1.5 for s in result.scores), result.scores
    assert result.geomean_ratio > 1.5


def test_a_perfect_oracle_scores_zero() -> None:
    values = seasonal_series()

    def oracle(history: torch.Tensor, horizon: int) -> torch.Tensor:
        start = history.shape[1]                                         # no context_length
        future = torch.tensor(values[start:start + horizon])
        return future.view(1, -1, 1).expand(history.shape[0], -1, -1)
    result = evaluate_zero_shot(oracle, [synthetic(values)], windows=4)
    (score,) = result.scores
    assert (score.mase, score.ratio, result.geomean_ratio) == (0.0, 0.0, 0.0)
    assert score.mase_naive > 0 and score.windows == 4


def test_geometric_mean_by_hand() -> None:
    assert geometric_mean([0.5, 2.0]) == 1.0
    assert geometric_mean([1.0, 4.0]) == pytest.approx(2.0)
    assert geometric_mean([2.0, 8.0, 4.0]) == pytest.approx(4.0)
    assert geometric_mean([0.0, 3.0]) == 0.0
    with pytest.raises(ValueError):
        geometric_mean([-1.0, 1.0])
    scores = tuple(SeriesScore(name=str(r), freq="MS", season=12, horizon=12, history=100,
                               windows=1, mase=r, mase_naive=1.0, ratio=r)
                   for r in (0.5, 0.8, 1.25, 2.0))
    result = ZeroShotResult(scores, {}, 0.0)
    assert result.geomean_ratio == pytest.approx(1.0)
    assert result.mean("ratio") == pytest.approx((0.5 + 0.8 + 1.25 + 2.0) / 4)
    assert result.to_dict()["geomean_ratio"] == result.geomean_ratio


class Spy:
    """Records every history it is given; forecasts the last value."""

    def __init__(self, context_length: int | None = None) -> None:
        self.histories: list[torch.Tensor] = []
        if context_length is not None:
            self.context_length = context_length

    def __call__(self, history: torch.Tensor, horizon: int) -> torch.Tensor:
        self.histories.append(history.clone())
        return history[:, -1:].expand(-1, horizon, -1)


@pytest.mark.parametrize("context_length", [None, 16])
def test_windows_never_see_their_future(context_length: int | None) -> None:
    # values are their own row numbers, so a history shows exactly which rows it holds
    series = [synthetic(np.arange(120.0), name="a", horizon=6, windows=5),
              synthetic(np.arange(90.0), name="b", horizon=12, windows=2)]
    spy = Spy(context_length)
    evaluate_zero_shot(spy, series)
    seen: dict[int, list[int]] = {}
    for history in spy.histories:
        for row in history[..., 0]:
            end = int(row[-1]) + 1                                       # the window starts here
            expected = np.arange(end - row.shape[0], end)
            np.testing.assert_array_equal(row.numpy(), expected)         # rows [end - L, end)
            if context_length is None:
                assert row.shape[0] == end                               # every row before it
            else:
                assert row.shape[0] == context_length
            seen.setdefault(history.shape[0], []).append(end)
    ends = sorted(e for es in seen.values() for e in es)
    assert ends == sorted([*window_starts(120, 6, 5), *window_starts(90, 12, 2)])
    if context_length is not None:                                      # one batch: same length
        assert len(spy.histories) == 2                                   # (per horizon)


def test_min_context_and_max_horizon_leave_series_out() -> None:
    short, long = synthetic(seasonal_series(60), name="short"), synthetic(seasonal_series(400))
    spy = Spy()
    spy.min_context, spy.max_horizon = 100, None
    result = evaluate_zero_shot(spy, [short, long])
    assert [s.name for s in result.scores] == ["synthetic"]
    assert "min_context 100" in result.skipped["short"]
    spy.max_horizon = 6
    result = evaluate_zero_shot(spy, [long])
    assert not result.scores and "max_horizon 6" in result.skipped["synthetic"]
    assert math.isnan(result.geomean_ratio)


def test_too_many_windows_are_cut(caplog: pytest.LogCaptureFixture) -> None:
    series = synthetic(seasonal_series(60))                             # 60 - 24 = 36: 3 windows
    with caplog.at_level(logging.WARNING, logger="zoo.data.benchmark_series"):
        result = evaluate_zero_shot(Baseline("naive"), [series], windows=10)
    assert result.scores[0].windows == 3 and "two seasons" in caplog.text
    with pytest.raises(ValueError, match="windows"):
        evaluate_zero_shot(Baseline("naive"), [series], windows=0)


class QuantileOracle:
    """The truth as the median, and truth -+ 1 as the 10% and 90% quantiles."""

    quantiles = (0.1, 0.5, 0.9)

    def __init__(self, values: np.ndarray) -> None:
        self.values = values

    def _truth(self, history: torch.Tensor, horizon: int) -> torch.Tensor:
        start = history.shape[1]
        return torch.tensor(self.values[start:start + horizon]).view(1, -1, 1)

    def __call__(self, history: torch.Tensor, horizon: int) -> torch.Tensor:
        return self._truth(history, horizon)

    def forecast_quantiles(self, history: torch.Tensor, horizon: int) -> torch.Tensor:
        y = self._truth(history, horizon)
        return torch.stack([y - 1, y, y + 1], dim=-1)                    # (1, H, 1, 3)


def test_quantile_scores_by_hand() -> None:
    values = seasonal_series()
    result = evaluate_zero_shot(QuantileOracle(values), [synthetic(values)], windows=2)
    (score,) = result.scores
    target = values[-24:]
    # quantile loss 2 * |(yhat - y)(1{y <= yhat} - q)|: 0.1 and 0.9 each cost 2 * 0.1 a point
    expected = (0.2 * 24 + 0.0 + 0.2 * 24) / 3 / np.abs(target).sum()
    assert score.wql == pytest.approx(expected)
    assert score.coverage == 1.0
    assert score.wql_naive is not None and score.wql_naive > score.wql
    assert result.to_dict()["geomean_wql_ratio"] == pytest.approx(score.wql / score.wql_naive)


def test_a_zoo_forecaster_is_scored_in_eval_mode() -> None:
    torch.manual_seed(0)
    model = zoo.create_model("patchtst", context_length=48, horizon=12, embed_dim=16, depth=1,
                             num_heads=2)
    model.train()
    series = [synthetic(seasonal_series(240)), synthetic(seasonal_series(50), name="short")]
    result = evaluate_zero_shot(model, series)
    assert model.training                                                # restored afterwards
    (score,) = result.scores
    assert math.isfinite(score.mase) and score.windows == 4
    assert "min_context 48" in result.skipped["short"]


# --- benchmarks/zero_shot.py -------------------------------------------------------------------

@pytest.fixture(scope="module")
def cli():
    path = Path(__file__).resolve().parent.parent / "benchmarks" / "zero_shot.py"
    spec = importlib.util.spec_from_file_location("zero_shot_benchmark", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_cli_baseline_table_and_json(cli, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    pytest.importorskip("statsmodels")
    out = tmp_path / "result.json"
    assert cli.main(["--baseline", "seasonal_naive", "--series", "nile,danish",
                     "--json", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "| nile | YS | 82 | 6 | 3 |" in printed and "danish_ide" in printed
    assert "over 6 series: 1.000" in printed
    result = json.loads(out.read_text())
    assert result["geomean_ratio"] == 1.0 and len(result["series"]) == 6


def test_card_section_is_rewritten_not_appended(cli, tmp_path: Path) -> None:
    pytest.importorskip("statsmodels")
    card = tmp_path / "card.md"
    card.write_text("# model\n\n## Metrics\n\nnumbers\n\n## Reproduce\n\n```bash\nzoo train\n```\n")
    for baseline in ("naive", "seasonal_naive"):
        cli.main(["--baseline", baseline, "--series", "nile", "--card", str(card)])
    text = card.read_text()
    assert text.count(cli.CARD_HEADING) == 1 and text.count(cli.CARD_BEGIN) == 1
    assert text.index("## Metrics") < text.index(cli.CARD_HEADING) < text.index("## Reproduce")
    assert "python benchmarks/zero_shot.py --baseline seasonal_naive --series nile\n" in text
    assert "--card" not in text and "\n\n\n" not in text

    # an unmarked hand-written section is replaced; a card without "## Reproduce" gets it last
    plain = tmp_path / "plain.md"
    plain.write_text("# model\n\n## Zero-shot evaluation\n\nold\n\n## Notes\n\nkept\n")
    cli.write_card_section(plain, cli.CARD_HEADING + "\n\nnew")
    cli.write_card_section(plain, cli.CARD_HEADING + "\n\nnewer")
    text = plain.read_text()
    assert "old" not in text and "new\n" not in text and "newer" in text and "kept" in text
    assert text.count(cli.CARD_HEADING) == 1 and text.index("newer") < text.index("## Notes")
    bare = tmp_path / "bare.md"
    bare.write_text("# model\n")
    cli.write_card_section(bare, cli.CARD_HEADING + "\n\nx")
    assert bare.read_text().endswith(f"{cli.CARD_BEGIN}\n{cli.CARD_HEADING}\n\nx\n{cli.CARD_END}\n")


@pytest.mark.slow
def test_bundled_forecaster_card_matches_a_fresh_zero_shot_evaluation(cli):
    """model_cards/timesfm_2p5_tiny.synthetic.md's zero-shot section is what
    benchmarks/zero_shot.py gives today on the bundled weights, and meets the 0.85 target."""
    data = os.environ.get("ZOO_DATA")
    if not data or not (Path(data) / "ett" / "ETTh1.csv").is_file():
        pytest.skip("needs $ZOO_DATA with ett/ETTh1.csv")
    pytest.importorskip("statsmodels")
    model = zoo.create_model("timesfm_2p5_tiny.synthetic", pretrained=True)
    result = evaluate_zero_shot(model, benchmark_series())
    section = cli.card_section(result, "python benchmarks/zero_shot.py timesfm_2p5_tiny.synthetic")
    card = Path("model_cards/timesfm_2p5_tiny.synthetic.md").read_text()
    assert section in card
    assert result.geomean_ratio <= 0.85 and len(result.scores) == 30
    assert f"**{result.geomean_ratio:.3f}**" in Path("README.md").read_text()


def test_readme_zero_shot_example_runs():
    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    body = text.split("### Zero-shot forecasting", 1)[1].split("\n### ", 1)[0]
    blocks = [b.split("```", 1)[0] for b in body.split("```python\n")[1:]]
    assert len(blocks) == 1
    scope: dict = {}
    exec(blocks[0], scope)
    assert scope["forecast"].shape == (1, 13, 1) and scope["bands"].shape == (1, 13, 1, 9)
    assert scope["short"].shape == (1, 200, 1)
    # the forecast continues the series' trend and season (not a flat line)
    assert scope["forecast"].std() > 0.5

"""zoo.metrics against values worked out by hand (GluonTS's definitions, see the module)."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from zoo.metrics import (
    GLUONTS_SEASON_LENGTHS,
    coverage,
    interval_indices,
    interval_quantiles,
    mase,
    pinball_loss,
    quantile_columns,
    quantile_levels,
    quantile_loss,
    season_length,
    seasonal_error,
    seasonal_naive,
    weighted_quantile_loss,
)

NAN = float("nan")


def series(*values: float) -> torch.Tensor:
    """One series, one channel: (1, L, 1)."""
    return torch.tensor(values, dtype=torch.float64).view(1, -1, 1)


def test_seasonal_naive_repeats_the_last_season():
    history = series(1, 2, 3, 4, 5, 6)
    assert seasonal_naive(history, 5, 3).flatten().tolist() == [4, 5, 6, 4, 5]
    assert seasonal_naive(history, 2, 1).flatten().tolist() == [6, 6]
    assert seasonal_naive(history, 3, 6).flatten().tolist() == [1, 2, 3]
    # a season longer than the history: the naive forecast (last value)
    assert seasonal_naive(history, 3, 7).flatten().tolist() == [6, 6, 6]


def test_seasonal_naive_keeps_batch_and_channels_apart():
    history = torch.tensor([[[1.0, 10.0], [2.0, 20.0]], [[3.0, 30.0], [4.0, 40.0]]])  # (2, 2, 2)
    out = seasonal_naive(history, 3, 2)
    assert out.shape == (2, 3, 2) and out.dtype == torch.float32
    assert out[0].tolist() == [[1, 10], [2, 20], [1, 10]]
    assert out[1].tolist() == [[3, 30], [4, 40], [3, 30]]


def test_seasonal_naive_skips_missing_values():
    # phase of step 1 is the NaN at row 4: the same phase a season earlier (row 1, value 2)
    assert seasonal_naive(series(1, 2, 3, 4, NAN, 6), 4, 3).flatten().tolist() == [4, 2, 6, 4]
    # no value at that phase at all: the last observed value (5)
    assert seasonal_naive(series(1, NAN, 3, 4, NAN, 5), 2, 3).flatten().tolist() == [4, 5]
    # naive with a trailing NaN: the last observed value
    assert seasonal_naive(series(1, 2, NAN), 2, 1).flatten().tolist() == [2, 2]
    with pytest.raises(ValueError, match="series 0, channel 0 holds no observed value"):
        seasonal_naive(series(NAN, NAN), 2, 1)


@pytest.mark.parametrize("bad", [0, -1, 1.5, True])
def test_seasonal_naive_rejects_bad_arguments(bad):
    with pytest.raises(ValueError, match="must be an int >= 1"):
        seasonal_naive(series(1, 2), 2, bad)
    with pytest.raises(ValueError, match=r"history must have shape \(B, L, C\)"):
        seasonal_naive(torch.ones(4), 2, 1)


def test_seasonal_error_follows_gluonts():
    history = series(1, 3, 2, 6)
    # season 1: |3-1|, |2-3|, |6-2| -> (2 + 1 + 4) / 3
    assert seasonal_error(history, 1).item() == pytest.approx(7 / 3)
    # season 2: |2-1|, |6-3| -> 2
    assert seasonal_error(history, 2).item() == pytest.approx(2.0)
    # season >= L falls back to 1 (GluonTS)
    assert seasonal_error(history, 4).item() == pytest.approx(7 / 3)
    assert seasonal_error(history, 9).item() == pytest.approx(7 / 3)
    # pairs with a NaN are left out: |3-1| and |10-6| remain
    assert seasonal_error(series(1, 3, NAN, 6, 10), 1).item() == pytest.approx(3.0)
    # no pair at all
    assert math.isnan(seasonal_error(series(5), 1).item())
    assert seasonal_error(torch.ones(3, 8, 2), 4).shape == (3, 2)


def test_mase_by_hand():
    history = series(1, 3, 2, 6)                    # seasonal error (season 2) = 2
    target, forecast = series(4, 8), series(5, 5)   # |4-5| + |8-5| = 4, mean 2
    assert mase(forecast, target, history, 2).item() == pytest.approx(1.0)
    assert mase(forecast, target, history, 1).item() == pytest.approx(2 / (7 / 3))
    # a NaN target is masked: only |4-5| = 1 counts
    assert mase(forecast, series(4, NAN), history, 2).item() == pytest.approx(0.5)


def test_mase_on_a_constant_history_is_inf_or_nan_as_gluonts():
    flat = series(3, 3, 3, 3)
    assert mase(series(3, 4), series(3, 3), flat, 1).item() == math.inf
    assert math.isnan(mase(series(3, 3), series(3, 3), flat, 1).item())


def test_mase_checks_shapes():
    with pytest.raises(ValueError, match="shapes differ"):
        mase(series(1, 2), series(1, 2, 3), series(1, 2, 3), 1)
    with pytest.raises(ValueError, match="target's B and C"):
        mase(series(1, 2), series(1, 2), torch.ones(2, 5, 1), 1)


def test_quantile_losses_by_hand():
    target = series(10, 20)                                      # (1, 2, 1)
    qf = torch.tensor([[8.0, 12.0], [21.0, 25.0]], dtype=torch.float64).view(1, 2, 1, 2)
    qs = (0.1, 0.9)
    # q=0.1: y=10, yhat=8 (under): |(8-10)(0-0.1)| = 0.2; y=20, yhat=21 (over): |1 * 0.9| = 0.9
    # q=0.9: y=10, yhat=12 (over): |2 * 0.1| = 0.2; y=20, yhat=25 (over): |5 * 0.1| = 0.5
    losses = quantile_loss(qf, target, qs)
    assert losses.tolist() == pytest.approx([2 * 1.1, 2 * 0.7])
    # weighted by sum |y| = 30, mean over the two levels
    assert weighted_quantile_loss(qf, target, qs).item() == pytest.approx((2.2 + 1.4) / 2 / 30)
    # pinball is half of each term above: max(q (y - yhat), (q - 1) (y - yhat))
    pin = pinball_loss(qf, target, qs)
    assert pin.shape == (1, 2, 1, 2)
    assert pin.flatten().tolist() == pytest.approx([0.2, 0.2, 0.9, 0.5])
    # a NaN target adds nothing
    losses = quantile_loss(qf, series(10, NAN), qs)
    assert losses.tolist() == pytest.approx([0.4, 0.4])


def test_quantile_loss_checks_quantiles():
    qf = torch.zeros(1, 2, 1, 2)
    with pytest.raises(ValueError, match="3 quantiles for 2 forecasts"):
        quantile_loss(qf, torch.zeros(1, 2, 1), (0.1, 0.5, 0.9))
    with pytest.raises(ValueError, match=r"quantiles must lie in \(0, 1\)"):
        quantile_loss(qf, torch.zeros(1, 2, 1), (0.0, 1.0))
    with pytest.raises(ValueError, match="plus the quantile axis"):
        quantile_loss(qf, torch.zeros(1, 3, 1), (0.1, 0.9))


def test_coverage_counts_observed_targets_inside():
    lower, upper = series(0, 0, 0, 0), series(1, 1, 1, 1)
    assert coverage(lower, upper, series(0.5, 1, 2, -1)).item() == pytest.approx(0.5)
    assert coverage(lower, upper, series(0.5, NAN, 2, NAN)).item() == pytest.approx(0.5)
    two = torch.tensor([[[0.5, 3.0], [0.2, 0.4]]])                      # (1, 2, 2)
    per_channel = coverage(torch.zeros(1, 2, 2), torch.ones(1, 2, 2), two, dim=1)
    assert per_channel.tolist() == [[1.0, 0.5]]


@pytest.mark.parametrize("freq, expected", [
    ("h", 24), ("2h", 12), ("15min", 96), ("min", 1440), ("D", 7), ("B", 5), ("W", 52),
    ("W-MON", 52), ("MS", 12), ("ME", 12), ("QS", 4), ("QE-DEC", 4), ("YS", 1), ("s", 3600),
    ("7min", 1), ("ms", 1)])
def test_season_length(freq, expected):
    assert season_length(freq) == expected


def test_season_length_accepts_offsets_and_gluonts_table():
    assert season_length(pd.tseries.frequencies.to_offset("30min")) == 48
    assert season_length("D", table=GLUONTS_SEASON_LENGTHS) == 1
    assert season_length("h", table=GLUONTS_SEASON_LENGTHS) == 24
    with pytest.raises(ValueError, match="not a pandas frequency"):
        season_length("fortnightly")


def test_interval_names_follow_neuralforecast():
    assert interval_quantiles(80) == (0.1, 0.9)
    assert interval_quantiles(95) == (0.025, 0.975)
    assert quantile_levels((0.1, 0.5, 0.9)) == (80,)
    assert quantile_levels((0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)) == (20, 40, 60, 80)
    assert quantile_levels((0.5, 0.9)) == ()
    assert quantile_columns("y", [95, 80]) == ["y-lo-95", "y-lo-80", "y-hi-80", "y-hi-95"]
    assert quantile_columns("OT", [99.5]) == ["OT-lo-99.5", "OT-hi-99.5"]
    assert interval_indices((0.1, 0.5, 0.9), 80) == (0, 2)
    with pytest.raises(ValueError, match=r"needs the 0.025 and 0.975 quantiles.*bound levels 80"):
        interval_indices((0.1, 0.5, 0.9), 95)
    with pytest.raises(ValueError, match=r"percentage in \(0, 100\)"):
        interval_quantiles(100)

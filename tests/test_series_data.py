"""Time-series data: ETTh1 (real copy under $ZOO_DATA, and an offline fake download), reading a
user's CSV / DataFrame, chronological splits and sliding windows."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import torch

from zoo import hub
from zoo.data import series
from zoo.data.series import (
    SeriesDataError,
    SeriesWindows,
    StandardScaler,
    chronological_split,
    read_series,
)

pytestmark = pytest.mark.usefixtures("one_thread")


def _frame(n: int = 10, start: str = "2024-01-01", freq: str = "h", **columns) -> pd.DataFrame:
    data = columns or {"a": np.arange(n, dtype=float), "b": np.arange(n, dtype=float) ** 2}
    return pd.DataFrame({"date": pd.date_range(start, periods=n, freq=freq), **data})


# --- ETTh1 --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def etth1():
    try:
        path = series.etth1_path()
    except FileNotFoundError as err:
        pytest.skip(f"ETTh1 not found under $ZOO_DATA: {err}")
    return path, series.etth1_splits(336)


def test_etth1_split_sizes_and_train_only_scaler(etth1):
    path, splits = etth1
    assert splits.columns == series.ETTH1_COLUMNS
    assert splits.borders == {"train": (0, 8640), "val": (8304, 11520), "test": (11184, 14400)}
    lengths = {k: len(SeriesWindows(getattr(splits, k), 336, 96, name=k)) for k in splits.borders}
    assert lengths == {"train": 8209, "val": 2785, "test": 2785}
    assert splits.train.dtype == torch.float32 and len(splits.timestamps) == 17420
    train = pd.read_csv(path).iloc[:8640][list(series.ETTH1_COLUMNS)]
    torch.testing.assert_close(splits.scaler.mean, torch.tensor(train.mean().to_numpy()))
    torch.testing.assert_close(splits.scaler.std, torch.tensor(train.std(ddof=0).to_numpy()))


def test_etth1_first_test_window(etth1):
    path, splits = etth1
    raw = pd.read_csv(path)[list(series.ETTH1_COLUMNS)]
    scaled = torch.tensor(((raw - raw.iloc[:8640].mean()) / raw.iloc[:8640].std(ddof=0)).to_numpy())
    x, y = SeriesWindows(splits.test, 336, 96)[0]
    torch.testing.assert_close(x, scaled[11520 - 336:11520].float())
    torch.testing.assert_close(y, scaled[11520:11520 + 96].float())
    assert splits.timestamps[11520] == pd.Timestamp("2017-10-24")   # 480 days after 2016-07-01


def test_etth1_download_verifies_the_checksum(tmp_path, monkeypatch, isolated_caches):
    good, bad = tmp_path / "good.csv", tmp_path / "bad.csv"
    _frame(5).to_csv(good, index=False)
    bad.write_bytes(good.read_bytes().replace(b"4.0", b"5.0"))
    monkeypatch.setattr(series, "ETTH1_SHA256", hub.sha256_of(good))
    root = tmp_path / "data"
    monkeypatch.setenv("ZOO_DATA", str(root))
    with pytest.raises(FileNotFoundError, match=r"set \$ZOO_DATA.*download=True"):
        series.etth1_path()
    monkeypatch.setattr(series, "ETTH1_URL", bad.as_uri())
    with pytest.raises(hub.ChecksumError, match="sha256 is"):
        series.etth1_path(download=True)
    assert not (root / "ett" / "ETTh1.csv").exists()
    monkeypatch.setattr(series, "ETTH1_URL", good.as_uri())
    path = series.etth1_path(download=True)
    assert path == root / "ett" / "ETTh1.csv" and path.read_bytes() == good.read_bytes()
    good.unlink()                                                    # no second download
    assert series.etth1_path() == series.etth1_path(root / "ett") == series.etth1_path(path) == path
    path.write_bytes(bad.read_bytes())                              # tampered local copy
    with pytest.raises(hub.ChecksumError, match=re.escape(str(path))):
        series.etth1_path()


# --- read_series --------------------------------------------------------------------------------

def test_read_series_csv_sorts_and_keeps_numeric_targets(tmp_path):
    frame = _frame(6)
    frame.iloc[::-1].to_csv(tmp_path / "s.csv", index=False)
    out = read_series(tmp_path / "s.csv")
    assert list(out.columns) == ["a", "b"] and out.dtypes.eq(np.float64).all()
    assert out.index.equals(pd.DatetimeIndex(frame["date"], name="date"))
    np.testing.assert_array_equal(out["b"], frame["b"])
    plain = read_series(frame.drop(columns="date"), time_column=None, target_columns="b")
    assert isinstance(plain.index, pd.RangeIndex) and list(plain.columns) == ["b"]


def test_read_series_reports_bad_columns_and_timestamps(tmp_path):
    frame = _frame(5, a=["1", "2", "x", "4", "5"], b=np.ones(5))
    frame.to_csv(tmp_path / "s.csv", index=False)
    with pytest.raises(SeriesDataError, match=r"non-numeric column\(s\) 'a' \(e.g. 'x' at line 4\).*target_columns"):
        read_series(tmp_path / "s.csv")
    assert read_series(tmp_path / "s.csv", target_columns=["b"]).shape == (5, 1)
    with pytest.raises(SeriesDataError, match=re.escape("no target column 'bb'; did you mean 'b'?")):
        read_series(frame, target_columns=["bb"])
    with pytest.raises(SeriesDataError, match=r"no time column 'time'.*\['date', 'a', 'b'\]"):
        read_series(frame, time_column="time")
    frame["date"] = frame["date"].astype(str)
    frame.loc[3, "date"] = "not a date"
    with pytest.raises(SeriesDataError, match="value 'not a date' at row 3"):
        read_series(frame, target_columns=["b"])
    with pytest.raises(SeriesDataError, match="at least 2"):
        read_series(_frame(1))


def test_read_series_rejects_duplicated_timestamps():
    frame = _frame(6)
    frame.loc[4, "date"] = frame.loc[1, "date"]
    with pytest.raises(SeriesDataError, match=r"1 row\(s\) repeat an earlier timestamp \(first: 2024-01-01 01:00:00\)"):
        read_series(frame)


def test_read_series_irregular_gap_error_and_reindex():
    frame = _frame(8, a=np.arange(8.0) * 2).drop(index=[3, 4])      # hours 3 and 4 missing
    with pytest.raises(SeriesDataError, match="gap from 2024-01-01 02:00:00 to 2024-01-01 05:00:00"):
        read_series(frame)
    with pytest.raises(SeriesDataError, match=r"missing values \{'a': 2\} \(first at 2024-01-01 03:00:00\)"):
        read_series(frame, irregular="reindex")
    out = read_series(frame, irregular="reindex", missing="interpolate")
    assert out.index.equals(pd.date_range("2024-01-01", periods=8, freq="h", name="date"))
    np.testing.assert_allclose(out["a"], np.arange(8.0) * 2)          # linear in time
    with pytest.raises(SeriesDataError, match="gap"):                  # a declared finer step
        read_series(_frame(4), freq="30min")


def test_read_series_missing_values_error_and_interpolate():
    frame = _frame(6, a=[np.nan, 1.0, np.nan, 3.0, 4.0, np.nan], b=np.ones(6))
    with pytest.raises(SeriesDataError, match=r"missing values \{'a': 3\} \(first at 2024-01-01 00:00:00\)"):
        read_series(frame)
    out = read_series(frame, missing="interpolate")
    np.testing.assert_array_equal(out["a"], [1.0, 1.0, 2.0, 3.0, 4.0, 4.0])   # ends: nearest value
    with pytest.raises(SeriesDataError, match=r"\['a'\] hold no values"):
        read_series(_frame(3, a=[np.nan] * 3), missing="interpolate")


# --- splits, scaler, windows --------------------------------------------------------------------

def test_chronological_split_by_fractions_fits_scaler_on_train_only():
    level = np.r_[np.zeros(70), np.full(30, 1000.0)] + np.arange(100) % 2   # train 0/1, later 1000+
    frame = read_series(_frame(100, a=level, b=np.arange(100.0)))
    splits = chronological_split(frame, 10)
    assert splits.borders == {"train": (0, 70), "val": (60, 80), "test": (70, 100)}
    assert [len(s) for s in (splits.train, splits.val, splits.test)] == [70, 20, 30]
    torch.testing.assert_close(splits.scaler.mean, torch.tensor([0.5, 34.5], dtype=torch.float64))
    torch.testing.assert_close(splits.scaler.std[0], torch.tensor(0.5, dtype=torch.float64))
    torch.testing.assert_close(splits.val[:10], splits.train[-10:])   # look-back rows
    torch.testing.assert_close(splits.test[:10], splits.val[-10:])
    assert splits.test[-1, 0] > 1000 and splits.columns == ("a", "b")
    with pytest.raises(ValueError, match="summing to 1"):
        chronological_split(frame, 10, fractions=(0.7, 0.2, 0.2))
    with pytest.raises(SeriesDataError, match="lookback 80 is longer than the 70 training rows"):
        chronological_split(frame, 80)


def test_chronological_split_by_dates():
    frame = read_series(_frame(48, a=np.arange(48.0)))
    splits = chronological_split(frame, 4, val_start="2024-01-01 20:00", test_start="2024-01-02 06:00")
    assert splits.borders == {"train": (0, 20), "val": (16, 30), "test": (26, 48)}
    torch.testing.assert_close(splits.scaler.mean, torch.tensor([9.5], dtype=torch.float64))
    with pytest.raises(SeriesDataError, match="must come before"):
        chronological_split(frame, 4, val_start="2024-01-02", test_start="2024-01-01 12:00")
    with pytest.raises(SeriesDataError, match="outside the series' range"):
        chronological_split(frame, 4, val_start="2024-01-01 12:00", test_start="2024-02-01")
    with pytest.raises(ValueError, match="both"):
        chronological_split(frame, 4, val_start="2024-01-01 12:00")


def test_standard_scaler_nan_aware_constant_and_round_trip():
    values = torch.tensor([[1.0, 5.0], [3.0, 5.0], [float("nan"), 5.0]])
    scaler = StandardScaler.fit(values)
    torch.testing.assert_close(scaler.mean, torch.tensor([2.0, 5.0], dtype=torch.float64))
    torch.testing.assert_close(scaler.std, torch.tensor([1.0, 1.0], dtype=torch.float64))
    x = torch.randn(4, 3, 2)
    again = StandardScaler.from_dict(json.loads(json.dumps(scaler.to_dict())))
    torch.testing.assert_close(again.inverse_transform(scaler.transform(x)), x)
    assert scaler.transform(values)[:2, 1].eq(0).all()
    with pytest.raises(ValueError, match="fitted on 2 channels"):
        scaler.transform(torch.zeros(3, 4))


def test_series_windows_content_and_too_short_error():
    values = torch.arange(20.0).reshape(10, 2)
    windows = SeriesWindows(values, 3, 2)
    assert len(windows) == 6
    x, y = windows[5]
    torch.testing.assert_close(x, values[5:8])
    torch.testing.assert_close(y, values[8:10])
    torch.testing.assert_close(windows[-1][1], y)
    with pytest.raises(IndexError):
        windows[6]
    with pytest.raises(SeriesDataError, match=r"the val split has 10 rows but needs at least .* = 11"):
        SeriesWindows(values, 8, 3, name="val")
    with pytest.raises(ValueError, match="horizon must be an int >= 1"):
        SeriesWindows(values, 3, 0)

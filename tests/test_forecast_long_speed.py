"""zoo's long-table forecasting path (one pass over the table, one gather per history length,
the output built column by column) against the previous per-series path, written out below
verbatim as the reference: the same frames (values, dtypes, order) and the same errors."""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from typing import get_args

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from zoo.data import OnError
from zoo.data.series import SeriesDataError, infer_step
from zoo.forecasting import (
    Missing,
    _alias,
    _band_frame,
    _check_scaling,
    _history,
    _ordered,
    _safe_scale,
    check_horizon,
    forecast_long,
    resolve_levels,
)
from zoo.metrics import interval_indices
from zoo.models.base import Forecaster
from zoo.models.patchtst import PatchTST

logger = logging.getLogger(__name__)

# ---- the reference: zoo.forecasting's long-table path before it was vectorised -------------

def _predict(model: Forecaster, histories: Sequence[np.ndarray], horizon: int,
             levels: Sequence[float], batch_size: int = 64
             ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Histories (L_i, C) float64 -> point forecasts (H, C) and bands (H, C, 2 * len(levels))
    (lower then upper bound per level) in float64, batching histories of equal length."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() \
        else torch.float32
    picks = [i for level in levels for i in interval_indices(model.quantiles, level)]
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, history in enumerate(histories):
        groups[history.shape].append(i)
    points: list[np.ndarray] = [np.empty(0)] * len(histories)
    bands: list[np.ndarray] = [np.empty(0)] * len(histories)
    model.eval()
    for members in groups.values():
        for start in range(0, len(members), batch_size):
            chunk = members[start:start + batch_size]
            x = np.stack([histories[i] for i in chunk])                   # (B, L, C)
            scale = _safe_scale(x)
            xt = torch.from_numpy(x / scale).to(device=device, dtype=dtype)
            with torch.inference_mode():
                point, quant = model.forecast_with_quantiles(xt, horizon)  # (B, H, C), (.., Q)
                quant = quant[..., picks] if picks and quant is not None else None
            expected = (len(chunk), horizon, x.shape[2])
            if tuple(point.shape) != expected:
                raise RuntimeError(f"{type(model).__name__} returned a forecast of shape "
                                   f"{tuple(point.shape)} for a history of {tuple(x.shape)} and "
                                   f"horizon {horizon}; expected {expected}")
            point_np = point.double().cpu().numpy() * scale
            quant_np = (quant.double().cpu().numpy() * scale[..., None] if quant is not None
                        else np.empty((*expected, 0)))
            for j, i in enumerate(chunk):
                points[i], bands[i] = point_np[j], quant_np[j]
    return points, bands


class _Series:
    """One series of a long table, on its regular grid: ``index`` (T,) and ``values`` (T, 1)."""

    def __init__(self, uid: object, index: pd.Index, values: np.ndarray,
                 step: pd.DateOffset | int) -> None:
        self.uid, self.index, self.values, self.step = uid, index, values, step

    def future(self, horizon: int) -> pd.Index:
        last = self.index[-1]
        return pd.Index([last + self.step * (i + 1) for i in range(horizon)], name=self.index.name)


def _split_long(df: pd.DataFrame, id_col: str, time_col: str, target_col: str,
                freq: str | int | None, missing: Missing) -> list[_Series | SeriesDataError]:
    """A long table -> its series sorted by id, each sorted in time and regular (gaps become
    NaN rows); a series that cannot be used is its error instead."""
    if missing not in get_args(Missing):
        raise ValueError(f"missing must be 'error' or 'interpolate', got {missing!r}")
    absent = [c for c in (id_col, time_col, target_col) if c not in df.columns]
    if absent:
        raise SeriesDataError(f"the long table has no column(s) {absent} (columns: "
                              f"{[str(c) for c in df.columns]}); name them with id_col=, "
                              "time_col=, target_col=")
    if df.empty:
        raise SeriesDataError("the long table has no rows")
    if (no_id := df[id_col].isna().to_numpy()).any():
        raise SeriesDataError(f"{int(no_id.sum())} row(s) have no {id_col!r} (first: row "
                              f"{int(np.argmax(no_id))})")
    integer_time = pd.api.types.is_integer_dtype(df[time_col])
    stamps = df[time_col] if integer_time else pd.to_datetime(df[time_col], errors="coerce")
    if (bad := stamps.isna().to_numpy()).any():
        i = int(np.flatnonzero(bad)[0])
        raise SeriesDataError(f"cannot read {time_col!r} value {df[time_col].iloc[i]!r} (row {i}, "
                              f"series {df[id_col].iloc[i]!r}) as a timestamp")
    raw = df[target_col]
    values = raw if pd.api.types.is_numeric_dtype(raw) else pd.to_numeric(raw, errors="coerce")
    if (bad := (values.isna() & raw.notna()).to_numpy()).any():
        i = int(np.flatnonzero(bad)[0])
        raise SeriesDataError(f"series {df[id_col].iloc[i]!r}: non-numeric {target_col!r} value "
                              f"{raw.iloc[i]!r} at {df[time_col].iloc[i]}")
    table = pd.DataFrame({"uid": df[id_col].to_numpy(), "ds": stamps.reset_index(drop=True),
                          "y": values.astype(np.float64).to_numpy()})
    out: list[_Series | SeriesDataError] = []
    for uid, group in table.groupby("uid", sort=True):
        try:
            out.append(_one_series(uid, group.sort_values("ds", kind="stable"), time_col,
                                   integer_time, freq, missing))
        except SeriesDataError as err:
            out.append(err)
    return out


def _one_series(uid: object, group: pd.DataFrame, time_col: str, integer_time: bool,
                freq: str | int | None, missing: Missing) -> _Series:
    where = f"series {uid!r}: "
    ds, y = group["ds"], group["y"].to_numpy()
    if (dup := ds.duplicated()).any():
        raise SeriesDataError(f"{where}{int(dup.sum())} row(s) repeat a timestamp (first: "
                              f"{ds[dup].iloc[0]}); aggregate them first")
    if np.isinf(y).any():
        raise SeriesDataError(f"{where}an infinite value at {ds.iloc[int(np.argmax(np.isinf(y)))]}")
    step: pd.DateOffset | int | None
    if integer_time:
        step = int(freq) if freq is not None else (int(ds.diff().mode().iloc[0]) if len(ds) > 1 else 1)
        grid = pd.Index(np.arange(ds.iloc[0], ds.iloc[-1] + 1, step), name=time_col)
    else:
        index = pd.DatetimeIndex(ds, name=time_col)
        step = pd.tseries.frequencies.to_offset(freq) if freq is not None else infer_step(index)
        if step is None:
            raise SeriesDataError(f"{where}one row: cannot infer its time step; pass freq=...")
        grid = pd.date_range(index[0], index[-1], freq=step, name=time_col)
    if len(off := pd.Index(ds).difference(grid)):
        raise SeriesDataError(f"{where}timestamp {off[0]} is off the regular {step} grid from "
                              f"{ds.iloc[0]}; pass freq=... or resample it")
    series = pd.Series(y, index=pd.Index(ds)).reindex(grid)
    if (gaps := len(grid) - len(ds)):
        logger.info("%s%d timestamps missing from the %s grid, read as missing values", where,
                    gaps, step)
    if missing == "interpolate" and series.isna().any():
        if series.isna().all():
            raise SeriesDataError(f"{where}no observed value")
        method = "index" if integer_time else "time"
        series = series.interpolate(method=method).ffill().bfill()
    return _Series(uid, grid, np.array(series.to_numpy(np.float64))[:, None], step)


def _usable(parts: list[_Series | SeriesDataError], on_error: OnError) -> list[_Series]:
    """The series, raising the first error (``on_error="raise"``) or skipping with a warning."""
    if on_error not in get_args(OnError):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    kept = []
    for part in parts:
        if isinstance(part, SeriesDataError):
            if on_error == "raise":
                raise SeriesDataError(f"{part} (on_error='skip' leaves such series out)")
            logger.warning("skipped: %s", part)
        else:
            kept.append(part)
    if not kept:
        raise SeriesDataError("no series left to forecast (every one was skipped)")
    return kept


def reference_forecast_long(model: Forecaster, df: pd.DataFrame, horizon: int | None = None, *,
                  id_col: str = "unique_id", time_col: str = "ds", target_col: str = "y",
                  levels: Sequence[float] | None = None, freq: str | int | None = None,
                  missing: Missing = "error", on_error: OnError = "raise",
                  alias: str | None = None, batch_size: int = 64) -> pd.DataFrame:
    """The previous forecast_long, verbatim."""
    _check_scaling(model)
    horizon = check_horizon(model, horizon)
    levels = resolve_levels(model, levels)
    name = _alias(model, alias)
    parts = _split_long(df, id_col, time_col, target_col, freq, missing)
    histories: list[np.ndarray] = []
    for i, part in enumerate(parts):
        if isinstance(part, _Series):
            try:
                histories.append(_history(model, part.values, part.index, [target_col],
                                          f"series {part.uid!r}: "))
            except SeriesDataError as err:
                parts[i] = err
    series = _usable(parts, on_error)
    points, bands = _predict(model, histories, horizon, levels, batch_size)
    frames = []
    for part, point, band in zip(series, points, bands, strict=True):
        data = {id_col: [part.uid] * horizon, time_col: part.future(horizon), name: point[:, 0],
                **{k.replace(f"{target_col}-", f"{name}-", 1): v
                   for k, v in _band_frame(band, [target_col], levels).items()}}
        frames.append(pd.DataFrame(data))
    out = pd.concat(frames, ignore_index=True)
    return out[[id_col, time_col, *_ordered([name], levels)]]


# ---- stand-ins and tables -------------------------------------------------------------------

class Stand(Forecaster):
    """Any history of ``min_context`` to ``context_length`` rows (NaN masked when
    ``masks``), any horizon, quantiles 0.1 / 0.25 / 0.5 / 0.75 / 0.9: a mix of the last normalised steps."""

    modality = "series"

    def __init__(self, *, context_length: int = 64, min_context: int = 1, masks: bool = True
                 ) -> None:
        super().__init__(nn.Identity(), nn.Identity(), nn.Identity(), {})
        torch.manual_seed(0)
        self.mix = nn.Linear(4, 5)
        self._context, self._min, self._masks = context_length, min_context, masks
        self.calls: list[tuple[int, ...]] = []

    context_length = property(lambda self: self._context)
    min_context = property(lambda self: self._min)
    horizon = property(lambda self: 8)
    max_horizon = property(lambda self: None)
    quantiles = property(lambda self: (0.1, 0.25, 0.5, 0.75, 0.9))
    supports_missing = property(lambda self: self._masks)

    def forecast_quantiles(self, x: torch.Tensor, horizon: int | None = None) -> torch.Tensor:
        self.calls.append(tuple(x.shape))
        horizon = self.check_horizon(horizon)
        obs = ~torch.isnan(x)
        mean = torch.where(obs, x, 0).sum(1, keepdim=True) / obs.sum(1, keepdim=True)
        std = (torch.where(obs, (x - mean) ** 2, 0).sum(1, keepdim=True)
               / obs.sum(1, keepdim=True) + 1e-6).sqrt()
        z = nn.functional.pad(torch.where(obs, (x - mean) / std, 0), (0, 0, 4, 0))[:, -4:]
        q = self.mix(z.transpose(1, 2)).sort(-1).values                      # (B, C, 5)
        steps = torch.arange(1, horizon + 1, dtype=x.dtype)[None, :, None, None] / horizon
        return mean[..., None] + std[..., None] * q[:, None] * steps        # (B, H, C, 5)

    def forward(self, x: torch.Tensor, horizon: int | None = None) -> torch.Tensor:
        return self.forecast_quantiles(x, horizon)[..., 2]


def _series(uid: object, start: str, n: int, freq: str, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    t = np.arange(n)
    return pd.DataFrame({"unique_id": uid, "ds": pd.date_range(start, periods=n, freq=freq),
                         "y": 20 + seed + np.sin(2 * np.pi * t / 24) + 0.01 * t
                         + 0.1 * rng.standard_normal(n)})


def mixed_table(seed: int = 0) -> pd.DataFrame:
    """Regular hourly series of many lengths (shorter and longer than a context of 40), and
    every kind of series the per-series path handles: a gap, two rows, a 15-minute, a daily, a
    weekly and a monthly series, a NaN inside and one before the last 40 rows; rows shuffled."""
    rng = np.random.default_rng(seed)
    parts = [_series(f"h{i:02d}", f"2024-01-{1 + i % 9:02d}", int(rng.integers(10, 90)), "h", i)
             for i in range(30)]
    gap = _series("gap", "2024-02-01", 70, "h", 31)
    parts += [gap.drop(index=[50, 51]), _series("two", "2024-01-01", 2, "h", 32),
              _series("q15", "2024-01-01 00:15", 60, "15min", 33),
              _series("day", "2023-06-01", 50, "D", 34), _series("week", "2023-01-01", 45, "W", 35),
              _series("month", "2020-01-01", 45, "MS", 36)]
    nan_in, nan_out = _series("nan_in", "2024-01-01", 60, "h", 37), _series("nan_out", "2024-01-01", 60, "h", 38)
    nan_in.loc[55, "y"], nan_out.loc[3, "y"] = np.nan, np.nan
    return pd.concat([*parts, nan_in, nan_out]).sample(frac=1, random_state=seed) \
        .reset_index(drop=True)


def _both(model_fn, df: pd.DataFrame, horizon: int, **kw) -> tuple[pd.DataFrame, pd.DataFrame]:
    fast, slow = model_fn(), model_fn()
    out = forecast_long(fast, df, horizon, **kw)
    ref = reference_forecast_long(slow, df, horizon, **kw)
    assert sorted(fast.calls) == sorted(slow.calls)           # the same batches
    return out, ref


# ---- tests ----------------------------------------------------------------------------------

def test_unequal_lengths_gaps_calendar_steps_and_nan_equal_the_per_series_path():
    df = mixed_table()
    out, ref = _both(lambda: Stand(context_length=40), df, 6, levels=(50, 80))
    pd.testing.assert_frame_equal(out, ref, check_exact=True)
    assert out["unique_id"].nunique() == 38 and len(out) == 38 * 6
    month = out.loc[out.unique_id == "month", "ds"]
    assert month.iloc[0] == pd.Timestamp("2023-10-01")         # calendar months after the last


def test_missing_values_interpolated_and_errors_skipped_equal_the_per_series_path():
    df = mixed_table(1)
    dup = df[df.unique_id == "h03"].iloc[:1]
    bad = pd.DataFrame({"unique_id": ["inf"] * 3, "ds": pd.date_range("2024-01-01", periods=3,
                                                                        freq="h"),
                        "y": [1.0, np.inf, 2.0]})
    df = pd.concat([df, dup, bad], ignore_index=True)
    for kw in (dict(missing="interpolate"), dict(missing="error")):
        out, ref = _both(lambda: Stand(context_length=40, min_context=20, masks=False), df, 5,
                         on_error="skip", **kw)
        pd.testing.assert_frame_equal(out, ref, check_exact=True)
        assert "h03" not in set(out.unique_id) and "inf" not in set(out.unique_id)
        with pytest.raises(SeriesDataError) as fast_error:
            forecast_long(Stand(context_length=40, min_context=20, masks=False), df, 5, **kw)
        with pytest.raises(SeriesDataError) as slow_error:
            reference_forecast_long(Stand(context_length=40, min_context=20, masks=False), df,
                                    5, **kw)
        assert str(fast_error.value) == str(slow_error.value)


def test_patchtst_forecasts_equal_the_per_series_path():
    """A real model, batched 4 at a time: the same numbers, bit for bit."""
    torch.manual_seed(0)
    model = PatchTST(context_length=16, horizon=4, patch_len=4, stride=4, embed_dim=8,
                     num_heads=2, depth=1, quantiles=(0.1, 0.5, 0.9)).eval()
    df = mixed_table(2)
    df = df[df.groupby("unique_id")["ds"].transform("size") >= 16]
    out = forecast_long(model, df, 3, missing="interpolate", batch_size=4)
    ref = reference_forecast_long(model, df, 3, missing="interpolate", batch_size=4)
    pd.testing.assert_frame_equal(out, ref, check_exact=True)


@pytest.mark.parametrize("ids", ["int", "str"])
def test_integer_timestamps_and_integer_ids_equal_the_per_series_path(ids):
    rng = np.random.default_rng(3)
    rows = []
    for k in range(12):
        n, step = int(rng.integers(5, 40)), int(rng.choice([1, 10]))
        rows.append(pd.DataFrame({"unique_id": k * 7 if ids == "int" else f"s{k}",
                                  "ds": 1000 + step * np.arange(n),
                                  "y": rng.standard_normal(n).cumsum()}))
    df = pd.concat(rows).sample(frac=1, random_state=0)
    out, ref = _both(lambda: Stand(context_length=16), df, 4)
    pd.testing.assert_frame_equal(out, ref, check_exact=True)
    out, ref = _both(lambda: Stand(context_length=16), df[df.ds % 10 == 0], 4, freq=10,
                     on_error="skip")
    pd.testing.assert_frame_equal(out, ref, check_exact=True)


def test_a_given_freq_and_off_grid_timestamps_equal_the_per_series_path():
    df = mixed_table(4)
    hourly = df[df.unique_id.str.startswith(("h", "gap", "nan"))]
    out, ref = _both(lambda: Stand(context_length=40), hourly, 3, freq="h")
    pd.testing.assert_frame_equal(out, ref, check_exact=True)
    off = hourly.copy()
    off.loc[off.index[0], "ds"] += pd.Timedelta(minutes=7)
    out, ref = _both(lambda: Stand(context_length=40), off, 3, freq="h", on_error="skip")
    pd.testing.assert_frame_equal(out, ref, check_exact=True)


@pytest.mark.parametrize("texts", [
    ["2024-01-01 00:00:00", "2024-01-01 01:00:00", "2024-01-01 00:00:00", None, "x"],
    ["01/02/2024 05:00", "01/02/2024 06:00", "13/40/2024", "01/02/2024 05:00", "01/03/2024"],
    ["2024-03-10T01:00:00+01:00", "2024-03-10T02:00:00+01:00", "2024-03-10T01:00:00+01:00"],
    ["2024-01-01", "2024-01-02", "2024-01-01", "2024-01-03", float("nan")],
], ids=["iso", "us-dates", "offsets", "dates-nan"])
@pytest.mark.parametrize("dtype", ["str", object])
def test_time_texts_parse_as_pandas_parses_them(texts, dtype):
    """Each distinct text parsed once and gathered (read_long's fast path) gives exactly what
    pd.to_datetime(errors="coerce") gives on the whole column: values, NaT and dtype."""
    from zoo.data.series import _parse_times

    column = pd.Series(texts * 300, dtype=dtype, index=np.arange(300 * len(texts)) + 7)
    pd.testing.assert_series_equal(_parse_times(column), pd.to_datetime(column, errors="coerce"))


def test_ids_and_times_read_from_a_csv_equal_the_per_series_path(tmp_path):
    """Text ids and timestamps as pandas reads a CSV (its string dtype): the same forecasts
    as the per-series path (ids sorted, times parsed), every kind of series included."""
    path = tmp_path / "long.csv"
    mixed_table(2).to_csv(path, index=False)
    df = pd.read_csv(path, dtype={"unique_id": str})
    assert pd.api.types.is_string_dtype(df["ds"]) and pd.api.types.is_string_dtype(df["unique_id"])
    out, ref = _both(lambda: Stand(context_length=40), df, 6, levels=(80,))
    pd.testing.assert_frame_equal(out, ref, check_exact=True)
    assert out["unique_id"].nunique() == 38

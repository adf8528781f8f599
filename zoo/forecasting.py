"""Forecasting tables with a zoo forecaster: a wide table (time x columns) or a long one
(``unique_id, ds, y`` as Nixtla's libraries use) -> forecast tables with future timestamps and
interval columns, rolling-origin backtests against the seasonal-naive baseline, and plots.

Every function keeps the :class:`zoo.models.base.Forecaster` contract: the model reads the last
``min(rows, context_length)`` rows (at least ``min_context``), forecasts up to ``max_horizon``
steps, masks NaN only when ``supports_missing``, and gives quantiles when ``quantiles`` is not
empty. A level-L interval is the ``((1 - L/100) / 2, 1 - (1 - L/100) / 2)`` quantiles, in
columns ``<name>-lo-L`` / ``<name>-hi-L`` (NeuralForecast's names; see :mod:`zoo.metrics`).
"""

from __future__ import annotations

import logging
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import torch

from zoo._optional import pyplot
from zoo.data import OnError
from zoo.data.series import LongTable, SeriesDataError, infer_step, read_long
from zoo.metrics import (
    coverage,
    default_horizon,
    format_level,
    interval_indices,
    interval_quantiles,
    mase,
    quantile_columns,
    quantile_levels,
    season_length,
    seasonal_naive,
)
from zoo.models.base import Forecaster

logger = logging.getLogger(__name__)

# a history whose largest |value| lies outside [2**-40, 2**40] is divided by a power of two
# (exact in floating point) before it reaches the float32 model: RevIN's variance of values near
# 1e20 would overflow float32; normalising models are scale-equivariant, so this is undone after
_SAFE_EXPONENT = 40
Missing = Literal["error", "interpolate"]


def future_index(index: pd.Index, steps: int) -> pd.Index:
    """The ``steps`` timestamps after a regular ``index`` (or row numbers after a RangeIndex)."""
    if isinstance(index, pd.DatetimeIndex):
        freq = index.freq or (pd.DatetimeIndex(index, freq="infer").freq if len(index) >= 3 else None)
        if freq is None:
            step = pd.Series(index).diff().mode()
            if step.empty:
                raise ValueError("cannot infer the time step of the history: need at least 2 rows")
            return pd.DatetimeIndex([index[-1] + step.iloc[0] * (i + 1) for i in range(steps)],
                                    name=index.name)
        return pd.date_range(index[-1], periods=steps + 1, freq=freq, name=index.name)[1:]
    last = int(index[-1]) if len(index) else -1
    return pd.RangeIndex(last + 1, last + 1 + steps, name=index.name)


def infer_season(index: pd.Index) -> int:
    """The season length of a frame's index: :func:`zoo.metrics.season_length` of its
    (inferred) frequency; 1 for row numbers or a step that names no frequency."""
    if not isinstance(index, pd.DatetimeIndex) or len(index) < 2:
        return 1
    return season_length(index.freq or infer_step(index))


# ---- the model call ------------------------------------------------------------------------

def check_horizon(model: Forecaster, horizon: int | None, index: pd.Index | None = None) -> int:
    """``horizon``, at least 1 and at most ``max_horizon``. None: for a model that decodes any
    horizon and timestamps ``index`` of a frequency M4 has, M4's horizon for it (weekly 13,
    monthly 18, ...: :func:`zoo.metrics.default_horizon`); else the model's native one."""
    if horizon is None and model.max_horizon is None and isinstance(index, pd.DatetimeIndex) \
            and len(index) >= 2:
        horizon = default_horizon(index.freq or infer_step(index))
    return model.check_horizon(horizon)


def resolve_levels(model: Forecaster, levels: Sequence[float] | None) -> tuple[float, ...]:
    """The interval levels to report: ``levels``, checked against the model's quantiles, or
    (None) 80 when the model has the 0.1 / 0.9 quantiles, else every level its quantiles bound;
    none for a point forecaster (asking one for levels is an error)."""
    quantiles = tuple(model.quantiles)
    if levels is None:
        have = quantile_levels(quantiles)
        return (80,) if 80 in have else have
    levels = tuple(sorted({float(v) for v in levels}))
    if levels and not quantiles:
        raise ValueError(f"this model gives point forecasts only, no {format_level(levels[0])}% "
                         "interval; use a model with quantiles (or no levels)")
    for level in levels:
        interval_indices(quantiles, level)
    return levels


def _check_scaling(model: Forecaster) -> None:
    scaler = getattr(getattr(model, "front_end", None), "scaler", None)
    if getattr(scaler, "scaling", None) == "none":
        raise ValueError("this model does not normalise its input (scaling='none'), so it only "
                         "forecasts data scaled as in its training; scale the table yourself")


def _safe_scale(x: np.ndarray) -> np.ndarray:
    """(B, L, C) -> (B, 1, C) powers of two that bring huge or tiny series near 1 (else 1)."""
    with np.errstate(all="ignore"):
        peak = np.nanmax(np.abs(x), axis=1, keepdims=True)               # (B, 1, C)
    peak = np.nan_to_num(peak, nan=1.0)
    _, exponent = np.frexp(np.where(peak > 0, peak, 1.0))
    outside = (exponent > _SAFE_EXPONENT) | (exponent < -_SAFE_EXPONENT)
    return np.where(outside, np.ldexp(1.0, exponent - 1), 1.0)


def _predict(model: Forecaster, histories: Sequence[np.ndarray], horizon: int,
             levels: Sequence[float], batch_size: int = 64
             ) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """Histories (L_i, C) float64 -> point forecasts (H, C) and bands (H, C, 2 * len(levels))
    (lower then upper bound per level) in float64, batching histories of equal length."""
    groups: dict[tuple[int, ...], list[int]] = defaultdict(list)
    for i, history in enumerate(histories):
        groups[history.shape].append(i)
    points: list[np.ndarray] = [np.empty(0)] * len(histories)
    bands: list[np.ndarray] = [np.empty(0)] * len(histories)
    for members in groups.values():
        point, band = _predict_stacked(model, np.stack([histories[i] for i in members]),
                                       horizon, levels, batch_size)
        for j, i in enumerate(members):
            points[i], bands[i] = point[j], band[j]
    return points, bands


def _predict_stacked(model: Forecaster, x: np.ndarray, horizon: int, levels: Sequence[float],
                     batch_size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """Histories (B, L, C) float64 -> point forecasts (B, H, C) and bands (B, H, C, 2 * K) (lower
    then upper bound per level) in float64: ``batch_size`` histories per model call, the input
    converted to the model's dtype once and the outputs written into preallocated arrays."""
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    dtype = parameter.dtype if parameter is not None and parameter.is_floating_point() \
        else torch.float32
    picks = [i for level in levels for i in interval_indices(model.quantiles, level)]
    scale = _safe_scale(x)                                                # (B, 1, C)
    xt = torch.from_numpy(x / scale).to(device=device, dtype=dtype)
    B, _, C = x.shape
    points, bands = np.empty((B, horizon, C)), np.empty((B, horizon, C, len(picks)))
    model.eval()
    for start in range(0, B, batch_size):
        rows = slice(start, start + batch_size)
        with torch.inference_mode():
            point, quant = model.forecast_with_quantiles(xt[rows], horizon)   # (b, H, C), (.., Q)
            quant = quant[..., picks] if picks and quant is not None else None
        expected = (len(xt[rows]), horizon, C)
        if tuple(point.shape) != expected:
            raise RuntimeError(f"{type(model).__name__} returned a forecast of shape "
                               f"{tuple(point.shape)} for a history of "
                               f"{(expected[0], *x.shape[1:])} and horizon {horizon}; "
                               f"expected {expected}")
        points[rows] = point.double().cpu().numpy() * scale[rows]
        if quant is not None:
            bands[rows] = quant.double().cpu().numpy() * scale[rows, ..., None]
    return points, bands


def _history(model: Forecaster, values: np.ndarray, labels: pd.Index, names: Sequence[str],
             where: str) -> np.ndarray:
    """The last ``min(T, context_length)`` rows of ``values`` (T, C), checked: enough rows, and
    NaN only for a model that masks them (errors name ``where``, the column and the row)."""
    rows, need = len(values), model.min_context
    if rows < need:
        raise SeriesDataError(f"{where}the model needs {need} rows of history; the data has {rows}"
                              + (f" (it reads at most {model.context_length})"
                                 if model.context_length > need else ""))
    history = values[-model.context_length:]
    missing = np.isnan(history)
    if missing.any():
        label = labels[-len(history):]
        if not model.supports_missing:
            row, col = (int(v[0]) for v in np.nonzero(missing))
            raise SeriesDataError(
                f"{where}column {names[col]!r} has a missing value at {label[row]} "
                f"({int(missing.sum())} in the last {len(history)} rows); this model does not "
                "mask missing values: fill them (missing='interpolate') or use a model that does")
        if (empty := missing.all(0)).any():
            raise SeriesDataError(f"{where}column {names[int(np.argmax(empty))]!r} has no "
                                  f"observed value in the last {len(history)} rows")
    return history


def _values(frame: pd.DataFrame) -> np.ndarray:
    """A wide frame's values (T, C) as float64; non-numeric columns are an error."""
    if frame.empty or frame.shape[1] == 0:
        raise SeriesDataError(f"the table is empty ({frame.shape[0]} rows x {frame.shape[1]} "
                              "columns)")
    text = [str(c) for c, t in frame.dtypes.items() if not pd.api.types.is_numeric_dtype(t)]
    if text:
        raise SeriesDataError(f"non-numeric column(s) {text}; read the table with "
                              "zoo.data.series.read_series, or choose the numeric columns")
    values = np.array(frame.to_numpy(np.float64))                         # a writable copy
    if np.isinf(values).any():
        row, col = (int(v[0]) for v in np.nonzero(np.isinf(values)))
        raise SeriesDataError(f"column {str(frame.columns[col])!r} holds an infinite value at "
                              f"{frame.index[row]}")
    return values


def _band_frame(bands: np.ndarray, names: Sequence[str], levels: Sequence[float]
                ) -> dict[str, np.ndarray]:
    """Bands (H, C, 2 * K) (lower, upper per level) -> ``{"<name>-lo-L": (H,), ...}``."""
    out = {}
    for c, name in enumerate(names):
        for k, level in enumerate(levels):
            suffix = format_level(level)
            out[f"{name}-lo-{suffix}"] = bands[:, c, 2 * k]
            out[f"{name}-hi-{suffix}"] = bands[:, c, 2 * k + 1]
    return out


def _ordered(names: Sequence[str], levels: Sequence[float]) -> list[str]:
    """Each name followed by its interval columns in quantile order (see quantile_columns)."""
    return [col for name in names for col in (name, *(quantile_columns(name, levels) if levels else ()))]


# ---- a wide table --------------------------------------------------------------------------

def forecast_frame(model: Forecaster, frame: pd.DataFrame, horizon: int | None = None, *,
                   levels: Sequence[float] | None = None) -> pd.DataFrame:
    """Forecast every column of ``frame`` (rows in time order, numeric columns) from its last
    ``min(len(frame), model.context_length)`` rows: returns (horizon, ...) with future
    timestamps as index, a column per input column (the point forecast) and, for a model with
    quantiles, ``<col>-lo-L`` / ``<col>-hi-L`` per level (default 80; see :func:`resolve_levels`).

    ``horizon`` (default the model's) may not exceed ``model.max_horizon``. NaN are kept for a
    model that masks them, else refused naming column and row. The model's own normalisation
    makes the forecast follow the table's units.
    """
    _check_scaling(model)
    horizon = check_horizon(model, horizon, frame.index)
    levels = resolve_levels(model, levels)
    names = [str(c) for c in frame.columns]
    history = _history(model, _values(frame), frame.index, names, "")
    (point,), (bands,) = _predict(model, [history], horizon, levels)
    data = {name: point[:, c] for c, name in enumerate(names)} | _band_frame(bands, names, levels)
    return pd.DataFrame(data, index=future_index(frame.index, horizon))[_ordered(names, levels)]


def _windows(rows: int, windows: int, horizon: int, need: int, where: str) -> list[int]:
    """Start rows of the last ``windows`` non-overlapping windows of ``horizon`` steps, the
    latest ending at the last row, each with at least ``need`` rows before it."""
    if isinstance(windows, bool) or not isinstance(windows, (int, np.integer)) or windows < 1:
        raise ValueError(f"windows must be a whole number >= 1, got {windows!r}")
    needed = need + windows * horizon
    if rows < needed:
        raise SeriesDataError(
            f"{where}a backtest of {windows} window(s) of {horizon} steps needs {needed} rows "
            f"({need} of history before the first window + {windows} x {horizon}); the data has "
            f"{rows}" + (f" (at most {(rows - need) // horizon} window(s) fit)"
                         if rows >= need + horizon else ""))
    return [rows - (windows - w) * horizon for w in range(windows)]


def _finite_mean(values: np.ndarray) -> float:
    """Mean over finite values (GluonTS's Evaluator leaves out inf / nan MASE); nan if none."""
    finite = values[np.isfinite(values)]
    return float(finite.mean()) if finite.size else float("nan")


def _score(points: list[np.ndarray], bands: list[np.ndarray], pasts: list[np.ndarray],
           targets: list[np.ndarray], horizon: int, season: int, cover: bool
           ) -> dict[str, np.ndarray]:
    """Per window (W) and column (C): MASE of the model and of seasonal naive (same scale), and
    the interval's coverage (first level of ``bands``) -> arrays (W, C)."""
    out: dict[str, list[np.ndarray]] = defaultdict(list)
    for point, band, past, target in zip(points, bands, pasts, targets, strict=True):
        p, y = torch.from_numpy(past)[None], torch.from_numpy(target)[None]   # (1, T, C)
        naive = seasonal_naive(p, horizon, season)
        out["mase"].append(mase(torch.from_numpy(point)[None], y, p, season)[0].numpy())
        out["seasonal_naive_mase"].append(mase(naive, y, p, season)[0].numpy())
        if cover:
            lo, hi = torch.from_numpy(band[..., 0])[None], torch.from_numpy(band[..., 1])[None]
            inside = coverage(lo, hi, y, dim=1)[0].numpy()                 # (C,)
            out["coverage"].append(inside)
            out["observed"].append((~np.isnan(target)).sum(0).astype(np.float64))
    return {k: np.stack(v) for k, v in out.items()}


def _summary(names: Sequence[object], scores: dict[str, np.ndarray], level: float | None,
             horizon: int, season: int, index_name: str) -> pd.DataFrame:
    """Per name: mean MASE (finite windows), seasonal naive's, their ratio, coverage."""
    rows = []
    for c, name in enumerate(names):
        model_mase, naive_mase = scores["mase"][:, c], scores["seasonal_naive_mase"][:, c]
        both = np.isfinite(model_mase) & np.isfinite(naive_mase)
        row = {index_name: name, "mase": _finite_mean(model_mase),
               "seasonal_naive_mase": _finite_mean(naive_mase),
               "ratio": (model_mase[both].mean() / naive_mase[both].mean()
                         if both.any() and naive_mase[both].mean() > 0 else float("nan")),
               "windows": len(model_mase), "scored_windows": int(np.isfinite(model_mase).sum())}
        if level is not None:
            observed = scores["observed"][:, c]
            row[f"coverage_{format_level(level)}"] = (
                float(np.nansum(scores["coverage"][:, c] * observed) / observed.sum())
                if observed.sum() else float("nan"))
        rows.append(row)
    summary = pd.DataFrame(rows).set_index(index_name)
    summary.attrs.update(horizon=horizon, season=season, level=level)
    return summary


def backtest(model: Forecaster, frame: pd.DataFrame, windows: int, horizon: int | None = None,
             season: int | None = None, *, level: float | None = 80
             ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Rolling-origin evaluation on the last ``windows`` non-overlapping windows of ``horizon``
    steps (the latest ends at the last row), each forecast from the rows before it.

    Returns ``(per_window, summary)``. ``per_window`` has a row per window and column: window
    (0 = earliest), cutoff (the last history row), column, mase, seasonal_naive_mase and, for a
    model with quantiles, coverage_<level> (the share of targets inside the ``level``% interval;
    ``level=None``: none).
    ``summary`` has a row per column: mean MASE and seasonal naive's over the windows (a window
    with a constant history has no seasonal error and is left out, as GluonTS's Evaluator
    does), their ratio (< 1: better than seasonal naive), the pooled coverage, windows and
    scored_windows; :func:`format_backtest` prints it. Both MASE use the seasonal error of all
    rows before the window (GluonTS's ``calculate_seasonal_error`` of the past), with
    ``season`` (default: :func:`infer_season` of the index; 1 for row numbers).
    """
    _check_scaling(model)
    horizon = check_horizon(model, horizon, frame.index)
    season = infer_season(frame.index) if season is None else season
    values, names = _values(frame), [str(c) for c in frame.columns]
    starts = _windows(len(values), windows, horizon, max(model.min_context, 2), "")
    levels = resolve_levels(model, [level]) if model.quantiles and level is not None else ()
    cover = bool(levels)
    histories = [_history(model, values[:s], frame.index[:s], names, f"window {w}: ")
                 for w, s in enumerate(starts)]
    points, bands = _predict(model, histories, horizon, levels)
    scores = _score(points, bands, [values[:s] for s in starts],
                    [values[s:s + horizon] for s in starts], horizon, season, cover)
    per_window = pd.DataFrame([
        {"window": w, "cutoff": frame.index[s - 1], "column": name,
         "mase": scores["mase"][w, c], "seasonal_naive_mase": scores["seasonal_naive_mase"][w, c],
         **({f"coverage_{format_level(levels[0])}": scores["coverage"][w, c]} if cover else {})}
        for w, s in enumerate(starts) for c, name in enumerate(names)])
    return per_window, _summary(names, scores, levels[0] if cover else None, horizon, season,
                                "column")


def format_backtest(summary: pd.DataFrame) -> str:
    """One line per row of a :func:`backtest` summary, e.g. ``OT: MASE 0.84 vs seasonal naive
    1.02 (ratio 0.82), 80% interval covers 78% (4 windows of 96)``."""
    horizon, level = summary.attrs.get("horizon"), summary.attrs.get("level")
    lines = []
    for name, row in summary.iterrows():
        line = (f"{name}: MASE {row['mase']:.2f} vs seasonal naive "
                f"{row['seasonal_naive_mase']:.2f} (ratio {row['ratio']:.2f})")
        if level is not None:
            share = row[f"coverage_{format_level(level)}"]
            line += f", {format_level(level)}% interval covers {100 * share:.0f}%"
        windows, scored = int(row["windows"]), int(row["scored_windows"])
        line += f" ({windows} windows of {horizon}" + (
            f"; {windows - scored} with a constant history left out)" if scored < windows else ")")
        lines.append(line)
    return "\n".join(lines)


# ---- a long table (unique_id, ds, y) -------------------------------------------------------

class _Series:
    """One series of a long table, on its regular grid: ``index`` (T,) and ``values`` (T, 1)."""

    def __init__(self, table: LongTable, i: int) -> None:
        rows = slice(table.starts[i], table.starts[i + 1])
        self.uid, self.index = table.uid(i), table.index(i)
        self.values = table.values[rows, None]


def _split_long(df: pd.DataFrame, id_col: str, time_col: str, target_col: str,
                freq: str | int | None, missing: Missing) -> list[_Series | SeriesDataError]:
    """A long table -> its series sorted by id, each sorted in time and regular (gaps become
    NaN rows); a series that cannot be used is its error instead."""
    table = read_long(df, id_col=id_col, time_col=time_col, target_col=target_col, freq=freq,
                      missing=missing)
    return [err if err is not None else _Series(table, i) for i, err in enumerate(table.errors)]


def _alias(model: Forecaster, alias: str | None) -> str:
    cfg = getattr(model, "pretrained_cfg", None)
    return alias or (cfg.architecture if cfg is not None else "zoo")


def _usable(errors: Sequence[SeriesDataError | None], on_error: OnError) -> np.ndarray:
    """Positions of the series without an error, raising the first error
    (``on_error="raise"``) or skipping each with a warning."""
    if on_error not in get_args(OnError):
        raise ValueError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
    for err in errors:
        if err is not None:
            if on_error == "raise":
                raise SeriesDataError(f"{err} (on_error='skip' leaves such series out)")
            logger.warning("skipped: %s", err)
    kept = np.array([i for i, err in enumerate(errors) if err is None], dtype=np.int64)
    if not len(kept):
        raise SeriesDataError("no series left to forecast (every one was skipped)")
    return kept


def _last_windows(model: Forecaster, table: LongTable, target_col: str
                  ) -> tuple[list[SeriesDataError | None], np.ndarray]:
    """Each series' history length ``min(T, context_length)`` (S,), and its error where it is
    too short or has a missing value the model cannot take (checked by :func:`_history` for
    those series only, so the messages are the same)."""
    lengths = table.lengths
    window = np.minimum(lengths, model.context_length)
    ends = table.starts[1:]
    missing = np.concatenate([[0], np.cumsum(np.isnan(table.values))])
    suspect = (lengths < model.min_context) | (missing[ends] - missing[ends - window] > 0)
    errors = list(table.errors)
    for i in np.flatnonzero(suspect).tolist():
        if errors[i] is None:
            rows = slice(table.starts[i], table.starts[i + 1])
            try:
                _history(model, table.values[rows, None], table.index(i), [target_col],
                         f"series {table.uid(i)!r}: ")
            except SeriesDataError as err:
                errors[i] = err
    return errors, window


def forecast_long(model: Forecaster, df: pd.DataFrame, horizon: int | None = None, *,
                  id_col: str = "unique_id", time_col: str = "ds", target_col: str = "y",
                  levels: Sequence[float] | None = None, freq: str | int | None = None,
                  missing: Missing = "error", on_error: OnError = "raise",
                  alias: str | None = None, batch_size: int = 64) -> pd.DataFrame:
    """Forecast every series of a long table (a row per series and timestamp, as Nixtla's
    libraries take it): returns ``id_col, time_col, <alias>, <alias>-lo-L, <alias>-hi-L`` with
    ``horizon`` rows per series, sorted by id then time.

    Rows may come in any order and series may differ in length and start; each is put on its
    regular grid (``freq``, else inferred per series: pandas' inferred frequency, or the most
    common step; integer timestamps step by their most common difference), and a timestamp
    missing from the grid becomes a missing value. Missing values are kept for a model that
    masks them, filled with ``missing="interpolate"``, else an error. A repeated timestamp, a
    series shorter than ``model.min_context`` and the like are errors naming the series, or
    with ``on_error="skip"`` warnings that leave it out. ``alias`` (default the model's
    architecture name, else "zoo") names the forecast columns; histories of equal length are
    batched ``batch_size`` at a time.

    The table is read in one pass (:func:`zoo.data.series.read_long`), the histories are cut
    from it with one gather per history length, and the output is built column by column.
    """
    _check_scaling(model)
    horizon = check_horizon(model, horizon)
    levels = resolve_levels(model, levels)
    name = _alias(model, alias)
    table = read_long(df, id_col=id_col, time_col=time_col, target_col=target_col, freq=freq,
                      missing=missing)
    errors, window = _last_windows(model, table, target_col)
    kept = _usable(errors, on_error)
    points = np.empty((len(kept), horizon))
    bands = np.empty((len(kept), horizon, 2 * len(levels)))
    lengths = window[kept]
    for length in dict.fromkeys(lengths.tolist()):     # histories of one length per batch
        members = np.flatnonzero(lengths == length)
        ends = table.starts[kept[members] + 1]
        gather = ends[:, None] - length + np.arange(length)                # (B, L)
        point, band = _predict_stacked(model, table.values[gather][..., None], horizon, levels,
                                       batch_size)
        points[members], bands[members] = point[..., 0], band[:, :, 0]
    data = {id_col: np.repeat(table.ids[kept], horizon),
            time_col: table.future(kept, horizon).ravel(), name: points.ravel()}
    for k, level in enumerate(levels):
        data[f"{name}-lo-{format_level(level)}"] = bands[..., 2 * k].ravel()
        data[f"{name}-hi-{format_level(level)}"] = bands[..., 2 * k + 1].ravel()
    return pd.DataFrame(data)[[id_col, time_col, *_ordered([name], levels)]]


def backtest_long(model: Forecaster, df: pd.DataFrame, windows: int, horizon: int | None = None,
                  *, season: int | None = None, id_col: str = "unique_id", time_col: str = "ds",
                  target_col: str = "y", level: float | None = 80, freq: str | int | None = None,
                  missing: Missing = "error", on_error: OnError = "raise",
                  alias: str | None = None, batch_size: int = 64
                  ) -> tuple[pd.DataFrame, pd.DataFrame]:
    """:func:`backtest` for every series of a long table (see :func:`forecast_long`).

    Returns ``(cv, summary)``: ``cv`` as NeuralForecast's ``cross_validation``: ``id_col,
    time_col, cutoff, target_col, <alias>, <alias>-lo-L, <alias>-hi-L, seasonal_naive``, a row
    per series, window and step; ``summary`` a row per series as :func:`backtest`'s (printable
    with :func:`format_backtest`). ``season`` defaults to each series' :func:`infer_season`.
    A series too short for the windows is an error naming it (or skipped).
    """
    _check_scaling(model)
    horizon = check_horizon(model, horizon)
    levels = resolve_levels(model, [level]) if model.quantiles and level is not None else ()
    cover = bool(levels)
    name = _alias(model, alias)
    parts = _split_long(df, id_col, time_col, target_col, freq, missing)
    plans: list[tuple[_Series, list[int], list[np.ndarray]]] = []
    for i, part in enumerate(parts):
        if isinstance(part, _Series):
            where = f"series {part.uid!r}: "
            try:
                starts = _windows(len(part.values), windows, horizon, max(model.min_context, 2),
                                  where)
                plans.append((part, starts, [
                    _history(model, part.values[:s], part.index[:s], [target_col],
                             f"{where}window {w}: ") for w, s in enumerate(starts)]))
            except SeriesDataError as err:
                parts[i] = err
    _usable([p if isinstance(p, SeriesDataError) else None for p in parts], on_error)
    points, bands = _predict(model, [h for _, _, hs in plans for h in hs], horizon, levels,
                             batch_size)
    frames, summaries, k = [], [], 0
    for part, starts, _ in plans:
        m = season if season is not None else infer_season(part.index)
        pasts = [part.values[:s] for s in starts]
        targets = [part.values[s:s + horizon] for s in starts]
        own = slice(k, k + len(starts))
        k += len(starts)
        scores = _score(points[own], bands[own], pasts, targets, horizon, m, cover)
        summaries.append(_summary([part.uid], scores, levels[0] if cover else None, horizon, m,
                                  id_col))
        for s, point, band, past in zip(starts, points[own], bands[own], pasts, strict=True):
            naive = seasonal_naive(torch.from_numpy(past)[None], horizon, m)[0, :, 0].numpy()
            data = {id_col: [part.uid] * horizon, time_col: part.index[s:s + horizon],
                    "cutoff": [part.index[s - 1]] * horizon,
                    target_col: part.values[s:s + horizon, 0], name: point[:, 0],
                    **{c.replace(f"{target_col}-", f"{name}-", 1): v
                       for c, v in _band_frame(band, [target_col], levels).items()},
                    "seasonal_naive": naive}
            frames.append(pd.DataFrame(data))
    cv = pd.concat(frames, ignore_index=True)
    cv = cv[[id_col, time_col, "cutoff", target_col, *_ordered([name], levels), "seasonal_naive"]]
    summary = pd.concat(summaries)
    summary.attrs.update(horizon=horizon, season=season, level=levels[0] if cover else None)
    return cv, summary


# ---- plots ---------------------------------------------------------------------------------

def _draw(ax: Any, past: pd.Series, forecast: pd.DataFrame, point: str, label: str) -> None:
    """One panel: ``past`` values, then ``forecast[point]`` and its interval columns shaded
    (``<point>-lo-L`` / ``<point>-hi-L``; wider intervals lighter, drawn first)."""
    ax.plot(past.index, past.to_numpy(), color="0.3", linewidth=1.0, label="history")
    bands = _bands_of(forecast, point)
    for i, (level, lo, hi) in enumerate(bands):
        ax.fill_between(forecast.index, forecast[lo].to_numpy(), forecast[hi].to_numpy(),
                        color="tab:orange", linewidth=0,
                        alpha=0.35 - 0.2 * (len(bands) - 1 - i) / max(len(bands) - 1, 1),
                        label=f"{format_level(level)}% interval")
    ax.plot(forecast.index, forecast[point].to_numpy(), color="tab:orange", linewidth=1.4,
            label="forecast")
    if len(past):
        ax.axvline(past.index[-1], color="0.6", linestyle=":", linewidth=0.8)
    ax.set_ylabel(label)
    ax.grid(alpha=0.3)


def _save(fig: Any, axes: Any, path: str | Path, title: str, dates: bool) -> Path:
    if dates:
        fig.autofmt_xdate()
    axes[0, 0].legend(loc="upper left")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path


def plot_forecast(history: pd.DataFrame, forecast: pd.DataFrame, path: str | Path, *,
                  columns: Sequence[str] | None = None, history_steps: int | None = None,
                  title: str = "") -> Path:
    """One panel per column: the last ``history_steps`` observed values (default 4 x horizon),
    the forecast after them and its intervals (``<col>-lo-L`` / ``<col>-hi-L`` columns, shaded,
    wider ones lighter). Written as PNG (or any format matplotlib knows by suffix)."""
    plt = pyplot("plot_forecast")

    points = [c for c in forecast.columns if c in history.columns]
    columns = list(columns or points)
    unknown = [c for c in columns if c not in points]
    if unknown:
        raise ValueError(f"cannot plot {unknown}: forecast columns are {points}")
    steps = history_steps or 4 * len(forecast)
    past = history[columns].iloc[-steps:]
    fig, axes = plt.subplots(len(columns), 1, figsize=(10, 2.6 * len(columns)), sharex=True,
                             squeeze=False)
    for ax, column in zip(axes[:, 0], columns, strict=True):
        _draw(ax, past[column], forecast, column, str(column))
    try:
        return _save(fig, axes, path, title, isinstance(forecast.index, pd.DatetimeIndex))
    finally:
        plt.close(fig)


def plot_long(df: pd.DataFrame, forecast: pd.DataFrame, path: str | Path, *,
              ids: Sequence[object] | None = None, max_series: int = 6,
              id_col: str = "unique_id", time_col: str = "ds", target_col: str = "y",
              history_steps: int | None = None, title: str = "") -> Path:
    """:func:`plot_forecast` for long tables: a panel per series (``ids``, default the first
    ``max_series`` of ``forecast``), its history from ``df`` and its :func:`forecast_long`
    rows (the point column is the one that is neither id, time nor an interval)."""
    plt = pyplot("plot_long")

    known = {str(k): k for k in dict.fromkeys(forecast[id_col])}     # ids as typed -> as stored
    ids = [str(i) for i in ids] if ids else list(known)[:max_series]
    if (unknown := [i for i in ids if i not in known]):
        raise ValueError(f"cannot plot series {unknown}: the forecast has {list(known)[:10]}"
                         + (" ..." if len(known) > 10 else ""))
    ids = [known[i] for i in ids]
    others = [c for c in forecast.columns if c not in (id_col, time_col)]
    point = next(c for c in others if not any(c.startswith(f"{o}-") for o in others if o != c))
    dates = not pd.api.types.is_integer_dtype(df[time_col])
    fig, axes = plt.subplots(len(ids), 1, figsize=(10, 2.6 * len(ids)), squeeze=False)
    for ax, uid in zip(axes[:, 0], ids, strict=True):
        ahead = forecast[forecast[id_col] == uid].set_index(time_col)
        rows = df[df[id_col] == uid]
        stamps = pd.to_datetime(rows[time_col]) if dates else rows[time_col]
        past = pd.Series(pd.to_numeric(rows[target_col], errors="coerce").to_numpy(),
                         index=pd.Index(stamps)).sort_index()
        _draw(ax, past.iloc[-(history_steps or 4 * len(ahead)):], ahead, point, str(uid))
        ax.tick_params(axis="x", labelrotation=20)   # each panel its own dates
    try:
        return _save(fig, axes, path, title, dates=False)
    finally:
        plt.close(fig)


def _bands_of(forecast: pd.DataFrame, column: str) -> list[tuple[float, str, str]]:
    """(level, lower column, upper column) of ``column``'s intervals, widest first."""
    prefix = f"{column}-lo-"
    out = []
    for name in forecast.columns:
        if str(name).startswith(prefix):
            suffix = str(name)[len(prefix):]
            upper = f"{column}-hi-{suffix}"
            try:
                level = float(suffix)
                interval_quantiles(level)
            except ValueError:
                continue
            if upper in forecast.columns:
                out.append((level, str(name), upper))
    return sorted(out, reverse=True)

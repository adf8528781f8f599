"""Time-series data: the ETTh1 benchmark (Informer / PatchTST protocol), a user's own CSV or
DataFrame (validated, optionally regularised), chronological splits with a train-only
:class:`StandardScaler`, and sliding (look-back, horizon) windows."""

from __future__ import annotations

import difflib
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd
import torch

from zoo import hub
from zoo.data import OnError, data_root

logger = logging.getLogger(__name__)

ETTH1_COLUMNS = ("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT")
ETTH1_URL = ("https://raw.githubusercontent.com/zhouhaoyi/ETDataset/"
             "1d16c8f4f943005d613b5bc962e9eeb06058cf07/ETT-small/ETTh1.csv")
ETTH1_SHA256 = "f18de3ad269cef59bb07b5438d79bb3042d3be49bdeecf01c1cd6d29695ee066"
# Informer's Dataset_ETT_hour borders, in rows of 30-day "months" of 24 hours: train 12 months,
# val 4, test 4; val / test also take the `lookback` rows before their start; rows >= 14400 unused.
ETTH1_BORDERS: dict[str, tuple[int, int]] = {
    "train": (0, 12 * 30 * 24), "val": (12 * 30 * 24, 16 * 30 * 24), "test": (16 * 30 * 24, 20 * 30 * 24)}


class SeriesDataError(ValueError):
    """A user's series that cannot be used as given; the message names the file, column or row."""


def etth1_path(configured: str | Path | None = None, *, download: bool = False) -> Path:
    """``data_root(configured)/ett/ETTh1.csv`` (``configured`` may also be the csv itself or the
    folder holding it), verified against ``ETTH1_SHA256`` (a mismatch raises
    :class:`zoo.hub.ChecksumError`). When absent, ``download=True`` fetches ``ETTH1_URL`` through
    :func:`zoo.hub.download` and copies it there; otherwise FileNotFoundError says how to get it."""
    base = data_root(configured)
    if base.suffix.lower() == ".csv":
        target = base
    elif base.name == "ett" or (base / "ETTh1.csv").is_file():
        target = base / "ETTh1.csv"
    else:
        target = base / "ett" / "ETTh1.csv"
    if not target.is_file():
        if not download:
            raise FileNotFoundError(
                f"no ETTh1 csv at {target}; set $ZOO_DATA (or the config's data root) to the folder "
                f"holding ett/ETTh1.csv, or call zoo.data.series.etth1_path(..., download=True) to "
                f"fetch it from {ETTH1_URL}")
        cached = hub.download(ETTH1_URL, sha256=ETTH1_SHA256, filename="ETTh1.csv")
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=target.parent, prefix=".ETTh1.", suffix=".part")
        os.close(fd)
        try:
            shutil.copyfile(cached, tmp)
            os.replace(tmp, target)
        finally:
            Path(tmp).unlink(missing_ok=True)
        logger.info("ETTh1 downloaded to %s", target)
    if (actual := hub.sha256_of(target)) != ETTH1_SHA256:
        raise hub.ChecksumError(f"{target}: sha256 is {actual}, expected {ETTH1_SHA256} (ETTh1 from "
                                f"{ETTH1_URL}); replace the file or delete it and pass download=True")
    return target


@dataclass(frozen=True)
class StandardScaler:
    """Per-channel ``(x - mean) / std``; mean and std are (C,) float64 tensors. ``std`` is the
    population std (ddof=0, as sklearn); a constant channel gets std 1 so it maps to 0."""

    mean: torch.Tensor   # (C,)
    std: torch.Tensor    # (C,)

    @classmethod
    def fit(cls, values: torch.Tensor) -> StandardScaler:
        """Statistics of ``values`` (T, C) over time, ignoring NaNs (computed in float64)."""
        if values.ndim != 2 or values.shape[0] == 0:
            raise ValueError(f"StandardScaler.fit expects values of shape (T >= 1, C), got {tuple(values.shape)}")
        values = values.double()
        mean = values.nanmean(0)                                          # (C,)
        if (empty := torch.isnan(mean).nonzero().flatten().tolist()):
            raise SeriesDataError(f"cannot fit a scaler: channel(s) {empty} hold no values (all NaN)")
        std = (values - mean).square().nanmean(0).sqrt()                  # (C,)
        # a constant channel may come out as rounding noise rather than an exact 0 (as sklearn)
        constant = std <= 10 * torch.finfo(torch.float64).eps * mean.abs().clamp(min=1)
        return cls(mean, torch.where(constant, torch.ones_like(std), std))

    def _check(self, values: torch.Tensor) -> None:
        if not values.is_floating_point():
            raise TypeError(f"scaler expects floating-point values, got {values.dtype}")
        if values.ndim == 0 or values.shape[-1] != self.mean.shape[0]:
            raise ValueError(f"scaler fitted on {self.mean.shape[0]} channels, got values of shape "
                             f"{tuple(values.shape)}")

    def transform(self, values: torch.Tensor) -> torch.Tensor:
        """(..., C) -> (..., C) standardized, in the dtype of ``values``."""
        self._check(values)
        return (values - self.mean.to(values)) / self.std.to(values)

    def inverse_transform(self, values: torch.Tensor) -> torch.Tensor:
        """(..., C) standardized -> (..., C) in the original units."""
        self._check(values)
        return values * self.std.to(values) + self.mean.to(values)

    def to_dict(self) -> dict[str, list[float]]:
        """JSON-able ``{"mean": [...], "std": [...]}``, to save beside a model."""
        return {"mean": self.mean.tolist(), "std": self.std.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> StandardScaler:
        mean, std = (torch.as_tensor(d[k], dtype=torch.float64) for k in ("mean", "std"))
        if mean.ndim != 1 or mean.shape != std.shape or not (std > 0).all():
            raise ValueError(f"scaler dict needs equal-length 1-D mean and std (std > 0), got {d}")
        return cls(mean, std)


@dataclass
class SeriesSplits:
    """Scaled float32 splits; val and test start with the ``lookback`` rows before their border."""

    train: torch.Tensor   # (T_train, C)
    val: torch.Tensor     # (T_val, C)
    test: torch.Tensor    # (T_test, C)
    scaler: StandardScaler
    columns: tuple[str, ...]
    timestamps: pd.DatetimeIndex | None   # of the whole frame, for plotting
    borders: dict[str, tuple[int, int]]      # rows [start, end) of the frame used per split


def _check_lookback(lookback: int, name: str = "lookback") -> None:
    if isinstance(lookback, bool) or not isinstance(lookback, int) or lookback < 1:
        raise ValueError(f"{name} must be an int >= 1, got {lookback!r}")


def _splits(frame: pd.DataFrame, lookback: int, train_end: int, val_end: int, test_end: int) -> SeriesSplits:
    """Split rows [0, train_end), [train_end - L, val_end), [val_end - L, test_end)."""
    _check_lookback(lookback)
    if lookback > train_end:
        raise SeriesDataError(f"lookback {lookback} is longer than the {train_end} training rows: "
                              "the validation windows would start before the first row")
    if not all(pd.api.types.is_numeric_dtype(t) for t in frame.dtypes) or frame.isna().any().any():
        raise SeriesDataError("the frame must hold numeric columns with no missing values; "
                              "read it with read_series(...) (see its missing= policy)")
    values = torch.tensor(frame.to_numpy(np.float64))                      # (T, C)
    scaler = StandardScaler.fit(values[:train_end])
    scaled = scaler.transform(values).float()
    borders = {"train": (0, train_end), "val": (train_end - lookback, val_end),
               "test": (val_end - lookback, test_end)}
    parts = {k: scaled[lo:hi] for k, (lo, hi) in borders.items()}
    timestamps = frame.index if isinstance(frame.index, pd.DatetimeIndex) else None
    return SeriesSplits(**parts, scaler=scaler, columns=tuple(str(c) for c in frame.columns),
                        timestamps=timestamps, borders=borders)


def etth1_splits(lookback: int, *, root: str | Path | None = None) -> SeriesSplits:
    """ETTh1 as Informer / PatchTST split it, all 7 channels: train rows [0, 8640) (the scaler is
    fitted on these only), val rows [8640 - L, 11520), test rows [11520 - L, 14400)."""
    frame = read_series(etth1_path(root), target_columns=ETTH1_COLUMNS)
    return _splits(frame, lookback, ETTH1_BORDERS["train"][1], ETTH1_BORDERS["val"][1],
                   ETTH1_BORDERS["test"][1])


def _not_found(kind: str, name: object, choices: Sequence[object], where: str, tip: str) -> SeriesDataError:
    close = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    hint = f"; did you mean {close[0]!r}?" if close else ""
    return SeriesDataError(f"{where}: no {kind} {name!r}{hint} (columns: {[str(c) for c in choices]}); {tip}")


def _numeric(frame: pd.DataFrame, columns: Sequence[object], where: str,
             row: Callable[[int], str], on_error: str = "raise") -> pd.DataFrame:
    """The target columns as float64; non-numeric or infinite values raise naming column and row
    (``on_error="skip"``: non-numeric values are read as missing, with a warning naming them)."""
    out, bad = {}, []
    for col in columns:
        raw = frame[col]
        num = raw if pd.api.types.is_numeric_dtype(raw) else pd.to_numeric(raw, errors="coerce")
        wrong = np.flatnonzero((num.isna() & raw.notna()).to_numpy())
        if len(wrong) and on_error == "skip":
            logger.warning("%s: column %r: %d non-numeric value(s) (e.g. %r at %s) read as "
                           "missing", where, col, len(wrong), raw.iloc[wrong[0]], row(wrong[0]))
        elif len(wrong):
            bad.append(f"{col!r} (e.g. {raw.iloc[wrong[0]]!r} at {row(wrong[0])})")
            continue
        out[col] = num.astype(np.float64)
        if (inf := np.flatnonzero(np.isinf(out[col].to_numpy()))).size:
            raise SeriesDataError(f"{where}: column {col!r} holds an infinite value at {row(inf[0])}")
    if bad:
        numeric = [str(c) for c in columns if c in out]
        raise SeriesDataError(f"{where}: non-numeric column(s) {', '.join(bad)}; choose the series "
                              f"to model with target_columns=... (numeric ones: {numeric}), or "
                              "on_error='skip' to read such values as missing")
    return pd.DataFrame(out, index=frame.index)


def _regularize(frame: pd.DataFrame, freq: str | None, irregular: str, where: str) -> pd.DataFrame:
    """Check the DatetimeIndex against a regular grid; ``"reindex"`` inserts NaN rows in gaps."""
    index = frame.index
    if freq is not None:
        try:
            step = pd.tseries.frequencies.to_offset(freq)
        except ValueError as err:
            raise ValueError(f"freq={freq!r} is not a pandas frequency (e.g. 'h', '15min', 'D', 'MS')") from err
    elif (step := pd.DatetimeIndex(index, freq="infer").freq if len(index) >= 3 else None) is None:
        step = pd.Series(index[1:] - index[:-1]).mode().iloc[0]            # most common difference
    grid = pd.date_range(index[0], index[-1], freq=step, name=index.name)
    if len(off := index.difference(grid)):
        raise SeriesDataError(f"{where}: timestamp {off[0]} is off the regular {step} grid starting at "
                              f"{index[0]} ({len(off)} such rows); resample the series, or pass freq=...")
    if not len(gaps := grid.difference(index)):
        return frame
    if irregular == "error":
        before, after = index[index < gaps[0]][-1], index[index > gaps[0]][0]
        raise SeriesDataError(
            f"{where}: irregular timestamps: a gap from {before} to {after} where the step is {step} "
            f"({len(gaps)} missing timestamps in all); pass irregular='reindex' to insert empty rows "
            "(filled by the missing= policy), or freq=... to declare the step")
    logger.info("%s: inserted %d empty rows to make the %s grid regular", where, len(gaps), step)
    return frame.reindex(grid)


Missing = Literal["error", "interpolate", "keep"]   # NaN / empty cells
Irregular = Literal["error", "reindex"]        # gaps in the time grid


def read_series(source: str | Path | pd.DataFrame, *, time_column: str | None = "date",
                target_columns: Sequence[str] | None = None, freq: str | None = None,
                irregular: Irregular = "error", missing: Missing = "error",
                on_error: OnError = "raise") -> pd.DataFrame:
    """A CSV file or DataFrame -> a (T, C) float64 DataFrame of the target columns, indexed by
    its sorted timestamps (a RangeIndex, rows in order, when ``time_column`` is None).

    Unsorted timestamps are sorted; duplicated ones are an error. Gaps in the grid (``freq``, else
    the inferred / most common step) are an error, or with ``irregular="reindex"`` become NaN rows.
    Missing values are an error, or with ``missing="interpolate"`` are filled linearly in time,
    then by the nearest value at the ends, or with ``missing="keep"`` stay NaN (for models that
    mask missing values, such as TimesFM). A non-numeric value in a target column is an error
    naming column and line, or with ``on_error="skip"`` a missing value (then ``missing``
    decides). A DataFrame indexed by timestamps may omit the time column.
    """
    for name, value, choices in (("irregular", irregular, Irregular), ("missing", missing, Missing),
                                 ("on_error", on_error, OnError)):
        if value not in get_args(choices):
            raise ValueError(f"{name} must be " + " or ".join(map(repr, get_args(choices)))
                             + f", got {value!r}")
    if isinstance(source, pd.DataFrame):
        where, row = "DataFrame", (lambda i: f"row {i}")
        frame = source.copy()
        if time_column is not None and time_column not in frame.columns and isinstance(frame.index, pd.DatetimeIndex):
            frame = frame.rename_axis(time_column).reset_index()
    else:
        path = Path(source).expanduser()
        where, row = str(path), (lambda i: f"line {i + 2}")                # line 1 is the header
        if not path.is_file():
            raise FileNotFoundError(f"no series file at {path}")
        try:
            frame = pd.read_csv(path)
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
            raise SeriesDataError(f"{where}: cannot read as CSV: {err}") from err
    if len(frame) < 2:
        raise SeriesDataError(f"{where}: {len(frame)} row(s); a series needs at least 2")
    if time_column is not None and time_column not in frame.columns:
        raise _not_found("time column", time_column, list(frame.columns), where,
                         "pass time_column=<name>, or time_column=None to take the rows in order")
    if isinstance(target_columns, str):
        target_columns = [target_columns]
    others = [c for c in frame.columns if c != time_column]
    if target_columns is None:
        target_columns = others
    for name in target_columns:
        if name not in others:
            raise _not_found("target column", name, others, where, "fix target_columns=[...]")
    if not target_columns:
        raise SeriesDataError(f"{where}: no target columns (columns: {list(frame.columns)})")
    values = _numeric(frame, list(target_columns), where, row, on_error)
    if time_column is not None:
        try:
            stamps = pd.to_datetime(frame[time_column], errors="coerce")
        except (ValueError, TypeError) as err:
            raise SeriesDataError(f"{where}: cannot parse time column {time_column!r}: {err}") from err
        if len(bad := np.flatnonzero(stamps.isna().to_numpy())):
            raise SeriesDataError(f"{where}: cannot parse time column {time_column!r} value "
                                  f"{frame[time_column].iloc[bad[0]]!r} at {row(bad[0])} ({len(bad)} such rows)")
        values.index = pd.DatetimeIndex(stamps, name=time_column)
        if not values.index.is_monotonic_increasing:
            logger.info("%s: timestamps are not in order; sorting them", where)
            values = values.sort_index(kind="stable")
        if (dup := values.index.duplicated()).any():
            first = list(dict.fromkeys(values.index[dup]))[:3]
            raise SeriesDataError(f"{where}: {dup.sum()} row(s) repeat an earlier timestamp (first: "
                                  f"{', '.join(map(str, first))}); aggregate them first")
        values = _regularize(values, freq, irregular, where)
    else:
        values = values.reset_index(drop=True)
    if (empty := [str(c) for c in values.columns if values[c].isna().all()]):
        raise SeriesDataError(f"{where}: column(s) {empty} hold no values")
    if (na := values.isna()).any().any():
        if missing == "error":
            counts = {str(c): int(n) for c, n in na.sum().items() if n}
            i = int(np.flatnonzero(na.any(axis=1).to_numpy())[0])
            at = values.index[i] if time_column is not None else row(i)
            raise SeriesDataError(f"{where}: missing values {counts} (first at {at}); pass "
                                  "missing='interpolate' to fill them linearly in time, or "
                                  "missing='keep' for a model that masks them")
        if missing == "keep":
            logger.info("%s: keeping %d missing values as NaN", where, int(na.sum().sum()))
            return values
        logger.info("%s: interpolating %d missing values", where, int(na.sum().sum()))
        values = values.interpolate(method="time" if time_column is not None else "linear").ffill().bfill()
    return values


def chronological_split(frame: pd.DataFrame, lookback: int, *,
                        fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
                        val_start: str | None = None, test_start: str | None = None) -> SeriesSplits:
    """Split a :func:`read_series` frame in time order, never shuffled, scaler fitted on train.

    By ``fractions`` of rows (Informer's custom-data rule: train = first ``int(T * f_train)``,
    test = last ``int(T * f_test)``, val = the rest), or by dates: val / test start at the first
    row at or after ``val_start`` / ``test_start`` (both or neither; ``fractions`` is then unused).
    Val and test get the ``lookback`` rows before their border prepended.
    """
    total = len(frame)
    if (val_start is None) != (test_start is None):
        raise ValueError("pass both val_start and test_start, or neither")
    if val_start is not None:
        if not isinstance(frame.index, pd.DatetimeIndex):
            raise SeriesDataError("splitting by dates needs a frame indexed by timestamps "
                                  "(read_series with a time_column)")
        first, last = frame.index[0], frame.index[-1]
        starts = {k: pd.Timestamp(v) for k, v in (("val_start", val_start), ("test_start", test_start))}
        if frame.index.tz is not None:  # naive dates are read in the series' time zone
            starts = {k: ts if ts.tz else ts.tz_localize(frame.index.tz) for k, ts in starts.items()}
        for k, ts in starts.items():
            if not first < ts <= last:
                raise SeriesDataError(f"{k}={ts} is outside the series' range ({first}, {last}]")
        if not starts["val_start"] < starts["test_start"]:
            raise SeriesDataError(f"val_start={starts['val_start']} must come before test_start={starts['test_start']}")
        train_end, val_end = (int(frame.index.searchsorted(ts)) for ts in starts.values())
        if train_end == val_end:
            raise SeriesDataError(f"no rows between val_start={val_start} and test_start={test_start}")
    else:
        if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1) > 1e-6:
            raise ValueError(f"fractions must be three numbers > 0 summing to 1, got {fractions}")
        train_end, n_test = int(total * fractions[0]), int(total * fractions[2])
        val_end = total - n_test
        if not 0 < train_end < val_end < total:
            raise SeriesDataError(f"{total} rows are too few to split by fractions {fractions} "
                                  f"(train {train_end}, val {val_end - train_end}, test {n_test} rows)")
    return _splits(frame, lookback, train_end, val_end, total)


class SeriesWindows(torch.utils.data.Dataset):
    """Sliding windows over ``values`` (T, C), stride 1: item i is (x, y) with
    x = values[i : i + L] (L, C) and y = values[i + L : i + L + H] (H, C); T - L - H + 1 items."""

    def __init__(self, values: torch.Tensor, lookback: int, horizon: int, *, name: str = "series") -> None:
        _check_lookback(lookback)
        _check_lookback(horizon, "horizon")
        if values.ndim != 2:
            raise ValueError(f"{name}: values must be (T, C), got shape {tuple(values.shape)}")
        self.values, self.lookback, self.horizon, self.name = values, lookback, horizon, name
        if len(self) < 1:
            raise SeriesDataError(
                f"the {name} split has {values.shape[0]} rows but needs at least lookback + horizon "
                f"= {lookback} + {horizon} = {lookback + horizon} for one window")

    def __len__(self) -> int:
        return max(0, self.values.shape[0] - self.lookback - self.horizon + 1)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        n = len(self)
        if not -n <= i < n:
            raise IndexError(f"window {i} out of range for {n} windows in the {self.name} split")
        i %= n
        end = i + self.lookback
        return self.values[i:end], self.values[end:end + self.horizon]


# ---- long tables (unique_id, ds, y), as Nixtla's libraries take them ---------------------------

LongMissing = Literal["error", "interpolate"]   # NaN / gaps in a long table's series


def infer_step(index: pd.DatetimeIndex) -> pd.DateOffset | None:
    """pandas' inferred frequency of ``index``, else its most common step (None: one row)."""
    if len(index) >= 3:
        try:
            if (freq := pd.DatetimeIndex(index, freq="infer").freq) is not None:
                return freq
        except ValueError:          # not monotonic, or too irregular to say
            pass
    if len(index) >= 2:
        return pd.tseries.frequencies.to_offset(pd.Series(index).diff().mode().iloc[0])
    return None


def _fixed_step(step: pd.DateOffset | int, unit: str | None) -> int | None:
    """``step`` in whole ``unit`` (None: integer steps) when every step has that length, else
    None (a calendar step such as a week anchored on a day or a month)."""
    if unit is None:
        return int(step)
    try:
        length = pd.Timedelta(step)
    except (TypeError, ValueError):
        return None
    units, rest = divmod(length.value, int(pd.Timedelta(1, unit=unit).value))
    return int(units) if rest == 0 else None


@dataclass
class LongTable:
    """A long table's series, sorted by id, each sorted in time and on its regular grid (a
    timestamp missing from the grid is a NaN value), concatenated: series ``i`` is rows
    ``starts[i]:starts[i + 1]`` of ``stamps`` and ``values``. ``errors[i]`` is the error of a
    series that cannot be used (it then has no rows); ``steps[i]`` its time step."""

    ids: np.ndarray                                # (S,) as stored, sorted
    stamps: np.ndarray                             # (R,) datetime64 or int64
    values: np.ndarray                             # (R,) float64
    starts: np.ndarray                             # (S + 1,) int64
    steps: list[pd.DateOffset | int | None]        # (S,)
    errors: list[SeriesDataError | None]           # (S,)
    time_col: str

    @property
    def lengths(self) -> np.ndarray:
        """(S,) rows per series."""
        return np.diff(self.starts)

    def uid(self, i: int) -> object:
        """Series ``i``'s id as pandas' ``groupby`` gives it (Python scalars for numbers)."""
        return pd.Index(self.ids[i:i + 1])[0]

    def index(self, i: int) -> pd.Index:
        """Series ``i``'s grid, named after the time column (with its frequency for dates)."""
        stamps = self.stamps[self.starts[i]:self.starts[i + 1]]
        if stamps.dtype.kind == "M":
            return pd.DatetimeIndex(stamps, freq=self.steps[i], name=self.time_col)
        return pd.Index(stamps, name=self.time_col)

    def future(self, rows: np.ndarray, horizon: int) -> np.ndarray:
        """(len(rows), horizon) timestamps after the last of each series in ``rows``."""
        kind = self.stamps.dtype.kind          # "M" dates, "O" zoned dates, else integers
        unit = np.datetime_data(self.stamps.dtype)[0] if kind == "M" else None
        last = self.stamps[self.starts[rows + 1] - 1]                       # (K,)
        out = np.empty((len(rows), horizon), dtype=self.stamps.dtype)
        fixed = np.array([_fixed_step(self.steps[i], unit) if kind != "O" else None
                          for i in rows], dtype=object)
        regular = np.array([f is not None for f in fixed], dtype=bool)
        if regular.any():
            step = fixed[regular].astype(np.int64)[:, None]
            ahead = step * np.arange(1, horizon + 1)                         # (K', H)
            out[regular] = last[regular, None] + (ahead if unit is None
                                                  else ahead.astype(f"timedelta64[{unit}]"))
        for k in np.flatnonzero(~regular):     # calendar steps (weeks, months): pandas' offsets
            stamp, step = pd.Timestamp(last[k]), self.steps[rows[k]]
            out[k] = np.array([stamp + step * (j + 1) for j in range(horizon)], dtype=out.dtype)
        return out


def _parse_times(column: pd.Series) -> pd.Series:
    """``pd.to_datetime(column, errors="coerce")``, parsing each distinct text once: a long
    table repeats every timestamp once per series, and pandas' own cache decides from the
    first 500 rows, all distinct in a table sorted by series (0.23 s -> 0.03 s for 800,000
    rows of 1,400 hourly stamps). Columns that are not text are converted as they are."""
    if not (pd.api.types.is_string_dtype(column) or column.dtype == object):
        return pd.to_datetime(column, errors="coerce")
    codes, texts = pd.factorize(column)
    parsed = pd.to_datetime(pd.Series(texts), errors="coerce")
    if not isinstance(parsed.dtype, (np.dtype, pd.DatetimeTZDtype)) or parsed.dtype.kind != "M":
        return pd.to_datetime(column, errors="coerce")   # e.g. mixed objects: pandas decides
    # allow_fill: code -1 (a missing text) becomes NaT
    return pd.Series(parsed.array.take(codes, allow_fill=True), index=column.index)


def _long_columns(df: pd.DataFrame, id_col: str, time_col: str, target_col: str
                  ) -> tuple[pd.Series, bool, np.ndarray]:
    """The checked time column (timestamps or integers), whether it holds integers, and the
    targets as float64; errors name the row, series and value."""
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
    stamps = df[time_col] if integer_time else _parse_times(df[time_col])
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
    return stamps.reset_index(drop=True), integer_time, values.astype(np.float64).to_numpy()


def read_long(df: pd.DataFrame, *, id_col: str = "unique_id", time_col: str = "ds",
              target_col: str = "y", freq: str | int | None = None,
              missing: LongMissing = "error") -> LongTable:
    """A long table (a row per series and timestamp, rows in any order) -> its series, sorted
    by id, each sorted in time and put on its regular grid.

    The grid steps by ``freq``, else per series pandas' inferred frequency or the most common
    step (integer timestamps: their most common difference); a timestamp missing from it
    becomes a NaN value, filled linearly in time with ``missing="interpolate"``. A repeated
    timestamp, an infinite value, an off-grid timestamp or a single row (no step to infer) make
    that series' error. Errors about the whole table (a missing column, an unreadable
    timestamp or value) are raised, naming row and series.

    One pass for every regular series (sorted once, steps, gaps and checks computed for all
    series at once); a series with gaps, repeats or other irregularities goes through the
    per-series path, which says exactly what is wrong.
    """
    if missing not in get_args(LongMissing):
        raise ValueError(f"missing must be 'error' or 'interpolate', got {missing!r}")
    stamps, integer_time, y = _long_columns(df, id_col, time_col, target_col)
    codes, id_index = pd.factorize(df[id_col], sort=True)   # faster on arrow text than numpy's
    ids = np.asarray(id_index.to_numpy())
    counts = np.bincount(codes, minlength=len(ids))
    starts = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
    raw_t = stamps.to_numpy()
    if integer_time:
        unit, t_int = None, raw_t.astype(np.int64)
    elif raw_t.dtype.kind == "M":           # naive datetime64; aware ones go the per-series way
        unit, t_int = np.datetime_data(raw_t.dtype)[0], raw_t.view(np.int64)
    else:
        return _read_long_per_series(ids, codes, stamps, y, time_col, integer_time, freq, missing)
    order = np.lexsort((t_int, codes))       # by id, then time; ties keep the table's order
    t, y, first = t_int[order], y[order], starts[:-1]
    d0 = np.where(counts >= 2, t[np.minimum(first + 1, len(t) - 1)] - t[first], 0)
    off = np.zeros(len(t), dtype=np.int64)   # rows whose step from the row before is not d0
    off[1:] = (np.diff(t) != np.repeat(d0, counts)[1:])
    off[first] = 0

    def per_series(rows: np.ndarray) -> np.ndarray:        # (R,) -> (S,) sums
        return np.add.reduceat(rows.astype(np.int64), first)

    simple = (counts >= 3) & (d0 > 0) & (per_series(off) == 0) & (per_series(np.isinf(y)) == 0)
    if missing == "interpolate":
        simple &= per_series(np.isnan(y)) == 0
    steps: list[pd.DateOffset | int | None] = [None] * len(ids)
    uniform = freq is not None or unit is None
    given = (int(freq) if unit is None else pd.tseries.frequencies.to_offset(freq)) \
        if freq is not None else None
    inferred: dict[int, pd.DateOffset | None] = {}   # sub-daily step -> pandas' frequency
    day = int(pd.Timedelta(1, unit="D").value // pd.Timedelta(1, unit=unit or "ns").value)
    for i in np.flatnonzero(simple).tolist():
        step: pd.DateOffset | int | None
        if uniform:
            step = given if given is not None else int(d0[i])
        elif d0[i] % day:   # pandas infers a sub-daily constant step from its length alone
            if int(d0[i]) not in inferred:
                inferred[int(d0[i])] = infer_step(pd.DatetimeIndex(
                    t[first[i]:first[i] + 3].astype(f"datetime64[{unit}]")))
            step = inferred[int(d0[i])]
        else:               # days, weeks, years...: from the calendar of every timestamp
            step = infer_step(pd.DatetimeIndex(
                t[first[i]:starts[i + 1]].astype(f"datetime64[{unit}]")))
        if step is not None and _fixed_step(step, unit) == d0[i]:
            steps[i] = step
        else:
            simple[i] = False
    errors: list[SeriesDataError | None] = [None] * len(ids)
    kind = np.dtype(np.int64) if unit is None else raw_t.dtype
    if simple.all():
        stamps_out, values_out = t.astype(kind), y
    else:
        boxed = pd.Index(ids)       # ids as groupby gives them, for messages
        pieces_t, pieces_y = [], []
        for i in range(len(ids)):
            rows = slice(first[i], starts[i + 1])
            if simple[i]:
                pieces_t.append(t[rows].astype(kind))
                pieces_y.append(y[rows])
                continue
            ds = pd.Series(t[rows].astype(kind))
            try:
                grid, filled, steps[i] = _regular_series(boxed[i], ds, y[rows], time_col,
                                                         integer_time, freq, missing)
            except SeriesDataError as err:
                errors[i], grid, filled = err, ds.iloc[:0], y[:0]
            pieces_t.append(np.asarray(grid.to_numpy()).astype(kind))
            pieces_y.append(filled)
        stamps_out, values_out = np.concatenate(pieces_t), np.concatenate(pieces_y)
        starts = np.concatenate([[0], np.cumsum([len(p) for p in pieces_y])]).astype(np.int64)
    return LongTable(ids, stamps_out, values_out, starts, steps, errors, time_col)


def _read_long_per_series(ids: np.ndarray, codes: np.ndarray, stamps: pd.Series, y: np.ndarray,
                          time_col: str, integer_time: bool, freq: str | int | None,
                          missing: LongMissing) -> LongTable:
    """:func:`read_long` one series at a time (time zones and other timestamp kinds)."""
    table = pd.DataFrame({"code": codes, "ds": stamps, "y": y})
    pieces_t, pieces_y, boxed = [], [], pd.Index(ids)
    steps: list[pd.DateOffset | int | None] = [None] * len(ids)
    errors: list[SeriesDataError | None] = [None] * len(ids)
    for i, rows in table.groupby("code", sort=True):
        group = rows.sort_values("ds", kind="stable")
        try:
            grid, filled, steps[i] = _regular_series(boxed[i], group["ds"],
                                                     group["y"].to_numpy(), time_col,
                                                     integer_time, freq, missing)
        except SeriesDataError as err:
            errors[i], grid, filled = err, group["ds"].iloc[:0], np.empty(0)
        pieces_t.append(grid.to_numpy())
        pieces_y.append(filled)
    starts = np.concatenate([[0], np.cumsum([len(p) for p in pieces_y])]).astype(np.int64)
    return LongTable(ids, np.concatenate(pieces_t), np.concatenate(pieces_y), starts, steps,
                     errors, time_col)


def _regular_series(uid: object, ds: pd.Series, y: np.ndarray, time_col: str,
                    integer_time: bool, freq: str | int | None, missing: LongMissing
                    ) -> tuple[pd.Index, np.ndarray, pd.DateOffset | int]:
    """One series sorted in time -> its grid, values on it (T,) and step; raises naming it."""
    where = f"series {uid!r}: "
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
    return grid, np.array(series.to_numpy(np.float64)), step

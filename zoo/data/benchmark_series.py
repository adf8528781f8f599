"""Real series for zero-shot forecasting, and the evaluation that scores a forecaster on them.

A forecaster pre-trained on synthetic series is scored on real series it never saw, against
the seasonal-naive forecast, with MASE (Hyndman & Koehler, "Another look at measures of
forecast accuracy", IJF 2006) as the M4, Monash and Chronos benchmarks do. Every series is
univariate, float64, in its own units (MASE is scale-free, so nothing is standardised).

| name | source | freq | length | season | horizon | windows |
| --- | --- | --- | --- | --- | --- | --- |
| ``etth1_{HUFL,HULL,MUFL,MULL,LUFL,LULL,OT}`` | ETTh1 rows [0, 14400) | h | 14400 | 24 | 24 | 120 |
| ``co2`` | statsmodels co2 (Mauna Loa) | W-SAT | 2284 | 52 | 13 | 35 |
| ``macrodata_{realgdp,...,realint}`` (12) | statsmodels macrodata | QS | 203 (202) | 4 | 8 | 5 |
| ``elnino`` | statsmodels elnino (Nino 1+2 SST) | MS | 732 | 12 | 12 | 12 |
| ``sunspots`` | statsmodels sunspots | YS | 309 | 1 | 6 | 10 |
| ``nile`` | statsmodels nile | YS | 100 | 1 | 6 | 3 |
| ``interest_inflation_{Dp,R}`` | statsmodels interest_inflation | QS | 107 | 4 | 8 | 2 |
| ``danish_{lrm,lry,lpy,ibo,ide}`` | statsmodels danish_data | QS | 55 | 4 | 8 | 1 |

- Seasons are :func:`zoo.metrics.season_length` of the frequency (M4's: 24, 52, 12, 4, 1).
- Horizons follow the M4 competition (weekly 13, quarterly 8, yearly 6) and one season for
  hourly (24, ETTh1's day) and monthly (12) data, as the Monash archive does for most of its
  monthly sets (M4 uses 48 and 18).
- Windows: the last 20% of each series (ETTh1's standard test share: its test split is rows
  [11520, 14400) of the 14,400), in whole non-overlapping windows of the horizon, the latest
  ending at the last point, at least one: ``max(1, floor(0.2 * length / horizon))``. So every
  window's history keeps at least 80% of its series (>= 47 points, 11 seasons, for danish).
- ETTh1 stops at row 14,400, the end of the Informer / PatchTST test split (the whole standard
  protocol); its 7 channels are scored as 7 univariate series.
- co2: 59 of the 2284 weeks are missing (the longest run 18 weeks, in 1964), all before 1986 and
  so in no window's target; they are filled by linear interpolation.
- macrodata ``infl`` and ``realint`` start in 1959Q2: their 1959Q1 value is a 0.00 placeholder
  (no earlier CPI to take a log difference from). Most macrodata columns are seasonally adjusted.
- Left out: statsmodels ``strikes`` (Kennan 1985) holds one row per strike (its duration and the
  unanticipated industrial production when it began), not observations on a time grid.

ETTh1 needs ``$ZOO_DATA/ett/ETTh1.csv`` (see :func:`zoo.data.series.etth1_path`), the others
the optional ``statsmodels`` package (``pip install statsmodels``), which ships them.
"""

from __future__ import annotations

import difflib
import importlib
import logging
import math
import statistics
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any, ClassVar

import numpy as np
import pandas as pd
import torch

from zoo.data.series import ETTH1_BORDERS, ETTH1_COLUMNS, etth1_path, read_series
from zoo.metrics import (
    coverage,
    interval_indices,
    mase,
    quantile_levels,
    seasonal_naive,
    weighted_quantile_loss,
)

logger = logging.getLogger(__name__)

TEST_SHARE = 0.2   # the share of each series its windows cover (ETTh1's test split: 2880 / 14400)
ETTH1_ROWS = ETTH1_BORDERS["test"][1]   # 14,400: the end of the standard test split
MONTHS = ("JAN", "FEB", "MAR", "APR", "MAY", "JUN", "JUL", "AUG", "SEP", "OCT", "NOV", "DEC")


@dataclass(frozen=True, eq=False)
class BenchmarkSeries:
    """One real univariate series and how it is scored: ``horizon`` steps per window,
    ``windows`` windows by default, MASE scaled with season ``season``."""

    name: str                 # e.g. "etth1_OT", "macrodata_realgdp"
    source: str               # where it comes from, e.g. "statsmodels.datasets.macrodata"
    freq: str                 # pandas frequency of the time grid, e.g. "h", "W-SAT", "QS"
    season: int               # steps in one season (zoo.metrics.season_length(freq))
    horizon: int              # steps forecast per window
    values: np.ndarray        # (T,) float64, finite (stored as a read-only copy)
    license: str
    citation: str
    timestamps: pd.DatetimeIndex | None = None   # (T,), where known
    notes: str = ""           # how the values were prepared (gaps filled, rows dropped)
    windows: int = 0          # default evaluation windows; 0: default_windows(T, horizon)

    def __post_init__(self) -> None:
        values = np.array(self.values, dtype=np.float64)
        values.flags.writeable = False
        if values.ndim != 1 or len(values) < 2 or not np.isfinite(values).all():
            raise ValueError(f"{self.name}: values must be a 1-D series of >= 2 finite numbers, "
                             f"got shape {values.shape} with {int(np.isnan(values).sum())} NaN")
        if self.timestamps is not None and len(self.timestamps) != len(values):
            raise ValueError(f"{self.name}: {len(self.timestamps)} timestamps for "
                             f"{len(values)} values")
        counts = {"season": self.season, "horizon": self.horizon, "windows": self.windows + 1}
        if bad := {k: v for k, v in counts.items()
                   if isinstance(v, bool) or not isinstance(v, int) or v < 1}:
            raise ValueError(f"{self.name}: season and horizon must be ints >= 1 and windows "
                             f">= 0, got {bad}")
        object.__setattr__(self, "values", values)
        if self.windows == 0:
            object.__setattr__(self, "windows", default_windows(len(values), self.horizon))

    def __len__(self) -> int:
        return len(self.values)


def default_windows(length: int, horizon: int) -> int:
    """``max(1, floor(TEST_SHARE * length / horizon))``: the last 20% in whole windows."""
    return max(1, int(TEST_SHARE * length) // horizon)


@dataclass(frozen=True)
class _Source:
    """A group of series from one file or dataset: ``load(root)`` -> {column: values} and the
    timestamps of the longest column (a shorter column covers the last rows)."""

    group: str
    columns: tuple[str, ...]   # () for a single series named after the group
    freq: str
    season: int
    horizon: int
    source: str                # e.g. "statsmodels.datasets.danish_data"
    license: str
    citation: str
    load: Callable[[Path | None], tuple[dict[str, np.ndarray], pd.DatetimeIndex]]
    notes: dict[str, str] = field(default_factory=dict)   # column (or "") -> note

    def names(self) -> list[str]:
        return [f"{self.group}_{c}" for c in self.columns] if self.columns else [self.group]


def _statsmodels_dataset(name: str) -> ModuleType:
    try:
        return importlib.import_module(f"statsmodels.datasets.{name}")
    except ImportError as err:
        raise ImportError(f"benchmark series from statsmodels.datasets.{name} need the optional "
                          "'statsmodels' package: pip install statsmodels (or pass "
                          "skip_missing=True to leave them out)") from err


def _quarters(frame: pd.DataFrame) -> pd.DatetimeIndex:
    """Quarter starts from float ``year`` and ``quarter`` columns, checked to be consecutive."""
    year, quarter = int(frame["year"].iloc[0]), int(frame["quarter"].iloc[0])
    index = pd.date_range(pd.Timestamp(year, 3 * quarter - 2, 1), periods=len(frame), freq="QS")
    if not ((index.year == frame["year"].to_numpy()).all()
            and (index.quarter == frame["quarter"].to_numpy()).all()):
        raise ValueError("year / quarter columns are not consecutive quarters")
    return index


def _load_etth1(root: Path | None) -> tuple[dict[str, np.ndarray], pd.DatetimeIndex]:
    frame = read_series(etth1_path(root), target_columns=ETTH1_COLUMNS).iloc[:ETTH1_ROWS]
    return {c: frame[c].to_numpy(np.float64) for c in ETTH1_COLUMNS}, pd.DatetimeIndex(frame.index)


def _load_co2(root: Path | None) -> tuple[dict[str, np.ndarray], pd.DatetimeIndex]:
    co2 = _statsmodels_dataset("co2").load_pandas().data["co2"]
    return {"": co2.interpolate(method="linear").to_numpy(np.float64)}, pd.DatetimeIndex(co2.index)


def _load_macrodata(root: Path | None) -> tuple[dict[str, np.ndarray], pd.DatetimeIndex]:
    frame = _statsmodels_dataset("macrodata").load_pandas().data
    values = {c: frame[c].to_numpy(np.float64) for c in _MACRO_COLUMNS}
    for c in ("infl", "realint"):   # 1959Q1 holds a 0.00 placeholder
        values[c] = values[c][1:]
    return values, _quarters(frame)


def _load_elnino(root: Path | None) -> tuple[dict[str, np.ndarray], pd.DatetimeIndex]:
    frame = _statsmodels_dataset("elnino").load_pandas().data     # one row per year, JAN..DEC
    start = pd.Timestamp(int(frame["YEAR"].iloc[0]), 1, 1)
    values = frame[list(MONTHS)].to_numpy(np.float64).reshape(-1)   # year by year, row-major
    return {"": values}, pd.date_range(start, periods=len(values), freq="MS")


def _yearly(dataset: str, year: str, column: str
            ) -> Callable[[Path | None], tuple[dict[str, np.ndarray], pd.DatetimeIndex]]:
    def load(root: Path | None) -> tuple[dict[str, np.ndarray], pd.DatetimeIndex]:
        frame = _statsmodels_dataset(dataset).load_pandas().data
        start = pd.Timestamp(int(frame[year].iloc[0]), 1, 1)
        return ({"": frame[column].to_numpy(np.float64)},
                pd.date_range(start, periods=len(frame), freq="YS"))
    return load


def _load_interest_inflation(root: Path | None
                             ) -> tuple[dict[str, np.ndarray], pd.DatetimeIndex]:
    frame = _statsmodels_dataset("interest_inflation").load_pandas().data
    return {c: frame[c].to_numpy(np.float64) for c in ("Dp", "R")}, _quarters(frame)


def _load_danish(root: Path | None) -> tuple[dict[str, np.ndarray], pd.DatetimeIndex]:
    frame = _statsmodels_dataset("danish_data").load_pandas().data   # indexed by quarter start
    return ({c: frame[c].to_numpy(np.float64) for c in _DANISH_COLUMNS},
            pd.DatetimeIndex(frame.index))


_MACRO_COLUMNS = ("realgdp", "realcons", "realinv", "realgovt", "realdpi", "cpi", "m1",
                  "tbilrate", "unemp", "pop", "infl", "realint")
_DANISH_COLUMNS = ("lrm", "lry", "lpy", "ibo", "ide")
_PUBLIC = "public domain (statsmodels.datasets)"
_SM = "statsmodels.datasets."

SOURCES: tuple[_Source, ...] = (
    _Source("etth1", ETTH1_COLUMNS, "h", 24, 24, "ETTh1 (github.com/zhouhaoyi/ETDataset)",
            "CC BY-ND 4.0",
            "Zhou et al., 'Informer', AAAI 2021; github.com/zhouhaoyi/ETDataset", _load_etth1,
            {"": "rows [0, 14400): up to the end of the Informer / PatchTST test split"}),
    _Source("co2", (), "W-SAT", 52, 13, _SM + "co2", _PUBLIC,
            "Keeling & Whorf (2004), atmospheric CO2 from flask air samples at Mauna Loa, "
            "CDIAC", _load_co2,
            {"": "59 missing weeks (longest run 18, all before 1986) linearly interpolated"}),
    _Source("macrodata", _MACRO_COLUMNS, "QS", 4, 8, _SM + "macrodata", _PUBLIC,
            "US macroeconomic data 1959Q1-2009Q3, FRED (Federal Reserve Bank of St. Louis) and "
            "BLS, compiled for statsmodels", _load_macrodata,
            {"infl": "from 1959Q2 (1959Q1 is a 0.00 placeholder)",
             "realint": "from 1959Q2 (1959Q1 is a 0.00 placeholder)"}),
    _Source("elnino", (), "MS", 12, 12, _SM + "elnino", _PUBLIC,
            "NOAA Climate Prediction Center, ERSST.v3B Nino 1+2 sea surface temperature "
            "1950-2010", _load_elnino,
            {"": "the year x month table read year by year"}),
    _Source("sunspots", (), "YS", 1, 6, _SM + "sunspots", _PUBLIC,
            "NOAA National Geophysical Data Center, yearly sunspot numbers 1700-2008",
            _yearly("sunspots", "YEAR", "SUNACTIVITY")),
    _Source("nile", (), "YS", 1, 6, _SM + "nile", _PUBLIC,
            "Cobb, 'The problem of the Nile', Biometrika 65(2) 1978: Nile flow at Aswan "
            "1871-1970", _yearly("nile", "year", "volume")),
    _Source("interest_inflation", ("Dp", "R"), "QS", 4, 8, _SM + "interest_inflation",
            "not stated (shipped by statsmodels)",
            "Lutkepohl & Kratzig, 'Applied Time Series Econometrics', 2004, JMulTi data set e6: "
            "West German GDP-deflator inflation and long-term interest rate 1972Q2-1998Q4",
            _load_interest_inflation),
    _Source("danish", _DANISH_COLUMNS, "QS", 4, 8, _SM + "danish_data", _PUBLIC,
            "Johansen & Juselius, Oxford Bulletin of Economics and Statistics 52(2) 1990: "
            "Danish money demand 1974Q1-1987Q3", _load_danish,
            {"ibo": "a bond rate, not a log", "ide": "a deposit rate, not a log"}),
)


def list_benchmark_series() -> list[str]:
    """Every series name, in registry order (nothing is loaded)."""
    return [name for source in SOURCES for name in source.names()]


def _select(names: Iterable[str] | None) -> dict[str, list[str]]:
    """Group -> the selected names of that group; a group name selects all of its series."""
    groups = {s.group: s.names() for s in SOURCES}
    if names is None:
        return groups
    chosen: dict[str, list[str]] = {}
    for name in names:
        hits = groups.get(name) or [n for g, ns in groups.items() for n in ns if n == name]
        if not hits:
            known = list_benchmark_series() + list(groups)
            close = difflib.get_close_matches(name, known, n=1)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            raise ValueError(f"no benchmark series {name!r}{hint} (series: {known})")
        group = next(g for g, ns in groups.items() if hits[0] in ns)
        chosen.setdefault(group, [])
        chosen[group] += [n for n in hits if n not in chosen[group]]
    return chosen


def benchmark_series(names: Iterable[str] | None = None, *, root: str | Path | None = None,
                     skip_missing: bool = False) -> list[BenchmarkSeries]:
    """The benchmark series named (or all of them), in registry order.

    ``names``: series names (``list_benchmark_series()``) or group names (``"etth1"``,
    ``"macrodata"``, ...). ``root``: the data root holding ``ett/ETTh1.csv`` (default
    ``$ZOO_DATA``). Series whose data are not there (no ETTh1 csv, no statsmodels) raise,
    or with ``skip_missing=True`` are left out with a warning.
    """
    chosen = _select(names)
    base = Path(root) if root is not None else None
    out: list[BenchmarkSeries] = []
    for source in SOURCES:
        if source.group not in chosen:
            continue
        try:
            columns, timestamps = source.load(base)
        except (ImportError, FileNotFoundError) as err:
            if not skip_missing:
                raise
            logger.warning("benchmark series %s left out: %s", ", ".join(chosen[source.group]),
                           err)
            continue
        for column, name in zip(source.columns or ("",), source.names(), strict=True):
            if name not in chosen[source.group]:
                continue
            values = columns[column]
            notes = "; ".join(n for n in dict.fromkeys((source.notes.get(""),
                                                        source.notes.get(column))) if n)
            out.append(BenchmarkSeries(
                name=name, source=source.source, freq=source.freq, season=source.season,
                horizon=source.horizon, values=values, timestamps=timestamps[len(timestamps) - len(values):],
                license=source.license, citation=source.citation, notes=notes))
    return out


def window_starts(length: int, horizon: int, windows: int) -> list[int]:
    """Start rows of the last ``windows`` non-overlapping windows of ``horizon`` steps, the
    latest ending at row ``length - 1``; oldest first. Window k covers ``[start, start + H)``
    and is forecast from rows ``[0, start)``."""
    if min(length, horizon, windows) < 1 or windows * horizon >= length:
        raise ValueError(f"{windows} window(s) of {horizon} steps leave no history in a "
                         f"series of {length}")
    return [length - k * horizon for k in range(windows, 0, -1)]


def max_windows(series: BenchmarkSeries, min_seasons: int = 2) -> int:
    """The most windows that leave every history ``min_seasons`` seasons (and 2 points)."""
    keep = max(min_seasons * series.season, 2)
    return max(0, (len(series) - keep) // series.horizon)


def series_table(series: Sequence[BenchmarkSeries]) -> str:
    """A markdown table of the series: name, freq, length, season, horizon, windows."""
    lines = ["| series | freq | length | season | horizon | windows |", "|---|---|---|---|---|---|"]
    lines += [f"| {s.name} | {s.freq} | {len(s)} | {s.season} | {s.horizon} | {s.windows} |"
              for s in series]
    return "\n".join(lines)


# --- zero-shot evaluation -------------------------------------------------------------------

BASELINES = ("naive", "seasonal_naive")


@dataclass(frozen=True)
class Baseline:
    """The naive (last value) or seasonal-naive forecast as a forecaster: history (B, L, C),
    horizon, ``season=`` -> (B, H, C) by :func:`zoo.metrics.seasonal_naive`."""

    kind: str = "seasonal_naive"
    uses_season: ClassVar[bool] = True   # evaluate_zero_shot passes each series' season=

    def __post_init__(self) -> None:
        if self.kind not in BASELINES:
            raise ValueError(f"baseline must be one of {BASELINES}, got {self.kind!r}")

    def __call__(self, history: torch.Tensor, horizon: int, *, season: int) -> torch.Tensor:
        m = season if self.kind == "seasonal_naive" else 1
        return seasonal_naive(_last_season(history, m), horizon, m)


def _last_season(history: torch.Tensor, season: int) -> torch.Tensor:
    """The last ``season`` rows of a history (B, L, C) without NaN: all that seasonal naive
    reads then (it looks further back only to fill NaN), and far cheaper for long histories."""
    return history if torch.isnan(history).any() else history[:, -season:]


@dataclass(frozen=True)
class SeriesScore:
    """One series' scores, each a mean over its windows (WQL and coverage pool the windows)."""

    name: str
    freq: str
    season: int
    horizon: int
    history: int          # rows before the first window: the shortest history forecast from
    windows: int
    mase: float           # the model's
    mase_naive: float     # the seasonal-naive forecast's
    ratio: float          # mase / mase_naive
    wql: float | None = None          # mean weighted quantile loss, when the model has quantiles
    wql_naive: float | None = None    # of the seasonal-naive forecast at every level
    coverage: float | None = None     # of the central interval (80%), when it has those levels


def geometric_mean(values: Iterable[float]) -> float:
    """``exp(mean(log v))`` of non-negative values (0 if any is 0)."""
    values = [float(v) for v in values]
    if not values or any(math.isnan(v) or v < 0 for v in values):
        raise ValueError(f"a geometric mean needs non-negative numbers, got {values}")
    if min(values) == 0:
        return 0.0
    return math.exp(math.fsum(math.log(v) for v in values) / len(values))


@dataclass(frozen=True)
class ZeroShotResult:
    """Per-series scores, the series left out (name -> why) and the wall time in seconds."""

    scores: tuple[SeriesScore, ...]
    skipped: dict[str, str]
    seconds: float

    @property
    def geomean_ratio(self) -> float:
        """The headline: geometric mean over series of MASE(model) / MASE(seasonal naive)
        (NaN when no series was scored)."""
        return geometric_mean(s.ratio for s in self.scores) if self.scores else math.nan

    def mean(self, key: str) -> float | None:
        """Arithmetic mean over series of a :class:`SeriesScore` field (None if any lacks it)."""
        values = [getattr(s, key) for s in self.scores]
        return None if not values or None in values else statistics.fmean(values)

    @property
    def geomean_wql_ratio(self) -> float | None:
        """Geometric mean over series of WQL(model) / WQL(seasonal naive at every level), as
        Chronos reports it (None without quantiles)."""
        pairs = [(s.wql, s.wql_naive) for s in self.scores]
        ratios = [m / n for m, n in pairs if m is not None and n is not None]
        return geometric_mean(ratios) if pairs and len(ratios) == len(pairs) else None

    def to_dict(self) -> dict[str, Any]:
        """Everything as JSON-able values: the aggregates, then one dict per series."""
        return {
            "geomean_ratio": self.geomean_ratio,
            "mean_ratio": self.mean("ratio"), "mean_mase": self.mean("mase"),
            "mean_mase_naive": self.mean("mase_naive"), "mean_wql": self.mean("wql"),
            "geomean_wql_ratio": self.geomean_wql_ratio, "mean_coverage": self.mean("coverage"),
            "series": [asdict(s) for s in self.scores], "skipped": dict(self.skipped),
            "seconds": self.seconds}


# (series index, window start) -> (point forecast (H,), quantile forecasts (H, Q) or None)
Windows = dict[tuple[int, int], tuple[torch.Tensor, torch.Tensor | None]]


def _input_dtype_device(model: object) -> tuple[torch.dtype, torch.device]:
    """A module's floating dtype and device; a plain callable gets float64 on the CPU."""
    if isinstance(model, torch.nn.Module):
        for tensor in (*model.parameters(), *model.buffers()):
            if tensor.is_floating_point():
                return tensor.dtype, tensor.device
        return torch.float32, torch.device("cpu")
    return torch.float64, torch.device("cpu")


def _forecasts(model: Callable[..., torch.Tensor], series: Sequence[BenchmarkSeries],
               jobs: list[tuple[int, int]], batch_size: int) -> Windows:
    """Forecast every (series, start) window from the rows before ``start``, batching the
    windows whose input has the same length (and horizon, and season for a baseline)."""
    context = getattr(model, "context_length", None)
    quantiles = tuple(getattr(model, "quantiles", ()) or ())
    uses_season = bool(getattr(model, "uses_season", False))
    quantile_forecast = getattr(model, "forecast_quantiles", None) if quantiles else None
    dtype, device = _input_dtype_device(model)
    groups: dict[tuple[int, int, int], list[tuple[int, int]]] = {}
    for i, start in jobs:
        # the model reads at most context_length rows: cropping changes nothing, and lets
        # windows of different series and starts share a batch
        length = start if context is None else min(start, int(context))
        key = (length, series[i].horizon, series[i].season if uses_season else 0)
        groups.setdefault(key, []).append((i, start))
    out: Windows = {}
    for (length, horizon, season), items in groups.items():
        for at in range(0, len(items), batch_size):
            chunk = items[at:at + batch_size]
            x = torch.stack([torch.tensor(series[i].values[start - length:start])
                             for i, start in chunk]).unsqueeze(-1)          # (B, L, 1)
            x = x.to(device=device, dtype=dtype)
            if uses_season:
                point, q = model(x, horizon, season=season), None
            elif quantile_forecast is not None and hasattr(model, "forecast_with_quantiles"):
                point, q = model.forecast_with_quantiles(x, horizon)   # one decoding for both
            else:
                point = model(x, horizon)
                q = None if quantile_forecast is None else quantile_forecast(x, horizon)
            if tuple(point.shape) != (len(chunk), horizon, 1) or (
                    q is not None and tuple(q.shape) != (len(chunk), horizon, 1, len(quantiles))):
                raise ValueError(f"the model turned a history of shape {tuple(x.shape)} into a "
                                 f"forecast of shape {tuple(point.shape)}"
                                 + (f" and quantiles {tuple(q.shape)}" if q is not None else "")
                                 + f"; expected ({len(chunk)}, {horizon}, 1)")
            for b, (i, start) in enumerate(chunk):
                f = point[b, :, 0].detach().double().cpu()
                if torch.isnan(f).any():
                    raise ValueError(f"the model forecast NaN for {series[i].name} from a "
                                     f"history of {start} rows")
                out[(i, start)] = (f, None if q is None else q[b, :, 0].detach().double().cpu())
    return out


def _score(s: BenchmarkSeries, i: int, starts: list[int], forecasts: Windows,
           quantiles: tuple[float, ...], interval: float) -> SeriesScore:
    """MASE of the model and of seasonal naive per window, both scaled by the seasonal error
    of that window's whole history; WQL and coverage pooled over the windows."""
    h = s.horizon
    mases, naives, targets, qs, naive_forecasts = [], [], [], [], []
    for start in starts:
        history = torch.tensor(s.values[:start]).view(1, -1, 1)           # (1, L, 1)
        target = torch.tensor(s.values[start:start + h]).view(1, h, 1)
        forecast, q = forecasts[(i, start)]
        # no NaN in a BenchmarkSeries: seasonal naive reads only the last season
        naive = seasonal_naive(history[:, -s.season:], h, s.season)      # (1, H, 1)
        mases.append(mase(forecast.view(1, h, 1), target, history, s.season).item())
        naives.append(mase(naive, target, history, s.season).item())
        targets.append(target)
        naive_forecasts.append(naive)
        if q is not None:
            qs.append(q.view(1, h, 1, -1))
    model_mase, naive_mase = statistics.fmean(mases), statistics.fmean(naives)
    wql = wql_naive = cover = None
    if qs:
        y, q = torch.cat(targets), torch.cat(qs)                          # (W, H, 1), (W, H, 1, Q)
        wql = weighted_quantile_loss(q, y, quantiles).item()
        flat = torch.cat(naive_forecasts).unsqueeze(-1).expand_as(q)       # every level = naive
        wql_naive = weighted_quantile_loss(flat, y, quantiles).item()
        if interval in quantile_levels(quantiles):
            lo, hi = interval_indices(quantiles, interval)
            cover = coverage(q[..., lo], q[..., hi], y).item()
    return SeriesScore(name=s.name, freq=s.freq, season=s.season, horizon=h, history=starts[0],
                       windows=len(starts), mase=model_mase, mase_naive=naive_mase,
                       ratio=model_mase / naive_mase, wql=wql, wql_naive=wql_naive,
                       coverage=cover)


def evaluate_zero_shot(model: Callable[..., torch.Tensor], series: Sequence[BenchmarkSeries],
                       *, windows: int | None = None, batch_size: int = 256,
                       interval: float = 80.0) -> ZeroShotResult:
    """Score a forecaster on ``series`` against the seasonal-naive forecast.

    ``model``: a :class:`zoo.models.base.Forecaster`, or any callable ``(history (B, L, 1),
    horizon) -> (B, H, 1)`` (one with ``uses_season = True``, as :class:`Baseline`, also gets
    ``season=``). Its optional ``context_length``, ``min_context``, ``max_horizon`` and
    ``quantiles`` / ``forecast_quantiles`` are honoured: histories are cropped to
    ``context_length``, windows with fewer than ``min_context`` rows before them are left out,
    and so are series whose horizon exceeds ``max_horizon`` (``result.skipped`` says why).

    Each series gets its last ``windows`` non-overlapping windows of its horizon (None: its
    own default, ``series.windows``; more than leave two seasons of history are cut, with a
    warning), each forecast from every row before it; a module sees float inputs in its own
    dtype and device (a plain callable float64). Per window, MASE of the model and of seasonal
    naive, both scaled by the in-sample seasonal error of that window's history; per series
    their means over windows and ``ratio = model / naive``; :attr:`ZeroShotResult.
    geomean_ratio` is the geometric mean of the ratios. With quantiles, also the mean weighted
    quantile loss and the ``interval``% central-interval coverage, pooled over the windows.
    """
    began = time.perf_counter()
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an int >= 1, got {batch_size!r}")
    if windows is not None and (isinstance(windows, bool) or not isinstance(windows, int)
                                or windows < 1):
        raise ValueError(f"windows must be an int >= 1 or None, got {windows!r}")
    min_context = int(getattr(model, "min_context", None) or 1)
    max_horizon = getattr(model, "max_horizon", None)
    quantiles = tuple(float(q) for q in getattr(model, "quantiles", ()) or ())
    skipped: dict[str, str] = {}
    plan: dict[int, list[int]] = {}
    for i, s in enumerate(series):
        wanted, fit = (s.windows if windows is None else windows), max_windows(s)
        if wanted > fit:
            logger.warning("%s: %d windows of %d would leave less than two seasons of history; "
                           "using %d", s.name, wanted, s.horizon, fit)
        if min(wanted, fit) < 1:
            skipped[s.name] = f"{len(s)} rows leave no window of {s.horizon} after two seasons"
            continue
        if max_horizon is not None and s.horizon > max_horizon:
            skipped[s.name] = f"horizon {s.horizon} > the model's max_horizon {max_horizon}"
            continue
        starts = window_starts(len(s), s.horizon, min(wanted, fit))
        if not (kept := [start for start in starts if start >= min_context]):
            skipped[s.name] = f"history of {starts[-1]} rows < min_context {min_context}"
            continue
        if len(kept) < len(starts):
            logger.warning("%s: %d of %d windows left out: fewer than min_context %d rows "
                           "before them", s.name, len(starts) - len(kept), len(starts), min_context)
        plan[i] = kept
    jobs = [(i, start) for i, starts in plan.items() for start in starts]
    module = model if isinstance(model, torch.nn.Module) else None
    training = module is not None and module.training
    if module is not None:
        module.eval()
    try:
        with torch.inference_mode():
            forecasts = _forecasts(model, series, jobs, batch_size)
            scores = tuple(_score(series[i], i, starts, forecasts, quantiles, interval)
                           for i, starts in plan.items())
    finally:
        if module is not None:
            module.train(training)
    return ZeroShotResult(scores, skipped, time.perf_counter() - began)

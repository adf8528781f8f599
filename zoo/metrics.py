"""Forecast accuracy: the seasonal-naive baseline, MASE, quantile losses and interval coverage,
as torch functions over (B, H, C) forecasts; plus season lengths for pandas frequencies and
NeuralForecast's interval column names.

Definitions follow GluonTS (``gluonts.evaluation.metrics``, ``gluonts.ev``; Alexandrov et al.,
"GluonTS: Probabilistic and Neural Time Series Modeling in Python", JMLR 2020):

- seasonal error (``calculate_seasonal_error``): ``mean_t |y_t - y_{t-m}|`` over the history,
  with m = 1 when m >= L;
- MASE: ``mean_h |y_h - yhat_h| / seasonal_error`` (Hyndman & Koehler, 2006);
- quantile loss: ``2 * sum |(yhat_q - y) * (1{y <= yhat_q} - q)|`` (twice the pinball loss);
- mean weighted quantile loss (``mean_weighted_sum_quantile_loss``, the "mean_wQuantileLoss" of
  its Evaluator): ``mean_q quantile_loss_q / sum |y|``, sums over every series and step.

Missing values (NaN) in a target are masked, as GluonTS masks them: they add nothing to a sum
and are not counted in a mean. Everything is computed in float64 and returned as float64, so
that values of 1e20 or a constant series of 1e9 lose nothing to float32.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence

import pandas as pd
import torch

logger = logging.getLogger(__name__)

# Season length per base frequency (repeats of the frequency in one season). GluonTS's
# ``get_seasonality`` table (``gluonts.time_feature.seasonality.DEFAULT_SEASONALITIES``) has
# minutes 1440, hours 24, days 1, weeks 1, months 12, business days 5, quarters 4, anything else
# 1. zoo counts a week for daily data (7, as AutoGluon's adaptation of it), a year for weekly
# data (52, as the M4 competition), an hour for secondly data (3600), a day of 9 business hours
# and 24 half-months in a year; pass ``table=GLUONTS_SEASON_LENGTHS`` to reproduce GluonTS's
# figures (the Chronos / TimesFM benchmark tables use it).
SEASON_LENGTHS: Mapping[str, int] = {
    "s": 3600, "min": 1440, "h": 24, "bh": 9, "D": 7, "B": 5, "W": 52, "SM": 24, "M": 12,
    "Q": 4, "Y": 1}
GLUONTS_SEASON_LENGTHS: Mapping[str, int] = {
    "min": 1440, "h": 24, "D": 1, "W": 1, "M": 12, "B": 5, "Q": 4}

# pandas offset names (pandas 2 and 3 spellings, anchors such as "-DEC" removed) -> table key
_BASE_FREQ = {
    "S": "s", "s": "s", "T": "min", "min": "min", "H": "h", "h": "h", "BH": "bh", "bh": "bh",
    "D": "D", "B": "B", "C": "B", "W": "W", "SM": "SM", "SMS": "SM", "SME": "SM",
    "M": "M", "ME": "M", "MS": "M", "BM": "M", "BME": "M", "BMS": "M", "CBME": "M", "CBMS": "M",
    "Q": "Q", "QE": "Q", "QS": "Q", "BQ": "Q", "BQE": "Q", "BQS": "Q",
    "A": "Y", "AS": "Y", "Y": "Y", "YE": "Y", "YS": "Y", "BA": "Y", "BY": "Y", "BYE": "Y",
    "BYS": "Y"}


def _check_series(name: str, x: torch.Tensor, ndim: int = 3) -> None:
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != ndim:
        shape = "(B, L, C)" if ndim == 3 else "(B, H, C, Q)"
        raise ValueError(f"{name} must have shape {shape}, got {tuple(x.shape)}")


def _check_positive(name: str, value: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    return value


def _same_shape(**tensors: torch.Tensor) -> None:
    shapes = {k: tuple(v.shape) for k, v in tensors.items()}
    if len(set(shapes.values())) > 1:
        raise ValueError("shapes differ: " + ", ".join(f"{k} {s}" for k, s in shapes.items()))


def seasonal_naive(history: torch.Tensor, horizon: int, season: int) -> torch.Tensor:
    """History (B, L, C) -> forecast (B, H, C) repeating the last ``season`` steps.

    Step h (0-based) takes the value at ``L - season + h % season``; when that is NaN, the last
    observed value at the same phase (``season`` steps earlier, and so on), else the last
    observed value of the series. ``season`` > L (or 1) is the naive forecast: the last observed
    value. A series with no observed value at all is an error. Values are copied, never
    rounded: the forecast has the history's dtype.
    """
    _check_series("history", history)
    _check_positive("horizon", horizon)
    _check_positive("season", season)
    x = history
    batch, length, channels = x.shape
    if length == 0:
        raise ValueError("history has no rows (L = 0)")
    observed = ~torch.isnan(x)                                            # (B, L, C)
    if not observed.any(1).all():
        b, c = (~observed.any(1)).nonzero()[0].tolist()
        raise ValueError(f"history of series {b}, channel {c} holds no observed value")
    # the last observed value: index of the latest observed row per series and channel
    steps = torch.arange(length, device=x.device).view(1, -1, 1)
    last = torch.where(observed, steps, -1).amax(1)                       # (B, C)
    naive = x.gather(1, last.unsqueeze(1)).squeeze(1)                     # (B, C)
    if season > length:
        return naive.unsqueeze(1).expand(batch, horizon, channels).clone()
    device = x.device
    phase = length - season + torch.arange(horizon, device=device) % season   # (H,)
    back = torch.arange(-(-length // season), device=device) * season         # (K,) 0, m, 2m..
    rows = phase.view(-1, 1) - back.view(1, -1)                           # (H, K)
    valid = rows >= 0
    candidates = x[:, rows.clamp_min(0)]                                  # (B, H, K, C)
    usable = ~torch.isnan(candidates) & valid.view(1, *valid.shape, 1)
    first = usable.int().argmax(2, keepdim=True)                          # (B, H, 1, C) first usable
    value = candidates.gather(2, first).squeeze(2)                        # (B, H, C)
    found = usable.any(2)
    return torch.where(found, value, naive.unsqueeze(1).expand_as(value))


def seasonal_error(history: torch.Tensor, season: int) -> torch.Tensor:
    """History (B, L, C) -> in-sample seasonal-naive error (B, C): ``mean |y_t - y_{t-m}|``.

    GluonTS's ``calculate_seasonal_error``: m = ``season``, or 1 when ``season`` >= L. Pairs with
    a NaN are left out; no pair left (L = 1, or too few observations) gives NaN.
    """
    _check_series("history", history)
    _check_positive("season", season)
    x = history.double()
    m = season if season < x.shape[1] else 1
    diffs = (x[:, m:] - x[:, :-m]).abs()                                  # (B, L - m, C)
    return diffs.nanmean(1)


def mase(forecast: torch.Tensor, target: torch.Tensor, history: torch.Tensor,
         season: int) -> torch.Tensor:
    """Mean absolute scaled error (B, C) of ``forecast`` (B, H, C) against ``target`` (B, H, C),
    scaled by the :func:`seasonal_error` of ``history`` (B, L, C).

    As GluonTS (``mase`` divides as numpy does), a zero seasonal error (a constant history) gives
    ``inf`` when the forecast errs and ``nan`` when it is exact; GluonTS's Evaluator
    (``ignore_invalid_values=True``) then leaves such series out of its averages, as
    :func:`zoo.forecasting.backtest` does. NaN targets are masked; none observed gives NaN.
    """
    _check_series("forecast", forecast)
    _check_series("target", target)
    _same_shape(forecast=forecast, target=target)
    if history.ndim != 3 or (history.shape[0], history.shape[2]) != (target.shape[0], target.shape[2]):
        raise ValueError(f"history must be (B, L, C) with the target's B and C, got "
                         f"{tuple(history.shape)} for a target of {tuple(target.shape)}")
    error = (target.double() - forecast.double()).abs().nanmean(1)       # (B, C)
    return error / seasonal_error(history, season)


def pinball_loss(quantile_forecasts: torch.Tensor, target: torch.Tensor,
                 quantiles: Sequence[float]) -> torch.Tensor:
    """Elementwise pinball loss (B, H, C, Q): ``max(q (y - yhat_q), (q - 1) (y - yhat_q))``;
    NaN where the target is NaN. Half of GluonTS's quantile loss term; a training loss as is."""
    q = _quantile_tensor(quantile_forecasts, target, quantiles)
    diff = target.unsqueeze(-1) - quantile_forecasts                      # (B, H, C, Q)
    return torch.maximum(q * diff, (q - 1) * diff)


def quantile_loss(quantile_forecasts: torch.Tensor, target: torch.Tensor,
                  quantiles: Sequence[float]) -> torch.Tensor:
    """GluonTS's quantile loss per level (Q,), float64: ``2 * sum |(yhat_q - y) * (1{y <= yhat_q}
    - q)|`` over every series, step and channel (NaN targets masked)."""
    q = _quantile_tensor(quantile_forecasts, target, quantiles).double()
    y = target.double().unsqueeze(-1)                                     # (B, H, C, 1)
    yhat = quantile_forecasts.double()
    terms = ((yhat - y) * ((y <= yhat).double() - q)).abs()               # (B, H, C, Q)
    return 2 * terms.nansum((0, 1, 2))


def weighted_quantile_loss(quantile_forecasts: torch.Tensor, target: torch.Tensor,
                           quantiles: Sequence[float]) -> torch.Tensor:
    """Mean weighted quantile loss, a float64 scalar: ``mean_q quantile_loss_q / sum |y|``
    (GluonTS's ``mean_weighted_sum_quantile_loss``; sums over all series, steps, channels).

    ``quantile_forecasts`` (B, H, C, Q) at levels ``quantiles`` (Q,), ``target`` (B, H, C). An
    all-zero target divides by zero as GluonTS does (inf, or nan for a perfect forecast)."""
    losses = quantile_loss(quantile_forecasts, target, quantiles)        # (Q,)
    return (losses / target.double().abs().nansum()).mean()


def coverage(lower: torch.Tensor, upper: torch.Tensor, target: torch.Tensor,
             dim: int | tuple[int, ...] | None = None) -> torch.Tensor:
    """The fraction of observed targets with ``lower <= y <= upper`` (float64), over ``dim``
    (default all; e.g. ``dim=1`` gives (B, C) for (B, H, C) inputs). NaN targets are masked.

    GluonTS's ``coverage`` is one-sided (``mean(y <= yhat_q)``, per quantile); this is the
    two-sided count of an interval, e.g. the 10% and 90% quantiles for an 80% interval."""
    _same_shape(lower=lower, upper=upper, target=target)
    y = target.double()
    observed = ~torch.isnan(y)
    inside = (lower.double() <= y) & (y <= upper.double())
    dims = tuple(range(y.ndim)) if dim is None else dim
    return inside.double().sum(dims) / observed.double().sum(dims)


def _quantile_tensor(quantile_forecasts: torch.Tensor, target: torch.Tensor,
                     quantiles: Sequence[float]) -> torch.Tensor:
    _check_series("quantile_forecasts", quantile_forecasts, ndim=4)
    _check_series("target", target)
    if tuple(quantile_forecasts.shape[:3]) != tuple(target.shape):
        raise ValueError(f"quantile_forecasts {tuple(quantile_forecasts.shape)} must be the "
                         f"target's shape {tuple(target.shape)} plus the quantile axis")
    q = torch.as_tensor([float(v) for v in quantiles], dtype=quantile_forecasts.dtype,
                        device=quantile_forecasts.device)
    if q.numel() != quantile_forecasts.shape[-1]:
        raise ValueError(f"{q.numel()} quantiles for {quantile_forecasts.shape[-1]} forecasts "
                         "on the last axis")
    if not ((q > 0) & (q < 1)).all():
        raise ValueError(f"quantiles must lie in (0, 1), got {list(quantiles)}")
    return q


def season_length(freq: str | pd.DateOffset, *, table: Mapping[str, int] = SEASON_LENGTHS) -> int:
    """Steps in one season of data at ``freq`` (a pandas frequency string or offset).

    As GluonTS's ``get_seasonality``: the base frequency's entry in ``table`` (see
    :data:`SEASON_LENGTHS`: "h" 24, "min" 1440, "D" 7, "B" 5, "W" 52, "M"/"MS" 12, "Q"/"QS" 4,
    "Y" 1, "s" 3600; unknown 1) divided by the multiple, e.g. "15min" -> 96, "2h" -> 12; a
    multiple that does not divide it falls back to 1 (as GluonTS, with a warning).
    """
    try:
        offset = pd.tseries.frequencies.to_offset(freq)
    except (ValueError, TypeError) as err:
        raise ValueError(f"{freq!r} is not a pandas frequency (e.g. 'h', '15min', 'D', 'W', "
                         "'MS')") from err
    if offset is None:
        raise ValueError("freq is None; pass a pandas frequency (e.g. 'h') or a season length")
    name = offset.rule_code.split("-")[0]
    base = table.get(_BASE_FREQ.get(name, name), 1)
    season, remainder = divmod(base, abs(offset.n) or 1)
    if remainder or season == 0:
        logger.warning("the multiple %d of %r does not divide its season of %d steps; "
                       "using a season of 1", offset.n, name, base)
        return 1
    return season


# M4's forecast horizons (Makridakis, Spiliotis, Assimakopoulos 2020) by base frequency: the
# default horizon for a model that decodes any horizon (the hourly one is Monash's 48).
M4_HORIZONS: Mapping[str, int] = {"h": 48, "D": 14, "W": 13, "M": 18, "Q": 8, "Y": 6}


def default_horizon(freq: str | pd.DateOffset | None) -> int | None:
    """M4's horizon for data at ``freq`` (of its base frequency, at multiple 1 only); None for
    other frequencies."""
    if freq is None:
        return None
    offset = pd.tseries.frequencies.to_offset(freq)
    name = offset.rule_code.split("-")[0]
    return M4_HORIZONS.get(_BASE_FREQ.get(name, name)) if abs(offset.n) == 1 else None


def interval_quantiles(level: float) -> tuple[float, float]:
    """The quantiles bounding a central ``level``% interval: ``((1 - level / 100) / 2,
    1 - (1 - level / 100) / 2)``, e.g. 80 -> (0.1, 0.9) (NeuralForecast's ``level``)."""
    if isinstance(level, bool) or not isinstance(level, (int, float)) or not 0 < level < 100:
        raise ValueError(f"an interval level is a percentage in (0, 100), got {level!r}")
    alpha = (1 - level / 100) / 2
    return round(alpha, 10), round(1 - alpha, 10)


def quantile_levels(quantiles: Iterable[float]) -> tuple[float, ...]:
    """The central interval levels (%) that pairs of ``quantiles`` bound, in ascending order:
    (0.1, 0.5, 0.9) -> (80,), (0.1, 0.2, ..., 0.9) -> (20, 40, 60, 80).
    A quantile without its mirror (1 - q) bounds no interval; 0.5 is the median."""
    qs = sorted({round(float(q), 10) for q in quantiles})
    levels = {_tidy(round(100 * (1 - 2 * q), 8)) for q in qs if q < 0.5 and round(1 - q, 10) in qs}
    return tuple(sorted(levels))


def _tidy(level: float) -> float:
    return int(level) if float(level).is_integer() else level


def format_level(level: float) -> str:
    """A level as a column suffix: 80 -> "80", 99.5 -> "99.5"."""
    return str(_tidy(round(float(level), 8)))


def quantile_columns(name: str, levels: Iterable[float]) -> list[str]:
    """NeuralForecast's interval columns for ``levels``, in quantile order: the lower bounds
    from the widest interval in, then the upper bounds outwards, e.g. ("y", (80, 95)) ->
    ["y-lo-95", "y-lo-80", "y-hi-80", "y-hi-95"]."""
    levels = sorted({_tidy(float(v)) for v in levels})
    for level in levels:
        interval_quantiles(level)                                         # validates
    return ([f"{name}-lo-{format_level(v)}" for v in reversed(levels)]
            + [f"{name}-hi-{format_level(v)}" for v in levels])


def quantile_index(quantiles: Sequence[float], q: float, *, tol: float = 1e-6) -> int:
    """The position of quantile ``q`` in ``quantiles``; a ValueError naming those there are."""
    for i, value in enumerate(quantiles):
        if abs(float(value) - q) <= tol:
            return i
    raise ValueError(f"quantile {q:g} is not among the model's quantiles "
                     f"{tuple(float(v) for v in quantiles)}")


def interval_indices(quantiles: Sequence[float], level: float) -> tuple[int, int]:
    """Positions of the lower and upper quantiles of the ``level``% interval in ``quantiles``,
    or a ValueError naming the levels those quantiles do bound."""
    lo, hi = interval_quantiles(level)
    try:
        return quantile_index(quantiles, lo), quantile_index(quantiles, hi)
    except ValueError:
        have = quantile_levels(quantiles)
        raise ValueError(f"a {format_level(level)}% interval needs the {lo:g} and {hi:g} quantiles; "
                         f"the model's quantiles {tuple(float(v) for v in quantiles)} bound "
                         + (f"levels {', '.join(map(format_level, have))}" if have else "no interval")
                         ) from None

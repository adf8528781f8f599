"""Forecasting a user's table with a zoo forecaster: the last look-back rows -> a forecast
table with future timestamps, and a plot of history + forecast per column."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pandas as pd
import torch

from zoo._optional import pyplot
from zoo.models.base import Forecaster


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


def forecast_frame(model: Forecaster, frame: pd.DataFrame, *, horizon: int | None = None
                   ) -> pd.DataFrame:
    """Forecast every column of ``frame`` (rows in time order, numeric columns) from its last
    ``model.context_length`` rows: returns (horizon, C) with future timestamps as index.

    ``horizon`` may be shorter than the model's (the forecast is cut), never longer. The
    model's instance normalisation (RevIN) makes the forecast follow the table's own units.
    """
    if model.front_end.scaler.scaling == "none":
        raise ValueError("this model does not normalise its input (scaling='none'), so it only "
                         "forecasts data scaled as in its training; scale the table yourself")
    context, model_horizon = model.context_length, model.horizon
    horizon = model_horizon if horizon is None else horizon
    if not 1 <= horizon <= model_horizon:
        raise ValueError(f"this model forecasts {model_horizon} steps; --horizon {horizon} is "
                         f"{'longer' if horizon > model_horizon else 'invalid'} (fine-tune one "
                         f"with horizon={horizon} for that)")
    if len(frame) < context:
        raise ValueError(f"the model needs {context} rows of history; the data has {len(frame)}")
    history = torch.tensor(frame.to_numpy()[-context:], dtype=torch.float32)
    model.eval()
    with torch.inference_mode():
        forecast = model(history[None])[0, :horizon]
    return pd.DataFrame(forecast.numpy(), columns=frame.columns,
                        index=future_index(frame.index, horizon))


def plot_forecast(history: pd.DataFrame, forecast: pd.DataFrame, path: str | Path, *,
                  columns: Sequence[str] | None = None, history_steps: int | None = None,
                  title: str = "") -> Path:
    """One panel per column: the last ``history_steps`` observed values (default 4 x horizon)
    and the forecast after them. Written as PNG (or any format matplotlib knows by suffix)."""
    plt = pyplot("plot_forecast")

    columns = list(columns or forecast.columns)
    unknown = [c for c in columns if c not in forecast.columns]
    if unknown:
        raise ValueError(f"cannot plot {unknown}: forecast columns are {list(forecast.columns)}")
    steps = history_steps or 4 * len(forecast)
    past = history[columns].iloc[-steps:]
    fig, axes = plt.subplots(len(columns), 1, figsize=(10, 2.6 * len(columns)), sharex=True,
                             squeeze=False)
    for ax, column in zip(axes[:, 0], columns, strict=True):
        ax.plot(past.index, past[column], color="0.3", linewidth=1.0, label="history")
        ax.plot(forecast.index, forecast[column], color="tab:orange", linewidth=1.4,
                label="forecast")
        ax.axvline(past.index[-1], color="0.6", linestyle=":", linewidth=0.8)
        ax.set_ylabel(str(column))
        ax.grid(alpha=0.3)
    if isinstance(forecast.index, pd.DatetimeIndex):
        fig.autofmt_xdate()
    axes[0, 0].legend(loc="upper left")
    if title:
        axes[0, 0].set_title(title)
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""Forecasting data: ETTh1 (the standard protocol), a user's CSV, or series shards (a folder of
CSVs converted by :mod:`recipes.streaming`) -> sliding windows.

Values are standardised with a scaler fitted on the training rows only; validation and test
windows start ``lookback`` rows before their split so that their first target falls inside
it. Every window is used: no shuffling outside training and no dropped last batch.
The data's season length (MASE's seasonal-naive lag) follows from its time step.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Literal, get_args

import numpy as np
import pandas as pd
import torch
from torch.utils.data import ConcatDataset

from recipes.data import ModelKwargs, SplitDataModule, model_for_data
from recipes.streaming import expect_kind, read_shards_index, read_split
from zoo.data import OnError
from zoo.data.series import (
    Irregular,
    Missing,
    SeriesDataError,
    SeriesSplits,
    SeriesWindows,
    StandardScaler,
    chronological_split,
    etth1_splits,
    read_series,
)
from zoo.metrics import season_length

logger = logging.getLogger("zoo.recipes")

SeriesDataset = Literal["etth1", "csv", "shards"]
SERIES_DATASETS = get_args(SeriesDataset)


def season_from_timestamps(timestamps: pd.DatetimeIndex | None) -> int:
    """The season length of a series with these timestamps: its frequency (pandas' inference,
    else the most common step) through :func:`zoo.metrics.season_length` (hourly -> 24,
    daily -> 7, monthly -> 12, ...); 1 (the naive forecast) without timestamps or a step."""
    if timestamps is None or len(timestamps) < 2:
        return 1
    freq = pd.DatetimeIndex(timestamps, freq="infer").freq if len(timestamps) >= 3 else None
    if freq is None:
        steps = pd.Series(timestamps).diff().dropna()
        step = steps.mode().iloc[0] if not steps.empty else None
        if step is None or step <= pd.Timedelta(0):
            return 1
        freq = pd.tseries.frequencies.to_offset(step)
    return season_length(freq)


def shard_series_splits(root: str, lookback: int
                        ) -> tuple[SeriesSplits, dict[str, SeriesSplits], list[str]]:
    """Series shards -> (all series together, each series by file name, skipped files).

    The scaler is fitted on the training rows of every series; each series' val and test rows
    get the ``lookback`` rows before them, as :func:`zoo.data.series.chronological_split` does
    for one CSV (one series gives the same splits). Series shards are read whole: windows are
    made in memory, so order and rank sharding are the in-memory path's.
    """
    index = read_shards_index(root)
    expect_kind(index, root, ("series",), "forecasting")
    splits = [list(read_split(root, split)) for split in ("train", "val", "test")]
    records = list(zip(*splits, strict=False))       # one record per file and split, checked:
    if len(records) != len(index["files"]) or any(len({x["name"] for x in r}) != 1 for r in records):
        raise ValueError(f"the shards at {root} do not hold one record per file in every split")
    files = [(r[0]["name"], [torch.as_tensor(x["values"], dtype=torch.float64) for x in r],
              np.concatenate([x["time"] for x in r])) for r in records]   # (T_split, C), (T,)
    scaler = StandardScaler.fit(torch.cat([rows[0] for _, rows, _ in files]))
    columns, time_column = tuple(index["columns"]), index["time_column"]
    each = {}
    for name, (train, val, test), time in files:
        n_train, n_val = len(train), len(val)
        if lookback > n_train:
            raise SeriesDataError(f"{root}: {name}: lookback {lookback} is longer than its "
                                  f"{n_train} training rows")
        scaled = scaler.transform(torch.cat([train, val, test])).float()      # (T, C)
        borders = {"train": (0, n_train), "val": (n_train - lookback, n_train + n_val),
                   "test": (n_train + n_val - lookback, len(scaled))}
        stamps = None
        if time_column is not None:
            stamps = pd.DatetimeIndex(time.astype("datetime64[ns]"), name=time_column)
            if (zone := index["time_zones"].get(name)) is not None:
                stamps = stamps.tz_localize("UTC").tz_convert(zone)
        each[name] = SeriesSplits(**{k: scaled[lo:hi] for k, (lo, hi) in borders.items()},
                                  scaler=scaler, columns=columns, timestamps=stamps,
                                  borders=borders)
    if len(each) == 1:
        return next(iter(each.values())), each, list(index.get("skipped", []))
    together = SeriesSplits(*(torch.cat([getattr(s, k) for s in each.values()])
                              for k in ("train", "val", "test")),
                            scaler=scaler, columns=columns, timestamps=None, borders={})
    return together, each, list(index.get("skipped", []))


class SeriesDataModule(SplitDataModule):
    """Windows of ``lookback`` history and ``horizon`` future steps over every channel.

    ``dataset="etth1"``: rows and scaler as Informer / PatchTST (``root``: the data folder, or
    $ZOO_DATA). ``dataset="csv"``: ``root`` is the CSV file; ``time_column`` and
    ``target_columns`` pick the columns; the split is chronological, by ``fractions`` of rows
    or from the ``val_start`` / ``test_start`` timestamps; ``missing``, ``irregular`` and
    ``on_error`` are :func:`zoo.data.series.read_series`'s policies. ``dataset="shards"``:
    ``root`` is a series shards folder or URL; their split, columns and reading policies hold
    (see :func:`shard_series_splits`); windows never span two series.

    ``season``: the season length of MASE's scale (:class:`recipes.forecasting.Forecaster`
    reads it); None infers it from the timestamps (:func:`season_from_timestamps`: ETTh1,
    hourly, gives 24; data without timestamps 1).
    """

    def __init__(self, *, dataset: SeriesDataset, model_name: str | None = None,
                 model_kwargs: ModelKwargs | None = None, lookback: int | None = None,
                 horizon: int | None = None, root: str | None = None,
                 time_column: str | None = "date",
                 target_columns: Sequence[str] | None = None,
                 fractions: Sequence[float] = (0.7, 0.1, 0.2), val_start: str | None = None,
                 test_start: str | None = None, missing: Missing = "error",
                 irregular: Irregular = "error", on_error: OnError = "raise", batch_size: int = 128,
                 num_workers: int = 0, seed: int = 0, season: int | None = None) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if lookback is None or horizon is None:
            if model_name is None:
                raise ValueError("SeriesDataModule needs model_name (the model it feeds: its "
                                 "look-back and horizon), or lookback and horizon")
            model = model_for_data(model_name, model_kwargs, "series")
            lookback = model.context_length if lookback is None else lookback
            horizon = model.horizon if horizon is None else horizon
        if dataset not in SERIES_DATASETS:
            raise ValueError(f"series dataset must be one of {SERIES_DATASETS}, got {dataset!r}")
        if dataset == "csv" and not root:
            raise ValueError("the csv dataset needs data.root (the CSV file)")
        if dataset == "shards" and not root:
            raise ValueError("the shards dataset needs data.root (a shards folder or URL)")
        if season is not None and (isinstance(season, bool) or not isinstance(season, int)
                                   or season < 1):
            raise ValueError(f"season must be an int >= 1 (or None: from the timestamps), "
                             f"got {season!r}")
        self.dataset, self.root = dataset, root
        self.lookback, self.horizon = lookback, horizon
        self.time_column = time_column
        self.target_columns = list(target_columns) if target_columns else None
        self.fractions = tuple(fractions)
        self.val_start, self.test_start = val_start, test_start
        self.missing, self.irregular, self.on_error = missing, irregular, on_error
        self.splits = None
        self._season = season
        self._timestamps: pd.DatetimeIndex | None = None   # read by setup

    @property
    def num_channels(self) -> int:
        return len(self.columns)

    @property
    def columns(self) -> list[str]:
        """The forecast columns (reading the data if that has not happened yet)."""
        return self.classes

    @property
    def season(self) -> int:
        """MASE's season length: the ``season`` argument, else inferred from the timestamps
        (reading the data if that has not happened yet)."""
        if self._season is None:
            self.setup("fit")
            self._season = season_from_timestamps(self._timestamps)
            logger.info("season length %d (from the %s data's time step)", self._season,
                        self.dataset)
        return self._season

    @property
    def scaler_state(self) -> dict[str, Any]:
        """The training rows' standardisation, as a dict (kept with checkpoints)."""
        self.setup("fit")
        return self.splits.scaler.to_dict()

    def setup(self, stage: str | None = None) -> None:
        if self.splits is not None:
            return
        L, H = self.lookback, self.horizon
        if self.dataset == "shards":
            self.splits, each, self.skipped = shard_series_splits(self.root, L)
            self.classes = list(self.splits.columns)
            self._timestamps = next((s.timestamps for s in each.values()
                                     if s.timestamps is not None), None)
            for split, name in (("train", "training"), ("val", "validation"), ("test", "test")):
                windows = [SeriesWindows(getattr(s, split), L, H, name=f"{file} {name} split")
                           for file, s in each.items()]
                setattr(self, f"{split}_set", windows[0] if len(windows) == 1
                        else ConcatDataset(windows))
            return
        if self.dataset == "etth1":
            self.splits = etth1_splits(self.lookback, root=self.root)
        else:
            frame = read_series(self.root, time_column=self.time_column,
                                target_columns=self.target_columns, missing=self.missing,
                                irregular=self.irregular, on_error=self.on_error)
            self.splits = chronological_split(frame, self.lookback, fractions=self.fractions,
                                              val_start=self.val_start, test_start=self.test_start)
        s = self.splits
        self.classes = list(s.columns)
        self._timestamps = s.timestamps
        self.train_set = SeriesWindows(s.train, L, H, name=f"{self.dataset} training split")
        self.val_set = SeriesWindows(s.val, L, H, name=f"{self.dataset} validation split")
        self.test_set = SeriesWindows(s.test, L, H, name=f"{self.dataset} test split")

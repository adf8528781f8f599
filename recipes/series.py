"""Forecasting data: ETTh1 (the standard protocol) or a user's CSV -> sliding windows.

Values are standardised with a scaler fitted on the training rows only; validation and test
windows start ``lookback`` rows before their split so that their first target falls inside
it. Every window is used: no shuffling outside training and no dropped last batch.
"""

from __future__ import annotations

from typing import Optional, Sequence

from recipes.data import SplitDataModule
from zoo.data.series import SeriesWindows, chronological_split, etth1_splits, read_series

SERIES_DATASETS = ("etth1", "csv")


class SeriesDataModule(SplitDataModule):
    """Windows of ``lookback`` history and ``horizon`` future steps over every channel.

    ``dataset="etth1"``: rows and scaler as Informer / PatchTST (``root``: the data folder, or
    $ZOO_DATA). ``dataset="csv"``: ``root`` is the CSV file; ``time_column`` and
    ``target_columns`` pick the columns; the split is chronological, by ``fractions`` of rows
    or from the ``val_start`` / ``test_start`` timestamps; ``missing``, ``irregular`` and
    ``on_error`` are :func:`zoo.data.series.read_series`'s policies.
    """

    def __init__(self, *, dataset: str, lookback: int, horizon: int, root: Optional[str] = None,
                 time_column: Optional[str] = "date",
                 target_columns: Optional[Sequence[str]] = None,
                 fractions: Sequence[float] = (0.7, 0.1, 0.2), val_start: Optional[str] = None,
                 test_start: Optional[str] = None, missing: str = "error",
                 irregular: str = "error", on_error: str = "raise", batch_size: int = 128,
                 num_workers: int = 0, seed: int = 0) -> None:
        super().__init__(batch_size=batch_size, num_workers=num_workers, seed=seed)
        if dataset not in SERIES_DATASETS:
            raise ValueError(f"series dataset must be one of {SERIES_DATASETS}, got {dataset!r}")
        if dataset == "csv" and not root:
            raise ValueError("the csv dataset needs data.root (the CSV file)")
        self.dataset, self.root = dataset, root
        self.lookback, self.horizon = lookback, horizon
        self.time_column = time_column
        self.target_columns = list(target_columns) if target_columns else None
        self.fractions = tuple(fractions)
        self.val_start, self.test_start = val_start, test_start
        self.missing, self.irregular, self.on_error = missing, irregular, on_error
        self.splits = None

    @property
    def num_channels(self) -> int:
        return len(self.splits.columns)

    def setup(self, stage: Optional[str] = None) -> None:
        if self.splits is not None:
            return
        if self.dataset == "etth1":
            self.splits = etth1_splits(self.lookback, root=self.root)
        else:
            frame = read_series(self.root, time_column=self.time_column,
                                target_columns=self.target_columns, missing=self.missing,
                                irregular=self.irregular, on_error=self.on_error)
            self.splits = chronological_split(frame, self.lookback, fractions=self.fractions,
                                              val_start=self.val_start, test_start=self.test_start)
        s, L, H = self.splits, self.lookback, self.horizon
        self.classes = list(s.columns)
        self.train_set = SeriesWindows(s.train, L, H, name=f"{self.dataset} training split")
        self.val_set = SeriesWindows(s.val, L, H, name=f"{self.dataset} validation split")
        self.test_set = SeriesWindows(s.test, L, H, name=f"{self.dataset} test split")

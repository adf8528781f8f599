"""Datasets as litdata shards: an image folder, an audio folder, the digits or a folder of CSVs,
converted once and streamed into the same recipes from a local folder, ``file://`` or object
storage (``s3://``, ``gs://``, ``r2://``).

A shards root holds one litdata dataset per split and a small JSON index beside them::

    root/zoo_shards.json         kind, classes, samples per split, source, skipped files
    root/train/  root/val/  [root/test/]    litdata's index.json + chunk-*.bin

The split is made once, at conversion, by the same code as the in-memory recipes (an
ImageFolder's or AudioFolder's stratified split, the fixed digits split, a chronological split
per CSV). Samples are stored as read, before any model-specific step: encoded image bytes (checked
to decode), digits as 8x8 integers 0..16, mono waveforms at a chosen rate, series rows unscaled;
the data modules turn them into model inputs on the fly, as their in-memory paths do.

Reading: a :class:`ShardSplit` makes a litdata ``StreamingDataLoader`` once the trainer is
set up. litdata shards the samples over distributed ranks itself (so the recipes' own rank
sharding, :class:`recipes.fault_tolerance.ResumableSampler`, is not used for shards) and
shuffles by (seed, epoch); the loader's position travels in every checkpoint as the data
module's state (:class:`recipes.data.SplitDataModule`), so a run resumed from shards continues
mid-epoch where it stopped, to the same final weights.

    python -m recipes.streaming digits shards/digits
    python -m recipes.streaming imagefolder photos/ s3://bucket/photos-shards
    python -m recipes.streaming audiofolder clips/ shards/clips --sample-rate 16000
    python -m recipes.streaming csvfolder meters/ shards/meters --time-column timestamp
"""

from __future__ import annotations

import argparse
import io
import json
import logging
import multiprocessing
import os
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import litdata
import numpy as np
import torch
from litdata import StreamingDataLoader, StreamingDataset
from litdata.streaming.fs_provider import _get_fs_provider
from PIL import Image, ImageOps

from recipes.fault_tolerance import rng_state, set_rng_state
from zoo.data import ON_ERROR, OnError
from zoo.data.audio import AudioDecodeError, audio_folder_items, load_audio
from zoo.data.images import (
    DIGITS_LABELS,
    DIGITS_SPLIT_SEED,
    _to_rgb,
    digits_split_indices,
    image_folder_splits,
)
from zoo.data.series import Irregular, Missing, SeriesDataError, chronological_split, read_series

logger = logging.getLogger("zoo.recipes")

SHARDS_INDEX = "zoo_shards.json"
SHARDS_FORMAT = "zoo-shards"
SHARDS_VERSION = 1
SHARD_KINDS = ("images", "digits", "audio", "series")
SPLITS = ("train", "val", "test")
REMOTE_SCHEMES = ("s3", "gs", "r2")   # what litdata can both write to and stream from
DEFAULT_CHUNK_BYTES = "64MB"          # litdata's advice: chunks of tens of MB stream well

Location = str | Path


class ConversionError(RuntimeError):
    """A record that could not be written (a file that vanished or broke after the check)."""


# --- where shards live ------------------------------------------------------------------------

def shards_location(root: Location) -> str:
    """A shards root as litdata reads it: a local path made absolute (``file://`` stripped, ``~``
    expanded), or an ``s3://`` / ``gs://`` / ``r2://`` URL as given (without a trailing slash)."""
    text = str(root)
    if "://" not in text:
        return str(Path(text).expanduser().absolute())
    scheme, rest = text.split("://", 1)
    if scheme == "file":
        return str(Path(rest).expanduser().absolute())
    if scheme not in REMOTE_SCHEMES:
        raise ValueError(f"shards root {text}: unsupported scheme {scheme!r}; use a local path, "
                         f"file://, or one of {', '.join(s + '://' for s in REMOTE_SCHEMES)}")
    return text.rstrip("/")


def _is_remote(location: str) -> bool:
    return "://" in location


def _join(location: str, *parts: str) -> str:
    return "/".join([location.rstrip("/"), *parts]) if _is_remote(location) \
        else str(Path(location, *parts))


def _is_empty(location: str) -> bool:
    if _is_remote(location):
        return _get_fs_provider(location).is_empty(location)
    path = Path(location)
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def read_shards_index(root: Location) -> dict[str, Any]:
    """The JSON index of a shards root (see the module docstring); clear errors naming ``root``."""
    location = shards_location(root)
    where = _join(location, SHARDS_INDEX)
    missing = (f"no zoo shards at {location} (no {SHARDS_INDEX}); convert a dataset first, "
               "e.g. python -m recipes.streaming imagefolder SRC DST")
    if _is_remote(location):
        with tempfile.TemporaryDirectory() as tmp:
            try:   # providers raise their own errors for a missing object
                _get_fs_provider(where).download_file(where, str(Path(tmp, SHARDS_INDEX)))
            except Exception as err:
                raise FileNotFoundError(f"{missing} ({type(err).__name__}: {err})") from err
            text = Path(tmp, SHARDS_INDEX).read_text()
    elif not Path(where).is_file():
        raise FileNotFoundError(missing)
    else:
        text = Path(where).read_text()
    try:
        index = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{where} is not valid JSON: {err}") from err
    if not isinstance(index, dict) or index.get("format") != SHARDS_FORMAT:
        raise ValueError(f"{where} is not a zoo shards index (no \"format\": \"{SHARDS_FORMAT}\")")
    if index.get("kind") not in SHARD_KINDS:
        raise ValueError(f"{where}: unknown kind {index.get('kind')!r} (one of {SHARD_KINDS})")
    if index.get("version") != SHARDS_VERSION:
        raise ValueError(f"{where} has version {index.get('version')!r}; this zoo reads version "
                         f"{SHARDS_VERSION}: convert the dataset again")
    return index


def expect_kind(index: dict[str, Any], root: Location, kinds: Sequence[str], recipe: str) -> str:
    """``index["kind"]`` if it is one of ``kinds``; otherwise an error saying what the shards hold."""
    kind = index.get("kind")
    if kind not in kinds:
        raise ValueError(f"the shards at {root} hold {kind}; the {recipe} recipe reads "
                         f"{' or '.join(kinds)} shards")
    return str(kind)


# --- writing ----------------------------------------------------------------------------------

class _Guarded:
    """``records`` as a generator: item i's record, or nothing with the error noted in the file
    ``errors``. litdata raises on a failed record but leaves its worker and the worker's helper
    processes waiting for work that never comes; a record that is never made is no failure to it."""

    def __init__(self, records: Callable[[int], dict[str, Any]], errors: str) -> None:
        self.records, self.errors = records, errors

    def __call__(self, i: int) -> Iterator[dict[str, Any]]:
        try:
            record = self.records(i)
        except Exception as err:  # noqa: BLE001 - any failure is reported, after the others
            with open(self.errors, "a") as f:
                f.write(f"item {i}: {type(err).__name__}: {err}\n")
            return
        yield record


def _write_split(records: Callable[[int], dict[str, Any]], count: int, output: str, *,
                 name: str, chunk_bytes: int | str, num_workers: int) -> None:
    """``litdata.optimize`` over ``records(0) .. records(count - 1)``, in that order, into
    ``output``. A record that cannot be made raises ConversionError naming it and ``name`` (what
    is written), once the others are done. litdata's process-wide side effects are undone: it
    re-seeds the global RNGs, forces the multiprocessing start method and installs a SIGINT
    handler."""
    start_method = multiprocessing.get_start_method(allow_none=True)
    rng, sigint = rng_state(), signal.getsignal(signal.SIGINT)
    workers_env = os.environ.get("DATA_OPTIMIZER_NUM_WORKERS")
    # fork: workers start in milliseconds and need not unpickle ``records``
    fork = "fork" in multiprocessing.get_all_start_methods()
    fd, errors = tempfile.mkstemp(prefix="zoo-shards-errors-", suffix=".txt")
    os.close(fd)
    try:
        litdata.optimize(fn=_Guarded(records, errors), inputs=list(range(count)),
                         output_dir=output, chunk_bytes=chunk_bytes, num_workers=num_workers,
                         start_method="fork" if fork else "spawn", reorder_files=False,
                         keep_data_ordered=True, verbose=False)
        failed = Path(errors).read_text().splitlines()
    finally:
        Path(errors).unlink(missing_ok=True)
        multiprocessing.set_start_method(start_method, force=True)
        set_rng_state(rng)
        signal.signal(signal.SIGINT, sigint)
        if workers_env is None:
            os.environ.pop("DATA_OPTIMIZER_NUM_WORKERS", None)
        else:
            os.environ["DATA_OPTIMIZER_NUM_WORKERS"] = workers_env
    if failed:
        raise ConversionError(f"{name}: {len(failed)} of {count} records could not be made; the "
                           f"first: {failed[0]}")


def write_shards(dst: Location, splits: Mapping[str, Sequence[Any]],
                 records: Callable[[Sequence[Any]], Callable[[int], dict[str, Any]]],
                 meta: dict[str, Any], *, seed: int = 0,
                 chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
                 num_workers: int = 1) -> dict[str, Any]:
    """Write each split's items as ``dst/<split>/`` shards (``records(items)(i)`` is item i's
    record), then the JSON index with ``meta``; returns the index.

    The training split is written in a random order drawn from ``seed``: litdata shuffles the
    order of chunks and the items within a chunk, never across chunks, so chunks written in
    folder order (one class after another) would make single-class batches. The evaluation
    splits keep their order.

    ``dst`` must be empty or absent: shards are never written over. A local ``dst`` is written
    in a hidden folder beside it and renamed into place when whole, so an interrupted
    conversion leaves nothing at ``dst``; a remote one gets its index last.
    """
    location = shards_location(dst)
    if not _is_empty(location):
        raise FileExistsError(f"{location} is not empty; shards are never written over: choose a "
                              "new folder (or remove the old shards yourself)")
    if num_workers < 1:
        raise ValueError(f"num_workers must be >= 1, got {num_workers}")
    for split, items in splits.items():
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if not items:
            raise ValueError(f"the {split} split is empty; nothing to convert")
    if "train" in splits:
        order = torch.randperm(len(splits["train"]), generator=torch.Generator().manual_seed(seed))
        splits = {**splits, "train": [splits["train"][i] for i in order.tolist()]}
    index = {"format": SHARDS_FORMAT, "version": SHARDS_VERSION, **meta,
             "splits": {split: len(items) for split, items in splits.items()},
             "train_order_seed": seed,
             "created": time.strftime("%Y-%m-%d %H:%M:%S"), "litdata": litdata.__version__}
    text = json.dumps(index, indent=2) + "\n"
    if _is_remote(location):
        for split, items in splits.items():
            _write_split(records(items), len(items), _join(location, split),
                         name=f"the {split} split of {location}", chunk_bytes=chunk_bytes,
                         num_workers=num_workers)
        with tempfile.TemporaryDirectory() as tmp:
            Path(tmp, SHARDS_INDEX).write_text(text)
            _get_fs_provider(location).upload_file(str(Path(tmp, SHARDS_INDEX)),
                                                   _join(location, SHARDS_INDEX))
        return index
    target = Path(location)
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(dir=target.parent, prefix=f".{target.name}.partial-"))
    try:
        for split, items in splits.items():
            _write_split(records(items), len(items), str(stage / split),
                         name=f"the {split} split of {location}", chunk_bytes=chunk_bytes,
                         num_workers=num_workers)
        (stage / SHARDS_INDEX).write_text(text)
        if target.is_dir():
            target.rmdir()            # empty (checked above); fails if something appeared since
        os.rename(stage, target)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    logger.info("wrote %s shards to %s: %s", meta.get("kind"), location,
                ", ".join(f"{k} {v}" for k, v in index["splits"].items()))
    return index


# --- images -------------------------------------------------------------------------------------

def decode_image(data: bytes) -> Image.Image:
    """Encoded image bytes -> 8-bit RGB, upright: what :func:`zoo.data.images.load_image` reads
    from a file (the bytes were checked with it at conversion)."""
    with Image.open(io.BytesIO(data)) as image:
        image.load()
        return _to_rgb(ImageOps.exif_transpose(image))


class _FileRecords:
    """Item i -> {"image": the file's bytes, "label", "name"}; picklable for spawned workers."""

    def __init__(self, items: Sequence[tuple[str, int, str]]) -> None:
        self.items = list(items)

    def __call__(self, i: int) -> dict[str, Any]:
        path, label, name = self.items[i]
        return {"image": Path(path).read_bytes(), "label": label, "name": name}


def _folder_items(dataset: Any, root: Path) -> list[tuple[str, int, str]]:
    """(path, label, path relative to root) of an ImageFolder or a Subset of one, in its order."""
    samples = getattr(dataset, "dataset", dataset).samples
    order = dataset.indices if hasattr(dataset, "indices") else range(len(samples))
    return [(samples[i][0], int(samples[i][1]), Path(samples[i][0]).relative_to(root).as_posix())
            for i in order]


def convert_image_folder(src: Location, dst: Location, *, val_fraction: float = 0.2,
                         seed: int = 0, on_error: OnError = "raise",
                         chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
                         num_workers: int = 1) -> dict[str, Any]:
    """An ImageFolder tree -> image shards, split as the in-memory recipe splits it
    (:func:`zoo.data.images.image_folder_splits`: ``src/train`` + ``src/val`` [+ ``src/test``]
    as given, else ``src/<class>/...`` split by class with ``val_fraction`` and ``seed``).

    Every file is decoded once first: an unreadable one stops the conversion naming it
    (``on_error="raise"``) or is left out and listed in the index (``"skip"``). Records hold the
    file's bytes (``decode_image`` reads them), its class index and its path under ``src``.
    """
    root = Path(src).expanduser().absolute()
    train, val, test, classes = image_folder_splits(root, train_tf=None, eval_tf=None,
                                                    val_fraction=val_fraction, seed=seed,
                                                    on_error=on_error)
    splits = {"train": _folder_items(train, root), "val": _folder_items(val, root)}
    if test is not None:
        splits["test"] = _folder_items(test, root)
    skipped = sorted({Path(p).relative_to(root).as_posix() for d in (train, val, test)
                      if d is not None for p in getattr(getattr(d, "dataset", d), "skipped", [])})
    meta = {"kind": "images", "classes": list(classes), "source": str(root), "skipped": skipped}
    return write_shards(dst, splits, _FileRecords, meta, seed=seed, chunk_bytes=chunk_bytes,
                        num_workers=num_workers)


class _DigitsRecords:
    """Item i -> {"pixels": (8, 8) uint8 in 0..16, "label", "name"} of scikit-learn's digits."""

    def __init__(self, items: Sequence[int]) -> None:
        from sklearn.datasets import load_digits

        digits = load_digits()
        self.items = list(items)
        self.images, self.targets = digits.images.astype(np.uint8), digits.target

    def __call__(self, i: int) -> dict[str, Any]:
        k = self.items[i]
        return {"pixels": self.images[k], "label": int(self.targets[k]), "name": f"digits/{k}"}


def convert_digits(dst: Location, *, chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
                   num_workers: int = 1) -> dict[str, Any]:
    """scikit-learn's digits -> digits shards with the recipes' fixed split (train 1,257 / val
    180 / test 360, :func:`zoo.data.images.digits_split_indices`); pixels stay 8x8 integers."""
    splits = digits_split_indices()
    meta = {"kind": "digits", "classes": list(DIGITS_LABELS), "source": "sklearn.datasets.load_digits",
            "skipped": []}
    return write_shards(dst, splits, _DigitsRecords, meta, seed=DIGITS_SPLIT_SEED, chunk_bytes=chunk_bytes,
                        num_workers=num_workers)


# --- audio --------------------------------------------------------------------------------------

class _AudioRecords:
    """Item i -> {"wave": mono float32 (S,) at ``sample_rate``, "label", "name"}."""

    def __init__(self, items: Sequence[tuple[str, int, str]], sample_rate: int) -> None:
        self.items, self.sample_rate = list(items), sample_rate

    def __call__(self, i: int) -> dict[str, Any]:
        path, label, name = self.items[i]
        wave, _ = load_audio(path, sample_rate=self.sample_rate)
        return {"wave": wave.numpy(), "label": label, "name": name}


def _readable_clips(items: Sequence[tuple[Path, int]], root: Path, on_error: OnError,
                    skipped: list[str]) -> list[tuple[str, int, str]]:
    """(path, label, path under root) of the clips that decode; the others raise naming the
    file (``on_error="raise"``) or are appended to ``skipped`` (``"skip"``)."""
    kept = []
    for path, label in items:
        name = path.relative_to(root).as_posix()
        try:
            load_audio(path)
        except AudioDecodeError as err:
            if on_error == "raise":
                raise AudioDecodeError(f"{err} (on_error=skip leaves such files out)") from err
            logger.warning("skipped: %s", err)
            skipped.append(name)
            continue
        kept.append((str(path), label, name))
    return kept


def convert_audio_folder(src: Location, dst: Location, *, sample_rate: int = 16000,
                         val_fraction: float = 0.2, seed: int = 0, on_error: OnError = "raise",
                         chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
                         num_workers: int = 1) -> dict[str, Any]:
    """An AudioFolder tree -> audio shards of mono waveforms at ``sample_rate`` Hz, split as the
    in-memory recipe splits it (:func:`zoo.data.audio.audio_folder_items`), decoded, mixed down
    and resampled by :func:`zoo.data.audio.load_audio`.

    Every file is decoded once first: an undecodable one stops the conversion naming it
    (``on_error="raise"``) or is left out and listed in the index (``"skip"``). The data module
    computes filterbanks from the waveforms, so one set of shards serves any model of that rate.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be > 0 Hz, got {sample_rate}")
    root = Path(src).expanduser().absolute()
    train, val, test, classes = audio_folder_items(root, val_fraction=val_fraction, seed=seed)
    skipped: list[str] = []
    splits = {"train": _readable_clips(train, root, on_error, skipped),
              "val": _readable_clips(val, root, on_error, skipped)}
    if test:
        splits["test"] = _readable_clips(test, root, on_error, skipped)
    meta = {"kind": "audio", "classes": list(classes), "sample_rate": int(sample_rate),
            "source": str(root), "skipped": sorted(skipped)}
    return write_shards(dst, splits, lambda items: _AudioRecords(items, int(sample_rate)), meta,
                        seed=seed, chunk_bytes=chunk_bytes, num_workers=num_workers)


# --- series -------------------------------------------------------------------------------------

class _SeriesRecords:
    """Item i -> {"values": (T, C) float64 rows, unscaled, "time": (T,) int64, "name"}."""

    def __init__(self, items: Sequence[dict[str, Any]]) -> None:
        self.items = list(items)

    def __call__(self, i: int) -> dict[str, Any]:
        return dict(self.items[i])


def convert_csv_folder(src: Location, dst: Location, *, time_column: str | None = "date",
                       target_columns: Sequence[str] | None = None,
                       fractions: tuple[float, float, float] = (0.7, 0.1, 0.2),
                       val_start: str | None = None, test_start: str | None = None,
                       missing: Missing = "error", irregular: Irregular = "error",
                       on_error: OnError = "raise",
                       chunk_bytes: int | str = DEFAULT_CHUNK_BYTES,
                       num_workers: int = 1) -> dict[str, Any]:
    """A folder of CSVs (``src/**/*.csv``, one series each, the same columns) -> series shards:
    each split holds one record per file with that file's rows of the split.

    Files are read by :func:`zoo.data.series.read_series` (``time_column``, ``target_columns``,
    ``missing``, ``irregular`` and ``on_error`` as there) and split in time order by
    :func:`zoo.data.series.chronological_split`'s rule (``fractions`` of rows, or the
    ``val_start`` / ``test_start`` dates). Rows are stored unscaled and without look-back
    overlap: the data module fits the scaler on the training rows and prepends the look-back.
    ``on_error="skip"`` also leaves out, listed in the index, files that cannot be read.
    ``"time"`` is nanoseconds since the epoch (UTC), or the row number without a time column.
    """
    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    root = Path(src).expanduser().absolute()
    if not root.is_dir():
        raise FileNotFoundError(f"CSV folder {root} does not exist")
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() == ".csv" and p.is_file()
                   and not any(part.startswith(".") for part in p.relative_to(root).parts))
    if not files:
        raise FileNotFoundError(f"{root} holds no .csv files")
    splits: dict[str, list[dict[str, Any]]] = {split: [] for split in SPLITS}
    columns, skipped, zones = None, [], {}
    for path in files:
        name = path.relative_to(root).as_posix()
        try:
            frame = read_series(path, time_column=time_column, target_columns=target_columns,
                                missing=missing, irregular=irregular, on_error=on_error)
            borders = chronological_split(frame, 1, fractions=fractions,
                                          val_start=val_start, test_start=test_start).borders
        except SeriesDataError as err:
            if on_error == "raise":
                raise SeriesDataError(f"{err} (on_error=skip leaves such files out)") from err
            logger.warning("skipped: %s", err)
            skipped.append(name)
            continue
        if columns is None:
            columns, first = [str(c) for c in frame.columns], name
        elif [str(c) for c in frame.columns] != columns:
            raise SeriesDataError(f"{path}: columns {[str(c) for c in frame.columns]} differ from "
                                  f"{first}'s {columns}; pick common ones with target_columns=...")
        values = frame.to_numpy(np.float64)
        if time_column is None:
            stamps = np.arange(len(frame), dtype=np.int64)
        else:
            zones[name] = str(frame.index.tz) if frame.index.tz is not None else None
            stamps = frame.index.as_unit("ns").asi8      # UTC, also for zoned timestamps
        ends = {"train": borders["train"][1], "val": borders["val"][1], "test": borders["test"][1]}
        start = 0
        for split in SPLITS:
            splits[split].append({"values": values[start:ends[split]],
                                  "time": stamps[start:ends[split]], "name": name})
            start = ends[split]
    if columns is None:
        raise SeriesDataError(f"none of the {len(files)} CSV files in {root} could be read")
    meta = {"kind": "series", "columns": columns, "time_column": time_column,
            "time_zones": zones, "files": [r["name"] for r in splits["train"]],
            "source": str(root), "skipped": skipped}
    return write_shards(dst, splits, _SeriesRecords, meta, chunk_bytes=chunk_bytes,
                        num_workers=num_workers)


# --- reading ------------------------------------------------------------------------------------

def read_split(root: Location, split: str) -> Iterator[dict[str, Any]]:
    """Every record of one split in stored order, as written (bytes as ``bytes``), on any rank."""
    index = read_shards_index(root)
    if split not in index["splits"]:
        raise ValueError(f"the shards at {root} have no {split} split (they have "
                         f"{', '.join(index['splits'])})")
    dataset = StreamingDataset(_join(shards_location(root), split))
    for i in range(index["splits"][split]):
        record = dataset[i]
        yield {k: bytes(v) if isinstance(v, memoryview) else v for k, v in record.items()}


class ShardLoader(StreamingDataLoader):
    """litdata's loader, with a restored position used for the resumed epoch only.

    litdata keeps a restored position until an epoch's iterator runs out; Lightning stops
    after an epoch's last batch without running it out, so the epoch after a resumed one would
    start from the restored position again. Once the resumed epoch yields, it is dropped.
    """

    def __iter__(self) -> Iterator[Any]:
        for batch in super().__iter__():
            self.restore = False       # the running iterator holds the position now
            yield batch


@dataclass(frozen=True)
class ShardSplit:
    """One split of a shards root as a data module holds it: where it is, how many samples it
    has, and ``transform``, which turns a record into a sample (what the in-memory dataset's
    ``__getitem__`` returns). Its loader is made by :meth:`loader` once the trainer is set up."""

    location: str
    num_samples: int
    transform: Callable[[dict[str, Any]], Any]

    def __len__(self) -> int:
        return self.num_samples

    def loader(self, *, batch_size: int, shuffle: bool, seed: int, num_workers: int = 0,
               world_size: int = 1) -> ShardLoader:
        """A resumable loader over this split; litdata gives each of the ``world_size`` ranks
        its own part. Training (``shuffle``) drops the samples that would leave ranks with
        unequal batch counts under DDP; evaluation reads every sample once."""
        # a full permutation within each chunk (a chunk is read whole anyway), not litdata's
        # blocks of 256; items are then decoded one by one, not in (wasted) windows of 256
        dataset = StreamingDataset(self.location, shuffle=shuffle, seed=seed,
                                   drop_last=None if shuffle else False, item_shuffle_window=0,
                                   batch_decode=0, transform=self.transform)
        detected = dataset.distributed_env.world_size
        if detected != world_size:
            raise RuntimeError(
                f"litdata sees {detected} process(es) but the trainer runs {world_size}: make "
                "the shards' loaders after the process group is up (in *_dataloader(), not setup())")
        # the loader's own generator: making an iterator must not draw from the global RNG
        return ShardLoader(dataset, batch_size=batch_size, num_workers=num_workers,
                           pin_memory=torch.cuda.is_available(),
                           generator=torch.Generator().manual_seed(seed))


def shard_splits(root: Location, index: dict[str, Any],
                 transforms: dict[str, Callable[[dict[str, Any]], Any]]
                 ) -> tuple[ShardSplit, ShardSplit, ShardSplit | None]:
    """(train, val, test or None) of a shards root, each split with its own ``transforms[split]``."""
    location, counts = shards_location(root), index["splits"]
    missing = [s for s in ("train", "val") if s not in counts]
    if missing:
        raise ValueError(f"the shards at {root} have no {' or '.join(missing)} split")

    def split(name: str) -> ShardSplit:
        return ShardSplit(_join(location, name), int(counts[name]), transforms[name])

    return split("train"), split("val"), split("test") if "test" in counts else None


# --- command line -------------------------------------------------------------------------------

def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _fractions(text: str) -> tuple[float, float, float]:
    try:
        train, val, test = (float(x) for x in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected three numbers like 0.7,0.1,0.2, got {text!r}") from None
    return train, val, test


def build_parser(prog: str = "python -m recipes.streaming") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="convert a dataset to litdata shards that the recipes stream (data.dataset=shards)")
    sub = parser.add_subparsers(dest="command", required=True)

    def common(p: argparse.ArgumentParser, *, split: bool = True) -> None:
        p.add_argument("dst", help="an empty or new folder, file://..., or s3:// gs:// r2:// URL")
        p.add_argument("--chunk-bytes", default=DEFAULT_CHUNK_BYTES,
                       help=f"shard chunk size (default {DEFAULT_CHUNK_BYTES})")
        p.add_argument("--num-workers", type=_positive_int, default=1,
                       help="conversion processes (default 1)")
        if split:
            p.add_argument("--on-error", choices=ON_ERROR, default="raise",
                           help="an unreadable file stops the conversion (raise) or is left out (skip)")

    p = sub.add_parser("imagefolder", help="SRC/<class>/<image>, or SRC/train, SRC/val [, SRC/test]")
    p.add_argument("src")
    common(p)
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0, help="of the train / val split")
    p = sub.add_parser("audiofolder", help="SRC/<class>/<clip>, or SRC/train, SRC/val [, SRC/test]")
    p.add_argument("src")
    common(p)
    p.add_argument("--sample-rate", type=_positive_int, default=16000,
                   help="Hz the clips are resampled to: the model's (default 16000)")
    p.add_argument("--val-fraction", type=float, default=0.2)
    p.add_argument("--seed", type=int, default=0, help="of the train / val split")
    p = sub.add_parser("digits", help="scikit-learn's digits with the recipes' fixed split")
    common(p, split=False)
    p = sub.add_parser("csvfolder", help="SRC/**/*.csv, one series per file, the same columns")
    p.add_argument("src")
    common(p)
    p.add_argument("--time-column", default="date", help="'' for none: rows in file order")
    p.add_argument("--columns", default=None, help="comma-separated target columns (default: all)")
    p.add_argument("--fractions", type=_fractions, default=(0.7, 0.1, 0.2))
    p.add_argument("--val-start", default=None)
    p.add_argument("--test-start", default=None)
    p.add_argument("--missing", choices=("error", "interpolate"), default="error")
    p.add_argument("--irregular", choices=("error", "reindex"), default="error")
    return parser


def convert(args: argparse.Namespace) -> dict[str, Any]:
    """Run the conversion ``args`` (from :func:`build_parser`) names; returns the shards index."""
    out = dict(chunk_bytes=args.chunk_bytes, num_workers=args.num_workers)
    if args.command == "digits":
        return convert_digits(args.dst, **out)
    out["on_error"] = args.on_error
    if args.command == "imagefolder":
        return convert_image_folder(args.src, args.dst, val_fraction=args.val_fraction,
                                    seed=args.seed, **out)
    if args.command == "audiofolder":
        return convert_audio_folder(args.src, args.dst, sample_rate=args.sample_rate,
                                    val_fraction=args.val_fraction, seed=args.seed, **out)
    return convert_csv_folder(args.src, args.dst, time_column=args.time_column or None,
                              target_columns=args.columns.split(",") if args.columns else None,
                              fractions=args.fractions, val_start=args.val_start,
                              test_start=args.test_start, missing=args.missing,
                              irregular=args.irregular, **out)


def main(argv: Sequence[str] | None = None, prog: str = "python -m recipes.streaming") -> int:
    """``zoo shards KIND [SRC] DST [options]`` (or ``python -m recipes.streaming ...``): prints
    the shards index (JSON); exit status 2 with one line on stderr for bad input."""
    args = build_parser(prog).parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        index = convert(args)
    except (ValueError, FileNotFoundError, FileExistsError, ConversionError) as err:
        message = str(err).replace("on_error='skip'", "--on-error skip")
        print(f"{prog.removeprefix('python -m ')} {args.command}: error: "
              f"{message.replace('on_error=skip', '--on-error skip')}", file=sys.stderr)
        return 2
    print(json.dumps(index, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

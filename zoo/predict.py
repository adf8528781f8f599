"""Batch prediction for classifiers: files, folders or a CSV of paths -> top-k labels per file.

    rows = predict_files(model, collect_inputs(["photos/", "more.png"], model), batch_size=64)
    write_predictions(rows, "results.csv")

Images are read whole (16-bit, palette and CMYK files converted, EXIF rotation applied; see
:func:`zoo.data.images.load_image`) and preprocessed as the model's cfg says (resize, crop,
mean / std); audio clips are decoded, mixed down to mono and resampled to the model's rate, and
their filterbanks computed a batch at a time; a clip longer than the model's window is
classified by sliding windows and reported by its most confident one. Each batch of files is
read and preprocessed whole in a DataLoader worker process while the model runs on the batch
before (``num_workers``; audio clips of one rate are resampled a few per call, features made
in one call for the batch). An unreadable file (truncated, corrupt, over the
decompression-bomb limit) stops the run naming it, or with ``on_error="skip"`` is reported in
its row (``error``) and the run goes on.
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from zoo.data.audio import AUDIO_SUFFIXES, load_audio, resample_clips
from zoo.data.images import (
    ON_ERROR,
    eval_transform,
    load_image,
    preprocess_settings,
    resolve_labels,
)
from zoo.frontends import AudioFeatureConfig, audio_features
from zoo.models.base import Classifier, require_pretrained_cfg
from zoo.models.ctc import CTCModel, Transcript
from zoo.precision import autocast, check_precision

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


def _suffixes(model: nn.Module) -> tuple[str, ...]:
    return AUDIO_SUFFIXES if getattr(model, "modality", "") in ("audio", "speech") else IMAGE_SUFFIXES


def collect_inputs(inputs: Sequence[str | Path], model: nn.Module) -> list[Path]:
    """Files named directly, the model's kind of files under folders (recursively, sorted), and
    the ``path`` column of ``.csv`` files (relative paths are relative to the CSV)."""
    import pandas as pd

    suffixes = _suffixes(model)
    found: list[Path] = []
    for item in map(Path, inputs):
        if item.is_dir():
            files = sorted(p for p in item.rglob("*") if p.suffix.lower() in suffixes)
            if not files:
                raise ValueError(f"{item} holds no {'/'.join(suffixes)} files")
            found += files
        elif item.suffix.lower() == ".csv":
            table = pd.read_csv(item)
            if "path" not in table.columns:
                raise ValueError(f"{item}: a list of inputs needs a 'path' column; it has "
                                 f"{', '.join(map(str, table.columns))}")
            found += [p if p.is_absolute() else item.parent / p
                      for p in map(Path, table["path"].astype(str))]
        else:
            found.append(item)
    return found


def audio_windows(wave: torch.Tensor, config: Any) -> list[tuple[int, int]]:
    """(start, end) samples of the windows a long clip (S,) is classified by: the model's own
    window (``target_frames`` frames), every half window, the last one ending at the clip's
    end; a clip that fits is one window."""
    size = config.window_samples
    total = wave.numel()
    if total <= size:
        return [(0, total)]
    starts = list(range(0, total - size + 1, size // 2))
    if starts[-1] != total - size:
        starts.append(total - size)
    return [(s, s + size) for s in starts]


class FileReader:
    """Reads files into the model's inputs: :meth:`__call__` one file ([(3, S, S) image], or
    the (S,) waveform of each window of an audio clip with the windows' (start, end) in
    samples); :meth:`read_batch` a batch of files straight to model inputs."""

    def __init__(self, model: Classifier) -> None:
        self.audio = model.modality == "audio"
        if self.audio:
            # AST's filterbank or Whisper's log-mel settings
            self.config: AudioFeatureConfig = cast(AudioFeatureConfig, model.fbank_config)
            self.features = audio_features(self.config)   # no parameters: cheap in a worker
        else:
            preprocess = require_pretrained_cfg(model, "reading images for a model").preprocess
            self.transform = eval_transform(preprocess["input_size"][-1],
                                            **preprocess_settings(preprocess))

    def __call__(self, path: Path) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
        if not self.audio:
            return [self.transform(load_image(path))], [(0, 0)]
        wave, _ = load_audio(path, sample_rate=self.config.sample_rate)
        return self._windows(path, wave)

    def _windows(self, path: Path, wave: torch.Tensor
                 ) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
        if wave.numel() < self.config.min_samples:
            raise ValueError(f"{path}: {wave.numel()} samples at {self.config.sample_rate} Hz "
                             f"is shorter than one {self.config.frame_length_ms:g} ms frame")
        windows = audio_windows(wave, self.config)
        return [wave[a:b] for a, b in windows], windows

    def read_batch(self, paths: Sequence[Path]) -> ReadBatch:
        """Read ``paths`` (one batch) to model inputs; a file that cannot be read is recorded
        in ``errors``, not raised. Audio: decoded at the file's rate, resampled a few clips
        per call (:func:`resample_clips`), cut into windows, padded and turned into features
        in one call."""
        errors: dict[int, Exception] = {}
        items: list[torch.Tensor] = []
        owners: list[int] = []
        spans: list[tuple[int, int]] = []
        if not self.audio:
            for i, path in enumerate(paths):
                try:
                    items.append(self.transform(load_image(path)))
                except (ValueError, FileNotFoundError) as err:
                    errors[i] = err
                    continue
                owners.append(i)
            return ReadBatch(errors, torch.stack(items) if items else None, owners,
                             [(0, 0)] * len(items))
        waves: dict[int, torch.Tensor] = {}
        rates: dict[int, int] = {}
        for i, path in enumerate(paths):
            try:
                waves[i], rates[i] = load_audio(path)
            except (ValueError, FileNotFoundError) as err:
                errors[i] = err
        target = self.config.sample_rate
        for rate in set(rates.values()) - {target}:
            group = [i for i in waves if rates[i] == rate]
            logger.info("resampling %d clip(s) from %d Hz to %d Hz", len(group), rate, target)
            waves.update(zip(group, resample_clips([waves[i] for i in group], rate, target),
                             strict=True))
        for i in sorted(waves):
            try:
                clips, windows = self._windows(paths[i], waves[i])
            except ValueError as err:
                errors[i] = err
                continue
            items += clips
            owners += [i] * len(clips)
            spans += windows
        if not items:
            return ReadBatch(errors, None, owners, spans)
        lengths = torch.tensor([w.numel() for w in items])
        with torch.no_grad():
            features = self.features(torch.nn.utils.rnn.pad_sequence(items, batch_first=True),
                                     lengths=lengths)                 # (N, T, F)
        return ReadBatch(errors, features, owners, spans)


@dataclass
class ReadBatch:
    """One batch of files as model inputs: ``inputs`` (N, 3, S, S) images or (N, T, F) audio
    features (None when no file could be read), ``owners`` the position in the batch of the
    file each of the N rows belongs to (a long clip owns several windows, consecutive),
    ``spans`` each row's (start, end) in samples ((0, 0) for images), ``errors`` position ->
    the error of each unreadable file."""

    errors: dict[int, Exception]
    inputs: torch.Tensor | None
    owners: list[int]
    spans: list[tuple[int, int]]


class _FileBatches(Dataset):
    """Batch ``b`` = :meth:`FileReader.read_batch` of ``paths[b * size:(b + 1) * size]``: a
    DataLoader worker reads and preprocesses a whole batch."""

    def __init__(self, reader: FileReader, paths: Sequence[Path], size: int) -> None:
        self.reader, self.paths, self.size = reader, paths, size

    def __len__(self) -> int:
        return (len(self.paths) + self.size - 1) // self.size

    def __getitem__(self, b: int) -> ReadBatch:
        return self.reader.read_batch(self.paths[b * self.size:(b + 1) * self.size])


def batch_inputs(model: Classifier, items: list[torch.Tensor], audio: bool) -> torch.Tensor:
    """A batch of what :class:`FileReader` read: images stacked, or waveforms padded and turned
    into filterbanks (B, T, F), each clip's own frames."""
    if not audio:
        return torch.stack(items)
    if model.modality != "audio":
        raise TypeError(f"{type(model).__name__} does not take audio")
    lengths = torch.tensor([w.numel() for w in items])
    waves = torch.nn.utils.rnn.pad_sequence(items, batch_first=True)
    filterbank = cast(Callable[..., torch.Tensor], model.filterbank)
    return filterbank(waves, lengths=lengths)   # (B, T, F): each clip's frames


def default_workers() -> int:
    """DataLoader workers :func:`predict_files` reads with by default: the logical CPUs that
    PyTorch's intra-op threads leave free, at most 4. Where the model's threads take every
    CPU, workers would preempt them mid-GEMM: on 2 cores (2 threads) 512 clips through a small
    AST took 3.0 s read in-process vs 3.5 s with 1 or 2 workers (images: equal)."""
    return max(0, min(4, (os.cpu_count() or 1) - torch.get_num_threads()))


def predict_files(model: Classifier, paths: Sequence[Path], *, batch_size: int = 32,
                  top_k: int = 5, on_error: str = "raise", progress: bool = True,
                  num_workers: int | None = None, precision: str = "32-true"
                  ) -> list[dict[str, Any]]:
    """Top-``top_k`` labels of each file, in order: dicts with ``path``, ``label``,
    ``probability`` and ``top_k`` ([(label, probability), ...]), or ``error`` (skipped).

    An audio clip longer than the model's window is classified window by window (see
    :func:`audio_windows`); its row is the most confident window's, with ``window`` (start,
    end) in seconds and ``duration`` (s) of the clip.

    ``num_workers`` DataLoader worker processes (default :func:`default_workers`; 0: this
    process) decode and preprocess a batch of ``batch_size`` files each while the model runs
    on the one before; at most one worker per batch after the first is started.

    ``precision``: ``32-true`` (float32, the default) or ``bf16-mixed`` (bfloat16 autocast:
    about 1.5-2x faster on CPUs with AVX512-BF16 / AMX, probabilities within about 1e-2;
    see :mod:`zoo.precision`).
    """
    from tqdm.auto import tqdm

    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    num_workers = default_workers() if num_workers is None else num_workers
    if num_workers < 0:
        raise ValueError(f"num_workers must be >= 0, got {num_workers}")
    check_precision(precision)
    model.eval()
    device = next(model.parameters()).device
    cfg = require_pretrained_cfg(model, "predict_files")
    labels = resolve_labels(cfg.labels, model.num_classes)
    read = FileReader(model)
    rate = read.config.sample_rate if read.audio else 1
    batches = _FileBatches(read, paths, batch_size)
    # batch_size=None: the dataset's items are whole batches, passed on as they are
    loader = DataLoader(batches, batch_size=None, num_workers=max(0, min(num_workers, len(batches) - 1)))
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(paths), unit="file", disable=not progress, desc="predict")
    for b, batch in enumerate(loader):
        chunk = paths[b * batch_size:(b + 1) * batch_size]
        if batch.errors and on_error == "raise":
            raise batch.errors[min(batch.errors)]
        found: dict[int, dict[str, Any]] = {}
        if batch.inputs is not None:
            # long clips add windows: keep model batches small
            with torch.inference_mode(), autocast(precision, device):
                probs = torch.cat([model(x.to(device)).float().softmax(dim=-1).cpu()
                                   for x in batch.inputs.split(batch_size)])
            found = _best_windows(probs, batch.owners, batch.spans, labels, top_k, rate)
        for i, path in enumerate(chunk):
            if i in batch.errors:
                logger.warning("skipped: %s", batch.errors[i])
                rows.append({"path": str(path), "error": str(batch.errors[i])})
            else:
                rows.append({"path": str(path), **found[i]})
        bar.update(len(chunk))
    bar.close()
    return rows


def _best_windows(probs: torch.Tensor, owners: list[int], spans: list[tuple[int, int]],
                  labels: list[str], top_k: int, rate: int) -> dict[int, dict[str, Any]]:
    """One row per file (by its position ``owners[i]``, its windows consecutive) from its
    windows' probabilities (N, K): the most confident window's top-k."""
    confidence = probs.max(dim=-1).values.tolist()
    top = probs.topk(min(top_k, probs.shape[-1]))
    values, indices = top.values.tolist(), top.indices.tolist()
    rows: dict[int, dict[str, Any]] = {}
    start = 0
    while start < len(owners):
        end = start + 1
        while end < len(owners) and owners[end] == owners[start]:
            end += 1
        best = max(range(start, end), key=confidence.__getitem__)   # the first, on a tie
        ranked = [(labels[j], p) for p, j in zip(values[best], indices[best], strict=True)]
        row = {"label": ranked[0][0], "probability": ranked[0][1], "top_k": ranked,
               "error": None}
        if end - start > 1:
            (a, b), last = spans[best], spans[end - 1][1]
            row.update(window=(a / rate, b / rate), duration=last / rate)
        rows[owners[start]] = row
        start = end
    return rows


def write_predictions(rows: Sequence[dict[str, Any]], path: str | Path,
                      top_k: int | None = None) -> Path:
    """One CSV row per file: path, label, probability, the top-k as ``label:p;...``, the
    window of a long audio clip (``start-end`` seconds, empty otherwise), error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "probability", "top_k", "window_s", "error"])
        for row in rows:
            ranked = row.get("top_k") or []
            window = row.get("window")
            writer.writerow([row["path"], row.get("label", ""),
                             f"{row['probability']:.6f}" if "probability" in row else "",
                             ";".join(f"{label}:{p:.6f}" for label, p in ranked[:top_k]),
                             f"{window[0]:.2f}-{window[1]:.2f}" if window else "",
                             row.get("error") or ""])
    return path


def transcribe_files(model: CTCModel, paths: Sequence[Path], *, beam_width: int = 1,
                     timestamps: bool = False, batch_size: int = 16, on_error: str = "raise",
                     progress: bool = True) -> list[dict[str, Any]]:
    """The text of each audio file, in order: dicts with ``path``, ``text``, ``duration`` (s)
    and, with ``timestamps``, ``words`` ([(word, start s, end s, score), ...]), or ``error``
    (skipped with ``on_error="skip"``). Files are decoded one at a time and long recordings
    run in windows (:meth:`CTCModel.transcribe`), so memory stays bounded."""
    from tqdm.auto import tqdm

    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    rate = model.sample_rate
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(paths), unit="file", disable=not progress, desc="transcribe")
    for path in paths:
        try:
            wave, _ = load_audio(path, sample_rate=rate)       # its errors name the file
            if wave.numel() < model.fbank_config.min_samples:
                raise ValueError(f"{path}: {wave.numel()} samples at {rate} Hz is shorter than "
                                 f"one {model.fbank_config.frame_length_ms:g} ms frame")
            result = model.transcribe([wave], beam_width=beam_width, timestamps=timestamps,
                                      batch_size=batch_size)[0]
        except (ValueError, FileNotFoundError) as err:
            if on_error == "raise":
                raise
            logger.warning("skipped: %s", err)
            rows.append({"path": str(path), "error": str(err)})
        else:
            row: dict[str, Any] = {"path": str(path), "duration": wave.numel() / rate}
            if isinstance(result, Transcript):
                row.update(text=result.text, words=result.words)
            else:
                row["text"] = result
            rows.append(row)
        bar.update(1)
    bar.close()
    return rows


def write_transcripts(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """One CSV row per file: path, text, duration_s, words (``word@start-end`` in seconds,
    ``;``-separated, with timestamps), error. An existing file is never replaced."""
    path = Path(path)
    if path.exists():
        raise FileExistsError(f"{path} exists; zoo never writes over a file: choose another name")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "x", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "text", "duration_s", "words", "error"])
        for row in rows:
            words = ";".join(f"{w.text}@{w.start:.2f}-{w.end:.2f}" for w in row.get("words") or [])
            duration = f"{row['duration']:.3f}" if "duration" in row else ""
            writer.writerow([row["path"], row.get("text", ""), duration, words,
                             row.get("error") or ""])
    return path

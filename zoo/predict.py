"""Batch prediction for classifiers: files, folders or a CSV of paths -> top-k labels per file.

    rows = predict_files(model, collect_inputs(["photos/", "more.png"], model), batch_size=64)
    write_predictions(rows, "results.csv")

Images are read whole (16-bit, palette and CMYK files converted, EXIF rotation applied; see
:func:`zoo.data.images.load_image`) and preprocessed as the model's cfg says (resize, crop,
mean / std); audio clips are decoded, mixed down to mono and resampled to the model's rate, and
their filterbanks computed a batch at a time; a clip longer than the model's window is
classified by sliding windows and reported by its most confident one. An unreadable file
(truncated, corrupt, over the decompression-bomb limit) stops the run naming it, or with
``on_error="skip"`` is reported in its row (``error``) and the run goes on.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from zoo.data.audio import AUDIO_SUFFIXES, load_audio
from zoo.data.images import (
    ON_ERROR,
    eval_transform,
    load_image,
    preprocess_settings,
    resolve_labels,
)
from zoo.frontends import AudioFeatureConfig
from zoo.models.base import Classifier, require_pretrained_cfg
from zoo.models.ctc import CTCModel, Transcript

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
    """Reads one file into the model's inputs: [(3, S, S) image], or the (S,) waveform of each
    window of an audio clip with the windows' (start, end) in samples."""

    def __init__(self, model: Classifier) -> None:
        self.audio = model.modality == "audio"
        if self.audio:
            # AST's filterbank or Whisper's log-mel settings
            self.config: AudioFeatureConfig = cast(AudioFeatureConfig, model.fbank_config)
        else:
            preprocess = require_pretrained_cfg(model, "reading images for a model").preprocess
            self.transform = eval_transform(preprocess["input_size"][-1],
                                            **preprocess_settings(preprocess))

    def __call__(self, path: Path) -> tuple[list[torch.Tensor], list[tuple[int, int]]]:
        if not self.audio:
            return [self.transform(load_image(path))], [(0, 0)]
        wave, _ = load_audio(path, sample_rate=self.config.sample_rate)
        if wave.numel() < self.config.min_samples:
            raise ValueError(f"{path}: {wave.numel()} samples at {self.config.sample_rate} Hz "
                             f"is shorter than one {self.config.frame_length_ms:g} ms frame")
        windows = audio_windows(wave, self.config)
        return [wave[a:b] for a, b in windows], windows


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


def predict_files(model: Classifier, paths: Sequence[Path], *, batch_size: int = 32,
                  top_k: int = 5, on_error: str = "raise", progress: bool = True
                  ) -> list[dict[str, Any]]:
    """Top-``top_k`` labels of each file, in order: dicts with ``path``, ``label``,
    ``probability`` and ``top_k`` ([(label, probability), ...]), or ``error`` (skipped).

    An audio clip longer than the model's window is classified window by window (see
    :func:`audio_windows`); its row is the most confident window's, with ``window`` (start,
    end) in seconds and ``duration`` (s) of the clip.
    """
    from tqdm.auto import tqdm

    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if top_k < 1:
        raise ValueError(f"top_k must be >= 1, got {top_k}")
    model.eval()
    cfg = require_pretrained_cfg(model, "predict_files")
    labels = resolve_labels(cfg.labels, model.num_classes)
    read = FileReader(model)
    rate = read.config.sample_rate if read.audio else 1
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(paths), unit="file", disable=not progress, desc="predict")
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        items, owners, spans = [], [], []
        for path in chunk:
            try:
                inputs, windows = read(path)
            except (ValueError, FileNotFoundError) as err:
                if on_error == "raise":
                    raise
                logger.warning("skipped: %s", err)
                rows.append({"path": str(path), "error": str(err)})
                continue
            items += inputs
            owners += [path] * len(inputs)
            spans += windows
        probs = []
        for i in range(0, len(items), batch_size):   # long clips add windows: keep batches small
            with torch.inference_mode():
                batch = batch_inputs(model, items[i:i + batch_size], read.audio)
                probs.append(model(batch).softmax(dim=-1))
        if items:
            rows += _best_windows(torch.cat(probs), owners, spans, labels, top_k, rate)
        bar.update(len(chunk))
    bar.close()
    order = {str(p): i for i, p in enumerate(paths)}
    return sorted(rows, key=lambda r: order[r["path"]])


def _best_windows(probs: torch.Tensor, owners: list[Path], spans: list[tuple[int, int]],
                  labels: list[str], top_k: int, rate: int) -> list[dict[str, Any]]:
    """One row per file from its windows' probabilities (N, K): the most confident window."""
    rows = []
    for path in dict.fromkeys(owners):
        index = [i for i, owner in enumerate(owners) if owner == path]
        best = max(index, key=lambda i: probs[i].max().item())
        top = probs[best].topk(min(top_k, probs.shape[-1]))
        ranked = [(labels[j], p)
                  for p, j in zip(top.values.tolist(), top.indices.tolist(), strict=True)]
        row = {"path": str(path), "label": ranked[0][0], "probability": ranked[0][1],
               "top_k": ranked, "error": None}
        if len(index) > 1:
            (a, b), end = spans[best], spans[index[-1]][1]
            row.update(window=(a / rate, b / rate), duration=end / rate)
        rows.append(row)
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

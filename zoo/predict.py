"""Batch prediction for classifiers: files, folders or a CSV of paths -> top-k labels per file.

    rows = predict_files(model, collect_inputs(["photos/", "more.png"], model), batch_size=64)
    write_predictions(rows, "results.csv")

Images are read with PIL and preprocessed as the model's cfg says (resize, centre crop, mean /
std); audio clips are decoded, mixed down to mono and resampled to the model's rate, and their
filterbanks computed a batch at a time. An unreadable file stops the run naming it, or with
``on_error="skip"`` is reported in its row (``error``) and the run goes on.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import torch
from torch import nn

from zoo.data.audio import AUDIO_SUFFIXES, load_audio
from zoo.data.images import eval_transform, preprocess_settings, resolve_labels

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")
ON_ERROR = ("raise", "skip")


def _suffixes(model: nn.Module) -> tuple[str, ...]:
    return AUDIO_SUFFIXES if getattr(model, "modality", "") == "audio" else IMAGE_SUFFIXES


def collect_inputs(inputs: Sequence[Union[str, Path]], model: nn.Module) -> list[Path]:
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


class _Reader:
    """Reads one file into the model's input: (3, S, S) image or (S,) waveform."""

    def __init__(self, model: nn.Module) -> None:
        self.audio = getattr(model, "modality", "") == "audio"
        if self.audio:
            self.config = model.fbank_config
        else:
            preprocess = model.pretrained_cfg.preprocess
            self.transform = eval_transform(preprocess["input_size"][-1],
                                            **preprocess_settings(preprocess))

    def __call__(self, path: Path) -> torch.Tensor:
        if self.audio:
            wave, _ = load_audio(path, sample_rate=self.config.sample_rate)
            if wave.numel() < self.config.frame_length:
                raise ValueError(f"{path}: {wave.numel()} samples at {self.config.sample_rate} Hz "
                                 f"is shorter than one {self.config.frame_length_ms:g} ms frame")
            return wave
        from PIL import Image, UnidentifiedImageError

        try:
            with Image.open(path) as image:
                return self.transform(image.convert("RGB"))
        except (FileNotFoundError, UnidentifiedImageError, OSError) as err:
            raise ValueError(f"cannot read image {path}: {err}") from err


def _model_inputs(model: nn.Module, items: list[torch.Tensor], audio: bool) -> torch.Tensor:
    if not audio:
        return torch.stack(items)
    lengths = torch.tensor([w.numel() for w in items])
    waves = torch.nn.utils.rnn.pad_sequence(items, batch_first=True)
    return model.filterbank(waves, lengths=lengths)   # (B, T, F), each clip's own frames


def predict_files(model: nn.Module, paths: Sequence[Path], *, batch_size: int = 32,
                  top_k: int = 5, on_error: str = "raise", progress: bool = True
                  ) -> list[dict[str, Any]]:
    """Top-``top_k`` labels of each file, in order: dicts with ``path``, ``label``,
    ``probability`` and ``top_k`` ([(label, probability), ...]), or ``error`` (skipped)."""
    from tqdm.auto import tqdm

    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    if getattr(model, "modality", "") not in ("image", "audio"):
        raise ValueError("batch prediction is for image and audio classifiers; forecasters: "
                         "`zoo forecast`")
    model.eval()
    labels = resolve_labels(model.pretrained_cfg.labels, model.num_classes)
    read = _Reader(model)
    rows: list[dict[str, Any]] = []
    bar = tqdm(total=len(paths), unit="file", disable=not progress, desc="predict")
    for start in range(0, len(paths), batch_size):
        chunk = paths[start:start + batch_size]
        items, kept = [], []
        for path in chunk:
            try:
                items.append(read(path))
                kept.append(path)
            except (ValueError, FileNotFoundError) as err:
                if on_error == "raise":
                    raise
                logger.warning("skipped: %s", err)
                rows.append({"path": str(path), "error": str(err)})
        if items:
            with torch.inference_mode():
                probs = model(_model_inputs(model, items, read.audio)).softmax(dim=-1)
            top = probs.topk(min(top_k, probs.shape[-1]), dim=-1)
            for path, values, indices in zip(kept, top.values.tolist(), top.indices.tolist()):
                ranked = [(labels[i], p) for p, i in zip(values, indices)]
                rows.append({"path": str(path), "label": ranked[0][0],
                             "probability": ranked[0][1], "top_k": ranked, "error": None})
        bar.update(len(chunk))
    bar.close()
    order = {str(p): i for i, p in enumerate(paths)}
    return sorted(rows, key=lambda r: order[r["path"]])


def write_predictions(rows: Sequence[dict[str, Any]], path: Union[str, Path],
                      top_k: Optional[int] = None) -> Path:
    """One CSV row per file: path, label, probability, the top-k as ``label:p;...``, error."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "probability", "top_k", "error"])
        for row in rows:
            ranked = row.get("top_k") or []
            writer.writerow([row["path"], row.get("label", ""),
                             f"{row['probability']:.6f}" if "probability" in row else "",
                             ";".join(f"{label}:{p:.6f}" for label, p in ranked[:top_k]),
                             row.get("error") or ""])
    return path

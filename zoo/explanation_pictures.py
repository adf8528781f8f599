"""Pictures of explanations: relevance (:func:`zoo.explain`) drawn over what the model saw.

    paths = explain_files(model, ["digits/"], "explained/")            # images or audio clips
    explain_series(forecaster, frame, "explained/etth1.png")          # a forecaster's history

Images: the image and the relevance heat map over it. Audio: the normalised log-mel
filterbank (frequency x time) and the heat map over it. Forecasters: one strip per channel,
the history shaded by the relevance of each of its patches, the forecast after it. Titles name
the model's prediction (label and probability) or forecast. Relevance is scaled to the
picture's own maximum; colours compare patches within a picture, not across pictures.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd
import torch

from zoo._optional import pyplot
from zoo.data.images import ON_ERROR
from zoo.explanations import Target, explain, spread_to_input
from zoo.models.base import Classifier, Forecaster, require_pretrained_cfg
from zoo.predict import FileReader, batch_inputs

if TYPE_CHECKING:
    from matplotlib.figure import Figure

logger = logging.getLogger(__name__)

HEAT = "inferno"


def _pyplot() -> Any:
    return pyplot("zoo explain's pictures")


def _scaled(relevance: torch.Tensor) -> torch.Tensor:
    top = relevance.max()
    return relevance / top if top > 0 else relevance


def _save(fig: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    _pyplot().close(fig)
    return path


def draw_image(image: torch.Tensor, relevance: torch.Tensor, path: str | Path, *,
               title: str = "") -> Path:
    """``image`` (3, H, W) in [0, 1] and its relevance per pixel (H, W): image | heat map over
    it, side by side."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(6.4, 3.6), layout="constrained")
    picture = image.permute(1, 2, 0).clamp(0, 1).numpy()
    axes[0].imshow(picture, interpolation="nearest")
    axes[1].imshow(picture, interpolation="nearest")
    shown = axes[1].imshow(_scaled(relevance).numpy(), cmap=HEAT, alpha=0.6, vmin=0, vmax=1,
                           interpolation="bilinear")
    fig.colorbar(shown, ax=axes[1], fraction=0.046, pad=0.04, label="relevance")
    for ax, name in zip(axes, ("input", "relevance"), strict=True):
        ax.set_title(name, fontsize=9)
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def draw_spectrogram(fbank: torch.Tensor, relevance: torch.Tensor, path: str | Path, *,
                     frame_shift_ms: float, title: str = "") -> Path:
    """A filterbank (F, T) and its relevance per bin and frame (F, T): the log-mel spectrogram
    above, the heat map over it below; time in seconds."""
    plt = _pyplot()
    bins, frames = fbank.shape
    extent = (0.0, frames * frame_shift_ms / 1000, 0, bins)
    fig, axes = plt.subplots(2, 1, figsize=(7.0, 5.0), sharex=True, layout="constrained")
    for ax in axes:
        ax.imshow(fbank.numpy(), origin="lower", aspect="auto", cmap="gray", extent=extent)
        ax.set_ylabel("mel bin")
    shown = axes[1].imshow(_scaled(relevance).numpy(), origin="lower", aspect="auto", cmap=HEAT,
                           alpha=0.6, vmin=0, vmax=1, extent=extent, interpolation="bilinear")
    fig.colorbar(shown, ax=axes, fraction=0.03, label="relevance")
    axes[0].set_title("log-mel filterbank (normalised)", fontsize=9)
    axes[1].set_title("relevance", fontsize=9)
    axes[1].set_xlabel("time (s)")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def draw_series(history: pd.DataFrame, forecast: pd.DataFrame, relevance: torch.Tensor,
                path: str | Path, *, title: str = "") -> Path:
    """``history`` (L, C) (the look-back), ``forecast`` (H, C) after it, relevance per history
    step (C, L): one strip per channel, the history shaded by its relevance (scaled per
    channel, since each channel is explained for its own forecast)."""
    plt = _pyplot()
    columns = list(history.columns)
    fig, axes = plt.subplots(len(columns), 1, figsize=(10, 1.5 * len(columns) + 0.6),
                             sharex=True, squeeze=False, layout="constrained")
    steps = pd.RangeIndex(len(history) + len(forecast)) - len(history)   # 0 = first forecast
    past, future = steps[:len(history)], steps[len(history):]
    for row, (ax, column) in enumerate(zip(axes[:, 0], columns, strict=True)):
        values = pd.concat([history[column], forecast[column]])
        low, high = float(values.min()), float(values.max())
        pad = 0.05 * (high - low or 1.0)
        shade = ax.imshow(_scaled(relevance[row])[None].numpy(), aspect="auto", cmap="Reds",
                          vmin=0, vmax=1, alpha=0.7, interpolation="nearest",
                          extent=(past[0] - 0.5, past[-1] + 0.5, low - pad, high + pad))
        ax.plot(past, history[column].to_numpy(), color="0.15", linewidth=0.9)
        ax.plot(future, forecast[column].to_numpy(), color="tab:blue", linewidth=1.3)
        ax.axvline(-0.5, color="0.5", linestyle=":", linewidth=0.8)
        ax.set_xlim(past[0] - 0.5, future[-1] + 0.5)
        ax.set_ylim(low - pad, high + pad)
        ax.set_ylabel(str(column), rotation=0, ha="right", va="center")
    axes[-1, 0].set_xlabel("steps (0 = first forecast step); shading: relevance of each "
                           "history step for the channel's forecast (blue)")
    fig.colorbar(shade, ax=axes[:, 0], fraction=0.02, label="relevance")
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


# --- files -> pictures -------------------------------------------------------------------------

def picture_paths(paths: Sequence[Path], out_dir: str | Path) -> list[Path]:
    """One ``.png`` per input under ``out_dir``, named by its path relative to the inputs'
    common folder (``a/3.png`` -> ``OUT/a/3.png``)."""
    out_dir = Path(out_dir)
    resolved = [Path(p).resolve() for p in paths]
    common = Path(os.path.commonpath([p.parent for p in resolved])) if resolved else Path()
    pictures = [out_dir / p.relative_to(common).with_suffix(".png") for p in resolved]
    seen: dict[Path, Path] = {}
    for source, picture in zip(paths, pictures, strict=True):
        if picture in seen:
            raise ValueError(f"{seen[picture]} and {source} would both be drawn to {picture}; "
                             "explain them in separate runs")
        seen[picture] = source
    return pictures


def check_writable(pictures: Sequence[Path], overwrite: bool, flag: str = "--overwrite") -> None:
    """Refuse to replace existing files (all named up front) unless ``overwrite``."""
    existing = [p for p in pictures if p.exists()]
    if existing and not overwrite:
        shown = ", ".join(map(str, existing[:3])) + (" ..." if len(existing) > 3 else "")
        raise FileExistsError(f"{len(existing)} picture(s) already exist ({shown}); choose "
                              f"another output folder, or pass {flag} to replace them")


def _display_image(model: Classifier, x: torch.Tensor) -> torch.Tensor:
    """The model's normalised input (3, H, W) back in [0, 1] for drawing."""
    pre = require_pretrained_cfg(model, "drawing an image").preprocess
    mean = torch.tensor(pre.get("mean", (0.5,) * 3)).view(-1, 1, 1)
    std = torch.tensor(pre.get("std", (0.5,) * 3)).view(-1, 1, 1)
    return (x * std + mean).clamp(0, 1)


def explain_files(model: Classifier, paths: Sequence[str | Path],
                  out_dir: str | Path, *, method: str = "grad_rollout",
                  target: int | str | None = None, overwrite: bool = False, progress: bool = True,
                  on_error: str = "raise", name: str | None = None) -> list[Path]:
    """Explain a classifier's prediction for each image or audio file: one PNG each under
    ``out_dir`` (see :func:`picture_paths`); returns the paths of the pictures drawn.

    Files are read as :func:`zoo.predict.predict_files` reads them; an audio clip longer
    than the model's window is explained on its most confident window. An unreadable file
    stops the run naming it, or with ``on_error="skip"`` is logged and left out. Nothing is
    written when a picture would replace an existing file, unless ``overwrite``.
    """
    from tqdm.auto import tqdm

    from zoo.data.images import resolve_labels

    if on_error not in ON_ERROR:
        raise ValueError(f"on_error must be one of {ON_ERROR}, got {on_error!r}")
    files = [Path(p) for p in paths]
    pictures = picture_paths(files, out_dir)
    check_writable(pictures, overwrite)
    model.eval()
    read = FileReader(model)
    labels = resolve_labels(require_pretrained_cfg(model, "explain_files").labels,
                            model.num_classes)
    name = name or getattr(model.pretrained_cfg, "name", None) or type(model).__name__
    drawn = []
    for path, picture in tqdm(list(zip(files, pictures, strict=True)), disable=not progress,
                              unit="file", desc="explain"):
        try:
            items, spans = read(path)
        except (ValueError, FileNotFoundError) as err:
            if on_error == "raise":
                raise
            logger.warning("skipped: %s", err)
            continue
        batch = batch_inputs(model, items, read.audio)
        with torch.inference_mode():
            probs = model(batch).softmax(-1)
        best = int(probs.max(-1).values.argmax())
        x = batch[best:best + 1]
        relevance = explain(model, x, method=method, target=target)
        if target is None:
            shown = int(probs[best].argmax())
        else:
            shown = labels.index(target) if isinstance(target, str) else int(target)
        title = (f"{name}: {labels[shown]} ({100 * float(probs[best, shown]):.1f}%)"
                 f"{'' if target is None else ' (target)'} - {method}\n{path.name}")
        axes = model.front_end.patch_axes(tuple(x.shape))
        per_input = spread_to_input(relevance, axes)[0]
        if read.audio:
            config = read.config
            if len(items) > 1:
                a, b = spans[best]
                title += f", window {a / config.sample_rate:.2f}-{b / config.sample_rate:.2f} s"
            draw_spectrogram(x[0].T, per_input, picture, frame_shift_ms=config.frame_shift_ms,
                             title=title)
        else:
            draw_image(_display_image(model, x[0]), per_input, picture, title=title)
        drawn.append(picture)
    return drawn


def explain_series(model: Forecaster, frame: pd.DataFrame, picture: str | Path, *,
                   method: str = "grad_rollout", target: Target = None,
                   overwrite: bool = False, name: str | None = None) -> Path:
    """Explain a forecaster's forecast from the last look-back of ``frame`` (rows in time
    order, numeric columns): one PNG with a strip per column."""
    from zoo.forecasting import forecast_frame

    picture = Path(picture)
    check_writable([picture], overwrite)
    forecast = forecast_frame(model, frame)
    history = frame.iloc[-model.context_length:]
    x = torch.tensor(history.to_numpy(), dtype=torch.float32)[None]
    relevance = explain(model, x, method=method, target=target)
    per_step = spread_to_input(relevance, model.front_end.patch_axes(tuple(x.shape)))[0]
    name = name or getattr(model.pretrained_cfg, "name", None) or type(model).__name__
    step, channel = target if isinstance(target, tuple) else (target, None)
    what = ("the whole forecast" if step is None else f"forecast step {step}") + \
        ("" if channel is None else f" of {history.columns[channel]}")
    title = (f"{name}: {len(forecast)}-step forecast from {len(history)} steps - {method}, "
             f"relevance for {what}")
    return draw_series(history, forecast, per_step, picture, title=title)

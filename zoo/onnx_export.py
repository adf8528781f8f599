"""ONNX export for deployment: one self-contained ``.onnx`` file per model, any modality.

    from zoo.onnx_export import export_onnx, check_onnx
    path = export_onnx(model, "model.onnx")            # dynamic batch axis, metadata inside
    check_onnx(model, path, x)                          # max |onnxruntime - PyTorch|

What the graph takes and returns, per ``model.modality``:

    image   pixel_values (B, 3, H, W)  normalised with the cfg's mean / std  -> logits (B, K)
    audio   fbank (B, T, F)            the model's normalised log-mel fbank  -> logits (B, K)
    series  past_values (B, L, C)      raw history, in the data's own scale  -> forecast (B, H, C)

Only B is dynamic; H, W / T, F / L, C are the model's own sizes (the resampling of position
tables to other sizes stays in PyTorch). The audio front end (waveform -> filterbank) stays
outside the graph, since ONNX has no Kaldi filterbank: compute the input in PyTorch with

    # wave: (B, S) float32 in [-1, 1] at model.fbank_config.sample_rate Hz
    fbank = model.filterbank(wave)    # -> (B, target_frames, num_mel_bins), padded or cut, and
                                      # normalised as (log_mel - mean) / (2 * std)
    fbank = model.filterbank(wave, sample_rate=44100)   # other rates are resampled first
    fbank = model.filterbank(wave, lengths=lengths)     # right-padded clips of different lengths

The file's ``metadata_props`` carry ``zoo.architecture``, ``zoo.modality``, ``zoo.input_name``,
``zoo.input_layout``, ``zoo.output_name``, ``zoo.preprocess`` (JSON) and, where known,
``zoo.labels`` (JSON), so that a deployment needs nothing but the file.

Export uses PyTorch's default (``torch.export``-based, "dynamo") ONNX exporter for every
modality. A traced graph cannot branch on data, so PatchTST's NaN handling follows its
``nan_policy`` there (see ``SeriesFrontEnd.normalize``): ``mask`` masks, ``raise`` passes NaN
through to the forecast instead of raising.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo._optional import require
from zoo.models.base import TokenModel
from zoo.package import __version__, _jsonable

logger = logging.getLogger(__name__)

# modality -> (input name, input layout, output name, output layout)
IO_NAMES: dict[str, tuple[str, str, str, str]] = {
    "image": ("pixel_values", "B,C,H,W", "logits", "B,K"),
    "audio": ("fbank", "B,T,F", "logits", "B,K"),
    "series": ("past_values", "B,L,C", "forecast", "B,H,C"),
}


class _Graph(nn.Module):
    """The model's plain ``forward(x)`` with one positional input (no ``sample_rate`` etc.)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x)


def _check_model(model: nn.Module) -> TokenModel:
    """``model`` itself, once it is known to be a zoo model of an exportable modality."""
    if not isinstance(model, TokenModel):
        raise ValueError(f"expected a zoo model (made by zoo.create_model / zoo.load), got "
                         f"{type(model).__name__}")
    if model.modality not in IO_NAMES:
        raise ValueError(f"cannot export modality {model.modality!r} of {type(model).__name__}; "
                         f"known modalities: {', '.join(IO_NAMES)}")
    return model


def _preprocess(model: TokenModel) -> dict[str, Any]:
    cfg = getattr(model, "pretrained_cfg", None)
    return {**(dict(cfg.preprocess) if cfg is not None else {}), **model.input_spec()}


def example_input(model: nn.Module, batch_size: int = 2, *, seed: int = 0) -> torch.Tensor:
    """A random float32 input of the model's own size with ``batch_size`` rows.

    image (B, C, H, W), audio (B, target_frames, num_mel_bins), series (B, context_length, C).
    """
    model = _check_model(model)
    modality, spec = model.modality, _preprocess(model)
    gen = torch.Generator().manual_seed(seed)
    if modality == "image":
        shape = tuple(spec["input_size"])
    elif modality == "audio":
        shape = (spec["target_frames"], spec["num_mel_bins"])
    else:
        shape = (spec["context_length"], spec["num_channels"])
    return torch.randn((batch_size, *shape), generator=gen)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def _metadata(model: TokenModel, example: torch.Tensor) -> dict[str, str]:
    in_name, in_layout, out_name, out_layout = IO_NAMES[model.modality]
    cfg = getattr(model, "pretrained_cfg", None)
    dims = ", ".join(["batch", *map(str, example.shape[1:])])
    meta = {
        "zoo.architecture": cfg.architecture if cfg is not None else type(model).__name__,
        "zoo.model_class": type(model).__name__,
        "zoo.modality": model.modality,
        "zoo.input_name": in_name,
        "zoo.input_layout": f"{in_layout} ({dims}) float32",
        "zoo.output_name": out_name,
        "zoo.output_layout": out_layout,
        "zoo.preprocess": json.dumps(_jsonable(_preprocess(model)), sort_keys=True),
    }
    if cfg is not None and cfg.labels is not None:
        meta["zoo.labels"] = json.dumps(_jsonable(cfg.labels))
    meta["zoo.version"] = __version__
    return meta


def export_onnx(model: nn.Module, path: str | Path, *, batch_size: int = 2,
                opset: int | None = None) -> Path:
    """Export ``model`` (in eval mode) to a self-contained ONNX file at ``path``; returns it.

    The graph has one input and one output named after the modality (see :data:`IO_NAMES`):
    ``pixel_values`` (B, 3, H, W) / ``fbank`` (B, T, F) -> ``logits`` (B, K), or
    ``past_values`` (B, L, C) -> ``forecast`` (B, H, C). The batch axis is dynamic;
    ``batch_size`` only sets the batch of the random example traced. ``opset`` defaults to the
    exporter's (20 with torch 2.14). Weights are stored in the file (external data only past
    ONNX's 2 GB limit). The model's training mode is restored afterwards.
    """
    model = _check_model(model)
    modality = model.modality
    require("onnx", "ONNX export", "export")
    require("onnxscript", "ONNX export (PyTorch's exporter)", "export")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    in_name, _, out_name, _ = IO_NAMES[modality]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    example = example_input(model, batch_size).to(_device(model))
    was_training = model.training
    model.eval()
    try:
        graph = _Graph(model).eval()
        with torch.no_grad():
            model(example)  # the model's own input checks, once, before tracing
        start = time.perf_counter()
        program = torch.onnx.export(
            graph, (example,), dynamo=True, input_names=[in_name], output_names=[out_name],
            dynamic_shapes=({0: torch.export.Dim("batch")},), opset_version=opset,
            verbose=False)
        if program is None:   # only the legacy exporter (dynamo=False) returns None
            raise RuntimeError("torch.onnx.export(dynamo=True) returned no ONNX program")
        program.model.metadata_props.update(_metadata(model, example))
        program.save(path)
    finally:
        model.train(was_training)
    logger.info("exported %s to %s in %.1f s", type(model).__name__, path,
                time.perf_counter() - start)
    return path


def check_onnx(model: nn.Module, path: str | Path, inputs: torch.Tensor, *,
               atol: float = 1e-4) -> float:
    """Run ``path`` with onnxruntime (CPU) on ``inputs`` and compare with ``model(inputs)``.

    ``inputs`` is the graph's input, any batch size: (B, 3, H, W), (B, T, F) or (B, L, C).
    Returns the largest absolute difference of the outputs (NaN in the same places counts as
    equal); raises ``RuntimeError`` if it exceeds ``atol``.
    """
    from zoo.quantize import ort_session, run_onnx

    _check_model(model)
    x = torch.as_tensor(inputs, dtype=torch.float32)
    got = run_onnx(ort_session(path), x)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            want = model(x.to(_device(model))).float().cpu().numpy()
    finally:
        model.train(was_training)
    if got.shape != want.shape:
        raise RuntimeError(f"ONNX output shape {got.shape} differs from PyTorch's {want.shape}")
    same_nan = np.isnan(got) == np.isnan(want)
    if not same_nan.all():
        raise RuntimeError(f"ONNX and PyTorch outputs have NaN in different places ({path})")
    diff = np.abs(np.nan_to_num(got) - np.nan_to_num(want))
    max_diff = float(diff.max()) if diff.size else 0.0
    if not max_diff <= atol:
        raise RuntimeError(f"ONNX output differs from PyTorch's by {max_diff:.3g} > atol={atol:g} "
                           f"({path})")
    return max_diff

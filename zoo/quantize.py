"""Dynamic int8 quantisation of exported ONNX models, for CPU deployment.

    from zoo.quantize import quantize_onnx, compare_onnx
    quantize_onnx("model.onnx", "model.int8.onnx")        # int8 weights on every Linear layer
    compare_onnx("model.onnx", "model.int8.onnx", x)       # max diff, top-1 agreement

The weights of every ``MatMul`` with a constant right-hand side (each ``nn.Linear``: the
fused QKV projection, the attention output projection, the MLP, the head) are stored as int8
(symmetric, one scale per output channel); activations are quantised to uint8 per tensor at run
time (``DynamicQuantizeLinear``), so no calibration data is needed. The products of two
activations (attention scores, attention x values), layer norms, softmax and GELU stay float32.
ONNX Runtime fuses each quantised product into ``DynamicQuantizeMatMul`` (u8 x s8 GEMMs, with
VNNI where the CPU has it). Its ``quantize_dynamic`` is used, not PyTorch's: PyTorch's
``torch.ao.quantization.quantize_dynamic`` warns that it is deprecated (torch 2.14), and ONNX
Runtime's int8 models measured faster here (``benchmarks/quantization.py``).

On x86 CPUs without VNNI (AVX2 / plain AVX-512) ONNX Runtime's u8 x s8 kernel sums pairs of
products in int16 (``vpmaddubsw``), which can saturate; the accuracy a model card states is
measured on one machine (the card names its CPU flags), and ``reduce_range=True`` (7-bit
weights) avoids the saturation where a model loses accuracy from it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from zoo._optional import require
from zoo.models.base import Forecaster

logger = logging.getLogger(__name__)

QUANTIZE_MODES = ("int8",)
QUANTIZED_NAME = "model.int8.onnx"   # beside model.onnx in a package
# quantised / float32 output difference, relative to the float32 outputs' largest magnitude,
# above which an export is refused: int8 rounding moves outputs by a few per cent; a broken
# graph moves them by their own size
MAX_RELATIVE_DIFF = 0.2


def ort_session(path: str | Path, *, threads: int | None = None) -> Any:
    """An ONNX Runtime CPU session for ``path`` with ``threads`` intra-op threads (default:
    ``torch.get_num_threads()``) that do not spin while idle (spinning threads would steal the
    cores from whatever runs between two calls, PyTorch included)."""
    ort = require("onnxruntime", "running ONNX models", "export")
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads or torch.get_num_threads()
    options.inter_op_num_threads = 1
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def run_onnx(session: Any, x: torch.Tensor | np.ndarray) -> np.ndarray:
    """The session's first output for input ``x`` (its one graph input), as float32 numpy."""
    array = x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
    return session.run(None, {session.get_inputs()[0].name: array.astype(np.float32)})[0]


def quantize_onnx(src: str | Path, dst: str | Path, *, mode: str = "int8",
                  per_channel: bool = True, reduce_range: bool = False) -> Path:
    """Write ``src`` (a float32 ``.onnx`` file from :func:`zoo.onnx_export.export_onnx`) with
    int8 Linear weights to ``dst``, a new file (an existing one is never replaced); returns it.

    ``per_channel``: one weight scale per output feature (default) rather than per matrix.
    ``reduce_range``: 7-bit weights, for CPUs without VNNI where a model loses accuracy to
    int16 saturation. The file keeps ``src``'s metadata and adds ``zoo.quantization``.
    """
    if mode not in QUANTIZE_MODES:
        raise ValueError(f"quantize must be one of {QUANTIZE_MODES}, got {mode!r}")
    src, dst = Path(src), Path(dst)
    if not src.is_file():
        raise FileNotFoundError(f"no ONNX file at {src}")
    if dst.exists():
        raise FileExistsError(f"{dst} exists; zoo never writes over files: choose a new name")
    onnx = require("onnx", "int8 quantisation", "export")
    quantization = require("onnxruntime.quantization", "int8 quantisation", "export")
    fd, tmp = tempfile.mkstemp(dir=dst.parent, prefix=f".{dst.name}.", suffix=".tmp")
    os.close(fd)
    try:
        quantization.quantize_dynamic(
            src, tmp, op_types_to_quantize=["MatMul"], per_channel=per_channel,
            reduce_range=reduce_range, weight_type=quantization.QuantType.QInt8,
            extra_options={"MatMulConstBOnly": True})
        proto = onnx.load(tmp)
        how = (f"int8 dynamic (onnxruntime {require('onnxruntime', 'int8', 'export').__version__}"
               f"): MatMul weights QInt8 {'per channel' if per_channel else 'per tensor'}"
               f"{', reduced range' if reduce_range else ''}, activations QUInt8 per tensor")
        entry = proto.metadata_props.add()
        entry.key, entry.value = "zoo.quantization", how
        onnx.save(proto, tmp)
        shutil.copymode(src, tmp)   # mkstemp's file is private; the package's are not
        os.link(tmp, dst)   # fails, rather than replaces, if dst appeared meanwhile
    finally:
        os.unlink(tmp)
    return dst


def compare_onnx(reference: str | Path, quantized: str | Path, inputs: torch.Tensor, *,
                 max_relative_diff: float = MAX_RELATIVE_DIFF) -> dict[str, float]:
    """Run both ONNX files on ``inputs`` (the graph input, any batch) and compare outputs.

    Returns ``max_abs_diff``, ``relative_diff`` (that over the reference outputs' largest
    magnitude) and, for logits (B, K), ``top1_agreement`` (the fraction of rows whose arg max
    agree). Raises ``RuntimeError`` on a shape or NaN mismatch or a relative difference above
    ``max_relative_diff``.
    """
    want = run_onnx(ort_session(reference), inputs)
    got = run_onnx(ort_session(quantized), inputs)
    if got.shape != want.shape:
        raise RuntimeError(f"{quantized} gives outputs of shape {got.shape}, {reference} "
                           f"{want.shape}")
    if not (np.isnan(got) == np.isnan(want)).all():
        raise RuntimeError(f"{quantized} and {reference} have NaN in different places")
    got, want = np.nan_to_num(got), np.nan_to_num(want)
    max_diff = float(np.abs(got - want).max()) if got.size else 0.0
    scale = float(np.abs(want).max()) if want.size else 0.0
    result = {"max_abs_diff": max_diff, "relative_diff": max_diff / scale if scale else 0.0}
    if want.ndim == 2:   # logits (B, K)
        result["top1_agreement"] = float((got.argmax(-1) == want.argmax(-1)).mean())
    if not result["relative_diff"] <= max_relative_diff:
        raise RuntimeError(f"{quantized}'s outputs differ from {reference}'s by "
                           f"{max_diff:.3g} ({result['relative_diff']:.1%} of their largest "
                           f"magnitude > {max_relative_diff:.0%}): the quantised model is broken")
    return result


@contextlib.contextmanager
def onnx_forward(model: nn.Module, path: str | Path) -> Iterator[nn.Module]:
    """Within the block, ``model(x)`` runs the ONNX file ``path`` (the model's own export)
    instead of PyTorch, so that any evaluation code scores the deployed file: images
    (B, 3, H, W) / filterbanks (B, T, F) -> logits (B, K), history (B, L, C) [, horizon] ->
    forecast (B, H, C). Waveforms and other arguments are refused (the graph takes one input).
    """
    session = ort_session(path)
    graph_input = session.get_inputs()[0]

    def forward(x: torch.Tensor, horizon: int | None = None) -> torch.Tensor:
        if x.ndim != len(graph_input.shape):
            raise ValueError(f"{path} takes {graph_input.name} of rank {len(graph_input.shape)} "
                             f"{graph_input.shape}, got shape {tuple(x.shape)}")
        out = torch.from_numpy(run_onnx(session, x)).to(x.device)
        if horizon is not None:   # forecasters only
            if not isinstance(model, Forecaster):
                raise TypeError(f"{type(model).__name__} takes no horizon")
            out = out[:, :model.check_horizon(horizon)]
        return out

    if "forward" in vars(model):
        raise RuntimeError("onnx_forward: the model's forward is already replaced")
    model.forward = forward
    try:
        yield model
    finally:
        del model.forward

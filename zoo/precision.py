"""Inference precision: float32, or bfloat16 mixed precision where the hardware computes it.

The names are Lightning's (``trainer.precision``): ``32-true`` runs in float32 (the default:
outputs equal the reference libraries'),
``bf16-mixed`` runs matrix products, attention and norms in bfloat16 under ``torch.autocast``
(the weights stay float32). On CPUs with native bf16 instructions (AVX512-BF16 or AMX on
x86) the matrix products run about 2x faster; elsewhere bf16 is emulated and slower, which
:func:`autocast` warns about. Probabilities move by about 1e-2 (bfloat16 keeps 8 bits of
mantissa): what that costs in accuracy on the bundled weights is measured in the README.
Unlike Lightning's ``bf16-mixed`` (which turns autocast off on a CPU, scoring float32 with a
warning), this one runs bfloat16 on CPUs too.

    with autocast("bf16-mixed", device):
        logits = model(x).float()
"""

from __future__ import annotations

import contextlib
import platform
import warnings

import torch

PRECISIONS = ("32-true", "bf16-mixed")


def native_bf16(device: torch.device | str = "cpu") -> bool:
    """Whether ``device`` computes bfloat16 in hardware (a CUDA GPU that supports it; an x86
    CPU with AVX512-BF16 or AMX; on other CPUs, what oneDNN reports)."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    if device.type != "cpu":
        return False
    # torch has no public query; these private ones are what its own CPU tests use
    if platform.machine().lower() in ("x86_64", "amd64", "i686", "i386"):
        return bool(torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported())
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


def check_precision(precision: str) -> str:
    """``precision`` if it is one of :data:`PRECISIONS`, else a ValueError naming them."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {precision!r}")
    return precision


def autocast(precision: str, device: torch.device | str = "cpu"
             ) -> contextlib.AbstractContextManager:
    """The context a model runs in at ``precision`` on ``device``: nothing for ``32-true``,
    ``torch.autocast(device, bfloat16)`` for ``bf16-mixed`` (with a warning where the device
    has no native bf16). Outputs come out in bfloat16: call ``.float()`` on them."""
    device = torch.device(device)
    if check_precision(precision) == "32-true":
        return contextlib.nullcontext()
    if not native_bf16(device):
        warnings.warn(f"this {device.type.upper()} has no native bfloat16 instructions "
                      "(AVX512-BF16 / AMX on x86): bf16-mixed is emulated there and runs "
                      "slower than 32-true", stacklevel=2)
    return torch.autocast(device.type, dtype=torch.bfloat16)

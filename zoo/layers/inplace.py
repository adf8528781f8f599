"""When eager code may overwrite, or split into pieces, the tensors it has just made.

With autograd on, an operation's inputs may be saved for the backward pass, so every result
gets a buffer of its own. Without autograd (``torch.no_grad``, ``torch.inference_mode``) no
graph keeps them: a layer may then write an activation over its own fresh input buffer, or run
its rows in cache-sized pieces, and give the same numbers. Not while tracing, compiling or
exporting (``torch.compile``, ``torch.export``, ONNX): a graph needs one shape-generic
operation per step, and the compiler plans buffers itself.
"""

from __future__ import annotations

import torch


def may_overwrite() -> bool:
    """True in eager mode without autograd: fresh intermediate buffers may be reused."""
    return not (torch.is_grad_enabled() or torch.compiler.is_compiling()
                or torch.compiler.is_exporting() or torch.jit.is_tracing())

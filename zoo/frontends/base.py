"""The front-end contract: raw input of one modality -> tokens (B, N, D) for the encoder."""

from __future__ import annotations

from typing import Any, NamedTuple

from torch import nn

from zoo.layers.pos_embed import Rope


class PatchAxis(NamedTuple):
    """One axis of the token grid and the input positions its patches cover.

    Patch ``i`` covers positions ``offset + i * stride`` to ``offset + i * stride + size``
    (exclusive, clipped to ``length``) of input dimension ``dim``; ``count`` patches.
    Overlapping patches (AST's stride 10 under 16-wide patches) and uncovered positions (the
    pixels a convolution drops, the oldest steps of an unpadded series) are both allowed.
    """

    dim: int
    offset: int
    stride: int
    size: int
    length: int
    # shadows tuple.count(value), which a patch axis has no use for
    count: int  # type: ignore[assignment]


class FrontEnd(nn.Module):
    """Raw input -> tokens (B, N, D), prefix tokens (class, register, distillation) first.

    Attributes every front end sets: ``num_prefix_tokens`` and ``grid_size`` (the token grid
    at the trained input size; (rows, columns) for images and spectrograms). ``rope_table(x)``
    gives the rotary table for input ``x`` when the model uses rotary positions (else None);
    the model hands it to the encoder with the tokens. ``patch_axes(shape)`` says which input
    positions each token covers (for explanations and patch deletion).
    ``no_weight_decay_names`` lists the parameters that take no weight decay (position
    tables, special tokens).
    """

    num_prefix_tokens: int = 0
    grid_size: tuple[int, ...] = ()
    no_weight_decay_names: tuple[str, ...] = ("pos_embed",)

    def rope_table(self, x: Any) -> Rope:
        return None

    def patch_axes(self, shape: tuple[int, ...]) -> tuple[PatchAxis, ...]:
        """The token grid of an input of ``shape`` (the model's input, batch first), one
        :class:`PatchAxis` per grid axis; the patch tokens, flattened row-major over these
        axes, are the encoder's tokens after the prefix."""
        raise NotImplementedError(f"{type(self).__name__} does not describe its patches")

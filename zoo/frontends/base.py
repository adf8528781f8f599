"""The front-end contract: raw input of one modality -> tokens (B, N, D) for the encoder."""

from __future__ import annotations

from typing import Any

from torch import nn

from zoo.layers.pos_embed import Rope


class FrontEnd(nn.Module):
    """Raw input -> tokens (B, N, D), prefix tokens (class, register, distillation) first.

    Attributes every front end sets: ``num_prefix_tokens`` and ``grid_size`` (the token grid
    at the trained input size; (rows, columns) for images and spectrograms). ``rope_table(x)``
    gives the rotary table for input ``x`` when the model uses rotary positions (else None);
    the model hands it to the encoder with the tokens. ``no_weight_decay_names`` lists the
    parameters that take no weight decay (position tables, special tokens).
    """

    num_prefix_tokens: int = 0
    grid_size: tuple[int, ...] = ()
    no_weight_decay_names: tuple[str, ...] = ("pos_embed",)

    def rope_table(self, x: Any) -> Rope:
        return None

"""The renaming every per-layer peer format shares: fixed keys, per-block keys, and separate
query / key / value projections fused into zoo's one QKV projection (order q, k, v)."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class BlockLayout:
    """A peer's key layout. ``block_key`` matches a per-block key as (index, sub-key, weight or
    bias); ``block`` maps sub-keys to zoo's block sub-keys, ``qkv`` the q / k / v projections to
    0 / 1 / 2; ``fixed`` maps whole keys. ``zero_key_bias``: a missing key bias becomes zeros
    (Whisper's key projection has none; a key bias is inert under softmax)."""

    source: str
    fixed: Mapping[str, str]
    block_key: re.Pattern[str]
    block: Mapping[str, str]
    qkv: Mapping[str, int]
    zero_key_bias: bool = False
    prefix: str = ""
    dropped: tuple[str, ...] = ()


def convert_block_keys(state_dict: Mapping[str, torch.Tensor], layout: BlockLayout
                       ) -> dict[str, torch.Tensor]:
    """Rename ``state_dict`` to zoo keys; raise on keys the layout does not know (naming them as
    given), and on a layer missing one of q / k / v."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[int, torch.Tensor]] = {}
    for given, value in state_dict.items():
        key = given.removeprefix(layout.prefix) if layout.prefix else given
        if key.startswith(layout.dropped) and layout.dropped:
            continue
        if key in layout.fixed:
            out[layout.fixed[key]] = value
            continue
        match = layout.block_key.match(key)
        sub = str(match[2]) if match else ""
        if match is None or (sub not in layout.qkv and sub not in layout.block):
            raise ValueError(f"{layout.source} checkpoint has a key zoo does not know: {given!r}")
        index, kind = int(match[1]), str(match[3])
        if sub in layout.qkv:
            qkv.setdefault((index, kind), {})[layout.qkv[sub]] = value
        else:
            out[f"encoder.blocks.{index}.{layout.block[sub]}.{kind}"] = value
    if layout.zero_key_bias:
        for (_, kind), parts in qkv.items():
            if kind == "bias" and 1 not in parts and 0 in parts:
                parts[1] = torch.zeros_like(parts[0])
    return out | fuse_qkv(qkv, layout.source)


def fuse_qkv(parts: Mapping[tuple[int, str], Mapping[int, torch.Tensor]], source: str
             ) -> dict[str, torch.Tensor]:
    """(layer, ``weight`` / ``bias``) -> {0: q, 1: k, 2: v} tensors, to zoo's fused
    ``encoder.blocks.<layer>.attn.qkv.<kind>`` (q, k, v concatenated); a layer lacking one of
    them is a ValueError naming ``source``'s checkpoint and the layer."""
    out = {}
    for (index, kind), qkv in sorted(parts.items()):
        if sorted(qkv) != [0, 1, 2]:
            raise ValueError(f"{source} checkpoint: layer {index} lacks one of the query / "
                             f"key / value {kind}s")
        out[f"encoder.blocks.{index}.attn.qkv.{kind}"] = torch.cat([qkv[0], qkv[1], qkv[2]])
    return out

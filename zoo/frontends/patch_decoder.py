"""Series front end of patch decoders (TimesFM 2.5): histories (B, L, C) -> patch tokens.

Das, Kong, Sen, Zhou, "A decoder-only foundation model for time-series forecasting", ICML
2024 (TimesFM), as version 2.5 lays it out. Every channel is a series of its own. A history
is normalised twice: once per series over its whole observed history (``prepare``: float64
statistics, so huge values and constant series are safe), then per patch position by the
running mean and standard deviation of every observed value up to that patch (``embed``), so
that each token sees its past at the scale of that past. A patch of ``patch_len`` normalised
values and its missing-value flags (2 x ``patch_len`` numbers) becomes a token through a
residual MLP.

Missing values are part of the input: NaN and the front padding that aligns a history to
whole patches are masked (value 0, flag 1), left out of every statistic, and a patch whose last
step is missing is a padding token no other token attends to. So a history of any length from
one observed step up to ``context_length`` is forecast as it is.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F

from zoo.frontends.base import FrontEnd
from zoo.layers.mlp import ResidualMlp
from zoo.layers.pos_embed import Rotary1d, RotaryTable, inverse_frequencies, rotary_table

# Scales below this (in normalised units) count as zero: the series is flat there.
TOLERANCE = 1e-6


class PreparedSeries(NamedTuple):
    """Histories as the decoder reads them: S = B * C series of L' steps (a multiple of the
    patch length). ``values`` (S, L') globally normalised, 0 where missing; ``missing`` (S, L')
    bool; ``loc``, ``scale`` (S,) float64, the global normalisation in the data's units;
    ``nonnegative`` (S,) bool, whether every observed value is >= 0."""

    values: torch.Tensor
    missing: torch.Tensor
    loc: torch.Tensor
    scale: torch.Tensor
    nonnegative: torch.Tensor


class PatchTokens(NamedTuple):
    """``tokens`` (S, N, D); ``mean``, ``std`` (S, N): each position's running statistics of
    the observed values up to and including its patch; ``padding`` (S, N) bool: tokens no
    other token attends to (their patch's last step is missing)."""

    tokens: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    padding: torch.Tensor


class PatchDecoderFrontEnd(FrontEnd):
    """Histories (B, L, C) -> :class:`PreparedSeries` -> :class:`PatchTokens`, plus the
    rotary table the decoder's attention uses (``half`` layout, base ``rope_theta``)."""

    no_weight_decay_names = ()

    def __init__(self, *, context_length: int, patch_len: int, embed_dim: int, head_dim: int,
                 act: str = "silu", rope_theta: float = 10000.0) -> None:
        super().__init__()
        if patch_len < 1 or context_length < patch_len or context_length % patch_len:
            raise ValueError(f"context_length ({context_length}) must be a positive multiple of "
                             f"patch_len ({patch_len})")
        self.context_length, self.patch_len = context_length, patch_len
        self.num_channels = 1                  # any number: channels are separate series
        self.nan_policy = "mask"
        self.grid_size = (context_length // patch_len,)
        self.tokenizer = ResidualMlp(2 * patch_len, embed_dim, embed_dim, act=act, bias=True)
        self.rotary = Rotary1d(head_dim, theta=rope_theta, layout="half")

    def prepare(self, history: torch.Tensor) -> PreparedSeries:
        """History (B, L, C), NaN = missing -> the last ``context_length`` steps of each of the
        B * C series, globally normalised and front-padded to whole patches."""
        if history.ndim != 3:
            raise ValueError(f"expected a series batch (B, L, C), got shape {tuple(history.shape)}")
        if history.shape[1] < 1:
            raise ValueError("the history is empty: forecasting needs at least one observed step")
        exporting = torch.compiler.is_exporting()   # an exported graph cannot branch on data
        if not exporting and torch.isinf(history).any():
            raise ValueError("the history holds infinite values; replace them (NaN = missing)")
        B, L, C = history.shape
        x = history.detach().transpose(1, 2).reshape(B * C, L)[:, -self.context_length:].double()
        missing = torch.isnan(x)
        if not exporting and missing.all(dim=1).any():
            empty = sorted({i % C for i in missing.all(dim=1).nonzero().flatten().tolist()})
            raise ValueError(f"a series has no observed value in its last {x.shape[1]} steps "
                             f"(channels {empty}); nothing to forecast it from")
        observed = (~missing).double()
        count = observed.sum(dim=1)
        x = torch.where(missing, 0.0, x)
        loc = x.sum(dim=1) / count
        scale = ((((x - loc[:, None]) * observed) ** 2).sum(dim=1) / count).sqrt()
        safe = torch.where(scale > 0, scale, 1.0)
        values = torch.where(missing, 0.0, (x - loc[:, None]) / safe[:, None])
        nonnegative = torch.where(missing, torch.inf, x).amin(dim=1) >= 0
        pad = -x.shape[1] % self.patch_len
        values = F.pad(values, (pad, 0)).to(history.dtype if history.is_floating_point()
                                           else torch.float32)
        missing = F.pad(missing, (pad, 0), value=True)
        return PreparedSeries(values, missing, loc, scale, nonnegative)

    def running_stats(self, patches: torch.Tensor, missing: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        """Patches (S, N, P) and their missing flags -> the mean and population std (S, N) of
        every observed value in patches 0..n, in float64 (sums of counts, values and squares:
        one pass, no loop over positions); 0 where nothing was observed yet."""
        x, observed = patches.double(), (~missing).double()
        count = observed.sum(dim=-1).cumsum(dim=1)
        total = (x * observed).sum(dim=-1).cumsum(dim=1)
        squares = (x * x * observed).sum(dim=-1).cumsum(dim=1)
        n = count.clamp_min(1.0)
        mean = total / n
        std = (squares / n - mean * mean).clamp_min(0.0).sqrt()
        seen = count > 0
        dtype = patches.dtype
        return torch.where(seen, mean, 0.0).to(dtype), torch.where(seen, std, 0.0).to(dtype)

    def embed(self, values: torch.Tensor, missing: torch.Tensor) -> PatchTokens:
        """Prepared values and flags (S, L'), L' a multiple of ``patch_len`` -> tokens."""
        S, length = values.shape
        if length % self.patch_len:
            raise ValueError(f"{length} steps are not whole patches of {self.patch_len}")
        patches = values.view(S, -1, self.patch_len)
        flags = missing.view(S, -1, self.patch_len)
        mean, std = self.running_stats(patches, flags)
        safe = torch.where(std < TOLERANCE, torch.ones_like(std), std)
        normed = (patches - mean[..., None]) / safe[..., None]
        normed = torch.where(flags, 0.0, normed)
        tokens = self.tokenizer(torch.cat([normed, flags.to(normed.dtype)], dim=-1))
        return PatchTokens(tokens, mean, std, flags[..., -1])

    def rope_for(self, padding: torch.Tensor) -> RotaryTable:
        """The rotary table (S, 1, N, head_dim) of tokens with ``padding`` flags (S, N): token n
        sits at position n minus the series' number of padding tokens, as TimesFM 2.5 (and
        transformers) count. The offset matters: the q / k norms act after the rotation, so
        attention is not a function of distance alone once their weights are trained."""
        count = padding.sum(dim=1, keepdim=True)
        steps = torch.arange(padding.shape[1], device=padding.device) - count    # (S, N)
        bands = inverse_frequencies(self.rotary.head_dim // 2, self.rotary.theta)
        angles = steps[:, None, :, None].float() * bands.to(padding.device)   # (S, 1, N, hd / 2)
        return rotary_table(angles, layout=self.rotary.layout)

    def forward(self, history: torch.Tensor) -> torch.Tensor:
        """History (B, L, C) -> tokens (B * C, N, D)."""
        prepared = self.prepare(history)
        return self.embed(prepared.values, prepared.missing).tokens

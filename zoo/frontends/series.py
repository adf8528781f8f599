"""Time-series front end: series (B, L, C) -> patch tokens (B * C, N, D).

PatchTST (Nie et al., ICLR 2023): each window is normalised per series and channel (reversible
instance normalisation, RevIN), every channel becomes its own sequence (channel independence:
one set of weights for all channels), the sequence is cut into patches of ``patch_len`` steps
every ``stride`` steps, and each patch is projected to a token and given a position embedding.

Missing values: ``nan_policy="raise"`` (the default) refuses an input with NaN and says where;
``nan_policy="mask"`` computes each window's statistics from its observed points only and
puts the missing points at the window's location (0 after scaling). NaN never reaches the
forecast silently.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from zoo.frontends.base import FrontEnd, PatchAxis
from zoo.layers.drop import Dropout
from zoo.layers.pos_embed import sincos_table

SCALINGS = ("std", "mean", "none")
PADDINGS = ("end", "none")
NAN_POLICIES = ("raise", "mask")
POS_EMBEDS = ("learned", "sincos")

Stats = tuple[torch.Tensor, torch.Tensor]   # (loc, scale), each (B, 1, C)


def _choice(name: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def num_patches(length: int, patch_len: int, stride: int, padding: str = "end") -> int:
    """Patches in a look-back of ``length`` steps. ``end`` padding (PatchTST) repeats the last
    value ``stride`` times so the final steps get their own patch; ``none`` (transformers'
    PatchTST) drops the oldest steps that do not fill a whole stride."""
    _choice("padding", padding, PADDINGS)
    if min(length, patch_len, stride) < 1:
        raise ValueError(f"length, patch_len and stride must be >= 1, got {length}, {patch_len}, {stride}")
    if length < patch_len:
        raise ValueError(f"look-back of {length} steps is shorter than one patch ({patch_len})")
    return (length - patch_len) // stride + (2 if padding == "end" else 1)


def _masked(x: torch.Tensor, obs: torch.Tensor | None) -> torch.Tensor:
    """x with unobserved points zeroed (obs: 1.0 observed, 0.0 not; None: all observed)."""
    return x if obs is None else x * obs


class InstanceScaler(nn.Module):
    """Reversible instance normalisation over time, per series and channel: (B, L, C).

    ``scaling``: ``std`` is RevIN ((x - mean) / sqrt(var + eps), population variance; the same
    as transformers' ``scaling="std"``), ``mean`` divides by the mean absolute value
    (transformers' ``scaling="mean"``), ``none`` leaves values as they are. ``subtract_last``
    centres on the last observed value instead of the mean. ``affine`` adds RevIN's learnable
    per-channel weight and bias, which fixes the number of channels.
    """

    def __init__(self, num_channels: int, *, scaling: str = "std", affine: bool = False,
                 subtract_last: bool = False, eps: float = 1e-5) -> None:
        super().__init__()
        _choice("scaling", scaling, SCALINGS)
        if subtract_last and scaling != "std":
            raise ValueError("subtract_last needs scaling='std'")
        if affine and scaling == "none":
            raise ValueError("affine needs scaling='std' or 'mean'")
        self.scaling, self.subtract_last, self.eps = scaling, subtract_last, eps
        self.weight = nn.Parameter(torch.ones(num_channels)) if affine else None
        self.bias = nn.Parameter(torch.zeros(num_channels)) if affine else None

    def forward(self, x: torch.Tensor, observed: torch.Tensor | None = None
                ) -> tuple[torch.Tensor, Stats]:
        """x (B, L, C), observed (B, L, C) bool or None -> (scaled x, (loc, scale))."""
        if self.scaling == "none":
            ones = x.new_ones(x.shape[0], 1, x.shape[2])
            return x, (torch.zeros_like(ones), ones)
        # fully observed: the same sums without multiplying every point by a mask of ones
        obs = None if observed is None else observed.to(x.dtype)
        count = (x.new_full((x.shape[0], 1, x.shape[2]), float(x.shape[1])) if obs is None
                 else obs.sum(dim=1, keepdim=True).clamp_min(1.0))
        if self.scaling == "mean":
            loc = x.new_zeros(x.shape[0], 1, x.shape[2])
            scale = (_masked(x, obs).abs().sum(dim=1, keepdim=True) / count).clamp_min(1e-10)
        else:
            mean = _masked(x, obs).sum(dim=1, keepdim=True) / count
            var = (_masked(x - mean, obs) ** 2).sum(dim=1, keepdim=True) / count
            scale = torch.sqrt(var + self.eps)
            loc = self._last_observed(x, obs) if self.subtract_last else mean
        z = (x - loc) / scale
        if self.weight is not None and self.bias is not None:   # affine: both or neither
            z = z * self.weight + self.bias
        return z, (loc, scale)

    @staticmethod
    def _last_observed(x: torch.Tensor, obs: torch.Tensor | None) -> torch.Tensor:
        """The last observed value of each series and channel: (B, 1, C)."""
        if obs is None:
            return x[:, -1:]
        steps = torch.arange(x.shape[1], device=x.device).view(1, -1, 1)
        last = torch.where(obs > 0, steps, -1).amax(dim=1, keepdim=True).clamp_min(0)
        return x.gather(1, last)

    def inverse(self, y: torch.Tensor, stats: Stats) -> torch.Tensor:
        """Scaled forecasts (B, H, C) -> the input's scale."""
        loc, scale = stats
        if self.weight is not None and self.bias is not None:
            y = (y - self.bias) / (self.weight + self.eps * self.eps)
        return y * scale + loc


class SeriesFrontEnd(FrontEnd):
    """Series (B, L, C) -> tokens (B * C, N, D), channel-independent.

    ``normalize`` (RevIN) -> ``embed`` (patching, projection, positions); the model undoes the
    scaling of its forecast with ``denormalize``. ``shared_embedding=False`` gives every
    channel its own patch projection (and fixes the number of channels).
    """

    no_weight_decay_names = ("pos_embed",)

    def __init__(self, *, context_length: int, num_channels: int, patch_len: int = 16,
                 stride: int = 8, embed_dim: int = 128, padding: str = "end",
                 scaling: str = "std", affine: bool = False, subtract_last: bool = False,
                 nan_policy: str = "raise", shared_embedding: bool = True,
                 pos_embed: str = "learned", pos_drop: float = 0.0) -> None:
        super().__init__()
        _choice("nan_policy", nan_policy, NAN_POLICIES)
        _choice("pos_embed", pos_embed, POS_EMBEDS)
        if num_channels < 1:
            raise ValueError(f"num_channels must be >= 1, got {num_channels}")
        self.context_length, self.num_channels = context_length, num_channels
        self.patch_len, self.stride, self.padding = patch_len, stride, padding
        self.num_patches = num_patches(context_length, patch_len, stride, padding)
        self.grid_size = (self.num_patches,)
        self.nan_policy = nan_policy
        self.channel_specific = affine or not shared_embedding
        self.scaler = InstanceScaler(num_channels, scaling=scaling, affine=affine,
                                     subtract_last=subtract_last)
        if shared_embedding:
            self.proj = nn.Linear(patch_len, embed_dim)
        else:  # one projection per channel, applied in one einsum
            self.proj_weight = nn.Parameter(torch.empty(num_channels, embed_dim, patch_len))
            self.proj_bias = nn.Parameter(torch.zeros(num_channels, embed_dim))
            bound = 1 / math.sqrt(patch_len)
            nn.init.uniform_(self.proj_weight, -bound, bound)
        self.shared_embedding = shared_embedding
        if pos_embed == "sincos":
            self.pos_embed = nn.Parameter(sincos_table(self.num_patches, embed_dim),
                                          requires_grad=False)
        else:
            self.pos_embed = nn.Parameter(torch.empty(self.num_patches, embed_dim).uniform_(-0.02, 0.02))
        self.pos_drop = Dropout(pos_drop)

    def check_input(self, x: torch.Tensor) -> torch.Tensor | None:
        """Validate (B, L, C); returns the observed mask when NaN are present and allowed."""
        if x.ndim != 3:
            raise ValueError(f"expected a series batch (B, L, C), got shape {tuple(x.shape)}")
        if x.shape[1] != self.context_length:
            raise ValueError(f"expected a look-back of {self.context_length} steps, got "
                             f"{x.shape[1]} (input shape {tuple(x.shape)}); crop or pad the "
                             f"history, or build the model with context_length={x.shape[1]}")
        if self.channel_specific and x.shape[2] != self.num_channels:
            raise ValueError(f"this model has per-channel weights for {self.num_channels} "
                             f"channels; got {x.shape[2]}")
        missing = torch.isnan(x)
        if not missing.any():
            return None
        where = sorted(set(missing.any(dim=(0, 1)).nonzero().flatten().tolist()))
        if self.nan_policy == "raise":
            raise ValueError(f"input has {int(missing.sum())} NaN values (channels {where}); "
                             "fill them, or build the model with nan_policy='mask'")
        if (missing.all(dim=1)).any():
            raise ValueError("a series has a channel with no observed value in its look-back; "
                             "nothing to forecast it from")
        return ~missing

    def normalize(self, x: torch.Tensor) -> tuple[torch.Tensor, Stats]:
        """(B, L, C) -> scaled (B, L, C) with missing points at 0, and the scaling stats.

        In an exported graph (``torch.export``, ONNX) nothing can branch on the data: the NaN
        policy decides alone (``mask`` always masks, which changes nothing where no value is
        missing; ``raise`` cannot raise there, so NaN input gives NaN output).
        """
        if torch.compiler.is_exporting():
            observed = ~torch.isnan(x) if self.nan_policy == "mask" else None
        else:
            observed = self.check_input(x)
        if observed is not None:
            x = torch.where(observed, x, 0.0)
        z, stats = self.scaler(x, observed)
        if observed is not None:
            z = torch.where(observed, z, 0.0)
        return z, stats

    def denormalize(self, y: torch.Tensor, stats: Stats) -> torch.Tensor:
        return self.scaler.inverse(y, stats)

    def patchify(self, z: torch.Tensor) -> torch.Tensor:
        """(B, L, C) -> patches (B, C, N, P)."""
        z = z.transpose(1, 2)  # (B, C, L)
        if self.padding == "end":
            z = torch.cat([z, z[..., -1:].expand(-1, -1, self.stride)], dim=-1)
        else:
            z = z[..., z.shape[-1] - ((self.num_patches - 1) * self.stride + self.patch_len):]
        return z.unfold(-1, self.patch_len, self.stride)

    def patch_axes(self, shape: tuple[int, ...]) -> tuple[PatchAxis, ...]:
        """Series (B, L, C): every channel is its own token sequence (channels, then patches
        over time). ``end`` padding lets the last patch run past the look-back (onto repeats of
        the last value); ``none`` leaves the oldest steps that fill no stride uncovered."""
        _, length, channels = shape
        covered = (self.num_patches - 1) * self.stride + self.patch_len
        offset = 0 if self.padding == "end" else length - covered
        return (PatchAxis(2, 0, 1, 1, channels, channels),
                PatchAxis(1, offset, self.stride, self.patch_len, length, self.num_patches))

    def embed(self, z: torch.Tensor) -> torch.Tensor:
        """Scaled (B, L, C) -> tokens (B * C, N, D)."""
        patches = self.patchify(z)
        if self.shared_embedding:
            tokens = self.proj(patches)
        else:
            tokens = torch.einsum("bcnp,cdp->bcnd", patches, self.proj_weight)
            tokens = tokens + self.proj_bias[:, None]
        tokens = self.pos_drop(tokens + self.pos_embed)
        return tokens.flatten(0, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, L, C) -> tokens (B * C, N, D)."""
        return self.embed(self.normalize(x)[0])

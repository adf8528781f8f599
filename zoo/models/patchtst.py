"""PatchTST forecasters: series front end + shared encoder + flatten/linear forecasting head.

Nie, Nguyen, Sinthong, Kalagnanam, "A Time Series is Worth 64 Words: Long-term Forecasting with
Transformers", ICLR 2023. Each channel is a sequence of its own (channel independence) cut into
patches; the encoder is the same class as the ViT's and AST's, here with post-norm BatchNorm
blocks as in the paper. HF ``PatchTSTForPrediction`` checkpoints load unchanged (see
``zoo.convert.hf_patchtst``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from zoo.encoder import BlockConfig, Encoder, EncoderConfig
from zoo.frontends.series import SeriesFrontEnd
from zoo.heads import ForecastHead
from zoo.models.base import Forecaster, check_quantiles
from zoo.registry import register_model


class PatchTST(Forecaster):
    """History (B, context_length, C) -> forecast (B, horizon, C), both in the input's scale.

    Windows are normalised per series and channel (RevIN, ``scaling``), patched
    (``patch_len``, ``stride``, ``padding``), encoded channel by channel with shared weights,
    flattened and projected to the horizon, then scaled back. ``num_channels`` matters only
    where weights are per channel (``affine``, ``shared_embedding=False``,
    ``shared_head=False``); otherwise any number of channels is accepted.
    ``head_pool``: ``flatten`` (PatchTST) or ``mean`` / ``max`` over patches (transformers'
    ``pooling_type``). ``drop_rate`` is PatchTST's ``dropout`` (positions, attention output, MLP);
    ``head_drop_rate`` its ``head_dropout``. ``init="torch"`` keeps PyTorch's default
    (Kaiming-uniform) init of the encoder's linear layers as the reference PatchTST does;
    ``"trunc_normal"`` is the ViT init (std 0.02). ``attn_window`` makes attention
    block-local over that many patches (see :class:`zoo.encoder.BlockConfig`), for very
    long look-backs.

    ``quantiles`` (e.g. ``(0.1, 0.5, 0.9)``; sorted, unique, in (0, 1), with 0.5) turns the
    point head into a quantile head: one projection gives every level at every step, trained
    with the pinball loss (``recipes.forecasting``: ``loss="quantile"``).
    :meth:`forecast_quantiles` returns all levels (B, H, C, Q) and ``forward`` the median
    (B, H, C), both in the input's scale: RevIN's scale multiplies every level and its
    location shifts them. The Q outputs are sorted along the level axis (in training too), so
    quantiles never cross: for any target, swapping two crossed values lowers the summed
    pinball loss by (q_j - q_i)(a - b) > 0, so sorting is never worse than the raw outputs
    (Chernozhukov, Fernandez-Val & Galichon, "Quantile and probability curves without
    crossing", Econometrica 2010). ``quantiles=()`` (the default) is the point forecaster,
    whose weights and HF parity are unchanged.
    """

    modality = "series"

    def __init__(self, *, context_length: int = 512, horizon: int = 96, num_channels: int = 1,
                 patch_len: int = 16, stride: int = 8, padding: str = "end",
                 scaling: str = "std", affine: bool = False, subtract_last: bool = False,
                 nan_policy: str = "raise", shared_embedding: bool = True,
                 shared_head: bool = True, head_pool: str = "flatten",
                 pos_embed: str = "learned", embed_dim: int = 128,
                 depth: int = 3, num_heads: int = 16, mlp_ratio: float = 2.0,
                 qkv_bias: bool = True, norm: str = "batchnorm", pre_norm: bool = False,
                 norm_eps: float = 1e-5, drop_rate: float = 0.2, attn_drop_rate: float = 0.0,
                 head_drop_rate: float = 0.0, drop_path_rate: float = 0.0,
                 residual_attention: bool = False, init: str = "torch",
                 attn_window: int | None = None, quantiles: Sequence[float] = ()) -> None:
        args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        levels = check_quantiles(quantiles)
        args["quantiles"] = list(levels)   # as config.json stores it
        if init not in ("torch", "trunc_normal"):
            raise ValueError(f"init must be 'torch' or 'trunc_normal', got {init!r}")
        front_end = SeriesFrontEnd(
            context_length=context_length, num_channels=num_channels, patch_len=patch_len,
            stride=stride, embed_dim=embed_dim, padding=padding, scaling=scaling, affine=affine,
            subtract_last=subtract_last, nan_policy=nan_policy,
            shared_embedding=shared_embedding, pos_embed=pos_embed, pos_drop=drop_rate)
        block = BlockConfig(embed_dim=embed_dim, num_heads=num_heads, mlp_ratio=mlp_ratio,
                            qkv_bias=qkv_bias, norm=norm, norm_eps=norm_eps,
                            placement="pre" if pre_norm else "post", proj_drop=drop_rate,
                            attn_drop=attn_drop_rate, attn_window=attn_window,
                            residual_attention=residual_attention)
        encoder = Encoder(EncoderConfig(block=block, depth=depth, drop_path=drop_path_rate,
                                        final_norm=False))
        head = ForecastHead(front_end.num_patches, embed_dim, horizon, num_channels=num_channels,
                            pool=head_pool, shared=shared_head, drop=head_drop_rate,
                            num_quantiles=len(levels))
        if init == "torch":   # the reference PatchTST keeps PyTorch's default Linear init
            for module in encoder.modules():
                if isinstance(module, torch.nn.Linear):
                    module.reset_parameters()
        super().__init__(front_end, encoder, head, model_args=args)
        front_end.channel_specific |= not shared_head  # a per-channel head fixes the count too
        self._quantiles = levels

    @property
    def quantiles(self) -> tuple[float, ...]:
        return self._quantiles

    def forecast_head(self, tokens: torch.Tensor, num_channels: int) -> torch.Tensor:
        """Encoder tokens (B * C, N, D) -> scaled forecast (B, H, C), or (B, H, C, Q) with
        quantiles (unsorted)."""
        return self.head(tokens, num_channels)

    def _forecast(self, x: torch.Tensor, horizon: int | None) -> torch.Tensor:
        """History (B, L, C) -> (B, H, C), or sorted quantiles (B, H, C, Q), in x's scale."""
        horizon = self.check_horizon(horizon)
        z, stats = self.front_end.normalize(x)
        y = self.forecast_head(self.encoder(self.front_end.embed(z)), x.shape[-1])
        if not self._quantiles:   # cut first: only the kept steps are scaled back
            return self.front_end.denormalize(y[:, :horizon], stats)
        B, H, C, Q = y.shape   # the scaler acts on (B, T, C): fold the levels into time
        y = self.front_end.denormalize(y.permute(0, 3, 1, 2).reshape(B, Q * H, C), stats)
        y = y.reshape(B, Q, H, C).permute(0, 2, 3, 1)                      # (B, H, C, Q)
        # sorted after denormalising: an affine RevIN weight may be negative and flip the order
        return torch.sort(y[:, :horizon], dim=-1).values

    def forward(self, x: torch.Tensor, horizon: int | None = None) -> torch.Tensor:
        """History (B, L, C) -> forecast (B, H, C) in the input's scale (the median for a
        quantile model); ``horizon`` (at most the model's) cuts it."""
        y = self._forecast(x, horizon)
        return y[..., self._quantiles.index(0.5)].contiguous() if self._quantiles else y

    def forecast_quantiles(self, history: torch.Tensor, horizon: int | None = None
                           ) -> torch.Tensor:
        """History (B, L, C) -> forecasts (B, H, C, Q) at levels ``self.quantiles``, in the
        input's scale, non-decreasing along Q."""
        if not self._quantiles:
            return super().forecast_quantiles(history, horizon)   # raises: point forecaster
        return self._forecast(history, horizon)

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        return dict(state_dict)


def _register(name: str, *, weights: tuple = (), **args: Any) -> None:
    register_model(
        name, modality="series", builder=PatchTST, args=args, num_classes=0,
        preprocess={"context_length": args["context_length"], "horizon": args.get("horizon", 96),
                    "num_channels": args.get("num_channels", 1)},
        weights=weights,
    )


# The architecture as its arguments set it (HF PatchTST folders load into it with their config).
_register("patchtst", context_length=512)

# The paper's small-dataset (ETTh1, ETTh2, ILI) settings: d_model 16, 4 heads, 3 layers,
# d_ff 128, dropout 0.3, RevIN without affine, patches of 16 every 8 steps, end padding, and
# the reference code's residual attention.
_ETTH: dict[str, Any] = dict(patch_len=16, stride=8, embed_dim=16, depth=3, num_heads=4,
                             mlp_ratio=8.0, drop_rate=0.3, num_channels=7, residual_attention=True)


def _etth1_h96(arch: str, sha256: str, mse: float, mae: float) -> tuple[dict, ...]:
    """Horizon-96 ETTh1 weights bundled with zoo (card: model_cards/ARCH.etth1_h96.md)."""
    return (dict(tag="etth1_h96", file=f"{arch}.etth1_h96.safetensors", sha256=sha256,
                 labels=("HUFL", "HULL", "MUFL", "MULL", "LUFL", "LULL", "OT"),
                 license="apache-2.0", metrics={"etth1 test mse": mse, "etth1 test mae": mae},
                 description="ETTh1, horizon 96, every test window"),)


# configs/series/patchtst_tiny_etth1.yaml (PatchTST/42; with --model.model_name=patchtst_tiny_l512: /64)
_register("patchtst_tiny_l336", context_length=336, **_ETTH, weights=_etth1_h96(
    "patchtst_tiny_l336", "ae88a0970b1558b5c77cfc0137dcfb561565dd926773a99f3688c8114d970889",
    mse=0.378076, mae=0.400567))
_register("patchtst_tiny_l512", context_length=512, **_ETTH, weights=_etth1_h96(
    "patchtst_tiny_l512", "c37a6a3adbf6bc49923a86faf7450f8976fac1a02dd538da6d146a11d7744156",
    mse=0.3716, mae=0.401082))
# The paper's settings for larger datasets: d_model 128, 16 heads, 3 layers, d_ff 256, dropout 0.2.
_BASE: dict[str, Any] = dict(patch_len=16, stride=8, embed_dim=128, depth=3, num_heads=16,
                             mlp_ratio=2.0, drop_rate=0.2, residual_attention=True)
_register("patchtst_base_l336", context_length=336, **_BASE)
_register("patchtst_base_l512", context_length=512, **_BASE)

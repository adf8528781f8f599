"""TimesFM 2.5: a decoder-only forecaster over patches, built from the shared layers.

Das, Kong, Sen, Zhou, "A decoder-only foundation model for time-series forecasting", ICML 2024;
version 2.5 (Google Research, 2025) as transformers' ``TimesFm2_5ModelForPrediction`` lays it
out. The parts: :class:`zoo.frontends.patch_decoder.PatchDecoderFrontEnd` (two-stage
normalisation, patches of 32 with their missing flags through a residual MLP), the shared
encoder as a causal decoder (RMSNorm before and after attention and MLP: ``sandwich``; RMS
q/k norms after rotary positions; a learned per-dimension query scale; SiLU MLP; no biases),
and :class:`PatchDecoderHead` (from each position, the next ``horizon`` steps as a mean and
quantiles, and optionally a longer quantile head). HF checkpoints load with
:mod:`zoo.convert.hf_timesfm`.

Forecasting (:meth:`TimesFM.forward`, :meth:`TimesFM.forecast_quantiles`): each channel is a
series; the last ``context_length`` steps are read; NaN are masked; the forecast from the last
position is the first ``horizon`` steps, and longer horizons are decoded autoregressively (the
median appended to the history, ``horizon`` steps at a time). ``flip_invariance`` averages the
forecast of x and the negated forecast of -x (quantiles mirrored), as TimesFM 2.5 does;
``infer_is_positive`` clips the forecasts of a series whose history is never negative at 0.
Unlike transformers (which decides this for the whole batch from the smallest value of all
series), zoo decides it per series, so a forecast never depends on its batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zoo.encoder import BlockConfig, Encoder, EncoderConfig
from zoo.frontends.patch_decoder import PatchDecoderFrontEnd, PatchTokens
from zoo.layers.mlp import ResidualMlp
from zoo.models.base import Forecaster, check_quantiles
from zoo.registry import register_model

DEFAULT_QUANTILES = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)


class PatchDecoderHead(nn.Module):
    """Tokens (S, N, D) -> from every position the next ``horizon`` steps at ``num_outputs``
    values each (S, N, horizon, K), and, when ``quantile_horizon`` > 0, a second head giving
    ``quantile_horizon`` steps (S, N, quantile_horizon, K) (TimesFM 2.5's continuous
    quantiles). Both are residual MLPs without biases, in the position's normalised units."""

    def __init__(self, embed_dim: int, horizon: int, num_outputs: int, *,
                 quantile_horizon: int = 0, act: str = "silu") -> None:
        super().__init__()
        if horizon < 1 or quantile_horizon < 0:
            raise ValueError(f"horizon must be >= 1 and quantile_horizon >= 0, got {horizon}, "
                             f"{quantile_horizon}")
        self.horizon, self.num_outputs, self.quantile_horizon = horizon, num_outputs, quantile_horizon
        self.point = ResidualMlp(embed_dim, embed_dim, horizon * num_outputs, act=act, bias=False)
        self.quantile = (ResidualMlp(embed_dim, embed_dim, quantile_horizon * num_outputs,
                                     act=act, bias=False) if quantile_horizon else None)

    def forward(self, tokens: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        S, N, _ = tokens.shape
        point = self.point(tokens).view(S, N, self.horizon, self.num_outputs)
        if self.quantile is None:
            return point, None
        return point, self.quantile(tokens).view(S, N, self.quantile_horizon, self.num_outputs)


def _mirror(outputs: torch.Tensor) -> torch.Tensor:
    """(..., 1 + Q) outputs of -x, negated back: the mean stays first, quantile q <-> 1 - q."""
    return -torch.cat([outputs[..., :1], outputs[..., 1:].flip(-1)], dim=-1)


class TimesFM(Forecaster):
    """History (B, L, C) -> forecast (B, H, C) for any L >= 1 (the last ``context_length``
    steps are read) and any H; :meth:`forecast_quantiles` -> (B, H, C, Q) at ``quantiles``.

    Arguments follow ``TimesFm2_5Config``: ``patch_len`` (input patch), ``horizon`` (output
    patch: steps per decoding pass), ``embed_dim``, ``depth``, ``num_heads``, ``head_dim``,
    ``mlp_hidden``, ``quantiles`` (must hold 0.5: the point forecast is the median),
    ``quantile_horizon`` (the continuous quantile head's length; 0: none, the quantiles come
    from the point head), ``flip_invariance``, ``infer_is_positive``, ``rope_theta``,
    ``attn_bias``.
    """

    modality = "series"
    any_horizon = True
    front_end: PatchDecoderFrontEnd   # type: ignore[assignment]
    head: PatchDecoderHead   # type: ignore[assignment]

    def __init__(self, *, context_length: int = 16384, patch_len: int = 32, horizon: int = 128,
                 embed_dim: int = 1280, depth: int = 20, num_heads: int = 16,
                 head_dim: int | None = 80, mlp_hidden: int | None = 1280,
                 quantiles: Sequence[float] = DEFAULT_QUANTILES, quantile_horizon: int = 1024,
                 flip_invariance: bool = True, infer_is_positive: bool = True,
                 norm_eps: float = 1e-6, rope_theta: float = 10000.0, attn_bias: bool = False,
                 num_channels: int = 1) -> None:
        args = {k: v for k, v in locals().items() if k not in ("self", "__class__")}
        quantiles = check_quantiles(quantiles)
        if not quantiles:
            raise ValueError("a TimesFM forecasts quantiles: give at least (0.5,)")
        args["quantiles"] = list(quantiles)   # as config.json stores it
        if horizon % patch_len:
            raise ValueError(f"horizon ({horizon}) must be a multiple of patch_len ({patch_len}) "
                             "to decode past it")
        head_dim = head_dim or embed_dim // num_heads
        front_end = PatchDecoderFrontEnd(context_length=context_length, patch_len=patch_len,
                                         embed_dim=embed_dim, head_dim=head_dim,
                                         rope_theta=rope_theta)
        block = BlockConfig(embed_dim=embed_dim, num_heads=num_heads, head_dim=head_dim,
                            mlp_hidden=mlp_hidden or embed_dim, act="silu", qkv_bias=attn_bias,
                            proj_bias=attn_bias, mlp_bias=False, qk_norm=True, norm="rmsnorm",
                            norm_eps=norm_eps, placement="sandwich", causal=True,
                            query_scale=True, qk_norm_after_rope=True)
        encoder = Encoder(EncoderConfig(block=block, depth=depth, final_norm=False))
        head = PatchDecoderHead(embed_dim, horizon, 1 + len(quantiles),
                                quantile_horizon=quantile_horizon)
        super().__init__(front_end, encoder, head, model_args=args)
        self._quantiles = quantiles
        self.point_index = 1 + quantiles.index(0.5)
        self.flip_invariance, self.infer_is_positive = flip_invariance, infer_is_positive

    # --- the forecaster contract -----------------------------------------------------------------

    @property
    def horizon(self) -> int:
        return self.head.horizon

    @property
    def min_context(self) -> int:
        return 1

    @property
    def quantiles(self) -> tuple[float, ...]:
        return self._quantiles

    @property
    def supports_missing(self) -> bool:
        return True

    def forward(self, history: torch.Tensor, horizon: int | None = None) -> torch.Tensor:
        """History (B, L, C), NaN = missing -> point forecast (the median) (B, H, C)."""
        return self.forecast_outputs(history, horizon)[..., self.point_index]

    def forecast_quantiles(self, history: torch.Tensor, horizon: int | None = None
                           ) -> torch.Tensor:
        """History (B, L, C) -> forecasts (B, H, C, Q) at the levels ``self.quantiles``."""
        return self.forecast_outputs(history, horizon)[..., 1:]

    # --- decoding ------------------------------------------------------------------------------

    def decode(self, values: torch.Tensor, missing: torch.Tensor, *, last_only: bool = False
               ) -> tuple[torch.Tensor, torch.Tensor | None, PatchTokens]:
        """Prepared values and flags (S, L') -> every position's outputs in its own normalised
        units: point (S, N, horizon, 1 + Q), long quantiles (S, N, quantile_horizon, 1 + Q) or
        None, and the tokens' statistics (for training: targets normalised the same way).
        ``last_only``: the heads read the last position alone (N = 1 in the outputs), as
        forecasting needs."""
        patch = self.front_end.embed(values, missing)
        N = patch.tokens.shape[1]
        mask = None
        # padding tokens are seen by none but themselves (an exported graph always masks)
        if torch.compiler.is_exporting() or patch.padding.any():
            keys = ~patch.padding[:, None, None, :]
            mask = keys | torch.eye(N, dtype=torch.bool, device=values.device)
        hidden = self.encoder(patch.tokens, mask, rope=self.front_end.rope_for(patch.padding))
        point, spread = self.head(hidden[:, -1:] if last_only else hidden)
        return point, spread, patch

    def _decode_last(self, values: torch.Tensor, missing: torch.Tensor
                     ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The last position's outputs in globally normalised units: (S, horizon, 1 + Q) and
        (S, quantile_horizon, 1 + Q) or None; flip-invariant if the model is."""
        if self.flip_invariance:
            values, missing = torch.cat([values, -values]), torch.cat([missing, missing])
        point, spread, patch = self.decode(values, missing, last_only=True)
        mean, std = patch.mean[:, -1, None, None], patch.std[:, -1, None, None]
        point = point[:, -1] * std + mean
        spread = None if spread is None else spread[:, -1] * std + mean
        if self.flip_invariance:
            S = point.shape[0] // 2
            point = (point[:S] + _mirror(point[S:])) / 2
            spread = None if spread is None else (spread[:S] + _mirror(spread[S:])) / 2
        return point, spread

    def forecast_outputs(self, history: torch.Tensor, horizon: int | None = None
                         ) -> torch.Tensor:
        """History (B, L, C) -> all outputs (B, H, C, 1 + Q) in the input's units: the mean
        head first, then the quantiles (the median is the point forecast)."""
        horizon = self.check_horizon(horizon)
        prepared = self.front_end.prepare(history)   # checks the shape first
        B, _, C = history.shape
        values, missing = prepared.values, prepared.missing
        passes, first_spread, steps = [], None, 0
        while steps < horizon:
            point, spread = self._decode_last(values, missing)
            first_spread = spread if first_spread is None else first_spread
            passes.append(point)
            steps += point.shape[1]
            if steps < horizon:   # append the median and decode the next patch of steps
                values = torch.cat([values, point[..., self.point_index]], dim=1)
                missing = torch.cat([missing, missing.new_zeros(missing.shape[0], point.shape[1])], 1)
                values = values[:, -self.context_length:]
                missing = missing[:, -self.context_length:]
        outputs = torch.cat(passes, dim=1)[:, :horizon]
        if first_spread is not None:   # quantiles: the long head's spreads around the median
            n = min(horizon, first_spread.shape[1])
            median = outputs[:, :n, self.point_index:self.point_index + 1]
            around = first_spread[:, :n] - first_spread[:, :n, self.point_index:self.point_index + 1]
            keep = torch.zeros(outputs.shape[-1], dtype=torch.bool, device=outputs.device)
            keep[0] = keep[self.point_index] = True
            outputs = torch.cat([torch.where(keep, outputs[:, :n], median + around),
                                 outputs[:, n:]], dim=1)
        forecast = outputs.double() * prepared.scale[:, None, None] + prepared.loc[:, None, None]
        if self.infer_is_positive:
            forecast = torch.where(prepared.nonnegative[:, None, None], forecast.clamp_min(0.0),
                                   forecast)
        forecast = forecast.to(values.dtype)
        return forecast.view(B, C, horizon, -1).transpose(1, 2)

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """A checkpoint's continuous quantile head is left out when this model has none
        (transformers keeps ``output_projection_quantiles`` with
        ``use_continuous_quantile_head=False``); without this the whole head would be judged
        a mismatch and re-initialised."""
        state_dict = super().adapt_state_dict(state_dict)
        if self.head.quantile is None:
            state_dict = {k: v for k, v in state_dict.items() if not k.startswith("head.quantile.")}
        return state_dict

    def input_spec(self) -> dict[str, Any]:
        return {"context_length": self.context_length, "horizon": self.horizon,
                "num_channels": 1, "patch_len": self.front_end.patch_len}


def _register(name: str, *, weights: tuple = (), **args: Any) -> None:
    register_model(name, modality="series", builder=TimesFM, args=args, num_classes=0,
                   preprocess={"context_length": args.get("context_length", 16384),
                               "horizon": args.get("horizon", 128), "num_channels": 1},
                   weights=weights)


# The architecture as its arguments set it (HF TimesFM 2.5 folders load into it with their config).
_register("timesfm_2p5")
# google/timesfm-2.5-200m: 20 layers of width 1,280, 16 heads of 80, context up to 16,384 steps.
_register("timesfm_2p5_200m", weights=(
    dict(tag="google", hf_hub_id="google/timesfm-2.5-200m-transformers", license="apache-2.0",
         description="Google's TimesFM 2.5 (200M parameters), pre-trained on 100B time points; "
                     "transformers' layout"),))
# Small enough to pre-train on a CPU in about an hour (configs/series/timesfm_tiny_synthetic.yaml):
# context up to 512 steps, width 128, 4 layers; quantiles from the point head.
_register("timesfm_2p5_tiny", context_length=512, embed_dim=128, depth=4, num_heads=4,
          head_dim=32, mlp_hidden=512, quantile_horizon=0, weights=(
              dict(tag="synthetic", file="timesfm_2p5_tiny.synthetic.safetensors",
                   sha256="0b2a7a51aa520334d96a40267d7096da939a3c126b4c4d749b8497d6d41638a4",
                   license="apache-2.0", metrics={"synthetic test loss": 2.741558},
                   description="zero-shot forecaster pre-trained on synthetic series only "
                               "(configs/series/timesfm_tiny_synthetic.yaml); zero-shot scores "
                               "on real series: model_cards/timesfm_2p5_tiny.synthetic.md"),))

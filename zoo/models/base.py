"""The composed models every modality uses: front end -> shared encoder -> head.

:class:`TokenModel` holds the three parts and what every model offers (timm's interface:
``forward_features``, gradient checkpointing, weight-decay and layer-decay groups, attention
maps). Two task contracts build on it: :class:`Classifier` (logits, ``num_classes``,
``forward_head(tokens, pre_logits)``, ``reset_classifier``) and :class:`Forecaster`
(history (B, L, C) -> forecast (B, H, C), ``horizon``, ``context_length``).
"""

from __future__ import annotations

import itertools
import math
import numbers
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zoo.checkpoint import load_state_dict
from zoo.encoder import Encoder
from zoo.frontends.base import FrontEnd
from zoo.frontends.series import SeriesFrontEnd
from zoo.heads import ClassifierHead, ForecastHead
from zoo.layers.attention import record_attention
from zoo.registry import PretrainedCfg


class TokenModel(nn.Module):
    """raw input -> ``front_end`` -> tokens (B, N, D) -> ``encoder`` -> ``head`` -> output.

    ``model_args`` holds the keyword arguments the model was built with, so that a saved model
    can be rebuilt; ``pretrained_cfg`` (set by :func:`zoo.create_model`) describes its weights
    and preprocessing.
    """

    modality: str = ""

    def __init__(self, front_end: FrontEnd, encoder: Encoder, head: nn.Module,
                 model_args: dict[str, Any]) -> None:
        super().__init__()
        self.front_end = front_end
        self.encoder = encoder
        self.head = head
        self.model_args = dict(model_args)
        self.pretrained_cfg: PretrainedCfg | None = None

    @property
    def embed_dim(self) -> int:
        return self.encoder.embed_dim

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Raw input -> encoder tokens (B, N, D), prefix tokens first."""
        return self.encoder(self.front_end(x), rope=self.front_end.rope_table(x))

    def get_attention_maps(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Each block's attention weights (B, heads, N, N) for input ``x``, first block first
        (see :func:`zoo.layers.record_attention`)."""
        with record_attention(self.encoder) as maps:
            self(x)
        return maps

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.encoder.set_grad_checkpointing(enable)

    def no_weight_decay(self) -> set[str]:
        """Parameter names that take no weight decay (position tables, special tokens)."""
        names = self.front_end.no_weight_decay_names
        return {f"front_end.{n}" for n, _ in self.front_end.named_parameters() if n in names}

    @property
    def num_layer_groups(self) -> int:
        """Front end (0), one group per block (1..depth), then the final norm and head."""
        return len(self.encoder.blocks) + 2

    def layer_id(self, param_name: str) -> int:
        """The layer group of a parameter, for layer-wise learning-rate decay."""
        if param_name.startswith(("front_end.", "encoder.norm_pre.")):
            return 0
        if param_name.startswith("encoder.blocks."):
            return int(param_name.split(".")[2]) + 1
        return self.num_layer_groups - 1

    def init_encoder_from(self, state_dict: dict[str, torch.Tensor]) -> list[str]:
        """Copy another zoo model's encoder (same width and depth) into this one; returns the keys.

        Modalities override this to also adapt what fits of the front end.
        """
        own = self.encoder.state_dict()
        source = {k[len("encoder."):]: v for k, v in state_dict.items() if k.startswith("encoder.")}
        load_state_dict(self.encoder, source, source="encoder_from")
        return sorted(f"encoder.{k}" for k in own)

    def input_spec(self) -> dict[str, Any]:
        """Preprocessing facts that follow from the model's own arguments (e.g. input size)."""
        return {}

    def adapt_state_dict(self, state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Fit a zoo-format checkpoint to this model's shapes (e.g. resample positions)."""
        state_dict = dict(state_dict)
        adapt = getattr(self.front_end, "adapt_state_dict", None)
        if adapt is not None:
            adapt(state_dict, "front_end.")
        return state_dict


def require_pretrained_cfg(model: TokenModel, purpose: str) -> PretrainedCfg:
    """``model.pretrained_cfg``, or a ValueError saying that ``purpose`` needs a model made by
    :func:`zoo.create_model` (which sets it)."""
    if model.pretrained_cfg is None:
        raise ValueError(f"{purpose} needs a model made by zoo.create_model (it has no "
                         "pretrained_cfg)")
    return model.pretrained_cfg


class Classifier(TokenModel):
    """Input -> logits (B, num_classes); the head pools tokens and classifies."""

    head: ClassifierHead

    @property
    def num_classes(self) -> int:
        return self.head.num_classes

    def forward_head(self, tokens: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens (B, N, D) -> logits (B, K), or the pooled features (B, D) if ``pre_logits``."""
        return self.head(tokens, pre_logits=pre_logits)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the classifier with a new one (0 = return pooled features)."""
        self.head.reset(num_classes)
        self.model_args["num_classes"] = num_classes


class Forecaster(TokenModel):
    """History (B, L, C) -> forecast (B, H, C), in the input's units.

    The contract every forecaster keeps: ``model(history, horizon=None)``;
    ``context_length`` is the longest look-back the model reads (older rows are ignored) and
    ``min_context`` the shortest history it accepts (PatchTST: both are its fixed look-back);
    ``horizon`` is its native horizon and ``max_horizon`` the longest it forecasts (None: any,
    by decoding autoregressively). ``quantiles`` names the levels of
    :meth:`forecast_quantiles` (``()`` for a point forecaster); ``supports_missing`` says
    whether NaN in a history are masked (True) or refused.
    """

    front_end: SeriesFrontEnd
    head: ForecastHead
    any_horizon: bool = False   # True: decodes any horizon (max_horizon None), by class

    @property
    def context_length(self) -> int:
        return self.front_end.context_length

    @property
    def min_context(self) -> int:
        return self.context_length

    @property
    def horizon(self) -> int:
        return self.head.horizon

    @property
    def max_horizon(self) -> int | None:
        return None if self.any_horizon else self.horizon

    @property
    def quantiles(self) -> tuple[float, ...]:
        return ()

    @property
    def supports_missing(self) -> bool:
        return self.front_end.nan_policy == "mask"

    def check_horizon(self, horizon: int | None) -> int:
        """``horizon`` (None: the native one): a whole number >= 1, at most ``max_horizon``."""
        horizon = self.horizon if horizon is None else horizon
        if isinstance(horizon, bool) or not isinstance(horizon, numbers.Integral):
            raise ValueError(f"horizon must be a whole number >= 1, got {horizon!r}")
        if horizon < 1:
            raise ValueError(f"horizon must be >= 1, got {horizon}")
        if self.max_horizon is not None and horizon > self.max_horizon:
            raise ValueError(f"this model forecasts {self.max_horizon} steps; horizon={horizon} "
                             f"is longer (fine-tune one with horizon={horizon} for that)")
        return int(horizon)

    def forecast_quantiles(self, history: torch.Tensor, horizon: int | None = None
                           ) -> torch.Tensor:
        """History (B, L, C) -> quantile forecasts (B, H, C, Q) at levels ``self.quantiles``."""
        raise ValueError(f"{type(self).__name__} gives point forecasts only (no quantiles); "
                         "build it with quantiles=(0.1, 0.5, 0.9) and train it with "
                         "loss='quantile'")

    def forecast_with_quantiles(self, history: torch.Tensor, horizon: int | None = None
                                ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The point forecast (B, H, C) and, for a model with quantiles, the quantile forecasts
        (B, H, C, Q) (else None): what callers that want both use, so that a model whose point
        forecast is one of its outputs decodes once: a quantile forecaster's point forecast is
        its median (``check_quantiles`` requires the 0.5 level)."""
        if not self.quantiles:
            return self(history, horizon), None
        quantiles = self.forecast_quantiles(history, horizon)
        return quantiles[..., self.quantiles.index(0.5)].contiguous(), quantiles

    def input_spec(self) -> dict[str, Any]:
        return {"context_length": self.context_length, "horizon": self.horizon,
                "num_channels": self.front_end.num_channels}


def check_quantiles(quantiles: Sequence[float]) -> tuple[float, ...]:
    """Quantile levels as a tuple of floats; ``()`` for a point forecaster. Otherwise they
    must be strictly increasing (sorted, unique), each in (0, 1), and include the median 0.5
    (the point forecast ``forward`` returns); a ValueError says what is wrong."""
    if isinstance(quantiles, (str, bytes)) or not isinstance(quantiles, Sequence):
        raise ValueError(f"quantiles must be a sequence of levels in (0, 1), e.g. "
                         f"(0.1, 0.5, 0.9), got {quantiles!r}")
    bad = [q for q in quantiles if isinstance(q, bool) or not isinstance(q, numbers.Real)
           or not math.isfinite(q) or not 0.0 < q < 1.0]
    if bad:
        raise ValueError(f"quantile levels must be numbers strictly between 0 and 1; got {bad} "
                         f"in {tuple(quantiles)}")
    levels = tuple(float(q) for q in quantiles)
    if any(b <= a for a, b in itertools.pairwise(levels)):
        raise ValueError(f"quantile levels must be sorted and unique, got {levels} "
                         f"(e.g. {tuple(sorted(set(levels)))})")
    if levels and 0.5 not in levels:
        raise ValueError(f"quantile levels must include the median 0.5 (the point forecast), "
                         f"got {levels}")
    return levels

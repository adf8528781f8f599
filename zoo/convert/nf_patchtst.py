"""NeuralForecast ``PatchTST`` weights -> zoo ``PatchTST`` state dicts.

NeuralForecast's PatchTST (``neuralforecast.models.PatchTST``) is a port of the reference code
(Nie et al., ICLR 2023): univariate (one channel), ``end`` patch padding (the last value repeated
``stride`` times), a learned position table ``W_pos``, separate ``W_Q`` / ``W_K`` / ``W_V``,
post-norm BatchNorm blocks, residual attention (RealFormer: each layer's pre-softmax scores added to the
next's), a flatten head over ``(hidden, patch)`` and RevIN (eps 1e-5, optional affine weight
and bias, optional ``subtract_last``). zoo's PatchTST is each of these by configuration:
:func:`patchtst_args_from_nf` gives the matching arguments, :func:`convert_nf_patchtst` the
weights. Two layouts differ: the queries, keys and values are fused into zoo's one QKV
projection, and the head's input features are reordered, since NeuralForecast flattens
(hidden, patch) (feature ``d * N + n``) where zoo flattens (patch, hidden) (``n * D + d``).

Refused with a clear error: losses with more than one output per step (quantile and
distribution losses), ``batch_normalization=True`` (despite its name it moves the BatchNorm
before each branch and takes the residual from the normalised value, ``y = norm(x); y + f(y)``,
as the reference code's ``pre_norm`` does: no zoo placement computes that; the usual pre-norm
is ``x + f(norm(x))``), exogenous inputs, ``exclude_insample_y``, a ``scaler_type`` other than
``"identity"`` (NeuralForecast would scale the window before RevIN) and non-GELU activations.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping
from typing import Any

import torch

from zoo.convert.blocks import fuse_qkv

_LAYER_KEY = re.compile(r"^backbone\.encoder\.layers\.(\d+)\.(.+)$")
_LAYER = {"self_attn.to_out.0": "attn.proj", "ff.0": "mlp.fc1", "ff.3": "mlp.fc2",
          "norm_attn.1": "norm1", "norm_ffn.1": "norm2",      # BatchNorm (inside a Sequential)
          "norm_attn": "norm1", "norm_ffn": "norm2"}          # LayerNorm
_QKV = {"self_attn.W_Q": 0, "self_attn.W_K": 1, "self_attn.W_V": 2}
_NORM_PARTS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def is_nf_patchtst(state_dict: Mapping[str, torch.Tensor]) -> bool:
    """True for the state dict of a NeuralForecast ``PatchTST`` (or its ``.model``)."""
    return any(k.endswith("backbone.W_P.weight") for k in state_dict) and \
        any(k.endswith("backbone.W_pos") for k in state_dict)


def _unknown(key: str) -> ValueError:
    return ValueError(f"NeuralForecast PatchTST checkpoint has a key zoo does not know: {key!r}")


def convert_nf_patchtst(state_dict: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename, fuse and reorder a NeuralForecast PatchTST state dict (keys with or without the
    ``model.`` prefix) into zoo's; raise on keys zoo does not know."""
    out: dict[str, torch.Tensor] = {}
    qkv: dict[tuple[int, str], dict[int, torch.Tensor]] = {}
    head: dict[str, torch.Tensor] = {}
    for key, value in state_dict.items():
        name = key.removeprefix("model.")
        if name == "backbone.W_pos":
            if value.shape[-1] == 1:
                raise ValueError("NeuralForecast PatchTST with a one-column position table "
                                 f"(shape {tuple(value.shape)}) is not supported by zoo")
            out["front_end.pos_embed"] = value
        elif name in ("backbone.W_P.weight", "backbone.W_P.bias"):
            out[f"front_end.proj.{name.rsplit('.', 1)[1]}"] = value
        elif name in ("revin_layer.affine_weight", "revin_layer.affine_bias"):
            out[f"front_end.scaler.{name.rsplit('_', 1)[1]}"] = value
        elif name in ("head.linear.weight", "head.linear.bias"):
            head[name.rsplit(".", 1)[1]] = value
        elif name.startswith(("head.linears.", "head.dropouts.")):
            raise ValueError("NeuralForecast PatchTST with individual heads is not supported")
        elif (match := _LAYER_KEY.match(name)) is not None:
            index, sub = int(match[1]), match[2]
            module, _, kind = sub.rpartition(".")
            if sub == "self_attn.sdp_attn.scale":
                _check_scale(value, state_dict, key)
            elif module in _QKV:
                qkv.setdefault((index, kind), {})[_QKV[module]] = value
            elif module in _LAYER and kind in _NORM_PARTS:
                out[f"encoder.blocks.{index}.{_LAYER[module]}.{kind}"] = value
            else:
                raise _unknown(key)
        else:
            raise _unknown(key)
    out.update(fuse_qkv(qkv, "NeuralForecast PatchTST"))
    if "weight" not in head or "front_end.pos_embed" not in out:
        raise ValueError("NeuralForecast PatchTST checkpoint lacks the flatten head "
                         "(head.linear) or the position table (backbone.W_pos)")
    num_patches, embed_dim = out["front_end.pos_embed"].shape
    weight = head["weight"]                                                # (H, D * N)
    if weight.shape[1] != num_patches * embed_dim:
        raise ValueError(f"NeuralForecast PatchTST head takes {weight.shape[1]} features; "
                         f"{num_patches} patches x {embed_dim} expected")
    # NeuralForecast's feature d * N + n is zoo's n * D + d
    out["head.proj.weight"] = weight.reshape(-1, embed_dim, num_patches).transpose(1, 2) \
        .reshape(weight.shape[0], -1).contiguous()
    if "bias" in head:
        out["head.proj.bias"] = head["bias"]
    return out


def _check_scale(value: torch.Tensor, state_dict: Mapping[str, torch.Tensor], key: str) -> None:
    """NeuralForecast keeps the attention scale as a (frozen) parameter: it must be
    ``head_dim ** -0.5``, which zoo computes (a learned LSA scale is refused)."""
    w_q = state_dict[key.replace("sdp_attn.scale", "W_Q.weight")]
    q_out = w_q.shape[0]
    for heads in range(1, q_out + 1):   # the head count is not stored: any consistent one
        if q_out % heads == 0 and math.isclose(float(value), (q_out // heads) ** -0.5,
                                               rel_tol=1e-6):
            return
    raise ValueError(f"{key} = {float(value)} is not head_dim ** -0.5 for any head count "
                     "(a learned LSA scale): not supported by zoo")


def patchtst_args_from_nf(hparams: Mapping[str, Any]) -> dict[str, Any]:
    """zoo ``PatchTST`` arguments from a NeuralForecast PatchTST's hyper-parameters
    (``nf_model.hparams``, its constructor arguments; absent ones take NeuralForecast's
    defaults). The forecasts match in eval mode; dropout maps approximately (``fc_dropout``
    is unused by NeuralForecast's flatten head)."""
    h = dict(hparams)
    for key in ("stat_exog_list", "hist_exog_list", "futr_exog_list"):
        if h.get(key):
            raise ValueError(f"zoo's PatchTST takes no exogenous inputs; this model has {key}="
                             f"{h[key]}")
    if h.get("exclude_insample_y"):
        raise ValueError("NeuralForecast PatchTST with exclude_insample_y=True is not supported")
    if (scaler := h.get("scaler_type", "identity")) != "identity":
        raise ValueError(f"NeuralForecast scales windows with scaler_type={scaler!r} before the "
                         "model; zoo's PatchTST normalises with RevIN only: use 'identity'")
    loss = h.get("loss")
    if loss is not None and getattr(loss, "outputsize_multiplier", 1) != 1:
        raise ValueError(f"NeuralForecast PatchTST with {type(loss).__name__} gives "
                         f"{loss.outputsize_multiplier} outputs per step; zoo converts point "
                         "losses (MAE, MSE, ...) only")
    if h.get("batch_normalization", False):
        raise ValueError("NeuralForecast PatchTST with batch_normalization=True adds each branch "
                         "to the normalised input (y = norm(x); y + f(y)), which no zoo block "
                         "placement computes; use batch_normalization=False (post-norm)")
    if (act := h.get("activation", "gelu")) != "gelu":
        raise ValueError(f"zoo's PatchTST uses GELU; this model uses {act!r}")
    input_size, stride = int(h["input_size"]), int(h.get("stride", 8))
    hidden = int(h.get("hidden_size", 128))
    dropout = float(h.get("dropout", 0.2))
    revin = bool(h.get("revin", True))
    ratio = int(h.get("linear_hidden_size", 256)) / hidden
    if int(hidden * ratio) != int(h.get("linear_hidden_size", 256)):
        raise ValueError(f"linear_hidden_size={h.get('linear_hidden_size')} is not a width zoo's "
                         f"mlp_ratio reaches from hidden_size={hidden}")
    return dict(
        context_length=input_size, horizon=int(h["h"]), num_channels=1,
        patch_len=min(input_size + stride, int(h.get("patch_len", 16))), stride=stride,
        padding="end", scaling="std" if revin else "none",
        affine=revin and bool(h.get("revin_affine", False)),
        subtract_last=revin and bool(h.get("revin_subtract_last", True)),
        pos_embed="learned", embed_dim=hidden, depth=int(h.get("encoder_layers", 3)),
        num_heads=int(h.get("n_heads", 16)),
        mlp_ratio=ratio,
        norm="batchnorm", pre_norm=False,
        drop_rate=dropout, attn_drop_rate=float(h.get("attn_dropout", 0.0)),
        head_drop_rate=float(h.get("head_dropout", 0.0)),
        residual_attention=bool(h.get("res_attention", True)),
    )

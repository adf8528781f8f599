"""TimesFM 2.5: HF checkpoints convert to zoo's TimesFM and forecast as transformers'
``TimesFm2_5ModelForPrediction`` does; zoo's own behaviour (long horizons, missing values,
channels, per-series truncation, clear errors) where transformers has none to compare with.

Parity: the same noise-filled weights (q/k norm scales differ within each rotated pair, so a
position offset would show), tiny configs (2 layers, width 64, context 256). transformers'
point forecast (``mean_predictions``, the median) and ``full_predictions`` (the mean head, then
the quantiles) are compared with zoo's ``model(history)`` and ``forecast_outputs`` to 1e-4 of
the data's scale (the largest |value| of the histories' deviations from their means); at
most 7e-6 is seen. transformers decides ``truncate_negative`` for a whole batch from its
smallest value, zoo per series: the parity batches have one sign throughout (or both signs in
every series), and zoo's per-series rule is compared with transformers run on each series alone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

import zoo
from tests.conftest import fill_with_noise, hf_cache_repo
from zoo.convert import to_zoo_state_dict
from zoo.convert.hf_timesfm import convert_hf_timesfm, timesfm_args_from_hf_config
from zoo.models.timesfm import TimesFM

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.usefixtures("one_thread")

TOL = 1e-4          # of the data's scale
CONTEXT, PATCH, HORIZON = 256, 32, 64
TINY_HF = dict(num_hidden_layers=2, hidden_size=64, intermediate_size=96, head_dim=16,
               num_attention_heads=4, num_key_value_heads=4, context_length=CONTEXT,
               patch_length=PATCH, horizon_length=HORIZON, output_quantile_len=96,
               max_position_embeddings=512)
HUB_ID = "google/timesfm-2.5-200m-transformers"
# (force_flip_invariance, use_continuous_quantile_head, output_quantile_len): a continuous head
# shorter than the horizon leaves its tail to the point head's quantiles
CONFIGS = {"flip+continuous": (True, True, 96), "flip+point-quantiles": (True, False, 96),
           "plain+continuous": (False, True, 96), "plain+short-continuous": (False, True, 48)}
# shorter than one patch, not whole patches, exactly the context, longer (the last 256 are read)
LENGTHS = [20, 100, CONTEXT, 300]


def _hf_config(**overrides) -> transformers.TimesFm2_5Config:
    return transformers.TimesFm2_5Config(**{**TINY_HF, **overrides})


def _hf(seed: int = 0, **overrides) -> transformers.TimesFm2_5ModelForPrediction:
    """transformers' model with every parameter noise (``fill_with_noise``), in eval mode."""
    model = transformers.TimesFm2_5ModelForPrediction(_hf_config(**overrides))
    return fill_with_noise(model, seed)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict[str, tuple[torch.nn.Module, TimesFM]]:
    """config name -> (transformers' model, zoo.load of its save_pretrained folder)."""
    out = {}
    for i, (name, (flip, continuous, quantile_len)) in enumerate(CONFIGS.items()):
        hf = _hf(seed=i, force_flip_invariance=flip, use_continuous_quantile_head=continuous,
                 output_quantile_len=quantile_len)
        folder = tmp_path_factory.mktemp(name)
        hf.save_pretrained(folder)
        out[name] = hf, zoo.load(folder).eval()
    return out


def _walks(batch: int, length: int, seed: int = 0) -> torch.Tensor:
    """Random walks minus their means (B, L): every series has values of both signs."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, length, generator=g).cumsum(1)
    return x - x.mean(dim=1, keepdim=True)


def _scale(x: torch.Tensor) -> float:
    observed = x[~torch.isnan(x)].view(-1)
    return float((observed - observed.mean()).abs().max())


def _compare(hf, model: TimesFM, x: torch.Tensor, **hf_kwargs) -> float:
    """Max |zoo - transformers| over the point forecast and every output, relative to the
    data's scale; x (B, L) is B one-channel series."""
    with torch.no_grad():
        want = hf(past_values=list(x), **hf_kwargs)
        point = model(x[..., None])[..., 0]                       # (B, H)
        outputs = model.forecast_outputs(x[..., None])[:, :, 0]   # (B, H, 1 + Q)
        quantiles = model.forecast_quantiles(x[..., None])[:, :, 0]
    assert point.shape == want.mean_predictions.shape == (len(x), HORIZON)
    torch.testing.assert_close(quantiles, outputs[..., 1:], rtol=0, atol=0)
    diffs = [(point - want.mean_predictions).abs().max(),
             (outputs - want.full_predictions).abs().max()]
    return float(max(diffs)) / _scale(x)


# --- conversion -----------------------------------------------------------------------------

def test_every_key_maps_and_query_key_value_fuse_in_order():
    hf = _hf(num_hidden_layers=1)
    theirs = hf.state_dict()
    ours = to_zoo_state_dict(theirs)
    model = TimesFM(**timesfm_args_from_hf_config(hf.config.to_dict()))
    assert sorted(ours) == sorted(model.state_dict())
    assert len(ours) == len(theirs) - 2                  # q, k, v -> one qkv
    layer = "model.layers.0.self_attn."
    torch.testing.assert_close(ours["encoder.blocks.0.attn.qkv.weight"], torch.cat(
        [theirs[layer + f"{p}_proj.weight"] for p in "qkv"]), rtol=0, atol=0)
    assert ours["encoder.blocks.0.attn.query_scale"] is theirs[layer + "scaling"]
    for hf_key, zoo_key in [
            ("model.layers.0.input_layernorm.weight", "encoder.blocks.0.norm1.weight"),
            ("model.layers.0.post_attention_layernorm.weight", "encoder.blocks.0.norm1_post.weight"),
            ("model.layers.0.pre_feedforward_layernorm.weight", "encoder.blocks.0.norm2.weight"),
            ("model.layers.0.post_feedforward_layernorm.weight", "encoder.blocks.0.norm2_post.weight"),
            ("model.input_ff_layer.residual_layer.bias", "front_end.tokenizer.skip.bias"),
            ("output_projection_point.output_layer.weight", "head.point.fc2.weight"),
            ("output_projection_quantiles.input_layer.weight", "head.quantile.fc1.weight")]:
        assert ours[zoo_key] is theirs[hf_key], hf_key


def test_unknown_and_incomplete_checkpoints_are_refused_by_name():
    state = dict(_hf(num_hidden_layers=1).state_dict())
    state["model.layers.0.self_attn.sinks"] = torch.zeros(4)
    with pytest.raises(ValueError, match=re.escape(
            "HF TimesFM 2.5 checkpoint has a key zoo does not know: 'model.layers.0.self_attn.sinks'")):
        convert_hf_timesfm(state)
    del state["model.layers.0.self_attn.sinks"], state["model.layers.0.self_attn.k_proj.weight"]
    with pytest.raises(ValueError, match="layer 0 lacks one of the query / key / value weights"):
        convert_hf_timesfm(state)


def test_a_checkpoint_missing_a_weight_is_refused_naming_it(tmp_path):
    hf = _hf(num_hidden_layers=1)
    hf.save_pretrained(tmp_path)
    state = load_file(str(tmp_path / "model.safetensors"))
    assert "model.layers.0.mlp.ff0.weight" in state   # the files' name for transformers' fc1
    del state["model.layers.0.self_attn.q_norm.weight"]
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(zoo.CheckpointMismatchError,
                       match=r"missing keys: encoder\.blocks\.0\.attn\.q_norm\.weight"):
        zoo.load(tmp_path)


def test_the_registered_200m_model_has_transformers_default_shapes():
    """timesfm_2p5_200m (google/timesfm-2.5-200m-transformers) is TimesFm2_5Config()'s model:
    the same tensors and the same arguments (both built on the meta device: no memory)."""
    with torch.device("meta"):
        hf = transformers.TimesFm2_5ModelForPrediction(transformers.TimesFm2_5Config())
        ours = zoo.create_model("timesfm_2p5_200m")
    assert isinstance(ours, TimesFM)
    theirs = {k: tuple(v.shape) for k, v in to_zoo_state_dict(hf.state_dict()).items()}
    assert theirs == {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    args = timesfm_args_from_hf_config(transformers.TimesFm2_5Config().to_dict())
    assert {k: ours.model_args[k] for k in args} == args
    assert 190e6 < sum(p.numel() for p in ours.parameters()) < 240e6


@pytest.mark.parametrize("override, message", [
    (dict(num_key_value_heads=2), "num_key_value_heads=2"),
    (dict(rope_parameters={"rope_type": "linear", "rope_theta": 1e4, "factor": 2.0}),
     "rope_type='linear'"),
    (dict(use_bias=True), "use_bias=True"),
    (dict(decode_index=4), "decode_index=4"),
    (dict(activation="gelu"), "activation='gelu'"),
])
def test_configurations_zoo_does_not_build_are_refused(override, message):
    config = {**_hf_config().to_dict(), **override}
    with pytest.raises(ValueError, match=re.escape(message) + ".* is not supported by zoo"):
        timesfm_args_from_hf_config(config)


def test_config_arguments():
    args = timesfm_args_from_hf_config(_hf_config(
        use_continuous_quantile_head=False, force_flip_invariance=False, infer_is_positive=False,
        attention_bias=True, rms_norm_eps=1e-5, rope_parameters={"rope_type": "default",
                                                                 "rope_theta": 500.0}).to_dict())
    assert args == dict(context_length=CONTEXT, patch_len=PATCH, horizon=HORIZON, embed_dim=64,
                        depth=2, num_heads=4, head_dim=16, mlp_hidden=96,
                        quantiles=[0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9],
                        quantile_horizon=0, flip_invariance=False, infer_is_positive=False,
                        norm_eps=1e-5, rope_theta=500.0, attn_bias=True)


# --- parity with transformers -------------------------------------------------------------------

@pytest.mark.parametrize("length", LENGTHS)
@pytest.mark.parametrize("config", list(CONFIGS))
def test_forecasts_match_transformers(pairs, config, length):
    hf, model = pairs[config]
    assert (model.head.quantile is None) == (config == "flip+point-quantiles")
    assert _compare(hf, model, _walks(3, length, seed=length)) < TOL


@pytest.mark.parametrize("offset, scale", [(1e4, 100.0), (0.0, 1e-3), (-300.0, 0.5)])
def test_offsets_and_scales_match_transformers(pairs, offset, scale):
    hf, model = pairs["flip+continuous"]
    x = offset + scale * _walks(2, 200, seed=7)
    assert _compare(hf, model, x) < TOL


def _falling(batch: int, seed: int = 3) -> torch.Tensor:
    """Never-negative series (B, 150) falling to zero: forecasts below zero get clipped."""
    g = torch.Generator().manual_seed(seed)
    return torch.linspace(1.0, 0.0, 150) * (1 + 0.3 * torch.rand(batch, 150, generator=g))


def test_all_positive_batches_are_truncated_at_zero_as_in_transformers(pairs):
    hf, model = pairs["plain+continuous"]
    x = _falling(3)
    assert _compare(hf, model, x) < TOL
    with torch.no_grad():
        outputs = model.forecast_outputs(x[..., None])
        unclipped = hf(past_values=list(x), truncate_negative=False).full_predictions
    assert (outputs >= 0).all() and (unclipped < 0).any()   # truncation was put to work


def test_all_negative_batches_match_transformers(pairs):
    hf, model = pairs["flip+continuous"]
    x = -5.0 - _walks(3, 120, seed=11).abs()
    assert _compare(hf, model, x) < TOL


def test_truncation_is_decided_per_series_as_transformers_does_for_one_series(pairs):
    """A never-negative series is clipped at 0 in any batch: its forecast equals transformers'
    for it alone, while transformers leaves the whole mixed batch unclipped."""
    hf, model = pairs["plain+continuous"]
    positive = _falling(3)[2]   # one whose unclipped forecast dips below zero
    x = torch.stack([positive, _walks(1, 150, seed=5)[0]])
    with torch.no_grad():
        together = model.forecast_outputs(x[..., None])[:, :, 0]
        alone = hf(past_values=[positive]).full_predictions[0]
        batch = hf(past_values=list(x)).full_predictions
    assert (together[0] - alone).abs().max() < TOL * _scale(positive)
    assert (together[0] >= 0).all() and (batch[0] < 0).any()
    assert (together[1] - batch[1]).abs().max() < TOL * _scale(x[1])


# --- missing values ---------------------------------------------------------------------------

def _hf_with_missing(hf, x: torch.Tensor, monkeypatch: pytest.MonkeyPatch):
    """transformers' forecast of x (B, L) with its NaN passed as padding (value 0, flag 1):
    its forward has no NaN handling of its own, but its decoder masks padded steps, which is
    what zoo does with NaN. Only the padding flags are added to transformers' preprocessing."""
    preprocess = hf._preprocess

    def with_nan_as_padding(inputs, freq=None, context_len=None):
        values, padding = preprocess([torch.nan_to_num(s, nan=0.0) for s in inputs], freq,
                                     context_len)
        missing = torch.isnan(preprocess(list(inputs), freq, context_len)[0])
        padding = padding.clone()
        padding[:, :values.shape[1]][missing] = 1.0
        return values, padding

    monkeypatch.setattr(hf, "_preprocess", with_nan_as_padding)
    with torch.no_grad():
        return hf(past_values=list(x))


# the history is 200 steps: 24 steps of front padding, so patch k holds steps 32 k - 24 ...
@pytest.mark.parametrize("gap", [
    slice(50, 60),    # inside patches: the patches stay tokens, their statistics skip the gap
    slice(100, 104),  # up to a patch's last step: that patch becomes a padding token
    slice(72, 104),   # a whole patch: a padding token in the middle
    slice(0, 70),     # the start: padding tokens in front (positions shift as transformers')
])
def test_missing_values_match_transformers_given_them_as_padding(pairs, monkeypatch, gap):
    hf, model = pairs["flip+continuous"]
    x = _walks(2, 200, seed=2)
    x[0, gap] = float("nan")
    want = _hf_with_missing(hf, x, monkeypatch)
    with torch.no_grad():
        outputs = model.forecast_outputs(x[..., None])[:, :, 0]
    assert torch.isfinite(outputs).all()
    assert (outputs - want.full_predictions).abs().max() < TOL * _scale(x)
    filled = x.clone()
    filled[0, gap] = 0.0
    with torch.no_grad():   # the mask is not zero-filling, and the other series is untouched
        zero_filled = model.forecast_outputs(filled[..., None])[:, :, 0]
    assert (zero_filled[0] - outputs[0]).abs().max() > 1e-3 * _scale(x)
    torch.testing.assert_close(zero_filled[1], outputs[1])


# --- zoo's forecaster contract ------------------------------------------------------------------

def test_long_horizons_decode_autoregressively(pairs):
    _, model = pairs["flip+continuous"]
    x = _walks(2, 150, seed=4)[..., None]
    with torch.no_grad():
        one = model.forecast_outputs(x)
        long = model.forecast_outputs(x, horizon=2 * HORIZON + 10)
        # the second pass forecasts from the history and the first pass's median
        again = model.forecast_outputs(torch.cat([x, one[:, :, :, model.point_index]], dim=1))
    assert long.shape == (2, 2 * HORIZON + 10, 1, 10) and torch.isfinite(long).all()
    torch.testing.assert_close(long[:, :HORIZON], one, rtol=0, atol=1e-6)
    median = model.point_index
    torch.testing.assert_close(long[:, HORIZON:2 * HORIZON, :, median], again[..., median],
                               rtol=0, atol=TOL * _scale(x))
    with torch.no_grad():
        assert model(x, horizon=10).shape == (2, 10, 1)
        torch.testing.assert_close(model(x, horizon=10), one[:, :10, :, median])
    assert model.max_horizon is None and model.min_context == 1 and model.supports_missing


def test_channels_are_separate_series_and_batches_do_not_mix(pairs):
    _, model = pairs["flip+continuous"]
    x = torch.stack([_walks(2, 130, seed=c) for c in range(3)], dim=-1)   # (2, 130, 3)
    x[1, :, 2] = torch.linspace(2.0, 0.5, 130)                           # one never-negative
    with torch.no_grad():
        together = model.forecast_quantiles(x)
        assert together.shape == (2, HORIZON, 3, 9)
        for b in range(2):
            for c in range(3):
                alone = model.forecast_quantiles(x[b:b + 1, :, c:c + 1])
                torch.testing.assert_close(together[b:b + 1, :, c:c + 1], alone)
    assert (together[1, :, 2] >= 0).all()


def test_bad_inputs_get_clear_errors(pairs):
    _, model = pairs["flip+continuous"]
    with pytest.raises(ValueError, match=r"expected a series batch \(B, L, C\), got shape \(2, 50\)"):
        model(torch.randn(2, 50))
    with pytest.raises(ValueError, match="history is empty"):
        model(torch.randn(2, 0, 1))
    x = torch.randn(2, 50, 2)
    x[1, 3, 0] = float("inf")
    with pytest.raises(ValueError, match="infinite values; replace them"):
        model(x)
    x = torch.randn(2, 50, 2)
    x[1, :, 1] = float("nan")
    with pytest.raises(ValueError, match=r"no observed value in its last 50 steps \(channels \[1\]\)"):
        model(x)
    with pytest.raises(ValueError, match="horizon must be >= 1, got 0"):
        model(torch.randn(2, 50, 1), horizon=0)


# --- the hub ------------------------------------------------------------------------------------

def test_hub_checkpoints_load_by_registered_name_and_by_id(isolated_caches, monkeypatch,
                                                           tmp_path: Path):
    """timesfm_2p5_200m, pretrained=True reads google/timesfm-2.5-200m-transformers (a tiny
    stand-in in an offline cache); zoo.load of the hf-hub: id takes the sizes from its config."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    hf = _hf(seed=9)
    hf.save_pretrained(tmp_path)
    hf_cache_repo(isolated_caches.hub, HUB_ID, {
        name: (tmp_path / name).read_bytes() for name in ("model.safetensors", "config.json")})
    tiny = timesfm_args_from_hf_config(hf.config.to_dict())
    x = _walks(2, 180, seed=1)
    by_name = zoo.create_model("timesfm_2p5_200m", pretrained=True, **tiny).eval()
    assert by_name.pretrained_cfg.hf_hub_id == HUB_ID
    assert by_name.pretrained_cfg.license == "apache-2.0"
    by_id = zoo.load(f"hf-hub:{HUB_ID}").eval()
    assert by_id.model_args == by_name.model_args
    for model in (by_name, by_id):
        assert _compare(hf, model, x) < TOL


def test_a_history_shorter_than_one_output_patch_decodes_any_horizon():
    """Autoregressive decoding appends whole output patches to a history that was shorter than
    one (its missing flags grow with it)."""
    model = zoo.create_model("timesfm_2p5", context_length=256, patch_len=8, horizon=16,
                             embed_dim=16, depth=1, num_heads=2, head_dim=8, mlp_hidden=16,
                             quantile_horizon=0).eval()
    history = torch.randn(2, 5, 1).cumsum(1)
    with torch.no_grad():
        long = model(history, horizon=50)
        assert long.shape == (2, 50, 1) and torch.isfinite(long).all()
        assert torch.allclose(long[:, :16], model(history, horizon=16))

"""NeuralForecast PatchTST weights in zoo's PatchTST: the same forecasts, to 1e-5."""

from __future__ import annotations

import pytest
import torch

from zoo.convert import to_zoo_state_dict
from zoo.convert.nf_patchtst import convert_nf_patchtst, is_nf_patchtst, patchtst_args_from_nf
from zoo.models.patchtst import PatchTST

nf_patchtst = pytest.importorskip("neuralforecast.models.patchtst")


def _noisy(module: torch.nn.Module, seed: int) -> None:
    """Fill every parameter and BatchNorm statistic with noise, so a swapped key shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, tensor in module.state_dict().items():
            if not tensor.is_floating_point() or name.endswith("sdp_attn.scale"):
                continue
            noise = torch.randn(tensor.shape, generator=g)
            tensor.copy_(noise.abs() + 0.5 if name.endswith(("running_var", "affine_weight"))
                         else 0.3 * noise)


# hyper-parameters of NeuralForecast's PatchTST; each case flips what zoo must configure
CASES = {
    "defaults": dict(),                                  # subtract_last, residual attention
    "affine_mean": dict(revin_affine=True, revin_subtract_last=False),
    "plain_attention": dict(res_attention=False),
    "no_revin_odd_stride": dict(revin=False, stride=5, patch_len=12),
}


@pytest.mark.parametrize("case", list(CASES))
def test_zoo_forecast_equals_neuralforecast(case: str) -> None:
    hparams = dict(h=12, input_size=48, hidden_size=16, n_heads=4, linear_hidden_size=24,
                   encoder_layers=2, **CASES[case])
    torch.manual_seed(0)
    peer = nf_patchtst.PatchTST(**hparams, max_steps=1, accelerator="cpu", logger=False,
                                enable_progress_bar=False, enable_model_summary=False).eval()
    _noisy(peer, seed=1)
    state = peer.state_dict()
    assert is_nf_patchtst(state)
    ours = PatchTST(**patchtst_args_from_nf(peer.hparams)).eval()
    ours.load_state_dict(convert_nf_patchtst(state))   # strict: every key mapped
    # the generic loader recognises the format (a Lightning checkpoint's ``model.`` prefix too)
    recognised = to_zoo_state_dict({f"model.{k}": v for k, v in state.items()})
    assert all(torch.equal(recognised[k], v) for k, v in ours.state_dict().items())

    x = 5.0 + 3.0 * torch.randn(7, 48, 1, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        expected = peer({"insample_y": x})                                 # (B, H, 1)
        got = ours(x)
    assert got.shape == expected.shape == (7, 12, 1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_head_features_are_reordered() -> None:
    """NeuralForecast flattens (hidden, patch); zoo (patch, hidden): the converted head weight
    is the same map with its columns permuted."""
    D, N, H = 3, 4, 2
    weight = torch.arange(H * D * N, dtype=torch.float32).reshape(H, D * N)
    state = {"backbone.W_pos": torch.zeros(N, D), "backbone.W_P.weight": torch.zeros(D, 2),
             "head.linear.weight": weight, "head.linear.bias": torch.zeros(H)}
    out = convert_nf_patchtst(state)["head.proj.weight"]
    for n in range(N):
        for d in range(D):
            assert torch.equal(out[:, n * D + d], weight[:, d * N + n])


@pytest.mark.parametrize("bad, message", [
    (dict(scaler_type="standard"), "scaler_type"),
    (dict(activation="relu"), "GELU"),
    (dict(batch_normalization=True), "placement"),
    (dict(hist_exog_list=["x"]), "exogenous"),
])
def test_unsupported_hyper_parameters_are_refused(bad: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        patchtst_args_from_nf(dict(h=4, input_size=16, **bad))


def test_unknown_key_is_named() -> None:
    with pytest.raises(ValueError, match=r"backbone\.extra"):
        convert_nf_patchtst({"backbone.W_pos": torch.zeros(2, 2), "backbone.extra": torch.zeros(1)})

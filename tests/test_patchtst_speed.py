"""PatchTST's fast inference paths give the numbers of the plain (autograd) path.

Without autograd the MLP runs narrow layers in cache-sized row chunks and overwrites its own
hidden buffer with the activation, residual sums reuse the branch's buffer, and RevIN skips
its mask of ones; residual attention over short sequences carries summed scores instead of
queries and keys. Each is checked here against the same computation with autograd on (the
path training takes), on inputs large enough that the chunked path really runs.
"""

from __future__ import annotations

import pytest
import torch

from zoo.encoder import BlockConfig, Encoder, EncoderConfig
from zoo.frontends.series import InstanceScaler
from zoo.layers import mlp as mlp_module
from zoo.layers.inplace import may_overwrite
from zoo.layers.mlp import ACTIVATIONS, CHUNK_ELEMENTS, INPLACE_ACTIVATIONS, Mlp
from zoo.models.patchtst import PatchTST

# ETTh1-like widths (d_model 16, d_ff 128, 4 heads) on few patches: 128 x 7 series of 12
# patches = 10,752 tokens; the tests that use it make chunks of 512 rows (SMALL_CHUNKS)
SMALL_CHUNKS = 512 * 128
ETTH = dict(context_length=104, horizon=24, num_channels=7, patch_len=16, stride=8,
            embed_dim=16, depth=2, num_heads=4, mlp_ratio=8.0, drop_rate=0.3)


def _fill(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Noise in every weight and norm statistic, so no part is an identity."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.rand(p.shape, generator=g) * 0.6 - 0.3)
            if "norm" in name and name.endswith("weight"):
                p.add_(1.0)
        for name, b in model.named_buffers():
            if name.endswith("running_mean"):
                b.copy_(torch.randn(b.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                b.copy_(torch.rand(b.shape, generator=g) + 0.5)
    return model


def _fc1_calls(mlp: Mlp) -> list[int]:
    calls: list[int] = []
    mlp.fc1.register_forward_hook(lambda _m, _i, out: calls.append(out.numel() // out.shape[-1]))
    return calls


@pytest.mark.parametrize("name", list(ACTIVATIONS))
def test_inplace_activations_are_the_activations_bit_for_bit(name):
    assert set(INPLACE_ACTIVATIONS) == set(ACTIVATIONS)
    x = torch.randn(1000) * 4
    y = x.clone()
    out = INPLACE_ACTIVATIONS[name](y)
    assert out.data_ptr() == y.data_ptr()                 # written over its input
    assert torch.equal(out, ACTIVATIONS[name](x))


@pytest.mark.parametrize("act", ["gelu", "relu"])
def test_narrow_mlp_runs_in_chunks_without_autograd_with_the_same_output(act):
    torch.manual_seed(0)
    mlp = Mlp(16, 128, act=act, drop=0.3).eval()
    rows = CHUNK_ELEMENTS // 128
    x = torch.randn(2 * rows + 904, 16)                 # 3 chunks: 2 whole, 1 of 904 rows
    calls = _fc1_calls(mlp)
    expected = mlp(x)                                   # autograd on: one pass, no chunks
    assert calls == [2 * rows + 904]
    with torch.inference_mode():
        got = mlp(x)
    assert calls[1:] == [rows, rows, 904]
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6)
    with torch.no_grad():   # a strided (B, N, D) input
        x3 = x[:2 * rows].view(2, rows, 16)[:, ::2]
        torch.testing.assert_close(mlp(x3), expected[:2 * rows].view(2, rows, 16)[:, ::2],
                                   rtol=0, atol=1e-6)


def test_wide_or_training_or_small_mlps_run_whole():
    mlp = Mlp(192, 768).eval()
    calls = _fc1_calls(mlp)
    with torch.no_grad():
        mlp(torch.randn(8, 197, 192))                   # ViT-Tiny width: compute-bound
        mlp.train()
        narrow = Mlp(16, 128, drop=0.3)
        narrow_calls = _fc1_calls(narrow)
        narrow(torch.randn(3 * CHUNK_ELEMENTS // 128, 16))   # training (dropout): whole
        narrow.eval()(torch.randn(2 * CHUNK_ELEMENTS // 128 // 16, 16, 16))   # small: whole
    assert len(calls) == 1 and len(narrow_calls) == 2


def test_fast_paths_are_off_with_autograd_and_while_compiling(monkeypatch):
    assert not may_overwrite()
    with torch.no_grad():
        assert may_overwrite()
        monkeypatch.setattr(torch.compiler, "is_compiling", lambda: True)
        assert not may_overwrite()


@pytest.mark.parametrize("placement", ["pre", "post", "sandwich", "res_post", "parallel"])
@pytest.mark.parametrize("residual", [False, True], ids=["plain", "residual-attention"])
def test_encoder_without_autograd_matches_the_autograd_path(placement, residual, monkeypatch):
    monkeypatch.setattr(mlp_module, "CHUNK_ELEMENTS", SMALL_CHUNKS)
    torch.manual_seed(0)
    block = BlockConfig(embed_dim=16, num_heads=4, mlp_ratio=8.0, norm="batchnorm",
                        placement=placement, proj_drop=0.3, residual_attention=residual)
    enc = _fill(Encoder(EncoderConfig(block=block, depth=3, final_norm=False))).eval()
    x = torch.randn(128, 41, 16)                        # 5,248 tokens: 11 chunks per MLP
    x_before = x.clone()
    expected = enc(x)
    calls = _fc1_calls(enc.blocks[0].mlp)
    with torch.inference_mode():
        got = enc(x)
    assert len(calls) == 11
    assert torch.equal(x, x_before)                     # the input is never overwritten
    # residual attention sums its scores in another order: float32 rounding (3e-7 of the
    # output's scale; both paths are 8e-6 from a float64 run)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6 * expected.abs().max().item())


@pytest.mark.parametrize("mask_kind", [None, "bool", "float", "causal"])
def test_carried_scores_equal_concatenated_queries_and_keys(mask_kind):
    """Residual attention in eager inference (short sequences: summed (N, N) scores carried
    from block to block) equals the SDPA path over concatenated queries and keys, both
    against float64, with every kind of mask, and reads the same attention weights."""
    from zoo.layers.attention import SCORES_MAX_TOKENS, Attention, record_attention

    torch.manual_seed(0)
    blocks = [Attention(32, num_heads=4, residual=True, causal=mask_kind == "causal")
              for _ in range(3)]
    x = torch.randn(6, 40, 32)
    mask = {None: None, "causal": None, "bool": torch.rand(6, 1, 40, 40) > 0.3,
            "float": torch.randn(6, 4, 40, 40)}[mask_kind]

    def run(x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, object]:
        state = None
        for block in blocks:
            x, state = block(x, mask, prev_qk=state)
        return x, state

    expected, qk = run(x, mask)                          # autograd on: SDPA, (q, k) carried
    assert isinstance(qk, tuple) and qk[0].shape == (6, 4, 40, 24)
    with torch.inference_mode():
        got, scores = run(x, mask)
        assert isinstance(scores, torch.Tensor) and scores.shape == (6, 4, 40, 40)
        with record_attention(blocks[2]) as weights:
            run(x, mask)
        # longer sequences keep SDPA (the (N, N) scores would grow with N^2)
        assert isinstance(run(torch.randn(2, SCORES_MAX_TOKENS + 1, 32), None)[1], tuple)
    for block in blocks:
        block.double()
    reference, _ = run(x.double(), None if mask is None else mask.double()
                       if mask.is_floating_point() else mask)
    scale = reference.abs().max().item()
    for ours in (got, expected):
        torch.testing.assert_close(ours.double(), reference, rtol=0, atol=1e-6 * scale)
    torch.testing.assert_close(got, expected, rtol=0, atol=1e-6 * scale)
    assert weights[0].shape == (6, 4, 40, 40)
    torch.testing.assert_close(weights[0].sum(-1), torch.ones(6, 4, 40))


def _models(**overrides):
    for pre_norm, residual in ((True, False), (False, True)):
        torch.manual_seed(0)
        yield _fill(PatchTST(**{**ETTH, "pre_norm": pre_norm, "residual_attention": residual,
                                **overrides}))


@pytest.mark.parametrize("horizon", [None, 7])
def test_patchtst_inference_equals_the_autograd_path(horizon, monkeypatch):
    monkeypatch.setattr(mlp_module, "CHUNK_ELEMENTS", SMALL_CHUNKS)
    x = torch.randn(128, 104, 7).cumsum(1) * 3 + 10
    for model in _models():
        model.eval()
        expected = model(x, horizon=horizon)
        with torch.inference_mode():
            got = model(x, horizon=horizon)
        assert got.shape == (128, horizon or 24, 7) and got.is_contiguous()
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * expected.abs().max().item())
        # training mode without autograd (dropout on, same random draws): the same
        model.train()
        torch.manual_seed(1)
        expected = model(x[:16], horizon=horizon)
        torch.manual_seed(1)
        with torch.no_grad():
            got = model(x[:16], horizon=horizon)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * expected.abs().max().item())


def test_quantile_patchtst_inference_equals_the_autograd_path(monkeypatch):
    monkeypatch.setattr(mlp_module, "CHUNK_ELEMENTS", SMALL_CHUNKS)
    x = torch.randn(128, 104, 7).cumsum(1)
    for model in _models(quantiles=(0.1, 0.5, 0.9)):
        model.eval()
        expected = model.forecast_quantiles(x, horizon=5)
        with torch.inference_mode():
            got = model.forecast_quantiles(x, horizon=5)
        torch.testing.assert_close(got, expected, rtol=0, atol=1e-5 * expected.abs().max().item())


@pytest.mark.parametrize("scaling,subtract_last", [("std", False), ("std", True), ("mean", False)])
def test_scaler_without_a_mask_equals_the_all_observed_mask(scaling, subtract_last):
    x = torch.randn(8, 50, 3).cumsum(1) + 5
    scaler = InstanceScaler(3, scaling=scaling, subtract_last=subtract_last)
    z, (loc, scale) = scaler(x)
    z_m, (loc_m, scale_m) = scaler(x, torch.ones_like(x, dtype=torch.bool))
    for a, b in ((z, z_m), (loc, loc_m), (scale, scale_m)):
        assert torch.equal(a, b)

"""The composable layers: each part against its definition written out by hand, or against the
peer implementation it must match (timm's rotary tables, SwiGLU, attention pooling)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from zoo.encoder import BlockConfig, Encoder, EncoderConfig, make_block
from zoo.layers import (
    Attention,
    AttentionPool,
    AxialRotary2d,
    GatedMlp,
    MixedRotary2d,
    Rotary1d,
    apply_rotary,
    make_mlp,
    make_norm,
    record_attention,
)
from zoo.layers.mlp import gelu_tanh, quick_gelu
from zoo.layers.pos_embed import grid_coordinates, rotary_table

pytestmark = pytest.mark.usefixtures("one_thread")


def _noise(module: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (norm scales near 1), so a dropped or swapped part shows."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in module.named_parameters():
            p.copy_(torch.rand(p.shape, generator=gen) * 0.4 - 0.2 + (1.0 if "norm" in name and
                                                                       name.endswith("weight") else 0))
    return module.eval()


def _x(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


# --- norms and MLPs -------------------------------------------------------------------------------

def test_rmsnorm_and_layernorm_are_their_formulas():
    x = _x(2, 5, 16)
    rms = _noise(make_norm("rmsnorm", 16, 1e-6))
    torch.testing.assert_close(rms(x), x / (x.pow(2).mean(-1, keepdim=True) + 1e-6).sqrt() * rms.weight)
    ln = _noise(make_norm("layernorm", 16, 1e-5))
    centred = x - x.mean(-1, keepdim=True)
    expected = centred / (centred.pow(2).mean(-1, keepdim=True) + 1e-5).sqrt() * ln.weight + ln.bias
    torch.testing.assert_close(ln(x), expected, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="norm must be one of"):
        make_norm("groupnorm", 16, 1e-5)


def test_activations_are_their_formulas():
    x = _x(100)
    torch.testing.assert_close(quick_gelu(x), x * torch.sigmoid(1.702 * x))
    torch.testing.assert_close(gelu_tanh(x), 0.5 * x * (1 + torch.tanh(
        math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3))), rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="act must be one of"):
        make_mlp("mlp", 8, 16, act="tanh")


def test_gated_mlp_is_silu_gate_times_value_and_matches_timm_swiglu():
    mlp = _noise(GatedMlp(16, 24, act="silu"))
    x = _x(3, 16)
    gate, value = x @ mlp.fc1.weight[:24].T + mlp.fc1.bias[:24], x @ mlp.fc1.weight[24:].T + mlp.fc1.bias[24:]
    torch.testing.assert_close(mlp(x), mlp.fc2(F.silu(gate) * value))
    timm = pytest.importorskip("timm")
    swiglu = _noise(timm.layers.SwiGLU(16, 24), seed=3)   # unpacked: fc1_g, fc1_x
    with torch.no_grad():
        mlp.fc1.weight.copy_(torch.cat([swiglu.fc1_g.weight, swiglu.fc1_x.weight]))
        mlp.fc1.bias.copy_(torch.cat([swiglu.fc1_g.bias, swiglu.fc1_x.bias]))
        mlp.fc2.load_state_dict(swiglu.fc2.state_dict())
        torch.testing.assert_close(mlp(x), swiglu(x))


# --- rotary positions --------------------------------------------------------------------------------

def test_rotary_1d_scores_depend_only_on_the_offset():
    """RoPE's point: after rotation, q_i . k_j is a function of i - j."""
    rope = Rotary1d(8, theta=100.0)
    table = rope.table(12)
    q, k = _x(1, 1, 1, 8).expand(1, 1, 12, 8), _x(1, 1, 1, 8, seed=2).expand(1, 1, 12, 8)
    scores = apply_rotary(q, table)[0, 0] @ apply_rotary(k, table)[0, 0].T       # (12, 12)
    for offset in range(-3, 4):
        diagonal = torch.diagonal(scores, offset)
        torch.testing.assert_close(diagonal, diagonal[:1].expand_as(diagonal), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(torch.diagonal(scores, 0)[0], torch.diagonal(scores, 3)[0])
    # a rotation keeps lengths; prefix rows are not rotated
    torch.testing.assert_close(apply_rotary(q, table).norm(dim=-1), q.norm(dim=-1))
    with_prefix = rope.table(12, num_prefix_tokens=2)
    assert torch.equal(apply_rotary(q[:, :, :2], type(table)(with_prefix.sin[:2], with_prefix.cos[:2],
                                                              table.interleaved)), q[:, :, :2])


@pytest.mark.parametrize("layout", ["interleaved", "half"])
def test_apply_rotary_rotates_each_pair_by_its_angle(layout):
    angles = torch.tensor([[0.3, 1.1]])                  # one token, head_dim 4
    table = Rotary1d(4, layout=layout).table(1)           # angle 0 rows: the identity
    x = _x(1, 1, 1, 4)
    assert torch.equal(apply_rotary(x, table), x)
    turned = apply_rotary(x, rotary_table(angles, layout=layout))[0, 0, 0]
    pairs = [(0, 1), (2, 3)] if layout == "interleaved" else [(0, 2), (1, 3)]
    for (i, j), a in zip(pairs, angles[0], strict=True):
        xi, xj = x[0, 0, 0, i], x[0, 0, 0, j]
        torch.testing.assert_close(turned[i], xi * torch.cos(a) - xj * torch.sin(a))
        torch.testing.assert_close(turned[j], xj * torch.cos(a) + xi * torch.sin(a))


def test_grid_coordinates():
    ij = grid_coordinates((2, 3))
    assert ij.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]   # (row, column)
    assert grid_coordinates((2, 3), axes="xy").tolist() == [[c, r] for r, c in ij.tolist()]
    centred = grid_coordinates((2, 4), coords="centered")
    assert centred[:, 0].unique().tolist() == [-0.5, 0.5]
    assert centred[:, 1].unique().tolist() == [-0.75, -0.25, 0.25, 0.75]
    torch.testing.assert_close(grid_coordinates((4, 4), reference=(2, 8))[-1], torch.tensor([1.5, 6.0]))


@pytest.mark.parametrize("options, timm_kwargs", [
    (dict(temperature=100.0, axes="xy"), dict(temperature=100.0, grid_indexing="xy")),
    (dict(reference=(16, 16)), dict(ref_feat_shape=(16, 16))),
    (dict(reference=(24, 24), offset=1.0, axes="xy"),
     dict(ref_feat_shape=(24, 24), grid_offset=1.0, grid_indexing="xy")),
    (dict(temperature=100.0, layout="half"), dict(temperature=100.0, rotate_half=True)),
], ids=["rope_vit", "eva_reference", "pe_offset", "half"])
def test_axial_rotary_table_matches_timm(options, timm_kwargs):
    timm = pytest.importorskip("timm")
    ours = AxialRotary2d(32, **options).table((5, 7), num_prefix_tokens=2)
    theirs = timm.layers.pos_embed_sincos.RotaryEmbeddingCat(
        32, in_pixels=False, **timm_kwargs).get_embed(shape=[5, 7])
    sin, cos = theirs.chunk(2, dim=-1)
    torch.testing.assert_close(ours.sin[2:], sin, rtol=0, atol=1e-6)
    torch.testing.assert_close(ours.cos[2:], cos, rtol=0, atol=1e-6)
    assert torch.equal(ours.sin[:2], torch.zeros(2, 32)) and torch.equal(ours.cos[:2], torch.ones(2, 32))


def test_centred_axial_rotary_table_matches_timm_dinov3():
    timm = pytest.importorskip("timm")
    ours = AxialRotary2d(64, coords="centered", temperature=100.0, layout="half").table((6, 9))
    theirs = timm.layers.pos_embed_sincos.RotaryEmbeddingDinoV3(64, temperature=100.0).get_embed(
        shape=[6, 9])
    torch.testing.assert_close(torch.cat([ours.sin, ours.cos], -1), theirs, rtol=0, atol=1e-6)


def test_mixed_rotary_tables_match_timm_and_are_learned():
    timm = pytest.importorskip("timm")
    theirs = timm.layers.pos_embed_sincos.RotaryEmbeddingMixed(96, depth=3, num_heads=3,
                                                               temperature=10.0, grid_indexing="xy")
    ours = MixedRotary2d(32, depth=3, num_heads=3, temperature=10.0, axes="xy")
    with torch.no_grad():
        ours.freqs.copy_(theirs.freqs)
    tables, reference = ours.table((4, 5), num_prefix_tokens=1), theirs.get_embed(shape=[4, 5])
    assert len(tables) == 3 and tables[0].sin.shape == (3, 21, 32)
    for table, ref in zip(tables, reference, strict=True):
        sin, cos = ref.chunk(2, dim=-1)
        torch.testing.assert_close(table.sin[:, 1:], sin, rtol=0, atol=1e-6)
        torch.testing.assert_close(table.cos[:, 1:], cos, rtol=0, atol=1e-6)
    assert ours.freqs.requires_grad


def test_rotary_inputs_are_checked():
    with pytest.raises(ValueError, match="divisible by 4"):
        AxialRotary2d(30)
    with pytest.raises(ValueError, match="rotary layout must be one of"):
        AxialRotary2d(32, layout="spiral")
    with pytest.raises(ValueError, match="even head_dim"):
        Rotary1d(7)


# --- attention options ----------------------------------------------------------------------------

def _heads(attn: Attention, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """q, k, v (B, H, N, hd) written out from the fused projection."""
    B, N, _ = x.shape
    return attn.qkv(x).reshape(B, N, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4).unbind(0)


def _by_hand(attn: Attention, q, k, v, mask=None) -> torch.Tensor:
    scores = q @ k.transpose(-2, -1) * attn.head_dim ** -0.5
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))
    out = scores.softmax(-1) @ v
    return attn.proj(out.transpose(1, 2).reshape(q.shape[0], q.shape[2], -1))


@pytest.mark.parametrize("fused", [True, False])
def test_causal_attention_sees_only_the_past(fused):
    attn = _noise(Attention(32, num_heads=4, causal=True))
    attn.fused = fused
    x = _x(2, 7, 32)
    with torch.no_grad():
        out, _ = attn(x)
        q, k, v = _heads(attn, x)
        torch.testing.assert_close(out, _by_hand(attn, q, k, v, torch.ones(7, 7).tril().bool()),
                                   rtol=1e-5, atol=1e-5)
        changed = x.clone()
        changed[:, 4:] = _x(2, 3, 32, seed=9)            # the future changes, the past does not see it
        torch.testing.assert_close(attn(changed)[0][:, :4], out[:, :4], rtol=1e-5, atol=1e-6)
        keep = torch.ones(2, 1, 7, 7, dtype=torch.bool)
        keep[0, ..., 1] = False                          # a padding mask combines with causality
        torch.testing.assert_close(attn(x, keep)[0], _by_hand(attn, q, k, v, keep & torch.ones(
            7, 7).tril().bool()), rtol=1e-5, atol=1e-5)


def test_head_dim_may_differ_from_width_over_heads():
    attn = _noise(Attention(24, num_heads=2, head_dim=16))
    assert attn.qkv.out_features == 96 and attn.proj.in_features == 32
    x = _x(2, 5, 24)
    with torch.no_grad():
        fused = attn(x)[0]
        attn.fused = False
        torch.testing.assert_close(attn(x)[0], fused, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(fused, _by_hand(attn, *_heads(attn, x)), rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="divisible by num_heads"):
        Attention(24, num_heads=5)


def test_query_scale_starts_as_identity_then_scales_each_dimension():
    attn = _noise(Attention(16, num_heads=2, query_scale=True))
    x = _x(2, 6, 16)
    with torch.no_grad():
        attn.query_scale.zero_()
        q, k, v = _heads(attn, x)
        torch.testing.assert_close(attn(x)[0], _by_hand(attn, q, k, v), rtol=1e-5, atol=1e-5)
        attn.query_scale.copy_(torch.linspace(-2, 2, 8))
        scale = F.softplus(attn.query_scale) / math.log(2.0)
        torch.testing.assert_close(attn(x)[0], _by_hand(attn, q * scale, k, v), rtol=1e-5, atol=1e-5)


def test_qk_norm_and_rotary_apply_to_queries_and_keys_per_head():
    attn = _noise(Attention(32, num_heads=2, qk_norm="rmsnorm"))
    table = AxialRotary2d(16).table((2, 3), num_prefix_tokens=1)
    x = _x(2, 7, 32)
    with torch.no_grad():
        q, k, v = _heads(attn, x)
        q, k = apply_rotary(attn.q_norm(q), table), apply_rotary(attn.k_norm(k), table)
        expected = _by_hand(attn, q, k, v)
        for fused in (True, False):
            attn.fused = fused
            torch.testing.assert_close(attn(x, rope=table)[0], expected, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(attn(x)[0], expected, atol=1e-3)


def test_record_attention_gives_the_weights_and_leaves_the_fused_path():
    attn = _noise(Attention(16, num_heads=2))
    x = _x(1, 4, 16)
    with torch.no_grad(), record_attention(attn) as maps:
        attn(x)
        attn(x)
    assert len(maps) == 2 and maps[0].shape == (1, 2, 4, 4) and attn.recorder is None
    q, k, _ = _heads(attn, x)
    with torch.no_grad():
        torch.testing.assert_close(maps[0], (q @ k.transpose(-2, -1) / math.sqrt(8)).softmax(-1))


def test_attention_pool_matches_timm_attention_pool_latent():
    timm = pytest.importorskip("timm")
    theirs = timm.layers.AttentionPoolLatent(32, num_heads=4, mlp_ratio=2.0,
                                             norm_layer=torch.nn.LayerNorm)
    ours = AttentionPool(32, num_heads=4, mlp_ratio=2.0, norm_eps=1e-5)
    _noise(theirs)
    ours.load_state_dict(theirs.state_dict())
    x = _x(3, 9, 32)
    with torch.no_grad():
        torch.testing.assert_close(ours.eval()(x), theirs.eval()(x), rtol=1e-5, atol=1e-5)


# --- block placements -----------------------------------------------------------------------------

def _block(**options) -> torch.nn.Module:
    torch.manual_seed(0)
    return _noise(make_block(BlockConfig(embed_dim=16, num_heads=2, mlp_ratio=2.0, **options)))


def _attn(block_attn, x):
    return block_attn(x)[0]


def test_sandwich_block_normalises_before_and_after_each_branch():
    b = _block(placement="sandwich", norm="rmsnorm")
    x = _x(2, 5, 16)
    with torch.no_grad():
        y = x + b.norm1_post(_attn(b.attn, b.norm1(x)))
        torch.testing.assert_close(b(x)[0], y + b.norm2_post(b.mlp(b.norm2(y))))


def test_res_post_block_closes_each_branch_with_its_norm():
    b = _block(placement="res_post", layer_scale_init=1e-5)
    assert not hasattr(b.ls1, "gamma")                    # the norms' scales play that role
    fresh = make_block(BlockConfig(embed_dim=16, num_heads=2, placement="res_post",
                                   layer_scale_init=1e-5))
    assert torch.all(fresh.norm1.weight == 1e-5)
    x = _x(2, 5, 16)
    with torch.no_grad():
        y = x + b.norm1(_attn(b.attn, x))
        torch.testing.assert_close(b(x)[0], y + b.norm2(b.mlp(y)))


def test_parallel_block_runs_attention_and_mlp_side_by_side():
    b = _block(placement="parallel", layer_scale_init=0.5, qk_norm=True)
    x = _x(2, 5, 16)
    with torch.no_grad():
        h = b.norm(x)
        torch.testing.assert_close(b(x)[0], x + b.ls.gamma * (_attn(b.attn, h) + b.mlp(h)))


def test_branches_block_sums_parallel_attention_then_parallel_mlps():
    b = _block(branches=3)
    x = _x(2, 5, 16)
    with torch.no_grad():
        y = x + sum(_attn(a.layer, a.norm(x)) for a in b.attns)
        torch.testing.assert_close(b(x)[0], y + sum(f.layer(f.norm(y)) for f in b.ffns))


def test_encoder_input_norm_and_per_block_rotary_tables():
    block = BlockConfig(embed_dim=32, num_heads=2)
    enc = _noise(Encoder(EncoderConfig(block=block, depth=2, input_norm=True, final_norm=False)))
    rope = MixedRotary2d(16, depth=2, num_heads=2)
    tables = rope.table((2, 2))
    x = _x(2, 4, 32)
    with torch.no_grad():
        h = enc.norm_pre(x)
        for blk, table in zip(enc.blocks, tables, strict=True):
            h = blk(h, None, table)[0]
        torch.testing.assert_close(enc(x, rope=tables), h)
        with pytest.raises(ValueError, match="1 rotary tables for 2 blocks"):
            enc(x, rope=tables[:1])
    # the tables pass through checkpointing too: the learned frequencies get the same gradient
    enc.train()
    freq_grads = []
    for checkpointing in (False, True):
        enc.set_grad_checkpointing(checkpointing)
        rope.freqs.grad = None
        enc(x, rope=rope.table((2, 2))).square().sum().backward()
        assert rope.freqs.grad is not None
        freq_grads.append(rope.freqs.grad)
    assert freq_grads[0].abs().sum() > 0
    torch.testing.assert_close(freq_grads[1], freq_grads[0], rtol=1e-5, atol=1e-7)


def test_the_readme_encoder_example_runs():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = text[text.index("## The shared encoder"):]
    code = section[section.index("```python") + len("```python"):]
    namespace: dict = {}
    exec(compile(code[: code.index("```")], "README.md (The shared encoder)", "exec"), namespace)
    assert namespace["y"].shape == (2, 50, 256)
    maps = namespace["maps"]
    assert len(maps) == 4 and maps[0].shape == (2, 4, 50, 50)
    assert torch.all(maps[0][..., 0, 1:] == 0)          # causal: the first token sees only itself


def test_recorded_maps_carry_gradients_for_relevance_methods():
    attn = _noise(Attention(16, num_heads=2))
    x = _x(1, 5, 16)
    with record_attention(attn) as maps:
        out, _ = attn(x)
    (grad,) = torch.autograd.grad(out.sum(), maps)
    assert grad.shape == (1, 2, 5, 5) and grad.abs().sum() > 0

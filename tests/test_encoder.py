"""The shared encoder: attention paths, checkpointing, drop-path, layer scale, attention maps,
residual and windowed attention."""

from __future__ import annotations

from dataclasses import fields, replace

import pytest
import torch

import zoo.encoder
from zoo.encoder import BlockConfig, Encoder, EncoderConfig
from zoo.layers import Attention, Dropout, DropPath, local_attention_mask, record_attention

pytestmark = pytest.mark.usefixtures("one_thread")

DIM, HEADS, TOKENS = 64, 4, 11


BLOCK_FIELDS = {f.name for f in fields(BlockConfig)}


def config(**overrides) -> EncoderConfig:
    """An encoder config from flat overrides: block fields go to its BlockConfig."""
    block = {k: v for k, v in overrides.items() if k in BLOCK_FIELDS}
    rest = {k: v for k, v in overrides.items() if k not in BLOCK_FIELDS}
    return EncoderConfig(**{"depth": 2, **rest},
                         block=BlockConfig(**{"embed_dim": DIM, "num_heads": HEADS, **block}))


def _encoder(seed: int = 0, **overrides) -> Encoder:
    torch.manual_seed(seed)
    return Encoder(config(**overrides))


def _tokens(batch: int = 2, seed: int = 1) -> torch.Tensor:
    return torch.randn(batch, TOKENS, DIM, generator=torch.Generator().manual_seed(seed))


def _key_padding_mask(batch: int = 2) -> torch.Tensor:
    """Bool (B, 1, N, N), True = attend: sample 0 ignores its last 4 tokens, sample 1 none."""
    keep = torch.ones(batch, TOKENS, dtype=torch.bool)
    keep[0, -4:] = False
    return keep[:, None, None, :].expand(batch, 1, TOKENS, TOKENS)


# --- fused vs manual attention ------------------------------------------------------------------

@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "bool_mask"])
def test_fused_attention_matches_manual_path(masked):
    encoder = _encoder().eval()
    x = _tokens()
    mask = _key_padding_mask() if masked else None
    with torch.no_grad():
        fused = encoder(x, mask)
        encoder.set_fused_attention(False)
        assert all(not block.attn.fused for block in encoder.blocks)
        manual = encoder(x, mask)
    torch.testing.assert_close(fused, manual, rtol=1e-5, atol=1e-5)


def test_bool_mask_really_hides_tokens():
    """The mask must change the output, and the masked-out tokens' values must not matter."""
    encoder = _encoder().eval()
    x, mask = _tokens(), _key_padding_mask()
    x_changed = x.clone()
    x_changed[0, -4:] = torch.randn(4, DIM) * 10  # only the tokens sample 0 may not attend to
    for fused in (True, False):
        encoder.set_fused_attention(fused)
        with torch.no_grad():
            out = encoder(x, mask)
            assert not torch.allclose(out, encoder(x), atol=1e-3)
            out_changed = encoder(x_changed, mask)
        # the visible tokens of sample 0 never see the changed ones; sample 1 is untouched
        torch.testing.assert_close(out_changed[0, :-4], out[0, :-4], rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(out_changed[1], out[1], rtol=0, atol=0)


def test_additive_float_mask_matches_between_paths():
    attn = Attention(DIM, num_heads=HEADS).eval()
    x = _tokens()
    bias = torch.randn(1, HEADS, TOKENS, TOKENS)
    with torch.no_grad():
        fused = attn(x, bias)[0]
        attn.fused = False
        manual = attn(x, bias)[0]
    torch.testing.assert_close(fused, manual, rtol=1e-5, atol=1e-5)


def test_manual_attention_matches_a_reference_implementation():
    """An independent multi-head attention written out from the definition."""
    attn = Attention(DIM, num_heads=HEADS).eval()
    attn.fused = False
    x = _tokens()
    with torch.no_grad(), record_attention(attn) as maps:
        out, _ = attn(x)
    weights = maps[0]
    with torch.no_grad():
        q, k, v = attn.qkv(x).chunk(3, dim=-1)  # each (B, N, D), heads contiguous in D
        q, k, v = (t.reshape(2, TOKENS, HEADS, DIM // HEADS).transpose(1, 2) for t in (q, k, v))
        ref_weights = torch.softmax(q @ k.transpose(-1, -2) / (DIM // HEADS) ** 0.5, dim=-1)
        ref = attn.proj((ref_weights @ v).transpose(1, 2).reshape(2, TOKENS, DIM))
    torch.testing.assert_close(weights, ref_weights, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-6)


# --- gradient checkpointing ---------------------------------------------------------------------

def _outputs_and_grads(encoder: Encoder, x: torch.Tensor, checkpointing: bool, seed: int = 0):
    encoder.set_grad_checkpointing(checkpointing)
    encoder.zero_grad(set_to_none=True)
    x = x.clone().requires_grad_(True)
    calls = []
    # a pre-hook: the recomputation stops early, before a forward hook would fire
    hooks = [b.register_forward_pre_hook(lambda *_: calls.append(1)) for b in encoder.blocks]
    torch.manual_seed(seed)
    out = encoder(x)
    (out * torch.linspace(-1, 1, out.numel()).reshape(out.shape)).sum().backward()
    for hook in hooks:
        hook.remove()
    grads = {n: p.grad.clone() for n, p in encoder.named_parameters()}
    return out.detach(), x.grad, grads, len(calls)


@pytest.mark.parametrize("drop_path", [0.0, 0.5], ids=["deterministic", "drop_path"])
def test_grad_checkpointing_leaves_outputs_and_gradients_unchanged(drop_path):
    """With drop-path on, the recomputation must replay the same random drops."""
    encoder = _encoder(drop_path=drop_path, depth=3).train()
    x = _tokens(batch=8)
    out, x_grad, grads, calls = _outputs_and_grads(encoder, x, checkpointing=False)
    out_ck, x_grad_ck, grads_ck, calls_ck = _outputs_and_grads(encoder, x, checkpointing=True)
    depth = len(encoder.blocks)
    assert calls == depth and calls_ck == 2 * depth, "checkpointing did not recompute the blocks"
    torch.testing.assert_close(out_ck, out, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x_grad_ck, x_grad, rtol=1e-5, atol=1e-6)
    assert grads_ck.keys() == grads.keys()
    for name in grads:
        torch.testing.assert_close(grads_ck[name], grads[name], rtol=1e-5, atol=1e-6, msg=name)


def test_grad_checkpointing_is_used_exactly_when_gradients_are_recorded(monkeypatch):
    """Under no_grad / inference_mode nothing is saved for backward, so the blocks run plainly
    (checkpointing would only add overhead); with gradients every block is checkpointed once.
    Outputs and gradients on vs off: the test above."""
    used = []
    real = zoo.encoder.checkpoint

    def spy(function, *args, **kwargs):
        used.append(function)
        return real(function, *args, **kwargs)

    monkeypatch.setattr(zoo.encoder, "checkpoint", spy)
    encoder = _encoder(depth=3).train()
    x = _tokens()
    with torch.no_grad():
        plain = encoder(x)
    assert used == []
    encoder.set_grad_checkpointing(True)
    for no_grad in (torch.no_grad, torch.inference_mode):
        with no_grad():
            torch.testing.assert_close(encoder(x), plain, rtol=0, atol=0)
    assert used == [], "checkpointing ran without gradients to save memory for"
    out = encoder(x)
    assert used == list(encoder.blocks), "with gradients, every block is checkpointed once"
    torch.testing.assert_close(out.detach(), plain, rtol=1e-6, atol=1e-6)


# --- drop-path ----------------------------------------------------------------------------------

def test_drop_path_is_identity_in_eval():
    x = _tokens()
    drop = DropPath(0.5).eval()
    assert drop(x) is x
    plain, dropping = _encoder(drop_path=0.0).eval(), _encoder(drop_path=0.9).eval()
    with torch.no_grad():
        torch.testing.assert_close(dropping(x), plain(x), rtol=0, atol=0)


def test_drop_path_drops_whole_samples_in_train():
    torch.manual_seed(0)
    drop = DropPath(0.3).train()
    x = torch.ones(20_000, 5, 3)
    y = drop(x)
    per_sample = y.reshape(len(y), -1)
    # a sample is either dropped entirely or kept entirely and rescaled by 1 / keep
    kept = per_sample[:, 0] != 0
    assert torch.all(per_sample[~kept] == 0)
    torch.testing.assert_close(per_sample[kept], torch.full_like(per_sample[kept], 1 / 0.7))
    drop_rate = 1 - kept.float().mean().item()
    assert abs(drop_rate - 0.3) < 0.02, drop_rate  # binomial std here is ~0.003
    assert abs(y.mean().item() - 1.0) < 0.03  # unbiased in expectation


def test_encoder_drop_path_rates_rise_linearly_and_act_in_train():
    encoder = _encoder(drop_path=0.4, depth=3)
    rates = [(b.drop_path1.p, b.drop_path2.p) for b in encoder.blocks]
    assert rates == [(0.0, 0.0), (0.2, 0.2), (0.4, 0.4)]
    encoder.train()
    x = _tokens(batch=16)
    with torch.no_grad():
        torch.manual_seed(0)
        a = encoder(x)
        torch.manual_seed(1)
        b = encoder(x)
        torch.manual_seed(0)
        a_again = encoder(x)
    assert not torch.allclose(a, b)
    torch.testing.assert_close(a, a_again, rtol=0, atol=0)


# --- layer scale, attention maps, config --------------------------------------------------------

def test_layer_scale_creates_gammas_and_scales_the_branches():
    encoder = _encoder(layer_scale_init=1e-5)
    state = encoder.state_dict()
    for i in range(2):
        for name in (f"blocks.{i}.ls1.gamma", f"blocks.{i}.ls2.gamma"):
            assert name in state
            torch.testing.assert_close(state[name], torch.full((DIM,), 1e-5))
    assert not any("gamma" in k for k in _encoder().state_dict())
    # residual branches scaled by 1e-5: the encoder is the final norm of its input
    x = _tokens()
    with torch.no_grad():
        torch.testing.assert_close(encoder.eval()(x), encoder.norm(x), rtol=1e-3, atol=1e-3)


@pytest.mark.parametrize("masked", [False, True], ids=["no_mask", "bool_mask"])
def test_recorded_attention_maps_are_row_stochastic_and_change_nothing(masked):
    encoder = _encoder(depth=3).eval()
    x = _tokens()
    mask = _key_padding_mask() if masked else None
    with torch.no_grad():
        expected = encoder(x, mask)
        with record_attention(encoder) as maps:
            out = encoder(x, mask)
        assert all(m.recorder is None for m in encoder.modules() if isinstance(m, Attention))
        torch.testing.assert_close(encoder(x, mask), expected, rtol=0, atol=0)
    torch.testing.assert_close(out, expected, rtol=1e-5, atol=1e-5)
    assert len(maps) == 3
    for weights in maps:
        assert weights.shape == (2, HEADS, TOKENS, TOKENS)
        assert torch.all(weights >= 0)
        torch.testing.assert_close(weights.sum(-1), torch.ones(2, HEADS, TOKENS))
        if masked:
            assert torch.all(weights[0, :, :, -4:] == 0)
            assert torch.all(weights[1, :, :, -4:] > 0)


def test_config_validation():
    with pytest.raises(ValueError, match=r"embed_dim \(100\) must be divisible by num_heads \(3\)"):
        BlockConfig(embed_dim=100, num_heads=3)
    assert BlockConfig(embed_dim=100, num_heads=3, head_dim=32).head_dim == 32
    with pytest.raises(ValueError, match="depth"):
        EncoderConfig(depth=0)
    for bad, match in ((dict(norm="groupnorm"), "norm must be one of"),
                       (dict(mlp="moe"), "mlp must be one of"), (dict(act="tanh"), "act must be one of"),
                       (dict(placement="middle"), "placement must be one of"),
                       (dict(branches=2, placement="post"), "branches"),
                       (dict(branches=2, residual_attention=True), "residual_attention needs branches=1"),
                       (dict(qk_norm=True, norm="batchnorm"), "qk_norm needs")):
        with pytest.raises(ValueError, match=match):
            BlockConfig(**bad)
    assert config(embed_dim=96, num_heads=3).to_dict()["block"]["embed_dim"] == 96


def test_fast_dropout_keeps_each_value_with_probability_one_minus_p_and_rescales():
    drop = Dropout(0.3)
    x = torch.ones(400_000, requires_grad=True)
    y = drop(x)
    kept = y != 0
    assert abs(kept.float().mean().item() - 0.7) < 0.005
    torch.testing.assert_close(y[kept], torch.full_like(y[kept], 1 / 0.7))
    y.sum().backward()          # the gradient flows through the kept values only, rescaled
    torch.testing.assert_close(x.grad, y.detach())
    assert not torch.equal(drop(x), y)   # a fresh mask each call
    drop.eval()
    assert drop(x) is x
    assert Dropout(1.0)(x).abs().sum() == 0


def test_residual_attention_adds_each_blocks_scores_to_the_next():
    torch.manual_seed(0)
    cfg = EncoderConfig(depth=3, final_norm=False, block=BlockConfig(
        embed_dim=16, num_heads=2, mlp_ratio=2.0, residual_attention=True))
    enc = Encoder(cfg).eval()
    x = torch.randn(3, 7, 16)

    def heads(attn, h):   # q, k, v (B, H, N, hd), written out from the definition
        return attn.qkv(h).reshape(3, 7, 3, 2, 8).permute(2, 0, 3, 1, 4).unbind(0)

    def block_by_hand(block, h, prev_scores):   # pre-norm block with explicit residual scores
        q, k, v = heads(block.attn, block.norm1(h))
        scores = (q * block.attn.scale) @ k.transpose(-2, -1) + prev_scores
        y = h + block.attn.proj((scores.softmax(-1) @ v).transpose(1, 2).reshape(3, 7, 16))
        return y + block.mlp(block.norm2(y)), scores

    with torch.no_grad():
        h, scores, expected_maps = x, torch.zeros(()), []
        for block in enc.blocks:               # block i sees the sum of blocks 0..i-1's scores
            h, scores = block_by_hand(block, h, scores)
            expected_maps.append(scores.softmax(-1))
        torch.testing.assert_close(enc(x), h)                 # SDPA / fused path
        enc.set_fused_attention(False)
        torch.testing.assert_close(enc(x), h)                 # explicit path
        enc.set_fused_attention(True)
        with record_attention(enc) as maps:
            out = enc(x)
        torch.testing.assert_close(out, h)
        for got, want in zip(maps, expected_maps, strict=True):
            torch.testing.assert_close(got, want)
        plain = Encoder(replace(cfg, block=replace(cfg.block, residual_attention=False))).eval()
        plain.load_state_dict(enc.state_dict())
        assert not torch.allclose(plain(x), out)          # it does change the result

    # gradients: both paths agree with the scores summed by hand
    def grads_of(forward):
        enc.zero_grad()
        forward().square().sum().backward()
        return {n: p.grad.clone() for n, p in enc.named_parameters()}

    def by_hand():
        h, scores = x, torch.zeros(())
        for block in enc.blocks:
            h, scores = block_by_hand(block, h, scores)
        return h

    expected = grads_of(by_hand)
    for fused in (True, False):
        enc.set_fused_attention(fused)
        for name, grad in grads_of(lambda: enc(x)).items():
            torch.testing.assert_close(grad, expected[name], rtol=1e-4, atol=1e-5)

    # checkpointing recomputes each block from its saved inputs, the previous block's scores
    # included: the same outputs and gradients, with every block run twice
    enc.train()
    out, x_grad, grads, calls = _outputs_and_grads(enc, x, checkpointing=False)
    out_ck, x_grad_ck, grads_ck, calls_ck = _outputs_and_grads(enc, x, checkpointing=True)
    assert calls == len(enc.blocks) and calls_ck == 2 * len(enc.blocks)
    torch.testing.assert_close(out_ck, out, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(x_grad_ck, x_grad, rtol=1e-5, atol=1e-6)
    for name in grads:
        torch.testing.assert_close(grads_ck[name], grads[name], rtol=1e-5, atol=1e-6, msg=name)


# --- windowed (block-local) attention -----------------------------------------------------------

@pytest.mark.parametrize("residual", [False, True])
def test_windowed_attention_with_a_full_window_equals_full_attention(residual):
    torch.manual_seed(0)
    options = dict(embed_dim=32, depth=2, num_heads=4, residual_attention=residual)
    full = Encoder(config(**options)).eval()
    x = torch.randn(2, 37, 32)
    for window in (37, 64):
        local = Encoder(config(**options, attn_window=window)).eval()
        local.load_state_dict(full.state_dict())
        with torch.no_grad():
            torch.testing.assert_close(local(x), full(x), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("residual", [False, True])
def test_windowed_attention_matches_its_mask_written_out(residual):
    """Blocks of 8 tokens, each seeing its own block and the one before: chunked SDPA equals
    the explicit path with the (N, N) mask, outputs, maps and gradients."""
    mask = local_attention_mask(20, 8)
    assert mask[19].nonzero().flatten().tolist() == list(range(8, 20))   # blocks 1 and 2
    assert mask[3].nonzero().flatten().tolist() == list(range(8))        # block 0 only
    torch.manual_seed(0)
    enc = Encoder(config(embed_dim=32, num_heads=4, attn_window=8, residual_attention=residual))
    x = torch.randn(2, 20, 32, requires_grad=True)
    outs, grads = [], []
    for fused in (True, False):
        enc.set_fused_attention(fused)
        out = enc(x)
        (g,) = torch.autograd.grad(out.square().sum(), x)
        outs.append(out)
        grads.append(g)
    torch.testing.assert_close(outs[0], outs[1], rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(grads[0], grads[1], rtol=1e-4, atol=1e-5)
    with record_attention(enc.eval()) as maps:
        enc(x)
    assert all(torch.all(m[..., ~mask] == 0) for m in maps)          # nothing outside the window
    full = Encoder(config(embed_dim=32, num_heads=4, residual_attention=residual)).eval()
    full.load_state_dict(enc.state_dict())
    assert not torch.allclose(full(x), enc(x), atol=1e-3)            # it is not full attention


def test_windowed_attention_settings_are_checked():
    with pytest.raises(ValueError, match="attn_window must be >= 1 token, got 0"):
        BlockConfig(embed_dim=32, num_heads=4, attn_window=0)
    enc = Encoder(config(embed_dim=32, depth=1, num_heads=4, attn_window=4))
    with pytest.raises(ValueError, match="attn_mask cannot be combined with windowed attention"):
        enc(torch.randn(1, 8, 32), torch.ones(1, 1, 8, 8, dtype=torch.bool))

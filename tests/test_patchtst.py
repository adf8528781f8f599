"""PatchTST: the series front end, the forecaster, and parity with transformers' PatchTST."""

from __future__ import annotations

import pytest
import torch

import zoo
from zoo.checkpoint import CheckpointMismatchError, load_state_dict
from zoo.convert import to_zoo_state_dict
from zoo.encoder import BlockConfig, Encoder, EncoderConfig
from zoo.frontends.series import InstanceScaler, SeriesFrontEnd, num_patches
from zoo.models.patchtst import PatchTST

TINY = dict(context_length=48, horizon=12, num_channels=3, patch_len=8, stride=4, embed_dim=16,
            depth=2, num_heads=2, mlp_ratio=2.0, drop_rate=0.0)


def _series(batch: int = 4, length: int = 48, channels: int = 3, seed: int = 0) -> torch.Tensor:
    """Random walks with a different level and scale per channel: (B, L, C)."""
    g = torch.Generator().manual_seed(seed)
    steps = torch.randn(batch, length, channels, generator=g)
    scale, level = torch.tensor([1.0, 10.0, 0.1]), torch.tensor([0.0, 50.0, -3.0])
    return steps.cumsum(1) * scale[:channels] + level[:channels]


# --- front end ----------------------------------------------------------------------------------

@pytest.mark.parametrize("length,patch,stride,padding,expected", [
    (336, 16, 8, "end", 42), (512, 16, 8, "end", 64), (336, 16, 8, "none", 41),
    (16, 16, 8, "none", 1), (37, 8, 4, "none", 8), (2048, 16, 8, "end", 256)])
def test_num_patches_matches_patchtst_and_transformers(length, patch, stride, padding, expected):
    assert num_patches(length, patch, stride, padding) == expected


def test_num_patches_rejects_a_look_back_shorter_than_a_patch():
    with pytest.raises(ValueError, match="shorter than one patch"):
        num_patches(8, 16, 8)


def test_end_padding_repeats_the_last_value_and_none_drops_the_oldest_steps():
    z = torch.arange(20.0).view(1, 20, 1)
    end = SeriesFrontEnd(context_length=20, num_channels=1, patch_len=8, stride=4, embed_dim=4)
    patches = end.patchify(z)                                  # (1, 1, N, 8)
    assert patches.shape == (1, 1, 5, 8)
    assert patches[0, 0, -1].tolist() == [16, 17, 18, 19, 19, 19, 19, 19]
    none = SeriesFrontEnd(context_length=20, num_channels=1, patch_len=8, stride=5, embed_dim=4,
                          padding="none")
    patches = none.patchify(z)
    assert patches.shape == (1, 1, 3, 8)
    assert patches[0, 0, 0, 0] == 2 and patches[0, 0, -1, -1] == 19   # ends at the last step


@pytest.mark.parametrize("affine,subtract_last", [(False, False), (True, False), (False, True), (True, True)])
def test_instance_scaler_is_reversible(affine, subtract_last):
    x = _series()
    scaler = InstanceScaler(3, affine=affine, subtract_last=subtract_last)
    if affine:
        with torch.no_grad():
            scaler.weight.uniform_(0.5, 2.0)
            scaler.bias.uniform_(-1.0, 1.0)
    z, stats = scaler(x)
    torch.testing.assert_close(scaler.inverse(z, stats), x, rtol=1e-5, atol=1e-4)
    if not affine and not subtract_last:   # RevIN: zero mean, unit (population) variance
        torch.testing.assert_close(z.mean(1), torch.zeros(4, 3), atol=1e-5, rtol=0)
        torch.testing.assert_close(z.var(1, unbiased=False), torch.ones(4, 3), atol=1e-3, rtol=0)
    if subtract_last and not affine:
        assert torch.all(z[:, -1] == 0)


def test_forecaster_is_equivariant_to_each_channels_scale_and_shift():
    """RevIN: forecasting a * x + b gives a * forecast(x) + b, per channel."""
    model = PatchTST(**TINY).eval()
    x = _series()
    a, b = torch.tensor([2.0, 0.5, 30.0]), torch.tensor([-5.0, 100.0, 0.3])
    with torch.no_grad():
        torch.testing.assert_close(model(x * a + b), model(x) * a + b, rtol=1e-4, atol=1e-3)


def test_channels_are_forecast_independently_with_shared_weights():
    model = PatchTST(**TINY).eval()
    x = _series()
    changed = x.clone()
    changed[..., 1] = torch.randn(4, 48) * 7
    with torch.no_grad():
        before, after = model(x), model(changed)
    torch.testing.assert_close(after[..., [0, 2]], before[..., [0, 2]])
    assert not torch.allclose(after[..., 1], before[..., 1])
    with torch.no_grad():   # shared weights: any number of channels
        assert model(_series(channels=1)).shape == (4, 12, 1)


def test_bad_inputs_get_clear_errors():
    model = PatchTST(**TINY).eval()
    with pytest.raises(ValueError, match="look-back of 48 steps, got 40"):
        model(torch.randn(2, 40, 3))
    with pytest.raises(ValueError, match=r"\(B, L, C\)"):
        model(torch.randn(48, 3))
    per_channel = PatchTST(**{**TINY, "shared_head": False}).eval()
    with pytest.raises(ValueError, match="per-channel weights for 3 channels; got 2"):
        per_channel(torch.randn(2, 48, 2))


def test_missing_values_are_refused_or_masked_never_propagated():
    x = _series()
    x[1, 5:9, 2] = float("nan")
    with pytest.raises(ValueError, match=r"4 NaN values \(channels \[2\]\).*nan_policy='mask'"):
        PatchTST(**TINY).eval()(x)
    masked = PatchTST(**{**TINY, "nan_policy": "mask"}).eval()
    with torch.no_grad():
        y = masked(x)
    assert torch.isfinite(y).all()
    clean = x.clone()
    clean[1, 5:9, 2] = 0.0
    with torch.no_grad():   # the other series are untouched by the mask
        torch.testing.assert_close(y[0], masked(clean)[0])
    x[0, :, 0] = float("nan")
    with pytest.raises(ValueError, match="no observed value"):
        masked(x)


def test_post_norm_batchnorm_encoder_block_matches_its_definition():
    torch.manual_seed(0)
    block = BlockConfig(embed_dim=8, num_heads=2, mlp_ratio=2.0, norm="batchnorm", placement="post")
    enc = Encoder(EncoderConfig(block=block, depth=1, final_norm=False)).eval()
    block = enc.blocks[0]
    with torch.no_grad():
        block.norm1.running_mean.uniform_(-1, 1)
        block.norm1.running_var.uniform_(0.5, 2)
        x = torch.randn(3, 5, 8)
        y = block.norm1(x + block.attn(x)[0])
        expected = block.norm2(y + block.mlp(y))
        bn = torch.nn.functional.batch_norm(
            (x + block.attn(x)[0]).transpose(1, 2), block.norm1.running_mean,
            block.norm1.running_var, block.norm1.weight, block.norm1.bias, eps=block.norm1.eps)
        torch.testing.assert_close(y, bn.transpose(1, 2))   # statistics per feature over B and N
        torch.testing.assert_close(enc(x), expected)
    with pytest.raises(ValueError, match="norm must be one of"):
        BlockConfig(norm="groupnorm")


# --- registry -----------------------------------------------------------------------------------

def test_registered_variants_have_the_paper_shapes():
    model = zoo.create_model("patchtst_tiny_l336")
    assert model.front_end.num_patches == 42 and model.horizon == 96
    assert (model.embed_dim, len(model.encoder.blocks)) == (16, 3)
    assert model.encoder.blocks[0].mlp.fc1.out_features == 128
    assert isinstance(model.encoder.blocks[0].norm1, torch.nn.BatchNorm1d)
    block = model.encoder.config.block
    assert block.residual_attention and block.placement == "post"
    assert model.encoder.blocks[0].attn.qkv.weight.std() > 0.1   # PyTorch's init, not ViT's 0.02
    assert zoo.create_model("patchtst_tiny_l512").front_end.num_patches == 64
    with torch.no_grad():
        assert model.eval()(torch.randn(2, 336, 7)).shape == (2, 96, 7)
    with pytest.raises(ValueError, match="horizon=, not num_classes="):
        zoo.create_model("patchtst_tiny_l336", num_classes=3)


def test_a_checkpoint_for_another_horizon_keeps_everything_but_the_head(tmp_path):
    from safetensors.torch import save_file

    if "test_patchtst_tiny" not in zoo.list_models():
        zoo.register_model("test_patchtst_tiny", modality="series", builder=PatchTST, args=TINY,
                           preprocess={}, num_classes=0)
    source = PatchTST(**TINY)
    save_file(source.state_dict(), tmp_path / "w.safetensors")
    weights = tmp_path / "w.safetensors"
    longer = zoo.create_model("test_patchtst_tiny", pretrained=weights, horizon=24)
    assert longer.horizon == 24
    torch.testing.assert_close(longer.encoder.state_dict(), source.encoder.state_dict())
    same = zoo.create_model("test_patchtst_tiny", pretrained=weights)
    torch.testing.assert_close(same.state_dict(), source.state_dict())
    with pytest.raises(CheckpointMismatchError, match=r"front_end\.pos_embed"):
        zoo.create_model("test_patchtst_tiny", pretrained=weights, context_length=64)


# --- parity with transformers -------------------------------------------------------------------

def _hf_patchtst(seed: int = 0, **overrides):
    transformers = pytest.importorskip("transformers")
    config = transformers.PatchTSTConfig(
        num_input_channels=3, context_length=37, patch_length=8, patch_stride=4,
        prediction_length=5, d_model=16, num_attention_heads=2, num_hidden_layers=2, ffn_dim=32,
        **overrides)
    model = transformers.PatchTSTForPrediction(config)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():   # noise everywhere: a dropped, swapped or transposed weight shows
        for name, param in model.named_parameters():
            param.copy_(torch.rand(param.shape, generator=g) * 0.4 - 0.2)
            if "norm" in name and name.endswith("weight"):
                param.add_(1.0)
        for name, buf in model.named_buffers():
            if name.endswith("running_mean"):
                buf.copy_(torch.randn(buf.shape, generator=g) * 0.1)
            elif name.endswith("running_var"):
                buf.copy_(torch.rand(buf.shape, generator=g) + 0.5)
    return model.eval(), config


def _zoo_from_hf(hf, config) -> PatchTST:
    from zoo.convert.hf_patchtst import patchtst_args_from_hf_config

    model = PatchTST(**patchtst_args_from_hf_config(config.to_dict()))
    load_state_dict(model, to_zoo_state_dict(hf.state_dict()), source="hf")
    return model.eval()


@pytest.mark.parametrize("overrides", [
    dict(scaling="std", norm_type="batchnorm", pre_norm=False, pooling_type=None),
    dict(scaling="mean", norm_type="layernorm", pre_norm=True, pooling_type="mean"),
    dict(scaling=None, norm_type="batchnorm", pre_norm=True, pooling_type="max"),
    dict(scaling="std", share_embedding=False, positional_encoding_type="random", pooling_type=None),
], ids=["std-batchnorm-postnorm-flatten", "mean-layernorm-prenorm-meanpool", "none-maxpool",
        "per-channel-embedding"])
def test_forecasts_match_transformers_patchtst(overrides, one_thread):
    hf, config = _hf_patchtst(**overrides)
    model = _zoo_from_hf(hf, config)
    x = _series(length=37) + 2.0
    with torch.no_grad():
        expected = hf(past_values=x).prediction_outputs
        got = model(x)
    assert got.shape == expected.shape == (4, 5, 3)
    assert (got - expected).abs().max() < 1e-4


def test_per_channel_projection_matches_transformers(one_thread):
    """transformers 5.x's own forward crashes with share_projection=False (its head reuses a
    loop variable), so the reference is its encoder output with its per-channel projections
    applied as documented: flatten channel i's tokens, project with projections[i]."""
    hf, config = _hf_patchtst(share_projection=False, pooling_type=None)
    model = _zoo_from_hf(hf, config)
    x = _series(length=37)
    with torch.no_grad():
        out = hf.model(past_values=x)
        tokens = out.last_hidden_state                       # (B, C, N, D)
        per_channel = [hf.head.projections[i](tokens[:, i].flatten(1)) for i in range(3)]
        expected = torch.stack(per_channel, dim=2) * out.scale + out.loc
        got = model(x)
    assert (got - expected).abs().max() < 1e-4


def test_unsupported_transformers_options_are_refused():
    from zoo.convert.hf_patchtst import patchtst_args_from_hf_config

    with pytest.raises(ValueError, match="use_cls_token"):
        patchtst_args_from_hf_config({"use_cls_token": True})
    with pytest.raises(ValueError, match="distribution head"):
        patchtst_args_from_hf_config({"loss": "nll", "distribution_output": "student_t"})
    hf, _ = _hf_patchtst(channel_attention=True)
    with pytest.raises(ValueError, match="channel_attention"):
        to_zoo_state_dict(hf.state_dict())
